//! The IDX reader (MNIST's format), plain and gzip-compressed.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let dims = usize::from(first % 4) + 1;
    let path = Path::new("fuzz.idx");
    // 16 MiB: the cap a caller would set; nothing may allocate past it.
    let limit = 16 << 20;
    let _ = if first & 0x80 != 0 {
        let gz = flate2::read::MultiGzDecoder::new(rest);
        convnet::datasets::mnist::parse_idx(path, gz, dims, limit)
    } else {
        convnet::datasets::mnist::parse_idx(path, rest, dims, limit)
    };
});
