//! The confusion matrix as a heat map with counts.

use ndarray::Array2;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{RgbImage, SANS, render, text_width};
use crate::{Error, Result};

/// The side of one cell of [`confusion_matrix`]'s picture, in pixels.
pub const CONFUSION_CELL: u32 = 56;

/// Room left of and above the cells (class names and axis titles), and
/// below them (the most confused pairs).
const LEFT: u32 = 60;
const TOP: u32 = 110;
const BOTTOM: u32 = 70;
const RIGHT: u32 = 24;

/// The `n` most confused pairs of classes, off the diagonal: `(true
/// class, predicted class, count)`, the largest count first (ties: by
/// true, then predicted class); pairs never confused are left out.
///
/// ```
/// let cm = ndarray::array![[5, 2, 0], [0, 4, 3], [1, 0, 6]];
/// assert_eq!(convnet::plots::most_confused(&cm, 2), [(1, 2, 3), (0, 1, 2)]);
/// ```
pub fn most_confused(confusion: &Array2<usize>, n: usize) -> Vec<(usize, usize, usize)> {
    let mut pairs: Vec<(usize, usize, usize)> = confusion
        .indexed_iter()
        .filter(|&((t, p), &count)| t != p && count > 0)
        .map(|((t, p), &count)| (t, p, count))
        .collect();
    pairs.sort_by_key(|&(t, p, count)| (std::cmp::Reverse(count), t, p));
    pairs.truncate(n);
    pairs
}

/// The confusion matrix (rows: true class, columns: predicted class, as
/// [`crate::metrics::confusion_matrix`] gives it) as a heat map, each cell
/// with its count, each row shaded by the fraction of its class's samples
/// that went to each column; below, the three most confused pairs.
/// `class_names` name the classes (else their numbers).
///
/// The picture is `n · CONFUSION_CELL` plus margins wide and tall for
/// `n` classes (more room where class names are long).
///
/// ```
/// let cm = ndarray::array![[9, 1], [3, 7]];
/// let picture = convnet::plots::confusion_matrix(&cm, &["cat".into(), "dog".into()])?;
/// assert!(picture.width() > 2 * convnet::plots::CONFUSION_CELL);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn confusion_matrix(confusion: &Array2<usize>, class_names: &[String]) -> Result<RgbImage> {
    let n = confusion.nrows();
    if n == 0 || confusion.ncols() != n {
        return Err(Error::Shape(format!(
            "a confusion matrix must be square and not empty, got {:?}",
            confusion.shape()
        )));
    }
    let name = |class: usize| {
        class_names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    };
    let longest = (0..n).map(|c| text_width(&name(c), 16)).max().unwrap_or(0);
    let left = LEFT + longest + 12;
    let top = TOP + longest.saturating_sub(20);
    let cells = n as u32 * CONFUSION_CELL;
    let pairs = most_confused(confusion, 3);
    let pairs_text = if pairs.is_empty() {
        "No class was confused with another.".to_string()
    } else {
        let listed: Vec<String> = pairs
            .iter()
            .map(|&(t, p, count)| format!("{} taken for {} ({count})", name(t), name(p)))
            .collect();
        format!("Most confused: {}", listed.join(", "))
    };
    let width = (left + cells + RIGHT)
        .max(text_width(&pairs_text, 18) + 40)
        .max(420);
    let height = top + cells + BOTTOM;
    let total: usize = confusion.iter().sum();
    let correct: usize = (0..n).map(|i| confusion[[i, i]]).sum();
    render((width, height), |root| {
        let title = format!(
            "Confusion matrix: {correct} of {total} right ({:.1}%)",
            100.0 * correct as f64 / total.max(1) as f64
        );
        root.draw(&Text::new(
            title,
            (16, 12),
            (SANS, 24).into_font().color(&BLACK),
        ))?;
        let centred = |size: u32| {
            (SANS, size)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center))
        };
        let predicted = ("predicted class", ((left + cells / 2) as i32, 52));
        root.draw(&Text::new(predicted.0, predicted.1, centred(18)))?;
        let true_style = centred(18).transform(FontTransform::Rotate270);
        let true_at = (20, (top + cells / 2) as i32);
        root.draw(&Text::new("true class", true_at, true_style))?;
        for class in 0..n {
            let middle = (class as u32 * CONFUSION_CELL + CONFUSION_CELL / 2) as i32;
            // Column names read upwards when long, across when short.
            let column = if longest > CONFUSION_CELL - 8 {
                let style = (SANS, 16)
                    .into_font()
                    .color(&BLACK)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Left, VPos::Center));
                Text::new(name(class), (left as i32 + middle, top as i32 - 8), style)
            } else {
                let style = (SANS, 16)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom));
                Text::new(name(class), (left as i32 + middle, top as i32 - 8), style)
            };
            root.draw(&column)?;
            let row_style = (SANS, 16)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center));
            let row = Text::new(
                name(class),
                (left as i32 - 10, top as i32 + middle),
                row_style,
            );
            root.draw(&row)?;
        }
        for t in 0..n {
            let support = confusion.row(t).sum().max(1) as f64;
            for p in 0..n {
                let count = confusion[[t, p]];
                let fraction = count as f64 / support;
                let (x, y) = (
                    (left + p as u32 * CONFUSION_CELL) as i32,
                    (top + t as u32 * CONFUSION_CELL) as i32,
                );
                let side = CONFUSION_CELL as i32;
                let fill = shade(fraction, t == p);
                root.draw(&Rectangle::new(
                    [(x, y), (x + side, y + side)],
                    fill.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + side, y + side)],
                    RGBColor(200, 200, 200).stroke_width(1),
                ))?;
                let ink = if fraction > 0.5 { WHITE } else { BLACK };
                let style = (SANS, count_size(count))
                    .into_font()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                let centre = (x + side / 2, y + side / 2);
                root.draw(&Text::new(count.to_string(), centre, style))?;
            }
        }
        let at = (16, (top + cells + 24) as i32);
        root.draw(&Text::new(
            pairs_text.clone(),
            at,
            (SANS, 18).into_font().color(&BLACK),
        ))?;
        Ok(())
    })
}

/// A cell's colour: white to dark blue by the fraction of its row, right
/// answers (the diagonal) in blue, confusions in red.
fn shade(fraction: f64, diagonal: bool) -> RGBColor {
    let f = fraction.clamp(0.0, 1.0).sqrt();
    let (r, g, b) = if diagonal {
        (8.0, 48.0, 107.0)
    } else {
        (165.0, 15.0, 21.0)
    };
    let mix = |c: f64| (255.0 + (c - 255.0) * f).round() as u8;
    RGBColor(mix(r), mix(g), mix(b))
}

/// A text size that fits `count` in a cell.
fn count_size(count: usize) -> u32 {
    match count.to_string().len() {
        0..=3 => 18,
        4 => 15,
        5 => 12,
        _ => 10,
    }
}
