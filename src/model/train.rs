//! The training loop: `fit`, one step at a time. Each step splits the
//! batch between the replicas (`replicas`), runs their passes at the same
//! time, has the reducer add up their gradients, and lets the optimizer
//! step the model's parameters once.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::Sequential;
use super::infer::DEFAULT_EVAL_BATCH_SIZE;
use super::loader::{self, LoaderTimes};
use super::network::{Network, Slots};
use super::replicas::{self, Replicas};
use super::score::{Scoring, Tally};
use crate::callbacks::{Callback, EpochProgress};
use crate::data::{Samples, Slice};
use crate::initializers::Rng;
use crate::layers::{Param, TrainingStep};
use crate::{Error, Result};

/// Options of [`Sequential::fit`], with Keras's defaults.
///
/// ```
/// use convnet::callbacks::EarlyStopping;
/// use convnet::Fit;
/// let options = Fit { batch_size: 128, epochs: 2, ..Fit::default() };
/// let options = Fit {
///     epochs: 20,
///     validation_split: 0.1,
///     callbacks: vec![Box::new(EarlyStopping::new().patience(2))],
///     ..Fit::default()
/// };
/// ```
pub struct Fit<'a> {
    /// Samples per gradient step (default 32).
    pub batch_size: usize,
    /// The epoch to stop after, counted from the start of training as
    /// Keras counts it (default 1).
    pub epochs: usize,
    /// The epoch to start at (default 0), as Keras's `initial_epoch`: to
    /// resume a run that stopped after that many epochs. The samples are
    /// visited in the order the uninterrupted run would have used.
    pub initial_epoch: usize,
    /// 0 silent, 1 progress bar, 2 one line per epoch (default 1).
    pub verbose: u8,
    /// Data (x, y) evaluated after every epoch.
    pub validation_data: Option<(&'a dyn Samples, &'a dyn Samples)>,
    /// The fraction of the samples, in `[0, 1)`, held out to validate on
    /// after every epoch instead of training: the last ones of x and y, as
    /// given (before any shuffling), as in Keras (default 0: none). Not
    /// together with `validation_data`.
    pub validation_split: f32,
    /// Whether to shuffle the training samples before each epoch (default true).
    pub shuffle: bool,
    /// Data-parallel replicas that each batch is split between (default
    /// `None`: one per [`super::SAMPLES_PER_REPLICA`] samples of a batch,
    /// at most [`super::MAX_REPLICAS`]). The results never depend on the
    /// number of threads; on this, only through the order in which
    /// gradients are added, and through BatchNormalization, which
    /// normalises each replica's part of the batch by its own statistics.
    pub replicas: Option<usize>,
    /// Code run at set points of training, in this order (default none):
    /// see [`crate::callbacks`].
    pub callbacks: Vec<Box<dyn Callback + 'a>>,
}

impl Default for Fit<'_> {
    fn default() -> Self {
        Fit {
            batch_size: 32,
            epochs: 1,
            initial_epoch: 0,
            verbose: 1,
            validation_data: None,
            validation_split: 0.0,
            shuffle: true,
            replicas: None,
            callbacks: Vec::new(),
        }
    }
}

/// What `fit` returns: per-epoch values of the loss and metrics (Keras's
/// `history.history`), plus the training time of each epoch.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// `"loss"`, `"accuracy"`, `"val_loss"`, `"val_accuracy"`: one value per epoch.
    pub history: BTreeMap<String, Vec<f64>>,
    /// Seconds spent training in each epoch (validation not included).
    pub epoch_seconds: Vec<f64>,
    /// How many replicas each batch was split between.
    pub replicas: usize,
    /// Seconds, per epoch, that the background loader spent gathering
    /// batches of samples read from files ([`Samples::prefers_prefetch`]),
    /// while training went on: 0 for samples in memory.
    #[serde(default)]
    pub loading_seconds: Vec<f64>,
    /// Seconds, per epoch, that training waited for the loader's next
    /// batch: near 0 when decoding keeps up with training.
    #[serde(default)]
    pub waiting_seconds: Vec<f64>,
}

