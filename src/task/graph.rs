//! The task graph: submission and dependencies, placement, one worker thread
//! per device, commits, faults and recovery of lost data.
//!
//! * **Dependencies** come from the data segments' submission history
//!   (`data.rs`): a task reading a range follows its last writer; a task
//!   writing it follows the last writer and every reader since (sequential
//!   consistency, as in StarPU).
//! * **Placement** of a ready task: [`Placement::Dmda`] puts it on the device
//!   with the earliest predicted completion (queued work + fetch of the replicas
//!   it lacks at the measured link bandwidth + execution time from the
//!   performance model; a device the model does not know yet counts as fast,
//!   so every device gets measured); [`Placement::Eager`] gives it to the
//!   first worker that asks.
//! * **Commits**: a task's writes become the valid replicas when it completes,
//!   never before; a failed task changes nothing but the replicas it may have
//!   corrupted, which are marked invalid.
//! * **Faults**: a device whose task fails is dropped; its replicas are lost,
//!   its queued tasks and the failed task are placed again. A task that finds
//!   a segment with no valid replica has the segment's producer re-run first
//!   (a *recovery* task that restores exactly the segments still holding that
//!   producer's values), if the producer's inputs are unchanged; otherwise it
//!   fails with [`Error::DataLost`] naming the data and elements.
//!
//! Lock order: the graph state, then a root's state, then its replicas.
//! This module touches no driver.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::chunk::{self, Landed, Pipeline};
use super::data::{Data, NodeId, Root, bit};
use super::exec::{self, Exec, Fail};
use super::report::{GraphReport, TaskRecord};
use super::spec::{Task, TaskSpec};
use crate::device::Device;
use crate::error::{BackendKind, Error, Result};
use crate::queue::Queue;
use crate::schedule::dispatch::{self, Next, Plan};
use crate::schedule::model::Observation;
use crate::schedule::{DeviceShare, Excluded, PerfModel, Policy, SplitReport};

/// Index of a task in its graph.
pub(crate) type TaskId = usize;

/// Most devices in one graph (memory nodes are bits of a 64-bit mask).
const MAX_DEVICES: usize = 63;

/// Link bandwidth assumed before one is measured, bytes/s.
const DEFAULT_LINK_BW: f64 = 8e9;

/// How ready tasks are placed on devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Earliest predicted completion: device ready time + fetch time of the
    /// replicas it lacks + execution time from the performance model (StarPU's
    /// `dmda`).
    #[default]
    Dmda,
    /// The first idle device that can run it (StarPU's `eager`).
    Eager,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Dependencies outstanding.
    Waiting,
    /// In the shared ready list (eager).
    Ready,
    /// In a device's queue (dmda).
    Queued(usize),
    /// Executing on a device.
    Running(usize),
    /// A host read (`Data::acquire`) in progress.
    Host,
    /// A split task handing out chunks.
    Split,
    Done,
    Failed,
}

pub(crate) struct Node {
    /// `None` for host reads.
    pub spec: Option<Arc<TaskSpec>>,
    pub deps_left: usize,
    pub preds: Vec<TaskId>,
    pub dependents: Vec<TaskId>,
    /// Tasks that only wait for this one's end, not for its success (later
    /// writers of a recovery run's inputs).
    pub after_me: Vec<TaskId>,
    pub status: Status,
    /// Commit sequence number of its writes (0 until committed).
    pub commit_seq: u64,
    /// A recovery run restores the writes of commit `restore`.
    pub restore: Option<u64>,
    pub recovery_of: Option<TaskId>,
    /// Devices it failed on (bits).
    pub failed_on: u64,
    /// The device errors it met.
    pub errors: Vec<Error>,
    /// Permanent failure, as text, and typed for the first waiter.
    pub failure: Option<String>,
    pub typed: Option<Error>,
    /// Predicted seconds on the device it was queued on.
    pub pred_s: f64,
    /// Its completed runs (one, or a split task's chunks).
    pub runs: Vec<Exec>,
    /// A split task's account of who did what, once it has ended.
    pub split_report: Option<SplitReport>,
    /// Bytes prefetched for it (its runs then found them resident).
    pub prefetched: u64,
}

impl Node {
    fn new(spec: Option<Arc<TaskSpec>>) -> Node {
        Node {
            spec,
            deps_left: 0,
            preds: Vec::new(),
            dependents: Vec::new(),
            after_me: Vec::new(),
            status: Status::Waiting,
            commit_seq: 0,
            restore: None,
            recovery_of: None,
            failed_on: 0,
            errors: Vec::new(),
            failure: None,
            typed: None,
            pred_s: 0.0,
            runs: Vec::new(),
            split_report: None,
            prefetched: 0,
        }
    }

    fn finished(&self) -> bool {
        matches!(self.status, Status::Done | Status::Failed)
    }
}

pub(crate) struct State {
    pub nodes: Vec<Node>,
    ready: VecDeque<TaskId>,
    queued: Vec<VecDeque<TaskId>>,
    /// Predicted seconds of the tasks queued per device.
    queued_s: Vec<f64>,
    /// Start and predicted seconds of the task running per device.
    running: Vec<Option<(Instant, f64)>>,
    pub dead: Vec<Option<String>>,
    unfinished: usize,
    shutdown: bool,
    seq: u64,
    recovering: HashMap<TaskId, TaskId>,
    pub model: PerfModel,
    /// Model keys that have run once in this graph: a first run (kernel
    /// compilation per work-group size on PoCL, lazy module loads on CUDA, first
    /// touch of new memory) is not what the device does, so it teaches nothing.
    warmed: std::collections::HashSet<(usize, String)>,
    /// Keys whose warm-up launch is running.
    warming: std::collections::HashSet<(usize, String)>,
    /// Measured bytes/s per (source node, destination node).
    links: HashMap<(NodeId, NodeId), f64>,
    roots: Vec<Weak<Root>>,
    failures: Vec<String>,
    placement: Placement,
    split_policy: Policy,
    splits: Vec<SplitRun>,
}

/// A split task in progress: the scheduler's dispatcher over its devices.
struct SplitRun {
    id: TaskId,
    plan: Plan,
    st: dispatch::State,
    /// Graph device index of each participant.
    devs: Vec<usize>,
    /// Commit sequence number of its writes (the restored one for a recovery run).
    seq: u64,
    /// Waiting for a recovery task before handing out more chunks.
    blocked_on: Option<TaskId>,
    /// When it started handing out chunks.
    t0: Instant,
    /// Kernel builds started with the task on each participant that has not
    /// run it yet (taken by the participant's warm-up).
    builds: Vec<Option<Arc<chunk::PendingBuild>>>,
}

/// What a worker does next.
enum Work {
    Task(TaskId),
    /// Build and launch split task `id`'s kernel once with no items on this
    /// device before taking chunks: one-time costs (compilation, PoCL's
    /// per-work-group-size compile at the first enqueue) then hold no chunk.
    Warm(TaskId),
    Chunk {
        id: TaskId,
        range: std::ops::Range<usize>,
        probe: bool,
        index: usize,
    },
}

pub(crate) struct GraphInner {
    pub devices: Vec<Device>,
    /// Labels unique within the graph (`cpu:0`, `cpu:0#2` for a second runtime's).
    pub labels: Vec<String>,
    /// Devices left out when the graph was made (shared host cores).
    excluded: Vec<usize>,
    /// Memory node per device.
    pub node_of: Vec<NodeId>,
    /// Whether the device computes on host memory in place.
    pub in_place: Vec<bool>,
    /// One queue per device for the graph's fetches and whole tasks (made
    /// when first used: a graph that only splits streamed data needs none).
    queues: Vec<std::sync::OnceLock<Queue>>,
    pub state: Mutex<State>,
    cv: Condvar,
    pub epoch: Instant,
    /// Memory node names for the persisted link model (`host`, device label and name).
    node_names: Vec<String>,
    model_path: Option<PathBuf>,
}

