//! The AVX-512 kernels of `filter_conv`, for wide layers: 16 filters are
//! one vector, so a block holds twice the sums of the AVX2 kernels and each
//! instruction does twice the work.
//!
//! Every `# Safety` section below takes `s` to be a [`Shape`] made by
//! `Shape::new` (with any `relu`): a layer that `filter_conv::applies`, whose
//! padded image ([`padded_len`] values) is `out_h + k_h - 1` rows of
//! `row_len = (out_w + k_w) · channels` values (a spare column, so that a
//! pair's second pixel may read one value past the last tap), and
//! `row_taps = k_w · channels`. Counts of values are `f32`s. "Narrow grey"
//! means `filters <= 8` and `channels == 1`, as the pair kernels need.

use super::{GROUP, MAX_BLOCK, Shape, bias_output, padded_len, row_vectors};
use crate::kernels::pool::load_winners;
use crate::kernels::prefetch;
use std::arch::x86_64::*;

/// Runs `$f::<N, KW>(args)` for `$block = (N, KW)`: a block size among
/// those listed, and a kernel width of 3 or 5 (see `two_rows_apply`).
macro_rules! by_size_and_width {
    ($block:expr, $f:ident $args:tt, $($size:literal)*) => {
        match $block {
            $(($size, 5) => $f::<$size, 5> $args,
              ($size, 3) => $f::<$size, 3> $args,)*
            (n, kw) => unreachable!("block of {n}, kernel width {kw}"),
        }
    };
}

/// Input vectors a two-row block keeps in registers.
const ROW_BLOCK_INPUTS: usize = 16;

/// Adds input row `r` of a two-row block to its sums: it is kernel row `r`
/// of the top output row and kernel row `r - 1` of the bottom one. Pixel
/// (or pair) `p` reads `inputs[STEP · p + kx]` at tap `kx`, and
/// `weights(ky, kx)` loads the tap's weight vector.
///
/// # Safety
/// The CPU supports AVX-512F (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx512f")]
#[inline]
fn add_input_row<const P: usize, const KW: usize, const STEP: usize>(
    (r, k_h): (usize, usize),
    inputs: &[__m512; ROW_BLOCK_INPUTS],
    weights: impl Fn(usize, usize) -> __m512,
    (top, bottom): (&mut [__m512; P], &mut [__m512; P]),
) {
    for kx in 0..KW {
        for (ky, sums) in [(r, &mut *top), (r.wrapping_sub(1), &mut *bottom)] {
            if ky < k_h {
                let w = weights(ky, kx);
                for (p, acc) in sums.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(inputs[STEP * p + kx], w, *acc);
                }
            }
        }
    }
}

/// Output pixels per block of the forward pass.
const PIXELS: usize = 8;

/// The mask of the first `n` (at most 16) lanes.
fn first_lanes(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// `max(sums, 0)` if the layer fuses relu into its forward pass.
///
/// # Safety
/// The CPU supports AVX-512F (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx512f")]
fn relu(s: &Shape, sums: __m512) -> __m512 {
    if s.relu {
        _mm512_max_ps(sums, _mm512_setzero_ps())
    } else {
        sums
    }
}

/// Output row `oy` of one padded image.
///
/// # Safety
/// The CPU supports AVX-512F; `image` holds at least one padded image
/// ([`padded_len`] values), `oy < out_h`, `kernel` holds the layer's
/// `patch_len · filters` values and `bias` its `filters`, and `row` is one
/// whole output row (`out_w · filters` values). (That the layer is wide is
/// asserted.)
#[target_feature(enable = "avx512f")]
pub unsafe fn forward_row(
    s: &Shape,
    image: &[f32],
    kernel: &[f32],
    bias: &[f32],
    row: &mut [f32],
    oy: usize,
) {
    assert!(!s.narrow(), "the wide kernels write 16 filters at a time");
    let (c, filters, out_w) = (s.w.channels, s.filters, s.w.out_w);
    unsafe {
        let input = image.as_ptr().add(oy * s.row_len);
        for group in (0..filters).step_by(GROUP) {
            for ox in (0..out_w).step_by(PIXELS) {
                let (x, y) = (
                    input.add(ox * c),
                    row.as_mut_ptr().add(ox * filters + group),
                );
                let (k, b) = (kernel.as_ptr().add(group), bias.as_ptr().add(group));
                match (PIXELS.min(out_w - ox), s.w.k_w) {
                    (PIXELS, 5) => sums_kw::<PIXELS, 5>(s, x, k, b, y),
                    (PIXELS, 3) => sums_kw::<PIXELS, 3>(s, x, k, b, y),
                    (pixels, _) => unrolled!(pixels, sums(s, x, k, b, y)),
                }
            }
        }
    }
}

/// 16 filters of `P` output pixels: `x` points at the first pixel's
/// window, `kernel`, `bias` and `out` at the group's first filter.
///
/// # Safety
/// The CPU supports AVX-512F. Every tap of the `P` consecutive output
/// pixels is readable from `x`: `(k_h - 1) · row_len + (P - 1) · channels +
/// row_taps` values (the pixels' windows in one padded image). `kernel` and
/// `bias` point at filter `group` of the layer's kernel and bias with
/// `group + 16 <= filters`: 16 values readable at `tap · filters` for every
/// `tap < patch_len`, and 16 bias values. `out` points at filter `group` of
/// the first pixel of a row that holds all `P`: 16 values writable at `p ·
/// filters` for `p < P`, overlapping none of the inputs.
#[target_feature(enable = "avx512f")]
unsafe fn sums<const P: usize>(
    s: &Shape,
    x: *const f32,
    kernel: *const f32,
    bias: *const f32,
    out: *mut f32,
) {
    let (c, filters) = (s.w.channels, s.filters);
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias); P];
        for ky in 0..s.w.k_h {
            let (x, taps) = (x.add(ky * s.row_len), kernel.add(ky * s.row_taps * filters));
            for t in 0..s.row_taps {
                let w = _mm512_loadu_ps(taps.add(t * filters));
                for (p, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(p * c + t)), w, *acc);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(p * filters), relu(s, *acc));
        }
    }
}

/// As [`sums`], for a kernel `KW` wide: for each kernel row and channel,
/// the `P + KW - 1` input values under the block are broadcast once each
/// and kept in registers for all `KW` taps (instead of one broadcast load
/// per multiply-add).
///
/// # Safety
/// As [`sums`], with `KW == k_w` (the taps are found from `KW`).
#[target_feature(enable = "avx512f")]
unsafe fn sums_kw<const P: usize, const KW: usize>(
    s: &Shape,
    x: *const f32,
    kernel: *const f32,
    bias: *const f32,
    out: *mut f32,
) {
    const { assert!(P + KW - 1 <= 16) };
    let (channels, filters) = (s.w.channels, s.filters);
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias); P];
        for ky in 0..s.w.k_h {
            let (x, taps) = (x.add(ky * s.row_len), kernel.add(ky * s.row_taps * filters));
            for c in 0..channels {
                let mut inputs = [_mm512_setzero_ps(); 16];
                for (i, v) in inputs[..P + KW - 1].iter_mut().enumerate() {
                    *v = _mm512_set1_ps(*x.add(i * channels + c));
                }
                for kx in 0..KW {
                    let w = _mm512_loadu_ps(taps.add((kx * channels + c) * filters));
                    for (p, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(inputs[p + kx], w, *acc);
                    }
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(p * filters), relu(s, *acc));
        }
    }
}

