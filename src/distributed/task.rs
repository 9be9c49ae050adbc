//! A task of a distributed run: a kernel with [`Piece`] arguments, submitted
//! by every rank, run by the rank that owns what it writes.

use crate::error::{Error, Result};
use crate::kernel::{Access, Kernel, Scalar};
use crate::launch::LaunchConfig;
use crate::task::Task;

use super::data::{ArgData, Piece};

/// One argument or setting, in the order given (the local [`Task`] is built in
/// the same order).
pub(crate) enum Op<'a> {
    Data(Box<dyn ArgData + 'a>, Access),
    Scalar(Scalar),
    Local(usize),
    Items(usize),
    Config(LaunchConfig),
    Split,
    MaxBlock(u32),
}

/// A kernel with distributed arguments, for [`super::Cluster::submit`]: the
/// counterpart of [`Task`] whose data arguments are [`Piece`]s of
/// [`super::DistData`]. Every rank must submit the same tasks in the same order.
pub struct DistTask<'a> {
    pub(crate) kernel: &'a Kernel,
    pub(crate) ops: Vec<Op<'a>>,
    pub(crate) name: String,
}

impl std::fmt::Debug for DistTask<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DistTask {:?} ({} arguments)", self.name, self.ops.len())
    }
}

impl<'a> DistTask<'a> {
    /// A task running `kernel`.
    pub fn new(kernel: &'a Kernel) -> DistTask<'a> {
        DistTask {
            kernel,
            ops: Vec::new(),
            name: kernel.name().to_string(),
        }
    }

    /// Next argument: `d`, read (remote elements are received first).
    pub fn read<T: bytemuck::Pod>(mut self, d: Piece<'a, T>) -> Self {
        self.ops.push(Op::Data(Box::new(d), Access::Read));
        self
    }

    /// Next argument: `d`, written (the task runs on the rank owning it).
    pub fn write<T: bytemuck::Pod>(mut self, d: Piece<'a, T>) -> Self {
        self.ops.push(Op::Data(Box::new(d), Access::Write));
        self
    }

    /// Next argument: `d`, read and written.
    pub fn read_write<T: bytemuck::Pod>(mut self, d: Piece<'a, T>) -> Self {
        self.ops.push(Op::Data(Box::new(d), Access::ReadWrite));
        self
    }

    /// Next argument: a scalar.
    pub fn scalar(mut self, v: impl Into<Scalar>) -> Self {
        self.ops.push(Op::Scalar(v.into()));
        self
    }

    /// Next argument: local memory of `len` elements (see [`Task::local`]).
    pub fn local(mut self, len: usize) -> Self {
        self.ops.push(Op::Local(len));
        self
    }

    /// `n` items, 1-D (see [`Task::items`]).
    pub fn items(mut self, n: usize) -> Self {
        self.ops.push(Op::Items(n));
        self
    }

    /// An explicit launch configuration (see [`Task::config`]).
    pub fn config(mut self, cfg: LaunchConfig) -> Self {
        self.ops.push(Op::Config(cfg));
        self
    }

    /// Split across the owning rank's devices (see [`Task::split`]).
    pub fn split(mut self) -> Self {
        self.ops.push(Op::Split);
        self
    }

    /// Largest block size (see [`Task::max_block`]).
    pub fn max_block(mut self, n: u32) -> Self {
        self.ops.push(Op::MaxBlock(n));
        self
    }

    /// A name for reports and traces.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// The bytes hashed to compare task sequences between ranks: the name,
    /// kernel, and every argument (data id, access, ranges; scalar values).
    pub(crate) fn fingerprint(&self) -> Result<Vec<u8>> {
        let mut f = Vec::new();
        f.extend_from_slice(self.name.as_bytes());
        f.push(0);
        f.extend_from_slice(self.kernel.name().as_bytes());
        f.push(0);
        for op in &self.ops {
            match op {
                Op::Data(d, mode) => {
                    let (r, w) = (d.read_range()?, d.write_range()?);
                    f.push(1);
                    f.push(*mode as u8);
                    for x in [d.map().id as usize, r.start, r.end, w.start, w.end] {
                        f.extend_from_slice(&(x as u64).to_le_bytes());
                    }
                }
                Op::Scalar(s) => f.extend_from_slice(format!("s{s:?}").as_bytes()),
                Op::Local(n) => f.extend_from_slice(format!("l{n}").as_bytes()),
                Op::Items(n) => f.extend_from_slice(format!("i{n}").as_bytes()),
                Op::Config(c) => f.extend_from_slice(format!("c{c:?}").as_bytes()),
                Op::Split => f.push(2),
                Op::MaxBlock(n) => f.extend_from_slice(format!("m{n}").as_bytes()),
            }
        }
        Ok(f)
    }

    /// The rank that runs the task: the one owning every element it writes.
    pub(crate) fn executor(&self) -> Result<usize> {
        let mut exec = None;
        for op in &self.ops {
            let Op::Data(d, mode) = op else { continue };
            if *mode == Access::Read {
                continue;
            }
            let w = d.write_range()?;
            let owner = d.map().owner_of_range(&w).map_err(|why| {
                Error::InvalidInput(format!("distributed task {:?} writes across ranks: {why}", self.name))
            })?;
            match (exec, owner) {
                (_, None) => {}
                (None, Some(o)) => exec = Some(o),
                (Some(e), Some(o)) if e == o => {}
                (Some(e), Some(o)) => {
                    return Err(Error::InvalidInput(format!(
                        "distributed task {:?} writes data owned by ranks {e} and {o}; a task must write \
                         data of one rank only",
                        self.name
                    )));
                }
            }
        }
        exec.ok_or_else(|| {
            Error::InvalidInput(format!(
                "distributed task {:?} writes no data, so no rank owns it",
                self.name
            ))
        })
    }

    /// The local task (built on the executing rank only).
    pub(crate) fn local_task(&self) -> Result<Task> {
        let mut t = Task::new(self.kernel).name(&self.name);
        for op in &self.ops {
            t = match op {
                Op::Data(d, mode) => d.add(t, *mode)?,
                Op::Scalar(s) => t.scalar(*s),
                Op::Local(n) => t.local(*n),
                Op::Items(n) => t.items(*n),
                Op::Config(c) => t.config(*c),
                Op::Split => t.split(),
                Op::MaxBlock(n) => t.max_block(*n),
            };
        }
        Ok(t)
    }
}
