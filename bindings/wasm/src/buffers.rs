//! Tensor buffers in wasm memory — the zero-copy form (parameter and gradient buffers seen
//! from JavaScript as typed-array views, stepped in place) and the copies `step` makes — and
//! the step over any mixture of tensor types, by the core's own step calls.

use vsgd::{bf16, f16, DType, GradRef, Optimizer, ParamMut, StepOutcome, StepReport, TensorId};
use wasm_bindgen::JsValue;

use crate::convert::{err, try_vec, ArrayKind, JsElement, Result, TypedArray};

/// One buffer of a tensor's parameter type (`f32`, `f64`, `bf16` or `f16`). Never resized
/// after creation, so a view of it stays valid until wasm memory grows.
pub enum Buf {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// bfloat16 elements (a Uint16Array of their bits in JavaScript).
    Bf16(Vec<bf16>),
    /// IEEE half elements (a Uint16Array of their bits in JavaScript).
    F16(Vec<f16>),
}

/// `f(v)` for the vector inside a [`Buf`], whatever its element type.
macro_rules! each {
    ($buf:expr, $v:ident => $f:expr) => {
        match $buf {
            Buf::F32($v) => $f,
            Buf::F64($v) => $f,
            Buf::Bf16($v) => $f,
            Buf::F16($v) => $f,
        }
    };
}

impl Buf {
    /// `len` zeros of `dtype`.
    pub fn zeros(dtype: DType, len: usize) -> Result<Buf> {
        Ok(match dtype {
            DType::F32 => Buf::F32(try_vec(len)?),
            DType::F64 => Buf::F64(try_vec(len)?),
            DType::Bf16 => Buf::Bf16(try_vec(len)?),
            DType::F16 => Buf::F16(try_vec(len)?),
        })
    }

    /// A copy of `a`, which must be the typed array of `dtype` (checked by the caller; a
    /// mismatch, or a view that went stale, is an error).
    pub fn from_js(a: &TypedArray, dtype: DType, what: &str) -> Result<Buf> {
        if a.kind() != ArrayKind::of(dtype) {
            return Err(err(&format!(
                "{what}: expected a {}, got a {}",
                ArrayKind::of(dtype).name(),
                a.kind().name()
            )));
        }
        Ok(match dtype {
            DType::F32 => Buf::F32(a.to_vec(what)?),
            DType::F64 => Buf::F64(a.to_vec(what)?),
            DType::Bf16 => Buf::Bf16(a.to_vec(what)?),
            DType::F16 => Buf::F16(a.to_vec(what)?),
        })
    }

    /// Writes the buffer back into `a` (the array it was copied from).
    pub fn copy_back(&self, a: &TypedArray, what: &str) -> Result<()> {
        each!(self, v => a.copy_back(v, what))
    }

    /// The element count.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// A typed-array view of the buffer in wasm memory (Float32Array, Float64Array, or
    /// Uint16Array of bf16/f16 bits).
    pub fn view(&self) -> JsValue {
        // SAFETY: the view aliases memory owned by this buffer, which is never resized and
        // lives as long as the optimizer. JavaScript may only read or write it through the
        // view between calls into wasm (JS is single-threaded; no Rust reference to the
        // buffer is live then). When wasm memory grows, the old ArrayBuffer is detached and
        // the view reads as empty: it can never reach memory outside wasm's.
        unsafe { each!(self, v => JsElement::view(v.as_slice())) }
    }

    /// The core's view of the buffer as a parameter.
    fn param(&mut self) -> ParamMut<'_> {
        each!(self, v => ParamMut::from(v.as_mut_slice()))
    }

    /// The core's view of the buffer as a gradient.
    fn grad(&self) -> GradRef<'_> {
        each!(self, v => GradRef::from(v.as_slice()))
    }
}

/// A tensor's parameter and gradient buffers.
pub struct Buffers {
    /// The parameter, updated in place by a step.
    pub param: Buf,
    /// The gradient, read by a step.
    pub grad: Buf,
}

/// Reserves, then frees, the scratch a step over `tensors` tensors needs (the lists of
/// buffers handed to the core and the skipped tensors), so that
/// the step reuses it instead of growing wasm memory (which would empty the views the caller
/// has just taken, or a parameter of `step` that is such a view, before its copy back).
///
/// Fallible: where wasm memory cannot hold it, `false`, and the caller reports that before
/// anything changes (an infallible reservation would trap the instance).
#[must_use]
pub fn warm_scratch(tensors: usize) -> bool {
    let mut scratch: Vec<[usize; 16]> = Vec::new();
    let ok = scratch
        .try_reserve_exact(tensors.saturating_add(16))
        .is_ok();
    core::hint::black_box(&scratch);
    ok
}

/// One update of every tensor: `params[i]`, `grads[i]` are tensor `i`'s buffers (one per
/// tensor, of its parameter type), in one core call whatever the tensors' types
/// (`Optimizer::step_any`: its checks and errors, one global norm for gradient clipping, one
/// tick of the schedules' global clock).
pub fn step_all(
    opt: &mut Optimizer,
    params: &mut [&mut Buf],
    grads: &[&Buf],
) -> Result<StepReport> {
    let mut ps: Vec<ParamMut> = Vec::new();
    let mut gs: Vec<Option<GradRef>> = Vec::new();
    if ps.try_reserve_exact(params.len()).is_err() || gs.try_reserve_exact(grads.len()).is_err() {
        return Err(err("could not allocate memory for the step"));
    }
    ps.extend(params.iter_mut().map(|p| p.param()));
    gs.extend(grads.iter().map(|g| Some(g.grad())));
    opt.step_any(&mut ps, &gs).map_err(|e| err(&e.to_string()))
}

/// One update of tensor `t`, whatever its types (`Optimizer::step_tensor_any`).
pub fn step_one(
    opt: &mut Optimizer,
    t: TensorId,
    param: &mut Buf,
    grad: &Buf,
) -> core::result::Result<StepOutcome, vsgd::Error> {
    opt.step_tensor_any(t, param.param(), grad.grad())
}

/// One step of every tensor over its zero-copy buffers (all present).
pub fn step_buffers(opt: &mut Optimizer, buffers: &mut [Option<Buffers>]) -> Result<StepReport> {
    let mut params: Vec<&mut Buf> = Vec::with_capacity(buffers.len());
    let mut grads: Vec<&Buf> = Vec::with_capacity(buffers.len());
    for (k, b) in buffers.iter_mut().enumerate() {
        let Some(Buffers { param, grad }) = b else {
            // Checked by the caller; an error rather than a panic all the same.
            return Err(err(&format!("tensor {k} has no buffers")));
        };
        params.push(param);
        grads.push(grad);
    }
    step_all(opt, &mut params, &grads)
}
