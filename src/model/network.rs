//! A network: the built layers, their plan, and the passes that run the
//! plan's stages over a batch held in [`Slots`]. A model is one network;
//! data-parallel training runs copies of it (replicas), each with slots
//! of its own; inference runs it on `&self` with slots made per call.

use ndarray::{ArrayD, IxDyn};

use super::plan::{Plan, StageKind, pooling_conv};
use crate::Result;
use crate::data::Samples;
use crate::layers::{
    BackwardIo, ChannelAffine, ConvOutputGrad, Layer, PlanRole, TrainingStep, max_pooling2d, resize,
};

/// A layer with its Keras name and the shape of its output (per sample).
pub(crate) struct Entry {
    pub name: String,
    pub layer: Box<dyn Layer>,
    pub output_shape: Vec<usize>,
}

/// The layers of a model and how they run.
pub(crate) struct Network {
    pub entries: Vec<Entry>,
    pub plan: Plan,
    pub input_shape: Vec<usize>,
}

/// What the passes over one batch read and write, kept apart from the
/// layers so that a network can run on `&self`.
#[derive(Default)]
pub(crate) struct Slots {
    /// `activations[i]` is the input of layer `i`; the last, the output.
    pub activations: Vec<ArrayD<f32>>,
    /// `gradients[i]` is the gradient of the loss with respect to
    /// `activations[i]`.
    pub gradients: Vec<ArrayD<f32>>,
    /// Per stage: the pooling winners of a fused stage.
    pub winners: Vec<Vec<u8>>,
    /// The batch's targets, `width` values per sample.
    pub targets: Vec<f32>,
}

impl Slots {
    /// Empty slots for `network`.
    pub fn for_network(network: &Network) -> Slots {
        let empty = || ArrayD::zeros(IxDyn(&[0]));
        let slots = network.entries.len() + 1;
        Slots {
            activations: (0..slots).map(|_| empty()).collect(),
            gradients: (0..slots).map(|_| empty()).collect(),
            winners: vec![Vec::new(); network.plan.stages.len().max(network.plan.inference.len())],
            targets: Vec::new(),
        }
    }

    /// The network's output for the batch.
    pub fn output(&self) -> &ArrayD<f32> {
        self.activations.last().expect("a slot per layer output")
    }

    /// Loads the samples at `indices` of `x` into the input slot.
    pub fn load_inputs(
        &mut self,
        x: &dyn Samples,
        indices: &[usize],
        input_shape: &[usize],
    ) -> Result<()> {
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(input_shape);
        resize(&mut self.activations[0], &shape);
        let input = self.activations[0].as_slice_mut().expect("standard layout");
        x.gather(indices, input)
    }

    /// Loads the targets at `indices` of `y`.
    pub fn load_targets(&mut self, y: &dyn Samples, indices: &[usize]) -> Result<()> {
        let width: usize = y.sample_shape().iter().product();
        self.targets.resize(indices.len() * width, 0.0);
        y.gather(indices, &mut self.targets)
    }
}

impl Network {
    /// Layer output slot `input`, to read, and slot `output` (after it),
    /// to write: a stage's own input and output, or the input of a stage
    /// before it that this one reads in its place.
    fn slots_io(
        activations: &mut [ArrayD<f32>],
        input: usize,
        output: usize,
    ) -> (&ArrayD<f32>, &mut ArrayD<f32>) {
        let (inputs, outputs) = activations.split_at_mut(output);
        (&inputs[input], &mut outputs[0])
    }

    /// Inference: the batch in the input slot through every stage of the
    /// inference plan.
    pub fn forward(&self, slots: &mut Slots) {
        let stages = &self.plan.inference;
        for (s, stage) in stages.iter().enumerate() {
            if stage.view || stages.get(s + 1).is_some_and(|next| next.fed) {
                // The next stage reads its input in place, or runs it.
                continue;
            }
            if stage.fed {
                self.forward_fed(s, slots);
                continue;
            }
            // After a view, its input is read in place of its output.
            let read = match s.checked_sub(1).map(|b| &stages[b]) {
                Some(before) if before.view => before.layers.start,
                _ => stage.layers.start,
            };
            let (input, output) = Self::slots_io(&mut slots.activations, read, stage.layers.end);
            let first = self.entries[stage.layers.start].layer.as_ref();
            // A folded stage runs a copy of its convolution that carries
            // the affine layer in its weights (made per batch: the weights
            // may have changed since the last).
            let folded = stage.fold.map(|fold| {
                let (scale, shift) = channel_affine(self.entries[fold.affine].layer.as_ref());
                pooling_conv(first).folded((&scale, &shift), fold.activation)
            });
            let first = folded.as_deref().unwrap_or(first);
            match stage.kind {
                StageKind::Layer => first.forward(input, output),
                StageKind::ConvPool { .. } => {
                    pooling_conv(first).forward_pooled(input, output, &mut slots.winners[s])
                }
                StageKind::AffineRelu { .. } => {
                    unreachable!("the inference plan runs a normalization and relu one by one")
                }
            }
        }
    }

