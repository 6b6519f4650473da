//! Sheets of small pictures with captions, in labelled sections:
//! misclassified images, a convolution's kernels, feature maps.

use image::imageops::{self, FilterType};
use ndarray::{ArrayD, ArrayView2, ArrayView3, Axis, Ix4};
use plotters::prelude::*;

use super::{RgbImage, SANS, render, text_width};
use crate::data::Samples;
use crate::metrics::argmax;
use crate::{Error, Result, Sequential};

/// The side (pixels) each misclassified image is shown at, about.
pub const MISCLASSIFIED_TILE: u32 = 84;

/// Space around the sheet, between tiles, and the text sizes.
const MARGIN: u32 = 16;
const GAP: u32 = 10;
const TITLE: u32 = 24;
const HEADING: u32 = 18;
const CAPTION: u32 = 14;

/// A small picture with caption lines under it.
struct Tile {
    image: RgbImage,
    caption: Vec<String>,
}

/// A heading and its tiles, `columns` to a row at most.
struct Section {
    heading: String,
    tiles: Vec<Tile>,
    columns: usize,
}

impl Section {
    /// The size of one cell (tile, caption and gap).
    fn cell(&self) -> (u32, u32) {
        let width = self.tiles.iter().map(|t| {
            let caption = t.caption.iter().map(|c| text_width(c, CAPTION));
            caption.max().unwrap_or(0).max(t.image.width())
        });
        let height = self
            .tiles
            .iter()
            .map(|t| t.image.height() + t.caption.len() as u32 * (CAPTION + 4));
        (
            width.max().unwrap_or(0) + GAP,
            height.max().unwrap_or(0) + GAP,
        )
    }

    fn rows(&self) -> usize {
        self.tiles.len().div_ceil(self.columns.max(1))
    }

    fn size(&self) -> (u32, u32) {
        let (w, h) = self.cell();
        let columns = self.tiles.len().min(self.columns.max(1)) as u32;
        let heading = text_width(&self.heading, HEADING);
        (
            (columns * w).max(heading),
            HEADING + 12 + self.rows() as u32 * h,
        )
    }
}

/// The sheet: a title, then each section under the one before.
fn sheet(title: &str, sections: &[Section]) -> Result<RgbImage> {
    let widths = sections.iter().map(|s| s.size().0);
    let width = widths.max().unwrap_or(0).max(text_width(title, TITLE)) + 2 * MARGIN;
    let heights: u32 = sections.iter().map(|s| s.size().1 + GAP).sum();
    let height = MARGIN + TITLE + 14 + heights + MARGIN;
    // Where each section's tiles go, worked out once for text and pixels.
    let mut placed = Vec::new();
    let mut y = MARGIN + TITLE + 14;
    for section in sections {
        let (cell_w, cell_h) = section.cell();
        let top = y + HEADING + 12;
        for (i, tile) in section.tiles.iter().enumerate() {
            let (row, column) = (i / section.columns.max(1), i % section.columns.max(1));
            let x = MARGIN + column as u32 * cell_w;
            placed.push((tile, x, top + row as u32 * cell_h));
        }
        y += section.size().1 + GAP;
    }
    let mut picture = render((width, height), |root| {
        let font = |size: u32| (SANS, size).into_font().color(&BLACK);
        root.draw(&Text::new(
            title.to_string(),
            (MARGIN as i32, MARGIN as i32),
            font(TITLE),
        ))?;
        let mut y = MARGIN + TITLE + 14;
        for section in sections {
            let at = (MARGIN as i32, y as i32);
            root.draw(&Text::new(section.heading.clone(), at, font(HEADING)))?;
            y += section.size().1 + GAP;
        }
        for (tile, x, y) in &placed {
            for (line, text) in tile.caption.iter().enumerate() {
                let at = (
                    *x as i32,
                    (y + tile.image.height() + 3 + line as u32 * (CAPTION + 4)) as i32,
                );
                root.draw(&Text::new(text.clone(), at, font(CAPTION)))?;
            }
        }
        Ok(())
    })?;
    for (tile, x, y) in placed {
        imageops::replace(&mut picture, &tile.image, i64::from(x), i64::from(y));
    }
    Ok(picture)
}

/// `pixels` (height, width, 1 or 3 channels) of RGB bytes, scaled up
/// `scale` times (each pixel a square).
fn tile_image(pixels: &ArrayView3<u8>, scale: u32) -> RgbImage {
    let (h, w, c) = pixels.dim();
    let image = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        match c {
            3 => image::Rgb([pixels[[y, x, 0]], pixels[[y, x, 1]], pixels[[y, x, 2]]]),
            _ => image::Rgb([pixels[[y, x, 0]]; 3]),
        }
    });
    let scale = scale.max(1);
    imageops::resize(
        &image,
        w as u32 * scale,
        h as u32 * scale,
        FilterType::Nearest,
    )
}

