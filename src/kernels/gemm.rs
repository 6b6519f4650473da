//! Matrix products: on CPUs with AVX-512 through the kernel of
//! `kernels::sgemm` (faster there), elsewhere through the `matrixmultiply`
//! crate (a tuned, packed, SIMD GEMM). Transposes are free: they are only
//! strides.
//!
//! [`matmul_par`] splits one product into blocks of the output for the
//! threads. Every output value is still summed over the inner dimension
//! in the same order as [`matmul`] sums it (neither GEMM's blocking of the
//! inner dimension depends on the output's blocks), so the result is the
//! same, bit for bit, on any number of threads.

use rayon::prelude::*;

use super::scratch::Scratch;

/// A row-major `rows x cols` matrix in a slice (or a block of its columns),
/// possibly read transposed. Every constructor checks that each index the
/// strides reach lies inside `data`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Mat<'a> {
    /// The row-major `rows x cols` matrix stored in `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "matrix data does not match its shape"
        );
        Mat {
            data,
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// Columns `first..first + count` of the row-major `rows x cols`
    /// matrix stored in `data`, without moving any data.
    pub fn columns(data: &'a [f32], rows: usize, cols: usize, first: usize, count: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "matrix data does not match its shape"
        );
        assert!(first + count <= cols, "columns outside the matrix");
        Mat {
            data: &data[first.min(data.len())..],
            rows,
            cols: count,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// Rows `first..first + count`, without moving any data.
    pub fn rows(self, first: usize, count: usize) -> Self {
        assert!(first + count <= self.rows, "rows outside the matrix");
        let offset = if count == 0 || self.cols == 0 {
            0
        } else {
            first * self.row_stride as usize
        };
        Mat {
            data: &self.data[offset.min(self.data.len())..],
            rows: count,
            ..self
        }
    }

    /// Columns `first..first + count`, without moving any data.
    pub fn cols(self, first: usize, count: usize) -> Self {
        self.t().rows(first, count).t()
    }

    /// The transpose, without moving any data.
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

impl Mat<'_> {
    /// Whether every index the strides reach lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last =
            (self.rows - 1) * self.row_stride as usize + (self.cols - 1) * self.col_stride as usize;
        last < self.data.len()
    }
}

/// `c = a · b + beta · c`, with `c` row-major `a.rows x b.cols`.
///
/// `beta` is 0 (overwrite) or 1 (accumulate, e.g. onto a bias already in `c`).
pub fn matmul(a: Mat, b: Mat, c: &mut [f32], beta: f32) {
    let (m, n) = (a.rows, b.cols);
    assert_eq!(
        c.len(),
        m * n,
        "output of a matrix product has the wrong size"
    );
    // SAFETY: `c` holds the `m x n` values at row stride `n`, and nothing
    // else writes to it while it is borrowed mutably.
    unsafe { product(a, b, c.as_mut_ptr(), n, beta) }
}

/// The GEMM that computes the products.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// `kernels::sgemm`, where the CPU has AVX-512 (and it is allowed).
    Avx512,
    /// The `matrixmultiply` crate.
    MatrixMultiply,
}

impl Backend {
    /// The backend this CPU runs now.
    fn current() -> Self {
        if super::has_avx512() {
            Backend::Avx512
        } else {
            Backend::MatrixMultiply
        }
    }
}

/// `c = a · b + beta · c` for `c` at `c_ptr`, `a.rows x b.cols` values
/// at row stride `c_stride` (`c_stride >= b.cols`).
///
/// # Safety
/// Those values must be valid for writes, and no other thread may touch
/// them during the call.
unsafe fn product(a: Mat, b: Mat, c_ptr: *mut f32, c_stride: usize, beta: f32) {
    // SAFETY: the caller's promise.
    unsafe { product_on(Backend::current(), a, b, c_ptr, c_stride, beta) }
}

