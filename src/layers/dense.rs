//! `Dense`: a fully connected layer, `y = activation(x · kernel + bias)`.
//!
//! The kernel has shape `(inputs, units)`, as in Keras. The forward pass and
//! the input gradient split a batch of many samples into chunks computed in
//! parallel where the kernel is small; a large kernel would be packed by
//! every chunk, so there (and for batches of few samples, AlexNet's 16)
//! each is one matrix product whose blocks of units each pack their share
//! of the kernel once (`kernels::gemm::matmul_par`). The kernel gradient
//! is split into blocks of its rows, each summed over the whole batch, so
//! no partial gradients need adding up.
//!
//! Predicting on AVX-512, the layer keeps its kernel packed for the matrix
//! product between batches (as much memory again as the kernel: 151 MB
//! for AlexNet's first dense layer), and streams it from memory once per
//! batch instead of packing it every time. (Two threads predicting at once
//! may each pack it, once.)

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::config::{Config, Fields, config, with_input_shape};
use super::kept::Kept;
use super::{
    Layer, OutputActivation, Param, PlanRole, TrainingStep, kernel_and_bias, kernel_and_bias_mut,
    resize, samples_per_chunk, values, values_mut,
};
use crate::initializers::{Initializer, Rng};
use crate::kernels::gemm::{Mat, PackedMats, matmul};
use crate::kernels::{has_avx512, linear};
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
    kernel_initializer: Initializer,
    output_activation: OutputActivation,
    input_shape: Option<Vec<usize>>,
    inputs: usize,
    kernel: Param,
    bias: Param,
    /// The kernel packed for the few-sample product, kept between
    /// inference batches: packing AlexNet's 9216 x 4096 kernel costs as
    /// much as the product. Dropped whenever the kernel can change (any
    /// `&mut` access to the parameters, `build`, training).
    inference_kernel: Kept<PackedMats>,
}

/// Samples per parallel chunk: 64, two chunks of a 128-sample batch.
fn chunk() -> usize {
    samples_per_chunk(32)
}

/// Kernels of up to this many values (LeNet's, at most 48,000) are packed
/// by every chunk of samples, each chunk's product and activation then
/// running in the cache; a larger kernel (cifar10-cnn's 2304 x 512) is
/// packed once per product, a share by each block of units, instead.
const SMALL_KERNEL: usize = 1 << 17;

/// Rows of the kernel gradient per parallel task of the backward pass: a
/// multiple of the GEMM's tile height (14 rows with AVX-512, 8 otherwise),
/// so that no task ends on a partly empty tile (32 rows were 3 tiles of
/// 14, a quarter of the last one's work thrown away).
const KERNEL_ROWS_PER_TASK: usize = 56;

impl Dense {
    /// A layer of `units` outputs, no activation, with a bias.
    pub fn new(units: usize) -> Self {
        let empty = |name| Param::new(name, ArrayD::zeros(IxDyn(&[0])));
        Dense {
            units,
            use_bias: true,
            kernel_initializer: Initializer::default(),
            output_activation: OutputActivation::default(),
            input_shape: None,
            inputs: 0,
            kernel: empty("kernel"),
            bias: empty("bias"),
            inference_kernel: Kept::default(),
        }
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let mut layer = Dense::new(fields.count("units", None)?)
            .activation(fields.activation("activation")?)
            .use_bias(fields.flag("use_bias", true)?)
            .kernel_initializer(fields.named("kernel_initializer", "glorot_uniform")?);
        layer.input_shape = fields.input_shape()?;
        Ok(layer)
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

    /// How `build` draws the kernel (default glorot_uniform, as Keras).
    ///
    /// ```
    /// use convnet::initializers::Initializer;
    /// use convnet::layers::Dense;
    /// let dense = Dense::new(10).kernel_initializer(Initializer::LecunNormal);
    /// ```
    pub fn kernel_initializer(mut self, initializer: Initializer) -> Self {
        self.kernel_initializer = initializer;
        self
    }

    /// The shape of one input sample, `[features]`; needed on the first layer
    /// of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// The kernel packed for the GEMM, kept (see [`Dense::inference_kernel`]).
    fn packed_kernel(&self) -> Arc<PackedMats> {
        let (inputs, units) = (self.inputs, self.units);
        let kernel = values(&self.kernel.value);
        self.inference_kernel
            .get_or_make(|| PackedMats::new(1, inputs, units, |_| Mat::new(kernel, inputs, units)))
    }

    /// Whether a batch of `batch` samples runs in chunks of samples, each
    /// packing the whole kernel (see [`SMALL_KERNEL`]).
    fn by_samples(&self, batch: usize) -> bool {
        batch >= 2 * chunk() && self.inputs * self.units <= SMALL_KERNEL
    }

    /// The forward pass; with `keep` (predicting), a large kernel or a
    /// batch of few samples uses (and keeps) the packed kernel of
    /// [`Dense::inference_kernel`].
    fn forward_keeping(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, keep: bool) {
        let batch = input.shape()[0];
        resize(output, &[batch, self.units]);
        let (inputs, units) = (self.inputs, self.units);
        let kernel = values(&self.kernel.value);
        let bias = self.use_bias.then(|| values(&self.bias.value));
        let activation = self.output_activation;
        let (x, y) = (values(input), values_mut(output));
        if self.by_samples(batch) {
            // Each chunk's product followed by its activation in the cache.
            x.par_chunks(chunk() * inputs)
                .zip(y.par_chunks_mut(chunk() * units))
                .for_each(|(x, y)| {
                    linear::forward(x, kernel, bias, y, inputs);
                    activation.forward(y, units);
                });
            return;
        }
        // Kept where the packed copy is what the GEMM reads (AVX-512):
        // elsewhere it would be a plain copy, memory for nothing.
        if keep && batch > 0 && has_avx512() {
            linear::forward_packed_par(x, self.packed_kernel().get(0), bias, y);
        } else {
            linear::forward_par(x, kernel, bias, y, inputs);
        }
        y.par_chunks_mut(chunk() * units)
            .for_each(|y| activation.forward(y, units));
    }
}

impl Layer for Dense {
    fn class_name(&self) -> &'static str {
        "Dense"
    }

