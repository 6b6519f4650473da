//! The augmentation layers: exact on cases worked by hand, seeded like
//! Dropout (the same seed and step give the same transforms, however the
//! batch is split and whatever the thread count), off at inference, and
//! rebuilt from their configs.

mod common;

use common::{random, rng};
use convnet::layers::{
    FillMode, FlipMode, Interpolation, Layer, RandomFlip, RandomRotation, RandomTranslation,
    RandomZoom, TrainingStep,
};
use convnet::{Sequential, layers::config};
use ndarray::{ArrayD, Axis, IxDyn};

/// `layer` built on images of `shape` from the model seed `seed`.
fn built<L: Layer>(mut layer: L, shape: &[usize], seed: u64) -> L {
    layer.build(shape, &mut rng(seed)).unwrap();
    layer
}

/// The training output of `x` at `step`, for samples from `first_sample` on.
fn train(layer: &mut dyn Layer, x: &ArrayD<f32>, step: u64, first_sample: usize) -> ArrayD<f32> {
    let mut y = ArrayD::zeros(IxDyn(&[0]));
    let step = TrainingStep { step, first_sample };
    layer.forward_train(x, &mut y, step);
    y
}

/// One image of `shape` holding 1, 2, 3, ... in row-major order.
fn counting(shape: [usize; 3]) -> ArrayD<f32> {
    let len = shape.iter().product::<usize>();
    let values = (1..=len).map(|v| v as f32).collect();
    ArrayD::from_shape_vec(IxDyn(&[1, shape[0], shape[1], shape[2]]), values).unwrap()
}

/// A layer of each kind, with settings that exercise their draws.
fn every_augmentation() -> Vec<Box<dyn Layer>> {
    vec![
        Box::new(RandomFlip::new(FlipMode::HorizontalAndVertical)),
        Box::new(RandomTranslation::new(0.2, (-0.1, 0.3))),
        Box::new(RandomRotation::new(0.15).fill_mode(FillMode::Constant)),
        Box::new(RandomZoom::new(0.3).width_factor(0.2)),
    ]
}

#[test]
fn random_flip_is_exact() {
    let x = counting([2, 3, 1]);
    let batch = ndarray::concatenate(Axis(0), &vec![x.view(); 16]).unwrap();
    let mut layer = built(RandomFlip::new(FlipMode::Horizontal), &[2, 3, 1], 1);
    let y = train(&mut layer, &batch, 0, 0);
    let flipped =
        ArrayD::from_shape_vec(IxDyn(&[1, 2, 3, 1]), vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]).unwrap();
    let mut seen = [false; 2];
    for sample in y.outer_iter() {
        let sample = sample.insert_axis(Axis(0));
        let is_flipped = sample == flipped;
        assert!(is_flipped || sample == x, "{sample:?}");
        seen[is_flipped as usize] = true;
    }
    assert_eq!(seen, [true, true], "16 samples, all flipped or none");
    // Vertical: rows swap.
    let mut layer = built(RandomFlip::new(FlipMode::Vertical), &[2, 3, 1], 2);
    let y = train(&mut layer, &batch, 0, 0);
    let upside_down = [4.0, 5.0, 6.0, 1.0, 2.0, 3.0];
    assert!(y.outer_iter().any(|s| s.iter().copied().eq(upside_down)));
}

#[test]
fn a_quarter_turn_is_numpys_rot90() {
    let x = counting([4, 4, 2]);
    let mut layer = built(RandomRotation::new((0.25, 0.25)), &[4, 4, 2], 3);
    let y = train(&mut layer, &x, 0, 0);
    // np.rot90 (counter-clockwise): out[i, j] = in[j, n - 1 - i].
    let want = ArrayD::from_shape_fn(IxDyn(&[1, 4, 4, 2]), |i| x[[0, i[2], 3 - i[1], i[3]]]);
    assert_eq!(y, want);
    // Half a turn: both axes reversed.
    let mut layer = built(RandomRotation::new((-0.5, -0.5)), &[4, 4, 2], 3);
    let y = train(&mut layer, &x, 0, 0);
    let want = ArrayD::from_shape_fn(IxDyn(&[1, 4, 4, 2]), |i| x[[0, 3 - i[1], 3 - i[2], i[3]]]);
    assert_eq!(y, want);
}

