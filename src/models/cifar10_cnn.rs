//! The convolutional network of Keras's `cifar10_cnn` example for 32x32
//! colour pictures: two blocks of two 3x3 convolutions (32, then 64
//! filters; the first of each block padded "same") with relu and 2x2 max
//! pooling, then a dense layer of 512 and the softmax classifier.
//!
//! The example's Dropout layers are left out: this is the layout the
//! framework comparison (`compare/`) times in every framework, where
//! dropout would only add noise.

use crate::layers::{Conv2D, Dense, Flatten, MaxPooling2D, Padding};
use crate::{Activation::*, Sequential};

/// The cifar10_cnn network for images of `input_shape` (height, width,
/// channels; at least 10x10) and `classes` classes: 1,250,858 parameters
/// for 32x32x3 and 10 classes, as Keras's summary counts them.
///
/// ```
/// let mut model = convnet::models::cifar10_cnn(1, [32, 32, 3], 10);
/// model.build().unwrap();
/// assert_eq!(model.count_params(), 1_250_858);
/// ```
pub fn cifar10_cnn(seed: u64, input_shape: [usize; 3], classes: usize) -> Sequential {
    let mut model = Sequential::with_seed(seed);
    for (block, filters) in [32, 64].into_iter().enumerate() {
        let mut same = Conv2D::new(filters, (3, 3))
            .padding(Padding::Same)
            .activation(Relu);
        if block == 0 {
            same = same.input_shape(&input_shape);
        }
        model.add(same);
        model.add(Conv2D::new(filters, (3, 3)).activation(Relu));
        model.add(MaxPooling2D::new((2, 2)));
    }
    model.add(Flatten::new());
    model.add(Dense::new(512).activation(Relu));
    model.add(Dense::new(classes).activation(Softmax));
    model
}
