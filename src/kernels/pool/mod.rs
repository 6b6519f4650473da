//! Max pooling over NHWC images.
//!
//! The forward pass also records, for every output value, which position
//! `ky · k_w + kx` of its window won, as one byte; the backward pass then
//! sends each gradient straight to its winner. Padding (with
//! `Padding::Same`) never wins: windows are clipped to the image, as in
//! TensorFlow.
//!
//! 2x2 windows moved by 2 (the usual pooling) have loops of their own: the
//! first maximum in row-major order wins, and the backward pass is a zero
//! fill and one store per gradient (`avx512.rs`: a pixel's channels as the
//! SIMD axis, one masked store per window position). Other windows without padding find
//! their maximum in two passes that run over whole contiguous rows: first down each column of the window (over all
//! columns of the image at once, which vectorises whatever the channel
//! count), then across the window's columns. The winner is then the first
//! maximum scanning columns left to right and each column top to bottom;
//! with padding, the first in row-major order. Either way it is a maximum,
//! which is all the gradient needs.
//!
//! 3x3 windows moved by 2 without padding (AlexNet's overlapping pooling)
//! have vector loops of their own on x86-64 (`overlapping/`), with the
//! same winners and sums as the generic loops, bit for bit.

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::load_winners;
#[cfg(target_arch = "x86_64")]
mod overlapping;

use super::{Window2d, has_avx512};

/// Largest window whose positions fit in the byte recorded per output.
pub const MAX_WINDOW: usize = 256;

/// Max of each window, per channel, for a chunk of whole images, and the
/// window position (`ky · k_w + kx`) it came from. `columns` is scratch.
pub fn max_pool_forward(
    w: &Window2d,
    input: &[f32],
    output: &mut [f32],
    winners: &mut [u8],
    columns: &mut Columns,
) {
    if is_2x2(w) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: AVX-512F is present and the window is 2x2/2 inside the image.
            return unsafe { avx512::forward_2x2(w, input, output, winners) };
        }
        max_pool_2x2(w, input, output, winners);
    } else if let Some(kernels) = overlapping_kernels(w) {
        #[cfg(target_arch = "x86_64")]
        overlapping::forward(kernels, w, input, output, winners);
        #[cfg(not(target_arch = "x86_64"))]
        match kernels {}
    } else if w.windows_inside() {
        max_pool_unpadded(w, input, output, winners, columns);
    } else {
        max_pool_clipped(w, input, output, winners);
    }
}

/// The common case, 2x2 windows moved by 2 that stay inside the image, has
/// loops of its own: one pass, three comparisons per output, no scratch
/// (and a Conv2D can pool so as it computes, see `layers::Conv2D`).
pub(crate) fn is_2x2(w: &Window2d) -> bool {
    (w.k_h, w.k_w, w.stride_h, w.stride_w) == (2, 2, 2, 2) && w.windows_inside()
}

/// The vector kernels for 3x3 windows moved by 2 inside the image
/// (AlexNet's), if `w` is such a window and the CPU runs them.
#[cfg(target_arch = "x86_64")]
fn overlapping_kernels(w: &Window2d) -> Option<overlapping::Kernels> {
    overlapping::kernels_for(w)
}

/// No vector kernels for 3x3 windows off x86-64: the generic loops run.
#[cfg(not(target_arch = "x86_64"))]
fn overlapping_kernels(_: &Window2d) -> Option<std::convert::Infallible> {
    None
}

/// The 2x2 windows of output row `oy`: its top and bottom input rows, each
/// cut to the `2 · out_w` pixels the windows cover.
fn rows_2x2<'a>(w: &Window2d, image: &'a [f32], oy: usize) -> (&'a [f32], &'a [f32]) {
    let (row, used) = (w.in_w * w.channels, 2 * w.out_w * w.channels);
    let top = &image[2 * oy * row..][..used];
    let bottom = &image[(2 * oy + 1) * row..][..used];
    (top, bottom)
}

