//! The AVX-512 micro-kernel: one `R x NR` tile of C (`R <= MR` rows, `NR`
//! = 32 columns = two zmm registers per row) from one packed panel of A
//! and one packed panel of B.
//!
//! Per step `p` of the inner dimension the kernel loads the two vectors
//! `B[p, 0..32]`, broadcasts each `A[i, p]` in turn and adds
//! `A[i, p] · B[p, 0..32]` to row `i` of the tile with two FMAs. Every
//! value of the tile has exactly one accumulator, and `p` runs in
//! increasing order, so how an element is summed depends on `k` alone.

use std::arch::x86_64::*;

use super::{CTile, MR, NR};

/// `C[0..R, 0..32] (+)= A_panel · B_panel` over `kc` steps.
///
/// `a` is a packed A panel: step `p` holds `A[0..R, p]` at `a[p * MR..]`.
/// `b` is a packed B panel: step `p` holds `B[p, 0..32]` at `b[p * NR..]`
/// (64-byte aligned). The tile is written as `c` says: only its masked
/// columns are read or written. The cache lines at the addresses in
/// `prefetch` are prefetched, spread over the steps.
///
/// # Safety
/// The CPU must have AVX-512F. `a` must hold `kc * MR` values, `b`
/// `kc * NR` values, 64-byte aligned, and the masked columns of the `R`
/// rows of C must be valid for reads and writes.
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn tile<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
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
    // Prefetch line `next` when `due` reaches kc: len(prefetch) per kc
    // steps, evenly.
    let (mut next, mut due) = (0, 0);
    for _ in 0..kc {
        due += prefetch.len();
        while due >= kc {
            due -= kc;
            _mm_prefetch::<_MM_HINT_T0>(prefetch[next] as *const i8);
            next += 1;
        }
        // SAFETY: step p of the panels lies inside them (the caller's
        // promise: kc steps of MR and NR values, b aligned).
        unsafe {
            let b0 = _mm512_load_ps(b);
            let b1 = _mm512_load_ps(b.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let a_ip = _mm512_set1_ps(*a.add(i));
                row[0] = _mm512_fmadd_ps(a_ip, b0, row[0]);
                row[1] = _mm512_fmadd_ps(a_ip, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    // C[i, ..] = acc[i] (+ C[i, ..]), only in the masked columns.
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: the masked columns of row i of the tile are valid for
        // reads and writes (the caller's promise); masked-off lanes are
        // neither read nor written.
        unsafe {
            let c_row = c.c.offset(i as isize * c.rsc);
            let (mut v0, mut v1) = (row[0], row[1]);
            if c.accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(mask0, c_row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(mask1, c_row.add(16)));
            }
            _mm512_mask_storeu_ps(c_row, mask0, v0);
            _mm512_mask_storeu_ps(c_row.add(16), mask1, v1);
        }
    }
}

/// Packs `rows <= MR` rows of a row-major A (row `i` at `a + i * rsa`,
/// contiguous) over `kc` steps into a panel: step `p` holds
/// `A[0..rows, p]` at `dst[p * MR..]` (and zeros up to `MR`).
///
/// 16 steps at a time: the 16 rows (zeros past `rows`) are loaded as 16
/// vectors and transposed in registers into 16 steps.
///
/// # Safety
/// The CPU must have AVX-512F; `A[0..rows, 0..kc]` must be readable and
/// `dst` must hold `kc * MR` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_a_rows(rows: usize, kc: usize, a: *const f32, rsa: isize, dst: *mut f32) {
    const STEP_MASK: u16 = (1 << MR) - 1;
    for p0 in (0..kc).step_by(16) {
        let steps = 16.min(kc - p0);
        let load_mask = if steps == 16 { !0 } else { (1u16 << steps) - 1 };
        // r[i] = A[i, p0..p0 + 16], zeros past the rows and the steps.
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, ri) in r.iter_mut().enumerate().take(rows) {
            // SAFETY: the masked values lie in row i (the caller's promise).
            *ri = unsafe { _mm512_maskz_loadu_ps(load_mask, a.offset(i as isize * rsa).add(p0)) };
        }
        let columns = transpose16(r);
        for (p, column) in columns.iter().enumerate().take(steps) {
            // SAFETY: step p0 + p < kc of the panel lies inside dst.
            unsafe { _mm512_mask_storeu_ps(dst.add((p0 + p) * MR), STEP_MASK, *column) };
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

/// The transpose of the 16 x 16 matrix whose rows are `r`.
///
/// # Safety
/// The CPU must have AVX-512F (to call it from code without it).
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // t: 2 x 2 blocks of rows 2g, 2g + 1, per 128-bit lane:
    // t[2g] = (r[2g][0], r[2g + 1][0], r[2g][1], r[2g + 1][1]), t[2g + 1]
    // the same for columns 2 and 3 of the lane.
    let mut t = [_mm512_setzero_ps(); 16];
    for g in 0..8 {
        t[2 * g] = _mm512_unpacklo_ps(r[2 * g], r[2 * g + 1]);
        t[2 * g + 1] = _mm512_unpackhi_ps(r[2 * g], r[2 * g + 1]);
    }
    // u[4g + s]: column s of each 128-bit lane, for rows 4g..4g + 4.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let pd = |x: __m512| _mm512_castps_pd(x);
        let (t0, t1, t2, t3) = (
            pd(t[4 * g]),
            pd(t[4 * g + 1]),
            pd(t[4 * g + 2]),
            pd(t[4 * g + 3]),
        );
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    // Column 4L + s gathers lane L of u[s], u[4 + s], u[8 + s], u[12 + s].
    let mut columns = [_mm512_setzero_ps(); 16];
    for s in 0..4 {
        let v = _mm512_shuffle_f32x4::<0x44>(u[s], u[4 + s]);
        let w = _mm512_shuffle_f32x4::<0xEE>(u[s], u[4 + s]);
        let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + s], u[12 + s]);
        let w2 = _mm512_shuffle_f32x4::<0xEE>(u[8 + s], u[12 + s]);
        columns[s] = _mm512_shuffle_f32x4::<0x88>(v, v2);
        columns[4 + s] = _mm512_shuffle_f32x4::<0xDD>(v, v2);
        columns[8 + s] = _mm512_shuffle_f32x4::<0x88>(w, w2);
        columns[12 + s] = _mm512_shuffle_f32x4::<0xDD>(w, w2);
    }
    columns
}
