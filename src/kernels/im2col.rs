//! Sliding-window geometry, and im2col/col2im for NHWC images.
//!
//! im2col turns a convolution into one matrix product: each output pixel gets
//! a row holding the `k_h x k_w x channels` input values under the window, in
//! the same order as a Keras kernel `(k_h, k_w, in_channels, filters)` is laid
//! out, so `rows · kernel` is the convolution, already in NHWC order.

use super::copy_short;
use crate::{Error, Result};

/// How a window treats the border, with the names and meaning of Keras.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding: windows only where they fit entirely inside the input.
    #[default]
    Valid,
    /// Pad with zeros so that the output has `ceil(input / stride)` pixels per
    /// axis; the extra pixel of an odd padding goes at the bottom/right, as in
    /// TensorFlow.
    Same,
}

impl Padding {
    /// The Keras name: `"valid"` or `"same"`.
    pub fn name(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
        }
    }
}

impl std::str::FromStr for Padding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            _ => Err(Error::InvalidArgument(format!(
                "unknown padding {s:?}: use \"valid\" or \"same\""
            ))),
        }
    }
}

/// Where a `k_h x k_w` window with a given stride and padding lands on an
/// `in_h x in_w x channels` image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window2d {
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Channels (the last, fastest axis).
    pub channels: usize,
    /// Window height.
    pub k_h: usize,
    /// Window width.
    pub k_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Rows between the window's taps (1: adjacent; Keras `dilation_rate`).
    pub dilation_h: usize,
    /// Columns between the window's taps.
    pub dilation_w: usize,
    /// Zero rows added above the input.
    pub pad_top: usize,
    /// Zero columns added left of the input.
    pub pad_left: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

/// `(output length, padding before)`, or `None` when the sizes overflow.
fn output_len(
    input: usize,
    window: usize,
    stride: usize,
    padding: Padding,
) -> Option<(usize, usize)> {
    match padding {
        Padding::Valid => Some(((input - window) / stride + 1, 0)),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let covered = (out - 1).checked_mul(stride)?.checked_add(window)?;
            Some((out, covered.saturating_sub(input) / 2))
        }
    }
}

