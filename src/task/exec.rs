//! Running one task on one device: fetch the replicas it lacks, launch its
//! kernel on views of the device's replicas, wait, and report what it measured.
//!
//! A fetch goes from the host replica when it is valid, otherwise from a
//! device that holds the segment, through host memory (which then holds a valid
//! copy too). A segment's validity bit for the destination is set when the
//! transfer is enqueued, with the transfer's event kept in the segment, so
//! another task needing it waits for that transfer instead of repeating it; a
//! failed transfer is found when the graph handles the failure.
//!
//! On the CPU device kernels work on the host replica in place; a read-write
//! argument whose only valid copy is the host's is saved before the launch and
//! restored if the launch fails, so a failed task never loses data.
//!
//! This module uses queues and replicas only; it touches no driver.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use super::data::{NodeId, Root, bit};
use super::graph::{GraphInner, TaskId};
use super::spec::{ParamArg, TaskSpec};
use crate::backend::queue::HostSub;
use crate::buffer::{RawBuffer, RawView};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::kernel::{Access, Scalar};
use crate::launch::Arg;
use crate::queue::{Queue, Submitted};

/// One transfer a task caused, for the link model.
pub(crate) struct Moved {
    pub from: NodeId,
    pub to: NodeId,
    pub bytes: u64,
    pub seconds: f64,
}

/// What a completed task measured.
pub(crate) struct Exec {
    pub device: usize,
    /// The chunk of a split task it computed.
    pub items: Option<Range<usize>>,
    pub start: Instant,
    pub end: Instant,
    pub kernel_s: f64,
    /// Bytes fetched into the device's memory node for this task.
    pub moved: u64,
    /// Bytes it read that were already there.
    pub saved: u64,
    pub transfers: Vec<Moved>,
}

/// Why a task did not complete.
pub(crate) enum Fail {
    /// Elements `range` of `root` have no valid replica (last written by `writer`).
    Lost {
        root: Arc<Root>,
        range: Range<usize>,
        writer: Option<TaskId>,
    },
    /// Device `device`, the source of a transfer the task needed, failed.
    Source { device: usize, error: Error },
    /// The task's device (or a transfer into it) failed.
    Device {
        error: Error,
        /// The host replica it wrote in place was restored.
        host_restored: bool,
    },
}

pub(crate) fn dev_err(error: Error) -> Fail {
    Fail::Device {
        error,
        host_restored: false,
    }
}

/// Transfers in flight for one task, timed once complete.
#[derive(Default)]
pub(crate) struct Fetches {
    /// Source node, destination node, bytes, command.
    pub events: Vec<(NodeId, NodeId, u64, Submitted)>,
    pub moved: u64,
    pub saved: u64,
    /// Events a kernel on host memory must wait for.
    pub host_waits: Vec<Event>,
}

impl Fetches {
    fn push(&mut self, from: NodeId, to: NodeId, bytes: u64, s: Submitted) -> Option<Event> {
        let ev = match &s {
            Submitted::Event(e) => Some(e.clone()),
            Submitted::Done { .. } => None,
        };
        self.events.push((from, to, bytes, s));
        ev
    }

    pub(crate) fn measured(&self) -> Vec<Moved> {
        self.events
            .iter()
            .filter_map(|(from, to, bytes, s)| {
                let (a, b) = s.span()?;
                Some(Moved {
                    from: *from,
                    to: *to,
                    bytes: *bytes,
                    seconds: b.saturating_duration_since(a).as_secs_f64(),
                })
            })
            .collect()
    }
}

/// Make elements `read` of `root` valid on memory node `node` (device `d`'s,
/// through its graph queue), recording the transfers in `f`.
pub(crate) fn fetch(
    g: &GraphInner,
    root: &Arc<Root>,
    read: &Range<usize>,
    d: Option<usize>,
    node: NodeId,
    f: &mut Fetches,
) -> std::result::Result<(), Fail> {
    let size = root.size();
    let label = &root.name;
    let mut rs = root.state.lock();
    for i in rs.cover(read) {
        let (s, e) = (rs.segs[i].start, rs.end(i));
        let (off, bytes) = (s * size, (e - s) * size);
        let seg = &mut rs.segs[i];
        if seg.valid & bit(node) != 0 {
            if let Some((_, ev)) = seg.fetch.iter().find(|(n, _)| *n == node) {
                f.host_waits.push(ev.clone());
            }
            f.saved += bytes as u64;
            continue;
        }
        if seg.valid == 0 {
            return Err(Fail::Lost {
                root: root.clone(),
                range: s..e,
                writer: seg.writer,
            });
        }
        // Into host memory first, when the host has no valid copy.
        let mut host_ev = seg.fetch.iter().find(|(n, _)| *n == 0).map(|(_, ev)| ev.clone());
        if seg.valid & bit(0) == 0 {
            let src = seg.valid.trailing_zeros() as usize;
            let sd = g.device_of_node(src);
            let src_err = |error| Fail::Source { device: sd, error };
            let rep = root.replica(sd, &g.devices[sd], g.in_place[sd]).map_err(src_err)?;
            let host = HostSub::arc(&root.host, off, bytes).map_err(dev_err)?;
            let q = g.queue(sd).map_err(|e| Fail::Source { device: sd, error: e })?;
            let s = q.read_mem(&rep, off, host, bytes, label).map_err(src_err)?;
            host_ev = f.push(src, 0, bytes as u64, s);
            seg.valid |= bit(0);
            if let Some(ev) = &host_ev {
                seg.fetch.push((0, ev.clone()));
            }
            if node == 0 {
                f.moved += bytes as u64;
            }
        }
        if node == 0 {
            f.host_waits.extend(host_ev);
            continue;
        }
        let Some(d) = d else { continue };
        let q: &Queue = g.queue(d).map_err(dev_err)?;
        let rep = root.replica(d, &g.devices[d], false).map_err(dev_err)?;
        let host = HostSub::arc(&root.host, off, bytes).map_err(dev_err)?;
        // After the transfer into host memory, as a dependency of this command
        // alone (another thread may enqueue on this queue meanwhile).
        let s = q
            .write_mem(&rep, off, host, bytes, label, host_ev.as_ref())
            .map_err(dev_err)?;
        if let Some(ev) = f.push(0, node, bytes as u64, s) {
            seg.fetch.push((node, ev));
        }
        seg.valid |= bit(node);
        f.moved += bytes as u64;
    }
    Ok(())
}

