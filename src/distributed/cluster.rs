//! The distributed runtime handle: MPI, this rank's devices and task graph,
//! the running hash of submitted tasks, and owner-computes submission.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mpi::Threading;
use mpi::environment::Universe;
use mpi::traits::*;
use parking_lot::Mutex;

use crate::device::Device;
use crate::error::{BackendKind, Error, Result};
use crate::kernel::Access;
use crate::profile::Profiler;
use crate::runtime::Runtime;
use crate::task::{Partition, TaskGraph};

use super::data::{DistData, covers, intersect, merge};
use super::net::{Net, NetStats};
use super::task::{DistTask, Op};

/// Environment variable: the longest wait for another rank, in milliseconds
/// (default [`DEFAULT_TIMEOUT`]).
pub const TIMEOUT_ENV: &str = "OFFLOAD_MPI_TIMEOUT_MS";
/// Default longest wait for another rank.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// FNV-1a, 64-bit: the running hash of submitted tasks.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
const FNV_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// The task sequence submitted so far.
#[derive(Clone, Copy, Debug)]
struct Sequence {
    hash: u64,
    tasks: u64,
}

/// Builder of a [`Cluster`].
#[derive(Debug)]
pub struct ClusterBuilder {
    devices: Vec<Device>,
    profiler: Arc<Profiler>,
    timeout: Option<Duration>,
}

