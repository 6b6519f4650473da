//! Winograd F(4x4, 3x3), F(6x6, 3x3) and F(2x2, 5x5): 3x3 and 5x5
//! stride-1 convolutions with 4x, 5x and 2.8x fewer multiplications than
//! any direct method.
//!
//! A 6x6 tile `d` of the input and a 3x3 kernel `g` give a 4x4 tile of the
//! output (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2015); with a 5x5 kernel, the same 6x6 tile gives a 2x2 one;
//! an 8x8 tile and a 3x3 kernel, a 6x6 one (see [`Scheme`] for which runs
//! where):
//!
//! ```text
//! y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! Summed over the input channels, the element-wise product becomes 36
//! matrix products (64 for 8x8 tiles), one per position `ξ` of the
//! transformed tile:
//! `M_ξ (tiles x filters) = V_ξ (tiles x channels) · U_ξ (channels x
//! filters)`, where `V = Bᵀ d B` per tile and channel and `U = G g Gᵀ` per
//! channel and filter. That is 36 multiply-adds per 16 outputs and
//! channel-filter pair, against 144 for direct convolution (3x3; 64 per
//! 36 outputs against 324 with 8x8 tiles), or per 4 outputs against 100
//! (5x5); the transforms are additions and a few multiplications by
//! small constants.
//!
//! The two 6x6 algorithms interpolate at the same six points (0, ±1, ±2,
//! ∞), so they share the input transform `Bᵀ`; `G` is the points'
//! Vandermonde matrix (r columns) with the same row scales, and `Aᵀ` its
//! transpose (m rows). (F(6x6, 3x3) adds ±1/2; its matrices are written
//! out by its transforms.)
//!
//! ```text
//! F(4x4, 3x3): Aᵀ = [1 1  1 1  1 0]     F(2x2, 5x5): Aᵀ = [1 1  1 1  1 0]
//!                   [0 1 -1 2 -2 0]                       [0 1 -1 2 -2 1]
//!                   [0 1  1 4  4 0]
//!                   [0 1 -1 8 -8 1]
//! ```
//!
//! The gradients are the same algorithm transposed (`y` is bilinear in
//! `g` and `d`): with `Z = A dY Aᵀ` the transformed output gradient,
//!
//! ```text
//! dg = Gᵀ [ Σ over tiles (Bᵀ d B) ⊙ Z ] G      (36 products Vᵀ_ξ · Z_ξ)
//! dd = B [ Σ over filters U ⊙ Z ] Bᵀ           (36 products Z_ξ · Uᵀ_ξ)
//! ```
//!
//! and each tile's `dd` goes into the input gradient: written by the first
//! tile that reaches a pixel, added by the others (tiles overlap by `r -
//! 1` rows and columns: 2 for 3x3 kernels, 4 for 5x5), so the input
//! gradient is never zeroed first. The kernel-gradient sum stays in the
//! transformed domain over all the tiles of a chunk, so its inverse
//! transform runs once per chunk. The output
//! gradient is read once, by its transform, which also sums the bias
//! gradient and can apply relu's derivative and undo 2x2 max pooling on
//! the way (see [`OutputGrad`]): neither needs a pass over memory of its
//! own.
//!
//! Tiles are processed in blocks small enough that a block's transformed
//! values stay in a core's L2 cache between the transforms and the
//! products. Everything is NHWC, so the transforms work on 16 channels (or
//! filters) at a time, as SIMD lanes; [`forward`] and [`backward`] run
//! them compiled for AVX-512 or AVX2 where the CPU has it, with the same
//! arithmetic on every path (a fused multiply-add is fused everywhere), so
//! every path gives the same bits.
//!
//! Precision: the transforms multiply by up to 16 and divide by up to 24
//! (F(6x6, 3x3): 32 and 90), so results differ from direct convolution
//! by more than rounding alone: at worst 3e-6 of the sum of the absolute
//! products for the output, 1e-5 for F(2x2, 5x5)'s kernel gradient and
//! 2e-5 for F(6x6, 3x3)'s (the tests hold them to 2e-5, and F(6x6, 3x3)
//! to 1e-4), far below what training notices.

mod simd;

use super::Window2d;
use super::gemm::{Mat, PackedMats, matmul, matmul_packed};
use super::prefetch;
use super::scratch::Scratch;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use simd::{Avx2, Avx512};
use simd::{LANES, Portable, Simd};
use std::ops::Range;

/// `$f::<A, M, R, S>($args)` (or `$f::<V, A, M, R, S>`, given `V`) for
/// the algorithm `S` of `$scheme`, F(M x M, R x R) over tiles of side A.
macro_rules! for_scheme {
    ($scheme:expr, $f:ident $(::<$v:ty>)? ($args:expr)) => {
        match $scheme {
            Scheme::F4x4 => $f::<$($v,)? 6, 4, 3, F4x4>($args),
            Scheme::F6x6 => $f::<$($v,)? 8, 6, 3, F6x6>($args),
            Scheme::F2x2 => $f::<$($v,)? 6, 2, 5, F2x2>($args),
        }
    };
}

/// Bytes a block's transformed values may take: most of a 2 MB L2 (but
/// see [`MIN_BLOCK`]).
const BLOCK_BYTES: usize = 1 << 20;

/// Tiles ahead of the one a transform works on whose tensor values it
/// prefetches: far enough for memory to answer in the meantime.
const PREFETCH_AHEAD: usize = 2;

/// Prefetches (see [`prefetch`]) pixel rows `rows` and columns `cols` of
/// image `image` of `tensor`, images of `height` x `width` pixels of
/// `depth` values.
#[inline(always)]
fn prefetch_pixels<T>(
    tensor: &[T],
    (image, (height, width), depth): (usize, (usize, usize), usize),
    (rows, cols): (Range<usize>, Range<usize>),
) {
    if cols.is_empty() {
        return;
    }
    let image_at = image * height * width * depth;
    for y in rows.start..rows.end.min(height) {
        let row = image_at + y * width * depth;
        let range = row + cols.start * depth..row + cols.end.min(width) * depth;
        prefetch(tensor, range);
    }
}

/// Values from one position's plane of a transformed block to the next:
/// `count` tiles of `width` values, and one cache line more, so that the
/// planes a tile's transform writes do not all map to the same sets of
/// the L1 cache (at 64 tiles of 32 channels they would: 8 KB apart).
fn plane(count: usize, width: usize) -> usize {
    count * width + LANES
}

/// Tiles per block at least: enough rows for the products to use each
/// transformed kernel value many times (AlexNet's 384 x 384 kernels are
/// 21 MB transformed).
const MIN_BLOCK: usize = 64;

/// Whether a layer of window `w` and `filters` filters runs on these
/// kernels: 3x3 or 5x5, stride 1, adjacent taps, and enough channels and
/// filters that the products are worth their transforms (a first layer
/// over RGB pixels is not).
pub fn applies(w: &Window2d, filters: usize) -> bool {
    let shape_fits = matches!((w.k_h, w.k_w), (3, 3) | (5, 5))
        && (w.stride_h, w.stride_w) == (1, 1)
        && !w.is_dilated()
        && w.out_h > 0
        && w.out_w > 0;
    shape_fits && (16..=512).contains(&w.channels) && (16..=512).contains(&filters)
}

/// The Winograd algorithm a layer runs: the side of its output tiles,
/// and of the transformed tiles they come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// F(4x4, 3x3): 6x6 transformed tiles, 36 products per 16 outputs.
    F4x4,
    /// F(6x6, 3x3): 8x8 transformed tiles, 64 products per 36 outputs
    /// (1.27x fewer than F(4x4, 3x3), but larger constants in the
    /// transforms: several times the rounding error).
    F6x6,
    /// F(2x2, 5x5): 6x6 transformed tiles, 36 products per 4 outputs.
    F2x2,
}

impl Scheme {
    /// The scheme for a layer of window `w` (see [`applies`]), or, with
    /// `pooled`, for its outputs that a 2x2 max pooling reads: F(6x6,
    /// 3x3) where it transforms at least a quarter fewer values than
    /// F(4x4, 3x3) (a 30x30 output: 25 tiles of 64 values, not 64 tiles
    /// of 36, 31% fewer; cifar10-cnn's conv2d_1 on one core, forward and
    /// backward 10.4/21.4 → 6.6/14.7 ms). Its larger transforms and
    /// kernel-gradient sums take back a smaller saving: the 12x12 outputs
    /// pooled after a 13x13 layer (4 tiles of 64, not 9 of 36, 21% fewer)
    /// went from 4.2/10.4 to 4.1/12.0 ms. A tie (32x32, 15x15, 13x13)
    /// keeps the more precise F(4x4, 3x3).
    pub fn of(w: &Window2d, pooled: bool) -> Self {
        if w.k_h == 5 {
            return Scheme::F2x2;
        }
        let cost = |scheme: Scheme| {
            let (tiles_h, tiles_w) = tile_grid(w, scheme.output_side(), pooled);
            tiles_h * tiles_w * scheme.positions()
        };
        if 4 * cost(Scheme::F6x6) <= 3 * cost(Scheme::F4x4) {
            Scheme::F6x6
        } else {
            Scheme::F4x4
        }
    }