/// One padded image's whole output: rows two at a time where the kernel
/// width allows ([`wide_two_row_sums`]), then the odd one.
///
/// # Safety
/// The CPU supports AVX-512F; `image` holds at least one padded image
/// ([`padded_len`] values), `kernel` holds the layer's `patch_len ·
/// filters` values and `bias` its `filters`. (That the layer is wide and
/// `out` the image's whole output are asserted.)
#[target_feature(enable = "avx512f")]
pub unsafe fn forward_image(
    s: &Shape,
    image: &[f32],
    kernel: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    assert!(!s.narrow(), "the wide kernels write 16 filters at a time");
    let (w, filters) = (&s.w, s.filters);
    let out_row = w.out_w * filters;
    assert_eq!(out.len(), w.out_h * out_row);
    let row_pairs = if two_rows_apply(w) { w.out_h / 2 } else { 0 };
    let mut sums = [[_mm512_setzero_ps(); ROW_PAIR_PIXELS]; 2];
    for oy in (0..2 * row_pairs).step_by(2) {
        for group in (0..filters).step_by(GROUP) {
            for ox in (0..w.out_w).step_by(ROW_PAIR_PIXELS) {
                let pixels = ROW_PAIR_PIXELS.min(w.out_w - ox);
                if group == 0 {
                    // The block after next, every filter, fetched before
                    // it is written: each store would otherwise wait for
                    // its line's read (cifar10-cnn's first layer writes
                    // 16.8 MB; forward on one core 3.4 -> 3.2 ms).
                    for row in [oy, oy + 1] {
                        let at = row * out_row + (ox + 2 * ROW_PAIR_PIXELS) * filters;
                        prefetch(out, at..at + ROW_PAIR_PIXELS * filters);
                    }
                }
                // SAFETY: every tap of both rows lies in the padded image;
                // the stores stay in rows `oy` and `oy + 1`.
                unsafe {
                    let x = image.as_ptr().add(oy * s.row_len + ox * w.channels);
                    let (k, b) = (kernel.as_ptr().add(group), bias.as_ptr().add(group));
                    let block = (pixels, w.k_w);
                    let sums = &mut sums;
                    by_size_and_width!(block, wide_two_row_sums(s, x, k, b, sums), 1 2 3 4 5 6 7 8);
                    for (r, sums) in sums.iter().enumerate() {
                        let y = out
                            .as_mut_ptr()
                            .add((oy + r) * out_row + ox * filters + group);
                        for (p, sum) in sums[..pixels].iter().enumerate() {
                            _mm512_storeu_ps(y.add(p * filters), relu(s, *sum));
                        }
                    }
                }
            }
        }
    }
    for (oy, row) in out
        .chunks_exact_mut(out_row)
        .enumerate()
        .skip(2 * row_pairs)
    {
        // SAFETY: as vouched by the caller.
        unsafe { forward_row(s, image, kernel, bias, row, oy) };
    }
}

/// [`forward_image`] followed by relu and 2x2 max pooling, for a chunk of
/// padded images: only the pooled values and the winners are stored (see
/// `filter_conv::forward_pooled`). A block's 8 pixels of two rows are 4
/// pooling windows, 16 filters in each vector: the pool is a few
/// comparisons per window.
///
/// # Safety
/// The CPU supports AVX-512F; `kernel` holds the layer's `patch_len ·
/// filters` values and `bias` its `filters` (both are read through
/// pointers). The images are whole chunks of `padded`, `pooled` and
/// `winners` (`(out_h / 2) · (out_w / 2) · filters` values each); that the
/// layer is wide and `two_rows_apply` is asserted.
#[target_feature(enable = "avx512f")]
pub unsafe fn forward_pooled(
    s: &Shape,
    padded: &[f32],
    (kernel, bias): (&[f32], &[f32]),
    (pooled, winners): (&mut [f32], &mut [u8]),
) {
    let (w, filters) = (&s.w, s.filters);
    assert!(!s.narrow() && two_rows_apply(w), "pooled wide layers");
    let (pool_h, pool_w) = (w.out_h / 2, w.out_w / 2);
    let images = with_pooled_outputs(s, padded, (pooled, winners));
    let mut sums = [[_mm512_setzero_ps(); ROW_PAIR_PIXELS]; 2];
    for (image, (pooled, winners)) in images {
        for py in 0..pool_h {
            for group in (0..filters).step_by(GROUP) {
                for px in (0..pool_w).step_by(ROW_PAIR_PIXELS / 2) {
                    let windows = (ROW_PAIR_PIXELS / 2).min(pool_w - px);
                    // SAFETY: every tap of the block lies in the padded
                    // image; its windows lie in the pooled image.
                    unsafe {
                        let x = image.as_ptr().add(2 * py * s.row_len + 2 * px * w.channels);
                        let (k, b) = (kernel.as_ptr().add(group), bias.as_ptr().add(group));
                        let (block, sums) = ((2 * windows, w.k_w), &mut sums);
                        by_size_and_width!(block, wide_two_row_sums(s, x, k, b, sums), 2 4 6 8);
                        for i in 0..windows {
                            let [top, bottom] = &sums;
                            let (value, won) = pool_window(
                                (top[2 * i], top[2 * i + 1]),
                                (bottom[2 * i], bottom[2 * i + 1]),
                            );
                            let at = (py * pool_w + px + i) * filters + group;
                            _mm512_storeu_ps(pooled.as_mut_ptr().add(at), value);
                            let winners = winners.as_mut_ptr().add(at).cast();
                            _mm_storeu_si128(winners, _mm512_cvtepi32_epi8(won));
                        }
                    }
                }
            }
        }
    }
}

/// Each padded image of a chunk with its pooled output and winners.
fn with_pooled_outputs<'a>(
    s: &Shape,
    padded: &'a [f32],
    (pooled, winners): (&'a mut [f32], &'a mut [u8]),
) -> impl Iterator<Item = (&'a [f32], (&'a mut [f32], &'a mut [u8]))> {
    let len = (s.w.out_h / 2) * (s.w.out_w / 2) * s.filters;
    let outputs = pooled
        .chunks_exact_mut(len)
        .zip(winners.chunks_exact_mut(len));
    padded.chunks_exact(padded_len(&s.w)).zip(outputs)
}

/// Pixels per block of the two-row wide kernel: its `2 · 8` sums and up
/// to `8 + KW - 1` broadcast inputs fit in the 32 registers.
const ROW_PAIR_PIXELS: usize = 8;

/// The sums of a block of pixels in two neighbouring output rows.
type WideRowPairSums = [[__m512; ROW_PAIR_PIXELS]; 2];

