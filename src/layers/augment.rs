//! What the augmentation layers (RandomFlip, RandomTranslation,
//! RandomRotation, RandomZoom) share: their seeded draws, and the one
//! geometric warp they all are.
//!
//! Each layer draws, per sample, a map from output pixels to input
//! coordinates (Keras's `transform`: an affine map, pixel centres at whole
//! coordinates), and the warp reads the input there: coordinates outside
//! the image are first brought back in by the fill mode, then sampled
//! bilinearly (or at the nearest pixel), taps outside the image reading
//! `fill_value`, exactly as TensorFlow's `ImageProjectiveTransformV3`.
//! Given the map, the warp is linear in the image, so the backward pass is
//! its adjoint: each output gradient is scattered back onto the taps it was
//! read from, with the same weights.
//!
//! The draws are keyed as Dropout's are: one ChaCha stream per training
//! step, [`WORDS_PER_SAMPLE`] words per sample at the sample's position in
//! the batch, so a sample gets the same transform however the batch is
//! split between replicas, and whatever the number of threads.

use ndarray::ArrayD;
use rand::{Rng as _, RngExt, SeedableRng};
use rayon::prelude::*;

use super::config::{Config, Fields, with_input_shape};
use super::{TrainingStep, resize, values, values_mut};
use crate::error::{by_name, name_of};
use crate::initializers::Rng;
use crate::{Error, Result};

/// How a warp fills the part of the output that maps outside the input
/// (Keras `fill_mode`). With input `abcd`:
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FillMode {
    /// `dcba|abcd|dcba`: mirrored about the edge (the default).
    #[default]
    Reflect,
    /// `abcd|abcd|abcd`: the image repeated.
    Wrap,
    /// `kkkk|abcd|kkkk`: the constant `fill_value` (default 0).
    Constant,
    /// `aaaa|abcd|dddd`: the nearest edge pixel.
    Nearest,
}

const FILL_MODES: [(FillMode, &str); 4] = [
    (FillMode::Reflect, "reflect"),
    (FillMode::Wrap, "wrap"),
    (FillMode::Constant, "constant"),
    (FillMode::Nearest, "nearest"),
];

impl FillMode {
    /// The Keras name, e.g. `"reflect"`.
    ///
    /// ```
    /// use convnet::layers::FillMode;
    /// assert_eq!("constant".parse::<FillMode>().unwrap().name(), "constant");
    /// ```
    pub fn name(self) -> &'static str {
        name_of(&self, &FILL_MODES)
    }
}

impl std::str::FromStr for FillMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        by_name("fill_mode", s, &FILL_MODES)
    }
}

/// How a warp reads between pixels (Keras `interpolation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Interpolation {
    /// The four surrounding pixels, weighted by nearness (the default).
    #[default]
    Bilinear,
    /// The nearest pixel.
    Nearest,
}

const INTERPOLATIONS: [(Interpolation, &str); 2] = [
    (Interpolation::Bilinear, "bilinear"),
    (Interpolation::Nearest, "nearest"),
];

impl Interpolation {
    /// The Keras name, e.g. `"bilinear"`.
    ///
    /// ```
    /// use convnet::layers::Interpolation;
    /// assert_eq!(Interpolation::default().name(), "bilinear");
    /// ```
    pub fn name(self) -> &'static str {
        name_of(&self, &INTERPOLATIONS)
    }
}

impl std::str::FromStr for Interpolation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        by_name("interpolation", s, &INTERPOLATIONS)
    }
}

/// Where output pixel `(x, y)` reads the input: at `(x·[0] + y·[1] + [2],
/// x·[0] + y·[1] + [2])` of `x_map` and `y_map` respectively (Keras's
/// transform `[a0, a1, a2, b0, b1, b2, 0, 0]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Affine {
    pub x_map: [f64; 3],
    pub y_map: [f64; 3],
}

impl Affine {
    /// The identity: every pixel reads itself.
    pub const IDENTITY: Affine = Affine {
        x_map: [1.0, 0.0, 0.0],
        y_map: [0.0, 1.0, 0.0],
    };

