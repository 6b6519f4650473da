//! The execution plan: which layers run as one fused stage, decided once
//! when the model is built, never per batch.
//!
//! A stage is a single layer, or a convolution whose output goes through
//! relu and 2x2 max pooling: Conv2D(relu) → MaxPooling2D, or Conv2D →
//! Activation(relu) → MaxPooling2D. Where the kernels allow (the
//! filter-vectorised ones on AVX-512; Winograd's on every CPU), such a
//! stage computes the pooled output in one pass and never stores the
//! convolution's own output; its backward pass applies relu's derivative
//! at the pooling winners and, where the kernels allow (a first layer on
//! the filter-vectorised kernels; Winograd's at any depth, with the input
//! gradient), computes the gradients in the same pass.
//!
//! In training, a BatchNormalization followed by Activation(relu) is a
//! stage too: the normalization applies relu as it stores its output, and
//! its backward passes apply relu's derivative as they read the gradient,
//! so relu costs no pass and no tensor of its own (its output slot is the
//! stage's; the normalization's own output is never stored).
//!
//! Neighbouring convolution stages may also pass a tensor chunk by chunk
//! instead of whole, so that it is read while it is still in the cache:
//! in training a Winograd stage hands its input gradient to the
//! convolution before it ([`Stage::hands_over`]); at inference that
//! convolution runs chunk by chunk into the Winograd stage
//! ([`Stage::fed`]).
//!
//! The planner sees layers only through [`Layer::plan_role`]; for every
//! convolution and normalization it did not fuse, the plan says why.

use std::ops::Range;

use super::network::Entry;
use crate::Activation;
use crate::kernels::Window2d;
use crate::layers::{Layer, Padding, PlanRole, PoolingConv};

/// How a stage runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StageKind {
    /// One layer, through [`Layer`]'s passes.
    Layer,
    /// A convolution, relu and 2x2 max pooling in one pass
    /// ([`PoolingConv`]); `backward_fused`: the backward pass is one pass
    /// too (else: the pooling's, then the convolution's).
    ConvPool {
        /// The pooling's windows (over the convolution's output).
        pool: Window2d,
        /// Whether the backward pass is one pass as well.
        backward_fused: bool,
    },
    /// In training only: a [`ChannelAffine`] layer (BatchNormalization)
    /// that applies the relu of the Activation layer after it as it stores
    /// its output, and relu's derivative in its backward passes.
    AffineRelu {
        /// Whether the stage applies relu's derivative: not where the
        /// layer after the stage (max pooling) takes it over, as it would
        /// from the Activation layer ([`arrange_derivatives`] decides).
        relu_derivative: bool,
    },
}

/// A group of consecutive layers that runs as one.
#[derive(Clone, Debug)]
pub(crate) struct Stage {
    /// The layers, by index.
    pub layers: Range<usize>,
    pub kind: StageKind,
    /// At inference only: a per-channel affine layer (BatchNormalization)
    /// after the convolution, folded into its weights.
    pub fold: Option<Fold>,
    /// In training: the backward pass hands the input gradient, chunk by
    /// chunk, to the convolution of the stage before, whose backward pass
    /// runs on each chunk while it is in the cache; the input gradient is
    /// never stored whole ([`arrange_handovers`]).
    pub hands_over: bool,
    /// The stage before (a convolution of its own) runs chunk by chunk
    /// into this one, whose convolution reads each chunk while it is in
    /// the cache ([`arrange_feeds`]). At inference that stage's output is
    /// never stored; in training it is (the backward passes read it), but
    /// this stage's read of it comes from the cache.
    pub fed: bool,
    /// At inference only: a layer that only reshapes, before one that reads
    /// each sample as a flat run, which reads this stage's input in place
    /// instead ([`arrange_views`]); this stage never runs.
    pub view: bool,
}

impl Stage {
    /// Layers `layers` run as `kind`, with nothing folded, handed over,
    /// fed or read in place (the `arrange_*` passes decide those).
    fn new(layers: Range<usize>, kind: StageKind) -> Stage {
        Stage {
            layers,
            kind,
            fold: None,
            hands_over: false,
            fed: false,
            view: false,
        }
    }
}

/// A [`ChannelAffine`] layer folded into the convolution before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fold {
    /// The affine layer's index.
    pub affine: usize,
    /// The activation the folded convolution applies (of the layer after
    /// the affine one, if it is an Activation layer).
    pub activation: Activation,
}

