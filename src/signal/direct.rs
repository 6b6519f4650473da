//! The direct (non-FFT) convolution: pad the image once, then for every output
//! row add up the kernel taps, each a multiply-add over a contiguous stretch of
//! a padded row, so the compiler can vectorise the inner loop.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::{Boundary, Element, Mode, output_shape};

/// Whether the kernel is rotated by 180 degrees (convolution) or used as it is
/// (correlation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Flip {
    Rotate,
    Keep,
}

/// Output elements computed together in registers; 16 keeps enough
/// independent additions in flight to hide the latency of each one.
const LANES: usize = 16;

/// Below this many multiply-adds, threads cost more than they save.
const PARALLEL_WORK: usize = 1 << 15;

/// Where one axis of the output reads the image: output index `m` and kernel
/// index `j` read padded index `m + tap_offset(j)`, and padded index `p` is
/// image index `p - lead` (negative or past the end: outside the image).
struct AxisGeometry {
    output_len: usize,
    kernel_len: usize,
    lead: isize,
    flip: Flip,
}

impl AxisGeometry {
    /// Mirrors the index arithmetic of scipy's `_imp_convolve2d` for one axis.
    fn new(kernel_len: usize, output_len: usize, mode: Mode, flip: Flip) -> Self {
        let before = (kernel_len - 1) as isize;
        let lead = match (mode, flip) {
            (Mode::Full, _) => before,
            (Mode::Valid, _) => 0,
            // Same mode keeps the centre at (K-1)/2 rounded down for
            // correlation, which for a rotated kernel is (K-1)/2 rounded up.
            (Mode::Same, Flip::Keep) => before / 2,
            (Mode::Same, Flip::Rotate) => before - before / 2,
        };
        AxisGeometry {
            output_len,
            kernel_len,
            lead,
            flip,
        }
    }

    fn padded_len(&self) -> usize {
        self.output_len + self.kernel_len - 1
    }

    fn tap_offset(&self, kernel_index: usize) -> usize {
        match self.flip {
            Flip::Keep => kernel_index,
            Flip::Rotate => self.kernel_len - 1 - kernel_index,
        }
    }

    /// The image index that padded index `p` shows, or `None` for fill.
    fn source_index<T>(&self, p: usize, image_len: usize, boundary: Boundary<T>) -> Option<usize> {
        extend(p as isize - self.lead, image_len, boundary)
    }
}

/// Maps an index outside `0..len` back into it as the boundary rule says.
fn extend<T>(index: isize, len: usize, boundary: Boundary<T>) -> Option<usize> {
    let len = len as isize;
    if (0..len).contains(&index) {
        return Some(index as usize);
    }
    match boundary {
        Boundary::Fill(_) => None,
        Boundary::Wrap => Some(index.rem_euclid(len) as usize),
        Boundary::Symm => {
            let r = index.rem_euclid(2 * len);
            Some(if r < len { r } else { 2 * len - 1 - r } as usize)
        }
    }
}

/// One kernel row: which padded row it reads (relative to the output row) and
/// its taps as (padded column offset, weight), in scipy's summation order.
struct KernelRow<T> {
    row_offset: usize,
    taps: Vec<(usize, T)>,
}

/// Computes the convolution (`Flip::Rotate`) or correlation (`Flip::Keep`) of
/// already ordered inputs.
pub(super) fn run<T: Element>(
    image: ArrayView2<T>,
    kernel: ArrayView2<T>,
    mode: Mode,
    boundary: Boundary<T>,
    flip: Flip,
) -> Array2<T> {
    let out_shape = output_shape(image.dim(), kernel.dim(), mode);
    let rows = AxisGeometry::new(kernel.nrows(), out_shape.0, mode, flip);
    let cols = AxisGeometry::new(kernel.ncols(), out_shape.1, mode, flip);
    let padded = pad(image, &rows, &cols, boundary);
    let kernel_rows = kernel_rows(kernel, &rows, &cols);

    let row_len = out_shape.1;
    let mut out = vec![T::zero(); out_shape.0 * row_len];
    let work_per_row = row_len * kernel.len();
    let rows_per_task = (PARALLEL_WORK / work_per_row.max(1)).max(1);
    let padded_width = cols.padded_len();
    out.par_chunks_mut(row_len)
        .with_min_len(rows_per_task)
        .enumerate()
        .for_each(|(m, out_row)| {
            for kernel_row in &kernel_rows {
                let start = (m + kernel_row.row_offset) * padded_width;
                let source = &padded[start..start + padded_width];
                accumulate_row(out_row, source, &kernel_row.taps);
            }
        });
    Array2::from_shape_vec(out_shape, out).expect("output length matches its shape")
}