/// A task graph over a set of devices: managed [`Data`], [`Task`]s submitted
/// in program order and run as their dependencies allow, placed by predicted
/// cost. See the [module docs](crate::task).
///
/// A split task over row bands, then a task pinned to one device:
///
/// ```
/// use offload::{BackendKind, Runtime, kernels, task::{Task, TaskGraph}};
///
/// # fn main() -> offload::Result<()> {
/// let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
/// let graph = TaskGraph::new(rt.devices())?;
/// let n = 8192;
/// let x = graph.data("x", &vec![1.0f32; n])?;
/// let y = graph.data("y", &vec![2.0f32; n])?;
/// let z = graph.data("z", &vec![0.0f32; n])?;
/// let add = kernels::vector_add()?;
/// // z = x + y, cut into chunks over every device of the graph.
/// graph.submit(Task::new(&add).read(&x).read(&y).write(&z).items(n).split())?;
/// // y = x + z on the first device, after the split task (it reads z).
/// let last = graph.submit(Task::new(&add).read(&x).read(&z).write(&y).items(n).on(&rt.devices()[0]))?;
/// last.wait()?;
/// assert_eq!(y.acquire()?, vec![4.0; n]);
/// assert_eq!(graph.report().tasks.len(), 2);
/// # Ok(())
/// # }
/// ```
pub struct TaskGraph {
    pub(crate) inner: Arc<GraphInner>,
    workers: Vec<JoinHandle<()>>,
}

/// Options of a [`TaskGraph`].
pub struct GraphBuilder {
    devices: Vec<Device>,
    allow_shared_cores: bool,
    placement: Placement,
    split_policy: Policy,
    model: Option<PerfModel>,
    labels: Option<Vec<String>>,
}

impl GraphBuilder {
    /// Use these labels for the devices (unique, one per device) instead of
    /// numbering repeated ones here: a scheduler keeps its own numbering.
    pub(crate) fn labels(mut self, labels: Vec<String>) -> Self {
        self.labels = Some(labels);
        self
    }

    /// Placement policy (default [`Placement::Dmda`]).
    pub fn placement(mut self, p: Placement) -> Self {
        self.placement = p;
        self
    }

    /// Let host-CPU devices (the CPU backend, PoCL) share the host's cores even
    /// when their threads together exceed them. By default the graph leaves out
    /// those beyond the first, as the scheduler does, and its report says why
    /// (they would only take cores from each other).
    pub fn allow_shared_cores(mut self, allow: bool) -> Self {
        self.allow_shared_cores = allow;
        self
    }

    /// How split tasks ([`Task::split`]) hand out chunks (default HGuided, as
    /// the scheduler's).
    pub fn split_policy(mut self, p: Policy) -> Self {
        self.split_policy = p;
        self
    }

    /// Use this performance model instead of the persisted one (it is saved to
    /// its own path, if any, when the graph is dropped).
    pub fn model(mut self, m: PerfModel) -> Self {
        self.model = Some(m);
        self
    }

    /// Start the graph: one worker thread per device.
    pub fn build(self) -> Result<TaskGraph> {
        let n = self.devices.len();
        if n == 0 {
            return Err(Error::InvalidInput("a task graph needs at least one device".into()));
        }
        if n > MAX_DEVICES {
            return Err(Error::InvalidInput(format!(
                "a task graph takes at most {MAX_DEVICES} devices, got {n}"
            )));
        }
        for (i, a) in self.devices.iter().enumerate() {
            if self.devices[..i].contains(a) {
                return Err(Error::InvalidInput(format!("{} is given twice", a.label())));
            }
        }
        let in_place: Vec<bool> = self.devices.iter().map(|d| d.backend() == BackendKind::Cpu).collect();
        let node_of = (0..n).map(|i| if in_place[i] { 0 } else { i + 1 }).collect();
        let queues = (0..n).map(|_| std::sync::OnceLock::new()).collect();
        let mut labels: Vec<String> = Vec::with_capacity(n);
        for d in &self.devices {
            let base = d.label().to_string();
            let same = labels
                .iter()
                .filter(|l| l.split('#').next() == Some(base.as_str()))
                .count();
            labels.push(if same == 0 {
                base
            } else {
                format!("{base}#{}", same + 1)
            });
        }
        if let Some(l) = self.labels.filter(|l| l.len() == n) {
            labels = l;
        }
        let model = self.model.unwrap_or_else(PerfModel::load_default);
        let model_path = model.path().map(|p| p.to_path_buf());
        let names: Vec<String> = std::iter::once("host".to_string())
            .chain(self.devices.iter().map(|d| format!("{} {}", d.label(), d.info().name)))
            .collect();
        let excluded: Vec<(usize, String)> = if self.allow_shared_cores {
            Vec::new()
        } else {
            let devs: Vec<&Device> = self.devices.iter().collect();
            crate::schedule::shared_core_exclusions(&devs, &labels, "GraphBuilder::allow_shared_cores")
        };
        let mut dead = vec![None; n];
        for (i, why) in &excluded {
            dead[*i] = Some(why.clone());
        }
        let mut links = HashMap::new();
        for (a, na) in names.iter().enumerate() {
            for (b, nb) in names.iter().enumerate() {
                if let Some(bw) = model.links().get(&format!("{na} -> {nb}")) {
                    links.insert((a, b), *bw);
                }
            }
        }
        let inner = Arc::new(GraphInner {
            excluded: excluded.iter().map(|(i, _)| *i).collect(),
            labels,
            node_of,
            in_place,
            queues,
            state: Mutex::new(State {
                nodes: Vec::new(),
                ready: VecDeque::new(),
                queued: vec![VecDeque::new(); n],
                queued_s: vec![0.0; n],
                running: vec![None; n],
                dead,
                unfinished: 0,
                shutdown: false,
                seq: 0,
                recovering: HashMap::new(),
                model,
                warmed: std::collections::HashSet::new(),
                warming: std::collections::HashSet::new(),
                links,
                roots: Vec::new(),
                failures: Vec::new(),
                placement: self.placement,
                split_policy: self.split_policy,
                splits: Vec::new(),
            }),
            cv: Condvar::new(),
            epoch: Instant::now(),
            node_names: names,
            model_path,
            devices: self.devices,
        });
        let mut workers = Vec::with_capacity(n);
        for d in 0..n {
            let g = inner.clone();
            let h = std::thread::Builder::new()
                .name(format!("offload-task {}", g.devices[d].label()))
                .spawn(move || g.worker(d))
                .map_err(|e| Error::InvalidInput(format!("cannot start a worker thread: {e}")))?;
            workers.push(h);
        }
        Ok(TaskGraph { inner, workers })
    }
}

/// A submitted task: wait for it, or ask whether it finished.
#[derive(Clone)]
pub struct TaskHandle {
    graph: Arc<GraphInner>,
    id: TaskId,
}

impl std::fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskHandle(#{})", self.id)
    }
}

impl TaskHandle {
    /// The task's number in its graph (submission order).
    pub fn id(&self) -> usize {
        self.id
    }

    /// Block until the task has completed (or failed for good).
    pub fn wait(&self) -> Result<()> {
        let mut st = self.graph.state.lock();
        while !st.nodes[self.id].finished() {
            self.graph.cv.wait(&mut st);
        }
        let n = &mut st.nodes[self.id];
        if n.status == Status::Done {
            return Ok(());
        }
        if let Some(e) = n.typed.take() {
            return Err(e);
        }
        Err(Error::CommandFailed {
            command: format!("task #{} {}", self.id, n.spec.as_ref().map_or("", |s| &s.name)),
            message: n.failure.clone().unwrap_or_default(),
        })
    }

    /// Whether the task has completed or failed for good.
    pub fn is_complete(&self) -> bool {
        self.graph.state.lock().nodes[self.id].finished()
    }
}

impl TaskGraph {
    /// A graph over `devices` with [`Placement::Dmda`] and the persisted
    /// performance model.
    pub fn new(devices: &[Device]) -> Result<TaskGraph> {
        TaskGraph::builder(devices).build()
    }