/// Pairs of samples: training or validation data.
type Pair<'a> = (&'a dyn Samples, &'a dyn Samples);

/// The training and validation parts of x and y under a `validation_split`.
struct Split<'a> {
    train: (Slice<'a>, Slice<'a>),
    validation: (Slice<'a>, Slice<'a>),
}

impl<'a> Split<'a> {
    /// Keras's split: the first [`crate::data::training_count`] samples
    /// train, the rest validate. `None` for a fraction of 0.
    fn of((x, y): Pair<'a>, options: &Fit) -> Result<Option<Self>> {
        let fraction = options.validation_split;
        if fraction == 0.0 {
            return Ok(None);
        }
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::InvalidArgument(format!(
                "validation_split must be in [0, 1), got {fraction}"
            )));
        }
        if options.validation_data.is_some() {
            return Err(Error::InvalidArgument(
                "give validation_data or validation_split, not both".into(),
            ));
        }
        let n = x.len();
        let train = crate::data::training_count(n, fraction);
        if train == 0 || train == n {
            let which = if train == 0 { "training" } else { "validation" };
            return Err(Error::InvalidArgument(format!(
                "validation_split {fraction} of {n} samples leaves no {which} sample"
            )));
        }
        Ok(Some(Split {
            train: (Slice::new(x, 0, train)?, Slice::new(y, 0, train)?),
            validation: (
                Slice::new(x, train, n - train)?,
                Slice::new(y, train, n - train)?,
            ),
        }))
    }
}

/// Runs `hook` on every callback, in order, stopping at the first error.
fn each<'a>(
    callbacks: &mut [Box<dyn Callback + 'a>],
    mut hook: impl FnMut(&mut dyn Callback) -> Result<()>,
) -> Result<()> {
    callbacks.iter_mut().try_for_each(|c| hook(c.as_mut()))
}

impl Sequential {
    /// The order of `samples` samples after `epochs` shuffled epochs, and
    /// the shuffler's state then: each `fit` starts from the model's seed
    /// and replays the epochs it skips, so that a resumed run visits the
    /// samples as the uninterrupted one would.
    fn visiting_order(
        &self,
        samples: usize,
        (epochs, last): (usize, usize),
        shuffle: bool,
    ) -> (Vec<usize>, Rng) {
        let mut order: Vec<usize> = (0..samples).collect();
        let mut shuffler = Rng::seed_from_u64(self.seed ^ 0x5eed_5eed_5eed_5eed);
        // No replay when there is nothing left to train (a resumed run
        // already past its last epoch).
        let epochs = if epochs >= last { 0 } else { epochs };
        for _ in 0..epochs * usize::from(shuffle) {
            order.shuffle(&mut shuffler);
        }
        (order, shuffler)
    }

    /// Trains the model on `(x, y)` for `options.epochs` epochs, or until
    /// a callback stops it ([`Sequential::set_stop_training`]).
    ///
    /// Each batch is split between [`Fit::replicas`] replicas: the model
    /// and copies of its layers, which run at the same time; their
    /// gradients are added in a fixed order before the optimizer's step
    /// (data-parallel training inside one process). A model with a layer
    /// that cannot be copied ([`crate::layers::Layer::replicate`]) trains
    /// as one replica.
    pub fn fit(&mut self, x: &dyn Samples, y: &dyn Samples, options: Fit) -> Result<History> {
        self.prepare()?;
        self.compiled()?;
        self.check_pair(x, y, "fit")?;
        let split = Split::of((x, y), &options)?;
        let (train, validation): (Pair, Option<Pair>) = match &split {
            Some(Split { train, validation }) => {
                ((&train.0, &train.1), Some((&validation.0, &validation.1)))
            }
            None => ((x, y), options.validation_data),
        };
        if let Some((vx, vy)) = validation {
            self.check_pair(vx, vy, "validation_data")?;
        }
        if options.batch_size == 0 {
            return Err(Error::InvalidArgument(
                "batch_size must be at least 1".into(),
            ));
        }
        if options.replicas == Some(0) {
            return Err(Error::InvalidArgument("replicas must be at least 1".into()));
        }
        self.check_batch(options.batch_size.min(x.len()), "fit")?;
        self.check_batch(DEFAULT_EVAL_BATCH_SIZE.min(x.len()), "fit (validation)")?;
        self.fit_checked(train, validation, options)
    }