/// A picture's values in [0, 1] as bytes.
fn bytes(values: ArrayView3<f32>) -> ndarray::Array3<u8> {
    values.mapv(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
}

/// A probability as a whole percentage, never a misleading "100%".
fn percent(p: f32) -> String {
    if p >= 0.995 {
        ">99%".to_string()
    } else {
        format!("{:.0}%", p * 100.0)
    }
}

/// The integer scale that shows a `side`-pixel picture at about `target`.
fn scale_for(side: usize, target: u32) -> u32 {
    (target / side.max(1) as u32).max(1)
}

/// The indices of the misclassified samples, the most confidently wrong
/// first: `(sample, true class, predicted class, predicted probability)`,
/// at most `count` of them. `predictions` holds one row of class scores
/// per sample, `labels` the true classes.
///
/// ```
/// let p = ndarray::array![[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]];
/// let worst = convnet::plots::worst_misclassified(p.view(), &[1, 1, 0], 5)?;
/// assert_eq!(worst, [(0, 1, 0, 0.9), (2, 0, 1, 0.6)]);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn worst_misclassified(
    predictions: ArrayView2<f32>,
    labels: &[usize],
    count: usize,
) -> Result<Vec<(usize, usize, usize, f32)>> {
    if predictions.nrows() != labels.len() {
        return Err(Error::Shape(format!(
            "{} predictions but {} labels",
            predictions.nrows(),
            labels.len()
        )));
    }
    let mut wrong: Vec<(usize, usize, usize, f32)> = predictions
        .rows()
        .into_iter()
        .zip(labels)
        .enumerate()
        .filter_map(|(i, (row, &label))| {
            let row = row.to_vec();
            let predicted = argmax(&row);
            (predicted != label).then(|| (i, label, predicted, row[predicted]))
        })
        .collect();
    wrong.sort_by(|a, b| b.3.total_cmp(&a.3).then(a.0.cmp(&b.0)));
    wrong.truncate(count);
    Ok(wrong)
}

/// A grid of the `count` most confidently misclassified samples of `x`
/// (pictures of shape `(h, w, 1 or 3)`, values in [0, 1]), each captioned
/// with its true and predicted class and the predicted probability,
/// [`MISCLASSIFIED_TILE`] pixels a side about, ten to a row.
/// `predictions` are the model's outputs for `x` and `labels` the true
/// classes; `class_names` name the classes (else their numbers).
pub fn misclassified(
    x: &dyn Samples,
    predictions: ArrayView2<f32>,
    labels: &[usize],
    class_names: &[String],
    count: usize,
) -> Result<RgbImage> {
    let shape = x.sample_shape();
    let &[h, w, c] = shape.as_slice() else {
        return Err(Error::Shape(format!(
            "misclassified images must be pictures (height, width, channels), got samples of \
             shape {shape:?}"
        )));
    };
    if !matches!(c, 1 | 3) || x.len() != labels.len() {
        return Err(Error::Shape(format!(
            "misclassified: {} samples of shape {shape:?} (1 or 3 channels) for {} labels",
            x.len(),
            labels.len()
        )));
    }
    let worst = worst_misclassified(predictions, labels, count)?;
    let name = |class: usize| {
        class_names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    };
    let mut values = vec![0.0f32; h * w * c];
    let mut tiles = Vec::with_capacity(worst.len());
    for &(i, truth, predicted, p) in &worst {
        x.gather(&[i], &mut values)?;
        let sample = ArrayView3::from_shape((h, w, c), &values).expect("sizes match");
        tiles.push(Tile {
            image: tile_image(
                &bytes(sample).view(),
                scale_for(h.max(w), MISCLASSIFIED_TILE),
            ),
            caption: vec![
                format!("true: {}", name(truth)),
                format!("said: {} ({})", name(predicted), percent(p)),
            ],
        });
    }
    let wrong = predictions
        .rows()
        .into_iter()
        .zip(labels)
        .filter(|(row, label)| argmax(&row.to_vec()) != **label)
        .count();
    let heading = if worst.is_empty() {
        "Every image was classified right.".to_string()
    } else {
        format!(
            "The {} most confident mistakes, of {wrong} in {} images",
            worst.len(),
            labels.len()
        )
    };
    let section = Section {
        heading,
        tiles,
        columns: 10,
    };
    sheet("Misclassified images", &[section])
}

