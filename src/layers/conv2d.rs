//! `Conv2D`: a bank of learned 2-D filters slid over the image.
//!
//! Each of the `filters` kernels has shape `(k_h, k_w, in_channels)` and
//! produces one output channel (feature map): at every output pixel, the sum
//! of the input values under the window times the kernel weights, plus a
//! bias. (Like every deep-learning library, this is a *correlation*: the
//! kernel is not turned 180° as in [`crate::signal::convolve2d`]; since it
//! is learned, the difference does not matter.)
//!
//! In general the work is one matrix product per chunk of images: im2col
//! lays out each window as a row, and `rows (pixels x k_h·k_w·C) · kernel
//! (k_h·k_w·C x filters)` is the output, already in NHWC order. The
//! backward pass reuses the same rows: `d_kernel = rowsᵀ · dy`, and `d_rows
//! = dy · kernelᵀ`, which col2im adds back onto the input pixels.
//!
//! 3x3 and 5x5 stride-1 layers of 16 to 512 channels and filters (CIFAR-,
//! VGG- and AlexNet-style networks) run as Winograd F(4x4, 3x3) or F(2x2,
//! 5x5) (`kernels::winograd`): 36 small products per block of tiles
//! instead of one large one, up to 4x (3x3) or 2.8x (5x5) fewer
//! multiplications. A chunk then holds at least a block of 64 tiles (four
//! of AlexNet's 13x13 images) and two images; the backward pass
//! transforms the layer's input again instead of keeping anything.
//!
//! Other stride-1 layers with at most 8 or a multiple of 16 filters (both of
//! LeNet's) skip the rows on AVX2 CPUs: `kernels::filter_conv` computes the
//! output and the kernel gradient straight from (zero-padded copies of) the
//! images, with the filters as the SIMD axis. The input gradient is
//! `dy · kernelᵀ` and col2im, a chunk at a time, except for the wide ones on
//! AVX-512 CPUs: there each output pixel's window of input gradient is
//! summed in registers over its non-zero `dy` only (behind max pooling,
//! most are zero) and added straight onto the input gradient.
//!
//! On AVX-512 CPUs a `Sequential`'s plan runs such a layer with relu and
//! the 2x2 max pooling after it as one stage (this layer's
//! [`PoolingConv`] side): the output is pooled in registers as it is
//! computed and never stored; for a first layer with at most 8 filters
//! over grey images the backward passes are one as well. A Winograd
//! layer does the same on every CPU, its backward pass (input gradient
//! included) reading the pooled gradient straight into its transform.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::sync::{Arc, Mutex, PoisonError};

use super::config::{Config, Fields, config, pair, with_input_shape};
use super::kept::Kept;
use super::{
    BackwardIo, ConvOutputGrad, Layer, OutputActivation, OutputGradSink, Padding, Param, PlanRole,
    PoolingConv, TrainingFeed, TrainingStep, kernel_and_bias, kernel_and_bias_mut, resize,
    resize_buffer, samples_per_chunk, values, values_mut,
};
use crate::initializers::{Initializer, Rng};
use crate::kernels::scratch::Scratch;
use crate::kernels::winograd::{OutputGrad, Scheme, TransformedKernel};
use crate::kernels::{Window2d, direct_conv, filter_conv, im2col, linear, winograd};
use crate::{Activation, Error, Result};

/// 2-D convolution layer (Keras `Conv2D`) over NHWC images.
///
/// ```
/// use convnet::layers::{Conv2D, Padding};
/// use convnet::Activation;
/// let conv = Conv2D::new(6, (5, 5))
///     .activation(Activation::Relu)
///     .padding(Padding::Valid)
///     .input_shape(&[28, 28, 1]);
/// ```
#[derive(Clone, Debug)]
pub struct Conv2D {
    filters: usize,
    kernel_size: (usize, usize),
    strides: (usize, usize),
    dilation_rate: (usize, usize),
    padding: Padding,
    use_bias: bool,
    kernel_initializer: Initializer,
    output_activation: OutputActivation,
    input_shape: Option<Vec<usize>>,
    // Set by `build`.
    window: Option<Window2d>,
    kernel: Param,
    bias: Param,
    // Scratch reused from batch to batch.
    rows: Vec<f32>,
    /// The kernel transposed, for the sparse input gradient.
    kernel_t: Vec<f32>,
    partial_kernel: Vec<f32>,
    partial_bias: Vec<f32>,
    // Scratch of the paths without im2col rows (`kernels::filter_conv`,
    // `kernels::direct_conv`): the input each keeps for its backward pass (padded or spread), and per-chunk
    // scratch of the kernel gradient.
    spread_input: Vec<f32>,
    direct_accumulators: Vec<f32>,
    /// The Winograd kernel of the last inference pass (see [`KeptKernel`]).
    inference_kernel: KeptKernel,
    /// Whether the input gradient goes on through relu's derivative at
    /// the input (see `Layer::take_relu_derivative_of_input`).
    relu_input: bool,
}

/// A Winograd layer's transformed, packed kernel from its last inference
/// pass, kept until the weights can change: every way to change them
/// takes `&mut self` (`params_mut`, `build`, training), and each drops
/// it. (It was kept with a copy of the kernel it came from and compared
/// before each batch: 0.67 ms for AlexNet's conv4 alone.)
type KeptKernel = Kept<TransformedKernel>;

/// Rows of `d_rows` per matrix product of the input gradient: few enough
/// to stay in a core's cache between the product and col2im.
const D_ROWS_PER_PRODUCT: usize = 256;

/// Multiply-adds of a chunk's product above which a chunk is one image.
const MACS_PER_CHUNK: usize = 1 << 27;

/// Bytes of im2col rows made at once where an image has more: they stay
/// in a core's L2 cache until the product reads them.
const IM2COL_BLOCK_BYTES: usize = 512 << 10;

/// Whether the filter-vectorised kernels beat im2col + GEMM on a layer
/// they apply to. They do on few channels and filters (LeNet's layers,
/// CIFAR-sized 3x3 layers of 32 and 64: 1.8x faster forward on one core);
/// on AlexNet's wide layers the GEMM is 1.6x to 1.9x faster (`convnet
/// bench --model alexnet --layers-only --threads 1`).
fn filters_pay_off(w: &Window2d, filters: usize) -> bool {
    w.patch_len() <= 1024 && filters <= 128
}

/// The kernels a Conv2D runs on (see `Conv2D::path`).
#[derive(Clone, Copy)]
enum Path {
    /// 3x3 or 5x5, stride 1, 16 to 512 channels and filters: `kernels::winograd`;
    /// keeps nothing (its backward pass reads the layer's input).
    Winograd,
    /// A multiple of 16 filters on AVX2: `kernels::filter_conv`, keeps padded images.
    Filters,
    /// Few channels without AVX2: `kernels::direct_conv`, keeps spread images.
    Direct,
    /// Everything else: im2col + GEMM, keeps the im2col rows.
    Im2col,
}

impl Conv2D {
    /// `filters` kernels of `kernel_size` (height, width); stride 1, padding
    /// `"valid"`, no activation, with a bias: the Keras defaults.
    pub fn new(filters: usize, kernel_size: (usize, usize)) -> Self {
        let empty = || Param::new("kernel", ArrayD::zeros(IxDyn(&[0])));
        Conv2D {
            filters,
            kernel_size,
            strides: (1, 1),
            dilation_rate: (1, 1),
            padding: Padding::Valid,
            use_bias: true,
            kernel_initializer: Initializer::default(),
            output_activation: OutputActivation::default(),
            input_shape: None,
            window: None,
            kernel: empty(),
            bias: Param {
                name: "bias",
                ..empty()
            },
            rows: Vec::new(),
            kernel_t: Vec::new(),
            partial_kernel: Vec::new(),
            partial_bias: Vec::new(),
            spread_input: Vec::new(),
            direct_accumulators: Vec::new(),
            inference_kernel: KeptKernel::default(),
            relu_input: false,
        }
    }

    /// Step of the window, (vertical, horizontal).
    pub fn strides(mut self, strides: (usize, usize)) -> Self {
        self.strides = strides;
        self
    }

