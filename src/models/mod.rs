//! Ready-made models.

mod alexnet;
mod cifar10_cnn;
mod lenet;
mod vgg_small;

pub use alexnet::{alexnet, alexnet_for};
pub use cifar10_cnn::cifar10_cnn;
pub use lenet::{lenet, lenet_for};
pub use vgg_small::vgg_small;

use crate::{Error, Result, Sequential};

/// The names [`by_name`] knows, in the order error messages list them.
pub const NAMES: [&str; 4] = ["lenet", "alexnet", "cifar10-cnn", "vgg-small"];

/// A ready-made model by name (`lenet`, `alexnet`, `cifar10-cnn`, `vgg-small`), for its
/// usual input and classes ([`default_input`]; 10 classes, 1,000 for
/// AlexNet), not yet compiled.
pub fn by_name(name: &str, seed: u64) -> Result<Sequential> {
    let input = default_input(name)?;
    let classes = if canonical(name)? == "alexnet" {
        1000
    } else {
        10
    };
    by_name_for(name, seed, input, classes)
}

/// A ready-made model by name for images of `input_shape` (height,
/// width, channels) and `classes` classes, not yet compiled.
///
/// ```
/// let mut model = convnet::models::by_name_for("vgg-small", 1, [28, 28, 1], 3)?;
/// model.build()?;
/// assert_eq!(model.output_shape(), [3]);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn by_name_for(
    name: &str,
    seed: u64,
    input_shape: [usize; 3],
    classes: usize,
) -> Result<Sequential> {
    Ok(match canonical(name)? {
        "lenet" => lenet_for(seed, input_shape, classes),
        "alexnet" => alexnet_for(seed, input_shape, classes),
        "cifar10-cnn" => cifar10_cnn(seed, input_shape, classes),
        _ => vgg_small(seed, input_shape, classes),
    })
}

/// The input shape a ready-made model is made for: 28x28x1 for LeNet
/// (MNIST), 227x227x3 for AlexNet, 32x32x3 for cifar10-cnn and vgg-small
/// (CIFAR-10).
pub fn default_input(name: &str) -> Result<[usize; 3]> {
    Ok(match canonical(name)? {
        "lenet" => [28, 28, 1],
        "alexnet" => [227, 227, 3],
        _ => [32, 32, 3],
    })
}

/// The name of `name` among [`NAMES`] (aliases: lenet5, lenet-5, cifar10_cnn,
/// vgg_small).
fn canonical(name: &str) -> Result<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "lenet" | "lenet5" | "lenet-5" => Ok("lenet"),
        "alexnet" => Ok("alexnet"),
        "cifar10-cnn" | "cifar10_cnn" | "cifar10cnn" => Ok("cifar10-cnn"),
        "vgg-small" | "vgg_small" | "vggsmall" => Ok("vgg-small"),
        _ => Err(Error::InvalidArgument(format!(
            "unknown model {name:?}: use {}",
            NAMES.join(", ")
        ))),
    }
}