    /// Side of the transformed tile: m + r - 1 for output tiles of side
    /// m and kernels of side r.
    fn side(self) -> usize {
        match self {
            Scheme::F6x6 => 8,
            Scheme::F4x4 | Scheme::F2x2 => 6,
        }
    }

    /// Positions of a transformed tile: one matrix product each.
    fn positions(self) -> usize {
        self.side() * self.side()
    }

    /// Side of an output tile.
    fn output_side(self) -> usize {
        match self {
            Scheme::F4x4 => 4,
            Scheme::F6x6 => 6,
            Scheme::F2x2 => 2,
        }
    }
}

/// Tiles per column and per row of an image, with output tiles of side
/// `m`: over the whole output, or (`pooled`) over the outputs a 2x2 max
/// pooling reads (a 13x13 output pools 12x12 of them, in 9 tiles of 4x4
/// instead of 16).
fn tile_grid(w: &Window2d, m: usize, pooled: bool) -> (usize, usize) {
    let (rows, cols) = tiled_outputs(w, pooled);
    (rows.div_ceil(m), cols.div_ceil(m))
}

/// Output rows and columns the tiles are for: all, or (`pooled`) those
/// a 2x2 max pooling reads.
fn tiled_outputs(w: &Window2d, pooled: bool) -> (usize, usize) {
    if pooled {
        let (pooled_h, pooled_w) = pooled_side(w);
        (2 * pooled_h, 2 * pooled_w)
    } else {
        (w.out_h, w.out_w)
    }
}

/// Images a parallel chunk needs: enough for a full block of tiles (one
/// image of CIFAR's 32x32 has 64 tiles; one of AlexNet's 13x13 layers,
/// 16; with `pooled`, the pooled 12x12 outputs of a 13x13 layer, 4 of
/// 6x6), and two at least: the kernel gradient's sum in the transformed
/// domain (36 x channels x filters, 3.5 MB for AlexNet's conv2) is
/// written and transformed back once per chunk (two images a chunk:
/// conv2's backward pass 121–125 → 115–116 ms on one core, vgg-small's
/// 99 → 93 ms).
pub fn images_per_block(w: &Window2d, pooled: bool) -> usize {
    let (tiles_h, tiles_w) = tile_grid(w, Scheme::of(w, pooled).output_side(), pooled);
    MIN_BLOCK.div_ceil((tiles_h * tiles_w).max(1)).max(2)
}

/// The tiling of one layer's images.
#[derive(Clone, Copy)]
struct Tiling {
    w: Window2d,
    filters: usize,
    scheme: Scheme,
    /// Side of an output tile (see [`Scheme::output_side`]).
    m: usize,
    /// Tiles per column and per row of an image.
    tiles_h: usize,
    tiles_w: usize,
    /// Tiles per block.
    block: usize,
    /// How many input rows and columns, from the top left, lie under the
    /// window of some output the tiles are for. Tiles may reach further
    /// (past the last output, where they are cut), but what lies there
    /// moves no output: its gradient is 0, not the rounding error of
    /// sums that cancel (an 8x8 output in 6x6 tiles reaches 14 inputs,
    /// of which 10 matter).
    reach: (usize, usize),
}

impl Tiling {
    /// The tiling of `images` images by `scheme`, in blocks of at most
    /// `BLOCK_BYTES` of `values_per_tile` transformed values per
    /// position, as even as can be (a last block of a few tiles makes
    /// slow products). With `pooled` (2x2 max pooling after the layer),
    /// only the outputs the pooling reads are tiled (see [`tile_grid`]).
    fn new(
        w: &Window2d,
        filters: usize,
        images: usize,
        scheme: Scheme,
        (values_per_tile, pooled): (usize, bool),
    ) -> Self {
        let per_tile = scheme.positions() * values_per_tile * std::mem::size_of::<f32>();
        let m = scheme.output_side();
        let (tiles_h, tiles_w) = tile_grid(w, m, pooled);
        let tiles = (images * tiles_h * tiles_w).max(1);
        let largest = (BLOCK_BYTES / per_tile).clamp(MIN_BLOCK, 256);
        let (rows, cols) = tiled_outputs(w, pooled);
        let reach = |outputs: usize, side: usize, pad: usize, input: usize| {
            (outputs + side - 1).saturating_sub(pad).min(input)
        };
        Tiling {
            w: *w,
            filters,
            scheme,
            m,
            tiles_h,
            tiles_w,
            block: tiles.div_ceil(tiles.div_ceil(largest)),
            reach: (
                reach(rows, w.k_h, w.pad_top, w.in_h),
                reach(cols, w.k_w, w.pad_left, w.in_w),
            ),
        }
    }

    /// Positions of a transformed tile.
    fn positions(&self) -> usize {
        self.scheme.positions()
    }

    /// Whether channels and filters come in whole groups of 16 lanes.
    fn whole_lanes(&self) -> bool {
        self.w.channels.is_multiple_of(LANES) && self.filters.is_multiple_of(LANES)
    }

    fn tiles_per_image(&self) -> usize {
        self.tiles_h * self.tiles_w
    }

    /// (image, top output row, left output column) of tile `t`.
    fn tile(&self, t: usize) -> (usize, usize, usize) {
        let per_image = self.tiles_per_image();
        let (image, within) = (t / per_image, t % per_image);
        (
            image,
            within / self.tiles_w * self.m,
            within % self.tiles_w * self.m,
        )
    }

    /// Zeros the input gradient `dx` (whole images) past the
    /// [reach](Self::reach).
    fn zero_unreached(&self, dx: &mut [f32]) {
        let w = &self.w;
        let (rows, cols) = self.reach;
        let row_len = w.in_w * w.channels;
        for image in dx.chunks_exact_mut(w.in_len()) {
            let (reached, rest) = image.split_at_mut(rows * row_len);
            rest.fill(0.0);
            for row in reached.chunks_exact_mut(row_len) {
                row[cols * w.channels..].fill(0.0);
            }
        }
    }

    /// Prefetches what tile `t` of `tensor` (whole input images, or
    /// input gradients) will read or write of its `A` x `A` input window,
    /// inside the first `bounds` rows and columns: the columns past those
    /// of the tile to its left, which reached the rest.
    #[inline(always)]
    fn prefetch_input<const A: usize>(&self, tensor: &[f32], t: usize, bounds: (usize, usize)) {
        let w = &self.w;
        if t >= tensor.len() / w.in_len() * self.tiles_per_image() {
            return;
        }
        let (image, oy, ox) = self.tile(t);
        let seen = if ox > 0 { A - self.m } else { 0 };
        let rows = oy.saturating_sub(w.pad_top)..(oy + A).saturating_sub(w.pad_top);
        let cols = (ox + seen).saturating_sub(w.pad_left)..(ox + A).saturating_sub(w.pad_left);
        let (rows, cols) = (
            rows.start..rows.end.min(bounds.0),
            cols.start..cols.end.min(bounds.1),
        );
        prefetch_pixels(tensor, (image, (w.in_h, w.in_w), w.channels), (rows, cols));
    }

    /// Prefetches what tile `t` will read or write of `tensor`, a value
    /// per filter of each output pixel, or (`pooled`) of each pooled one:
    /// the output, its gradient or the winners of its pooling.
    #[inline(always)]
    fn prefetch_output<T>(&self, tensor: &[T], t: usize, pooled: bool) {
        let (height, width) = match pooled {
            true => pooled_side(&self.w),
            false => (self.w.out_h, self.w.out_w),
        };
        let image_len = height * width * self.filters;
        if image_len == 0 || t >= tensor.len() / image_len * self.tiles_per_image() {
            return;
        }
        let (image, oy, ox) = self.tile(t);
        // A pooled tile of side m (even, at an even corner) reads m / 2
        // pooled rows and columns.
        let per = if pooled { 2 } else { 1 };
        let (rows, cols) = (oy / per..(oy + self.m) / per, ox / per..(ox + self.m) / per);
        prefetch_pixels(tensor, (image, (height, width), self.filters), (rows, cols));
    }

    /// Where the `A` x `A` input window of the tile at output pixel
    /// `(oy, ox)` lies in an image: for each row `r` of the window, the
    /// offset of image row `oy + r - pad_top`, and for each column `s`,
    /// that of pixel `ox + s - pad_left` in a row; `None` in the padding
    /// and past the first `bounds` rows and columns (the image's, or the
    /// [reach](Self::reach)).
    #[inline(always)]
    fn input_window<const A: usize>(
        &self,
        (oy, ox): (usize, usize),
        (bound_h, bound_w): (usize, usize),
    ) -> ([Option<usize>; A], [Option<usize>; A]) {
        let w = &self.w;
        let rows = std::array::from_fn(|r| {
            let y = (oy + r).checked_sub(w.pad_top)?;
            (y < bound_h).then_some(y * w.in_w * w.channels)
        });
        let cols = std::array::from_fn(|s| {
            let x = (ox + s).checked_sub(w.pad_left)?;
            (x < bound_w).then_some(x * w.channels)
        });
        (rows, cols)
    }
}

