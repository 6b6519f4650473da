//! Max pooling over NHWC images, remembering where each maximum came from.

use super::Window2d;

/// Max of each window, per channel, for a chunk of whole images.
///
/// `argmax` receives, for every output value, the offset inside its image of
/// the input value that won, so that the backward pass is a scatter. Padding
/// (with [`super::im2col::Padding::Same`]) never wins: windows are clipped to
/// the image, as in TensorFlow.
pub fn max_pool_forward(w: &Window2d, input: &[f32], output: &mut [f32], argmax: &mut [u32]) {
    let c = w.channels;
    let out_len = w.out_pixels() * c;
    let images = input
        .chunks_exact(w.in_len())
        .zip(output.chunks_exact_mut(out_len))
        .zip(argmax.chunks_exact_mut(out_len));
    for ((img, out), arg) in images {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let at = (oy * w.out_w + ox) * c;
                let (best, best_at) = (&mut out[at..at + c], &mut arg[at..at + c]);
                best.fill(f32::NEG_INFINITY);
                for iy in w.rows_of(oy) {
                    for ix in w.cols_of(ox) {
                        let src = (iy * w.in_w + ix) * c;
                        for ch in 0..c {
                            let v = img[src + ch];
                            if v > best[ch] {
                                best[ch] = v;
                                best_at[ch] = (src + ch) as u32;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Sends each output gradient to the input value that won its window.
/// `grad_input` must be zeroed by the caller.
pub fn max_pool_backward(
    w: &Window2d,
    grad_output: &[f32],
    argmax: &[u32],
    grad_input: &mut [f32],
) {
    let out_len = w.out_pixels() * w.channels;
    let images = grad_input
        .chunks_exact_mut(w.in_len())
        .zip(grad_output.chunks_exact(out_len))
        .zip(argmax.chunks_exact(out_len));
    for ((grad_in, grad_out), arg) in images {
        for (g, &at) in grad_out.iter().zip(arg) {
            grad_in[at as usize] += g;
        }
    }
}
