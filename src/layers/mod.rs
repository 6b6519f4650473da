//! Layers, one file each, with the names, arguments and defaults of Keras.
//!
//! A layer knows the shape it produces from a given input shape
//! ([`Layer::build`], which also creates its weights), its forward pass
//! (for inference on `&self`, and for training), its backward pass, its
//! trainable parameters and its non-trainable state. Every parameter is a
//! [`Param`] holding its value *and* the gradient of the last backward
//! pass, so everything an optimizer or a gradient reducer needs is in one
//! place per layer.
//!
//! Tensors are `ndarray` arrays in NHWC order (batch, height, width,
//! channels), `f32`, always in standard (C) layout. Forward and backward
//! write into buffers owned by the model and reused from batch to batch, so
//! a training step allocates nothing once the batch size is steady.

mod activation;
pub(crate) mod augment;
mod average_pooling2d;
mod batch_normalization;
pub mod config;
mod conv2d;
mod dense;
mod dropout;
mod flatten;
mod global_pooling2d;
mod kept;
pub(crate) mod max_pooling2d;
mod pooling;
mod random_flip;
mod random_rotation;
mod random_translation;
mod random_zoom;
mod rescaling;
mod reshape;
mod zero_padding2d;

pub use crate::kernels::im2col::Padding;
pub use activation::ActivationLayer;
pub use augment::{Factor, FillMode, Interpolation};
pub use average_pooling2d::AveragePooling2D;
pub use batch_normalization::BatchNormalization;
pub use conv2d::Conv2D;
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use global_pooling2d::{GlobalAveragePooling2D, GlobalMaxPooling2D};
pub use max_pooling2d::MaxPooling2D;
pub use random_flip::{FlipMode, RandomFlip};
pub use random_rotation::RandomRotation;
pub use random_translation::RandomTranslation;
pub use random_zoom::RandomZoom;
pub use rescaling::Rescaling;
pub use reshape::Reshape;
pub use zero_padding2d::ZeroPadding2D;

use ndarray::{ArrayD, IxDyn};

use crate::initializers::Rng;
use crate::{Activation, Result};

/// A trainable array and the gradient of the loss with respect to it.
#[derive(Clone, Debug)]
pub struct Param {
    /// `"kernel"` or `"bias"`, as in Keras.
    pub name: &'static str,
    /// The current value.
    pub value: ArrayD<f32>,
    /// The gradient from the last backward pass, same shape as `value`.
    pub grad: ArrayD<f32>,
}

