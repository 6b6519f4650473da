//! Training across two MPI processes (feature `mpi`, MPICH installed).
//! Each test runs this test binary's `#[ignore]`d child test under
//! `mpiexec -n 2`:
//!
//! - the two processes end with the same weights, bit for bit, and with
//!   the weights (and history) of one process splitting the same batches
//!   between two replicas, bit for bit: Dropout, BatchNormalization and a
//!   short last batch included;
//! - a process that dies ends the job, rather than leaving the other
//!   waiting forever in the all-reduce.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use convnet::distributed::Mpi;
use convnet::layers::{BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPooling2D};
use convnet::model::GradientReducer;
use convnet::optimizers::Adam;
use convnet::{Activation::*, Fit, History, Loss, Metric, Sequential};
use ndarray::{Array2, Array4};

/// Runs the child test `name` of this binary in 2 processes; its exit
/// status and output, or `None` if it ran past `limit`.
fn mpiexec(name: &str, limit: Duration) -> Option<(bool, String)> {
    let mut child = Command::new("mpiexec")
        .args(["-n", "2"])
        .arg(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpiexec (MPICH) is installed: apt-get install mpich libmpich-dev");
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            return Some((status.success(), text));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn model(seed: u64) -> Sequential {
    let mut model = Sequential::with_seed(seed);
    model.add(
        Conv2D::new(4, (3, 3))
            .activation(Relu)
            .input_shape(&[10, 10, 1]),
    );
    model.add(BatchNormalization::new());
    model.add(MaxPooling2D::new((2, 2)));
    model.add(Flatten::new());
    model.add(Dense::new(16).activation(Relu));
    model.add(Dropout::new(0.3));
    model.add(Dense::new(3).activation(Softmax));
    model
        .compile(
            Loss::CategoricalCrossentropy,
            Adam::default(),
            &[Metric::Accuracy],
        )
        .unwrap();
    model
}

/// 102 samples: batches of 32, the last one of 6 (3 for each process).
fn data() -> (Array4<f32>, Array2<f32>) {
    let x = Array4::from_shape_fn((102, 10, 10, 1), |(n, i, j, _)| {
        ((n * 31 + i * 7 + j * 3) % 17) as f32 / 17.0 - 0.5
    });
    let y = Array2::from_shape_fn((102, 3), |(n, c)| ((n % 3) == c) as u8 as f32);
    (x, y)
}

/// Trains 3 epochs: across the MPI job when `mpi` is given (one replica
/// per process), else in this process with two replicas.
fn train(mpi: Option<&Mpi>) -> (Vec<f32>, History) {
    let mut model = model(7);
    if let Some(mpi) = mpi {
        model.set_gradient_reducer(Box::new(mpi.reducer()));
    }
    let (x, y) = data();
    let history = model
        .fit(
            &x,
            &y,
            Fit {
                batch_size: 32,
                epochs: 3,
                verbose: 0,
                replicas: Some(if mpi.is_some() { 1 } else { 2 }),
                ..Fit::default()
            },
        )
        .unwrap();
    let mut values: Vec<f32> = model
        .params()
        .iter()
        .flat_map(|p| p.value.iter().copied())
        .collect();
    values.extend(model.buffers().iter().flat_map(|b| b.value.iter().copied()));
    (values, history)
}

#[test]
#[ignore = "run by two_processes_train_as_one under mpiexec"]
fn child_equivalence() {
    let mpi = Mpi::init().unwrap();
    assert_eq!(mpi.size(), 2);
    let (weights, history) = train(Some(&mpi));
    // Every process's weights, to compare bit for bit.
    let bits: Vec<f64> = weights.iter().map(|v| f64::from(v.to_bits())).collect();
    let all = mpi.reducer().gather(&bits);
    let (first, second) = all.split_at(bits.len());
    assert!(first == second, "the two processes' weights differ");
    if mpi.rank() == 0 {
        let (alone, alone_history) = train(None);
        let differing = weights
            .iter()
            .zip(&alone)
            .filter(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(
            differing.count(),
            0,
            "2 processes differ from 1 process with 2 replicas"
        );
        assert_eq!(history.history, alone_history.history);
        println!("EQUIVALENT {} values", weights.len());
    }
}

#[test]
fn two_processes_train_as_one() {
    let (ok, output) = mpiexec("child_equivalence", Duration::from_secs(120))
        .expect("the two processes finished within 2 minutes");
    assert!(ok, "{output}");
    assert!(output.contains("EQUIVALENT"), "{output}");
}

/// Ends the process in the middle of training.
struct Die;

impl convnet::callbacks::Callback for Die {
    fn on_train_batch_end(
        &mut self,
        _model: &mut Sequential,
        step: usize,
        _logs: &[(String, f64)],
    ) -> convnet::Result<()> {
        if step == 1 {
            std::process::exit(3);
        }
        Ok(())
    }
}

#[test]
#[ignore = "run by a_dead_process_ends_the_job under mpiexec"]
fn child_dies() {
    let mpi = Mpi::init().unwrap();
    let mut model = model(7);
    model.set_gradient_reducer(Box::new(mpi.reducer()));
    let mut callbacks: Vec<Box<dyn convnet::callbacks::Callback>> = Vec::new();
    if mpi.rank() == 1 {
        callbacks.push(Box::new(Die));
    }
    let (x, y) = data();
    let options = Fit {
        batch_size: 8,
        epochs: 1000,
        verbose: 0,
        callbacks,
        ..Fit::default()
    };
    // Rank 0 would train for long: it must be ended, not finish.
    let _ = model.fit(&x, &y, options);
    println!("rank {} finished training", mpi.rank());
}

#[test]
fn a_dead_process_ends_the_job() {
    let (ok, output) = mpiexec("child_dies", Duration::from_secs(60))
        .expect("the job ended within a minute of a process's death: no hang");
    assert!(!ok, "{output}");
    assert!(!output.contains("finished training"), "{output}");
}