    /// The input coordinates `(x, y)` output pixel `(x, y)` reads.
    fn apply(&self, x: usize, y: usize) -> (f64, f64) {
        let at = |m: &[f64; 3]| snap(m[0] * x as f64 + m[1] * y as f64 + m[2]);
        (at(&self.x_map), at(&self.y_map))
    }
}

/// `c` on a whole pixel when within rounding error of one, so that flips
/// and quarter turns, computed in floating point, copy pixels exactly.
fn snap(c: f64) -> f64 {
    let whole = c.round();
    if (c - whole).abs() < 1e-9 { whole } else { c }
}

/// `lower + (upper - lower) · u` for a draw `u` in `[0, 1)`.
pub(crate) fn lerp((lower, upper): (f32, f32), u: f64) -> f64 {
    f64::from(lower) + (f64::from(upper) - f64::from(lower)) * u
}

/// A random factor as Keras takes it: `f` for `(-f, f)`, or
/// `(lower, upper)`.
///
/// ```
/// use convnet::layers::Factor;
/// assert_eq!(Factor::from(0.2).0, (-0.2, 0.2));
/// assert_eq!(Factor::from((0.0, 0.3)).0, (0.0, 0.3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Factor(pub (f32, f32));

impl From<f32> for Factor {
    fn from(f: f32) -> Self {
        Factor((-f, f))
    }
}

impl From<(f32, f32)> for Factor {
    fn from(range: (f32, f32)) -> Self {
        Factor(range)
    }
}

/// How a warp samples the input: Keras's `fill_mode`, `fill_value` and
/// `interpolation`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Sampling {
    pub fill_mode: FillMode,
    pub fill_value: f32,
    pub interpolation: Interpolation,
}

impl Sampling {
    /// The settings of a Keras config (defaults reflect, 0, bilinear).
    pub fn from_config(fields: &Fields) -> Result<Self> {
        Ok(Sampling {
            fill_mode: fields.named("fill_mode", "reflect")?,
            fill_value: fields.number("fill_value", Some(0.0))?,
            interpolation: fields.named("interpolation", "bilinear")?,
        })
    }

    /// Adds the settings to a layer's config.
    pub fn write(&self, config: &mut Config) {
        let fields = [
            ("fill_mode", self.fill_mode.name().into()),
            ("fill_value", self.fill_value.into()),
            ("interpolation", self.interpolation.name().into()),
        ];
        for (key, value) in fields {
            config.insert(key.into(), value);
        }
    }

    /// Calls `tap(pixel, weight)` for each input pixel (row-major index,
    /// `None` outside the image: `fill_value`) that a read at `(x, y)`
    /// of an `h x w` image takes, with its non-zero weight.
    fn taps(
        &self,
        (h, w): (usize, usize),
        (x, y): (f64, f64),
        mut tap: impl FnMut(Option<usize>, f32),
    ) {
        let (x, y) = (
            map_coordinate(self.fill_mode, x, w),
            map_coordinate(self.fill_mode, y, h),
        );
        let pixel = |px: f64, py: f64| {
            let inside = px >= 0.0 && py >= 0.0 && px < w as f64 && py < h as f64;
            inside.then(|| py as usize * w + px as usize)
        };
        match self.interpolation {
            Interpolation::Nearest => tap(pixel(x.round(), y.round()), 1.0),
            Interpolation::Bilinear => {
                let (x0, y0) = (x.floor(), y.floor());
                let (wx, wy) = (x - x0, y - y0);
                let corners = [
                    (x0, y0, (1.0 - wx) * (1.0 - wy)),
                    (x0 + 1.0, y0, wx * (1.0 - wy)),
                    (x0, y0 + 1.0, (1.0 - wx) * wy),
                    (x0 + 1.0, y0 + 1.0, wx * wy),
                ];
                for (px, py, weight) in corners {
                    if weight != 0.0 {
                        tap(pixel(px, py), weight as f32);
                    }
                }
            }
        }
    }
}