/// A kernel in the Winograd domain, ready for the products: `U_ξ = (G g
/// Gᵀ)_ξ` for every channel and filter, one matrix per position `ξ` of a
/// transformed tile, packed; and the scheme whose `G` made it.
pub struct TransformedKernel {
    scheme: Scheme,
    mats: PackedMats,
}

impl TransformedKernel {
    /// The scheme this kernel was transformed for.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
}

/// `kernel` (Keras layout: r x r x channels x filters) transformed by
/// `scheme`: a plane of channels x filters per position or, `transposed`
/// (for the input gradient), of filters x channels. Computed in
/// parallel, then packed once for all the blocks of tiles of a pass.
pub fn transform_kernel(
    w: &Window2d,
    filters: usize,
    kernel: &[f32],
    transposed: bool,
    scheme: Scheme,
) -> TransformedKernel {
    assert!(applies(w, filters), "a layer these kernels compute");
    assert_eq!(
        scheme == Scheme::F2x2,
        w.k_h == 5,
        "a scheme for this kernel"
    );
    let channels = w.channels;
    assert_eq!(
        kernel.len(),
        w.k_h * w.k_w * channels * filters,
        "the layer's kernel"
    );
    // Transposed, the kernel is first turned into filters x channels per
    // tap, a block at a time: reading it across (a filter's channels lie
    // `filters` apart) would wait on the cache for every value.
    let turned = transposed.then(|| {
        let mut turned = Scratch::take_unzeroed();
        turned.resize(kernel.len(), 0.0);
        let taps = kernel.par_chunks(channels * filters);
        turned
            .par_chunks_mut(channels * filters)
            .zip(taps)
            .for_each(|(dst, src)| transpose(src, channels, filters, dst));
        turned
    });
    let (values, rows, cols) = match &turned {
        Some(turned) => (&turned[..], filters, channels),
        None => (kernel, channels, filters),
    };
    // Row r of `planes` holds row r of U_ξ for every ξ in turn.
    let positions = scheme.positions();
    let mut planes = Scratch::take_unzeroed();
    planes.resize(rows * positions * cols, 0.0);
    let kernel = KernelRows { values, rows, cols };
    planes
        .par_chunks_mut(positions * cols)
        .enumerate()
        .for_each(|(row, out)| kernel.transform_row(scheme, row, out));
    let mats = PackedMats::new(positions, rows, cols, |xi| {
        Mat::columns(&planes, rows, positions * cols, xi * cols, cols)
    });
    TransformedKernel { scheme, mats }
}

/// `dst` (`cols` x `rows`) = `src` (`rows` x `cols`) transposed, in
/// blocks of 16 x 16 that stay in L1.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const SIDE: usize = 16;
    for r0 in (0..rows).step_by(SIDE) {
        for c0 in (0..cols).step_by(SIDE) {
            for r in r0..(r0 + SIDE).min(rows) {
                for c in c0..(c0 + SIDE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// A kernel as `rows` x `cols` values per tap: channels x filters as Keras
/// stores it, or filters x channels (turned for the input gradient).
#[derive(Clone, Copy)]
struct KernelRows<'a> {
    values: &'a [f32],
    rows: usize,
    cols: usize,
}

impl KernelRows<'_> {
    /// Row `row` of every `U_ξ`, into `out` (positions x cols), on the
    /// fastest path this CPU has.
    fn transform_row(self, scheme: Scheme, row: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if super::has_avx512() {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { self.transform_row_avx512(scheme, row, out) };
            }
            if super::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA.
                return unsafe { self.transform_row_avx2(scheme, row, out) };
            }
        }
        self.transform_row_on::<Portable>(scheme, row, out)
    }

    /// [`Self::transform_row`] compiled for AVX-512F.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_row_avx512(self, scheme: Scheme, row: usize, out: &mut [f32]) {
        self.transform_row_on::<Avx512>(scheme, row, out)
    }

    /// [`Self::transform_row`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_row_avx2(self, scheme: Scheme, row: usize, out: &mut [f32]) {
        self.transform_row_on::<Avx2>(scheme, row, out)
    }

    #[inline(always)]
    fn transform_row_on<V: Simd>(self, scheme: Scheme, row: usize, out: &mut [f32]) {
        for_scheme!(scheme, kernel_row::<V>((self, row, out)))
    }

    /// Tap `tap`'s values at `row`, columns `col..col + n`.
    #[inline(always)]
    fn load<V: Simd>(self, tap: usize, row: usize, col: usize, n: usize) -> V {
        let plane = self.rows * self.cols;
        load(
            &self.values[tap * plane..][..plane],
            row * self.cols + col,
            n,
        )
    }
}

/// [`KernelRows::transform_row`] for kernels of side `R` into
/// transformed tiles of side `A`, by the kernel transform of `S`.
#[inline(always)]
fn kernel_row<V: Simd, const A: usize, const M: usize, const R: usize, S: Algorithm<A, M, R>>(
    (kernel, row, out): (KernelRows, usize, &mut [f32]),
) {
    let mut grid = Grid::<V, R, A>::new();
    for col in (0..kernel.cols).step_by(LANES) {
        let n = LANES.min(kernel.cols - col);
        grid.transform::<S::Kernel>(
            |r, s| kernel.load(r * R + s, row, col, n),
            |a, b, value| store(out, (a * A + b) * kernel.cols + col, n, value),
        );
    }
}

/// Where a forward pass puts its output.
#[derive(Debug)]
pub enum Output<'a> {
    /// The convolution's output, `filters` values per pixel.
    Plain(&'a mut [f32]),
    /// Only its 2x2 max pooling, stride 2 (over the top-left `2 * (h /
    /// 2)` x `2 * (w / 2)` pixels), after relu: the pooled output `y` and
    /// each window's winner as `kernels::pool` records it (the first
    /// maximum, row by row). The convolution's own output is never
    /// stored. (Relu is required: [`OutputGrad::Pooled`] applies its
    /// derivative.)
    Pooled {
        y: &'a mut [f32],
        winners: &'a mut [u8],
    },
}

/// Rows and columns of the 2x2 max pooling (stride 2) of a layer's output.
fn pooled_side(w: &Window2d) -> (usize, usize) {
    (w.out_h / 2, w.out_w / 2)
}

/// Values per image of a layer's output (`filters` per pixel), or of its
/// 2x2 max pooling.
fn values_per_image(w: &Window2d, filters: usize, pooled: bool) -> usize {
    if pooled {
        let (pooled_h, pooled_w) = pooled_side(w);
        pooled_h * pooled_w * filters
    } else {
        w.out_pixels() * filters
    }
}

impl Output<'_> {
    /// How many values it holds per image of a layer of window `w`.
    fn image_len(&self, w: &Window2d, filters: usize) -> usize {
        values_per_image(w, filters, matches!(self, Output::Pooled { .. }))
    }

    /// How many values it holds (and winners, when pooled).
    fn len(&self) -> usize {
        match self {
            Output::Plain(y) => y.len(),
            Output::Pooled { y, winners } => {
                assert_eq!(winners.len(), y.len(), "a winner per pooled value");
                y.len()
            }
        }
    }
}

/// The forward pass of a chunk of images `x` into `out` (`filters` per
/// pixel): `y = x ⋆ kernel + bias`, then relu if asked for, then 2x2 max
/// pooling if `out` asks for it, by the scheme `u` was transformed for.
/// `u` is the kernel as [`transform_kernel`] gives it (not transposed);
/// `scratch` is working space.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    w: &Window2d,
    filters: usize,
    x: &[f32],
    u: &TransformedKernel,
    bias: &[f32],
    relu: bool,
    out: Output,
    scratch: &mut Vec<f32>,
) {
    let images = x.len() / w.in_len();
    assert!(applies(w, filters), "a layer these kernels compute");
    assert_eq!(out.len(), images * out.image_len(w, filters), "output size");
    let pooled = matches!(out, Output::Pooled { .. });
    assert!(relu || !pooled, "pooled outputs come after relu");
    let values_per_tile = w.channels + filters;
    let t = Tiling::new(w, filters, images, u.scheme, (values_per_tile, pooled));
    let planes = plane(t.block, w.channels) + plane(t.block, filters);
    let scratch = aligned(scratch, t.positions() * planes);
    let args = (t, x, &u.mats, bias, relu, out, scratch);
    #[cfg(target_arch = "x86_64")]
    {
        if super::has_avx512() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { for_scheme!(u.scheme, forward_avx512(args)) };
        }
        if super::has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { for_scheme!(u.scheme, forward_avx2(args)) };
        }
    }
    for_scheme!(u.scheme, forward_portable(args))
}

type ForwardArgs<'a> = (
    Tiling,
    &'a [f32],
    &'a PackedMats,
    &'a [f32],
    bool,
    Output<'a>,
    &'a mut [f32],
);

/// [`forward_blocks`] compiled for AVX-512F.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512<const A: usize, const M: usize, const R: usize, S: Algorithm<A, M, R>>(
    args: ForwardArgs,
) {
    forward_blocks::<Avx512, A, M, R, S>(args)
}

