//! Stride-1 convolutions with a multiple of 16 filters (LeNet's second
//! layer: 16) or at most 8 (LeNet's first: 6), on CPUs with AVX2 and FMA
//! (and AVX-512 where present): the forward pass and the kernel gradient,
//! straight from zero-padded images, with no im2col rows; on AVX-512, for
//! wide layers, also the input gradient, summed over the non-zero output
//! gradients only ([`input_grad`]).
//!
//! In NHWC the filters of one output pixel are contiguous, so they are the
//! SIMD axis here. Forward, for each output pixel `p` of a block held in
//! registers and each tap: `y[p, :] += x[p + tap] · W[tap, :]`, the input
//! value broadcast, the tap's weights for all filters one vector (two AVX2
//! vectors for 16 filters, one AVX-512 vector, or one masked AVX2 vector
//! for up to 8: "narrow").
//!
//! The kernel gradient turns the loop around: for a block of taps held in
//! registers, `dW[tap, :] += x[p + tap] · dy[p, :]` over every output pixel
//! `p` of every image of the chunk.
//!
//! Either way the taps of one kernel row, `(kx, c)` for `kx < k_w`, `c <
//! channels`, lie side by side in the padded image row: tap `t = kx ·
//! channels + c` of output pixel `ox` is at `(ox · channels + t)` from the
//! row's start. The kernels walk `t`, not `(kx, c)`.

use super::{Window2d, copy_short, has_avx2_fma, has_avx512};