    /// Options, then [`GraphBuilder::build`].
    pub fn builder(devices: &[Device]) -> GraphBuilder {
        GraphBuilder {
            devices: devices.to_vec(),
            allow_shared_cores: false,
            placement: Placement::Dmda,
            split_policy: Policy::default(),
            model: None,
            labels: None,
        }
    }

    /// The devices, in the order given.
    pub fn devices(&self) -> &[Device] {
        &self.inner.devices
    }

    /// The devices' labels in reports, unique within the graph (a second
    /// runtime's `cpu:0` is `cpu:0#2`).
    pub fn labels(&self) -> &[String] {
        &self.inner.labels
    }

    /// Register `values` (copied into host memory once) as managed data.
    pub fn data<T: bytemuck::Pod>(&self, name: &str, values: &[T]) -> Result<Data<T>> {
        Data::register(self, name, values)
    }

    /// Register `len` elements of type `ty` of host memory the caller lends
    /// (no copy) as a root, streamed or not (see `Root::streamed`).
    ///
    /// # Safety
    /// As [`Root::borrowed`]: the memory stays valid, aligned and unaliased
    /// (shared only with other readers if the graph only reads it) until every
    /// command using the root has completed.
    pub(crate) unsafe fn borrow_root(
        &self,
        name: &str,
        ty: crate::kernel::ElemType,
        ptr: *mut u8,
        len: usize,
        streamed: bool,
    ) -> Arc<Root> {
        // SAFETY: forwarded from the caller.
        let root = Arc::new(unsafe { Root::borrowed(name, ty, ptr, len, streamed) });
        self.inner.register_root(&root);
        root
    }

    /// Submit a task: checked against its kernel's signature, ordered after the
    /// earlier tasks on the elements it uses, and run when those finished.
    /// Returns at once.
    pub fn submit(&self, task: Task) -> Result<TaskHandle> {
        let g = &self.inner;
        let spec = Arc::new(TaskSpec::check(task, &g.devices)?);
        if !(0..g.devices.len()).any(|d| spec.allows(d, &g.devices[d])) {
            return Err(Error::NoCapableDevice {
                kernel: spec.kernel.name().to_string(),
                why: "no device of the graph allowed for this task has an implementation of it".into(),
            });
        }
        let mut st = g.state.lock();
        let id = st.nodes.len();
        let mut preds: Vec<TaskId> = Vec::new();
        for (root, read, write, mode) in spec.data() {
            let mut rs = root.state.lock();
            if mode != crate::kernel::Access::Write {
                for i in rs.cover(read) {
                    let s = &mut rs.segs[i];
                    preds.extend(s.last_writer);
                    if s.readers.len() >= 8 {
                        s.readers.retain(|r| st.nodes.get(*r).is_none_or(|n| !n.finished()));
                    }
                    s.readers.push(id);
                }
            }
            if mode.writes() {
                for i in rs.cover(write) {
                    let s = &mut rs.segs[i];
                    preds.extend(s.last_writer);
                    preds.extend(s.readers.iter().copied().filter(|r| *r != id));
                    s.last_writer = Some(id);
                    s.readers.clear();
                }
            }
            if rs.segs.len() > 64 {
                rs.coalesce();
            }
        }
        // A recovery run still to come reads what it reads now: a later writer of
        // those elements waits for it to end (whether or not it succeeds).
        let mut after: Vec<TaskId> = Vec::new();
        for &r in st.recovering.values() {
            let Some(rs) = &st.nodes[r].spec else { continue };
            let overlaps = spec.data().any(|(root, _, write, mode)| {
                mode.writes()
                    && rs.data().any(|(rr, read, _, m)| {
                        m != crate::kernel::Access::Write
                            && Arc::ptr_eq(root, rr)
                            && read.start < write.end
                            && write.start < read.end
                    })
            });
            if overlaps {
                after.push(r);
            }
        }
        st.nodes.push(Node::new(Some(spec)));
        st.unfinished += 1;
        for r in after {
            if !st.nodes[r].finished() {
                st.nodes[id].deps_left += 1;
                st.nodes[r].after_me.push(id);
            }
        }
        g.link(&mut st, id, preds);
        Ok(TaskHandle { graph: g.clone(), id })
    }

    /// Block until every task submitted so far has finished; an error if any
    /// failed for good (each task's own error is at its [`TaskHandle::wait`]).
    pub fn wait_all(&self) -> Result<()> {
        self.inner.wait_all()
    }

    /// What ran where, with the DAG's critical path (see [`GraphReport`]).
    pub fn report(&self) -> GraphReport {
        self.inner.report()
    }

    /// The placement policy in use.
    pub fn placement(&self) -> Placement {
        self.inner.state.lock().placement
    }

    /// Change the placement policy for tasks placed from now on.
    pub fn set_placement(&self, p: Placement) {
        self.inner.state.lock().placement = p;
    }

    /// A copy of the performance model as learned so far.
    pub fn model(&self) -> PerfModel {
        let st = self.inner.state.lock();
        self.inner.model_with_links(&st)
    }
}

