//! Model weights in the safetensors format: one `f32` tensor per parameter
//! and per state buffer, named `<layer>.<param>` as Keras names them
//! (`conv2d.kernel`, `dense_2.bias`, `batch_normalization.moving_mean`),
//! little-endian, readable by PyTorch, JAX and friends. The same tensors
//! make up the weights of a one-file model ([`super::model_file`]).

use std::collections::HashMap;
use std::path::Path;

use ndarray::ArrayD;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::write_atomic;
use crate::{Error, Result, Sequential};

/// A tensor to write: name, shape, values.
pub(crate) type Tensor = (String, Vec<usize>, Vec<f32>);

/// Every tensor of the model's weights: the parameters, then the state.
pub(crate) fn weight_tensors(model: &Sequential) -> Vec<Tensor> {
    let params = model.named_params().into_iter().map(|(n, p)| (n, &p.value));
    let buffers = model
        .named_buffers()
        .into_iter()
        .map(|(n, b)| (n, &b.value));
    params
        .chain(buffers)
        .map(|(name, value)| {
            (
                name,
                value.shape().to_vec(),
                value.iter().copied().collect(),
            )
        })
        .collect()
}

/// The bytes of a safetensors file holding `tensors` and `metadata`.
pub(crate) fn encode(tensors: &[Tensor], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data).map_err(encoding)?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(encoding)
}

fn encoding(e: safetensors::SafeTensorError) -> Error {
    Error::Data(format!("cannot encode the weights: {e}"))
}

/// Writes every parameter and state buffer of `model` to `path` (atomically).
pub fn save_weights(model: &Sequential, path: &Path) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "convnet".to_string())]);
    write_atomic(path, &encode(&weight_tensors(model), metadata)?)
}

/// The tensors of the safetensors file `bytes` read from `path`.
pub(crate) fn decode<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| {
        Error::Data(format!(
            "{}: not a readable safetensors file ({e}); the file is corrupt, truncated or of \
             another format",
            path.display()
        ))
    })
}

/// The values of tensor `name`, which must be `f32` of `shape` and finite.
pub(crate) fn read_tensor(
    tensors: &SafeTensors,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> Result<Vec<f32>> {
    let tensor = tensors.tensor(name).map_err(|_| {
        Error::Shape(format!(
            "{}: has no tensor {name:?}; was it saved from another model?",
            path.display()
        ))
    })?;
    if tensor.dtype() != Dtype::F32 || tensor.shape() != shape {
        return Err(Error::Shape(format!(
            "{}: tensor {name:?} is {:?} {:?} but the model needs F32 {shape:?}",
            path.display(),
            tensor.dtype(),
            tensor.shape(),
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
    Ok(floats)
}

/// The largest weights or model file read: 1 GiB. A file announcing or
/// holding more is refused before it is read whole, so that a device
/// (`/dev/zero`) or a crafted file cannot take all memory.
pub const MAX_MODEL_FILE_BYTES: u64 = 1 << 30;

/// The largest safetensors header read (the `safetensors` crate's own).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The bytes of the weights or model file at `path`, read only as far as
/// [`MAX_MODEL_FILE_BYTES`] and a plausible safetensors header allow.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |e| Error::io(path, e);
    let too_big = |size: String| {
        Error::Data(format!(
            "{}: the file is {size}, over convnet's limit of {MAX_MODEL_FILE_BYTES} bytes for \
             a model or weights file; is it the right file?",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is a folder, not a model or weights file",
            path.display()
        )));
    }
    if meta.is_file() && meta.len() > MAX_MODEL_FILE_BYTES {
        return Err(too_big(format!("{} bytes", meta.len())));
    }
    let mut reader = std::io::BufReader::new(file).take(MAX_MODEL_FILE_BYTES + 1);
    let mut bytes = vec![0; 8];
    let got = read_up_to(&mut reader, &mut bytes).map_err(io)?;
    let header = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if got < 8 || header == 0 || header > MAX_HEADER_BYTES {
        return Err(Error::Data(format!(
            "{}: not a readable safetensors file (it does not start with a header size of 1 to \
             {MAX_HEADER_BYTES} bytes); the file is corrupt, truncated or of another format",
            path.display()
        )));
    }
    reader.read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_MODEL_FILE_BYTES {
        return Err(too_big("larger".into()));
    }
    Ok(bytes)
}

/// Fills `buf` from `reader` as far as it goes; the count read.
fn read_up_to(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads weights saved by [`save_weights`] into `model`, which must have
/// the same layers (names and shapes). Nothing is changed on error. Files
/// over [`MAX_MODEL_FILE_BYTES`] are refused.
pub fn load_weights(model: &mut Sequential, path: &Path) -> Result<()> {
    weights_from_bytes(model, &read_file(path)?, path)
}

/// [`load_weights`] from the bytes of a file (`path` names it in errors).
#[doc(hidden)]
pub fn weights_from_bytes(model: &mut Sequential, bytes: &[u8], path: &Path) -> Result<()> {
    set_weights(model, &decode(bytes, path)?, path)
}

/// Sets the model's parameters and state from `tensors` (of `path`),
/// checking every one first, so that a bad file changes nothing.
pub(crate) fn set_weights(
    model: &mut Sequential,
    tensors: &SafeTensors,
    path: &Path,
) -> Result<()> {
    let values = weight_tensors(model)
        .iter()
        .map(|(name, shape, _)| read_tensor(tensors, name, shape, path))
        .collect::<Result<Vec<_>>>()?;
    let mut values = values.into_iter();
    for param in model.params_mut() {
        copy_into(
            &mut param.value,
            &values.next().expect("a value per tensor"),
        );
    }
    for buffer in model.buffers_mut() {
        copy_into(
            &mut buffer.value,
            &values.next().expect("a value per tensor"),
        );
    }
    Ok(())
}

fn copy_into(target: &mut ArrayD<f32>, floats: &[f32]) {
    target
        .as_slice_mut()
        .expect("standard layout")
        .copy_from_slice(floats);
}