    /// Its input is `(features,)` per sample (`build` says so), read as one
    /// run of values: a Flatten before it need not run at inference.
    fn plan_role(&self) -> PlanRole<'_> {
        PlanRole::FlatSamples
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn weight_shapes(&self, input_shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        match input_shape {
            &[inputs] => {
                super::kernel_and_bias_shapes(vec![inputs, self.units], self.units, self.use_bias)
            }
            _ => Vec::new(),
        }
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
        let len = super::tensor_len("the Dense kernel", &[inputs, self.units])?;
        let kernel = self.kernel_initializer.sample(rng, len, inputs, self.units);
        let kernel = ArrayD::from_shape_vec(IxDyn(&[inputs, self.units]), kernel).unwrap();
        self.kernel = Param::new("kernel", kernel);
        self.bias = Param::new("bias", ArrayD::zeros(IxDyn(&[self.units])));
        self.inference_kernel.clear();
        Ok(vec![self.units])
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        self.forward_keeping(input, output, true);
    }

    fn forward_train(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, _: TrainingStep) {
        // The weights are about to change: no inference kernel to keep.
        self.inference_kernel.clear();
        self.forward_keeping(input, output, false);
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let (inputs, units, use_bias) = (self.inputs, self.units, self.use_bias);
        let activation = self.output_activation;
        if activation.has_derivative() {
            values(output)
                .par_chunks(chunk() * units)
                .zip(values_mut(grad_output).par_chunks_mut(chunk() * units))
                .for_each(|(y, dy)| activation.backward(y, dy, units));
        }
        let (x, dy) = (values(input), values(grad_output));
        let batch = x.len() / inputs;
        let by_samples = self.by_samples(batch);
        let kernel = values(&self.kernel.value);
        let d_kernel = values_mut(&mut self.kernel.grad);
        let d_bias = values_mut(&mut self.bias.grad);
        let mut param_grads = move || {
            // d_kernel = xᵀ · dy, a block of kernel rows per task, each over
            // the whole batch: no per-chunk partial sums to add up after.
            d_kernel
                .par_chunks_mut(KERNEL_ROWS_PER_TASK * units)
                .enumerate()
                .for_each(|(task, d_kernel)| {
                    let first = task * KERNEL_ROWS_PER_TASK;
                    let rows = d_kernel.len() / units;
                    let x_block = Mat::columns(x, batch, inputs, first, rows);
                    matmul(x_block.t(), Mat::new(dy, batch, units), d_kernel, 0.0);
                });
            if use_bias {
                linear::column_sums(dy, d_bias);
            }
        };
        let Some(grad_input) = grad_input else {
            return param_grads();
        };
        resize(grad_input, input.shape());
        let input_grad = || {
            if by_samples {
                dy.par_chunks(chunk() * units)
                    .zip(values_mut(grad_input).par_chunks_mut(chunk() * inputs))
                    .for_each(|(dy, dx)| linear::input_grad(dy, kernel, dx, inputs));
            } else {
                linear::input_grad_par(dy, kernel, values_mut(grad_input), inputs);
            }
        };
        rayon::join(param_grads, input_grad);
    }

