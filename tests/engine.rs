//! The engine's contract: replicas (AlexNet's Dropout included), layers
//! with non-trainable state, layers added after `compile`, and inference
//! on `&self` from several threads.

mod common;

use common::{random, rng};
use convnet::Activation::{self, Relu, Softmax};
use convnet::initializers::Rng;
use convnet::layers::{Buffer, Conv2D, Dense, Flatten, Layer, MaxPooling2D, TrainingStep};
use convnet::optimizers::{Adam, SGD};
use convnet::{Fit, Loss, Sequential};
use ndarray::{ArrayD, IxDyn};

fn one_hot(samples: usize, classes: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[samples, classes]), |i| {
        ((i[0] * 7) % classes == i[1]) as u8 as f32
    })
}

/// One step of `fit` with a learning rate of zero: the model's gradients
/// (summed over its replicas), and how many replicas ran.
fn alexnet_gradients(x: &ArrayD<f32>, y: &ArrayD<f32>, replicas: usize) -> (Vec<Vec<f32>>, usize) {
    let mut model = convnet::models::alexnet(4);
    model
        .compile(Loss::CategoricalCrossentropy, SGD::new(0.0), &[])
        .unwrap();
    let options = Fit {
        batch_size: x.shape()[0],
        verbose: 0,
        shuffle: false,
        replicas: Some(replicas),
        ..Fit::default()
    };
    let history = model.fit(x, y, options).unwrap();
    let grads = model
        .params()
        .iter()
        .map(|p| p.grad.iter().copied().collect())
        .collect();
    (grads, history.replicas)
}

fn in_pool<T: Send>(threads: usize, job: impl FnOnce() -> T + Send) -> T {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(job)
}

/// AlexNet, Dropout layers and all, trains on two replicas: their summed
/// gradients are the one replica's up to rounding (Dropout draws by
/// sample, not by replica), and the same bit for bit on 1 or 2 threads.
#[test]
fn alexnet_trains_on_replicas() {
    let mut r = rng(11);
    let x = random(&[4, 227, 227, 3], &mut r);
    let y = one_hot(4, 1000);
    let (one, count) = alexnet_gradients(&x, &y, 1);
    assert_eq!(count, 1);
    let (two, count) = in_pool(2, || alexnet_gradients(&x, &y, 2));
    assert_eq!(count, 2, "AlexNet runs on two replicas");
    for (t, (a, b)) in one.iter().zip(&two).enumerate() {
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "tensor {t} [{i}]: {a} vs {b}"
            );
        }
    }
    assert!(
        one.iter().all(|g| g.iter().any(|&v| v != 0.0)),
        "every tensor has a gradient"
    );
    let (two_on_one_thread, _) = in_pool(1, || alexnet_gradients(&x, &y, 2));
    assert!(
        two == two_on_one_thread,
        "1 and 2 threads must agree bit for bit"
    );
}

/// A layer with state: passes its input through, and while training keeps
/// a moving average of each feature's batch mean.
#[derive(Clone)]
struct RunningMean {
    mean: Buffer,
}

impl RunningMean {
    fn new() -> Self {
        RunningMean {
            mean: Buffer::new("moving_mean", ArrayD::zeros(IxDyn(&[0]))),
        }
    }
}

