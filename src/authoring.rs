//! Shorthands for writing and launching kernels: buffer parameters without a
//! `Split`, scalar conversions that refuse to truncate, a launch that fills
//! `Offset`/`Count`, and the hint given when a scalar has the wrong type.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernel::{Access, Kernel, Param, Scalar, Split};
use crate::launch::{Arg, LaunchConfig};

impl Param {
    /// A read-only buffer of `T` (`Split::Elementwise { per_item: 1 }`: item `i`
    /// reads element `i`); change the layout with [`Param::broadcast`] or
    /// [`Param::per_item`] where the kernel is split.
    pub fn input<T: bytemuck::Pod>(name: &str) -> Param {
        Param::buffer::<T>(name, Access::Read, Split::Elementwise { per_item: 1 })
    }
    /// A written buffer of `T`, one element per item (see [`Param::input`]).
    pub fn output<T: bytemuck::Pod>(name: &str) -> Param {
        Param::buffer::<T>(name, Access::Write, Split::Elementwise { per_item: 1 })
    }
    /// A read and written buffer of `T`, one element per item (see [`Param::input`]).
    pub fn inout<T: bytemuck::Pod>(name: &str) -> Param {
        Param::buffer::<T>(name, Access::ReadWrite, Split::Elementwise { per_item: 1 })
    }
    /// This buffer parameter, whole on every device of a split (`Split::Broadcast`;
    /// read-only buffers only, checked by [`crate::KernelBuilder::build`]). Other
    /// parameters are returned unchanged.
    pub fn broadcast(self) -> Param {
        self.with_split(Split::Broadcast)
    }
    /// This buffer parameter, `n` elements per item (`Split::Elementwise`). Other
    /// parameters are returned unchanged.
    pub fn per_item(self, n: usize) -> Param {
        self.with_split(Split::Elementwise { per_item: n })
    }
    fn with_split(self, new: Split) -> Param {
        match self {
            Param::Buffer { name, ty, access, .. } => Param::Buffer {
                name,
                ty,
                access,
                split: new,
            },
            other => other,
        }
    }
}

fn range_err<T: std::fmt::Display>(what: &str, value: T, ty: &'static str, range: String) -> Error {
    Error::ScalarRange {
        what: what.to_string(),
        value: value.to_string(),
        ty,
        range,
    }
}

impl Scalar {
    /// `n` as a `u32` scalar (the type of `Offset`, `Count` and most size
    /// parameters), or [`Error::ScalarRange`] naming `what` when it does not fit.
    pub fn u32_from(what: &str, n: usize) -> Result<Scalar> {
        u32::try_from(n)
            .map(Scalar::U32)
            .map_err(|_| range_err(what, n, "u32", format!("0..={}", u32::MAX)))
    }
    /// `n` as an `i32` scalar, or [`Error::ScalarRange`] naming `what`.
    pub fn i32_from(what: &str, n: i64) -> Result<Scalar> {
        i32::try_from(n)
            .map(Scalar::I32)
            .map_err(|_| range_err(what, n, "i32", format!("{}..={}", i32::MIN, i32::MAX)))
    }
    /// `x` as an `f32` scalar when it converts exactly (`0.5`, `2.0`, `1e6`), or
    /// [`Error::ScalarRange`] naming `what` (`0.1` is not exactly an `f32`: write
    /// `0.1f32`).
    pub fn f32_exact(what: &str, x: f64) -> Result<Scalar> {
        let y = x as f32;
        if f64::from(y) == x || x.is_nan() {
            Ok(Scalar::F32(y))
        } else {
            Err(range_err(what, x, "f32", "values exactly representable in f32".into()))
        }
    }
}

impl Arg<'_> {
    /// A `u32` count argument from a `usize`, refusing values above `u32::MAX`
    /// ([`Error::ScalarRange`]) instead of truncating like `n as u32`.
    pub fn count(n: usize) -> Result<Self> {
        Scalar::u32_from("count", n).map(Arg::Scalar)
    }
}

impl Device {
    /// Launch `kernel` over `n` items in one piece: `Offset` = 0 and `Count` = `n`
    /// are inserted where the signature declares them (pass `args` without them:
    /// a different number is [`Error::ArgCount`] counting only the others),
    /// and the launch shape is [`LaunchConfig::for_items`]. `n` above `u32::MAX` is
    /// [`Error::ScalarRange`]; other errors as [`Device::launch`].
    pub fn launch_items(&self, kernel: &Kernel, n: usize, args: Vec<Arg<'_>>) -> Result<()> {
        let cfg = LaunchConfig::for_items(n, self.info());
        self.launch_items_with(kernel, &cfg, n, args)
    }

    /// [`Device::launch_items`] with a launch shape of your own.
    pub fn launch_items_with(&self, kernel: &Kernel, cfg: &LaunchConfig, n: usize, args: Vec<Arg<'_>>) -> Result<()> {
        let count = Scalar::u32_from("count", n)?;
        let want = kernel
            .params()
            .iter()
            .filter(|p| !matches!(p, Param::Offset | Param::Count))
            .count();
        if args.len() != want {
            return Err(Error::ArgCount {
                kernel: kernel.name().to_string(),
                expected: want,
                got: args.len(),
            });
        }
        let mut given = args.into_iter();
        let mut full = Vec::with_capacity(kernel.params().len());
        for p in kernel.params() {
            full.push(match p {
                Param::Offset => Arg::Scalar(Scalar::U32(0)),
                Param::Count => Arg::Scalar(count),
                // Counted above: one given argument per other parameter.
                _ => match given.next() {
                    Some(a) => a,
                    None => break,
                },
            });
        }
        self.launch(kernel, cfg, &full)
    }
}

/// Extra words for an argument-type error: the likely fix when a scalar literal
/// has the wrong type (`2.0` is an `f64`, `5` an `i32`).
pub(crate) fn scalar_hint(p: &Param, a: &Arg<'_>) -> String {
    use crate::kernel::ScalarType as T;
    let want = match p {
        Param::Scalar { ty, .. } => *ty,
        Param::Offset | Param::Count => T::U32,
        _ => return String::new(),
    };
    match a {
        Arg::Scalar(s) if s.ty() == T::F64 && want == T::F32 => {
            " (hint: a Rust float literal such as `2.0` is an f64; write `2.0f32` for an f32 parameter)".into()
        }
        Arg::Scalar(s) if s.ty() == T::I32 && want == T::U32 => format!(
            " (hint: an unsuffixed integer literal is an i32; write `5u32`, or {} for a usize)",
            "`Arg::count(n)?`"
        ),
        Arg::Scalar(s) if s.ty() != want => format!(" (hint: pass a {} value)", want.name()),
        _ => String::new(),
    }
}
