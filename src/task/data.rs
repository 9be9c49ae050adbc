//! Managed data: a logical array registered once, with a replica per memory
//! node and a coherence state per element range.
//!
//! A [`Data`] handle names an element range of a *root* allocation. The root
//! owns the host replica (64-byte aligned heap memory) and, per device of the
//! graph, a device replica of the whole array allocated on first use (the CPU
//! device uses the host replica in place: host memory is its memory node).
//! Coherence is kept per *segment*, a maximal element range whose state is
//! uniform: a bit per memory node says where the segment's current value is
//! (MSI: one bit after a write, several after reads fetched it, none when the
//! only copy was lost). Segments split where handles begin and end, so children
//! of a partition (even with overlapping halos) are tracked exactly.
//!
//! The same segments carry the submission history (last writer, readers since)
//! from which the graph derives task dependencies, and the committed writer
//! with its commit sequence number, from which lost data is recomputed.
//!
//! This module touches no driver: replicas are [`RawBuffer`]s, transfers are
//! queue commands issued by the executor (`exec.rs`).

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use super::graph::{GraphInner, TaskGraph, TaskId};
use crate::backend::queue::HostMemory;
use crate::buffer::RawBuffer;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::kernel::ElemType;

/// A memory node: 0 is host memory (the CPU device's too), `k ≥ 1` is the
/// memory of the graph's device `k - 1`.
pub(crate) type NodeId = usize;

/// Bit of `node` in a validity mask.
pub(crate) fn bit(node: NodeId) -> u64 {
    1u64 << node
}

/// One element range `[start, next segment's start)` with uniform state.
#[derive(Clone, Default)]
pub(crate) struct Seg {
    pub start: usize,
    /// Nodes holding the current value.
    pub valid: u64,
    /// Transfers into a node still in flight (the node's bit is already set).
    pub fetch: Vec<(NodeId, Event)>,
    /// The task whose committed write this value is (`None`: registered data).
    pub writer: Option<TaskId>,
    /// Commit sequence number of that write (0: registered data).
    pub written_seq: u64,
    /// Submission history: the last task submitted that writes this range.
    pub last_writer: Option<TaskId>,
    /// Submission history: tasks submitted since that read it.
    pub readers: Vec<TaskId>,
}

impl Seg {
    /// Whether `other` (the next segment) can merge into this one.
    fn same(&self, other: &Seg) -> bool {
        self.valid == other.valid
            && self.fetch.is_empty()
            && other.fetch.is_empty()
            && self.writer == other.writer
            && self.written_seq == other.written_seq
            && self.last_writer == other.last_writer
            && self.readers == other.readers
    }
}

/// The segments of one root, sorted by start, covering `0..len`.
pub(crate) struct RootState {
    pub segs: Vec<Seg>,
    len: usize,
}

impl RootState {
    fn new(len: usize) -> Self {
        RootState {
            segs: vec![Seg {
                valid: bit(0),
                ..Seg::default()
            }],
            len,
        }
    }

    /// End of segment `i`.
    pub fn end(&self, i: usize) -> usize {
        self.segs.get(i + 1).map_or(self.len, |s| s.start)
    }

    /// Make a segment start at `x` (if inside the array).
    fn split(&mut self, x: usize) {
        if x == 0 || x >= self.len {
            return;
        }
        let i = self.segs.partition_point(|s| s.start <= x) - 1;
        if self.segs[i].start == x {
            return;
        }
        let mut s = self.segs[i].clone();
        s.start = x;
        self.segs.insert(i + 1, s);
    }

    /// The indices of the segments covering `r` exactly (split as needed).
    pub fn cover(&mut self, r: &Range<usize>) -> Range<usize> {
        if r.is_empty() {
            return 0..0;
        }
        self.split(r.start);
        self.split(r.end);
        let a = self.segs.partition_point(|s| s.start < r.start);
        let b = self.segs.partition_point(|s| s.start < r.end);
        a..b
    }

    /// Merge neighbours with equal state (keeps the segment count bounded by the
    /// ranges in use).
    pub fn coalesce(&mut self) {
        let mut out: Vec<Seg> = Vec::with_capacity(self.segs.len());
        for s in self.segs.drain(..) {
            match out.last() {
                Some(prev) if prev.same(&s) => {}
                _ => out.push(s),
            }
        }
        self.segs = out;
    }
}

