//! The AVX-512 micro-kernel: one `R x NR` tile of C (`R <= MR` rows, `NR`
//! = 32 columns = two zmm registers per row) from a panel of A (packed, or
//! an A stored by rows or by columns, where it lies) and one packed panel
//! of B; and the packing loops that need AVX-512.
//!
//! Per step `p` of the inner dimension the kernel loads the two vectors
//! `B[p, 0..32]`, broadcasts each `A[i, p]` in turn and adds
//! `A[i, p] · B[p, 0..32]` to row `i` of the tile with two FMAs. Every
//! value of the tile has exactly one accumulator, and `p` runs in
//! increasing order, so how an element is summed depends on `k` alone.

use std::arch::x86_64::*;

use super::{ALayout, CTile, MR, NR};

/// Values of B ahead of the step being computed that a streaming tile
/// (`STREAM`) prefetches: 8 KB, 64 steps of a panel (1024 to 4096 values
/// measured alike).
const STREAM_AHEAD: usize = 2048;

/// `C[0..R, 0..32] (+)= A_panel · B_panel` over `kc` steps.
///
/// `a` is an A panel laid out as `LAYOUT` says ([`ALayout`]): packed,
/// step `p` holds `A[0..R, p]` at `a[p * MR..]` (`stride` is unused); by
/// rows, `A[i, p]` at `a + i * stride + p`; by columns, at `a + p *
/// stride + i`. `b` is a packed B panel: step `p` holds `B[p, 0..32]` at
/// `b[p * NR..]` (64-byte aligned; `rsb` is unused), or, `B_IN_PLACE`,
/// B where it lies: `B[p, j]` at `b + p * rsb + j` (only the tile's
/// masked columns are read). The tile is written as `c` says: only its masked
/// columns are read or written. The cache lines at the addresses in
/// `prefetch` are prefetched, spread over the steps. With `STREAM`, B's
/// panels are read once, from memory (a few rows of A against a large,
/// kept B: a dense layer's kernel at a small batch): each step also
/// prefetches B `STREAM_AHEAD` values on, which the hardware alone does
/// not fetch early enough (`examples/gemm_bench`'s kept dense kernel:
/// 48 -> 73 GFLOP/s on one core).
///
/// # Safety
/// The CPU must have AVX-512F. `A[0..R, 0..kc]` must be readable where
/// `a` says; `b` must hold `kc * NR` values, 64-byte aligned (in place:
/// B's `kc` rows must be readable in the tile's masked columns); and the
/// masked columns of the `R` rows of C must be valid for reads and
/// writes.
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn tile<
    const R: usize,
    const LAYOUT: u8,
    const STREAM: bool,
    const B_IN_PLACE: bool,
