//! Batches gathered ahead of training: for samples read from files
//! ([`Samples::prefers_prefetch`]), a background thread decodes the next
//! batches while the current one trains, through a queue of at most
//! [`QUEUE_DEPTH`] batches, so that memory holds a few batches, never the
//! data set.

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use ndarray::{ArrayD, IxDyn};

use crate::Result;
use crate::data::Samples;

/// Batches the loader may hold ready before training takes them.
pub const QUEUE_DEPTH: usize = 2;

/// The samples and targets of one batch, in the order of its indices.
pub(super) struct Batch {
    pub x: ArrayD<f32>,
    pub y: ArrayD<f32>,
}

/// Where the time of an epoch's input went.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LoaderTimes {
    /// Time the loader thread spent gathering (decoding) batches.
    pub loading: Duration,
    /// Time training spent waiting for a batch.
    pub waiting: Duration,
}

/// The samples at `indices` of `samples` as one array `(n, ..shape)`.
fn gathered(samples: &dyn Samples, indices: &[usize]) -> Result<ArrayD<f32>> {
    let mut shape = vec![indices.len()];
    shape.extend(samples.sample_shape());
    let mut array = ArrayD::zeros(IxDyn(&shape));
    let values = array.as_slice_mut().expect("a new array is contiguous");
    samples.gather(indices, values)?;
    Ok(array)
}

/// Calls `train(step, batch)` on each batch of `order` (`batch_size`
/// samples, the last one shorter), gathered ahead by a background thread.
/// Stops at the first error, or when `train` returns `false`.
pub(super) fn each_batch_prefetched(
    (x, y): (&dyn Samples, &dyn Samples),
    order: &[usize],
    batch_size: usize,
    mut train: impl FnMut(usize, Batch) -> Result<bool>,
) -> Result<LoaderTimes> {
    std::thread::scope(|scope| {
        let (send, receive) = sync_channel(QUEUE_DEPTH);
        let loader = scope.spawn(move || {
            let mut loading = Duration::ZERO;
            for indices in order.chunks(batch_size) {
                let started = Instant::now();
                let batch = gathered(x, indices).and_then(|x| {
                    let y = gathered(y, indices)?;
                    Ok(Batch { x, y })
                });
                loading += started.elapsed();
                let failed = batch.is_err();
                // A send fails once training has stopped and dropped the
                // receiver: nothing more is needed.
                if send.send(batch).is_err() || failed {
                    break;
                }
            }
            loading
        });
        let mut waiting = Duration::ZERO;
        let mut result = Ok(());
        for step in 0.. {
            let started = Instant::now();
            let Ok(batch) = receive.recv() else { break };
            waiting += started.elapsed();
            match batch.and_then(|batch| train(step, batch)) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(receive);
        let loading = loader.join().unwrap_or_default();
        result.map(|()| LoaderTimes { loading, waiting })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use ndarray::Array2;

    /// Samples whose gather fails at one index, as a corrupt file would.
    struct FailsAt(usize);

    impl Samples for FailsAt {
        fn len(&self) -> usize {
            10
        }
        fn sample_shape(&self) -> Vec<usize> {
            vec![1]
        }
        fn gather(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
            for (&i, o) in indices.iter().zip(out) {
                if i == self.0 {
                    return Err(Error::Data(format!("sample {i} is unreadable")));
                }
                *o = i as f32;
            }
            Ok(())
        }
    }

    #[test]
    fn batches_arrive_in_order_and_whole() {
        let x = Array2::from_shape_fn((7, 2), |(i, j)| (10 * i + j) as f32);
        let y = Array2::from_shape_fn((7, 1), |(i, _)| i as f32);
        let order = [6, 0, 5, 1, 4, 2, 3];
        let mut seen = Vec::new();
        each_batch_prefetched((&x, &y), &order, 3, |step, batch| {
            assert_eq!(batch.x.shape()[1], 2);
            seen.push((step, batch.y.iter().copied().collect::<Vec<_>>()));
            Ok(true)
        })
        .unwrap();
        let want = [
            (0, vec![6.0, 0.0, 5.0]),
            (1, vec![1.0, 4.0, 2.0]),
            (2, vec![3.0]),
        ];
        assert_eq!(seen, want);
    }

    #[test]
    fn a_failed_gather_ends_training_with_its_error() {
        let y = Array2::<f32>::zeros((10, 1));
        let order: Vec<usize> = (0..10).collect();
        let mut steps = 0;
        let result = each_batch_prefetched((&FailsAt(7), &y), &order, 2, |_, _| {
            steps += 1;
            Ok(true)
        });
        assert!(matches!(result, Err(Error::Data(m)) if m.contains("sample 7")));
        assert_eq!(steps, 3);
    }

    #[test]
    fn stopping_early_releases_the_loader() {
        let x = Array2::<f32>::zeros((1000, 1));
        let order: Vec<usize> = (0..1000).collect();
        let mut steps = 0;
        each_batch_prefetched((&x, &x), &order, 1, |_, _| {
            steps += 1;
            Ok(steps < 5)
        })
        .unwrap();
        assert_eq!(steps, 5);
    }
}
