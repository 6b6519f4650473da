//! Max pooling over NHWC images.
//!
//! The forward pass keeps only the maxima; the backward pass finds each
//! window's winner again by comparing the input with the output, which is
//! cheaper than remembering indices and leaves the forward loop a plain,
//! vectorisable maximum over channels. Padding (with `Padding::Same`) never
//! wins: windows are clipped to the image, as in TensorFlow.

use super::Window2d;

/// Max of each window, per channel, for a chunk of whole images.
pub fn max_pool_forward(w: &Window2d, input: &[f32], output: &mut [f32]) {
    let c = w.channels;
    let images = input
        .chunks_exact(w.in_len())
        .zip(output.chunks_exact_mut(w.out_pixels() * c));
    for (img, out) in images {
        for oy in 0..w.out_h {
            let rows = w.rows_of(oy);
            for ox in 0..w.out_w {
                let cols = w.cols_of(ox);
                let best = &mut out[(oy * w.out_w + ox) * c..][..c];
                best.fill(f32::NEG_INFINITY);
                for iy in rows.clone() {
                    let window_row =
                        &img[(iy * w.in_w + cols.start) * c..(iy * w.in_w + cols.end) * c];
                    for pixel in window_row.chunks_exact(c) {
                        for (b, &v) in best.iter_mut().zip(pixel) {
                            *b = if v > *b { v } else { *b };
                        }
                    }
                }
            }
        }
    }
}

/// Sends each output gradient to the first input of its window equal to
/// the window's maximum. `grad_input` must be zeroed by the caller.
pub fn max_pool_backward(
    w: &Window2d,
    input: &[f32],
    output: &[f32],
    grad_output: &[f32],
    grad_input: &mut [f32],
) {
    let c = w.channels;
    let out_len = w.out_pixels() * c;
    let images = input
        .chunks_exact(w.in_len())
        .zip(grad_input.chunks_exact_mut(w.in_len()))
        .zip(
            output
                .chunks_exact(out_len)
                .zip(grad_output.chunks_exact(out_len)),
        );
    // Per channel: whether this window's winner has been found yet.
    let mut found = vec![false; c];
    for ((img, grad_in), (out, grad_out)) in images {
        for oy in 0..w.out_h {
            let rows = w.rows_of(oy);
            for ox in 0..w.out_w {
                let cols = w.cols_of(ox);
                let at = (oy * w.out_w + ox) * c;
                let (best, grad) = (&out[at..at + c], &grad_out[at..at + c]);
                found.fill(false);
                for iy in rows.clone() {
                    for ix in cols.clone() {
                        let i = (iy * w.in_w + ix) * c;
                        let (pixel, pixel_grad) = (&img[i..i + c], &mut grad_in[i..i + c]);
                        // Branch-free, so that it vectorises over channels.
                        for ch in 0..c {
                            let take = !found[ch] & (pixel[ch] == best[ch]);
                            found[ch] |= take;
                            pixel_grad[ch] += if take { grad[ch] } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}
