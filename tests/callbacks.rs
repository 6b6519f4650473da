//! Callbacks on scripted logs (the hooks driven directly, as `fit` drives
//! them), `validation_split`, schedules inside `fit`, and `fit` with
//! EarlyStopping end to end.

use convnet::callbacks::{
    CSVLogger, Callback, EarlyStopping, LearningRateScheduler, Logs, Mode, ModelCheckpoint,
    ReduceLROnPlateau, TerminateOnNaN,
};
use convnet::layers::Dense;
use convnet::optimizers::SGD;
use convnet::schedules::{LearningRateSchedule, PiecewiseConstantDecay};
use convnet::{Fit, Loss, Sequential};
use ndarray::{Array2, ArrayD};

/// A compiled model with one Dense unit: 2 inputs, 3 weights.
fn tiny_model(lr: f32) -> Sequential {
    let mut model = Sequential::with_seed(7);
    model.add(Dense::new(1).input_shape(&[2]));
    model
        .compile(Loss::MeanSquaredError, SGD::new(lr), &[])
        .unwrap();
    model
}

/// y = x0 - 2·x1 + noise-free, on a grid: a problem the tiny model learns.
fn tiny_data(n: usize) -> (Array2<f32>, Array2<f32>) {
    let x = Array2::from_shape_fn((n, 2), |(i, j)| ((5 * i + 3 * j) % 11) as f32 / 11.0 - 0.5);
    let y = Array2::from_shape_fn((n, 1), |(i, _)| x[[i, 0]] - 2.0 * x[[i, 1]]);
    (x, y)
}

fn logs(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
}

/// Every weight set to `marker`, so that the weights tell which epoch
/// they come from.
fn mark(model: &mut Sequential, marker: f32) {
    for p in model.params_mut() {
        p.value.fill(marker);
    }
}

fn weights(model: &Sequential) -> Vec<ArrayD<f32>> {
    model.params().iter().map(|p| p.value.clone()).collect()
}

fn first_weight(model: &Sequential) -> f32 {
    model.params()[0].value.iter().next().copied().unwrap()
}

/// Drives `callback` through a `fit` of `val_losses.len()` epochs whose
/// weights are marked with the epoch number; stops where the model asks.
/// Returns the epochs run.
fn run_epochs(callback: &mut dyn Callback, model: &mut Sequential, val_losses: &[f64]) -> usize {
    model.set_stop_training(false);
    callback.on_train_begin(model).unwrap();
    let mut last = Vec::new();
    let mut run = 0;
    for (epoch, &val_loss) in val_losses.iter().enumerate() {
        callback.on_epoch_begin(model, epoch).unwrap();
        mark(model, epoch as f32);
        last = logs(&[("loss", 1.0), ("val_loss", val_loss)]);
        callback.on_epoch_end(model, epoch, &last).unwrap();
        run += 1;
        if model.stop_training() {
            break;
        }
    }
    callback.on_train_end(model, &last).unwrap();
    run
}

#[test]
fn early_stopping_stops_after_patience_epochs_and_restores_the_best() {
    let mut model = tiny_model(0.1);
    let mut early = EarlyStopping::new().patience(2).restore_best_weights(true);
    // Best at epoch 1 (0.8); epochs 2 and 3 do not improve: stop after 3.
    let run = run_epochs(&mut early, &mut model, &[1.0, 0.8, 0.9, 0.85, 0.7]);
    assert_eq!(run, 4);
    assert_eq!(early.stopped_epoch(), Some(3));
    assert_eq!(early.best(), Some((1, 0.8)));
    assert_eq!(first_weight(&model), 1.0, "weights of epoch 1");
}

#[test]
fn early_stopping_restores_the_best_weights_without_a_stop() {
    let mut model = tiny_model(0.1);
    let mut early = EarlyStopping::new().patience(5).restore_best_weights(true);
    let run = run_epochs(&mut early, &mut model, &[1.0, 0.5, 0.7, 0.6]);
    assert_eq!((run, early.stopped_epoch()), (4, None));
    assert_eq!(first_weight(&model), 1.0, "weights of epoch 1, not 3");

    let mut keep_last = EarlyStopping::new().patience(5);
    run_epochs(&mut keep_last, &mut model, &[1.0, 0.5, 0.7, 0.6]);
    assert_eq!(first_weight(&model), 3.0, "without restore_best_weights");
}