/// The stages of a model, in order, and why convolutions did not fuse.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    /// The stages of training.
    pub stages: Vec<Stage>,
    /// The stages of inference: those of training, but where a
    /// BatchNormalization folds into the convolution before it.
    pub inference: Vec<Stage>,
    /// `(layer index, reason)` for each convolution that runs on its own.
    pub unfused: Vec<(usize, String)>,
}

impl Plan {
    /// Plans `entries` (built layers).
    pub fn new(entries: &[Entry]) -> Plan {
        let mut plan = Plan::default();
        let mut i = 0;
        while i < entries.len() {
            let fused = conv_pool(entries, i).or_else(|reason| match reason {
                None => affine_relu(entries, i),
                Some(_) => Err(reason),
            });
            let stage = fused.unwrap_or_else(|reason| {
                if let Some(reason) = reason {
                    plan.unfused.push((i, reason));
                }
                Stage::new(i..i + 1, StageKind::Layer)
            });
            i = stage.layers.end;
            plan.stages.push(stage);
        }
        plan.inference = inference_stages(entries, &plan.stages);
        arrange_feeds(entries, &mut plan.inference, false);
        arrange_feeds(entries, &mut plan.stages, true);
        arrange_views(entries, &mut plan.inference);
        plan
    }

    /// Whether any stage runs more than one layer.
    pub fn fuses_anything(&self) -> bool {
        self.stages.iter().any(|s| s.layers.len() > 1)
    }

    /// One line per fused stage and per convolution left on its own.
    pub fn describe(&self, entries: &[Entry]) -> String {
        let names = |range: &Range<usize>| {
            entries[range.clone()]
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(" + ")
        };
        let mut out = String::from("Execution plan:\n");
        for stage in &self.stages {
            match stage.kind {
                StageKind::ConvPool { backward_fused, .. } => {
                    let backward = if backward_fused {
                        "backward in one pass too"
                    } else {
                        "backward: pooling, then the convolution"
                    };
                    out += &format!(
                        "  fused: {} (relu and 2x2 max pooling inside the convolution; {backward})\n",
                        names(&stage.layers)
                    );
                }
                StageKind::AffineRelu { relu_derivative } => {
                    out += &format!(
                        "  fused: {} in training (relu applied as {} stores its output; {})\n",
                        names(&stage.layers),
                        entries[stage.layers.start].name,
                        relu_derivative_by(stage, relu_derivative, entries),
                    );
                }
                StageKind::Layer => {}
            }
        }
        for stage in self.inference.iter().filter(|s| s.fold.is_some()) {
            let pooled = matches!(stage.kind, StageKind::ConvPool { .. });
            out += &format!(
                "  inference: {} folded into one convolution{}\n",
                names(&stage.layers),
                if pooled {
                    " that pools as it computes"
                } else {
                    ""
                }
            );
        }
        for (s, stage) in self.stages.iter().enumerate().filter(|(_, s)| s.hands_over) {
            let layer = &entries[stage.layers.start].name;
            let before = &entries[self.stages[s - 1].layers.start].name;
            out += &format!(
                "  hands over: {layer} gives its input gradient to {before} chunk by chunk \
                 (never stored whole; {before}'s backward pass runs on it in the cache)\n"
            );
        }
        for (s, stage) in self.stages.iter().enumerate().filter(|(_, s)| s.fed) {
            let layer = &entries[stage.layers.start].name;
            let before = &entries[self.stages[s - 1].layers.start].name;
            out += &format!(
                "  training: {before} runs chunk by chunk into {layer} \
                 (its output still stored for the backward pass; {layer} reads it in the cache)\n"
            );
        }
        for (s, stage) in self.inference.iter().enumerate().filter(|(_, s)| s.fed) {
            let layer = &entries[stage.layers.start].name;
            let before = &entries[self.inference[s - 1].layers.start].name;
            out += &format!(
                "  inference: {before} runs chunk by chunk into {layer} \
                 (its output never stored whole; {layer} reads it in the cache)\n"
            );
        }
        for (s, stage) in self.inference.iter().enumerate().filter(|(_, s)| s.view) {
            let layer = &entries[stage.layers.start].name;
            let next = &entries[self.inference[s + 1].layers.start].name;
            out += &format!(
                "  inference: {layer} does not run ({next} reads its input in place: no copy)\n"
            );
        }
        for (i, reason) in &self.unfused {
            out += &format!("  not fused: {}: {reason}\n", entries[*i].name);
        }
        if !self.fuses_anything() && self.unfused.is_empty() {
            out += "  every layer runs on its own (no convolution followed by pooling, \
                    no batch normalization followed by relu)\n";
        }
        out
    }
}

