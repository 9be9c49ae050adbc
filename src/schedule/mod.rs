//! The scheduler: split one launch across devices (not implemented yet).
