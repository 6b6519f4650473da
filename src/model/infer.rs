//! `evaluate` and `predict`, on `&self`: each call runs the layers'
//! inference passes with slots of its own, so one trained model can serve
//! several threads at once.

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};

use super::Sequential;
use super::network::Slots;
use super::score::Tally;
use crate::data::Samples;
use crate::{Error, Result};

/// Batch size of `evaluate` and `predict` (results do not depend on it).
pub const DEFAULT_EVAL_BATCH_SIZE: usize = 128;

/// What `evaluate` returns: the mean loss and each metric.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Scores {
    /// Mean loss over all samples.
    pub loss: f64,
    /// Metric values by name, e.g. `"accuracy"`.
    pub metrics: BTreeMap<String, f64>,
}

impl Scores {
    /// The accuracy, if it was one of the compiled metrics.
    pub fn accuracy(&self) -> Option<f64> {
        self.metrics.get("accuracy").copied()
    }
}

impl Sequential {
    /// Runs `job` with inference slots: spare ones from an earlier call,
    /// or new ones when every spare is in use by another thread.
    fn with_slots<T>(&self, job: impl FnOnce(&mut Slots) -> T) -> T {
        // A poisoned lock only means another call panicked: slots are scratch.
        let spare = self.spare_slots.lock().map_or(None, |mut s| s.pop());
        let mut slots = spare.unwrap_or_else(|| Slots::for_network(&self.network));
        let result = job(&mut slots);
        if let Ok(mut spare) = self.spare_slots.lock() {
            spare.push(slots);
        }
        result
    }

    /// The summed loss and metric counts on `(x, y)`, `batch_size` samples
    /// at a time.
    pub(super) fn tally(
        &self,
        x: &dyn Samples,
        y: &dyn Samples,
        batch_size: usize,
    ) -> Result<Tally> {
        let scoring = &self.compiled()?.scoring;
        let mut tally = Tally::new(scoring.metrics.len());
        let indices: Vec<usize> = (0..x.len()).collect();
        self.with_slots(|slots| {
            for batch in indices.chunks(batch_size.max(1)) {
                slots.load_inputs(x, batch, &self.network.input_shape)?;
                slots.load_targets(y, batch)?;
                self.network.forward(slots);
                scoring.score(slots, &mut tally, None)?;
            }
            Ok(tally)
        })
    }

    /// The mean loss and metrics of the model on `(x, y)`.
    pub fn evaluate(&self, x: &dyn Samples, y: &dyn Samples) -> Result<Scores> {
        self.check_ready("evaluate")?;
        self.check_pair(x, y, "evaluate")?;
        self.check_batch(DEFAULT_EVAL_BATCH_SIZE.min(x.len()), "evaluate")?;
        let metrics = &self.compiled()?.scoring.metrics;
        let tally = self.tally(x, y, DEFAULT_EVAL_BATCH_SIZE)?;
        let n = tally.samples as f64;
        Ok(Scores {
            loss: tally.loss / n,
            metrics: metrics
                .iter()
                .zip(&tally.correct)
                .map(|(m, &c)| (m.name().to_string(), c / n))
                .collect(),
        })
    }

    /// The model's outputs (for a softmax model, class probabilities) for
    /// every sample of `x`, shape `(N, ..output_shape)`.
    pub fn predict(&self, x: &dyn Samples) -> Result<ArrayD<f32>> {
        self.predict_with_batch_size(x, DEFAULT_EVAL_BATCH_SIZE)
    }

    /// [`Sequential::predict`], `batch_size` samples at a time.
    pub fn predict_with_batch_size(
        &self,
        x: &dyn Samples,
        batch_size: usize,
    ) -> Result<ArrayD<f32>> {
        self.check_ready("predict")?;
        self.check_inputs(x, "predict")?;
        self.check_batch(batch_size.clamp(1, x.len()), "predict")?;
        let width: usize = self.output_shape().iter().product();
        let mut shape = vec![x.len()];
        shape.extend_from_slice(self.output_shape());
        let total = x.len().checked_mul(width).ok_or_else(|| {
            Error::Shape(format!(
                "predict: {} samples of {width} outputs do not fit in memory",
                x.len()
            ))
        })?;
        let mut out = Vec::with_capacity(total);
        let indices: Vec<usize> = (0..x.len()).collect();
        self.with_slots(|slots| {
            for batch in indices.chunks(batch_size.max(1)) {
                slots.load_inputs(x, batch, &self.network.input_shape)?;
                self.network.forward(slots);
                out.extend_from_slice(slots.output().as_slice().expect("standard layout"));
            }
            Ok::<(), Error>(())
        })?;
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("sizes match"))
    }
}
