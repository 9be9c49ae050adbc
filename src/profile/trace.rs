//! Chrome trace-event export: the profile as JSON that opens in Perfetto
//! (<https://ui.perfetto.dev>) and `chrome://tracing`.
//!
//! Layout of the exported trace (the "JSON object format" of the trace-event
//! specification):
//!
//! * one **process** per device (`pid` 1, 2, ... in first-seen order), named by a
//!   `process_name` metadata event carrying the device label;
//! * one **thread** (track) per stage of that device, named by a `thread_name`
//!   metadata event (`h2d`, `kernel`, ...). When records of one stage overlap in
//!   time (several queues or streams copying at once), the overlapping ones go to
//!   extra tracks (`h2d #2`, ...) so that every track holds properly ordered,
//!   non-overlapping slices;
//! * one **complete event** (`"ph": "X"`) per record, with `ts` and `dur` in
//!   microseconds (fractional, so nanosecond precision survives) and `args`
//!   `{bytes, items, clock, label}`.
//!
//! When the profiler dropped records past its cap, only kept records become
//! events and `otherData` carries `dropped_records` (the count) and a `note`
//! saying "N records dropped ...".
//!
//! `displayTimeUnit` is `ms`. An empty profile exports `{"traceEvents": [], ...}`,
//! which both viewers open. This module only formats and writes files; it never
//! touches a device.

use std::path::Path;

use serde_json::{Value, json};

use super::{Clock, Profile, Stage, StageRecord};
use crate::error::Result;

/// One track of one device: a stage and, when records of that stage overlap, a
/// sub-track number (0 for the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Track {
    /// Stage of every record on the track.
    pub stage: Stage,
    /// 0 for the first track of a stage, 1 for the second, ...
    pub sub: usize,
}

impl Track {
    /// `h2d`, or `h2d #2` for the second track of a stage.
    pub fn name(&self) -> String {
        if self.sub == 0 {
            self.stage.name().to_string()
        } else {
            format!("{} #{}", self.stage.name(), self.sub + 1)
        }
    }
}

/// The tracks of one device's records: for each record (by index into `recs`),
/// the track it goes on, and the list of tracks used in display order (stage
/// order, then sub-track). Records of one stage are placed greedily, earliest
/// start first, on the first sub-track whose last record has ended.
pub(crate) fn assign_tracks(recs: &[&StageRecord]) -> (Vec<Track>, Vec<Track>) {
    let mut order: Vec<usize> = (0..recs.len()).collect();
    order.sort_by_key(|&i| (recs[i].stage, recs[i].start_ns, recs[i].end_ns));
    let mut of_record = vec![
        Track {
            stage: Stage::Init,
            sub: 0
        };
        recs.len()
    ];
    // Per stage, the end of the last record on each sub-track.
    let mut ends: Vec<(Stage, Vec<u64>)> = Vec::new();
    for i in order {
        let r = recs[i];
        let slot = match ends.iter_mut().find(|(s, _)| *s == r.stage) {
            Some((_, v)) => v,
            None => {
                ends.push((r.stage, Vec::new()));
                let last = ends.len() - 1;
                &mut ends[last].1
            }
        };
        let sub = match slot.iter().position(|&end| end <= r.start_ns) {
            Some(k) => {
                slot[k] = r.end_ns.max(r.start_ns);
                k
            }
            None => {
                slot.push(r.end_ns.max(r.start_ns));
                slot.len() - 1
            }
        };
        of_record[i] = Track { stage: r.stage, sub };
    }
    let mut tracks: Vec<Track> = ends
        .iter()
        .flat_map(|(stage, v)| (0..v.len()).map(move |sub| Track { stage: *stage, sub }))
        .collect();
    tracks.sort();
    (of_record, tracks)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn clock_name(c: Clock) -> &'static str {
    match c {
        Clock::Host => "host",
        Clock::Device => "device",
    }
}

