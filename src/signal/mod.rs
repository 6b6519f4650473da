//! Two-dimensional convolution and correlation with the semantics of
//! `scipy.signal.convolve2d`, `scipy.signal.correlate2d` and
//! `scipy.signal.fftconvolve`.
//!
//! # Convolution rotates the kernel; correlation does not
//!
//! Take a 5x5 picture of a dark square on a bright background and the kernel
//! `k` below, which has negative weights at the top left and positive ones at
//! the bottom right:
//!
//! ```text
//! image                      kernel k
//! 10 10 10 10 10             -1 -1  0
//! 10  5  5  5 10             -1  0  1
//! 10  5  5  5 10              0  1  1
//! 10  5  5  5 10
//! 10 10 10 10 10
//! ```
//!
//! **Correlation** slides `k` over the image as it is: each output pixel is the
//! sum of `k[j][l] * image[m + j][n + l]`. **Convolution** first rotates the
//! kernel by 180 degrees (flips it up-down and left-right) and then slides it:
//! `out[m][n] = sum k[j][l] * image[m - j][n - l]`. The rotation is what makes
//! convolution commutative and associative (`a * b == b * a`, and blurring
//! twice is one blur with the convolved kernel), and it is what the
//! convolution theorem (`fft(a * b) == fft(a) fft(b)`) is about.
//!
//! In `valid` mode (only positions where the kernel fits inside the image),
//! convolution gives:
//!
//! ```
//! use convnet::signal::{convolve2d, correlate2d, Boundary, Mode};
//! use ndarray::array;
//!
//! let image = array![
//!     [10, 10, 10, 10, 10],
//!     [10, 5, 5, 5, 10],
//!     [10, 5, 5, 5, 10],
//!     [10, 5, 5, 5, 10],
//!     [10, 10, 10, 10, 10],
//! ];
//! let kernel = array![[-1, -1, 0], [-1, 0, 1], [0, 1, 1]];
//!
//! let convolved = convolve2d(image.view(), kernel.view(), Mode::Valid, Boundary::Fill(0))?;
//! assert_eq!(convolved, array![[15, 10, 0], [10, 0, -10], [0, -10, -15]]);
//!
//! // Correlation with the same kernel is convolution with the rotated kernel:
//! // here every sign flips.
//! let correlated = correlate2d(image.view(), kernel.view(), Mode::Valid, Boundary::Fill(0))?;
//! assert_eq!(correlated, -&convolved);
//! # Ok::<(), convnet::Error>(())
//! ```
//!
//! The top-left output, 15, is the window `[[10,10,10],[10,5,5],[10,5,5]]`
//! weighted by the *rotated* kernel `[[1,1,0],[1,0,-1],[0,-1,-1]]`: the bright
//! pixels at the top left meet the `+1` weights and the dark ones the `-1`
//! weights, so `10+10+10 - 5-5-5 = 15`. The kernel responds to edges that run
//! from the top left (bright) to the bottom right (dark); the response is
//! strongest at the corners of the dark square, zero in its flat middle, and
//! changes sign on the opposite corner. Correlation, which does not rotate,
//! gives the same numbers with the opposite sign.
//!
//! The "convolution" layers of a CNN actually compute **correlation**: they
//! never rotate their weights. Since the weights are learnt, the difference
//! does not matter to the network (it would simply learn the rotated kernel),
//! but it matters whenever a hand-made kernel such as a Sobel filter is
//! compared between a textbook (convolution) and a framework (correlation).
//!
//! # Modes and boundaries
//!
//! [`Mode`] chooses the output size (`Full`, `Same`, `Valid`) and [`Boundary`]
//! how the image is extended beyond its edges (`Fill`, `Wrap`, `Symm`), both
//! exactly as scipy defines them, including the centring of `Same` output for
//! even-sized kernels and the swapping of the inputs in `Valid` mode.
//!
//! # Integer arithmetic
//!
//! Integer inputs give exact integer results. Overflow wraps around (two's
//! complement), which is what scipy's C loops do in practice on the same
//! integer type; it never panics.

mod direct;
mod fft;

use ndarray::{Array2, ArrayView2};
use num_traits::Zero;

use crate::{Error, Result};

pub use fft::{FftElement, fftconvolve};

/// Which part of the full convolution to return, as in scipy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every position where the kernel and the image overlap at all:
    /// `(M + K - 1) x (N + L - 1)` for an `M x N` image and a `K x L` kernel.
    Full,
    /// The size of the first input, centred on the full result the way scipy
    /// centres it (for an even kernel size the extra row or column of the full
    /// result is dropped at the end for convolution and at the start for
    /// correlation).
    Same,
    /// Only the positions where one input lies completely inside the other:
    /// `(M - K + 1) x (N - L + 1)`. One input must be at least as large as the
    /// other in every dimension; if the second is the larger one the inputs are
    /// swapped, as scipy does.
    Valid,
}

