//! The AVX2 + FMA kernels of `filter_conv`: wide layers (groups of 16
//! filters, two vectors) and narrow ones (up to 8 filters, one masked vector).
//!
//! Every `# Safety` section below takes `s` to be a [`Shape`] made by
//! `Shape::new` (with any `relu`): a layer that `filter_conv::applies`, whose
//! padded image ([`padded_len`] values) is `out_h + k_h - 1` rows of
//! `row_len` values, and `row_taps = k_w · channels`. Counts of values are
//! `f32`s.

use super::{GROUP, MAX_BLOCK, Shape, VEC, bias_output, padded_len};
use std::arch::x86_64::*;

/// Output pixels per block of the wide forward pass (two vectors each).
const WIDE_PIXELS: usize = 6;
/// Taps per block of the wide kernel gradient (two vectors each).
const WIDE_TAPS: usize = 6;
/// Output pixels per block of the narrow forward pass.
const NARROW_PIXELS: usize = 8;

/// `max(sums, 0)` if the layer fuses relu into its forward pass.
///
/// # Safety
/// The CPU supports AVX2 and FMA (code compiled without them calls this in `unsafe`).
#[target_feature(enable = "avx2,fma")]
fn relu(s: &Shape, sums: __m256) -> __m256 {
    if s.relu {
        _mm256_max_ps(sums, _mm256_setzero_ps())
    } else {
        sums
    }
}

/// The mask of the first `filters` (at most 8) lanes.
///
/// # Safety
/// The CPU supports AVX2 and FMA (code compiled without them calls this in `unsafe`).
#[target_feature(enable = "avx2,fma")]
fn lanes(filters: usize) -> __m256i {
    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(filters as i32), index)
}

/// Output row `oy` of one padded image.
///
/// # Safety
/// The CPU supports AVX2 and FMA; `image` holds at least one padded image
/// ([`padded_len`] values), `oy < out_h`, `kernel` holds the layer's
/// `patch_len · filters` values and `bias` its `filters`, and `row` is one
/// whole output row (`out_w · filters` values).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn forward_row(
    s: &Shape,
    image: &[f32],
    kernel: &[f32],
    bias: &[f32],
    row: &mut [f32],
    oy: usize,
) {
    let (c, filters, out_w) = (s.w.channels, s.filters, s.w.out_w);
    unsafe {
        let input = image.as_ptr().add(oy * s.row_len);
        let (kernel, bias, out) = (kernel.as_ptr(), bias.as_ptr(), row.as_mut_ptr());
        if s.narrow() {
            for ox in (0..out_w).step_by(NARROW_PIXELS) {
                let (x, y) = (input.add(ox * c), out.add(ox * filters));
                match NARROW_PIXELS.min(out_w - ox) {
                    // A grey image gets its own copy, whose input offsets are constants.
                    NARROW_PIXELS if c == 1 => {
                        narrow_sums::<NARROW_PIXELS, 1>(s, x, kernel, bias, y)
                    }
                    pixels => unrolled!(pixels, narrow_sums_any(s, x, kernel, bias, y)),
                }
            }
            return;
        }
        for group in (0..filters).step_by(GROUP) {
            for ox in (0..out_w).step_by(WIDE_PIXELS) {
                let (x, y) = (input.add(ox * c), out.add(ox * filters + group));
                let (k, b) = (kernel.add(group), bias.add(group));
                unrolled!(WIDE_PIXELS.min(out_w - ox), wide_sums(s, x, k, b, y));
            }
        }
    }
}

