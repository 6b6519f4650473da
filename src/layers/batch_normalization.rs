//! `BatchNormalization`: normalises each channel to zero mean and unit
//! variance, then scales it by a learned `gamma` and shifts it by a
//! learned `beta`.
//!
//! While training, the mean and (biased) variance are those of the batch,
//! over every sample and pixel of a channel, and the layer keeps moving
//! averages of them (`moving = momentum · moving + (1 - momentum) ·
//! batch`); at inference it uses the moving averages, so that an output
//! depends on its own input alone. These averages are the layer's
//! non-trainable state ([`Buffer`]): saved with the weights and, in
//! data-parallel training, averaged over the replicas after each step
//! (each replica normalises with its own part of the batch, as PyTorch's
//! DistributedDataParallel does without SyncBatchNorm).
//!
//! The backward pass, with `x̂` the normalised input, `s = sqrt(var + ε)`
//! and sums over the `N` values of a channel:
//! `dγ = Σ dy·x̂`, `dβ = Σ dy`, `dx = γ/s · (dy - Σdy/N - x̂ · Σ(dy·x̂)/N)`.
//!
//! In training, a `Sequential` runs the layer and an Activation(relu)
//! after it as one stage ([`ChannelAffine::forward_train_relu`]): relu is
//! applied as the output is stored, and its derivative as the backward
//! passes read the gradient, which spares relu's own passes over the
//! whole tensor.

use std::ops::Range;

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::config::{Config, Fields, config, with_input_shape};
use super::{
    Buffer, ChannelAffine, Layer, Param, PlanRole, TrainingStep, resize, values, values_mut,
};
use crate::initializers::Rng;
use crate::{Error, Result};

/// Batch normalisation over the last axis (Keras `BatchNormalization`).
///
/// ```
/// use convnet::layers::BatchNormalization;
/// let bn = BatchNormalization::new().momentum(0.9); // epsilon 1e-3 as Keras
/// ```
#[derive(Clone, Debug)]
pub struct BatchNormalization {
    momentum: f32,
    epsilon: f32,
    center: bool,
    scale: bool,
    input_shape: Option<Vec<usize>>,
    gamma: Param,
    beta: Param,
    moving_mean: Buffer,
    moving_variance: Buffer,
    /// The batch's `1/s` and `-mean/s` per channel (from the last
    /// training forward pass): `x̂ = inv_std · x + shift`, recomputed by
    /// the backward pass from the input rather than kept.
    inv_std: Vec<f32>,
    shift: Vec<f32>,
}

/// Values (pixels of all samples) per parallel chunk of a channel sum.
const ROWS_PER_CHUNK: usize = 4096;

impl Default for BatchNormalization {
    fn default() -> Self {
        BatchNormalization::new()
    }
}

impl BatchNormalization {
    /// Keras's defaults: momentum 0.99, epsilon 1e-3, with `beta` and `gamma`.
    pub fn new() -> Self {
        let empty = |name| Param::new(name, ArrayD::zeros(IxDyn(&[0])));
        let buffer = |name| Buffer::new(name, ArrayD::zeros(IxDyn(&[0])));
        BatchNormalization {
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
            input_shape: None,
            gamma: empty("gamma"),
            beta: empty("beta"),
            moving_mean: buffer("moving_mean"),
            moving_variance: buffer("moving_variance"),
            inv_std: Vec::new(),
            shift: Vec::new(),
        }
    }

    /// Weight of the old value in the moving averages (default 0.99).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Added to the variance before its square root (default 1e-3).
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Whether to add the learned offset `beta` (default true).
    pub fn center(mut self, center: bool) -> Self {
        self.center = center;
        self
    }

    /// Whether to multiply by the learned `gamma` (default true).
    pub fn scale(mut self, scale: bool) -> Self {
        self.scale = scale;
        self
    }

    /// The shape of one input sample; needed on the first layer of a model.
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// The layer of a Keras config ([`Layer::config`]).
    pub(crate) fn from_config(fields: &Fields) -> Result<Self> {
        let axis = fields.number("axis", Some(-1.0))?;
        if axis != -1.0 {
            return Err(Error::InvalidArgument(format!(
                "layer BatchNormalization: field \"axis\" must be -1 (channels last), not {axis}"
            )));
        }
        Ok(BatchNormalization {
            momentum: fields.number("momentum", Some(0.99))?,
            epsilon: fields.number("epsilon", Some(1e-3))?,
            center: fields.flag("center", true)?,
            scale: fields.flag("scale", true)?,
            input_shape: fields.input_shape()?,
            ..BatchNormalization::new()
        })
    }
}