/// [`product`] on `backend`.
///
/// # Safety
/// As for [`product`]; `Backend::Avx512` only where the CPU has AVX-512.
unsafe fn product_on(
    backend: Backend,
    a: Mat,
    b: Mat,
    c_ptr: *mut f32,
    c_stride: usize,
    beta: f32,
) {
    assert_eq!(
        a.cols, b.rows,
        "inner dimensions of a matrix product differ"
    );
    assert!(a.in_bounds() && b.in_bounds(), "matrix outside its data");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            // SAFETY: row i of c is valid for writes (the caller's promise).
            let row = unsafe { std::slice::from_raw_parts_mut(c_ptr.add(i * c_stride), n) };
            row.iter_mut().for_each(|v| *v *= beta);
        }
        return;
    }
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => {
            // SAFETY: the CPU has AVX-512F and FMA (the caller's promise);
            // every index the strides of a and b reach lies inside their
            // slices (checked above), c is the caller's to write, and c
            // does not alias a or b.
            unsafe {
                super::sgemm::sgemm(
                    m,
                    k,
                    n,
                    a.data.as_ptr(),
                    a.row_stride,
                    a.col_stride,
                    b.data.as_ptr(),
                    b.row_stride,
                    b.col_stride,
                    beta,
                    c_ptr,
                    c_stride as isize,
                );
            }
        }
        // SAFETY: every index the strides of a and b reach lies inside
        // their slices (checked above), c is the caller's to write, and c
        // does not alias a or b (shared borrows cannot alias a region
        // being written).
        _ => unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.data.as_ptr(),
                a.row_stride,
                a.col_stride,
                b.data.as_ptr(),
                b.row_stride,
                b.col_stride,
                beta,
                c_ptr,
                c_stride as isize,
                1,
            );
        },
    }
}

/// Right-hand matrices of one shape, each prepared once for many
/// products (a Winograd layer's 36 kernel planes, used by every block of
/// tiles): on AVX-512 CPUs they are kept in the panels that
/// `kernels::sgemm` reads, so that no product packs them again; elsewhere
/// as row-major copies. The values live in a [`Scratch`] of the thread
/// that packs them.
///
/// ```
/// use convnet::kernels::gemm::{Mat, PackedMats, matmul, matmul_packed};
/// let planes = [vec![1.0, 2.0, 3.0, 4.0], vec![0.5; 4]];
/// let packed = PackedMats::new(2, 2, 2, |i| Mat::new(&planes[i], 2, 2));
/// let a = [1.0, 1.0, 0.0, 2.0];
/// let (mut c, mut want) = (vec![0.0; 4], vec![0.0; 4]);
/// matmul_packed(Mat::new(&a, 2, 2), packed.get(0), &mut c, 0.0);
/// matmul(Mat::new(&a, 2, 2), Mat::new(&planes[0], 2, 2), &mut want, 0.0);
/// assert_eq!(c, want);
/// ```
pub struct PackedMats {
    rows: usize,
    cols: usize,
    backend: Backend,
    /// Values per matrix: a multiple of 16, so that each starts 64-byte
    /// aligned.
    stride: usize,
    /// Index of the first value on a 64-byte boundary.
    start: usize,
    values: Scratch,
}

/// One matrix of a [`PackedMats`].
#[derive(Clone, Copy)]
pub struct Packed<'a> {
    rows: usize,
    cols: usize,
    backend: Backend,
    values: &'a [f32],
}

impl PackedMats {
    /// Packs the `count` matrices `mat(0)..mat(count - 1)`, each `rows x
    /// cols`, in parallel.
    pub fn new<'a>(
        count: usize,
        rows: usize,
        cols: usize,
        mat: impl Fn(usize) -> Mat<'a> + Sync,
    ) -> Self {
        let backend = Backend::current();
        let len = match backend {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => super::sgemm::packed_b_len(rows, cols),
            _ => rows * cols,
        };
        let stride = len.next_multiple_of(16);
        let mut values = Scratch::take_unzeroed();
        values.resize(count * stride + 16, 0.0);
        let start = values.as_ptr().align_offset(64).min(15);
        values[start..][..count * stride]
            .par_chunks_mut(stride.max(1))
            .enumerate()
            .for_each(|(i, dst)| {
                let b = mat(i);
                assert_eq!(
                    (b.rows, b.cols),
                    (rows, cols),
                    "packed matrices share a shape"
                );
                assert!(b.in_bounds(), "matrix outside its data");
                pack_one(backend, b, &mut dst[..len]);
            });
        PackedMats {
            rows,
            cols,
            backend,
            stride,
            start,
            values,
        }
    }

    /// Matrix `i`.
    pub fn get(&self, i: usize) -> Packed<'_> {
        Packed {
            rows: self.rows,
            cols: self.cols,
            backend: self.backend,
            values: &self.values[self.start + i * self.stride..][..self.stride],
        }
    }
}

