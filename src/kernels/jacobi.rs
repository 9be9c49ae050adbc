//! Jacobi-2D: one sweep of the 5-point stencil over a row-major f32 grid, for a
//! band of rows with halos (as [`crate::task::Partition::Rows`] delivers them)
//! or for a chunk of a whole grid (as the scheduler splits it).

use crate::cpu_ctx::CpuCtx;
use crate::error::{Error, Result};
use crate::kernel::{Access, Kernel, Param, Scalar, ScalarArgs, Split};
use crate::task::{Data, Task};

/// Parameter indices of [`jacobi`] (the CPU version reads its arguments by position).
const IN: usize = 0;
const OUT: usize = 1;
const WIDTH: usize = 2;
const LEAD: usize = 3;
const IN_LEN: usize = 4;
const ROW0: usize = 5;
const ROWS: usize = 6;

/// The task of one sweep over a band of rows: `dst` (written) from `src` (read,
/// with its halo rows), both children of a [`crate::task::Partition::Rows`]
/// partition of a grid `width` columns wide and `rows` rows tall. It fills the
/// [`jacobi`] kernel's scalars from the bands' ranges (`lead` = where `dst`
/// starts inside `src`'s read range, `in_len` = that range's length, `row0` =
/// `dst`'s first row), each refused with [`Error::ScalarRange`] rather than
/// truncated when above `u32::MAX`.
pub fn jacobi_task(kernel: &Kernel, src: &Data<f32>, dst: &Data<f32>, width: usize, rows: usize) -> Result<Task> {
    let (read, owned) = (src.read_range(), dst.range());
    if width == 0 || owned.start < read.start {
        return Err(Error::InvalidInput(format!(
            "jacobi_task: band {owned:?} does not start inside the read range {read:?} (width {width})"
        )));
    }
    Ok(Task::new(kernel)
        .read(src)
        .write(dst)
        .scalar(Scalar::u32_from("width", width)?)
        .scalar(Scalar::u32_from("lead", owned.start - read.start)?)
        .scalar(Scalar::u32_from("in_len", read.len())?)
        .scalar(Scalar::u32_from("row0", owned.start / width)?)
        .scalar(Scalar::u32_from("rows", rows)?)
        .items(dst.len()))
}

