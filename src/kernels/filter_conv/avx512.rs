//! The AVX-512 kernels of `filter_conv`, for wide layers: 16 filters are
//! one vector, so a block holds twice the sums of the AVX2 kernels and each
//! instruction does twice the work.

use super::{GROUP, MAX_BLOCK, Shape, bias_output, padded_len, row_vectors};
use std::arch::x86_64::*;

/// Output pixels per block of the forward pass.
const PIXELS: usize = 8;

/// The mask of the first `n` (at most 16) lanes.
fn first_lanes(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// `max(sums, 0)` if the layer fuses relu into its forward pass.
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
/// AVX-512F present; `image` is one padded image, `kernel` and `bias` the
/// layer's, `row` one whole output row; the layer is wide.
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

/// The kernel and bias gradients of a chunk, written.
///
/// # Safety
/// AVX-512F present; `padded` and `dy` hold the same images, `d_kernel`
/// has the kernel's length and `d_bias` one value per filter; the layer is wide.
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
    for group in (0..s.filters).step_by(GROUP) {
        for ky in 0..s.w.k_h {
            for first in (0..s.row_taps).step_by(MAX_BLOCK) {
                let taps = MAX_BLOCK.min(s.row_taps - first);
                let at = (ky, first, group);
                let bias = bias_output(d_bias.as_mut_ptr(), ky, first);
                unsafe { unrolled!(taps, grad(s, padded, dy, (d_kernel, bias), at)) }
            }
        }
    }
}

/// Taps `first..first + T` of kernel row `ky`, filters `group..group +
/// 16`: `at = (ky, first, group)`; and, unless `bias` is null, the sums of
/// `dy` for the group's bias gradient.
#[target_feature(enable = "avx512f")]
unsafe fn grad<const T: usize>(
    s: &Shape,
    padded: &[f32],
    dy: &[f32],
    (d_kernel, bias): (*mut f32, *mut f32),
    (ky, first, group): (usize, usize, usize),
) {
    let (w, filters) = (&s.w, s.filters);
    let mut acc = [_mm512_setzero_ps(); T];
    let (with_bias, mut bias_sum) = (!bias.is_null(), _mm512_setzero_ps());
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(dy.chunks_exact(w.out_pixels() * filters));
    unsafe {
        for (image, dy) in images {
            for oy in 0..w.out_h {
                let x_row = image.as_ptr().add((oy + ky) * s.row_len + first);
                let dy_row = dy.as_ptr().add(oy * w.out_w * filters + group);
                for ox in 0..w.out_w {
                    let g = _mm512_loadu_ps(dy_row.add(ox * filters));
                    if with_bias {
                        bias_sum = _mm512_add_ps(bias_sum, g);
                    }
                    let x = x_row.add(ox * w.channels);
                    for (t, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(t)), g, *acc);
                    }
                }
            }
        }
        let out = d_kernel.add((ky * s.row_taps + first) * filters + group);
        for (t, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(t * filters), *acc);
        }
        if with_bias {
            _mm512_storeu_ps(bias.add(group), bias_sum);
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

/// The index that gathers a pair's lanes into NHWC order: the first
/// pixel's filters, then the second's.
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
#[target_feature(enable = "avx512f")]
unsafe fn pair_at(x: *const f32) -> __m512 {
    // SAFETY: the caller vouches for two values at `x`.
    unsafe { _mm512_castpd_ps(_mm512_set1_pd(x.cast::<f64>().read_unaligned())) }
}

/// The forward pass of a chunk of padded grey images.
///
/// # Safety
/// AVX-512F present; the lengths as `filter_conv::forward` asserts, rows
/// padded with a spare column; `scratch` has [`pair_scratch_len`] values.
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
    let (weights, bias2) = scratch.split_at_mut(w.patch_len() * LANES);
    for (tap, out) in kernel
        .chunks_exact(filters)
        .zip(weights.chunks_exact_mut(LANES))
    {
        interleaved(tap, out);
    }
    interleaved(bias, bias2);
    let index = to_pixels(filters);
    let out_row = w.out_w * filters;
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(y.chunks_exact_mut(w.out_h * out_row));
    for (image, out) in images {
        for (oy, row) in out.chunks_exact_mut(out_row).enumerate() {
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

/// The kernel gradient of a chunk of padded grey images, written.
///
/// # Safety
/// AVX-512F present; the lengths as `filter_conv::kernel_grad` asserts,
/// rows padded with a spare column; `scratch` has [`pair_scratch_len`] values.
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
    // Each pair summed its two pixels in neighbouring lanes.
    let outputs = d_kernel
        .chunks_exact_mut(filters)
        .chain([&mut d_bias[..filters]]);
    for (d, sum) in outputs.zip(sums.chunks_exact(LANES).chain([&bias_sums[..LANES]])) {
        for (f, d) in d.iter_mut().enumerate() {
            *d = sum[2 * f] + sum[2 * f + 1];
        }
    }
}

/// Taps `first..first + T` of kernel row `ky`, summed over the chunk into
/// `sums` (interleaved, `LANES` values per tap), written; and, unless
/// `bias` is null, the sums of `dy` (interleaved too).
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
/// AVX-512F present; the layer is wide (`filters` a multiple of 16) with
/// `k_h · row_vectors <= MAX_WINDOW_VECTORS`; `dy` is one image's output
/// gradient, `kernel_t` `filters · k_h · row_vectors · 16` values, and
/// `dx` holds every window: `(out_h - 1 + k_h) · row_len` values with
/// `row_len >= (out_w - 1 + k_w) · channels`.
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