    /// `fit` on checked data and options: the epochs, with the callbacks'
    /// hooks around them.
    fn fit_checked(
        &mut self,
        train: Pair,
        validation: Option<Pair>,
        options: Fit,
    ) -> Result<History> {
        let Fit { mut callbacks, .. } = options;
        let shard = self.reducer.shard();
        if shard.size > 1 {
            self.check_same_seed()?;
            self.take_first_process_weights();
        }
        // Replicas share this process's part of each batch.
        let count = replicas::replica_count(
            options.batch_size.div_ceil(shard.size.max(1)),
            options.replicas,
        );
        let mut copies = Replicas::of(&self.network, count);
        let mut history = History {
            replicas: copies.as_ref().map_or(1, |r| r.copies.len() + 1),
            ..History::default()
        };
        let (mut order, mut shuffler) = self.visiting_order(
            train.0.len(),
            (options.initial_epoch, options.epochs),
            options.shuffle,
        );
        self.stop_training = false;
        each(&mut callbacks, |c| c.on_train_begin(self))?;
        let mut logs = Vec::new();
        for epoch in options.initial_epoch..options.epochs {
            each(&mut callbacks, |c| c.on_epoch_begin(self, epoch))?;
            if options.shuffle {
                order.shuffle(&mut shuffler);
            }
            let started = Instant::now();
            let progress = EpochProgress::start(
                if shard.rank == 0 { options.verbose } else { 0 },
                epoch + 1,
                options.epochs,
                order.len().div_ceil(options.batch_size),
            );
            let (tally, times) = self.train_epoch(
                train,
                &order,
                (options.batch_size, copies.as_mut()),
                &mut callbacks,
                &progress,
            )?;
            history.epoch_seconds.push(started.elapsed().as_secs_f64());
            history.loading_seconds.push(times.loading.as_secs_f64());
            history.waiting_seconds.push(times.waiting.as_secs_f64());
            logs = self.epoch_logs(&tally, validation)?;
            for (name, value) in &logs {
                let values = history.history.entry(name.clone()).or_default();
                values.push(*value);
            }
            if shard.rank == 0 {
                progress.finish(&logs);
            }
            each(&mut callbacks, |c| c.on_epoch_end(self, epoch, &logs))?;
            if self.stop_training {
                break;
            }
        }
        each(&mut callbacks, |c| c.on_train_end(self, &logs))?;
        Ok(history)
    }

    /// One pass over the samples at `order`, batch by batch, ending early
    /// if a callback asks for a stop: the epoch's tally, and where its
    /// input time went when a background loader gathered the batches.
    fn train_epoch<'a>(
        &mut self,
        data: Pair,
        order: &[usize],
        (batch_size, mut copies): (usize, Option<&mut Replicas>),
        callbacks: &mut [Box<dyn Callback + 'a>],
        progress: &EpochProgress,
    ) -> Result<(Tally, LoaderTimes)> {
        let metrics = self.compiled()?.scoring.metrics.clone();
        let mut tally = Tally::new(metrics.len());
        let mut after_step = |model: &mut Self, step: usize, tally: &Tally| -> Result<bool> {
            progress.update(step + 1, || tally.logs(&metrics, ""));
            if !callbacks.is_empty() {
                let logs = tally.logs(&metrics, "");
                each(callbacks, |c| c.on_train_batch_end(model, step, &logs))?;
            }
            Ok(!model.stop_training)
        };
        if !(data.0.prefers_prefetch() || data.1.prefers_prefetch()) {
            for (step, batch) in order.chunks(batch_size).enumerate() {
                self.train_step(data, batch, copies.as_deref_mut(), &mut tally)?;
                if !after_step(self, step, &tally)? {
                    break;
                }
            }
            return Ok((tally, LoaderTimes::default()));
        }
        // The batch arrives gathered: its samples are 0..n, in order.
        let positions: Vec<usize> = (0..batch_size).collect();
        let times = loader::each_batch_prefetched(data, order, batch_size, |step, batch| {
            let n = batch.x.shape()[0];
            let data: Pair = (&batch.x, &batch.y);
            self.train_step(data, &positions[..n], copies.as_deref_mut(), &mut tally)?;
            after_step(self, step, &tally)
        })?;
        Ok((tally, times))
    }

