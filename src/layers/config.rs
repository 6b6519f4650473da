//! Layers as Keras configs: the arguments of each layer as a JSON object
//! (`{"filters": 6, "kernel_size": [5, 5], "activation": "relu", ...}`),
//! so that a model file, or an architecture written by hand, rebuilds
//! the layers. Each layer writes its own config ([`super::Layer::config`])
//! and reads it back (its `from_config`); this file holds the registry of
//! class names and the field readers, whose errors name the layer and
//! the field.

use serde_json::{Map, Value};

use super::{
    ActivationLayer, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
    GlobalAveragePooling2D, GlobalMaxPooling2D, Layer, MaxPooling2D, Padding, RandomFlip,
    RandomRotation, RandomTranslation, RandomZoom, Rescaling, Reshape, ZeroPadding2D,
};
use crate::{Activation, Error, Result};

/// A layer's arguments, by their Keras names.
pub type Config = Map<String, Value>;

/// A layer of class `class` built from `config` (Keras's
/// `layer_from_config`).
pub fn from_config(class: &str, config: &Config) -> Result<Box<dyn Layer>> {
    let fields = Fields { class, config };
    Ok(match class {
        "Conv2D" => Box::new(Conv2D::from_config(&fields)?),
        "MaxPooling2D" => Box::new(MaxPooling2D::from_config(&fields)?),
        "Flatten" => Box::new(Flatten::from_config(&fields)?),
        "Dense" => Box::new(Dense::from_config(&fields)?),
        "Activation" => Box::new(ActivationLayer::from_config(&fields)?),
        "Dropout" => Box::new(Dropout::from_config(&fields)?),
        "BatchNormalization" => Box::new(BatchNormalization::from_config(&fields)?),
        "GlobalAveragePooling2D" => Box::new(GlobalAveragePooling2D::from_config(&fields)?),
        "GlobalMaxPooling2D" => Box::new(GlobalMaxPooling2D::from_config(&fields)?),
        "Rescaling" => Box::new(Rescaling::from_config(&fields)?),
        "Reshape" => Box::new(Reshape::from_config(&fields)?),
        "ZeroPadding2D" => Box::new(ZeroPadding2D::from_config(&fields)?),
        "AveragePooling2D" => Box::new(AveragePooling2D::from_config(&fields)?),
        "RandomFlip" => Box::new(RandomFlip::from_config(&fields)?),
        "RandomTranslation" => Box::new(RandomTranslation::from_config(&fields)?),
        "RandomRotation" => Box::new(RandomRotation::from_config(&fields)?),
        "RandomZoom" => Box::new(RandomZoom::from_config(&fields)?),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "unknown layer class {class:?}: convnet has Conv2D, MaxPooling2D, Flatten, \
                 Dense, Activation, Dropout, BatchNormalization, GlobalAveragePooling2D, \
                 GlobalMaxPooling2D, Rescaling, Reshape, ZeroPadding2D, AveragePooling2D, \
                 RandomFlip, RandomTranslation, RandomRotation and RandomZoom"
            )));
        }
    })
}

/// The fields of one layer's config, read with errors that name them.
pub struct Fields<'a> {
    class: &'a str,
    config: &'a Config,
}