    /// Spacing of the kernel's taps, (rows, columns), default `(1, 1)`: a
    /// 3x3 kernel with rate 2 sees a 5x5 area through 9 taps (Keras
    /// `dilation_rate`). As in Keras, a rate above 1 goes with strides of 1
    /// (`build` refuses both at once).
    ///
    /// ```
    /// use convnet::layers::{Conv2D, Padding};
    /// let atrous = Conv2D::new(16, (3, 3)).dilation_rate((2, 2)).padding(Padding::Same);
    /// ```
    pub fn dilation_rate(mut self, dilation_rate: (usize, usize)) -> Self {
        self.dilation_rate = dilation_rate;
        self
    }

    /// How `build` draws the kernel (default glorot_uniform, as Keras).
    ///
    /// ```
    /// use convnet::initializers::Initializer;
    /// use convnet::layers::Conv2D;
    /// let conv = Conv2D::new(16, (3, 3)).kernel_initializer(Initializer::HeNormal);
    /// ```
    pub fn kernel_initializer(mut self, initializer: Initializer) -> Self {
        self.kernel_initializer = initializer;
        self
    }

    /// `Padding::Valid` (default) or `Padding::Same`.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// The activation applied to the output.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.output_activation = OutputActivation::new(activation);
        self
    }

    /// Whether to add a bias per filter (default true).
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// The shape of one input image, (height, width, channels); needed on the
    /// first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    fn window(&self) -> Window2d {
        self.window.expect("Conv2D used before build")
    }

    /// This layer with the geometry `window` (of a built twin).
    fn with_window(mut self, window: Option<Window2d>) -> Self {
        self.window = window;
        self
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let mut layer = Conv2D::new(
            fields.count("filters", None)?,
            fields.pair("kernel_size", None)?,
        )
        .strides(fields.pair("strides", Some((1, 1)))?)
        .dilation_rate(fields.pair("dilation_rate", Some((1, 1)))?)
        .kernel_initializer(fields.named("kernel_initializer", "glorot_uniform")?)
        .padding(fields.padding()?)
        .activation(fields.activation("activation")?)
        .use_bias(fields.flag("use_bias", true)?);
        layer.input_shape = fields.input_shape()?;
        Ok(layer)
    }

    /// Whether the layer is built and runs on the Winograd kernels.
    fn built_on_winograd(&self) -> bool {
        self.window.is_some() && matches!(self.path(), Path::Winograd)
    }

    /// How the training passes compute: forward and backward must agree,
    /// since backward reads what forward kept.
    fn path(&self) -> Path {
        let w = self.window();
        if winograd::applies(&w, self.filters) {
            Path::Winograd
        } else if filter_conv::applies(&w, self.filters) && filters_pay_off(&w, self.filters) {
            Path::Filters
        } else if direct_conv::applies(&w) {
            Path::Direct
        } else {
            Path::Im2col
        }
    }

    /// Images per parallel chunk: enough rows to fill a core's cache,
    /// but one image when a single image is already a large product
    /// (AlexNet's layers), so that a small batch still gives every core
    /// work; on the Winograd path, enough images for a block of tiles.
    fn chunk(&self) -> usize {
        self.chunk_for(false)
    }

    /// [`Self::chunk`] for a pass with (`pooled`) or without the 2x2 max
    /// pooling after the layer inside it: the Winograd path then tiles
    /// only the pooled outputs, fewer per image.
    fn chunk_for(&self, pooled: bool) -> usize {
        let w = self.window();
        let macs = w.out_pixels() * w.patch_len() * self.filters;
        let chunk = samples_per_chunk(w.out_pixels()).min((MACS_PER_CHUNK / macs.max(1)).max(1));
        if winograd::applies(&w, self.filters) {
            chunk.max(winograd::images_per_block(&w, pooled))
        } else {
            chunk
        }
    }
}

impl Conv2D {
    /// im2col, then one matrix product per chunk of images, or per block
    /// of [`IM2COL_BLOCK_BYTES`] of rows where an image has more (AlexNet's
    /// first layer: 4.4 MB), each block multiplied while it is still in
    /// cache. Training keeps every chunk's rows for the backward pass;
    /// inference reuses one buffer per thread instead.
    fn forward_im2col(&self, input: &[f32], output: &mut [f32], kept_rows: Option<&mut Vec<f32>>) {
        let w = self.window();
        let (chunk, patch, pixels) = (self.chunk(), w.patch_len(), w.out_pixels());
        let rows_len = chunk * pixels * patch;
        let kernel = values(&self.kernel.value);
        let bias = self.use_bias.then(|| values(&self.bias.value));
        let (activation, filters) = (self.output_activation, self.filters);
        let per_block = (IM2COL_BLOCK_BYTES / 4 / patch).max(1);
        // `kept`: rows holds the whole chunk's rows, each block at its place.
        let compute = |x: &[f32], rows: &mut [f32], kept: bool, y: &mut [f32]| {
            if per_block >= pixels {
                im2col::im2col(&w, x, rows);
                linear::forward(rows, kernel, bias, y, patch);
            } else {
                let images = x
                    .chunks_exact(w.in_len())
                    .zip(y.chunks_exact_mut(pixels * filters));
                for (image, (x, y)) in images.enumerate() {
                    for first in (0..pixels).step_by(per_block) {
                        let count = per_block.min(pixels - first);
                        let at = if kept {
                            (image * pixels + first) * patch
                        } else {
                            0
                        };
                        let rows = &mut rows[at..][..count * patch];
                        im2col::im2col_pixels(&w, x, first, rows);
                        let y = &mut y[first * filters..][..count * filters];
                        linear::forward(rows, kernel, bias, y, patch);
                    }
                }
            }
            activation.forward(y, filters);
        };
        let chunks = input
            .par_chunks(chunk * w.in_len())
            .zip(output.par_chunks_mut(chunk * pixels * filters));
        if let Some(kept) = kept_rows {
            resize_buffer(kept, input.len() / w.in_len() * pixels * patch);
            chunks
                .zip(kept.par_chunks_mut(rows_len))
                .for_each(|((x, y), rows)| compute(x, rows, true, y));
        } else {
            // im2col writes every value: no need for zeros first.
            chunks.for_each_init(Scratch::take_unzeroed, |rows, (x, y)| {
                let images = x.len() / w.in_len();
                rows.resize(images * pixels.min(per_block) * patch, 0.0);
                compute(x, rows, false, y);
            });
        }
    }

    /// Filters as the SIMD axis (a multiple of 16 filters, AVX2): no im2col.
    /// Training keeps the padded images for the kernel gradient; inference
    /// pads into one buffer per thread.
    fn forward_filters(&self, input: &[f32], output: &mut [f32], kept: Option<&mut Vec<f32>>) {
        let (w, chunk) = (self.window(), self.chunk());
        let pass = FiltersPass::of(self);
        let compute = |x: &[f32], padded: &mut [f32], y: &mut [f32], scratch: &mut Vec<f32>| {
            pass.run(x, padded, y, scratch)
        };
        let chunks = input
            .par_chunks(chunk * w.in_len())
            .zip(output.par_chunks_mut(chunk * w.out_pixels() * self.filters));
        let images = input.len() / w.in_len();
        Self::padded_chunks((w, chunk, images), kept, chunks, compute);
    }

    /// The kernel in the Winograd domain, packed for the products
    /// (`winograd::transform_kernel`; `transposed` for the input gradient).
    fn winograd_kernel(&self, transposed: bool, scheme: Scheme) -> TransformedKernel {
        let (w, kernel) = (self.window(), values(&self.kernel.value));
        winograd::transform_kernel(&w, self.filters, kernel, transposed, scheme)
    }

    /// Winograd (see `winograd::Scheme`), a chunk of images per task.
    /// Nothing is kept for the backward pass: it transforms the layer's
    /// input again.
    fn forward_winograd(&self, input: &[f32], output: &mut [f32], training: bool) {
        let (w, chunk) = (self.window(), self.chunk());
        let pass = WinogradPass::of(self, training, false);
        input
            .par_chunks(chunk * w.in_len())
            .zip(output.par_chunks_mut(chunk * w.out_pixels() * self.filters))
            .for_each_init(Scratch::take_unzeroed, |scratch, (x, y)| {
                pass.run(x, winograd::Output::Plain(y), scratch)
            });
    }

