//! The per-device in-memory cache of built kernels, shared by the OpenCL and
//! CUDA backends.
//!
//! Entries are keyed by [`Kernel::id`] and hold the kernel's liveness token
//! ([`Kernel::liveness`]): once the last clone of a kernel is dropped its entry is
//! dead, and dead entries are dropped on every insert and on every lookup that
//! misses. The cache therefore holds at most the live kernels plus the one being
//! built, however many kernels a program creates and drops over its life.
//!
//! Builds are serialised per cache, so two threads asking for the same kernel
//! never build it twice: the second waits and then finds the first one's entry.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use crate::kernel::Kernel;

struct Entry<T> {
    alive: Weak<()>,
    value: Arc<T>,
}

/// Built kernels of one device, evicted with their [`Kernel`].
pub(crate) struct KernelCache<T> {
    map: RwLock<HashMap<u64, Entry<T>>>,
    /// Serialises builds.
    building: Mutex<()>,
}

impl<T> Default for KernelCache<T> {
    fn default() -> Self {
        KernelCache {
            map: RwLock::new(HashMap::new()),
            building: Mutex::new(()),
        }
    }
}

impl<T> KernelCache<T> {
    /// The cached value for `kernel`, if any; a miss drops dead entries.
    pub(crate) fn get(&self, kernel: &Kernel) -> Option<Arc<T>> {
        if let Some(e) = self.map.read().get(&kernel.id()) {
            return Some(e.value.clone());
        }
        self.prune();
        None
    }

    /// The cached value for `kernel`, building it with `build` first if needed.
    /// Returns whether it was built by this call.
    pub(crate) fn get_or_try_build<E>(
        &self,
        kernel: &Kernel,
        build: impl FnOnce() -> Result<T, E>,
    ) -> Result<(Arc<T>, bool), E> {
        if let Some(v) = self.get(kernel) {
            return Ok((v, false));
        }
        let _guard = self.building.lock();
        if let Some(e) = self.map.read().get(&kernel.id()) {
            return Ok((e.value.clone(), false));
        }
        let value = Arc::new(build()?);
        let mut map = self.map.write();
        map.retain(|_, e| e.alive.strong_count() > 0);
        map.insert(
            kernel.id(),
            Entry {
                alive: kernel.liveness(),
                value: value.clone(),
            },
        );
        Ok((value, true))
    }

    /// Drop every entry whose kernel is gone.
    fn prune(&self) {
        let mut map = self.map.write();
        map.retain(|_, e| e.alive.strong_count() > 0);
    }

    /// Drop every entry (teardown).
    pub(crate) fn clear(&self) {
        let _guard = self.building.lock();
        self.map.write().clear();
    }

    /// Number of entries, dead ones included until the next prune.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::KernelCache;
    use crate::kernel::{Kernel, Param};

    fn kernel() -> Kernel {
        // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
        unsafe {
            Kernel::builder("k")
                .param(Param::Count)
                .opencl("__kernel void k(uint n) {}", "k")
        }
        .build()
        .unwrap()
    }

    #[test]
    fn entries_die_with_their_kernel_and_the_size_stays_bounded() {
        let cache = KernelCache::<Vec<u8>>::default();
        let keep = kernel();
        let (_, built) = cache.get_or_try_build::<()>(&keep, || Ok(vec![0; 16])).unwrap();
        assert!(built);
        let (_, built) = cache.get_or_try_build::<()>(&keep, || Ok(vec![1; 16])).unwrap();
        assert!(!built, "a live kernel is found, not rebuilt");
        for i in 0..1000 {
            let k = kernel();
            let (v, built) = cache.get_or_try_build::<()>(&k, || Ok(vec![2; 16])).unwrap();
            assert!(built && v.len() == 16);
            // The kept kernel and the fresh one: the previous one (dead) was dropped.
            assert_eq!(cache.len(), 2, "after {i} fresh kernels");
        }
        // A miss prunes too: only the kept kernel survives.
        assert!(cache.get(&kernel()).is_none());
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&keep).is_some());
        // A failed build inserts nothing.
        let k = kernel();
        assert_eq!(cache.get_or_try_build(&k, || Err("no")).err(), Some("no"));
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
