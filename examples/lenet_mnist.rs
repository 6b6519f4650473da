//! The classic Keras LeNet-5 program, line for line, in Rust.
//!
//! Run: `cargo run --release --example lenet_mnist`

use convnet::datasets::{mnist, to_categorical};
use convnet::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use convnet::optimizers::Adam;
use convnet::{Activation::*, Fit, Loss::CategoricalCrossentropy, Metric::Accuracy, Sequential};
use ndarray::Axis;

fn main() -> convnet::Result<()> {
    let ((train_x, train_y), (test_x, test_y)) = mnist::load_data()?;
    // reshape(-1, 28, 28, 1) / 255
    let train_x = train_x.insert_axis(Axis(3)).mapv(|v| v as f32 / 255.0);
    let test_x = test_x.insert_axis(Axis(3)).mapv(|v| v as f32 / 255.0);
    let train_y = to_categorical(&train_y, 10)?;
    let test_y = to_categorical(&test_y, 10)?;

    let mut model = Sequential::new();
    model.add(
        Conv2D::new(6, (5, 5))
            .activation(Relu)
            .input_shape(&[28, 28, 1]),
    );
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Conv2D::new(16, (5, 5)).activation(Relu));
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Flatten::new());
    model.add(Dense::new(120).activation(Relu));
    model.add(Dense::new(84).activation(Relu));
    model.add(Dense::new(10).activation(Softmax));
    model.compile(CategoricalCrossentropy, Adam::default(), &[Accuracy])?;
    model.fit(
        &train_x,
        &train_y,
        Fit {
            batch_size: 128,
            epochs: 2,
            verbose: 1,
            validation_data: Some((&test_x, &test_y)),
            ..Fit::default()
        },
    )?;
    let score = model.evaluate(&test_x, &test_y)?;
    println!("Test loss: {:.4}", score.loss);
    println!("Test accuracy: {:.4}", score.accuracy().unwrap_or(0.0));
    Ok(())
}
