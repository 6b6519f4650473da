//! Training progress, printed the way Keras prints it (Keras's
//! `ProgbarLogger`, which `fit` runs itself):
//!
//! ```text
//! Epoch 1/2
//! 469/469 [==============================] - 3s 6ms/step - loss: 0.3500 - accuracy: 0.9000 - val_loss: 0.1000 - val_accuracy: 0.9700
//! ```
//!
//! `verbose = 1` draws a live bar on a terminal (and prints the finished line
//! either way), `verbose = 2` prints one line per epoch, `verbose = 0` is
//! silent.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of one epoch.
pub struct EpochProgress {
    verbose: u8,
    steps: usize,
    started: Instant,
    bar: Option<ProgressBar>,
}

/// `name: value` pairs, formatted as Keras does (` - loss: 0.1234`).
pub fn format_logs(logs: &[(String, f64)]) -> String {
    logs.iter()
        .map(|(name, value)| format!(" - {name}: {value:.4}"))
        .collect()
}

fn format_time(elapsed: Duration, steps: usize) -> String {
    let per_step = elapsed.as_secs_f64() / steps.max(1) as f64;
    let per_step = if per_step >= 1.0 {
        format!("{per_step:.0}s/step")
    } else {
        format!("{:.0}ms/step", per_step * 1e3)
    };
    format!("{:.0}s {per_step}", elapsed.as_secs_f64())
}

impl EpochProgress {
    /// Starts epoch `epoch` (from 1) of `epochs`, which has `steps` batches.
    pub fn start(verbose: u8, epoch: usize, epochs: usize, steps: usize) -> Self {
        if verbose >= 1 {
            println!("Epoch {epoch}/{epochs}");
        }
        let live = verbose == 1 && std::io::stdout().is_terminal();
        let bar = live.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template("{pos}/{len} [{bar:30}] - {msg}")
                .expect("valid template")
                .progress_chars("=>.");
            bar.set_style(style);
            bar
        });
        EpochProgress {
            verbose,
            steps,
            started: Instant::now(),
            bar,
        }
    }

    /// After batch `step` (from 1); `logs` gives the running averages so
    /// far, and is only called when a live bar shows them.
    pub fn update(&self, step: usize, logs: impl FnOnce() -> Vec<(String, f64)>) {
        if let Some(bar) = &self.bar {
            let logs = logs();
            let elapsed = self.started.elapsed();
            let eta = elapsed.as_secs_f64() / step as f64 * (self.steps - step) as f64;
            bar.set_position(step as u64);
            bar.set_message(format!("ETA: {eta:.0}s{}", format_logs(&logs)));
        }
    }

    /// Prints the epoch's final line, with training and validation logs.
    pub fn finish(self, logs: &[(String, f64)]) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let time = format_time(self.started.elapsed(), self.steps);
        let steps = self.steps;
        match self.verbose {
            0 => {}
            1 => println!(
                "{steps}/{steps} [{}] - {time}{}",
                "=".repeat(30),
                format_logs(logs)
            ),
            _ => println!("{steps}/{steps} - {time}{}", format_logs(logs)),
        }
    }
}