/// Start the transfers task `spec` will need on device `d` (placed there,
/// behind other work), without waiting. Best effort: a problem found here is
/// left for the task's own run to meet and report.
/// Returns the bytes it set moving (counted for the task: its own run then
/// finds them resident).
pub(crate) fn prefetch(g: &GraphInner, d: usize, spec: &TaskSpec) -> u64 {
    let node = g.node_of[d];
    let mut f = Fetches::default();
    for (root, read, _, mode) in spec.data() {
        if mode != Access::Write && fetch(g, root, read, Some(d), node, &mut f).is_err() {
            break;
        }
    }
    f.moved
}

/// Start bringing the data every chunk of split task `spec` reads whole
/// (broadcast) to host memory, without waiting: enqueued when the task starts,
/// before any of its chunks, so that the devices computing in host memory,
/// and transfers to other devices, do not find the copy out of its device
/// queued behind that device's own first chunk (a host-CPU OpenCL device runs
/// transfers and kernels on the same threads). Returns the bytes it set
/// moving. Best effort, as [`prefetch`].
pub(crate) fn prefetch_to_host(g: &GraphInner, spec: &TaskSpec) -> u64 {
    let mut f = Fetches::default();
    for p in &spec.params {
        if let ParamArg::Data {
            root,
            read,
            mode,
            per_item: None,
            ..
        } = p
            && *mode != Access::Write
            && !root.streamed
            && fetch(g, root, read, None, 0, &mut f).is_err()
        {
            break;
        }
    }
    f.moved
}

/// Bring elements `range` of `root` to host memory and wait for them.
pub(crate) fn fetch_to_host(g: &GraphInner, root: &Arc<Root>, range: &Range<usize>) -> std::result::Result<(), Fail> {
    let mut f = Fetches::default();
    fetch(g, root, range, None, 0, &mut f)?;
    for ev in &f.host_waits {
        ev.wait().map_err(dev_err)?;
    }
    for (_, _, _, s) in &f.events {
        s.wait_ref().map_err(dev_err)?;
    }
    Ok(())
}

/// A data argument as one run uses it: root, read range, write range, mode.
pub(crate) type DataUse = (Arc<Root>, Range<usize>, Range<usize>, Access);

/// The data arguments of a run of `spec` (per parameter; `None` for the
/// others): whole, or for chunk `items` of a split task.
pub(crate) fn data_uses(spec: &TaskSpec, items: Option<&Range<usize>>) -> Vec<Option<DataUse>> {
    spec.params
        .iter()
        .map(|p| match p {
            ParamArg::Data {
                root,
                read,
                write,
                mode,
                per_item,
            } => Some(match (items, per_item) {
                (Some(c), Some(e)) => {
                    let r = write.start + c.start * e..write.start + c.end * e;
                    (root.clone(), r.clone(), r, *mode)
                }
                _ => (root.clone(), read.clone(), write.clone(), *mode),
            }),
            _ => None,
        })
        .collect()
}