/// How the first input is extended beyond its edges, as in scipy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Boundary<T> {
    /// Pad with a constant (scipy's `boundary='fill', fillvalue=...`).
    Fill(T),
    /// Periodic extension: the image repeats (scipy's `'wrap'`).
    Wrap,
    /// Mirror extension that repeats the edge pixel, `c b a | a b c | c b a`
    /// (scipy's `'symm'`).
    Symm,
}

/// A number type the direct convolution works on: `i32`, `i64`, `f32`, `f64`.
///
/// Its one operation is the multiply-accumulate of the inner loop. For
/// integers it wraps around on overflow; for floats it is a separate multiply
/// and add (no fused multiply-add), so results are rounded the way scipy's
/// loop rounds them.
pub trait Element: Copy + Zero + Send + Sync + std::fmt::Debug + 'static {
    /// `acc + weight * value`.
    fn mul_acc(acc: Self, weight: Self, value: Self) -> Self;
}

macro_rules! impl_element_wrapping {
    ($($t:ty),*) => {$(
        impl Element for $t {
            #[inline(always)]
            fn mul_acc(acc: Self, weight: Self, value: Self) -> Self {
                acc.wrapping_add(weight.wrapping_mul(value))
            }
        }
    )*};
}

macro_rules! impl_element_float {
    ($($t:ty),*) => {$(
        impl Element for $t {
            #[inline(always)]
            fn mul_acc(acc: Self, weight: Self, value: Self) -> Self {
                acc + weight * value
            }
        }
    )*};
}

impl_element_wrapping!(i32, i64);
impl_element_float!(f32, f64);

/// Convolves `in1` with `in2`, like `scipy.signal.convolve2d(in1, in2, mode,
/// boundary, fillvalue)`.
///
/// Errors: an empty input ([`Error::Shape`]), or `Mode::Valid` where neither
/// input is at least as large as the other in every dimension.
///
/// ```
/// use convnet::signal::{convolve2d, Boundary, Mode};
/// use ndarray::array;
///
/// let image = array![[1.0, 2.0], [3.0, 4.0]];
/// let kernel = array![[0.0, 1.0]];
/// let full = convolve2d(image.view(), kernel.view(), Mode::Full, Boundary::Fill(0.0))?;
/// assert_eq!(full, array![[0.0, 1.0, 2.0], [0.0, 3.0, 4.0]]);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn convolve2d<T: Element>(
    in1: ArrayView2<T>,
    in2: ArrayView2<T>,
    mode: Mode,
    boundary: Boundary<T>,
) -> Result<Array2<T>> {
    let (image, kernel, _) = order_inputs(in1, in2, mode)?;
    Ok(direct::run(
        image,
        kernel,
        mode,
        boundary,
        direct::Flip::Rotate,
    ))
}

/// Cross-correlates `in1` with `in2`, like `scipy.signal.correlate2d(in1, in2,
/// mode, boundary, fillvalue)`.
///
/// When `Mode::Valid` swaps the inputs (the second is the larger), the result
/// is rotated by 180 degrees, as scipy returns it. Errors as [`convolve2d`].
///
/// ```
/// use convnet::signal::{correlate2d, Boundary, Mode};
/// use ndarray::array;
///
/// let image = array![[1, 2, 3], [4, 5, 6]];
/// let kernel = array![[1, 1]];
/// let sums = correlate2d(image.view(), kernel.view(), Mode::Valid, Boundary::Fill(0))?;
/// assert_eq!(sums, array![[3, 5], [9, 11]]);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn correlate2d<T: Element>(
    in1: ArrayView2<T>,
    in2: ArrayView2<T>,
    mode: Mode,
    boundary: Boundary<T>,
) -> Result<Array2<T>> {
    let (image, kernel, swapped) = order_inputs(in1, in2, mode)?;
    let out = direct::run(image, kernel, mode, boundary, direct::Flip::Keep);
    Ok(if swapped { rotate_180(out) } else { out })
}

/// Checks the shapes and, in `Valid` mode, puts the larger input first as
/// scipy's `_inputs_swap_needed` does. Returns `(image, kernel, swapped)`.
fn order_inputs<'a, T>(
    in1: ArrayView2<'a, T>,
    in2: ArrayView2<'a, T>,
    mode: Mode,
) -> Result<(ArrayView2<'a, T>, ArrayView2<'a, T>, bool)> {
    if in1.is_empty() || in2.is_empty() {
        return Err(Error::Shape(format!(
            "cannot convolve an empty array (shapes {:?} and {:?}); both inputs need at least one element",
            in1.dim(),
            in2.dim()
        )));
    }
    if mode != Mode::Valid {
        return Ok((in1, in2, false));
    }
    let (a, b) = (in1.dim(), in2.dim());
    let first_fits_second = a.0 >= b.0 && a.1 >= b.1;
    let second_fits_first = b.0 >= a.0 && b.1 >= a.1;
    match (first_fits_second, second_fits_first) {
        (true, _) => Ok((in1, in2, false)),
        (false, true) => Ok((in2, in1, true)),
        (false, false) => Err(Error::Shape(format!(
            "'valid' mode needs one input at least as large as the other in every dimension, \
             but the shapes are {a:?} and {b:?}; use 'same' or 'full' mode, or a smaller kernel"
        ))),
    }
}