/// Runs `$f::<N>(args)` for `$n` in 1..=12, so that each count gets a
/// fully unrolled loop with its sums in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! unrolled {
    ($n:expr, $f:ident($($arg:expr),*)) => {
        match $n {
            n if cfg!(debug_assertions) && !(1..=12).contains(&n) => {
                unreachable!("unrolled! handles 1 to 12, not {n}")
            }
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            _ => $f::<12>($($arg),*),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// f32 lanes of an AVX2 vector: the most filters of a narrow layer.
const VEC: usize = 8;
/// Filters per wide group: two AVX2 vectors, or one AVX-512 vector.
const GROUP: usize = 16;
/// The most sums (pixels or taps) a register block holds.
const MAX_BLOCK: usize = 12;

/// Whether this path handles the geometry on this CPU (adjacent taps
/// only: every kernel here, the fused ones included, reads a window's
/// taps as contiguous runs of the padded image).
pub fn applies(w: &Window2d, filters: usize) -> bool {
    let fits = filters.is_multiple_of(GROUP) || filters <= VEC;
    w.stride_h == 1 && w.stride_w == 1 && !w.is_dilated() && fits && has_avx2_fma()
}

/// What every kernel needs to know about the layer.
#[derive(Clone, Copy)]
struct Shape {
    w: Window2d,
    filters: usize,
    /// Values per padded image row.
    row_len: usize,
    /// Taps per kernel row, `k_w · channels`.
    row_taps: usize,
    /// Whether the forward pass applies relu as it stores its sums.
    relu: bool,
}

impl Shape {
    fn new(w: &Window2d, filters: usize) -> Self {
        assert!(applies(w, filters), "filter_conv does not apply");
        Shape {
            w: *w,
            filters,
            row_len: padded_w(w) * w.channels,
            row_taps: w.k_w * w.channels,
            relu: false,
        }
    }

    /// Whether all filters fit in one (masked) AVX2 vector.
    fn narrow(&self) -> bool {
        self.filters <= VEC
    }

    /// Which kernels run the layer on this CPU.
    fn kernels(&self) -> Kernels {
        match (has_avx512(), self.narrow()) {
            (true, false) => Kernels::Avx512,
            (true, true) if self.w.channels == 1 => Kernels::Avx512Pairs,
            _ => Kernels::Avx2,
        }
    }
}

/// The kernel families, one module each.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernels {
    /// `avx2`: any layer this module handles.
    Avx2,
    /// `avx512`, one vector per 16 filters: wide layers.
    Avx512,
    /// `avx512`, pixel pairs: narrow layers over grey images.
    Avx512Pairs,
}

/// Where a kernel-gradient block writes the bias gradient: the first block
/// (`ky == 0`, `first == 0`) of each filter group sums `dy` into `bias` as
/// it goes, the others get null and skip it.
#[cfg(target_arch = "x86_64")]
fn bias_output(bias: *mut f32, ky: usize, first: usize) -> *mut f32 {
    if ky == 0 && first == 0 {
        bias
    } else {
        std::ptr::null_mut()
    }
}

/// Width of a zero-padded image row, in pixels: with a spare column, so
/// that a pixel pair's second pixel may read one past the last tap.
fn padded_w(w: &Window2d) -> usize {
    w.out_w + w.k_w
}

/// Values of one zero-padded image (NHWC, padding on every side).
pub fn padded_len(w: &Window2d) -> usize {
    (w.out_h + w.k_h - 1) * padded_w(w) * w.channels
}

/// Copies a chunk of images into `padded` ([`padded_len`] values each),
/// zeros around each.
pub fn pad(w: &Window2d, x: &[f32], padded: &mut [f32]) {
    let (c, pw) = (w.channels, padded_w(w));
    let images = x
        .chunks_exact(w.in_len())
        .zip(padded.chunks_exact_mut(padded_len(w)));
    for (image, padded) in images {
        padded.fill(0.0);
        for (iy, row) in image.chunks_exact(w.in_w * c).enumerate() {
            let at = ((iy + w.pad_top) * pw + w.pad_left) * c;
            copy_short(&mut padded[at..at + row.len()], row);
        }
    }
}

/// Values of the scratch that [`forward`] and [`kernel_grad`] need (zero
/// for most layers).
pub fn scratch_len(w: &Window2d, filters: usize) -> usize {
    let s = Shape::new(w, filters);
    #[cfg(target_arch = "x86_64")]
    if s.kernels() == Kernels::Avx512Pairs {
        return avx512::pair_scratch_len(&s);
    }
    0
}

/// `y = x ⋆ kernel + bias` for a chunk of images, zero-padded by [`pad`],
/// then `max(y, 0)` if `relu` (in the same pass); `scratch` holds
/// [`scratch_len`] values.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    w: &Window2d,
    filters: usize,
    padded: &[f32],
    kernel: &[f32],
    bias: &[f32],
    y: &mut [f32],
    scratch: &mut [f32],
    relu: bool,
) {
    let s = Shape {
        relu,
        ..Shape::new(w, filters)
    };
    let out_row = w.out_w * filters;
    assert_eq!(kernel.len(), w.patch_len() * filters);
    assert_eq!(bias.len(), filters);
    assert_eq!(padded.len() % padded_len(w), 0);
    assert_eq!(padded.len() / padded_len(w) * w.out_h * out_row, y.len());
    assert_eq!(scratch.len(), scratch_len(w, filters));
    #[cfg(target_arch = "x86_64")]
    let kernels = s.kernels();
    #[cfg(target_arch = "x86_64")]
    if kernels == Kernels::Avx512Pairs {
        // SAFETY: the CPU features were checked, the lengths asserted.
        return unsafe { avx512::pair_forward(&s, padded, kernel, bias, y, scratch) };
    }
    let images = padded
        .chunks_exact(padded_len(w))
        .zip(y.chunks_exact_mut(w.out_h * out_row));
    for (image, out) in images {
        #[cfg(target_arch = "x86_64")]
        if kernels == Kernels::Avx512 {
            // SAFETY: as below, for the image's whole output.
            unsafe { avx512::forward_image(&s, image, kernel, bias, out) };
            continue;
        }
        for (oy, row) in out.chunks_exact_mut(out_row).enumerate() {
            // SAFETY: `applies` (asserted by `Shape::new`) checked the CPU
            // features; the padded image holds every tap of every output
            // pixel of row `oy`, the kernel and bias have the lengths
            // asserted above, and `row` is one whole output row.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx2::forward_row(&s, image, kernel, bias, row, oy)
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!(
                "filter_conv::applies is false off x86-64 ({oy}, {})",
                row.len()
            );
        }
    }
}