/// `jacobi(in, out, width, lead, in_len, row0, rows, offset, count)`: one
/// Jacobi-2D sweep over a band of a `rows × width` row-major grid.
///
/// * `in` (read, broadcast): the band's read range, `in_len` elements: its
///   owned rows, the halo rows above and below them, and possibly some
///   elements before those (a [`crate::task::Data`] child's read range starts
///   where every device can start a view). The band's owned elements start at
///   element `lead` of `in`; its first owned row is grid row `row0`.
/// * `out` (write, one element per item): item `i` computes owned element
///   `g = offset + i` — grid row `row0 + g / width`, column `g % width` — into
///   `out[i]`, for `i < count`.
///
/// Elements on the grid's border (first or last row or column) keep their value
/// (a Dirichlet boundary: `out = in`); every other element becomes
/// `0.25 * (((N + S) + E) + W)` of its neighbours, summed in that order on
/// every backend, so CUDA, OpenCL and the CPU give bitwise-equal grids.
///
/// On a task graph, pass a band child `u` of the source grid as `in` and the
/// matching child `v` of the destination grid as `out`, with `lead =
/// v.range().start - u.read_range().start`, `in_len = u.read_range().len()`,
/// `row0 = v.range().start / width` and `count = v.len()` items (`offset` is 0).
/// Through the scheduler, pass the whole grid as `in` with `lead = 0`,
/// `in_len = rows × width`, `row0 = 0`, over `rows × width` items.
///
/// Every launch is checked before it is enqueued: `width` and `rows` at least
/// 1, the chunk inside the grid, and `in` holding the chunk's elements plus the
/// row above its first interior element and the row below its last
/// ([`crate::Error::InvalidArgument`] otherwise).
pub fn jacobi() -> Result<Kernel> {
    let src = super::sources("jacobi")?;
    let builder = Kernel::builder("jacobi")
        .param(Param::buffer::<f32>("in", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>(
            "out",
            Access::Write,
            Split::Elementwise { per_item: 1 },
        ))
        .param(Param::scalar::<u32>("width"))
        .param(Param::scalar::<u32>("lead"))
        .param(Param::scalar::<u32>("in_len"))
        .param(Param::scalar::<u32>("row0"))
        .param(Param::scalar::<u32>("rows"))
        .param(Param::Offset)
        .param(Param::Count)
        .extent_from("in", &["in_len"], 1)
        .check_scalars(check_scalars)
        // Per element: three adds and a scale; compulsory traffic one float in
        // and one out (neighbours come from cache).
        .cost(4.0, 8.0);
    // Audited built-in sources (kernels/jacobi.c): they declare this
    // signature, read `in[j]` only for `j < in_len` (each neighbour index is
    // tested against 0 and `in_len` before it is read; `in_len` is the checked
    // extent of `in`) and write `out[i]` only for `i < count` (the checked
    // extent of `out`).
    // SAFETY: the audited sources stay inside the declared extents (above).
    let builder = unsafe { builder.cuda(src.cuda, "jacobi").opencl(src.opencl, "jacobi") };
    builder.cpu(cpu).build()
}

/// The launch-time rules of [`jacobi`] (see its docs).
fn check_scalars(args: &ScalarArgs<'_>) -> std::result::Result<(), String> {
    let get = |name: &str| args.value::<u32>(name).unwrap_or(0) as u64;
    let (width, lead, in_len, row0, rows) = (get("width"), get("lead"), get("in_len"), get("row0"), get("rows"));
    let (offset, count) = (get("offset"), get("count"));
    if width == 0 || rows == 0 {
        return Err(format!("width = {width} and rows = {rows} must be at least 1"));
    }
    if count == 0 {
        return Ok(());
    }
    let (g_first, g_last) = (offset, offset + count - 1);
    if lead + g_last >= in_len {
        return Err(format!(
            "owned elements {g_first}..={g_last} at lead {lead} reach past in_len = {in_len}"
        ));
    }
    let (r_first, r_last) = (row0 + g_first / width, row0 + g_last / width);
    if r_last >= rows {
        return Err(format!("row {r_last} of the chunk lies beyond the grid's {rows} rows"));
    }
    // Interior rows the chunk touches: from the first to the last.
    let (top, bottom) = (r_first.max(1), r_last.min(rows.saturating_sub(2)));
    if rows < 3 || top > bottom {
        return Ok(());
    }
    let first = g_first.max((top - row0) * width);
    if lead + first < width {
        return Err(format!(
            "in lacks the row above element {first} (lead {lead} + {first} < width {width}): give the band a halo"
        ));
    }
    let last = g_last.min((bottom - row0 + 1) * width - 1);
    if lead + last + width >= in_len {
        return Err(format!(
            "in lacks the row below element {last} (lead {lead} + {last} + width {width} >= in_len {in_len}): \
             give the band a halo"
        ));
    }
    Ok(())
}

fn cpu(ctx: &CpuCtx<'_>) {
    let width = ctx.scalar::<u32>(WIDTH) as usize;
    let lead = ctx.scalar::<u32>(LEAD) as usize;
    let in_len = ctx.scalar::<u32>(IN_LEN) as usize;
    let row0 = ctx.scalar::<u32>(ROW0) as usize;
    let rows = ctx.scalar::<u32>(ROWS) as usize;
    let items = ctx.items_below(ctx.count());
    let input = ctx.input::<f32>(IN);
    let input = &input[..in_len.min(input.len())];
    let out = ctx.output::<f32>(OUT);
    let m = items.len().min(out.len());
    let band = Band {
        input,
        width,
        lead,
        row0,
        rows,
    };
    band.sweep(ctx.offset() + items.start, &mut out[..m]);
}

/// The geometry of one launch, as the device versions see it.
struct Band<'a> {
    input: &'a [f32],
    width: usize,
    lead: usize,
    row0: usize,
    rows: usize,
}

