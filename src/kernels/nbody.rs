//! All-pairs N-body accelerations (not implemented yet).
