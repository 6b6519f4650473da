//! Timing one training step stage by stage (`convnet bench`).

use std::time::Instant;

use super::Sequential;
use super::score::Tally;
use crate::Result;
use crate::data::Samples;
use crate::layers::TrainingStep;

impl Sequential {
    /// Times one training step on the samples of `x` and `y` at `indices`,
    /// layer by layer: `(layer name, forward seconds, backward seconds)`.
    /// Layers that run as one fused stage (see [`Sequential::plan_string`])
    /// show the stage's time on its first layer and zero on the others.
    /// The parameters are not updated.
    pub fn profile_step(
        &mut self,
        x: &dyn Samples,
        y: &dyn Samples,
        indices: &[usize],
    ) -> Result<Vec<(String, f64, f64)>> {
        let started = Instant::now();
        self.profile_step_with(x, y, indices, &|| started.elapsed().as_secs_f64())
    }

    /// [`Sequential::profile_step`] timed by `clock` (seconds from any
    /// fixed start): for example the CPU time of the calling thread,
    /// which a one-thread run on a busy machine keeps steady where wall
    /// time is not.
    pub fn profile_step_with(
        &mut self,
        x: &dyn Samples,
        y: &dyn Samples,
        indices: &[usize],
        clock: &dyn Fn() -> f64,
    ) -> Result<Vec<(String, f64, f64)>> {
        self.prepare()?;
        self.check_pair(x, y, "profile_step")?;
        let (network, slots) = (&mut self.network, &mut self.slots);
        slots.load_inputs(x, indices, &network.input_shape)?;
        slots.load_targets(y, indices)?;
        let mut times: Vec<_> = network
            .entries
            .iter()
            .map(|e| (e.name.clone(), 0.0, 0.0))
            .collect();
        let position = TrainingStep {
            step: self.steps,
            first_sample: 0,
        };
        let stages = network.plan.stages.len();
        for s in 0..stages {
            let started = clock();
            network.forward_stage_train(s, slots, position);
            times[network.plan.stages[s].layers.start].1 = clock() - started;
        }
        let scoring = &self.compiled.as_ref().expect("checked").scoring;
        let scale = 1.0 / indices.len() as f32;
        scoring.score(slots, &mut Tally::new(0), Some(scale))?;
        for s in (0..stages).rev() {
            let started = clock();
            network.backward_stage(s, slots);
            times[network.plan.stages[s].layers.start].2 = clock() - started;
        }
        Ok(times)
    }
}
