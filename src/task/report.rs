//! What a task graph did: per-task records, per-device totals (bytes fetched
//! and bytes found resident), the executed DAG's critical path and the
//! speed-up bound it implies, and a Graphviz export of the DAG.
//!
//! This module touches no driver.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

/// One completed task run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TaskRecord {
    /// Task number (submission order; recovery runs come later).
    pub id: usize,
    /// Task name.
    pub name: String,
    /// Device it ran on.
    pub device: String,
    /// Seconds since the graph started, when its worker took it.
    pub start_s: f64,
    /// Seconds since the graph started, when its kernel had completed.
    pub end_s: f64,
    /// Kernel seconds (device clock where the backend has one).
    pub kernel_s: f64,
    /// Bytes fetched into the device's memory for it.
    pub bytes_in: u64,
    /// Bytes it read that were already resident there (not moved).
    pub bytes_resident: u64,
    /// Tasks it waited for.
    pub preds: Vec<usize>,
    /// For a recovery run: the task whose lost results it recomputed.
    pub recovery_of: Option<usize>,
    /// For a chunk of a split task: its items.
    pub chunk: Option<(usize, usize)>,
}

impl TaskRecord {
    /// Seconds from start to end.
    pub fn seconds(&self) -> f64 {
        (self.end_s - self.start_s).max(0.0)
    }
}

/// Totals of one device.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DeviceTasks {
    /// Device label.
    pub device: String,
    /// Tasks it ran.
    pub tasks: usize,
    /// Seconds of its tasks.
    pub busy_s: f64,
    /// Bytes fetched into its memory.
    pub bytes_in: u64,
    /// Bytes its tasks found resident.
    pub bytes_resident: u64,
}

/// What a [`crate::task::TaskGraph`] ran (see [`crate::task::TaskGraph::report`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GraphReport {
    /// Completed runs, in completion order of the graph's bookkeeping (by id).
    pub tasks: Vec<TaskRecord>,
    /// Per device, in the graph's order.
    pub devices: Vec<DeviceTasks>,
    /// Devices dropped after a failure, with the reason.
    pub dropped: Vec<(String, String)>,
    /// Devices left out from the start (shared host cores), with the reason.
    pub excluded: Vec<(String, String)>,
    /// Tasks that failed for good.
    pub failures: Vec<String>,
    /// From the first start to the last end, seconds.
    pub wall_s: f64,
    /// Sum of all task seconds.
    pub work_s: f64,
    /// Seconds along the longest chain of dependent tasks.
    pub critical_path_s: f64,
    /// That chain's task ids, first to last.
    pub critical_path: Vec<usize>,
}

impl GraphReport {
    pub(crate) fn new(
        tasks: Vec<TaskRecord>,
        labels: Vec<String>,
        dropped: Vec<(String, String)>,
        failures: Vec<String>,
    ) -> GraphReport {
        let mut devices: Vec<DeviceTasks> = labels
            .into_iter()
            .map(|device| DeviceTasks {
                device,
                ..DeviceTasks::default()
            })
            .collect();
        for t in &tasks {
            if let Some(d) = devices.iter_mut().find(|d| d.device == t.device) {
                d.tasks += 1;
                d.busy_s += t.seconds();
                d.bytes_in += t.bytes_in;
                d.bytes_resident += t.bytes_resident;
            }
        }
        let first = tasks.iter().map(|t| t.start_s).fold(f64::INFINITY, f64::min);
        let last = tasks.iter().map(|t| t.end_s).fold(0.0, f64::max);
        let wall_s = if tasks.is_empty() { 0.0 } else { (last - first).max(0.0) };
        let work_s = tasks.iter().map(TaskRecord::seconds).sum();
        let (critical_path_s, critical_path) = critical_path(&tasks);
        GraphReport {
            tasks,
            devices,
            dropped,
            excluded: Vec::new(),
            failures,
            wall_s,
            work_s,
            critical_path_s,
            critical_path,
        }
    }

