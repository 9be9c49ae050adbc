//! Distributed runs on MPI (cargo feature `mpi`): owner-computes over managed
//! data, in the style of StarPU-MPI.
//!
//! * [`Cluster`] is one rank: MPI (the `mpi` crate over the system's MPI), this
//!   rank's devices and its [`crate::task::TaskGraph`].
//! * [`DistData`] is an array registered on every rank with the same values and
//!   cut by a [`crate::task::Partition`]; each part has an owner rank.
//! * Every rank submits the same [`DistTask`]s in the same order. A task runs on
//!   the rank owning what it writes. Elements it reads that another rank owns
//!   are sent by the owner with non-blocking sends and received by the runner,
//!   which keeps them until the owner writes them again (every rank tracks
//!   this identically, so no rank asks: the owner knows when to send).
//! * [`Cluster::all_gather`] makes every part valid everywhere with one MPI
//!   allgather, for all-to-all patterns (N-body positions).
//! * Every data message carries the sender's running hash of the submitted task
//!   sequence, and [`Cluster::sync`] compares every rank's hash: ranks that
//!   submitted different tasks get [`crate::Error::GraphMismatch`], not a
//!   deadlock. Every wait on another rank is bounded ([`Cluster::timeout`],
//!   `OFFLOAD_MPI_TIMEOUT_MS`): a dead or hung rank gives
//!   [`crate::Error::NetTimeout`]; [`Cluster::abort`] then ends every rank.
//! * Each message is a [`crate::profile::Stage::Net`] record (bytes, time, peer
//!   in the label) on the `net` lane of the rank's profile;
//!   [`Cluster::gather_profile`] merges every rank's records into one
//!   [`crate::profile::Profile`] with a lane per rank and device.
//!
//! MPI initialises once per process; start ranks with `mpirun -np N program`.
//!
//! Limitation: a rank's devices must include the CPU device
//! ([`ClusterBuilder::build`] fails with [`crate::Error::Mpi`] otherwise).
//! Received elements are written into the local replica by a copy task on the
//! CPU device, ordered like any task after the earlier readers of those
//! elements. The received range can start anywhere in the array, while a view
//! given to a GPU kernel must start where the device can start a sub-buffer, so
//! the store runs on the CPU. Accelerators work alongside it: a rank built over
//! the CPU and its GPUs runs its tasks on any of them, and the task layer moves
//! the stored elements to the GPU that reads them next.
//!
//! Layout: `cluster` (the handle, submission, sync), `data` (parts, owners,
//! validity), `task` (the task builder), `net` (messages with timeouts and
//! records), `profile` (the merged profile).

mod cluster;
mod data;
mod net;
mod profile;
mod task;

pub use cluster::{Cluster, ClusterBuilder, DEFAULT_TIMEOUT, TIMEOUT_ENV};
pub use data::{DistData, Piece};
pub use net::{NET_LANE, NetStats};
pub use task::DistTask;
