//! Saving files without ever leaving a half-written one behind, model
//! weights, one-file models and checkpoints.

mod model_file;
mod output;
mod weights;

pub use model_file::{
    Checkpoint, FORMAT_VERSION, load_checkpoint, load_model, model_from_bytes, save_checkpoint,
    save_model,
};
pub use output::{abandon_writes, check_outputs, output_target, write_atomic};
pub use weights::{MAX_MODEL_FILE_BYTES, load_weights, save_weights, weights_from_bytes};
