//! One-file models and checkpoints: a safetensors file holding every
//! weight and state tensor (as [`super::save_weights`] names them), with
//! the architecture (Keras-style JSON, [`Sequential::to_json`]) and what
//! `compile` chose in its metadata, so that the file alone rebuilds the
//! model. A checkpoint adds the optimizer's state, the step count, the
//! epoch and the history so far: what `fit` needs to resume exactly.
//!
//! Python reads the tensors with the `safetensors` package
//! (`safetensors.numpy.load_file`), and the architecture from the
//! metadata (`safe_open(path, "np").metadata()["architecture"]`).

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::weights::{Tensor, decode, encode, read_file, read_tensor, set_weights, weight_tensors};
use super::write_atomic;
use crate::layers::Layer;
use crate::optimizers::OptimizerState;
use crate::{Error, History, Result, Sequential};

/// The version of the layout below; files of a later one are refused.
pub const FORMAT_VERSION: u32 = 1;

/// Where a checkpoint stands: epochs done and their history.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// Epochs completed (pass it as `Fit::initial_epoch` to resume).
    pub epoch: usize,
    /// The history of those epochs.
    pub history: History,
}

/// The metadata of a model file of `model`.
fn model_metadata(model: &Sequential) -> Result<HashMap<String, String>> {
    let mut metadata = HashMap::from([
        ("format".to_string(), "convnet".to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("architecture".to_string(), model.to_json()?),
        ("steps".to_string(), model.steps().to_string()),
    ]);
    if let Some(compile) = model.compile_json() {
        metadata.insert("compile".into(), compile);
    }
    if !model.class_names().is_empty() {
        let names = serde_json::to_string(model.class_names())
            .map_err(|e| Error::Data(format!("cannot encode the class names: {e}")))?;
        metadata.insert("class_names".into(), names);
    }
    Ok(metadata)
}

/// Writes `model` to `path` as one file (atomically).
pub fn save_model(model: &Sequential, path: &Path) -> Result<()> {
    let bytes = encode(&weight_tensors(model), model_metadata(model)?)?;
    write_atomic(path, &bytes)
}

/// Writes a checkpoint of `model` after `checkpoint.epoch` epochs to
/// `path` (atomically: a crash leaves the previous file whole).
pub fn save_checkpoint(model: &Sequential, checkpoint: &Checkpoint, path: &Path) -> Result<()> {
    let mut metadata = model_metadata(model)?;
    metadata.insert("epoch".into(), checkpoint.epoch.to_string());
    let history = serde_json::to_string(&checkpoint.history)
        .map_err(|e| Error::Data(format!("cannot encode the history: {e}")))?;
    metadata.insert("history".into(), history);
    let mut tensors = weight_tensors(model);
    if let Some(state) = model.optimizer_state() {
        metadata.insert("optimizer_iterations".into(), state.iterations.to_string());
        tensors.extend(optimizer_tensors(model, &state));
    }
    write_atomic(path, &encode(&tensors, metadata)?)
}

/// The optimizer's slots as tensors `optimizer.<slot>.<parameter>`.
fn optimizer_tensors(model: &Sequential, state: &OptimizerState) -> Vec<Tensor> {
    let names: Vec<String> = model.named_params().into_iter().map(|(n, _)| n).collect();
    state
        .slots
        .iter()
        .flat_map(|(slot, vectors)| {
            vectors.iter().zip(&names).map(move |(v, name)| {
                (format!("optimizer.{slot}.{name}"), vec![v.len()], v.clone())
            })
        })
        .collect()
}

/// Reads a model written by [`save_model`] (or a checkpoint): the same
/// layers, weights and state, compiled as it was.
///
/// Loading runs no code from the file: it holds numbers, and JSON that
/// names layers convnet knows. Files over
/// [`MAX_MODEL_FILE_BYTES`](super::MAX_MODEL_FILE_BYTES) are refused.
pub fn load_model(path: &Path) -> Result<Sequential> {
    model_from_bytes(&read_file(path)?, path)
}

/// [`load_model`] from the bytes of a file (`path` names it in errors).
#[doc(hidden)]
pub fn model_from_bytes(bytes: &[u8], path: &Path) -> Result<Sequential> {
    let tensors = decode(bytes, path)?;
    model_of(&tensors, &metadata(bytes, path)?, path)
}

/// Reads a checkpoint written by [`save_checkpoint`]: the model, with its
/// optimizer's state, and where training stood.
pub fn load_checkpoint(path: &Path) -> Result<(Sequential, Checkpoint)> {
    let bytes = read_file(path)?;
    let tensors = decode(&bytes, path)?;
    let metadata = metadata(&bytes, path)?;
    let mut model = model_of(&tensors, &metadata, path)?;
    let bad = |what: &str| Error::Data(format!("{}: not a checkpoint: {what}", path.display()));
    let epoch = field(&metadata, "epoch", path)?
        .parse()
        .map_err(|_| bad("bad \"epoch\""))?;
    let history: History = serde_json::from_str(field(&metadata, "history", path)?)
        .map_err(|e| bad(&format!("bad \"history\" ({e})")))?;
    // Each epoch done has its line in the history: a bounded epoch count.
    let lines = history.history.get("loss").map_or(0, Vec::len);
    if lines != epoch || history.history.values().any(|values| values.len() != epoch) {
        return Err(bad(&format!("its history does not hold {epoch} epochs")));
    }
    if let Some(state) = model.optimizer_state() {
        let iterations = metadata
            .get("optimizer_iterations")
            .map_or(Ok(0), |n| n.parse());
        let iterations = iterations.map_err(|_| bad("bad \"optimizer_iterations\""))?;
        let restored = read_optimizer_state(&model, &state, &tensors, path)?;
        model.set_optimizer_state(OptimizerState {
            iterations,
            slots: restored,
        })?;
    }
    Ok((model, Checkpoint { epoch, history }))
}

/// Each slot of the optimizer's (fresh) `state`, read from the file: a
/// vector per parameter, or none if the run had not stepped yet.
fn read_optimizer_state(
    model: &Sequential,
    state: &OptimizerState,
    tensors: &SafeTensors,
    path: &Path,
) -> Result<Vec<(String, Vec<Vec<f32>>)>> {
    let params = model.named_params();
    state
        .slots
        .iter()
        .map(|(slot, _)| {
            let first = format!("optimizer.{slot}.{}", params.first().map_or("", |p| &p.0));
            if tensors.tensor(&first).is_err() {
                return Ok((slot.clone(), Vec::new()));
            }
            let vectors = params
                .iter()
                .map(|(name, p)| {
                    read_tensor(
                        tensors,
                        &format!("optimizer.{slot}.{name}"),
                        &[p.len()],
                        path,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((slot.clone(), vectors))
        })
        .collect()
}

/// The string metadata of the safetensors file `bytes`.
fn metadata(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
        Error::Data(format!(
            "{}: not a readable safetensors file ({e})",
            path.display()
        ))
    })?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some("convnet") {
        return Err(Error::Data(format!(
            "{}: not a convnet model file (its metadata has no \"format\": \"convnet\")",
            path.display()
        )));
    }
    let version = metadata.get("format_version").map(|v| v.parse::<u32>());
    match version {
        None => Err(Error::Data(format!(
            "{}: holds weights only, no architecture; build the model in code and call \
             load_weights",
            path.display()
        ))),
        Some(Ok(v)) if v <= FORMAT_VERSION => Ok(metadata),
        Some(Ok(v)) => Err(Error::Data(format!(
            "{}: was written by a newer convnet (format version {v}; this one reads up to \
             {FORMAT_VERSION}): upgrade convnet to read it",
            path.display()
        ))),
        Some(Err(_)) => Err(Error::Data(format!(
            "{}: its format version is not a number",
            path.display()
        ))),
    }
}

fn field<'a>(metadata: &'a HashMap<String, String>, key: &str, path: &Path) -> Result<&'a str> {
    metadata
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| Error::Data(format!("{}: its metadata has no {key:?}", path.display())))
}

