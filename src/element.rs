//! Element types the kernels run on (`f32` and `f64`), and the storage types of mixed
//! precision (`bf16`, `f16`: see [`crate::kernels::mixed`]).

use core::fmt::Debug;
use core::ops::{Add, Div, Mul, Neg, Sub};

/// The element type of a tensor, as stored in checkpoints and reported by the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DType {
    /// IEEE-754 binary32.
    F32 = 0,
    /// IEEE-754 binary64.
    F64 = 1,
    /// bfloat16 (8 exponent bits, 7 mantissa bits): a mixed-precision tensor's parameter and
    /// gradient, or its state with stochastic rounding. Computation is in `f32`.
    Bf16 = 2,
    /// IEEE-754 binary16: a mixed-precision tensor's parameter and gradient (state in `f32`).
    F16 = 3,
}

impl DType {
    /// The lower-case name used by the CLI and checkpoints (`"f32"`, `"f64"`, `"bf16"`,
    /// `"f16"`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
        }
    }

    /// Parses a name of [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        match name {
            "f32" => Some(DType::F32),
            "f64" => Some(DType::F64),
            "bf16" => Some(DType::Bf16),
            "f16" => Some(DType::F16),
            _ => None,
        }
    }

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::Bf16 | DType::F16 => 2,
        }
    }

    /// Whether a tensor may hold its parameter (and gradient) in `self` and its state in
    /// `state`: `f32` and `f64` with state of their own type; `f32`, `bf16` and `f16`
    /// parameters with `f32` state (the common mixed-precision recipe) or `bf16` state (with
    /// stochastic rounding; [`crate::kernels::mixed::Bf16Sr`]).
    pub const fn allows_state(self, state: DType) -> bool {
        matches!(
            (self, state),
            (DType::F64, DType::F64)
                | (
                    DType::F32 | DType::Bf16 | DType::F16,
                    DType::F32 | DType::Bf16
                )
        )
    }
}

pub(crate) mod buffers;
pub use buffers::{GradRef, ParamMut};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type the kernels support (`f32` or `f64`; sealed).
///
/// Every operation the kernels use is one correctly rounded IEEE-754 operation
/// (`+ − × ÷ sqrt`), so a kernel gives the same bits on every target as long as the
/// sequence of operations is the same and nothing contracts `a*b + c` into a fused
/// multiply-add (Rust never does so implicitly).
pub trait Element:
    Copy
    + Debug
    + PartialEq
    + PartialOrd
    + Default
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + sealed::Sealed
    + buffers::AsBuffer
    + 'static
{
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// `0.0`.
    const ZERO: Self;
    /// `1.0`.
    const ONE: Self;
    /// Rounds an `f64` to this type (round-to-nearest-even).
    fn from_f64(x: f64) -> Self;
    /// Widens to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Correctly rounded square root.
    fn sqrt(self) -> Self;
    /// `true` unless NaN or ±∞.
    fn is_finite(self) -> bool;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        #[cfg(feature = "std")]
        {
            f32::sqrt(self)
        }
        #[cfg(not(feature = "std"))]
        {
            libm::sqrtf(self)
        }
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        #[cfg(feature = "std")]
        {
            f64::sqrt(self)
        }
        #[cfg(not(feature = "std"))]
        {
            libm::sqrt(self)
        }
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
}