/// `P` pixels (at most [`ROW_PAIR_PIXELS`]) of output rows `oy` and
/// `oy + 1`, one group of 16 filters, into `sums[0]` and `sums[1]`: `x` at
/// the top row's first window, `kernel` and `bias` at the group's first
/// filter. As [`sums_kw`] (same order of taps per sum), but each input
/// value is broadcast once for both rows, and the 16 independent sums keep
/// both FMA units busy.
///
/// # Safety
/// As [`sums_kw`] (`KW == k_w`, `kernel` and `bias` at filter `group` with
/// `group + 16 <= filters`), for two rows: every tap of both rows' `P`
/// pixels is readable from `x`, `k_h · row_len + (P + KW - 1) · channels`
/// values (so `oy + 1 < out_h`).
#[target_feature(enable = "avx512f")]
unsafe fn wide_two_row_sums<const P: usize, const KW: usize>(
    s: &Shape,
    x: *const f32,
    kernel: *const f32,
    bias: *const f32,
    sums: &mut WideRowPairSums,
) {
    const { assert!(P <= ROW_PAIR_PIXELS && P + KW - 1 <= ROW_BLOCK_INPUTS) };
    let (channels, filters, k_h) = (s.w.channels, s.filters, s.w.k_h);
    unsafe {
        let mut top = [_mm512_loadu_ps(bias); P];
        let mut bottom = top;
        // Input row `r` is kernel row `r` of the top output row and kernel
        // row `r - 1` of the bottom one.
        for r in 0..=k_h {
            let x = x.add(r * s.row_len);
            for c in 0..channels {
                let mut inputs = [_mm512_setzero_ps(); ROW_BLOCK_INPUTS];
                for (i, v) in inputs[..P + KW - 1].iter_mut().enumerate() {
                    *v = _mm512_set1_ps(*x.add(i * channels + c));
                }
                let weights = |ky: usize, kx: usize| {
                    let tap = ky * s.row_taps + kx * channels + c;
                    _mm512_loadu_ps(kernel.add(tap * filters))
                };
                add_input_row::<P, KW, 1>((r, k_h), &inputs, weights, (&mut top, &mut bottom));
            }
        }
        sums[0][..P].copy_from_slice(&top);
        sums[1][..P].copy_from_slice(&bottom);
    }
}

/// The kernel and bias gradients of a chunk, written.
///
/// # Safety
/// The CPU supports AVX-512F; `d_kernel` holds at least the kernel's
/// `patch_len · filters` values and `d_bias` at least `filters` (both are
/// written through pointers). `padded` and `dy` should hold the same images
/// (whole padded images and whole output gradients: the loops stop at the
/// shorter). That the layer is wide is asserted.
#[target_feature(enable = "avx512f")]
pub unsafe fn kernel_grad(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    d_kernel: &mut [f32],
    d_bias: &mut [f32],
) {
    assert!(!s.narrow(), "the wide kernels write 16 filters at a time");
    let d_kernel = d_kernel.as_mut_ptr();
    // Two groups of 16 filters at once where there are two left: each
    // broadcast input value then feeds two FMAs, which keeps the loads
    // from limiting the loop (one group: 13 loads per 12 FMAs).
    let mut group = 0;
    while group < s.filters {
        let pair = s.filters - group >= 2 * GROUP;
        for ky in 0..s.w.k_h {
            for first in (0..s.row_taps).step_by(MAX_BLOCK) {
                let taps = MAX_BLOCK.min(s.row_taps - first);
                let at = (ky, first, group);
                let bias = bias_output(d_bias.as_mut_ptr(), ky, first);
                if pair {
                    unsafe { unrolled!(taps, grad_two_groups(s, padded, dy, (d_kernel, bias), at)) }
                } else {
                    unsafe { unrolled!(taps, grad(s, padded, dy, (d_kernel, bias), at)) }
                }
            }
        }
        group += if pair { 2 * GROUP } else { GROUP };
    }
}

/// Taps `first..first + T` of kernel row `ky`, filters `group..group +
/// 16`: `at = (ky, first, group)`; and, unless `bias` is null, the sums of
/// `dy` for the group's bias gradient.
///
/// # Safety
/// The CPU supports AVX-512F; `ky < k_h`, `first + T <= row_taps` and
/// `group + 16 <= filters` (the reads of `padded` and `dy` then stay inside
/// each image's); `d_kernel` is writable for the kernel's `patch_len ·
/// filters` values, and `bias` is null or writable for `filters` values;
/// neither overlaps `padded` or `dy`.
#[target_feature(enable = "avx512f")]
unsafe fn grad<const T: usize>(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    out: (*mut f32, *mut f32),
    at: (usize, usize, usize),
) {
    unsafe { grad_groups::<T, 1>(s, padded, dy, out, at) }
}

/// [`grad`] for filters `group..group + 32`: two vectors of sums per tap.
///
/// # Safety
/// As [`grad`], with `group + 32 <= filters`.
#[target_feature(enable = "avx512f")]
unsafe fn grad_two_groups<const T: usize>(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    out: (*mut f32, *mut f32),
    at: (usize, usize, usize),
) {
    unsafe { grad_groups::<T, 2>(s, padded, dy, out, at) }
}

/// [`grad`] for `G` groups of 16 filters from `group` on: `G` vectors of
/// sums per tap, each broadcast input value feeding `G` FMAs.
///
/// # Safety
/// As [`grad`], with `group + 16 · G <= filters`.
// Sums indexed by (group, tap) read more plainly than zipped iterators.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
unsafe fn grad_groups<const T: usize, const G: usize>(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    (d_kernel, bias): (*mut f32, *mut f32),
    (ky, first, group): (usize, usize, usize),
) {
    let (w, filters) = (&s.w, s.filters);
    let mut acc = [[_mm512_setzero_ps(); T]; G];
    let (with_bias, mut bias_sum) = (!bias.is_null(), [_mm512_setzero_ps(); G]);
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(dy.chunks_exact(w.out_pixels() * filters));
    unsafe {
        for (image, dy) in images {
            for oy in 0..w.out_h {
                let x_row = image.as_ptr().add((oy + ky) * s.row_len + first);
                let dy_row = dy.as_ptr().add(oy * w.out_w * filters + group);
                for ox in 0..w.out_w {
                    let mut g = [_mm512_setzero_ps(); G];
                    // `dy` comes from memory on the first kernel row (the
                    // layer after wrote it); the hardware prefetcher
                    // falls behind (cifar10-cnn's first layer, one core:
                    // 3.8 -> 2.8 ms). 16 pixels ahead: 2 KB at 32 filters.
                    for j in 0..G {
                        let ahead = dy_row.wrapping_add((ox + 16) * filters + j * GROUP);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    }
                    for (j, g) in g.iter_mut().enumerate() {
                        *g = _mm512_loadu_ps(dy_row.add(ox * filters + j * GROUP));
                    }
                    if with_bias {
                        for j in 0..G {
                            bias_sum[j] = _mm512_add_ps(bias_sum[j], g[j]);
                        }
                    }
                    let x = x_row.add(ox * w.channels);
                    for t in 0..T {
                        let v = _mm512_set1_ps(*x.add(t));
                        for j in 0..G {
                            acc[j][t] = _mm512_fmadd_ps(v, g[j], acc[j][t]);
                        }
                    }
                }
            }
        }
        let out = d_kernel.add((ky * s.row_taps + first) * filters + group);
        for t in 0..T {
            for j in 0..G {
                _mm512_storeu_ps(out.add(t * filters + j * GROUP), acc[j][t]);
            }
        }
        if with_bias {
            for j in 0..G {
                _mm512_storeu_ps(bias.add(group + j * GROUP), bias_sum[j]);
            }
        }
    }
}

// Grey images (one input channel) with up to 8 filters use pixel pairs:
// lane `2f` holds filter `f` of output pixel `ox`, lane `2f + 1` that of
// `ox + 1`. The two input values a pair needs at a tap sit side by side in
// the image row, so one 64-bit broadcast load puts them in every lane pair;
// the weights are laid out to match (`W[tap, f]` twice). Nothing is copied.

/// Output pixels per narrow block: 8 pairs.
const PAIRS: usize = 8;
/// f32 lanes per vector.
const LANES: usize = 16;

/// Scratch values the pair kernels need: interleaved weights (or kernel
/// gradient sums) and bias.
pub fn pair_scratch_len(s: &Shape) -> usize {
    (s.w.patch_len() + 1) * LANES
}

/// `values[f]` at lanes `2f` and `2f + 1` for `f < values.len()`, zeros after.
fn interleaved(values: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (f, &v) in values.iter().enumerate() {
        out[2 * f] = v;
        out[2 * f + 1] = v;
    }
}