    /// The transformed kernel of the forward pass, for the scheme that
    /// suits the layer's outputs (or, `pooled`, those a 2x2 max pooling
    /// reads): made afresh in training (the weights change every step),
    /// kept for inference (where a kept kernel of the other scheme serves
    /// as well: `winograd::forward` runs the scheme of its kernel).
    fn winograd_forward_kernel(&self, training: bool, pooled: bool) -> Arc<TransformedKernel> {
        let scheme = Scheme::of(&self.window(), pooled);
        if training {
            Arc::new(self.winograd_kernel(false, scheme))
        } else {
            self.inference_kernel
                .get_or_make(|| self.winograd_kernel(false, scheme))
        }
    }

    /// [`Self::forward_winograd`] with relu and 2x2 max pooling applied as
    /// the output transform stores: `pooled` gets the pooled output (already
    /// shaped, `pooled_len` values per image) and `winners` each window's
    /// winner.
    fn pooled_winograd(
        &self,
        input: &ArrayD<f32>,
        (pooled, winners, pooled_len): (&mut ArrayD<f32>, &mut [u8], usize),
        training: bool,
    ) {
        let (w, chunk) = (self.window(), self.chunk_for(true));
        let pass = WinogradPass::of(self, training, true);
        values(input)
            .par_chunks(chunk * w.in_len())
            .zip(values_mut(pooled).par_chunks_mut(chunk * pooled_len))
            .zip(winners.par_chunks_mut(chunk * pooled_len))
            .for_each_init(Scratch::take_unzeroed, |scratch, ((x, y), winners)| {
                pass.run(x, winograd::Output::Pooled { y, winners }, scratch)
            });
    }

    /// Per chunk, its shares of the parameter gradients and (if asked
    /// for) its part of the input gradient, by Winograd's transposed
    /// transforms (`winograd::backward`), from the output gradient `dy`
    /// as it comes (see `winograd::OutputGrad`).
    fn grads_winograd(&mut self, input: &ArrayD<f32>, dy: OutputGrad, grad_input: InputGradTo) {
        let w = self.window();
        let pooled = matches!(dy, OutputGrad::Pooled { .. });
        let (chunk, filters, batch) = (self.chunk_for(pooled), self.filters, input.shape()[0]);
        self.make_param_grad_shares(batch, chunk);
        let scheme = dy.scheme(&w);
        let u_t = (!matches!(grad_input, InputGradTo::Nowhere))
            .then(|| self.winograd_kernel(true, scheme));
        let (x, relu_input) = (values(input), self.relu_input);
        let grads = |c: usize,
                     d_params: (&mut [f32], &mut [f32]),
                     dx: Option<&mut [f32]>,
                     scratch: &mut Vec<f32>| {
            let (first, count) = (c * chunk, chunk.min(batch - c * chunk));
            let x = &x[first * w.in_len()..][..count * w.in_len()];
            let dy = dy.images(&w, filters, first, count);
            let dx = dx.zip(u_t.as_ref()).map(|(dx, u_t)| (dx, u_t, relu_input));
            winograd::backward(&w, filters, (x, dy), d_params, dx, scratch);
        };
        let shares = (0..batch.div_ceil(chunk)).into_par_iter().zip(
            self.partial_kernel
                .par_chunks_mut(w.patch_len() * filters)
                .zip(self.partial_bias.par_chunks_mut(filters)),
        );
        match grad_input {
            InputGradTo::Tensor(grad_input) => {
                resize(grad_input, input.shape());
                let dx = values_mut(grad_input).par_chunks_mut(chunk * w.in_len());
                shares
                    .zip(dx)
                    .for_each_init(Scratch::take_unzeroed, |scratch, ((c, d_params), dx)| {
                        grads(c, d_params, Some(dx), scratch)
                    });
            }
            // Each chunk's input gradient in a buffer of the thread's,
            // handed over while it is in the cache.
            InputGradTo::Sink(sink) => shares.for_each_init(
                || {
                    // The pool hands back last what was dropped last: the
                    // tuple drops `scratch`, then `dx`, so `dx` comes first
                    // (else the small one grows into a second scratch:
                    // AlexNet's training took 63 MB more).
                    let dx = Scratch::take_unzeroed();
                    (Scratch::take_unzeroed(), dx)
                },
                |(scratch, dx), (c, d_params)| {
                    let images = chunk.min(batch - c * chunk);
                    dx.resize(images * w.in_len(), 0.0);
                    grads(c, d_params, Some(&mut dx[..]), scratch);
                    sink.take(c, dx, scratch);
                },
            ),
            InputGradTo::Nowhere => shares
                .for_each_init(Scratch::take_unzeroed, |scratch, (c, d_params)| {
                    grads(c, d_params, None, scratch)
                }),
        }
        self.sum_param_grad_shares();
    }