#[test]
fn early_stopping_min_delta_patience_zero_and_start_from_epoch() {
    let mut model = tiny_model(0.1);
    // 0.95 and 0.92 are better than 1.0 by less than 0.1: no improvement.
    let mut early = EarlyStopping::new().patience(2).min_delta(0.1);
    assert_eq!(
        run_epochs(&mut early, &mut model, &[1.0, 0.95, 0.92, 0.5]),
        3
    );
    let mut no_delta = EarlyStopping::new().patience(2);
    assert_eq!(
        run_epochs(&mut no_delta, &mut model, &[1.0, 0.95, 0.92, 0.5]),
        4
    );

    // Patience 0: the first epoch that does not improve stops (never epoch 0).
    let mut impatient = EarlyStopping::new();
    assert_eq!(
        run_epochs(&mut impatient, &mut model, &[1.0, 0.9, 0.9, 0.5]),
        3
    );

    // Epochs 0 and 1 are not watched, so 2.0 at epoch 2 is the first best.
    let mut late = EarlyStopping::new().start_from_epoch(2);
    assert_eq!(
        run_epochs(&mut late, &mut model, &[0.1, 0.1, 2.0, 1.0, 1.5]),
        5
    );
    assert_eq!(late.best(), Some((3, 1.0)));
}

#[test]
fn early_stopping_on_accuracy_goes_up_and_a_missing_value_is_an_error() {
    let mut model = tiny_model(0.1);
    let mut early = EarlyStopping::new().monitor("val_accuracy").patience(1);
    early.on_train_begin(&mut model).unwrap();
    for (epoch, accuracy) in [0.5, 0.6, 0.55].into_iter().enumerate() {
        let logs = logs(&[("val_accuracy", accuracy)]);
        early.on_epoch_end(&mut model, epoch, &logs).unwrap();
    }
    assert_eq!(early.stopped_epoch(), Some(2));
    assert_eq!(early.best(), Some((1, 0.6)));

    let mut minimise = EarlyStopping::new().monitor("val_accuracy").mode(Mode::Min);
    minimise.on_train_begin(&mut model).unwrap();
    minimise
        .on_epoch_end(&mut model, 0, &logs(&[("val_accuracy", 0.5)]))
        .unwrap();
    minimise
        .on_epoch_end(&mut model, 1, &logs(&[("val_accuracy", 0.4)]))
        .unwrap();
    assert_eq!(minimise.best(), Some((1, 0.4)));

    let error = EarlyStopping::new()
        .on_epoch_end(&mut model, 0, &logs(&[("loss", 1.0)]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"val_loss\"") && error.contains("available: loss"),
        "{error}"
    );
}

fn learning_rate(model: &Sequential) -> f32 {
    model.optimizer().unwrap().learning_rate()
}

#[test]
fn reduce_lr_on_plateau_waits_cools_down_and_stops_at_min_lr() {
    let mut model = tiny_model(1.0);
    let mut reduce = ReduceLROnPlateau::new()
        .factor(0.5)
        .patience(2)
        .cooldown(1)
        .min_lr(0.2);
    reduce.on_train_begin(&mut model).unwrap();
    let mut rates = Vec::new();
    for epoch in 0..9 {
        let logs = logs(&[("val_loss", 1.0)]);
        reduce.on_epoch_end(&mut model, epoch, &logs).unwrap();
        rates.push(learning_rate(&model));
    }
    // Epoch 0 sets the best; 1 and 2 wait, 2 halves; 3 cools down (its
    // wait is 0, then 1); 4 halves; 5 cools; 6 would give 0.125 < min_lr:
    // 0.2; 8 finds the rate at min_lr and leaves it.
    assert_eq!(rates, [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]);
}

#[test]
fn reduce_lr_on_plateau_counts_only_improvements_beyond_min_delta() {
    let mut model = tiny_model(1.0);
    let mut reduce = ReduceLROnPlateau::new().patience(1).min_delta(0.1);
    reduce.on_train_begin(&mut model).unwrap();
    let losses = [1.0, 0.8, 0.75, 0.5];
    let mut rates = Vec::new();
    for (epoch, loss) in losses.into_iter().enumerate() {
        let logs = logs(&[("val_loss", loss)]);
        reduce.on_epoch_end(&mut model, epoch, &logs).unwrap();
        rates.push(learning_rate(&model));
    }
    // 0.8 improves on 1.0 by 0.2; 0.75 by only 0.05 after it: factor 0.1.
    assert_eq!(rates, [1.0, 1.0, 0.1, 0.1]);
    assert!(
        ReduceLROnPlateau::new()
            .factor(1.5)
            .on_train_begin(&mut model)
            .is_err()
    );
}