impl Layer for RunningMean {
    fn class_name(&self) -> &'static str {
        "RunningMean"
    }

    fn build(&mut self, input_shape: &[usize], _: &mut Rng) -> convnet::Result<Vec<usize>> {
        self.mean.value = ArrayD::zeros(IxDyn(input_shape));
        Ok(input_shape.to_vec())
    }

    fn forward(&self, input: &ArrayD<f32>, output: &mut ArrayD<f32>) {
        *output = input.clone();
    }

    fn forward_train(&mut self, input: &ArrayD<f32>, output: &mut ArrayD<f32>, _: TrainingStep) {
        let batch_mean = input.mean_axis(ndarray::Axis(0)).unwrap();
        self.mean.value = &self.mean.value * 0.5 + batch_mean * 0.5;
        self.forward(input, output);
    }

    fn backward(
        &mut self,
        _: &ArrayD<f32>,
        _: &ArrayD<f32>,
        grad_output: &mut ArrayD<f32>,
        grad_input: Option<&mut ArrayD<f32>>,
    ) {
        if let Some(grad_input) = grad_input {
            *grad_input = grad_output.clone();
        }
    }

    fn buffers(&self) -> Vec<&Buffer> {
        vec![&self.mean]
    }

    fn buffers_mut(&mut self) -> Vec<&mut Buffer> {
        vec![&mut self.mean]
    }

    fn replicate(&self) -> Option<Box<dyn Layer>> {
        Some(Box::new(self.clone()))
    }
}

fn stateful_model(seed: u64) -> Sequential {
    let mut model = Sequential::with_seed(seed);
    model.add(Dense::new(4).activation(Relu).input_shape(&[3]));
    model.add(RunningMean::new());
    model.add(Dense::new(2).activation(Softmax));
    model
        .compile(Loss::CategoricalCrossentropy, Adam::default(), &[])
        .unwrap();
    model
}

/// State is counted by the summary, averaged over replicas, and saved and
/// loaded with the weights.
#[test]
fn layer_state_is_counted_replicated_and_saved() {
    let mut model = stateful_model(2);
    assert_eq!(model.count_non_trainable(), 4);
    let summary = model.summary_string().unwrap();
    assert!(
        summary.contains("Non-trainable params: 4 (16.00 B)"),
        "{summary}"
    );
    assert!(
        summary.contains("Trainable params: 26 (104.00 B)"),
        "{summary}"
    );

    let x = random(&[8, 3], &mut rng(3));
    let y = one_hot(8, 2);
    let fit = |replicas| Fit {
        batch_size: 8,
        verbose: 0,
        shuffle: false,
        replicas: Some(replicas),
        ..Fit::default()
    };
    let mut alone = stateful_model(2);
    alone.fit(&x, &y, fit(1)).unwrap();
    assert_eq!(model.fit(&x, &y, fit(2)).unwrap().replicas, 2);
    let (a, b) = (&alone.buffers()[0].value, &model.buffers()[0].value);
    assert!(a.iter().any(|&v| v != 0.0));
    for (a, b) in a.iter().zip(b) {
        assert!(
            (a - b).abs() <= 1e-6,
            "the mean of the halves' updates: {a} vs {b}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    model.save_weights(&path).unwrap();
    let mut loaded = stateful_model(9);
    loaded.load_weights(&path).unwrap();
    assert_eq!(loaded.buffers()[0].value, model.buffers()[0].value);
    assert_eq!(loaded.params()[0].value, model.params()[0].value);

    // Weights saved without the state do not load into a model with it.
    let mut stateless = Sequential::with_seed(2);
    stateless.add(Dense::new(4).activation(Relu).input_shape(&[3]));
    stateless.add(Dense::new(2).activation(Softmax));
    stateless.save_weights(&path).unwrap();
    let error = loaded.load_weights(&path).unwrap_err().to_string();
    assert!(
        error.contains("dense_1.kernel") || error.contains("moving_mean"),
        "{error}"
    );
}

/// A layer added after `compile` is built (the others keep their weights)
/// and planned before `fit`; until then the `&self` methods say so.
#[test]
fn a_layer_added_after_compile_is_built_before_use() {
    // The new last layer is a softmax (the loss takes over its derivative
    // now, the first layer's own is back) or a sigmoid (the loss takes over
    // nothing any more).
    for last in [Softmax, convnet::Activation::Sigmoid] {
        let mut model = Sequential::with_seed(5);
        model.add(Dense::new(3).activation(Softmax).input_shape(&[4]));
        let loss = Loss::CategoricalCrossentropy;
        model.compile(loss, Adam::default(), &[]).unwrap();
        let first = model.params()[0].value.clone();
        model.add(Dense::new(2).activation(last));
        let x = random(&[6, 4], &mut rng(4));
        let y = one_hot(6, 2);
        let error = model.evaluate(&x, &y).unwrap_err().to_string();
        assert!(error.contains("not built yet"), "{error}");
        assert!(model.predict(&x).is_err());

        // Built by profile_step: the gradients are those of a model made
        // with both layers from the start.
        let batch = [0, 1, 2, 3, 4, 5];
        model.profile_step(&x, &y, &batch).unwrap();
        assert_eq!(
            model.params()[0].value,
            first,
            "the first layer keeps its weights"
        );
        let mut fresh = Sequential::with_seed(5);
        fresh.add(Dense::new(3).activation(Softmax).input_shape(&[4]));
        fresh.add(Dense::new(2).activation(last));
        fresh.compile(loss, Adam::default(), &[]).unwrap();
        for (mine, theirs) in fresh.params_mut().into_iter().zip(model.params()) {
            mine.value.assign(&theirs.value);
        }
        fresh.profile_step(&x, &y, &batch).unwrap();
        for (a, b) in model.params().iter().zip(fresh.params()) {
            assert_eq!(a.grad, b.grad, "last layer {last:?}");
        }
        let options = Fit {
            epochs: 2,
            verbose: 0,
            ..Fit::default()
        };
        model.fit(&x, &y, options).unwrap();
        assert_eq!(model.predict(&x).unwrap().shape(), &[6, 2]);
    }
}

/// One trained model serves predictions from several threads at once.
#[test]
fn predict_runs_on_shared_references_from_several_threads() {
    let mut model = Sequential::with_seed(6);
    model.add(
        Conv2D::new(6, (3, 3))
            .activation(Relu)
            .input_shape(&[10, 10, 1]),
    );
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Flatten::new());
    model.add(Dense::new(3).activation(Softmax));
    model
        .compile(Loss::CategoricalCrossentropy, Adam::default(), &[])
        .unwrap();
    let x = random(&[20, 10, 10, 1], &mut rng(8));
    let y = one_hot(20, 3);
    model
        .fit(
            &x,
            &y,
            Fit {
                verbose: 0,
                ..Fit::default()
            },
        )
        .unwrap();
    let expected = model.predict(&x).unwrap();
    let model = &model;
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| model.predict_with_batch_size(&x, 7).unwrap()))
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), expected);
        }
    });
    assert!(model.evaluate(&x, &y).unwrap().loss.is_finite());
}