impl Packed<'_> {
    /// (rows, columns) of the matrix.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
}

/// Writes `b` into `dst` as `backend` reads it.
fn pack_one(backend: Backend, b: Mat, dst: &mut [f32]) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => {
            assert_eq!(dst.as_ptr().align_offset(64), 0, "panels on cache lines");
            // SAFETY: the CPU has AVX-512F (Backend::current), b's values
            // are inside its data (checked by the caller), dst holds
            // packed_b_len values on a 64-byte boundary.
            unsafe {
                super::sgemm::pack_whole_b(
                    b.rows,
                    b.cols,
                    b.data.as_ptr(),
                    b.row_stride,
                    b.col_stride,
                    dst.as_mut_ptr(),
                )
            }
        }
        _ => {
            for (i, row) in dst.chunks_exact_mut(b.cols.max(1)).enumerate() {
                for (j, value) in row.iter_mut().enumerate() {
                    *value =
                        b.data[(i as isize * b.row_stride + j as isize * b.col_stride) as usize];
                }
            }
        }
    }
}

/// (m, k, n) of the product `c = a · b` of a packed `b`, checked.
fn packed_product_shape(a: Mat, b: Packed, c: &[f32]) -> (usize, usize, usize) {
    let (m, k, n) = (a.rows, b.rows, b.cols);
    assert_eq!(a.cols, k, "inner dimensions of a matrix product differ");
    assert_eq!(
        c.len(),
        m * n,
        "output of a matrix product has the wrong size"
    );
    assert!(a.in_bounds(), "matrix outside its data");
    (m, k, n)
}

/// `c = a · b + beta · c` as [`matmul`], for a `b` packed beforehand.
pub fn matmul_packed(a: Mat, b: Packed, c: &mut [f32], beta: f32) {
    let (_, k, n) = packed_product_shape(a, b, c);
    match b.backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 if k > 0 => {
            // SAFETY: c is m x n (checked) and borrowed mutably for the call.
            unsafe { packed_columns(a, b, beta, c.as_mut_ptr(), 0..n, false) }
        }
        _ => matmul(a, Mat::new(&b.values[..k * n], k, n), c, beta),
    }
}

/// [`matmul_packed`] on the threads of the current rayon pool, split into
/// blocks of columns (a few per thread): for a few rows of `a` against a
/// large `b` packed once and kept (a dense layer's kernel while it
/// predicts batch after batch), each value of `b` streams from memory
/// once. The same result, bit for bit, as [`matmul_packed`] and
/// [`matmul`] (on the backend that packed `b`: a `b` packed with
/// AVX-512 allowed is multiplied with it, see `kernels::allow_avx512`).
///
/// ```
/// use convnet::kernels::gemm::{Mat, PackedMats, matmul, matmul_packed_par};
/// let (a, b) = ([1.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// let packed = PackedMats::new(1, 2, 3, |_| Mat::new(&b, 2, 3));
/// let (mut c, mut expected) = ([0.0; 3], [0.0; 3]);
/// matmul_packed_par(Mat::new(&a, 1, 2), packed.get(0), &mut c, 0.0);
/// matmul(Mat::new(&a, 1, 2), Mat::new(&b, 2, 3), &mut expected, 0.0);
/// assert_eq!(c, expected);
/// ```
pub fn matmul_packed_par(a: Mat, b: Packed, c: &mut [f32], beta: f32) {
    let (m, k, n) = packed_product_shape(a, b, c);
    match b.backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 if k > 0 && m * n * k >= PARALLEL_MIN_WORK => {
            let width = n.div_ceil(2 * rayon::current_num_threads());
            let streamed = m <= super::sgemm::FEW_ROWS;
            let c_at = SharedOutput(c.as_mut_ptr());
            super::sgemm::column_ranges(n, width)
                .into_par_iter()
                .for_each(|cols| {
                    // SAFETY: c is m x n (checked); the tasks' columns of
                    // it are disjoint, and c stays borrowed mutably until
                    // every task ends.
                    unsafe { packed_columns(a, b, beta, c_at.at(0), cols, streamed) }
                });
        }
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => matmul_packed(a, b, c, beta),
        _ => matmul_par(a, Mat::new(&b.values[..k * n], k, n), c, beta),
    }
}