/// Run `spec` whole on device `d` (a split task's chunks go through
/// `chunk.rs`).
pub(crate) fn run(g: &GraphInner, d: usize, spec: &TaskSpec) -> std::result::Result<Exec, Fail> {
    let start = Instant::now();
    let dev = &g.devices[d];
    let node = g.node_of[d];
    let in_place = g.in_place[d];
    let mut f = Fetches::default();
    let uses = data_uses(spec, None);
    let mut reps: Vec<Option<Arc<RawBuffer>>> = Vec::with_capacity(spec.params.len());
    for u in &uses {
        let Some((root, read, _, mode)) = u else {
            reps.push(None);
            continue;
        };
        let rep = root.replica(d, dev, in_place).map_err(dev_err)?;
        if *mode != Access::Write {
            fetch(g, root, read, Some(d), node, &mut f)?;
        }
        reps.push(Some(rep));
    }
    // A kernel on host memory runs inside the enqueue call: its inputs must be there.
    if in_place {
        for ev in &f.host_waits {
            ev.wait().map_err(|e| {
                dev_err(Error::DependencyFailed {
                    cause: format!("a transfer to host memory failed: {e}"),
                })
            })?;
        }
    }
    // On a device, every transfer into its replicas goes through its one queue
    // (the task's own, a prefetch's, another task's): queue order and the
    // replica's hazards order the kernel after them.
    let saved = if in_place { save_host_only(&uses) } else { Vec::new() };
    let launched = g.queue(d).and_then(|q| launch(g, d, q, spec, &uses, &reps));
    let result = launched.and_then(|s| s.wait_ref().map(|()| s));
    let sub = match result {
        Ok(s) => s,
        Err(error) => {
            let host_restored = !saved.is_empty() && restore_host(&saved);
            return Err(Fail::Device { error, host_restored });
        }
    };
    let end = Instant::now();
    let kernel_s = sub
        .span()
        .map_or(end.saturating_duration_since(start), |(a, b)| {
            b.saturating_duration_since(a)
        })
        .as_secs_f64();
    for (_, _, _, s) in &f.events {
        // Complete: the kernel waited for them (a failure would have failed it).
        s.wait_ref().map_err(dev_err)?;
    }
    Ok(Exec {
        device: d,
        items: None,
        start,
        end,
        kernel_s,
        moved: f.moved,
        saved: f.saved,
        transfers: f.measured(),
    })
}

/// Enqueue the kernel on views of the replicas.
fn launch(
    g: &GraphInner,
    d: usize,
    q: &Queue,
    spec: &TaskSpec,
    uses: &[Option<DataUse>],
    reps: &[Option<Arc<RawBuffer>>],
) -> Result<Submitted> {
    let dev = &g.devices[d];
    let items = spec.space.items();
    let mut views: Vec<Option<RawView<'_>>> = uses
        .iter()
        .zip(reps)
        .map(|(u, r)| match (u, r) {
            (Some((_, read, write, mode)), Some(buf)) => {
                let range = if *mode == Access::Write { write } else { read };
                Some(RawView {
                    buf,
                    start: range.start,
                    len: range.len(),
                })
            }
            _ => None,
        })
        .collect();
    let args = kernel_args(spec, &mut views, 0, items)?;
    let cfg = spec.space.config(dev.info());
    q.launch_labeled(&spec.kernel, &cfg, &args, items, (&spec.label).into())
}

/// The kernel arguments of a run over items `offset..offset + count`: data
/// arguments are the given views (one per parameter, `None` for the others).
pub(crate) fn kernel_args<'a>(
    spec: &TaskSpec,
    views: &'a mut [Option<RawView<'_>>],
    offset: usize,
    count: u64,
) -> Result<Vec<Arg<'a>>> {
    let mut args: Vec<Arg<'a>> = Vec::with_capacity(spec.params.len());
    for (p, v) in spec.params.iter().zip(views.iter_mut()) {
        args.push(match (p, v) {
            (ParamArg::Data { mode, .. }, Some(v)) => {
                if mode.writes() {
                    Arg::Out(v)
                } else {
                    Arg::In(&*v)
                }
            }
            (ParamArg::Scalar(s), _) => Arg::Scalar(*s),
            (ParamArg::Local(n), _) => Arg::Local { len: *n },
            (ParamArg::Offset, _) => Arg::Scalar(Scalar::U32(offset as u32)),
            (ParamArg::Count, _) => Arg::Scalar(Scalar::U32(count as u32)),
            (ParamArg::Data { .. }, None) => {
                return Err(Error::InvalidInput("task argument without memory".into()));
            }
        });
    }
    Ok(args)
}

/// Read-write arguments of a task about to write host memory in place whose
/// only valid copy is the host's: (root, range, saved bytes).
pub(crate) fn save_host_only(uses: &[Option<DataUse>]) -> Vec<(Arc<Root>, Range<usize>, Vec<u8>)> {
    let mut out = Vec::new();
    for (root, _, write, mode) in uses.iter().flatten() {
        if *mode != Access::ReadWrite || write.is_empty() {
            continue;
        }
        let mut rs = root.state.lock();
        let idx = rs.cover(write);
        let only_host = idx.into_iter().any(|i| rs.segs[i].valid == bit(0));
        if only_host {
            out.push((root.clone(), write.clone(), root.host_bytes(write).to_vec()));
        }
    }
    out
}

/// Put saved host bytes back after a failed in-place task. Always succeeds.
pub(crate) fn restore_host(saved: &[(Arc<Root>, Range<usize>, Vec<u8>)]) -> bool {
    for (root, r, bytes) in saved {
        let size = root.size();
        // The task that wrote these bytes has failed and nothing else writes them
        // (its writers wait for it); `r` lies inside the host replica.
        // SAFETY: in bounds, no concurrent access (above).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), root.host.ptr().add(r.start * size), bytes.len());
        }
    }
    true
}
