//! Writes MNIST digits as an image folder, the layout `convnet train
//! --data-dir` and `datasets::image_folder` read: `DIR/train/<digit>/N.png`
//! and `DIR/test/<digit>/N.png`. A stand-in for a folder of your own
//! pictures.
//!
//! ```text
//! cargo run --release --example mnist_folder -- DIR [TRAIN [TEST]]
//! ```
//! (default: 6,000 training and 1,000 test digits, from the bundled MNIST).

use std::path::Path;

use convnet::datasets::mnist;
use image::GrayImage;
use ndarray::{Array1, Array3, Axis};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        return Err("usage: mnist_folder DIR [TRAIN [TEST]]".into());
    };
    let count = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|n| n.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let ((train_x, train_y), (test_x, test_y)) = mnist::load_data()?;
    let dir = Path::new(dir);
    write(&dir.join("train"), &train_x, &train_y, count(1, 6000)?)?;
    write(&dir.join("test"), &test_x, &test_y, count(2, 1000)?)?;
    println!("wrote {}/train and {}/test", dir.display(), dir.display());
    Ok(())
}

/// The first `n` digits as `folder/<digit>/<index>.png`.
fn write(
    folder: &Path,
    images: &Array3<u8>,
    labels: &Array1<u8>,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    for i in 0..n.min(labels.len()) {
        let class = folder.join(labels[i].to_string());
        std::fs::create_dir_all(&class)?;
        let pixels = images.index_axis(Axis(0), i).iter().copied().collect();
        let picture = GrayImage::from_raw(28, 28, pixels).ok_or("an MNIST picture is 28x28")?;
        picture.save(class.join(format!("{i}.png")))?;
    }
    Ok(())
}
