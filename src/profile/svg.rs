//! SVG timeline export (not implemented yet).
