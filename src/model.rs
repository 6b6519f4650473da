//! `Sequential`: a stack of layers, trained with Keras's
//! `compile` / `fit` / `evaluate` / `predict` / `summary`.

use std::any::Any;
use std::collections::BTreeMap;
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::callbacks::EpochProgress;
use crate::data::Samples;
use crate::initializers::Rng;
use crate::layers::{Conv2D, Layer, MaxPooling2D, Param, resize};
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::optimizers::Optimizer;
use crate::{Error, Result};

/// Batch size of `evaluate` and `predict` (results do not depend on it).
pub const DEFAULT_EVAL_BATCH_SIZE: usize = 128;

struct Entry {
    name: String,
    layer: Box<dyn Layer>,
    output_shape: Vec<usize>,
}

struct Compiled {
    scoring: Scoring,
    optimizer: Box<dyn Optimizer>,
}

/// What `compile` chose for scoring a batch.
#[derive(Clone)]
struct Scoring {
    loss: Loss,
    metrics: Vec<Metric>,
    fused_softmax: bool,
}

/// A linear stack of layers (Keras `Sequential`).
///
/// ```
/// use convnet::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
/// use convnet::{Activation::*, Loss, Metric, Sequential, optimizers::Adam};
///
/// let mut model = Sequential::with_seed(1);
/// model.add(Conv2D::new(6, (5, 5)).activation(Relu).input_shape(&[28, 28, 1]));
/// model.add(MaxPooling2D::new((2, 2)));
/// model.add(Flatten::new());
/// model.add(Dense::new(10).activation(Softmax));
/// model.compile(Loss::CategoricalCrossentropy, Adam::default(), &[Metric::Accuracy]).unwrap();
/// assert_eq!(model.count_params(), 156 + 864 * 10 + 10);
/// ```
pub struct Sequential {
    name: String,
    entries: Vec<Entry>,
    input_shape: Vec<usize>,
    built: bool,
    compiled: Option<Compiled>,
    seed: u64,
    // activations[i] is the input of layer i; activations[len] the output.
    activations: Vec<ArrayD<f32>>,
    // gradients[i] is the gradient of the loss with respect to activations[i].
    gradients: Vec<ArrayD<f32>>,
    targets: Vec<f32>,
    /// A copy of the layers that trains on the second half of each batch
    /// alongside (see `Sequential::train_step`); made by `fit`.
    twin: Option<Box<Sequential>>,
}

/// Options of [`Sequential::fit`], with Keras's defaults.
///
/// ```
/// use convnet::Fit;
/// let options = Fit { batch_size: 128, epochs: 2, ..Fit::default() };
/// ```
pub struct Fit<'a> {
    /// Samples per gradient step (default 32).
    pub batch_size: usize,
    /// Passes over the training data (default 1).
    pub epochs: usize,
    /// 0 silent, 1 progress bar, 2 one line per epoch (default 1).
    pub verbose: u8,
    /// Data (x, y) evaluated after every epoch.
    pub validation_data: Option<(&'a dyn Samples, &'a dyn Samples)>,
    /// Whether to shuffle the training samples before each epoch (default true).
    pub shuffle: bool,
}

impl Default for Fit<'_> {
    fn default() -> Self {
        Fit {
            batch_size: 32,
            epochs: 1,
            verbose: 1,
            validation_data: None,
            shuffle: true,
        }
    }
}

/// What `fit` returns: per-epoch values of the loss and metrics (Keras's
/// `history.history`), plus the training time of each epoch.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct History {
    /// `"loss"`, `"accuracy"`, `"val_loss"`, `"val_accuracy"`: one value per epoch.
    pub history: BTreeMap<String, Vec<f64>>,
    /// Seconds spent training in each epoch (validation not included).
    pub epoch_seconds: Vec<f64>,
}

/// What `evaluate` returns: the mean loss and each metric.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Scores {
    /// Mean loss over all samples.
    pub loss: f64,
    /// Metric values by name, e.g. `"accuracy"`.
    pub metrics: BTreeMap<String, f64>,
}