/// Which pass applies relu's derivative in an [`StageKind::AffineRelu`]
/// stage, in words.
fn relu_derivative_by(stage: &Stage, relu_derivative: bool, entries: &[Entry]) -> String {
    if relu_derivative {
        return "its backward passes apply relu's derivative".into();
    }
    match entries.get(stage.layers.end) {
        Some(next) => format!("relu's derivative left to {}", next.name),
        None => "relu's derivative left to the loss".into(),
    }
}

/// The fused stage starting at layer `i`, or why there is none: `None`
/// when layer `i` is not a convolution (nothing to say).
fn conv_pool(entries: &[Entry], i: usize) -> Result<Stage, Option<String>> {
    let Some(conv) = convolution_of(&entries[i]) else {
        return Err(None);
    };
    let activation = conv.conv_activation();
    let mut next = i + 1;
    let relu_layer = entries
        .get(next)
        .is_some_and(|e| matches!(e.layer.plan_role(), PlanRole::Activation(Activation::Relu)));
    if relu_layer {
        next += 1;
    }
    let relu = activation == Activation::Relu || relu_layer;
    if !matches!(activation, Activation::Relu | Activation::Linear) || !relu {
        return Err(Some(format!(
            "its activation is {} (the fused stage needs relu)",
            activation.name()
        )));
    }
    let Some(pool) = entries.get(next) else {
        return Err(Some("nothing follows it to pool its output".into()));
    };
    if !matches!(pool.layer.plan_role(), PlanRole::MaxPool2x2) {
        return Err(Some(format!(
            "followed by {} ({}), where the fused stage needs 2x2 max pooling with stride 2",
            pool.name,
            pool.layer.class_name(),
        )));
    }
    if let Some(reason) = conv.pooled_forward_unavailable() {
        return Err(Some(reason));
    }
    let window = pool_window(conv);
    let kind = StageKind::ConvPool {
        pool: window,
        // A first layer needs no input gradient.
        backward_fused: conv.pooled_backward_applies(i > 0),
    };
    Ok(Stage::new(i..next + 1, kind))
}

/// The fused training stage of a [`ChannelAffine`] layer at `i` and the
/// Activation(relu) layer after it, or why there is none: `None` when
/// layer `i` is not channel-affine (nothing to say).
fn affine_relu(entries: &[Entry], i: usize) -> Result<Stage, Option<String>> {
    let PlanRole::ChannelAffine(_) = entries[i].layer.plan_role() else {
        return Err(None);
    };
    let Some(next) = entries.get(i + 1) else {
        return Err(Some(
            "nothing follows it (the fused stage needs relu)".into(),
        ));
    };
    match next.layer.plan_role() {
        // Until the derivative hand-offs are arranged: applying relu's
        // derivative again where max pooling did changes nothing.
        PlanRole::Activation(Activation::Relu) => Ok(Stage::new(
            i..i + 2,
            StageKind::AffineRelu {
                relu_derivative: true,
            },
        )),
        PlanRole::Activation(other) => Err(Some(format!(
            "followed by {} ({}), where the fused stage needs relu",
            next.name,
            other.name()
        ))),
        _ => Err(Some(format!(
            "followed by {} ({}), where the fused stage needs an Activation(relu) layer",
            next.name,
            next.layer.class_name()
        ))),
    }
}

/// The inference stages: `training`'s, except that a convolution with no
/// activation followed by a [`ChannelAffine`] layer (and maybe an
/// Activation layer, and then relu's 2x2 max pooling) runs as one
/// convolution with the affine map in its weights.
fn inference_stages(entries: &[Entry], training: &[Stage]) -> Vec<Stage> {
    let mut stages = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        // A channel-affine + relu stage is training's alone: at inference
        // such layers fold into a convolution or run one by one, as they
        // always have.
        let trained =
            |s: &&Stage| s.layers.start == i && !matches!(s.kind, StageKind::AffineRelu { .. });
        let stage = folded_stage(entries, i)
            .or_else(|| training.iter().find(trained).cloned())
            .unwrap_or_else(|| Stage::new(i..i + 1, StageKind::Layer));
        i = stage.layers.end;
        stages.push(stage);
    }
    stages
}

