//! Data-parallel training across processes and machines, over MPI
//! (cargo feature `mpi`; MPICH or another MPI library must be installed).
//!
//! Start the same program on every process with `mpiexec`; each one
//! builds the same model, sets an [`MpiReducer`] as its gradient reducer,
//! and calls `fit` with the same options. Every process then trains on
//! its shard of each batch and the reducer adds up the gradients of all
//! of them with one `MPI_Allreduce` per step over one flat buffer, so
//! that every process takes the same optimizer step and holds the same
//! weights, bit for bit. See [`crate::model::GradientReducer`] for what
//! `fit` does differently across processes, and `docs/distributed.md`.
//!
//! ```no_run
//! use convnet::distributed::Mpi;
//! use convnet::layers::Dense;
//! use convnet::{Fit, Loss, Sequential, optimizers::SGD};
//! use ndarray::Array2;
//!
//! let mpi = Mpi::init()?; // run under `mpiexec -n 2`
//! let mut model = Sequential::with_seed(1);
//! model.add(Dense::new(1).input_shape(&[2]));
//! model.compile(Loss::MeanSquaredError, SGD::new(0.1), &[])?;
//! model.set_gradient_reducer(Box::new(mpi.reducer()));
//! let x = Array2::<f32>::zeros((64, 2));
//! let y = Array2::<f32>::ones((64, 1));
//! // Only rank 0 shows progress; give it the callbacks that write files.
//! model.fit(&x, &y, Fit { batch_size: 16, ..Fit::default() })?;
//! if mpi.rank() == 0 {
//!     model.save("model.safetensors")?;
//! }
//! # Ok::<(), convnet::Error>(())
//! ```
//!
//! Faults: MPI's default error handler (`MPI_ERRORS_ARE_FATAL`) stays in
//! place. When a process dies, `mpiexec` ends the others, which would
//! otherwise wait forever in the next all-reduce; the job exits with an
//! error. Rank 0's last checkpoint resumes the run.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};

use crate::model::{GradientReducer, InProcessSum, Shard};
use crate::{Error, Result};

/// Environment variables that process managers (MPICH's and Intel's
/// Hydra, PMIx, Open MPI) set in the processes they start.
const LAUNCHER_VARIABLES: [&str; 3] = ["PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"];

/// MPI, initialised for this process: its place among the processes
/// `mpiexec` started. MPI is finalised when this and every reducer made
/// from it are dropped.
pub struct Mpi {
    universe: Arc<Universe>,
    world: SimpleCommunicator,
}

impl Mpi {
    /// Initialises MPI (the threading level `Funneled`: only the thread
    /// that calls `fit` talks to MPI). An error outside `mpiexec` (a
    /// process that no MPI process manager started), or when MPI is
    /// already initialised. `mpiexec -n 1` is allowed: one process trains
    /// as without MPI.
    pub fn init() -> Result<Mpi> {
        if !LAUNCHER_VARIABLES
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return Err(Error::InvalidArgument(
                "distributed training needs processes started by mpiexec, e.g. \
                 `mpiexec -n 2 convnet train --distributed`"
                    .into(),
            ));
        }
        let (universe, _) =
            mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| {
                Error::InvalidArgument("MPI is already initialised in this process".into())
            })?;
        let world = universe.world();
        Ok(Mpi {
            universe: Arc::new(universe),
            world,
        })
    }

    /// This process's rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    /// How many processes train together.
    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// Waits until every process gets here.
    pub fn barrier(&self) {
        self.world.barrier();
    }

    /// Ends every process of the job (`MPI_Abort`) with exit status
    /// `code`: for a process that fails while others may be waiting for
    /// it in an all-reduce.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// A gradient reducer over every process, for
    /// [`crate::Sequential::set_gradient_reducer`].
    pub fn reducer(&self) -> MpiReducer {
        MpiReducer {
            _universe: Arc::clone(&self.universe),
            world: self.universe.world(),
            send: Vec::new(),
            receive: Vec::new(),
            times: Arc::default(),
        }
    }
}

