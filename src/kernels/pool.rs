//! Max pooling over NHWC images.
//!
//! The forward pass also records, for every output value, which position
//! of its window won (the first maximum, in row-major order), as one byte;
//! the backward pass then sends each gradient straight to its winner.
//! Padding (with `Padding::Same`) never wins: windows are clipped to the
//! image, as in TensorFlow.

use super::Window2d;

/// Largest window whose positions fit in the byte recorded per output.
pub const MAX_WINDOW: usize = 256;

/// Max of each window, per channel, for a chunk of whole images, and the
/// window position (`ky · k_w + kx`) it came from.
pub fn max_pool_forward(w: &Window2d, input: &[f32], output: &mut [f32], winners: &mut [u8]) {
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
                best.fill(f32::NEG_INFINITY);
                won.fill(0);
                for iy in rows.clone() {
                    for ix in cols.clone() {
                        let position = ((iy as isize - y0) as usize * w.k_w
                            + (ix as isize - x0) as usize)
                            as u8;
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

/// Sends each output gradient to the input that won its window.
/// `grad_input` must be zeroed by the caller.
pub fn max_pool_backward(
    w: &Window2d,
    winners: &[u8],
    grad_output: &[f32],
    grad_input: &mut [f32],
) {
    let c = w.channels;
    let out_len = w.out_pixels() * c;
    let images = grad_input.chunks_exact_mut(w.in_len()).zip(
        grad_output
            .chunks_exact(out_len)
            .zip(winners.chunks_exact(out_len)),
    );
    for (grad_in, (grad_out, won)) in images {
        for oy in 0..w.out_h {
            let y0 = (oy * w.stride_h) as isize - w.pad_top as isize;
            for ox in 0..w.out_w {
                let x0 = (ox * w.stride_w) as isize - w.pad_left as isize;
                let at = (oy * w.out_w + ox) * c;
                for ch in 0..c {
                    let position = won[at + ch] as usize;
                    let iy = (y0 + (position / w.k_w) as isize) as usize;
                    let ix = (x0 + (position % w.k_w) as isize) as usize;
                    grad_in[(iy * w.in_w + ix) * c + ch] += grad_out[at + ch];
                }
            }
        }
    }
}
