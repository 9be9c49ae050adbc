//! Distributed data: one logical array registered on every rank, cut into
//! parts, each part owned by one rank; and, replicated on every rank, which
//! ranks hold a valid copy of which elements of each part.
//!
//! Every rank keeps a whole local replica of the array in its [`TaskGraph`]
//! (registered from the same initial values, so at first every copy is valid).
//! The owner's copy of its part is always valid. Another rank's copy of a part
//! becomes valid when it receives those elements and invalid when the owner
//! writes the part. Because every rank submits the same tasks, every rank
//! computes the same validity table without exchanging it: a sender knows that
//! the receiver lacks the elements, and the receiver knows that they will come.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cpu_ctx::CpuCtx;
use crate::error::{Error, Result};
use crate::kernel::{Access, Kernel, Param, Split};
use crate::task::{Data, Partition, Task, TaskGraph};

/// Who owns which part of a [`DistData`], and who holds valid copies of what.
#[derive(Debug)]
pub(crate) struct Ownership {
    pub id: u64,
    pub name: String,
    /// Bytes per element.
    pub elem: usize,
    /// Owned (written) element range of each part.
    pub writes: Vec<Range<usize>>,
    /// Elements each part reads: its owned range widened by the halo (not by
    /// the view alignment of [`Data::read_range`]: those extra elements are
    /// never read by kernels, so they are never sent).
    pub reads: Vec<Range<usize>>,
    /// Owner rank of each part.
    pub owners: Vec<usize>,
    /// `valid[part][rank]`: the elements of the part that rank holds valid.
    pub valid: Mutex<Vec<Vec<Range<usize>>>>,
}

/// `a ∩ b` (empty when disjoint).
pub(crate) fn intersect(a: &Range<usize>, b: &Range<usize>) -> Range<usize> {
    let s = a.start.max(b.start);
    let e = a.end.min(b.end);
    if s < e { s..e } else { s..s }
}

/// Whether `inner` lies within `outer` (an empty range always does).
pub(crate) fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    inner.is_empty() || (outer.start <= inner.start && inner.end <= outer.end)
}

/// The valid range after receiving `got` when `had` was valid: their union when
/// it is one range, otherwise `got` alone (forgetting is safe: it only means
/// sending again, and every rank forgets the same way).
pub(crate) fn merge(had: &Range<usize>, got: &Range<usize>) -> Range<usize> {
    if had.is_empty() {
        got.clone()
    } else if got.start <= had.end && had.start <= got.end {
        had.start.min(got.start)..had.end.max(got.end)
    } else {
        got.clone()
    }
}

impl Ownership {
    /// The ranks' parts: part `p` of `parts` is owned by rank `p × size / parts`
    /// (contiguous runs of parts per rank).
    pub fn owner_of(p: usize, parts: usize, size: usize) -> usize {
        p * size / parts.max(1)
    }

    /// The single rank that owns every element of `r`, or an error naming the owners.
    pub fn owner_of_range(&self, r: &Range<usize>) -> std::result::Result<Option<usize>, String> {
        let mut owner = None;
        for (p, w) in self.writes.iter().enumerate() {
            if intersect(w, r).is_empty() {
                continue;
            }
            match owner {
                None => owner = Some(self.owners[p]),
                Some(o) if o == self.owners[p] => {}
                Some(o) => {
                    return Err(format!(
                        "elements {}..{} of {:?} are owned by ranks {o} and {}",
                        r.start, r.end, self.name, self.owners[p]
                    ));
                }
            }
        }
        Ok(owner)
    }
}

/// An array distributed over the ranks of a [`super::Cluster`]: registered with
/// [`super::Cluster::data`], cut by a [`Partition`], part `p` of `P` owned by
/// rank `p × size / P`. Tasks name it whole ([`DistData::whole`]) or by part
/// ([`DistData::part`]).
pub struct DistData<T: bytemuck::Pod> {
    pub(crate) local: Data<T>,
    pub(crate) parts: Vec<Data<T>>,
    pub(crate) map: Arc<Ownership>,
}