/// The kernel of the model's first convolution and its layer's name.
fn first_kernel(model: &Sequential) -> Result<(String, &ArrayD<f32>)> {
    let names = model.layer_names();
    model
        .layers()
        .zip(names)
        .find_map(|(layer, name)| {
            let kernel = layer.params().into_iter().find(|p| p.name == "kernel")?;
            (kernel.value.ndim() == 4).then(|| (name.to_string(), &kernel.value))
        })
        .ok_or_else(|| {
            Error::InvalidArgument("the model has no convolution whose kernels to show".into())
        })
}

/// The tiles of a convolution kernel `(kh, kw, in, out)`: per filter an
/// RGB picture for 3 input channels, else one per filter and input
/// channel (at most `limit`); weights shown red when positive, blue when
/// negative, white at 0, scaled by the largest magnitude.
fn kernel_tiles(kernel: &ArrayD<f32>, target: u32, limit: usize) -> Result<Vec<Tile>> {
    let kernel = kernel
        .view()
        .into_dimensionality::<Ix4>()
        .map_err(|_| Error::Shape(format!("a kernel of shape {:?}", kernel.shape())))?;
    let (kh, kw, inputs, filters) = kernel.dim();
    let largest = kernel.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    let scale = scale_for(kh.max(kw), target);
    let mut tiles = Vec::new();
    for f in 0..filters {
        let filter = kernel.index_axis(Axis(3), f);
        if inputs == 3 {
            let rgb = filter.mapv(|v| v / (2.0 * largest) + 0.5);
            tiles.push(Tile {
                image: tile_image(&bytes(rgb.view()).view(), scale),
                caption: vec![format!("filter {f}")],
            });
            continue;
        }
        for i in 0..inputs {
            let weights = filter.index_axis(Axis(2), i);
            let image = RgbImage::from_fn(kw as u32, kh as u32, |x, y| {
                diverging(weights[[y as usize, x as usize]] / largest)
            });
            let image = imageops::resize(
                &image,
                kw as u32 * scale,
                kh as u32 * scale,
                FilterType::Nearest,
            );
            let caption = match inputs {
                1 => format!("filter {f}"),
                _ => format!("{f}, input {i}"),
            };
            tiles.push(Tile {
                image,
                caption: vec![caption],
            });
            if tiles.len() == limit {
                return Ok(tiles);
            }
        }
    }
    Ok(tiles)
}

/// Blue for -1, white for 0, red for 1.
fn diverging(v: f32) -> image::Rgb<u8> {
    let v = v.clamp(-1.0, 1.0);
    let towards = |from: f32, to: f32, t: f32| (from + (to - from) * t).round() as u8;
    let (target, t) = if v >= 0.0 {
        ([178.0, 24.0, 43.0], v)
    } else {
        ([33.0, 102.0, 172.0], -v)
    };
    image::Rgb(target.map(|c| towards(255.0, c, t)))
}

/// The section of the first convolution's kernels.
fn kernel_section(model: &Sequential, target: u32) -> Result<Section> {
    let (name, kernel) = first_kernel(model)?;
    let shape = kernel.shape().to_vec();
    let tiles = kernel_tiles(kernel, target, 256)?;
    let heading = format!(
        "{name}: {} kernels of {}x{}x{} (red: positive weight, blue: negative)",
        shape[3], shape[0], shape[1], shape[2]
    );
    Ok(Section {
        heading,
        tiles,
        columns: 16,
    })
}

/// The first convolution's kernels, each filter a small picture (red for
/// positive weights, blue for negative, white for 0; an RGB picture for a
/// colour input): what each filter looks for.
///
/// ```
/// let mut model = convnet::models::lenet(1);
/// model.build()?;
/// let picture = convnet::plots::kernels(&model)?;
/// assert!(picture.width() > 6 * 60);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn kernels(model: &Sequential) -> Result<RgbImage> {
    sheet("First-layer kernels", &[kernel_section(model, 60)?])
}

/// What [`feature_maps`] shows.
#[derive(Clone, Debug, Default)]
pub struct FeatureMapOptions {
    /// Only this layer's maps, larger (default: the first convolution's
    /// kernels, the input, and every layer whose output is a picture).
    pub layer: Option<String>,
    /// Caption of the input picture (e.g. its file name).
    pub input_name: Option<String>,
}