    /// The most any number of devices could speed the graph up over running its
    /// tasks one after another: work / critical path (Amdahl's law for a DAG:
    /// the chain cannot be parallelised).
    pub fn parallelism_bound(&self) -> f64 {
        if self.critical_path_s > 0.0 {
            self.work_s / self.critical_path_s
        } else {
            1.0
        }
    }

    /// Bytes fetched into devices' memory, all devices.
    pub fn bytes_in(&self) -> u64 {
        self.devices.iter().map(|d| d.bytes_in).sum()
    }

    /// Bytes tasks found resident, all devices.
    pub fn bytes_resident(&self) -> u64 {
        self.devices.iter().map(|d| d.bytes_resident).sum()
    }

    /// The executed DAG in Graphviz DOT: a node per task run (colored by device,
    /// with its time), an edge per dependency; recovery runs are dashed, the
    /// critical path is bold.
    pub fn to_dot(&self) -> String {
        const COLORS: [&str; 8] = [
            "#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#d9d9d9",
        ];
        let color: HashMap<&str, &str> = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.device.as_str(), COLORS[i % COLORS.len()]))
            .collect();
        let on_path: std::collections::HashSet<usize> = self.critical_path.iter().copied().collect();
        let ran: std::collections::HashSet<usize> = self.tasks.iter().map(|t| t.id).collect();
        let mut s =
            String::from("digraph tasks {\n  rankdir=LR;\n  node [shape=box, style=filled, fontname=\"Helvetica\"];\n");
        for d in &self.devices {
            let _ = writeln!(
                s,
                "  \"legend {0}\" [label=\"{0}: {1} tasks\", fillcolor=\"{2}\", shape=note];",
                d.device,
                d.tasks,
                color.get(d.device.as_str()).unwrap_or(&"white")
            );
        }
        // One node per task: a split task's chunks are listed in its label.
        let mut ids: Vec<usize> = Vec::new();
        let mut runs: HashMap<usize, Vec<&TaskRecord>> = HashMap::new();
        for t in &self.tasks {
            if !runs.contains_key(&t.id) {
                ids.push(t.id);
            }
            runs.entry(t.id).or_default().push(t);
        }
        for id in &ids {
            let rs = &runs[id];
            let t = rs[0];
            let name = t.chunk.map_or(t.name.clone(), |_| {
                t.name.split(" [").next().unwrap_or(&t.name).to_string()
            });
            let mut where_: Vec<String> = Vec::new();
            for r in rs {
                let what = match r.chunk {
                    Some((a, b)) => format!("{} [{a}..{b})", r.device),
                    None => r.device.clone(),
                };
                if where_.len() < 6 {
                    where_.push(what);
                } else if where_.len() == 6 {
                    where_.push(format!("+{} more", rs.len() - 6));
                }
            }
            let start = rs.iter().map(|r| r.start_s).fold(f64::INFINITY, f64::min);
            let end = rs.iter().map(|r| r.end_s).fold(0.0, f64::max);
            let style = match (t.recovery_of.is_some(), on_path.contains(id)) {
                (true, _) => "filled,dashed",
                (false, true) => "filled,bold",
                _ => "filled",
            };
            let _ = writeln!(
                s,
                "  t{id} [label=\"#{id} {}\\n{}\\n{:.3} ms\", fillcolor=\"{}\", style=\"{}\"{}];",
                escape(&name),
                where_.iter().map(|w| escape(w)).collect::<Vec<_>>().join("\\n"),
                (end - start).max(0.0) * 1e3,
                color.get(t.device.as_str()).unwrap_or(&"white"),
                style,
                if on_path.contains(id) { ", penwidth=3" } else { "" }
            );
        }
        for id in &ids {
            for p in &runs[id][0].preds {
                if ran.contains(p) {
                    let bold = on_path.contains(p) && on_path.contains(id);
                    let _ = writeln!(s, "  t{p} -> t{id}{};", if bold { " [penwidth=3]" } else { "" });
                }
            }
        }
        s.push_str("}\n");
        s
    }

    /// Write [`GraphReport::to_dot`] to `path` (render with `dot -Tpng`).
    pub fn write_dot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_dot()).map_err(|source| Error::Io {
            what: "task graph",
            path: path.display().to_string(),
            source,
        })
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The longest chain through `tasks` (by seconds), following their
/// dependencies among the runs present. The chunks of a split task are one
/// node, from its first chunk's start to its last chunk's end.
fn critical_path(tasks: &[TaskRecord]) -> (f64, Vec<usize>) {
    struct Node<'a> {
        id: usize,
        start: f64,
        end: f64,
        preds: &'a [usize],
    }
    let mut nodes: Vec<Node<'_>> = Vec::new();
    let mut by_id: HashMap<usize, usize> = HashMap::new();
    for t in tasks {
        match by_id.get(&t.id) {
            Some(&i) => {
                let n = &mut nodes[i];
                n.start = n.start.min(t.start_s);
                n.end = n.end.max(t.end_s);
            }
            None => {
                by_id.insert(t.id, nodes.len());
                nodes.push(Node {
                    id: t.id,
                    start: t.start_s,
                    end: t.end_s,
                    preds: &t.preds,
                });
            }
        }
    }
    // Longest chain ending at each node; predecessors always finish first, so
    // ordering by end time is a topological order of the executed DAG.
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|&a, &b| nodes[a].end.total_cmp(&nodes[b].end));
    let mut best: Vec<(f64, Option<usize>)> = vec![(0.0, None); nodes.len()];
    for &i in &order {
        let (mut len, mut from) = (0.0, None);
        for p in nodes[i].preds {
            if let Some(&j) = by_id.get(p)
                && best[j].0 > len
            {
                len = best[j].0;
                from = Some(j);
            }
        }
        best[i] = (len + (nodes[i].end - nodes[i].start).max(0.0), from);
    }
    let Some(end) = (0..nodes.len()).max_by(|&a, &b| best[a].0.total_cmp(&best[b].0)) else {
        return (0.0, Vec::new());
    };
    let mut path = vec![nodes[end].id];
    let mut cur = end;
    while let Some(p) = best[cur].1 {
        path.push(nodes[p].id);
        cur = p;
    }
    path.reverse();
    (best[end].0, path)
}