/// 16 filters of `P` output pixels: `x` points at the first pixel's
/// window, `kernel`, `bias` and `out` at the group's first filter.
///
/// # Safety
/// The CPU supports AVX2 and FMA. Every tap of the `P` consecutive output
/// pixels is readable from `x`: `(k_h - 1) · row_len + (P - 1) · channels +
/// row_taps` values (the pixels' windows in one padded image). `kernel` and
/// `bias` point at filter `group` of the layer's kernel and bias with
/// `group + 16 <= filters`: 16 values readable at `tap · filters` for every
/// `tap < patch_len`, and 16 bias values. `out` points at filter `group` of
/// the first pixel of a row that holds all `P`: 16 values writable at `p ·
/// filters` for `p < P`, overlapping none of the inputs.
#[target_feature(enable = "avx2,fma")]
unsafe fn wide_sums<const P: usize>(
    s: &Shape,
    x: *const f32,
    kernel: *const f32,
    bias: *const f32,
    out: *mut f32,
) {
    let (c, filters) = (s.w.channels, s.filters);
    unsafe {
        let mut acc = [[_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(VEC))]; P];
        for ky in 0..s.w.k_h {
            let (x, taps) = (x.add(ky * s.row_len), kernel.add(ky * s.row_taps * filters));
            for t in 0..s.row_taps {
                let w0 = _mm256_loadu_ps(taps.add(t * filters));
                let w1 = _mm256_loadu_ps(taps.add(t * filters + VEC));
                for (p, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*x.add(p * c + t));
                    acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(p * filters), relu(s, acc[0]));
            _mm256_storeu_ps(out.add(p * filters + VEC), relu(s, acc[1]));
        }
    }
}

/// [`narrow_sums`] for any channel count (`C = 0`), with one const
/// parameter, as `unrolled!` calls it.
///
/// # Safety
/// As [`narrow_sums`].
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_sums_any<const P: usize>(
    s: &Shape,
    x: *const f32,
    kernel: *const f32,
    bias: *const f32,
    out: *mut f32,
) {
    unsafe { narrow_sums::<P, 0>(s, x, kernel, bias, out) }
}

/// All (up to 8) filters of `P` output pixels, as [`wide_sums`]; `C` is
/// the channel count when known at compile time, else 0.
///
/// # Safety
/// The CPU supports AVX2 and FMA; the layer is narrow (`filters <= 8`: the
/// masked loads and stores touch `filters` lanes) and `C` is 0 or
/// `channels`. As for [`wide_sums`], `(k_h - 1) · row_len + (P - 1) ·
/// channels + row_taps` values are readable from `x`; `kernel` and `bias`
/// are the layer's whole kernel (`patch_len · filters` values) and bias
/// (`filters`), and `P · filters` values are writable from `out`, which
/// overlaps none of the inputs.
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_sums<const P: usize, const C: usize>(
    s: &Shape,
    x: *const f32,
    kernel: *const f32,
    bias: *const f32,
    out: *mut f32,
) {
    let c = if C == 0 { s.w.channels } else { C };
    let filters = s.filters;
    let mask = lanes(filters);
    unsafe {
        let mut acc = [_mm256_maskload_ps(bias, mask); P];
        for ky in 0..s.w.k_h {
            let (x, taps) = (x.add(ky * s.row_len), kernel.add(ky * s.row_taps * filters));
            for t in 0..s.row_taps {
                let w = _mm256_maskload_ps(taps.add(t * filters), mask);
                for (p, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&*x.add(p * c + t)), w, *acc);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            _mm256_maskstore_ps(out.add(p * filters), mask, relu(s, *acc));
        }
    }
}

/// The kernel and bias gradients of a chunk, written.
///
/// # Safety
/// The CPU supports AVX2 and FMA; `d_kernel` holds at least the kernel's
/// `patch_len · filters` values and `d_bias` at least `filters` (both are
/// written through pointers). `padded` and `dy` should hold the same images
/// (whole padded images and whole output gradients: the loops stop at the
/// shorter).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn kernel_grad(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    d_kernel: &mut [f32],
    d_bias: &mut [f32],
) {
    let block = if s.narrow() { MAX_BLOCK } else { WIDE_TAPS };
    let d_kernel = d_kernel.as_mut_ptr();
    for group in (0..s.filters).step_by(GROUP) {
        for ky in 0..s.w.k_h {
            for first in (0..s.row_taps).step_by(block) {
                let taps = block.min(s.row_taps - first);
                let at = (ky, first, group);
                let bias = bias_output(d_bias.as_mut_ptr(), ky, first);
                let out = (d_kernel, bias);
                unsafe {
                    if s.narrow() {
                        unrolled!(taps, narrow_grad(s, padded, dy, out, at))
                    } else {
                        unrolled!(taps, wide_grad(s, padded, dy, out, at))
                    }
                }
            }
        }
    }
}

