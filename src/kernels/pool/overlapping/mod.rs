//! Max pooling over 3x3 windows moved by 2, inside the image (AlexNet's
//! "overlapping pooling"): each window shares its edge column with the
//! next one and its edge row with the one below.
//!
//! The generic loop (`max_pool_unpadded`) pays for its generality there:
//! a pass over scratch per window row, a byte per value written and read
//! back. These kernels keep a window in registers instead, a pixel's
//! channels as the SIMD axis (16 lanes with AVX-512, 8 with AVX2, the last
//! group masked): the maximum down each of the three columns, then across
//! them. That is the generic loop's order, so ties go the same way: the
//! first maximum scanning columns left to right, each top to bottom, with
//! comparisons that are false for NaN (a NaN only wins in the window's
//! first position, and -0.0 and 0.0 tie). Outputs and winners are the
//! same, bit for bit.
//!
//! The backward pass sums, into each input, the gradients of the windows
//! it won (where windows overlap, an input can win up to four) in the
//! generic loop's order, output after output, so the sums are the same
//! too. It runs along each row of windows carrying the previous window's
//! gradient, so the input column two windows share gets both at once
//! (a masked store read back by the next window would stall), and it
//! zeros the three input rows of a row of windows just before adding to
//! them rather than the whole gradient first, so that they stay in L1.

mod avx2;
mod avx512;

use super::super::Window2d;

/// The vector kernels for 3x3 windows moved by 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernels {
    /// 16 channels at a time (AVX-512F).
    Avx512,
    /// 8 channels at a time (AVX2).
    Avx2,
}

impl Kernels {
    /// Whether this CPU runs these kernels (whatever `allow_avx512` says:
    /// that only steers [`kernels_for`]).
    fn runs_here(self) -> bool {
        match self {
            Kernels::Avx512 => is_x86_feature_detected!("avx512f"),
            Kernels::Avx2 => is_x86_feature_detected!("avx2"),
        }
    }
}

/// Whether `w` is a 3x3 window moved by 2 that stays inside the image.
pub(super) fn is_3x3_stride_2(w: &Window2d) -> bool {
    (w.k_h, w.k_w, w.stride_h, w.stride_w) == (3, 3, 2, 2) && !w.is_dilated() && w.windows_inside()
}

/// The kernels that pool windows `w` on this CPU: none unless they are
/// 3x3 moved by 2 inside the image and the CPU has AVX2.
pub(super) fn kernels_for(w: &Window2d) -> Option<Kernels> {
    if !is_3x3_stride_2(w) {
        None
    } else if super::has_avx512() {
        Some(Kernels::Avx512)
    } else if super::super::has_avx2_fma() {
        Some(Kernels::Avx2)
    } else {
        None
    }
}

/// `max_pool_forward` for 3x3 windows moved by 2 inside the image, on
/// whole images: the max of each window per channel, and its position
/// `3 · ky + kx`.
///
/// Panics if `w` is not such a window, if `output` or `winners` are
/// shorter than the outputs of the images in `input`, or if the CPU lacks
/// `kernels`.
pub(super) fn forward(
    kernels: Kernels,
    w: &Window2d,
    input: &[f32],
    output: &mut [f32],
    winners: &mut [u8],
) {
    assert!(is_3x3_stride_2(w) && kernels.runs_here());
    let images = input.len() / w.in_len();
    let out_len = w.out_pixels() * w.channels;
    assert!(output.len() >= images * out_len && winners.len() >= images * out_len);
    match kernels {
        // SAFETY: the CPU has AVX-512F, the windows stay inside the image
        // and the outputs have room for every image: all asserted above.
        Kernels::Avx512 => unsafe { avx512::forward(w, images, input, output, winners) },
        // SAFETY: as above, with AVX2.
        Kernels::Avx2 => unsafe { avx2::forward(w, images, input, output, winners) },
    }
}

/// `max_pool_backward` for 3x3 windows moved by 2 inside the image: each
/// input gets the sum of the output gradients of the windows it won (in
/// the order of the outputs; zero if none), leaving out windows whose
/// `relu_output` is not positive, if given.
///
/// Panics if `w` is not such a window, if `winners`, `grad_output` or
/// `relu_output` are shorter than the outputs of the images in
/// `grad_input`, or if the CPU lacks `kernels`.
pub(super) fn backward(
    kernels: Kernels,
    w: &Window2d,
    winners: &[u8],
    grad_output: &[f32],
    relu_output: Option<&[f32]>,
    grad_input: &mut [f32],
) {
    assert!(is_3x3_stride_2(w) && kernels.runs_here());
    let (row, out_row) = (w.in_w * w.channels, w.out_w * w.channels);
    let out_len = w.out_h * out_row;
    for (i, image) in grad_input.chunks_exact_mut(w.in_len()).enumerate() {
        // Each row is zeroed just before the windows add to it: the zeros
        // claim its cache lines without reading them from memory (which
        // storing into them would), and the sums then stay in L1.
        image[..row].fill(0.0);
        for oy in 0..w.out_h {
            let rows = &mut image[2 * oy * row..(2 * oy + 3) * row];
            rows[row..].fill(0.0);
            let at = i * out_len + oy * out_row..i * out_len + (oy + 1) * out_row;
            let outputs = OutputRow {
                grad: &grad_output[at.clone()],
                winners: &winners[at.clone()],
                relu_output: relu_output.map(|y| &y[at]),
            };
            match kernels {
                // SAFETY: the CPU has AVX-512F (asserted above).
                Kernels::Avx512 => unsafe { avx512::add_window_row(w, &outputs, rows) },
                // SAFETY: the CPU has AVX2 (asserted above).
                Kernels::Avx2 => unsafe { avx2::add_window_row(w, &outputs, rows) },
            }
        }
        // With an even height, the last row, which no window covers.
        image[(2 * w.out_h + 1) * row..].fill(0.0);
    }
}

/// The outputs of one row of windows, for the backward pass.
struct OutputRow<'a> {
    /// Their gradients.
    grad: &'a [f32],
    /// Which position won each window.
    winners: &'a [u8],
    /// The pooled values, if the gradient goes through relu's derivative.
    relu_output: Option<&'a [f32]>,
}

impl OutputRow<'_> {
    /// Panics unless the row holds `len` values of each.
    fn assert_len(&self, len: usize) {
        assert!(self.grad.len() == len && self.winners.len() == len);
        assert!(self.relu_output.is_none_or(|y| y.len() == len));
    }
}

#[cfg(test)]
mod tests;
