//! Typed errors of the whole crate.
//!
//! Every variant names the thing that was wrong and the limit it broke, so a user
//! can act on the message alone. Backends translate driver codes into these
//! variants in one place each (`map_*_err` in `src/backend/*`); nothing above the
//! backend layer ever sees a raw driver error.
//!
//! No operation that returns one of these errors has changed the caller's host
//! data: inputs are only read, and outputs are only written after the device work
//! has succeeded.

use std::fmt;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which backend a device or an error belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum BackendKind {
    /// The native CPU backend (always present).
    Cpu,
    /// OpenCL through `opencl3`.
    OpenCl,
    /// CUDA through `cudarc`.
    Cuda,
}

impl BackendKind {
    /// Lower-case name used in selectors and reports (`cpu`, `opencl`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::OpenCl => "opencl",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Every backend this crate knows, compiled in or not.
    pub const ALL: [BackendKind; 3] = [BackendKind::Cpu, BackendKind::OpenCl, BackendKind::Cuda];
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in `offload`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A device selector string could not be parsed.
    #[error("invalid device selector {selector:?} (from {source_name}): {why}; valid selectors are {valid}")]
    InvalidSelector {
        /// The string as given.
        selector: String,
        /// Where it came from (`argument` or `OFFLOAD_DEVICE`).
        source_name: &'static str,
        /// What is wrong with it.
        why: String,
        /// The list of valid selectors on this machine.
        valid: String,
    },
    /// A selector was valid but matched no device.
    #[error("selector {selector:?} matches no device; available devices: {available}{unavailable}")]
    NoSuchDevice {
        /// The selector.
        selector: String,
        /// The devices that do exist.
        available: String,
        /// Reasons for unavailable backends, if any.
        unavailable: String,
    },
    /// A backend's driver library is missing or has no usable platform.
    #[error("{backend} backend unavailable: {reason}")]
    BackendUnavailable {
        /// The backend.
        backend: BackendKind,
        /// Why (missing library, no platform, ...).
        reason: String,
    },
    /// Kernel source failed to compile; carries the full build log.
    #[error("kernel {kernel:?} failed to build for {device}:\n{log}")]
    Build {
        /// Kernel name.
        kernel: String,
        /// Device it was built for.
        device: String,
        /// Full compiler log.
        log: String,
    },
    /// The program built, but has no entry point with that name.
    #[error("kernel {kernel:?}: entry point {entry:?} not found in the program built for {device}")]
    EntryNotFound {
        /// Kernel name.
        kernel: String,
        /// Entry name looked up.
        entry: String,
        /// Device.
        device: String,
    },
    /// The kernel has no implementation for the device's backend.
    #[error("kernel {kernel:?} has no {backend} implementation (it has: {has}); cannot run on {device}")]
    NoImplementation {
        /// Kernel name.
        kernel: String,
        /// Backend lacking an implementation.
        backend: BackendKind,
        /// Device asked to run it.
        device: String,
        /// Backends the kernel does implement.
        has: String,
    },
    /// Argument count differs from the kernel's signature.
    #[error("kernel {kernel:?} takes {expected} arguments, got {got}")]
    ArgCount {
        /// Kernel name.
        kernel: String,
        /// Parameters in the signature.
        expected: usize,
        /// Arguments given.
        got: usize,
    },
    /// An argument's type or kind differs from the signature.
    #[error("kernel {kernel:?} argument {index} ({param}): expected {expected}, got {got}")]
    ArgType {
        /// Kernel name.
        kernel: String,
        /// Argument position (0-based).
        index: usize,
        /// Parameter name.
        param: String,
        /// What the signature declares.
        expected: String,
        /// What was passed.
        got: String,
    },
    /// A value does not fit the scalar type it is converted to (no silent truncation).
    #[error("{what} = {value} does not fit in {ty} (range {range})")]
    ScalarRange {
        /// What the value is (a parameter name, `count`).
        what: String,
        /// The value.
        value: String,
        /// The scalar type asked for.
        ty: &'static str,
        /// That type's range.
        range: String,
    },
    /// A buffer passed to a launch or copy lives on another device.
    #[error("buffer for {what} belongs to {owner}, not to {device}")]
    ForeignBuffer {
        /// Which argument or operation.
        what: String,
        /// Device owning the buffer.
        owner: String,
        /// Device asked to use it.
        device: String,
    },
    /// Host slice length differs from the buffer length.
    #[error("{what}: host slice has {host} elements, buffer has {buffer}")]
    LengthMismatch {
        /// Operation (`write`, `read`, ...).
        what: String,
        /// Host length.
        host: usize,
        /// Buffer length.
        buffer: usize,
    },
    /// A buffer argument holds fewer elements than its parameter's declared extent
    /// for this launch (see [`crate::Extent`]); nothing was enqueued.
    #[error(
        "kernel {kernel:?} argument {index} ({param}): buffer has {len} elements, but this launch may touch {needed} ({why})"
    )]
    BufferTooShort {
        /// Kernel name.
        kernel: String,
        /// Argument position (0-based).
        index: usize,
        /// Parameter name.
        param: String,
        /// Buffer length in elements.
        len: usize,
        /// Elements the launch may touch.
        needed: u64,
        /// Where `needed` comes from (`count 64 × 1 per item`, ...).
        why: String,
    },
    /// An asynchronous command failed on its device (reported at `wait()`).
    #[error("{command} failed: {message}")]
    CommandFailed {
        /// The command (`launch "k" on cpu:0`, ...).
        command: String,
        /// What went wrong.
        message: String,
    },
    /// A command was not run because a command it depends on failed.
    #[error("dependency failed: {cause}")]
    DependencyFailed {
        /// The first failed dependency and its error.
        cause: String,
    },
    /// A scalar argument value is refused by the kernel's own check.
    #[error("kernel {kernel:?}: invalid argument: {why}")]
    InvalidArgument {
        /// Kernel name.
        kernel: String,
        /// The kernel's message (names the parameter and the rule).
        why: String,
    },
    /// Invalid launch configuration for the device.
    #[error("invalid launch of {kernel:?} on {device}: {why}")]
    LaunchConfig {
        /// Kernel name.
        kernel: String,
        /// Device.
        device: String,
        /// Which limit, and its value.
        why: String,
    },
    /// Allocation larger than the device allows or than its free memory.
    #[error("allocation of {requested} bytes on {device} exceeds {limit_name} of {limit} bytes")]
    OutOfMemory {
        /// Device.
        device: String,
        /// Bytes requested.
        requested: u64,
        /// Which limit (`max allocation`, `free memory`, ...).
        limit_name: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The device (or runtime) was closed and can no longer be used.
    #[error("{device} has been torn down; {operation} is not possible after close")]
    Closed {
        /// Device.
        device: String,
        /// What was attempted.
        operation: String,
    },
    /// A CPU kernel panicked; the panic was caught and the pool is still usable.
    #[error("CPU kernel {kernel:?} panicked: {message}")]
    KernelPanic {
        /// Kernel name.
        kernel: String,
        /// Panic payload as text.
        message: String,
    },
    /// A driver call failed for a reason without a more specific variant.
    #[error("{backend} driver error on {device} during {operation}: {message}")]
    Driver {
        /// Backend.
        backend: BackendKind,
        /// Device.
        device: String,
        /// What was being done.
        operation: String,
        /// Driver message / code.
        message: String,
    },
    /// Managed data has no valid replica left and cannot be recomputed.
    #[error("data {data:?} elements {}..{} were lost: {why}", .range.start, .range.end)]
    DataLost {
        /// Name of the data.
        data: String,
        /// Elements with no valid replica.
        range: std::ops::Range<usize>,
        /// Why they cannot be recomputed.
        why: String,
    },
    /// An argument to a split launch or simulation is invalid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No device in the set can run the kernel.
    #[error("no device can run kernel {kernel:?}: {why}")]
    NoCapableDevice {
        /// Kernel name.
        kernel: String,
        /// Per-device reasons.
        why: String,
    },
    /// Every device of a split launch failed.
    #[error("every device failed running {kernel:?}: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    AllDevicesFailed {
        /// Kernel name.
        kernel: String,
        /// One error per failed device.
        errors: Vec<Error>,
    },
    /// A file (trace, timeline, snapshot, cache) could not be written.
    #[error("cannot write {what} to {path}: {source}")]
    Io {
        /// What was being written.
        what: &'static str,
        /// Path.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A kernel's signature disagrees with the parameter its device source declares.
    #[error(
        "kernel {kernel:?} parameter {index}: its source on {device} declares `{source_decl}` but the signature declares `{signature}`"
    )]
    SignatureMismatch {
        /// Kernel name.
        kernel: String,
        /// Device whose driver reported the source's parameter types.
        device: String,
        /// Parameter position (0-based).
        index: usize,
        /// The source's declaration: address space, type and name (`__global float* x`).
        source_decl: String,
        /// The signature's parameter: name and what it declares (`s: i32 scalar`).
        signature: String,
    },
    /// A message or collective between the ranks of a distributed run did not
    /// complete in time: the peer is dead, hung, or not running the same program.
    #[error(
        "distributed {operation} with {peer} did not complete within the {limit_ms} ms limit \
         (waited {waited_ms} ms): that rank is dead, hung, or running a different task sequence"
    )]
    NetTimeout {
        /// What was waited for (`receive of "u" part 1`, `allgather`, ...).
        operation: String,
        /// The peer rank, or `all ranks` for a collective.
        peer: String,
        /// Milliseconds waited.
        waited_ms: u64,
        /// The limit (`OFFLOAD_MPI_TIMEOUT_MS`, or the cluster's setting).
        limit_ms: u64,
    },
    /// The ranks of a distributed run submitted different task sequences.
    #[error("task graphs differ between ranks: rank {rank} after {tasks} tasks: {why}")]
    GraphMismatch {
        /// The rank that detected it.
        rank: usize,
        /// Tasks this rank had submitted.
        tasks: u64,
        /// What differs (hashes, or a message's header).
        why: String,
    },
    /// MPI could not be used as asked.
    #[error("MPI {operation}: {why}")]
    Mpi {
        /// The operation (`initialise`, `register`, `submit`, ...).
        operation: String,
        /// Why it failed.
        why: String,
    },
}
