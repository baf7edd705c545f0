//! x86 and x86-64 vectors: SSE2 (4 × f32, 2 × f64; the x86-64 baseline), AVX2 (8 × f32,
//! 4 × f64) and AVX-512F (16 × f32, 8 × f64; with Rust ≥ 1.89). The dispatcher in
//! [`super`] picks one at run time.
//!
//! Only exact instructions are used: `add/sub/mul/div/sqrt` (`addps`, `divps`, `sqrtps`, …)
//! are correctly rounded per lane, exactly like their scalar forms (`addss`, …) that the
//! portable path compiles to. No `rcpps`/`rsqrtps` (approximate), no FMA.

#[cfg(target_arch = "x86")]
use core::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

use super::simd::{self, Vector};
use super::Scalars;

// Sign flips: xor with −0.0 (only the sign bit set), the same as scalar negation.
#[inline(always)]
unsafe fn neg_128(x: __m128) -> __m128 {
    _mm_xor_ps(x, _mm_set1_ps(-0.0))
}
#[inline(always)]
unsafe fn neg_128d(x: __m128d) -> __m128d {
    _mm_xor_pd(x, _mm_set1_pd(-0.0))
}
#[inline(always)]
unsafe fn neg_256(x: __m256) -> __m256 {
    _mm256_xor_ps(x, _mm256_set1_ps(-0.0))
}
#[inline(always)]
unsafe fn neg_256d(x: __m256d) -> __m256d {
    _mm256_xor_pd(x, _mm256_set1_pd(-0.0))
}
vector! {
    /// SSE2, 4 × f32.
    Sse2F32(__m128) of 4 x f32:
    set1 _mm_set1_ps, loadu _mm_loadu_ps, storeu _mm_storeu_ps,
    add _mm_add_ps, sub _mm_sub_ps, mul _mm_mul_ps, div _mm_div_ps, sqrt _mm_sqrt_ps,
    neg neg_128
}
vector! {
    /// SSE2, 2 × f64.
    Sse2F64(__m128d) of 2 x f64:
    set1 _mm_set1_pd, loadu _mm_loadu_pd, storeu _mm_storeu_pd,
    add _mm_add_pd, sub _mm_sub_pd, mul _mm_mul_pd, div _mm_div_pd, sqrt _mm_sqrt_pd,
    neg neg_128d
}
vector! {
    /// AVX2 (the AVX subset), 8 × f32.
    Avx2F32(__m256) of 8 x f32:
    set1 _mm256_set1_ps, loadu _mm256_loadu_ps, storeu _mm256_storeu_ps,
    add _mm256_add_ps, sub _mm256_sub_ps, mul _mm256_mul_ps, div _mm256_div_ps,
    sqrt _mm256_sqrt_ps, neg neg_256
}
vector! {
    /// AVX2 (the AVX subset), 4 × f64.
    Avx2F64(__m256d) of 4 x f64:
    set1 _mm256_set1_pd, loadu _mm256_loadu_pd, storeu _mm256_storeu_pd,
    add _mm256_add_pd, sub _mm256_sub_pd, mul _mm256_mul_pd, div _mm256_div_pd,
    sqrt _mm256_sqrt_pd, neg neg_256d
}
/// The x86 vector types of each element type.
pub(crate) trait X86Element: super::Element {
    type Sse2: Vector<E = Self>;
    type Avx2: Vector<E = Self>;
    #[cfg(vsgd_avx512)]
    type Avx512: Vector<E = Self>;
}

impl X86Element for f32 {
    type Sse2 = Sse2F32;
    type Avx2 = Avx2F32;
    #[cfg(vsgd_avx512)]
    type Avx512 = avx512::Avx512F32;
}

impl X86Element for f64 {
    type Sse2 = Sse2F64;
    type Avx2 = Avx2F64;
    #[cfg(vsgd_avx512)]
    type Avx512 = avx512::Avx512F64;
}

macro_rules! entry_points {
    ($feature:literal, $vec:ident, $apply:ident, $finite:ident) => {
        /// One step with this instruction set.
        ///
        /// # Safety
        /// The CPU must support the instruction set; lengths as for [`super::apply`].
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn $apply<E: X86Element>(
            s: &Scalars<E>,
            param: &mut [E],
            grad: &[E],
            state: &mut [&mut [E]],
        ) {
            simd::apply::<E::$vec>(s, param, grad, state)
        }

        /// `all_finite` with this instruction set.
        ///
        /// # Safety
        /// The CPU must support the instruction set.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn $finite<E: X86Element>(x: &[E]) -> bool {
            simd::all_finite::<E::$vec>(x)
        }
    };
}

entry_points!("sse2", Sse2, apply_sse2, all_finite_sse2);
entry_points!("avx2", Avx2, apply_avx2, all_finite_avx2);

/// AVX-512F, compiled only by Rust ≥ 1.89 (where its intrinsics became stable; see build.rs).
#[cfg(vsgd_avx512)]
#[clippy::msrv = "1.89"]
mod avx512 {
    use super::*;

    // `_mm512_xor_ps` needs AVX-512DQ; the integer xor is in AVX-512F.
    #[inline(always)]
    unsafe fn neg_512(x: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(x),
            _mm512_set1_epi32(i32::MIN),
        ))
    }
    #[inline(always)]
    unsafe fn neg_512d(x: __m512d) -> __m512d {
        _mm512_castsi512_pd(_mm512_xor_si512(
            _mm512_castpd_si512(x),
            _mm512_set1_epi64(i64::MIN),
        ))
    }

    vector! {
        /// AVX-512F, 16 × f32.
        Avx512F32(__m512) of 16 x f32:
        set1 _mm512_set1_ps, loadu _mm512_loadu_ps, storeu _mm512_storeu_ps,
        add _mm512_add_ps, sub _mm512_sub_ps, mul _mm512_mul_ps, div _mm512_div_ps,
        sqrt _mm512_sqrt_ps, neg neg_512
    }
    vector! {
        /// AVX-512F, 8 × f64.
        Avx512F64(__m512d) of 8 x f64:
        set1 _mm512_set1_pd, loadu _mm512_loadu_pd, storeu _mm512_storeu_pd,
        add _mm512_add_pd, sub _mm512_sub_pd, mul _mm512_mul_pd, div _mm512_div_pd,
        sqrt _mm512_sqrt_pd, neg neg_512d
    }

    entry_points!("avx512f", Avx512, apply_avx512, all_finite_avx512);
}
#[cfg(vsgd_avx512)]
pub(crate) use avx512::{all_finite_avx512, apply_avx512, Avx512F32};