    /// The output gradient of the backward pass that starts from `grad`.
    fn winograd_output_grad<'a>(&self, grad: &ConvOutputGrad<'a>) -> OutputGrad<'a> {
        match *grad {
            ConvOutputGrad::Output { output, grad } => {
                let (dy, y) = (values(grad), values(output));
                // (Relu is the only activation with a derivative that
                // comes here: `backward` and `hands_over_input_grad` check.)
                if self.output_activation.has_derivative() {
                    OutputGrad::Relu { dy, y }
                } else {
                    OutputGrad::Linear(dy)
                }
            }
            ConvOutputGrad::Pooled {
                pooled,
                grad,
                winners,
            } => OutputGrad::Pooled {
                dy: values(grad),
                y: values(pooled),
                winners,
            },
        }
    }

    /// Runs `compute(x, padded, out, scratch)` on each chunk `(x, out)`
    /// of `chunks` (`chunk` of the batch's `images` input images each),
    /// with room for them padded by `filter_conv::pad`: in `kept` when
    /// training (the kernel gradient reads it), else in one buffer per
    /// thread.
    fn padded_chunks<'a, T: Send>(
        (w, chunk, images): (Window2d, usize, usize),
        kept: Option<&mut Vec<f32>>,
        chunks: impl IndexedParallelIterator<Item = (&'a [f32], T)>,
        compute: impl Fn(&[f32], &mut [f32], T, &mut Vec<f32>) + Sync + Send,
    ) {
        let padded_len = filter_conv::padded_len(&w);
        if let Some(kept) = kept {
            resize_buffer(kept, images * padded_len);
            chunks
                .zip(kept.par_chunks_mut(chunk * padded_len))
                .for_each_init(Scratch::take, |scratch, ((x, out), padded)| {
                    compute(x, padded, out, scratch)
                });
        } else {
            // `filter_conv::pad` writes every value: no zeros first.
            chunks.for_each_init(
                || (Scratch::take_unzeroed(), Scratch::take()),
                |(padded, scratch), (x, out)| {
                    padded.resize(x.len() / w.in_len() * padded_len, 0.0);
                    compute(x, padded, out, scratch);
                },
            );
        }
    }

    /// This layer with relu and the 2x2 max pooling after it, in one pass
    /// (see `filter_conv::forward_pooled`, or `winograd::forward` with
    /// `Output::Pooled`): `pooled` gets the pooled output and `winners`
    /// each window's winner; `kept`, when training, the padded images for
    /// the kernel gradient (not on the Winograd path, whose backward pass
    /// transforms the input again).
    fn pooled_pass(
        &self,
        input: &ArrayD<f32>,
        (pooled, winners): (&mut ArrayD<f32>, &mut Vec<u8>),
        kept: Option<&mut Vec<f32>>,
    ) {
        let w = self.window();
        let (batch, filters) = (input.shape()[0], self.filters);
        let pooled_shape = [batch, w.out_h / 2, w.out_w / 2, filters];
        resize(pooled, &pooled_shape);
        let pooled_len = pooled_shape[1..].iter().product::<usize>();
        resize_buffer(winners, batch * pooled_len);
        if matches!(self.path(), Path::Winograd) {
            let out = (pooled, &mut winners[..], pooled_len);
            return self.pooled_winograd(input, out, kept.is_some());
        }
        let chunk = self.chunk();
        let scratch_len = filter_conv::scratch_len(&w, filters);
        let params = (values(&self.kernel.value), values(&self.bias.value));
        let compute = |x: &[f32],
                       padded: &mut [f32],
                       (y, won): (&mut [f32], &mut [u8]),
                       scratch: &mut Vec<f32>| {
            scratch.resize(scratch_len, 0.0);
            filter_conv::pad(&w, x, padded);
            filter_conv::forward_pooled(&w, filters, padded, params, y, won, scratch);
        };
        let chunks = values(input).par_chunks(chunk * w.in_len()).zip(
            values_mut(pooled)
                .par_chunks_mut(chunk * pooled_len)
                .zip(winners.par_chunks_mut(chunk * pooled_len)),
        );
        Self::padded_chunks((w, chunk, batch), kept, chunks, compute);
    }

    /// Room for each parallel chunk's share of the parameter gradients.
    fn make_param_grad_shares(&mut self, batch: usize, chunk: usize) {
        let chunks = batch.div_ceil(chunk);
        let patch = self.window().patch_len();
        resize_buffer(&mut self.partial_kernel, chunks * patch * self.filters);
        resize_buffer(&mut self.partial_bias, chunks * self.filters);
    }

    /// The parameter gradients: the sums of the chunks' shares.
    fn sum_param_grad_shares(&mut self) {
        linear::sum_partials(&self.partial_kernel, values_mut(&mut self.kernel.grad));
        if self.use_bias {
            linear::sum_partials(&self.partial_bias, values_mut(&mut self.bias.grad));
        }
    }

    fn pooled_param_grads(
        &mut self,
        pooled: &ArrayD<f32>,
        grad_pooled: &ArrayD<f32>,
        winners: &[u8],
    ) {
        let (w, filters, chunk) = (self.window(), self.filters, self.chunk());
        let batch = pooled.shape()[0];
        self.make_param_grad_shares(batch, chunk);
        let pooled_len = pooled.len() / batch.max(1);
        let scratch = filter_conv::pooled_grad_scratch_len(&w, filters).max(1);
        resize_buffer(
            &mut self.direct_accumulators,
            batch.div_ceil(chunk) * scratch,
        );
        let padded_len = filter_conv::padded_len(&w);
        let pooled_chunks = values(grad_pooled)
            .par_chunks(chunk * pooled_len)
            .zip(values(pooled).par_chunks(chunk * pooled_len))
            .zip(winners.par_chunks(chunk * pooled_len));
        self.spread_input[..batch * padded_len]
            .par_chunks(chunk * padded_len)
            .zip(pooled_chunks)
            .zip(self.partial_kernel.par_chunks_mut(w.patch_len() * filters))
            .zip(self.partial_bias.par_chunks_mut(filters))
            .zip(self.direct_accumulators.par_chunks_mut(scratch))
            .for_each(
                |((((padded, ((dy, y), won)), d_kernel), d_bias), scratch)| {
                    let d_params = (d_kernel, d_bias);
                    filter_conv::kernel_grad_pooled(
                        &w,
                        filters,
                        padded,
                        (dy, y, won),
                        d_params,
                        scratch,
                    );
                },
            );
        self.sum_param_grad_shares();
    }

    /// Whether the dense input gradient runs as a convolution of `dy` on
    /// the filter-vectorised kernels (see `filter_conv::input_grad_window`)
    /// instead of `dy · kernelᵀ` and col2im: on that path, for channels in
    /// whole 16-lane groups, where those kernels pay off (cifar10-cnn's
    /// backward pass: 109 -> 98 ms per batch of 128 on one core).
    fn dense_input_grad_by_filters(&self) -> bool {
        let (w, channels) = (self.window(), self.window().channels);
        if !matches!(self.path(), Path::Filters) || !channels.is_multiple_of(16) {
            return false;
        }
        let t = filter_conv::input_grad_window(&w, self.filters);
        filter_conv::applies(&t, channels) && filters_pay_off(&t, channels)
    }

    /// The direct path: no im2col rows at all. Training keeps the spread
    /// input (in `kept`) for the backward pass.
    fn forward_direct(&self, input: &[f32], output: &mut [f32], kept: Option<&mut Vec<f32>>) {
        let w = self.window();
        let (chunk, filters) = (self.chunk(), self.filters);
        let spread_len = direct_conv::spread_len(&w, filters);
        let mut tiled = vec![0.0; direct_conv::tiled_kernel_len(&w, filters)];
        // Without use_bias the bias parameter exists but stays zero.
        let (kernel, bias) = (values(&self.kernel.value), values(&self.bias.value));
        direct_conv::tile_kernel(&w, filters, kernel, bias, &mut tiled);
        let activation = self.output_activation;
        let compute = |x: &[f32], y: &mut [f32], spread: &mut [f32]| {
            direct_conv::spread(&w, filters, x, spread);
            direct_conv::forward(&w, filters, spread, &tiled, y);
            activation.forward(y, filters);
        };
        let chunks = input
            .par_chunks(chunk * w.in_len())
            .zip(output.par_chunks_mut(chunk * w.out_pixels() * filters));
        match kept {
            Some(kept) => {
                resize_buffer(kept, input.len() / w.in_len() * spread_len);
                chunks
                    .zip(kept.par_chunks_mut(chunk * spread_len))
                    .for_each(|((x, y), spread)| compute(x, y, spread));
            }
            None => chunks.for_each_init(Scratch::take, |spread, (x, y)| {
                spread.resize(x.len() / w.in_len() * spread_len, 0.0);
                compute(x, y, spread);
            }),
        }
    }

    /// Room for the shares of `to.input`'s images in chunks of `chunk`, and
    /// the sink that runs the Winograd backward pass on each chunk of the
    /// output gradient, into its shares and its part of `to.grad_input`.
    fn winograd_sink<'a>(&'a mut self, to: BackwardIo<'a>, chunk: usize) -> WinogradSink<'a> {
        let (w, filters, batch) = (self.window(), self.filters, to.input.shape()[0]);
        self.make_param_grad_shares(batch, chunk);
        let scheme = Scheme::of(&w, false);
        let dx = to.grad_input.map(|grad_input| {
            resize(grad_input, to.input.shape());
            values_mut(grad_input).chunks_mut(chunk * w.in_len())
        });
        let u_t = dx
            .is_some()
            .then(|| (self.winograd_kernel(true, scheme), self.relu_input));
        let mut dx = dx.into_iter().flatten();
        let shares = self
            .partial_kernel
            .chunks_mut(w.patch_len() * filters)
            .zip(self.partial_bias.chunks_mut(filters))
            .map(|(d_kernel, d_bias)| Mutex::new((d_kernel, d_bias, dx.next())))
            .collect();
        WinogradSink {
            w,
            filters,
            chunk,
            x: values(to.input),
            dx: u_t,
            shares,
        }
    }

    /// The parameter gradients of a path that kept its input (im2col
    /// rows, or the images padded or spread), a share per chunk.
    fn param_grads_kept(&mut self, grad_output: &[f32]) {
        let (chunk, out_len) = (self.chunk(), self.window().out_pixels() * self.filters);
        let batch = grad_output.len() / out_len;
        let sink = self.kept_input_sink(batch, chunk);
        grad_output
            .par_chunks(chunk * out_len)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (c, dy)| sink.take(c, dy, scratch));
        drop(sink);
        self.sum_param_grad_shares();
    }

    /// Room for the shares of `batch` images in chunks of `chunk`, and the
    /// sink that computes each from its output gradient and the kept input.
    fn kept_input_sink(&mut self, batch: usize, chunk: usize) -> KeptInputSink<'_> {
        self.make_param_grad_shares(batch, chunk);
        let how = KeptShares {
            w: self.window(),
            filters: self.filters,
            path: self.path(),
            use_bias: self.use_bias,
        };
        // At least one value per chunk, so that every chunk gets a slice.
        let scratch = how.scratch_len().max(1);
        resize_buffer(
            &mut self.direct_accumulators,
            batch.div_ceil(chunk) * scratch,
        );
        let kept = match how.path {
            Path::Im2col => &self.rows,
            _ => &self.spread_input,
        };
        let shares = self
            .partial_kernel
            .chunks_mut(how.w.patch_len() * how.filters)
            .zip(self.partial_bias.chunks_mut(how.filters))
            .zip(self.direct_accumulators.chunks_mut(scratch))
            .map(|((d_kernel, d_bias), scratch)| Mutex::new((d_kernel, d_bias, scratch)))
            .collect();
        KeptInputSink {
            how,
            chunk,
            kept,
            shares,
        }
    }

    /// The backward pass from the gradient of the output before the
    /// activation: parameter gradients, then (if asked for) the input
    /// gradient.
    fn backward_from_linear(
        &mut self,
        input: &ArrayD<f32>,
        grad_output: &[f32],
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        // The Winograd path makes its own shares, chunked as its pass is.
        if matches!(self.path(), Path::Winograd) {
            return self.grads_winograd(input, OutputGrad::Linear(grad_output), grad_input.into());
        }
        self.param_grads_kept(grad_output);
        if let Some(grad_input) = grad_input {
            resize(grad_input, input.shape());
            self.input_grad(grad_output, values_mut(grad_input));
        }
    }

    /// `dx` from `dy` (before the activation).
    fn input_grad(&mut self, grad_output: &[f32], grad_input: &mut [f32]) {
        let w = self.window();
        let rows_per_chunk = self.chunk() * w.out_pixels();
        let (patch, filters) = (w.patch_len(), self.filters);
        let kernel = values(&self.kernel.value);
        let images_per_chunk = self.chunk();
        let sparse = filter_conv::sparse_input_grad_applies(&w, filters);
        if sparse {
            resize_buffer(&mut self.kernel_t, filter_conv::transposed_len(&w, filters));
            filter_conv::transpose_kernel(&w, filters, kernel, &mut self.kernel_t);
        }
        let dense_filters = !sparse && self.dense_input_grad_by_filters();
        if dense_filters {
            resize_buffer(&mut self.kernel_t, kernel.len());
            filter_conv::flip_kernel(&w, filters, kernel, &mut self.kernel_t);
        }
        let kernel_t = &self.kernel_t;
        let dy_chunks = grad_output.par_chunks(rows_per_chunk * filters);
        let dx_chunks = grad_input.par_chunks_mut(images_per_chunk * w.in_len());
        if dense_filters {
            // dx = pad(dy) ⋆ flip(kernel): a forward pass of the
            // filter-vectorised kernels, the layer's channels as filters.
            let t = filter_conv::input_grad_window(&w, filters);
            let no_bias = vec![0.0; w.channels];
            let scratch_len = filter_conv::scratch_len(&t, w.channels);
            dy_chunks.zip(dx_chunks).for_each_init(
                || (Scratch::take(), Scratch::take()),
                |(padded, scratch), (dy, dx)| {
                    let images = dx.len() / w.in_len();
                    padded.resize(images * filter_conv::padded_len(&t), 0.0);
                    scratch.resize(scratch_len, 0.0);
                    filter_conv::pad(&t, dy, padded);
                    let (channels, no_bias) = (w.channels, &no_bias[..]);
                    filter_conv::forward(
                        &t, channels, padded, kernel_t, no_bias, dx, scratch, false,
                    );
                },
            );
            return;
        }
        if sparse {
            dy_chunks
                .zip(dx_chunks)
                .for_each_init(Scratch::take, |padded, (dy, dx)| {
                    filter_conv::input_grad(&w, filters, dy, kernel_t, dx, padded)
                });
            return;
        }
        // d_rows = dy · kernelᵀ, a few images at a time into a buffer per
        // thread that stays in the core's cache until col2im reads it.
        let images_per_product = (D_ROWS_PER_PRODUCT / w.out_pixels()).max(1);
        dy_chunks
            .zip(dx_chunks)
            .for_each_init(Scratch::take, |d_rows, (dy, dx)| {
                dx.fill(0.0);
                let products = dy
                    .chunks(images_per_product * w.out_pixels() * filters)
                    .zip(dx.chunks_mut(images_per_product * w.in_len()));
                for (dy, dx) in products {
                    d_rows.resize(dy.len() / filters * patch, 0.0);
                    linear::input_grad(dy, kernel, d_rows, patch);
                    im2col::col2im(&w, d_rows, dx);
                }
            });
    }

    /// The forward pass, keeping the path's copy of the input in `kept`
    /// when training.
    fn forward_keeping(
        &self,
        input: &ArrayD<f32>,
        output: &mut ArrayD<f32>,
        kept: Option<&mut Vec<f32>>,
    ) {
        let w = self.window();
        let batch = input.shape()[0];
        resize(output, &[batch, w.out_h, w.out_w, self.filters]);
        self.forward_values(values(input), values_mut(output), kept);
    }

    /// [`Self::forward_keeping`] on the values of whole images (`output`
    /// sized for them).
    fn forward_values(&self, input: &[f32], output: &mut [f32], kept: Option<&mut Vec<f32>>) {
        match self.path() {
            Path::Winograd => self.forward_winograd(input, output, kept.is_some()),
            Path::Filters => self.forward_filters(input, output, kept),
            Path::Direct => self.forward_direct(input, output, kept),
            Path::Im2col => self.forward_im2col(input, output, kept),
        }
    }

    /// Where the path keeps its copy of the input for the backward pass.
    fn kept_input(&mut self) -> &mut Vec<f32> {
        match self.path() {
            Path::Im2col => &mut self.rows,
            Path::Filters | Path::Direct | Path::Winograd => &mut self.spread_input,
        }
    }
}

