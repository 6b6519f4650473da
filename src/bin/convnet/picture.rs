//! Reading pictures, for the subcommands that take one (convolve, predict).

use std::io::ErrorKind;
use std::path::Path;

use convnet::datasets::image_folder::{self, ColorMode};
use convnet::{Error, Result};
use image::DynamicImage;
use ndarray::{Array2, Array3};

use super::train_data::PIXEL_SCALE;

/// Reads a PNG or JPEG (recognised by its contents, whatever its name) as
/// grey levels 0..255 with the BT.601 luma weights, rounded to whole levels
/// as OpenCV's grayscale read does. Transparent pixels are laid on white,
/// as a viewer shows them: a drawing on a transparent canvas is dark ink on
/// light paper, not ink on black.
pub fn read_grey(path: &Path) -> Result<Array2<f64>> {
    let rgba = decode(path)?.to_rgba8();
    let (width, height) = rgba.dimensions();
    Ok(Array2::from_shape_fn(
        (height as usize, width as usize),
        |(y, x)| {
            let [r, g, b, a] = rgba.get_pixel(x as u32, y as u32).0.map(f64::from);
            let on_white = |c: f64| (c * a + 255.0 * (255.0 - a)) / 255.0;
            (0.299 * on_white(r) + 0.587 * on_white(g) + 0.114 * on_white(b)).round()
        },
    ))
}

/// The picture at `path` as training on an image folder reads it:
/// converted to `mode`, resized to `(height, width)`, pixels / 255.
pub fn read_resized(
    path: &Path,
    (height, width): (usize, usize),
    mode: ColorMode,
) -> Result<Array3<f32>> {
    Ok(sample(&decode(path)?, (height, width), mode))
}

/// The picture at `path` in its own size, converted to `mode`, pixels / 255.
pub fn read_as(path: &Path, mode: ColorMode) -> Result<Array3<f32>> {
    let picture = decode(path)?;
    let size = (picture.height() as usize, picture.width() as usize);
    Ok(sample(&picture, size, mode))
}

/// `picture` as a model input of `(height, width)`, as image folders make them.
fn sample(picture: &DynamicImage, (height, width): (usize, usize), mode: ColorMode) -> Array3<f32> {
    let mut sample = Array3::zeros((height, width, mode.channels()));
    let out = sample.as_slice_mut().expect("a new array is contiguous");
    image_folder::picture_sample(picture, (height, width, mode), PIXEL_SCALE, out);
    sample
}

fn decode(path: &Path) -> Result<DynamicImage> {
    let unreadable = |problem: String| {
        Error::Image(format!(
            "{}: cannot read this image ({problem}); convnet reads PNG, JPEG and BMP files",
            path.display()
        ))
    };
    let size = std::fs::metadata(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => Error::InvalidArgument(format!(
            "the image {} does not exist; check the path",
            path.display()
        )),
        _ => Error::io(path, source),
    })?;
    if size.len() == 0 {
        return Err(unreadable("the file is empty".into()));
    }
    image_folder::decode_picture(path).map_err(unreadable)
}