>(
    kc: usize,
    a: *const f32,
    stride: isize,
    b: *const f32,
    rsb: isize,
    c: CTile,
    prefetch: &[usize],
) {
    let (mask0, mask1) = (c.mask as u16, (c.mask >> 16) as u16);
    // Bring the tile of C into the cache while the products run.
    // (A hint only: a prefetch never faults.)
    for i in 0..R {
        let row = c.c.wrapping_offset(i as isize * c.rsc) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(4 * NR - 4));
    }
    // acc[i][v] = sum over p of A[i, p] · B[p, 16v..16v + 16].
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    let b_step = if B_IN_PLACE { rsb } else { NR as isize };
    // A[i, p] lies at a + i * a_row + p * a_step.
    let (a_row, a_step) = match LAYOUT {
        ALayout::PANEL => (1, MR as isize),
        ALayout::ROWS => (stride, 1),
        _ => (1, stride),
    };
    // One step: acc[i] += A[i, p] · B[p, ..], then on to step p + 1.
    let step = |acc: &mut [[__m512; 2]; R], a: &mut *const f32, b: &mut *const f32| {
        // SAFETY: step p of the panels lies inside them (the caller's
        // promise: kc steps of A's R rows and of NR values, b aligned).
        unsafe {
            let (b0, b1) = if B_IN_PLACE {
                // Only the tile's columns: the row may end before 32.
                let b1 = b.wrapping_add(16);
                (
                    _mm512_maskz_loadu_ps(mask0, *b),
                    _mm512_maskz_loadu_ps(mask1, b1),
                )
            } else {
                (_mm512_load_ps(*b), _mm512_load_ps(b.add(16)))
            };
            if STREAM {
                let ahead = b.wrapping_add(STREAM_AHEAD) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let a_ip = _mm512_set1_ps(*a.offset(i as isize * a_row));
                row[0] = _mm512_fmadd_ps(a_ip, b0, row[0]);
                row[1] = _mm512_fmadd_ps(a_ip, b1, row[1]);
            }
            *a = a.offset(a_step);
            *b = b.wrapping_offset(b_step);
        }
    };
    // Steps in groups of UNROLL. Before each group, prefetch line `next`
    // while `due` reaches kc: len(prefetch) lines per kc steps, evenly.
    const UNROLL: usize = 4;
    let (mut next, mut due) = (0, 0);
    for _ in 0..kc / UNROLL {
        due += UNROLL * prefetch.len();
        while due >= kc {
            due -= kc;
            _mm_prefetch::<_MM_HINT_T1>(prefetch[next] as *const i8);
            next += 1;
        }
        for _ in 0..UNROLL {
            step(&mut acc, &mut a, &mut b);
        }
    }
    for _ in 0..kc % UNROLL {
        step(&mut acc, &mut a, &mut b);
    }
    // The lines not yet prefetched (when kc is not a multiple of UNROLL).
    for &line in &prefetch[next..] {
        _mm_prefetch::<_MM_HINT_T1>(line as *const i8);
    }
    // C[i, ..] = acc[i] (+ C[i, ..]), only in the masked columns.
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: the masked columns of row i of the tile are valid for
        // reads and writes (the caller's promise); masked-off lanes are
        // neither read nor written (so their addresses only wrap).
        unsafe {
            let c_row = c.c.offset(i as isize * c.rsc);
            let (mut v0, mut v1) = (row[0], row[1]);
            if c.accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(mask0, c_row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(mask1, c_row.wrapping_add(16)));
            }
            _mm512_mask_storeu_ps(c_row, mask0, v0);
            _mm512_mask_storeu_ps(c_row.wrapping_add(16), mask1, v1);
        }
    }
}

/// Packs the `kc x nc` block of a B with contiguous rows (`B[p, j]` at
/// `b + p * rsb + j`) into panels of `NR` columns, as `pack_b` lays them
/// out, row by row (one stream through B): zeros past column `nc`.
///
/// # Safety
/// The CPU must have AVX-512F; the block must be readable and `dst` must
/// hold `kc * nc.next_multiple_of(NR)` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_b_rows(kc: usize, nc: usize, b: *const f32, rsb: isize, dst: *mut f32) {
    for p in 0..kc {
        let row = b.wrapping_offset(p as isize * rsb);
        for jr in (0..nc).step_by(NR) {
            let cols = NR.min(nc - jr);
            let mask = if cols == NR { !0 } else { (1u32 << cols) - 1 };
            // SAFETY: the masked values of row p are inside the block, and
            // step p of panel jr / NR lies inside dst (the caller's
            // promises).
            unsafe {
                let step = dst.add(jr * kc + p * NR);
                let v0 = _mm512_maskz_loadu_ps(mask as u16, row.wrapping_add(jr));
                let v1 = _mm512_maskz_loadu_ps((mask >> 16) as u16, row.wrapping_add(jr + 16));
                _mm512_store_ps(step, v0);
                _mm512_store_ps(step.add(16), v1);
            }
        }
    }
}

/// Packs `rows <= MR` rows of an A stored by columns (`A[i, p]` at
/// `a + p * csa + i`) over `kc` steps into a panel: step `p` holds
/// `A[0..rows, p]` at `dst[p * MR..]`, one masked copy per step.
///
/// # Safety
/// The CPU must have AVX-512F; `A[0..rows, 0..kc]` must be readable and
/// `dst` must hold `kc * MR` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_a_columns(
    rows: usize,
    kc: usize,
    a: *const f32,
    csa: isize,
    dst: *mut f32,
) {
    let mask = (1u16 << rows) - 1;
    for p in 0..kc {
        // SAFETY: the `rows` values of column p are readable, and step p
        // of the panel lies inside dst (the caller's promises).
        unsafe {
            let column = _mm512_maskz_loadu_ps(mask, a.offset(p as isize * csa));
            _mm512_mask_storeu_ps(dst.add(p * MR), mask, column);
        }
    }
}
