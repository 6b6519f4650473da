//! What `fit`, `evaluate` and `predict` read samples from.
//!
//! Any `ndarray` array of `f32` whose first axis is the sample axis works.
//! [`Rescaled`] wraps an array of bytes (pixels 0..=255) and converts each
//! batch to `f32` on the fly, so a whole data set never needs to exist as
//! `f32` in memory: MNIST takes 47 MB as bytes, 188 MB as floats.

use ndarray::{ArrayBase, Axis, Data, Dimension, RemoveAxis};
use rayon::prelude::*;

/// A collection of samples of one shape, gathered into batches by index.
pub trait Samples: Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one sample (without the sample axis).
    fn sample_shape(&self) -> Vec<usize>;

    /// Writes the samples at `indices`, one after another, into `out`
    /// (`indices.len()` times the sample size). In-memory samples never
    /// fail; samples read from files do when a file cannot be read.
    fn gather(&self, indices: &[usize], out: &mut [f32]) -> crate::Result<()>;

    /// Whether `fit` should gather batches ahead, in a background thread,
    /// while it trains on the current one (default false): true for
    /// samples decoded from files, where gathering takes real time.
    fn prefers_prefetch(&self) -> bool {
        false
    }
}

fn sample_len(shape: &[usize]) -> usize {
    shape[1..].iter().product()
}

impl<S, D> Samples for ArrayBase<S, D>
where
    S: Data<Elem = f32> + Sync,
    D: Dimension + RemoveAxis,
{
    fn len(&self) -> usize {
        self.len_of(Axis(0))
    }

    fn sample_shape(&self) -> Vec<usize> {
        self.shape()[1..].to_vec()
    }

    fn gather(&self, indices: &[usize], out: &mut [f32]) -> crate::Result<()> {
        gather_with(self, indices, out, |v| v);
        Ok(())
    }
}

/// Samples converted per parallel task: a batch's gather is split in a few
/// tasks (it sits between training steps, where it would run alone).
const SAMPLES_PER_TASK: usize = 32;

fn gather_with<T: Copy + Sync, S: Data<Elem = T> + Sync, D: Dimension + RemoveAxis>(
    array: &ArrayBase<S, D>,
    indices: &[usize],
    out: &mut [f32],
    convert: impl Fn(T) -> f32 + Sync,
) {
    let len = sample_len(array.shape());
    let contiguous = array.as_slice();
    let tasks = indices
        .par_chunks(SAMPLES_PER_TASK)
        .zip(out.par_chunks_mut(SAMPLES_PER_TASK * len.max(1)));
    tasks.for_each(|(indices, out)| {
        for (&i, out) in indices.iter().zip(out.chunks_exact_mut(len)) {
            copy_sample(array, contiguous, i, out, &convert);
        }
    });
}

/// `out = convert(sample i)`.
fn copy_sample<T: Copy, S: Data<Elem = T>, D: Dimension + RemoveAxis>(
    array: &ArrayBase<S, D>,
    contiguous: Option<&[T]>,
    i: usize,
    out: &mut [f32],
    convert: &impl Fn(T) -> f32,
) {
    let len = out.len();
    match contiguous {
        Some(all) => {
            let sample = &all[i * len..(i + 1) * len];
            out.iter_mut()
                .zip(sample)
                .for_each(|(o, &v)| *o = convert(v));
        }
        None => {
            let sample = array.index_axis(Axis(0), i);
            out.iter_mut()
                .zip(sample.iter())
                .for_each(|(o, &v)| *o = convert(v));
        }
    }
}

/// Byte samples seen as `f32` times a scale, e.g. pixels `/ 255`.
///
/// ```
/// use convnet::data::{Rescaled, Samples};
/// use ndarray::Array4;
/// let pixels = Array4::<u8>::from_elem((2, 28, 28, 1), 255);
/// let x = Rescaled::new(&pixels, 1.0 / 255.0);
/// let mut batch = vec![0.0; 784];
/// x.gather(&[1], &mut batch)?;
/// assert_eq!(batch[0], 1.0);
/// # Ok::<(), convnet::Error>(())
/// ```
pub struct Rescaled<'a, S: Data<Elem = u8>, D: Dimension> {
    bytes: &'a ArrayBase<S, D>,
    scale: f32,
}