/// The shared core of every handle over one registered array.
pub(crate) struct Root {
    /// Its name (shared with the profile records of its transfers).
    pub name: std::sync::Arc<str>,
    pub ty: ElemType,
    pub len: usize,
    /// Device replicas, by device index in the graph (dropped before `host`).
    pub replicas: Mutex<Vec<Option<Arc<RawBuffer>>>>,
    pub state: Mutex<RootState>,
    /// The host replica (also the CPU device's).
    pub host: Arc<dyn HostMemory>,
    /// Streamed data: never kept on a device. Each chunk of a split task moves
    /// its slice through the device's chunk buffers (uploaded before, written
    /// back right after, its kernel), so host memory always holds the valid
    /// values; the CPU device computes on it in place. This is how host slices
    /// given to [`crate::schedule::Scheduler::run`] are used.
    pub streamed: bool,
}

impl Root {
    /// A root over `len` elements of type `ty` of host memory the caller lends
    /// (no copy): its host replica *is* that memory.
    ///
    /// # Safety
    /// The memory is valid, aligned for `ty`, and not accessed by anything but
    /// the graph's commands until every command using the root has completed;
    /// if the root is only read (every task reads it), it may be shared with
    /// other readers meanwhile.
    pub(crate) unsafe fn borrowed(name: &str, ty: ElemType, ptr: *mut u8, len: usize, streamed: bool) -> Root {
        let bytes = len * ty.size;
        Root {
            name: Arc::from(name),
            ty,
            len,
            replicas: Mutex::new(Vec::new()),
            state: Mutex::new(RootState::new(len)),
            // SAFETY: forwarded from the caller.
            host: unsafe { crate::backend::queue::HostRegion::arc(ptr, bytes) },
            streamed,
        }
    }

    /// Bytes per element.
    pub fn size(&self) -> usize {
        self.ty.size
    }

    /// Device `d`'s replica: allocated on first use, or the host replica itself
    /// on a device that computes on host memory.
    pub fn replica(&self, d: usize, device: &Device, in_place: bool) -> Result<Arc<RawBuffer>> {
        let mut reps = self.replicas.lock();
        if let Some(Some(r)) = reps.get(d) {
            return Ok(r.clone());
        }
        let r = if in_place {
            // The CPU device addresses host memory; the host replica is owned by this
            // root, which every task using the replica keeps alive until its commands
            // completed; it is 64-byte aligned and `len` elements long. Commands that
            // write it are ordered by the task graph's dependencies.
            // SAFETY: valid, aligned host memory that outlives every command using it (above).
            Arc::new(unsafe { RawBuffer::borrow_host(device, self.ty, self.host.ptr(), self.len) })
        } else {
            Arc::new(RawBuffer::alloc(device, self.ty, self.len.max(1))?)
        };
        if reps.len() <= d {
            reps.resize_with(d + 1, || None);
        }
        reps[d] = Some(r.clone());
        Ok(r)
    }

