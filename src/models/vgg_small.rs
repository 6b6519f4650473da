//! A small VGG-style network for 32x32 colour pictures (CIFAR-10's size):
//! two blocks of two 3x3 convolutions, each followed by batch
//! normalization and relu, then 2x2 max pooling; global average pooling
//! and one dense softmax layer. Its convolutions have no bias, as the
//! batch normalization after them shifts their output anyway.
//!
//! The moving statistics follow the batches with momentum 0.9 (PyTorch's
//! default, momentum=0.1 in its terms), not Keras's 0.99: over the few
//! thousand steps of a small run, Keras's lag so far behind the weights
//! that inference scores swing (measured on 6,000 MNIST pictures, 5
//! epochs: 79% at inference against 98% in training, 96% once the
//! statistics caught up).

use crate::layers::{
    ActivationLayer, BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, MaxPooling2D,
    Padding,
};
use crate::{Activation::*, Sequential};

/// The momentum of the BatchNormalization layers' moving statistics.
const MOMENTUM: f32 = 0.9;

/// The filters of each block's convolutions.
const BLOCKS: [usize; 2] = [32, 64];

/// The VGG-style network for images of `input_shape` (height, width,
/// channels; at least 4x4) and `classes` classes. Global average pooling
/// makes it take any picture size with the same weights: 66,410
/// trainable parameters for 3 channels and 10 classes, plus 384 moving
/// statistics of BatchNormalization (Keras's summary counts 66,794).
///
/// ```
/// let mut model = convnet::models::vgg_small(1, [32, 32, 3], 10);
/// model.build().unwrap();
/// assert_eq!(model.count_params(), 66_410);
/// assert_eq!(model.count_non_trainable(), 384);
/// ```
pub fn vgg_small(seed: u64, input_shape: [usize; 3], classes: usize) -> Sequential {
    let mut model = Sequential::with_seed(seed);
    for (block, filters) in BLOCKS.into_iter().enumerate() {
        for conv in 0..2 {
            let layer = Conv2D::new(filters, (3, 3))
                .padding(Padding::Same)
                .use_bias(false);
            if block == 0 && conv == 0 {
                model.add(layer.input_shape(&input_shape));
            } else {
                model.add(layer);
            }
            model.add(BatchNormalization::new().momentum(MOMENTUM));
            model.add(ActivationLayer::new(Relu));
        }
        model.add(MaxPooling2D::new((2, 2)));
    }
    model.add(GlobalAveragePooling2D::new());
    model.add(Dense::new(classes).activation(Softmax));
    model
}
