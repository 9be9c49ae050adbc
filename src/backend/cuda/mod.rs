//! Placeholder: the cuda backend is not implemented yet; discovery reports it unavailable.

use crate::backend::Discovery;

pub(crate) fn discover() -> Discovery {
    Err("the cuda backend is not implemented in this build yet".to_string())
}
