//! The performance model: per (kernel, device) item rate, per-launch latency and
//! host↔device bandwidth, learned from finished chunks and kept in a JSON file.
//!
//! A chunk of `n` items moving `b` bytes is predicted to take
//! `latency + b / bandwidth + n / rate` seconds on a device. The first time a
//! kernel meets a device, two probe chunks of different sizes give the latency
//! (intercept) and the rate (slope); every later chunk updates rate and bandwidth
//! by an exponentially weighted moving average.
//!
//! The file lives at `<cache dir>/perf-model.json` ([`crate::cache::cache_dir`],
//! `OFFLOAD_CACHE_DIR` overrides). A missing file is an empty model; a corrupt
//! file, one written by another format version, or an entry with impossible
//! numbers is ignored with a `tracing` warning, and the devices concerned are
//! probed again. Writes are atomic ([`crate::cache::write_atomic`]: a temporary
//! file unique to the write, then a rename), so concurrent savers never fail on
//! each other's temporary file and readers never see half a file. This module only
//! reads and writes that file; it never touches a device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernel::Kernel;

/// File name of the model inside the cache directory.
pub const MODEL_FILE: &str = "perf-model.json";

/// Format version of the file; a file with another version is ignored.
const VERSION: u32 = 1;

/// Weight of a new observation in the moving averages.
const ALPHA: f64 = 0.3;

/// What the model knows about one kernel on one device.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Items per second of the kernel alone (excluding launch latency).
    pub rate: f64,
    /// Seconds per launch independent of its size.
    pub latency_s: f64,
    /// Host↔device bytes per second (0 when nothing has been transferred yet).
    pub bandwidth: f64,
    /// Observations folded in; 2 or more means calibrated (latency and rate separated).
    pub samples: u64,
}

impl Estimate {
    /// Whether latency and rate come from at least two observations.
    pub fn calibrated(&self) -> bool {
        self.samples >= 2
    }

    /// Seconds to move `bytes` between host and device.
    pub fn transfer_s(&self, bytes: f64) -> f64 {
        if self.bandwidth > 0.0 {
            bytes / self.bandwidth
        } else {
            0.0
        }
    }

    /// Seconds per item, transfer of `bytes_per_item` included.
    pub fn per_item_s(&self, bytes_per_item: f64) -> f64 {
        1.0 / self.rate + self.transfer_s(bytes_per_item)
    }

    /// Predicted seconds for a chunk of `items` moving `bytes_per_item` each:
    /// `latency + bytes / bandwidth + items / rate`.
    pub fn chunk_s(&self, items: f64, bytes_per_item: f64) -> f64 {
        self.latency_s + items * self.per_item_s(bytes_per_item)
    }

    fn valid(&self) -> bool {
        self.rate.is_finite()
            && self.rate > 0.0
            && self.latency_s.is_finite()
            && self.latency_s >= 0.0
            && self.bandwidth.is_finite()
            && self.bandwidth >= 0.0
    }
}

/// One finished chunk as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Observation {
    /// Items computed.
    pub items: usize,
    /// Kernel seconds.
    pub kernel_s: f64,
    /// Bytes moved host↔device for this chunk.
    pub bytes: u64,
    /// Seconds spent moving them.
    pub transfer_s: f64,
}

#[derive(Serialize, Deserialize)]
struct ModelFile {
    version: u32,
    entries: BTreeMap<String, Estimate>,
    /// Measured bandwidth between memory nodes, bytes/s (`"host -> opencl:0 <name>"`).
    #[serde(default)]
    links: BTreeMap<String, f64>,
}

/// The performance model: a map from `(kernel, device)` keys to [`Estimate`]s,
/// optionally backed by a file.
#[derive(Clone, Debug, Default)]
pub struct PerfModel {
    path: Option<PathBuf>,
    entries: BTreeMap<String, Estimate>,
    links: BTreeMap<String, f64>,
}

impl PerfModel {
    /// An empty model with no file.
    pub fn in_memory() -> Self {
        PerfModel::default()
    }

    /// `<cache dir>/perf-model.json`, if a cache directory is known.
    pub fn default_path() -> Option<PathBuf> {
        crate::cache::cache_dir().map(|d| d.join(MODEL_FILE))
    }

    /// Load from the default path (empty model when there is none).
    pub fn load_default() -> Self {
        match Self::default_path() {
            Some(p) => Self::load(&p),
            None => PerfModel::in_memory(),
        }
    }

