//! Model files (`load_model`) and weights files (`load_weights` into LeNet).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    let _ = convnet::io::model_from_bytes(data, path);
    let mut model = convnet::models::lenet(1);
    if model.build().is_ok() {
        let _ = convnet::io::weights_from_bytes(&mut model, data, path);
    }
});
