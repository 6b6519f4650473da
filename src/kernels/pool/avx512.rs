//! The AVX-512 loops of 2x2/2 max pooling: a pixel's channels are the SIMD
//! axis, 16 at a time with the last group masked (LeNet's 6 channels are
//! one masked vector). Same winners as the scalar loops: the first maximum
//! in row-major order (positions 0 1 / 2 3), comparisons that are false for
//! NaN.

use super::super::Window2d;
use std::arch::x86_64::*;

/// The channel groups of a pixel: (first channel, mask of its lanes).
fn groups(c: usize) -> impl Iterator<Item = (usize, __mmask16)> {
    (0..c)
        .step_by(16)
        .map(move |g| (g, ((1u32 << (c - g).min(16)) - 1) as __mmask16))
}

/// `max_pool_2x2` on whole images.
///
/// # Safety
/// The CPU supports AVX-512F. The rest is asserted: `output` and `winners`
/// hold the outputs of the whole images in `input`, and the `out_h x out_w`
/// windows, 2x2 moved by 2, stay inside the image. (`w` should be such a
/// window, see `pool::is_2x2`, for the result to be its max pooling.)
#[target_feature(enable = "avx512f")]
pub unsafe fn forward_2x2(w: &Window2d, input: &[f32], output: &mut [f32], winners: &mut [u8]) {
    let (c, row, out_len) = (w.channels, w.in_w * w.channels, w.out_pixels() * w.channels);
    let images = input.len() / w.in_len();
    assert!(output.len() >= images * out_len && winners.len() >= images * out_len);
    assert!(2 * w.out_h <= w.in_h && 2 * w.out_w <= w.in_w);
    let (one, two, three) = (
        _mm512_set1_epi32(1),
        _mm512_set1_epi32(2),
        _mm512_set1_epi32(3),
    );
    for i in 0..images {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                for (g, m) in groups(c) {
                    unsafe {
                        let top = input
                            .as_ptr()
                            .add(i * w.in_len() + 2 * oy * row + 2 * ox * c + g);
                        let bottom = top.add(row);
                        let t0 = _mm512_maskz_loadu_ps(m, top);
                        let t1 = _mm512_maskz_loadu_ps(m, top.add(c));
                        let b0 = _mm512_maskz_loadu_ps(m, bottom);
                        let b1 = _mm512_maskz_loadu_ps(m, bottom.add(c));
                        // Within a row the right pixel wins only if strictly larger.
                        let right_top = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(t1, t0);
                        let right_bottom = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(b1, b0);
                        let t = _mm512_mask_blend_ps(right_top, t0, t1);
                        let b = _mm512_mask_blend_ps(right_bottom, b0, b1);
                        let at_top = _mm512_maskz_mov_epi32(right_top, one);
                        let at_bottom = _mm512_mask_blend_epi32(right_bottom, two, three);
                        // And the bottom row only if strictly larger than the top.
                        let below = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(b, t);
                        let at = i * out_len + (oy * w.out_w + ox) * c + g;
                        _mm512_mask_storeu_ps(
                            output.as_mut_ptr().add(at),
                            m,
                            _mm512_mask_blend_ps(below, t, b),
                        );
                        _mm512_mask_cvtepi32_storeu_epi8(
                            winners.as_mut_ptr().add(at) as *mut i8,
                            m,
                            _mm512_mask_blend_epi32(below, at_top, at_bottom),
                        );
                    }
                }
            }
        }
    }
}

/// `max_pool_2x2_backward` on whole images: a zero fill (which the CPU
/// does without reading the lines first), then each gradient stored at its
/// winner by one masked store per window position. With `relu_output`,
/// the pooled values of a relu'd input, gradients of windows whose maximum
/// is not positive are dropped: relu's derivative, applied here for the
/// layer before.
///
/// # Safety
/// The CPU supports AVX-512F. The rest is asserted: `winners`,
/// `grad_output` (and `relu_output`) hold the outputs of the whole images
/// in `grad_input`, and the windows stay inside the image, as for
/// [`forward_2x2`].
#[target_feature(enable = "avx512f")]
pub unsafe fn backward_2x2(
    w: &Window2d,
    winners: &[u8],
    grad_output: &[f32],
    relu_output: Option<&[f32]>,
    grad_input: &mut [f32],
) {
    let (c, row, out_len) = (w.channels, w.in_w * w.channels, w.out_pixels() * w.channels);
    let images = grad_input.len() / w.in_len();
    assert!(grad_output.len() >= images * out_len && winners.len() >= images * out_len);
    assert!(relu_output.is_none_or(|y| y.len() >= images * out_len));
    assert!(2 * w.out_h <= w.in_h && 2 * w.out_w <= w.in_w);
    let positions = [0, c, row, row + c];
    grad_input.fill(0.0);
    for i in 0..images {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                for (g, m) in groups(c) {
                    let at = i * out_len + (oy * w.out_w + ox) * c + g;
                    unsafe {
                        let grad = _mm512_maskz_loadu_ps(m, grad_output.as_ptr().add(at));
                        let mut m = m;
                        if let Some(y) = relu_output {
                            let y = _mm512_maskz_loadu_ps(m, y.as_ptr().add(at));
                            m = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(m, y, _mm512_setzero_ps());
                        }
                        let won = load_winners(winners, at);
                        let corner = grad_input
                            .as_mut_ptr()
                            .add(i * w.in_len() + 2 * oy * row + 2 * ox * c + g);
                        for (p, offset) in positions.into_iter().enumerate() {
                            let here =
                                _mm512_mask_cmpeq_epi32_mask(m, won, _mm512_set1_epi32(p as i32));
                            _mm512_mask_storeu_ps(corner.add(offset), here, grad);
                        }
                    }
                }
            }
        }
    }
}

/// The 16 winner bytes from `at`, widened to 32-bit lanes (bytes past the
/// end of `winners` read as 0; the lanes they fill are masked off by the
/// caller).
///
/// # Safety
/// The CPU supports AVX-512F (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx512f")]
pub(crate) fn load_winners(winners: &[u8], at: usize) -> __m512i {
    let bytes = if let Some(bytes) = winners.get(at..at + 16) {
        let bytes: &[u8; 16] = bytes.try_into().expect("16 bytes");
        unsafe { _mm_loadu_si128(bytes.as_ptr() as *const __m128i) }
    } else {
        let mut tail = [0u8; 16];
        let rest = &winners[at.min(winners.len())..];
        tail[..rest.len()].copy_from_slice(rest);
        unsafe { _mm_loadu_si128(tail.as_ptr() as *const __m128i) }
    };
    _mm512_cvtepu8_epi32(bytes)
}
