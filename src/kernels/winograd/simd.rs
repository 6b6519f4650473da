//! 16 lanes of `f32`, the unit the Winograd transforms work on: one zmm
//! register with AVX-512, two ymm registers with AVX2, or a plain array.
//! The transforms are written once over [`Simd`], so every path does the
//! same operations in the same order, and gives the same bits (a fused
//! multiply-add is one on every path: FMA instructions, or `f32::mul_add`).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Lanes per value.
pub(super) const LANES: usize = 16;

/// 16 `f32` lanes and the operations the transforms need.
///
/// # Safety
/// An implementation may need CPU features: its values may only be made
/// and used in code compiled for them (see `Avx512` and `Avx2`).
pub(super) unsafe trait Simd: Copy {
    fn zero() -> Self;
    /// `src[0..16]`.
    fn load(src: &[f32; LANES]) -> Self;
    fn store(self, dst: &mut [f32; LANES]);
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    fn scale(self, k: f32) -> Self;
    /// `self * k + add`, rounded once.
    fn mul_add(self, k: f32, add: Self) -> Self;
    fn div(self, k: f32) -> Self;
    /// `max(self, 0)`.
    fn relu(self) -> Self;
    /// `self` in the lanes where `y > 0` (false for NaN), else 0: relu's
    /// derivative at its output `y`.
    fn where_positive(self, y: Self) -> Self;
    /// `self` in the lanes whose byte of `winners` is `position`, else 0.
    fn where_winner(self, winners: &[u8; LANES], position: u8) -> Self;

    /// The maximum of a 2x2 window (positions 0 1 / 2 3) per lane, and the
    /// position it came from, as `kernels::pool` picks it: the first
    /// maximum row by row (comparisons false for NaN).
    #[inline(always)]
    fn max_2x2(window: [Self; 4]) -> (Self, [u8; LANES]) {
        let mut values = [[0.0; LANES]; 4];
        for (value, lanes) in window.iter().zip(&mut values) {
            value.store(lanes);
        }
        let (mut max, mut won) = ([0.0; LANES], [0; LANES]);
        for lane in 0..LANES {
            let [t0, t1, b0, b1] = values.map(|v| v[lane]);
            let (t, pt) = if t1 > t0 { (t1, 1) } else { (t0, 0) };
            let (b, pb) = if b1 > b0 { (b1, 3) } else { (b0, 2) };
            (max[lane], won[lane]) = if b > t { (b, pb) } else { (t, pt) };
        }
        (Self::load(&max), won)
    }
}

/// A plain array: for CPUs without AVX2.
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; LANES]);

impl Portable {
    #[inline(always)]
    fn map(self, other: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = [0.0; LANES];
        for ((out, &a), &b) in out.iter_mut().zip(&self.0).zip(&other.0) {
            *out = f(a, b);
        }
        Portable(out)
    }
}

// SAFETY: needs no CPU feature.
unsafe impl Simd for Portable {
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    fn load(src: &[f32; LANES]) -> Self {
        Portable(*src)
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES]) {
        *dst = self.0;
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.map(other, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        self.map(other, |a, b| a - b)
    }
    #[inline(always)]
    fn scale(self, k: f32) -> Self {
        self.map(self, |a, _| a * k)
    }
    #[inline(always)]
    fn mul_add(self, k: f32, add: Self) -> Self {
        self.map(add, |a, b| a.mul_add(k, b))
    }
    #[inline(always)]
    fn div(self, k: f32) -> Self {
        self.map(self, |a, _| a / k)
    }
    #[inline(always)]
    fn relu(self) -> Self {
        self.map(self, |a, _| a.max(0.0))
    }
    #[inline(always)]
    fn where_positive(self, y: Self) -> Self {
        self.map(y, |a, y| if y > 0.0 { a } else { 0.0 })
    }
    #[inline(always)]
    fn where_winner(self, winners: &[u8; LANES], position: u8) -> Self {
        let mut out = self.0;
        for (value, &winner) in out.iter_mut().zip(winners) {
            if winner != position {
                *value = 0.0;
            }
        }
        Portable(out)
    }
}

/// One zmm register. Only for functions compiled with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Avx512(__m512);