impl Param {
    /// A parameter with the given value and a zero gradient.
    pub fn new(name: &'static str, value: ArrayD<f32>) -> Self {
        let grad = ArrayD::zeros(value.raw_dim());
        Param { name, value, grad }
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the parameter holds no scalar at all.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// A non-trainable array a layer keeps between batches (Keras's
/// non-trainable weights, PyTorch's buffers): BatchNormalization's moving
/// mean and variance, for example. The optimizer never touches it; weight
/// files, `summary`'s counts and replicas cover it like the parameters.
#[derive(Clone, Debug)]
pub struct Buffer {
    /// The Keras name, e.g. `"moving_mean"`.
    pub name: &'static str,
    /// The current value.
    pub value: ArrayD<f32>,
}

impl Buffer {
    /// A buffer holding `value`.
    pub fn new(name: &'static str, value: ArrayD<f32>) -> Self {
        Buffer { name, value }
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the buffer holds no scalar at all.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// Where a training forward pass stands in the run. Layers that draw
/// random numbers (Dropout) key their draws on it, so that a sample gets
/// the same draws however the batch is split between replicas, and
/// whatever the number of threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainingStep {
    /// Optimizer steps taken before this one, over the model's whole life.
    pub step: u64,
    /// Position in the batch of the first sample of this pass's input.
    pub first_sample: usize,
}

/// How the execution planner (`Sequential`'s plan, made at compile time)
/// sees a layer: which layers it may run as one fused stage.
pub enum PlanRole<'a> {
    /// Runs on its own.
    Opaque,
    /// A layer that only applies this activation (Keras `Activation`).
    Activation(Activation),
    /// 2x2 max pooling with stride 2 and no padding.
    MaxPool2x2,
    /// A convolution that may pool its output as it computes it.
    Convolution(&'a dyn PoolingConv),
    /// A per-channel affine map at inference (BatchNormalization), which a
    /// convolution before it can take into its own weights.
    ChannelAffine(&'a dyn ChannelAffine),
    /// A layer whose output is its input's values unchanged, in another
    /// shape (Flatten, Reshape): at inference, a layer after it that reads
    /// each sample as one flat run ([`PlanRole::FlatSamples`]) reads its
    /// input in place, and it never runs.
    Reshape,
    /// A layer that reads each sample's values as one flat run, whatever
    /// the input's shape (Dense after Flatten).
    FlatSamples,
}

/// A layer that, at inference, multiplies each channel by a constant and
/// adds another: `y[.., c] = scale[c] · x[.., c] + shift[c]`. In training
/// it may apply relu as it stores its output (the fused stage
/// BatchNormalization + Activation(relu) of a `Sequential`'s plan), so
/// that relu needs no pass, nor a tensor, of its own.
pub trait ChannelAffine: Send + Sync {
    /// `(scale, shift)`, one value per channel.
    fn inference_affine(&self) -> (Vec<f32>, Vec<f32>);

    /// Training: `relu(layer(input))` into `output` (resized if needed),
    /// keeping what [`ChannelAffine::backward_relu`] needs, as
    /// [`Layer::forward_train`] would without the relu.
    fn forward_train_relu(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>);

    /// The backward pass after [`ChannelAffine::forward_train_relu`]:
    /// `output` is relu's output and `grad_output` the gradient with
    /// respect to it. With `relu_derivative`, the passes apply relu's
    /// derivative (`output > 0`) as they read the gradient; without, the
    /// layer after relu has applied it already (max pooling, see
    /// [`Layer::take_relu_derivative_of_input`]).
    fn backward_relu(
        &mut self,
        input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
        relu_derivative: bool,
    );
}

/// A convolution that can apply relu and 2x2 max pooling to its output as
/// it computes it, so that the output itself is never stored: the fused
/// stage Conv2D [+ relu] + MaxPooling2D of a `Sequential`'s plan.
pub trait PoolingConv: Send + Sync {
    /// Whether the kernels can compute the fused forward pass on this CPU
    /// (`None`), or why not.
    fn pooled_forward_unavailable(&self) -> Option<String>;

    /// Whether the backward pass from the pooled gradient can also be one
    /// pass: with the input gradient (`input_grad`), or without (for a
    /// first layer).
    fn pooled_backward_applies(&self, input_grad: bool) -> bool;

    /// The activation of the convolution's own output.
    fn conv_activation(&self) -> Activation;

    /// A copy of the convolution, for inference only, whose output is
    /// `activation(scale · conv(x) + shift)` per filter: a [`ChannelAffine`]
    /// after it folded into its kernel and bias. Its own activation must be
    /// linear.
    fn folded(&self, affine: (&[f32], &[f32]), activation: Activation) -> Box<dyn Layer>;

    /// The shape of the convolution's output for one image, `[h, w, filters]`.
    fn conv_output_shape(&self) -> [usize; 3];

    /// Inference on the values of whole images, into `output` (sized for
    /// them, [`PoolingConv::conv_output_shape`] per image): as
    /// [`Layer::forward`], without arrays.
    fn forward_images(&self, input: &[f32], output: &mut [f32]);

    /// Inference: `relu(maxpool2x2(conv(input)))` into `pooled`, and each
    /// window's winner (as `kernels::pool` records them) into `winners`.
    fn forward_pooled(&self, input: &ArrayD<f32>, pooled: &mut ArrayD<f32>, winners: &mut Vec<u8>);

    /// The same in training: also keeps what the backward passes need.
    fn forward_pooled_train(
        &mut self,
        input: &ArrayD<f32>,
        pooled: &mut ArrayD<f32>,
        winners: &mut Vec<u8>,
    );

    /// The parameter gradients (and the input gradient into `grad_input`
    /// if given) straight from the pooled output gradient, after
    /// [`PoolingConv::forward_pooled_train`] on `input`; only where
    /// [`PoolingConv::pooled_backward_applies`].
    fn backward_pooled(
        &mut self,
        input: &ArrayD<f32>,
        pooled: (&ArrayD<f32>, &ArrayD<f32>, &[u8]),
        grad_input: Option<&mut ArrayD<f32>>,
    );

    /// The backward pass from the gradient of the convolution's output
    /// *before* its activation (the pooling applied relu's derivative).
    fn backward_linear(
        &mut self,
        input: &ArrayD<f32>,
        grad_output: &ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    );

    /// Whether this convolution's backward pass can run a chunk of images
    /// at a time as the layer after hands it the gradient of its output
    /// ([`PoolingConv::output_grad_sink`]), with (`input_grad`) or without
    /// (a first layer) the input gradient: its activation's derivative is
    /// applied by that layer (or it has none), its parameter gradients
    /// are sums of per-chunk shares, and a chunk's input gradient comes
    /// from that chunk alone.
    fn takes_output_grad_by_chunks(&self, _input_grad: bool) -> bool {
        false
    }

    /// A sink for the output gradient of `batch` images in chunks of
    /// `chunk` images (before the activation): as each chunk comes it
    /// computes the chunk's shares of the parameter gradients and its part
    /// of `to`'s input gradient; after the last,
    /// [`PoolingConv::sum_output_grad_shares`]. `None` where
    /// [`PoolingConv::takes_output_grad_by_chunks`] is false.
    fn output_grad_sink<'a>(
        &'a mut self,
        _to: BackwardIo<'a>,
        _chunk: usize,
    ) -> Option<Box<dyn OutputGradSink + 'a>> {
        None
    }

    /// The parameter gradients from the shares a sink filled.
    fn sum_output_grad_shares(&mut self) {}

    /// Whether this convolution's backward pass can hand its input
    /// gradient over chunk by chunk ([`PoolingConv::backward_handing_over`])
    /// instead of storing it.
    fn hands_over_input_grad(&self) -> bool {
        false
    }

    /// The backward pass of a stage whose input gradient goes, chunk by
    /// chunk while it is still in the cache, to the convolution `before`
    /// (see [`PoolingConv::takes_output_grad_by_chunks`]), which runs its
    /// own backward pass on each chunk, reading and writing `before_io`:
    /// this input gradient is never stored whole. Only where
    /// [`PoolingConv::hands_over_input_grad`].
    fn backward_handing_over(
        &mut self,
        _input: &ArrayD<f32>,
        _grad: ConvOutputGrad<'_>,
        _before: (&mut dyn PoolingConv, BackwardIo<'_>),
    ) {
        unreachable!("the plan hands over only where hands_over_input_grad() says it can")
    }

    /// Whether this convolution's inference pass can take its input a
    /// chunk of images at a time as the layer before computes it
    /// ([`PoolingConv::forward_fed`]).
    fn takes_input_by_chunks(&self) -> bool {
        false
    }

    /// Inference: `before` (a convolution whose output is this layer's input)
    /// runs on `input` a chunk of images at a time, into a buffer of the
    /// thread's, and this layer's pass reads each chunk while it is in the
    /// cache: the output of `before` is never stored whole. Into `output`
    /// (resized if needed), or, with `winners`, the pooled output of a
    /// fused stage (as [`PoolingConv::forward_pooled`]). Only where
    /// [`PoolingConv::takes_input_by_chunks`].
    fn forward_fed(
        &self,
        _before: &dyn PoolingConv,
        _input: &ArrayD<f32>,
        _output: &mut ArrayD<f32>,
        _winners: Option<&mut Vec<u8>>,
    ) {
        unreachable!("the plan feeds only where takes_input_by_chunks() says it can")
    }

    /// Whether this convolution's training forward pass can run a chunk of
    /// images at a time as the layer after asks for each chunk
    /// ([`PoolingConv::training_feed`]).
    fn feeds_in_training(&self) -> bool {
        false
    }

    /// Training: this layer's forward pass on `input`, into `output`
    /// (resized), run chunk by chunk (`chunk` images each) as the layer
    /// after asks for the chunks ([`TrainingFeed::feed`]), keeping what
    /// its backward pass needs as [`Layer::forward_train`] would. `None`
    /// where [`PoolingConv::feeds_in_training`] is false.
    fn training_feed<'a>(
        &'a mut self,
        _input: &'a ArrayD<f32>,
        _output: &'a mut ArrayD<f32>,
        _chunk: usize,
    ) -> Option<Box<dyn TrainingFeed + 'a>> {
        None
    }

    /// Training, as [`PoolingConv::forward_fed`] at inference: the
    /// convolution `before.0` computes this layer's input from its own
    /// input `before.1` a chunk at a time, and this layer reads each chunk
    /// while it is in the cache. Unlike inference, the convolution still
    /// stores its whole output, in `before.2` (its backward pass and this
    /// layer's read it), but this pass reads it from the cache. Into
    /// `output`, or, with `winners`, the pooled output of a fused stage
    /// (as [`PoolingConv::forward_pooled_train`]). Only where
    /// [`PoolingConv::takes_input_by_chunks`] and `before`'s
    /// [`PoolingConv::feeds_in_training`].
    fn forward_fed_train(
        &mut self,
        _before: (&mut dyn PoolingConv, &ArrayD<f32>, &mut ArrayD<f32>),
        _output: &mut ArrayD<f32>,
        _winners: Option<&mut Vec<u8>>,
    ) {
        unreachable!("the plan feeds only where takes_input_by_chunks() says it can")
    }
}

/// A convolution's training forward pass run one chunk of images at a
/// time, as the layer after asks for each (see
/// [`PoolingConv::training_feed`]); chunks may be asked for in any order
/// and from any thread, each once.
pub trait TrainingFeed: Sync {
    /// Computes chunk `index` of the output (the images from `index` times
    /// the chunk size on) into its place, and hands it to `read` while it
    /// is still in the cache.
    fn feed(&self, index: usize, read: &mut dyn FnMut(&[f32]));
}

/// What a layer's backward pass reads and writes besides the gradient of
/// its output: its input, and the gradient with respect to it (`None`
/// for a first layer).
pub struct BackwardIo<'a> {
    /// The layer's input.
    pub input: &'a ArrayD<f32>,
    /// Where the gradient with respect to the input goes.
    pub grad_input: Option<&'a mut ArrayD<f32>>,
}

