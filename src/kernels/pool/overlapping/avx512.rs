//! The AVX-512 loops of 3x3/2 max pooling: 16 channels at a time, the last
//! group masked.
//!
//! The `# Safety` section of `forward` takes the CPU to support AVX-512F,
//! `w` to be 3x3 windows moved by 2 that stay inside the image, and the
//! slices to hold `images` whole images (inputs and outputs), as
//! `overlapping::forward` asserts.

use super::super::super::Window2d;
use super::OutputRow;
use crate::kernels::pool::load_winners;
use std::arch::x86_64::*;

/// The channel groups of a pixel: (first channel, mask of its lanes).
fn groups(c: usize) -> impl Iterator<Item = (usize, __mmask16)> {
    (0..c)
        .step_by(16)
        .map(move |g| (g, ((1u32 << (c - g).min(16)) - 1) as __mmask16))
}

/// Max pooling of `images` images: outputs and their winners.
///
/// # Safety
/// See the module's documentation.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward(
    w: &Window2d,
    images: usize,
    input: &[f32],
    output: &mut [f32],
    winners: &mut [u8],
) {
    let (c, row, out_len) = (w.channels, w.in_w * w.channels, w.out_pixels() * w.channels);
    for i in 0..images {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let corner = i * w.in_len() + (2 * oy * w.in_w + 2 * ox) * c;
                let at = i * out_len + (oy * w.out_w + ox) * c;
                for (g, m) in groups(c) {
                    // SAFETY: the window at `corner` and output `at` lie in
                    // the slices (see the module's documentation); lanes
                    // past channel `c` are masked off.
                    unsafe {
                        let (best, won) = window_max(input.as_ptr().add(corner + g), c, row, m);
                        _mm512_mask_storeu_ps(output.as_mut_ptr().add(at + g), m, best);
                        let won_at = winners.as_mut_ptr().add(at + g) as *mut i8;
                        _mm512_mask_cvtepi32_storeu_epi8(won_at, m, won);
                    }
                }
            }
        }
    }
}

/// The maximum of the 3x3 window whose top-left value (of the lanes `m`)
/// is at `corner`, and its position `3 · ky + kx`: the maximum down each
/// column, then across the columns, the later value winning only if
/// strictly larger.
///
/// # Safety
/// The CPU supports AVX-512F; the window's 3 rows of `row` values, each 3
/// pixels of `c` channels, are readable in the lanes `m`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn window_max(corner: *const f32, c: usize, row: usize, m: __mmask16) -> (__m512, __m512i) {
    // SAFETY: column `kx` of the window lies within it (the caller's promise).
    let column = |kx: usize| unsafe { column_max(corner.add(kx * c), row, m, kx) };
    let (mut best, mut won) = column(0);
    for kx in 1..3 {
        let (max, at) = column(kx);
        let right = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(max, best);
        best = _mm512_mask_blend_ps(right, best, max);
        won = _mm512_mask_blend_epi32(right, won, at);
    }
    (best, won)
}

/// The maximum down window column `kx` (3 values `row` apart from `top`)
/// and its position `3 · ky + kx`, the lower value winning only if
/// strictly larger.
///
/// # Safety
/// The CPU supports AVX-512F; the column is readable in the lanes `m`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn column_max(top: *const f32, row: usize, m: __mmask16, kx: usize) -> (__m512, __m512i) {
    // SAFETY: the caller's promise.
    let load = |ky: usize| unsafe { _mm512_maskz_loadu_ps(m, top.add(ky * row)) };
    let (mut best, mut won) = (load(0), _mm512_set1_epi32(kx as i32));
    for ky in 1..3 {
        let value = load(ky);
        let below = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(value, best);
        best = _mm512_mask_blend_ps(below, best, value);
        won = _mm512_mask_mov_epi32(won, below, _mm512_set1_epi32((3 * ky + kx) as i32));
    }
    (best, won)
}

/// Adds the gradients of one row of windows to the three input rows
/// they cover, `rows` (from the top row's first value), each to the input
/// that won its window, in the order of the windows; with `relu_output`,
/// windows whose maximum is not positive add zero. A pair of columns per
/// window, the previous window's gradient carried over for the column
/// they share. (The caller zeros the two lower rows first; the top one
/// holds what the row of windows above added.)
///
/// # Safety
/// The CPU supports AVX-512F. (Slice lengths are asserted.)
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn add_window_row(w: &Window2d, outputs: &OutputRow, rows: &mut [f32]) {
    let (c, row) = (w.channels, w.in_w * w.channels);
    outputs.assert_len(w.out_w * c);
    assert!(rows.len() >= 2 * row + (2 * w.out_w + 1) * c);
    let top = rows.as_mut_ptr();
    // No window left of the first: winners that match no position.
    let none = (_mm512_setzero_ps(), _mm512_set1_epi32(-1));
    for (g, m) in groups(c) {
        // The window at output `ox`: its gradient and winners.
        let window = |ox: usize| {
            // SAFETY: output `ox` lies in `outputs` (lanes past channel `c`
            // are masked off).
            let grad = unsafe { window_gradient(outputs.grad, outputs.relu_output, ox * c + g, m) };
            (grad, load_winners(outputs.winners, ox * c + g))
        };
        let mut left = none;
        for ox in 0..=w.out_w {
            let this = if ox < w.out_w { window(ox) } else { none };
            for ky in 0..3 {
                // SAFETY: input column 2 ox of row ky and, left of the
                // last column, the one right of it lie in `rows` (asserted).
                unsafe {
                    let at = top.add(ky * row + 2 * ox * c + g);
                    let shared = add_if_won(_mm512_maskz_loadu_ps(m, at), left, 3 * ky + 2);
                    _mm512_mask_storeu_ps(at, m, add_if_won(shared, this, 3 * ky));
                    if ox < w.out_w {
                        let at = at.add(c);
                        _mm512_mask_storeu_ps(
                            at,
                            m,
                            add_if_won(_mm512_maskz_loadu_ps(m, at), this, 3 * ky + 1),
                        );
                    }
                }
            }
            left = this;
        }
    }
}

/// `sum + grad` in the lanes whose window `won` at position `p`, `sum`
/// in the others.
///
/// # Safety
/// The CPU supports AVX-512F (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx512f")]
#[inline]
fn add_if_won(sum: __m512, (grad, won): (__m512, __m512i), p: usize) -> __m512 {
    let here = _mm512_cmpeq_epi32_mask(won, _mm512_set1_epi32(p as i32));
    _mm512_mask_add_ps(sum, here, sum, grad)
}

/// The output gradients at `at` (lanes `m`), zero where `relu_output` is
/// given and not positive (relu's derivative, as `through_relu`).
///
/// # Safety
/// The CPU supports AVX-512F; `at` plus the lanes `m` lie in the slices.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn window_gradient(
    grad_output: &[f32],
    relu_output: Option<&[f32]>,
    at: usize,
    m: __mmask16,
) -> __m512 {
    // SAFETY: the caller's promise.
    unsafe {
        let grad = _mm512_maskz_loadu_ps(m, grad_output.as_ptr().add(at));
        match relu_output {
            Some(y) => {
                let y = _mm512_maskz_loadu_ps(m, y.as_ptr().add(at));
                let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, _mm512_setzero_ps());
                _mm512_maskz_mov_ps(positive, grad)
            }
            None => grad,
        }
    }
}