impl BatchNormalization {
    fn channels(&self) -> usize {
        self.gamma.len()
    }
}

/// Rows summed in `f32` before their sums join the `f64` totals: few
/// enough that rounding stays near `f32`'s own precision, many enough
/// that the `f64` additions cost little.
const ROWS_PER_BLOCK: usize = 64;

/// Two sums per channel over every row (pixel) of the `K` tensors side by
/// side: `f(rows, (first, second))` adds a row's terms to the two sums.
/// Blocks of [`ROWS_PER_BLOCK`] rows are summed in `f32` vectors, then
/// added in `f64`; chunks of rows run in parallel and are added in order
/// (the same result on any number of threads).
fn channel_sums<const K: usize>(
    tensors: [&[f32]; K],
    channels: usize,
    f: impl Fn([&[f32]; K], (&mut [f32], &mut [f32])) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let chunk = ROWS_PER_CHUNK * channels;
    let chunks = tensors[0].len().div_ceil(chunk);
    let partials: Vec<Vec<f64>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let tensors = tensors.map(|t| &t[c * chunk..t.len().min((c + 1) * chunk)]);
            let mut sums = vec![0.0; 2 * channels];
            let mut block = vec![0.0f32; 2 * channels];
            for rows in ranges(0..tensors[0].len(), ROWS_PER_BLOCK * channels) {
                block.fill(0.0);
                let (first, second) = block.split_at_mut(channels);
                for row in ranges(rows, channels) {
                    f(
                        tensors.map(|t| &t[row.clone()]),
                        (&mut *first, &mut *second),
                    );
                }
                sums.iter_mut()
                    .zip(&block)
                    .for_each(|(s, &b)| *s += f64::from(b));
            }
            sums
        })
        .collect();
    let mut total = vec![0.0; 2 * channels];
    for partial in partials {
        total.iter_mut().zip(partial).for_each(|(t, p)| *t += p);
    }
    let second = total.split_off(channels);
    (total, second)
}

/// `range` in consecutive pieces of `step` (the last one maybe shorter).
fn ranges(range: Range<usize>, step: usize) -> impl Iterator<Item = Range<usize>> {
    let end = range.end;
    range.step_by(step).map(move |i| i..end.min(i + step))
}

/// `row(rows of tensors, row of out)` for every row (pixel) of `out` and
/// the matching rows of the `K` tensors, chunks of rows in parallel.
fn each_row_chunk<const K: usize>(
    tensors: [&[f32]; K],
    out: &mut [f32],
    channels: usize,
    row: impl Fn([&[f32]; K], &mut [f32]) + Sync,
) {
    let chunk = ROWS_PER_CHUNK * channels;
    out.par_chunks_mut(chunk).enumerate().for_each(|(c, out)| {
        let tensors = tensors.map(|t| &t[c * chunk..c * chunk + out.len()]);
        for (r, out) in out.chunks_mut(channels).enumerate() {
            let rows = r * channels..(r + 1) * channels;
            row(tensors.map(|t| &t[rows.clone()]), out);
        }
    });
}

/// `y = store(a · x + b)`, per channel.
fn affine(x: &[f32], y: &mut [f32], (a, b): (&[f32], &[f32]), store: impl Fn(f32) -> f32 + Sync) {
    each_row_chunk([x], y, a.len(), |[x], y| {
        let terms = y.iter_mut().zip(x).zip(a.iter().zip(b));
        for ((y, &x), (&a, &b)) in terms {
            *y = store(a * x + b);
        }
    });
}

/// relu, as [`crate::kernels::activation::relu`] computes it (the same
/// bits as the Activation layer's pass).
fn relu(v: f32) -> f32 {
    v.max(0.0)
}

/// relu's derivative applied to the gradient `dy` of its output `y`, as
/// [`crate::kernels::activation::relu_backward`] applies it.
fn relu_gate(dy: f32, y: f32) -> f32 {
    if y > 0.0 { dy } else { 0.0 }
}

/// The gradient a backward pass starts from: `gate(dy, gate_by)` per
/// value, `dy` being the gradient of the stage's output and `gate_by` what
/// the gate reads (relu's output, for relu's derivative; or `dy` itself,
/// where there is no derivative to apply).
#[derive(Clone, Copy)]
struct Gradient<'a, G> {
    dy: &'a [f32],
    gate_by: &'a [f32],
    gate: G,
}

