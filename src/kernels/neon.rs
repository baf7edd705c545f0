//! AArch64 Advanced SIMD (NEON) vectors: 4 × f32, 2 × f64. NEON is part of every AArch64
//! target Rust builds for (`target_feature = "neon"`), so this path is chosen at compile time.
//!
//! `fadd/fsub/fmul/fdiv/fsqrt` on vectors are correctly rounded per lane like their scalar
//! forms, and AArch64 (unlike 32-bit NEON) keeps subnormals unless FPCR.FZ is set, which
//! would affect the scalar path the same way. No `frecpe`/`frsqrte` (approximate), no FMA.

use core::arch::aarch64::*;

use super::simd;
use super::Scalars;

vector! {
    /// NEON, 4 × f32.
    NeonF32(float32x4_t) of 4 x f32:
    set1 vdupq_n_f32, loadu vld1q_f32, storeu vst1q_f32,
    add vaddq_f32, sub vsubq_f32, mul vmulq_f32, div vdivq_f32, sqrt vsqrtq_f32,
    neg vnegq_f32
}
vector! {
    /// NEON, 2 × f64.
    NeonF64(float64x2_t) of 2 x f64:
    set1 vdupq_n_f64, loadu vld1q_f64, storeu vst1q_f64,
    add vaddq_f64, sub vsubq_f64, mul vmulq_f64, div vdivq_f64, sqrt vsqrtq_f64,
    neg vnegq_f64
}

/// The NEON vector type of each element type.
pub(crate) trait NeonElement: super::Element {
    type Neon: simd::Vector<E = Self>;
}

impl NeonElement for f32 {
    type Neon = NeonF32;
}

impl NeonElement for f64 {
    type Neon = NeonF64;
}

/// One step with NEON.
///
/// # Safety
/// Lengths as for [`super::apply`] (NEON itself is guaranteed by the target).
#[inline]
pub(crate) unsafe fn apply_neon<E: NeonElement>(
    s: &Scalars<E>,
    param: &mut [E],
    grad: &[E],
    state: &mut [&mut [E]],
) {
    simd::apply::<E::Neon>(s, param, grad, state)
}

/// `all_finite` with NEON.
///
/// # Safety
/// None beyond the target's (NEON is guaranteed by the target).
#[inline]
pub(crate) unsafe fn all_finite_neon<E: NeonElement>(x: &[E]) -> bool {
    simd::all_finite::<E::Neon>(x)
}