/// Marks each stage that a convolution before it (a stage of its own,
/// not folded) feeds chunk by chunk ([`Stage::fed`]): the stage's
/// convolution can take its input a chunk of images at a time (Winograd).
/// At inference the convolution before then writes each chunk into a
/// buffer of the thread's, read while it is in the cache, instead of its
/// whole output to memory, read back by the next pass (cifar10-cnn's
/// conv2d: 16.8 MB per batch of 128, twice). In `training` it still
/// writes its whole output (its kernels must compute chunk by chunk what
/// they keep: [`PoolingConv::feeds_in_training`]), but the next pass
/// reads each chunk from the cache. A stage fed does not feed in turn.
fn arrange_feeds(entries: &[Entry], stages: &mut [Stage], training: bool) {
    for s in 1..stages.len() {
        let (before, stage) = (&stages[s - 1], &stages[s]);
        let convolution = |stage: &Stage| convolution_of(&entries[stage.layers.start]);
        let feeds = before.kind == StageKind::Layer
            && before.fold.is_none()
            && !before.fed
            && convolution(before).is_some_and(|conv| !training || conv.feeds_in_training());
        let takes = stage.fold.is_none()
            && matches!(stage.kind, StageKind::Layer | StageKind::ConvPool { .. })
            && convolution(stage).is_some_and(|conv| conv.takes_input_by_chunks());
        stages[s].fed = feeds && takes;
    }
}

/// Marks each inference stage that only reshapes ([`PlanRole::Reshape`])
/// and comes before a layer that reads samples as flat runs
/// ([`PlanRole::FlatSamples`]) as a [`Stage::view`]: the copy it would
/// make (cifar10-cnn's Flatten: 1.2 MB per batch of 128) is never made.
/// In training the layer still runs: its backward pass hands the gradient
/// back in the input's shape.
fn arrange_views(entries: &[Entry], stages: &mut [Stage]) {
    for s in 0..stages.len().saturating_sub(1) {
        let role = |stage: &Stage| entries[stage.layers.start].layer.plan_role();
        let (stage, next) = (&stages[s], &stages[s + 1]);
        stages[s].view = stage.kind == StageKind::Layer
            && matches!(role(stage), PlanRole::Reshape)
            && next.kind == StageKind::Layer
            && next.fold.is_none()
            && matches!(role(next), PlanRole::FlatSamples);
    }
}

/// The folded stage starting at convolution `i`, if there is one.
fn folded_stage(entries: &[Entry], i: usize) -> Option<Stage> {
    let conv = convolution_of(&entries[i])?;
    let affine = entries.get(i + 1)?;
    if conv.conv_activation() != Activation::Linear
        || !matches!(affine.layer.plan_role(), PlanRole::ChannelAffine(_))
    {
        return None;
    }
    let mut end = i + 2;
    let mut activation = Activation::Linear;
    if let Some(PlanRole::Activation(a)) = entries.get(end).map(|e| e.layer.plan_role()) {
        activation = a;
        end += 1;
    }
    let pools = activation == Activation::Relu
        && entries
            .get(end)
            .is_some_and(|e| matches!(e.layer.plan_role(), PlanRole::MaxPool2x2))
        && conv.pooled_forward_unavailable().is_none();
    let kind = if pools {
        end += 1;
        StageKind::ConvPool {
            pool: pool_window(conv),
            backward_fused: false,
        }
    } else {
        StageKind::Layer
    };
    let fold = Fold {
        affine: i + 1,
        activation,
    };
    Some(Stage {
        fold: Some(fold),
        ..Stage::new(i..end, kind)
    })
}

/// The 2x2, stride-2 windows over the convolution's output.
fn pool_window(conv: &dyn PoolingConv) -> Window2d {
    let [h, w, c] = conv.conv_output_shape();
    Window2d::new((h, w, c), (2, 2), (2, 2), Padding::Valid)
        .expect("a 2x2 max pooling was built on this output")
}