/// `dy` as it is: no derivative to apply.
fn ungated(dy: &[f32]) -> Gradient<'_, impl Fn(f32, f32) -> f32 + Sync + Copy> {
    Gradient {
        dy,
        gate_by: dy,
        gate: |dy, _| dy,
    }
}

impl BatchNormalization {
    /// The batch's statistics, into `inv_std` and `shift` (for `x̂`); the
    /// moving averages move towards them.
    fn learn_batch_statistics(&mut self, x: &[f32]) {
        let channels = self.channels();
        let n = (x.len() / channels).max(1) as f64;
        // One pass for both moments, of x - k with k the first pixel's
        // values: shifting by a value of the data keeps E[d²] - E[d]²
        // from cancelling when the mean is far from zero.
        let k = &x[..channels.min(x.len())];
        let (sum, sum_sq) = channel_sums([x], channels, |[row], (s1, s2)| {
            let terms = row.iter().zip(k).zip(s1.iter_mut().zip(s2.iter_mut()));
            for ((&v, &k), (s1, s2)) in terms {
                let d = v - k;
                *s1 += d;
                *s2 += d * d;
            }
        });
        let mean: Vec<f64> = (0..channels)
            .map(|c| f64::from(k[c]) + sum[c] / n)
            .collect();
        let variance: Vec<f64> = (0..channels)
            .map(|c| (sum_sq[c] / n - (sum[c] / n).powi(2)).max(0.0))
            .collect();
        self.inv_std = variance
            .iter()
            .map(|&v| (1.0 / (v + f64::from(self.epsilon)).sqrt()) as f32)
            .collect();
        self.shift = (0..channels)
            .map(|c| -(mean[c] as f32) * self.inv_std[c])
            .collect();
        let m = self.momentum;
        let moving = values_mut(&mut self.moving_mean.value)
            .iter_mut()
            .zip(&mean);
        moving.for_each(|(avg, &batch)| *avg = m * *avg + (1.0 - m) * batch as f32);
        let moving = values_mut(&mut self.moving_variance.value)
            .iter_mut()
            .zip(&variance);
        moving.for_each(|(avg, &batch)| *avg = m * *avg + (1.0 - m) * batch as f32);
    }

    /// Training's forward pass: `store(γ x̂ + β)`, with `x̂ = (x - mean) / s`
    /// of the batch, in two passes (statistics, then output).
    fn forward_train_storing(
        &mut self,
        input: &ArrayD<f32>,
        output: &mut ArrayD<f32>,
        store: impl Fn(f32) -> f32 + Sync,
    ) {
        let x = values(input);
        self.learn_batch_statistics(x);
        resize(output, input.shape());
        let (gamma, beta) = (values(&self.gamma.value), values(&self.beta.value));
        let (inv_std, shift) = (&self.inv_std, &self.shift);
        // Per channel y = a·x + b with a = γ/s, b = γ·shift + β: the
        // affine map of x̂ folded with γ and β.
        let channels = self.channels();
        let a: Vec<f32> = (0..channels).map(|c| gamma[c] * inv_std[c]).collect();
        let b: Vec<f32> = (0..channels)
            .map(|c| gamma[c] * shift[c] + beta[c])
            .collect();
        affine(x, values_mut(output), (&a, &b), store);
    }