/// The kernel's taps and the bias, each interleaved into `scratch` for
/// the pair kernels: `(weights, bias)`.
fn interleave_kernel<'a>(
    s: &Shape,
    kernel: &[f32],
    bias: &[f32],
    scratch: &'a mut [f32],
) -> (&'a [f32], &'a [f32]) {
    let (weights, bias2) = scratch.split_at_mut(s.w.patch_len() * LANES);
    for (tap, out) in kernel
        .chunks_exact(s.filters)
        .zip(weights.chunks_exact_mut(LANES))
    {
        interleaved(tap, out);
    }
    interleaved(bias, bias2);
    (weights, bias2)
}

/// The index that gathers a pair's lanes into NHWC order: the first
/// pixel's filters, then the second's.
///
/// # Safety
/// The CPU supports AVX-512F (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx512f")]
fn to_pixels(filters: usize) -> __m512i {
    let mut index = [0i32; LANES];
    for f in 0..filters {
        index[f] = 2 * f as i32;
        index[filters + f] = 2 * f as i32 + 1;
    }
    // SAFETY: `index` has LANES values.
    unsafe { _mm512_loadu_si512(index.as_ptr().cast()) }
}

/// Both input values of a pair at `x`, in every lane pair.
///
/// # Safety
/// The CPU supports AVX-512F; two `f32` values are readable at `x` (any
/// alignment).
#[target_feature(enable = "avx512f")]
unsafe fn pair_at(x: *const f32) -> __m512 {
    // SAFETY: the caller vouches for two values at `x`.
    unsafe { _mm512_castpd_ps(_mm512_set1_pd(x.cast::<f64>().read_unaligned())) }
}

/// The forward pass of a chunk of padded grey images.
///
/// # Safety
/// The CPU supports AVX-512F and `scratch` holds at least
/// [`pair_scratch_len`] values (the interleaved bias is read as one whole
/// vector). The images are whole chunks of `padded` and `y`; that the
/// layer is narrow grey is asserted.
#[target_feature(enable = "avx512f")]
pub unsafe fn pair_forward(
    s: &Shape,
    padded: &[f32],
    kernel: &[f32],
    bias: &[f32],
    y: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(
        s.narrow() && s.w.channels == 1,
        "pairs need a narrow grey layer"
    );
    let (w, filters) = (&s.w, s.filters);
    let (weights, bias2) = interleave_kernel(s, kernel, bias, scratch);
    let index = to_pixels(filters);
    let out_row = w.out_w * filters;
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(y.chunks_exact_mut(w.out_h * out_row));
    let mut sums = [[_mm512_setzero_ps(); ROW_PAIR_PAIRS]; 2];
    for (image, out) in images {
        // Rows two at a time where the kernel width allows, then the odd one.
        let row_pairs = if two_rows_apply(w) { w.out_h / 2 } else { 0 };
        for (oy, rows) in out
            .chunks_exact_mut(2 * out_row)
            .take(row_pairs)
            .enumerate()
        {
            let oy = 2 * oy;
            let (top, bottom) = rows.split_at_mut(out_row);
            for ox in (0..w.out_w).step_by(2 * ROW_PAIR_PAIRS) {
                let pixels = (2 * ROW_PAIR_PAIRS).min(w.out_w - ox);
                let pairs = pixels.div_ceil(2);
                // SAFETY: as below; `sums` holds `pairs` pairs of each row.
                unsafe {
                    let x = image.as_ptr().add(oy * s.row_len + ox);
                    let (k, b) = (weights.as_ptr(), bias2.as_ptr());
                    let (block, sums) = ((pairs, w.k_w), &mut sums);
                    by_size_and_width!(block, two_row_sums(s, x, k, b, sums), 1 2 3 4 5 6);
                    for (sums, row) in sums.iter().zip([&mut *top, &mut *bottom]) {
                        let y = row.as_mut_ptr().add(ox * filters);
                        store_pairs(s, &sums[..pairs], index, y, pixels);
                    }
                }
            }
        }
        let rest = out
            .chunks_exact_mut(out_row)
            .enumerate()
            .skip(2 * row_pairs);
        for (oy, row) in rest {
            for ox in (0..w.out_w).step_by(2 * PAIRS) {
                let pixels = (2 * PAIRS).min(w.out_w - ox);
                // SAFETY: every tap of every pair lies in the padded image
                // (a pair's second pixel reads at most the spare column);
                // the stores are masked to the row's pixels.
                unsafe {
                    let x = image.as_ptr().add(oy * s.row_len + ox);
                    let y = row.as_mut_ptr().add(ox * filters);
                    let k = (weights.as_ptr(), bias2.as_ptr(), index);
                    match (pixels, w.k_w) {
                        (16, 5) => pair_sums_kw::<PAIRS, 5>(s, x, k, y, pixels),
                        (16, 3) => pair_sums_kw::<PAIRS, 3>(s, x, k, y, pixels),
                        _ => unrolled!(pixels.div_ceil(2), pair_sums(s, x, k, y, pixels)),
                    }
                }
            }
        }
    }
}

/// `P` pairs of output pixels (`pixels` of them real): `x` points at the
/// first pixel's window; `weights` and `bias` are interleaved.
///
/// # Safety
/// The CPU supports AVX-512F and the layer is narrow grey. Every tap of
/// the `P` pairs, and the value after the last, is readable from `x`:
/// `(k_h - 1) · row_len + 2 · P + k_w - 1` values of one padded image.
/// `weights` holds the interleaved kernel (`patch_len · 16` values) and
/// `bias` the interleaved bias (16), as `interleave_kernel` lays them out.
/// `pixels` is `2 · P - 1` or `2 · P`, and `out` is writable for `pixels ·
/// filters` values, overlapping none of the inputs.
#[target_feature(enable = "avx512f")]
unsafe fn pair_sums<const P: usize>(
    s: &Shape,
    x: *const f32,
    (weights, bias, index): (*const f32, *const f32, __m512i),
    out: *mut f32,
    pixels: usize,
) {
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias); P];
        for ky in 0..s.w.k_h {
            let (x, taps) = (x.add(ky * s.row_len), weights.add(ky * s.row_taps * LANES));
            for t in 0..s.row_taps {
                let w = _mm512_loadu_ps(taps.add(t * LANES));
                for (p, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(pair_at(x.add(2 * p + t)), w, *acc);
                }
            }
        }
        store_pairs(s, &acc, index, out, pixels);
    }
}

/// Stores the sums of pixel pairs (`pixels` of them real, from `out` on),
/// each pair's lanes put back in NHWC order by `index`.
///
/// # Safety
/// The CPU supports AVX-512F; `filters <= 8` (a pair's two pixels fill at
/// most 16 lanes); no pair starts past the real pixels (`2 · (acc.len() -
/// 1) <= pixels`), and `out` is writable for `pixels · filters` values (or
/// `2 · acc.len() · filters`, if fewer).
#[target_feature(enable = "avx512f")]
unsafe fn store_pairs(s: &Shape, acc: &[__m512], index: __m512i, out: *mut f32, pixels: usize) {
    let filters = s.filters;
    for (p, acc) in acc.iter().enumerate() {
        let in_pixels = _mm512_permutexvar_ps(index, *acc);
        let mask = first_lanes(filters * (pixels - 2 * p).min(2));
        // SAFETY: the caller's row holds `pixels` pixels from `out`.
        unsafe { _mm512_mask_storeu_ps(out.add(2 * p * filters), mask, relu(s, in_pixels)) };
    }
}