    /// Training: as [`Network::forward`], each layer keeping what its
    /// backward pass needs.
    pub fn forward_train(&mut self, slots: &mut Slots, step: TrainingStep) {
        for s in 0..self.plan.stages.len() {
            self.forward_stage_train(s, slots, step);
        }
    }

    /// Stage `s` of [`Network::forward_train`]. A stage that feeds the
    /// next runs inside it (see [`Stage::fed`]).
    pub fn forward_stage_train(&mut self, s: usize, slots: &mut Slots, step: TrainingStep) {
        let stages = &self.plan.stages;
        if stages.get(s + 1).is_some_and(|next| next.fed) {
            return;
        }
        if stages[s].fed {
            return self.forward_fed_train(s, slots);
        }
        let stage = &stages[s];
        let (start, end) = (stage.layers.start, stage.layers.end);
        let (input, output) = Self::slots_io(&mut slots.activations, start, end);
        let first = self.entries[stage.layers.start].layer.as_mut();
        match stage.kind {
            StageKind::Layer => first.forward_train(input, output, step),
            StageKind::ConvPool { .. } => {
                fused(first).forward_pooled_train(input, output, &mut slots.winners[s])
            }
            StageKind::AffineRelu { .. } => affine_relu(first).forward_train_relu(input, output),
        }
    }

    /// Back-propagates the loss gradient in the last gradient slot to every
    /// parameter (the first layer's input gets none).
    pub fn backward(&mut self, slots: &mut Slots) {
        for s in (0..self.plan.stages.len()).rev() {
            self.backward_stage(s, slots);
        }
    }

    /// Stage `s` of [`Network::backward`]. A stage that hands its input
    /// gradient over runs the first layer's backward pass too, which then
    /// has nothing left to do.
    pub fn backward_stage(&mut self, s: usize, slots: &mut Slots) {
        let stage = &self.plan.stages[s];
        if stage.hands_over {
            return self.backward_handing_over(s, slots);
        }
        if self
            .plan
            .stages
            .get(s + 1)
            .is_some_and(|next| next.hands_over)
        {
            return;
        }
        let (start, end) = (stage.layers.start, stage.layers.end);
        let (below, above) = slots.gradients.split_at_mut(start + 1);
        let grad_input = if start == 0 {
            None
        } else {
            Some(&mut below[start])
        };
        let first = self.entries[start].layer.as_mut();
        match stage.kind {
            StageKind::Layer => first.backward(
                &slots.activations[start],
                &slots.activations[end],
                &mut above[end - start - 1],
                grad_input,
            ),
            StageKind::ConvPool {
                backward_fused: true,
                ..
            } => fused(first).backward_pooled(
                &slots.activations[start],
                (
                    &slots.activations[end],
                    &above[end - start - 1],
                    &slots.winners[s],
                ),
                grad_input,
            ),
            StageKind::ConvPool { pool, .. } => {
                // The gradient of the convolution's output goes into its
                // own slot (the one after it), relu's derivative applied
                // at the winners from the pooled output.
                let (conv_grad, rest) = above.split_first_mut().expect("slots");
                let grad_pooled = &rest[end - start - 2];
                let pooled = Some(&slots.activations[end]);
                max_pooling2d::backward_through_winners(
                    &pool,
                    &slots.winners[s],
                    grad_pooled,
                    pooled,
                    conv_grad,
                );
                fused(first).backward_linear(&slots.activations[start], conv_grad, grad_input);
            }
            // The gradient of relu's output, relu's derivative applied by
            // the normalization's passes (the slots of the normalization's
            // own output and its gradient stay empty).
            StageKind::AffineRelu { relu_derivative } => affine_relu(first).backward_relu(
                &slots.activations[start],
                &slots.activations[end],
                &above[end - start - 1],
                grad_input,
                relu_derivative,
            ),
        }
    }
}