#[test]
fn learning_rate_scheduler_sets_the_rate_of_each_epoch() {
    let mut model = tiny_model(0.4);
    let mut seen = Vec::new();
    {
        let mut scheduler = LearningRateScheduler::new(|epoch, lr| {
            seen.push((epoch, lr));
            if epoch < 2 { lr } else { lr / 2.0 }
        });
        for epoch in 0..4 {
            scheduler.on_epoch_begin(&mut model, epoch).unwrap();
        }
    }
    assert_eq!(seen, [(0, 0.4), (1, 0.4), (2, 0.4), (3, 0.2)]);
    assert_eq!(learning_rate(&model), 0.1);

    let mut bad = LearningRateScheduler::new(|_, _| f32::NAN);
    let error = bad.on_epoch_begin(&mut model, 0).unwrap_err().to_string();
    assert!(error.contains("learning rate"), "{error}");
}

#[test]
fn csv_logger_writes_a_row_per_epoch_and_appends() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("log.csv");
    let mut model = tiny_model(0.1);
    let epoch_logs = [
        logs(&[("loss", 0.5), ("val_loss", 0.75)]),
        logs(&[("loss", 0.25), ("val_loss", 0.125)]),
    ];
    let mut logger = CSVLogger::new(&path);
    logger.on_train_begin(&mut model).unwrap();
    for (epoch, logs) in epoch_logs.iter().enumerate() {
        logger.on_epoch_end(&mut model, epoch, logs).unwrap();
    }
    let expected = "epoch,loss,val_loss\n0,0.5,0.75\n1,0.25,0.125\n";
    assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);

    // Appending keeps the file's header and rows; columns sort by name,
    // a missing value is NA.
    let mut more = CSVLogger::new(&path).append(true).separator(';');
    more.on_train_begin(&mut model).unwrap();
    let row = logs(&[("val_loss", 2.0), ("loss", 1.0)]);
    more.on_epoch_end(&mut model, 0, &row).unwrap();
    more.on_epoch_end(&mut model, 1, &logs(&[("loss", 3.0)]))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{expected}0;1;2\n1;3;NA\n"));

    let mut replace = CSVLogger::new(&path);
    replace.on_train_begin(&mut model).unwrap();
    replace.on_epoch_end(&mut model, 0, &epoch_logs[0]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, "epoch,loss,val_loss\n0,0.5,0.75\n");
}

#[test]
fn history_to_csv_is_what_csv_logger_writes() {
    let folder = tempfile::tempdir().unwrap();
    let (logged, saved) = (folder.path().join("log.csv"), folder.path().join("h.csv"));
    let mut model = tiny_model(0.1);
    let (x, y) = tiny_data(40);
    let history = model
        .fit(
            &x,
            &y,
            Fit {
                epochs: 3,
                batch_size: 8,
                verbose: 0,
                validation_split: 0.25,
                callbacks: vec![Box::new(CSVLogger::new(&logged))],
                ..Fit::default()
            },
        )
        .unwrap();
    let expected = std::fs::read_to_string(&logged).unwrap();
    assert!(
        expected.starts_with("epoch,loss,val_loss\n0,"),
        "{expected}"
    );
    assert_eq!(expected.lines().count(), 4, "{expected}");
    assert_eq!(history.to_csv(), expected);
    history.save_csv(&saved).unwrap();
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), expected);
    // A folder that does not exist: an error, and no file.
    let missing = folder.path().join("no/h.csv");
    assert!(history.save_csv(&missing).is_err());
    assert!(!missing.exists());
}

#[test]
fn file_callbacks_check_their_folder_when_training_begins() {
    let folder = tempfile::tempdir().unwrap();
    let missing = folder.path().join("no/such/folder/log.csv");
    let mut model = tiny_model(0.1);
    let error = CSVLogger::new(&missing)
        .on_train_begin(&mut model)
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not exist"), "{error}");
    assert!(
        ModelCheckpoint::new(&missing)
            .on_train_begin(&mut model)
            .is_err()
    );
}