impl Layer for Conv2D {
    fn class_name(&self) -> &'static str {
        "Conv2D"
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn weight_shapes(&self, input_shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        let (&[_, _, c], (k_h, k_w)) = (input_shape, self.kernel_size) else {
            return Vec::new();
        };
        let kernel = vec![k_h, k_w, c, self.filters];
        super::kernel_and_bias_shapes(kernel, self.filters, self.use_bias)
    }

    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let &[h, w, c] = input_shape else {
            return Err(Error::Shape(format!(
                "Conv2D expects images of shape (height, width, channels), got {input_shape:?}; \
                 add a channel axis, e.g. reshape to (N, 28, 28, 1)"
            )));
        };
        if self.filters == 0 {
            return Err(Error::InvalidArgument(
                "Conv2D needs at least one filter".into(),
            ));
        }
        let (strides, dilation) = (self.strides, self.dilation_rate);
        if strides != (1, 1) && dilation != (1, 1) {
            return Err(Error::InvalidArgument(format!(
                "Conv2D with strides {strides:?} and dilation_rate {dilation:?}: as in Keras, \
                 a dilation rate above 1 needs strides of 1"
            )));
        }
        let window =
            Window2d::dilated((h, w, c), self.kernel_size, strides, dilation, self.padding)?;
        let (k_h, k_w) = self.kernel_size;
        let kernel_shape = [k_h, k_w, c, self.filters];
        let len = super::tensor_len("the Conv2D kernel", &kernel_shape)?;
        let fan_in = k_h * k_w * c;
        let fan_out = k_h * k_w * self.filters;
        let kernel = self.kernel_initializer.sample(rng, len, fan_in, fan_out);
        self.kernel = Param::new(
            "kernel",
            ArrayD::from_shape_vec(IxDyn(&kernel_shape), kernel).unwrap(),
        );
        self.bias = Param::new("bias", ArrayD::zeros(IxDyn(&[self.filters])));
        self.window = Some(window);
        self.inference_kernel.clear();
        Ok(vec![window.out_h, window.out_w, self.filters])
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        self.forward_keeping(input, output, None);
    }

    fn forward_train(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, _: TrainingStep) {
        // The weights are about to change: no inference kernel to keep.
        self.inference_kernel.clear();
        // The kept input moves out while `forward_keeping` borrows the layer.
        let mut kept = std::mem::take(self.kept_input());
        self.forward_keeping(input, output, Some(&mut kept));
        *self.kept_input() = kept;
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let activation = self.output_activation;
        let relu = activation.has_derivative() && activation.activation == Activation::Relu;
        if relu && matches!(self.path(), Path::Winograd) {
            // relu's derivative applied as the transforms read the gradient.
            let grad = ConvOutputGrad::Output {
                output,
                grad: grad_output,
            };
            let dy = self.winograd_output_grad(&grad);
            return self.grads_winograd(input, dy, grad_input.into());
        }
        if activation.has_derivative() {
            let (y, dy) = (values(output), values_mut(grad_output));
            let chunk = self.chunk() * self.window().out_pixels() * self.filters;
            y.par_chunks(chunk)
                .zip(dy.par_chunks_mut(chunk))
                .for_each(|(y, dy)| activation.backward(y, dy, self.filters));
        }
        self.backward_from_linear(input, values(grad_output), grad_input);
    }

    fn forward_flops(&self) -> usize {
        let w = self.window();
        2 * w.out_pixels() * w.patch_len() * self.filters
    }

    fn params(&self) -> Vec<&Param> {
        kernel_and_bias(&self.kernel, &self.bias, self.use_bias)
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.inference_kernel.clear();
        kernel_and_bias_mut(&mut self.kernel, &mut self.bias, self.use_bias)
    }

    fn activation(&self) -> Activation {
        self.output_activation.activation
    }

    fn skip_activation_derivative(&mut self, skip: bool) {
        self.output_activation.derivative_skipped = skip;
    }

    /// On the Winograd path, the input-gradient transform applies relu's
    /// derivative at the input as it writes (one read of the input, where
    /// a pass of the layer before would read its output and its gradient
    /// and write the gradient back: cifar10-cnn's first layer, 16 MB).
    fn take_relu_derivative_of_input(&mut self, take: bool) -> bool {
        self.relu_input = take && self.built_on_winograd();
        self.relu_input
    }

    fn plan_role(&self) -> PlanRole<'_> {
        PlanRole::Convolution(self)
    }

    fn config(&self) -> Option<Config> {
        let fields = config([
            ("filters", self.filters.into()),
            ("kernel_size", pair(self.kernel_size)),
            ("strides", pair(self.strides)),
            ("dilation_rate", pair(self.dilation_rate)),
            ("padding", self.padding.name().into()),
            (
                "activation",
                self.output_activation.activation.name().into(),
            ),
            ("use_bias", self.use_bias.into()),
            ("kernel_initializer", self.kernel_initializer.name().into()),
        ]);
        Some(with_input_shape(fields, self.input_shape.as_deref()))
    }

    fn as_pooling_conv(&mut self) -> Option<&mut dyn PoolingConv> {
        Some(self)
    }
}

