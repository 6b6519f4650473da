//! Turning a picture of a handwritten digit into the input MNIST itself
//! would have made of it.
//!
//! MNIST's digits (LeCun et al., 1998) are light ink on a black field: each
//! NIST digit was scaled to fit a 20x20 box, keeping its aspect ratio (the
//! anti-aliasing of that scaling gives the grey edges), then put into a 28x28
//! field so that its centre of mass sits at the centre. A model trained on
//! MNIST expects exactly that, so a photo or a drawing has to go through the
//! same steps: [`mnist_digit`].

use std::ops::Range;

use ndarray::{Array2, ArrayView2, s};

use crate::{Error, Result};

/// The side of an MNIST picture.
pub const MNIST_SIDE: usize = 28;

/// The side of the box MNIST scales each digit into.
const DIGIT_BOX: usize = 20;

/// Ink fainter than this fraction of the strongest ink is taken for noise.
const NOISE_FRACTION: f32 = 0.25;

/// A piece of ink with less than this fraction of the largest piece's ink
/// is a speck of dust, not part of the digit.
const SPECK_FRACTION: f32 = 0.05;

/// A picture whose ink differs from its background by less than this (on
/// the 0..1 grey scale) holds no digit.
const MIN_CONTRAST: f32 = 0.1;

/// The 28x28 MNIST input (ink 1, background 0) for a grey picture of one
/// digit, of any size, with values in `[0, 1]` (0 black, 1 white).
///
/// The steps, in order:
/// 1. **Ink and background.** The background is the median of the outer
///    frame of pixels; when it is light (above 0.5) the picture is dark ink
///    on light paper and is inverted. The background level is subtracted, so
///    grey paper counts as no ink, and the strongest ink is scaled to 1.
/// 2. **Noise.** Ink below a quarter of the strongest ink is set to 0. A
///    fixed fraction of the strongest stroke rather than an Otsu threshold:
///    Otsu splits any histogram in two, so on a clean drawing it cuts into
///    the anti-aliased edges MNIST keeps, while paper texture, JPEG ringing
///    and mild sensor noise stay far below a quarter of the contrast between
///    ink and paper.
/// 3. **Specks.** Pieces of ink (8-connected) with less than a twentieth of
///    the largest piece's ink are removed: a dot of dust far from the digit
///    would otherwise stretch the crop. The parts of a digit drawn in
///    separate strokes (the bar of a 5) are far larger than that.
/// 4. **Crop** to the bounding box of the remaining ink.
/// 5. **Scale** into a 20x20 box keeping the aspect ratio: area averaging
///    when shrinking (as MNIST's anti-aliased reduction), linear
///    interpolation when enlarging a small drawing.
/// 6. **Centre** in 28x28 so that the centre of mass lands on pixel
///    (14, 14) (row and column indices, to the nearest pixel): where it lies
///    in MNIST (the test set's mean is 14.01, 14.01).
///
/// Errors: an empty picture, a value that is not a grey level in `[0, 1]`
/// ([`Error::InvalidArgument`]), and a blank picture, with no ink that
/// stands out from the background ([`Error::Image`]).
///
/// ```
/// use convnet::preprocess::mnist_digit;
/// use ndarray::{Array2, s};
///
/// // A dark "1" drawn on white paper, 60 pixels tall.
/// let mut paper = Array2::<f32>::ones((80, 50));
/// paper.slice_mut(s![10..70, 20..26]).fill(0.0);
/// let digit = mnist_digit(paper.view())?;
/// assert_eq!(digit.dim(), (28, 28));
/// // Light ink on black, 20 pixels tall, centred.
/// assert!(digit[[14, 14]] > 0.99);
/// assert_eq!(digit[[0, 0]], 0.0);
/// assert_eq!(digit.column(14).iter().filter(|&&v| v > 0.0).count(), 20);
/// # Ok::<(), convnet::Error>(())
/// ```
pub fn mnist_digit(grey: ArrayView2<f32>) -> Result<Array2<f32>> {
    check_grey(grey)?;
    let mut ink = ink(grey)?;
    remove_specks(&mut ink);
    let (rows, cols) = ink_bounds(&ink);
    let digit = ink.slice(s![rows, cols]);
    let (height, width) = digit.dim();
    let scale = DIGIT_BOX as f64 / height.max(width) as f64;
    let fitted = |side: usize| ((side as f64 * scale).round() as usize).clamp(1, DIGIT_BOX);
    let scaled = resize(digit, fitted(height), fitted(width));
    Ok(centre_by_mass(&scaled, MNIST_SIDE))
}