/// A coordinate along an axis of `len` pixels brought inside it by the
/// fill mode (TensorFlow's `MapCoordinate`; constant leaves it, the taps
/// outside then read the fill value).
fn map_coordinate(mode: FillMode, c: f64, len: usize) -> f64 {
    let n = len as f64;
    let last = n - 1.0;
    if (0.0..=last).contains(&c) || mode == FillMode::Constant {
        return c;
    }
    if len <= 1 {
        return 0.0;
    }
    let mapped = match mode {
        FillMode::Reflect => {
            // Period 2·len, mirrored about -0.5 and len - 0.5.
            let folded = c.rem_euclid(2.0 * n);
            if folded > last {
                2.0 * n - folded - 1.0
            } else {
                folded
            }
        }
        FillMode::Wrap if c < 0.0 => c + n * ((-c / last).trunc() + 1.0),
        FillMode::Wrap => c - n * (c / last).trunc(),
        FillMode::Nearest | FillMode::Constant => c,
    };
    mapped.clamp(0.0, last)
}

/// Uniform draws in `[0, 1)` per sample.
pub(crate) const WORDS_PER_SAMPLE: usize = 2;

/// One sample's draws.
pub(crate) type Draws = [f64; WORDS_PER_SAMPLE];

/// The state every augmentation layer keeps: its seed, its input, and the
/// maps of its last training batch (for the backward pass).
#[derive(Clone, Debug, Default)]
pub(crate) struct Warp {
    pub sampling: Sampling,
    pub input_shape: Option<Vec<usize>>,
    /// Drawn from the model's seed by `build`.
    seed: u64,
    /// `(h, w, c)` of an input image, set by `build`.
    image: (usize, usize, usize),
    maps: Vec<Affine>,
}

impl Warp {
    /// A warp sampling as `sampling`.
    pub fn new(sampling: Sampling) -> Self {
        Warp {
            sampling,
            ..Warp::default()
        }
    }

    /// A warp with the sampling and input shape of a Keras config.
    pub fn from_config(fields: &Fields) -> Result<Self> {
        Ok(Warp {
            input_shape: fields.input_shape()?,
            ..Warp::new(Sampling::from_config(fields)?)
        })
    }

    /// Checks the input (images) of layer `class` and draws the seed; the
    /// output shape (the input's).
    pub fn build(
        &mut self,
        class: &str,
        input_shape: &[usize],
        rng: &mut Rng,
    ) -> Result<Vec<usize>> {
        let &[h, w, c] = input_shape else {
            return Err(Error::Shape(format!(
                "{class} expects images of shape (height, width, channels), got {input_shape:?}"
            )));
        };
        if super::tensor_len(class, input_shape)? == 0 {
            return Err(Error::Shape(format!(
                "{class}: input of shape {input_shape:?} is empty"
            )));
        }
        self.image = (h, w, c);
        self.seed = rng.random();
        Ok(input_shape.to_vec())
    }

    /// `(height, width)` of an input image.
    pub fn size(&self) -> (usize, usize) {
        (self.image.0, self.image.1)
    }

    /// The draws of `batch` samples at `step`: words
    /// `(first_sample + s) · WORDS_PER_SAMPLE ..` of the step's stream.
    pub fn draws(&self, batch: usize, step: TrainingStep) -> Vec<Draws> {
        let mut rng = Rng::seed_from_u64(self.seed);
        rng.set_stream(step.step);
        rng.set_word_pos(step.first_sample as u128 * WORDS_PER_SAMPLE as u128);
        let mut unit = || f64::from(rng.next_u32()) / 4_294_967_296.0;
        (0..batch).map(|_| [unit(), unit()]).collect()
    }