impl ClusterBuilder {
    /// The longest wait for another rank (default: [`TIMEOUT_ENV`], else
    /// [`DEFAULT_TIMEOUT`]). Past it a wait fails with [`Error::NetTimeout`].
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Initialise MPI (once per process) and build the rank's task graph.
    ///
    /// Fails with [`Error::Mpi`] when the devices lack the CPU device (it
    /// stores received elements: see the [module docs](super)) or when MPI was
    /// already initialised in this process.
    pub fn build(self) -> Result<Cluster> {
        let timeout = match self.timeout {
            Some(t) => t,
            None => match std::env::var(TIMEOUT_ENV) {
                Ok(v) => Duration::from_millis(v.trim().parse::<u64>().map_err(|e| {
                    Error::InvalidInput(format!("{TIMEOUT_ENV}={v:?} is not a number of milliseconds: {e}"))
                })?),
                Err(_) => DEFAULT_TIMEOUT,
            },
        };
        if !self.devices.iter().any(|d| d.backend() == BackendKind::Cpu) {
            return Err(Error::Mpi {
                operation: "build a cluster".into(),
                why: format!(
                    "received elements are stored by CPU tasks, so the devices must include the CPU device \
                     (got: {})",
                    self.devices.iter().map(|d| d.label()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let graph = TaskGraph::new(&self.devices)?;
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| Error::Mpi {
            operation: "initialise".into(),
            why: "MPI is already initialised in this process (it initialises once per process)".into(),
        })?;
        let world = universe.world();
        let mut net = Net::new(world, timeout, self.profiler.clone());
        // Align the ranks' clocks for the merged timeline: every rank leaves
        // the barrier at nearly the same moment and calls that time zero.
        net.barrier()?;
        let epoch_ns = self.profiler.now_ns();
        Ok(Cluster {
            rank: net.rank,
            size: net.size,
            timeout,
            devices: self.devices,
            profiler: self.profiler,
            epoch_ns,
            graph,
            next_id: AtomicU64::new(1),
            seq: Mutex::new(Sequence {
                hash: FNV_SEED,
                tasks: 0,
            }),
            net: Mutex::new(net),
            _universe: universe,
        })
    }
}

/// One rank of a distributed run (see the [module docs](super)): MPI, this
/// rank's devices and its [`TaskGraph`].
pub struct Cluster {
    rank: usize,
    size: usize,
    timeout: Duration,
    devices: Vec<Device>,
    profiler: Arc<Profiler>,
    pub(crate) epoch_ns: u64,
    graph: TaskGraph,
    next_id: AtomicU64,
    seq: Mutex<Sequence>,
    pub(crate) net: Mutex<Net>,
    // Last: MPI finalises when this drops, after everything above.
    _universe: Universe,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster rank {} of {}", self.rank, self.size)
    }
}

impl Cluster {
    /// A builder over the devices of `rt` (they must include the CPU device).
    pub fn builder(rt: &Runtime) -> ClusterBuilder {
        ClusterBuilder {
            devices: rt.devices().to_vec(),
            profiler: rt.profiler().clone(),
            timeout: None,
        }
    }

    /// A builder over `devices` (which must include the CPU device), recording
    /// into `rt`'s profiler.
    pub fn with_devices(rt: &Runtime, devices: &[Device]) -> ClusterBuilder {
        ClusterBuilder {
            devices: devices.to_vec(),
            profiler: rt.profiler().clone(),
            timeout: None,
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// This rank's devices.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// This rank's task graph (the tasks this rank runs, and the stores of
    /// what it receives).
    pub fn graph(&self) -> &TaskGraph {
        &self.graph
    }

    /// The longest wait for another rank.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn profiler_snapshot(&self) -> crate::profile::Profile {
        self.profiler.snapshot()
    }

    /// What this rank has sent, received and waited so far.
    pub fn net_stats(&self) -> NetStats {
        self.net.lock().stats
    }

    /// Tasks submitted so far, and the running hash of them.
    pub fn sequence(&self) -> (u64, u64) {
        let s = self.seq.lock();
        (s.tasks, s.hash)
    }

    fn mix(&self, bytes: &[u8]) -> Sequence {
        let mut s = self.seq.lock();
        s.hash = fnv(s.hash, bytes);
        s.tasks += 1;
        *s
    }

    /// Register `values` (the same on every rank) as distributed data cut by
    /// `how`; part `p` of `P` belongs to rank `p × size / P`.
    pub fn data<T: bytemuck::Pod>(&self, name: &str, values: &[T], how: Partition) -> Result<DistData<T>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let d = DistData::new(&self.graph, id, self.size, name, values, how)?;
        let mut f = format!("data {id} {name} {} {how:?}", values.len()).into_bytes();
        f.extend_from_slice(&(std::mem::size_of::<T>() as u64).to_le_bytes());
        self.mix(&f);
        Ok(d)
    }

    /// Submit `task` (every rank submits the same tasks in the same order). It
    /// runs on the rank owning what it writes; elements it reads that another
    /// rank owns and the runner lacks are sent by their owner (non-blocking)
    /// and received by the runner, which then holds them until their owner
    /// writes them again. Returns once this rank's part is queued: the owner
    /// of remote inputs has started sending them, the runner has received
    /// them and queued the task on its graph.
    pub fn submit(&self, task: DistTask<'_>) -> Result<()> {
        let exec = task.executor()?;
        let seq = self.mix(&task.fingerprint()?);
        let me = self.rank;
        let mut net = self.net.lock();
        net.progress();
        for op in &task.ops {
            let Op::Data(d, mode) = op else { continue };
            if *mode == Access::Write {
                continue;
            }
            let map = d.map();
            let read = d.read_range()?;
            for (q, w) in map.writes.iter().enumerate() {
                let owner = map.owners[q];
                let need = intersect(&read, w);
                if owner == exec || need.is_empty() {
                    continue;
                }
                {
                    let mut valid = map.valid.lock();
                    if covers(&valid[q][exec], &need) {
                        continue;
                    }
                    valid[q][exec] = merge(&valid[q][exec], &need);
                }
                let header = [seq.hash, seq.tasks, map.id, need.start as u64];
                if me == owner {
                    let bytes = d.bytes_of(need.clone())?;
                    net.send(exec, header, &bytes, format!("send {} → rank {exec}", map.name));
                } else if me == exec {
                    let len = need.len() * map.elem;
                    let bytes = net.recv(owner, header, len, format!("recv {} ← rank {owner}", map.name))?;
                    d.store(&self.graph, need, &bytes)?;
                }
            }
        }
        // Writes: the runner's copy is the only valid one.
        for op in &task.ops {
            let Op::Data(d, mode) = op else { continue };
            if *mode == Access::Read {
                continue;
            }
            let map = d.map();
            let w = d.write_range()?;
            let mut valid = map.valid.lock();
            for (q, part) in map.writes.iter().enumerate() {
                if intersect(part, &w).is_empty() {
                    continue;
                }
                for (r, v) in valid[q].iter_mut().enumerate() {
                    *v = if r == exec {
                        part.clone()
                    } else {
                        part.start..part.start
                    };
                }
            }
        }
        drop(net);
        if exec == me {
            self.graph.submit(task.local_task()?)?;
        }
        Ok(())
    }

    /// Make every part of `d` valid on every rank with one allgather (each
    /// rank contributes the parts it owns, padded to the largest rank's share).
    /// For all-to-all patterns such as N-body's positions.
    pub fn all_gather<T: bytemuck::Pod>(&self, d: &DistData<T>) -> Result<()> {
        let map = d.map.clone();
        let seq = self.mix(format!("allgather {}", map.id).as_bytes());
        let me = self.rank;
        let share = |r: usize| -> usize {
            (0..map.writes.len())
                .filter(|&q| map.owners[q] == r)
                .map(|q| map.writes[q].len() * map.elem)
                .sum()
        };
        let width = (0..self.size).map(share).max().unwrap_or(0);
        let mut mine = Vec::with_capacity(width + 16);
        mine.extend_from_slice(&seq.hash.to_le_bytes());
        mine.extend_from_slice(&seq.tasks.to_le_bytes());
        for q in (0..map.writes.len()).filter(|&q| map.owners[q] == me) {
            let v = d.view_bytes(map.writes[q].clone())?;
            mine.extend_from_slice(&v);
        }
        mine.resize(width + 16, 0);
        let all = self.net.lock().all_gather(mine, &format!("allgather {}", map.name))?;
        let stride = width + 16;
        for r in 0..self.size {
            let block = &all[r * stride..(r + 1) * stride];
            let (h, t) = (&block[..8], &block[8..16]);
            if h != seq.hash.to_le_bytes() || t != seq.tasks.to_le_bytes() {
                return Err(Error::GraphMismatch {
                    rank: me,
                    tasks: seq.tasks,
                    why: format!(
                        "allgather of {:?}: rank {r} is at task {} (hash {:016x}), this rank at task {} (hash {:016x})",
                        map.name,
                        u64::from_le_bytes(t.try_into().unwrap_or_default()),
                        u64::from_le_bytes(h.try_into().unwrap_or_default()),
                        seq.tasks,
                        seq.hash
                    ),
                });
            }
            if r == me {
                continue;
            }
            let mut at = 16;
            for q in (0..map.writes.len()).filter(|&q| map.owners[q] == r) {
                let n = map.writes[q].len() * map.elem;
                let need_store = !covers(&map.valid.lock()[q][me], &map.writes[q]);
                if need_store {
                    d.whole_store(&self.graph, map.writes[q].clone(), &block[at..at + n])?;
                }
                at += n;
            }
        }
        let mut valid = map.valid.lock();
        for (q, w) in map.writes.iter().enumerate() {
            for v in valid[q].iter_mut() {
                *v = w.clone();
            }
        }
        Ok(())
    }

    /// The whole current array on every rank (an [`Cluster::all_gather`], then
    /// the local replica).
    pub fn gather<T: bytemuck::Pod>(&self, d: &DistData<T>) -> Result<Vec<T>> {
        self.all_gather(d)?;
        d.local.acquire()
    }

    /// Wait until this rank's tasks and sends are done, then compare every
    /// rank's task count and hash: [`Error::GraphMismatch`] when they differ.
    pub fn sync(&self) -> Result<()> {
        self.graph.wait_all()?;
        let seq = *self.seq.lock();
        let mut net = self.net.lock();
        net.flush()?;
        let mut mine = seq.hash.to_le_bytes().to_vec();
        mine.extend_from_slice(&seq.tasks.to_le_bytes());
        let all = net.all_gather(mine, "sync")?;
        let ranks: Vec<(u64, u64)> = all
            .chunks_exact(16)
            .map(|c| {
                let h = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
                let t = u64::from_le_bytes(c[8..].try_into().unwrap_or_default());
                (t, h)
            })
            .collect();
        if ranks.iter().any(|&(t, h)| t != seq.tasks || h != seq.hash) {
            let list: Vec<String> = ranks
                .iter()
                .enumerate()
                .map(|(r, (t, h))| format!("rank {r}: {t} tasks, hash {h:016x}"))
                .collect();
            return Err(Error::GraphMismatch {
                rank: self.rank,
                tasks: seq.tasks,
                why: format!("at a sync point the ranks' task sequences differ ({})", list.join("; ")),
            });
        }
        Ok(())
    }

    /// End the whole run (every rank) with exit code `code`, after printing
    /// why on this rank's standard error: for an error that leaves the ranks
    /// out of step (a timeout, a mismatch).
    pub fn abort(&self, code: i32, why: &dyn std::fmt::Display) -> ! {
        eprintln!("rank {} of {}: {why}; aborting every rank", self.rank, self.size);
        self.net.lock().world.abort(code)
    }
}

impl<T: bytemuck::Pod> DistData<T> {
    fn view_bytes(&self, r: std::ops::Range<usize>) -> Result<Vec<u8>> {
        use super::data::ArgData;
        self.whole().bytes_of(r)
    }

    fn whole_store(&self, graph: &TaskGraph, r: std::ops::Range<usize>, bytes: &[u8]) -> Result<()> {
        use super::data::ArgData;
        self.whole().store(graph, r, bytes)
    }
}