    /// The host bytes of elements `r` (for copies out; the caller made them valid
    /// on the host and holds off writers).
    pub fn host_bytes(&self, r: &Range<usize>) -> &[u8] {
        let size = self.size();
        let n = (r.end - r.start) * size;
        if n == 0 {
            return &[];
        }
        // SAFETY: `r` lies inside the array (handles are checked at creation), the
        // host replica holds `len × size` bytes, and no command writes these bytes
        // while the caller reads them (see the caller's contract).
        unsafe { std::slice::from_raw_parts(self.host.ptr().add(r.start * size), n) }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// How [`Data::partition`] cuts an array into children.
///
/// One Jacobi sweep over row bands with one halo row (the README's example):
///
/// ```
/// use offload::task::{Partition, TaskGraph};
/// let rt = offload::Runtime::builder().backends(&[offload::BackendKind::Cpu]).build()?;
/// let n = 64;
/// let grid: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32).collect();
/// let graph = TaskGraph::new(rt.devices())?;
/// let u = graph.data("u", &grid)?;
/// let v = graph.data("v", &grid)?;
/// let rows = Partition::Rows { row_len: n, parts: 4, halo: 1 };
/// let (us, vs) = (u.partition(rows)?, v.partition(rows)?);
/// let k = offload::kernels::jacobi()?;
/// for (src, dst) in us.iter().zip(&vs) {
///     // Reads `src` (its band and halo rows), writes `dst`; the kernel's scalars
///     // (width, where `dst` starts in `src`, ...) come from the two ranges.
///     graph.submit(offload::kernels::jacobi_task(&k, src, dst, n, n)?)?;
/// }
/// let result = v.acquire()?;
/// // An interior cell is the mean of its four neighbours.
/// let (r, c) = (10, 20);
/// let want = 0.25 * (((grid[(r - 1) * n + c] + grid[(r + 1) * n + c]) + grid[r * n + c + 1]) + grid[r * n + c - 1]);
/// assert_eq!(result[r * n + c], want);
/// # Ok::<(), offload::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    /// `parts` contiguous blocks of (nearly) equal length, each also reading
    /// `halo` elements on each side.
    Blocks {
        /// Number of blocks.
        parts: usize,
        /// Elements read beyond each end.
        halo: usize,
    },
    /// A row-major 2-D array of rows of `row_len` elements, cut into `parts`
    /// bands of whole rows, each also reading `halo` rows above and below.
    Rows {
        /// Elements per row.
        row_len: usize,
        /// Number of bands.
        parts: usize,
        /// Rows read beyond each edge.
        halo: usize,
    },
    /// A `rows × cols` matrix stored in *tile layout* ([`to_tiles`]: each
    /// `tile_rows × tile_cols` tile contiguous, tiles in row-major order), cut
    /// into its tiles, in that order. Tiles are whole: `rows` and `cols` must
    /// be multiples of the tile sides (pad the matrix), and each tile must
    /// start where every device of the graph can start a view.
    Tiles {
        /// Matrix rows.
        rows: usize,
        /// Matrix columns.
        cols: usize,
        /// Rows per tile.
        tile_rows: usize,
        /// Columns per tile.
        tile_cols: usize,
    },
}

/// A row-major `rows × cols` matrix in tile layout (see [`Partition::Tiles`]):
/// tile `(i, j)` is element range `(i × cols / tile_cols + j) × tile_rows ×
/// tile_cols ..` of the result, row-major inside. `rows` and `cols` must be
/// multiples of the tile sides.
///
/// ```
/// let m: Vec<u32> = (0..16).collect(); // 4 × 4, row-major
/// let t = offload::task::to_tiles(&m, 4, 4, 2, 2)?;
/// assert_eq!(&t[..4], &[0, 1, 4, 5]); // the top-left 2 × 2 tile
/// assert_eq!(offload::task::from_tiles(&t, 4, 4, 2, 2)?, m);
/// # Ok::<(), offload::Error>(())
/// ```
pub fn to_tiles<T: Copy>(m: &[T], rows: usize, cols: usize, tile_rows: usize, tile_cols: usize) -> Result<Vec<T>> {
    check_tiles(m.len(), rows, cols, tile_rows, tile_cols)?;
    let mut out = Vec::with_capacity(m.len());
    for ti in 0..rows / tile_rows {
        for tj in 0..cols / tile_cols {
            for r in 0..tile_rows {
                let start = (ti * tile_rows + r) * cols + tj * tile_cols;
                out.extend_from_slice(&m[start..start + tile_cols]);
            }
        }
    }
    Ok(out)
}

/// The row-major matrix of a tile-layout one (the inverse of [`to_tiles`]).
pub fn from_tiles<T: Copy>(t: &[T], rows: usize, cols: usize, tile_rows: usize, tile_cols: usize) -> Result<Vec<T>> {
    check_tiles(t.len(), rows, cols, tile_rows, tile_cols)?;
    let mut out = t.to_vec();
    let mut k = 0;
    for ti in 0..rows / tile_rows {
        for tj in 0..cols / tile_cols {
            for r in 0..tile_rows {
                let start = (ti * tile_rows + r) * cols + tj * tile_cols;
                out[start..start + tile_cols].copy_from_slice(&t[k..k + tile_cols]);
                k += tile_cols;
            }
        }
    }
    Ok(out)
}

fn check_tiles(len: usize, rows: usize, cols: usize, tile_rows: usize, tile_cols: usize) -> Result<()> {
    if tile_rows == 0 || tile_cols == 0 || !rows.is_multiple_of(tile_rows) || !cols.is_multiple_of(tile_cols) {
        return Err(Error::InvalidInput(format!(
            "a {rows} × {cols} matrix is not whole {tile_rows} × {tile_cols} tiles (pad it to multiples of the tile sides)"
        )));
    }
    if rows.checked_mul(cols) != Some(len) {
        return Err(Error::LengthMismatch {
            what: format!("{rows} × {cols} matrix"),
            host: len,
            buffer: rows.saturating_mul(cols),
        });
    }
    Ok(())
}

/// A logical array managed by a [`TaskGraph`]: registered once, kept where the
/// tasks use it. Cheap to clone (clones name the same elements).
///
/// A handle covers an element range of its array (all of it, or a child of a
/// [`Data::partition`]). A child with a halo *reads* its range widened by the
/// halo and *writes* only its own range: kernels receive the widened range
/// (indexed from 0) and must not write the halo.
pub struct Data<T: bytemuck::Pod> {
    pub(crate) root: Arc<Root>,
    pub(crate) graph: Arc<GraphInner>,
    /// Elements read by a task using this handle (own range plus halo).
    pub(crate) read: Range<usize>,
    /// Elements it owns (and writes).
    pub(crate) write: Range<usize>,
    pub(crate) _t: PhantomData<fn() -> T>,
}

impl<T: bytemuck::Pod> Clone for Data<T> {
    fn clone(&self) -> Self {
        Data {
            root: self.root.clone(),
            graph: self.graph.clone(),
            read: self.read.clone(),
            write: self.write.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: bytemuck::Pod> fmt::Debug for Data<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Data {:?}[{}..{}] (reads {}..{})",
            self.root.name, self.write.start, self.write.end, self.read.start, self.read.end
        )
    }
}

impl<T: bytemuck::Pod> Data<T> {
    pub(crate) fn register(graph: &TaskGraph, name: &str, values: &[T]) -> Result<Data<T>> {
        let ty = ElemType::of::<T>();
        let bytes = std::mem::size_of_val(values);
        let host = crate::backend::cpu::heap_memory(bytes.max(1), ty.align.max(64), "host")?;
        if bytes > 0 {
            // SAFETY: fresh host memory of at least `bytes` bytes, not yet shared.
            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr().cast::<u8>(), host.ptr(), bytes) };
        }
        let root = Arc::new(Root {
            name: Arc::from(name),
            ty,
            len: values.len(),
            replicas: Mutex::new(Vec::new()),
            state: Mutex::new(RootState::new(values.len())),
            host,
            streamed: false,
        });
        graph.inner.register_root(&root);
        Ok(Data {
            root,
            graph: graph.inner.clone(),
            read: 0..values.len(),
            write: 0..values.len(),
            _t: PhantomData,
        })
    }

    /// Elements this handle owns.
    pub fn len(&self) -> usize {
        self.write.len()
    }

    /// Whether it owns no elements.
    pub fn is_empty(&self) -> bool {
        self.write.is_empty()
    }

    /// The owned range within the registered array.
    pub fn range(&self) -> Range<usize> {
        self.write.clone()
    }

    /// The range a task using this handle reads: the owned range plus the halo,
    /// possibly widened down to where the graph's devices can start a view (see
    /// [`Data::partition`]). A kernel receives this range indexed from 0, so the
    /// owned range starts at `range().start - read_range().start` in it.
    pub fn read_range(&self) -> Range<usize> {
        self.read.clone()
    }

    /// The name given at registration.
    pub fn name(&self) -> &str {
        &self.root.name
    }

    /// The current values of the owned range, brought to the host: waits for
    /// the tasks submitted so far that write it, then copies from wherever the
    /// values are (fetching them to host memory if they are only on devices).
    pub fn acquire(&self) -> Result<Vec<T>> {
        // Later writers of the range wait until the guard is dropped.
        let guard = self.graph.acquire(&self.root, &self.write)?;
        let bytes = self.root.host_bytes(&self.write).to_vec();
        drop(guard);
        let mut out = vec![T::zeroed(); self.write.len()];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&bytes);
        Ok(out)
    }

    /// The values, brought home (like [`Data::acquire`]), consuming the handle.
    pub fn into_vec(self) -> Result<Vec<T>> {
        self.acquire()
    }

    /// Children over parts of this handle's range (see [`Partition`]). Parts
    /// start at multiples of the largest view alignment of the graph's devices
    /// (OpenCL sub-buffers start at `CL_DEVICE_MEM_BASE_ADDR_ALIGN`; 128 bytes on
    /// PoCL), so they are nearly, not exactly, equal; read ranges are widened
    /// down to such a multiple too ([`Data::read_range`]). The
    /// parent stays usable: dependencies follow element ranges, so a task on
    /// the parent orders itself after tasks on overlapping children and the
    /// other way round; no unpartition step is needed.
    pub fn partition(&self, how: Partition) -> Result<Vec<Data<T>>> {
        let (unit, parts, halo) = match how {
            Partition::Tiles {
                rows,
                cols,
                tile_rows,
                tile_cols,
            } => return self.tiles(rows, cols, tile_rows, tile_cols),
            Partition::Blocks { parts, halo } => (1usize, parts, halo),
            Partition::Rows { row_len, parts, halo } => {
                if row_len == 0
                    || !self.write.len().is_multiple_of(row_len)
                    || !self.write.start.is_multiple_of(row_len)
                {
                    return Err(Error::InvalidInput(format!(
                        "partition of {:?}: {} elements from {} are not whole rows of {row_len}",
                        self.root.name,
                        self.write.len(),
                        self.write.start
                    )));
                }
                (row_len, parts, halo)
            }
        };
        let units = self.write.len() / unit;
        if parts == 0 || parts > units.max(1) {
            return Err(Error::InvalidInput(format!(
                "partition of {:?} into {parts} parts: it has {units} {}",
                self.root.name,
                if unit == 1 { "elements" } else { "rows" }
            )));
        }
        // Views must start where every device of the graph can use them as kernel
        // arguments (OpenCL sub-buffers need CL_DEVICE_MEM_BASE_ADDR_ALIGN): owned
        // ranges start at multiples of `q` elements (`qu` units), and read ranges
        // are widened down to one.
        let size = self.root.size().max(1);
        let align = self.graph.view_align_bytes().max(1);
        let q = align / gcd(size, align);
        let qu = q / gcd(q, unit);
        let base = self.write.start;
        let mut cuts = Vec::with_capacity(parts + 1);
        for p in 0..=parts {
            let c = if p == 0 || p == parts {
                units * p / parts
            } else {
                // Nearest aligned unit boundary (absolute element offsets are aligned).
                let want = units * p / parts;
                let abs = base / unit + want;
                let down = abs - abs % qu;
                let up = down + qu;
                let pick = if abs - down <= up - abs { down } else { up };
                pick.saturating_sub(base / unit).min(units)
            };
            cuts.push(c);
        }
        if cuts.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::InvalidInput(format!(
                "partition of {:?} into {parts} parts: parts must start at multiples of {q} elements \
                 (the view alignment of the graph's devices, {align} bytes), and {units} {} leave too few",
                self.root.name,
                if unit == 1 { "elements" } else { "rows" }
            )));
        }
        let mut out = Vec::with_capacity(parts);
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let write = base + a * unit..base + b * unit;
            let lo = a.saturating_sub(halo);
            let hi = (b + halo).min(units);
            // Halos stay inside the parent's range; the start is aligned down.
            let start = (base + lo * unit) - (base + lo * unit) % q;
            let read = start.max(self.read.start.min(base))..base + hi * unit;
            out.push(Data {
                root: self.root.clone(),
                graph: self.graph.clone(),
                read,
                write,
                _t: PhantomData,
            });
        }
        Ok(out)
    }

    /// The tiles of a tile-layout matrix (see [`Partition::Tiles`]).
    fn tiles(&self, rows: usize, cols: usize, tile_rows: usize, tile_cols: usize) -> Result<Vec<Data<T>>> {
        check_tiles(self.write.len(), rows, cols, tile_rows, tile_cols)?;
        let tile = tile_rows * tile_cols;
        let size = self.root.size().max(1);
        let align = self.graph.view_align_bytes().max(1);
        let base = self.write.start;
        if !(base * size).is_multiple_of(align) || !(tile * size).is_multiple_of(align) {
            return Err(Error::InvalidInput(format!(
                "tiles of {:?}: {tile_rows} × {tile_cols} tiles of {} bytes from element {base} do not start at \
                 multiples of {align} bytes (the view alignment of the graph's devices)",
                self.root.name,
                tile * size
            )));
        }
        Ok((0..rows * cols / tile)
            .map(|t| {
                let r = base + t * tile..base + (t + 1) * tile;
                Data {
                    root: self.root.clone(),
                    graph: self.graph.clone(),
                    read: r.clone(),
                    write: r,
                    _t: PhantomData,
                }
            })
            .collect())
    }
}