/// 2x2 windows, stride 2: the first maximum in row-major order wins
/// (positions 0 1 / 2 3).
fn max_pool_2x2(w: &Window2d, input: &[f32], output: &mut [f32], winners: &mut [u8]) {
    let c = w.channels;
    let (out_len, out_row) = (w.out_pixels() * c, w.out_w * c);
    let images = input.chunks_exact(w.in_len()).zip(
        output
            .chunks_exact_mut(out_len)
            .zip(winners.chunks_exact_mut(out_len)),
    );
    for (img, (out, won)) in images {
        let out_rows = out
            .chunks_exact_mut(out_row)
            .zip(won.chunks_exact_mut(out_row));
        for (oy, (out, won)) in out_rows.enumerate() {
            let (top, bottom) = rows_2x2(w, img, oy);
            let pixels = top
                .chunks_exact(2 * c)
                .zip(bottom.chunks_exact(2 * c))
                .zip(out.chunks_exact_mut(c).zip(won.chunks_exact_mut(c)));
            for ((top, bottom), (out, won)) in pixels {
                with_channels!(c, pool_pixel_2x2(c, top, bottom, out, won));
            }
        }
    }
}

/// Runs `$call`, in which `$c` is the channel count, with `$c` a constant
/// for the common counts, so that the per-channel loops unroll and
/// vectorise (the arms differ only in what the compiler knows).
macro_rules! with_channels {
    ($c:ident, $call:expr) => {
        with_channels!($c, $call, 1 6 8 16 32)
    };
    ($c:ident, $call:expr, $($n:literal)*) => {
        match $c {
            $($n => {
                let $c = $n;
                $call
            })*
            _ => $call,
        }
    };
}
use with_channels;

/// One 2x2 window per channel: `top` and `bottom` hold its two pixels of each row.
#[inline(always)]
fn pool_pixel_2x2(c: usize, top: &[f32], bottom: &[f32], out: &mut [f32], won: &mut [u8]) {
    let (t0, t1) = (&top[..c], &top[c..2 * c]);
    let (b0, b1) = (&bottom[..c], &bottom[c..2 * c]);
    let (out, won) = (&mut out[..c], &mut won[..c]);
    for ch in 0..c {
        let (t, pt) = if t1[ch] > t0[ch] {
            (t1[ch], 1)
        } else {
            (t0[ch], 0)
        };
        let (b, pb) = if b1[ch] > b0[ch] {
            (b1[ch], 3)
        } else {
            (b0[ch], 2)
        };
        (out[ch], won[ch]) = if b > t { (b, pb) } else { (t, pt) };
    }
}

/// The backward pass of [`max_pool_2x2`]: zeros, then each gradient
/// stored at its winner (a scatter: one store per output, whatever the
/// channel count, which a per-position select cannot vectorise when the
/// channels do not fill a vector).
fn max_pool_2x2_backward(
    w: &Window2d,
    winners: &[u8],
    grad_output: &[f32],
    relu_output: Option<&[f32]>,
    grad_input: &mut [f32],
) {
    let c = w.channels;
    let (out_len, out_row, row) = (w.out_pixels() * c, w.out_w * c, w.in_w * c);
    // Window position (0 1 / 2 3) -> offset from the window's top-left value.
    let offsets = [0, c, row, row + c];
    for (i, grad_in) in grad_input.chunks_exact_mut(w.in_len()).enumerate() {
        grad_in.fill(0.0);
        for oy in 0..w.out_h {
            let rows = &mut grad_in[2 * oy * row..(2 * oy + 2) * row];
            for ox in 0..w.out_w {
                let (corner, at) = (2 * ox * c, i * out_len + oy * out_row + ox * c);
                for ch in 0..c {
                    let g = through_relu(grad_output, relu_output, at + ch);
                    rows[corner + ch + offsets[winners[at + ch] as usize & 3]] = g;
                }
            }
        }
    }
}

/// `grad[at]`, or 0 where `relu_output` (if given) is not positive.
#[inline(always)]
fn through_relu(grad: &[f32], relu_output: Option<&[f32]>, at: usize) -> f32 {
    match relu_output {
        // `> 0` is false for NaN too, as in relu's own derivative.
        Some(y) if y[at] > 0.0 => grad[at],
        Some(_) => 0.0,
        None => grad[at],
    }
}

