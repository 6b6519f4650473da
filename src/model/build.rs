//! Building a model: naming and adding layers, shape inference and
//! weights (`build`), `compile`, and keeping the plan in step with the
//! layers (a layer added after `compile` is built before the next use).

use rand::SeedableRng;

use super::network::{Entry, Slots};
use super::plan::{Plan, arrange_derivatives};
use super::score::Scoring;
use super::{Compiled, Sequential};
use crate::data::Samples;
use crate::initializers::Rng;
use crate::layers::Layer;
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::optimizers::Optimizer;
use crate::{Error, Result};

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
pub(super) fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The generator of a model's initial weights.
pub(super) fn init_rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

impl Sequential {
    /// Appends a layer. A model already built or compiled builds it (and
    /// plans again) before it is next used; the other layers keep their
    /// weights.
    pub fn add(&mut self, layer: impl Layer + 'static) {
        self.add_boxed(Box::new(layer));
    }

    /// [`Sequential::add`] for a layer chosen at run time.
    pub fn add_boxed(&mut self, layer: Box<dyn Layer>) {
        let base = snake_case(layer.class_name());
        let entries = &mut self.network.entries;
        let same = entries
            .iter()
            .filter(|e| e.name == base || e.name.starts_with(&format!("{base}_")))
            .count();
        let name = if same == 0 {
            base
        } else {
            format!("{base}_{same}")
        };
        entries.push(Entry {
            name,
            layer,
            output_shape: Vec::new(),
        });
        self.ready = false;
    }

    /// The model's layers, in order, taken out of it: to put them after
    /// others in a new model (augmentation layers in front, say).
    ///
    /// ```
    /// use convnet::layers::{RandomFlip, FlipMode};
    /// let mut model = convnet::Sequential::with_seed(1);
    /// model.add(RandomFlip::new(FlipMode::Horizontal).input_shape(&[28, 28, 1]));
    /// for layer in convnet::models::lenet(1).into_layers() {
    ///     model.add_boxed(layer);
    /// }
    /// model.build()?;
    /// assert_eq!(model.layer_names()[..2], ["random_flip", "conv2d"]);
    /// # Ok::<(), convnet::Error>(())
    /// ```
    pub fn into_layers(self) -> Vec<Box<dyn Layer>> {
        self.network.entries.into_iter().map(|e| e.layer).collect()
    }

    /// Creates every layer's weights, from the first layer's `input_shape`,
    /// and plans how the layers run. Called by `compile` and `summary`;
    /// calling it again re-initialises every weight.
    pub fn build(&mut self) -> Result<()> {
        self.build_checked(|_, _, _| Ok(()))
    }

    /// Builds the layers not built yet, then plans and arranges the
    /// derivative hand-offs, if anything changed since the last time.
    pub(super) fn prepare(&mut self) -> Result<()> {
        if self.ready {
            return Ok(());
        }
        self.build_new_layers()?;
        let network = &mut self.network;
        network.plan = Plan::new(&network.entries);
        // The last layer may have changed since compile (a layer added).
        let last = network.entries.last().map(|e| e.layer.activation());
        let fused = self.compiled.as_mut().is_some_and(|c| {
            let scoring = &mut c.scoring;
            scoring.fused = last.is_some_and(|a| scoring.loss.fuses_with(a));
            scoring.fused
        });
        arrange_derivatives(&mut network.entries, &mut network.plan.stages, fused);
        self.slots = Slots::for_network(network);
        self.spare_slots = Default::default();
        self.ready = true;
        Ok(())
    }

    /// Builds layers `self.built..`, each from the output shape of the one
    /// before.
    fn build_new_layers(&mut self) -> Result<()> {
        self.build_new_layers_checked(|_, _, _| Ok(()))
    }

    /// [`Sequential::build`] that calls `check(name, layer, input_shape)`
    /// before each layer is built and stops at its first error: a model
    /// read from a file checks the weights each layer would make
    /// ([`Layer::weight_shapes`]) against the file before the layer
    /// allocates them, so that a hostile architecture allocates no weight
    /// the file does not hold.
    pub(crate) fn build_checked(
        &mut self,
        check: impl FnMut(&str, &dyn Layer, &[usize]) -> Result<()>,
    ) -> Result<()> {
        self.built = 0;
        self.init_rng = init_rng(self.seed);
        self.ready = false;
        self.build_new_layers_checked(check)?;
        self.prepare()
    }