/// Columns `cols` of `c = a · b + beta · c` for a `b` packed by AVX-512
/// (`sgemm::sgemm_packed_b`; `streamed`: b is read from memory once).
///
/// # Safety
/// `b` was packed with AVX-512 (so the CPU has it), `a` was checked
/// against `b` ([`packed_product_shape`]), and `c` points to an `a.rows x
/// b.cols` output, row-major, whose columns `cols` nothing else reads or
/// writes during the call.
#[cfg(target_arch = "x86_64")]
unsafe fn packed_columns(
    a: Mat,
    b: Packed,
    beta: f32,
    c: *mut f32,
    cols: std::ops::Range<usize>,
    streamed: bool,
) {
    // SAFETY: the caller's promises; a's values are inside its data, b
    // holds what pack_whole_b wrote for its k x n.
    unsafe {
        super::sgemm::sgemm_packed_b(
            a.rows,
            b.rows,
            b.cols,
            (a.data.as_ptr(), a.row_stride, a.col_stride),
            b.values.as_ptr(),
            beta,
            (c, b.cols as isize),
            cols,
            streamed,
        )
    }
}

/// Multiply-adds below which [`matmul_par`] runs one product on the
/// calling thread: splitting costs more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 21;
/// Rows of the output per block of [`matmul_par`] (and the least
/// columns): a multiple of `matrixmultiply`'s register blocks (and of
/// `kernels::sgemm`'s columns).
const BLOCK: usize = 64;

/// `c = a · b + beta · c` as [`matmul`], on the threads of the current
/// rayon pool: the output is split into blocks of 64 rows (or of 64 to
/// 1024 columns, two blocks per thread, when it has fewer than 4 blocks
/// of rows), each computed as its own product. The result is the same,
/// bit for bit, as [`matmul`]'s, on any number of threads.
pub fn matmul_par(a: Mat, b: Mat, c: &mut [f32], beta: f32) {
    let (m, n) = (a.rows, b.cols);
    assert_eq!(
        c.len(),
        m * n,
        "output of a matrix product has the wrong size"
    );
    if m * n * a.cols < PARALLEL_MIN_WORK || (m <= BLOCK && n <= BLOCK) {
        return matmul(a, b, c, beta);
    }
    if m >= 4 * BLOCK || m >= n {
        c.par_chunks_mut(BLOCK * n)
            .enumerate()
            .for_each(|(block, c)| {
                let rows = c.len() / n;
                matmul(a.rows(block * BLOCK, rows), b, c, beta);
            });
        return;
    }
    // Column blocks of c are not contiguous: each task writes its own
    // columns through the shared pointer. Wide blocks, a few per thread:
    // each reads whole runs of b's rows (a dense layer's kernel streams
    // from memory far faster by 4 KB than by 256 bytes).
    let c_at = SharedOutput(c.as_mut_ptr());
    let width = n
        .div_ceil(2 * rayon::current_num_threads())
        .clamp(BLOCK, 1024)
        .next_multiple_of(BLOCK);
    (0..n.div_ceil(width)).into_par_iter().for_each(|block| {
        let first = block * width;
        let cols = width.min(n - first);
        // SAFETY: the blocks' columns are disjoint and inside c (checked
        // above), and c stays borrowed mutably until every task ends.
        unsafe { product(a, b.cols(first, cols), c_at.at(first), n, beta) };
    });
}

/// The output of [`matmul_par`] or [`matmul_packed_par`], shared by
/// tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);