/// [`forward_blocks`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2<const A: usize, const M: usize, const R: usize, S: Algorithm<A, M, R>>(
    args: ForwardArgs,
) {
    forward_blocks::<Avx2, A, M, R, S>(args)
}

/// [`forward_blocks`] on any CPU.
fn forward_portable<const A: usize, const M: usize, const R: usize, S: Algorithm<A, M, R>>(
    args: ForwardArgs,
) {
    forward_blocks::<Portable, A, M, R, S>(args)
}

/// [`forward_blocks_of`], with the channels and filters in whole 16-lane
/// groups or not. (One function compiled per scheme and CPU: with all
/// the schemes in one, the compiler stopped inlining the transforms'
/// loads and stores, and the backward pass took half as long again.)
#[inline(always)]
fn forward_blocks<
    V: Simd,
    const A: usize,
    const M: usize,
    const R: usize,
    S: Algorithm<A, M, R>,
>(
    args: ForwardArgs,
) {
    if args.0.whole_lanes() {
        forward_blocks_of::<V, true, A, M, R, S>(args)
    } else {
        forward_blocks_of::<V, false, A, M, R, S>(args)
    }
}

/// Per block of tiles: transform the input, `A²` products, transform
/// back, by the algorithm `S`. (`FULL`: every channel and filter group
/// has 16 lanes.)
#[inline(always)]
fn forward_blocks_of<
    V: Simd,
    const FULL: bool,
    const A: usize,
    const M: usize,
    const R: usize,
    S: Algorithm<A, M, R>,
>(
    (t, x, u, bias, relu, mut out, scratch): ForwardArgs,
) {
    let (channels, filters) = (t.w.channels, t.filters);
    let (v, m) = scratch.split_at_mut(A * A * plane(t.block, channels));
    let tiles = x.len() / t.w.in_len() * t.tiles_per_image();
    for first in (0..tiles).step_by(t.block) {
        let count = t.block.min(tiles - first);
        let (v_plane, m_plane) = (plane(count, channels), plane(count, filters));
        transform_input::<V, FULL, A, S::Input>(&t, x, (first, count), v);
        for xi in 0..A * A {
            let v_xi = Mat::new(&v[xi * v_plane..][..count * channels], count, channels);
            matmul_packed(
                v_xi,
                u.get(xi),
                &mut m[xi * m_plane..][..count * filters],
                0.0,
            );
        }
        let block = (&t, &m[..], (first, count), bias, relu);
        transform_output::<V, FULL, A, M, S::Output>(block, &mut out);
    }
}

/// `V_ξ = (Bᵀ d B)_ξ` for tiles `first..first + count` of the images
/// `x`, into `v` (`A²` planes of tiles x channels, see [`plane`]), by
/// the input transform `T`.
#[inline(always)]
fn transform_input<V: Simd, const FULL: bool, const A: usize, T: Transform<A, A>>(
    t: &Tiling,
    x: &[f32],
    (first, count): (usize, usize),
    v: &mut [f32],
) {
    let channels = t.w.channels;
    let stride = plane(count, channels);
    let mut grid = Grid::<V, A, A>::new();
    for i in 0..count {
        t.prefetch_input::<A>(x, first + i + PREFETCH_AHEAD, (t.w.in_h, t.w.in_w));
        let (image, oy, ox) = t.tile(first + i);
        let image = &x[image * t.w.in_len()..][..t.w.in_len()];
        let (rows, cols) = t.input_window::<A>((oy, ox), (t.w.in_h, t.w.in_w));
        for c in (0..channels).step_by(LANES) {
            let n = if FULL { LANES } else { LANES.min(channels - c) };
            grid.transform::<T>(
                |r, s| match (rows[r], cols[s]) {
                    (Some(row), Some(col)) => load(image, row + col + c, n),
                    _ => V::zero(),
                },
                |a, b, value| store(v, (a * A + b) * stride + i * channels + c, n, value),
            );
        }
    }
}

/// `y = Aᵀ m A` (+ bias, relu) for tiles `first..` of `m` (`A²` x tiles x
/// filters), into `out`: `M` x `M` output tiles by the transform `T`; the
/// parts of edge tiles past the image are dropped. Pooled, each tile
/// holds whole 2x2 windows (`M` is even, and so is every tile's corner).
#[inline(always)]
fn transform_output<
    V: Simd,
    const FULL: bool,
    const A: usize,
    const M: usize,
    T: Transform<A, M>,
>(
    (t, m, (first, count), bias, relu): (&Tiling, &[f32], (usize, usize), &[f32], bool),
    out: &mut Output,
) {
    let filters = t.filters;
    let stride = plane(count, filters);
    let image_len = out.image_len(&t.w, filters);
    let mut grid = Grid::<V, A, M>::new();
    // One tile's output, for pooling.
    let mut tile = [[V::zero(); M]; M];
    for i in 0..count {
        let ahead = first + i + PREFETCH_AHEAD;
        match out {
            Output::Plain(y) => t.prefetch_output(y, ahead, false),
            Output::Pooled { y, winners } => {
                t.prefetch_output(y, ahead, true);
                t.prefetch_output(winners, ahead, true);
            }
        }
        let (image, oy, ox) = t.tile(first + i);
        let (rows, cols) = (M.min(t.w.out_h - oy), M.min(t.w.out_w - ox));
        for f in (0..filters).step_by(LANES) {
            let n = if FULL { LANES } else { LANES.min(filters - f) };
            let bias = load(bias, f, n);
            grid.transform::<T>(
                |a, b| load(m, (a * A + b) * stride + i * filters + f, n),
                |r, s, value| {
                    if r < rows && s < cols {
                        let mut value = value.add(bias);
                        if relu {
                            value = value.relu();
                        }
                        match out {
                            Output::Plain(y) => {
                                let at = ((oy + r) * t.w.out_w + ox + s) * filters + f;
                                store(&mut y[image * image_len..], at, n, value);
                            }
                            Output::Pooled { .. } => tile[r][s] = value,
                        }
                    }
                },
            );
            if let Output::Pooled { y, winners } = out {
                let (pooled_h, pooled_w) = pooled_side(&t.w);
                for qy in oy / 2..(oy + M).min(2 * pooled_h) / 2 {
                    for qx in ox / 2..(ox + M).min(2 * pooled_w) / 2 {
                        let (r, s) = (2 * qy - oy, 2 * qx - ox);
                        let (top, bottom) = (&tile[r], &tile[r + 1]);
                        let (max, won) = V::max_2x2([top[s], top[s + 1], bottom[s], bottom[s + 1]]);
                        let at = image * image_len + (qy * pooled_w + qx) * filters + f;
                        store(y, at, n, max);
                        winners[at..at + n].copy_from_slice(&won[..n]);
                    }
                }
            }
        }
    }
}

/// The gradient that a backward pass starts from, for a chunk of images.
#[derive(Clone, Copy, Debug)]
pub enum OutputGrad<'a> {
    /// `dy`, the gradient of the convolution's output itself (no
    /// activation, or its derivative already applied).
    Linear(&'a [f32]),
    /// The gradient `dy` of relu's output, and that output `y`: relu's
    /// derivative is applied as `dy` is read (no pass of its own).
    Relu { dy: &'a [f32], y: &'a [f32] },
    /// The gradient `dy` of relu's output after 2x2 max pooling (stride
    /// 2, over the top-left `2 * (h / 2)` x `2 * (w / 2)` pixels), the
    /// pooled output `y`, and each window's winner as `kernels::pool`
    /// records it: each gradient goes to its window's winner where the
    /// pooled output is positive, so the convolution's own output
    /// gradient is never stored.
    Pooled {
        dy: &'a [f32],
        y: &'a [f32],
        winners: &'a [u8],
    },
}

impl<'a> OutputGrad<'a> {
    /// The scheme [`backward`] runs from this gradient for a layer of
    /// window `w` (its transposed kernel must be transformed for it).
    pub fn scheme(&self, w: &Window2d) -> Scheme {
        Scheme::of(w, matches!(self, OutputGrad::Pooled { .. }))
    }

    /// Values per image of `dy` (and of `y` and `winners`) for a layer of
    /// window `w` and `filters` filters.
    pub fn image_len(&self, w: &Window2d, filters: usize) -> usize {
        values_per_image(w, filters, matches!(self, OutputGrad::Pooled { .. }))
    }

    /// The same gradient for images `first..first + count` only.
    pub fn images(self, w: &Window2d, filters: usize, first: usize, count: usize) -> Self {
        let len = self.image_len(w, filters);
        let part = |v: &'a [f32]| &v[first * len..(first + count) * len];
        match self {
            OutputGrad::Linear(dy) => OutputGrad::Linear(part(dy)),
            OutputGrad::Relu { dy, y } => OutputGrad::Relu {
                dy: part(dy),
                y: part(y),
            },
            OutputGrad::Pooled { dy, y, winners } => OutputGrad::Pooled {
                dy: part(dy),
                y: part(y),
                winners: &winners[first * len..(first + count) * len],
            },
        }
    }

