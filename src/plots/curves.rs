//! Line charts: training curves per epoch, and the activation functions
//! with their derivatives.

use plotters::prelude::*;

use super::{Drawn, SANS, render};
use crate::{Activation, Error, History, Result};

/// The size of [`training_curves`]'s picture, `(width, height)`.
pub const CURVES_SIZE: (u32, u32) = (1200, 480);

/// The size of [`activations`]'s picture, `(width, height)`.
pub const ACTIVATIONS_SIZE: (u32, u32) = (1200, 440);

/// Training's blue and validation's orange (matplotlib's first two).
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);

/// The loss and, where it was measured, the accuracy, per epoch, for the
/// training data and (where there was some) the validation data: one
/// panel each, [`CURVES_SIZE`] in all. Epochs are counted from 1.
///
/// An error if the history has no loss.
pub fn training_curves(history: &History) -> Result<RgbImage> {
    let loss = history.history.get("loss").filter(|l| !l.is_empty());
    let loss = loss.ok_or_else(|| {
        Error::InvalidArgument("the history has no loss to plot: train for an epoch first".into())
    })?;
    let epochs = loss.len();
    let series = |name: &str| history.history.get(name).map(Vec::as_slice);
    let mut panels = vec![("loss", series("loss"), series("val_loss"))];
    if series("accuracy").is_some() {
        panels.push(("accuracy", series("accuracy"), series("val_accuracy")));
    }
    render(CURVES_SIZE, |root| {
        let areas = root.split_evenly((1, panels.len()));
        for (area, (name, train, validation)) in areas.iter().zip(&panels) {
            let lines = [
                ("training", *train, TRAIN),
                ("validation", *validation, VALIDATION),
            ];
            let present: Vec<_> = lines
                .into_iter()
                .filter_map(|(label, values, colour)| values.map(|v| (label, v, colour)))
                .collect();
            curve_panel(area, name, epochs, &present)?;
        }
        Ok(())
    })
}

/// One panel of [`training_curves`]: `lines` of `(label, per-epoch values,
/// colour)` over `epochs` epochs.
fn curve_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    name: &str,
    epochs: usize,
    lines: &[(&str, &[f64], RGBColor)],
) -> Drawn {
    let finite = lines
        .iter()
        .flat_map(|l| l.1.iter())
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let y_range = if name == "accuracy" {
        (lo - pad).max(0.0)..(hi + pad).min(1.0)
    } else {
        (lo - pad).max(0.0)..hi + pad
    };
    let x_range = 0.75..epochs as f64 + 0.25;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{name} per epoch"), (SANS, 26))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(name)
        .x_labels(epochs.min(10) + 1)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round())
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style((SANS, 16))
        .axis_desc_style((SANS, 18))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for &(label, values, colour) in lines {
        let points: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as f64 + 1.0, v))
            .collect();
        chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))?;
        chart
            .draw_series(PointSeries::of_element(points, 5, colour, &|c, s, st| {
                Circle::new(c, s, st.filled())
            }))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(if name == "accuracy" {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .label_font((SANS, 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Sigmoid, tanh and ReLU, each with its derivative, on [-5, 5]: three
/// panels, [`ACTIVATIONS_SIZE`] in all. The values are the library's own
/// ([`Activation::forward`] and [`Activation::backward`]).
pub fn activations() -> Result<RgbImage> {
    let xs: Vec<f32> = (0..=400).map(|i| -5.0 + i as f32 / 40.0).collect();
    let functions = [Activation::Sigmoid, Activation::Tanh, Activation::Relu];
    render(ACTIVATIONS_SIZE, |root| {
        let areas = root.split_evenly((1, functions.len()));
        for (area, &activation) in areas.iter().zip(&functions) {
            let mut y = xs.clone();
            activation.forward(&mut y, xs.len());
            let mut dy = vec![1.0f32; xs.len()];
            activation.backward(&y, &mut dy, xs.len());
            activation_panel(area, activation.name(), &xs, (&y, &dy))?;
        }
        Ok(())
    })
}

/// One panel of [`activations`].
fn activation_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    name: &str,
    xs: &[f32],
    (y, dy): (&[f32], &[f32]),
) -> Drawn {
    let top = y.iter().chain(dy).fold(1.0f32, |m, &v| m.max(v));
    let bottom = y.iter().chain(dy).fold(0.0f32, |m, &v| m.min(v));
    let mut chart = ChartBuilder::on(area)
        .caption(name, (SANS, 26))
        .margin(18)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-5.0f32..5.0, (bottom - 0.15)..(top + 0.15).min(5.2))?;
    chart
        .configure_mesh()
        .x_desc("x")
        .x_label_formatter(&|x| format!("{}", x.round() + 0.0))
        .y_label_formatter(&|y| format!("{:.1}", (y * 10.0).round() / 10.0 + 0.0))
        .label_style((SANS, 16))
        .axis_desc_style((SANS, 18))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let derivative = format!("{name}'(x)");
    let curves = [
        (format!("{name}(x)"), y, TRAIN),
        (derivative, dy, VALIDATION),
    ];
    for (label, values, colour) in curves {
        let points = xs.iter().copied().zip(values.iter().copied());
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(3)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((SANS, 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

use super::RgbImage;
