//! Matrix products through the `matrixmultiply` crate (a tuned, packed,
//! SIMD GEMM). Transposes are free: they are only strides.

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

/// `c = a · b + beta · c`, with `c` row-major `a.rows x b.cols`.
///
/// `beta` is 0 (overwrite) or 1 (accumulate, e.g. onto a bias already in `c`).
pub fn matmul(a: Mat, b: Mat, c: &mut [f32], beta: f32) {
    assert_eq!(
        a.cols, b.rows,
        "inner dimensions of a matrix product differ"
    );
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(
        c.len(),
        m * n,
        "output of a matrix product has the wrong size"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|v| *v *= beta);
        return;
    }
    // SAFETY: the asserts above guarantee that every index the strides reach
    // lies inside the three slices, and `c` does not alias `a` or `b`
    // (it is borrowed mutably while they are borrowed shared).
    unsafe {
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
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn products_and_transposes_match_a_naive_loop() {
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
        // beta = 1 accumulates.
        matmul(Mat::new(&a, m, k), Mat::new(&b, k, n), &mut c, 1.0);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - 2.0 * y).abs() < 1e-5);
        }
    }
}