    /// How many images it holds the gradient of.
    fn image_count(&self, w: &Window2d, filters: usize) -> usize {
        let len = self.image_len(w, filters).max(1);
        let (dy, others) = match self {
            OutputGrad::Linear(dy) => (dy, [dy.len(); 2]),
            OutputGrad::Relu { dy, y } => (dy, [y.len(); 2]),
            OutputGrad::Pooled { dy, y, winners } => (dy, [y.len(), winners.len()]),
        };
        assert!(
            others.iter().all(|&n| n == dy.len()) && dy.len().is_multiple_of(len),
            "whole images of output gradient"
        );
        dy.len() / len
    }
}

/// The backward pass of a chunk: from its input `x` and the gradient
/// `dy` of its output, this chunk's kernel and bias gradients into
/// `d_kernel` and `d_bias` (Keras layout, overwritten) and, when asked
/// for, the input gradient into `dx.0` (overwritten), for which `dx.1` is
/// the kernel as [`transform_kernel`] gives it transposed, for the
/// scheme [`OutputGrad::scheme`] names. With `dx.2`, the input gradient
/// goes on through relu's derivative at the input (0 where `x <= 0`):
/// the layer before ends in relu, and this pass applies its derivative as
/// it writes (the same bits as a pass of its own after).
pub fn backward(
    w: &Window2d,
    filters: usize,
    (x, dy): (&[f32], OutputGrad),
    (d_kernel, d_bias): (&mut [f32], &mut [f32]),
    dx: Option<(&mut [f32], &TransformedKernel, bool)>,
    scratch: &mut Vec<f32>,
) {
    let (channels, images) = (w.channels, x.len() / w.in_len());
    assert_eq!(dy.image_count(w, filters), images, "output gradient size");
    assert!(applies(w, filters), "a layer these kernels compute");
    assert_eq!(
        d_kernel.len(),
        w.k_h * w.k_w * channels * filters,
        "kernel gradient size"
    );
    assert_eq!(d_bias.len(), filters, "bias gradient size");
    let scheme = dy.scheme(w);
    if let Some((dx, u_t, _)) = &dx {
        assert_eq!(dx.len(), x.len(), "input gradient size");
        assert_eq!(u_t.scheme, scheme, "a kernel transformed for this pass");
    }
    let pooled = matches!(dy, OutputGrad::Pooled { .. });
    let values_per_tile = 2 * channels + filters;
    let t = Tiling::new(w, filters, images, scheme, (values_per_tile, pooled));
    let scratch = aligned(scratch, backward_scratch_len(&t));
    let dx = dx.map(|(dx, u_t, relu_of_input)| (dx, &u_t.mats, relu_of_input));
    let args = (t, (x, dy), (d_kernel, d_bias), dx, scratch);
    #[cfg(target_arch = "x86_64")]
    {
        if super::has_avx512() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { for_scheme!(scheme, backward_avx512(args)) };
        }
        if super::has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { for_scheme!(scheme, backward_avx2(args)) };
        }
    }
    for_scheme!(scheme, backward_portable(args))
}

/// `len` values of `scratch` from a 64-byte boundary on: every plane
/// then starts on a cache line (a plane is a whole number of lines when
/// the channels and filters are), and no 16-lane load or store spans two.
fn aligned(scratch: &mut Vec<f32>, len: usize) -> &mut [f32] {
    // Never shrunk: the scratch goes from layer to layer, and growing it
    // back would write zeros over what is written before it is read.
    if scratch.len() < len + LANES - 1 {
        scratch.resize(len + LANES - 1, 0.0);
    }
    let skip = scratch.as_ptr().align_offset(64).min(LANES - 1);
    &mut scratch[skip..skip + len]
}

/// Working space of a backward pass: the transformed input, output
/// gradient and input gradient of a block, and the kernel gradient in
/// the transformed domain.
fn backward_scratch_len(t: &Tiling) -> usize {
    let (channels, filters) = (t.w.channels, t.filters);
    let planes = 2 * plane(t.block, channels) + plane(t.block, filters);
    t.positions() * (planes + channels * filters)
}

type BackwardArgs<'a> = (
    Tiling,
    (&'a [f32], OutputGrad<'a>),
    (&'a mut [f32], &'a mut [f32]),
    Option<(&'a mut [f32], &'a PackedMats, bool)>,
    &'a mut [f32],
);

/// [`backward_blocks`] compiled for AVX-512F.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn backward_avx512<const A: usize, const M: usize, const R: usize, S: Algorithm<A, M, R>>(
    args: BackwardArgs,
) {
    backward_blocks::<Avx512, A, M, R, S>(args)
}

/// [`backward_blocks`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn backward_avx2<const A: usize, const M: usize, const R: usize, S: Algorithm<A, M, R>>(
    args: BackwardArgs,
) {
    backward_blocks::<Avx2, A, M, R, S>(args)
}

/// [`backward_blocks`] on any CPU.
fn backward_portable<const A: usize, const M: usize, const R: usize, S: Algorithm<A, M, R>>(
    args: BackwardArgs,
) {
    backward_blocks::<Portable, A, M, R, S>(args)
}

/// [`backward_blocks_of`], with the channels and filters in whole
/// 16-lane groups or not (one function per scheme and CPU, as
/// [`forward_blocks`]).
#[inline(always)]
fn backward_blocks<
    V: Simd,
    const A: usize,
    const M: usize,
    const R: usize,
    S: Algorithm<A, M, R>,
>(
    args: BackwardArgs,
) {
    if args.0.whole_lanes() {
        backward_blocks_of::<V, true, A, M, R, S>(args)
    } else {
        backward_blocks_of::<V, false, A, M, R, S>(args)
    }
}

/// Per block of tiles: transform the input and the output gradient
/// (summing the bias gradient on the way), add the block's `A²`
/// kernel-gradient products to the chunk's, and (for `dx`) `A²` more
/// products, transformed back into the input gradient; by the algorithm
/// `S`.
#[inline(always)]
fn backward_blocks_of<
    V: Simd,
    const FULL: bool,
    const A: usize,
    const M: usize,
    const R: usize,
    S: Algorithm<A, M, R>,
>(
    (t, (x, dy), (d_kernel, d_bias), mut dx, scratch): BackwardArgs,
) {
    let (channels, filters) = (t.w.channels, t.filters);
    let positions = A * A;
    let (v, rest) = scratch.split_at_mut(positions * plane(t.block, channels));
    let (z, rest) = rest.split_at_mut(positions * plane(t.block, filters));
    let (p, d_u) = rest.split_at_mut(positions * plane(t.block, channels));
    if let Some((dx, _, _)) = &mut dx {
        // Pixels no tile reaches get no gradient (every other pixel is
        // written by its first tile).
        t.zero_unreached(dx);
    }
    d_bias.fill(0.0);
    let tiles = x.len() / t.w.in_len() * t.tiles_per_image();
    for first in (0..tiles).step_by(t.block) {
        let count = t.block.min(tiles - first);
        let (v_plane, z_plane) = (plane(count, channels), plane(count, filters));
        transform_input::<V, FULL, A, S::Input>(&t, x, (first, count), v);
        let block = (first, count);
        output_grad_of::<V, FULL, A, M, S::OutputGrad>(&t, dy, block, z, d_bias);
        let beta = if first == 0 { 0.0 } else { 1.0 };
        for xi in 0..positions {
            let v_xi = Mat::new(&v[xi * v_plane..][..count * channels], count, channels);
            let z_xi = Mat::new(&z[xi * z_plane..][..count * filters], count, filters);
            let d_u_xi = &mut d_u[xi * channels * filters..][..channels * filters];
            matmul(v_xi.t(), z_xi, d_u_xi, beta);
        }
        let Some((dx, u_t, relu_of_input)) = &mut dx else {
            continue;
        };
        for xi in 0..positions {
            let z_xi = Mat::new(&z[xi * z_plane..][..count * filters], count, filters);
            let p_xi = &mut p[xi * v_plane..][..count * channels];
            matmul_packed(z_xi, u_t.get(xi), p_xi, 0.0);
        }
        let relu_at = relu_of_input.then_some(x);
        add_input_grad::<V, FULL, A, S::InputGrad>(&t, p, (first, count), (dx, relu_at));
    }
    transform_kernel_grad::<V, A, R, S::KernelGrad>(&t, d_u, d_kernel);
}

