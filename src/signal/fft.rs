//! Convolution through the FFT, like `scipy.signal.fftconvolve`: for large
//! kernels `O(N log N)` beats the `O(N K)` of the direct sum.
//!
//! Both real inputs travel through one complex 2-D FFT: the image as the real
//! part, the kernel as the imaginary part. Their spectra are separated again
//! by conjugate symmetry, multiplied, and sent back through one inverse FFT.

use std::sync::Arc;

use ndarray::{Array2, ArrayView2};
use num_traits::Float;
use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftNum, FftPlanner};

use super::{Element, Mode, order_inputs, output_shape};
use crate::Result;

/// A float type [`fftconvolve`] works on: `f32` or `f64`.
pub trait FftElement: Element + FftNum + Float {}

impl FftElement for f32 {}
impl FftElement for f64 {}

/// Convolves `in1` with `in2` through the FFT, like
/// `scipy.signal.fftconvolve(in1, in2, mode)`.
///
/// The result equals [`convolve2d`](super::convolve2d) with
/// `Boundary::Fill(0)` up to rounding (relative to the largest output value,
/// about `1e-15` for `f64` and `1e-6` for `f32`), and is much faster for large
/// kernels. Errors as [`convolve2d`](super::convolve2d).
///
/// ```
/// use convnet::signal::{fftconvolve, Mode};
/// use ndarray::array;
///
/// let image = array![[1.0, 2.0], [3.0, 4.0]];
/// let kernel = array![[1.0, 1.0], [1.0, 1.0]];
/// let sums = fftconvolve(image.view(), kernel.view(), Mode::Valid)?;
/// assert!((sums[[0, 0]] - 10.0_f64).abs() < 1e-12);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn fftconvolve<T: FftElement>(
    in1: ArrayView2<T>,
    in2: ArrayView2<T>,
    mode: Mode,
) -> Result<Array2<T>> {
    let (image, kernel, _) = order_inputs(in1, in2, mode)?;
    let (a, b) = (image.dim(), kernel.dim());
    let full = (a.0 + b.0 - 1, a.1 + b.1 - 1);
    let size = (next_fast_len(full.0), next_fast_len(full.1));
    let out_shape = output_shape(a, b, mode);
    let start = match mode {
        Mode::Full => (0, 0),
        // scipy's `_centered` crop of the full result.
        Mode::Same => ((b.0 - 1) / 2, (b.1 - 1) / 2),
        Mode::Valid => (b.0 - 1, b.1 - 1),
    };

    let mut planner = FftPlanner::<T>::new();
    let plans = Plans {
        rows_forward: planner.plan_fft_forward(size.1),
        cols_forward: planner.plan_fft_forward(size.0),
        rows_inverse: planner.plan_fft_inverse(size.1),
        cols_inverse: planner.plan_fft_inverse(size.0),
    };

    // The kernel is scaled to the image's energy so that neither drowns the
    // other's rounding errors in the shared transform.
    let scale = energy_ratio(image, kernel);
    let packed = pack(image, kernel, scale, size);
    let spectrum = forward_2d(packed, size, a.0.max(b.0), &plans);
    let product = multiply_packed_spectra(&spectrum, (size.1, size.0), scale);
    let rows = inverse_2d(product, size, start.0..start.0 + out_shape.0, &plans);

    let out = rows
        .chunks_exact(size.1)
        .flat_map(|row| &row[start.1..start.1 + out_shape.1])
        .map(|z| z.re)
        .collect();
    Ok(Array2::from_shape_vec(out_shape, out).expect("output length matches its shape"))
}

struct Plans<T> {
    rows_forward: Arc<dyn Fft<T>>,
    cols_forward: Arc<dyn Fft<T>>,
    rows_inverse: Arc<dyn Fft<T>>,
    cols_inverse: Arc<dyn Fft<T>>,
}

/// The smallest length `>= n` whose only prime factors are 2, 3, 5 and 7,
/// which rustfft transforms fastest.
fn next_fast_len(n: usize) -> usize {
    (n..)
        .find(|&candidate| {
            let mut rest = candidate;
            for p in [2, 3, 5, 7] {
                while rest % p == 0 {
                    rest /= p;
                }
            }
            rest == 1
        })
        .expect("a 7-smooth number exists above every n")
}

fn energy_ratio<T: FftElement>(image: ArrayView2<T>, kernel: ArrayView2<T>) -> T {
    let energy = |a: ArrayView2<T>| a.iter().fold(T::zero(), |s, &x| s + x * x);
    let ratio = (energy(image) / energy(kernel)).sqrt();
    if ratio.is_finite() && ratio > T::zero() {
        ratio
    } else {
        T::one()
    }
}