fn kernel_rows<T: Element>(
    kernel: ArrayView2<T>,
    rows: &AxisGeometry,
    cols: &AxisGeometry,
) -> Vec<KernelRow<T>> {
    kernel
        .outer_iter()
        .enumerate()
        .map(|(j, weights)| KernelRow {
            row_offset: rows.tap_offset(j),
            taps: weights
                .iter()
                .enumerate()
                .map(|(k, &w)| (cols.tap_offset(k), w))
                .collect(),
        })
        .collect()
}

/// The image extended on every side as far as the kernel reaches, row-major.
fn pad<T: Element>(
    image: ArrayView2<T>,
    rows: &AxisGeometry,
    cols: &AxisGeometry,
    boundary: Boundary<T>,
) -> Vec<T> {
    let fill = match boundary {
        Boundary::Fill(value) => value,
        _ => T::zero(),
    };
    let column_sources: Vec<Option<usize>> = (0..cols.padded_len())
        .map(|q| cols.source_index(q, image.ncols(), boundary))
        .collect();
    let width = cols.padded_len();
    let mut padded = vec![fill; rows.padded_len() * width];
    padded
        .par_chunks_mut(width)
        .with_min_len(64)
        .enumerate()
        .for_each(|(p, padded_row)| {
            if let Some(r) = rows.source_index(p, image.nrows(), boundary) {
                let image_row = image.row(r);
                for (dst, source) in padded_row.iter_mut().zip(&column_sources) {
                    if let Some(c) = source {
                        *dst = image_row[*c];
                    }
                }
            }
        });
    padded
}

/// `out[n] += sum over taps of weight * source[n + offset]`, taps in order.
fn accumulate_row<T: Element>(out: &mut [T], source: &[T], taps: &[(usize, T)]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just been checked for AVX2.
        unsafe { accumulate_row_avx2(out, source, taps) };
        return;
    }
    accumulate_row_portable(out, source, taps);
}

/// The same loop compiled for AVX2: twice the vector width of the x86-64
/// baseline. No FMA is enabled, so the rounding is identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn accumulate_row_avx2<T: Element>(out: &mut [T], source: &[T], taps: &[(usize, T)]) {
    accumulate_row_portable(out, source, taps);
}

#[inline(always)]
fn accumulate_row_portable<T: Element>(out: &mut [T], source: &[T], taps: &[(usize, T)]) {
    let mut blocks = out.chunks_exact_mut(LANES);
    let mut n0 = 0;
    for block in &mut blocks {
        let mut acc: [T; LANES] = (*block).try_into().expect("block has LANES elements");
        for &(offset, weight) in taps {
            let window: &[T; LANES] = source[n0 + offset..n0 + offset + LANES]
                .try_into()
                .expect("window has LANES elements");
            for (a, &x) in acc.iter_mut().zip(window) {
                *a = T::mul_acc(*a, weight, x);
            }
        }
        block.copy_from_slice(&acc);
        n0 += LANES;
    }
    for (i, a) in blocks.into_remainder().iter_mut().enumerate() {
        for &(offset, weight) in taps {
            *a = T::mul_acc(*a, weight, source[n0 + i + offset]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_extension_repeats_the_edge_and_has_period_twice_the_length() {
        let symm = Boundary::<i32>::Symm;
        let got: Vec<_> = (-7..10).map(|i| extend(i, 3, symm).unwrap()).collect();
        assert_eq!(got, [1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0]);
    }

    #[test]
    fn wrap_extension_is_periodic_and_fill_leaves_the_image() {
        let got: Vec<_> = (-4..5)
            .map(|i| extend(i, 3, Boundary::<i32>::Wrap).unwrap())
            .collect();
        assert_eq!(got, [2, 0, 1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(extend(-1, 3, Boundary::Fill(0)), None);
        assert_eq!(extend(3, 3, Boundary::Fill(0)), None);
    }
}