/// Refuses empty pictures and values that are not grey levels.
fn check_grey(grey: ArrayView2<f32>) -> Result<()> {
    if grey.is_empty() {
        let (height, width) = grey.dim();
        return Err(Error::InvalidArgument(format!(
            "the picture is empty ({width}x{height} pixels)"
        )));
    }
    match grey.indexed_iter().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
        Some(((row, col), v)) => Err(Error::InvalidArgument(format!(
            "grey levels must lie in [0, 1]; the pixel at row {row}, column {col} is {v}"
        ))),
        None => Ok(()),
    }
}

/// Ink as MNIST has it: background 0, the strongest ink 1, noise removed.
fn ink(grey: ArrayView2<f32>) -> Result<Array2<f32>> {
    let background = median(outer_frame(grey));
    // Dark ink on light paper is the usual drawing; MNIST is the reverse.
    let light_paper = background > 0.5;
    let ink = grey.mapv(|v| {
        let contrast = if light_paper {
            background - v
        } else {
            v - background
        };
        contrast.max(0.0)
    });
    let strongest = ink.fold(0.0f32, |m, &v| m.max(v));
    if strongest < MIN_CONTRAST {
        return Err(Error::Image(format!(
            "no digit found: the picture is blank (no pixel differs from the \
             background by {MIN_CONTRAST} or more of the grey range)"
        )));
    }
    Ok(ink.mapv(|v| {
        let v = v / strongest;
        if v < NOISE_FRACTION { 0.0 } else { v }
    }))
}

/// Sets to 0 the pieces of ink with less than [`SPECK_FRACTION`] of the
/// largest piece's ink.
fn remove_specks(ink: &mut Array2<f32>) {
    let mut seen = Array2::from_elem(ink.dim(), false);
    let mut pieces = Vec::new();
    for (start, &v) in ink.indexed_iter() {
        if v > 0.0 && !seen[start] {
            pieces.push(piece_at(ink, &mut seen, start));
        }
    }
    let mass = |piece: &Vec<(usize, usize)>| piece.iter().map(|&p| ink[p]).sum::<f32>();
    let largest = pieces.iter().map(mass).fold(0.0, f32::max);
    let specks: Vec<_> = pieces
        .into_iter()
        .filter(|piece| mass(piece) < SPECK_FRACTION * largest)
        .collect();
    for pixel in specks.into_iter().flatten() {
        ink[pixel] = 0.0;
    }
}

/// The pixels of the piece of ink that holds `start` (pixels with ink
/// touching by a side or a corner), each marked as `seen`.
fn piece_at(
    ink: &Array2<f32>,
    seen: &mut Array2<bool>,
    start: (usize, usize),
) -> Vec<(usize, usize)> {
    let (height, width) = ink.dim();
    let mut piece = Vec::new();
    let mut stack = vec![start];
    seen[start] = true;
    while let Some((r, c)) = stack.pop() {
        piece.push((r, c));
        for nr in r.saturating_sub(1)..(r + 2).min(height) {
            for nc in c.saturating_sub(1)..(c + 2).min(width) {
                if ink[[nr, nc]] > 0.0 && !seen[[nr, nc]] {
                    seen[[nr, nc]] = true;
                    stack.push((nr, nc));
                }
            }
        }
    }
    piece
}

/// The pixels of the picture's outermost rows and columns.
fn outer_frame(grey: ArrayView2<f32>) -> Vec<f32> {
    let (height, width) = grey.dim();
    grey.indexed_iter()
        .filter(|((r, c), _)| *r == 0 || *c == 0 || *r + 1 == height || *c + 1 == width)
        .map(|(_, &v)| v)
        .collect()
}

/// The median of finite values (the upper one of an even count).
fn median(mut values: Vec<f32>) -> f32 {
    values.sort_by(f32::total_cmp);
    values[values.len() / 2]
}

/// The rows and columns that hold ink (there is some: `ink` checked).
fn ink_bounds(ink: &Array2<f32>) -> (Range<usize>, Range<usize>) {
    let span = |has_ink: Vec<bool>| {
        let first = has_ink.iter().position(|&b| b).unwrap_or(0);
        let last = has_ink.iter().rposition(|&b| b).unwrap_or(0);
        first..last + 1
    };
    let rows = ink.rows().into_iter().map(|r| r.iter().any(|&v| v > 0.0));
    let cols = ink
        .columns()
        .into_iter()
        .map(|c| c.iter().any(|&v| v > 0.0));
    (span(rows.collect()), span(cols.collect()))
}

/// `picture` resampled to `height` x `width`.
fn resize(picture: ArrayView2<f32>, height: usize, width: usize) -> Array2<f32> {
    let rows = axis_weights(picture.nrows(), height);
    let cols = axis_weights(picture.ncols(), width);
    Array2::from_shape_fn((height, width), |(y, x)| {
        let row = |sy: usize| -> f32 { cols[x].iter().map(|&(sx, w)| w * picture[[sy, sx]]).sum() };
        // Rounding can leave a weighted sum of ones a hair above 1.
        rows[y]
            .iter()
            .map(|&(sy, w)| w * row(sy))
            .sum::<f32>()
            .min(1.0)
    })
}