impl Band<'_> {
    /// Owned elements `g0 .. g0 + out.len()` into `out`, a row segment at a
    /// time: border segments are copies, interior runs one vectorizable loop.
    fn sweep(&self, g0: usize, out: &mut [f32]) {
        let w = self.width;
        if w == 0 {
            return;
        }
        let mut k = 0;
        while k < out.len() {
            let g = g0 + k;
            let (r, c) = (self.row0 + g / w, g % w);
            let seg = (w - c).min(out.len() - k);
            let o = &mut out[k..k + seg];
            k += seg;
            let j = self.lead + g;
            if r == 0 || r + 1 >= self.rows {
                match self.input.get(j..j + seg) {
                    Some(src) => o.copy_from_slice(src),
                    None => self.slow(j, r, c, o),
                }
                continue;
            }
            // Columns c .. c + seg: interior ones are 1 ..= w - 2.
            let a = c.max(1).min(c + seg);
            let b = (c + seg).min(w.saturating_sub(1)).max(a);
            let (ja, jb) = (j + (a - c), j + (b - c));
            let fast = ja >= w && jb + w <= self.input.len() && a < b;
            if !fast {
                self.slow(j, r, c, o);
                continue;
            }
            let inp = self.input;
            let (north, south) = (&inp[ja - w..jb - w], &inp[ja + w..jb + w]);
            let (east, west) = (&inp[ja + 1..jb + 1], &inp[ja - 1..jb - 1]);
            let interior = &mut o[a - c..b - c];
            for ((((o, n), s), e), w) in interior.iter_mut().zip(north).zip(south).zip(east).zip(west) {
                *o = 0.25f32 * (((n + s) + e) + w);
            }
            // The border columns of this segment (column 0, column w - 1).
            if c == 0 {
                o[0] = inp[j];
            }
            if c + seg == w && w > 1 {
                o[seg - 1] = inp[j + seg - 1];
            }
        }
    }

    /// Element by element, exactly as the device versions decide (missing
    /// inputs give NaN; the launch check refuses such arguments first).
    fn slow(&self, j0: usize, r: usize, c0: usize, out: &mut [f32]) {
        let (w, inp) = (self.width, self.input);
        for (t, o) in out.iter_mut().enumerate() {
            let (j, c) = (j0 + t, c0 + t);
            *o = match inp.get(j) {
                None => f32::NAN,
                Some(&v) if r == 0 || r + 1 >= self.rows || c == 0 || c + 1 == w => v,
                Some(_) if j < w || j + w >= inp.len() => f32::NAN,
                Some(_) => 0.25f32 * (((inp[j - w] + inp[j + w]) + inp[j + 1]) + inp[j - 1]),
            };
        }
    }
}

/// One Jacobi-2D sweep of a whole `rows × width` grid on the host, one thread,
/// plainly written: the reference the examples and tests check the devices
/// against. Border elements are copied; interior ones get
/// `0.25 * (((N + S) + E) + W)`, the devices' order.
pub fn jacobi_host(input: &[f32], output: &mut [f32], width: usize) -> Result<()> {
    if width == 0 || !input.len().is_multiple_of(width) || output.len() != input.len() {
        return Err(Error::InvalidInput(format!(
            "jacobi_host: {} input and {} output elements are not the same whole rows of width {width}",
            input.len(),
            output.len()
        )));
    }
    let rows = input.len() / width;
    for r in 0..rows {
        for c in 0..width {
            let j = r * width + c;
            output[j] = if r == 0 || r + 1 == rows || c == 0 || c + 1 == width {
                input[j]
            } else {
                let (n, s, e, w) = (input[j - width], input[j + width], input[j + 1], input[j - 1]);
                0.25f32 * (((n + s) + e) + w)
            };
        }
    }
    Ok(())
}
