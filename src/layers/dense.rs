//! `Dense`: a fully connected layer, `y = activation(x · kernel + bias)`.
//!
//! The kernel has shape `(inputs, units)`, as in Keras. The batch is split
//! into chunks of samples computed in parallel; each chunk's share of the
//! parameter gradient is added up afterwards in a fixed order.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::{
    Layer, OutputActivation, Param, kernel_and_bias, kernel_and_bias_mut, resize, resize_buffer,
    samples_per_chunk, values, values_mut,
};
use crate::initializers::{Rng, glorot_uniform};
use crate::kernels::linear;
use crate::{Activation, Error, Result};

/// Fully connected layer (Keras `Dense`).
///
/// ```
/// use convnet::layers::Dense;
/// use convnet::Activation;
/// let dense = Dense::new(120).activation(Activation::Relu);
/// ```
#[derive(Clone, Debug)]
pub struct Dense {
    units: usize,
    use_bias: bool,
    output_activation: OutputActivation,
    input_shape: Option<Vec<usize>>,
    inputs: usize,
    kernel: Param,
    bias: Param,
    partial_kernel: Vec<f32>,
    partial_bias: Vec<f32>,
}

/// Samples per parallel chunk: 64, two chunks of a 128-sample batch (each
/// chunk packs the whole kernel for its matrix product, so fewer, larger
/// chunks pay for that less often).
fn chunk() -> usize {
    samples_per_chunk(32)
}

impl Dense {
    /// A layer of `units` outputs, no activation, with a bias.
    pub fn new(units: usize) -> Self {
        let empty = |name| Param::new(name, ArrayD::zeros(IxDyn(&[0])));
        Dense {
            units,
            use_bias: true,
            output_activation: OutputActivation::default(),
            input_shape: None,
            inputs: 0,
            kernel: empty("kernel"),
            bias: empty("bias"),
            partial_kernel: Vec::new(),
            partial_bias: Vec::new(),
        }
    }

    /// The activation applied to the output.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.output_activation = OutputActivation::new(activation);
        self
    }

    /// Whether to add a bias (default true).
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// The shape of one input sample, `[features]`; needed on the first layer
    /// of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }
}

impl Layer for Dense {
    fn class_name(&self) -> &'static str {
        "Dense"
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let &[inputs] = input_shape else {
            return Err(Error::Shape(format!(
                "Dense expects flat inputs of shape (features,), got {input_shape:?}; \
                 add a Flatten layer before it"
            )));
        };
        if self.units == 0 || inputs == 0 {
            return Err(Error::InvalidArgument(format!(
                "Dense needs at least one unit and one input, got {} units and {inputs} inputs",
                self.units
            )));
        }
        self.inputs = inputs;
        let kernel = glorot_uniform(rng, inputs * self.units, inputs, self.units);
        let kernel = ArrayD::from_shape_vec(IxDyn(&[inputs, self.units]), kernel).unwrap();
        self.kernel = Param::new("kernel", kernel);
        self.bias = Param::new("bias", ArrayD::zeros(IxDyn(&[self.units])));
        Ok(vec![self.units])
    }

    fn forward(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, _training: bool) {
        let batch = input.shape()[0];
        resize(output, &[batch, self.units]);
        let (inputs, units) = (self.inputs, self.units);
        let kernel = values(&self.kernel.value);
        let bias = self.use_bias.then(|| values(&self.bias.value));
        let activation = self.output_activation;
        values(input)
            .par_chunks(chunk() * inputs)
            .zip(values_mut(output).par_chunks_mut(chunk() * units))
            .for_each(|(x, y)| {
                linear::forward(x, kernel, bias, y, inputs);
                activation.forward(y, units);
            });
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let chunks = input.shape()[0].div_ceil(chunk());
        let (inputs, units) = (self.inputs, self.units);
        resize_buffer(&mut self.partial_kernel, chunks * inputs * units);
        resize_buffer(&mut self.partial_bias, chunks * units);
        let activation = self.output_activation;
        let use_bias = self.use_bias;
        values(input)
            .par_chunks(chunk() * inputs)
            .zip(values(output).par_chunks(chunk() * units))
            .zip(values_mut(grad_output).par_chunks_mut(chunk() * units))
            .zip(self.partial_kernel.par_chunks_mut(inputs * units))
            .zip(self.partial_bias.par_chunks_mut(units))
            .for_each(|((((x, y), dy), d_kernel), d_bias)| {
                activation.backward(y, dy, units);
                linear::param_grads(x, dy, d_kernel, use_bias.then_some(d_bias), inputs);
            });
        linear::sum_partials(&self.partial_kernel, values_mut(&mut self.kernel.grad));
        if use_bias {
            linear::sum_partials(&self.partial_bias, values_mut(&mut self.bias.grad));
        }

        let Some(grad_input) = grad_input else { return };
        resize(grad_input, input.shape());
        let kernel = values(&self.kernel.value);
        values(grad_output)
            .par_chunks(chunk() * units)
            .zip(values_mut(grad_input).par_chunks_mut(chunk() * inputs))
            .for_each(|(dy, dx)| linear::input_grad(dy, kernel, dx, inputs));
    }

    fn forward_flops(&self) -> usize {
        2 * self.inputs * self.units
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

    fn skip_activation_derivative(&mut self) {
        self.output_activation.derivative_skipped = true;
    }
}
