//! LeNet-5 (LeCun et al., 1998) as the classic Keras lesson writes it: two
//! convolution + max-pooling stages, then three fully connected layers.

use crate::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use crate::{Activation::*, Sequential};

/// LeNet-5 for 28x28x1 images and 10 classes: 44,426 parameters.
///
/// ```
/// let mut model = convnet::models::lenet(1);
/// model.build().unwrap();
/// assert_eq!(model.count_params(), 44_426);
/// ```
pub fn lenet(seed: u64) -> Sequential {
    lenet_for(seed, [28, 28, 1], 10)
}

/// LeNet-5 for images of `input_shape` (height, width, channels; at
/// least 16x16) and `classes` classes: the same layers, the first dense
/// layer sized to what the convolutions leave.
///
/// ```
/// let mut model = convnet::models::lenet_for(1, [32, 32, 3], 4);
/// model.build().unwrap();
/// assert_eq!(model.output_shape(), [4]);
/// ```
pub fn lenet_for(seed: u64, input_shape: [usize; 3], classes: usize) -> Sequential {
    let mut model = Sequential::with_seed(seed);
    model.add(
        Conv2D::new(6, (5, 5))
            .activation(Relu)
            .input_shape(&input_shape),
    );
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Conv2D::new(16, (5, 5)).activation(Relu));
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Flatten::new());
    model.add(Dense::new(120).activation(Relu));
    model.add(Dense::new(84).activation(Relu));
    model.add(Dense::new(classes).activation(Softmax));
    model
}
