//! Data-parallel training inside a process: each batch is split into
//! parts, one per replica (the model itself, then copies of its layers),
//! which run their forward and backward passes at the same time and meet
//! once per step, at the [`GradientReducer`].
//!
//! The number of replicas is fixed by the batch size (one per
//! [`SAMPLES_PER_REPLICA`] samples, at most [`MAX_REPLICAS`]) or by
//! [`crate::Fit::replicas`], never by the number of threads, and the
//! reducer adds the parts in replica order: results are the same bit for
//! bit on any number of cores.

use rayon::prelude::*;

use super::network::{Entry, Network, Slots};
use crate::layers::{Buffer, Layer, Param, values, values_mut};

/// Samples per replica when [`crate::Fit::replicas`] is left to `fit`.
pub const SAMPLES_PER_REPLICA: usize = 64;
/// The most replicas `fit` makes on its own.
pub const MAX_REPLICAS: usize = 8;

/// Where the replicas of a step meet: the sum of their parameter
/// gradients and the mean of their non-trainable state. In-process
/// training uses [`InProcessSum`]; a reducer spanning processes (an MPI
/// all-reduce, `convnet::distributed::MpiReducer` with the `mpi` feature)
/// is another implementation of the same trait.
///
/// A reducer spanning processes also says which [`Shard`] of every batch
/// its process trains on, and `fit` then works as data-parallel training
/// does across machines:
///
/// - at the start of `fit`, every process takes the first process's
///   weights and state ([`GradientReducer::broadcast`]);
/// - every process visits the samples in the same order (the model's
///   seed), and trains on its shard of each batch: the loss is still
///   scaled by 1 / the whole batch's length, and Dropout's draws follow
///   the samples' places in the whole batch, as in one process;
/// - [`GradientReducer::sum`] adds the gradients over every replica of
///   every process, [`GradientReducer::mean`] averages the
///   non-trainable state (BatchNormalization's moving statistics) over
///   them, as between the replicas of one process;
/// - each step's loss and metric sums are gathered from every process
///   ([`GradientReducer::gather`]), so that every process logs the
///   whole batch's figures and every callback decides alike;
/// - only the first process (rank 0) shows progress. Callbacks run on
///   every process (a stop must be taken by all); give the ones that
///   write files to rank 0 only.
///
/// Validation runs on every process, over all the validation data.
pub trait GradientReducer: Send + Sync {
    /// `parts[r][t]` is tensor `t` of replica `r`. Leaves in `parts[0][t]`
    /// the sum over every replica (and, for a reducer spanning processes,
    /// over every process), added in a fixed order.
    fn sum(&mut self, parts: &mut [Vec<&mut [f32]>]);

    /// Likewise, the mean.
    fn mean(&mut self, parts: &mut [Vec<&mut [f32]>]);

    /// The share of every batch this process trains on (default: all of
    /// it, [`Shard::WHOLE`]).
    fn shard(&self) -> Shard {
        Shard::WHOLE
    }

    /// Gives every process the first process's `tensors` (called by `fit`
    /// on the weights and the state before training). Default: nothing,
    /// for one process.
    fn broadcast(&mut self, tensors: &mut [&mut [f32]]) {
        let _ = tensors;
    }

    /// Every process's `mine`, in process order, each the same length
    /// (`fit` gathers each step's loss and metric sums with it). Default:
    /// `mine`, for one process.
    fn gather(&mut self, mine: &[f64]) -> Vec<f64> {
        mine.to_vec()
    }
}

/// Which share of every batch a process trains on: part `rank` of the
/// batch cut into `size` contiguous parts (equal but for the last), as
/// [`crate::Fit`] cuts a batch between replicas.
///
/// ```
/// use convnet::model::Shard;
/// let shard = Shard { rank: 1, size: 2 };
/// let batch: Vec<usize> = (0..5).collect();
/// assert_eq!(shard.of(&batch), (3, &[3, 4][..]));
/// assert_eq!(Shard::WHOLE.of(&batch), (0, &batch[..]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This process's place, `0..size`.
    pub rank: usize,
    /// How many processes share each batch.
    pub size: usize,
}

impl Shard {
    /// The whole batch: one process.
    pub const WHOLE: Shard = Shard { rank: 0, size: 1 };

    /// This shard's part of `batch`, with its place in the batch: where
    /// it starts, and its samples (none when the batch has too few for
    /// every process).
    pub fn of<T>(self, batch: &[T]) -> (usize, &[T]) {
        let length = batch.len().div_ceil(self.size.max(1)).max(1);
        let start = (self.rank * length).min(batch.len());
        let end = (start + length).min(batch.len());
        (start, &batch[start..end])
    }
}

/// Values of a tensor that one task of [`InProcessSum`] adds up.
const SUM_PIECE: usize = 1 << 16;

/// The reducer of training inside one process: adds each replica's
/// tensors onto the first's, in replica order.
#[derive(Clone, Copy, Debug, Default)]
pub struct InProcessSum;

impl GradientReducer for InProcessSum {
    fn sum(&mut self, parts: &mut [Vec<&mut [f32]>]) {
        let Some((first, others)) = parts.split_first_mut() else {
            return;
        };
        // Tensors, and pieces of each, in parallel (a dense kernel of a
        // million weights is most of the work: one task would sum it
        // while the other threads wait); each value adds the replicas in
        // order.
        first.par_iter_mut().enumerate().for_each(|(t, total)| {
            total
                .par_chunks_mut(SUM_PIECE)
                .enumerate()
                .for_each(|(piece, total)| {
                    let at = piece * SUM_PIECE;
                    for other in others.iter() {
                        let other = &other[t][at..at + total.len()];
                        total.iter_mut().zip(other).for_each(|(a, b)| *a += b);
                    }
                });
        });
    }

