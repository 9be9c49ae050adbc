//! Chrome trace-event export: the profile as JSON that opens in Perfetto
//! (<https://ui.perfetto.dev>) and `chrome://tracing`.
//!
//! Layout of the exported trace (the "JSON object format" of the trace-event
//! specification):
//!
//! * one **process** per device (`pid` 1, 2, ... in first-seen order), named by a
//!   `process_name` metadata event carrying the device label;
//! * one **thread** (track) per queue of that device, named by a `thread_name`
//!   metadata event: `cpu:0` for the records on no queue (queue 0: init,
//!   allocation, teardown, host staging), `cpu:0 queue 3` for the commands of the
//!   queue with id 3. Tracks are sorted by queue id, so two queues whose commands
//!   overlap show as parallel tracks of one device. When records of one track
//!   overlap in time anyway (host threads recording on no queue at once, device
//!   timestamps of one queue mapped onto the host timeline), the overlapping ones
//!   go to extra tracks (`cpu:0 #2`, `cpu:0 queue 3 #2`, ...) so that every track
//!   holds properly ordered, non-overlapping slices;
//! * one **complete event** (`"ph": "X"`) per record, named `<stage> <label>`,
//!   with category `cat` the stage, `ts` and `dur` in microseconds (fractional, so
//!   nanosecond precision survives) and `args` `{bytes, items, clock, label, queue}`.
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

/// One track of one device: a queue, for the SVG timeline also a stage, and, when
/// records of that track overlap, a sub-track number (0 for the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Track {
    /// Queue of every record on the track (0: no queue).
    pub queue: u64,
    /// Stage of every record on the track, when tracks are split by stage.
    pub stage: Option<Stage>,
    /// 0 for the first track of a (queue, stage), 1 for the second, ...
    pub sub: usize,
}

impl Track {
    /// ` #2` for the second track of a (queue, stage), nothing for the first.
    fn suffix(&self) -> String {
        if self.sub == 0 {
            String::new()
        } else {
            format!(" #{}", self.sub + 1)
        }
    }

    /// Trace track name: `cpu:0` (no queue), `cpu:0 queue 3`, `cpu:0 queue 3 #2`.
    pub fn trace_name(&self, device: &str) -> String {
        let mut s = device.to_string();
        if self.queue != 0 {
            s.push_str(&format!(" queue {}", self.queue));
        }
        if let Some(stage) = self.stage {
            s.push(' ');
            s.push_str(stage.name());
        }
        s + &self.suffix()
    }

    /// Timeline row name: `h2d` (no queue), `q3 kernel`, `q3 kernel #2`.
    pub fn row_name(&self) -> String {
        let mut s = if self.queue == 0 {
            String::new()
        } else {
            format!("q{} ", self.queue)
        };
        s.push_str(self.stage.map_or("all", Stage::name));
        s + &self.suffix()
    }
}