// SAFETY: its values are only made inside `#[target_feature(enable =
// "avx512f")]` functions (winograd's `*_avx512`), where the CPU has it.
#[cfg(target_arch = "x86_64")]
unsafe impl Simd for Avx512 {
    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: the caller runs on a CPU with AVX-512F (see the impl).
        Avx512(unsafe { _mm512_setzero_ps() })
    }
    #[inline(always)]
    fn load(src: &[f32; LANES]) -> Self {
        // SAFETY: `src` holds 16 values; AVX-512F as above.
        Avx512(unsafe { _mm512_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES]) {
        // SAFETY: `dst` holds 16 values; AVX-512F as above.
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        // SAFETY: AVX-512F as above.
        Avx512(unsafe { _mm512_add_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        // SAFETY: AVX-512F as above.
        Avx512(unsafe { _mm512_sub_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn scale(self, k: f32) -> Self {
        // SAFETY: AVX-512F as above.
        Avx512(unsafe { _mm512_mul_ps(self.0, _mm512_set1_ps(k)) })
    }
    #[inline(always)]
    fn mul_add(self, k: f32, add: Self) -> Self {
        // SAFETY: AVX-512F as above.
        Avx512(unsafe { _mm512_fmadd_ps(self.0, _mm512_set1_ps(k), add.0) })
    }
    #[inline(always)]
    fn div(self, k: f32) -> Self {
        // SAFETY: AVX-512F as above.
        Avx512(unsafe { _mm512_div_ps(self.0, _mm512_set1_ps(k)) })
    }
    #[inline(always)]
    fn relu(self) -> Self {
        // SAFETY: AVX-512F as above.
        Avx512(unsafe { _mm512_max_ps(self.0, _mm512_setzero_ps()) })
    }
    #[inline(always)]
    fn where_positive(self, y: Self) -> Self {
        // SAFETY: AVX-512F as above.
        unsafe {
            let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y.0, _mm512_setzero_ps());
            Avx512(_mm512_maskz_mov_ps(positive, self.0))
        }
    }
    #[inline(always)]
    fn where_winner(self, winners: &[u8; LANES], position: u8) -> Self {
        // SAFETY: `winners` holds 16 bytes; AVX-512F as above.
        unsafe {
            let bytes = _mm_loadu_si128(winners.as_ptr().cast());
            let won = _mm512_cvtepu8_epi32(bytes);
            let here = _mm512_cmpeq_epi32_mask(won, _mm512_set1_epi32(position as i32));
            Avx512(_mm512_maskz_mov_ps(here, self.0))
        }
    }
    #[inline(always)]
    fn max_2x2([t0, t1, b0, b1]: [Self; 4]) -> (Self, [u8; LANES]) {
        // SAFETY: AVX-512F as above; `won` holds 16 bytes.
        unsafe {
            let right_top = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(t1.0, t0.0);
            let right_bottom = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(b1.0, b0.0);
            let t = _mm512_mask_blend_ps(right_top, t0.0, t1.0);
            let b = _mm512_mask_blend_ps(right_bottom, b0.0, b1.0);
            let at_top = _mm512_maskz_mov_epi32(right_top, _mm512_set1_epi32(1));
            let at_bottom =
                _mm512_mask_blend_epi32(right_bottom, _mm512_set1_epi32(2), _mm512_set1_epi32(3));
            let below = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(b, t);
            let mut won = [0u8; LANES];
            let positions = _mm512_mask_blend_epi32(below, at_top, at_bottom);
            _mm_storeu_si128(won.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(positions));
            (Avx512(_mm512_mask_blend_ps(below, t, b)), won)
        }
    }
}

/// Two ymm registers. Only for functions compiled with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Avx2(__m256, __m256);

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// `f` on both halves.
    #[inline(always)]
    fn both(self, other: Self, f: impl Fn(__m256, __m256) -> __m256) -> Self {
        Avx2(f(self.0, other.0), f(self.1, other.1))
    }
}

// SAFETY: its values are only made inside `#[target_feature(enable =
// "avx2,fma")]` functions (winograd's `*_avx2`), where the CPU has both.
#[cfg(target_arch = "x86_64")]
unsafe impl Simd for Avx2 {
    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: the caller runs on a CPU with AVX2 (see the impl).
        unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
    }
    #[inline(always)]
    fn load(src: &[f32; LANES]) -> Self {
        // SAFETY: `src` holds 16 values; AVX2 as above.
        unsafe {
            Avx2(
                _mm256_loadu_ps(src.as_ptr()),
                _mm256_loadu_ps(src.as_ptr().add(8)),
            )
        }
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES]) {
        // SAFETY: `dst` holds 16 values; AVX2 as above.
        unsafe {
            _mm256_storeu_ps(dst.as_mut_ptr(), self.0);
            _mm256_storeu_ps(dst.as_mut_ptr().add(8), self.1);
        }
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        // SAFETY: AVX2 as above.
        self.both(other, |a, b| unsafe { _mm256_add_ps(a, b) })
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        // SAFETY: AVX2 as above.
        self.both(other, |a, b| unsafe { _mm256_sub_ps(a, b) })
    }
    #[inline(always)]
    fn scale(self, k: f32) -> Self {
        // SAFETY: AVX2 as above.
        self.both(self, |a, _| unsafe { _mm256_mul_ps(a, _mm256_set1_ps(k)) })
    }
    #[inline(always)]
    fn mul_add(self, k: f32, add: Self) -> Self {
        // SAFETY: AVX2 and FMA as above.
        self.both(add, |a, b| unsafe {
            _mm256_fmadd_ps(a, _mm256_set1_ps(k), b)
        })
    }
    #[inline(always)]
    fn div(self, k: f32) -> Self {
        // SAFETY: AVX2 as above.
        self.both(self, |a, _| unsafe { _mm256_div_ps(a, _mm256_set1_ps(k)) })
    }
    #[inline(always)]
    fn relu(self) -> Self {
        // SAFETY: AVX2 as above.
        self.both(self, |a, _| unsafe {
            _mm256_max_ps(a, _mm256_setzero_ps())
        })
    }
    #[inline(always)]
    fn where_positive(self, y: Self) -> Self {
        // SAFETY: AVX2 as above.
        self.both(y, |a, y| unsafe {
            _mm256_and_ps(a, _mm256_cmp_ps::<_CMP_GT_OQ>(y, _mm256_setzero_ps()))
        })
    }
    #[inline(always)]
    fn where_winner(self, winners: &[u8; LANES], position: u8) -> Self {
        // SAFETY: `winners` holds 16 bytes, 8 per half; AVX2 as above.
        unsafe {
            let half = |at: usize| {
                let bytes = _mm_loadl_epi64(winners.as_ptr().add(at).cast());
                let won = _mm256_cvtepu8_epi32(bytes);
                let here = _mm256_cmpeq_epi32(won, _mm256_set1_epi32(position as i32));
                _mm256_castsi256_ps(here)
            };
            Avx2(
                _mm256_and_ps(self.0, half(0)),
                _mm256_and_ps(self.1, half(8)),
            )
        }
    }
}
