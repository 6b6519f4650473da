//! `convnet train --distributed`: the processes `mpiexec` started, when
//! the build has the `mpi` feature.

use convnet::{Error, Result, Sequential};

/// The processes training together: just this one without
/// `--distributed`.
pub struct Cluster {
    #[cfg(feature = "mpi")]
    mpi: Option<convnet::distributed::Mpi>,
    /// The all-reduce timings of the reducer given to the model.
    #[cfg(feature = "mpi")]
    times: std::cell::OnceCell<Timings>,
}

#[cfg(feature = "mpi")]
type Timings = std::sync::Arc<std::sync::Mutex<convnet::distributed::ReduceTimes>>;

impl Cluster {
    /// Joins the MPI job if `distributed`: an error in a build without
    /// MPI, or outside `mpiexec`.
    pub fn start(distributed: bool) -> Result<Cluster> {
        #[cfg(feature = "mpi")]
        {
            let mpi = match distributed {
                true => Some(convnet::distributed::Mpi::init().map_err(|e| match e {
                    Error::InvalidArgument(m) => {
                        Error::InvalidArgument(format!("--distributed: {m}"))
                    }
                    other => other,
                })?),
                false => None,
            };
            Ok(Cluster {
                mpi,
                times: Default::default(),
            })
        }
        #[cfg(not(feature = "mpi"))]
        match distributed {
            true => Err(Error::InvalidArgument(
                "--distributed needs a convnet built with MPI: install MPICH (apt-get install \
                 mpich libmpich-dev libclang-dev), then build with `cargo build --release \
                 --features mpi`"
                    .into(),
            )),
            false => Ok(Cluster {}),
        }
    }

    /// Whether this process prints and writes files: rank 0, or the only one.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    fn rank(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return mpi.rank();
        }
        0
    }

    /// `", N processes"` when training is distributed.
    pub fn describe(&self) -> String {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return format!(" per process, {} processes", mpi.size());
        }
        String::new()
    }

    /// Makes `model`'s `fit` span the processes.
    pub fn attach(&self, model: &mut Sequential) {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            let reducer = mpi.reducer();
            let _ = self.times.set(reducer.times());
            model.set_gradient_reducer(Box::new(reducer));
        }
        let _ = model;
    }

    /// `result`, or, for a process that failed while others may wait for
    /// it in an all-reduce, the error printed and the whole job ended.
    pub fn finish(self, result: Result<()>) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let (Err(e), Some(mpi)) = (&result, &self.mpi)
            && mpi.size() > 1
        {
            eprintln!("error: process {} of {}: {e}", mpi.rank(), mpi.size());
            mpi.abort(1);
        }
        #[cfg(feature = "mpi")]
        if let (Ok(()), true, Some(times)) = (&result, self.is_root(), self.times.get())
            && let Ok(times) = times.lock()
            && times.count > 0
        {
            println!(
                "All-reduce of the gradients ({} values): {} steps, {:.3} ms each",
                times.values,
                times.count,
                1e3 * times.seconds / times.count as f64
            );
        }
        result
    }
}
