//! N-body simulation (not implemented yet).