    /// Load from `path`. A missing file gives an empty model bound to `path`; a
    /// corrupt or stale file is ignored with a warning (its devices are probed
    /// again and the file is rewritten on the next save).
    pub fn load(path: &Path) -> Self {
        let mut m = PerfModel {
            path: Some(path.to_path_buf()),
            entries: BTreeMap::new(),
            links: BTreeMap::new(),
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return m,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the performance model; recalibrating");
                return m;
            }
        };
        match serde_json::from_slice::<ModelFile>(&bytes) {
            Ok(f) if f.version == VERSION => {
                m.links = f.links.into_iter().filter(|(_, v)| v.is_finite() && *v > 0.0).collect();
                for (k, e) in f.entries {
                    if e.valid() {
                        m.entries.insert(k, e);
                    } else {
                        tracing::warn!(path = %path.display(), entry = %k, "impossible values in the performance model entry; recalibrating it");
                    }
                }
            }
            Ok(f) => tracing::warn!(
                path = %path.display(),
                found = f.version,
                expected = VERSION,
                "performance model written by another format version; ignoring it and recalibrating"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "corrupt performance model file; ignoring it and recalibrating"
            ),
        }
        m
    }

    /// Measured bandwidths between memory nodes, bytes/s, keyed
    /// `"<from> -> <to>"` where a node is `host` or a device's label and name
    /// (the task graph's transfer model).
    pub fn links(&self) -> &BTreeMap<String, f64> {
        &self.links
    }

    /// Set the bandwidth of one link (ignored unless finite and positive).
    pub fn set_link(&mut self, key: String, bytes_per_s: f64) {
        if bytes_per_s.is_finite() && bytes_per_s > 0.0 {
            self.links.insert(key, bytes_per_s);
        }
    }

    /// The file this model is saved to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Bind to another file (the next [`PerfModel::save`] writes there).
    pub fn set_path(&mut self, path: Option<PathBuf>) {
        self.path = path;
    }

    /// Write the model to its file atomically. Without a path this does nothing.
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let io = |source: std::io::Error| Error::Io {
            what: "performance model",
            path: path.display().to_string(),
            source,
        };
        let file = ModelFile {
            version: VERSION,
            entries: self.entries.clone(),
            links: self.links.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
        crate::cache::write_atomic(path, &json).map_err(io)
    }

    /// The key of `kernel` on `device`: kernel name, device label, device name,
    /// driver version (a driver update can change the compiled code), compute
    /// units (a CPU pool of 1 thread and one of 8 are different devices) and the
    /// start of [`Kernel::fingerprint`] (signature and sources: an edited kernel
    /// is a new entry).
    pub fn key(kernel: &Kernel, device: &Device) -> String {
        let i = device.info();
        let fp = kernel.fingerprint();
        format!(
            "{} @ {} {} (driver {}, {} CU) #{}",
            kernel.name(),
            device.label(),
            i.name,
            i.driver_version,
            i.compute_units,
            &fp[..fp.len().min(16)]
        )
    }

    /// The estimate for a key.
    pub fn get(&self, key: &str) -> Option<&Estimate> {
        self.entries.get(key)
    }

    /// Set (or replace) an estimate; invalid numbers are refused.
    pub fn insert(&mut self, key: String, e: Estimate) -> Result<()> {
        if !e.valid() {
            return Err(Error::InvalidInput(format!(
                "performance estimate for {key:?} has impossible values: {e:?}"
            )));
        }
        self.entries.insert(key, e);
        Ok(())
    }

    /// Forget one key (it is probed again next time).
    pub fn remove(&mut self, key: &str) -> Option<Estimate> {
        self.entries.remove(key)
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Estimate)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Fold the two probe chunks of a first encounter into a calibrated estimate:
    /// latency is the intercept and rate the slope of kernel time over items.
    pub(crate) fn calibrate(&mut self, key: &str, a: Observation, b: Observation) {
        let (small, big) = if a.items <= b.items { (a, b) } else { (b, a) };
        let dn = big.items as f64 - small.items as f64;
        let dt = big.kernel_s - small.kernel_s;
        let (rate, latency) = if dn >= 1.0 && dt > 0.0 {
            let rate = dn / dt;
            (rate, (small.kernel_s - small.items as f64 / rate).max(0.0))
        } else {
            // Equal sizes or noise: no intercept can be separated; count all as rate.
            let items = (small.items + big.items) as f64;
            (items / (small.kernel_s + big.kernel_s).max(1e-9), 0.0)
        };
        let bytes = (a.bytes + b.bytes) as f64;
        let tt = a.transfer_s + b.transfer_s;
        let bandwidth = if bytes > 0.0 && tt > 0.0 { bytes / tt } else { 0.0 };
        let e = Estimate {
            rate: rate.max(1e-3),
            latency_s: latency,
            bandwidth,
            samples: 2,
        };
        if e.valid() {
            self.entries.insert(key.to_string(), e);
        }
    }

    /// Fold one finished chunk in: a first observation of an unknown key gives a
    /// provisional estimate (samples 1); later ones update rate and bandwidth by
    /// a moving average (latency stays from calibration).
    pub(crate) fn observe(&mut self, key: &str, o: Observation) {
        if o.items == 0 || !(o.kernel_s.is_finite() && o.kernel_s >= 0.0) {
            return;
        }
        let bw_obs = if o.bytes > 0 && o.transfer_s > 0.0 {
            Some(o.bytes as f64 / o.transfer_s)
        } else {
            None
        };
        match self.entries.get_mut(key) {
            Some(e) => {
                let compute = (o.kernel_s - e.latency_s).max(0.5 * o.kernel_s).max(1e-9);
                let r = o.items as f64 / compute;
                // Weight by size: a chunk of ~5 ms or more at the current estimate
                // counts fully, a tiny end-game chunk (latency and noise dominated)
                // almost not at all, so a run's many small last chunks cannot drag
                // the rate away from what the big chunks measured. Averaging time per
                // item (harmonic) rather than items per second keeps it unbiased.
                let full = (e.rate * 0.005).max(1.0);
                let w = ALPHA * (o.items as f64 / full).min(1.0);
                e.rate = 1.0 / ((1.0 - w) / e.rate + w / r);
                if let Some(bw) = bw_obs {
                    e.bandwidth = if e.bandwidth > 0.0 {
                        1.0 / ((1.0 - w) / e.bandwidth + w / bw)
                    } else {
                        bw
                    };
                }
                e.samples = e.samples.saturating_add(1);
            }
            None => {
                let e = Estimate {
                    rate: o.items as f64 / o.kernel_s.max(1e-9),
                    latency_s: 0.0,
                    bandwidth: bw_obs.unwrap_or(0.0),
                    samples: 1,
                };
                if e.valid() {
                    self.entries.insert(key.to_string(), e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(items: usize, kernel_s: f64) -> Observation {
        Observation {
            items,
            kernel_s,
            bytes: items as u64 * 12,
            transfer_s: items as f64 * 12.0 / 1e10,
        }
    }

    #[test]
    fn key_names_the_kernel_source_and_the_driver() {
        let rt = crate::Runtime::new().unwrap();
        let cpu = rt.device("cpu").unwrap();
        let kernel = |body: &str| {
            // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
            unsafe {
                crate::Kernel::builder("k")
                    .param(crate::Param::Count)
                    .opencl(format!("__kernel void k(uint n) {{ {body} }}"), "k")
            }
            .cpu(|_| {})
            .build()
            .unwrap()
        };
        let (a, b) = (kernel(""), kernel("(void)n;"));
        let key = PerfModel::key(&a, &cpu);
        assert!(key.starts_with("k @ cpu:0 "), "{key}");
        assert!(key.contains(&format!("driver {}", cpu.info().driver_version)), "{key}");
        assert_eq!(key, PerfModel::key(&kernel(""), &cpu), "same description, same key");
        assert_ne!(key, PerfModel::key(&b, &cpu), "an edited source is another entry");
    }

    #[test]
    fn calibration_separates_latency_and_rate() {
        let mut m = PerfModel::in_memory();
        // 10 µs latency, 1e8 items/s.
        m.calibrate("k", obs(1000, 10e-6 + 1e-5), obs(8000, 10e-6 + 8e-5));
        let e = m.get("k").unwrap();
        assert!((e.rate - 1e8).abs() / 1e8 < 1e-6, "{e:?}");
        assert!((e.latency_s - 10e-6).abs() < 1e-9, "{e:?}");
        assert!((e.bandwidth - 1e10).abs() / 1e10 < 1e-6, "{e:?}");
        assert!(e.calibrated());
        // A later, slower chunk moves the rate toward it.
        m.observe("k", obs(8000, 10e-6 + 16e-5));
        let r = m.get("k").unwrap().rate;
        assert!(r < 1e8 && r > 5e7, "{r}");
    }
}
