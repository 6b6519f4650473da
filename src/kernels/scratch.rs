//! Scratch buffers that outlive the call that used them.
//!
//! A layer's parallel loops need per-thread working space (a chunk's
//! im2col rows at inference, the rows of an input gradient before col2im).
//! Fresh vectors for that are megabytes each on large layers, and the
//! allocator hands such sizes back to the operating system when they are
//! freed: every step then pays for zeroed pages again (about 4% of an
//! AlexNet step in page faults). [`Scratch`] keeps the vectors of each
//! thread in a small pool instead, for the next call on that thread.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Vectors kept per thread: as many as one kernel call holds at once.
const KEPT_PER_THREAD: usize = 4;

/// Values of the largest vector a pool keeps (64 MB), by its length (its
/// capacity may be up to twice that after growing). Working space per
/// step is far smaller; a larger vector held a kernel kept between
/// inference batches (AlexNet's packed dense kernel: 151 MB), which goes
/// back to the system when dropped instead of staying resident in a
/// pool through the training that follows.
const KEPT_MAX_VALUES: usize = 16 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A vector of `f32` from this thread's pool (empty, but with the
/// capacity of an earlier use), returned to the pool of the thread that
/// drops it.
///
/// ```
/// use convnet::kernels::scratch::Scratch;
/// let mut rows = Scratch::take();
/// rows.resize(1024, 0.0);
/// drop(rows); // the next take() on this thread reuses its memory
/// ```
#[derive(Default)]
pub struct Scratch(Vec<f32>);

impl Scratch {
    /// A vector from this thread's pool, or a new one.
    pub fn take() -> Self {
        let mut scratch = Scratch::take_unzeroed();
        scratch.0.clear();
        scratch
    }

    /// A vector from this thread's pool as its last user left it, stale
    /// values and all (or a new, empty one): for working space that is
    /// written before it is read, so that growing it to the length it had
    /// costs no pass of zeros.
    ///
    /// ```
    /// use convnet::kernels::scratch::Scratch;
    /// let mut planes = Scratch::take_unzeroed();
    /// planes.resize(4096, 0.0); // zeros only where it grows
    /// ```
    pub fn take_unzeroed() -> Self {
        let kept = POOL.try_with(|pool| pool.borrow_mut().pop()).ok().flatten();
        Scratch(kept.unwrap_or_default())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let vector = std::mem::take(&mut self.0);
        if vector.capacity() == 0 || vector.len() > KEPT_MAX_VALUES {
            return;
        }
        // During thread shutdown the pool may be gone: then the vector is
        // simply freed.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < KEPT_PER_THREAD {
                pool.push(vector);
            }
        });
    }
}

impl Deref for Scratch {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_over_the_largest_kept_size_is_freed_not_pooled() {
        // Empty this thread's pool first: what it held would come back.
        let held: Vec<Scratch> = (0..KEPT_PER_THREAD).map(|_| Scratch::take()).collect();
        // Lengths count, not capacities. (Zeroed allocations this large
        // are fresh pages from the system, never touched here.)
        drop(Scratch(vec![0.0; KEPT_MAX_VALUES + 1]));
        assert_eq!(
            Scratch::take().capacity(),
            0,
            "a new vector, not the large one"
        );
        drop(Scratch(vec![0.0; KEPT_MAX_VALUES]));
        assert!(
            Scratch::take().capacity() >= KEPT_MAX_VALUES,
            "the largest kept size"
        );
        drop(held);
    }

    #[test]
    fn an_unzeroed_take_keeps_the_length_and_values_it_was_left_with() {
        let mut first = Scratch::take();
        first.resize(100, 7.0);
        drop(first);
        let second = Scratch::take_unzeroed();
        assert_eq!(second.len(), 100);
        assert!(second.iter().all(|&v| v == 7.0));
    }

    #[test]
    fn a_dropped_vector_is_reused_by_the_next_take_on_the_thread() {
        let mut first = Scratch::take();
        first.resize(10_000, 1.0);
        let address = first.as_ptr();
        drop(first);
        let second = Scratch::take();
        assert!(second.is_empty(), "a taken vector starts empty");
        assert!(second.capacity() >= 10_000);
        assert_eq!(second.as_ptr(), address);
    }
}