impl<T: bytemuck::Pod> std::fmt::Debug for DistData<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DistData {:?} ({} elements, {} parts, owners {:?})",
            self.map.name,
            self.local.len(),
            self.parts.len(),
            self.map.owners
        )
    }
}

/// A [`DistData`] named by a task: the whole array or one part (with its halo
/// when read).
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a, T: bytemuck::Pod> {
    pub(crate) data: &'a DistData<T>,
    pub(crate) part: Option<usize>,
}

impl<T: bytemuck::Pod> DistData<T> {
    pub(crate) fn new(
        graph: &TaskGraph,
        id: u64,
        size: usize,
        name: &str,
        values: &[T],
        how: Partition,
    ) -> Result<Self> {
        let local = graph.data(name, values)?;
        let parts = local.partition(how)?;
        let len = values.len();
        let (unit, halo) = match how {
            Partition::Blocks { halo, .. } => (1, halo),
            Partition::Rows { row_len, halo, .. } => (row_len, halo),
            Partition::Tiles { .. } => (1, 0),
        };
        let writes: Vec<Range<usize>> = parts.iter().map(|p| p.range()).collect();
        let reads = writes
            .iter()
            .map(|w| w.start.saturating_sub(halo * unit)..(w.end + halo * unit).min(len))
            .collect();
        let owners: Vec<usize> = (0..parts.len())
            .map(|p| Ownership::owner_of(p, parts.len(), size))
            .collect();
        let valid = writes.iter().map(|w| vec![w.clone(); size]).collect();
        Ok(DistData {
            local,
            parts,
            map: Arc::new(Ownership {
                id,
                name: name.to_string(),
                elem: std::mem::size_of::<T>(),
                writes,
                reads,
                owners,
                valid: Mutex::new(valid),
            }),
        })
    }

    /// The name given at registration.
    pub fn name(&self) -> &str {
        &self.map.name
    }

    /// Elements of the whole array.
    pub fn len(&self) -> usize {
        self.local.len()
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
    }

    /// Number of parts.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// The rank owning part `p` (`None` past the last part).
    pub fn owner(&self, p: usize) -> Option<usize> {
        self.map.owners.get(p).copied()
    }

    /// The element range part `p` owns (`None` past the last part).
    pub fn part_range(&self, p: usize) -> Option<Range<usize>> {
        self.map.writes.get(p).cloned()
    }

    /// This rank's local replica of the whole array. Only the elements this
    /// rank owns or has received since their last write are current; use
    /// [`super::Cluster::gather`] for the whole current array.
    pub fn local(&self) -> &Data<T> {
        &self.local
    }

    /// This rank's local handle of part `p`, as [`Data::partition`] made it.
    pub fn local_part(&self, p: usize) -> Option<&Data<T>> {
        self.parts.get(p)
    }

    /// The whole array, for a task argument.
    pub fn whole(&self) -> Piece<'_, T> {
        Piece { data: self, part: None }
    }

    /// Part `p` (with its halo when read), for a task argument. A part past the
    /// last is reported by [`super::Cluster::submit`].
    pub fn part(&self, p: usize) -> Piece<'_, T> {
        Piece {
            data: self,
            part: Some(p),
        }
    }

    /// A handle over elements `r` of the local replica (crate-internal: the
    /// view is used only by CPU copy tasks, which need no view alignment).
    fn view(&self, r: Range<usize>) -> Data<T> {
        Data {
            root: self.local.root.clone(),
            graph: self.local.graph.clone(),
            read: r.clone(),
            write: r,
            _t: PhantomData,
        }
    }
}