/// The feature maps `image` (height, width, channels, as the model takes
/// it) produces in each layer of `model` whose output is a picture
/// (convolutions, pooling, activations, normalisation), each channel a
/// grey picture (black: the layer's lowest value, white: its highest),
/// labelled by layer; above them, the first convolution's kernels and the
/// input. Layers that leave their input as it is at inference (random
/// augmentation, dropout) are left out.
///
/// With [`FeatureMapOptions::layer`], only that layer, at a larger scale;
/// a name that is not a layer is an error that lists the names.
///
/// ```
/// let mut model = convnet::models::lenet(1);
/// model.build()?;
/// let image = ndarray::Array3::<f32>::zeros((28, 28, 1));
/// let picture = convnet::plots::feature_maps(&model, image.view(), &Default::default())?;
/// assert!(picture.height() > 300);
/// let one = convnet::plots::FeatureMapOptions { layer: Some("nope".into()), ..Default::default() };
/// let error = convnet::plots::feature_maps(&model, image.view(), &one).unwrap_err();
/// assert!(error.to_string().contains("conv2d"));
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn feature_maps(
    model: &Sequential,
    image: ArrayView3<f32>,
    options: &FeatureMapOptions,
) -> Result<RgbImage> {
    let names = model.layer_names();
    if let Some(layer) = &options.layer
        && !names.contains(&layer.as_str())
    {
        return Err(Error::InvalidArgument(format!(
            "the model has no layer {layer:?}; its layers are {}",
            names.join(", ")
        )));
    }
    let batch = image.insert_axis(Axis(0));
    let maps = model.feature_maps(&batch)?;
    let classes: Vec<String> = model.layers().map(|l| l.class_name().to_string()).collect();
    let mut sections = Vec::new();
    let input_name = options.input_name.as_deref().unwrap_or("input");
    let (h, w, c) = image.dim();
    let pictured = |map: &ArrayD<f32>| map.ndim() == 4;
    let input = image.mapv(|v| v.clamp(0.0, 1.0));
    let shown = if matches!(c, 1 | 3) {
        tile_image(&bytes(input.view()).view(), scale_for(h.max(w), 96))
    } else {
        channel_tile(input.index_axis(Axis(2), 0), (0.0, 1.0), 96)
    };
    let input_section = Section {
        heading: format!("{input_name} ({h}x{w}x{c})"),
        tiles: vec![Tile {
            image: shown,
            caption: Vec::new(),
        }],
        columns: 1,
    };
    let Some(layer) = &options.layer else {
        if let Ok(section) = kernel_section(model, 60) {
            sections.push(section);
        }
        sections.push(input_section);
        let mut previous: ArrayD<f32> = batch.to_owned().into_dyn();
        for ((name, map), class) in maps.iter().zip(&classes) {
            if pictured(map) && *map != previous {
                sections.push(map_section(name, class, map, 72, 64)?);
            }
            previous = map.clone();
        }
        let title = "Feature maps, layer by layer";
        return sheet(title, &sections);
    };
    let i = names
        .iter()
        .position(|n| n == layer)
        .expect("checked above");
    let map = &maps[i].1;
    if !pictured(map) {
        return Err(Error::InvalidArgument(format!(
            "layer {layer:?} ({}) outputs {:?} values per sample, not maps; layers with maps: {}",
            classes[i],
            &map.shape()[1..],
            names
                .iter()
                .zip(&maps)
                .filter(|(_, (_, m))| pictured(m))
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    sections.push(input_section);
    sections.push(map_section(layer, &classes[i], map, 160, 256)?);
    sheet(
        &format!("Feature maps of {layer} for {input_name}"),
        &sections,
    )
}

/// One layer's maps `(1, h, w, channels)`: a grey tile per channel (the
/// first `limit`), about `target` pixels a side.
fn map_section(
    name: &str,
    class: &str,
    map: &ArrayD<f32>,
    target: u32,
    limit: usize,
) -> Result<Section> {
    let map = map
        .view()
        .into_dimensionality::<Ix4>()
        .map_err(|_| Error::Shape(format!("{name}: maps of shape {:?}", map.shape())))?;
    let map = map.index_axis(Axis(0), 0);
    let (h, w, channels) = map.dim();
    let lo = map.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = map.iter().fold(lo, |m, &v| m.max(v));
    let shown = channels.min(limit);
    let tiles = (0..shown)
        .map(|k| Tile {
            image: channel_tile(map.index_axis(Axis(2), k), (lo, hi), target),
            caption: vec![k.to_string()],
        })
        .collect();
    let mut heading = format!("{name} ({class}): {channels} maps of {h}x{w}");
    if shown < channels {
        heading += &format!(", the first {shown} shown");
    }
    Ok(Section {
        heading,
        tiles,
        columns: 16,
    })
}

/// One channel as grey levels from `lo` (black) to `hi` (white).
fn channel_tile(channel: ArrayView2<f32>, (lo, hi): (f32, f32), target: u32) -> RgbImage {
    let span = (hi - lo).max(1e-12);
    let grey = channel.mapv(|v| ((v - lo) / span).clamp(0.0, 1.0));
    let grey = grey.insert_axis(Axis(2));
    let (h, w, _) = grey.dim();
    tile_image(&bytes(grey.view()).view(), scale_for(h.max(w), target))
}