impl PoolingConv for Conv2D {
    fn pooled_forward_unavailable(&self) -> Option<String> {
        let w = self.window();
        // Winograd's output transform pools on every CPU.
        if matches!(self.path(), Path::Winograd)
            || filter_conv::pooled_forward_applies(&w, self.filters)
        {
            return None;
        }
        let narrow = self.filters <= 8;
        let reason = if !crate::kernels::has_avx512() {
            "this CPU has no AVX-512".to_string()
        } else if (w.stride_h, w.stride_w) != (1, 1) {
            format!("strides {:?}: the fused kernels need 1", self.strides)
        } else if w.is_dilated() {
            let rate = self.dilation_rate;
            format!("dilation_rate {rate:?}: the fused kernels need adjacent taps (1, 1)")
        } else if !(narrow || self.filters.is_multiple_of(16)) {
            let filters = self.filters;
            format!("{filters} filters: the fused kernels need at most 8 or a multiple of 16")
        } else if narrow && w.channels != 1 {
            let channels = w.channels;
            format!("{channels} input channels: with at most 8 filters the fused kernels need 1")
        } else {
            let width = w.k_w;
            format!("a kernel {width} wide: the fused kernels need 3 or 5")
        };
        Some(reason)
    }

    fn pooled_backward_applies(&self, input_grad: bool) -> bool {
        match self.path() {
            Path::Winograd => true,
            _ => {
                !input_grad && filter_conv::pooled_kernel_grad_applies(&self.window(), self.filters)
            }
        }
    }

    fn conv_activation(&self) -> Activation {
        self.output_activation.activation
    }

    fn folded(&self, (scale, shift): (&[f32], &[f32]), activation: Activation) -> Box<dyn Layer> {
        // y = s·(W·x + b) + t = (s·W)·x + (s·b + t), per filter (the last axis).
        let mut kernel = self.kernel.value.clone();
        let filters = self.filters;
        values_mut(&mut kernel)
            .chunks_mut(filters)
            .for_each(|taps| taps.iter_mut().zip(scale).for_each(|(w, s)| *w *= s));
        let bias = values(&self.bias.value);
        let folded_bias: Vec<f32> = (0..filters)
            .map(|f| scale[f] * bias[f] + shift[f])
            .collect();
        let folded_bias =
            ArrayD::from_shape_vec(IxDyn(&[filters]), folded_bias).expect("a bias per filter");
        Box::new(
            Conv2D {
                kernel: Param::new("kernel", kernel),
                bias: Param::new("bias", folded_bias),
                use_bias: true,
                output_activation: OutputActivation::new(activation),
                ..Conv2D::new(filters, self.kernel_size)
                    .strides(self.strides)
                    .dilation_rate(self.dilation_rate)
                    .kernel_initializer(self.kernel_initializer)
                    .padding(self.padding)
            }
            .with_window(self.window),
        )
    }

    fn conv_output_shape(&self) -> [usize; 3] {
        let w = self.window();
        [w.out_h, w.out_w, self.filters]
    }

    fn forward_images(&self, input: &[f32], output: &mut [f32]) {
        self.forward_values(input, output, None);
    }

    fn forward_pooled(&self, input: &ArrayD<f32>, pooled: &mut ArrayD<f32>, winners: &mut Vec<u8>) {
        self.pooled_pass(input, (pooled, winners), None);
    }

    fn forward_pooled_train(
        &mut self,
        input: &ArrayD<f32>,
        pooled: &mut ArrayD<f32>,
        winners: &mut Vec<u8>,
    ) {
        self.inference_kernel.clear();
        let mut kept = std::mem::take(&mut self.spread_input);
        self.pooled_pass(input, (pooled, winners), Some(&mut kept));
        self.spread_input = kept;
    }

    fn backward_pooled(
        &mut self,
        input: &ArrayD<f32>,
        (pooled, grad_pooled, winners): (&ArrayD<f32>, &ArrayD<f32>, &[u8]),
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        if matches!(self.path(), Path::Winograd) {
            let grad = ConvOutputGrad::Pooled {
                pooled,
                grad: grad_pooled,
                winners,
            };
            let dy = self.winograd_output_grad(&grad);
            return self.grads_winograd(input, dy, grad_input.into());
        }
        assert!(
            grad_input.is_none(),
            "this path computes no input gradient from the pooled one"
        );
        self.pooled_param_grads(pooled, grad_pooled, winners);
    }

    fn backward_linear(
        &mut self,
        input: &ArrayD<f32>,
        grad_output: &ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        self.backward_from_linear(input, values(grad_output), grad_input);
    }

    fn takes_output_grad_by_chunks(&self, input_grad: bool) -> bool {
        // The kept-input paths compute the input gradient on their own.
        let by_chunks = matches!(self.path(), Path::Winograd) || !input_grad;
        self.window.is_some() && by_chunks && !self.output_activation.has_derivative()
    }