/// [`transform_output_grad`] reading `dy` as it comes.
#[inline(always)]
fn output_grad_of<V: Simd, const FULL: bool, const A: usize, const M: usize, T: Transform<M, A>>(
    t: &Tiling,
    dy: OutputGrad,
    block: (usize, usize),
    z: &mut [f32],
    d_bias: &mut [f32],
) {
    let (w, filters) = (&t.w, t.filters);
    let out = (z, d_bias);
    let row = w.out_w * filters;
    match dy {
        OutputGrad::Linear(dy) => {
            let image_len = w.out_pixels() * filters;
            let read = |image, py, px, f, n| {
                if py < w.out_h && px < w.out_w {
                    load(dy, image * image_len + py * row + px * filters + f, n)
                } else {
                    V::zero()
                }
            };
            let fetch = |tile| t.prefetch_output(dy, tile, false);
            transform_output_grad::<V, FULL, A, M, T>(t, block, out, (read, fetch))
        }
        OutputGrad::Relu { dy, y } => {
            let image_len = w.out_pixels() * filters;
            let read = |image, py, px, f, n| {
                if py < w.out_h && px < w.out_w {
                    let at = image * image_len + py * row + px * filters + f;
                    load::<V>(dy, at, n).where_positive(load(y, at, n))
                } else {
                    V::zero()
                }
            };
            let fetch = |tile| {
                t.prefetch_output(dy, tile, false);
                t.prefetch_output(y, tile, false);
            };
            transform_output_grad::<V, FULL, A, M, T>(t, block, out, (read, fetch))
        }
        OutputGrad::Pooled { dy, y, winners } => {
            let (pooled_h, pooled_w) = pooled_side(w);
            let image_len = pooled_h * pooled_w * filters;
            let read = |image, py: usize, px: usize, f, n| {
                let (qy, qx) = (py / 2, px / 2);
                if qy < pooled_h && qx < pooled_w {
                    let at = image * image_len + (qy * pooled_w + qx) * filters + f;
                    let position = (py % 2 * 2 + px % 2) as u8;
                    let grad = load::<V>(dy, at, n).where_positive(load(y, at, n));
                    grad.where_winner(&winner_bytes(winners, at, n), position)
                } else {
                    V::zero()
                }
            };
            let fetch = |tile| {
                t.prefetch_output(dy, tile, true);
                t.prefetch_output(y, tile, true);
                t.prefetch_output(winners, tile, true);
            };
            transform_output_grad::<V, FULL, A, M, T>(t, block, out, (read, fetch))
        }
    }
}

/// `winners[at..at + n]`, then zeros up to 16 bytes.
#[inline(always)]
fn winner_bytes(winners: &[u8], at: usize, n: usize) -> [u8; LANES] {
    match winners.get(at..at + LANES) {
        Some(bytes) if n == LANES => bytes.try_into().expect("16 bytes"),
        _ => {
            let mut bytes = [0; LANES];
            bytes[..n].copy_from_slice(&winners[at..at + n]);
            bytes
        }
    }
}

/// `Z_ξ = (A dY Aᵀ)_ξ` for tiles `first..` of the output gradient, into
/// `z` (`A²` x tiles x filters), by the transform `T` of `M` x `M` output
/// tiles, where `dy(image, row, column, filter, n)` reads `n` filters of
/// the output gradient (0 outside the output) and `prefetch(tile)` asks
/// for what tile `tile` will read ([`PREFETCH_AHEAD`] tiles ahead); the
/// sum of the values read is added onto `d_bias`.
#[inline(always)]
fn transform_output_grad<
    V: Simd,
    const FULL: bool,
    const A: usize,
    const M: usize,
    T: Transform<M, A>,
>(
    t: &Tiling,
    (first, count): (usize, usize),
    (z, d_bias): (&mut [f32], &mut [f32]),
    (dy, prefetch): (
        impl Fn(usize, usize, usize, usize, usize) -> V,
        impl Fn(usize),
    ),
) {
    let filters = t.filters;
    let stride = plane(count, filters);
    let mut grid = Grid::<V, M, A>::new();
    for i in 0..count {
        prefetch(first + i + PREFETCH_AHEAD);
        let (image, oy, ox) = t.tile(first + i);
        for f in (0..filters).step_by(LANES) {
            let n = if FULL { LANES } else { LANES.min(filters - f) };
            let mut sum = V::zero();
            grid.transform::<T>(
                |r, s| {
                    let value = dy(image, oy + r, ox + s, f, n);
                    sum = sum.add(value);
                    value
                },
                |a, b, value| store(z, (a * A + b) * stride + i * filters + f, n, value),
            );
            store(d_bias, f, n, load::<V>(d_bias, f, n).add(sum));
        }
    }
}

/// `dd = B p Bᵀ` for tiles `first..` of `p` (`A²` x tiles x channels),
/// into the input gradient `dx` where it lies inside the image: written by
/// the first tile that reaches a pixel (tiles are visited row by row, and
/// overlap the one above and the one to the left by `A - m` rows and
/// columns), added by the others; with `relu_at` (the input `x`), only
/// where `x > 0` (each tile's share masked: the sum of the shares so
/// masked is the masked sum).
#[inline(always)]
fn add_input_grad<V: Simd, const FULL: bool, const A: usize, T: Transform<A, A>>(
    t: &Tiling,
    p: &[f32],
    (first, count): (usize, usize),
    (dx, relu_at): (&mut [f32], Option<&[f32]>),
) {
    let channels = t.w.channels;
    let stride = plane(count, channels);
    let overlap = A - t.m;
    let mut grid = Grid::<V, A, A>::new();
    for i in 0..count {
        let ahead = first + i + PREFETCH_AHEAD;
        t.prefetch_input::<A>(dx, ahead, t.reach);
        if let Some(x) = relu_at {
            t.prefetch_input::<A>(x, ahead, t.reach);
        }
        let (image, oy, ox) = t.tile(first + i);
        let x = relu_at.map(|x| &x[image * t.w.in_len()..][..t.w.in_len()]);
        let image = &mut dx[image * t.w.in_len()..][..t.w.in_len()];
        let (rows, cols) = t.input_window::<A>((oy, ox), t.reach);
        // Rows and columns of this tile's window that tiles before it reached.
        let (rows_seen, cols_seen) = ((oy > 0) as usize * overlap, (ox > 0) as usize * overlap);
        for c in (0..channels).step_by(LANES) {
            let n = if FULL { LANES } else { LANES.min(channels - c) };
            grid.transform::<T>(
                |a, b| load(p, (a * A + b) * stride + i * channels + c, n),
                // (Left to itself, the compiler called this closure.)
                #[inline(always)]
                |r, s, value| {
                    if let (Some(row), Some(col)) = (rows[r], cols[s]) {
                        let at = row + col + c;
                        let value = match x {
                            Some(x) => value.where_positive(load(x, at, n)),
                            None => value,
                        };
                        if r < rows_seen || s < cols_seen {
                            let old: V = load(image, at, n);
                            store(image, at, n, old.add(value));
                        } else {
                            store(image, at, n, value);
                        }
                    }
                },
            );
        }
    }
}

/// `dg = Gᵀ m G` for every channel and filter of `d_u` (`A²` x channels x
/// filters), into `d_kernel` (`R` x `R` x channels x filters) by the
/// transform `T`.
#[inline(always)]
fn transform_kernel_grad<V: Simd, const A: usize, const R: usize, T: Transform<A, R>>(
    t: &Tiling,
    d_u: &[f32],
    d_kernel: &mut [f32],
) {
    let (channels, filters) = (t.w.channels, t.filters);
    let taps = channels * filters;
    let mut grid = Grid::<V, A, R>::new();
    for c in 0..channels {
        for f in (0..filters).step_by(LANES) {
            let n = LANES.min(filters - f);
            let at = c * filters + f;
            grid.transform::<T>(
                |a, b| load(d_u, (a * A + b) * taps + at, n),
                |r, s, value| store(d_kernel, (r * R + s) * taps + at, n, value),
            );
        }
    }
}

/// The working space of a 2-D transform: the grid half done, made once
/// per pass (zeroing it per tile would cost a `memset` of up to 2.3 KB).
struct Grid<V, const I: usize, const O: usize> {
    half: [[V; I]; O],
}

impl<V: Simd, const I: usize, const O: usize> Grid<V, I, O> {
    #[inline(always)]
    fn new() -> Self {
        Grid {
            half: [[V::zero(); I]; O],
        }
    }

    /// `out = T x Tᵀ` for the `I` x `I` grid `x` and the 1-D transform
    /// `T`: `load(r, s)` gives `x[r][s]`, and `store(a, b, value)` takes
    /// `out[a][b]`, each once. Columns first (`T` down each column of
    /// `x`), then rows; the values are loaded and stored where they lie,
    /// so only the half-done grid (`O` x `I`) stays in between.
    #[inline(always)]
    fn transform<T: Transform<I, O>>(
        &mut self,
        mut load: impl FnMut(usize, usize) -> V,
        mut store: impl FnMut(usize, usize, V),
    ) {
        let mut column = [V::zero(); I];
        let mut done = [V::zero(); O];
        for s in 0..I {
            for (r, value) in column.iter_mut().enumerate() {
                *value = load(r, s);
            }
            T::apply(&column, &mut done);
            for (row, value) in self.half.iter_mut().zip(&done) {
                row[s] = *value;
            }
        }
        for (a, row) in self.half.iter().enumerate() {
            T::apply(row, &mut done);
            for (b, value) in done.iter().enumerate() {
                store(a, b, *value);
            }
        }
    }
}

/// A 1-D transform of `I` values into `O`.
trait Transform<const I: usize, const O: usize> {
    fn apply<V: Simd>(x: &[V; I], out: &mut [V; O]);
}