/// What a convolution's backward pass starts from: the gradient of its
/// output (after its activation), or, in a fused stage, of the pooled
/// output.
pub enum ConvOutputGrad<'a> {
    /// The convolution's output and the gradient with respect to it.
    Output {
        /// The output.
        output: &'a ArrayD<f32>,
        /// The gradient with respect to it.
        grad: &'a ArrayD<f32>,
    },
    /// A fused stage's pooled output, its gradient, and the winners of the
    /// pooling windows (see [`PoolingConv::backward_pooled`]).
    Pooled {
        /// The pooled output.
        pooled: &'a ArrayD<f32>,
        /// The gradient with respect to it.
        grad: &'a ArrayD<f32>,
        /// Each pooling window's winner.
        winners: &'a [u8],
    },
}

/// Takes a layer's output gradient one chunk of images at a time (see
/// [`PoolingConv::output_grad_sink`]); chunks may come in any order and
/// from any thread, each once.
pub trait OutputGradSink: Sync {
    /// Chunk `index` of the output gradient (before the activation): the
    /// images from `index` times the chunk size on. `scratch` is the
    /// calling thread's working space, free for the call (its values
    /// unspecified): a pass of the caller's and of the sink's share it, as
    /// large as the larger needs, instead of each growing one of its own.
    fn take(&self, index: usize, grad: &[f32], scratch: &mut Vec<f32>);
}

