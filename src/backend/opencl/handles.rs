//! Owning wrappers over raw OpenCL handles: one owner per handle, released in `Drop`.
//!
//! `opencl3`'s own wrappers panic when a release fails; these log instead, so
//! `Drop` never panics. Only this backend creates these types, always from a
//! handle that a successful `clCreate*` call returned (reference count 1, owned).

use opencl3::command_queue::release_command_queue;
use opencl3::context::context::release_context;
use opencl3::event::release_event;
use opencl3::kernel::release_kernel;
use opencl3::memory::release_mem_object;
use opencl3::program::release_program;
use opencl3::types::{cl_command_queue, cl_context, cl_event, cl_kernel, cl_mem, cl_program};

use super::error::code_name;

macro_rules! owned_handle {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $release:ident, $what:literal) => {
        $(#[$doc])*
        pub(crate) struct $name($raw);

        // SAFETY: OpenCL objects are reference-counted driver objects whose API is
        // thread-safe (OpenCL 1.2+ §A.2), except setting kernel arguments, which
        // this backend serialises with a mutex per kernel object.
        unsafe impl Send for $name {}
        // SAFETY: as above.
        unsafe impl Sync for $name {}

        impl $name {
            /// Take ownership of `raw`.
            ///
            /// # Safety
            /// `raw` must be a valid handle whose one reference the caller owns and
            /// hands over (it is released when the wrapper drops).
            pub(crate) unsafe fn from_raw(raw: $raw) -> Self {
                $name(raw)
            }
            /// The raw handle (still owned by `self`).
            pub(crate) fn raw(&self) -> $raw {
                self.0
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: we own one reference to a valid handle (see `from_raw`).
                if let Err(code) = unsafe { $release(self.0) } {
                    tracing::warn!(error = %code_name(code), concat!("releasing an OpenCL ", $what, " failed"));
                }
            }
        }
    };
}

owned_handle!(
    /// An OpenCL context.
    Context, cl_context, release_context, "context"
);
owned_handle!(
    /// An in-order command queue.
    Queue, cl_command_queue, release_command_queue, "command queue"
);
owned_handle!(
    /// A built program.
    Program, cl_program, release_program, "program"
);
owned_handle!(
    /// A kernel object (its arguments are state: guard it with a mutex).
    KernelObj, cl_kernel, release_kernel, "kernel"
);
owned_handle!(
    /// A sub-buffer: a view of a buffer passed to one launch.
    SubBuffer, cl_mem, release_mem_object, "sub-buffer"
);
owned_handle!(
    /// An event returned by an enqueue call.
    Event, cl_event, release_event, "event"
);
