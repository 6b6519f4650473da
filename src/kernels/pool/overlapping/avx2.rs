//! The AVX2 loops of 3x3/2 max pooling: 8 channels at a time, the last
//! group masked. The same steps as `avx512.rs`, with comparison results
//! as vectors of lanes all ones or all zeros instead of mask registers.
//!
//! The `# Safety` section of `forward` takes the CPU to support AVX2, `w`
//! to be 3x3 windows moved by 2 that stay inside the image, and the
//! slices to hold `images` whole images (inputs and outputs), as
//! `overlapping::forward` asserts.

use super::super::super::Window2d;
use super::OutputRow;
use std::arch::x86_64::*;

/// The channel groups of a pixel: (first channel, channels in the group).
fn groups(c: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..c).step_by(8).map(move |g| (g, (c - g).min(8)))
}

/// The lanes of a channel group: all 8, or the first few, masked (AVX2's
/// masked loads and stores cost more than plain ones, so whole groups
/// skip them).
#[derive(Clone, Copy)]
struct Lanes {
    mask: __m256i,
    whole: bool,
}

impl Lanes {
    /// The first `n` (at most 8) lanes.
    ///
    /// # Safety
    /// The CPU supports AVX2 (code compiled without it calls this in `unsafe`).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn first(n: usize) -> Self {
        let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), index);
        Lanes {
            mask,
            whole: n == 8,
        }
    }

    /// The values at `at` in these lanes, 0 in the others.
    ///
    /// # Safety
    /// The CPU supports AVX2; these lanes from `at` are readable.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load(self, at: *const f32) -> __m256 {
        // SAFETY: the caller's promise.
        unsafe {
            if self.whole {
                _mm256_loadu_ps(at)
            } else {
                _mm256_maskload_ps(at, self.mask)
            }
        }
    }

    /// Stores `values` at `at` in these lanes.
    ///
    /// # Safety
    /// The CPU supports AVX2; these lanes from `at` are writable.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store(self, at: *mut f32, values: __m256) {
        // SAFETY: the caller's promise.
        unsafe {
            if self.whole {
                _mm256_storeu_ps(at, values)
            } else {
                _mm256_maskstore_ps(at, self.mask, values)
            }
        }
    }
}

/// Max pooling of `images` images: outputs and their winners.
///
/// # Safety
/// See the module's documentation.
#[target_feature(enable = "avx2")]
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
                for (g, n) in groups(c) {
                    let m = Lanes::first(n);
                    // SAFETY: the window at `corner` and output `at` lie in
                    // the slices (see the module's documentation); lanes
                    // past channel `c` are masked off.
                    unsafe {
                        let (best, won) = window_max(input.as_ptr().add(corner + g), c, row, m);
                        m.store(output.as_mut_ptr().add(at + g), best);
                        store_winners(won, &mut winners[at + g..at + g + n]);
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
/// The CPU supports AVX2; the window's 3 rows of `row` values, each 3
/// pixels of `c` channels, are readable in the lanes `m`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn window_max(corner: *const f32, c: usize, row: usize, m: Lanes) -> (__m256, __m256i) {
    // SAFETY: column `kx` of the window lies within it (the caller's promise).
    let column = |kx: usize| unsafe { column_max(corner.add(kx * c), row, m, kx) };
    let (mut best, mut won) = column(0);
    for kx in 1..3 {
        let (max, at) = column(kx);
        let right = _mm256_cmp_ps::<_CMP_GT_OQ>(max, best);
        best = _mm256_blendv_ps(best, max, right);
        won = _mm256_blendv_epi8(won, at, _mm256_castps_si256(right));
    }
    (best, won)
}

/// The maximum down window column `kx` (3 values `row` apart from `top`)
/// and its position `3 · ky + kx`, the lower value winning only if
/// strictly larger.
///
/// # Safety
/// The CPU supports AVX2; the column is readable in the lanes `m`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn column_max(top: *const f32, row: usize, m: Lanes, kx: usize) -> (__m256, __m256i) {
    // SAFETY: the caller's promise.
    let load = |ky: usize| unsafe { m.load(top.add(ky * row)) };
    let (mut best, mut won) = (load(0), _mm256_set1_epi32(kx as i32));
    for ky in 1..3 {
        let value = load(ky);
        let below = _mm256_cmp_ps::<_CMP_GT_OQ>(value, best);
        best = _mm256_blendv_ps(best, value, below);
        let here = _mm256_set1_epi32((3 * ky + kx) as i32);
        won = _mm256_blendv_epi8(won, here, _mm256_castps_si256(below));
    }
    (best, won)
}