/// As [`pair_sums`] for a kernel `KW` wide: the `2P + KW - 2` input pairs
/// of each kernel row are loaded once each and kept in registers for all
/// `KW` taps (pair `p` at tap `kx` reads pair `2p + kx`).
///
/// # Safety
/// As [`pair_sums`], with `KW == k_w`.
#[target_feature(enable = "avx512f")]
unsafe fn pair_sums_kw<const P: usize, const KW: usize>(
    s: &Shape,
    x: *const f32,
    (weights, bias, index): (*const f32, *const f32, __m512i),
    out: *mut f32,
    pixels: usize,
) {
    const { assert!(2 * P + KW - 2 <= 24) };
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias); P];
        for ky in 0..s.w.k_h {
            let (x, taps) = (x.add(ky * s.row_len), weights.add(ky * KW * LANES));
            let mut inputs = [_mm512_setzero_ps(); 24];
            for (i, v) in inputs[..2 * P + KW - 2].iter_mut().enumerate() {
                *v = pair_at(x.add(i));
            }
            for kx in 0..KW {
                let w = _mm512_loadu_ps(taps.add(kx * LANES));
                for (p, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(inputs[2 * p + kx], w, *acc);
                }
            }
        }
        store_pairs(s, &acc, index, out, pixels);
    }
}

/// The forward pass of a chunk of padded grey images followed by relu and
/// 2x2 max pooling (stride 2, no padding), without storing the
/// convolution's output: per pooled value in `pooled`, its window's winner
/// (0 1 / 2 3, the first maximum in row-major order, as
/// `kernels::pool::max_pool_forward`) in `winners`. A window pair of the
/// two-row kernel is a pooling window's two columns, both rows in
/// registers: the pool costs a few shuffles and comparisons per window.
/// The winners are those of the convolution's output *before* relu; where
/// the pooled value is zero they differ from the winners after relu, but
/// there the gradient is zero (max pooling applies relu's derivative).
///
/// # Safety
/// The CPU supports AVX-512F and `scratch` holds at least
/// [`pair_scratch_len`] values (the interleaved bias is read as one whole
/// vector). The images are whole chunks of `padded`, `pooled` and
/// `winners`; that the layer is narrow grey and `two_rows_apply` is
/// asserted.
#[target_feature(enable = "avx512f")]
pub unsafe fn pair_forward_pooled(
    s: &Shape,
    padded: &[f32],
    (kernel, bias): (&[f32], &[f32]),
    (pooled, winners): (&mut [f32], &mut [u8]),
    scratch: &mut [f32],
) {
    assert!(
        s.narrow() && s.w.channels == 1 && two_rows_apply(&s.w),
        "pooled pairs need a narrow grey layer"
    );
    let (w, filters) = (&s.w, s.filters);
    let (weights, bias2) = interleave_kernel(s, kernel, bias, scratch);
    let (pool_h, pool_w) = (w.out_h / 2, w.out_w / 2);
    let images = with_pooled_outputs(s, padded, (pooled, winners));
    let pack = pack_maxima(filters);
    let mut sums = [[_mm512_setzero_ps(); ROW_PAIR_PAIRS]; 2];
    for (image, (pooled, winners)) in images {
        for py in 0..pool_h {
            for px in (0..pool_w).step_by(ROW_PAIR_PAIRS) {
                let windows = ROW_PAIR_PAIRS.min(pool_w - px);
                let at = (py * pool_w + px) * filters;
                // SAFETY: every tap of the block lies in the padded image;
                // the block's windows lie in the pooled image.
                unsafe {
                    let x = image.as_ptr().add(2 * py * s.row_len + 2 * px);
                    let (k, b) = (weights.as_ptr(), bias2.as_ptr());
                    let (block, sums) = ((windows, w.k_w), &mut sums);
                    by_size_and_width!(block, two_row_sums(s, x, k, b, sums), 1 2 3 4 5 6);
                    let out = (pooled.as_mut_ptr().add(at), winners.as_mut_ptr().add(at));
                    pool_pairs((filters, pack), sums, windows, out);
                }
            }
        }
    }
}

/// The index that packs two pooled windows' maxima side by side: lane
/// 2f holds filter f's left pixel, lane 2f + 1 its right one, and the
/// maxima land in the even lanes.
///
/// # Safety
/// The CPU supports AVX-512F (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx512f")]
fn pack_maxima(filters: usize) -> __m512i {
    let mut index = [0i32; LANES];
    for (f, i) in index.iter_mut().enumerate().take(2 * filters) {
        *i = if f < filters {
            2 * f as i32
        } else {
            (LANES + 2 * (f - filters)) as i32
        };
    }
    // SAFETY: `index` has LANES values.
    unsafe { _mm512_loadu_si512(index.as_ptr().cast()) }
}

/// Max-pools the first `windows` pairs of a row pair's sums, then relu:
/// `filters` values (and winners) per window from `out` on, packed by
/// `index` ([`pack_maxima`]).
///
/// # Safety
/// The CPU supports AVX-512F; `filters <= 8` (two windows fill at most 16
/// lanes); `pooled` is writable for `windows · filters` values and
/// `winners` for as many bytes, neither overlapping `sums`.
#[target_feature(enable = "avx512f")]
unsafe fn pool_pairs(
    (filters, index): (usize, __m512i),
    sums: &RowPairSums,
    windows: usize,
    (pooled, winners): (*mut f32, *mut u8),
) {
    unsafe {
        for first in (0..windows).step_by(2) {
            let both = windows - first >= 2;
            let (a, a_won) = pool_pair_window(sums[0][first], sums[1][first]);
            let (b, b_won) = if both {
                pool_pair_window(sums[0][first + 1], sums[1][first + 1])
            } else {
                (a, a_won)
            };
            let mask = first_lanes(filters * if both { 2 } else { 1 });
            let values = _mm512_permutex2var_ps(a, index, b);
            let won = _mm512_permutex2var_epi32(a_won, index, b_won);
            let at = first * filters;
            _mm512_mask_storeu_ps(pooled.add(at), mask, values);
            _mm512_mask_cvtepi32_storeu_epi8(winners.add(at).cast(), mask, won);
        }
    }
}

/// One 2x2 window per filter from its top and bottom pixel pairs, in the
/// pair layout: in the even lanes, `max(window, 0)` and the winning
/// position (see [`pool_window`]).
///
/// # Safety
/// The CPU supports AVX-512F (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx512f")]
fn pool_pair_window(top: __m512, bottom: __m512) -> (__m512, __m512i) {
    // Each lane pair swapped: the right pixel in the even lane.
    const SWAP: i32 = 0b10_11_00_01;
    pool_window(
        (top, _mm512_permute_ps::<SWAP>(top)),
        (bottom, _mm512_permute_ps::<SWAP>(bottom)),
    )
}

/// One 2x2 window per lane from its four pixels, `(left, right)` of each
/// row: `max(window, 0)` and the winning position 0 1 / 2 3 by the rule of
/// `kernels::pool` (the right pixel wins only if strictly larger, then the
/// bottom row only if strictly larger than the top).
///
/// # Safety
/// The CPU supports AVX-512F (code compiled without it calls this in `unsafe`).
#[target_feature(enable = "avx512f")]
fn pool_window(
    (top_left, top_right): (__m512, __m512),
    (bottom_left, bottom_right): (__m512, __m512),
) -> (__m512, __m512i) {
    let right_top = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(top_right, top_left);
    let right_bottom = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(bottom_right, bottom_left);
    let t = _mm512_mask_blend_ps(right_top, top_left, top_right);
    let b = _mm512_mask_blend_ps(right_bottom, bottom_left, bottom_right);
    let below = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(b, t);
    let max = _mm512_mask_blend_ps(below, t, b);
    let at_top = _mm512_maskz_mov_epi32(right_top, _mm512_set1_epi32(1));
    let at_bottom =
        _mm512_mask_blend_epi32(right_bottom, _mm512_set1_epi32(2), _mm512_set1_epi32(3));
    let won = _mm512_mask_blend_epi32(below, at_top, at_bottom);
    (_mm512_max_ps(max, _mm512_setzero_ps()), won)
}

