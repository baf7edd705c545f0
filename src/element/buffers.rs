//! Buffers of any element type ([`ParamMut`], [`GradRef`]): what a step over tensors of
//! several types takes (`Optimizer::step_any`), and the sealed conversion every element and
//! storage type provides.

use half::{bf16, f16};

use super::DType;

/// A tensor's parameter buffer, of whichever element type the tensor was registered with
/// (`TensorSpec::dtype`): the argument of
/// `Optimizer::step_any`. Converts from `&mut [f32]`, `&mut [f64]`, `&mut [bf16]` and
/// `&mut [f16]` with `.into()`.
#[derive(Debug)]
pub enum ParamMut<'a> {
    /// `f32` elements.
    F32(&'a mut [f32]),
    /// `f64` elements.
    F64(&'a mut [f64]),
    /// `bf16` elements.
    Bf16(&'a mut [bf16]),
    /// `f16` elements.
    F16(&'a mut [f16]),
}

/// A tensor's gradient, of the same element type as its parameter: the argument of
/// `Optimizer::step_any`. Converts from `&[f32]`, `&[f64]`, `&[bf16]` and `&[f16]` with
/// `.into()`.
#[derive(Clone, Copy, Debug)]
pub enum GradRef<'a> {
    /// `f32` elements.
    F32(&'a [f32]),
    /// `f64` elements.
    F64(&'a [f64]),
    /// `bf16` elements.
    Bf16(&'a [bf16]),
    /// `f16` elements.
    F16(&'a [f16]),
}

macro_rules! conversions {
    ($($ty:ty => $variant:ident),*) => {$(
        impl<'a> From<&'a mut [$ty]> for ParamMut<'a> {
            fn from(p: &'a mut [$ty]) -> Self {
                ParamMut::$variant(p)
            }
        }
        impl<'a> From<&'a [$ty]> for GradRef<'a> {
            fn from(g: &'a [$ty]) -> Self {
                GradRef::$variant(g)
            }
        }
    )*};
}
conversions!(f32 => F32, f64 => F64, bf16 => Bf16, f16 => F16);

impl ParamMut<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            ParamMut::F32(_) => DType::F32,
            ParamMut::F64(_) => DType::F64,
            ParamMut::Bf16(_) => DType::Bf16,
            ParamMut::F16(_) => DType::F16,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            ParamMut::F32(p) => p.len(),
            ParamMut::F64(p) => p.len(),
            ParamMut::Bf16(p) => p.len(),
            ParamMut::F16(p) => p.len(),
        }
    }

    /// `true` when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same buffer, borrowed for a shorter time (to pass it on and keep it).
    pub fn reborrow(&mut self) -> ParamMut<'_> {
        match self {
            ParamMut::F32(p) => ParamMut::F32(p),
            ParamMut::F64(p) => ParamMut::F64(p),
            ParamMut::Bf16(p) => ParamMut::Bf16(p),
            ParamMut::F16(p) => ParamMut::F16(p),
        }
    }
}

impl GradRef<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            GradRef::F32(_) => DType::F32,
            GradRef::F64(_) => DType::F64,
            GradRef::Bf16(_) => DType::Bf16,
            GradRef::F16(_) => DType::F16,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            GradRef::F32(g) => g.len(),
            GradRef::F64(g) => g.len(),
            GradRef::Bf16(g) => g.len(),
            GradRef::F16(g) => g.len(),
        }
    }

    /// `true` when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `true` unless an element is NaN or ±∞.
    pub fn all_finite(&self) -> bool {
        match self {
            GradRef::F32(g) => crate::kernels::all_finite(g),
            GradRef::F64(g) => crate::kernels::all_finite(g),
            GradRef::Bf16(g) => crate::kernels::mixed::all_finite(g),
            GradRef::F16(g) => crate::kernels::mixed::all_finite(g),
        }
    }
}

/// The conversion of a slice of one element type into the typed buffers (sealed: implemented
/// for `f32`, `f64`, [`bf16`] and [`f16`]; a supertrait of [`Element`](super::Element) and of
/// [`Storage`](crate::kernels::mixed::Storage), so every step can take their slices).
#[doc(hidden)]
pub trait AsBuffer: Copy + 'static {
    /// The element type.
    #[doc(hidden)]
    const BUFFER_DTYPE: DType;
    /// `s` as a parameter buffer.
    #[doc(hidden)]
    fn param_buf(s: &mut [Self]) -> ParamMut<'_>;
    /// `s` as a gradient buffer.
    #[doc(hidden)]
    fn grad_buf(s: &[Self]) -> GradRef<'_>;
}

macro_rules! as_buffer {
    ($($ty:ty => $variant:ident),*) => {$(
        impl AsBuffer for $ty {
            const BUFFER_DTYPE: DType = DType::$variant;
            #[inline(always)]
            fn param_buf(s: &mut [Self]) -> ParamMut<'_> {
                ParamMut::$variant(s)
            }
            #[inline(always)]
            fn grad_buf(s: &[Self]) -> GradRef<'_> {
                GradRef::$variant(s)
            }
        }
    )*};
}
as_buffer!(f32 => F32, f64 => F64, bf16 => Bf16, f16 => F16);