    fn build_new_layers_checked(
        &mut self,
        mut check: impl FnMut(&str, &dyn Layer, &[usize]) -> Result<()>,
    ) -> Result<()> {
        let entries = &mut self.network.entries;
        let first = entries.first().ok_or_else(|| {
            Error::InvalidArgument("the model has no layers: add some with `add`".into())
        })?;
        if self.built == 0 {
            let shape = first.layer.declared_input_shape().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the first layer ({}) needs an input_shape, e.g. .input_shape(&[28, 28, 1])",
                    first.name
                ))
            })?;
            self.network.input_shape = shape.to_vec();
        }
        let entries = &mut self.network.entries;
        if self.built == 0 {
            crate::layers::tensor_len("one input sample", &self.network.input_shape)?;
        }
        let mut shape = match self.built {
            0 => self.network.input_shape.clone(),
            n => entries[n - 1].output_shape.clone(),
        };
        for entry in &mut entries[self.built..] {
            check(&entry.name, entry.layer.as_ref(), &shape)?;
            shape = entry
                .layer
                .build(&shape, &mut self.init_rng)
                .map_err(|e| match e {
                    Error::Shape(msg) => Error::Shape(format!("layer {}: {msg}", entry.name)),
                    other => other,
                })?;
            let what = format!("the output of layer {} for one sample", entry.name);
            crate::layers::tensor_len(&what, &shape)?;
            entry.output_shape = shape.clone();
            self.built += 1;
        }
        Ok(())
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
        self.prepare()?;
        // prepare() below decides whether the loss takes over the output
        // activation (softmax or sigmoid).
        self.compiled = Some(Compiled {
            scoring: Scoring {
                loss,
                metrics: metrics.to_vec(),
                fused: false,
            },
            optimizer,
        });
        self.ready = false;
        self.prepare()
    }

    pub(super) fn compiled(&self) -> Result<&Compiled> {
        self.compiled.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "the model is not compiled: call compile(loss, optimizer, metrics) first".into(),
            )
        })
    }

    /// Checks that `x` holds samples of the model's input shape. The model
    /// must be built.
    pub(super) fn check_inputs(&self, x: &dyn Samples, what: &str) -> Result<()> {
        let expected = &self.network.input_shape;
        if x.sample_shape() != *expected {
            return Err(Error::Shape(format!(
                "{what}: samples have shape {:?} but the model expects {expected:?}; reshape \
                 the data, e.g. to (N, 28, 28, 1) for grey 28x28 images",
                x.sample_shape(),
            )));
        }
        if x.is_empty() {
            return Err(Error::Shape(format!("{what}: there are no samples")));
        }
        Ok(())
    }

    /// Checks inputs and targets for a compiled, built model.
    pub(super) fn check_pair(&self, x: &dyn Samples, y: &dyn Samples, what: &str) -> Result<()> {
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

    /// An error if batches of `batch` samples would make an activation of
    /// more than [`crate::layers::MAX_TENSOR_VALUES`] values (checked
    /// before the passes allocate them).
    pub(super) fn check_batch(&self, batch: usize, what: &str) -> Result<()> {
        let shapes = std::iter::once(&self.network.input_shape)
            .chain(self.network.entries.iter().map(|e| &e.output_shape));
        let largest = shapes
            .map(|s| s.iter().product::<usize>())
            .max()
            .unwrap_or(0);
        crate::layers::tensor_len(
            &format!("{what}: a batch of {batch} samples"),
            &[batch, largest],
        )
        .map(drop)
        .map_err(|e| Error::InvalidArgument(format!("{e}; use a smaller batch size")))
    }

    /// An error unless the model is built and planned for its layers (the
    /// `&self` methods cannot build it).
    pub(super) fn check_ready(&self, what: &str) -> Result<()> {
        if self.ready {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{what}: the model has layers that are not built yet (added after compile or \
                 build): call compile or build first"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which output activation each loss takes over, decided at compile.
    #[test]
    fn compile_fuses_sigmoid_with_binary_cross_entropy() {
        use crate::Activation::{Linear, Sigmoid, Softmax};
        use crate::layers::Dense;
        let bce = Loss::BinaryCrossentropy;
        let cases = [
            (bce, Sigmoid, true),
            (bce, Softmax, false),
            (bce.from_logits(true).unwrap(), Sigmoid, false),
            (bce.from_logits(true).unwrap(), Linear, false),
            (Loss::CategoricalCrossentropy, Softmax, true),
            (Loss::CategoricalCrossentropy, Sigmoid, false),
        ];
        for (loss, activation, fused) in cases {
            let mut model = Sequential::with_seed(1);
            model.add(Dense::new(2).activation(activation).input_shape(&[3]));
            let sgd = crate::optimizers::SGD::new(0.1);
            model.compile(loss, sgd, &[]).unwrap();
            let scoring = &model.compiled.as_ref().unwrap().scoring;
            assert_eq!(scoring.fused, fused, "{loss:?} with {activation:?}");
        }
    }

    #[test]
    fn layer_names_follow_keras() {
        assert_eq!(snake_case("Conv2D"), "conv2d");
        assert_eq!(snake_case("MaxPooling2D"), "max_pooling2d");
        assert_eq!(snake_case("Dense"), "dense");
    }
}