#[test]
fn translations_by_whole_and_half_pixels() {
    let x = counting([4, 4, 1]);
    // One row down (a quarter of 4 rows): the top row from outside.
    let shift = |layer: RandomTranslation| train(&mut built(layer, &[4, 4, 1], 4), &x, 0, 0);
    let down = RandomTranslation::new((0.25, 0.25), 0.0);
    let y = shift(down.clone().fill_mode(FillMode::Constant).fill_value(-1.0));
    let rows = |y: &ArrayD<f32>| y.iter().copied().collect::<Vec<f32>>();
    assert_eq!(rows(&y), [[-1.0; 4].as_slice(), &rows(&x)[..12]].concat());
    let y = shift(down.clone());
    // Reflect: the row above the first is the first.
    assert_eq!(rows(&y)[..4], rows(&x)[..4]);
    assert_eq!(rows(&y)[4..], rows(&x)[..12]);
    let y = shift(down.fill_mode(FillMode::Wrap));
    assert_eq!(rows(&y)[..4], rows(&x)[12..]);
    // Half a pixel right (1/8 of 4 columns): each pixel the mean of two.
    let right = RandomTranslation::new(0.0, (0.125, 0.125)).fill_mode(FillMode::Nearest);
    let y = shift(right);
    assert_eq!(rows(&y)[..4], [1.0, 1.5, 2.5, 3.5]);
}

#[test]
fn zooms_in_and_out_about_the_centre() {
    let x =
        ArrayD::from_shape_vec(IxDyn(&[1, 1, 5, 1]), vec![0.0, 10.0, 20.0, 30.0, 40.0]).unwrap();
    let zoom = |layer: RandomZoom| train(&mut built(layer, &[1, 5, 1], 5), &x, 0, 0);
    // Zoom in 2x (factor -0.5): the middle half, stretched.
    let y = zoom(RandomZoom::new((-0.5, -0.5)));
    assert_eq!(y.as_slice().unwrap(), [10.0, 15.0, 20.0, 25.0, 30.0]);
    // Zoom out 2x (factor 1): every other pixel, about the centre (input
    // pixel 2 stays put), the rest filled.
    let out = RandomZoom::new((1.0, 1.0)).fill_mode(FillMode::Constant);
    let y = zoom(out.interpolation(Interpolation::Nearest));
    assert_eq!(y.as_slice().unwrap(), [0.0, 0.0, 20.0, 40.0, 0.0]);
}

#[test]
fn transforms_follow_the_seed_and_the_step() {
    let x = random(&[4, 6, 6, 2], &mut rng(6));
    let make = every_augmentation;
    for ((mut a, mut b), mut c) in make().into_iter().zip(make()).zip(make()) {
        let name = a.class_name();
        for (layer, seed) in [(&mut a, 7), (&mut b, 7), (&mut c, 8)] {
            layer.build(&[6, 6, 2], &mut rng(seed)).unwrap();
        }
        let ya = train(a.as_mut(), &x, 3, 0);
        assert_eq!(ya, train(b.as_mut(), &x, 3, 0), "{name}: same seed");
        assert_ne!(ya, train(c.as_mut(), &x, 3, 0), "{name}: other seed");
        assert_ne!(ya, train(a.as_mut(), &x, 4, 0), "{name}: other step");
        assert_ne!(ya, x, "{name} changed nothing");
    }
}

#[test]
fn a_split_batch_gets_the_whole_batchs_transforms_on_any_thread_count() {
    let x = random(&[6, 5, 7, 3], &mut rng(9));
    for (i, layer) in every_augmentation().into_iter().enumerate() {
        let mut layer = layer;
        layer.build(&[5, 7, 3], &mut rng(10 + i as u64)).unwrap();
        let whole = train(layer.as_mut(), &x, 2, 0);
        let samples = |x: &ArrayD<f32>, from: usize, to: usize| {
            x.slice_axis(Axis(0), (from..to).into()).to_owned()
        };
        for (from, to) in [(0, 2), (2, 6)] {
            let mut replica = layer.replicate().unwrap();
            let y = train(replica.as_mut(), &samples(&x, from, to), 2, from);
            assert_eq!(y, samples(&whole, from, to), "{}", layer.class_name());
        }
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| train(layer.as_mut(), &x, 2, 0));
        assert_eq!(one_thread, whole);
    }
}

