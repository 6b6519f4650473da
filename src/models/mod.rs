//! Ready-made models.

mod alexnet;
mod lenet;

pub use alexnet::alexnet;
pub use lenet::lenet;

use crate::{Error, Result, Sequential};

/// A ready-made model by name (`lenet`, `alexnet`), not yet compiled.
pub fn by_name(name: &str, seed: u64) -> Result<Sequential> {
    match name.to_ascii_lowercase().as_str() {
        "lenet" | "lenet5" | "lenet-5" => Ok(lenet(seed)),
        "alexnet" => Ok(alexnet(seed)),
        _ => Err(Error::InvalidArgument(format!(
            "unknown model {name:?}: use lenet or alexnet"
        ))),
    }
}