impl Window2d {
    /// The geometry of a window sliding over an image of shape
    /// `(in_h, in_w, channels)`; an error if the window does not fit.
    pub fn new(
        input: (usize, usize, usize),
        window: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Self> {
        Self::dilated(input, window, strides, (1, 1), padding)
    }

    /// [`Window2d::new`] with `dilation` (rows, columns) between the
    /// window's taps: a `k`-tap window then spans `(k - 1) · dilation + 1`
    /// pixels, which is what the output size and "same" padding follow.
    pub fn dilated(
        input: (usize, usize, usize),
        window: (usize, usize),
        strides: (usize, usize),
        dilation: (usize, usize),
        padding: Padding,
    ) -> Result<Self> {
        let (in_h, in_w, channels) = input;
        let (k_h, k_w) = window;
        if k_h == 0 || k_w == 0 || strides.0 == 0 || strides.1 == 0 {
            return Err(Error::InvalidArgument(format!(
                "window {k_h}x{k_w} with strides {strides:?}: sizes and strides must be at least 1"
            )));
        }
        if dilation.0 == 0 || dilation.1 == 0 {
            return Err(Error::InvalidArgument(format!(
                "dilation rate {dilation:?}: must be at least 1"
            )));
        }
        let span = |k: usize, d: usize| (k - 1).checked_mul(d).and_then(|s| s.checked_add(1));
        let (Some(span_h), Some(span_w)) = (span(k_h, dilation.0), span(k_w, dilation.1)) else {
            return Err(Error::InvalidArgument(format!(
                "a {k_h}x{k_w} window with dilation rate {dilation:?} is too large"
            )));
        };
        if padding == Padding::Valid && (span_h > in_h || span_w > in_w) {
            return Err(Error::Shape(format!(
                "a {k_h}x{k_w} window (spanning {span_h}x{span_w}) does not fit in a \
                 {in_h}x{in_w} input with padding \"valid\"; \
                 use a smaller window or padding \"same\""
            )));
        }
        if in_h == 0 || in_w == 0 || channels == 0 {
            return Err(Error::Shape(format!(
                "input of shape ({in_h}, {in_w}, {channels}) is empty"
            )));
        }
        let too_large = || {
            Error::InvalidArgument(format!(
                "a {k_h}x{k_w} window with strides {strides:?} is too large for a {in_h}x{in_w} input"
            ))
        };
        let (out_h, pad_top) =
            output_len(in_h, span_h, strides.0, padding).ok_or_else(too_large)?;
        let (out_w, pad_left) =
            output_len(in_w, span_w, strides.1, padding).ok_or_else(too_large)?;
        Ok(Window2d {
            in_h,
            in_w,
            channels,
            k_h,
            k_w,
            stride_h: strides.0,
            stride_w: strides.1,
            dilation_h: dilation.0,
            dilation_w: dilation.1,
            pad_top,
            pad_left,
            out_h,
            out_w,
        })
    }

    /// Values in one input image.
    pub fn in_len(&self) -> usize {
        self.in_h * self.in_w * self.channels
    }

    /// Output pixels per image (rows of the im2col matrix per image).
    pub fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Values under one window (columns of the im2col matrix).
    pub fn patch_len(&self) -> usize {
        self.k_h * self.k_w * self.channels
    }

    /// Whether the taps are spread out (a dilation rate above 1), which
    /// only im2col and col2im handle: every other kernel needs adjacent taps.
    pub fn is_dilated(&self) -> bool {
        self.dilation_h > 1 || self.dilation_w > 1
    }

    /// Pixels the window spans, (rows, columns).
    fn span(&self) -> (usize, usize) {
        (
            (self.k_h - 1) * self.dilation_h + 1,
            (self.k_w - 1) * self.dilation_w + 1,
        )
    }

    /// Whether every window lies inside the image (no padding reaches it).
    pub fn windows_inside(&self) -> bool {
        let (span_h, span_w) = self.span();
        self.pad_top == 0
            && self.pad_left == 0
            && (self.out_h - 1) * self.stride_h + span_h <= self.in_h
            && (self.out_w - 1) * self.stride_w + span_w <= self.in_w
    }

    /// Top-left corner of the window of output pixel `(oy, ox)` in input
    /// coordinates; negative where it starts in the padding.
    fn origin(&self, oy: usize, ox: usize) -> (isize, isize) {
        (
            (oy * self.stride_h) as isize - self.pad_top as isize,
            (ox * self.stride_w) as isize - self.pad_left as isize,
        )
    }

    /// Input rows (or columns) `origin..origin+k` clipped to `0..len`.
    fn clip(origin: isize, k: usize, len: usize) -> std::ops::Range<usize> {
        let start = origin.max(0) as usize;
        let end = (origin + k as isize).clamp(0, len as isize) as usize;
        start..end.max(start)
    }

    /// Input rows spanned by the window of output row `oy`.
    pub fn rows_of(&self, oy: usize) -> std::ops::Range<usize> {
        Self::clip(self.origin(oy, 0).0, self.span().0, self.in_h)
    }

    /// Input columns spanned by the window of output column `ox`.
    pub fn cols_of(&self, ox: usize) -> std::ops::Range<usize> {
        Self::clip(self.origin(0, ox).1, self.span().1, self.in_w)
    }
}

/// Visits, for every output pixel and window row, the matching run of
/// `k_w * channels` values of the im2col row and, where it is one
/// contiguous run of the image (inside it, columns not dilated), the input
/// offset it comes from.
#[inline]
fn for_each_window_row(w: &Window2d, visit: impl FnMut(usize, Option<usize>)) {
    for_each_window_row_of(w, 0..w.out_pixels(), visit)
}

/// [`for_each_window_row`] for the output pixels `pixels` only (in
/// row-major order), with the im2col rows counted from the first of them.
#[inline]
fn for_each_window_row_of(
    w: &Window2d,
    pixels: std::ops::Range<usize>,
    mut visit: impl FnMut(usize, Option<usize>),
) {
    let c = w.channels;
    let run = w.k_w * c;
    let first = pixels.start;
    for pixel in pixels {
        let (y0, x0) = w.origin(pixel / w.out_w, pixel % w.out_w);
        let row_start = (pixel - first) * w.patch_len();
        let inside_x = w.dilation_w == 1 && x0 >= 0 && x0 as usize + w.k_w <= w.in_w;
        for ky in 0..w.k_h {
            let iy = y0 + (ky * w.dilation_h) as isize;
            let dst = row_start + ky * run;
            if inside_x && iy >= 0 && (iy as usize) < w.in_h {
                visit(dst, Some((iy as usize * w.in_w + x0 as usize) * c));
            } else {
                visit(dst, None);
            }
        }
    }
}

/// Offset in the image of tap `(ky, kx)` of the window at `(y0, x0)`, or
/// `None` in the padding.
#[inline]
fn pixel_offset(w: &Window2d, (y0, x0): (isize, isize), (ky, kx): (usize, usize)) -> Option<usize> {
    let iy = y0 + (ky * w.dilation_h) as isize;
    let x = x0 + (kx * w.dilation_w) as isize;
    let inside = iy >= 0 && (iy as usize) < w.in_h && x >= 0 && (x as usize) < w.in_w;
    inside.then(|| (iy as usize * w.in_w + x as usize) * w.channels)
}

/// Writes the im2col rows of a chunk of whole images.
///
/// `input` holds `n` images of [`Window2d::in_len`] values; `cols` receives
/// `n * out_pixels` rows of `patch_len` values.
pub fn im2col(w: &Window2d, input: &[f32], cols: &mut [f32]) {
    let per_image = w.out_pixels() * w.patch_len();
    for (img, cols) in input
        .chunks_exact(w.in_len())
        .zip(cols.chunks_exact_mut(per_image))
    {
        im2col_pixels(w, img, 0, cols);
    }
}

/// Writes the im2col rows of output pixels `first..` of one image, as many
/// as `cols` holds (`cols.len() / patch_len`): a block small enough to
/// stay in cache for the product that reads it.
///
/// ```
/// use convnet::kernels::Window2d;
/// use convnet::kernels::im2col::{Padding, im2col, im2col_pixels};
/// let w = Window2d::new((5, 5, 2), (3, 3), (1, 1), Padding::Same).unwrap();
/// let image: Vec<f32> = (0..w.in_len()).map(|v| v as f32).collect();
/// let mut all = vec![0.0; w.out_pixels() * w.patch_len()];
/// im2col(&w, &image, &mut all);
/// let mut block = vec![0.0; 4 * w.patch_len()];
/// im2col_pixels(&w, &image, 7, &mut block);
/// assert_eq!(block, all[7 * w.patch_len()..11 * w.patch_len()]);
/// ```
pub fn im2col_pixels(w: &Window2d, image: &[f32], first: usize, cols: &mut [f32]) {
    let (c, run) = (w.channels, w.k_w * w.channels);
    let count = cols.len() / w.patch_len();
    assert!(first + count <= w.out_pixels(), "pixels inside the output");
    assert_eq!(image.len(), w.in_len(), "one image");
    let mut ragged = Vec::new();
    for_each_window_row_of(w, first..first + count, |dst, src| match src {
        Some(src) => copy_short(&mut cols[dst..dst + run], &image[src..src + run]),
        None => ragged.push(dst),
    });
    // Window rows that cross the border, filled pixel by pixel.
    for dst in ragged {
        let (pixel, ky) = (first + dst / w.patch_len(), (dst % w.patch_len()) / run);
        let origin = w.origin(pixel / w.out_w, pixel % w.out_w);
        for kx in 0..w.k_w {
            let out = &mut cols[dst + kx * c..dst + (kx + 1) * c];
            match pixel_offset(w, origin, (ky, kx)) {
                Some(src) => out.copy_from_slice(&image[src..src + c]),
                None => out.fill(0.0),
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every im2col value back onto the input
/// pixel it was read from. `grad_input` must be zeroed by the caller.
pub fn col2im(w: &Window2d, cols: &[f32], grad_input: &mut [f32]) {
    let (c, run) = (w.channels, w.k_w * w.channels);
    let per_image = w.out_pixels() * w.patch_len();
    for (img, cols) in grad_input
        .chunks_exact_mut(w.in_len())
        .zip(cols.chunks_exact(per_image))
    {
        let mut ragged = Vec::new();
        for_each_window_row(w, |src, dst| match dst {
            Some(dst) => add_assign(&mut img[dst..dst + run], &cols[src..src + run]),
            None => ragged.push(src),
        });
        for src in ragged {
            let (pixel, ky) = ((src / w.patch_len()), (src % w.patch_len()) / run);
            let origin = w.origin(pixel / w.out_w, pixel % w.out_w);
            for kx in 0..w.k_w {
                if let Some(dst) = pixel_offset(w, origin, (ky, kx)) {
                    add_assign(
                        &mut img[dst..dst + c],
                        &cols[src + kx * c..src + (kx + 1) * c],
                    );
                }
            }
        }
    }
}

#[inline]
fn add_assign(dst: &mut [f32], src: &[f32]) {
    // Whole blocks of 8 (one AVX vector each) and of 4, then singles: a
    // plain loop over a run of unknown length compiles to 4-wide adds.
    let mut dst_blocks = dst.chunks_exact_mut(8);
    let mut src_blocks = src.chunks_exact(8);
    for (d, s) in (&mut dst_blocks).zip(&mut src_blocks) {
        let d: &mut [f32; 8] = d.try_into().expect("8 values");
        let s: &[f32; 8] = s.try_into().expect("8 values");
        d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
    }
    let (dst, src) = (dst_blocks.into_remainder(), src_blocks.remainder());
    let mut dst_blocks = dst.chunks_exact_mut(4);
    let mut src_blocks = src.chunks_exact(4);
    for (d, s) in (&mut dst_blocks).zip(&mut src_blocks) {
        let d: &mut [f32; 4] = d.try_into().expect("4 values");
        let s: &[f32; 4] = s.try_into().expect("4 values");
        d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
    }
    let (dst, src) = (dst_blocks.into_remainder(), src_blocks.remainder());
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_follows_tensorflow() {
        // 5 wide, window 2, stride 2: 3 outputs, total padding 1, all of it after.
        let w = Window2d::new((5, 5, 1), (2, 2), (2, 2), Padding::Same).unwrap();
        assert_eq!((w.out_h, w.pad_top), (3, 0));
        // 28 wide, window 5, stride 1: 28 outputs, padding 2 before and 2 after.
        let w = Window2d::new((28, 28, 1), (5, 5), (1, 1), Padding::Same).unwrap();
        assert_eq!((w.out_h, w.pad_top, w.pad_left), (28, 2, 2));
        let w = Window2d::new((28, 28, 1), (5, 5), (1, 1), Padding::Valid).unwrap();
        assert_eq!((w.out_h, w.out_w), (24, 24));
    }

    #[test]
    fn a_window_larger_than_the_input_is_an_error_with_valid_padding() {
        assert!(Window2d::new((3, 3, 1), (5, 5), (1, 1), Padding::Valid).is_err());
        assert!(Window2d::new((3, 3, 1), (5, 5), (1, 1), Padding::Same).is_ok());
    }

    #[test]
    fn im2col_of_a_small_image_by_hand() {
        // 3x3 image 1..9, 2x2 window, same padding (pad after): 3x3 outputs.
        let w = Window2d::new((3, 3, 1), (2, 2), (1, 1), Padding::Same).unwrap();
        let img: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut cols = vec![f32::NAN; 9 * 4];
        im2col(&w, &img, &mut cols);
        assert_eq!(&cols[0..4], &[1.0, 2.0, 4.0, 5.0]);
        assert_eq!(&cols[8..12], &[3.0, 0.0, 6.0, 0.0]);
        assert_eq!(&cols[32..36], &[9.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn dilated_windows_skip_pixels_and_size_the_output_by_their_span() {
        // 5x5 image 1..25, 2x2 taps 2 apart (spanning 3x3), valid: 3x3 outputs.
        let w = Window2d::dilated((5, 5, 1), (2, 2), (1, 1), (2, 2), Padding::Valid).unwrap();
        assert_eq!((w.out_h, w.out_w), (3, 3));
        let img: Vec<f32> = (1..=25).map(|v| v as f32).collect();
        let mut cols = vec![f32::NAN; 9 * 4];
        im2col(&w, &img, &mut cols);
        assert_eq!(&cols[0..4], &[1.0, 3.0, 11.0, 13.0]);
        assert_eq!(&cols[32..36], &[13.0, 15.0, 23.0, 25.0]);
        // Same padding pads by the span: 1 on each side here.
        let w = Window2d::dilated((5, 5, 1), (2, 2), (1, 1), (2, 2), Padding::Same).unwrap();
        assert_eq!((w.out_h, w.pad_top, w.pad_left), (5, 1, 1));
        assert!(Window2d::dilated((5, 5, 1), (3, 3), (1, 1), (3, 3), Padding::Valid).is_err());
    }
}
