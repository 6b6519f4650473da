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
//! Stride-1 layers with at most 8 or a multiple of 16 filters (both of
//! LeNet's) skip the rows on AVX2 CPUs: `kernels::filter_conv` computes the
//! output and the kernel gradient straight from (zero-padded copies of) the
//! images, with the filters as the SIMD axis. The input gradient is
//! `dy · kernelᵀ` and col2im, a chunk at a time, except for the wide ones on
//! AVX-512 CPUs: there each output pixel's window of input gradient is
//! summed in registers over its non-zero `dy` only (behind max pooling,
//! most are zero) and added straight onto the input gradient.
//!
//! On AVX-512 CPUs a `Sequential` runs such a layer with relu and the 2x2
//! max pooling after it as one pass ([`Conv2D::forward_pooled`]): the
//! output is pooled in registers as it is computed and never stored; for a
//! first layer with at most 8 filters over grey images the backward passes
//! are one as well ([`Conv2D::backward_pooled`]).

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::{
    Layer, MaxPooling2D, OutputActivation, Padding, Param, kernel_and_bias, kernel_and_bias_mut,
    resize, resize_buffer, samples_per_chunk, values, values_mut,
};
use crate::initializers::{Rng, glorot_uniform};
use crate::kernels::{Window2d, direct_conv, filter_conv, im2col, linear};
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
    padding: Padding,
    use_bias: bool,
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
    // `kernels::direct_conv`): the direct path's tiled kernel, the input
    // each keeps for its backward pass (padded or spread), and per-chunk
    // scratch of the kernel gradient.
    tiled_kernel: Vec<f32>,
    spread_input: Vec<f32>,
    direct_accumulators: Vec<f32>,
}

/// Rows of `d_rows` per matrix product of the input gradient: few enough
/// to stay in a core's cache between the product and col2im.
const D_ROWS_PER_PRODUCT: usize = 256;

/// The kernels a Conv2D runs on (see `Conv2D::path`).
#[derive(Clone, Copy)]
enum Path {
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
            padding: Padding::Valid,
            use_bias: true,
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
            tiled_kernel: Vec::new(),
            spread_input: Vec::new(),
            direct_accumulators: Vec::new(),
        }
    }

    /// Step of the window, (vertical, horizontal).
    pub fn strides(mut self, strides: (usize, usize)) -> Self {
        self.strides = strides;
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

    /// How the training passes compute: forward and backward must agree,
    /// since backward reads what forward kept.
    fn path(&self) -> Path {
        let w = self.window();
        if filter_conv::applies(&w, self.filters) {
            Path::Filters
        } else if direct_conv::applies(&w) {
            Path::Direct
        } else {
            Path::Im2col
        }
    }

    /// Images per parallel chunk.
    fn chunk(&self) -> usize {
        samples_per_chunk(self.window().out_pixels())
    }
}

impl Conv2D {
    /// im2col, then one matrix product per chunk of images. Training keeps
    /// every chunk's rows for the backward pass; inference reuses one
    /// cache-sized buffer per thread instead.
    fn forward_im2col(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, training: bool) {
        let w = self.window();
        let chunk = self.chunk();
        let rows_len = chunk * w.out_pixels() * w.patch_len();
        let kernel = values(&self.kernel.value);
        let bias = self.use_bias.then(|| values(&self.bias.value));
        let (activation, filters) = (self.output_activation, self.filters);
        let compute = |x: &[f32], rows: &mut [f32], y: &mut [f32]| {
            im2col::im2col(&w, x, rows);
            linear::forward(rows, kernel, bias, y, w.patch_len());
            activation.forward(y, filters);
        };
        let chunks = values(input)
            .par_chunks(chunk * w.in_len())
            .zip(values_mut(output).par_chunks_mut(chunk * w.out_pixels() * filters));
        if training {
            resize_buffer(
                &mut self.rows,
                input.shape()[0] * w.out_pixels() * w.patch_len(),
            );
            chunks
                .zip(self.rows.par_chunks_mut(rows_len))
                .for_each(|((x, y), rows)| compute(x, rows, y));
        } else {
            chunks.for_each_init(Vec::new, |rows, (x, y)| {
                let images = x.len() / w.in_len();
                rows.resize(images * w.out_pixels() * w.patch_len(), 0.0);
                compute(x, rows, y);
            });
        }
    }