/// Whether [`forward_pooled`] runs this layer, followed by relu and 2x2
/// max pooling, on this CPU (AVX-512, a kernel 3 or 5 wide, and grey
/// images with at most 8 filters or a multiple of 16 filters: both of
/// LeNet's layers).
pub fn pooled_forward_applies(w: &Window2d, filters: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        applies(w, filters)
            && matches!(
                Shape::new(w, filters).kernels(),
                Kernels::Avx512Pairs | Kernels::Avx512
            )
            && avx512::two_rows_apply(w)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, filters);
        false
    }
}

/// [`forward`] with relu, then 2x2 max pooling (stride 2, no padding) in
/// the same pass: the convolution's output is never stored, only the
/// pooled values (NHWC, `out_h / 2` x `out_w / 2` x `filters` per image)
/// and, for each, the position of its window's maximum (0 1 / 2 3, as
/// [`crate::kernels::pool::max_pool_forward`] records it; where the pooled
/// value is 0 the position may differ, since the maximum is taken before
/// relu). See [`pooled_forward_applies`].
#[allow(clippy::too_many_arguments)]
pub fn forward_pooled(
    w: &Window2d,
    filters: usize,
    padded: &[f32],
    (kernel, bias): (&[f32], &[f32]),
    pooled: &mut [f32],
    winners: &mut [u8],
    scratch: &mut [f32],
) {
    assert!(
        pooled_forward_applies(w, filters),
        "pooled forward does not apply"
    );
    let s = Shape::new(w, filters);
    let pooled_len = (w.out_h / 2) * (w.out_w / 2) * filters;
    assert_eq!(kernel.len(), w.patch_len() * filters);
    assert_eq!(bias.len(), filters);
    assert_eq!(padded.len() % padded_len(w), 0);
    assert_eq!(padded.len() / padded_len(w) * pooled_len, pooled.len());
    assert_eq!(pooled.len(), winners.len());
    assert_eq!(scratch.len(), scratch_len(w, filters));
    // SAFETY: `pooled_forward_applies` checked the CPU and the layer; the
    // lengths are asserted above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let out = (pooled, winners);
        if s.narrow() {
            avx512::pair_forward_pooled(&s, padded, (kernel, bias), out, scratch)
        } else {
            avx512::forward_pooled(&s, padded, (kernel, bias), out)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("pooled_forward_applies is false off x86-64 ({})", s.filters);
}

/// Whether [`kernel_grad_pooled`] handles this layer on this CPU: as
/// [`pooled_forward_applies`], for grey images with at most 8 filters only
/// (LeNet's first layer).
pub fn pooled_kernel_grad_applies(w: &Window2d, filters: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        pooled_forward_applies(w, filters)
            && Shape::new(w, filters).kernels() == Kernels::Avx512Pairs
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, filters);
        false
    }
}

/// Values of the scratch that [`kernel_grad_pooled`] needs.
pub fn pooled_grad_scratch_len(w: &Window2d, filters: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if pooled_kernel_grad_applies(w, filters) {
        return avx512::pooled_grad_scratch_len(&Shape::new(w, filters));
    }
    0
}

/// [`kernel_grad`] for a layer run by [`forward_pooled`], from the pooling's
/// side: the gradient of its output `grad`, that output `pooled` and its
/// `winners`. The gradient of this layer's output is not needed: each
/// pooled gradient goes to its window's winner when the pooled value is
/// positive. `scratch` holds [`pooled_grad_scratch_len`] values.
pub fn kernel_grad_pooled(
    w: &Window2d,
    filters: usize,
    padded: &[f32],
    pooled: (&[f32], &[f32], &[u8]),
    d_params: (&mut [f32], &mut [f32]),
    scratch: &mut [f32],
) {
    assert!(
        pooled_kernel_grad_applies(w, filters),
        "pooled kernel gradient does not apply"
    );
    let s = Shape::new(w, filters);
    assert_eq!(d_params.0.len(), w.patch_len() * filters);
    assert_eq!(d_params.1.len(), filters);
    // SAFETY: `pooled_kernel_grad_applies` checked the CPU and the layer;
    // the kernel asserts the lengths of the chunk.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx512::pair_kernel_grad_pooled(&s, padded, pooled, d_params, scratch)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "pooled_forward_applies is false off x86-64 ({}, {}, {})",
        padded.len() + scratch.len(),
        pooled.0.len(),
        s.filters
    );
}