impl Fields<'_> {
    fn error(&self, key: &str, what: &str) -> Error {
        Error::InvalidArgument(format!("layer {}: field {key:?} {what}", self.class))
    }

    /// The field `key`, or `default` when it is absent (an error when there
    /// is no default).
    fn value<T>(
        &self,
        key: &str,
        default: Option<T>,
        parse: impl Fn(&Value) -> Option<T>,
        expected: &str,
    ) -> Result<T> {
        match self.config.get(key) {
            None | Some(Value::Null) => default.ok_or_else(|| self.error(key, "is missing")),
            Some(value) => parse(value)
                .ok_or_else(|| self.error(key, &format!("must be {expected}, not {value}"))),
        }
    }

    /// A whole number of at least 1 (sizes, filters, units).
    pub fn count(&self, key: &str, default: Option<usize>) -> Result<usize> {
        let parse = |v: &Value| v.as_u64().filter(|&n| n >= 1).map(|n| n as usize);
        self.value(key, default, parse, "a whole number of at least 1")
    }

    /// A pair of whole numbers of at least 1, or one number for both.
    pub fn pair(&self, key: &str, default: Option<(usize, usize)>) -> Result<(usize, usize)> {
        let one = |v: &Value| v.as_u64().filter(|&n| n >= 1).map(|n| n as usize);
        let parse = |v: &Value| match v {
            Value::Array(items) if items.len() == 2 => Some((one(&items[0])?, one(&items[1])?)),
            other => one(other).map(|n| (n, n)),
        };
        self.value(
            key,
            default,
            parse,
            "a pair of whole numbers of at least 1, e.g. [5, 5]",
        )
    }

    /// Like [`Fields::pair`], absent allowed.
    pub fn optional_pair(&self, key: &str) -> Result<Option<(usize, usize)>> {
        match self.config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.pair(key, None).map(Some),
        }
    }

    /// A number.
    pub fn number(&self, key: &str, default: Option<f32>) -> Result<f32> {
        let parse = |v: &Value| v.as_f64().map(|x| x as f32);
        self.value(key, default, parse, "a number")
    }

    /// Keras's 2-D padding amounts: `n`, `[rows, columns]` or `[[top,
    /// bottom], [left, right]]` (default 1 everywhere), as
    /// `((top, bottom), (left, right))`.
    pub fn padding_amounts(&self, key: &str) -> Result<((usize, usize), (usize, usize))> {
        let one = |v: &Value| v.as_u64().map(|n| n as usize);
        let side = |v: &Value| match v {
            Value::Array(two) if two.len() == 2 => Some((one(&two[0])?, one(&two[1])?)),
            v => one(v).map(|n| (n, n)),
        };
        let parse = |v: &Value| match v {
            Value::Array(two) if two.len() == 2 => Some((side(&two[0])?, side(&two[1])?)),
            v => one(v).map(|n| ((n, n), (n, n))),
        };
        let expected = "n, [rows, columns] or [[top, bottom], [left, right]] of whole numbers";
        self.value(key, Some(((1, 1), (1, 1))), parse, expected)
    }

    /// A list of sizes, `-1` (or null) for one to be worked out.
    pub fn dims(&self, key: &str) -> Result<Vec<Option<usize>>> {
        let one = |v: &Value| match v {
            Value::Null => Some(None),
            v if v.as_i64() == Some(-1) => Some(None),
            v => v.as_u64().filter(|&n| n >= 1).map(|n| Some(n as usize)),
        };
        let parse = |v: &Value| v.as_array()?.iter().map(one).collect::<Option<Vec<_>>>();
        self.value(
            key,
            None,
            parse,
            "a list of sizes of at least 1, or -1, e.g. [28, 28, -1]",
        )
    }

    /// true or false.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool> {
        self.value(key, Some(default), Value::as_bool, "true or false")
    }

    /// An activation name (default linear).
    pub fn activation(&self, key: &str) -> Result<Activation> {
        let as_name = |v: &Value| v.as_str().map(str::to_string);
        let name = self.value(key, Some("linear".into()), as_name, "an activation name")?;
        name.parse()
            .map_err(|e: Error| self.error(key, &e.to_string()))
    }

    /// "valid" (default) or "same".
    pub fn padding(&self) -> Result<Padding> {
        self.named("padding", "valid")
    }

    /// A setting given by name (`"reflect"`, `"he_normal"`), `default`
    /// when absent, parsed by its `FromStr` (whose error lists the names).
    pub fn named<T: std::str::FromStr<Err = Error>>(&self, key: &str, default: &str) -> Result<T> {
        let as_name = |v: &Value| v.as_str().map(str::to_string);
        let name = self.value(key, Some(default.into()), as_name, "a name")?;
        name.parse()
            .map_err(|e: Error| self.error(key, &e.to_string()))
    }

    /// Keras's random factor: `f` for `(-f, f)`, or `[lower, upper]`.
    pub fn range(&self, key: &str, default: Option<(f32, f32)>) -> Result<(f32, f32)> {
        let number = |v: &Value| v.as_f64().map(|x| x as f32);
        let parse = |v: &Value| match v {
            Value::Array(two) if two.len() == 2 => Some((number(&two[0])?, number(&two[1])?)),
            v => number(v).map(|f| (-f, f)),
        };
        self.value(key, default, parse, "a number or [lower, upper]")
    }

    /// Like [`Fields::range`], absent allowed.
    pub fn optional_range(&self, key: &str) -> Result<Option<(f32, f32)>> {
        match self.config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.range(key, None).map(Some),
        }
    }

    /// The `input_shape` of a first layer, from Keras's
    /// `batch_input_shape` (`[null, 28, 28, 1]`), if given.
    pub fn input_shape(&self) -> Result<Option<Vec<usize>>> {
        let Some(value) = self.config.get(BATCH_INPUT_SHAPE).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let dims = value.as_array().and_then(|dims| {
            let (batch, sample) = dims.split_first()?;
            let sample: Option<Vec<usize>> = sample
                .iter()
                .map(|d| d.as_u64().filter(|&n| n >= 1).map(|n| n as usize))
                .collect();
            batch.is_null().then_some(sample?).filter(|s| !s.is_empty())
        });
        dims.map(Some).ok_or_else(|| {
            self.error(
                BATCH_INPUT_SHAPE,
                &format!(
                    "must be null then sizes of at least 1, e.g. [null, 28, 28, 1], not {value}"
                ),
            )
        })
    }
}

const BATCH_INPUT_SHAPE: &str = "batch_input_shape";

/// Config builder: `config![("filters", 6), ("activation", "relu")]`-like.
pub(crate) fn config(fields: impl IntoIterator<Item = (&'static str, Value)>) -> Config {
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Adds `batch_input_shape` for a layer given an `input_shape`.
pub(crate) fn with_input_shape(mut config: Config, shape: Option<&[usize]>) -> Config {
    if let Some(shape) = shape {
        let dims = std::iter::once(Value::Null).chain(shape.iter().map(|&d| Value::from(d)));
        config.insert(BATCH_INPUT_SHAPE.into(), Value::Array(dims.collect()));
    }
    config
}

/// `[a, b]`.
pub(crate) fn pair(value: (usize, usize)) -> Value {
    Value::from(vec![value.0, value.1])
}

/// A random factor as Keras writes it: `f` for `(-f, f)`, else `[lower, upper]`.
pub(crate) fn range((lower, upper): (f32, f32)) -> Value {
    if lower == -upper {
        Value::from(upper)
    } else {
        Value::from(vec![lower, upper])
    }
}
