//! Model weights in the safetensors format: one `f32` tensor per parameter
//! and per state buffer, named `<layer>.<param>` as Keras names them
//! (`conv2d.kernel`, `dense_2.bias`, `batch_normalization.moving_mean`),
//! little-endian, readable by PyTorch, JAX and friends.

use std::collections::HashMap;
use std::path::Path;

use ndarray::ArrayD;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::write_atomic;
use crate::{Error, Result, Sequential};

/// Every tensor a weights file holds: the parameters, then the state.
fn named_tensors(model: &Sequential) -> Vec<(String, &ArrayD<f32>)> {
    let params = model.named_params().into_iter().map(|(n, p)| (n, &p.value));
    let buffers = model
        .named_buffers()
        .into_iter()
        .map(|(n, b)| (n, &b.value));
    params.chain(buffers).collect()
}

/// Writes every parameter and state buffer of `model` to `path` (atomically).
pub fn save_weights(model: &Sequential, path: &Path) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = named_tensors(model)
        .into_iter()
        .map(|(name, value)| {
            let data = value.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, value.shape().to_vec(), data)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data).map_err(encoding)?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "convnet".to_string())]);
    let file = safetensors::serialize(views, Some(metadata)).map_err(encoding)?;
    write_atomic(path, &file)
}

fn encoding(e: safetensors::SafeTensorError) -> Error {
    Error::Data(format!("cannot encode the weights: {e}"))
}

/// Reads weights saved by [`save_weights`] into `model`, which must have
/// the same layers (names and shapes). Nothing is changed on error.
pub fn load_weights(model: &mut Sequential, path: &Path) -> Result<()> {
    let file = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let tensors = SafeTensors::deserialize(&file).map_err(|e| {
        Error::Data(format!(
            "{}: not a readable safetensors weights file ({e}); the file is corrupt or of \
             another format",
            path.display()
        ))
    })?;
    // Check everything first, so that a bad file leaves the model untouched.
    let mut values = Vec::new();
    for (name, value) in named_tensors(model) {
        let tensor = tensors.tensor(&name).map_err(|_| {
            Error::Shape(format!(
                "{}: has no tensor {name:?}; were these weights saved from another model?",
                path.display()
            ))
        })?;
        if tensor.dtype() != Dtype::F32 || tensor.shape() != value.shape() {
            return Err(Error::Shape(format!(
                "{}: tensor {name:?} is {:?} {:?} but the model needs F32 {:?}",
                path.display(),
                tensor.dtype(),
                tensor.shape(),
                value.shape()
            )));
        }
        let floats: Vec<f32> = tensor
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        if let Some(bad) = floats.iter().find(|v| !v.is_finite()) {
            return Err(Error::Data(format!(
                "{}: tensor {name:?} holds {bad}, not a finite number",
                path.display()
            )));
        }
        values.push(floats);
    }
    let params = model.params_mut().into_iter().map(|p| &mut p.value);
    let targets: Vec<&mut ArrayD<f32>> = params.collect();
    let mut values = values.into_iter();
    for (target, floats) in targets.into_iter().zip(values.by_ref()) {
        target
            .as_slice_mut()
            .expect("standard layout")
            .copy_from_slice(&floats);
    }
    for (buffer, floats) in model.buffers_mut().into_iter().zip(values) {
        buffer
            .value
            .as_slice_mut()
            .expect("standard layout")
            .copy_from_slice(&floats);
    }
    Ok(())
}
