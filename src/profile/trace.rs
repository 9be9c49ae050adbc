//! Chrome trace-event export (not implemented yet).
