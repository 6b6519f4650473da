//! The AVX-512 GEMM against a naive loop, and its determinism: blocks of
//! a product equal the whole product's blocks bit for bit.

use super::*;
use crate::kernels::same_bits;

/// Whether the CPU runs the kernel; if not, says so (the test then
/// checks nothing).
fn runs(test: &str) -> bool {
    let runs = crate::kernels::has_avx512();
    if !runs {
        eprintln!("{test}: skipped: no AVX-512");
    }
    runs
}

/// Deterministic values in [-1, 1).
fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A matrix stored in `data` with element `(i, j)` at
/// `offset + i * rs + j * cs`.
struct Strided {
    data: Vec<f32>,
    offset: usize,
    rs: isize,
    cs: isize,
}

impl Strided {
    /// A `rows x cols` matrix in one of four layouts: row-major,
    /// transposed (column-major), row-major with padded rows, or with
    /// neither stride 1.
    fn new(rows: usize, cols: usize, layout: usize, seed: u64) -> Self {
        let (rs, cs, len) = match layout {
            0 => (cols, 1, rows * cols),
            1 => (1, rows, rows * cols),
            2 => (cols + 3, 1, rows * (cols + 3)),
            _ => (2 * cols + 1, 2, rows * (2 * cols + 1)),
        };
        Strided {
            data: values(len + 5, seed),
            offset: 5,
            rs: rs as isize,
            cs: cs as isize,
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[(self.offset as isize + i as isize * self.rs + j as isize * self.cs) as usize]
    }

    fn ptr(&self) -> *const f32 {
        self.data[self.offset..].as_ptr()
    }

    /// The sub-matrix from element `(i, j)` on.
    fn from(&self, i: usize, j: usize) -> Strided {
        Strided {
            data: self.data.clone(),
            offset: (self.offset as isize + i as isize * self.rs + j as isize * self.cs) as usize,
            ..*self
        }
    }
}

/// `c = a · b + beta · c` with the kernel, C at row stride `rsc`.
fn run(
    (m, k, n): (usize, usize, usize),
    a: &Strided,
    b: &Strided,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
) {
    assert!(m == 0 || c.len() >= (m - 1) * rsc + n);
    // SAFETY: the CPU has AVX-512 (checked by each test), the strides of
    // a and b stay inside their data, and c holds m rows at stride rsc.
    unsafe {
        sgemm(
            m,
            k,
            n,
            a.ptr(),
            a.rs,
            a.cs,
            b.ptr(),
            b.rs,
            b.cs,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
        )
    };
}

#[test]
fn products_match_a_naive_loop() {
    if !runs("products_match_a_naive_loop") {
        return;
    }
    let shapes = [
        (1, 1, 1),
        (1, 7, 1),
        (2, 3, 5),
        (13, 1, 31),
        (14, 17, 32),
        (15, 16, 33),
        (29, 255, 47),
        (31, 257, 64),
        (3, 600, 97),
        (45, 40, 1),
        (100, 33, 70),
        (28, 513, 16),
    ];
    for (case, &(m, k, n)) in shapes.iter().enumerate() {
        for a_layout in 0..4 {
            for b_layout in 0..4 {
                let seed = (case * 16 + a_layout * 4 + b_layout) as u64;
                let a = Strided::new(m, k, a_layout, seed);
                let b = Strided::new(k, n, b_layout, seed + 1000);
                for beta in [0.0, 1.0] {
                    let start = values(m * n, seed + 2000);
                    // Overwriting ignores what C held, even NaN.
                    let mut c: Vec<f32> = if beta == 0.0 {
                        vec![f32::NAN; m * n]
                    } else {
                        start.clone()
                    };
                    run((m, k, n), &a, &b, beta, &mut c, n);
                    for i in 0..m {
                        for j in 0..n {
                            let (mut want, mut size) = (0.0f64, 0.0f64);
                            for p in 0..k {
                                let term = a.at(i, p) as f64 * b.at(p, j) as f64;
                                want += term;
                                size += term.abs();
                            }
                            if beta == 1.0 {
                                want += start[i * n + j] as f64;
                                size += start[i * n + j].abs() as f64;
                            }
                            let got = c[i * n + j] as f64;
                            let tolerance = (k + 1) as f64 * f32::EPSILON as f64 * size + 1e-30;
                            assert!(
                                (got - want).abs() <= tolerance,
                                "{m}x{k}x{n}, layouts {a_layout} {b_layout}, beta {beta}: \
                                 C[{i}, {j}] = {got}, not {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn an_empty_inner_dimension_scales_c_by_beta() {
    if !runs("an_empty_inner_dimension_scales_c_by_beta") {
        return;
    }
    let (a, b) = (Strided::new(3, 0, 0, 1), Strided::new(0, 4, 0, 2));
    let mut c = vec![f32::NAN; 12];
    run((3, 0, 4), &a, &b, 0.0, &mut c, 4);
    assert!(c.iter().all(|&v| v == 0.0));
    let start = values(12, 3);
    let mut c = start.clone();
    run((3, 0, 4), &a, &b, 1.0, &mut c, 4);
    assert_eq!(c, start);
    // Nothing to write: no rows or no columns.
    run(
        (0, 5, 4),
        &Strided::new(0, 5, 0, 4),
        &Strided::new(5, 4, 0, 5),
        0.0,
        &mut [],
        4,
    );
    run(
        (3, 5, 0),
        &Strided::new(3, 5, 0, 4),
        &Strided::new(5, 0, 0, 5),
        0.0,
        &mut [],
        0,
    );
}

/// Each element is summed in an order that depends on k alone: blocks of
/// rows and of columns of C (of any size and position, as
/// `gemm::matmul_par` makes them), computed as products of their own,
/// equal the whole product bit for bit. (Blocks of 13 rows and of 1 row
/// against a B stored transposed run through `sgemm_transposed`, the
/// whole product through the usual loops: the same bits too; 40 rows
/// against 1100 such columns run through `sgemm_transposed`, narrow
/// blocks of their columns through the usual loops.)
#[test]
fn blocks_of_a_product_are_the_whole_product_bit_for_bit() {
    if !runs("blocks_of_a_product_are_the_whole_product_bit_for_bit") {
        return;
    }
    for (m, k, n, a_layout, b_layout) in [
        (150, 700, 130, 0, 0),
        (97, 300, 1100, 1, 0),
        (70, 1030, 45, 0, 1),
        (33, 260, 70, 3, 2),
        (40, 300, 1100, 0, 1),
    ] {
        let a = Strided::new(m, k, a_layout, 7);
        let b = Strided::new(k, n, b_layout, 8);
        for beta in [0.0, 1.0] {
            let start = values(m * n, 9);
            let mut whole = start.clone();
            run((m, k, n), &a, &b, beta, &mut whole, n);
            // Blocks of rows: C[r0..r0 + rows, ..] = A[r0..r0 + rows, ..] · B.
            for rows in [64, 13, 1] {
                let mut blocks = start.clone();
                for r0 in (0..m).step_by(rows) {
                    let rows = rows.min(m - r0);
                    run(
                        (rows, k, n),
                        &a.from(r0, 0),
                        &b,
                        beta,
                        &mut blocks[r0 * n..],
                        n,
                    );
                }
                assert!(
                    same_bits(&blocks, &whole),
                    "{m}x{k}x{n}, {rows} rows, beta {beta}"
                );
            }
            // Blocks of columns, written in place (C's row stride is n).
            for cols in [64, 5, 33] {
                let mut blocks = start.clone();
                for c0 in (0..n).step_by(cols) {
                    let cols = cols.min(n - c0);
                    run((m, k, cols), &a, &b.from(0, c0), beta, &mut blocks[c0..], n);
                }
                assert!(
                    same_bits(&blocks, &whole),
                    "{m}x{k}x{n}, {cols} columns, beta {beta}"
                );
            }
        }
    }
}

/// The column ranges cover B once, in order, each on whole panels of one
/// block (what `sgemm_packed_b` requires), about as wide as asked.
#[test]
fn column_ranges_split_b_on_panels_inside_blocks() {
    for n in [1, 31, 32, 250, 1000, 1024, 1025, 2100, 4096] {
        for width in [1, 100, 256, 1024, 5000] {
            let ranges = column_ranges(n, width);
            let mut next = 0;
            for cols in &ranges {
                assert_eq!(cols.start, next, "n {n}, width {width}: in order");
                assert!(!cols.is_empty());
                assert_eq!(cols.start % NR, 0, "starts on a panel");
                assert_eq!(cols.start / NC, (cols.end - 1) / NC, "inside one block");
                assert!(cols.len() <= width.clamp(NR, NC).next_multiple_of(NR));
                next = cols.end;
            }
            assert_eq!(next, n, "n {n}, width {width}: all of B");
        }
    }
}

/// A column range that starts inside a panel, or starts inside a block
/// and leaves it, is refused before any value is read.
#[test]
fn packed_column_ranges_off_the_panels_are_refused() {
    for cols in [1000..1100, 992..1056] {
        let (a, packed) = (vec![1.0_f32; 2048], vec![0.0_f32; 2048]);
        let mut c = vec![0.0_f32; 2048];
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: the range is refused by an assertion before any
            // instruction or value the contract covers is used.
            unsafe {
                sgemm_packed_b(
                    1,
                    1,
                    2048,
                    (a.as_ptr(), 1, 1),
                    packed.as_ptr(),
                    0.0,
                    (c.as_mut_ptr(), 2048),
                    cols.clone(),
                    false,
                )
            }
        }));
        assert!(outcome.is_err(), "columns {cols:?} refused");
    }
}