fn rotate_180<T>(mut array: Array2<T>) -> Array2<T> {
    array.invert_axis(ndarray::Axis(0));
    array.invert_axis(ndarray::Axis(1));
    array
}

/// The shape of the output for an `image` of shape `image` and a `kernel`,
/// inputs already ordered so that in `Valid` mode the image is the larger.
fn output_shape(image: (usize, usize), kernel: (usize, usize), mode: Mode) -> (usize, usize) {
    match mode {
        Mode::Full => (image.0 + kernel.0 - 1, image.1 + kernel.1 - 1),
        Mode::Same => image,
        Mode::Valid => (image.0 - kernel.0 + 1, image.1 - kernel.1 + 1),
    }
}

/// The most numbers [`parse_kernel`] accepts (a 1000x1000 kernel).
pub const MAX_KERNEL_VALUES: usize = 1_000_000;

/// Parses a kernel written as rows separated by `;`, numbers separated by
/// spaces and/or commas, e.g. `"-1 -1 0; -1 0 1; 0 1 1"`. Every row needs
/// the same count of finite numbers; at most [`MAX_KERNEL_VALUES`] in all.
///
/// ```
/// let k = convnet::signal::parse_kernel("1, 2; 3 4")?;
/// assert_eq!(k, ndarray::array![[1.0, 2.0], [3.0, 4.0]]);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn parse_kernel(text: &str) -> Result<Array2<f64>> {
    if text.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "the kernel is empty; give rows of numbers separated by ';'".into(),
        ));
    }
    let mut count = 0;
    let rows = text
        .split(';')
        .enumerate()
        .map(|(i, row)| {
            let row = parse_kernel_row(i + 1, row)?;
            count += row.len();
            if count > MAX_KERNEL_VALUES {
                return Err(Error::InvalidArgument(format!(
                    "the kernel has more than {MAX_KERNEL_VALUES} numbers; use a smaller one"
                )));
            }
            Ok(row)
        })
        .collect::<Result<Vec<_>>>()?;
    let width = rows[0].len();
    if let Some((i, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != width) {
        return Err(Error::InvalidArgument(format!(
            "kernel row {} has {} numbers but row 1 has {width}; every row needs the same count",
            i + 1,
            row.len()
        )));
    }
    Array2::from_shape_vec((rows.len(), width), rows.concat())
        .map_err(|e| Error::Shape(e.to_string()))
}

fn parse_kernel_row(number: usize, row: &str) -> Result<Vec<f64>> {
    let values = row
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|token| !token.is_empty())
        .map(|token| match token.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(value),
            _ => Err(Error::InvalidArgument(format!(
                "'{token}' in kernel row {number} is not a finite number"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    if values.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "kernel row {number} is empty; remove the extra ';'"
        )));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    #[test]
    fn strided_and_transposed_views_give_the_same_result_as_owned_arrays() {
        let base = Array2::from_shape_fn((7, 9), |(r, c)| (r * 9 + c) as i64 % 11 - 5);
        let kernel = array![[1, -2, 3], [0, 4, -1]];
        let strided = base.slice(ndarray::s![..;2, 1..]);
        let transposed = base.t();
        for view in [strided, transposed] {
            for boundary in [Boundary::Fill(3), Boundary::Wrap, Boundary::Symm] {
                let owned = view.to_owned();
                let expected =
                    convolve2d(owned.view(), kernel.view(), Mode::Same, boundary).unwrap();
                let got = convolve2d(view, kernel.view(), Mode::Same, boundary).unwrap();
                assert_eq!(got, expected);
            }
        }
    }

    #[test]
    fn empty_inputs_and_incompatible_valid_shapes_are_errors() {
        let empty = Array2::<f64>::zeros((0, 3));
        let one = Array2::<f64>::ones((2, 2));
        assert!(matches!(
            convolve2d(empty.view(), one.view(), Mode::Full, Boundary::Fill(0.0)),
            Err(Error::Shape(_))
        ));
        assert!(fftconvolve(one.view(), empty.view(), Mode::Same).is_err());
        let wide = Array2::<f64>::ones((2, 5));
        let tall = Array2::<f64>::ones((3, 3));
        let err = correlate2d(wide.view(), tall.view(), Mode::Valid, Boundary::Symm).unwrap_err();
        assert!(err.to_string().contains("'valid' mode"), "{err}");
    }
}