    /// The epoch's training logs, then the validation ones (`val_`).
    fn epoch_logs(&self, tally: &Tally, validation: Option<Pair>) -> Result<Vec<(String, f64)>> {
        let metrics = &self.compiled()?.scoring.metrics;
        let mut logs = tally.logs(metrics, "");
        if let Some((vx, vy)) = validation {
            let val = self.tally(vx, vy, DEFAULT_EVAL_BATCH_SIZE)?;
            logs.extend(val.logs(metrics, "val_"));
        }
        Ok(logs)
    }

    /// An error, on every process alike, unless every process built its
    /// model with the same seed: it orders the samples and seeds Dropout.
    fn check_same_seed(&mut self) -> Result<()> {
        let halves = [(self.seed >> 32) as f64, (self.seed & 0xffff_ffff) as f64];
        let all = self.reducer.gather(&halves);
        match all.chunks_exact(2).position(|theirs| theirs != halves) {
            None => Ok(()),
            Some(rank) => Err(Error::InvalidArgument(format!(
                "every process must build its model with the same seed: process {rank}'s \
                 differs from {}",
                self.seed
            ))),
        }
    }

    /// Sets the weights and state to the first process's (the reducer's
    /// broadcast), when training spans processes.
    fn take_first_process_weights(&mut self) {
        let entries = &mut self.network.entries;
        let mut params: Vec<&mut [f32]> = entries
            .iter_mut()
            .flat_map(|e| e.layer.params_mut())
            .map(|p| p.value.as_slice_mut().expect("standard layout"))
            .collect();
        self.reducer.broadcast(&mut params);
        let mut buffers: Vec<&mut [f32]> = entries
            .iter_mut()
            .flat_map(|e| e.layer.buffers_mut())
            .map(|b| b.value.as_slice_mut().expect("standard layout"))
            .collect();
        if !buffers.is_empty() {
            self.reducer.broadcast(&mut buffers);
        }
    }

    /// One step of training on the samples at `batch` (this process's
    /// shard of them, when training spans processes), split between the
    /// model and its `copies`; the reducer adds up their gradients (and
    /// averages their state), in replica order, then the optimizer steps.
    fn train_step(
        &mut self,
        (x, y): (&dyn Samples, &dyn Samples),
        batch: &[usize],
        copies: Option<&mut Replicas>,
        tally: &mut Tally,
    ) -> Result<()> {
        let compiled = self.compiled.as_ref().expect("checked by fit");
        let scoring = &compiled.scoring;
        // The whole batch's length, over every process.
        let scale = 1.0 / batch.len() as f32;
        let shard = self.reducer.shard();
        let (shard_start, batch) = shard.of(batch);
        let replicas = copies.as_ref().map_or(1, |r| r.copies.len() + 1);
        let parts: Vec<&[usize]> = replicas::split(batch, replicas).collect();
        let step = self.steps;
        let mut workers: Vec<(&mut Network, &mut Slots)> =
            vec![(&mut self.network, &mut self.slots)];
        if let Some(copies) = copies {
            copies.sync_from(workers[0].0);
            workers.extend(copies.copies.iter_mut().map(|(n, s)| (n, s)));
        }
        // Without a sample (the batch too short for every process), the
        // model stays, its gradients zero: it adds nothing to the sum.
        workers.truncate(parts.len().max(1));
        if parts.is_empty() {
            let model = &mut workers[0].0.entries;
            for p in model.iter_mut().flat_map(|e| e.layer.params_mut()) {
                p.grad.fill(0.0);
            }
        }
        let mut tallies: Vec<Tally> = (0..parts.len())
            .map(|_| Tally::new(tally.correct.len()))
            .collect();
        let mut first_sample = shard_start;
        let jobs: Vec<_> = parts
            .iter()
            .zip(workers.iter_mut())
            .zip(tallies.iter_mut())
            .map(|((part, worker), tally)| {
                let position = TrainingStep { step, first_sample };
                first_sample += part.len();
                (*part, worker, tally, position)
            })
            .collect();
        let run = |(part, (network, slots), tally, position): (
            &[usize],
            &mut (&mut Network, &mut Slots),
            &mut Tally,
            TrainingStep,
        )| {
            half_step(
                network,
                slots,
                (x, y, part),
                (scoring, scale),
                tally,
                position,
            )
        };
        let results: Vec<Result<()>> = if jobs.len() == 1 {
            jobs.into_iter().map(run).collect()
        } else {
            use rayon::prelude::*;
            jobs.into_par_iter().map(run).collect()
        };
        results.into_iter().collect::<Result<()>>()?;
        if shard.size > 1 {
            gather_tallies(self.reducer.as_mut(), &tallies, tally);
        } else {
            for part in &tallies {
                tally.add(part);
            }
        }
        let networks = workers.into_iter().map(|(n, _)| n);
        let reducer = &mut self.reducer;
        reduce(reducer.as_mut(), networks, shard.size > 1);
        let compiled = self.compiled.as_mut().expect("checked by fit");
        let mut params: Vec<&mut Param> = self
            .network
            .entries
            .iter_mut()
            .flat_map(|e| e.layer.params_mut())
            .collect();
        compiled.optimizer.step(&mut params);
        self.steps += 1;
        Ok(())
    }
}