/// Pairs per block of the two-row kernel: its `2 · 6` sums and `2 · 6 +
/// KW - 2` input pairs fit in the 32 registers.
const ROW_PAIR_PAIRS: usize = 6;

/// The sums of a block of pairs in two neighbouring output rows.
type RowPairSums = [[__m512; ROW_PAIR_PAIRS]; 2];

/// Whether the two-row kernels ([`two_row_sums`], [`wide_two_row_sums`]) handle the kernel width.
pub fn two_rows_apply(w: &super::Window2d) -> bool {
    matches!(w.k_w, 3 | 5)
}

/// `P` pairs (at most [`ROW_PAIR_PAIRS`]) of output rows `oy` and `oy +
/// 1` into `sums[0]` and `sums[1]`, `x` at the top row's first window.
/// Each input row is loaded once for both output rows, and the block holds
/// twelve independent sums, enough to keep both FMA units busy (a single
/// row of 4 pairs, the end of a 24-pixel row, waits on FMA latency).
/// Each sum adds its taps in the order [`pair_sums`] does.
///
/// # Safety
/// As [`pair_sums_kw`] (narrow grey, `KW == k_w`, interleaved `weights` and
/// `bias`), for two rows: every tap of both rows' `P` pairs, and the value
/// after the last, is readable from `x`, `k_h · row_len + 2 · P + KW - 1`
/// values (so `oy + 1 < out_h`).
#[target_feature(enable = "avx512f")]
unsafe fn two_row_sums<const P: usize, const KW: usize>(
    s: &Shape,
    x: *const f32,
    weights: *const f32,
    bias: *const f32,
    sums: &mut RowPairSums,
) {
    const { assert!(P <= ROW_PAIR_PAIRS && 2 * P + KW - 2 <= ROW_BLOCK_INPUTS) };
    let k_h = s.w.k_h;
    unsafe {
        let mut top = [_mm512_loadu_ps(bias); P];
        let mut bottom = top;
        // Input row `r` is kernel row `r` of the top output row and kernel
        // row `r - 1` of the bottom one.
        for r in 0..=k_h {
            let x = x.add(r * s.row_len);
            let mut inputs = [_mm512_setzero_ps(); ROW_BLOCK_INPUTS];
            for (i, v) in inputs[..2 * P + KW - 2].iter_mut().enumerate() {
                *v = pair_at(x.add(i));
            }
            let weights =
                |ky: usize, kx: usize| _mm512_loadu_ps(weights.add((ky * KW + kx) * LANES));
            add_input_row::<P, KW, 2>((r, k_h), &inputs, weights, (&mut top, &mut bottom));
        }
        sums[0][..P].copy_from_slice(&top);
        sums[1][..P].copy_from_slice(&bottom);
    }
}

/// The kernel gradient of a chunk of padded grey images, written.
///
/// # Safety
/// The CPU supports AVX-512F and `scratch` holds at least
/// [`pair_scratch_len`] values (the bias sums are written as one whole
/// vector after the kernel's). `padded` and `dy` should hold the same
/// images (whole padded images and whole output gradients: the loops stop
/// at the shorter); that the layer is narrow grey is asserted.
#[target_feature(enable = "avx512f")]
pub unsafe fn pair_kernel_grad(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    d_kernel: &mut [f32],
    d_bias: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(
        s.narrow() && s.w.channels == 1,
        "pairs need a narrow grey layer"
    );
    let (w, filters) = (&s.w, s.filters);
    // Interleaved sums: the kernel's taps, then the bias.
    let (sums, bias_sums) = scratch.split_at_mut(w.patch_len() * LANES);
    for ky in 0..w.k_h {
        for first in (0..s.row_taps).step_by(MAX_BLOCK) {
            let taps = MAX_BLOCK.min(s.row_taps - first);
            let at = sums[(ky * s.row_taps + first) * LANES..].as_mut_ptr();
            let bias = bias_output(bias_sums.as_mut_ptr(), ky, first);
            // SAFETY: the block's taps lie inside the padded images for
            // every pair, and `sums` holds them.
            unsafe { unrolled!(taps, pair_grad(s, padded, dy, (at, bias), (ky, first))) }
        }
    }
    sum_pair_lanes(filters, sums, bias_sums, d_kernel, d_bias);
}

/// The kernel and bias gradients from interleaved sums: each pair summed
/// its two pixels in neighbouring lanes.
fn sum_pair_lanes(
    filters: usize,
    sums: &[f32],
    bias_sums: &[f32],
    d_kernel: &mut [f32],
    d_bias: &mut [f32],
) {
    let outputs = d_kernel
        .chunks_exact_mut(filters)
        .chain([&mut d_bias[..filters]]);
    for (d, sum) in outputs.zip(sums.chunks_exact(LANES).chain([&bias_sums[..LANES]])) {
        for (f, d) in d.iter_mut().enumerate() {
            *d = sum[2 * f] + sum[2 * f + 1];
        }
    }
}

/// Values per image of an output gradient in pair layout: one vector per
/// pixel pair of each output row, filter `f` of the pair's left pixel in
/// lane `2f`, of its right pixel in lane `2f + 1`.
fn pair_dy_len(s: &Shape) -> usize {
    s.w.out_h * s.w.out_w.div_ceil(2) * LANES
}

/// Scratch values [`pair_kernel_grad_pooled`] needs: the interleaved sums
/// and one image's gradient in pair layout (aligned to whole cache lines).
pub fn pooled_grad_scratch_len(s: &Shape) -> usize {
    pair_scratch_len(s) + LANES + pair_dy_len(s)
}