impl Network {
    /// Inference stage `s`, fed chunk by chunk by stage `s - 1` (see
    /// [`Stage::fed`]).
    fn forward_fed(&self, s: usize, slots: &mut Slots) {
        let (stage, before) = (&self.plan.inference[s], &self.plan.inference[s - 1]);
        let (input, output) = Self::slots_io(
            &mut slots.activations,
            before.layers.start,
            stage.layers.end,
        );
        let before = pooling_conv(self.entries[before.layers.start].layer.as_ref());
        let conv = pooling_conv(self.entries[stage.layers.start].layer.as_ref());
        let winners = match stage.kind {
            StageKind::ConvPool { .. } => Some(&mut slots.winners[s]),
            _ => None,
        };
        conv.forward_fed(before, input, output, winners);
    }

    /// Training stage `s`, fed chunk by chunk by stage `s - 1` (see
    /// [`Stage::fed`]).
    fn forward_fed_train(&mut self, s: usize, slots: &mut Slots) {
        let (stage, before) = (&self.plan.stages[s], &self.plan.stages[s - 1]);
        let (start, end) = (stage.layers.start, stage.layers.end);
        // The stage's input is the output of the stage before.
        let (inputs, rest) = slots.activations.split_at_mut(start);
        let (ours, after) = rest.split_at_mut(end - start);
        let (input, before_output) = (&inputs[before.layers.start], &mut ours[0]);
        let output = &mut after[0];
        let winners = match stage.kind {
            StageKind::ConvPool { .. } => Some(&mut slots.winners[s]),
            _ => None,
        };
        let (layers_before, layers) = self.entries.split_at_mut(start);
        let before = fused(layers_before[before.layers.start].layer.as_mut());
        let layer = fused(layers[0].layer.as_mut());
        layer.forward_fed_train((before, input, before_output), output, winners);
    }

    /// Stage `s`'s backward pass, handing its input gradient chunk by
    /// chunk to the convolution of stage `s - 1`, whose backward pass
    /// runs on it (see [`Stage::hands_over`]).
    fn backward_handing_over(&mut self, s: usize, slots: &mut Slots) {
        let stage = &self.plan.stages[s];
        let (start, end) = (stage.layers.start, stage.layers.end);
        let before = self.plan.stages[s - 1].layers.start;
        let (below, above) = slots.gradients.split_at_mut(start);
        let grad = match stage.kind {
            StageKind::ConvPool { .. } => ConvOutputGrad::Pooled {
                pooled: &slots.activations[end],
                grad: &above[end - start],
                winners: &slots.winners[s],
            },
            _ => ConvOutputGrad::Output {
                output: &slots.activations[end],
                grad: &above[end - start],
            },
        };
        let before_io = BackwardIo {
            input: &slots.activations[before],
            // The first layer's input gets no gradient.
            grad_input: (before > 0).then(|| &mut below[before]),
        };
        let (layers_before, layers) = self.entries.split_at_mut(start);
        let before_layer = fused(layers_before[before].layer.as_mut());
        let layer = fused(layers[0].layer.as_mut());
        layer.backward_handing_over(&slots.activations[start], grad, (before_layer, before_io));
    }
}

/// The inference `(scale, shift)` of a layer the plan folded.
fn channel_affine(layer: &dyn Layer) -> (Vec<f32>, Vec<f32>) {
    match layer.plan_role() {
        PlanRole::ChannelAffine(affine) => affine.inference_affine(),
        _ => unreachable!("the plan folds only channel-affine layers"),
    }
}

/// The [`crate::layers::PoolingConv`] side of a layer the plan fused.
fn fused(layer: &mut dyn Layer) -> &mut dyn crate::layers::PoolingConv {
    layer
        .as_pooling_conv()
        .expect("the plan fuses only convolutions")
}

/// The [`ChannelAffine`] side of a layer the plan fused with relu.
fn affine_relu(layer: &mut dyn Layer) -> &mut dyn ChannelAffine {
    layer
        .as_channel_affine()
        .expect("the plan fuses relu only into channel-affine layers")
}