/// Adds every process's share of the step's tally to `tally`, in
/// process order (each process's own replicas added up first).
fn gather_tallies(reducer: &mut dyn super::GradientReducer, parts: &[Tally], tally: &mut Tally) {
    let mut mine = Tally::new(tally.correct.len());
    for part in parts {
        mine.add(part);
    }
    let mut values = vec![mine.samples as f64, mine.loss];
    values.extend(&mine.correct);
    let width = values.len();
    for theirs in reducer.gather(&values).chunks_exact(width) {
        tally.add(&Tally {
            samples: theirs[0] as usize,
            loss: theirs[1],
            correct: theirs[2..].to_vec(),
        });
    }
}

/// The replicas' gradients summed, and their state averaged, into the
/// first's (the model's): over every process too when `spanning` them.
fn reduce<'a>(
    reducer: &mut dyn super::GradientReducer,
    networks: impl Iterator<Item = &'a mut Network>,
    spanning: bool,
) {
    let mut networks: Vec<&mut Network> = networks.collect();
    if networks.len() == 1 && !spanning {
        return;
    }
    reducer.sum(&mut replicas::gradients(
        networks.iter_mut().map(|n| &mut **n),
    ));
    reducer.mean(&mut replicas::states(networks.iter_mut().map(|n| &mut **n)));
}