/// A sparse label outside `0..classes` stops `fit` and `evaluate` with an
/// error naming it, instead of a silent zero loss.
#[test]
fn sparse_labels_outside_the_classes_are_an_error() {
    let mut model = Sequential::with_seed(1);
    model.add(Dense::new(3).activation(Softmax).input_shape(&[2]));
    let loss = Loss::SparseCategoricalCrossentropy;
    model.compile(loss, Adam::default(), &[]).unwrap();
    let x = random(&[4, 2], &mut rng(1));
    let y = ndarray::arr2(&[[0.0f32], [2.0], [3.0], [1.0]]).into_dyn();
    let error = model
        .fit(
            &x,
            &y,
            Fit {
                verbose: 0,
                ..Fit::default()
            },
        )
        .unwrap_err();
    assert!(error.to_string().contains('3'), "{error}");
    assert!(model.evaluate(&x, &y).is_err());
    let y = ndarray::arr2(&[[0.0f32], [2.0], [1.0], [1.0]]).into_dyn();
    assert!(model.evaluate(&x, &y).is_ok());
}

/// At inference a BatchNormalization folds into the convolution before it
/// (with the relu and 2x2 pooling after it, where the kernels allow): the
/// predictions are those of the layers run one by one, up to rounding.
#[test]
fn batch_normalization_folds_into_the_convolution_at_inference() {
    use convnet::Activation::Linear;
    use convnet::layers::{ActivationLayer, BatchNormalization};
    let mut model = Sequential::with_seed(4);
    model.add(Conv2D::new(16, (3, 3)).input_shape(&[12, 12, 1]));
    model.add(BatchNormalization::new().momentum(0.5));
    model.add(ActivationLayer::new(Relu));
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Conv2D::new(8, (3, 3)).activation(Linear));
    model.add(BatchNormalization::new().momentum(0.5));
    model.add(Flatten::new());
    model.add(Dense::new(3).activation(Softmax));
    model
        .compile(Loss::CategoricalCrossentropy, Adam::default(), &[])
        .unwrap();
    let x = random(&[24, 12, 12, 1], &mut rng(12));
    let y = one_hot(24, 3);
    model
        .fit(
            &x,
            &y,
            Fit {
                batch_size: 8,
                epochs: 2,
                verbose: 0,
                ..Fit::default()
            },
        )
        .unwrap();
    let plan = model.plan_string().unwrap();
    assert!(
        plan.contains("inference: conv2d_1 + batch_normalization_1 folded into one convolution\n"),
        "{plan}"
    );
    let pools = convnet::kernels::has_avx512();
    let first = "inference: conv2d + batch_normalization + activation + max_pooling2d folded into one convolution that pools";
    let first_alone =
        "inference: conv2d + batch_normalization + activation folded into one convolution\n";
    assert!(
        plan.contains(if pools { first } else { first_alone }),
        "{plan}"
    );

    let mut expected = x.clone();
    for layer in model.layers() {
        let mut out = ArrayD::zeros(IxDyn(&[0]));
        layer.forward(&expected, &mut out);
        expected = out;
    }
    let predicted = model.predict(&x).unwrap();
    for (a, b) in predicted.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
    }
    assert!(
        model.buffers()[0].value.iter().any(|&v| v != 0.0),
        "the moving mean moved"
    );
}

