//! Scheduling policies and the `OFFLOAD_POLICY` environment variable.

use std::fmt;

use crate::error::{Error, Result};

/// Environment variable selecting the default policy: `static`, `dynamic`,
/// `dynamic:<chunk>`, `hguided` or `hguided:<k>:<min_chunk>`.
pub const POLICY_ENV: &str = "OFFLOAD_POLICY";

/// The valid spellings, for messages.
const VALID: &str = "static, dynamic, dynamic:<chunk>, hguided, hguided:<k>:<min_chunk>";

/// How the index space is cut into chunks and handed to devices.
///
/// See the [module docs](super) for how each policy behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    /// One contiguous share per device, sized from the performance model so that
    /// all devices finish together (transfer cost included). Devices without a
    /// model entry are probed first.
    Static,
    /// Equal chunks of `chunk` items pulled by whichever device is idle. `chunk`
    /// 0 means automatic: `items / (16 × devices)`. Uses no model.
    Dynamic {
        /// Items per chunk (rounded to each device's work-group multiple).
        chunk: usize,
    },
    /// EngineCL's heterogeneous guided policy: an idle device gets
    /// `max(min_chunk, remaining × share / k)` items, where `share` is its
    /// fraction of the total predicted throughput, so chunks shrink toward the end.
    HGuided {
        /// Divisor (≥ 1): larger means smaller first chunks and more of them.
        k: f64,
        /// Smallest chunk in items; 0 means automatic (the size at which the
        /// device's per-launch latency is at most 5% of the chunk's time). The
        /// chunk floor ([`super::partition::chunk_floor`]) applies on top.
        min_chunk: usize,
    },
}

impl Default for Policy {
    /// `HGuided { k: 2.0, min_chunk: 0 }`.
    fn default() -> Self {
        Policy::HGuided { k: 2.0, min_chunk: 0 }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Static => f.write_str("static"),
            Policy::Dynamic { chunk: 0 } => f.write_str("dynamic (auto chunk)"),
            Policy::Dynamic { chunk } => write!(f, "dynamic (chunk {chunk})"),
            Policy::HGuided { k, min_chunk: 0 } => write!(f, "hguided (k {k}, auto min chunk)"),
            Policy::HGuided { k, min_chunk } => write!(f, "hguided (k {k}, min chunk {min_chunk})"),
        }
    }
}

impl Policy {
    /// Parse a policy name as `OFFLOAD_POLICY` spells it (case-insensitive):
    /// `static`, `dynamic[:chunk]`, `hguided[:k[:min_chunk]]`.
    pub fn parse(s: &str) -> Result<Policy> {
        let bad = |why: &str| Error::InvalidInput(format!("policy {s:?}: {why}; valid: {VALID}"));
        let lower = s.trim().to_ascii_lowercase();
        let mut parts = lower.split(':');
        let name = parts.next().unwrap_or("");
        let rest: Vec<&str> = parts.collect();
        match name {
            "static" if rest.is_empty() => Ok(Policy::Static),
            "dynamic" if rest.len() <= 1 => {
                let chunk = match rest.first() {
                    Some(c) => c.parse().map_err(|_| bad("chunk is not a whole number"))?,
                    None => 0,
                };
                Ok(Policy::Dynamic { chunk })
            }
            "hguided" if rest.len() <= 2 => {
                let k = match rest.first() {
                    Some(k) => k.parse::<f64>().map_err(|_| bad("k is not a number"))?,
                    None => 2.0,
                };
                if !k.is_finite() {
                    return Err(bad("k is not a finite number"));
                }
                if k < 1.0 {
                    return Err(bad("k must be at least 1"));
                }
                let min_chunk = match rest.get(1) {
                    Some(c) => c.parse().map_err(|_| bad("min_chunk is not a whole number"))?,
                    None => 0,
                };
                Ok(Policy::HGuided { k, min_chunk })
            }
            _ => Err(bad("unknown policy or too many fields")),
        }
    }

    /// The policy named by `OFFLOAD_POLICY`, or the default ([`Policy::HGuided`])
    /// when it is unset or empty. An invalid value, or one that is not valid
    /// Unicode, is an [`Error::InvalidInput`] naming the variable, showing the
    /// value (invalid bytes as U+FFFD) and listing the valid spellings.
    pub fn from_env() -> Result<Policy> {
        match std::env::var(POLICY_ENV) {
            Ok(s) if !s.trim().is_empty() => Policy::parse(&s).map_err(|e| match e {
                Error::InvalidInput(m) => Error::InvalidInput(format!("{POLICY_ENV}: {m}")),
                other => other,
            }),
            Err(std::env::VarError::NotUnicode(raw)) => Err(Error::InvalidInput(format!(
                "{POLICY_ENV}: {:?} is not valid Unicode (invalid bytes shown as U+FFFD); valid: {VALID}",
                raw.to_string_lossy()
            ))),
            _ => Ok(Policy::default()),
        }
    }

    /// Short name: `static`, `dynamic`, `hguided`.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Static => "static",
            Policy::Dynamic { .. } => "dynamic",
            Policy::HGuided { .. } => "hguided",
        }
    }

    /// Whether the policy sizes chunks from the performance model (and so probes
    /// devices that have no model entry yet).
    pub fn uses_model(&self) -> bool {
        !matches!(self, Policy::Dynamic { .. })
    }

    /// Check the parameters.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Policy::HGuided { k, .. } = self
            && !(k.is_finite() && *k >= 1.0)
        {
            return Err(Error::InvalidInput(format!(
                "HGuided k = {k}: must be a finite number ≥ 1"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!(Policy::parse("static").unwrap(), Policy::Static);
        assert_eq!(Policy::parse(" Dynamic ").unwrap(), Policy::Dynamic { chunk: 0 });
        assert_eq!(Policy::parse("dynamic:4096").unwrap(), Policy::Dynamic { chunk: 4096 });
        assert_eq!(Policy::parse("hguided").unwrap(), Policy::default());
        assert_eq!(
            Policy::parse("hguided:3:512").unwrap(),
            Policy::HGuided { k: 3.0, min_chunk: 512 }
        );
        for bad in ["", "guided", "static:1", "dynamic:x", "hguided:0.5", "hguided:2:1:1"] {
            let e = Policy::parse(bad).unwrap_err();
            assert!(e.to_string().contains("valid: static"), "{bad}: {e}");
        }
        for huge in ["hguided:1e309", "hguided:inf", "hguided:NaN"] {
            let e = Policy::parse(huge).unwrap_err().to_string();
            assert!(e.contains("k is not a finite number"), "{huge}: {e}");
        }
    }
}