/// One layer of a [`crate::Sequential`] model.
///
/// Shapes passed to [`Layer::build`] exclude the batch axis; arrays passed to
/// the passes include it. A layer has trainable parameters ([`Param`]),
/// non-trainable state ([`Buffer`]), an inference pass on `&self` (so one
/// trained model can serve several threads) and a training pass that keeps
/// what its backward pass needs.
pub trait Layer: Send + Sync {
    /// The Keras class name, shown by `summary()`: `"Conv2D"`, `"Dense"`, ...
    fn class_name(&self) -> &'static str;

    /// The `input_shape` given to the layer, if any (only the first layer of
    /// a model needs one).
    fn declared_input_shape(&self) -> Option<&[usize]> {
        None
    }

    /// Checks that the layer can take inputs of `input_shape`, creates its
    /// weights, and returns the shape of its output.
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>>;

    /// The name and shape of each weight ([`Layer::params`], then
    /// [`Layer::buffers`]) that [`Layer::build`] makes for inputs of
    /// `input_shape`, computed without making them: a model file is checked
    /// against them before a layer allocates anything. None for a layer
    /// without weights, or for a shape `build` refuses (it says why).
    fn weight_shapes(&self, _input_shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        Vec::new()
    }

    /// Inference (Keras `training=False`): the output of a batch into
    /// `output` (resized if needed).
    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>);

    /// Training (Keras `training=True`): the output of a batch, keeping
    /// what [`Layer::backward`] needs (im2col rows, pooling winners,
    /// dropout masks) and updating any state (moving averages). The
    /// default is the inference pass.
    fn forward_train(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, step: TrainingStep) {
        let _ = step;
        self.forward(input, output);
    }

    /// Given the gradient of the loss with respect to this layer's `output`
    /// (which it may overwrite), stores the gradients of the parameters in
    /// their [`Param::grad`] and, when asked for, writes the gradient with
    /// respect to `input` into `grad_input`. It follows a
    /// [`Layer::forward_train`] of the same `input`.
    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    );

    /// Floating-point operations of the forward pass per sample (a
    /// multiply-add counts 2), counting only the matrix products of Conv2D
    /// and Dense; the backward pass costs about twice as much.
    fn forward_flops(&self) -> usize {
        0
    }

    /// The trainable parameters, kernel first.
    fn params(&self) -> Vec<&Param> {
        Vec::new()
    }

    /// The trainable parameters, mutably, in the order of [`Layer::params`].
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Vec::new()
    }

    /// The non-trainable state.
    fn buffers(&self) -> Vec<&Buffer> {
        Vec::new()
    }

    /// The non-trainable state, mutably, in the order of [`Layer::buffers`].
    fn buffers_mut(&mut self) -> Vec<&mut Buffer> {
        Vec::new()
    }

    /// The activation applied to the output.
    fn activation(&self) -> Activation {
        Activation::Linear
    }

    /// A copy of the layer (settings, weights, state) for another replica
    /// of data-parallel training, or `None` (the default) if it cannot be
    /// copied. `fit` runs replicas only when every layer has one; all of
    /// convnet's layers do.
    fn replicate(&self) -> Option<Box<dyn Layer>> {
        None
    }

    /// Called by `compile` with `true` when what follows takes over the
    /// derivative of this layer's output activation: the loss (softmax
    /// followed by cross-entropy), or the next layer (max pooling after
    /// relu, see [`Layer::take_relu_derivative_of_input`]). From then on
    /// `backward` receives the gradient with respect to the activation's
    /// *input* and must not apply the activation's derivative again. Every
    /// `compile` first calls it with `false`, so that a model compiled
    /// again (another loss, more layers) starts afresh.
    fn skip_activation_derivative(&mut self, _skip: bool) {}

    /// Called by `compile` with `true` when the layer before this one ends
    /// in relu (and first with `false` on every layer, as above). A layer
    /// that can apply relu's derivative to the gradient it passes back more
    /// cheaply than a pass of its own over the whole input (max pooling:
    /// only window winners get a gradient, and a winner is positive exactly
    /// when the pooled value is) returns true and does so from then on; the
    /// layer before is then told to [`Layer::skip_activation_derivative`].
    fn take_relu_derivative_of_input(&mut self, _take: bool) -> bool {
        false
    }

    /// The layer's arguments as a Keras config (see [`config`]), from
    /// which [`config::from_config`] rebuilds it: what a model file keeps
    /// of the architecture. `None` (the default) for a layer that cannot
    /// be rebuilt that way; a model holding one saves only its weights.
    fn config(&self) -> Option<config::Config> {
        None
    }

    /// How the execution planner sees this layer (default: on its own).
    fn plan_role(&self) -> PlanRole<'_> {
        PlanRole::Opaque
    }

    /// This layer as a [`PoolingConv`], where its [`Layer::plan_role`] is
    /// [`PlanRole::Convolution`].
    fn as_pooling_conv(&mut self) -> Option<&mut dyn PoolingConv> {
        None
    }

    /// This layer as a [`ChannelAffine`], where its [`Layer::plan_role`] is
    /// [`PlanRole::ChannelAffine`].
    fn as_channel_affine(&mut self) -> Option<&mut dyn ChannelAffine> {
        None
    }
}

