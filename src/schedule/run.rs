//! A split launch over host slices, run as the one-task case of the task
//! graph: each elementwise host slice becomes *streamed* data (each chunk
//! moves its slice through the device's chunk buffers and writes its results
//! straight home; the CPU device computes on the slices in place), each
//! broadcast slice becomes read-only data borrowed without a copy (fetched
//! once per device), and the kernel becomes one split task. The graph's
//! machinery runs it: builds on every device at once, warm-up launches, the
//! dispatcher (`dispatch.rs`) with its policies and probes, two chunks in
//! flight on three queues per asynchronous device (`task/chunk.rs`), and
//! re-runs of failed devices' chunks. What is left here is the translation
//! and the report.
//!
//! This module uses the task layer only; it never touches a driver.

use super::model::PerfModel;
use super::policy::Policy;
use super::report::{Excluded, SplitReport};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernel::{Access, ElemType, Kernel, Scalar};
use crate::task::{Task, TaskGraph};

/// Host memory written by the run (an output slice the run borrows exclusively).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostOut {
    pub ptr: *mut u8,
    pub len: usize,
}

/// What the run passes for one kernel parameter.
pub(crate) enum Slot<'h> {
    /// The chunk's first item (u32).
    Offset,
    /// The chunk's item count (u32).
    Count,
    /// A scalar, as given.
    Scalar(Scalar),
    /// Local memory of this many elements.
    Local(usize),
    /// A buffer following the items: each chunk moves its slice.
    Elem {
        /// Element type.
        ty: ElemType,
        /// Host data to upload (read-only inputs).
        input: Option<&'h [u8]>,
        /// Host data to write back (and, for read-write buffers, to upload).
        output: Option<HostOut>,
        /// Read-write: the output's current contents are uploaded first.
        read_write: bool,
    },
    /// A read-only buffer every device gets whole, uploaded once per device.
    Bcast {
        /// Element type.
        ty: ElemType,
        /// Host data.
        data: &'h [u8],
    },
}

/// A checked split launch, ready to run.
pub(crate) struct Job<'a, 'h> {
    pub kernel: &'a Kernel,
    pub items: usize,
    pub slots: Vec<Slot<'h>>,
    pub policy: Policy,
    pub max_block: u32,
}

/// One participating device, as the run sees it.
pub(crate) struct Participant<'a> {
    pub device: &'a Device,
    /// Unique label within the scheduler.
    pub label: String,
}

/// Run `job` over `parts`, learning into `model`. Returns the report, or
/// [`Error::AllDevicesFailed`] when no device is left and items remain.
pub(crate) fn execute(
    job: &Job<'_, '_>,
    parts: &[Participant<'_>],
    model: &mut PerfModel,
    excluded: Vec<Excluded>,
) -> Result<SplitReport> {
    let devices: Vec<Device> = parts.iter().map(|p| p.device.clone()).collect();
    let path = model.path().map(|p| p.to_path_buf());
    let mut m = model.clone();
    m.set_path(None);
    let graph = TaskGraph::builder(&devices)
        .allow_shared_cores(true)
        .split_policy(job.policy)
        .model(m)
        .labels(parts.iter().map(|p| p.label.clone()).collect())
        .build()?;
    let mut task = Task::new(job.kernel).split().items(job.items).max_block(job.max_block);
    task.chunk_labels = true;
    for (slot, param) in job.slots.iter().zip(job.kernel.params()) {
        let name = param.name();
        task = match slot {
            Slot::Offset | Slot::Count => task,
            Slot::Scalar(s) => task.scalar(*s),
            Slot::Local(n) => task.local(*n),
            Slot::Elem {
                ty,
                input,
                output,
                read_write,
            } => {
                let (ptr, bytes, mode) = match (input, output) {
                    (Some(i), _) => (i.as_ptr() as *mut u8, i.len(), Access::Read),
                    (None, Some(o)) if *read_write => (o.ptr, o.len, Access::ReadWrite),
                    (None, Some(o)) => (o.ptr, o.len, Access::Write),
                    (None, None) => return Err(Error::InvalidInput(format!("argument {name:?} has no host data"))),
                };
                // `Scheduler::run` borrows the slice for the whole call (an input
                // shared and only read, an output exclusively; outputs overlap no
                // other argument, checked before the run); typed host data is
                // aligned for its element type. The graph is dropped before the
                // run returns, after every command using the slice completed.
                // SAFETY: valid, aligned and unaliased for as long as it is used (above).
                let root = unsafe { graph.borrow_root(name, *ty, ptr, bytes / ty.size.max(1), true) };
                task.root(&root, mode)
            }
            Slot::Bcast { ty, data } => {
                // As for an elementwise input: borrowed shared and only read for
                // the whole call, aligned, and used by no command after it.
                // SAFETY: valid, aligned and never written while borrowed (above).
                let root = unsafe {
                    graph.borrow_root(name, *ty, data.as_ptr() as *mut u8, data.len() / ty.size.max(1), false)
                };
                task.root(&root, Access::Read)
            }
        };
    }
    let result = graph.submit(task).and_then(|h| {
        let r = h.wait();
        let report = graph.inner.take_split_report(h.id());
        r.map(|()| report)
    });
    let mut learned = graph.model();
    learned.set_path(path);
    *model = learned;
    // Every command has completed (the task ended); the workers stop here.
    drop(graph);
    let mut report = result?.ok_or_else(|| Error::InvalidInput("the split task left no report".into()))?;
    let mut all = excluded;
    all.append(&mut report.excluded);
    report.excluded = all;
    Ok(report)
}

/// Whether two host regions `(address, length)` overlap (empty regions never do).
pub(crate) fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.1 > 0 && b.1 > 0 && a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_detection() {
        assert!(overlaps((100, 10), (105, 10)));
        assert!(overlaps((105, 10), (100, 10)));
        assert!(overlaps((100, 10), (100, 1)));
        assert!(!overlaps((100, 10), (110, 10)));
        assert!(!overlaps((100, 0), (100, 10)));
    }
}
