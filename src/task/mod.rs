//! Managed data and task graphs: data stays on the devices, work is placed by
//! predicted cost (StarPU's model, on this crate's queues and events).
//!
//! * [`Data`] is an array registered once with a [`TaskGraph`]. It has a replica
//!   per memory node (host memory, which the CPU device computes on in place,
//!   and each other device's memory) and a coherence state per element range:
//!   a write leaves one valid replica, a read fetches a valid one (from the
//!   host, or from another device through host memory) and then both are
//!   valid. [`Data::acquire`] brings the values home. [`Data::partition`] gives
//!   children over blocks or row bands, optionally with halos, which tasks use
//!   in place.
//! * A [`Task`] is a kernel with data arguments in access modes (read, write,
//!   read-write), scalars and an item space. [`TaskGraph::submit`] returns at
//!   once; the task runs when the tasks submitted before it on the same
//!   elements have finished (read after write, write after read, write after
//!   write).
//! * [`Placement::Dmda`] puts each ready task on the device with the earliest
//!   predicted completion: queued work, plus fetching the replicas it lacks at
//!   the measured link bandwidth (persisted with the performance model), plus
//!   its execution time from the performance model; a task queued behind
//!   other work has its inputs prefetched at once. [`Placement::Eager`]
//!   gives it to the first idle device, for comparison.
//! * A task marked [`Task::split`] is cut into chunks handed to the devices by
//!   the scheduler's dispatcher (HGuided by default), each chunk computed on
//!   the device's slice of its replicas; devices with asynchronous queues keep
//!   two chunks in flight on three queues (uploads, kernels, downloads).
//!   [`crate::schedule::Scheduler::run`] is this with one task, whose host
//!   slices are *streamed* data: never kept on a device, each chunk's slice
//!   moved through reused chunk buffers and written straight home.
//! * A task's writes commit when it completes. A device that fails is dropped
//!   and its tasks run elsewhere; data whose only valid replica was lost is
//!   recomputed by re-running its producer when that producer's inputs are
//!   unchanged, and otherwise the error ([`Error::DataLost`]) names it.
//! * [`TaskGraph::report`] gives per-task records, bytes fetched and bytes
//!   found resident per device, the critical path and the parallelism bound
//!   it implies, and the executed DAG in Graphviz DOT.
//!
//! ```
//! use offload::{BackendKind, Runtime, kernels, task::{Task, TaskGraph}};
//! let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
//! let graph = TaskGraph::new(rt.devices())?;
//! let x = graph.data("x", &vec![1.0f32; 4096])?;
//! let y = graph.data("y", &vec![2.0f32; 4096])?;
//! let z = graph.data("z", &vec![0.0f32; 4096])?;
//! let add = kernels::vector_add()?;
//! // z = x + y, then y = x + z: the second task waits for the first.
//! graph.submit(Task::new(&add).read(&x).read(&y).write(&z).items(4096))?;
//! graph.submit(Task::new(&add).read(&x).read(&z).write(&y).items(4096))?;
//! assert_eq!(y.acquire()?, vec![4.0; 4096]);
//! println!("{}", graph.report());
//! # Ok::<(), offload::Error>(())
//! ```
//!
//! Layout: `data` (handles, replicas, segments), `spec` (tasks and their
//! checks), `graph` (dependencies, placement, workers, commits, faults),
//! `exec` (fetches, and running one task whole on one device), `chunk` (a
//! split task's chunks on one device: queues, chunk buffers, builds),
//! `report`. Only the device layer
//! (buffers, queues, events) is used; no driver is touched here.
//!
//! [`Error::DataLost`]: crate::Error::DataLost

pub(crate) mod chunk;
mod data;
mod exec;
mod graph;
mod report;
mod spec;

pub use data::{Data, Partition, from_tiles, to_tiles};
pub use graph::{GraphBuilder, Placement, TaskGraph, TaskHandle};
pub use report::{DeviceTasks, GraphReport, TaskRecord};
pub use spec::Task;