/// An activation at a layer's output, whose derivative the loss or the
/// next layer may take over.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OutputActivation {
    pub activation: Activation,
    pub derivative_skipped: bool,
}

impl OutputActivation {
    pub fn new(activation: Activation) -> Self {
        OutputActivation {
            activation,
            derivative_skipped: false,
        }
    }

    pub fn forward(&self, y: &mut [f32], width: usize) {
        self.activation.forward(y, width);
    }

    /// Whether `backward` does anything (not for a linear activation, nor
    /// for one whose derivative is applied elsewhere).
    pub fn has_derivative(&self) -> bool {
        !self.derivative_skipped && self.activation != Activation::Linear
    }

    pub fn backward(&self, y: &[f32], grad: &mut [f32], width: usize) {
        if !self.derivative_skipped {
            self.activation.backward(y, grad, width);
        }
    }
}

/// The parameters of a layer with a kernel and an optional bias.
pub(crate) fn kernel_and_bias<'a>(
    kernel: &'a Param,
    bias: &'a Param,
    use_bias: bool,
) -> Vec<&'a Param> {
    if use_bias {
        vec![kernel, bias]
    } else {
        vec![kernel]
    }
}

/// [`kernel_and_bias`], mutably.
pub(crate) fn kernel_and_bias_mut<'a>(
    kernel: &'a mut Param,
    bias: &'a mut Param,
    use_bias: bool,
) -> Vec<&'a mut Param> {
    if use_bias {
        vec![kernel, bias]
    } else {
        vec![kernel]
    }
}

