//! AlexNet (Krizhevsky, Sutskever & Hinton, 2012) for 227x227x3 images and
//! 1,000 classes, in the single-tower form Keras lessons use.

use crate::layers::{Conv2D, Dense, Dropout, Flatten, MaxPooling2D, Padding};
use crate::{Activation::*, Sequential};

/// AlexNet: five convolutions, three max-poolings, three dense layers with
/// dropout; 62,378,344 parameters.
///
/// ```
/// let mut model = convnet::models::alexnet(1);
/// model.build().unwrap();
/// assert_eq!(model.count_params(), 62_378_344);
/// ```
pub fn alexnet(seed: u64) -> Sequential {
    alexnet_for(seed, [227, 227, 3], 1000)
}

/// AlexNet for images of `input_shape` (height, width, channels; at least
/// 67x67) and `classes` classes: the same layers, the first dense layer
/// sized to what the convolutions leave.
///
/// ```
/// let mut model = convnet::models::alexnet_for(1, [99, 99, 3], 5);
/// model.build().unwrap();
/// assert_eq!(model.output_shape(), [5]);
/// ```
pub fn alexnet_for(seed: u64, input_shape: [usize; 3], classes: usize) -> Sequential {
    let mut model = Sequential::with_seed(seed);
    model.add(
        Conv2D::new(96, (11, 11))
            .strides((4, 4))
            .activation(Relu)
            .input_shape(&input_shape),
    );
    model.add(MaxPooling2D::new((3, 3)).strides((2, 2)));
    model.add(
        Conv2D::new(256, (5, 5))
            .padding(Padding::Same)
            .activation(Relu),
    );
    model.add(MaxPooling2D::new((3, 3)).strides((2, 2)));
    model.add(
        Conv2D::new(384, (3, 3))
            .padding(Padding::Same)
            .activation(Relu),
    );
    model.add(
        Conv2D::new(384, (3, 3))
            .padding(Padding::Same)
            .activation(Relu),
    );
    model.add(
        Conv2D::new(256, (3, 3))
            .padding(Padding::Same)
            .activation(Relu),
    );
    model.add(MaxPooling2D::new((3, 3)).strides((2, 2)));
    model.add(Flatten::new());
    model.add(Dense::new(4096).activation(Relu));
    model.add(Dropout::new(0.5));
    model.add(Dense::new(4096).activation(Relu));
    model.add(Dropout::new(0.5));
    model.add(Dense::new(classes).activation(Softmax));
    model
}