/// An error unless the file holds every weight that `layer` (named
/// `name`) makes for inputs of `input_shape`, as `f32` in its shape:
/// checked from the file's header before the layer allocates anything.
fn layer_in_file(
    name: &str,
    layer: &dyn Layer,
    input_shape: &[usize],
    tensors: &SafeTensors,
    path: &Path,
) -> Result<()> {
    for (weight, shape) in layer.weight_shapes(input_shape) {
        let tensor = format!("{name}.{weight}");
        let found = tensors
            .tensor(&tensor)
            .map(|t| (t.dtype(), t.shape().to_vec()));
        let problem = match found {
            Ok((Dtype::F32, found)) if found == shape => continue,
            Ok((Dtype::F32, found)) => format!("holds {found:?}"),
            Ok((dtype, found)) => format!("holds {dtype:?} {found:?}, not F32"),
            Err(_) => "has no such tensor".into(),
        };
        return Err(Error::Data(format!(
            "{}: the architecture's {tensor} is F32 {shape:?} but the file {problem}; the \
             file is corrupt or was not written by convnet",
            path.display()
        )));
    }
    Ok(())
}

/// The model of a file's architecture, weights and compile config.
fn model_of(
    tensors: &SafeTensors,
    metadata: &HashMap<String, String>,
    path: &Path,
) -> Result<Sequential> {
    let in_file = |e: Error| Error::Data(format!("{}: {e}", path.display()));
    let mut model =
        Sequential::from_json(field(metadata, "architecture", path)?).map_err(in_file)?;
    model
        .build_checked(|name, layer, input| layer_in_file(name, layer, input, tensors, path))
        .map_err(|e| match e {
            Error::Data(_) => e,
            other => in_file(other),
        })?;
    if let Some(compile) = metadata.get("compile") {
        model.compile_from_json(compile).map_err(in_file)?;
    }
    set_weights(&mut model, tensors, path)?;
    let steps = field(metadata, "steps", path)?;
    let steps = steps
        .parse()
        .map_err(|_| in_file(Error::Data(format!("bad \"steps\" {steps:?}"))))?;
    model.set_steps(steps);
    if let Some(names) = metadata.get("class_names") {
        let names: Vec<String> = serde_json::from_str(names)
            .map_err(|e| in_file(Error::Data(format!("bad \"class_names\": {e}"))))?;
        model.set_class_names(names);
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::*;

    /// A model with a layer of every class, and the options that change
    /// which weights a layer has (no bias, no scale, no centre).
    fn every_class() -> Sequential {
        let mut model = Sequential::with_seed(1);
        model.add(RandomFlip::new(FlipMode::Horizontal).input_shape(&[12, 12, 3]));
        model.add(RandomTranslation::new(0.1, 0.1));
        model.add(RandomRotation::new(0.1));
        model.add(RandomZoom::new(0.1));
        model.add(Rescaling::new(0.5, 0.0));
        model.add(ZeroPadding2D::new(((1, 1), (1, 1))));
        model.add(Conv2D::new(4, (3, 3)));
        model.add(BatchNormalization::new());
        model.add(Conv2D::new(5, (2, 3)).use_bias(false));
        model.add(BatchNormalization::new().center(false).scale(false));
        model.add(ActivationLayer::new(crate::Activation::Relu));
        model.add(MaxPooling2D::new((2, 2)));
        model.add(AveragePooling2D::new((2, 2)));
        model.add(Reshape::new(&[Some(2), None, Some(5)]));
        model.add(Flatten::new());
        model.add(Dense::new(6).use_bias(false));
        model.add(BatchNormalization::new().center(false));
        model.add(Dropout::new(0.5));
        model.add(Dense::new(3));
        model
    }

    /// What `weight_shapes` announces is what `build` makes, for every
    /// layer class: the check of a model file relies on it.
    #[test]
    fn weight_shapes_are_the_weights_build_makes() {
        let mut pooled = Sequential::with_seed(1);
        pooled.add(Conv2D::new(2, (3, 3)).input_shape(&[9, 9, 1]));
        pooled.add(GlobalAveragePooling2D::new());
        pooled.add(Reshape::new(&[Some(1), Some(1), Some(2)]));
        pooled.add(GlobalMaxPooling2D::new());
        let models = [
            every_class(),
            pooled,
            crate::models::lenet(1),
            crate::models::vgg_small(1, [32, 32, 3], 10),
        ];
        for mut model in models {
            let mut announced = Vec::new();
            model
                .build_checked(|name, layer, input| {
                    let shapes = layer.weight_shapes(input).into_iter();
                    announced.extend(shapes.map(|(w, shape)| (format!("{name}.{w}"), shape)));
                    Ok(())
                })
                .unwrap();
            let made = weight_tensors(&model).into_iter();
            let mut made: Vec<_> = made.map(|(name, shape, _)| (name, shape)).collect();
            announced.sort();
            made.sort();
            assert!(!made.is_empty());
            assert_eq!(announced, made);
        }
    }
}
