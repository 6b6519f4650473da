//! The architecture as JSON, in the shape of Keras's `model.to_json()`:
//!
//! ```json
//! {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
//!   {"class_name": "Conv2D", "config": {"name": "conv2d", "filters": 6, ...}}, ...]}}
//! ```
//!
//! plus the model's `seed`. What `compile` chose goes alongside, in the
//! same spirit as Keras's `compile_config`.

use serde_json::{Value, json};

use super::Sequential;
use crate::layers::config::{Config, from_config};
use crate::{Error, Loss, Metric, Result, optimizers};

/// The error of a malformed architecture.
fn malformed(what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("architecture JSON: {what}"))
}

impl Sequential {
    /// The architecture as JSON (Keras `to_json`): every layer's class and
    /// arguments, from which [`Sequential::from_json`] makes the same
    /// model, untrained. An error if a layer has no config
    /// ([`crate::layers::Layer::config`]).
    ///
    /// ```
    /// use convnet::Sequential;
    /// let lenet = convnet::models::lenet(1);
    /// let json = lenet.to_json().unwrap();
    /// let mut copy = Sequential::from_json(&json).unwrap();
    /// assert_eq!(copy.to_json().unwrap(), json);
    /// copy.build().unwrap();
    /// assert_eq!(copy.count_params(), 44_426);
    /// ```
    pub fn to_json(&self) -> Result<String> {
        let layers = self
            .network
            .entries
            .iter()
            .map(|e| {
                let mut config = e.layer.config().ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "layer {} ({}) has no config, so the architecture cannot be written: \
                         save the weights alone (save_weights)",
                        e.name,
                        e.layer.class_name()
                    ))
                })?;
                config.insert("name".into(), e.name.clone().into());
                Ok(json!({"class_name": e.layer.class_name(), "config": config}))
            })
            .collect::<Result<Vec<_>>>()?;
        let model = json!({
            "class_name": "Sequential",
            "config": {"name": self.name, "layers": layers},
            "seed": self.seed,
        });
        Ok(model.to_string())
    }

    /// The model an architecture of [`Sequential::to_json`] describes, with
    /// new weights (drawn from its `seed`, or from the clock without one).
    pub fn from_json(json: &str) -> Result<Sequential> {
        let value: Value = serde_json::from_str(json).map_err(malformed)?;
        if value["class_name"] != "Sequential" {
            return Err(malformed(format!(
                "\"class_name\" must be \"Sequential\", not {}",
                value["class_name"]
            )));
        }
        let mut model = match value.get("seed") {
            None => Sequential::new(),
            Some(seed) => Sequential::with_seed(seed.as_u64().ok_or_else(|| {
                malformed(format!("\"seed\" must be a whole number, not {seed}"))
            })?),
        };
        let layers = value["config"]["layers"]
            .as_array()
            .ok_or_else(|| malformed("\"config\" must hold a list of \"layers\""))?;
        for (i, layer) in layers.iter().enumerate() {
            let class = layer["class_name"]
                .as_str()
                .ok_or_else(|| malformed(format!("layer {i} has no \"class_name\"")))?;
            let empty = Config::new();
            let config = match &layer["config"] {
                Value::Object(config) => config,
                Value::Null => &empty,
                other => {
                    return Err(malformed(format!(
                        "layer {i}: \"config\" must be an object, not {other}"
                    )));
                }
            };
            model.add_boxed(
                from_config(class, config).map_err(|e| malformed(format!("layer {i}: {e}")))?,
            );
            let name = config.get("name").and_then(Value::as_str);
            let given = model.network.entries.last().expect("just added");
            if name.is_some_and(|name| name != given.name) {
                return Err(malformed(format!(
                    "layer {i} is named {:?}, but convnet names it {:?} (names follow the \
                     classes, as Keras names them by default)",
                    name.unwrap_or_default(),
                    given.name
                )));
            }
        }
        Ok(model)
    }

    /// What `compile` chose, as JSON: the loss ([`Loss::config`]: its
    /// name, or an object with its options), the metrics and the
    /// optimizer's config; `None` before `compile`.
    pub(crate) fn compile_json(&self) -> Option<String> {
        let compiled = self.compiled.as_ref()?;
        let metrics: Vec<&str> = compiled.scoring.metrics.iter().map(|m| m.name()).collect();
        let config = json!({
            "loss": compiled.scoring.loss.config(),
            "metrics": metrics,
            "optimizer": compiled.optimizer.config(),
        });
        Some(config.to_string())
    }

    /// Compiles the model as [`Sequential::compile_json`] describes.
    pub(crate) fn compile_from_json(&mut self, json: &str) -> Result<()> {
        let bad = |what: &str| Error::InvalidArgument(format!("compile config: {what}"));
        let value: Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
        // A name (every file before the loss options), or an object.
        let loss = match value.get("loss") {
            None => return Err(bad("no \"loss\"")),
            Some(loss) => Loss::from_config(loss)?,
        };
        let metrics = value["metrics"]
            .as_array()
            .ok_or_else(|| bad("no \"metrics\" list"))?
            .iter()
            .map(|m| {
                m.as_str()
                    .ok_or_else(|| bad("a metric is not a name"))?
                    .parse()
            })
            .collect::<Result<Vec<Metric>>>()?;
        let optimizer = match &value["optimizer"] {
            Value::Object(config) => optimizers::from_config(config)?,
            _ => return Err(bad("no \"optimizer\" object")),
        };
        self.compile_boxed(loss, optimizer, &metrics)
    }
}