/// For each of `to` output pixels along an axis, the source pixels of the
/// `from` input pixels it is made of, with weights summing to 1: the
/// fraction of the output pixel each covers when shrinking (area
/// averaging), linear interpolation between pixel centres otherwise.
fn axis_weights(from: usize, to: usize) -> Vec<Vec<(usize, f32)>> {
    let step = from as f64 / to as f64;
    (0..to)
        .map(|i| {
            if to < from {
                let (start, end) = (i as f64 * step, (i + 1) as f64 * step);
                (start.floor() as usize..(end.ceil() as usize).min(from))
                    .map(|j| {
                        let covered = end.min(j as f64 + 1.0) - start.max(j as f64);
                        (j, (covered / step) as f32)
                    })
                    .collect()
            } else {
                let centre = ((i as f64 + 0.5) * step - 0.5).clamp(0.0, (from - 1) as f64);
                let (left, t) = (centre.floor() as usize, centre.fract());
                let right = (left + 1).min(from - 1);
                vec![(left, (1.0 - t) as f32), (right, t as f32)]
            }
        })
        .collect()
}

/// `digit` pasted into a `side` x `side` field with its centre of mass on
/// pixel (side / 2, side / 2), to the nearest whole pixel (a fractional
/// shift would blur it), and never cut off at an edge.
fn centre_by_mass(digit: &Array2<f32>, side: usize) -> Array2<f32> {
    let mass: f32 = digit.sum();
    let (mut row_moment, mut col_moment) = (0.0f32, 0.0f32);
    for ((r, c), &v) in digit.indexed_iter() {
        row_moment += r as f32 * v;
        col_moment += c as f32 * v;
    }
    let offset = |moment: f32, len: usize| {
        let wanted = (side as f32 / 2.0 - moment / mass).round();
        wanted.clamp(0.0, (side - len) as f32) as usize
    };
    let (height, width) = digit.dim();
    let (top, left) = (offset(row_moment, height), offset(col_moment, width));
    let mut field = Array2::zeros((side, side));
    field
        .slice_mut(s![top..top + height, left..left + width])
        .assign(digit);
    field
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "7"-like stroke, light ink on black, with anti-aliased grey edges:
    /// a bar on top and a slanted stroke down from its right end.
    fn seven(height: usize, width: usize, top: usize, left: usize) -> Array2<f32> {
        let mut picture = Array2::zeros((height, width));
        for r in 0..40 {
            for c in 0..30 {
                let bar = if r < 6 { 1.0 } else { 0.0 };
                let diagonal_col = 28.0 - r as f32 * 0.45;
                let distance = (c as f32 - diagonal_col).abs();
                let stroke = (3.5 - distance).clamp(0.0, 1.0);
                picture[[top + r, left + c]] = f32::max(bar, stroke);
            }
        }
        picture
    }

    fn centre_of_mass(picture: &Array2<f32>) -> (f32, f32) {
        let mass = picture.sum();
        let (mut row, mut col) = (0.0, 0.0);
        for ((r, c), &v) in picture.indexed_iter() {
            row += r as f32 * v;
            col += c as f32 * v;
        }
        (row / mass, col / mass)
    }

    fn bounding_box(picture: &Array2<f32>) -> (usize, usize) {
        let (rows, cols) = ink_bounds(picture);
        (rows.len(), cols.len())
    }

    #[test]
    fn light_and_dark_backgrounds_give_the_same_digit() {
        let dark = seven(60, 50, 10, 10);
        let light = dark.mapv(|v| 1.0 - v);
        let from_dark = mnist_digit(dark.view()).unwrap();
        let from_light = mnist_digit(light.view()).unwrap();
        assert!(from_dark.iter().any(|&v| v > 0.5));
        for (a, b) in from_dark.iter().zip(&from_light) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn grey_paper_counts_as_background() {
        let dark = seven(60, 50, 10, 10);
        let on_white = mnist_digit(dark.mapv(|v| 1.0 - v).view()).unwrap();
        let on_grey = mnist_digit(dark.mapv(|v| 0.8 - 0.7 * v).view()).unwrap();
        for (a, b) in on_white.iter().zip(&on_grey) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn off_centre_digits_are_centred_by_their_mass() {
        for (top, left) in [(0, 0), (55, 2), (3, 165), (58, 168)] {
            let digit = mnist_digit(seven(100, 200, top, left).view()).unwrap();
            let (row, col) = centre_of_mass(&digit);
            assert!((row - 14.0).abs() <= 0.5, "row {row} from ({top}, {left})");
            assert!(
                (col - 14.0).abs() <= 0.5,
                "column {col} from ({top}, {left})"
            );
        }
    }

    #[test]
    fn the_aspect_ratio_is_kept() {
        // A bar 10 tall and 40 wide becomes 5 by 20; a 30 by 12 one 20 by 8.
        let mut wide = Array2::zeros((50, 60));
        wide.slice_mut(s![20..30, 10..50]).fill(1.0);
        assert_eq!(bounding_box(&mnist_digit(wide.view()).unwrap()), (5, 20));
        let mut tall = Array2::zeros((50, 60));
        tall.slice_mut(s![10..40, 20..32]).fill(1.0);
        assert_eq!(bounding_box(&mnist_digit(tall.view()).unwrap()), (20, 8));
    }

    #[test]
    fn small_drawings_are_enlarged_to_twenty_pixels() {
        let mut small = Array2::zeros((30, 30));
        small.slice_mut(s![10..20, 12..17]).fill(1.0);
        let digit = mnist_digit(small.view()).unwrap();
        assert_eq!(bounding_box(&digit), (20, 10));
    }

    #[test]
    fn output_values_lie_between_zero_and_one() {
        let picture = seven(45, 90, 2, 40).mapv(|v| 0.9 - 0.9 * v);
        let digit = mnist_digit(picture.view()).unwrap();
        assert!(digit.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(digit.fold(0.0f32, |m, &v| m.max(v)) > 0.99);
    }

    #[test]
    fn faint_noise_is_removed() {
        let clean = seven(60, 50, 10, 10);
        // A deterministic speckle of up to 0.15 over the whole picture.
        let noisy = Array2::from_shape_fn(clean.dim(), |(r, c)| {
            let speckle = ((r * 7 + c * 13) % 10) as f32 * 0.015;
            (clean[[r, c]] + speckle).min(1.0)
        });
        let from_clean = mnist_digit(clean.view()).unwrap();
        let from_noisy = mnist_digit(noisy.view()).unwrap();
        assert_eq!(bounding_box(&from_noisy), bounding_box(&from_clean));
        let difference: f32 = (&from_noisy - &from_clean).mapv(f32::abs).sum();
        assert!(difference < 0.05 * from_clean.sum(), "{difference}");
    }

    #[test]
    fn specks_of_dust_do_not_move_the_digit() {
        let clean = seven(100, 120, 10, 10);
        let mut dusty = clean.clone();
        dusty.slice_mut(s![90..93, 110..113]).fill(1.0);
        dusty[[3, 100]] = 0.8;
        let expected = mnist_digit(clean.view()).unwrap();
        assert_eq!(mnist_digit(dusty.view()).unwrap(), expected);
        // A second stroke of fair size is part of the digit and stays.
        let mut two_strokes = clean;
        two_strokes.slice_mut(s![60..64, 10..30]).fill(1.0);
        assert_ne!(mnist_digit(two_strokes.view()).unwrap(), expected);
    }

    #[test]
    fn an_mnist_digit_comes_back_nearly_unchanged() {
        // Already 20 pixels tall and centred: only the noise cut differs.
        let digit = mnist_digit(seven(50, 40, 5, 5).view()).unwrap();
        let again = mnist_digit(digit.view()).unwrap();
        let difference: f32 = (&again - &digit).mapv(f32::abs).sum();
        assert!(difference < 0.02 * digit.sum(), "{difference}");
    }

    #[test]
    fn blank_empty_and_invalid_pictures_are_refused() {
        let message = |p: Array2<f32>| mnist_digit(p.view()).unwrap_err().to_string();
        assert!(message(Array2::ones((20, 20))).contains("blank"));
        let faint = Array2::from_shape_fn((20, 20), |(r, c)| 0.5 + ((r + c) % 2) as f32 * 0.05);
        assert!(message(faint).contains("blank"));
        assert!(message(Array2::zeros((0, 5))).contains("empty (5x0 pixels)"));
        let mut bad = Array2::zeros((4, 4));
        bad[[1, 2]] = f32::NAN;
        assert!(message(bad.clone()).contains("row 1, column 2 is NaN"));
        bad[[1, 2]] = 255.0;
        assert!(message(bad).contains("[0, 1]"));
    }

    #[test]
    fn area_weights_cover_each_output_pixel_once() {
        for (from, to) in [(7, 3), (100, 20), (20, 20), (5, 20), (1, 4)] {
            for weights in axis_weights(from, to) {
                let total: f32 = weights.iter().map(|w| w.1).sum();
                assert!((total - 1.0).abs() < 1e-5, "{from}->{to}: {weights:?}");
                assert!(weights.iter().all(|&(j, w)| j < from && w >= 0.0));
            }
        }
    }
}
