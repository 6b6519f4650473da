//! A model file whose architecture declares huge layers but whose file
//! lacks their weights (or holds others) is refused from the file's header,
//! before any layer allocates: this test binary's allocator refuses every
//! request over 64 MiB, which aborts the binary (and fails the test) where
//! a layer would first allocate and then notice.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};

/// The largest allocation this binary makes.
const CAP: usize = 64 << 20;

struct Capped;

// SAFETY: every call is passed on to the system allocator, or refused
// (a null pointer) before it is.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// A tensor of a crafted file: name, type, shape.
type Tensor<'a> = (&'a str, Dtype, &'a [usize]);

/// The bytes of a convnet model file of one layer (`class` with `config`)
/// holding `tensors` (name, dtype, shape; zero-filled).
fn model_file(class: &str, config: &str, tensors: &[Tensor]) -> Vec<u8> {
    let architecture = format!(
        r#"{{"class_name": "Sequential", "config": {{"layers": [
            {{"class_name": "{class}", "config": {config}}}]}}}}"#
    );
    let metadata = HashMap::from([
        ("format".to_string(), "convnet".to_string()),
        ("format_version".to_string(), "1".to_string()),
        ("steps".to_string(), "0".to_string()),
        ("architecture".to_string(), architecture),
    ]);
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dtype, shape)| vec![0; shape.iter().product::<usize>() * dtype.bitsize() / 8])
        .collect();
    let views = tensors
        .iter()
        .zip(&data)
        .map(|((name, dtype, shape), bytes)| {
            (
                *name,
                TensorView::new(*dtype, shape.to_vec(), bytes).unwrap(),
            )
        });
    safetensors::serialize(views, Some(metadata)).unwrap()
}

#[test]
fn the_cap_is_in_force() {
    assert!(Vec::<u8>::new().try_reserve_exact(CAP + 1).is_err());
}

#[test]
fn missing_or_misshapen_weights_of_huge_layers_are_refused_before_allocating() {
    // Each layer would make 2^30 or more values (4 GiB or more).
    let dense = r#"{"units": 1073741824, "batch_input_shape": [null, 1]}"#;
    let conv =
        r#"{"filters": 268435456, "kernel_size": [2, 2], "batch_input_shape": [null, 4, 4, 1]}"#;
    let norm = r#"{"batch_input_shape": [null, 536870912]}"#;
    let small = r#"{"units": 2, "batch_input_shape": [null, 3]}"#;
    let f32 = Dtype::F32;
    let cases: [(&str, &str, &[Tensor], &[&str]); 6] = [
        (
            "Dense",
            dense,
            &[],
            &["dense.kernel", "[1, 1073741824]", "no such tensor"],
        ),
        (
            "Dense",
            dense,
            &[("dense.kernel", f32, &[1, 1]), ("dense.bias", f32, &[1])],
            &["dense.kernel", "holds [1, 1]"],
        ),
        (
            "Dense",
            dense,
            &[("dense.kernel", Dtype::U8, &[1, 1 << 20])],
            &["dense.kernel", "U8 [1, 1048576], not F32"],
        ),
        (
            "Conv2D",
            conv,
            &[],
            &["conv2d.kernel", "[2, 2, 1, 268435456]"],
        ),
        (
            "BatchNormalization",
            norm,
            &[],
            &["batch_normalization.gamma"],
        ),
        (
            "Dense",
            small,
            &[
                ("dense.kernel", Dtype::I32, &[3, 2]),
                ("dense.bias", f32, &[2]),
            ],
            &["dense.kernel", "I32 [3, 2], not F32"],
        ),
    ];
    let path = std::path::Path::new("crafted.safetensors");
    for (class, config, tensors, needles) in cases {
        let bytes = model_file(class, config, tensors);
        let error = convnet::io::model_from_bytes(&bytes, path)
            .err()
            .unwrap_or_else(|| panic!("{class} {config} was accepted"))
            .to_string();
        for needle in needles {
            assert!(error.contains(needle), "missing {needle:?} in: {error}");
        }
        assert!(error.contains("crafted.safetensors"), "{error}");
    }
}