impl fmt::Display for GraphReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "task graph: {} task runs, wall {:.3} ms, work {:.3} ms, critical path {:.3} ms ({} tasks): at most {:.2}x from parallelism",
            self.tasks.len(),
            self.wall_s * 1e3,
            self.work_s * 1e3,
            self.critical_path_s * 1e3,
            self.critical_path.len(),
            self.parallelism_bound()
        )?;
        writeln!(
            f,
            "  {:<14} {:>6} {:>10} {:>12} {:>14}",
            "device", "tasks", "busy ms", "fetched MB", "resident MB"
        )?;
        for d in &self.devices {
            writeln!(
                f,
                "  {:<14} {:>6} {:>10.3} {:>12.2} {:>14.2}",
                d.device,
                d.tasks,
                d.busy_s * 1e3,
                d.bytes_in as f64 / 1e6,
                d.bytes_resident as f64 / 1e6
            )?;
        }
        for (d, why) in &self.excluded {
            writeln!(f, "  left out {d}: {why}")?;
        }
        for (d, why) in &self.dropped {
            writeln!(f, "  dropped {d}: {why}")?;
        }
        let recovered = self.tasks.iter().filter(|t| t.recovery_of.is_some()).count();
        if recovered > 0 {
            writeln!(f, "  {recovered} recovery runs recomputed lost data")?;
        }
        for x in &self.failures {
            writeln!(f, "  failed: {x}")?;
        }
        Ok(())
    }
}