impl Profile {
    /// The profile as Chrome trace-event JSON (see [`crate::profile::trace`] for the
    /// layout). Opens in Perfetto and `chrome://tracing`.
    pub fn to_chrome_trace(&self) -> String {
        let mut events: Vec<Value> = Vec::with_capacity(self.records.len() + 16);
        for (d, device) in self.devices().iter().enumerate() {
            let pid = d + 1;
            let recs: Vec<&StageRecord> = self.device_records(device).collect();
            events.push(json!({
                "ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                "args": { "name": device },
            }));
            events.push(json!({
                "ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                "args": { "sort_index": pid },
            }));
            let (of_record, tracks) = assign_tracks(&recs);
            for (t, track) in tracks.iter().enumerate() {
                events.push(json!({
                    "ph": "M", "name": "thread_name", "pid": pid, "tid": t + 1,
                    "args": { "name": track.name() },
                }));
                events.push(json!({
                    "ph": "M", "name": "thread_sort_index", "pid": pid, "tid": t + 1,
                    "args": { "sort_index": t + 1 },
                }));
            }
            for (r, track) in recs.iter().zip(&of_record) {
                let tid = tracks.iter().position(|t| t == track).map_or(0, |t| t + 1);
                let name = if r.label.is_empty() {
                    r.stage.name().to_string()
                } else {
                    format!("{} {}", r.stage.name(), r.label)
                };
                events.push(json!({
                    "ph": "X",
                    "name": name,
                    "cat": r.stage.name(),
                    "pid": pid,
                    "tid": tid,
                    "ts": us(r.start_ns),
                    "dur": us(r.duration_ns()),
                    "args": {
                        "bytes": r.bytes,
                        "items": r.items,
                        "clock": clock_name(r.clock),
                        "label": r.label,
                    },
                }));
            }
        }
        let mut other = json!({ "producer": concat!("offload ", env!("CARGO_PKG_VERSION")) });
        if let Some(note) = self.dropped_note() {
            other["dropped_records"] = json!(self.dropped_records());
            other["note"] = json!(note);
        }
        let doc = json!({
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": other,
        });
        doc.to_string()
    }

    /// Write [`Profile::to_chrome_trace`] to `path`. A path that cannot be written
    /// gives [`crate::Error::Io`] naming it; the profile is unchanged and still usable.
    pub fn write_chrome_trace(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        Profile::write_file("Chrome trace", path, self.to_chrome_trace())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(device: &str, stage: Stage, start_ns: u64, end_ns: u64) -> StageRecord {
        StageRecord {
            device: device.into(),
            stage,
            label: "x".into(),
            bytes: 0,
            items: 0,
            start_ns,
            end_ns,
            clock: Clock::Host,
        }
    }

    #[test]
    fn overlapping_records_of_one_stage_get_separate_tracks() {
        let v = [
            rec("d", Stage::HostToDevice, 0, 10),
            rec("d", Stage::HostToDevice, 5, 15),
            rec("d", Stage::HostToDevice, 10, 20),
            rec("d", Stage::Kernel, 12, 30),
        ];
        let refs: Vec<&StageRecord> = v.iter().collect();
        let (of, tracks) = assign_tracks(&refs);
        assert_eq!(
            of[0],
            Track {
                stage: Stage::HostToDevice,
                sub: 0
            }
        );
        assert_eq!(
            of[1],
            Track {
                stage: Stage::HostToDevice,
                sub: 1
            }
        );
        // Starts exactly when the first ended: reuses the first track.
        assert_eq!(
            of[2],
            Track {
                stage: Stage::HostToDevice,
                sub: 0
            }
        );
        assert_eq!(
            of[3],
            Track {
                stage: Stage::Kernel,
                sub: 0
            }
        );
        assert_eq!(tracks.len(), 3);
        assert_eq!(tracks[1].name(), "h2d #2");
    }

    #[test]
    fn empty_profile_is_an_empty_trace() {
        let v: Value = serde_json::from_str(&Profile::default().to_chrome_trace()).unwrap();
        assert_eq!(v["traceEvents"].as_array().map(Vec::len), Some(0));
        assert_eq!(v["displayTimeUnit"], "ms");
    }
}
