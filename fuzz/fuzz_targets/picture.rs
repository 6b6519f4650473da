//! Picture decoding (PNG, JPEG, BMP, held to convnet's limits) and the
//! digit preprocessing of `convnet predict` (`preprocess::mnist_digit`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ndarray::Array2;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    if first & 1 == 0 {
        if let Ok(picture) = convnet::datasets::image_folder::decode_picture_bytes(rest) {
            let _ = picture.to_luma8();
        }
        return;
    }
    // A grey picture of up to 128 columns, values from the bytes.
    let width = usize::from(first >> 1).max(1);
    let height = rest.len() / width;
    let values = rest[..height * width].iter().map(|&b| f32::from(b) / 255.0);
    let grey = Array2::from_shape_vec((height, width), values.collect()).expect("sized");
    let _ = convnet::preprocess::mnist_digit(grey.view());
});