impl Scores {
    /// The accuracy, if it was one of the compiled metrics.
    pub fn accuracy(&self) -> Option<f64> {
        self.metrics.get("accuracy").copied()
    }
}

/// Running sums of the loss and metrics over the batches of an epoch.
struct Tally {
    samples: usize,
    loss: f64,
    correct: Vec<usize>,
}

impl Tally {
    fn new(metrics: usize) -> Self {
        Tally {
            samples: 0,
            loss: 0.0,
            correct: vec![0; metrics],
        }
    }

    /// Counts `other`'s samples too.
    fn add(&mut self, other: &Tally) {
        self.samples += other.samples;
        self.loss += other.loss;
        for (mine, theirs) in self.correct.iter_mut().zip(&other.correct) {
            *mine += theirs;
        }
    }

    fn logs(&self, metrics: &[Metric], prefix: &str) -> Vec<(String, f64)> {
        let n = self.samples.max(1) as f64;
        let mut logs = vec![(format!("{prefix}loss"), self.loss / n)];
        for (metric, &correct) in metrics.iter().zip(&self.correct) {
            logs.push((format!("{prefix}{}", metric.name()), correct as f64 / n));
        }
        logs
    }
}

/// Layers `i` and `i + 1` if they are a Conv2D with relu and a max
/// pooling that it can run in its own passes (`Conv2D::forward_pooled`).
fn conv_relu_pool(
    entries: &mut [Entry],
    i: usize,
    training: bool,
) -> Option<(&mut Conv2D, &mut MaxPooling2D)> {
    let [first, second] = entries.get_mut(i..i + 2)? else {
        unreachable!("two entries")
    };
    let first: &mut dyn Any = first.layer.as_mut();
    let second: &mut dyn Any = second.layer.as_mut();
    let conv = first.downcast_mut::<Conv2D>()?;
    let pool = second.downcast_mut::<MaxPooling2D>()?;
    conv.can_forward_pooled(pool, training)
        .then_some((conv, pool))
}

/// Keras's default layer name for a class: `Conv2D` → `conv2d`,
/// `MaxPooling2D` → `max_pooling2d`.
fn snake_case(class: &str) -> String {
    let mut name = String::new();
    let chars: Vec<char> = class.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let after_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
        if c.is_ascii_uppercase() && after_lower {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// A seed from the clock, for models built without one.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential::new()
    }
}

impl Sequential {
    /// An empty model whose weights and shuffling come from a seed taken
    /// from the clock. Use [`Sequential::with_seed`] for reproducible runs.
    pub fn new() -> Self {
        Sequential::with_seed(clock_seed())
    }

