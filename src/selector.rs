//! Device selector strings: `cpu`, `opencl`, `opencl:1`, `cuda:0`, `all`.
//!
//! A selector without an index matches every device of that backend; `all`
//! matches every device. Parsing is separate from matching so that an invalid
//! string (a typo) and a valid string that matches nothing give different errors.

use std::fmt;

use crate::error::BackendKind;

/// A parsed selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every device.
    All,
    /// Devices of one backend, optionally one index.
    Backend(BackendKind, Option<usize>),
}

impl Selector {
    /// Parse a selector; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "all" {
            return Ok(Selector::All);
        }
        let (name, idx) = match t.split_once(':') {
            Some((n, i)) => {
                let i = i
                    .parse::<usize>()
                    .map_err(|_| format!("index {i:?} is not a non-negative integer"))?;
                (n.to_string(), Some(i))
            }
            None => (t.clone(), None),
        };
        let backend = match name.as_str() {
            "cpu" => BackendKind::Cpu,
            "opencl" | "ocl" | "cl" => BackendKind::OpenCl,
            "cuda" | "gpu" => BackendKind::Cuda,
            "" => return Err("empty selector".to_string()),
            other => return Err(format!("unknown backend {other:?}")),
        };
        Ok(Selector::Backend(backend, idx))
    }

    /// Whether a device of `backend` with per-backend `index` matches.
    pub fn matches(&self, backend: BackendKind, index: usize) -> bool {
        match *self {
            Selector::All => true,
            Selector::Backend(b, None) => b == backend,
            Selector::Backend(b, Some(i)) => b == backend && i == index,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all"),
            Selector::Backend(b, None) => write!(f, "{b}"),
            Selector::Backend(b, Some(i)) => write!(f, "{b}:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(Selector::parse("all"), Ok(Selector::All));
        assert_eq!(Selector::parse("CPU"), Ok(Selector::Backend(BackendKind::Cpu, None)));
        assert_eq!(
            Selector::parse("opencl:1"),
            Ok(Selector::Backend(BackendKind::OpenCl, Some(1)))
        );
        assert_eq!(
            Selector::parse("cuda:0"),
            Ok(Selector::Backend(BackendKind::Cuda, Some(0)))
        );
        assert!(Selector::parse("tpu").unwrap_err().contains("tpu"));
        assert!(Selector::parse("cuda:x").is_err());
        assert!(Selector::parse("").is_err());
    }
}