impl<'a, S: Data<Elem = u8>, D: Dimension> Rescaled<'a, S, D> {
    /// `bytes`, whose first axis is the sample axis, times `scale`.
    pub fn new(bytes: &'a ArrayBase<S, D>, scale: f32) -> Self {
        Rescaled { bytes, scale }
    }
}

impl<S: Data<Elem = u8> + Sync, D: Dimension + RemoveAxis> Samples for Rescaled<'_, S, D> {
    fn len(&self) -> usize {
        self.bytes.len_of(Axis(0))
    }

    fn sample_shape(&self) -> Vec<usize> {
        self.bytes.shape()[1..].to_vec()
    }

    fn gather(&self, indices: &[usize], out: &mut [f32]) -> crate::Result<()> {
        let scale = self.scale;
        gather_with(self.bytes, indices, out, |v| v as f32 * scale);
        Ok(())
    }
}

/// The samples `start..start + len` of other samples, without a copy: what
/// `fit` trains and validates on with a `validation_split`.
///
/// ```
/// use convnet::data::{Samples, Slice};
/// use ndarray::Array2;
/// let x = Array2::from_shape_fn((5, 2), |(i, j)| (10 * i + j) as f32);
/// let last_two = Slice::new(&x, 3, 2)?;
/// let mut out = vec![0.0; 2];
/// last_two.gather(&[1], &mut out)?;
/// assert_eq!((last_two.len(), out), (2, vec![40.0, 41.0]));
/// # Ok::<(), convnet::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Slice<'a> {
    samples: &'a dyn Samples,
    start: usize,
    len: usize,
}

impl<'a> Slice<'a> {
    /// The samples `start..start + len` of `samples`; an error if they
    /// are not all there.
    pub fn new(samples: &'a dyn Samples, start: usize, len: usize) -> crate::Result<Self> {
        if start.checked_add(len).is_none_or(|end| end > samples.len()) {
            return Err(crate::Error::InvalidArgument(format!(
                "samples {start}..{start}+{len} are out of range: there are {}",
                samples.len()
            )));
        }
        Ok(Slice {
            samples,
            start,
            len,
        })
    }
}

impl Samples for Slice<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn sample_shape(&self) -> Vec<usize> {
        self.samples.sample_shape()
    }

    fn gather(&self, indices: &[usize], out: &mut [f32]) -> crate::Result<()> {
        let moved: Vec<usize> = indices.iter().map(|i| self.start + i).collect();
        self.samples.gather(&moved, out)
    }

    fn prefers_prefetch(&self) -> bool {
        self.samples.prefers_prefetch()
    }
}

/// How many of `n` samples train under `Fit::validation_split = fraction`:
/// `floor(n · (1 - fraction))`, as Keras computes it. The fraction is
/// taken as the decimal it prints as (0.2, not the `f32` nearest to it,
/// 0.200000003), so that 600 samples split 480 + 120 as in Keras, not
/// 479 + 121.
///
/// ```
/// assert_eq!(convnet::data::training_count(600, 0.2), 480);
/// assert_eq!(convnet::data::training_count(10, 0.25), 7);
/// ```
pub fn training_count(n: usize, fraction: f32) -> usize {
    let fraction: f64 = fraction.to_string().parse().unwrap_or(fraction as f64);
    (n as f64 * (1.0 - fraction)).floor() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn a_slice_maps_indices_and_refuses_a_range_past_the_end() {
        let x = Array2::from_shape_fn((6, 1), |(i, _)| i as f32);
        let slice = Slice::new(&x, 2, 3).unwrap();
        let mut out = vec![0.0; 3];
        slice.gather(&[2, 0, 1], &mut out).unwrap();
        assert_eq!(out, [4.0, 2.0, 3.0]);
        assert_eq!(slice.sample_shape(), [1]);
        assert!(Slice::new(&x, 4, 3).is_err());
        assert!(Slice::new(&x, usize::MAX, 2).is_err());
        assert!(Slice::new(&x, 6, 0).is_ok_and(|s| s.is_empty()));
    }

    /// Keras computes in float64: int(600 · (1 - 0.2)) = 480, and
    /// int(10 · (1 - 0.95)) = int(0.5) = 0.
    #[test]
    fn training_counts_follow_keras() {
        assert_eq!(training_count(600, 0.2), 480);
        assert_eq!(training_count(60_000, 0.1), 54_000);
        assert_eq!(training_count(10, 0.95), 0);
        assert_eq!(training_count(10, 0.0), 10);
    }
}