/// A Winograd algorithm F(M x M, R x R) over transformed tiles of side
/// `A = M + R - 1`: its seven 1-D transforms.
trait Algorithm<const A: usize, const M: usize, const R: usize> {
    /// `Bᵀ d`.
    type Input: Transform<A, A>;
    /// `B p`: the input gradient.
    type InputGrad: Transform<A, A>;
    /// `Aᵀ m`.
    type Output: Transform<A, M>;
    /// `A e`: the output gradient.
    type OutputGrad: Transform<M, A>;
    /// `G g`: the kernel.
    type Kernel: Transform<R, A>;
    /// `Gᵀ m`: the kernel gradient.
    type KernelGrad: Transform<A, R>;
}

/// F(4x4, 3x3).
struct F4x4;
/// F(6x6, 3x3).
struct F6x6;
/// F(2x2, 5x5).
struct F2x2;

impl Algorithm<6, 4, 3> for F4x4 {
    type Input = Input;
    type InputGrad = InputGrad;
    type Output = Output4;
    type OutputGrad = OutputGrad4;
    type Kernel = Kernel3;
    type KernelGrad = KernelGrad3;
}

impl Algorithm<8, 6, 3> for F6x6 {
    type Input = Input8;
    type InputGrad = InputGrad8;
    type Output = Output6;
    type OutputGrad = OutputGrad6;
    type Kernel = Kernel3To8;
    type KernelGrad = KernelGrad3From8;
}

impl Algorithm<6, 2, 5> for F2x2 {
    type Input = Input;
    type InputGrad = InputGrad;
    type Output = Output2;
    type OutputGrad = OutputGrad2;
    type Kernel = Kernel5;
    type KernelGrad = KernelGrad5;
}

/// `Bᵀ d`: the input transform of 6x6 tiles.
struct Input;
/// `B p`: [`Input`] transposed (input gradient).
struct InputGrad;
/// `Aᵀ m`: the output transform of F(4x4, 3x3).
struct Output4;
/// `A e`: [`Output4`] transposed (output gradient).
struct OutputGrad4;
/// `G g`: the kernel transform of F(4x4, 3x3).
struct Kernel3;
/// `Gᵀ m`: [`Kernel3`] transposed (kernel gradient).
struct KernelGrad3;
/// `Aᵀ m`: the output transform of F(2x2, 5x5).
struct Output2;
/// `A e`: [`Output2`] transposed (output gradient).
struct OutputGrad2;
/// `G g`: the kernel transform of F(2x2, 5x5).
struct Kernel5;
/// `Gᵀ m`: [`Kernel5`] transposed (kernel gradient).
struct KernelGrad5;
/// `Bᵀ d`: the input transform of F(6x6, 3x3)'s 8x8 tiles.
struct Input8;
/// `B p`: [`Input8`] transposed (input gradient).
struct InputGrad8;
/// `Aᵀ m`: the output transform of F(6x6, 3x3).
struct Output6;
/// `A e`: [`Output6`] transposed (output gradient).
struct OutputGrad6;
/// `G g`: the kernel transform of F(6x6, 3x3).
struct Kernel3To8;
/// `Gᵀ m`: [`Kernel3To8`] transposed (kernel gradient).
struct KernelGrad3From8;

impl Transform<6, 6> for Input {
    #[inline(always)]
    fn apply<V: Simd>(d: &[V; 6], out: &mut [V; 6]) {
        // Rows 1-2 and 3-4 share their even and odd parts (points ±1, ±2).
        out[0] = d[0].mul_add(4.0, d[2].mul_add(-5.0, d[4]));
        let (even, odd) = (d[2].mul_add(-4.0, d[4]), d[1].mul_add(-4.0, d[3]));
        out[1] = even.add(odd);
        out[2] = even.sub(odd);
        let (even, odd) = (d[4].sub(d[2]), d[3].sub(d[1]));
        out[3] = odd.mul_add(2.0, even);
        out[4] = odd.mul_add(-2.0, even);
        out[5] = d[1].mul_add(4.0, d[3].mul_add(-5.0, d[5]));
    }
}

impl Transform<6, 6> for InputGrad {
    #[inline(always)]
    fn apply<V: Simd>(p: &[V; 6], out: &mut [V; 6]) {
        let (sum12, diff12) = (p[1].add(p[2]), p[1].sub(p[2]));
        let (sum34, diff34) = (p[3].add(p[4]), p[3].sub(p[4]));
        out[0] = p[0].scale(4.0);
        out[1] = diff12.mul_add(-4.0, diff34.mul_add(-2.0, p[5].scale(4.0)));
        out[2] = sum12.mul_add(-4.0, p[0].scale(-5.0)).sub(sum34);
        out[3] = p[5].mul_add(-5.0, diff34.mul_add(2.0, diff12));
        out[4] = p[0].add(sum12).add(sum34);
        out[5] = p[5];
    }
}

impl Transform<6, 4> for Output4 {
    #[inline(always)]
    fn apply<V: Simd>(m: &[V; 6], out: &mut [V; 4]) {
        let (sum12, diff12) = (m[1].add(m[2]), m[1].sub(m[2]));
        let (sum34, diff34) = (m[3].add(m[4]), m[3].sub(m[4]));
        out[0] = m[0].add(sum12).add(sum34);
        out[1] = diff34.mul_add(2.0, diff12);
        out[2] = sum34.mul_add(4.0, sum12);
        out[3] = diff34.mul_add(8.0, diff12).add(m[5]);
    }
}

impl Transform<4, 6> for OutputGrad4 {
    #[inline(always)]
    fn apply<V: Simd>(e: &[V; 4], out: &mut [V; 6]) {
        out[0] = e[0];
        let (even, odd) = (e[0].add(e[2]), e[1].add(e[3]));
        out[1] = even.add(odd);
        out[2] = even.sub(odd);
        let even = e[2].mul_add(4.0, e[0]);
        let odd = e[3].mul_add(8.0, e[1].scale(2.0));
        out[3] = even.add(odd);
        out[4] = even.sub(odd);
        out[5] = e[3];
    }
}

impl Transform<3, 6> for Kernel3 {
    #[inline(always)]
    fn apply<V: Simd>(g: &[V; 3], out: &mut [V; 6]) {
        out[0] = g[0].div(4.0);
        out[1] = g[0].add(g[1]).add(g[2]).div(-6.0);
        out[2] = g[0].sub(g[1]).add(g[2]).div(-6.0);
        out[3] = g[0].div(24.0).add(g[1].div(12.0)).add(g[2].div(6.0));
        out[4] = g[0].div(24.0).sub(g[1].div(12.0)).add(g[2].div(6.0));
        out[5] = g[2];
    }
}

impl Transform<6, 3> for KernelGrad3 {
    #[inline(always)]
    fn apply<V: Simd>(m: &[V; 6], out: &mut [V; 3]) {
        out[0] = m[0]
            .div(4.0)
            .sub(m[1].add(m[2]).div(6.0))
            .add(m[3].add(m[4]).div(24.0));
        out[1] = m[2].sub(m[1]).div(6.0).add(m[3].sub(m[4]).div(12.0));
        out[2] = m[3].add(m[4]).sub(m[1]).sub(m[2]).div(6.0).add(m[5]);
    }
}

impl Transform<6, 2> for Output2 {
    #[inline(always)]
    fn apply<V: Simd>(m: &[V; 6], out: &mut [V; 2]) {
        out[0] = m[0].add(m[1].add(m[2])).add(m[3].add(m[4]));
        out[1] = m[3].sub(m[4]).mul_add(2.0, m[1].sub(m[2])).add(m[5]);
    }
}

impl Transform<2, 6> for OutputGrad2 {
    #[inline(always)]
    fn apply<V: Simd>(e: &[V; 2], out: &mut [V; 6]) {
        out[0] = e[0];
        out[1] = e[0].add(e[1]);
        out[2] = e[0].sub(e[1]);
        out[3] = e[1].mul_add(2.0, e[0]);
        out[4] = e[1].mul_add(-2.0, e[0]);
        out[5] = e[1];
    }
}

impl Transform<5, 6> for Kernel5 {
    #[inline(always)]
    fn apply<V: Simd>(g: &[V; 5], out: &mut [V; 6]) {
        let (even, odd) = (g[0].add(g[2]).add(g[4]), g[1].add(g[3]));
        out[0] = g[0].div(4.0);
        out[1] = even.add(odd).div(-6.0);
        out[2] = even.sub(odd).div(-6.0);
        let even = g[0].add(g[2].scale(4.0)).add(g[4].scale(16.0));
        let odd = g[1].scale(2.0).add(g[3].scale(8.0));
        out[3] = even.add(odd).div(24.0);
        out[4] = even.sub(odd).div(24.0);
        out[5] = g[4];
    }
}

