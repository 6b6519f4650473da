//! Pictures of training and of what a network learned (feature `plots`,
//! on by default with the command line): training curves, the confusion
//! matrix, misclassified images, a convolution's kernels, the feature
//! maps an image produces in each layer, the activation functions, and a
//! self-contained HTML [report] holding them.
//!
//! Every picture is drawn in memory into an [`RgbImage`], with the
//! `plotters` crate and a font embedded in the library (DejaVu Sans), so
//! nothing is needed from the system; [`save_png`] writes one atomically.
//!
//! ```
//! use convnet::{History, plots};
//!
//! let mut history = History::default();
//! history.history.insert("loss".into(), vec![0.9, 0.5, 0.3]);
//! history.history.insert("val_loss".into(), vec![1.0, 0.6, 0.5]);
//! let picture = plots::training_curves(&history)?;
//! assert_eq!(picture.dimensions(), (plots::CURVES_SIZE.0, plots::CURVES_SIZE.1));
//! let png = plots::png_bytes(&picture)?;
//! assert!(png.starts_with(b"\x89PNG"));
//! # Ok::<(), convnet::Error>(())
//! ```

mod confusion;
mod curves;
pub mod report;
mod sheet;

pub use confusion::{CONFUSION_CELL, confusion_matrix, most_confused};
pub use curves::{ACTIVATIONS_SIZE, CURVES_SIZE, activations, training_curves};
pub use image::RgbImage;
pub use sheet::{
    FeatureMapOptions, MISCLASSIFIED_TILE, feature_maps, kernels, misclassified,
    worst_misclassified,
};

use std::path::Path;
use std::sync::Once;

use plotters::backend::BitMapBackend;
use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, IntoDrawingArea};
use plotters::style::FontStyle;

use crate::{Error, Result};

/// The font of every picture's text, registered with `plotters` as its
/// sans-serif family.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The font family the pictures name.
const SANS: &str = "sans-serif";

/// The widest or tallest picture drawn (pixels), against absurd sizes.
const MAX_SIDE: u32 = 16_384;

/// Registers [`FONT`] once.
fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font(SANS, style, FONT).is_err() {
                result = Err(Error::Image("the embedded font cannot be read".into()));
            }
        }
    });
    result
}

/// An error from drawing, as the library's.
fn drawing(e: impl std::fmt::Display) -> Error {
    Error::Image(format!("cannot draw the picture: {e}"))
}

/// What a drawing step returns.
type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// A white `width` x `height` picture with `draw` run on it.
fn render(
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Drawn,
) -> Result<RgbImage> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(Error::InvalidArgument(format!(
            "a picture of {width}x{height} pixels cannot be drawn (at most {MAX_SIDE} a side)"
        )));
    }
    register_font()?;
    let mut buffer = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        draw(&root).map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    RgbImage::from_raw(width, height, buffer)
        .ok_or_else(|| Error::Image("the picture's buffer has the wrong size".into()))
}

/// `picture` encoded as PNG.
pub fn png_bytes(picture: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| Error::Image(format!("cannot encode the picture as PNG: {e}")))?;
    Ok(bytes.into_inner())
}

/// Writes `picture` to `path` as PNG, atomically: if anything fails,
/// there is no partial file.
pub fn save_png(picture: &RgbImage, path: impl AsRef<Path>) -> Result<()> {
    crate::io::write_atomic(path.as_ref(), &png_bytes(picture)?)
}

/// Text width in pixels of `text` at `size` points, roughly (DejaVu Sans
/// averages about 0.6 of the size per character).
fn text_width(text: &str, size: u32) -> u32 {
    (text.chars().count() as u32 * size * 6).div_ceil(10)
}