    /// Filters as the SIMD axis (a multiple of 16 filters, AVX2): no im2col.
    /// Training keeps the padded images for the kernel gradient; inference
    /// pads into one buffer per thread.
    fn forward_filters(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, training: bool) {
        let w = self.window();
        let (chunk, filters) = (self.chunk(), self.filters);
        let scratch_len = filter_conv::scratch_len(&w, filters);
        let kernel = values(&self.kernel.value);
        // Without use_bias the bias parameter exists but stays zero.
        let bias = values(&self.bias.value);
        let activation = self.output_activation;
        // The kernels apply relu as they store; other activations take a pass.
        let relu = activation.activation == Activation::Relu;
        let compute = |x: &[f32], padded: &mut [f32], y: &mut [f32], scratch: &mut Vec<f32>| {
            scratch.resize(scratch_len, 0.0);
            filter_conv::pad(&w, x, padded);
            filter_conv::forward(&w, filters, padded, kernel, bias, y, scratch, relu);
            if !relu {
                activation.forward(y, filters);
            }
        };
        let chunks = values(input)
            .par_chunks(chunk * w.in_len())
            .zip(values_mut(output).par_chunks_mut(chunk * w.out_pixels() * filters));
        let kept = training.then_some(&mut self.spread_input);
        let images = input.shape()[0];
        Self::padded_chunks((w, chunk, images), kept, chunks, compute);
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
                .for_each_init(Vec::new, |scratch, ((x, out), padded)| {
                    compute(x, padded, out, scratch)
                });
        } else {
            chunks.for_each_init(
                || (Vec::new(), Vec::new()),
                |(padded, scratch), (x, out)| {
                    padded.resize(x.len() / w.in_len() * padded_len, 0.0);
                    compute(x, padded, out, scratch);
                },
            );
        }
    }

    /// Whether [`Conv2D::forward_pooled`] can run this layer and `pool`
    /// (which follows it) in one pass.
    pub(crate) fn can_forward_pooled(&self, pool: &MaxPooling2D, training: bool) -> bool {
        self.output_activation.activation == Activation::Relu
            && pool.is_2x2()
            // Training needs the pool to apply relu's derivative: this
            // layer's output, which its own would need, is never computed.
            && (!training || pool.applies_relu_derivative())
            && filter_conv::pooled_forward_applies(&self.window(), self.filters)
    }

    /// This layer with relu and the 2x2 max pooling after it, in one pass
    /// (see `filter_conv::forward_pooled`): `pooled` gets the pool's
    /// output and `pool` its winners, as if both had run their `forward`.
    /// `output`, this layer's own output, is only sized (when training,
    /// for the pool's backward pass): the backward passes never read it.
    pub(crate) fn forward_pooled(
        &mut self,
        input: &ArrayD<f32>,
        output: &mut ArrayD<f32>,
        (pool, pooled): (&mut MaxPooling2D, &mut ArrayD<f32>),
        training: bool,
    ) {
        let w = self.window();
        let (batch, filters) = (input.shape()[0], self.filters);
        if training {
            resize(output, &[batch, w.out_h, w.out_w, filters]);
        }
        let pooled_shape = [batch, w.out_h / 2, w.out_w / 2, filters];
        resize(pooled, &pooled_shape);
        let pooled_len = pooled_shape[1..].iter().product::<usize>();
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
                .zip(pool.winners_for(batch).par_chunks_mut(chunk * pooled_len)),
        );
        let kept = training.then_some(&mut self.spread_input);
        Self::padded_chunks((w, chunk, batch), kept, chunks, compute);
    }

    /// Room for each parallel chunk's share of the parameter gradients.
    fn make_param_grad_shares(&mut self, batch: usize) {
        let chunks = batch.div_ceil(self.chunk());
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

    /// Whether [`Conv2D::backward_pooled`] can run this layer's and
    /// `pool`'s backward passes as one, after `forward_pooled`.
    pub(crate) fn can_backward_pooled(&self, pool: &MaxPooling2D) -> bool {
        self.can_forward_pooled(pool, true)
            && filter_conv::pooled_kernel_grad_applies(&self.window(), self.filters)
    }

    /// The backward pass of this layer and the max pooling after it, after
    /// [`Conv2D::forward_pooled`] ran them: the parameter gradients from
    /// the pool's output gradient `grad_pooled`, its output `pooled` and
    /// its winners, without the gradient of this layer's output ever being
    /// stored (see `filter_conv::kernel_grad_pooled`). No input gradient:
    /// `Sequential` runs it for its first layer only.
    pub(crate) fn backward_pooled(
        &mut self,
        pool: &MaxPooling2D,
        pooled: &ArrayD<f32>,
        grad_pooled: &ArrayD<f32>,
    ) {
        let (w, filters, chunk) = (self.window(), self.filters, self.chunk());
        let batch = pooled.shape()[0];
        self.make_param_grad_shares(batch);
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
            .zip(pool.winners().par_chunks(chunk * pooled_len));
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

    /// The parameter-gradient shares of the filter-vectorised path.
    fn param_grads_filters(&mut self, output: &ArrayD<f32>, grad_output: &mut ArrayD<f32>) {
        let (w, filters) = (self.window(), self.filters);
        let kept = filter_conv::padded_len(&w);
        let scratch = filter_conv::scratch_len(&w, filters);
        self.param_grads_from_kept_input(
            output,
            grad_output,
            kept,
            scratch,
            |padded, dy, d_grads, s| {
                filter_conv::kernel_grad(&w, filters, padded, dy, d_grads, &mut s[..scratch])
            },
        );
    }

    /// The direct path: no im2col rows at all. The spread input is kept
    /// for the backward pass.
    fn forward_direct(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        let w = self.window();
        let (chunk, filters) = (self.chunk(), self.filters);
        let spread_len = direct_conv::spread_len(&w, filters);
        resize_buffer(
            &mut self.tiled_kernel,
            direct_conv::tiled_kernel_len(&w, filters),
        );
        resize_buffer(&mut self.spread_input, input.shape()[0] * spread_len);
        // Without use_bias the bias parameter exists but stays zero.
        let (kernel, bias) = (values(&self.kernel.value), values(&self.bias.value));
        direct_conv::tile_kernel(&w, filters, kernel, bias, &mut self.tiled_kernel);
        let tiled = &self.tiled_kernel;
        let activation = self.output_activation;
        values(input)
            .par_chunks(chunk * w.in_len())
            .zip(values_mut(output).par_chunks_mut(chunk * w.out_pixels() * filters))
            .zip(self.spread_input.par_chunks_mut(chunk * spread_len))
            .for_each(|((x, y), spread)| {
                direct_conv::spread(&w, filters, x, spread);
                direct_conv::forward(&w, filters, spread, tiled, y);
                activation.forward(y, filters);
            });
    }

    /// Per chunk: back through the activation, then this chunk's share of
    /// the parameter gradients, from the im2col rows kept by `forward`.
    fn param_grads_im2col(&mut self, output: &ArrayD<f32>, grad_output: &mut ArrayD<f32>) {
        let w = self.window();
        let rows_per_chunk = self.chunk() * w.out_pixels();
        let (patch, filters, use_bias) = (w.patch_len(), self.filters, self.use_bias);
        let activation = self.output_activation;
        values(output)
            .par_chunks(rows_per_chunk * filters)
            .zip(values_mut(grad_output).par_chunks_mut(rows_per_chunk * filters))
            .zip(self.rows.par_chunks(rows_per_chunk * patch))
            .zip(self.partial_kernel.par_chunks_mut(patch * filters))
            .zip(self.partial_bias.par_chunks_mut(filters))
            .for_each(|((((y, dy), rows), d_kernel), d_bias)| {
                activation.backward(y, dy, filters);
                linear::param_grads(rows, dy, d_kernel, use_bias.then_some(d_bias), patch);
            });
    }

    /// The same shares, computed by the direct path from the spread input.
    fn param_grads_direct(&mut self, output: &ArrayD<f32>, grad_output: &mut ArrayD<f32>) {
        let (w, filters) = (self.window(), self.filters);
        let kept = direct_conv::spread_len(&w, filters);
        let scratch = direct_conv::tiled_len(&w, filters);
        self.param_grads_from_kept_input(
            output,
            grad_output,
            kept,
            scratch,
            |spread, dy, (d_kernel, d_bias), acc| {
                direct_conv::kernel_grad(&w, filters, spread, dy, d_kernel, acc);
                linear::column_sums(dy, d_bias);
            },
        );
    }

    /// The shares of a path that kept a copy of its input (spread or
    /// padded, `kept` values per image) in `spread_input`: per chunk, back
    /// through the activation, then `grads(kept input, dy, (d_kernel,
    /// d_bias), scratch)` with `scratch` values of scratch. (Without
    /// use_bias the bias share is computed all the same, then ignored.)
    fn param_grads_from_kept_input(
        &mut self,
        output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        kept: usize,
        scratch: usize,
        grads: impl Fn(&[f32], &[f32], (&mut [f32], &mut [f32]), &mut [f32]) + Sync,
    ) {
        let w = self.window();
        let (chunk, filters) = (self.chunk(), self.filters);
        let chunks = grad_output.shape()[0].div_ceil(chunk);
        // At least one value per chunk, so that every chunk gets a slice.
        let scratch = scratch.max(1);
        resize_buffer(&mut self.direct_accumulators, chunks * scratch);
        let activation = self.output_activation;
        let out_len = chunk * w.out_pixels() * filters;
        self.spread_input
            .par_chunks(chunk * kept)
            .zip(values(output).par_chunks(out_len))
            .zip(values_mut(grad_output).par_chunks_mut(out_len))
            .zip(self.partial_kernel.par_chunks_mut(w.patch_len() * filters))
            .zip(self.partial_bias.par_chunks_mut(filters))
            .zip(self.direct_accumulators.par_chunks_mut(scratch))
            .for_each(|(((((input, y), dy), d_kernel), d_bias), scratch)| {
                activation.backward(y, dy, filters);
                grads(input, dy, (d_kernel, d_bias), scratch);
            });
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
        let window = Window2d::new((h, w, c), self.kernel_size, self.strides, self.padding)?;
        let (k_h, k_w) = self.kernel_size;
        let kernel_shape = [k_h, k_w, c, self.filters];
        let fan_in = k_h * k_w * c;
        let fan_out = k_h * k_w * self.filters;
        let kernel = glorot_uniform(rng, fan_in * self.filters, fan_in, fan_out);
        self.kernel = Param::new(
            "kernel",
            ArrayD::from_shape_vec(IxDyn(&kernel_shape), kernel).unwrap(),
        );
        self.bias = Param::new("bias", ArrayD::zeros(IxDyn(&[self.filters])));
        self.window = Some(window);
        Ok(vec![window.out_h, window.out_w, self.filters])
    }

    fn forward(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, training: bool) {
        let w = self.window();
        let batch = input.shape()[0];
        resize(output, &[batch, w.out_h, w.out_w, self.filters]);
        match self.path() {
            Path::Filters => self.forward_filters(input, output, training),
            Path::Direct => self.forward_direct(input, output),
            Path::Im2col => self.forward_im2col(input, output, training),
        }
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let w = self.window();
        let rows_per_chunk = self.chunk() * w.out_pixels();
        let (patch, filters) = (w.patch_len(), self.filters);
        self.make_param_grad_shares(input.shape()[0]);

        match self.path() {
            Path::Filters => self.param_grads_filters(output, grad_output),
            Path::Direct => self.param_grads_direct(output, grad_output),
            Path::Im2col => self.param_grads_im2col(output, grad_output),
        }
        self.sum_param_grad_shares();

        let Some(grad_input) = grad_input else { return };
        resize(grad_input, input.shape());
        let kernel = values(&self.kernel.value);
        let images_per_chunk = self.chunk();
        let sparse = filter_conv::sparse_input_grad_applies(&w, filters);
        if sparse {
            resize_buffer(&mut self.kernel_t, filter_conv::transposed_len(&w, filters));
            filter_conv::transpose_kernel(&w, filters, kernel, &mut self.kernel_t);
        }
        let kernel_t = &self.kernel_t;
        let dy_chunks = values(grad_output).par_chunks(rows_per_chunk * filters);
        let dx_chunks = values_mut(grad_input).par_chunks_mut(images_per_chunk * w.in_len());
        if sparse {
            dy_chunks
                .zip(dx_chunks)
                .for_each_init(Vec::new, |padded, (dy, dx)| {
                    filter_conv::input_grad(&w, filters, dy, kernel_t, dx, padded)
                });
            return;
        }
        // d_rows = dy · kernelᵀ, a few images at a time into a buffer per
        // thread that stays in the core's cache until col2im reads it.
        let images_per_product = (D_ROWS_PER_PRODUCT / w.out_pixels()).max(1);
        dy_chunks
            .zip(dx_chunks)
            .for_each_init(Vec::new, |d_rows, (dy, dx)| {
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

    fn forward_flops(&self) -> usize {
        let w = self.window();
        2 * w.out_pixels() * w.patch_len() * self.filters
    }

    fn params(&self) -> Vec<&Param> {
        kernel_and_bias(&self.kernel, &self.bias, self.use_bias)
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        kernel_and_bias_mut(&mut self.kernel, &mut self.bias, self.use_bias)
    }

    fn activation(&self) -> Activation {
        self.output_activation.activation
    }

    fn skip_activation_derivative(&mut self, skip: bool) {
        self.output_activation.derivative_skipped = skip;
    }
}
