//! The zero-copy form: parameter and gradient buffers in wasm memory, seen from JavaScript as
//! typed-array views, stepped in place.

use vsgd::{DType, Optimizer, StepReport};
use wasm_bindgen::JsValue;

use crate::convert::{err, try_vec, JsElement, Result};

/// One buffer of a tensor's element type. Never resized after creation, so a view of it
/// stays valid until wasm memory grows.
pub enum Buf {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
}

impl Buf {
    /// `len` zeros of `dtype`.
    pub fn zeros(dtype: DType, len: usize) -> Result<Buf> {
        Ok(match dtype {
            DType::F32 => Buf::F32(try_vec(len)?),
            DType::F64 => Buf::F64(try_vec(len)?),
            d => {
                return Err(err(&format!(
                    "{} buffers (mixed precision) are not supported in wasm yet",
                    d.name()
                )))
            }
        })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Buf::F32(_) => DType::F32,
            Buf::F64(_) => DType::F64,
        }
    }

    /// A typed-array view of the buffer in wasm memory.
    pub fn view(&self) -> JsValue {
        // SAFETY: the view aliases memory owned by this buffer, which is never resized and
        // lives as long as the optimizer. JavaScript may only read or write it through the
        // view between calls into wasm (JS is single-threaded; no Rust reference to the
        // buffer is live then). When wasm memory grows, the old ArrayBuffer is detached and
        // the view reads as empty: it can never reach memory outside wasm's.
        unsafe {
            match self {
                Buf::F32(v) => f32::view(v),
                Buf::F64(v) => f64::view(v),
            }
        }
    }

    fn slice_mut<T: JsElement>(&mut self) -> Option<&mut [T]> {
        let any: &mut dyn core::any::Any = match self {
            Buf::F32(v) => v,
            Buf::F64(v) => v,
        };
        any.downcast_mut::<Vec<T>>().map(Vec::as_mut_slice)
    }

    fn slice<T: JsElement>(&self) -> Option<&[T]> {
        let any: &dyn core::any::Any = match self {
            Buf::F32(v) => v,
            Buf::F64(v) => v,
        };
        any.downcast_ref::<Vec<T>>().map(Vec::as_slice)
    }
}

/// A tensor's parameter and gradient buffers.
pub struct Buffers {
    /// The parameter, updated in place by a step.
    pub param: Buf,
    /// The gradient, read by a step.
    pub grad: Buf,
}

/// Reserves, then frees, the scratch the step over `tensors` tensors needs, so that the
/// first `step_all` reuses it instead of growing wasm memory (which would empty the views
/// the caller has just taken).
pub fn warm_scratch(tensors: usize) {
    let scratch: Vec<(usize, usize)> = Vec::with_capacity(2 * tensors);
    core::hint::black_box(&scratch);
}

/// One step of every tensor over its buffers (all present; element type `T`).
pub fn step_all<T: JsElement>(
    opt: &mut Optimizer,
    buffers: &mut [Option<Buffers>],
) -> core::result::Result<StepReport, vsgd::Error> {
    let mut params: Vec<&mut [T]> = Vec::with_capacity(buffers.len());
    let mut grads: Vec<&[T]> = Vec::with_capacity(buffers.len());
    for (k, b) in buffers.iter_mut().enumerate() {
        let Some(Buffers { param, grad }) = b else {
            // Checked by the caller; an error rather than a panic all the same.
            return Err(vsgd::Error::UnknownTensor { tensor: k });
        };
        let dtype = param.dtype();
        let mismatch = vsgd::Error::DTypeMismatch {
            tensor: k,
            expected: dtype,
            got: T::DTYPE,
        };
        let (Some(p), Some(g)) = (param.slice_mut::<T>(), grad.slice::<T>()) else {
            return Err(mismatch);
        };
        params.push(p);
        grads.push(g);
    }
    opt.step(&mut params, &grads)
}