    fn forward_flops(&self) -> usize {
        2 * self.inputs * self.units
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

    fn config(&self) -> Option<Config> {
        let fields = config([
            ("units", self.units.into()),
            (
                "activation",
                self.output_activation.activation.name().into(),
            ),
            ("use_bias", self.use_bias.into()),
            ("kernel_initializer", self.kernel_initializer.name().into()),
        ]);
        Some(with_input_shape(fields, self.input_shape.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::same_bits;
    use rand::SeedableRng;

    fn pseudo_random(shape: &[usize], seed: usize) -> ArrayD<f32> {
        let len = shape.iter().product();
        let values = (0..len).map(|i| (((i * 7919 + seed * 104_729) % 1999) as f32 / 999.5) - 1.0);
        ArrayD::from_shape_vec(IxDyn(shape), values.collect()).unwrap()
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let tolerance = 1e-4 * (1.0 + w.abs());
            assert!(
                (*g as f64 - w).abs() <= tolerance,
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// One training pass (forward, backward) and one prediction of `layer`
    /// on a pool of `threads`: output, kernel and bias gradients, input
    /// gradient, predicted output.
    fn pass(layer: &Dense, x: &ArrayD<f32>, dy: &ArrayD<f32>, threads: usize) -> [Vec<f32>; 5] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut layer = layer.clone();
            let (mut y, mut dx) = (ArrayD::zeros(IxDyn(&[0])), ArrayD::zeros(IxDyn(&[0])));
            layer.forward_train(x, &mut y, TrainingStep::default());
            let mut grad = dy.clone();
            layer.backward(x, &y, &mut grad, Some(&mut dx));
            let mut predicted = ArrayD::zeros(IxDyn(&[0]));
            layer.forward(x, &mut predicted);
            let grads = layer
                .params()
                .iter()
                .map(|p| values(&p.grad).to_vec())
                .collect::<Vec<_>>();
            [
                values(&y).to_vec(),
                grads[0].clone(),
                grads[1].clone(),
                values(&dx).to_vec(),
                values(&predicted).to_vec(),
            ]
        })
    }

    /// A small kernel split by chunks of samples and a large one by blocks
    /// of units compute the same sums as plain f64 loops, the same bits
    /// at 1 and 3 threads.
    #[test]
    fn both_ways_of_splitting_a_batch_give_the_products() {
        let batch = 2 * chunk() + 3;
        for (inputs, units) in [(40, 30), (400, 330)] {
            let mut layer = Dense::new(units).activation(Activation::Relu);
            layer
                .build(&[inputs], &mut crate::initializers::Rng::seed_from_u64(3))
                .unwrap();
            assert_eq!(layer.by_samples(batch), inputs * units <= SMALL_KERNEL);
            let bias = pseudo_random(&[units], 5);
            layer.bias.value.assign(&bias);
            let (x, dy) = (
                pseudo_random(&[batch, inputs], 1),
                pseudo_random(&[batch, units], 2),
            );
            let (w, b) = (values(&layer.kernel.value), values(&bias));
            let (xs, dys) = (values(&x), values(&dy));
            let mut want_y = vec![0.0f64; batch * units];
            for (n, j) in (0..batch).flat_map(|n| (0..units).map(move |j| (n, j))) {
                let sum: f64 = (0..inputs)
                    .map(|i| xs[n * inputs + i] as f64 * w[i * units + j] as f64)
                    .sum();
                want_y[n * units + j] = (sum + b[j] as f64).max(0.0);
            }
            // The gradient through relu: dy where the output is positive.
            let g: Vec<f64> = want_y
                .iter()
                .zip(dys)
                .map(|(y, d)| if *y > 0.0 { *d as f64 } else { 0.0 })
                .collect();
            let mut want_dw = vec![0.0f64; inputs * units];
            let mut want_dx = vec![0.0f64; batch * inputs];
            for (n, i, j) in (0..batch)
                .flat_map(|n| (0..inputs).flat_map(move |i| (0..units).map(move |j| (n, i, j))))
            {
                want_dw[i * units + j] += xs[n * inputs + i] as f64 * g[n * units + j];
                want_dx[n * inputs + i] += g[n * units + j] * w[i * units + j] as f64;
            }
            let want_db: Vec<f64> = (0..units)
                .map(|j| (0..batch).map(|n| g[n * units + j]).sum())
                .collect();
            let one = pass(&layer, &x, &dy, 1);
            for (got, (want, what)) in one.iter().zip([
                (&want_y, "output"),
                (&want_dw, "kernel gradient"),
                (&want_db, "bias gradient"),
                (&want_dx, "input gradient"),
                (&want_y, "prediction"),
            ]) {
                assert_close(got, want, &format!("{inputs}x{units} {what}"));
            }
            let three = pass(&layer, &x, &dy, 3);
            for (a, b) in one.iter().zip(&three) {
                assert!(same_bits(a, b), "{inputs}x{units}: 1 and 3 threads differ");
            }
        }
    }
}
