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
    let mut rows = pack(image, kernel, scale, size);
    transform_rows(&mut rows[..a.0.max(b.0) * size.1], &plans.rows_forward);
    let mut columns = transpose_rows(&rows, size, 0..size.1);
    transform_rows(&mut columns, &plans.cols_forward);
    multiply_packed_spectra(&mut columns, (size.1, size.0), scale);
    transform_rows(&mut columns, &plans.cols_inverse);
    let keep = start.0..start.0 + out_shape.0;
    transpose_rows_into(&columns, (size.1, size.0), keep, &mut rows);
    let rows = &mut rows[..out_shape.0 * size.1];
    transform_rows(rows, &plans.rows_inverse);

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

/// The smallest length `>= n` that rustfft transforms fast: only prime
/// factors 2, 3 and 5, and even above 16 (its AVX code measured about twice as
/// fast on 540 = 2^2 3^3 5 as on the odd 525 = 3 5^2 7).
fn next_fast_len(n: usize) -> usize {
    (n..)
        .find(|&candidate| {
            let mut rest = candidate;
            for p in [2, 3, 5] {
                while rest % p == 0 {
                    rest /= p;
                }
            }
            rest == 1 && (candidate <= 16 || candidate % 2 == 0)
        })
        .expect("a 5-smooth even number exists above every n")
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
    let mut packed_rows = packed.chunks_exact_mut(size.1);
    for (image_row, packed_row) in image.outer_iter().zip(&mut packed_rows) {
        for (z, &x) in packed_row.iter_mut().zip(&image_row) {
            z.re = x;
        }
    }
    for (kernel_row, packed_row) in kernel.outer_iter().zip(packed.chunks_exact_mut(size.1)) {
        for (z, &h) in packed_row.iter_mut().zip(&kernel_row) {
            z.im = h * scale;
        }
    }
    packed
}

/// From the spectrum `Z = X + iH` of the packed inputs, the spectrum of their
/// convolution `X H / scale`, normalised for the unnormalised inverse FFT.
/// With `Z'(k) = conj(Z(-k))`: `X = (Z + Z') / 2`, `H = (Z - Z') / 2i`, so
/// `X H = (Z^2 - Z'^2) / 4i`.
fn multiply_packed_spectra<T: FftElement>(
    spectrum: &mut [Complex<T>],
    shape: (usize, usize),
    scale: T,
) {
    let (height, width) = shape;
    let four = T::from(4).expect("4 fits every float");
    let norm = T::one() / (four * scale * T::from(height * width).expect("size fits a float"));
    // Frequency k pairs with -k: row r with row (height - r) % height. Rows 0
    // and height/2 (for even heights) pair with themselves.
    let (first, rest) = spectrum.split_at_mut(width);
    multiply_row_pair(first, None, norm);
    let top_rows = (height - 1) / 2;
    let (top, bottom) = rest.split_at_mut(top_rows * width);
    let (middle, bottom) = bottom.split_at_mut((height - 1 - 2 * top_rows) * width);
    if !middle.is_empty() {
        multiply_row_pair(middle, None, norm);
    }
    top.par_chunks_mut(width)
        .zip(bottom.par_chunks_mut(width).rev())
        .for_each(|(row, mirror)| multiply_row_pair(row, Some(mirror), norm));
}

/// [`multiply_packed_spectra`] for `row` and the row of its negated
/// frequencies, `mirror`, or for a row that is its own mirror (`None`).
fn multiply_row_pair<T: FftElement>(
    row: &mut [Complex<T>],
    mirror: Option<&mut [Complex<T>]>,
    norm: T,
) {
    let width = row.len();
    // X H = (Z^2 - conj(Z(-k))^2) / 4i, and dividing by i maps a + bi to b - ai.
    let product = |z: Complex<T>, z_mirror: Complex<T>| {
        let d = z * z - z_mirror.conj() * z_mirror.conj();
        Complex::new(d.im * norm, -d.re * norm)
    };
    match mirror {
        Some(mirror) => {
            for (c, z) in row.iter_mut().enumerate() {
                let m = (width - c) % width;
                let z_mirror = mirror[m];
                mirror[m] = product(z_mirror, *z);
                *z = product(*z, z_mirror);
            }
        }
        None => {
            for c in 0..=width / 2 {
                let m = (width - c) % width;
                let (z, z_mirror) = (row[c], row[m]);
                row[c] = product(z, z_mirror);
                row[m] = product(z_mirror, z);
            }
        }
    }
}

fn transform_rows<T: FftElement>(data: &mut [Complex<T>], fft: &Arc<dyn Fft<T>>) {
    let len = fft.len();
    let scratch_len = fft.get_inplace_scratch_len();
    data.par_chunks_mut(len).with_min_len(8).for_each_init(
        || vec![Complex::new(T::zero(), T::zero()); scratch_len],
        |scratch, row| fft.process_with_scratch(row, scratch),
    );
}

/// Rows `keep` of the transpose of `data` (`shape`, row-major).
fn transpose_rows<T: Copy + Send + Sync>(
    data: &[T],
    shape: (usize, usize),
    keep: std::ops::Range<usize>,
) -> Vec<T> {
    let mut out = vec![data[0]; keep.len() * shape.0];
    transpose_rows_into(data, shape, keep, &mut out);
    out
}

/// [`transpose_rows`] into the start of `out`, which must be long enough.
fn transpose_rows_into<T: Copy + Send + Sync>(
    data: &[T],
    shape: (usize, usize),
    keep: std::ops::Range<usize>,
    out: &mut [T],
) {
    let (height, width) = shape;
    // Columns in tiles of TILE so each source cache line serves TILE outputs.
    const TILE: usize = 16;
    out[..keep.len() * height]
        .par_chunks_mut(TILE * height)
        .enumerate()
        .for_each(|(tile, chunk)| {
            let first = keep.start + tile * TILE;
            for (r, source) in data.chunks_exact(width).enumerate() {
                for (i, out_row) in chunk.chunks_exact_mut(height).enumerate() {
                    out_row[r] = source[first + i];
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_lengths_have_only_small_prime_factors() {
        assert_eq!(next_fast_len(1), 1);
        assert_eq!(next_fast_len(7), 8);
        assert_eq!(next_fast_len(15), 15);
        assert_eq!(next_fast_len(17), 18);
        assert_eq!(next_fast_len(514), 540);
        assert_eq!(next_fast_len(541), 576);
    }

    #[test]
    fn partial_transpose_takes_the_requested_rows() {
        let data: Vec<u32> = (0..6).collect(); // [[0,1,2],[3,4,5]]
        assert_eq!(transpose_rows(&data, (2, 3), 0..3), [0, 3, 1, 4, 2, 5]);
        assert_eq!(transpose_rows(&data, (2, 3), 1..3), [1, 4, 2, 5]);
    }
}