    /// Training's backward pass from the gradient `grad` of the output
    /// (gated: relu's derivative applied as each value is read), in two
    /// passes: the sums, then the input gradient.
    fn backward_from<G: Fn(f32, f32) -> f32 + Sync + Copy>(
        &mut self,
        input: &ArrayD<f32>,
        grad: Gradient<'_, G>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let channels = self.channels();
        let x = values(input);
        let Gradient { dy, gate_by, gate } = grad;
        let (inv_std, shift) = (&self.inv_std, &self.shift);
        // Σdy and Σdy·x̂ in one pass, x̂ recomputed as the forward pass did.
        let tensors = [dy, gate_by, x];
        let (sum_dy, sum_dy_xhat) = channel_sums(tensors, channels, |[dy, by, x], (s1, s2)| {
            let affine = inv_std.iter().zip(shift);
            let gradient = dy.iter().zip(by).map(|(&dy, &by)| gate(dy, by));
            let terms = gradient
                .zip(x)
                .zip(affine)
                .zip(s1.iter_mut().zip(s2.iter_mut()));
            for (((dy, &x), (&a, &b)), (s1, s2)) in terms {
                *s1 += dy;
                *s2 += dy * (a * x + b);
            }
        });
        let as_f32 = |v: &[f64]| v.iter().map(|&s| s as f32).collect::<Vec<f32>>();
        values_mut(&mut self.gamma.grad).copy_from_slice(&as_f32(&sum_dy_xhat));
        values_mut(&mut self.beta.grad).copy_from_slice(&as_f32(&sum_dy));
        let Some(grad_input) = grad_input else { return };
        resize(grad_input, input.shape());
        let n = (dy.len() / channels).max(1) as f32;
        let gamma = values(&self.gamma.value);
        // dx = k·(dy - Σdy/N - x̂·Σ(dy·x̂)/N), k = γ/s.
        let k: Vec<f32> = (0..channels).map(|c| gamma[c] * inv_std[c]).collect();
        let mean_dy: Vec<f32> = sum_dy.iter().map(|&s| s as f32 / n).collect();
        let mean_dy_xhat: Vec<f32> = sum_dy_xhat.iter().map(|&s| s as f32 / n).collect();
        // Per channel, dx = k·dy - k·mean_dy - k·x̂·mean_dy_xhat
        //               = k·dy + u·x + v  with x̂ = inv_std·x + shift.
        let u: Vec<f32> = (0..channels)
            .map(|c| -k[c] * mean_dy_xhat[c] * inv_std[c])
            .collect();
        let v: Vec<f32> = (0..channels)
            .map(|c| -k[c] * (mean_dy[c] + mean_dy_xhat[c] * shift[c]))
            .collect();
        let (k, u, v) = (&k[..], &u[..], &v[..]);
        each_row_chunk(
            tensors,
            values_mut(grad_input),
            channels,
            |[dy, by, x], dx| {
                let gradient = dy.iter().zip(by).map(|(&dy, &by)| gate(dy, by));
                let terms = dx
                    .iter_mut()
                    .zip(gradient)
                    .zip(x)
                    .zip(k.iter().zip(u).zip(v));
                for (((dx, dy), &x), ((&k, &u), &v)) in terms {
                    *dx = k * dy + u * x + v;
                }
            },
        );
    }
}

impl ChannelAffine for BatchNormalization {
    /// Per channel, the multiplier and offset of inference:
    /// `y = a·x + b` with `a = γ/sqrt(var + ε)`, `b = β - a·mean`.
    fn inference_affine(&self) -> (Vec<f32>, Vec<f32>) {
        let gamma = values(&self.gamma.value);
        let beta = values(&self.beta.value);
        let mean = values(&self.moving_mean.value);
        let variance = values(&self.moving_variance.value);
        let a: Vec<f32> = (0..self.channels())
            .map(|c| gamma[c] / (variance[c] + self.epsilon).sqrt())
            .collect();
        let b = (0..self.channels())
            .map(|c| beta[c] - a[c] * mean[c])
            .collect();
        (a, b)
    }

    fn forward_train_relu(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        self.forward_train_storing(input, output, relu);
    }

    fn backward_relu(
        &mut self,
        input: &ArrayD<f32>,
        output: &ArrayD<f32>,
        grad_output: &ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
        relu_derivative: bool,
    ) {
        let dy = values(grad_output);
        if relu_derivative {
            let gradient = Gradient {
                dy,
                gate_by: values(output),
                gate: relu_gate,
            };
            self.backward_from(input, gradient, grad_input);
        } else {
            self.backward_from(input, ungated(dy), grad_input);
        }
    }
}