// SAFETY: the tasks holding it write disjoint values (see `matmul_par`
// and `matmul_packed_par`).
unsafe impl Send for SharedOutput {}
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// The pointer `offset` values further on.
    ///
    /// # Safety
    /// `offset` must lie inside the output.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's promise.
        unsafe { self.0.add(offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::same_bits;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    /// The backends this CPU runs: both where it has AVX-512.
    fn backends() -> Vec<Backend> {
        if Backend::current() == Backend::Avx512 {
            vec![Backend::Avx512, Backend::MatrixMultiply]
        } else {
            eprintln!("Backend::Avx512 skipped: no AVX-512");
            vec![Backend::MatrixMultiply]
        }
    }

    /// [`matmul`] on `backend`.
    fn matmul_on(backend: Backend, a: Mat, b: Mat, c: &mut [f32], beta: f32) {
        assert_eq!(c.len(), a.rows * b.cols);
        // SAFETY: c holds the values at row stride b.cols, borrowed
        // mutably; the backend runs on this CPU (`backends`).
        unsafe { product_on(backend, a, b, c.as_mut_ptr(), b.cols, beta) }
    }

    #[test]
    fn products_and_transposes_match_a_naive_loop() {
        for backend in backends() {
            products_and_transposes_match_a_naive_loop_on(backend);
        }
    }

    /// A product whose rows, columns and inner dimension span several
    /// blocks and tiles of either GEMM, on each backend, read as stored
    /// and transposed.
    #[test]
    fn large_products_match_a_naive_loop() {
        let (m, k, n) = (67, 300, 45);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        for backend in backends() {
            let mut c = vec![0.0; m * n];
            matmul_on(backend, Mat::new(&a, m, k), Mat::new(&b, k, n), &mut c, 0.0);
            let mut ct = vec![0.0; n * m];
            matmul_on(
                backend,
                Mat::new(&b, k, n).t(),
                Mat::new(&a, m, k).t(),
                &mut ct,
                0.0,
            );
            for i in 0..m {
                for j in 0..n {
                    let want = want[i * n + j];
                    assert!((c[i * n + j] - want).abs() < 1e-3, "{backend:?}");
                    assert!((ct[j * m + i] - want).abs() < 1e-3, "{backend:?}");
                }
            }
        }
    }

    fn products_and_transposes_match_a_naive_loop_on(backend: Backend) {
        let matmul = |a, b, c: &mut [f32], beta| matmul_on(backend, a, b, c, beta);
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![0.0; m * n];
        matmul(Mat::new(&a, m, k), Mat::new(&b, k, n), &mut c, 0.0);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // (bᵀ aᵀ)ᵀ = a b: compute cᵀ = bᵀ · aᵀ with both read transposed.
        let mut ct = vec![0.0; n * m];
        matmul(Mat::new(&b, k, n).t(), Mat::new(&a, m, k).t(), &mut ct, 0.0);
        for i in 0..m {
            for j in 0..n {
                assert!((ct[j * m + i] - want[i * n + j]).abs() < 1e-5);
            }
        }
        // A block of columns: a · b[:, 1..3].
        let mut block = vec![0.0; m * 2];
        matmul(
            Mat::new(&a, m, k),
            Mat::columns(&b, k, n, 1, 2),
            &mut block,
            0.0,
        );
        for i in 0..m {
            for j in 0..2 {
                assert!((block[i * 2 + j] - want[i * n + j + 1]).abs() < 1e-5);
            }
        }
        // Sub-matrices by rows and columns, also of a transpose.
        let mut sub = vec![0.0; 3 * 2];
        matmul(
            Mat::new(&a, m, k).rows(2, 3).cols(0, 2),
            Mat::new(&b, k, n).rows(0, 2).cols(1, 2),
            &mut sub,
            0.0,
        );
        for i in 0..3 {
            for j in 0..2 {
                let want: f32 = (0..2).map(|p| a[(i + 2) * k + p] * b[p * n + j + 1]).sum();
                assert!((sub[i * 2 + j] - want).abs() < 1e-5);
            }
        }
        // beta = 1 accumulates.
        matmul(Mat::new(&a, m, k), Mat::new(&b, k, n), &mut c, 1.0);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - 2.0 * y).abs() < 1e-5);
        }
    }

    /// Products with packed matrices equal the plain ones bit for bit
    /// (the same micro-kernel sums in the same order), for matrices that
    /// span several blocks of steps and of columns, stored or read
    /// transposed, with either beta.
    #[test]
    fn packed_products_are_the_plain_ones_bit_for_bit() {
        let value = |i: usize| ((i as f32) * 0.377).sin();
        for (m, k, n) in [(37, 600, 1100), (20, 5, 3), (3, 257, 33)] {
            let a: Vec<f32> = (0..m * k).map(value).collect();
            let bs: Vec<Vec<f32>> = (0..3)
                .map(|s| (0..k * n).map(|i| value(i * (s + 2) + 1)).collect())
                .collect();
            for transposed in [false, true] {
                // Read transposed, each stored matrix is n x k: use its
                // transpose, k x n again.
                let mat = |i: usize| {
                    if transposed {
                        Mat::new(&bs[i], n, k).t()
                    } else {
                        Mat::new(&bs[i], k, n)
                    }
                };
                let packed = PackedMats::new(bs.len(), k, n, mat);
                for (i, beta) in [(0, 0.0), (2, 1.0), (1, 0.0)] {
                    let start: Vec<f32> = (0..m * n).map(|j| value(j + 5)).collect();
                    let mut want = start.clone();
                    matmul(Mat::new(&a, m, k), mat(i), &mut want, beta);
                    let mut got = start;
                    matmul_packed(Mat::new(&a, m, k), packed.get(i), &mut got, beta);
                    assert!(
                        same_bits(&got, &want),
                        "{m}x{k}x{n}, matrix {i}, transposed {transposed}"
                    );
                }
            }
        }
    }

    /// Runs `product` on a copy of `start` in pools of 1 and 3 threads;
    /// each result must be `want`, bit for bit.
    fn on_1_and_3_threads(
        start: &[f32],
        want: &[f32],
        what: &str,
        product: impl Fn(&mut [f32]) + Sync,
    ) {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut got = start.to_vec();
            pool.install(|| product(&mut got));
            assert!(same_bits(&got, want), "{what}, {threads} threads");
        }
    }

    /// The parallel product of a packed matrix equals the plain product
    /// bit for bit, for few rows (streamed tiles) and many, columns that
    /// end inside a panel, fill several blocks or only part of one, with
    /// either beta, on 1 and 3 threads.
    #[test]
    fn parallel_packed_products_are_the_plain_ones_bit_for_bit() {
        let value = |i: usize| ((i as f32) * 0.291).cos();
        let shapes = [(16, 300, 2100), (3, 700, 1000), (40, 260, 250), (2, 5, 7)];
        // FEW_ROWS (28) rows stream B; one more caches it.
        for (m, k, n) in shapes.into_iter().chain([(28, 600, 300), (29, 600, 300)]) {
            let a: Vec<f32> = (0..m * k).map(value).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 11)).collect();
            let packed = PackedMats::new(1, k, n, |_| Mat::new(&b, k, n));
            for beta in [0.0, 1.0] {
                let start: Vec<f32> = (0..m * n).map(|i| value(i + 3)).collect();
                let mut want = start.clone();
                matmul(Mat::new(&a, m, k), Mat::new(&b, k, n), &mut want, beta);
                on_1_and_3_threads(&start, &want, &format!("{m}x{k}x{n}"), |c| {
                    matmul_packed_par(Mat::new(&a, m, k), packed.get(0), c, beta)
                });
            }
        }
    }

    /// The parallel product equals the serial one bit for bit, for row
    /// and column splits, transposed operands and both betas, on 1 and 3
    /// threads.
    #[test]
    fn parallel_products_are_the_serial_ones_bit_for_bit() {
        let value = |i: usize| ((i as f32) * 0.618).sin();
        for (m, k, n) in [(300, 70, 130), (16, 500, 700), (70, 300, 65), (5, 3, 2)] {
            let a: Vec<f32> = (0..m * k).map(value).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 7)).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| value(i + 7)).collect();
            for beta in [0.0, 1.0] {
                let start: Vec<f32> = (0..m * n).map(|i| value(i + 3)).collect();
                let mut want = start.clone();
                matmul(Mat::new(&a, m, k), Mat::new(&bt, n, k).t(), &mut want, beta);
                on_1_and_3_threads(&start, &want, &format!("{m}x{k}x{n}"), |c| {
                    matmul_par(Mat::new(&a, m, k), Mat::new(&bt, n, k).t(), c, beta)
                });
                let mut plain = start.clone();
                matmul(Mat::new(&a, m, k), Mat::new(&b, k, n), &mut plain, beta);
                let mut par = start.clone();
                matmul_par(Mat::new(&a, m, k), Mat::new(&b, k, n), &mut par, beta);
                assert!(same_bits(&par, &plain));
            }
        }
    }
}