#[test]
fn terminate_on_nan_stops_on_a_nan_loss_only() {
    let mut model = tiny_model(0.1);
    let mut terminate = TerminateOnNaN::new();
    terminate
        .on_train_batch_end(&mut model, 0, &logs(&[("loss", 0.3)]))
        .unwrap();
    assert!(!model.stop_training());
    terminate
        .on_train_batch_end(&mut model, 1, &logs(&[("loss", f64::NAN)]))
        .unwrap();
    assert!(model.stop_training());
    model.set_stop_training(false);
    terminate
        .on_train_batch_end(&mut model, 2, &logs(&[("loss", f64::INFINITY)]))
        .unwrap();
    assert!(model.stop_training());
}

#[test]
fn model_checkpoint_saves_the_best_epochs_only() {
    let folder = tempfile::tempdir().unwrap();
    let pattern = folder.path().join("epoch-{epoch}.safetensors");
    let mut model = tiny_model(0.1);
    let mut checkpoint = ModelCheckpoint::new(&pattern).save_best_only(true);
    let run = run_epochs(&mut checkpoint, &mut model, &[1.0, 0.5, 0.7, 0.4]);
    assert_eq!(run, 4);
    let mut saved: Vec<String> = std::fs::read_dir(folder.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    // Epochs are numbered from 1 in file names, as Keras's {epoch}.
    let expected = [
        "epoch-1.safetensors",
        "epoch-2.safetensors",
        "epoch-4.safetensors",
    ];
    assert_eq!(saved, expected);
    model
        .load_weights(folder.path().join("epoch-2.safetensors"))
        .unwrap();
    assert_eq!(first_weight(&model), 1.0, "epoch 2 (from 1) had weights 1");
    // The default saves the whole model, which loads on its own.
    let whole = Sequential::load(folder.path().join("epoch-4.safetensors")).unwrap();
    assert_eq!(whole.to_json().unwrap(), model.to_json().unwrap());
}

#[test]
fn validation_split_holds_out_the_last_samples() {
    let (x, y) = tiny_data(40);
    let fit = |model: &mut Sequential, options: Fit| model.fit(&x, &y, options).unwrap();
    let mut split = tiny_model(0.1);
    let history = fit(
        &mut split,
        Fit {
            epochs: 2,
            verbose: 0,
            batch_size: 8,
            validation_split: 0.25,
            ..Fit::default()
        },
    );
    // The same as training on the first 30 and validating on the last 10.
    let (head_x, head_y) = (
        x.slice(ndarray::s![..30, ..]),
        y.slice(ndarray::s![..30, ..]),
    );
    let (tail_x, tail_y) = (
        x.slice(ndarray::s![30.., ..]),
        y.slice(ndarray::s![30.., ..]),
    );
    let mut explicit = tiny_model(0.1);
    let expected = explicit
        .fit(
            &head_x,
            &head_y,
            Fit {
                epochs: 2,
                verbose: 0,
                batch_size: 8,
                validation_data: Some((&tail_x, &tail_y)),
                ..Fit::default()
            },
        )
        .unwrap();
    assert_eq!(history.history, expected.history);
    assert_eq!(weights(&split), weights(&explicit));
    let last_val = history.history["val_loss"][1];
    assert_eq!(split.evaluate(&tail_x, &tail_y).unwrap().loss, last_val);
}

#[test]
fn bad_validation_splits_are_errors() {
    let (x, y) = tiny_data(10);
    let mut model = tiny_model(0.1);
    for (fraction, needle) in [
        (1.0, "[0, 1)"),
        (-0.1, "[0, 1)"),
        (f32::NAN, "[0, 1)"),
        (0.95, "no training sample"),
        (1e-20, "no validation sample"),
    ] {
        let options = Fit {
            validation_split: fraction,
            verbose: 0,
            ..Fit::default()
        };
        let error = model.fit(&x, &y, options).unwrap_err().to_string();
        assert!(error.contains(needle), "{fraction}: {error}");
    }
    let both = Fit {
        validation_split: 0.5,
        validation_data: Some((&x, &y)),
        verbose: 0,
        ..Fit::default()
    };
    let error = model.fit(&x, &y, both).unwrap_err().to_string();
    assert!(error.contains("not both"), "{error}");
}

/// Keeps the model's weights at the end of every epoch.
#[derive(Default)]
struct Recorder {
    weights: Vec<Vec<ArrayD<f32>>>,
}

impl Callback for Recorder {
    fn on_epoch_end(&mut self, model: &mut Sequential, _: usize, _: &Logs) -> convnet::Result<()> {
        self.weights.push(weights(model));
        Ok(())
    }
}

/// A min_delta no epoch can beat: epoch 0 is the best, epoch 1 does not
/// improve on it, and with patience 1 training stops there, back at the
/// weights epoch 0 ended with.
#[test]
fn fit_stops_early_and_keeps_the_best_epochs_weights() {
    let (x, y) = tiny_data(40);
    let mut model = tiny_model(0.1);
    let mut recorder = Recorder::default();
    let mut early = EarlyStopping::new()
        .monitor("loss")
        .min_delta(100.0)
        .patience(1)
        .restore_best_weights(true);
    let options = Fit {
        epochs: 10,
        verbose: 0,
        callbacks: vec![Box::new(&mut recorder), Box::new(&mut early)],
        ..Fit::default()
    };
    let history = model.fit(&x, &y, options).unwrap();
    assert_eq!(history.history["loss"].len(), 2, "stopped after epoch 1");
    assert_eq!(early.stopped_epoch(), Some(1));
    assert_eq!(recorder.weights.len(), 2);
    assert_eq!(weights(&model), recorder.weights[0]);
    assert_ne!(weights(&model), recorder.weights[1]);
}

/// Training stops `patience` epochs after the best val_loss and ends with
/// the best epoch's weights.
#[test]
fn fit_ends_with_the_weights_of_the_lowest_val_loss() {
    let (x, mut y) = tiny_data(60);
    // Noise the model cannot learn, so that val_loss stops falling.
    y.indexed_iter_mut()
        .for_each(|((i, _), v)| *v += ((i * 7919) % 13) as f32 / 13.0 - 0.5);
    let mut model = tiny_model(0.5);
    let mut recorder = Recorder::default();
    let mut early = EarlyStopping::new().patience(2).restore_best_weights(true);
    let options = Fit {
        epochs: 12,
        verbose: 0,
        batch_size: 4,
        validation_split: 0.2,
        callbacks: vec![Box::new(&mut recorder), Box::new(&mut early)],
        ..Fit::default()
    };
    let history = model.fit(&x, &y, options).unwrap();
    let val_loss = &history.history["val_loss"];
    let best = (0..val_loss.len())
        .min_by(|&a, &b| val_loss[a].total_cmp(&val_loss[b]))
        .unwrap();
    assert_eq!(weights(&model), recorder.weights[best]);
    // Runs are reproducible: this one stops (at epoch 3, best 1).
    let stopped = early.stopped_epoch().expect("val_loss stops falling");
    assert_eq!(stopped, best + 2, "{val_loss:?}");
    assert_eq!(val_loss.len(), stopped + 1);
}

/// The optimizer's schedule is read at its step count: 40 samples in
/// batches of 8 make 5 steps an epoch, so after 2 epochs (10 steps) the
/// rate is the schedule's at step 10, and fit trains on.
#[test]
fn fit_follows_the_optimizers_schedule() {
    let (x, y) = tiny_data(40);
    let schedule = PiecewiseConstantDecay::new(vec![4, 9], vec![0.1, 0.05, 0.01]);
    let mut model = Sequential::with_seed(7);
    model.add(Dense::new(1).input_shape(&[2]));
    let optimizer = SGD::with_schedule(schedule.clone()).unwrap();
    model
        .compile(Loss::MeanSquaredError, optimizer, &[])
        .unwrap();
    let options = Fit {
        epochs: 2,
        batch_size: 8,
        verbose: 0,
        ..Fit::default()
    };
    let history = model.fit(&x, &y, options).unwrap();
    let optimizer = model.optimizer().unwrap();
    assert_eq!(optimizer.iterations(), 10);
    assert_eq!(optimizer.learning_rate(), schedule.rate(10));
    assert_eq!(optimizer.learning_rate(), 0.01);
    let loss = &history.history["loss"];
    assert!(loss[1] < loss[0], "{loss:?}");
    let error = model
        .optimizer_mut()
        .unwrap()
        .set_learning_rate(0.5)
        .unwrap_err();
    assert!(error.to_string().contains("schedule"), "{error}");
}
