//! WebAssembly SIMD (simd128) vectors: 4 × f32, 2 × f64, chosen at compile time
//! (`-C target-feature=+simd128`; WebAssembly has no run-time feature detection).
//!
//! simd128's `add/sub/mul/div/sqrt` are IEEE-754 correctly rounded per lane, with subnormals
//! (only the *relaxed* SIMD proposal may differ, and it is not used). Only NaN payloads are
//! left open by the WebAssembly specification, as they are by Rust for scalar code.

use core::arch::wasm32::*;

use super::simd;
use super::Scalars;

#[inline(always)]
unsafe fn load_f32x4(p: *const f32) -> v128 {
    v128_load(p as *const v128)
}
#[inline(always)]
unsafe fn store_f32x4(p: *mut f32, v: v128) {
    v128_store(p as *mut v128, v)
}
#[inline(always)]
unsafe fn load_f64x2(p: *const f64) -> v128 {
    v128_load(p as *const v128)
}
#[inline(always)]
unsafe fn store_f64x2(p: *mut f64, v: v128) {
    v128_store(p as *mut v128, v)
}

vector! {
    /// simd128, 4 × f32.
    WasmF32(v128) of 4 x f32:
    set1 f32x4_splat, loadu load_f32x4, storeu store_f32x4,
    add f32x4_add, sub f32x4_sub, mul f32x4_mul, div f32x4_div, sqrt f32x4_sqrt,
    neg f32x4_neg
}
vector! {
    /// simd128, 2 × f64.
    WasmF64(v128) of 2 x f64:
    set1 f64x2_splat, loadu load_f64x2, storeu store_f64x2,
    add f64x2_add, sub f64x2_sub, mul f64x2_mul, div f64x2_div, sqrt f64x2_sqrt,
    neg f64x2_neg
}

/// The simd128 vector type of each element type.
pub(crate) trait WasmElement: super::Element {
    type Simd128: simd::Vector<E = Self>;
}

impl WasmElement for f32 {
    type Simd128 = WasmF32;
}

impl WasmElement for f64 {
    type Simd128 = WasmF64;
}

/// One step with simd128.
///
/// # Safety
/// Lengths as for [`super::apply`] (simd128 is guaranteed by the build).
#[inline]
pub(crate) unsafe fn apply_simd128<E: WasmElement>(
    s: &Scalars<E>,
    param: &mut [E],
    grad: &[E],
    state: &mut [&mut [E]],
) {
    simd::apply::<E::Simd128>(s, param, grad, state)
}

/// `all_finite` with simd128.
///
/// # Safety
/// None beyond the build's (simd128 is enabled at compile time).
#[inline]
pub(crate) unsafe fn all_finite_simd128<E: WasmElement>(x: &[E]) -> bool {
    simd::all_finite::<E::Simd128>(x)
}