/// The kernel gradient of a chunk of padded grey images (as
/// [`pair_kernel_grad`]) for a layer whose output went through relu and
/// 2x2 max pooling ([`pair_forward_pooled`]), from the pool's side: its
/// output gradient `grad`, output `pooled` and `winners`. The layer's
/// output gradient is never stored in NHWC: each image's in turn is laid
/// out in pairs in `scratch` (a pooled gradient goes to its window's
/// winner if the pooled value is positive), already interleaved for the
/// kernel and small enough to stay in L1; then its kernel rows are summed
/// a few at a time (up to 15 sums in registers, so that one load of the
/// gradient serves three rows of taps).
///
/// # Safety
/// The CPU supports AVX-512F. The rest is asserted: a narrow grey layer
/// that `two_rows_apply`, `padded` whole padded images, `grad`, `pooled`
/// and `winners` their pooled outputs, and `scratch`
/// [`pooled_grad_scratch_len`] values.
#[target_feature(enable = "avx512f")]
pub unsafe fn pair_kernel_grad_pooled(
    s: &Shape,
    padded: &[f32],
    (grad, pooled, winners): (&[f32], &[f32], &[u8]),
    (d_kernel, d_bias): (&mut [f32], &mut [f32]),
    scratch: &mut [f32],
) {
    let (w, filters) = (&s.w, s.filters);
    assert!(s.narrow() && w.channels == 1 && two_rows_apply(w));
    let images = padded.len() / padded_len(w);
    let pooled_len = (w.out_h / 2) * (w.out_w / 2) * filters;
    assert_eq!(padded.len(), images * padded_len(w));
    assert!(grad.len() == images * pooled_len && pooled.len() == grad.len());
    assert_eq!(winners.len(), grad.len());
    assert_eq!(scratch.len(), pooled_grad_scratch_len(s));
    let (sums, dy) = scratch.split_at_mut(pair_scratch_len(s));
    // Values to skip to the next 64-byte boundary (f32s are 4-aligned).
    let aligned = (64 - dy.as_ptr() as usize % 64) % 64 / 4;
    let dy = &mut dy[aligned..][..pair_dy_len(s)];
    sums.fill(0.0);
    let (sums, bias_sums) = sums.split_at_mut(w.patch_len() * LANES);
    let rows_per_block = (MAX_ROW_BLOCK_TAPS / w.k_w).max(1);
    // Each image's winners run on to the end of the chunk, so that a
    // 16-byte read of its last windows' stays inside the slice.
    let winners = (0..images).map(|i| &winners[i * pooled_len..]);
    let per_image = padded.chunks_exact(padded_len(w)).zip(
        grad.chunks_exact(pooled_len)
            .zip(pooled.chunks_exact(pooled_len))
            .zip(winners),
    );
    for (image, ((grad, pooled), winners)) in per_image {
        // SAFETY: one image's pooled values and pair-layout gradient; the
        // blocks' taps lie inside the padded image for every pair, and
        // `sums` holds them.
        unsafe {
            pool_grad_to_pairs(s, (grad, pooled, winners), dy);
            for first in (0..w.k_h).step_by(rows_per_block) {
                let rows = rows_per_block.min(w.k_h - first);
                let at = sums[first * w.k_w * LANES..].as_mut_ptr();
                let bias = bias_output(bias_sums.as_mut_ptr(), first, 0);
                pair_rows_grad(s, (image, dy), (at, bias), first, rows);
            }
        }
    }
    sum_pair_lanes(filters, sums, bias_sums, d_kernel, d_bias);
}

/// The most sums [`pair_rows_grad`] keeps in registers.
const MAX_ROW_BLOCK_TAPS: usize = 15;

/// One image's output gradient in pair layout (see [`pair_dy_len`]; `dy`
/// aligned to 64 bytes) from its pooled gradient: zero except at each
/// window's winner, which gets the window's gradient if its pooled value
/// is positive (relu's derivative). `winners` starts at the image's and
/// may run on past them.
///
/// # Safety
/// The CPU supports AVX-512F; `filters <= 8`; `grad` and `pooled` hold at
/// least the image's `(out_h / 2) · (out_w / 2) · filters` values; `dy` is
/// aligned to 64 bytes (the stores are aligned) and holds at least
/// [`pair_dy_len`] values.
#[target_feature(enable = "avx512f")]
unsafe fn pool_grad_to_pairs(
    s: &Shape,
    (grad, pooled, winners): (&[f32], &[f32], &[u8]),
    dy: &mut [f32],
) {
    let (w, filters) = (&s.w, s.filters);
    let (pool_h, pool_w, pairs) = (w.out_h / 2, w.out_w / 2, w.out_w.div_ceil(2));
    if w.out_h % 2 == 1 || w.out_w % 2 == 1 {
        // A row or a column that no window covers.
        dy.fill(0.0);
    }
    let lane: [i32; LANES] = std::array::from_fn(|i| i as i32);
    unsafe {
        let lane = _mm512_loadu_si512(lane.as_ptr().cast());
        // Filter `f` to lanes 2f and 2f + 1; which of the pair each lane is.
        let spread = _mm512_srli_epi32::<1>(lane);
        let right = _mm512_and_si512(lane, _mm512_set1_epi32(1));
        let bottom_right = _mm512_add_epi32(right, _mm512_set1_epi32(2));
        let m = first_lanes(filters);
        for py in 0..pool_h {
            for px in 0..pool_w {
                let at = (py * pool_w + px) * filters;
                let g = _mm512_maskz_loadu_ps(m, grad.as_ptr().add(at));
                let y = _mm512_maskz_loadu_ps(m, pooled.as_ptr().add(at));
                let won = load_winners(winners, at);
                let g = _mm512_permutexvar_ps(spread, g);
                let y = _mm512_permutexvar_ps(spread, y);
                let won = _mm512_permutexvar_epi32(spread, won);
                let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, _mm512_setzero_ps());
                let top = _mm512_mask_cmpeq_epi32_mask(positive, won, right);
                let bottom = _mm512_mask_cmpeq_epi32_mask(positive, won, bottom_right);
                let out = dy.as_mut_ptr().add((2 * py * pairs + px) * LANES);
                _mm512_store_ps(out, _mm512_maskz_mov_ps(top, g));
                _mm512_store_ps(out.add(pairs * LANES), _mm512_maskz_mov_ps(bottom, g));
            }
        }
    }
}

/// Kernel rows `first..first + rows` (at most [`MAX_ROW_BLOCK_TAPS`]
/// taps) of one image, added to `sums` (interleaved) and, unless `bias` is
/// null, its bias sums; `dy` the image's gradient in pair layout.
///
/// # Safety
/// As [`rows_grad`] with `R = rows` (a `(rows, k_w)` it does not list
/// panics).
#[target_feature(enable = "avx512f")]
unsafe fn pair_rows_grad(
    s: &Shape,
    image: (&[f32], &[f32]),
    sums: (*mut f32, *mut f32),
    first: usize,
    rows: usize,
) {
    macro_rules! by_size {
        ($(($r:literal, $kw:literal))*) => {
            match (rows, s.w.k_w) {
                $(($r, $kw) => rows_grad::<$r, $kw>(s, image, sums, first),)*
                _ => unreachable!("{rows} kernel rows {} wide", s.w.k_w),
            }
        };
    }
    unsafe { by_size!((1, 5)(2, 5)(3, 5)(1, 3)(2, 3)(3, 3)(4, 3)(5, 3)) }
}