/// `image + i * scale * kernel`, zero-padded to `size`, row-major.
fn pack<T: FftElement>(
    image: ArrayView2<T>,
    kernel: ArrayView2<T>,
    scale: T,
    size: (usize, usize),
) -> Vec<Complex<T>> {
    let mut packed = vec![Complex::new(T::zero(), T::zero()); size.0 * size.1];
    for ((r, c), &x) in image.indexed_iter() {
        packed[r * size.1 + c].re = x;
    }
    for ((r, c), &h) in kernel.indexed_iter() {
        packed[r * size.1 + c].im = h * scale;
    }
    packed
}

/// The 2-D FFT of `data` (`size`, row-major), returned transposed
/// (`size.1 x size.0`). Rows from `nonzero_rows` on are all zero and skipped.
fn forward_2d<T: FftElement>(
    mut data: Vec<Complex<T>>,
    size: (usize, usize),
    nonzero_rows: usize,
    plans: &Plans<T>,
) -> Vec<Complex<T>> {
    transform_rows(&mut data[..nonzero_rows * size.1], &plans.rows_forward);
    let mut transposed = transpose(&data, size);
    transform_rows(&mut transposed, &plans.cols_forward);
    transposed
}

/// The inverse of [`forward_2d`] for a transposed spectrum, keeping only the
/// output rows in `keep_rows` (row-major, `size.1` wide).
fn inverse_2d<T: FftElement>(
    mut transposed: Vec<Complex<T>>,
    size: (usize, usize),
    keep_rows: std::ops::Range<usize>,
    plans: &Plans<T>,
) -> Vec<Complex<T>> {
    transform_rows(&mut transposed, &plans.cols_inverse);
    let mut rows = transpose_rows(&transposed, (size.1, size.0), keep_rows);
    transform_rows(&mut rows, &plans.rows_inverse);
    rows
}

/// From the spectrum `Z = X + iH` of the packed inputs, the spectrum of their
/// convolution `X H / scale`, normalised for the unnormalised inverse FFT.
/// With `Z'(k) = conj(Z(-k))`: `X = (Z + Z') / 2`, `H = (Z - Z') / 2i`, so
/// `X H = (Z^2 - Z'^2) / 4i`.
fn multiply_packed_spectra<T: FftElement>(
    spectrum: &[Complex<T>],
    shape: (usize, usize),
    scale: T,
) -> Vec<Complex<T>> {
    let (height, width) = shape;
    let four = T::from(4).expect("4 fits every float");
    let norm = T::one() / (four * scale * T::from(height * width).expect("size fits a float"));
    let mut product = vec![Complex::new(T::zero(), T::zero()); spectrum.len()];
    product
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(r, row)| {
            let mirror_row = (height - r) % height * width;
            for (c, y) in row.iter_mut().enumerate() {
                let z = spectrum[r * width + c];
                let mirrored = spectrum[mirror_row + (width - c) % width].conj();
                let d = z * z - mirrored * mirrored;
                // Dividing by i maps a + bi to b - ai.
                *y = Complex::new(d.im * norm, -d.re * norm);
            }
        });
    product
}

fn transform_rows<T: FftElement>(data: &mut [Complex<T>], fft: &Arc<dyn Fft<T>>) {
    let len = fft.len();
    let scratch_len = fft.get_inplace_scratch_len();
    data.par_chunks_mut(len).with_min_len(8).for_each_init(
        || vec![Complex::new(T::zero(), T::zero()); scratch_len],
        |scratch, row| fft.process_with_scratch(row, scratch),
    );
}

fn transpose<T: Copy + Send + Sync>(data: &[T], shape: (usize, usize)) -> Vec<T> {
    transpose_rows(data, shape, 0..shape.1)
}

/// Rows `keep` of the transpose of `data` (`shape`, row-major).
fn transpose_rows<T: Copy + Send + Sync>(
    data: &[T],
    shape: (usize, usize),
    keep: std::ops::Range<usize>,
) -> Vec<T> {
    let (height, width) = shape;
    // Columns in tiles of TILE so each source cache line serves TILE outputs.
    const TILE: usize = 16;
    let mut out = vec![data[0]; keep.len() * height];
    out.par_chunks_mut(TILE * height)
        .enumerate()
        .for_each(|(tile, chunk)| {
            let first = keep.start + tile * TILE;
            for (r, source) in data.chunks_exact(width).enumerate() {
                for (i, out_row) in chunk.chunks_exact_mut(height).enumerate() {
                    out_row[r] = source[first + i];
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_lengths_have_only_small_prime_factors() {
        assert_eq!(next_fast_len(1), 1);
        assert_eq!(next_fast_len(11), 12);
        assert_eq!(next_fast_len(526), 525);
        assert_eq!(next_fast_len(527), 540);
    }

    #[test]
    fn partial_transpose_takes_the_requested_rows() {
        let data: Vec<u32> = (0..6).collect(); // [[0,1,2],[3,4,5]]
        assert_eq!(transpose(&data, (2, 3)), [0, 3, 1, 4, 2, 5]);
        assert_eq!(transpose_rows(&data, (2, 3), 1..3), [1, 4, 2, 5]);
    }
}