/// The kernel gradient of a chunk, `d_kernel[ky, kx, c, f] = Σ x[p + (ky,
/// kx), c] · dy[p, f]` over the output pixels `p` of its images (padded by
/// [`pad`]), and the bias gradient `d_bias[f] = Σ dy[p, f]`, summed in the
/// same pass over `dy`; both written (not added). `scratch` holds
/// [`scratch_len`] values.
pub fn kernel_grad(
    w: &Window2d,
    filters: usize,
    padded: &[f32],
    dy: &[f32],
    (d_kernel, d_bias): (&mut [f32], &mut [f32]),
    scratch: &mut [f32],
) {
    let s = Shape::new(w, filters);
    assert_eq!(d_kernel.len(), w.patch_len() * filters);
    assert_eq!(d_bias.len(), filters);
    assert_eq!(padded.len() % padded_len(w), 0);
    assert_eq!(
        padded.len() / padded_len(w) * w.out_pixels() * filters,
        dy.len()
    );
    assert_eq!(scratch.len(), scratch_len(w, filters));
    // SAFETY: as in `forward`; `padded` and `dy` hold the same images.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match s.kernels() {
            Kernels::Avx512Pairs => {
                avx512::pair_kernel_grad(&s, padded, dy, d_kernel, d_bias, scratch)
            }
            Kernels::Avx512 => avx512::kernel_grad(&s, padded, dy, d_kernel, d_bias),
            Kernels::Avx2 => avx2::kernel_grad(&s, padded, dy, d_kernel, d_bias),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("filter_conv::applies is false off x86-64 ({})", s.filters);
}

/// Whether [`input_grad`] runs for this layer on this CPU (AVX-512, wide
/// layers, a window of at most 12 vectors: `k_h` kernel rows of `k_w ·
/// channels` taps, each padded to whole vectors); otherwise the input
/// gradient is a matrix product and col2im.
pub fn sparse_input_grad_applies(w: &Window2d, filters: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        applies(w, filters)
            && Shape::new(w, filters).kernels() == Kernels::Avx512
            && w.k_h * row_vectors(w) <= avx512::MAX_WINDOW_VECTORS
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (w, filters);
        false
    }
}

/// Vectors per kernel row of the transposed kernel (and of the windows
/// the AVX-512 input gradient holds in registers).
fn row_vectors(w: &Window2d) -> usize {
    (w.k_w * w.channels).div_ceil(GROUP)
}

/// Values of the transposed kernel [`input_grad`] reads.
pub fn transposed_len(w: &Window2d, filters: usize) -> usize {
    filters * w.k_h * row_vectors(w) * GROUP
}

/// The window of the input gradient of a stride-1 layer seen as a
/// convolution of its own: `dx = dy ⋆ flip(kernel)`, over `dy` padded by
/// `k - 1 - pad` on each side, with the layer's filters as its channels and
/// its channels as its filters (the layer's kernel turned by
/// [`flip_kernel`]). This lets [`forward`] compute a dense input gradient
/// with the filter-vectorised kernels (`Conv2D` runs it where the layer's
/// channels are a multiple of 16).
pub fn input_grad_window(w: &Window2d, filters: usize) -> Window2d {
    assert!(
        w.stride_h == 1 && w.stride_w == 1 && !w.is_dilated(),
        "input_grad_window needs stride 1 and adjacent taps"
    );
    Window2d {
        in_h: w.out_h,
        in_w: w.out_w,
        channels: filters,
        pad_top: w.k_h - 1 - w.pad_top,
        pad_left: w.k_w - 1 - w.pad_left,
        out_h: w.in_h,
        out_w: w.in_w,
        ..*w
    }
}