/// Time spent in the gradients' all-reduce, over the steps so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReduceTimes {
    /// All-reduces of the gradients (one per step).
    pub count: u64,
    /// Seconds spent in them, copies in and out of the flat buffer
    /// included.
    pub seconds: f64,
    /// Values (f32) in the last one.
    pub values: usize,
}

/// The [`GradientReducer`] of training across the processes of an MPI
/// job: the replicas of this process are added up in replica order, then
/// one all-reduce (`MPI_SUM` over one flat `f32` buffer, the tensors in
/// the model's order) adds up the processes. Every process gets the same
/// sums, bit for bit (MPICH computes each sum once and sends it, or alike
/// on both sides of an exchange; `tests/mpi.rs` checks 2 processes); with two
/// processes of one replica each, the sums are those of one process with
/// two replicas.
///
/// BatchNormalization's moving statistics are averaged over every
/// replica of every process after each step, as between the replicas of
/// one process (not PyTorch DDP's default of rank 0's buffers): the
/// result then matches training in one process, and every process keeps
/// the same state.
pub struct MpiReducer {
    _universe: Arc<Universe>,
    world: SimpleCommunicator,
    send: Vec<f32>,
    receive: Vec<f32>,
    times: Arc<Mutex<ReduceTimes>>,
}

impl MpiReducer {
    /// A handle on the all-reduce timings, still readable once the
    /// reducer is given to the model.
    pub fn times(&self) -> Arc<Mutex<ReduceTimes>> {
        Arc::clone(&self.times)
    }

    /// Adds up `tensors` over every process, in place; `extra` travels
    /// with them, its sum returned.
    fn all_reduce(&mut self, tensors: &mut [&mut [f32]], extra: Option<f32>) -> f32 {
        self.send.clear();
        for t in tensors.iter() {
            self.send.extend_from_slice(t);
        }
        self.send.extend(extra);
        self.receive.resize(self.send.len(), 0.0);
        self.world.all_reduce_into(
            &self.send[..],
            &mut self.receive[..],
            SystemOperation::sum(),
        );
        let mut sums = self.receive.iter();
        for t in tensors.iter_mut() {
            for (v, s) in t.iter_mut().zip(sums.by_ref()) {
                *v = *s;
            }
        }
        sums.next().copied().unwrap_or(0.0)
    }
}

impl GradientReducer for MpiReducer {
    fn sum(&mut self, parts: &mut [Vec<&mut [f32]>]) {
        let started = Instant::now();
        InProcessSum.sum(parts);
        let Some(first) = parts.first_mut() else {
            return;
        };
        self.all_reduce(first, None);
        if let Ok(mut times) = self.times.lock() {
            times.count += 1;
            times.seconds += started.elapsed().as_secs_f64();
            times.values = self.send.len();
        }
    }

    fn mean(&mut self, parts: &mut [Vec<&mut [f32]>]) {
        let replicas = parts.len() as f32;
        InProcessSum.sum(parts);
        // The same layers everywhere: all processes skip this alike.
        let Some(first) = parts.first_mut().filter(|f| !f.is_empty()) else {
            return;
        };
        let total = self.all_reduce(first, Some(replicas));
        if total > 1.0 {
            first
                .iter_mut()
                .for_each(|t| t.iter_mut().for_each(|v| *v /= total));
        }
    }

    fn shard(&self) -> Shard {
        Shard {
            rank: self.world.rank() as usize,
            size: self.world.size() as usize,
        }
    }

    fn broadcast(&mut self, tensors: &mut [&mut [f32]]) {
        self.send.clear();
        for t in tensors.iter() {
            self.send.extend_from_slice(t);
        }
        self.world
            .process_at_rank(0)
            .broadcast_into(&mut self.send[..]);
        let mut values = self.send.iter();
        for t in tensors.iter_mut() {
            for (v, s) in t.iter_mut().zip(values.by_ref()) {
                *v = *s;
            }
        }
    }

    fn gather(&mut self, mine: &[f64]) -> Vec<f64> {
        let mut all = vec![0.0; mine.len() * self.world.size() as usize];
        self.world.all_gather_into(mine, &mut all[..]);
        all
    }
}