impl Transform<6, 5> for KernelGrad5 {
    #[inline(always)]
    fn apply<V: Simd>(m: &[V; 6], out: &mut [V; 5]) {
        // Row p of G is scale_p (1, p, p², p³, p⁴): tap k gathers p^k.
        let (plus1, minus1) = (m[1].add(m[2]).div(-6.0), m[2].sub(m[1]).div(6.0));
        let (plus2, minus2) = (m[3].add(m[4]).div(24.0), m[3].sub(m[4]).div(24.0));
        out[0] = m[0].div(4.0).add(plus1).add(plus2);
        out[1] = minus1.add(minus2.scale(2.0));
        out[2] = plus1.add(plus2.scale(4.0));
        out[3] = minus1.add(minus2.scale(8.0));
        out[4] = plus1.add(plus2.scale(16.0)).add(m[5]);
    }
}

// F(6x6, 3x3) interpolates at 0, ±1, ±2, ±1/2 and ∞:
//
//      [1  0    -21/4  0     21/4  0     -1 0]        [ 1     0     0   ]
//      [0  1     1    -17/4 -17/4  1      1 0]        [-2/9  -2/9  -2/9 ]
//      [0 -1     1     17/4 -17/4 -1      1 0]        [-2/9   2/9  -2/9 ]
// Bᵀ = [0  1/2   1/4  -5/2  -5/4   2      1 0]    G = [ 1/90  1/45  2/45]
//      [0 -1/2   1/4   5/2  -5/4  -2      1 0]        [ 1/90 -1/45  2/45]
//      [0  2     4    -5/2  -5     1/2    1 0]        [32/45 16/45  8/45]
//      [0 -2     4     5/2  -5    -1/2    1 0]        [32/45 -16/45 8/45]
//      [0 -1     0     21/4  0    -21/4   0 1]        [ 0     0     1   ]
//
//      [1 1  1  1   1   1     1    0]
//      [0 1 -1  2  -2   1/2  -1/2  0]
// Aᵀ = [0 1  1  4   4   1/4   1/4  0]
//      [0 1 -1  8  -8   1/8  -1/8  0]
//      [0 1  1 16  16   1/16  1/16 0]
//      [0 1 -1 32 -32   1/32 -1/32 1]
//
// Each pair of points ±p shares its sums: even powers plus odd ones, and
// minus.

impl Transform<8, 8> for Input8 {
    #[inline(always)]
    fn apply<V: Simd>(d: &[V; 8], out: &mut [V; 8]) {
        out[0] = d[4].sub(d[2]).mul_add(5.25, d[0].sub(d[6]));
        out[7] = d[3].sub(d[5]).mul_add(5.25, d[7].sub(d[1]));
        let even = d[4].mul_add(-4.25, d[2].add(d[6]));
        let odd = d[3].mul_add(-4.25, d[1].add(d[5]));
        out[1] = even.add(odd);
        out[2] = even.sub(odd);
        let even = d[4].mul_add(-1.25, d[2].mul_add(0.25, d[6]));
        let odd = d[5].mul_add(2.0, d[3].mul_add(-2.5, d[1].scale(0.5)));
        out[3] = even.add(odd);
        out[4] = even.sub(odd);
        let even = d[4].mul_add(-5.0, d[2].mul_add(4.0, d[6]));
        let odd = d[5].mul_add(0.5, d[3].mul_add(-2.5, d[1].scale(2.0)));
        out[5] = even.add(odd);
        out[6] = even.sub(odd);
    }
}

impl Transform<8, 8> for InputGrad8 {
    #[inline(always)]
    fn apply<V: Simd>(p: &[V; 8], out: &mut [V; 8]) {
        let (sum12, diff12) = (p[1].add(p[2]), p[1].sub(p[2]));
        let (sum34, diff34) = (p[3].add(p[4]), p[3].sub(p[4]));
        let (sum56, diff56) = (p[5].add(p[6]), p[5].sub(p[6]));
        out[0] = p[0];
        out[1] = diff56.mul_add(2.0, diff34.mul_add(0.5, diff12)).sub(p[7]);
        out[2] = sum56.mul_add(4.0, sum34.mul_add(0.25, p[0].mul_add(-5.25, sum12)));
        out[3] = diff34
            .add(diff56)
            .mul_add(-2.5, diff12.mul_add(-4.25, p[7].scale(5.25)));
        out[4] = sum56.mul_add(
            -5.0,
            sum34.mul_add(-1.25, sum12.mul_add(-4.25, p[0].scale(5.25))),
        );
        out[5] = p[7].mul_add(-5.25, diff56.mul_add(0.5, diff34.mul_add(2.0, diff12)));
        out[6] = sum12.add(sum34).add(sum56).sub(p[0]);
        out[7] = p[7];
    }
}

impl Transform<8, 6> for Output6 {
    #[inline(always)]
    fn apply<V: Simd>(m: &[V; 8], out: &mut [V; 6]) {
        let (sum12, diff12) = (m[1].add(m[2]), m[1].sub(m[2]));
        let (sum34, diff34) = (m[3].add(m[4]), m[3].sub(m[4]));
        let (sum56, diff56) = (m[5].add(m[6]), m[5].sub(m[6]));
        out[0] = m[0].add(sum12).add(sum34).add(sum56);
        out[1] = diff56.mul_add(0.5, diff34.mul_add(2.0, diff12));
        out[2] = sum56.mul_add(0.25, sum34.mul_add(4.0, sum12));
        out[3] = diff56.mul_add(0.125, diff34.mul_add(8.0, diff12));
        out[4] = sum56.mul_add(0.0625, sum34.mul_add(16.0, sum12));
        out[5] = diff56
            .mul_add(0.03125, diff34.mul_add(32.0, diff12))
            .add(m[7]);
    }
}

impl Transform<6, 8> for OutputGrad6 {
    #[inline(always)]
    fn apply<V: Simd>(e: &[V; 6], out: &mut [V; 8]) {
        out[0] = e[0];
        let even = e[0].add(e[2]).add(e[4]);
        let odd = e[1].add(e[3]).add(e[5]);
        out[1] = even.add(odd);
        out[2] = even.sub(odd);
        let even = e[4].mul_add(16.0, e[2].mul_add(4.0, e[0]));
        let odd = e[5].mul_add(32.0, e[3].mul_add(8.0, e[1].scale(2.0)));
        out[3] = even.add(odd);
        out[4] = even.sub(odd);
        let even = e[4].mul_add(0.0625, e[2].mul_add(0.25, e[0]));
        let odd = e[5].mul_add(0.03125, e[3].mul_add(0.125, e[1].scale(0.5)));
        out[5] = even.add(odd);
        out[6] = even.sub(odd);
        out[7] = e[5];
    }
}

impl Transform<3, 8> for Kernel3To8 {
    #[inline(always)]
    fn apply<V: Simd>(g: &[V; 3], out: &mut [V; 8]) {
        // -2/9 = 1/-4.5 and 8/45 = 1/5.625: divisions by exact floats.
        out[0] = g[0];
        let even = g[0].add(g[2]);
        out[1] = even.add(g[1]).div(-4.5);
        out[2] = even.sub(g[1]).div(-4.5);
        let (even, odd) = (g[0].add(g[2].scale(4.0)), g[1].scale(2.0));
        out[3] = even.add(odd).div(90.0);
        out[4] = even.sub(odd).div(90.0);
        let (even, odd) = (g[0].scale(4.0).add(g[2]), g[1].scale(2.0));
        out[5] = even.add(odd).div(5.625);
        out[6] = even.sub(odd).div(5.625);
        out[7] = g[2];
    }
}

impl Transform<8, 3> for KernelGrad3From8 {
    #[inline(always)]
    fn apply<V: Simd>(m: &[V; 8], out: &mut [V; 3]) {
        let (sum12, diff12) = (m[1].add(m[2]).div(-4.5), m[1].sub(m[2]).div(-4.5));
        let (sum34, diff34) = (m[3].add(m[4]).div(90.0), m[3].sub(m[4]).div(90.0));
        let (sum56, diff56) = (m[5].add(m[6]).div(5.625), m[5].sub(m[6]).div(5.625));
        out[0] = m[0].add(sum12).add(sum34).add(sum56.scale(4.0));
        out[1] = diff12.add(diff34.scale(2.0)).add(diff56.scale(2.0));
        out[2] = sum12.add(sum34.scale(4.0)).add(sum56).add(m[7]);
    }
}

/// `src[at..at + n]`, then zeros up to 16 lanes.
#[inline(always)]
fn load<V: Simd>(src: &[f32], at: usize, n: usize) -> V {
    if n == LANES {
        return V::load(src[at..at + LANES].try_into().expect("16 values"));
    }
    let mut lanes = [0.0; LANES];
    lanes[..n].copy_from_slice(&src[at..at + n]);
    V::load(&lanes)
}

/// `dst[at..at + n] = value[..n]`.
#[inline(always)]
fn store<V: Simd>(dst: &mut [f32], at: usize, n: usize, value: V) {
    if n == LANES {
        value.store((&mut dst[at..at + LANES]).try_into().expect("16 values"));
    } else {
        let mut lanes = [0.0; LANES];
        value.store(&mut lanes);
        dst[at..at + n].copy_from_slice(&lanes[..n]);
    }
}

#[cfg(test)]
mod tests;
