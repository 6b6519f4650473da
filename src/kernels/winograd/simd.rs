//! 16 lanes of `f32`, the unit the Winograd transforms work on: one zmm
//! register with AVX-512, two ymm registers with AVX2, or a plain array.
//! The transforms are written once over [`Simd`], so every path does the
//! same operations in the same order (no fused multiply-adds), and gives
//! the same bits.

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
    fn div(self, k: f32) -> Self;
    /// `max(self, 0)`.
    fn relu(self) -> Self;
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
    fn div(self, k: f32) -> Self {
        self.map(self, |a, _| a / k)
    }
    #[inline(always)]
    fn relu(self) -> Self {
        self.map(self, |a, _| a.max(0.0))
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
    fn div(self, k: f32) -> Self {
        // SAFETY: AVX-512F as above.
        Avx512(unsafe { _mm512_div_ps(self.0, _mm512_set1_ps(k)) })
    }
    #[inline(always)]
    fn relu(self) -> Self {
        // SAFETY: AVX-512F as above.
        Avx512(unsafe { _mm512_max_ps(self.0, _mm512_setzero_ps()) })
    }
}

/// Two ymm registers. Only for functions compiled with AVX2.
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
// "avx2")]` functions (winograd's `*_avx2`), where the CPU has it.
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
}
