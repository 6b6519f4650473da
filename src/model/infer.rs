//! `evaluate` and `predict`, on `&self`: each call runs the layers'
//! inference passes with slots of its own, so one trained model can serve
//! several threads at once.

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};

use rayon::prelude::*;

use super::Sequential;
use super::network::Slots;
use super::replicas::SAMPLES_PER_REPLICA;
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

    /// Runs the layers on the samples `batch` of `x`, in pieces of at most
    /// [`SAMPLES_PER_REPLICA`] side by side (each with slots of its own),
    /// and returns what `read(piece, slots)` makes of each piece's output,
    /// in order. As with training's replicas, each piece's activations stay
    /// in the cache of the core that runs it and no layer waits for the
    /// whole batch; outputs do not depend on how samples are grouped.
    /// (cifar10-cnn, `predict` at batch 128 on two threads: 9.9 -> 9.1 ms
    /// per batch at best, median ratio 0.90 over 12 alternated runs.)
    fn forward_pieces<T: Send>(
        &self,
        x: &dyn Samples,
        batch: &[usize],
        read: impl Fn(&[usize], &mut Slots) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        batch
            .par_chunks(SAMPLES_PER_REPLICA)
            .map(|piece| {
                self.with_slots(|slots| {
                    slots.load_inputs(x, piece, &self.network.input_shape)?;
                    self.network.forward(slots);
                    read(piece, slots)
                })
            })
            .collect()
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
        for batch in indices.chunks(batch_size.max(1)) {
            let pieces = self.forward_pieces(x, batch, |piece, slots| {
                slots.load_targets(y, piece)?;
                let mut tally = Tally::new(scoring.metrics.len());
                scoring.score(slots, &mut tally, None)?;
                Ok(tally)
            })?;
            pieces.iter().for_each(|piece| tally.add(piece));
        }
        Ok(tally)
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
        for batch in indices.chunks(batch_size.max(1)) {
            let pieces = self.forward_pieces(x, batch, |_, slots| {
                Ok(slots.output().as_slice().expect("standard layout").to_vec())
            })?;
            pieces.iter().for_each(|piece| out.extend_from_slice(piece));
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("sizes match"))
    }
}