/// A VGG block's layers: Conv2D (no bias) → BatchNormalization →
/// [`Reshape`](convnet::layers::Reshape) to the same shape, where
/// `apart` → relu, twice, then 2x2 max pooling and a softmax head. The
/// Reshape only copies, but keeps the normalization from fusing with the
/// relu after it.
fn vgg_block(apart: bool) -> Sequential {
    use convnet::layers::{ActivationLayer, BatchNormalization, Padding, Reshape};
    let mut model = Sequential::with_seed(9);
    for (i, filters) in [8, 16].into_iter().enumerate() {
        let conv = Conv2D::new(filters, (3, 3))
            .padding(Padding::Same)
            .use_bias(false);
        model.add(if i == 0 {
            conv.input_shape(&[8, 8, 3])
        } else {
            conv
        });
        model.add(BatchNormalization::new().momentum(0.5));
        if apart {
            model.add(Reshape::new(&[Some(8), Some(8), Some(filters)]));
        }
        model.add(ActivationLayer::new(Relu));
    }
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Flatten::new());
    model.add(Dense::new(3).activation(Softmax));
    model
        .compile(Loss::CategoricalCrossentropy, Adam::default(), &[])
        .unwrap();
    model
}

/// In training a BatchNormalization and the Activation(relu) after it run
/// as one stage (relu applied as the normalization stores its output,
/// relu's derivative inside its backward passes, or left to the max
/// pooling after it): a few steps give the same weights, moving
/// statistics and losses, bit for bit, as the layers run apart.
#[test]
fn batch_normalization_and_relu_train_as_one_stage_bit_for_bit() {
    let (mut fused, mut apart) = (vgg_block(false), vgg_block(true));
    let plan = fused.plan_string().unwrap();
    let stage = |bn: &str, act: &str, derivative: &str| {
        format!(
            "fused: {bn} + {act} in training (relu applied as {bn} stores its output; {derivative})"
        )
    };
    let first = stage(
        "batch_normalization",
        "activation",
        "its backward passes apply relu's derivative",
    );
    let second = stage(
        "batch_normalization_1",
        "activation_1",
        "relu's derivative left to max_pooling2d",
    );
    assert!(plan.contains(&first) && plan.contains(&second), "{plan}");
    let plan_apart = apart.plan_string().unwrap();
    assert!(!plan_apart.contains("  fused:"), "{plan_apart}");
    assert!(
        plan_apart.contains("not fused: batch_normalization: followed by reshape (Reshape)"),
        "{plan_apart}"
    );

    let x = random(&[20, 8, 8, 3], &mut rng(13));
    let y = one_hot(20, 3);
    let options = || Fit {
        batch_size: 10,
        epochs: 2,
        verbose: 0,
        ..Fit::default()
    };
    let history = fused.fit(&x, &y, options()).unwrap();
    let history_apart = apart.fit(&x, &y, options()).unwrap();
    assert_eq!(history.history["loss"], history_apart.history["loss"]);
    let values = |model: &Sequential| -> Vec<Vec<f32>> {
        let params = model.params().into_iter().map(|p| &p.value);
        let buffers = model.buffers().into_iter().map(|b| &b.value);
        params
            .chain(buffers)
            .map(|v| v.iter().copied().collect())
            .collect()
    };
    assert_eq!(values(&fused), values(&apart));
    assert!(fused.params()[0].grad.iter().any(|&g| g != 0.0));
    // Inference is as it was: the normalization folds into the convolution.
    assert!(
        plan.contains(
            "inference: conv2d + batch_normalization + activation folded into one convolution"
        ),
        "{plan}"
    );
}