/// The tracks of one device's records: for each record (by index into `recs`),
/// the track it goes on, and the sorted list of tracks used (queue, then stage,
/// then sub-track). A track holds one queue's records, and with `by_stage` only
/// those of one stage. Records of one track are placed greedily, earliest start
/// first, on the first sub-track whose last record has ended, so that no
/// sub-track holds overlapping records.
pub(crate) fn assign_tracks(recs: &[&StageRecord], by_stage: bool) -> (Vec<Track>, Vec<Track>) {
    let key = |r: &StageRecord| (r.queue, by_stage.then_some(r.stage));
    let mut order: Vec<usize> = (0..recs.len()).collect();
    order.sort_by_key(|&i| (key(recs[i]), recs[i].start_ns, recs[i].end_ns));
    let mut of_record = vec![
        Track {
            queue: 0,
            stage: None,
            sub: 0
        };
        recs.len()
    ];
    // Per (queue, stage), the end of the last record on each sub-track.
    let mut ends: std::collections::BTreeMap<(u64, Option<Stage>), Vec<u64>> = std::collections::BTreeMap::new();
    for i in order {
        let r = recs[i];
        let (queue, stage) = key(r);
        let slot = ends.entry((queue, stage)).or_default();
        let end = r.end_ns.max(r.start_ns);
        let sub = match slot.iter().position(|&e| e <= r.start_ns) {
            Some(k) => {
                slot[k] = end;
                k
            }
            None => {
                slot.push(end);
                slot.len() - 1
            }
        };
        of_record[i] = Track { queue, stage, sub };
    }
    let tracks: Vec<Track> = ends
        .iter()
        .flat_map(|(&(queue, stage), v)| (0..v.len()).map(move |sub| Track { queue, stage, sub }))
        .collect();
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
            let (of_record, tracks) = assign_tracks(&recs, false);
            for (t, track) in tracks.iter().enumerate() {
                events.push(json!({
                    "ph": "M", "name": "thread_name", "pid": pid, "tid": t + 1,
                    "args": { "name": track.trace_name(device) },
                }));
                events.push(json!({
                    "ph": "M", "name": "thread_sort_index", "pid": pid, "tid": t + 1,
                    "args": { "sort_index": t + 1 },
                }));
            }
            for (r, track) in recs.iter().zip(&of_record) {
                let tid = tracks.binary_search(track).map_or(0, |t| t + 1);
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
                        "queue": r.queue,
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

    fn rec(queue: u64, stage: Stage, start_ns: u64, end_ns: u64) -> StageRecord {
        StageRecord {
            device: "d".into(),
            queue,
            stage,
            label: "x".into(),
            bytes: 0,
            items: 0,
            start_ns,
            end_ns,
            clock: Clock::Host,
        }
    }

    fn track(queue: u64, stage: Option<Stage>, sub: usize) -> Track {
        Track { queue, stage, sub }
    }

    #[test]
    fn overlapping_records_of_one_track_get_separate_sub_tracks() {
        let v = [
            rec(0, Stage::HostToDevice, 0, 10),
            rec(0, Stage::HostToDevice, 5, 15),
            rec(0, Stage::HostToDevice, 10, 20),
            rec(0, Stage::Kernel, 15, 30),
        ];
        let refs: Vec<&StageRecord> = v.iter().collect();
        // Split by stage (the SVG rows).
        let (of, tracks) = assign_tracks(&refs, true);
        let h2d = Some(Stage::HostToDevice);
        assert_eq!(of[0], track(0, h2d, 0));
        assert_eq!(of[1], track(0, h2d, 1));
        // Starts exactly when the first ended: reuses the first track.
        assert_eq!(of[2], track(0, h2d, 0));
        assert_eq!(of[3], track(0, Some(Stage::Kernel), 0));
        assert_eq!(tracks.len(), 3);
        assert_eq!(tracks[1].row_name(), "h2d #2");
        // One track per queue (the trace): the kernel starts when the second
        // upload ends, on the second sub-track (the first is busy until 20).
        let (of, tracks) = assign_tracks(&refs, false);
        assert_eq!(tracks, vec![track(0, None, 0), track(0, None, 1)]);
        assert_eq!(of[3], track(0, None, 1));
        assert_eq!(tracks[0].trace_name("d"), "d");
        assert_eq!(tracks[1].trace_name("d"), "d #2");
    }

    #[test]
    fn each_queue_is_its_own_track() {
        let v = [
            rec(7, Stage::Kernel, 0, 10),
            rec(3, Stage::HostToDevice, 5, 15),
            rec(0, Stage::Alloc, 0, 1),
            rec(3, Stage::Kernel, 15, 20),
        ];
        let refs: Vec<&StageRecord> = v.iter().collect();
        let (of, tracks) = assign_tracks(&refs, false);
        assert_eq!(tracks, vec![track(0, None, 0), track(3, None, 0), track(7, None, 0)]);
        assert_eq!((of[0], of[1], of[3]), (tracks[2], tracks[1], tracks[1]));
        let names: Vec<String> = tracks.iter().map(|t| t.trace_name("cpu:0")).collect();
        assert_eq!(names, ["cpu:0", "cpu:0 queue 3", "cpu:0 queue 7"]);
        let (_, rows) = assign_tracks(&refs, true);
        let names: Vec<String> = rows.iter().map(Track::row_name).collect();
        assert_eq!(names, ["alloc", "q3 h2d", "q3 kernel", "q7 kernel"]);
    }

    #[test]
    fn empty_profile_is_an_empty_trace() {
        let v: Value = serde_json::from_str(&Profile::default().to_chrome_trace()).unwrap();
        assert_eq!(v["traceEvents"].as_array().map(Vec::len), Some(0));
        assert_eq!(v["displayTimeUnit"], "ms");
    }
}