/// The largest value down each column of a window row, and the window row
/// it is in.
#[derive(Default)]
pub struct Columns {
    max: Vec<f32>,
    row: Vec<u8>,
}

/// Windows that never leave the image: column maxima first, then across.
fn max_pool_unpadded(
    w: &Window2d,
    input: &[f32],
    output: &mut [f32],
    winners: &mut [u8],
    columns: &mut Columns,
) {
    let c = w.channels;
    let (row, out_len, out_row_len) = (w.in_w * c, w.out_pixels() * c, w.out_w * c);
    columns.max.resize(row, 0.0);
    columns.row.resize(row, 0);
    let images = input.chunks_exact(w.in_len()).zip(
        output
            .chunks_exact_mut(out_len)
            .zip(winners.chunks_exact_mut(out_len)),
    );
    for (img, (out, won)) in images {
        for oy in 0..w.out_h {
            let top = oy * w.stride_h;
            // Down the columns, over the whole image row at once.
            columns
                .max
                .copy_from_slice(&img[top * row..(top + 1) * row]);
            columns.row.fill(0);
            for ky in 1..w.k_h {
                let below = &img[(top + ky) * row..(top + ky + 1) * row];
                let lanes = columns
                    .max
                    .iter_mut()
                    .zip(columns.row.iter_mut())
                    .zip(below);
                for ((max, at), &v) in lanes {
                    let better = v > *max;
                    *max = if better { v } else { *max };
                    *at = if better { ky as u8 } else { *at };
                }
            }
            // Across the window's columns (branch-free selects).
            let out_row = &mut out[oy * out_row_len..(oy + 1) * out_row_len];
            let won_row = &mut won[oy * out_row_len..(oy + 1) * out_row_len];
            for ox in 0..w.out_w {
                let left = ox * w.stride_w * c;
                let (best, won) = (
                    &mut out_row[ox * c..(ox + 1) * c],
                    &mut won_row[ox * c..(ox + 1) * c],
                );
                best.copy_from_slice(&columns.max[left..left + c]);
                for (p, &ky) in won.iter_mut().zip(&columns.row[left..left + c]) {
                    *p = ky * w.k_w as u8;
                }
                for kx in 1..w.k_w {
                    let at = left + kx * c;
                    let lanes = best.iter_mut().zip(won.iter_mut());
                    for ((b, p), (&v, &ky)) in
                        lanes.zip(columns.max[at..at + c].iter().zip(&columns.row[at..at + c]))
                    {
                        let better = v > *b;
                        *b = if better { v } else { *b };
                        *p = if better {
                            ky * w.k_w as u8 + kx as u8
                        } else {
                            *p
                        };
                    }
                }
            }
        }
    }
}

/// Windows clipped by the padding, position by position.
fn max_pool_clipped(w: &Window2d, input: &[f32], output: &mut [f32], winners: &mut [u8]) {
    let c = w.channels;
    let out_len = w.out_pixels() * c;
    let images = input.chunks_exact(w.in_len()).zip(
        output
            .chunks_exact_mut(out_len)
            .zip(winners.chunks_exact_mut(out_len)),
    );
    for (img, (out, won)) in images {
        for oy in 0..w.out_h {
            let (rows, y0) = (
                w.rows_of(oy),
                (oy * w.stride_h) as isize - w.pad_top as isize,
            );
            for ox in 0..w.out_w {
                let (cols, x0) = (
                    w.cols_of(ox),
                    (ox * w.stride_w) as isize - w.pad_left as isize,
                );
                let at = (oy * w.out_w + ox) * c;
                let (best, won) = (&mut out[at..at + c], &mut won[at..at + c]);
                let position = |iy: usize, ix: usize| {
                    ((iy as isize - y0) as usize * w.k_w + (ix as isize - x0) as usize) as u8
                };
                // Start from the first pixel inside the image (not from -inf,
                // which would leave a window of NaN or -inf won by the padding).
                let (top, left) = (rows.start, cols.start);
                best.copy_from_slice(&img[(top * w.in_w + left) * c..][..c]);
                won.fill(position(top, left));
                for iy in rows.clone() {
                    for ix in cols.clone() {
                        let position = position(iy, ix);
                        let pixel = &img[(iy * w.in_w + ix) * c..][..c];
                        // Branch-free: a select per channel, no jumps to mispredict.
                        for ((b, p), &v) in best.iter_mut().zip(won.iter_mut()).zip(pixel) {
                            let better = v > *b;
                            *b = if better { v } else { *b };
                            *p = if better { position } else { *p };
                        }
                    }
                }
            }
        }
    }
}