    fn mean(&mut self, parts: &mut [Vec<&mut [f32]>]) {
        let replicas = parts.len() as f32;
        self.sum(parts);
        if replicas > 1.0
            && let Some(first) = parts.first_mut()
        {
            first
                .iter_mut()
                .for_each(|t| t.iter_mut().for_each(|v| *v /= replicas));
        }
    }
}

/// The replicas of one `fit`, apart from the model itself (replica 0).
pub(crate) struct Replicas {
    /// Replicas 1.., each a copy of the model's layers with its slots.
    pub copies: Vec<(Network, Slots)>,
}

impl Replicas {
    /// `count - 1` copies of `model` (it is replica 0), or none if a layer
    /// cannot be copied ([`crate::layers::Layer::replicate`]).
    pub fn of(model: &Network, count: usize) -> Option<Replicas> {
        let copies = (1..count)
            .map(|_| {
                let network = copy(model)?;
                let slots = Slots::for_network(&network);
                Some((network, slots))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Replicas { copies })
    }

    /// Sets every copy's parameters and state to the model's: pieces of
    /// the parameters copied in parallel (with one copy, a single task
    /// would copy cifar10-cnn's 1.25 M weights while the other threads
    /// wait); the state (a few values per channel) as it comes.
    pub fn sync_from(&mut self, model: &Network) {
        let layers = || model.entries.iter().map(|e| &e.layer);
        let params: Vec<&Param> = layers().flat_map(|l| l.params()).collect();
        let buffers: Vec<&Buffer> = layers().flat_map(|l| l.buffers()).collect();
        let mut pieces = Vec::new();
        for (copy, _) in &mut self.copies {
            let mine = copy.entries.iter_mut().flat_map(|e| e.layer.buffers_mut());
            for (mine, theirs) in mine.zip(&buffers) {
                mine.value.assign(&theirs.value);
            }
            let mine = copy.entries.iter_mut().flat_map(|e| e.layer.params_mut());
            for (mine, theirs) in mine.zip(&params) {
                let mine = values_mut(&mut mine.value).chunks_mut(SUM_PIECE);
                pieces.extend(mine.zip(values(&theirs.value).chunks(SUM_PIECE)));
            }
        }
        pieces
            .into_par_iter()
            .for_each(|(mine, theirs)| mine.copy_from_slice(theirs));
    }
}

/// A copy of a network's layers (weights, state, plan), if every layer has one.
fn copy(network: &Network) -> Option<Network> {
    let entries = network
        .entries
        .iter()
        .map(|e| {
            Some(Entry {
                name: e.name.clone(),
                layer: e.layer.replicate()?,
                output_shape: e.output_shape.clone(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Network {
        entries,
        plan: network.plan.clone(),
        input_shape: network.input_shape.clone(),
    })
}

/// How many replicas `fit` runs for batches of `batch_size`: `requested`,
/// or one per [`SAMPLES_PER_REPLICA`] samples, at most [`MAX_REPLICAS`].
pub(crate) fn replica_count(batch_size: usize, requested: Option<usize>) -> usize {
    requested
        .unwrap_or_else(|| batch_size.div_ceil(SAMPLES_PER_REPLICA).min(MAX_REPLICAS))
        .clamp(1, batch_size.max(1))
}

/// The parts of `batch` for `replicas` replicas: equal but for the last,
/// in order (fewer parts when the batch has fewer samples).
pub(crate) fn split(batch: &[usize], replicas: usize) -> std::slice::Chunks<'_, usize> {
    batch.chunks(batch.len().div_ceil(replicas.max(1)).max(1))
}

/// Every replica's parameter gradients, as `parts[replica][tensor]`.
pub(crate) fn gradients<'a>(
    networks: impl Iterator<Item = &'a mut Network>,
) -> Vec<Vec<&'a mut [f32]>> {
    per_replica(networks, |layer| {
        let grads = layer.params_mut().into_iter().map(|p| &mut p.grad);
        grads
            .map(|g| g.as_slice_mut().expect("standard layout"))
            .collect()
    })
}

/// Every replica's non-trainable state, as `parts[replica][tensor]`.
pub(crate) fn states<'a>(
    networks: impl Iterator<Item = &'a mut Network>,
) -> Vec<Vec<&'a mut [f32]>> {
    per_replica(networks, |layer| {
        let values = layer.buffers_mut().into_iter().map(|b| &mut b.value);
        values
            .map(|v| v.as_slice_mut().expect("standard layout"))
            .collect()
    })
}

/// `tensors(layer)` of every layer of every replica, replica by replica.
fn per_replica<'a>(
    networks: impl Iterator<Item = &'a mut Network>,
    tensors: impl Fn(&'a mut dyn Layer) -> Vec<&'a mut [f32]>,
) -> Vec<Vec<&'a mut [f32]>> {
    networks
        .map(|n| {
            n.entries
                .iter_mut()
                .flat_map(|e| tensors(e.layer.as_mut()))
                .collect()
        })
        .collect()
}