    /// The training pass: each sample warped by its map, the maps kept.
    pub fn forward_train(
        &mut self,
        input: &ArrayD<f32>,
        output: &mut ArrayD<f32>,
        maps: Vec<Affine>,
    ) {
        resize(output, input.shape());
        let (h, w, c) = self.image;
        let sampling = self.sampling;
        values_mut(output)
            .par_chunks_mut(h * w * c)
            .zip(values(input).par_chunks(h * w * c))
            .zip(&maps)
            .for_each(|((y, x), map)| {
                for (p, out) in y.chunks_exact_mut(c).enumerate() {
                    out.fill(0.0);
                    sampling.taps(
                        (h, w),
                        map.apply(p % w, p / w),
                        |pixel, weight| match pixel {
                            Some(i) => add_scaled(out, &x[i * c..(i + 1) * c], weight),
                            None => out
                                .iter_mut()
                                .for_each(|o| *o += weight * sampling.fill_value),
                        },
                    );
                }
            });
        self.maps = maps;
    }

    /// The adjoint of the last training pass: each output gradient added
    /// onto the input pixels it was read from, with the same weights.
    pub fn backward(
        &self,
        input: &ArrayD<f32>,
        grad_output: &ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        let Some(grad_input) = grad_input else { return };
        resize(grad_input, input.shape());
        let (h, w, c) = self.image;
        let sampling = self.sampling;
        values_mut(grad_input)
            .par_chunks_mut(h * w * c)
            .zip(values(grad_output).par_chunks(h * w * c))
            .zip(&self.maps)
            .for_each(|((dx, dy), map)| {
                dx.fill(0.0);
                for (p, dy) in dy.chunks_exact(c).enumerate() {
                    sampling.taps((h, w), map.apply(p % w, p / w), |pixel, weight| {
                        if let Some(i) = pixel {
                            add_scaled(&mut dx[i * c..(i + 1) * c], dy, weight);
                        }
                    });
                }
            });
    }

    /// `config` with the input shape, if one was given.
    pub fn config(&self, config: Config) -> Config {
        with_input_shape(config, self.input_shape.as_deref())
    }
}

/// `dst += weight · src`.
fn add_scaled(dst: &mut [f32], src: &[f32], weight: f32) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += weight * s);
}

/// The inference pass of every augmentation layer: a copy.
pub(crate) fn identity(input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
    resize(output, input.shape());
    values_mut(output).copy_from_slice(values(input));
}

/// An error unless `range` (of layer `class`'s argument `key`) has
/// `lower <= upper`, both finite and, where there is a `bound`, within
/// `[-bound, bound]`.
pub(crate) fn check_range(
    class: &str,
    key: &str,
    (lower, upper): (f32, f32),
    bound: Option<f32>,
) -> Result<()> {
    let within = |v: f32| v.is_finite() && bound.is_none_or(|b| v.abs() <= b);
    if lower <= upper && within(lower) && within(upper) {
        return Ok(());
    }
    let limits = bound.map_or(String::new(), |b| format!(" within [-{b}, {b}]"));
    Err(Error::InvalidArgument(format!(
        "{class} {key} ({lower}, {upper}): must be a number or a (lower, upper) pair \
         with lower <= upper{limits}"
    )))
}

/// Implements [`super::Layer`] for an augmentation layer: a struct with a
/// `warp: Warp` field and the methods `check(&self) -> Result<()>` (its
/// arguments), `map(&self, Draws, (h, w)) -> Affine` (a sample's transform)
/// and `own_config(&self) -> Config` (its Keras arguments).
macro_rules! augmentation_layer {
    ($layer:ident) => {
        impl $layer {
            /// The shape of one input image, (height, width, channels);
            /// needed on the first layer of a model.
            pub fn input_shape(mut self, shape: &[usize]) -> Self {
                self.warp.input_shape = Some(shape.to_vec());
                self
            }
        }

        impl $crate::layers::Layer for $layer {
            fn class_name(&self) -> &'static str {
                stringify!($layer)
            }

            fn declared_input_shape(&self) -> Option<&[usize]> {
                self.warp.input_shape.as_deref()
            }

            fn build(
                &mut self,
                input_shape: &[usize],
                rng: &mut $crate::initializers::Rng,
            ) -> $crate::Result<Vec<usize>> {
                self.check()?;
                self.warp.build(stringify!($layer), input_shape, rng)
            }

            fn forward(&self, input: &ndarray::ArrayD<f32>, output: &mut ndarray::ArrayD<f32>) {
                $crate::layers::augment::identity(input, output);
            }

            fn forward_train(
                &mut self,
                input: &ndarray::ArrayD<f32>,
                output: &mut ndarray::ArrayD<f32>,
                step: $crate::layers::TrainingStep,
            ) {
                let size = self.warp.size();
                let draws = self.warp.draws(input.shape()[0], step);
                let maps = draws.into_iter().map(|d| self.map(d, size)).collect();
                self.warp.forward_train(input, output, maps);
            }

            fn backward(
                &mut self,
                input: &ndarray::ArrayD<f32>,
                _output: &ndarray::ArrayD<f32>,
                grad_output: &mut ndarray::ArrayD<f32>,
                grad_input: Option<&mut ndarray::ArrayD<f32>>,
            ) {
                self.warp.backward(input, grad_output, grad_input);
            }

            fn replicate(&self) -> Option<Box<dyn $crate::layers::Layer>> {
                Some(Box::new(self.clone()))
            }

            fn config(&self) -> Option<$crate::layers::config::Config> {
                Some(self.warp.config(self.own_config()))
            }
        }
    };
}