impl Drop for TaskGraph {
    fn drop(&mut self) {
        let _ = self.inner.wait_all();
        {
            let mut st = self.inner.state.lock();
            st.shutdown = true;
            if let Some(p) = &self.inner.model_path {
                let mut m = self.inner.model_with_links(&st);
                m.set_path(Some(p.clone()));
                if let Err(e) = m.save() {
                    tracing::warn!(error = %e, "could not save the performance model");
                }
            }
        }
        self.inner.cv.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl GraphInner {
    /// The model with the measured links under their persistent names.
    fn model_with_links(&self, st: &State) -> PerfModel {
        let mut m = st.model.clone();
        for (&(a, b), &bw) in &st.links {
            if let (Some(na), Some(nb)) = (self.node_names.get(a), self.node_names.get(b)) {
                m.set_link(format!("{na} -> {nb}"), bw);
            }
        }
        m
    }

    pub(crate) fn register_root(&self, root: &Arc<Root>) {
        let mut st = self.state.lock();
        st.roots.retain(|w| w.strong_count() > 0);
        st.roots.push(Arc::downgrade(root));
    }

    /// Device `d`'s queue for fetches and whole tasks.
    pub(crate) fn queue(&self, d: usize) -> Result<&Queue> {
        let cell = &self.queues[d];
        if let Some(q) = cell.get() {
            return Ok(q);
        }
        let q = self.devices[d].queue()?;
        Ok(cell.get_or_init(|| q))
    }

    /// The largest view alignment of the graph's devices, bytes.
    pub(crate) fn view_align_bytes(&self) -> usize {
        self.devices
            .iter()
            .map(|d| d.info().view_align_bytes)
            .max()
            .unwrap_or(1)
    }

    /// Device index of memory node `node ≥ 1`.
    pub(crate) fn device_of_node(&self, node: NodeId) -> usize {
        node - 1
    }

    /// Measured (or assumed) bandwidth from node `a` to node `b`.
    fn bw(st: &State, a: NodeId, b: NodeId) -> f64 {
        st.links
            .get(&(a, b))
            .copied()
            .filter(|v| *v > 0.0)
            .unwrap_or(DEFAULT_LINK_BW)
    }

    /// Make `id` wait for `preds` (deduplicated); ready now if none is pending.
    fn link(&self, st: &mut State, id: TaskId, mut preds: Vec<TaskId>) {
        preds.sort_unstable();
        preds.dedup();
        preds.retain(|p| *p != id);
        let mut failed = None;
        for &p in &preds {
            match st.nodes[p].status {
                Status::Done => {}
                Status::Failed => failed = failed.or(Some(p)),
                _ => {
                    st.nodes[id].deps_left += 1;
                    st.nodes[p].dependents.push(id);
                }
            }
        }
        st.nodes[id].preds.extend(preds);
        if let Some(p) = failed {
            let cause = Error::DependencyFailed {
                cause: format!("task #{p} failed: {}", st.nodes[p].failure.clone().unwrap_or_default()),
            };
            self.fail(st, id, cause);
        } else if st.nodes[id].deps_left == 0 && st.nodes[id].status == Status::Waiting {
            self.place(st, id);
        }
        self.cv.notify_all();
    }

    fn wait_all(&self) -> Result<()> {
        let mut st = self.state.lock();
        while st.unfinished > 0 {
            self.cv.wait(&mut st);
        }
        match st.failures.first() {
            None => Ok(()),
            Some(f) => Err(Error::CommandFailed {
                command: format!("{} of the graph's tasks", st.failures.len()),
                message: f.clone(),
            }),
        }
    }

    /// Devices that may run task `id` now.
    fn eligible(&self, st: &State, id: TaskId) -> Vec<usize> {
        let n = &st.nodes[id];
        let Some(spec) = &n.spec else { return Vec::new() };
        (0..self.devices.len())
            .filter(|&d| st.dead[d].is_none() && n.failed_on & (1 << d) == 0 && spec.allows(d, &self.devices[d]))
            .collect()
    }

    /// Predicted seconds to fetch what task `spec` reads and lacks on device `d`.
    fn fetch_s(&self, st: &State, spec: &TaskSpec, d: usize) -> f64 {
        let node = self.node_of[d];
        let mut s = 0.0;
        for (root, read, _, mode) in spec.data() {
            if mode == crate::kernel::Access::Write {
                continue;
            }
            let rs = root.state.lock();
            // Only the segments overlapping `read` (sorted by start).
            let first = rs.segs.partition_point(|x| x.start <= read.start).saturating_sub(1);
            for (i, seg) in rs.segs.iter().enumerate().skip(first) {
                if seg.start >= read.end {
                    break;
                }
                let (a, b) = (seg.start.max(read.start), rs.end(i).min(read.end));
                if a >= b || seg.valid & bit(node) != 0 {
                    continue;
                }
                let bytes = ((b - a) * root.size()) as f64;
                if seg.valid & bit(0) == 0 {
                    let src = seg.valid.trailing_zeros() as usize;
                    s += bytes / Self::bw(st, src.min(63), 0);
                }
                if node != 0 {
                    s += bytes / Self::bw(st, 0, node);
                }
            }
        }
        s
    }

    /// Predicted execution seconds of `spec` on device `d` (0 when unknown: an
    /// unmeasured device is tried).
    fn exec_s(&self, st: &State, spec: &TaskSpec, d: usize) -> f64 {
        st.model
            .get(&spec.keys[d])
            .map_or(0.0, |e| e.latency_s + spec.space.items() as f64 / e.rate.max(1e-9))
    }

    /// When device `d` is predicted to be free, seconds from now.
    fn avail_s(&self, st: &State, d: usize) -> f64 {
        let running = st.running[d].map_or(0.0, |(t0, p)| (p - t0.elapsed().as_secs_f64()).max(0.0));
        running + st.queued_s[d]
    }

    /// Put a ready task where the policy says (or fail it if no device can run it).
    fn place(&self, st: &mut State, id: TaskId) {
        let eligible = self.eligible(st, id);
        if eligible.is_empty() {
            let n = &mut st.nodes[id];
            let kernel = n.spec.as_ref().map_or(String::new(), |s| s.kernel.name().to_string());
            let e = if n.errors.is_empty() {
                Error::NoCapableDevice {
                    kernel,
                    why: "every device that could run it has failed".into(),
                }
            } else {
                Error::AllDevicesFailed {
                    kernel,
                    errors: std::mem::take(&mut n.errors),
                }
            };
            self.fail(st, id, e);
            return;
        }
        let Some(spec) = st.nodes[id].spec.clone() else { return };
        if spec.split && (eligible.len() > 1 || spec.streamed) {
            self.start_split(st, id, &spec, eligible);
            return;
        }
        match st.placement {
            Placement::Eager => {
                st.nodes[id].status = Status::Ready;
                st.ready.push_back(id);
            }
            Placement::Dmda => {
                let mut best = (f64::INFINITY, eligible[0], 0.0);
                for &d in &eligible {
                    let work = self.fetch_s(st, &spec, d) + self.exec_s(st, &spec, d);
                    let done = self.avail_s(st, d) + work;
                    if done < best.0 {
                        best = (done, d, work);
                    }
                }
                let (_, d, work) = best;
                st.nodes[id].status = Status::Queued(d);
                st.nodes[id].pred_s = work;
                st.queued[d].push_back(id);
                st.queued_s[d] += work;
                // Behind other work: start moving its inputs now, so the
                // transfers overlap the tasks ahead of it.
                if st.running[d].is_some() || st.queued[d].len() > 1 {
                    st.nodes[id].prefetched += exec::prefetch(self, d, &spec);
                }
            }
        }
        self.cv.notify_all();
    }

    /// The next chunk (or warm-up) of a split task for device `d`, of task
    /// `only` if given.
    fn split_next(&self, st: &mut State, d: usize, only: Option<TaskId>) -> Option<Work> {
        let State {
            splits,
            warmed,
            warming,
            ..
        } = st;
        for sr in splits.iter_mut() {
            if sr.blocked_on.is_some() || only.is_some_and(|id| id != sr.id) {
                continue;
            }
            let Some(j) = sr.devs.iter().position(|&x| x == d) else {
                continue;
            };
            if !sr.st.devs[j].alive {
                continue;
            }
            let key = (d, sr.plan.keys[j].clone());
            if !warmed.contains(&key) {
                if only.is_none() && warming.insert(key) {
                    return Some(Work::Warm(sr.id));
                }
                continue;
            }
            // Warmed up (by this task or an earlier one): the end-game guard
            // may count on it.
            sr.st.devs[j].ready = true;
            if let Next::Run { range, probe, index } = sr.plan.next(&mut sr.st, j) {
                sr.st.in_flight += 1;
                sr.st.devs[j].in_flight_items += range.len();
                return Some(Work::Chunk {
                    id: sr.id,
                    range,
                    probe,
                    index,
                });
            }
        }
        None
    }

    /// The next task for device `d`'s worker.
    fn take(&self, st: &mut State, d: usize) -> Option<Work> {
        if let Some(w) = self.split_next(st, d, None) {
            return Some(w);
        }
        if let Some(id) = st.queued[d].pop_front() {
            st.queued_s[d] = (st.queued_s[d] - st.nodes[id].pred_s).max(0.0);
            return Some(Work::Task(id));
        }
        let pos = st.ready.iter().position(|&id| {
            let n = &st.nodes[id];
            n.failed_on & (1 << d) == 0 && n.spec.as_ref().is_some_and(|s| s.allows(d, &self.devices[d]))
        })?;
        st.ready.remove(pos).map(Work::Task)
    }

    /// Start split task `id` over `devs`: the dispatcher hands its chunks to
    /// the devices' workers.
    fn start_split(&self, st: &mut State, id: TaskId, spec: &TaskSpec, devs: Vec<usize>) {
        let items = spec.space.items() as usize;
        let seq = match st.nodes[id].restore {
            Some(s) => s,
            None => {
                st.seq += 1;
                st.nodes[id].commit_seq = st.seq;
                st.seq
            }
        };
        // Chunks of resident data start where every participant can start a
        // view; every chunk is whole work-groups on its device. Streamed data
        // moves through chunk buffers: its chunks are capped so that a device's
        // buffers stay within a quarter of its memory and each within its
        // largest allocation.
        let align = devs
            .iter()
            .map(|&d| self.devices[d].info().view_align_bytes)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut m = 1usize;
        let (mut dev_bpi, mut streamed_bpi, mut moved_bpi, mut widest) = (0usize, 0usize, 0usize, 1usize);
        for p in &spec.params {
            if let super::spec::ParamArg::Data {
                root,
                per_item: Some(e),
                mode,
                ..
            } = p
            {
                let bytes = (e * root.size()).max(1);
                dev_bpi += bytes;
                if root.streamed {
                    streamed_bpi += bytes;
                    widest = widest.max(bytes);
                    let (up, down) = (*mode != crate::kernel::Access::Write, mode.writes());
                    moved_bpi += bytes * (up as usize + down as usize);
                } else {
                    m = lcm(m, align / gcd(bytes, align));
                }
            }
        }
        let n = devs.len();
        let caps = devs
            .iter()
            .map(|&d| {
                if streamed_bpi == 0 {
                    return items.max(1);
                }
                let i = self.devices[d].info();
                let by_mem = i.global_mem_bytes / 4 / chunk::depth(&self.devices[d], true) as u64 / streamed_bpi as u64;
                let by_alloc = i.max_alloc_bytes / widest as u64;
                by_mem.min(by_alloc).min(u32::MAX as u64).max(1) as usize
            })
            .collect();
        let plan = Plan {
            items,
            policy: st.split_policy,
            multiples: devs
                .iter()
                .map(|&d| lcm(m, self.devices[d].info().warp_size.max(1) as usize))
                .collect(),
            caps,
            bpi: moved_bpi as f64,
            dev_bpi: dev_bpi.max(1),
            keys: devs.iter().map(|&d| spec.keys[d].clone()).collect(),
            labels: devs.iter().map(|&d| self.labels[d].clone()).collect(),
            depths: devs
                .iter()
                .map(|&d| chunk::depth(&self.devices[d], spec.streamed))
                .collect(),
        };
        let dst = dispatch::State::new(n, st.model.clone());
        // Every build starts now, each on a thread of its own.
        let builds = devs
            .iter()
            .map(|&d| {
                (!st.warmed.contains(&(d, spec.keys[d].clone())))
                    .then(|| chunk::PendingBuild::start(&self.devices[d], &spec.kernel))
            })
            .collect();
        st.nodes[id].status = Status::Split;
        st.splits.push(SplitRun {
            id,
            plan,
            st: dst,
            devs,
            seq,
            blocked_on: None,
            t0: Instant::now(),
            builds,
        });
        // What every chunk reads whole starts moving to host memory now, before
        // any chunk is enqueued (a host-CPU OpenCL device runs its transfers and
        // kernels on the same threads: a copy out of it queued behind its first
        // chunk would keep the other devices waiting).
        st.nodes[id].prefetched += exec::prefetch_to_host(self, spec);
        self.cv.notify_all();
    }

    /// A chunk of split task `id` ended on device `d`.
    fn chunk_done(
        &self,
        st: &mut State,
        id: TaskId,
        d: usize,
        range: std::ops::Range<usize>,
        probe: bool,
        r: std::result::Result<Landed, Fail>,
    ) {
        let Some(si) = st.splits.iter().position(|s| s.id == id) else {
            // The split task failed meanwhile: its late chunks count for nothing.
            return;
        };
        let mut sr = st.splits.swap_remove(si);
        let Some(spec) = st.nodes[id].spec.clone() else { return };
        let j = sr.devs.iter().position(|&x| x == d).unwrap_or(0);
        sr.st.in_flight = sr.st.in_flight.saturating_sub(1);
        sr.st.devs[j].in_flight_items = sr.st.devs[j].in_flight_items.saturating_sub(range.len());
        let node = self.node_of[d];
        match r {
            Ok(Landed { exec: x, stats, busy }) => {
                let restore = st.nodes[id].restore.is_some();
                let writer = st.nodes[id].recovery_of.unwrap_or(id);
                for (root, _, write, mode) in exec::data_uses(&spec, Some(&range)).iter().flatten() {
                    if mode.writes() {
                        commit_range(root, write, node, writer, sr.seq, restore);
                    }
                }
                self.learn_links(st, &x);
                sr.plan.finish(&mut sr.st, j, &range, probe, busy, stats);
                st.nodes[id].runs.push(x);
            }
            Err(Fail::Device { error, host_restored }) => {
                if node == 0 && !host_restored {
                    suspect_host_writes(&exec::data_uses(&spec, Some(&range)));
                }
                self.drop_device(st, d, &error);
                sr.plan.kill(&mut sr.st, j, Some(range), error);
            }
            Err(Fail::Source { device, error }) => {
                sr.st.retry.push_back(range);
                give_back_probe(&mut sr, j, probe);
                self.drop_device(st, device, &error);
                if let Some(k) = sr.devs.iter().position(|&x| x == device)
                    && sr.st.devs[k].alive
                {
                    sr.plan.kill(&mut sr.st, k, None, error);
                }
            }
            Err(Fail::Lost {
                root,
                range: lost,
                writer,
            }) => {
                sr.st.retry.push_back(range);
                give_back_probe(&mut sr, j, probe);
                match self.recover(st, &root, &lost, writer) {
                    Ok(rec) => sr.blocked_on = Some(rec),
                    Err(e) => {
                        self.fail(st, id, e);
                        return;
                    }
                }
            }
        }
        self.settle_split(st, sr);
    }

    /// Put `sr` back, or finish it (all items done) or fail it (no device left).
    fn settle_split(&self, st: &mut State, mut sr: SplitRun) {
        let id = sr.id;
        let ended = sr.st.in_flight == 0 && (sr.st.done >= sr.plan.items || sr.st.devs.iter().all(|x| !x.alive));
        if ended {
            st.nodes[id].split_report = Some(self.split_report(st, &sr));
        }
        if sr.st.done >= sr.plan.items && sr.st.in_flight == 0 {
            for key in &sr.plan.keys {
                if let Some(e) = sr.st.model.get(key) {
                    let _ = st.model.insert(key.clone(), *e);
                }
            }
            self.complete(st, id);
        } else if sr.st.in_flight == 0 && sr.st.devs.iter().all(|x| !x.alive) {
            let kernel = st.nodes[id]
                .spec
                .as_ref()
                .map_or(String::new(), |s| s.kernel.name().to_string());
            let errors = std::mem::take(&mut sr.st.errors);
            self.fail(st, id, Error::AllDevicesFailed { kernel, errors });
        } else {
            st.splits.push(sr);
        }
        self.cv.notify_all();
    }

    /// Who did what in split task `sr`, as the scheduler reports it.
    fn split_report(&self, st: &State, sr: &SplitRun) -> SplitReport {
        let wall = sr.t0.elapsed();
        let spec = st.nodes[sr.id].spec.as_ref();
        let mut devices = Vec::with_capacity(sr.devs.len());
        let mut excluded = Vec::new();
        for (j, &d) in sr.devs.iter().enumerate() {
            let ds = &sr.st.devs[j];
            if ds.work_chunks == 0
                && let Some(reason) = &ds.retired
            {
                excluded.push(Excluded {
                    device: self.labels[d].clone(),
                    reason: reason.clone(),
                });
            }
            devices.push(DeviceShare {
                device: self.labels[d].clone(),
                name: self.devices[d].info().name.clone(),
                items: ds.items,
                chunks: ds.chunks,
                probes: ds.probes,
                busy: ds.busy,
                idle: wall.saturating_sub(ds.busy),
                h2d_bytes: ds.h2d,
                d2h_bytes: ds.d2h,
            });
        }
        SplitReport {
            kernel: spec.map_or(String::new(), |s| s.kernel.name().to_string()),
            items: sr.plan.items,
            policy: sr.plan.policy,
            wall,
            devices,
            failures: sr.st.failures.clone(),
            excluded,
        }
    }

    /// Split task `id`'s report, once it has ended.
    pub(crate) fn take_split_report(&self, id: TaskId) -> Option<SplitReport> {
        self.state.lock().nodes.get_mut(id).and_then(|n| n.split_report.take())
    }

    /// Mark `id` done and release its dependents (and split tasks waiting for it).
    fn complete(&self, st: &mut State, id: TaskId) {
        let n = &mut st.nodes[id];
        n.status = Status::Done;
        let mut dependents = std::mem::take(&mut n.dependents);
        dependents.append(&mut n.after_me);
        if let Some(orig) = n.recovery_of {
            st.recovering.remove(&orig);
        }
        st.unfinished -= 1;
        for sr in st.splits.iter_mut() {
            if sr.blocked_on == Some(id) {
                sr.blocked_on = None;
            }
        }
        for t in dependents {
            let m = &mut st.nodes[t];
            m.deps_left = m.deps_left.saturating_sub(1);
            if m.deps_left == 0 && m.status == Status::Waiting {
                self.place(st, t);
            }
        }
    }

    /// Fold a run's measured transfers into the link model.
    fn learn_links(&self, st: &mut State, x: &Exec) {
        for t in &x.transfers {
            if t.bytes >= 64 << 10 && t.seconds > 0.0 {
                let bw = t.bytes as f64 / t.seconds;
                let e = st.links.entry((t.from, t.to)).or_insert(bw);
                *e = 0.7 * *e + 0.3 * bw;
            }
        }
    }

    fn worker(self: Arc<Self>, d: usize) {
        // The chunks of one split task this device has in flight.
        let mut pipe: Option<Pipeline> = None;
        loop {
            // Chunks in flight: take another of the same task while the pipeline
            // has room, otherwise land the oldest.
            if let Some(p) = pipe.as_mut().filter(|p| !p.flight.is_empty()) {
                if p.flight.len() < p.depth {
                    let next = {
                        let mut st = self.state.lock();
                        self.split_next(&mut st, d, Some(p.id))
                    };
                    if let Some(Work::Chunk {
                        range, probe, index, ..
                    }) = next
                    {
                        self.start_chunk(d, p, range, probe, index);
                        continue;
                    }
                }
                if let Some((range, probe, r)) = p.land(&self) {
                    let mut st = self.state.lock();
                    self.chunk_done(&mut st, p.id, d, range, probe, r);
                    self.cv.notify_all();
                }
                continue;
            }
            let work = {
                let mut st = self.state.lock();
                loop {
                    if st.dead[d].is_some() || (st.shutdown && st.unfinished == 0) {
                        return;
                    }
                    match self.take(&mut st, d) {
                        Some(Work::Task(id)) => {
                            let n = &mut st.nodes[id];
                            n.status = Status::Running(d);
                            let (spec, pred) = (n.spec.clone(), n.pred_s);
                            st.running[d] = Some((Instant::now(), pred));
                            if let Some(spec) = spec {
                                break (Work::Task(id), spec);
                            }
                        }
                        Some(w @ (Work::Chunk { id, .. } | Work::Warm(id))) => {
                            if let Some(spec) = st.nodes[id].spec.clone() {
                                break (w, spec);
                            }
                        }
                        None => self.cv.wait(&mut st),
                    }
                }
            };
            match work {
                (Work::Warm(id), spec) => self.warm(d, id, spec, &mut pipe),
                (
                    Work::Chunk {
                        id,
                        range,
                        probe,
                        index,
                    },
                    spec,
                ) => {
                    if pipe.as_ref().is_none_or(|p| p.id != id) {
                        pipe = None;
                        match Pipeline::new(&self, d, id, spec) {
                            Ok(p) => pipe = Some(p),
                            Err(error) => {
                                let mut st = self.state.lock();
                                let r = Err(Fail::Device {
                                    error,
                                    host_restored: false,
                                });
                                self.chunk_done(&mut st, id, d, range, probe, r);
                                self.cv.notify_all();
                                continue;
                            }
                        }
                    }
                    if let Some(p) = pipe.as_mut() {
                        self.start_chunk(d, p, range, probe, index);
                    }
                }
                (Work::Task(id), spec) => self.run_task(d, id, &spec),
            }
        }
    }

    /// Enqueue a chunk on `p`; a chunk that could not be enqueued ends now.
    fn start_chunk(&self, d: usize, p: &mut Pipeline, range: std::ops::Range<usize>, probe: bool, index: usize) {
        if let Err(f) = p.start(self, range.clone(), probe, index) {
            let mut st = self.state.lock();
            self.chunk_done(&mut st, p.id, d, range, probe, Err(f));
            self.cv.notify_all();
        }
    }

    /// Build split task `id`'s kernel on device `d` and launch it once with no
    /// items (see [`Pipeline::warm`]). The build runs on a thread of its own:
    /// if the task stops wanting this device meanwhile (the other devices took
    /// every item), the device is left out of the task, with the reason in its
    /// report, and the build finishes in the background.
    fn warm(&self, d: usize, id: TaskId, spec: Arc<TaskSpec>, pipe: &mut Option<Pipeline>) {
        let key = (d, spec.keys[d].clone());
        let started = {
            let mut st = self.state.lock();
            st.splits.iter_mut().find(|sr| sr.id == id).and_then(|sr| {
                let j = sr.devs.iter().position(|&x| x == d)?;
                sr.builds[j].take()
            })
        };
        let build = started.unwrap_or_else(|| chunk::PendingBuild::start(&self.devices[d], &spec.kernel));
        let built = loop {
            if let Some(r) = build.poll() {
                break Some(r);
            }
            let mut st = self.state.lock();
            let wanted = st.splits.iter_mut().find(|sr| sr.id == id).and_then(|sr| {
                let j = sr.devs.iter().position(|&x| x == d)?;
                if sr.plan.wanted(&sr.st, j) {
                    return Some(());
                }
                let ds = &mut sr.st.devs[j];
                ds.alive = false;
                // A reason from the plan (Static) stays: it is why there was no work.
                if ds.retired.is_none() {
                    ds.retired =
                        Some("its kernel build was still running when the other devices had taken all the work".into());
                }
                None
            });
            if wanted.is_none() {
                st.warming.remove(&key);
                self.cv.notify_all();
                break None;
            }
        };
        let Some(built) = built else { return };
        let t0 = Instant::now();
        let r = built.map_err(exec::dev_err).and_then(|()| {
            if pipe.as_ref().is_none_or(|p| p.id != id) {
                *pipe = Some(Pipeline::new(self, d, id, spec.clone()).map_err(exec::dev_err)?);
            }
            match pipe.as_mut() {
                Some(p) => p.warm(self),
                None => Err(exec::dev_err(Error::InvalidInput("no pipeline".into()))),
            }
        });
        let mut st = self.state.lock();
        st.warming.remove(&key);
        match r {
            Ok(l) => {
                st.warmed.insert(key);
                if let Some(sr) = st.splits.iter_mut().find(|sr| sr.id == id)
                    && let Some(j) = sr.devs.iter().position(|&x| x == d)
                {
                    let ds = &mut sr.st.devs[j];
                    ds.ready = true;
                    ds.busy += t0.elapsed();
                    ds.h2d += l.stats.h2d;
                }
                self.learn_links(&mut st, &l.exec);
            }
            Err(Fail::Device { error, .. }) => self.drop_device(&mut st, d, &error),
            Err(Fail::Source { device, error }) => self.drop_device(&mut st, device, &error),
            // Its broadcast input is lost: the chunks will find out and recover it.
            Err(Fail::Lost { .. }) => {
                st.warmed.insert(key);
            }
        }
        self.cv.notify_all();
    }

    /// Run task `id` whole on device `d`.
    fn run_task(&self, d: usize, id: TaskId, spec: &Arc<TaskSpec>) {
        let r = exec::run(self, d, spec);
        let mut st = self.state.lock();
        st.running[d] = None;
        match r {
            Ok(x) => self.commit(&mut st, id, d, spec, x),
            Err(Fail::Lost { root, range, writer }) => self.lost(&mut st, id, &root, range, writer),
            Err(Fail::Device { error, host_restored }) => {
                self.device_failed(&mut st, id, d, spec, error, host_restored)
            }
            Err(Fail::Source { device, error }) => {
                // Not this device's fault: drop the source, try the task again.
                self.drop_device(&mut st, device, &error);
                st.nodes[id].status = Status::Waiting;
                self.place(&mut st, id);
            }
        }
        self.cv.notify_all();
    }

    /// Task `id` completed on device `d`: its writes become the valid replicas.
    fn commit(&self, st: &mut State, id: TaskId, d: usize, spec: &TaskSpec, x: Exec) {
        let node = self.node_of[d];
        let restore = st.nodes[id].restore;
        let seq = match restore {
            Some(s) => s,
            None => {
                st.seq += 1;
                st.seq
            }
        };
        let writer = st.nodes[id].recovery_of.unwrap_or(id);
        for (root, _, write, mode) in spec.data() {
            if mode.writes() {
                commit_range(root, write, node, writer, seq, restore.is_some());
            }
        }
        // Teach the model: kernel time per item, link bandwidths.
        let key = (d, spec.keys[d].clone());
        if st.warmed.contains(&key) {
            st.model.observe(
                &key.1,
                Observation {
                    items: spec.space.items() as usize,
                    kernel_s: x.kernel_s,
                    bytes: 0,
                    transfer_s: 0.0,
                },
            );
        } else {
            st.warmed.insert(key);
        }
        self.learn_links(st, &x);
        let n = &mut st.nodes[id];
        if restore.is_none() {
            n.commit_seq = seq;
        }
        n.runs.push(x);
        self.complete(st, id);
    }

    /// Fail task `id` for good, and every task waiting on it.
    fn fail(&self, st: &mut State, id: TaskId, e: Error) {
        let mut stack = vec![(id, e)];
        while let Some((t, e)) = stack.pop() {
            let n = &mut st.nodes[t];
            if n.finished() {
                continue;
            }
            let text = e.to_string();
            n.status = Status::Failed;
            n.failure = Some(text.clone());
            n.typed = Some(e);
            let name = n.spec.as_ref().map_or("host read".to_string(), |s| s.name.clone());
            if let Some(orig) = n.recovery_of {
                st.recovering.remove(&orig);
            }
            let deps = std::mem::take(&mut st.nodes[t].dependents);
            for x in std::mem::take(&mut st.nodes[t].after_me) {
                let m = &mut st.nodes[x];
                m.deps_left = m.deps_left.saturating_sub(1);
                if m.deps_left == 0 && m.status == Status::Waiting {
                    self.place(st, x);
                }
            }
            st.unfinished -= 1;
            st.ready.retain(|x| *x != t);
            st.splits.retain(|sr| sr.id != t);
            let blocked: Vec<TaskId> = st
                .splits
                .iter()
                .filter(|sr| sr.blocked_on == Some(t))
                .map(|sr| sr.id)
                .collect();
            for x in blocked {
                stack.push((
                    x,
                    Error::DependencyFailed {
                        cause: format!("recovering its lost input, task #{t} {name} failed: {text}"),
                    },
                ));
            }
            st.failures.push(format!("task #{t} {name}: {text}"));
            for x in deps {
                stack.push((
                    x,
                    Error::DependencyFailed {
                        cause: format!("task #{t} {name} failed: {text}"),
                    },
                ));
            }
        }
        self.cv.notify_all();
    }

    /// Task `id` failed on device `d`: drop the device, invalidate what it held
    /// (and what the task may have half written), place its work again.
    fn device_failed(&self, st: &mut State, id: TaskId, d: usize, spec: &TaskSpec, e: Error, host_restored: bool) {
        tracing::warn!(device = %self.devices[d].label(), task = id, error = %e, "task failed; dropping the device");
        self.drop_device(st, d, &e);
        let node = self.node_of[d];
        if node == 0 && !host_restored {
            suspect_host_writes(&exec::data_uses(spec, None));
        }
        let n = &mut st.nodes[id];
        n.failed_on |= 1 << d;
        n.errors.push(e);
        n.status = Status::Waiting;
        self.place(st, id);
    }

    /// Drop device `d` after `e`: its memory's replicas are lost (host memory,
    /// which CPU devices share, stays), failed transfers are forgotten, and its
    /// queued tasks are placed again.
    fn drop_device(&self, st: &mut State, d: usize, e: &Error) {
        if st.dead[d].is_none() {
            st.dead[d] = Some(e.to_string());
        }
        let node = self.node_of[d];
        let roots: Vec<Arc<Root>> = st.roots.iter().filter_map(|w| w.upgrade()).collect();
        for root in &roots {
            let mut rs = root.state.lock();
            for s in rs.segs.iter_mut() {
                if node != 0 {
                    s.valid &= !bit(node);
                    s.fetch.retain(|(n, _)| *n != node);
                }
                let mut valid = s.valid;
                s.fetch.retain(|(n, ev)| {
                    if ev.failed() {
                        valid &= !bit(*n);
                        false
                    } else {
                        true
                    }
                });
                s.valid = valid;
            }
        }
        let mut ended = Vec::new();
        for (si, sr) in st.splits.iter_mut().enumerate() {
            if let Some(j) = sr.devs.iter().position(|&x| x == d)
                && sr.st.devs[j].alive
            {
                let e = Error::CommandFailed {
                    command: format!("device {}", self.labels[d]),
                    message: e.to_string(),
                };
                sr.plan.kill(&mut sr.st, j, None, e);
                if sr.st.in_flight == 0 && sr.st.devs.iter().all(|x| !x.alive) {
                    ended.push(si);
                }
            }
        }
        for si in ended.into_iter().rev() {
            let sr = st.splits.swap_remove(si);
            self.settle_split(st, sr);
        }
        let requeue: Vec<TaskId> = st.queued[d].drain(..).collect();
        st.queued_s[d] = 0.0;
        for t in requeue {
            st.nodes[t].status = Status::Waiting;
            self.place(st, t);
        }
        // Ready tasks nobody left can run fail now rather than wait forever.
        let stuck: Vec<TaskId> = st
            .ready
            .iter()
            .copied()
            .filter(|&t| self.eligible(st, t).is_empty())
            .collect();
        for t in stuck {
            st.ready.retain(|x| *x != t);
            st.nodes[t].status = Status::Waiting;
            self.place(st, t);
        }
    }

    /// Task `id` found elements `range` of `root` with no valid replica: re-run
    /// their producer first, or fail naming the data.
    fn lost(
        &self,
        st: &mut State,
        id: TaskId,
        root: &Arc<Root>,
        range: std::ops::Range<usize>,
        writer: Option<TaskId>,
    ) {
        match self.recover(st, root, &range, writer) {
            Ok(r) => {
                let n = &mut st.nodes[id];
                n.status = Status::Waiting;
                self.link(st, id, vec![r]);
            }
            Err(e) => self.fail(st, id, e),
        }
    }

    /// A recovery task that restores elements `range` of `root`, written by
    /// `writer` (one already running is shared).
    fn recover(
        &self,
        st: &mut State,
        root: &Arc<Root>,
        range: &std::ops::Range<usize>,
        writer: Option<TaskId>,
    ) -> Result<TaskId> {
        let lost = |why: String| Error::DataLost {
            data: root.name.to_string(),
            range: range.clone(),
            why,
        };
        let Some(w) = writer else {
            return Err(lost(
                "they are the registered values and their only copy was lost".into(),
            ));
        };
        if let Some(&r) = st.recovering.get(&w) {
            return Ok(r);
        }
        if let Some(spec) = &st.nodes[w].spec
            && !(0..self.devices.len()).any(|d| st.dead[d].is_none() && spec.allows(d, &self.devices[d]))
        {
            return Err(lost(format!(
                "their producer, task #{w} {}, can run only on devices that have failed",
                spec.name
            )));
        }
        let (spec, seq) = match &st.nodes[w] {
            Node {
                spec: Some(s),
                status: Status::Done,
                commit_seq,
                ..
            } => (s.clone(), *commit_seq),
            _ => {
                return Err(lost(format!(
                    "their producer, task #{w}, has no completed run to repeat"
                )));
            }
        };
        for (r, read, _, mode) in spec.data() {
            if mode == crate::kernel::Access::Write {
                continue;
            }
            let mut rs = r.state.lock();
            for i in rs.cover(read) {
                if rs.segs[i].written_seq >= seq {
                    return Err(lost(format!(
                        "their producer, task #{w} {}, cannot be re-run: its input {:?} was overwritten since",
                        spec.name, r.name
                    )));
                }
                // A task submitted after the producer that writes its input is not
                // ordered against this re-run: it may overwrite the input first.
                if let Some(l) = rs.segs[i].last_writer.filter(|&l| l > w) {
                    return Err(lost(format!(
                        "their producer, task #{w} {}, cannot be re-run: its input {:?} is overwritten by task #{l}, \
                         submitted since",
                        spec.name, r.name
                    )));
                }
            }
        }
        let id = st.nodes.len();
        let mut n = Node::new(Some(spec));
        n.restore = Some(seq);
        n.recovery_of = Some(w);
        st.nodes.push(n);
        st.unfinished += 1;
        st.recovering.insert(w, id);
        tracing::info!(task = w, recovery = id, data = %root.name, "re-running the producer of lost data");
        self.place(st, id);
        Ok(id)
    }

    /// Bring elements `range` of `root` to the host once the tasks submitted
    /// before that write them have finished; later writers wait for it.
    pub(crate) fn acquire(&self, root: &Arc<Root>, range: &std::ops::Range<usize>) -> Result<AcquireGuard<'_>> {
        let id = {
            let mut st = self.state.lock();
            let id = st.nodes.len();
            let mut preds = Vec::new();
            {
                let mut rs = root.state.lock();
                for i in rs.cover(range) {
                    let s = &mut rs.segs[i];
                    preds.extend(s.last_writer);
                    s.readers.push(id);
                }
            }
            let mut n = Node::new(None);
            n.status = Status::Waiting;
            st.nodes.push(n);
            st.unfinished += 1;
            preds.sort_unstable();
            preds.dedup();
            for &p in &preds {
                if !st.nodes[p].finished() {
                    st.nodes[id].deps_left += 1;
                    st.nodes[p].dependents.push(id);
                }
            }
            st.nodes[id].preds = preds;
            st.nodes[id].status = Status::Host;
            id
        };
        let guard = AcquireGuard { graph: self, id };
        loop {
            {
                let mut st = self.state.lock();
                // A failing dependency fails this host read instead of releasing it.
                while st.nodes[id].deps_left > 0 && st.nodes[id].status != Status::Failed {
                    self.cv.wait(&mut st);
                }
                if let Some(&p) = st.nodes[id]
                    .preds
                    .iter()
                    .find(|&&p| st.nodes[p].status == Status::Failed)
                {
                    return Err(Error::DependencyFailed {
                        cause: format!("task #{p} failed: {}", st.nodes[p].failure.clone().unwrap_or_default()),
                    });
                }
            }
            match exec::fetch_to_host(self, root, range) {
                Ok(()) => return Ok(guard),
                Err(Fail::Lost {
                    root: r,
                    range: lr,
                    writer,
                }) => {
                    let mut st = self.state.lock();
                    let rec = self.recover(&mut st, &r, &lr, writer)?;
                    if !st.nodes[rec].finished() {
                        st.nodes[id].deps_left += 1;
                        st.nodes[rec].dependents.push(id);
                    }
                    st.nodes[id].preds.push(rec);
                }
                Err(Fail::Device { error, .. }) => return Err(error),
                Err(Fail::Source { device, error }) => {
                    let mut st = self.state.lock();
                    self.drop_device(&mut st, device, &error);
                }
            }
        }
    }

    fn report(&self) -> GraphReport {
        let st = self.state.lock();
        let mut tasks = Vec::new();
        for (id, n) in st.nodes.iter().enumerate() {
            let Some(spec) = &n.spec else { continue };
            for (i, x) in n.runs.iter().enumerate() {
                // Bytes prefetched for the task count as moved by its first run.
                let pre = if i == 0 { n.prefetched } else { 0 };
                tasks.push(TaskRecord {
                    id,
                    name: match &x.items {
                        Some(r) => format!("{} [{}..{})", spec.name, r.start, r.end),
                        None => spec.name.clone(),
                    },
                    device: self.labels[x.device].clone(),
                    start_s: x.start.saturating_duration_since(self.epoch).as_secs_f64(),
                    end_s: x.end.saturating_duration_since(self.epoch).as_secs_f64(),
                    kernel_s: x.kernel_s,
                    bytes_in: x.moved + pre,
                    bytes_resident: x.saved.saturating_sub(pre),
                    preds: n.preds.clone(),
                    recovery_of: n.recovery_of,
                    chunk: x.items.as_ref().map(|r| (r.start, r.end)),
                });
            }
        }
        let labels = self.labels.clone();
        let (mut dropped, mut excluded) = (Vec::new(), Vec::new());
        for (d, r) in st.dead.iter().enumerate() {
            if let Some(r) = r {
                let to = if self.excluded.contains(&d) {
                    &mut excluded
                } else {
                    &mut dropped
                };
                to.push((labels[d].clone(), r.clone()));
            }
        }
        let mut r = GraphReport::new(tasks, labels, dropped, st.failures.clone());
        r.excluded = excluded;
        r
    }
}

/// A host read in progress: later writers of its range wait until it is dropped.
pub(crate) struct AcquireGuard<'g> {
    graph: &'g GraphInner,
    id: TaskId,
}