impl Layer for BatchNormalization {
    fn class_name(&self) -> &'static str {
        "BatchNormalization"
    }

    fn weight_shapes(&self, input_shape: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
        let Some(&channels) = input_shape.last() else {
            return Vec::new();
        };
        let gamma = self.scale.then_some("gamma");
        let names = gamma.into_iter().chain(self.center.then_some("beta"));
        names
            .chain(["moving_mean", "moving_variance"])
            .map(|name| (name, vec![channels]))
            .collect()
    }

    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        let Some(&channels) = input_shape.last().filter(|&&c| c > 0) else {
            return Err(Error::Shape(format!(
                "BatchNormalization needs inputs with a channel axis, got {input_shape:?}"
            )));
        };
        if !(0.0..1.0).contains(&self.momentum) || self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return Err(Error::InvalidArgument(format!(
                "BatchNormalization needs momentum in [0, 1) and epsilon > 0, got {} and {}",
                self.momentum, self.epsilon
            )));
        }
        let filled = |value: f32| ArrayD::from_elem(IxDyn(&[channels]), value);
        self.gamma = Param::new("gamma", filled(1.0));
        self.beta = Param::new("beta", filled(0.0));
        self.moving_mean = Buffer::new("moving_mean", filled(0.0));
        self.moving_variance = Buffer::new("moving_variance", filled(1.0));
        Ok(input_shape.to_vec())
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        resize(output, input.shape());
        let (a, b) = self.inference_affine();
        affine(values(input), values_mut(output), (&a, &b), |y| y);
    }

    fn forward_train(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, _: TrainingStep) {
        self.forward_train_storing(input, output, |y| y);
    }

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        _output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        self.backward_from(input, ungated(values(grad_output)), grad_input);
    }

    fn params(&self) -> Vec<&Param> {
        let gamma = self.scale.then_some(&self.gamma);
        gamma
            .into_iter()
            .chain(self.center.then_some(&self.beta))
            .collect()
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let gamma = self.scale.then_some(&mut self.gamma);
        gamma
            .into_iter()
            .chain(self.center.then_some(&mut self.beta))
            .collect()
    }

    fn buffers(&self) -> Vec<&Buffer> {
        vec![&self.moving_mean, &self.moving_variance]
    }

    fn buffers_mut(&mut self) -> Vec<&mut Buffer> {
        vec![&mut self.moving_mean, &mut self.moving_variance]
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }

    fn plan_role(&self) -> PlanRole<'_> {
        PlanRole::ChannelAffine(self)
    }

    fn as_channel_affine(&mut self) -> Option<&mut dyn ChannelAffine> {
        Some(self)
    }

    fn config(&self) -> Option<Config> {
        let fields = config([
            ("axis", (-1).into()),
            ("momentum", self.momentum.into()),
            ("epsilon", self.epsilon.into()),
            ("center", self.center.into()),
            ("scale", self.scale.into()),
        ]);
        Some(with_input_shape(fields, self.input_shape.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn batch(shape: &[usize], seed: u64) -> ArrayD<f32> {
        let mut rng = Rng::seed_from_u64(seed);
        ArrayD::from_shape_fn(IxDyn(shape), |i| {
            3.0 * i[3] as f32 + rng.random_range(-1.0..1.0)
        })
    }

    /// Training normalises with the batch's statistics and moves the
    /// averages; with momentum 0 the averages are the batch's, and
    /// inference then gives the training output.
    #[test]
    fn training_statistics_and_moving_averages() {
        let x = batch(&[4, 3, 3, 2], 1);
        let mut layer = BatchNormalization::new().momentum(0.0);
        layer.build(&[3, 3, 2], &mut Rng::seed_from_u64(0)).unwrap();
        let (mut trained, mut inferred) = (ArrayD::zeros(IxDyn(&[0])), ArrayD::zeros(IxDyn(&[0])));
        layer.forward_train(&x, &mut trained, TrainingStep::default());
        for c in 0..2 {
            let channel: Vec<f32> = trained.iter().skip(c).step_by(2).copied().collect();
            let mean = channel.iter().sum::<f32>() / 36.0;
            let variance = channel.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 36.0;
            assert!(
                mean.abs() < 1e-5 && (variance - 1.0).abs() < 1e-2,
                "{mean} {variance}"
            );
        }
        let moving_mean = values(&layer.moving_mean.value);
        assert!(
            (moving_mean[1] - moving_mean[0] - 3.0).abs() < 0.5,
            "{moving_mean:?}"
        );
        layer.forward(&x, &mut inferred);
        for (a, b) in trained.iter().zip(&inferred) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // With Keras's momentum the averages move a hundredth of the way.
        let mut slow = BatchNormalization::new();
        slow.build(&[3, 3, 2], &mut Rng::seed_from_u64(0)).unwrap();
        slow.forward_train(&x, &mut trained, TrainingStep::default());
        let slow_mean = values(&slow.moving_mean.value);
        assert!((slow_mean[1] - 0.01 * moving_mean[1]).abs() < 1e-5);
    }
}