#[test]
fn inference_passes_images_through() {
    let x = random(&[2, 4, 5, 3], &mut rng(11));
    for mut layer in every_augmentation() {
        layer.build(&[4, 5, 3], &mut rng(12)).unwrap();
        let mut y = ArrayD::zeros(IxDyn(&[0]));
        layer.forward(&x, &mut y);
        assert_eq!(y, x, "{}", layer.class_name());
    }
}

#[test]
fn configs_round_trip_through_json() {
    let mut model = Sequential::with_seed(1);
    model.add(RandomFlip::new(FlipMode::Vertical).input_shape(&[8, 8, 1]));
    model.add(RandomTranslation::new((-0.1, 0.2), 0.3).fill_mode(FillMode::Constant));
    model.add(
        RandomRotation::new(0.1)
            .fill_mode(FillMode::Wrap)
            .fill_value(0.5)
            .interpolation(Interpolation::Nearest),
    );
    model.add(RandomZoom::new((-0.2, 0.1)));
    model.add(RandomZoom::new(0.2).width_factor(0.4));
    let json = model.to_json().unwrap();
    let again = Sequential::from_json(&json).unwrap().to_json().unwrap();
    assert_eq!(again, json);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let layers = &value["config"]["layers"];
    let expected = [
        (0, "mode", serde_json::json!("vertical")),
        (1, "height_factor", serde_json::json!([-0.1f32, 0.2f32])),
        (1, "width_factor", serde_json::json!(0.3f32)),
        (1, "fill_mode", serde_json::json!("constant")),
        (2, "interpolation", serde_json::json!("nearest")),
        (2, "fill_value", serde_json::json!(0.5)),
        (3, "width_factor", serde_json::Value::Null),
        (4, "width_factor", serde_json::json!(0.4f32)),
        (4, "fill_mode", serde_json::json!("reflect")),
    ];
    for (i, key, want) in expected {
        assert_eq!(layers[i]["config"][key], want, "layer {i} {key}");
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let cases = [
        (
            "RandomFlip",
            r#"{"mode": "diagonal"}"#,
            "horizontal_and_vertical",
        ),
        (
            "RandomRotation",
            r#"{"factor": 0.1, "fill_mode": "mirror"}"#,
            "\"reflect\"",
        ),
        (
            "RandomRotation",
            r#"{"factor": [0.3, 0.1]}"#,
            "lower <= upper",
        ),
        ("RandomRotation", r#"{}"#, "\"factor\" is missing"),
        (
            "RandomZoom",
            r#"{"height_factor": 0.1, "interpolation": "cubic"}"#,
            "\"bilinear\"",
        ),
        (
            "RandomZoom",
            r#"{"height_factor": 0.1, "width_factor": 1.5}"#,
            "[-1, 1]",
        ),
        (
            "RandomTranslation",
            r#"{"height_factor": -1.2, "width_factor": 0}"#,
            "[-1, 1]",
        ),
        (
            "RandomTranslation",
            r#"{"height_factor": 0.1}"#,
            "\"width_factor\"",
        ),
    ];
    for (class, json, needle) in cases {
        let fields = serde_json::from_str(json).unwrap();
        let error = config::from_config(class, &fields)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains(needle), "{class} {json}: {error}");
    }
    // The builders check at build time.
    let error = RandomTranslation::new(2.0, 0.1)
        .build(&[4, 4, 1], &mut rng(0))
        .unwrap_err();
    assert!(error.to_string().contains("height_factor"), "{error}");
    let error = RandomFlip::new(FlipMode::Horizontal)
        .build(&[16], &mut rng(0))
        .unwrap_err();
    assert!(
        error.to_string().contains("(height, width, channels)"),
        "{error}"
    );
}
