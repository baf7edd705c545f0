//! The portable path: every rule of `simd` (the kernels written once over a vector) run one
//! element at a time, over `Scalar`, a "vector" of one lane made of plain scalar operations. It is the reference
//! every other path is tested against, bit for bit, and it is the same source as those paths:
//! each element sees the same fixed sequence of correctly rounded IEEE-754 operations (no
//! fused multiply-add).

use super::simd::{self, Vector};
use super::Scalars;
use crate::element::Element;

/// One element as a vector of one lane: the scalar arithmetic of `T`.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct Scalar<T>(T);

// SAFETY (all methods): plain scalar arithmetic, valid on every CPU; `load`/`store` need one
// valid element at the pointer, as the trait requires.
impl<T: Element> Vector for Scalar<T> {
    type E = T;
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn splat(x: T) -> Self {
        Scalar(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const T) -> Self {
        Scalar(p.read_unaligned())
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut T) {
        p.write_unaligned(self.0)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Scalar(self.0 + b.0)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Scalar(self.0 - b.0)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Scalar(self.0 * b.0)
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        Scalar(self.0 / b.0)
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        Scalar(self.0.sqrt())
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        Scalar(-self.0)
    }
}

/// One step of the kernel of `s`'s algorithm, one element at a time. `state` must hold the
/// algorithm's arrays, each at least as long as `param`, and `grad` too.
///
/// # Panics
/// If `state` does not hold the algorithm's arrays or a buffer is shorter than `param`.
pub fn apply<T: Element>(s: &Scalars<T>, param: &mut [T], grad: &[T], state: &mut [&mut [T]]) {
    // SAFETY: `Scalar` runs on every CPU; lengths are checked inside.
    unsafe { simd::apply::<Scalar<T>>(s, param, grad, state) }
}

/// `true` when no element is NaN or ±∞.
pub fn all_finite<T: Element>(x: &[T]) -> bool {
    x.iter().all(|v| v.is_finite())
}
