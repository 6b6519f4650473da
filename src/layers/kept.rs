//! `Kept`: what a layer prepares from its weights for inference (a
//! kernel transformed or packed for the matrix products), kept between
//! predictions with the key that says whether it is still right.
//!
//! Predicting batch after batch prepares it once: AlexNet's Winograd
//! kernels are 52 MB of planes per batch of 16, its dense kernels 234 MB
//! to pack. Training drops it (the weights change every step), and a
//! clone starts without one.

use std::sync::{Arc, Mutex, PoisonError};

/// A value made from a layer's weights, with the key it was made for.
pub(super) struct Kept<K, T>(Mutex<Option<(K, Arc<T>)>>);

impl<K, T> Kept<K, T> {
    /// The kept value if `still_right(key)` says so, else `make()`'s,
    /// kept with its key. (`make` runs unlocked: it runs parallel loops,
    /// whose threads may predict with this layer too.)
    pub(super) fn get(
        &self,
        still_right: impl FnOnce(&K) -> bool,
        make: impl FnOnce() -> (K, T),
    ) -> Arc<T> {
        let lock = || self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((key, value)) = &*lock()
            && still_right(key)
        {
            return Arc::clone(value);
        }
        let (key, value) = make();
        let value = Arc::new(value);
        *lock() = Some((key, Arc::clone(&value)));
        value
    }

    /// Drops the kept value (the weights are about to change).
    pub(super) fn clear(&mut self) {
        *self.0.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl<K, T> Default for Kept<K, T> {
    fn default() -> Self {
        Kept(Mutex::new(None))
    }
}

impl<K, T> Clone for Kept<K, T> {
    fn clone(&self) -> Self {
        Kept::default()
    }
}

impl<K, T> std::fmt::Debug for Kept<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.lock().map(|kept| kept.is_some()).unwrap_or(false);
        f.debug_struct("Kept").field("kept", &kept).finish()
    }
}
