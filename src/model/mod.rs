//! `Sequential`: a stack of layers, trained with Keras's
//! `compile` / `fit` / `evaluate` / `predict` / `summary`.
//!
//! The model is split by job: this file holds the public API and the
//! weights; `build` creates the layers and compiles; `plan` decides once
//! which layers run fused; `network` runs the plan's stages over a batch;
//! `score` computes the loss and metrics; `train` is the `fit` loop;
//! `replicas` the data-parallel copies and the gradient reducer; `infer`
//! evaluates and predicts on `&self`; `maps` gives each layer's output; `profile` times the layers.

mod build;
mod config;
mod infer;
mod loader;
mod maps;
mod network;
mod plan;
mod profile;
mod replicas;
mod score;
mod train;

pub use infer::{DEFAULT_EVAL_BATCH_SIZE, Scores};
pub use replicas::{GradientReducer, InProcessSum, MAX_REPLICAS, SAMPLES_PER_REPLICA, Shard};
pub use train::{Fit, History};

use crate::Result;
use crate::initializers::Rng;
use crate::layers::{Buffer, Layer, Param};
use crate::optimizers::Optimizer;
use network::{Network, Slots};
use score::Scoring;

struct Compiled {
    scoring: Scoring,
    optimizer: Box<dyn Optimizer>,
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
    seed: u64,
    network: Network,
    /// How many of the first layers are built; later ones (added since)
    /// are built, continuing `init_rng`, before the model is next used.
    built: usize,
    init_rng: Rng,
    /// Whether the plan and the derivative hand-offs match the layers.
    ready: bool,
    compiled: Option<Compiled>,
    /// The model's own slots for training (it is replica 0).
    slots: Slots,
    /// Slots for inference, lent to one `&self` call at a time and kept
    /// for the next, so that repeated calls do not allocate.
    spare_slots: std::sync::Mutex<Vec<Slots>>,
    /// Optimizer steps taken so far (Dropout keys its draws on it).
    steps: u64,
    reducer: Box<dyn GradientReducer>,
    /// Set by a callback to end `fit` after the current batch.
    stop_training: bool,
    /// The output classes' names, if known; kept in model files.
    class_names: Vec<String>,
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
        Sequential::with_seed(build::clock_seed())
    }

    /// An empty model whose initial weights, and the order in which `fit`
    /// visits samples, are determined by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Sequential {
            name: "sequential".into(),
            seed,
            network: Network {
                entries: Vec::new(),
                plan: Default::default(),
                input_shape: Vec::new(),
            },
            built: 0,
            init_rng: build::init_rng(seed),
            ready: false,
            compiled: None,
            slots: Slots::default(),
            spare_slots: Default::default(),
            steps: 0,
            reducer: Box::new(InProcessSum),
            stop_training: false,
            class_names: Vec::new(),
        }
    }

    /// The layers, in order.
    pub fn layers(&self) -> impl Iterator<Item = &dyn Layer> {
        self.network.entries.iter().map(|e| e.layer.as_ref())
    }

    /// Names of the layers (`conv2d`, `conv2d_1`, ...), in order.
    pub fn layer_names(&self) -> Vec<&str> {
        self.network
            .entries
            .iter()
            .map(|e| e.name.as_str())
            .collect()
    }

    /// The shape of one input sample.
    pub fn input_shape(&self) -> &[usize] {
        &self.network.input_shape
    }

    /// The shape of one output sample (after `build`).
    pub fn output_shape(&self) -> &[usize] {
        self.network.entries.last().map_or(&[], |e| &e.output_shape)
    }

    /// The names of the output classes, in output order (empty when
    /// unknown): what `convnet predict` shows. A model file keeps them.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Names the output classes, e.g. after an image folder's class
    /// folders.
    ///
    /// ```
    /// let mut model = convnet::Sequential::with_seed(1);
    /// model.set_class_names(["cat", "dog"]);
    /// assert_eq!(model.class_names(), ["cat", "dog"]);
    /// ```
    pub fn set_class_names<S: Into<String>>(&mut self, names: impl IntoIterator<Item = S>) {
        self.class_names = names.into_iter().map(Into::into).collect();
    }

    /// Whether `compile` has been called.
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    /// The seed of the initial weights and of the order of the samples.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Optimizer steps taken so far by `fit`, over the model's life.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Sets the step count (when a model is read back from a file).
    pub(crate) fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// The optimizer's state, once compiled.
    pub(crate) fn optimizer_state(&self) -> Option<crate::optimizers::OptimizerState> {
        self.compiled.as_ref().map(|c| c.optimizer.state())
    }

    /// Restores the optimizer's state (from a checkpoint).
    pub(crate) fn set_optimizer_state(
        &mut self,
        state: crate::optimizers::OptimizerState,
    ) -> Result<()> {
        let lengths: Vec<usize> = self.params().iter().map(|p| p.len()).collect();
        for (slot, vectors) in &state.slots {
            let fits = vectors.is_empty()
                || (vectors.len() == lengths.len()
                    && vectors.iter().zip(&lengths).all(|(v, &n)| v.len() == n));
            if !fits {
                return Err(crate::Error::Data(format!(
                    "optimizer state {slot:?} does not fit the model's parameters"
                )));
            }
        }
        let compiled = self
            .compiled
            .as_mut()
            .ok_or_else(|| crate::Error::InvalidArgument("the model is not compiled".into()))?;
        compiled.optimizer.set_state(state)
    }

    /// Saves the whole model to one safetensors file: architecture,
    /// weights, state and compile settings (Keras `model.save`).
    pub fn save(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.prepare()?;
        crate::io::save_model(self, path.as_ref())
    }

    /// Reads a model saved by [`Sequential::save`] (Keras
    /// `load_model`): it predicts exactly as the saved one did.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Sequential> {
        crate::io::load_model(path.as_ref())
    }

    /// The optimizer chosen by `compile` (Keras `model.optimizer`), e.g.
    /// to read or set its learning rate; an error before `compile`.
    pub fn optimizer(&self) -> Result<&dyn Optimizer> {
        Ok(self.compiled()?.optimizer.as_ref())
    }

    /// The loss chosen by `compile` (Keras `model.loss`); an error
    /// before `compile`.
    ///
    /// ```
    /// # use convnet::{layers::Dense, Loss, Sequential, optimizers::SGD};
    /// let mut model = Sequential::with_seed(1);
    /// model.add(Dense::new(1).input_shape(&[2]));
    /// let loss = Loss::BinaryCrossentropy.from_logits(true)?;
    /// model.compile(loss, SGD::new(0.1), &[])?;
    /// assert_eq!(model.loss()?, loss);
    /// # Ok::<(), convnet::Error>(())
    /// ```
    pub fn loss(&self) -> Result<crate::Loss> {
        Ok(self.compiled()?.scoring.loss)
    }

    /// The optimizer, mutably (see [`Sequential::optimizer`]).
    ///
    /// ```
    /// # use convnet::{layers::Dense, Loss, Sequential, optimizers::SGD};
    /// let mut model = Sequential::with_seed(1);
    /// model.add(Dense::new(1).input_shape(&[2]));
    /// model.compile(Loss::MeanSquaredError, SGD::new(0.1), &[])?;
    /// model.optimizer_mut()?.set_learning_rate(0.01)?;
    /// assert_eq!(model.optimizer()?.learning_rate(), 0.01);
    /// # Ok::<(), convnet::Error>(())
    /// ```
    pub fn optimizer_mut(&mut self) -> Result<&mut dyn Optimizer> {
        self.compiled()?;
        let compiled = self.compiled.as_mut().expect("checked above");
        Ok(compiled.optimizer.as_mut())
    }

    /// Asks `fit` to stop after the current batch (Keras
    /// `model.stop_training = True`, what callbacks such as
    /// [`crate::callbacks::EarlyStopping`] do); `fit` clears it when it starts.
    pub fn set_stop_training(&mut self, stop: bool) {
        self.stop_training = stop;
    }

    /// Whether a stop has been asked for (see [`Sequential::set_stop_training`]).
    pub fn stop_training(&self) -> bool {
        self.stop_training
    }

    /// Replaces the point where data-parallel replicas meet (default:
    /// [`InProcessSum`]).
    pub fn set_gradient_reducer(&mut self, reducer: Box<dyn GradientReducer>) {
        self.reducer = reducer;
    }

    /// Total number of trainable scalars.
    pub fn count_params(&self) -> usize {
        self.params().into_iter().map(Param::len).sum()
    }

    /// Total number of non-trainable scalars (layer state).
    pub fn count_non_trainable(&self) -> usize {
        self.buffers().into_iter().map(Buffer::len).sum()
    }

    /// All trainable parameters, layer by layer, kernel before bias.
    pub fn params(&self) -> Vec<&Param> {
        self.layers().flat_map(|l| l.params()).collect()
    }

    /// All trainable parameters, mutably, in the order of [`Sequential::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.network
            .entries
            .iter_mut()
            .flat_map(|e| e.layer.params_mut())
            .collect()
    }

    /// All non-trainable state, layer by layer.
    pub fn buffers(&self) -> Vec<&Buffer> {
        self.layers().flat_map(|l| l.buffers()).collect()
    }

    /// All non-trainable state, mutably, in the order of [`Sequential::buffers`].
    pub fn buffers_mut(&mut self) -> Vec<&mut Buffer> {
        self.network
            .entries
            .iter_mut()
            .flat_map(|e| e.layer.buffers_mut())
            .collect()
    }

    /// Every parameter with its Keras name, `<layer>.<param>`
    /// (`conv2d.kernel`, `dense_2.bias`), in the order of [`Sequential::params`].
    pub fn named_params(&self) -> Vec<(String, &Param)> {
        self.network
            .entries
            .iter()
            .flat_map(|e| {
                e.layer
                    .params()
                    .into_iter()
                    .map(|p| (format!("{}.{}", e.name, p.name), p))
            })
            .collect()
    }

    /// Every state buffer with its name, `<layer>.<buffer>`
    /// (`batch_normalization.moving_mean`), in the order of [`Sequential::buffers`].
    pub fn named_buffers(&self) -> Vec<(String, &Buffer)> {
        self.network
            .entries
            .iter()
            .flat_map(|e| {
                e.layer
                    .buffers()
                    .into_iter()
                    .map(|b| (format!("{}.{}", e.name, b.name), b))
            })
            .collect()
    }

    /// Saves the weights (parameters and state) to a safetensors file
    /// (Keras `save_weights`).
    pub fn save_weights(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.prepare()?;
        crate::io::save_weights(self, path.as_ref())
    }

    /// Loads weights saved by [`Sequential::save_weights`] from a model
    /// with the same layers (Keras `load_weights`).
    pub fn load_weights(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.prepare()?;
        crate::io::load_weights(self, path.as_ref())
    }

    /// Which layers run fused, and why each convolution that does not
    /// fuse runs on its own (see the `plan` module).
    pub fn plan_string(&mut self) -> Result<String> {
        self.prepare()?;
        Ok(self.network.plan.describe(&self.network.entries))
    }

    /// The Keras summary table: each layer with its output shape and number
    /// of parameters, then the totals.
    pub fn summary_string(&mut self) -> Result<String> {
        self.prepare()?;
        let rows = self.network.entries.iter().map(|e| {
            let params = e.layer.params().iter().map(|p| p.len()).sum::<usize>();
            let state = e.layer.buffers().iter().map(|b| b.len()).sum::<usize>();
            let layer = format!("{} ({})", e.name, e.layer.class_name());
            (layer, e.output_shape.clone(), params, state)
        });
        Ok(crate::summary::render(&self.name, rows))
    }

    /// Prints [`Sequential::summary_string`].
    pub fn summary(&mut self) -> Result<()> {
        print!("{}", self.summary_string()?);
        Ok(())
    }
}
