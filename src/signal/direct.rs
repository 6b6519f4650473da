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
///
/// Threads take blocks of output rows; each pads just the image rows its block
/// reads into a buffer of its own, which stays in cache and avoids allocating
/// a padded copy of the whole image.
pub(super) fn run<T: Element>(
    image: ArrayView2<T>,
    kernel: ArrayView2<T>,
    mode: Mode,
    boundary: Boundary<T>,
    flip: Flip,
) -> Array2<T> {
    let out_shape = output_shape(image.dim(), kernel.dim(), mode);
    let block_rows = block_rows(out_shape.0, out_shape.1 * kernel.len(), kernel.nrows());
    run_in_blocks(image, kernel, mode, boundary, flip, block_rows)
}

/// [`run`] with threads taking `block_rows` output rows at a time.
fn run_in_blocks<T: Element>(
    image: ArrayView2<T>,
    kernel: ArrayView2<T>,
    mode: Mode,
    boundary: Boundary<T>,
    flip: Flip,
    block_rows: usize,
) -> Array2<T> {
    let out_shape = output_shape(image.dim(), kernel.dim(), mode);
    let rows = AxisGeometry::new(kernel.nrows(), out_shape.0, mode, flip);
    let cols = AxisGeometry::new(kernel.ncols(), out_shape.1, mode, flip);
    let padder = RowPadder::new(image, &rows, &cols, boundary);
    let kernel_rows = kernel_rows(kernel, &rows, &cols);

    let row_len = out_shape.1;
    let mut out = vec![T::zero(); out_shape.0 * row_len];
    out.par_chunks_mut(block_rows * row_len)
        .enumerate()
        .for_each_init(Vec::new, |padded, (block, out_block)| {
            let first_row = block * block_rows;
            let out_rows = out_block.len() / row_len;
            padder.fill_rows(first_row..first_row + out_rows + kernel.nrows() - 1, padded);
            for (m, out_row) in out_block.chunks_exact_mut(row_len).enumerate() {
                for kernel_row in &kernel_rows {
                    let source = padder.row(padded, m + kernel_row.row_offset);
                    accumulate_row(out_row, source, &kernel_row.taps);
                }
            }
        });
    Array2::from_shape_vec(out_shape, out).expect("output length matches its shape")
}

/// Output rows per parallel task: enough work to outweigh the scheduling, and
/// several times the kernel height so re-padding the rows shared with the
/// next block costs little, but small enough to share among threads.
fn block_rows(out_rows: usize, work_per_row: usize, kernel_rows: usize) -> usize {
    let for_work = PARALLEL_WORK.div_ceil(work_per_row.max(1));
    let for_padding = 2 * kernel_rows;
    let for_sharing = out_rows.div_ceil(4 * rayon::current_num_threads());
    for_work.max(for_padding.min(for_sharing)).max(1)
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

/// Builds rows of the image extended on every side as far as the kernel
/// reaches.
struct RowPadder<'a, T> {
    image: ArrayView2<'a, T>,
    fill: T,
    /// Image row shown by each padded row (`None`: fill).
    row_sources: Vec<Option<usize>>,
    /// Image column shown by each padded column (`None`: fill).
    column_sources: Vec<Option<usize>>,
    /// Padded column `q` shows image column `q - column_lead` when in range.
    column_lead: isize,
    /// The padded columns inside the image, copied as one slice.
    interior: std::ops::Range<usize>,
}

impl<'a, T: Element> RowPadder<'a, T> {
    fn new(
        image: ArrayView2<'a, T>,
        rows: &AxisGeometry,
        cols: &AxisGeometry,
        boundary: Boundary<T>,
    ) -> Self {
        let fill = match boundary {
            Boundary::Fill(value) => value,
            _ => T::zero(),
        };
        let sources = |axis: &AxisGeometry, len: usize| -> Vec<Option<usize>> {
            (0..axis.padded_len())
                .map(|p| axis.source_index(p, len, boundary))
                .collect()
        };
        let column_sources = sources(cols, image.ncols());
        let interior_start = cols.lead.clamp(0, cols.padded_len() as isize) as usize;
        let interior_end =
            (cols.lead + image.ncols() as isize).clamp(0, cols.padded_len() as isize) as usize;
        RowPadder {
            image,
            fill,
            row_sources: sources(rows, image.nrows()),
            column_sources,
            column_lead: cols.lead,
            interior: interior_start..interior_end.max(interior_start),
        }
    }

    fn width(&self) -> usize {
        self.column_sources.len()
    }

    /// Writes padded rows `range` into `buffer`, row-major.
    fn fill_rows(&self, range: std::ops::Range<usize>, buffer: &mut Vec<T>) {
        let width = self.width();
        buffer.clear();
        buffer.resize(range.len() * width, self.fill);
        for (padded_row, p) in buffer.chunks_exact_mut(width).zip(range) {
            if let Some(r) = self.row_sources[p] {
                self.fill_row(r, padded_row);
            }
        }
    }

    fn fill_row(&self, image_row: usize, padded_row: &mut [T]) {
        let source = self.image.row(image_row);
        if let Some(contiguous) = source.as_slice() {
            let interior = self.interior.clone();
            let image_start = (interior.start as isize - self.column_lead) as usize;
            padded_row[interior.clone()]
                .copy_from_slice(&contiguous[image_start..image_start + interior.len()]);
            for q in (0..interior.start).chain(interior.end..padded_row.len()) {
                if let Some(c) = self.column_sources[q] {
                    padded_row[q] = contiguous[c];
                }
            }
        } else {
            for (dst, c) in padded_row.iter_mut().zip(&self.column_sources) {
                if let Some(c) = c {
                    *dst = source[*c];
                }
            }
        }
    }

    /// Row `i` of the rows last written by [`RowPadder::fill_rows`].
    fn row<'b>(&self, buffer: &'b [T], i: usize) -> &'b [T] {
        &buffer[i * self.width()..(i + 1) * self.width()]
    }
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
///
/// # Safety
/// The CPU supports AVX2 (code compiled without it calls this in `unsafe`).
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
    fn splitting_the_output_into_blocks_does_not_change_the_result() {
        let image =
            Array2::from_shape_fn((23, 37), |(r, c)| ((r * 37 + c) * 7919 % 23) as i64 - 11);
        let kernel = Array2::from_shape_fn((5, 4), |(r, c)| (r * 4 + c) as i64 % 7 - 3);
        for mode in [Mode::Full, Mode::Same, Mode::Valid] {
            for boundary in [Boundary::Fill(2), Boundary::Wrap, Boundary::Symm] {
                for flip in [Flip::Rotate, Flip::Keep] {
                    let args = (image.view(), kernel.view(), mode, boundary, flip);
                    let whole = run_in_blocks(args.0, args.1, args.2, args.3, args.4, 1_000);
                    for block_rows in [1, 2, 3, 7] {
                        let split =
                            run_in_blocks(args.0, args.1, args.2, args.3, args.4, block_rows);
                        assert_eq!(split, whole, "{mode:?} {boundary:?} {block_rows} rows");
                    }
                }
            }
        }
    }

    #[test]
    fn symmetric_extension_repeats_the_edge_and_has_period_twice_the_length() {
        let symm = Boundary::<i32>::Symm;
        let got: Vec<_> = (-7..10).map(|i| extend(i, 3, symm).unwrap()).collect();
        assert_eq!(got, [0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2]);
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