/// [`pair_rows_grad`] for `R` kernel rows `KW` wide.
///
/// # Safety
/// The CPU supports AVX-512F; `KW == k_w` and `first + R <= k_h` (the reads
/// of `image`, one padded image, then stay inside it: a pair's second pixel
/// reads at most the spare column); `dy` is aligned to 64 bytes (the loads
/// are aligned; the lengths of `image` and `dy` are asserted); `sums` is
/// readable and writable for `R · KW · 16` values and `bias` null or
/// readable and writable for 16, neither overlapping `image` or `dy`.
#[target_feature(enable = "avx512f")]
unsafe fn rows_grad<const R: usize, const KW: usize>(
    s: &Shape,
    (image, dy): (&[f32], &[f32]),
    (sums, bias): (*mut f32, *mut f32),
    first: usize,
) {
    const { assert!(R * KW <= MAX_ROW_BLOCK_TAPS) };
    let (w, pairs) = (&s.w, s.w.out_w.div_ceil(2));
    assert!(image.len() == padded_len(w) && dy.len() == pair_dy_len(s));
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); KW]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            for (kx, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_loadu_ps(sums.add((r * KW + kx) * LANES));
            }
        }
        let with_bias = !bias.is_null();
        let mut bias_sum = if with_bias {
            _mm512_loadu_ps(bias)
        } else {
            _mm512_setzero_ps()
        };
        for oy in 0..w.out_h {
            let x_row = image.as_ptr().add((oy + first) * s.row_len);
            let dy_row = dy.as_ptr().add(oy * pairs * LANES);
            for q in 0..pairs {
                let g = _mm512_load_ps(dy_row.add(q * LANES));
                if with_bias {
                    bias_sum = _mm512_add_ps(bias_sum, g);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = x_row.add(r * s.row_len + 2 * q);
                    for (kx, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(pair_at(x.add(kx)), g, *acc);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (kx, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(sums.add((r * KW + kx) * LANES), *acc);
            }
        }
        if with_bias {
            _mm512_storeu_ps(bias, bias_sum);
        }
    }
}

/// Taps `first..first + T` of kernel row `ky`, summed over the chunk into
/// `sums` (interleaved, `LANES` values per tap), written; and, unless
/// `bias` is null, the sums of `dy` (interleaved too).
///
/// # Safety
/// The CPU supports AVX-512F; `filters <= 8`, `ky < k_h` and `first + T <=
/// row_taps` (the reads of `padded` and `dy` then stay inside each
/// image's: a pair's second pixel reads at most the spare column); `sums`
/// is writable for `T · 16` values and `bias` null or writable for 16,
/// neither overlapping `padded` or `dy`.
#[target_feature(enable = "avx512f")]
unsafe fn pair_grad<const T: usize>(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    (sums, bias): (*mut f32, *mut f32),
    (ky, first): (usize, usize),
) {
    let (w, filters) = (&s.w, s.filters);
    // Gathers a pair's two NHWC pixels into interleaved lanes.
    let mut index = [0i32; LANES];
    for f in 0..filters {
        index[2 * f] = f as i32;
        index[2 * f + 1] = (filters + f) as i32;
    }
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(dy.chunks_exact(w.out_pixels() * filters));
    unsafe {
        let index = _mm512_loadu_si512(index.as_ptr().cast());
        let mut acc = [_mm512_setzero_ps(); T];
        let (with_bias, mut bias_sum) = (!bias.is_null(), _mm512_setzero_ps());
        for (image, dy) in images {
            for oy in 0..w.out_h {
                let x_row = image.as_ptr().add((oy + ky) * s.row_len + first);
                let dy_row = dy.as_ptr().add(oy * w.out_w * filters);
                for ox in (0..w.out_w).step_by(2) {
                    let len = filters * (w.out_w - ox).min(2);
                    let g = _mm512_maskz_loadu_ps(first_lanes(len), dy_row.add(ox * filters));
                    let g = _mm512_permutexvar_ps(index, g);
                    if with_bias {
                        bias_sum = _mm512_add_ps(bias_sum, g);
                    }
                    let x = x_row.add(ox);
                    for (t, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(pair_at(x.add(t)), g, *acc);
                    }
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(sums.add(t * LANES), *acc);
        }
        if with_bias {
            _mm512_storeu_ps(bias, bias_sum);
        }
    }
}

/// Vectors of an input-gradient window that [`input_grad`] keeps in
/// registers: `k_h` kernel rows of `ceil(k_w · channels / 16)` each.
pub const MAX_WINDOW_VECTORS: usize = MAX_BLOCK;

/// The input gradient of one image, added into `dx` (rows of `row_len`
/// values, the first window at `dx[0]`): for each output pixel `p`, the
/// window `dx[p + (ky, kx), c] += Σ_f dy[p, f] · kernel[ky, kx, c, f]`,
/// summed in registers over the *non-zero* `dy[p, f]` only (behind max
/// pooling and relu at most one pixel in four has a gradient per filter,
/// so this does a fraction of a dense product's work), then added to the
/// window's `k_h` rows. `kernel_t` is the kernel transposed: per filter,
/// per kernel row, its `k_w · channels` taps padded with zeros to
/// `row_vectors` whole vectors.
///
/// # Safety
/// The CPU supports AVX-512F. The rest is asserted: the layer is wide
/// (`filters` a multiple of 16) with `k_h · row_vectors <=
/// MAX_WINDOW_VECTORS`; `dy` is one image's output gradient, `kernel_t`
/// holds `filters · k_h · row_vectors · 16` values, and `dx` every window:
/// `(out_h - 1 + k_h) · row_len` values with `row_len >= (out_w - 1 + k_w)
/// · channels`.
#[target_feature(enable = "avx512f")]
pub unsafe fn input_grad(s: &Shape, dy: &[f32], kernel_t: &[f32], dx: &mut [f32], row_len: usize) {
    let (w, filters, vectors) = (&s.w, s.filters, row_vectors(&s.w));
    let window_vectors = w.k_h * vectors;
    assert!(window_vectors <= MAX_WINDOW_VECTORS && filters.is_multiple_of(GROUP));
    assert!(kernel_t.len() >= filters * window_vectors * LANES);
    assert_eq!(dy.len(), w.out_pixels() * filters);
    assert!(row_len >= (w.out_w - 1 + w.k_w) * w.channels);
    assert!(dx.len() >= (w.out_h - 1 + w.k_h) * row_len);
    // Where each vector of a window goes, and which of its lanes are taps.
    let mut offsets = [0; MAX_WINDOW_VECTORS];
    let mut masks = [0; MAX_WINDOW_VECTORS];
    for j in 0..window_vectors {
        let (ky, v) = (j / vectors, j % vectors);
        offsets[j] = ky * row_len + v * LANES;
        masks[j] = first_lanes((s.row_taps - v * LANES).min(LANES));
    }
    for (p, g) in dy.chunks_exact(filters).enumerate() {
        let window = (p / w.out_w) * row_len + (p % w.out_w) * w.channels;
        // SAFETY: as vouched by the caller, lengths asserted; the window
        // of every output pixel lies inside `dx`.
        unsafe {
            let dx = dx.as_mut_ptr().add(window);
            unrolled!(
                window_vectors,
                add_window(filters, g, kernel_t, dx, &offsets, &masks)
            )
        }
    }
}

/// One output pixel's share of [`input_grad`]: `V` vectors of sums.
///
/// # Safety
/// The CPU supports AVX-512F; `filters` is a multiple of 16 and at most
/// `g.len()`; `kernel_t` holds at least `filters · V · 16` values; for each
/// `j < V`, the lanes of `masks[j]` from `dx + offsets[j]` are readable and
/// writable, and overlap neither `g` nor `kernel_t`.
#[target_feature(enable = "avx512f")]
unsafe fn add_window<const V: usize>(
    filters: usize,
    g: &[f32],
    kernel_t: &[f32],
    dx: *mut f32,
    offsets: &[usize; MAX_WINDOW_VECTORS],
    masks: &[__mmask16; MAX_WINDOW_VECTORS],
) {
    unsafe {
        let mut acc = [_mm512_setzero_ps(); V];
        let mut any = false;
        for group in (0..filters).step_by(GROUP) {
            let values = _mm512_loadu_ps(g.as_ptr().add(group));
            let mut nonzero = _mm512_cmpneq_ps_mask(values, _mm512_setzero_ps());
            any |= nonzero != 0;
            while nonzero != 0 {
                let f = group + nonzero.trailing_zeros() as usize;
                nonzero &= nonzero - 1;
                let v = _mm512_set1_ps(*g.get_unchecked(f));
                let w = kernel_t.as_ptr().add(f * V * LANES);
                for (j, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(v, _mm512_loadu_ps(w.add(j * LANES)), *acc);
                }
            }
        }
        if !any {
            return;
        }
        for (j, acc) in acc.iter().enumerate() {
            let (at, m) = (dx.add(offsets[j]), masks[j]);
            _mm512_mask_storeu_ps(at, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, at), *acc));
        }
    }
}