/// Convolutions (3x3, relu on the first) on 34x34 images: with `apart`, a
/// linear Activation layer after the first, which stops it from feeding
/// the second chunk by chunk.
fn fed_convolutions(second: Activation, pooled: bool, apart: bool) -> Sequential {
    use convnet::layers::{ActivationLayer, Padding};
    let mut model = Sequential::with_seed(14);
    let first = Conv2D::new(16, (3, 3))
        .padding(Padding::Same)
        .activation(Relu);
    model.add(first.input_shape(&[34, 34, 3]));
    if apart {
        model.add(ActivationLayer::new(Activation::Linear));
    }
    model.add(Conv2D::new(16, (3, 3)).activation(second));
    if pooled {
        model.add(MaxPooling2D::new((2, 2)));
    }
    model.add(Flatten::new());
    model.add(Dense::new(3).activation(Softmax));
    model
}

/// [`fed_convolutions`] with and without the linear Activation layer in
/// between: the plan of the first says `feeds`, that of the second not.
fn fed_and_apart(second: Activation, pooled: bool, feeds: &str) -> (Sequential, Sequential) {
    let (mut fed, mut apart) = (
        fed_convolutions(second, pooled, false),
        fed_convolutions(second, pooled, true),
    );
    let plan = fed.plan_string().unwrap();
    assert!(plan.contains(feeds), "{plan}");
    assert!(!apart.plan_string().unwrap().contains(feeds));
    (fed, apart)
}

/// In training too a first convolution (filter-vectorised, where the CPU
/// has AVX2) runs chunk by chunk into the Winograd one after it (the plan
/// says so), its output still stored for the backward pass: the
/// gradients of a step are those of the layers run one by one, bit for
/// bit, where nothing else differs (a tanh second convolution hands no
/// gradient over), and up to the rounding of the hand-over's sums where
/// it does (relu, pooled or not); over several chunks and a short last
/// one.
#[test]
fn a_convolution_feeds_the_next_chunk_by_chunk_in_training() {
    if !convnet::kernels::has_avx2_fma() {
        eprintln!("skipped: without AVX2 the first convolution runs on the direct kernels");
        return;
    }
    let x = random(&[7, 34, 34, 3], &mut rng(16));
    let y = ArrayD::from_shape_fn(IxDyn(&[7, 3]), |i| (i[0] % 3 == i[1]) as u8 as f32);
    let indices: Vec<usize> = (0..7).collect();
    for (second, pooled) in [(Activation::Tanh, false), (Relu, true), (Relu, false)] {
        let feeds = "training: conv2d runs chunk by chunk into conv2d_1";
        let (mut fed, mut apart) = fed_and_apart(second, pooled, feeds);
        for model in [&mut fed, &mut apart] {
            let loss = Loss::CategoricalCrossentropy;
            model.compile(loss, SGD::new(0.0), &[]).unwrap();
        }
        fed.profile_step(&x, &y, &indices).unwrap();
        apart.profile_step(&x, &y, &indices).unwrap();
        let tolerance = if second == Relu { 1e-5 } else { 0.0 };
        for (a, b) in fed.params().iter().zip(apart.params()) {
            assert!(b.grad.iter().any(|&g| g != 0.0));
            for (g, h) in a.grad.iter().zip(&b.grad) {
                assert!(
                    (g - h).abs() <= tolerance * (1.0 + h.abs()),
                    "{second:?}, pooled {pooled}: {g} (fed) vs {h} (apart)"
                );
            }
        }
    }
}