    /// An empty model whose initial weights, and the order in which `fit`
    /// visits samples, are determined by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Sequential {
            name: "sequential".into(),
            entries: Vec::new(),
            input_shape: Vec::new(),
            built: false,
            compiled: None,
            seed,
            activations: Vec::new(),
            gradients: Vec::new(),
            targets: Vec::new(),
            twin: None,
        }
    }

    /// Appends a layer.
    pub fn add(&mut self, layer: impl Layer + 'static) {
        let base = snake_case(layer.class_name());
        let same = self
            .entries
            .iter()
            .filter(|e| e.name == base || e.name.starts_with(&format!("{base}_")))
            .count();
        let name = if same == 0 {
            base
        } else {
            format!("{base}_{same}")
        };
        self.entries.push(Entry {
            name,
            layer: Box::new(layer),
            output_shape: Vec::new(),
        });
        self.built = false;
    }

    /// The layers, in order.
    pub fn layers(&self) -> impl Iterator<Item = &dyn Layer> {
        self.entries.iter().map(|e| e.layer.as_ref())
    }

    /// The shape of one input sample.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The shape of one output sample (after `build`).
    pub fn output_shape(&self) -> &[usize] {
        self.entries.last().map_or(&[], |e| &e.output_shape)
    }

    /// Creates every layer's weights, from the first layer's `input_shape`.
    /// Called by `compile` and `summary`; calling it again re-initialises.
    pub fn build(&mut self) -> Result<()> {
        let first = self.entries.first().ok_or_else(|| {
            Error::InvalidArgument("the model has no layers: add some with `add`".into())
        })?;
        let mut shape = first
            .layer
            .declared_input_shape()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the first layer ({}) needs an input_shape, e.g. .input_shape(&[28, 28, 1])",
                    first.name
                ))
            })?
            .to_vec();
        self.input_shape = shape.clone();
        let mut rng = Rng::seed_from_u64(self.seed);
        for entry in &mut self.entries {
            shape = entry.layer.build(&shape, &mut rng).map_err(|e| match e {
                Error::Shape(msg) => Error::Shape(format!("layer {}: {msg}", entry.name)),
                other => other,
            })?;
            entry.output_shape = shape.clone();
        }
        let slots = self.entries.len() + 1;
        self.activations = vec![ArrayD::zeros(IxDyn(&[0])); slots];
        self.gradients = vec![ArrayD::zeros(IxDyn(&[0])); slots];
        self.built = true;
        self.twin = None;
        Ok(())
    }

    fn ensure_built(&mut self) -> Result<()> {
        if self.built { Ok(()) } else { self.build() }
    }

    /// Chooses the loss, the optimizer and the metrics, and builds the model.
    pub fn compile(
        &mut self,
        loss: Loss,
        optimizer: impl Optimizer + 'static,
        metrics: &[Metric],
    ) -> Result<()> {
        self.compile_boxed(loss, Box::new(optimizer), metrics)
    }

    /// [`Sequential::compile`] with an optimizer chosen at run time.
    pub fn compile_boxed(
        &mut self,
        loss: Loss,
        optimizer: Box<dyn Optimizer>,
        metrics: &[Metric],
    ) -> Result<()> {
        self.ensure_built()?;
        for entry in &mut self.entries {
            entry.layer.skip_activation_derivative(false);
            entry.layer.take_relu_derivative_of_input(false);
        }
        let last = self.entries.last_mut().expect("built models have layers");
        let fused_softmax =
            loss.fuses_with_softmax() && last.layer.activation() == crate::Activation::Softmax;
        if fused_softmax {
            last.layer.skip_activation_derivative(true);
        }
        self.hand_relu_derivatives_to_next_layers();
        self.compiled = Some(Compiled {
            scoring: Scoring {
                loss,
                metrics: metrics.to_vec(),
                fused_softmax,
            },
            optimizer,
        });
        self.twin = None;
        Ok(())
    }

    /// Lets each layer that can apply the relu derivative of the layer
    /// before (max pooling) do so, saving that layer a pass.
    fn hand_relu_derivatives_to_next_layers(&mut self) {
        for i in 1..self.entries.len() {
            let (before, after) = self.entries.split_at_mut(i);
            let (previous, layer) = (&mut before[i - 1].layer, &mut after[0].layer);
            if previous.activation() == crate::Activation::Relu
                && layer.take_relu_derivative_of_input(true)
            {
                previous.skip_activation_derivative(true);
            }
        }
    }

    /// Total number of trainable scalars.
    pub fn count_params(&self) -> usize {
        self.layers().flat_map(|l| l.params()).map(Param::len).sum()
    }

    /// All trainable parameters, layer by layer, kernel before bias.
    pub fn params(&self) -> Vec<&Param> {
        self.layers().flat_map(|l| l.params()).collect()
    }

    /// All trainable parameters, mutably, in the order of [`Sequential::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.entries
            .iter_mut()
            .flat_map(|e| e.layer.params_mut())
            .collect()
    }

    /// Every parameter with its Keras name, `<layer>.<param>`
    /// (`conv2d.kernel`, `dense_2.bias`), in the order of [`Sequential::params`].
    pub fn named_params(&self) -> Vec<(String, &Param)> {
        self.entries
            .iter()
            .flat_map(|e| {
                e.layer
                    .params()
                    .into_iter()
                    .map(|p| (format!("{}.{}", e.name, p.name), p))
            })
            .collect()
    }

    /// Saves the weights to a safetensors file (Keras `save_weights`).
    pub fn save_weights(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.ensure_built()?;
        crate::io::save_weights(self, path.as_ref())
    }

    /// Loads weights saved by [`Sequential::save_weights`] from a model
    /// with the same layers (Keras `load_weights`).
    pub fn load_weights(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.ensure_built()?;
        crate::io::load_weights(self, path.as_ref())
    }

    /// Names of the layers (`conv2d`, `conv2d_1`, ...), in order.
    pub fn layer_names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    fn check_inputs(&self, x: &dyn Samples, what: &str) -> Result<()> {
        if x.sample_shape() != self.input_shape {
            return Err(Error::Shape(format!(
                "{what}: samples have shape {:?} but the model expects {:?}; reshape the data, \
                 e.g. to (N, 28, 28, 1) for grey 28x28 images",
                x.sample_shape(),
                self.input_shape
            )));
        }
        if x.is_empty() {
            return Err(Error::Shape(format!("{what}: there are no samples")));
        }
        Ok(())
    }

    fn check_pair(&self, x: &dyn Samples, y: &dyn Samples, what: &str) -> Result<()> {
        let compiled = self.compiled()?;
        self.check_inputs(x, what)?;
        if x.len() != y.len() {
            return Err(Error::Shape(format!(
                "{what}: x has {} samples but y has {}; they must match one to one",
                x.len(),
                y.len()
            )));
        }
        let width: usize = self.output_shape().iter().product();
        let target_width: usize = y.sample_shape().iter().product();
        compiled
            .scoring
            .loss
            .check_targets(target_width, width)
            .map_err(|e| {
                Error::Shape(format!(
                    "{what}: {}",
                    e.to_string().trim_start_matches("shape error: ")
                ))
            })
    }

    fn compiled(&self) -> Result<&Compiled> {
        self.compiled.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "the model is not compiled: call compile(loss, optimizer, metrics) first".into(),
            )
        })
    }

    /// Runs the layers on the batch in `activations[0]`.
    fn forward(&mut self, training: bool) {
        let mut i = 0;
        while i < self.entries.len() {
            i += self.forward_step(i, training);
        }
    }

    /// Layer `i`, or layers `i` and `i + 1` in one pass where they can
    /// (see [`Sequential::forward_fused`]); returns how many ran.
    fn forward_step(&mut self, i: usize, training: bool) -> usize {
        if self.forward_fused(i, training) {
            2
        } else {
            self.forward_layer(i, training);
            1
        }
    }

    /// A Conv2D with relu followed by 2x2 max pooling runs as one pass when
    /// its kernels can pool as they compute (`Conv2D::forward_pooled`):
    /// the convolution's output never goes to memory. Returns false, doing
    /// nothing, for any other pair of layers.
    fn forward_fused(&mut self, i: usize, training: bool) -> bool {
        let Some((conv, pool)) = conv_relu_pool(&mut self.entries, i, training) else {
            return false;
        };
        let (inputs, outputs) = self.activations.split_at_mut(i + 1);
        let [conv_output, pooled, ..] = outputs else {
            unreachable!("a slot per layer output")
        };
        conv.forward_pooled(&inputs[i], conv_output, (pool, pooled), training);
        true
    }

    /// Layer `i`: `activations[i]` → `activations[i + 1]`.
    fn forward_layer(&mut self, i: usize, training: bool) {
        let (inputs, outputs) = self.activations.split_at_mut(i + 1);
        self.entries[i]
            .layer
            .forward(&inputs[i], &mut outputs[0], training);
    }

    /// Back-propagates the gradient in `gradients[len]` down to the first
    /// layer's parameters.
    fn backward(&mut self) {
        let mut i = self.entries.len();
        while i > 0 {
            i -= self.backward_step(i - 1);
        }
    }

    /// Layer `i`, or layers `i - 1` and `i` where their backward passes
    /// run as one (see [`Sequential::backward_fused`]); returns how many ran.
    fn backward_step(&mut self, i: usize) -> usize {
        if i == 1 && self.backward_fused() {
            2
        } else {
            self.backward_layer(i);
            1
        }
    }

    /// The first two layers' backward passes as one, after
    /// [`Sequential::forward_fused`] ran them (`Conv2D::backward_pooled`:
    /// the gradient of the convolution's output is never stored). Only
    /// for the first layer, which needs no input gradient.
    fn backward_fused(&mut self) -> bool {
        match conv_relu_pool(&mut self.entries, 0, true) {
            Some((conv, pool)) if conv.can_backward_pooled(pool) => {
                conv.backward_pooled(pool, &self.activations[2], &self.gradients[2]);
                true
            }
            _ => false,
        }
    }

    /// Layer `i`: `gradients[i + 1]` → its parameter gradients and, except
    /// for the first layer, `gradients[i]`.
    fn backward_layer(&mut self, i: usize) {
        let (below, above) = self.gradients.split_at_mut(i + 1);
        let grad_input = if i == 0 { None } else { Some(&mut below[i]) };
        self.entries[i].layer.backward(
            &self.activations[i],
            &self.activations[i + 1],
            &mut above[0],
            grad_input,
        );
    }

    /// Loads the samples at `indices` into the input slot.
    fn load_batch(&mut self, x: &dyn Samples, indices: &[usize]) {
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(&self.input_shape);
        resize(&mut self.activations[0], &shape);
        let input = self.activations[0].as_slice_mut().expect("standard layout");
        x.gather(indices, input);
    }

    fn load_targets(&mut self, y: &dyn Samples, indices: &[usize]) {
        let width: usize = y.sample_shape().iter().product();
        self.targets.resize(indices.len() * width, 0.0);
        y.gather(indices, &mut self.targets);
    }

    /// Loss (summed) and correct counts of the batch in the output slot;
    /// with `grad_scale`, also the loss gradient, each sample's multiplied
    /// by it (`1 / batch size` for the mean loss of a whole batch).
    fn score_batch(
        &mut self,
        scoring: &Scoring,
        tally: &mut Tally,
        grad_scale: Option<f32>,
    ) -> Result<()> {
        let output = self.activations.last().expect("built");
        let width: usize = self.output_shape().iter().product();
        let pred = output.as_slice().expect("standard layout");
        let grad = grad_scale.map(|_| {
            let slot = self.gradients.last_mut().expect("built");
            resize(slot, output.shape());
            slot.as_slice_mut().expect("standard layout")
        });
        let scale = grad_scale.unwrap_or(1.0);
        let loss = scoring.loss.compute_scaled(
            (pred, &self.targets),
            width,
            scoring.fused_softmax,
            (grad, scale),
        );
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!(
                "the loss became {loss} (not a finite number): the training diverged; \
                 try a smaller learning rate (--lr) or check the inputs for NaN or huge values"
            )));
        }
        tally.loss += loss;
        tally.samples += pred.len() / width;
        for (metric, correct) in scoring.metrics.iter().zip(&mut tally.correct) {
            *correct += metric.count_correct(pred, &self.targets, width);
        }
        Ok(())
    }

    /// Trains the model on `(x, y)` for `options.epochs` epochs.
    ///
    /// When every layer can be copied ([`Layer::replicate`]: all of
    /// convnet's but `Dropout`), each batch is split in two halves that
    /// the model and a copy of it (a "twin") run at the same time, their
    /// gradients added before the optimizer's step: data-parallel training
    /// inside one process. The split does not depend on the number of
    /// threads, so neither do the results.
    pub fn fit(&mut self, x: &dyn Samples, y: &dyn Samples, options: Fit) -> Result<History> {
        self.check_pair(x, y, "fit")?;
        if let Some((vx, vy)) = options.validation_data {
            self.check_pair(vx, vy, "validation_data")?;
        }
        if options.batch_size == 0 {
            return Err(Error::InvalidArgument(
                "batch_size must be at least 1".into(),
            ));
        }
        let metrics = self.compiled()?.scoring.metrics.clone();
        self.twin = self.make_twin();
        let mut order: Vec<usize> = (0..x.len()).collect();
        let mut shuffler = Rng::seed_from_u64(self.seed ^ 0x5eed_5eed_5eed_5eed);
        let steps = x.len().div_ceil(options.batch_size);
        let mut history = History::default();
        for epoch in 1..=options.epochs {
            if options.shuffle {
                order.shuffle(&mut shuffler);
            }
            let progress = EpochProgress::start(options.verbose, epoch, options.epochs, steps);
            let started = Instant::now();
            let mut tally = Tally::new(metrics.len());
            for (step, batch) in order.chunks(options.batch_size).enumerate() {
                self.train_step(x, y, batch, &mut tally)?;
                progress.update(step + 1, || tally.logs(&metrics, ""));
            }
            history.epoch_seconds.push(started.elapsed().as_secs_f64());
            let mut logs = tally.logs(&metrics, "");
            if let Some((vx, vy)) = options.validation_data {
                logs.extend(
                    self.tally(vx, vy, DEFAULT_EVAL_BATCH_SIZE)?
                        .logs(&metrics, "val_"),
                );
            }
            for (name, value) in &logs {
                history
                    .history
                    .entry(name.clone())
                    .or_default()
                    .push(*value);
            }
            progress.finish(&logs);
        }
        // The twin's buffers are not needed until the next `fit`.
        self.twin = None;
        Ok(history)
    }

    /// One step of training on the samples at `batch`. With a twin (see
    /// [`Sequential::make_twin`]) the model takes the first half of the
    /// batch and the twin the second, at the same time; the twin's
    /// gradients are then added to the model's, in that order whatever the
    /// number of threads, and the optimizer steps once. The two halves
    /// meet once per step instead of at every layer, so two cores keep
    /// each other waiting less (the layers still split their own half
    /// into chunks that an idle core can take over).
    fn train_step(
        &mut self,
        x: &dyn Samples,
        y: &dyn Samples,
        batch: &[usize],
        tally: &mut Tally,
    ) -> Result<()> {
        let compiled = self.compiled.take().expect("checked by fit");
        let scale = 1.0 / batch.len() as f32;
        let result = match self.twin.take() {
            Some(mut twin) if batch.len() >= 2 => {
                twin.copy_weights_from(self);
                let (first, second) = batch.split_at(batch.len().div_ceil(2));
                let mut second_tally = Tally::new(tally.correct.len());
                let scoring = &compiled.scoring;
                let (a, b) = rayon::join(
                    || self.half_step(x, y, first, (scoring, scale), tally),
                    || twin.half_step(x, y, second, (scoring, scale), &mut second_tally),
                );
                self.add_gradients_of(&twin);
                self.twin = Some(twin);
                tally.add(&second_tally);
                a.and(b)
            }
            twin => {
                self.twin = twin;
                self.half_step(x, y, batch, (&compiled.scoring, scale), tally)
            }
        };
        self.compiled = Some(compiled);
        result?;
        let mut params: Vec<&mut Param> = self
            .entries
            .iter_mut()
            .flat_map(|e| e.layer.params_mut())
            .collect();
        let compiled = self.compiled.as_mut().expect("checked by fit");
        compiled.optimizer.step(&mut params);
        Ok(())
    }

    /// Forward and backward passes on the samples at `indices`, the loss
    /// gradient of each sample multiplied by `scale`: the parameters'
    /// gradients, not yet applied.
    fn half_step(
        &mut self,
        x: &dyn Samples,
        y: &dyn Samples,
        indices: &[usize],
        (scoring, scale): (&Scoring, f32),
        tally: &mut Tally,
    ) -> Result<()> {
        self.load_batch(x, indices);
        self.load_targets(y, indices);
        self.forward(true);
        self.score_batch(scoring, tally, Some(scale))?;
        self.backward();
        Ok(())
    }

    /// A copy of the layers for data-parallel training, if every layer has
    /// one ([`Layer::replicate`]); weights are copied from the model at
    /// each step. Made whatever the number of threads (with one, the
    /// halves run one after the other), so that results do not depend on it.
    fn make_twin(&self) -> Option<Box<Sequential>> {
        let entries = self
            .entries
            .iter()
            .map(|e| {
                Some(Entry {
                    name: e.name.clone(),
                    layer: e.layer.replicate()?,
                    output_shape: e.output_shape.clone(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let slots = entries.len() + 1;
        Some(Box::new(Sequential {
            name: self.name.clone(),
            entries,
            input_shape: self.input_shape.clone(),
            built: true,
            activations: vec![ArrayD::zeros(IxDyn(&[0])); slots],
            gradients: vec![ArrayD::zeros(IxDyn(&[0])); slots],
            ..Sequential::with_seed(self.seed)
        }))
    }

    /// Sets every parameter of this twin to the model's value.
    fn copy_weights_from(&mut self, model: &Sequential) {
        for (mine, theirs) in self.params_mut().into_iter().zip(model.params()) {
            mine.value.assign(&theirs.value);
        }
    }

    /// Adds the twin's parameter gradients to the model's.
    fn add_gradients_of(&mut self, twin: &Sequential) {
        for (mine, theirs) in self.params_mut().into_iter().zip(twin.params()) {
            mine.grad += &theirs.grad;
        }
    }

    fn tally(&mut self, x: &dyn Samples, y: &dyn Samples, batch_size: usize) -> Result<Tally> {
        let scoring = self.compiled()?.scoring.clone();
        let mut tally = Tally::new(scoring.metrics.len());
        let indices: Vec<usize> = (0..x.len()).collect();
        for batch in indices.chunks(batch_size.max(1)) {
            self.load_batch(x, batch);
            self.load_targets(y, batch);
            self.forward(false);
            self.score_batch(&scoring, &mut tally, None)?;
        }
        Ok(tally)
    }

    /// The mean loss and metrics of the model on `(x, y)`.
    pub fn evaluate(&mut self, x: &dyn Samples, y: &dyn Samples) -> Result<Scores> {
        self.check_pair(x, y, "evaluate")?;
        let metrics = self.compiled()?.scoring.metrics.clone();
        let tally = self.tally(x, y, DEFAULT_EVAL_BATCH_SIZE)?;
        let n = tally.samples as f64;
        Ok(Scores {
            loss: tally.loss / n,
            metrics: metrics
                .iter()
                .zip(&tally.correct)
                .map(|(m, &c)| (m.name().to_string(), c as f64 / n))
                .collect(),
        })
    }

    /// The model's outputs (for a softmax model, class probabilities) for
    /// every sample of `x`, shape `(N, ..output_shape)`.
    pub fn predict(&mut self, x: &dyn Samples) -> Result<ArrayD<f32>> {
        self.predict_with_batch_size(x, DEFAULT_EVAL_BATCH_SIZE)
    }

    /// [`Sequential::predict`], `batch_size` samples at a time.
    pub fn predict_with_batch_size(
        &mut self,
        x: &dyn Samples,
        batch_size: usize,
    ) -> Result<ArrayD<f32>> {
        self.ensure_built()?;
        self.check_inputs(x, "predict")?;
        let width: usize = self.output_shape().iter().product();
        let mut shape = vec![x.len()];
        shape.extend_from_slice(self.output_shape());
        let mut out = Vec::with_capacity(x.len() * width);
        let indices: Vec<usize> = (0..x.len()).collect();
        for batch in indices.chunks(batch_size.max(1)) {
            self.load_batch(x, batch);
            self.forward(false);
            let output = self.activations.last().expect("built");
            out.extend_from_slice(output.as_slice().expect("standard layout"));
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("sizes match"))
    }

    /// Times one training step on the samples of `x` and `y` at `indices`,
    /// layer by layer: `(layer name, forward seconds, backward seconds)`.
    /// Layers whose passes run as one (a Conv2D with relu and the max
    /// pooling after it, on AVX-512 CPUs) show the pair's time on the first
    /// and zero on the second. The parameters are not updated.
    pub fn profile_step(
        &mut self,
        x: &dyn Samples,
        y: &dyn Samples,
        indices: &[usize],
    ) -> Result<Vec<(String, f64, f64)>> {
        self.check_pair(x, y, "profile_step")?;
        self.load_batch(x, indices);
        self.load_targets(y, indices);
        let mut times: Vec<_> = self
            .entries
            .iter()
            .map(|e| (e.name.clone(), 0.0, 0.0))
            .collect();
        let mut i = 0;
        while i < self.entries.len() {
            // A fused pair's time goes to its first layer.
            let started = Instant::now();
            let ran = self.forward_step(i, true);
            times[i].1 = started.elapsed().as_secs_f64();
            i += ran;
        }
        let scoring = self.compiled()?.scoring.clone();
        let scale = 1.0 / indices.len() as f32;
        self.score_batch(&scoring, &mut Tally::new(0), Some(scale))?;
        let mut i = self.entries.len();
        while i > 0 {
            let started = Instant::now();
            let ran = self.backward_step(i - 1);
            i -= ran;
            times[i].2 = started.elapsed().as_secs_f64();
        }
        Ok(times)
    }

    /// The Keras summary table: each layer with its output shape and number
    /// of parameters, then the totals.
    pub fn summary_string(&mut self) -> Result<String> {
        self.ensure_built()?;
        let rows = self.entries.iter().map(|e| {
            let params = e.layer.params().iter().map(|p| p.len()).sum();
            let layer = format!("{} ({})", e.name, e.layer.class_name());
            (layer, e.output_shape.clone(), params)
        });
        Ok(crate::summary::render(&self.name, rows))
    }

    /// Prints [`Sequential::summary_string`].
    pub fn summary(&mut self) -> Result<()> {
        print!("{}", self.summary_string()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Dense, Flatten};
    use crate::optimizers::Adam;
    use rand::RngExt;

    /// The model's gradients after its half and its twin's half of a batch
    /// (`train_step`'s data-parallel path) are those of the whole batch.
    #[test]
    fn twin_halves_add_up_to_the_whole_batch() {
        let mut model = Sequential::with_seed(3);
        model.add(
            Conv2D::new(6, (3, 3))
                .activation(crate::Activation::Relu)
                .input_shape(&[8, 8, 1]),
        );
        model.add(MaxPooling2D::new((2, 2)));
        model.add(Flatten::new());
        model.add(Dense::new(4).activation(crate::Activation::Softmax));
        let loss = Loss::CategoricalCrossentropy;
        model.compile(loss, Adam::default(), &[]).unwrap();
        let mut rng = Rng::seed_from_u64(5);
        let x = ArrayD::from_shape_fn(IxDyn(&[7, 8, 8, 1]), |_| rng.random_range(-1.0..1.0));
        let y = ArrayD::from_shape_fn(IxDyn(&[7, 4]), |i| (i[0] % 4 == i[1]) as u8 as f32);
        let batch: Vec<usize> = (0..7).collect();
        let scoring = model.compiled.as_ref().unwrap().scoring.clone();
        let scale = 1.0 / 7.0;
        let mut tally = Tally::new(0);
        model
            .half_step(&x, &y, &batch, (&scoring, scale), &mut tally)
            .unwrap();
        let whole: Vec<ArrayD<f32>> = model.params().iter().map(|p| p.grad.clone()).collect();

        let mut twin = model.make_twin().expect("every layer replicates");
        twin.copy_weights_from(&model);
        let (first, second) = batch.split_at(4);
        model
            .half_step(&x, &y, first, (&scoring, scale), &mut tally)
            .unwrap();
        twin.half_step(&x, &y, second, (&scoring, scale), &mut tally)
            .unwrap();
        model.add_gradients_of(&twin);
        for (halves, whole) in model.params().iter().zip(&whole) {
            for (a, b) in halves.grad.iter().zip(whole) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
        assert!(whole[0].iter().any(|&g| g != 0.0));
    }

    #[test]
    fn layer_names_follow_keras() {
        assert_eq!(snake_case("Conv2D"), "conv2d");
        assert_eq!(snake_case("MaxPooling2D"), "max_pooling2d");
        assert_eq!(snake_case("Dense"), "dense");
    }
}