/// Forward and backward passes of `network` on the samples at `indices`,
/// the loss gradient of each sample multiplied by `scale`: the parameters'
/// gradients, not yet applied.
fn half_step(
    network: &mut Network,
    slots: &mut Slots,
    (x, y, indices): (&dyn Samples, &dyn Samples, &[usize]),
    (scoring, scale): (&Scoring, f32),
    tally: &mut Tally,
    position: TrainingStep,
) -> Result<()> {
    slots.load_inputs(x, indices, &network.input_shape)?;
    slots.load_targets(y, indices)?;
    network.forward_train(slots, position);
    scoring.score(slots, tally, Some(scale))?;
    network.backward(slots);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation::{Relu, Softmax};
    use crate::layers::{Conv2D, Dense, Dropout, Flatten, MaxPooling2D};
    use crate::losses::Loss;
    use crate::optimizers::Adam;
    use ndarray::{ArrayD, IxDyn};
    use rand::RngExt;

    fn small_model() -> Sequential {
        let mut model = Sequential::with_seed(3);
        model.add(
            Conv2D::new(6, (3, 3))
                .activation(Relu)
                .input_shape(&[8, 8, 1]),
        );
        model.add(MaxPooling2D::new((2, 2)));
        model.add(Flatten::new());
        model.add(Dense::new(12).activation(Relu));
        model.add(Dropout::new(0.4));
        model.add(Dense::new(4).activation(Softmax));
        model
            .compile(Loss::CategoricalCrossentropy, Adam::default(), &[])
            .unwrap();
        model
    }

    /// The values of every parameter of `model`.
    fn weights(model: &Sequential) -> Vec<ArrayD<f32>> {
        model.params().iter().map(|p| p.value.clone()).collect()
    }

    /// The gradients after a step split between three replicas are those
    /// of the whole batch on one (Dropout included: its draws follow the
    /// samples, not the replicas).
    #[test]
    fn replicas_add_up_to_the_whole_batch() {
        let mut model = small_model();
        let mut rng = Rng::seed_from_u64(5);
        let x = ArrayD::from_shape_fn(IxDyn(&[7, 8, 8, 1]), |_| rng.random_range(-1.0..1.0));
        let y = ArrayD::from_shape_fn(IxDyn(&[7, 4]), |i| (i[0] % 4 == i[1]) as u8 as f32);
        let batch: Vec<usize> = (0..7).collect();
        let scoring = model.compiled.as_ref().unwrap().scoring.clone();
        let whole_step = TrainingStep {
            step: 9,
            first_sample: 0,
        };
        let (network, slots) = (&mut model.network, &mut model.slots);
        half_step(
            network,
            slots,
            (&x, &y, &batch),
            (&scoring, 1.0 / 7.0),
            &mut Tally::new(0),
            whole_step,
        )
        .unwrap();
        let whole: Vec<ArrayD<f32>> = model.params().iter().map(|p| p.grad.clone()).collect();

        let mut copies = Replicas::of(&model.network, 3).expect("every layer replicates");
        copies.sync_from(&model.network);
        let mut first_sample = 0;
        let parts: Vec<&[usize]> = replicas::split(&batch, 3).collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [3, 3, 1]);
        let mut workers = vec![(&mut model.network, &mut model.slots)];
        workers.extend(copies.copies.iter_mut().map(|(n, s)| (n, s)));
        for (part, (network, slots)) in parts.iter().zip(workers.iter_mut()) {
            let position = TrainingStep {
                step: 9,
                first_sample,
            };
            first_sample += part.len();
            half_step(
                network,
                slots,
                (&x, &y, part),
                (&scoring, 1.0 / 7.0),
                &mut Tally::new(0),
                position,
            )
            .unwrap();
        }
        reduce(
            &mut super::super::InProcessSum,
            workers.into_iter().map(|(n, _)| n),
            false,
        );
        for (parts, whole) in model.params().iter().zip(&whole) {
            for (a, b) in parts.grad.iter().zip(whole) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
        assert!(whole[0].iter().any(|&g| g != 0.0));
    }

    /// Steps on three replicas train the weights that steps on one do (up
    /// to rounding): every step starts each replica from the weights the
    /// step before left the model with.
    #[test]
    fn replicas_train_the_weights_of_one() {
        let mut rng = Rng::seed_from_u64(11);
        let x = ArrayD::from_shape_fn(IxDyn(&[60, 8, 8, 1]), |_| rng.random_range(-1.0..1.0));
        let y = ArrayD::from_shape_fn(IxDyn(&[60, 4]), |i| (i[0] % 4 == i[1]) as u8 as f32);
        let train = |replicas| {
            let mut model = small_model();
            let options = Fit {
                batch_size: 20,
                epochs: 2,
                verbose: 0,
                replicas: Some(replicas),
                ..Fit::default()
            };
            model.fit(&x, &y, options).unwrap();
            weights(&model)
        };
        let (one, three) = (train(1), train(3));
        assert_ne!(one, weights(&small_model()), "six steps moved the weights");
        for (a, b) in three.iter().flatten().zip(one.iter().flatten()) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    /// `sync_from` gives every copy the model's parameters and its
    /// layers' state (BatchNormalization's moving statistics) as they are.
    #[test]
    fn replicas_take_the_models_weights_and_state() {
        use crate::layers::BatchNormalization;
        let mut model = Sequential::with_seed(4);
        model.add(Dense::new(70_000).input_shape(&[3]));
        model.add(BatchNormalization::new());
        model.add(Dense::new(2).activation(Softmax));
        model
            .compile(Loss::CategoricalCrossentropy, Adam::default(), &[])
            .unwrap();
        let mut copies = Replicas::of(&model.network, 3).expect("every layer replicates");
        for (i, entry) in model.network.entries.iter_mut().enumerate() {
            let layer = &mut entry.layer;
            for (j, p) in layer.params_mut().into_iter().enumerate() {
                p.value
                    .iter_mut()
                    .enumerate()
                    .for_each(|(k, v)| *v = (i + j + k) as f32);
            }
            for (j, b) in layer.buffers_mut().into_iter().enumerate() {
                b.value
                    .iter_mut()
                    .enumerate()
                    .for_each(|(k, v)| *v = -((i + j + k) as f32));
            }
        }
        copies.sync_from(&model.network);
        let snapshot = |network: &Network| {
            let mut values = Vec::new();
            for layer in network.entries.iter().map(|e| &e.layer) {
                values.extend(layer.params().iter().map(|p| p.value.clone()));
                values.extend(layer.buffers().iter().map(|b| b.value.clone()));
            }
            values
        };
        let want = snapshot(&model.network);
        assert!(
            want.iter().any(|v| v.iter().any(|&x| x < 0.0)),
            "state to copy"
        );
        for (copy, _) in &copies.copies {
            assert_eq!(snapshot(copy), want);
        }
    }

    /// Samples read "from files": the same values, gathered ahead by the
    /// background loader.
    struct Streamed<'a>(&'a ArrayD<f32>);

    impl Samples for Streamed<'_> {
        fn len(&self) -> usize {
            Samples::len(self.0)
        }
        fn sample_shape(&self) -> Vec<usize> {
            self.0.sample_shape()
        }
        fn gather(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
            self.0.gather(indices, out)
        }
        fn prefers_prefetch(&self) -> bool {
            true
        }
    }

    /// The loader changes where batches come from, not what training does:
    /// the same weights, Dropout and replicas included.
    #[test]
    fn prefetched_batches_train_exactly_as_in_memory_ones() {
        let mut rng = Rng::seed_from_u64(8);
        let x = ArrayD::from_shape_fn(IxDyn(&[150, 8, 8, 1]), |_| rng.random_range(-1.0..1.0));
        let y = ArrayD::from_shape_fn(IxDyn(&[150, 4]), |i| (i[0] % 4 == i[1]) as u8 as f32);
        let train = |streamed: bool| {
            let mut model = small_model();
            let options = Fit {
                batch_size: 70,
                epochs: 2,
                verbose: 0,
                replicas: Some(2),
                ..Fit::default()
            };
            let history = if streamed {
                model.fit(&Streamed(&x), &Streamed(&y), options).unwrap()
            } else {
                model.fit(&x, &y, options).unwrap()
            };
            (weights(&model), history)
        };
        let ((streamed, with_loader), (in_memory, without)) = (train(true), train(false));
        assert_eq!(streamed, in_memory);
        assert_eq!(with_loader.history, without.history);
        assert_eq!(with_loader.loading_seconds.len(), 2);
        assert!(with_loader.loading_seconds.iter().all(|&s| s > 0.0));
        assert!(without.loading_seconds.iter().all(|&s| s == 0.0));
    }

    #[test]
    fn replica_counts_follow_the_batch_not_the_threads() {
        assert_eq!(replicas::replica_count(128, None), 2);
        assert_eq!(replicas::replica_count(32, None), 1);
        assert_eq!(
            replicas::replica_count(10_000, None),
            super::super::MAX_REPLICAS
        );
        assert_eq!(replicas::replica_count(3, Some(8)), 3);
        let batch: Vec<usize> = (0..5).collect();
        assert_eq!(replicas::split(&batch, 4).count(), 3);
    }
}