/// The kernel of [`input_grad_window`]'s convolution: `flipped[ky, kx, f,
/// c] = kernel[k_h - 1 - ky, k_w - 1 - kx, c, f]`.
pub fn flip_kernel(w: &Window2d, filters: usize, kernel: &[f32], flipped: &mut [f32]) {
    let (k_h, k_w, channels) = (w.k_h, w.k_w, w.channels);
    assert_eq!(kernel.len(), w.patch_len() * filters);
    assert_eq!(flipped.len(), kernel.len());
    for (tap, taps) in kernel.chunks_exact(channels * filters).enumerate() {
        let (ky, kx) = (tap / k_w, tap % k_w);
        let turned = (k_h - 1 - ky) * k_w + (k_w - 1 - kx);
        let out = &mut flipped[turned * filters * channels..][..filters * channels];
        for (c, row) in taps.chunks_exact(filters).enumerate() {
            for (f, &v) in row.iter().enumerate() {
                out[f * channels + c] = v;
            }
        }
    }
}

/// `kernel` (patch x filters) transposed: per filter, per kernel row, its
/// `k_w · channels` taps padded with zeros to whole vectors, into
/// `kernel_t` ([`transposed_len`] values).
pub fn transpose_kernel(w: &Window2d, filters: usize, kernel: &[f32], kernel_t: &mut [f32]) {
    let (row_taps, row) = (w.k_w * w.channels, row_vectors(w) * GROUP);
    kernel_t.fill(0.0);
    for (k, taps) in kernel.chunks_exact(filters).enumerate() {
        let (ky, t) = (k / row_taps, k % row_taps);
        for (f, &v) in taps.iter().enumerate() {
            kernel_t[(f * w.k_h + ky) * row + t] = v;
        }
    }
}

/// The input gradient of a chunk of images, `dx[p + (ky, kx), c] = Σ dy[p,
/// f] · kernel[ky, kx, c, f]` over output pixels `p` and filters `f`,
/// summing only the non-zero values of `dy` (see
/// [`sparse_input_grad_applies`]), written (not added); `kernel_t` from
/// [`transpose_kernel`]. Windows that reach into the padding are summed
/// into `scratch` (a padded image) and the image cut out of it.
pub fn input_grad(
    w: &Window2d,
    filters: usize,
    dy: &[f32],
    kernel_t: &[f32],
    dx: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    assert!(
        sparse_input_grad_applies(w, filters),
        "sparse input gradient does not apply"
    );
    let s = Shape::new(w, filters);
    assert_eq!(kernel_t.len(), transposed_len(w, filters));
    assert_eq!(dy.len() / (w.out_pixels() * filters), dx.len() / w.in_len());
    let unpadded = w.windows_inside();
    let (c, pw) = (w.channels, padded_w(w));
    let images = dy
        .chunks_exact(w.out_pixels() * filters)
        .zip(dx.chunks_exact_mut(w.in_len()));
    for (dy, dx) in images {
        // SAFETY: `sparse_input_grad_applies` checked the CPU and the
        // window's size; `dy` is one image's, `kernel_t` asserted above,
        // and the target holds every window (the image itself when no
        // window reaches the padding, else a padded image).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if unpadded {
                dx.fill(0.0);
                avx512::input_grad(&s, dy, kernel_t, dx, w.in_w * c);
            } else {
                scratch.clear();
                scratch.resize(padded_len(w), 0.0);
                avx512::input_grad(&s, dy, kernel_t, scratch, s.row_len);
                for (iy, row) in dx.chunks_exact_mut(w.in_w * c).enumerate() {
                    let at = ((iy + w.pad_top) * pw + w.pad_left) * c;
                    copy_short(row, &scratch[at..at + row.len()]);
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "filter_conv::applies is false off x86-64 ({})",
            dy.len() + dx.len() + scratch.len() + pw + usize::from(unpadded) + s.filters
        );
    }
}