    fn output_grad_sink<'a>(
        &'a mut self,
        to: BackwardIo<'a>,
        chunk: usize,
    ) -> Option<Box<dyn OutputGradSink + 'a>> {
        if !self.takes_output_grad_by_chunks(to.grad_input.is_some()) {
            return None;
        }
        if matches!(self.path(), Path::Winograd) {
            return Some(Box::new(self.winograd_sink(to, chunk)));
        }
        Some(Box::new(self.kept_input_sink(to.input.shape()[0], chunk)))
    }

    fn sum_output_grad_shares(&mut self) {
        self.sum_param_grad_shares();
    }

    fn hands_over_input_grad(&self) -> bool {
        let activation = &self.output_activation;
        self.built_on_winograd()
            && (!activation.has_derivative() || activation.activation == Activation::Relu)
    }

    fn backward_handing_over(
        &mut self,
        input: &ArrayD<f32>,
        grad: ConvOutputGrad<'_>,
        (before, before_io): (&mut dyn PoolingConv, BackwardIo<'_>),
    ) {
        assert!(self.hands_over_input_grad(), "a Winograd layer hands over");
        let dy = self.winograd_output_grad(&grad);
        let chunk = self.chunk_for(matches!(dy, OutputGrad::Pooled { .. }));
        let sink = before
            .output_grad_sink(before_io, chunk)
            .expect("the layer before takes its output gradient by chunks");
        self.grads_winograd(input, dy, InputGradTo::Sink(sink.as_ref()));
        drop(sink);
        before.sum_output_grad_shares();
    }

    fn takes_input_by_chunks(&self) -> bool {
        self.built_on_winograd()
    }

    fn forward_fed(
        &self,
        before: &dyn PoolingConv,
        input: &ArrayD<f32>,
        output: &mut ArrayD<f32>,
        winners: Option<&mut Vec<u8>>,
    ) {
        assert!(self.takes_input_by_chunks(), "a Winograd layer is fed");
        let pooled = winners.is_some();
        let pass = WinogradPass::of(self, false, pooled);
        let (chunk, batch) = (self.chunk_for(pooled), input.shape()[0]);
        let image_len = input.len() / batch.max(1);
        let before_len = before.conv_output_shape().iter().product::<usize>();
        let run = |fed: &mut Fed, index: usize, out: winograd::Output| {
            let first = index * chunk;
            let images = chunk.min(batch - first);
            let x = &values(input)[first * image_len..][..images * image_len];
            // Every value is written: no zeros first.
            fed.output.resize(images * before_len, 0.0);
            let x_fed = &mut fed.output[..images * before_len];
            before.forward_images(x, x_fed);
            pass.run(x_fed, out, &mut fed.scratch);
        };
        self.fed_pass((batch, chunk), (output, winners), Fed::default, run);
    }

    fn feeds_in_training(&self) -> bool {
        // A Winograd layer feeding another did not pay: with both layers'
        // transformed blocks in the cache at once, the chunk no longer
        // stays there (cifar10-cnn's conv2d_2 + conv2d_3 forward, one
        // core: 7.8 -> 8.0 ms).
        self.window.is_some() && matches!(self.path(), Path::Filters)
    }

    fn training_feed<'a>(
        &'a mut self,
        input: &'a ArrayD<f32>,
        output: &'a mut ArrayD<f32>,
        chunk: usize,
    ) -> Option<Box<dyn TrainingFeed + 'a>> {
        if !self.feeds_in_training() {
            return None;
        }
        // The weights are about to change: no inference kernel to keep.
        self.inference_kernel.clear();
        let (w, filters, batch) = (self.window(), self.filters, input.shape()[0]);
        resize(output, &[batch, w.out_h, w.out_w, filters]);
        let outputs = values_mut(output).chunks_mut(chunk * w.out_pixels() * filters);
        let x = (values(input), w.in_len(), chunk);
        // The filter-vectorised path keeps the padded images.
        let padded_len = filter_conv::padded_len(&w);
        // (The layer's fields one by one: the kept images are borrowed apart.)
        let pass = FiltersPass {
            w,
            filters,
            kernel: values(&self.kernel.value),
            bias: values(&self.bias.value),
            activation: self.output_activation,
        };
        resize_buffer(&mut self.spread_input, batch * padded_len);
        let parts = outputs.zip(self.spread_input.chunks_mut(chunk * padded_len));
        let parts = parts.map(Mutex::new).collect();
        Some(Box::new(FiltersFeed { x, parts, pass }))
    }

    fn forward_fed_train(
        &mut self,
        (before, input, before_output): (&mut dyn PoolingConv, &ArrayD<f32>, &mut ArrayD<f32>),
        output: &mut ArrayD<f32>,
        winners: Option<&mut Vec<u8>>,
    ) {
        assert!(self.takes_input_by_chunks(), "a Winograd layer is fed");
        self.inference_kernel.clear();
        let pooled = winners.is_some();
        let pass = WinogradPass::of(self, true, pooled);
        let (chunk, batch) = (self.chunk_for(pooled), input.shape()[0]);
        let feed = before
            .training_feed(input, before_output, chunk)
            .expect("the layer before feeds in training");
        let run = |scratch: &mut Scratch, index: usize, out: winograd::Output| {
            let mut out = Some(out);
            feed.feed(index, &mut |x| {
                let out = out.take().expect("a chunk is read once");
                pass.run(x, out, scratch);
            });
        };
        self.fed_pass(
            (batch, chunk),
            (output, winners),
            Scratch::take_unzeroed,
            run,
        );
    }
}

impl Conv2D {
    /// The pass of a stage fed chunk by chunk ([`PoolingConv::forward_fed`],
    /// [`PoolingConv::forward_fed_train`]): `output` (or, with `winners`,
    /// the pooled output of a fused stage) resized for `batch` images, and
    /// `run(state, index, out)` for each chunk of `chunk` images, with a
    /// state per thread from `init`.
    fn fed_pass<S>(
        &self,
        (batch, chunk): (usize, usize),
        (output, winners): (&mut ArrayD<f32>, Option<&mut Vec<u8>>),
        init: impl Fn() -> S + Sync + Send,
        run: impl Fn(&mut S, usize, winograd::Output) + Sync + Send,
    ) {
        let (w, filters) = (self.window(), self.filters);
        let (out_h, out_w) = match winners {
            Some(_) => (w.out_h / 2, w.out_w / 2),
            None => (w.out_h, w.out_w),
        };
        resize(output, &[batch, out_h, out_w, filters]);
        let out_len = out_h * out_w * filters;
        let outputs = values_mut(output)
            .par_chunks_mut(chunk * out_len)
            .enumerate();
        match winners {
            Some(winners) => {
                resize_buffer(winners, batch * out_len);
                outputs
                    .zip(winners.par_chunks_mut(chunk * out_len))
                    .for_each_init(init, |state, ((index, y), winners)| {
                        run(state, index, winograd::Output::Pooled { y, winners })
                    });
            }
            None => outputs.for_each_init(init, |state, (index, y)| {
                run(state, index, winograd::Output::Plain(y))
            }),
        }
    }
}

/// The filter-vectorised forward pass of a chunk of images (see
/// [`Conv2D::forward_filters`]), with what it reads of the layer.
struct FiltersPass<'a> {
    w: Window2d,
    filters: usize,
    kernel: &'a [f32],
    bias: &'a [f32],
    activation: OutputActivation,
}

impl<'a> FiltersPass<'a> {
    fn of(conv: &'a Conv2D) -> Self {
        FiltersPass {
            w: conv.window(),
            filters: conv.filters,
            kernel: values(&conv.kernel.value),
            // Without use_bias the bias parameter exists but stays zero.
            bias: values(&conv.bias.value),
            activation: conv.output_activation,
        }
    }

    /// `x` padded into `padded` (kept for the kernel gradient when
    /// training), then the output into `y`: the kernels apply relu as they
    /// store; other activations take a pass.
    fn run(&self, x: &[f32], padded: &mut [f32], y: &mut [f32], scratch: &mut Vec<f32>) {
        let (w, filters) = (&self.w, self.filters);
        let relu = self.activation.activation == Activation::Relu;
        scratch.resize(filter_conv::scratch_len(w, filters), 0.0);
        filter_conv::pad(w, x, padded);
        filter_conv::forward(w, filters, padded, self.kernel, self.bias, y, scratch, relu);
        if !relu {
            self.activation.forward(y, filters);
        }
    }
}

/// The Winograd forward pass of a chunk of images (see
/// [`Conv2D::forward_winograd`], [`Conv2D::pooled_winograd`] and the fed
/// passes), with what it reads of the layer.
struct WinogradPass<'a> {
    w: Window2d,
    filters: usize,
    u: Arc<TransformedKernel>,
    bias: &'a [f32],
    activation: OutputActivation,
}

impl<'a> WinogradPass<'a> {
    /// The pass with the kernel transformed afresh (`training`) or kept,
    /// in the scheme for all the outputs or (`pooled`) those a 2x2 max
    /// pooling reads.
    fn of(conv: &'a Conv2D, training: bool, pooled: bool) -> Self {
        WinogradPass {
            w: conv.window(),
            filters: conv.filters,
            u: conv.winograd_forward_kernel(training, pooled),
            // Without use_bias the bias parameter exists but stays zero.
            bias: values(&conv.bias.value),
            activation: conv.output_activation,
        }
    }