/// The builder methods of the layers that interpolate (all but RandomFlip).
macro_rules! sampling_builders {
    ($layer:ident) => {
        impl $layer {
            /// How the part of the output that maps outside the input is
            /// filled (default [`FillMode::Reflect`](crate::layers::FillMode)).
            pub fn fill_mode(mut self, fill_mode: $crate::layers::FillMode) -> Self {
                self.warp.sampling.fill_mode = fill_mode;
                self
            }

            /// The value outside the input with `FillMode::Constant` (default 0).
            pub fn fill_value(mut self, fill_value: f32) -> Self {
                self.warp.sampling.fill_value = fill_value;
                self
            }

            /// How the input is read between pixels (default bilinear).
            pub fn interpolation(mut self, interpolation: $crate::layers::Interpolation) -> Self {
                self.warp.sampling.interpolation = interpolation;
                self
            }
        }
    };
}

pub(crate) use {augmentation_layer, sampling_builders};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_modes_map_coordinates_as_tensorflow() {
        // Input abcd (0..4): reflect dcba|abcd|dcba, wrap abcd|abcd|abcd.
        let map = |mode, c| map_coordinate(mode, c, 4);
        assert_eq!(map(FillMode::Reflect, -1.0), 0.0);
        assert_eq!(map(FillMode::Reflect, -3.0), 2.0);
        assert_eq!(map(FillMode::Reflect, 5.0), 2.0);
        assert_eq!(map(FillMode::Reflect, 8.0), 0.0);
        assert_eq!(map(FillMode::Wrap, -1.0), 3.0);
        assert_eq!(map(FillMode::Wrap, 4.0), 0.0);
        assert_eq!(map(FillMode::Wrap, 5.0), 1.0);
        assert_eq!(map(FillMode::Nearest, -2.5), 0.0);
        assert_eq!(map(FillMode::Nearest, 7.0), 3.0);
        assert_eq!(map(FillMode::Constant, -2.5), -2.5);
        assert_eq!(map(FillMode::Reflect, 1.5), 1.5);
    }

    #[test]
    fn bilinear_taps_weigh_by_nearness_and_constant_fill_reads_outside() {
        let sampling = Sampling {
            fill_mode: FillMode::Constant,
            ..Sampling::default()
        };
        let mut taps = Vec::new();
        sampling.taps((2, 2), (0.25, -0.5), |p, w| taps.push((p, w)));
        assert_eq!(
            taps,
            [
                (None, 0.375),
                (None, 0.125),
                (Some(0), 0.375),
                (Some(1), 0.125)
            ]
        );
    }

    #[test]
    fn unknown_names_list_the_allowed_ones() {
        let error = "mirror".parse::<FillMode>().unwrap_err().to_string();
        assert!(
            error.contains("\"mirror\"") && error.contains("\"nearest\""),
            "{error}"
        );
        let error = "cubic".parse::<Interpolation>().unwrap_err().to_string();
        assert!(error.contains("\"bilinear\""), "{error}");
    }
}