/// Asks each layer whose output goes into a layer that takes over relu's
/// derivative (max pooling) to skip its own, and the last layer to skip
/// its activation's (softmax, sigmoid) when the loss takes it over
/// (`fused_output`). Every layer is first reset, so that a model compiled
/// again starts afresh. A fused channel-affine + relu stage of `stages`
/// applies relu's derivative in place of its Activation layer: where
/// that layer would skip it, so does the stage.
pub(crate) fn arrange_derivatives(entries: &mut [Entry], stages: &mut [Stage], fused_output: bool) {
    for entry in entries.iter_mut() {
        entry.layer.skip_activation_derivative(false);
        entry.layer.take_relu_derivative_of_input(false);
    }
    let mut skipped = vec![false; entries.len()];
    if fused_output && let Some(last) = entries.last_mut() {
        last.layer.skip_activation_derivative(true);
        skipped[entries.len() - 1] = true;
    }
    for i in 1..entries.len() {
        let (before, after) = entries.split_at_mut(i);
        let (previous, layer) = (&mut before[i - 1].layer, &mut after[0].layer);
        if previous.activation() == Activation::Relu && layer.take_relu_derivative_of_input(true) {
            previous.skip_activation_derivative(true);
            skipped[i - 1] = true;
        }
    }
    for stage in stages.iter_mut() {
        if let StageKind::AffineRelu { relu_derivative } = &mut stage.kind {
            *relu_derivative = !skipped[stage.layers.end - 1];
        }
    }
    arrange_handovers(entries, stages);
}

/// Marks each stage that hands its input gradient over chunk by chunk
/// to the convolution before it ([`Stage::hands_over`]) where both can:
/// the stage's backward pass computes the input gradient a chunk of
/// images at a time anyway (Winograd), and the convolution before (a
/// stage of its own) can run its backward pass a chunk at a time from
/// it, its activation's derivative applied by the stage (relu's, taken
/// over as arranged above). That gradient is then read while it is in
/// the cache, never written to memory and read back (cifar10-cnn's
/// conv2d: 16.8 MB per batch of 128; conv2d_2: 7.4 MB). A convolution
/// handed a gradient does not hand its own over in turn.
fn arrange_handovers(entries: &[Entry], stages: &mut [Stage]) {
    for stage in stages.iter_mut() {
        stage.hands_over = false;
    }
    let convolution = |i: usize| convolution_of(&entries[i]);
    for s in (1..stages.len()).rev() {
        let (before, stage) = (&stages[s - 1], &stages[s]);
        let input_grad = before.layers.start > 0;
        let takes = before.kind == StageKind::Layer
            && convolution(before.layers.start)
                .is_some_and(|conv| conv.takes_output_grad_by_chunks(input_grad));
        // A stage handed a gradient runs inside the stage after it.
        let handed = stages.get(s + 1).is_some_and(|next| next.hands_over);
        let hands = !handed
            && match stage.kind {
                StageKind::Layer => true,
                StageKind::ConvPool { backward_fused, .. } => backward_fused,
                StageKind::AffineRelu { .. } => false,
            };
        stages[s].hands_over = takes
            && hands
            && convolution(stage.layers.start).is_some_and(|conv| conv.hands_over_input_grad());
    }
}

/// The [`PoolingConv`] side of a layer, if it is a convolution.
fn convolution_of(entry: &Entry) -> Option<&dyn PoolingConv> {
    match entry.layer.plan_role() {
        PlanRole::Convolution(conv) => Some(conv),
        _ => None,
    }
}