/// Taps `first..first + T` of kernel row `ky`, filters `group..group +
/// 16`: `at = (ky, first, group)`; and, unless `bias` is null, the sums of
/// `dy` for the group's bias gradient.
///
/// # Safety
/// The CPU supports AVX2 and FMA; `ky < k_h`, `first + T <= row_taps` and
/// `group + 16 <= filters` (the reads of `padded` and `dy` then stay inside
/// each image's); `d_kernel` is writable for the kernel's `patch_len ·
/// filters` values, and `bias` is null or writable for `filters` values;
/// neither overlaps `padded` or `dy`.
#[target_feature(enable = "avx2,fma")]
unsafe fn wide_grad<const T: usize>(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    (d_kernel, bias): (*mut f32, *mut f32),
    (ky, first, group): (usize, usize, usize),
) {
    let (w, filters) = (&s.w, s.filters);
    let mut acc = [[_mm256_setzero_ps(); 2]; T];
    let (with_bias, mut bias_sum) = (!bias.is_null(), [_mm256_setzero_ps(); 2]);
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(dy.chunks_exact(w.out_pixels() * filters));
    unsafe {
        for (image, dy) in images {
            for oy in 0..w.out_h {
                let x_row = image.as_ptr().add((oy + ky) * s.row_len + first);
                let dy_row = dy.as_ptr().add(oy * w.out_w * filters + group);
                for ox in 0..w.out_w {
                    let g = dy_row.add(ox * filters);
                    let (g0, g1) = (_mm256_loadu_ps(g), _mm256_loadu_ps(g.add(VEC)));
                    if with_bias {
                        bias_sum[0] = _mm256_add_ps(bias_sum[0], g0);
                        bias_sum[1] = _mm256_add_ps(bias_sum[1], g1);
                    }
                    let x = x_row.add(ox * w.channels);
                    for (t, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*x.add(t));
                        acc[0] = _mm256_fmadd_ps(x, g0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(x, g1, acc[1]);
                    }
                }
            }
        }
        let out = d_kernel.add((ky * s.row_taps + first) * filters + group);
        for (t, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(t * filters), acc[0]);
            _mm256_storeu_ps(out.add(t * filters + VEC), acc[1]);
        }
        if with_bias {
            _mm256_storeu_ps(bias.add(group), bias_sum[0]);
            _mm256_storeu_ps(bias.add(group + VEC), bias_sum[1]);
        }
    }
}

/// As [`wide_grad`], for all (up to 8) filters in one masked vector.
///
/// # Safety
/// As [`wide_grad`], with the layer narrow (`filters <= 8`) instead of the
/// condition on `group` (which is ignored).
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_grad<const T: usize>(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    (d_kernel, bias): (*mut f32, *mut f32),
    (ky, first, _): (usize, usize, usize),
) {
    let (w, filters) = (&s.w, s.filters);
    let mask = lanes(filters);
    let mut acc = [_mm256_setzero_ps(); T];
    let (with_bias, mut bias_sum) = (!bias.is_null(), _mm256_setzero_ps());
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(dy.chunks_exact(w.out_pixels() * filters));
    unsafe {
        for (image, dy) in images {
            for oy in 0..w.out_h {
                let x_row = image.as_ptr().add((oy + ky) * s.row_len + first);
                let dy_row = dy.as_ptr().add(oy * w.out_w * filters);
                for ox in 0..w.out_w {
                    let g = _mm256_maskload_ps(dy_row.add(ox * filters), mask);
                    if with_bias {
                        bias_sum = _mm256_add_ps(bias_sum, g);
                    }
                    let x = x_row.add(ox * w.channels);
                    for (t, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&*x.add(t)), g, *acc);
                    }
                }
            }
        }
        let out = d_kernel.add((ky * s.row_taps + first) * filters);
        for (t, acc) in acc.iter().enumerate() {
            _mm256_maskstore_ps(out.add(t * filters), mask, *acc);
        }
        if with_bias {
            _mm256_maskstore_ps(bias, mask, bias_sum);
        }
    }
}