    /// The images `x` into `out`: pooled outputs through relu, plain ones
    /// through the activation (relu applied as the transform stores,
    /// others by a pass after).
    fn run(&self, x: &[f32], out: winograd::Output, scratch: &mut Vec<f32>) {
        let (w, filters, u, bias) = (&self.w, self.filters, &self.u, self.bias);
        match out {
            winograd::Output::Plain(y) => {
                let relu = self.activation.activation == Activation::Relu;
                let plain = winograd::Output::Plain(&mut y[..]);
                winograd::forward(w, filters, x, u, bias, relu, plain, scratch);
                if !relu {
                    self.activation.forward(y, filters);
                }
            }
            pooled => winograd::forward(w, filters, x, u, bias, true, pooled, scratch),
        }
    }
}

/// The filter-vectorised training forward pass computed chunk by chunk
/// as the layer after asks ([`TrainingFeed`]): each chunk's place in the
/// output and in the padded images kept for the backward pass, behind a
/// lock (one thread takes a chunk).
struct FiltersFeed<'a> {
    /// The whole batch's input, the values per image, images per chunk.
    x: (&'a [f32], usize, usize),
    /// Per chunk: its output and its padded images.
    parts: Vec<Mutex<(&'a mut [f32], &'a mut [f32])>>,
    pass: FiltersPass<'a>,
}

impl TrainingFeed for FiltersFeed<'_> {
    fn feed(&self, index: usize, read: &mut dyn FnMut(&[f32])) {
        let (x, in_len, chunk) = self.x;
        let mut part = self.parts[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (y, padded) = &mut *part;
        let images = (x.len() / in_len - index * chunk).min(chunk);
        let x = &x[index * chunk * in_len..][..images * in_len];
        // The kernels write their working space before reading it.
        let mut scratch = Scratch::take_unzeroed();
        self.pass.run(x, padded, y, &mut scratch);
        read(y);
    }
}

/// A thread's buffers for [`PoolingConv::forward_fed`]: the output of
/// the layer before for a chunk, and the Winograd scratch (both from the
/// thread's pool: fresh vectors for each task were pages to fault in and
/// zero, 3.5% of a one-core inference pass).
struct Fed {
    output: Scratch,
    scratch: Scratch,
}

impl Default for Fed {
    fn default() -> Self {
        Fed {
            output: Scratch::take_unzeroed(),
            scratch: Scratch::take_unzeroed(),
        }
    }
}

/// Where a Winograd backward pass puts the input gradient.
enum InputGradTo<'a> {
    /// Nowhere: the layer is the first.
    Nowhere,
    /// Into a tensor of the input's shape.
    Tensor(&'a mut ArrayD<f32>),
    /// Chunk by chunk to the layer before (see
    /// `PoolingConv::backward_handing_over`).
    Sink(&'a dyn OutputGradSink),
}

impl<'a> From<Option<&'a mut ArrayD<f32>>> for InputGradTo<'a> {
    fn from(grad_input: Option<&'a mut ArrayD<f32>>) -> Self {
        grad_input.map_or(InputGradTo::Nowhere, InputGradTo::Tensor)
    }
}

/// How a path that kept its input (im2col rows, or the images padded or
/// spread) computes a chunk's share of the parameter gradients.
#[derive(Clone, Copy)]
struct KeptShares {
    w: Window2d,
    filters: usize,
    path: Path,
    use_bias: bool,
}

impl KeptShares {
    /// Kept values per image.
    fn kept_len(&self) -> usize {
        let (w, filters) = (&self.w, self.filters);
        match self.path {
            Path::Filters => filter_conv::padded_len(w),
            Path::Direct => direct_conv::spread_len(w, filters),
            Path::Im2col => w.out_pixels() * w.patch_len(),
            Path::Winograd => unreachable!("the Winograd path keeps nothing"),
        }
    }

    /// Scratch values per share.
    fn scratch_len(&self) -> usize {
        match self.path {
            Path::Filters => filter_conv::scratch_len(&self.w, self.filters),
            Path::Direct => direct_conv::tiled_len(&self.w, self.filters),
            Path::Im2col | Path::Winograd => 0,
        }
    }

    /// The share of the images whose kept input is `kept` and output
    /// gradient (before the activation) `dy`. (Without use_bias the bias
    /// share is computed all the same, then ignored.)
    fn compute(&self, kept: &[f32], dy: &[f32], d_params: Share) {
        let (w, filters) = (&self.w, self.filters);
        let (d_kernel, d_bias, scratch) = d_params;
        match self.path {
            Path::Filters => {
                let scratch = &mut scratch[..self.scratch_len()];
                filter_conv::kernel_grad(w, filters, kept, dy, (d_kernel, d_bias), scratch);
            }
            Path::Direct => {
                direct_conv::kernel_grad(w, filters, kept, dy, d_kernel, scratch);
                linear::column_sums(dy, d_bias);
            }
            Path::Im2col => {
                let d_bias = self.use_bias.then_some(d_bias);
                linear::param_grads(kept, dy, d_kernel, d_bias, w.patch_len());
            }
            Path::Winograd => unreachable!("the Winograd path keeps nothing"),
        }
    }
}

/// A Winograd layer's backward pass run chunk by chunk as the layer after
/// hands it the gradient of its output (before the activation, whose
/// derivative that layer applied).
struct WinogradSink<'a> {
    w: Window2d,
    filters: usize,
    /// Images per chunk.
    chunk: usize,
    /// The layer's input, the whole batch.
    x: &'a [f32],
    /// The kernel for the input gradient, and whether it goes on through
    /// relu's derivative at the input; `None` for a first layer.
    dx: Option<(TransformedKernel, bool)>,
    /// Per chunk: its shares (a lock each: one thread takes a chunk).
    shares: Vec<Mutex<WinogradShare<'a>>>,
}

/// A chunk's shares of the kernel and bias gradients, and its part of
/// the input gradient (none for a first layer).
type WinogradShare<'a> = (&'a mut [f32], &'a mut [f32], Option<&'a mut [f32]>);

impl OutputGradSink for WinogradSink<'_> {
    fn take(&self, index: usize, dy: &[f32], scratch: &mut Vec<f32>) {
        let in_len = self.w.in_len();
        let images = dy.len() / (self.w.out_pixels() * self.filters);
        let x = &self.x[index * self.chunk * in_len..][..images * in_len];
        let mut share = self.shares[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (d_kernel, d_bias, dx) = &mut *share;
        let dx = dx
            .as_deref_mut()
            .zip(self.dx.as_ref())
            .map(|(dx, (u_t, relu_input))| (dx, u_t, *relu_input));
        let (x, dy) = (x, OutputGrad::Linear(dy));
        winograd::backward(
            &self.w,
            self.filters,
            (x, dy),
            (d_kernel, d_bias),
            dx,
            scratch,
        );
    }
}

/// One chunk's share of the kernel and bias gradients, and its scratch.
type Share<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32]);

/// The shares of a path that kept its input, each computed when its
/// chunk of the output gradient comes (from this layer's own backward
/// pass, or handed over by the layer after).
struct KeptInputSink<'a> {
    how: KeptShares,
    /// Images per chunk.
    chunk: usize,
    /// The kept input of the whole batch.
    kept: &'a [f32],
    /// Each chunk's share (a lock each: one thread takes a chunk).
    shares: Vec<Mutex<Share<'a>>>,
}

impl OutputGradSink for KeptInputSink<'_> {
    fn take(&self, index: usize, dy: &[f32], _: &mut Vec<f32>) {
        let (kept_len, out_len) = (
            self.how.kept_len(),
            self.how.w.out_pixels() * self.how.filters,
        );
        let images = dy.len() / out_len;
        let kept = &self.kept[index * self.chunk * kept_len..][..images * kept_len];
        let mut share = self.shares[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (d_kernel, d_bias, scratch) = &mut *share;
        self.how.compute(kept, dy, (d_kernel, d_bias, scratch));
    }
}
