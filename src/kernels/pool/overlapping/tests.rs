//! The vector kernels against the generic loops they replace
//! (`max_pool_unpadded`, `max_pool_generic_backward`): the same outputs,
//! winners and input gradients, bit for bit, on both kernel sets this CPU
//! runs (called directly, so the process-wide `allow_avx512` switch is
//! left alone).

use super::super::{Columns, max_pool_generic_backward, max_pool_unpadded};
use super::*;
use crate::layers::Padding;

/// Shapes `(height, width, channels)`: odd and even sizes (even ones leave
/// a row or column outside every window), channel counts below, at and
/// past one vector of either width, AlexNet's 96 and a 100 that ends in a
/// partial group; larger ones give inputs that win four windows, whose
/// sums show the order of the additions.
const SHAPES: [(usize, usize, usize); 11] = [
    (3, 3, 1),
    (5, 5, 3),
    (4, 7, 8),
    (7, 6, 17),
    (8, 9, 16),
    (6, 5, 24),
    (9, 5, 33),
    (11, 10, 96),
    (7, 8, 100),
    (13, 13, 6),
    (15, 17, 40),
];

const IMAGES: usize = 2;

/// The kernel sets this CPU runs; prints `SKIPPED` on stderr if none.
fn kernel_sets(test: &str) -> Vec<Kernels> {
    let sets: Vec<Kernels> = [Kernels::Avx512, Kernels::Avx2]
        .into_iter()
        .filter(|k| k.runs_here())
        .collect();
    if sets.is_empty() {
        eprintln!("SKIPPED: {test}: this CPU has neither AVX-512F nor AVX2");
    }
    sets
}

/// A small deterministic generator (xorshift), values in `[-1, 1)`.
struct Values(u64);

impl Values {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values: uniform, or (with `levels`) rounded to multiples of
    /// `1 / levels`, so few distinct values and many ties within windows;
    /// a zero is then +0.0 or -0.0 at random.
    fn take(&mut self, n: usize, levels: Option<f32>) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v = self.next();
                match levels {
                    Some(l) => {
                        let q = (v * l).round() / l;
                        if q == 0.0 && self.next() < 0.0 {
                            -0.0
                        } else {
                            q
                        }
                    }
                    None => v,
                }
            })
            .collect()
    }
}

/// The inputs of one case: uniform, few levels (ties), and few levels with
/// a NaN, -inf and +inf sprinkled in.
fn inputs(seed: u64, len: usize) -> Vec<Vec<f32>> {
    let mut values = Values(0x9e37_79b9_7f4a_7c15 ^ seed);
    let mut specials = values.take(len, Some(2.0));
    for (i, v) in specials.iter_mut().enumerate() {
        match i % 37 {
            5 => *v = f32::NAN,
            11 => *v = f32::NEG_INFINITY,
            23 => *v = f32::INFINITY,
            _ => {}
        }
    }
    vec![
        values.take(len, None),
        values.take(len, Some(1.0)),
        specials,
    ]
}

fn window(h: usize, w: usize, c: usize) -> Window2d {
    Window2d::new((h, w, c), (3, 3), (2, 2), Padding::Valid).unwrap()
}

/// Panics at the first value of `actual` that differs from `expected`
/// in its bits (saying where, not printing thousands of values).
fn assert_same_bits(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}");
    let first = (0..actual.len()).find(|&i| actual[i].to_bits() != expected[i].to_bits());
    if let Some(i) = first {
        panic!(
            "{what}: value {i} is {:?}, should be {:?}",
            actual[i], expected[i]
        );
    }
}

/// The generic loop's outputs and winners.
fn reference_forward(w: &Window2d, input: &[f32]) -> (Vec<f32>, Vec<u8>) {
    let len = input.len() / w.in_len() * w.out_pixels() * w.channels;
    let (mut output, mut winners) = (vec![f32::NAN; len], vec![u8::MAX; len]);
    max_pool_unpadded(w, input, &mut output, &mut winners, &mut Columns::default());
    (output, winners)
}

#[test]
fn forward_matches_the_generic_loop_bit_for_bit() {
    for kernels in kernel_sets("forward_matches_the_generic_loop_bit_for_bit") {
        for (case, &(h, wd, c)) in SHAPES.iter().enumerate() {
            let w = window(h, wd, c);
            assert!(is_3x3_stride_2(&w));
            for (kind, input) in inputs(case as u64, IMAGES * w.in_len()).iter().enumerate() {
                let (expected, expected_winners) = reference_forward(&w, input);
                let mut output = vec![f32::NAN; expected.len()];
                let mut winners = vec![u8::MAX; expected.len()];
                forward(kernels, &w, input, &mut output, &mut winners);
                let at = format!("{kernels:?}, {h}x{wd}x{c}, inputs {kind}");
                assert_same_bits(&output, &expected, &format!("outputs, {at}"));
                let first = (0..winners.len()).find(|&i| winners[i] != expected_winners[i]);
                assert_eq!(first, None, "first different winner, {at}");
            }
        }
    }
}

#[test]
fn backward_matches_the_generic_loop_bit_for_bit() {
    for kernels in kernel_sets("backward_matches_the_generic_loop_bit_for_bit") {
        for (case, &(h, wd, c)) in SHAPES.iter().enumerate() {
            let w = window(h, wd, c);
            let out_len = IMAGES * w.out_pixels() * c;
            let mut values = Values(77 + case as u64);
            for (kind, input) in inputs(case as u64, IMAGES * w.in_len()).iter().enumerate() {
                let (output, winners) = reference_forward(&w, input);
                // Uniform gradients, whose sums round differently in
                // another order where windows overlap, and zeros of both
                // signs.
                let mut grad = values.take(out_len, None);
                grad.iter_mut().step_by(7).for_each(|g| *g = 0.0);
                grad.iter_mut().step_by(11).for_each(|g| *g = -0.0);
                for relu_output in [None, Some(&output[..])] {
                    let mut expected = vec![f32::NAN; IMAGES * w.in_len()];
                    max_pool_generic_backward(&w, &winners, &grad, relu_output, &mut expected);
                    let mut grad_input = vec![f32::NAN; expected.len()];
                    backward(kernels, &w, &winners, &grad, relu_output, &mut grad_input);
                    let relu = relu_output.is_some();
                    let at = format!("{kernels:?}, {h}x{wd}x{c}, inputs {kind}, relu {relu}");
                    assert_same_bits(&grad_input, &expected, &at);
                }
            }
        }
    }
}

#[test]
fn only_3x3_windows_moved_by_2_inside_the_image_take_these_kernels() {
    assert!(is_3x3_stride_2(&window(55, 55, 96)));
    let same = Window2d::new((55, 55, 96), (3, 3), (2, 2), Padding::Same).unwrap();
    let stride_1 = Window2d::new((9, 9, 4), (3, 3), (1, 1), Padding::Valid).unwrap();
    let two = Window2d::new((8, 8, 4), (2, 2), (2, 2), Padding::Valid).unwrap();
    for w in [same, stride_1, two] {
        assert!(!is_3x3_stride_2(&w) && kernels_for(&w).is_none(), "{w:?}");
    }
}
