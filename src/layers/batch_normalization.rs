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
    /// The last training batch's normalised input, and `1 / s` per channel.
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
}

/// Per channel, `Σ f(row of x, row of y)` over the rows (pixels) of `x`
/// and `y` side by side, in parallel chunks added in a fixed order (the
/// same on any thread count).
/// Rows summed in `f32` before their sums join the `f64` totals: few
/// enough that rounding stays near `f32`'s own precision, many enough
/// that the `f64` additions cost little.
const ROWS_PER_BLOCK: usize = 64;

/// Two sums per channel over every row of `x` (and the matching row of
/// `y`): `f(x_row, y_row, (first, second))` adds a row's terms to the two
/// sums. Blocks of [`ROWS_PER_BLOCK`] rows are summed in `f32` vectors,
/// then added in `f64`; chunks of rows run in parallel and are added in
/// order (the same result on any number of threads).
fn channel_sums(
    (x, y): (&[f32], &[f32]),
    channels: usize,
    f: impl Fn(&[f32], &[f32], (&mut [f32], &mut [f32])) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let partials: Vec<Vec<f64>> = x
        .par_chunks(ROWS_PER_CHUNK * channels)
        .zip(y.par_chunks(ROWS_PER_CHUNK * channels))
        .map(|(x, y)| {
            let mut sums = vec![0.0; 2 * channels];
            let mut block = vec![0.0f32; 2 * channels];
            let blocks = x
                .chunks(ROWS_PER_BLOCK * channels)
                .zip(y.chunks(ROWS_PER_BLOCK * channels));
            for (x, y) in blocks {
                block.fill(0.0);
                let (first, second) = block.split_at_mut(channels);
                let rows = x.chunks(channels).zip(y.chunks(channels));
                rows.for_each(|(x, y)| f(x, y, (&mut *first, &mut *second)));
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

/// `row(x_row, y_row)` for every row (pixel) of `x` and `y`, chunks of
/// rows in parallel.
fn each_row_chunk(
    x: &[f32],
    y: &mut [f32],
    channels: usize,
    row: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    x.par_chunks(ROWS_PER_CHUNK * channels)
        .zip(y.par_chunks_mut(ROWS_PER_CHUNK * channels))
        .for_each(|(x, y)| {
            for (x, y) in x.chunks(channels).zip(y.chunks_mut(channels)) {
                row(x, y);
            }
        });
}

/// `y = a · x + b`, per channel.
fn affine(x: &[f32], y: &mut [f32], (a, b): (&[f32], &[f32])) {
    each_row_chunk(x, y, a.len(), |x, y| {
        let terms = y.iter_mut().zip(x).zip(a.iter().zip(b));
        for ((y, &x), (&a, &b)) in terms {
            *y = a * x + b;
        }
    });
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
        affine(values(input), values_mut(output), (&a, &b));
    }

    fn forward_train(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, _: TrainingStep) {
        let channels = self.channels();
        let x = values(input);
        let n = (x.len() / channels).max(1) as f64;
        // One pass for both moments, of x - k with k the first pixel's
        // values: shifting by a value of the data keeps E[d²] - E[d]²
        // from cancelling when the mean is far from zero.
        let k = &x[..channels.min(x.len())];
        let (sum, sum_sq) = channel_sums((x, x), channels, |row, _, (s1, s2)| {
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
        // y = γ x̂ + β, with x̂ = (x - mean) / s, in one pass.
        resize(output, input.shape());
        let (gamma, beta) = (values(&self.gamma.value), values(&self.beta.value));
        let (inv_std, shift) = (&self.inv_std, &self.shift);
        // Per channel y = a·x + b with a = γ/s, b = γ·shift + β: the
        // affine map of x̂ folded with γ and β.
        let a: Vec<f32> = (0..channels).map(|c| gamma[c] * inv_std[c]).collect();
        let b: Vec<f32> = (0..channels)
            .map(|c| gamma[c] * shift[c] + beta[c])
            .collect();
        affine(x, values_mut(output), (&a, &b));
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

    fn backward(
        &mut self,
        input: &ArrayD<f32>,
        _output: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let channels = self.channels();
        let (x, dy) = (values(input), values(grad_output));
        let (inv_std, shift) = (&self.inv_std, &self.shift);
        // Σdy and Σdy·x̂ in one pass, x̂ recomputed as the forward pass did.
        let (sum_dy, sum_dy_xhat) = channel_sums((dy, x), channels, |dy, x, (s1, s2)| {
            let affine = inv_std.iter().zip(shift);
            let terms = dy
                .iter()
                .zip(x)
                .zip(affine)
                .zip(s1.iter_mut().zip(s2.iter_mut()));
            for (((&dy, &x), (&a, &b)), (s1, s2)) in terms {
                *s1 += dy;
                *s2 += dy * (a * x + b);
            }
        });
        let as_f32 = |v: &[f64]| v.iter().map(|&s| s as f32).collect::<Vec<f32>>();
        values_mut(&mut self.gamma.grad).copy_from_slice(&as_f32(&sum_dy_xhat));
        values_mut(&mut self.beta.grad).copy_from_slice(&as_f32(&sum_dy));
        let Some(grad_input) = grad_input else { return };
        resize(grad_input, grad_output.shape());
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
        values_mut(grad_input)
            .par_chunks_mut(ROWS_PER_CHUNK * channels)
            .zip(dy.par_chunks(ROWS_PER_CHUNK * channels))
            .zip(x.par_chunks(ROWS_PER_CHUNK * channels))
            .for_each(|((dx, dy), x)| {
                let rows = dx
                    .chunks_mut(channels)
                    .zip(dy.chunks(channels))
                    .zip(x.chunks(channels));
                for ((dx, dy), x) in rows {
                    let terms = dx.iter_mut().zip(dy).zip(x).zip(k.iter().zip(u).zip(v));
                    for (((dx, &dy), &x), ((&k, &u), &v)) in terms {
                        *dx = k * dy + u * x + v;
                    }
                }
            });
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
