//! Scoring a batch: the loss (and its gradient, when training) and the
//! metrics, summed over the batches of an epoch in a [`Tally`].

use super::network::Slots;
use crate::losses::Loss;
use crate::metrics::Metric;
use crate::{Error, Result};

/// What `compile` chose for scoring a batch.
#[derive(Clone)]
pub(crate) struct Scoring {
    pub loss: Loss,
    pub metrics: Vec<Metric>,
    /// Whether the loss takes over the derivative of the output
    /// activation (softmax or sigmoid: see [`Loss::fuses_with`]).
    pub fused: bool,
}

/// Running sums of the loss and metrics over the batches of an epoch.
pub(crate) struct Tally {
    pub samples: usize,
    pub loss: f64,
    /// Per metric, the sum of its per-sample values (for accuracy, the
    /// samples right; a fraction each with binary accuracy).
    pub correct: Vec<f64>,
}

impl Tally {
    pub fn new(metrics: usize) -> Self {
        Tally {
            samples: 0,
            loss: 0.0,
            correct: vec![0.0; metrics],
        }
    }

    /// Counts `other`'s samples too.
    pub fn add(&mut self, other: &Tally) {
        self.samples += other.samples;
        self.loss += other.loss;
        for (mine, theirs) in self.correct.iter_mut().zip(&other.correct) {
            *mine += theirs;
        }
    }

    /// `(name, mean)` of the loss and each metric, names prefixed (`val_`).
    pub fn logs(&self, metrics: &[Metric], prefix: &str) -> Vec<(String, f64)> {
        let n = self.samples.max(1) as f64;
        let mut logs = vec![(format!("{prefix}loss"), self.loss / n)];
        for (metric, &correct) in metrics.iter().zip(&self.correct) {
            logs.push((format!("{prefix}{}", metric.name()), correct / n));
        }
        logs
    }
}

impl Scoring {
    /// Adds the loss (summed) and correct counts of the batch in `slots`
    /// to `tally`; with `grad_scale`, also writes the loss gradient into
    /// the last gradient slot, each sample's multiplied by it (`1 / batch
    /// size` for the mean loss of a whole batch).
    pub fn score(
        &self,
        slots: &mut Slots,
        tally: &mut Tally,
        grad_scale: Option<f32>,
    ) -> Result<()> {
        let Slots {
            activations,
            gradients,
            targets,
            ..
        } = slots;
        let output = activations.last().expect("a slot per layer output");
        let batch = output.shape()[0].max(1);
        let width = output.len() / batch;
        let pred = output.as_slice().expect("standard layout");
        self.loss.check_labels(targets, width)?;
        let grad = grad_scale.map(|_| {
            let slot = gradients.last_mut().expect("a slot per layer output");
            crate::layers::resize(slot, output.shape());
            slot.as_slice_mut().expect("standard layout")
        });
        let scale = grad_scale.unwrap_or(1.0);
        let loss = self
            .loss
            .compute_scaled((pred, targets), width, self.fused, (grad, scale));
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!(
                "the loss became {loss} (not a finite number): the training diverged; \
                 try a smaller learning rate or check the inputs for NaN or huge values"
            )));
        }
        tally.loss += loss;
        tally.samples += pred.len() / width;
        for (metric, correct) in self.metrics.iter().zip(&mut tally.correct) {
            *correct += metric.total(self.loss, pred, targets, width);
        }
        Ok(())
    }
}
