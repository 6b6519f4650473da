//! `Kept`: what a layer prepares from its weights for inference (a
//! kernel transformed or packed for the matrix products), kept between
//! predictions until the weights can change.
//!
//! Predicting batch after batch prepares it once: AlexNet's Winograd
//! kernels are 52 MB of planes per batch of 16, its dense kernels 234 MB
//! to pack. Every way to change a layer's weights takes it mutably
//! (`params_mut`, `build`, training), and each calls [`Kept::clear`]; a
//! clone starts without one.

use std::sync::{Arc, Mutex, PoisonError};

/// A value made from a layer's weights, or nothing yet.
pub(super) struct Kept<T>(Mutex<Option<Arc<T>>>);

impl<T> Kept<T> {
    /// The kept value, else `make()`'s, kept. (`make` runs unlocked: it
    /// runs parallel loops, whose threads may predict with this layer
    /// too.)
    pub(super) fn get_or_make(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let lock = || self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(value) = &*lock() {
            return Arc::clone(value);
        }
        let value = Arc::new(make());
        *lock() = Some(Arc::clone(&value));
        value
    }

    /// Drops the kept value (the weights are about to change).
    pub(super) fn clear(&mut self) {
        *self.0.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept(Mutex::new(None))
    }
}

impl<T> Clone for Kept<T> {
    fn clone(&self) -> Self {
        Kept::default()
    }
}

impl<T> std::fmt::Debug for Kept<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.lock().map(|kept| kept.is_some()).unwrap_or(false);
        f.debug_struct("Kept").field("kept", &kept).finish()
    }
}