/// The [`PoolingConv`] side of a layer the plan fused.
pub(crate) fn pooling_conv(layer: &dyn Layer) -> &dyn PoolingConv {
    match layer.plan_role() {
        PlanRole::Convolution(conv) => conv,
        _ => unreachable!("the plan fuses only convolutions"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation::Relu;
    use crate::Sequential;
    use crate::layers::{ActivationLayer, Conv2D, Dense, Flatten, MaxPooling2D};

    fn planned(relu_layer: bool) -> Sequential {
        let mut model = Sequential::with_seed(1);
        let conv = Conv2D::new(6, (5, 5)).input_shape(&[28, 28, 1]);
        if relu_layer {
            model.add(conv);
            model.add(ActivationLayer::new(Relu));
        } else {
            model.add(conv.activation(Relu));
        }
        model.add(MaxPooling2D::new((2, 2)));
        model.add(Conv2D::new(16, (5, 5)).activation(Relu));
        model.add(MaxPooling2D::new((2, 2)));
        model.add(Flatten::new());
        model.add(Dense::new(10));
        model.build().unwrap();
        model
    }

    /// Kinds of the stages, and how many layers each runs.
    fn shape(model: &Sequential) -> Vec<(usize, StageKind)> {
        let stages = &model.network.plan.stages;
        stages
            .iter()
            .map(|s| (s.layers.len(), s.kind.clone()))
            .collect()
    }

    #[test]
    fn a_separate_relu_layer_gets_the_same_fused_plan() {
        let (inline, separate) = (planned(false), planned(true));
        let (a, b) = (shape(&inline), shape(&separate));
        // The separate relu makes the first stage one layer longer.
        assert_eq!(b[0].0, a[0].0 + 1);
        let kinds = |s: &[(usize, StageKind)]| s.iter().map(|k| k.1.clone()).collect::<Vec<_>>();
        assert_eq!(kinds(&a), kinds(&b));
        if crate::kernels::has_avx512() {
            let backward_fused = |s: &StageKind| {
                matches!(
                    s,
                    StageKind::ConvPool {
                        backward_fused: true,
                        ..
                    }
                )
            };
            assert!(
                backward_fused(&a[0].1),
                "LeNet's first stage fuses both passes"
            );
            assert!(matches!(
                a[1].1,
                StageKind::ConvPool {
                    backward_fused: false,
                    ..
                }
            ));
            assert_eq!(a.len(), 4, "conv+pool, conv+pool, flatten, dense");
        } else {
            eprintln!("SKIPPED (in part): this CPU has no AVX-512, so nothing fuses");
            assert!(kinds(&a).iter().all(|k| *k == StageKind::Layer));
            let reasons = &inline.network.plan.unfused;
            assert!(
                reasons.iter().all(|(_, r)| r.contains("AVX-512")),
                "{reasons:?}"
            );
        }
    }

    #[test]
    fn the_plan_says_why_a_convolution_runs_alone() {
        let mut model = Sequential::with_seed(1);
        model.add(Conv2D::new(8, (3, 3)).input_shape(&[16, 16, 1]));
        model.add(MaxPooling2D::new((2, 2)));
        model.add(Conv2D::new(8, (3, 3)).activation(Relu));
        model.add(MaxPooling2D::new((3, 3)));
        let text = model.plan_string().unwrap();
        assert!(text.contains("conv2d: its activation is linear"), "{text}");
        assert!(
            text.contains("conv2d_1: followed by max_pooling2d_1 (MaxPooling2D)"),
            "{text}"
        );
        assert!(!text.contains("  fused:"), "{text}");
    }

    /// In training a BatchNormalization fuses with the relu after it, not
    /// with another activation; at inference, where no convolution takes
    /// it into its weights, it runs on its own as before.
    #[test]
    fn batch_normalization_fuses_with_relu_only_and_in_training_only() {
        use crate::Activation::Sigmoid;
        use crate::layers::BatchNormalization;
        let mut model = Sequential::with_seed(1);
        model.add(Dense::new(8).input_shape(&[5]));
        model.add(BatchNormalization::new());
        model.add(ActivationLayer::new(Sigmoid));
        model.add(Dense::new(8));
        model.add(BatchNormalization::new());
        model.add(ActivationLayer::new(Relu));
        model.add(Dense::new(3));
        let text = model.plan_string().unwrap();
        let why = "not fused: batch_normalization: followed by activation (sigmoid), \
                   where the fused stage needs relu";
        assert!(text.contains(why), "{text}");
        assert!(
            text.contains("fused: batch_normalization_1 + activation_1 in training"),
            "{text}"
        );
        let plan = &model.network.plan;
        let kinds: Vec<_> = plan.stages.iter().map(|s| s.kind.clone()).collect();
        let fused = StageKind::AffineRelu {
            relu_derivative: true,
        };
        assert_eq!(kinds.iter().filter(|&k| *k == fused).count(), 1);
        assert_eq!(plan.stages[4].layers, 4..6);
        let inference_fuses = plan.inference.iter().any(|s| s.layers.len() > 1);
        assert!(!inference_fuses, "{:?}", plan.inference);
        let x = ndarray::Array2::<f32>::ones((2, 5));
        assert_eq!(model.predict(&x).unwrap().shape(), [2, 3]);
    }

    #[test]
    fn a_dilated_convolution_is_not_fused() {
        let mut model = Sequential::with_seed(1);
        let conv = Conv2D::new(8, (3, 3))
            .activation(Relu)
            .dilation_rate((2, 2));
        model.add(conv.input_shape(&[16, 16, 1]));
        model.add(MaxPooling2D::new((2, 2)));
        let text = model.plan_string().unwrap();
        assert!(!text.contains("  fused:"), "{text}");
        // Where the CPU could run the fused kernels, the plan says why not.
        if crate::kernels::has_avx512() {
            assert!(text.contains("dilation_rate (2, 2)"), "{text}");
        }
    }
}