/// Stores the low byte of the first `dst.len()` (at most 8) lanes of `won`.
///
/// # Safety
/// The CPU supports AVX2 (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx2")]
#[inline]
fn store_winners(won: __m256i, dst: &mut [u8]) {
    // Positions are 0..9, so packing with saturation keeps them as they are.
    let halves = (
        _mm256_castsi256_si128(won),
        _mm256_extracti128_si256::<1>(won),
    );
    let words = _mm_packs_epi32(halves.0, halves.1);
    let bytes = _mm_cvtsi128_si64(_mm_packus_epi16(words, words)).to_le_bytes();
    match <&mut [u8; 8]>::try_from(&mut *dst) {
        // A whole group: one store (a copy of any length would call memcpy).
        Ok(whole) => *whole = bytes,
        Err(_) => dst.copy_from_slice(&bytes[..dst.len()]),
    }
}

/// The winners of up to 8 lanes from `at`, widened to 32-bit lanes (0
/// past the end of `winners`, in lanes the caller masks off).
///
/// # Safety
/// The CPU supports AVX2 (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx2")]
#[inline]
fn load_winners(winners: &[u8], at: usize) -> __m256i {
    let bytes = match winners.get(at..at + 8) {
        // One load (a copy of any length would call memcpy).
        Some(whole) => whole.try_into().expect("8 bytes"),
        None => {
            let mut bytes = [0u8; 8];
            let rest = &winners[at.min(winners.len())..];
            bytes[..rest.len()].copy_from_slice(rest);
            bytes
        }
    };
    _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(bytes)))
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
/// The CPU supports AVX2. (Slice lengths are asserted.)
#[target_feature(enable = "avx2")]
pub(super) unsafe fn add_window_row(w: &Window2d, outputs: &OutputRow, rows: &mut [f32]) {
    let (c, row) = (w.channels, w.in_w * w.channels);
    outputs.assert_len(w.out_w * c);
    assert!(rows.len() >= 2 * row + (2 * w.out_w + 1) * c);
    let top = rows.as_mut_ptr();
    // No window left of the first: winners that match no position.
    let none = (_mm256_setzero_ps(), _mm256_set1_epi32(-1));
    for (g, n) in groups(c) {
        let m = Lanes::first(n);
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
                    let shared = add_if_won(m.load(at), left, 3 * ky + 2);
                    m.store(at, add_if_won(shared, this, 3 * ky));
                    if ox < w.out_w {
                        let at = at.add(c);
                        m.store(at, add_if_won(m.load(at), this, 3 * ky + 1));
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
/// The CPU supports AVX2 (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx2")]
#[inline]
fn add_if_won(sum: __m256, (grad, won): (__m256, __m256i), p: usize) -> __m256 {
    let here = _mm256_cmpeq_epi32(won, _mm256_set1_epi32(p as i32));
    _mm256_blendv_ps(sum, _mm256_add_ps(sum, grad), _mm256_castsi256_ps(here))
}

/// The output gradients at `at` (lanes `m`), zero where `relu_output` is
/// given and not positive (relu's derivative, as `through_relu`).
///
/// # Safety
/// The CPU supports AVX2; `at` plus the lanes `m` lie in the slices.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn window_gradient(
    grad_output: &[f32],
    relu_output: Option<&[f32]>,
    at: usize,
    m: Lanes,
) -> __m256 {
    // SAFETY: the caller's promise.
    unsafe {
        let grad = m.load(grad_output.as_ptr().add(at));
        match relu_output {
            Some(y) => {
                let y = m.load(y.as_ptr().add(at));
                let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(y, _mm256_setzero_ps());
                _mm256_and_ps(grad, positive)
            }
            None => grad,
        }
    }
}