/// At inference a convolution feeds the Winograd one after it chunk by
/// chunk (its output never stored whole; the plan says so), and the
/// predictions are those of the layers run one by one, bit for bit: over
/// several chunks and a short last one, the second convolution pooled
/// (relu), plain with relu, or plain with tanh.
#[test]
fn a_convolution_feeds_the_next_chunk_by_chunk_at_inference() {
    let x = random(&[7, 34, 34, 3], &mut rng(15));
    for (second, pooled) in [(Relu, true), (Relu, false), (Activation::Tanh, false)] {
        let feeds = "inference: conv2d runs chunk by chunk into conv2d_1";
        let (fed, apart) = fed_and_apart(second, pooled, feeds);
        for batch_size in [7, 3] {
            let (a, b) = (
                fed.predict_with_batch_size(&x, batch_size).unwrap(),
                apart.predict_with_batch_size(&x, batch_size).unwrap(),
            );
            assert!(a == b, "{second:?}, pooled {pooled}: {a} vs {b}");
        }
    }
}

/// At inference a Flatten (or a Reshape) before a Dense layer does not
/// run: the dense layer reads the tensor before it in place (the plan says
/// so), and the predictions are the layers' run one by one, bit for bit,
/// in pieces and in one batch; training still runs it (the gradient goes
/// back in the input's shape).
#[test]
fn a_reshape_before_a_dense_layer_is_read_in_place_at_inference() {
    let x = random(&[70, 10, 10, 3], &mut rng(21));
    let y = one_hot(70, 4);
    let reshapes: [Box<dyn Fn() -> Box<dyn Layer>>; 2] = [
        Box::new(|| Box::new(Flatten::new())),
        Box::new(|| Box::new(convnet::layers::Reshape::new(&[Some(4 * 4 * 8)]))),
    ];
    for (case, reshape) in reshapes.iter().enumerate() {
        let mut model = Sequential::with_seed(3);
        model.add(
            Conv2D::new(8, (3, 3))
                .activation(Relu)
                .input_shape(&[10, 10, 3]),
        );
        model.add(MaxPooling2D::new((2, 2)));
        model.add_boxed(reshape());
        model.add(Dense::new(4).activation(Softmax));
        model
            .compile(Loss::CategoricalCrossentropy, SGD::new(0.1), &[])
            .unwrap();
        let options = Fit {
            batch_size: 10,
            verbose: 0,
            ..Fit::default()
        };
        model.fit(&x, &y, options).unwrap();
        let plan = model.plan_string().unwrap();
        let name = if case == 0 { "flatten" } else { "reshape" };
        let skipped = format!("inference: {name} does not run (dense reads its input in place");
        assert!(plan.contains(&skipped), "{plan}");
        let maps = model.feature_maps(&x).unwrap();
        let one_by_one = &maps.last().unwrap().1;
        for batch_size in [70, 9] {
            let predicted = model.predict_with_batch_size(&x, batch_size).unwrap();
            assert!(predicted == *one_by_one, "{name}, batch {batch_size}");
        }
    }
}