/// Writes the input gradient: each output gradient goes to the input that
/// won its window, every other input gets zero.
///
/// `relu_output`, when the input came out of a relu, is the pooled output:
/// the gradient of a window whose maximum is not positive is dropped, which
/// is relu's derivative at its winner (the only input that gets a
/// gradient), so the layer before need not apply it.
pub fn max_pool_backward(
    w: &Window2d,
    winners: &[u8],
    grad_output: &[f32],
    relu_output: Option<&[f32]>,
    grad_input: &mut [f32],
) {
    if is_2x2(w) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: AVX-512F is present and the window is 2x2/2 inside the image.
            return unsafe {
                avx512::backward_2x2(w, winners, grad_output, relu_output, grad_input)
            };
        }
        return max_pool_2x2_backward(w, winners, grad_output, relu_output, grad_input);
    }
    if let Some(kernels) = overlapping_kernels(w) {
        #[cfg(target_arch = "x86_64")]
        overlapping::backward(kernels, w, winners, grad_output, relu_output, grad_input);
        #[cfg(not(target_arch = "x86_64"))]
        match kernels {}
    } else {
        max_pool_generic_backward(w, winners, grad_output, relu_output, grad_input);
    }
}

/// [`max_pool_backward`] for any window: through a table of window
/// positions, and a zero fill first unless the windows tile the image.
fn max_pool_generic_backward(
    w: &Window2d,
    winners: &[u8],
    grad_output: &[f32],
    relu_output: Option<&[f32]>,
    grad_input: &mut [f32],
) {
    let c = w.channels;
    let out_len = w.out_pixels() * c;
    // Window position -> (row, column) in the window, without a division per value.
    let offsets: Vec<(usize, usize)> = (0..w.k_h * w.k_w).map(|p| (p / w.k_w, p % w.k_w)).collect();
    let tiled = w.pad_top == 0
        && w.pad_left == 0
        && (w.k_h, w.k_w) == (w.stride_h, w.stride_w)
        && (w.out_h * w.k_h, w.out_w * w.k_w) == (w.in_h, w.in_w);
    for (i, grad_in) in grad_input.chunks_exact_mut(w.in_len()).enumerate() {
        if !tiled {
            grad_in.fill(0.0);
        }
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let at = i * out_len + (oy * w.out_w + ox) * c;
                let won = &winners[at..at + c];
                let (y0, x0) = (oy * w.stride_h, ox * w.stride_w);
                if tiled {
                    // Windows tile the image: every input is written once, no zeroing pass.
                    for (p, &(ky, kx)) in offsets.iter().enumerate() {
                        let i = ((y0 + ky) * w.in_w + x0 + kx) * c;
                        for (ch, (dx, &won)) in grad_in[i..i + c].iter_mut().zip(won).enumerate() {
                            *dx = if won as usize == p {
                                through_relu(grad_output, relu_output, at + ch)
                            } else {
                                0.0
                            };
                        }
                    }
                } else {
                    let (y0, x0) = (
                        y0 as isize - w.pad_top as isize,
                        x0 as isize - w.pad_left as isize,
                    );
                    for (ch, &won) in won.iter().enumerate() {
                        let (ky, kx) = offsets[won as usize];
                        let (iy, ix) = ((y0 + ky as isize) as usize, (x0 + kx as isize) as usize);
                        grad_in[(iy * w.in_w + ix) * c + ch] +=
                            through_relu(grad_output, relu_output, at + ch);
                    }
                }
            }
        }
    }
}
