//! One profile for the whole run: every rank's records gathered on rank 0,
//! each device label prefixed with its rank (`rank 1 cpu:0`, `rank 1 net`), so
//! the report, the Chrome trace and the SVG timeline get a lane per rank and
//! device.
//!
//! Times are aligned at the barrier at the end of [`Cluster`] construction:
//! each rank calls the moment it left the barrier zero, so lanes of different
//! ranks agree to within the barrier's exit skew (microseconds on one host).
//! Records from before that moment, and records past a rank's record cap
//! (kept only as aggregates, see [`crate::profile`]), are left out.

use crate::error::{Error, Result};
use crate::profile::{Profile, StageRecord};

use super::Cluster;

impl Cluster {
    /// This rank's profile since the cluster started, times counted from the
    /// common zero and device labels prefixed with the rank.
    pub fn local_profile(&self) -> Profile {
        let mut p = self.profiler_snapshot();
        let rank = self.rank();
        p.records.retain(|r| r.start_ns >= self.epoch_ns);
        for r in &mut p.records {
            r.start_ns -= self.epoch_ns;
            r.end_ns = r.end_ns.saturating_sub(self.epoch_ns);
            r.device = format!("rank {rank} {}", r.device);
        }
        p.dropped.clear();
        p
    }

    /// Every rank's [`Cluster::local_profile`] merged, on rank 0 (`None` on the
    /// other ranks). Every rank must call it at the same point of the run.
    pub fn gather_profile(&self) -> Result<Option<Profile>> {
        let mine = self.local_profile();
        let json = serde_json::to_vec(&mine.records).map_err(|e| Error::Mpi {
            operation: "gather profiles".into(),
            why: format!("cannot encode this rank's records: {e}"),
        })?;
        let mut net = self.net.lock();
        let lens = net.all_gather((json.len() as u64).to_le_bytes().to_vec(), "profile sizes")?;
        let lens: Vec<usize> = lens
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) as usize)
            .collect();
        let header = [0, 0, 0, 0];
        if self.rank() != 0 {
            net.send(0, header, &json, "profile → rank 0".into());
            net.flush()?;
            return Ok(None);
        }
        let mut all = mine;
        for (r, &len) in lens.iter().enumerate().skip(1) {
            let bytes = net.recv(r, header, len, format!("profile ← rank {r}"))?;
            let recs: Vec<StageRecord> = serde_json::from_slice(&bytes).map_err(|e| Error::Mpi {
                operation: "gather profiles".into(),
                why: format!("cannot decode rank {r}'s records: {e}"),
            })?;
            all.records.extend(recs);
        }
        all.records.sort_by_key(|r| r.start_ns);
        Ok(Some(all))
    }
}