/// [`Layer::weight_shapes`] of a layer with a kernel of `kernel` and
/// `outputs` biases (when `use_bias`).
pub(crate) fn kernel_and_bias_shapes(
    kernel: Vec<usize>,
    outputs: usize,
    use_bias: bool,
) -> Vec<(&'static str, Vec<usize>)> {
    let bias = use_bias.then(|| ("bias", vec![outputs]));
    std::iter::once(("kernel", kernel)).chain(bias).collect()
}

/// The most values one weight tensor may hold (4 GiB of `f32`): a bound
/// checked before any is allocated, so that a hostile architecture file
/// gets an error instead of exhausting memory.
pub const MAX_TENSOR_VALUES: usize = 1 << 30;

/// The number of values of a weight tensor of `dims`, or an error naming
/// `what` if it overflows or passes [`MAX_TENSOR_VALUES`].
pub(crate) fn tensor_len(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_TENSOR_VALUES)
        .ok_or_else(|| {
            crate::Error::InvalidArgument(format!(
                "{what} of shape {dims:?} would hold more than {MAX_TENSOR_VALUES} values"
            ))
        })
}

/// Makes `array` have `shape`, reallocating only when the shape changes.
pub(crate) fn resize(array: &mut ArrayD<f32>, shape: &[usize]) {
    if array.shape() != shape {
        *array = ArrayD::zeros(IxDyn(shape));
    }
}

/// The forward pass of a layer that only gives samples another shape
/// (Flatten, Reshape): the values, copied, as samples of `sample_shape`.
pub(crate) fn reshaped(input: &ArrayD<f32>, output: &mut ArrayD<f32>, sample_shape: &[usize]) {
    let shape: Vec<usize> = std::iter::once(input.shape()[0])
        .chain(sample_shape.iter().copied())
        .collect();
    resize(output, &shape);
    values_mut(output).copy_from_slice(values(input));
}

/// The backward pass of such a layer: the gradient, in the input's shape.
pub(crate) fn reshaped_back(
    input: &ArrayD<f32>,
    grad_output: &ArrayD<f32>,
    grad_input: Option<&mut ArrayD<f32>>,
) {
    if let Some(grad_input) = grad_input {
        resize(grad_input, input.shape());
        values_mut(grad_input).copy_from_slice(values(grad_output));
    }
}

/// Makes `buffer` hold `len` values, reallocating only when it must grow.
pub(crate) fn resize_buffer<T: Clone + Default>(buffer: &mut Vec<T>, len: usize) {
    buffer.resize(len, T::default());
}

/// Rows of work per parallel chunk: enough for a matrix product to be
/// efficient, small enough to stay in cache and to spread over the cores.
const ROWS_PER_CHUNK: usize = 2048;

/// Whole samples per parallel chunk for a layer doing `rows_per_sample` rows
/// of work per sample. Independent of the thread count, for reproducibility.
pub(crate) fn samples_per_chunk(rows_per_sample: usize) -> usize {
    (ROWS_PER_CHUNK / rows_per_sample.max(1)).max(1)
}

/// The contiguous values of a standard-layout array.
pub(crate) fn values(array: &ArrayD<f32>) -> &[f32] {
    array
        .as_slice()
        .expect("convnet tensors are in standard layout")
}

/// The contiguous values of a standard-layout array, mutably.
pub(crate) fn values_mut(array: &mut ArrayD<f32>) -> &mut [f32] {
    array
        .as_slice_mut()
        .expect("convnet tensors are in standard layout")
}