impl Drop for AcquireGuard<'_> {
    fn drop(&mut self) {
        let g = self.graph;
        let mut st = g.state.lock();
        let n = &mut st.nodes[self.id];
        if n.finished() {
            return;
        }
        n.status = Status::Done;
        let deps = std::mem::take(&mut n.dependents);
        st.unfinished -= 1;
        for t in deps {
            let m = &mut st.nodes[t];
            m.deps_left = m.deps_left.saturating_sub(1);
            if m.deps_left == 0 && m.status == Status::Waiting {
                g.place(&mut st, t);
            }
        }
        g.cv.notify_all();
    }
}

/// A chunk of `sr` on participant `j` did not run, through no fault of its
/// device (a source device failed, or an input was lost): its range is retried
/// as an ordinary chunk, and a probe it was is given back, so that the device
/// probes again (the Static plan waits until every live device has finished
/// its probes).
fn give_back_probe(sr: &mut SplitRun, j: usize, probe: bool) {
    if probe {
        let d = &mut sr.st.devs[j];
        d.probes_started = d.probes_started.saturating_sub(1);
    }
}

/// A task that failed on a device computing in host memory (the CPU device)
/// may have half written what it writes there: no longer valid on the host.
fn suspect_host_writes(uses: &[Option<exec::DataUse>]) {
    for (root, _, write, mode) in uses.iter().flatten() {
        // A streamed chunk that failed is simply re-run: its write-only
        // elements are rewritten, and read-write ones were staged.
        if mode.writes() && !root.streamed {
            let mut rs = root.state.lock();
            for i in rs.cover(write) {
                rs.segs[i].valid &= !bit(0);
            }
        }
    }
}

/// Commit a completed write of elements `write` of `root` on memory node
/// `node`: the node holds the only valid copy (or, for a recovery run, regains
/// the segments still holding the restored commit `seq`).
fn commit_range(
    root: &Arc<Root>,
    write: &std::ops::Range<usize>,
    node: NodeId,
    writer: TaskId,
    seq: u64,
    restore: bool,
) {
    if root.streamed {
        // Written home by the chunk itself: host memory stays the valid copy.
        return;
    }
    let mut rs = root.state.lock();
    for i in rs.cover(write) {
        let s = &mut rs.segs[i];
        if restore {
            if s.written_seq == seq {
                s.valid |= bit(node);
            } else {
                s.valid &= !bit(node);
            }
        } else {
            s.valid = bit(node);
            s.writer = Some(writer);
            s.written_seq = seq;
        }
        let valid = s.valid;
        s.fetch.retain(|(n, e)| valid & bit(*n) != 0 && !e.is_complete());
    }
    if rs.segs.len() > 64 {
        rs.coalesce();
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: usize, b: usize) -> usize {
    (a / gcd(a, b).max(1)).saturating_mul(b).max(1)
}