/// A task argument with its element type erased.
pub(crate) trait ArgData {
    fn map(&self) -> &Arc<Ownership>;
    /// Elements read (owned plus halo; the whole array for a whole piece).
    fn read_range(&self) -> Result<Range<usize>>;
    /// Elements written.
    fn write_range(&self) -> Result<Range<usize>>;
    /// Add the local handle to a local task.
    fn add(&self, t: Task, mode: Access) -> Result<Task>;
    /// The local values of elements `r`, as bytes (waits for their local writers).
    fn bytes_of(&self, r: Range<usize>) -> Result<Vec<u8>>;
    /// Overwrite elements `r` of the local replica with `bytes` (a CPU copy task
    /// ordered after the tasks already submitted on those elements).
    fn store(&self, graph: &TaskGraph, r: Range<usize>, bytes: &[u8]) -> Result<()>;
}

impl<T: bytemuck::Pod> Piece<'_, T> {
    fn handle(&self) -> Result<&Data<T>> {
        match self.part {
            None => Ok(&self.data.local),
            Some(p) => self.data.parts.get(p).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "distributed data {:?} has {} parts, no part {p}",
                    self.data.map.name,
                    self.data.parts.len()
                ))
            }),
        }
    }
}

impl<T: bytemuck::Pod> ArgData for Piece<'_, T> {
    fn map(&self) -> &Arc<Ownership> {
        &self.data.map
    }

    fn read_range(&self) -> Result<Range<usize>> {
        let h = self.handle()?;
        Ok(match self.part {
            None => h.range(),
            Some(p) => self.data.map.reads[p].clone(),
        })
    }

    fn write_range(&self) -> Result<Range<usize>> {
        Ok(self.handle()?.range())
    }

    fn add(&self, t: Task, mode: Access) -> Result<Task> {
        let h = self.handle()?;
        Ok(match mode {
            Access::Read => t.read(h),
            Access::Write => t.write(h),
            Access::ReadWrite => t.read_write(h),
        })
    }

    fn bytes_of(&self, r: Range<usize>) -> Result<Vec<u8>> {
        let v = self.data.view(r).acquire()?;
        Ok(bytemuck::cast_slice::<T, u8>(&v).to_vec())
    }

    fn store(&self, graph: &TaskGraph, r: Range<usize>, bytes: &[u8]) -> Result<()> {
        let elem = std::mem::size_of::<T>().max(1);
        let mut values = vec![T::zeroed(); bytes.len() / elem];
        if values.len() != r.len() || !bytes.len().is_multiple_of(elem) {
            return Err(Error::LengthMismatch {
                what: format!("received elements {}..{} of {:?}", r.start, r.end, self.data.map.name),
                host: values.len(),
                buffer: r.len(),
            });
        }
        bytemuck::cast_slice_mut::<T, u8>(&mut values).copy_from_slice(bytes);
        let src = graph.data("net recv", &values)?;
        let dst = self.data.view(r.clone());
        let copy = copy_kernel::<T>()?;
        graph.submit(
            Task::new(&copy)
                .read(&src)
                .write(&dst)
                .items(r.len())
                .name(&format!("store {}", self.data.map.name)),
        )?;
        Ok(())
    }
}

/// A CPU kernel copying its input into its output, for storing received
/// elements into the local replica through the task graph (so the store is
/// ordered after earlier readers and before later ones, like any task).
fn copy_kernel<T: bytemuck::Pod>() -> Result<Kernel> {
    let each = Split::Elementwise { per_item: 1 };
    Kernel::builder("offload_net_store")
        .param(Param::buffer::<T>("src", Access::Read, each))
        .param(Param::buffer::<T>("dst", Access::Write, each))
        .param(Param::Offset)
        .param(Param::Count)
        .cpu(copy_cpu::<T>)
        .build()
}

fn copy_cpu<T: bytemuck::Pod>(ctx: &CpuCtx<'_>) {
    let items = ctx.items_below(ctx.count());
    let dst = ctx.output::<T>(1);
    let src = ctx.input::<T>(0);
    let n = items.len().min(dst.len());
    if let Some(s) = src.get(items.start..items.start + n) {
        dst[..n].copy_from_slice(s);
    }
}
