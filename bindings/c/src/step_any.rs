//! Steps of a handle over tensors of any element type, each buffer typed by the tensor's
//! registration: the one call a model mixing `float`, `double`, bfloat16 and binary16 tensors
//! (and bfloat16 state) needs.

use core::ffi::c_void;

use vsgd::{bf16, f16, DType, GradRef, ParamMut, TensorId};

use crate::buffers::{check_buffer, check_disjoint, slice, slice_mut, try_vec, Span};
use crate::config::vsgd_step_outcome;
use crate::error::{guard, vsgd_result, Failure};
use crate::optimizer::{vsgd_optimizer, with};
use crate::step::{lists, outcome_span, vsgd_step_report, write_outcome};

/// Checks a buffer of `len` elements of type `dtype` given as `void *` (non-NULL unless
/// empty, aligned for the type, in the address space); its range for the overlap check.
fn typed_span(
    dtype: DType,
    ptr: *const c_void,
    len: usize,
    written: bool,
    what: &'static str,
    index: Option<usize>,
) -> Result<Span, Failure> {
    match dtype {
        DType::F32 => check_buffer(ptr.cast::<f32>(), len, written, what, index),
        DType::F64 => check_buffer(ptr.cast::<f64>(), len, written, what, index),
        DType::Bf16 | DType::F16 => check_buffer(ptr.cast::<u16>(), len, written, what, index),
    }
}

/// The core's view of a checked parameter buffer.
///
/// # Safety
/// `ptr` checked by [`typed_span`] with the same `dtype` and `len`; `len` live elements, not
/// otherwise referenced while the view lives.
unsafe fn param_view<'a>(dtype: DType, ptr: *mut c_void, len: usize) -> ParamMut<'a> {
    // SAFETY: forwarded contract; `bf16` and `f16` are `repr(transparent)` over `u16`.
    unsafe {
        match dtype {
            DType::F32 => ParamMut::F32(slice_mut(ptr.cast::<f32>(), len)),
            DType::F64 => ParamMut::F64(slice_mut(ptr.cast::<f64>(), len)),
            DType::Bf16 => ParamMut::Bf16(slice_mut(ptr.cast::<bf16>(), len)),
            DType::F16 => ParamMut::F16(slice_mut(ptr.cast::<f16>(), len)),
        }
    }
}

/// The core's view of a checked gradient buffer.
///
/// # Safety
/// `ptr` checked by [`typed_span`] with the same `dtype` and `len`; `len` live elements, not
/// written while the view lives.
unsafe fn grad_view<'a>(dtype: DType, ptr: *const c_void, len: usize) -> GradRef<'a> {
    // SAFETY: forwarded contract; `bf16` and `f16` are `repr(transparent)` over `u16`.
    unsafe {
        match dtype {
            DType::F32 => GradRef::F32(slice(ptr.cast::<f32>(), len)),
            DType::F64 => GradRef::F64(slice(ptr.cast::<f64>(), len)),
            DType::Bf16 => GradRef::Bf16(slice(ptr.cast::<bf16>(), len)),
            DType::F16 => GradRef::F16(slice(ptr.cast::<f16>(), len)),
        }
    }
}

/// One update of every registered tensor, whatever its types, in one call: a model of
/// bfloat16 weights and `float` norms, or any mixture of `VSGD_DTYPE_F32`, `_F64`, `_BF16`
/// and `_F16` tensors with `float`, `double` or bfloat16 state. `params[i]` (written) and
/// `grads[i]` (read) hold `lens[i]` elements of tensor i's registered parameter type
/// (`float`, `double`, or the `uint16_t` bits of a bfloat16 or binary16); `count` must equal
/// the number of tensors.
///
/// `grads[i]` NULL means tensor i has no gradient this step (a frozen or unused parameter, as
/// torch skips parameters whose `grad` is None): it is left untouched with its step counter,
/// `params[i]` is not looked at, and it counts neither as applied nor as skipped. This holds
/// for an empty tensor too (its step counter stays), where the typed steps take a NULL
/// buffer of length 0 as an empty gradient.
///
/// It is one step of the whole model: every tensor is checked before any is touched (on error
/// nothing changes), the non-finite policy sees every gradient, gradient clipping by global
/// norm takes one norm over all of them, and a global schedule clock advances once. The
/// `float` and `double` tensors are updated in one parallel pass, then the others one after
/// another (each split across threads). Each tensor gets the bits its typed step gives
/// (`vsgd_optimizer_step_f32`, `_bf16`, ...) when clipping is off or all tensors are of one
/// type: the `float`/`double` rule for `float`/`double` tensors; for 16-bit parameters or
/// bfloat16 state, the `float` rule over the widened values, the parameter rounded once to
/// nearest even and bfloat16 state rounded stochastically.
///
/// Errors: as `vsgd_optimizer_step_f32` (`DTYPE_MISMATCH` cannot happen: the types come from
/// the registration; `LENGTH_MISMATCH` for a `count` other than the number of tensors). The
/// element buffers are checked after the handle is taken (their types come from it).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `params`, `grads`, `lens` NULL or `count`
/// readable elements; each `params[i]`/`grads[i]` NULL or `lens[i]` live elements of tensor
/// i's type, aligned for it; `report` NULL or valid for reading its `struct_size` and writing
/// that many bytes.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step(
    optimizer: *mut vsgd_optimizer,
    params: *const *mut c_void,
    grads: *const *const c_void,
    lens: *const usize,
    count: usize,
    report: *mut vsgd_step_report,
) -> vsgd_result {
    guard("vsgd_optimizer_step", || {
        // SAFETY: forwarded contract.
        let l = unsafe { lists(params, grads, lens, count, report) }?;
        // SAFETY: forwarded contract (handle); the views below as their comment says.
        let r = unsafe {
            with(optimizer, |o| {
                let n = o.num_tensors();
                if count != n {
                    return Err(vsgd::Error::LengthMismatch {
                        what: "params",
                        expected: n,
                        got: count,
                    }
                    .into());
                }
                let (pv, gv, lv) = (&l.params, &l.grads, &l.lens);
                let mut dtypes = try_vec(count, "the types of the step")?;
                let mut spans = try_vec(
                    count.saturating_mul(2).saturating_add(1),
                    "the buffers of the step",
                )?;
                for i in 0..count {
                    let dtype = o.tensor_info(TensorId(i))?.dtype;
                    dtypes.push(dtype);
                    if gv[i].is_null() {
                        continue; // frozen: `params[i]` is not looked at
                    }
                    spans.push(typed_span(dtype, pv[i], lv[i], true, "params", Some(i))?);
                    spans.push(typed_span(dtype, gv[i], lv[i], false, "grads", Some(i))?);
                }
                spans.extend(l.report_span()?);
                check_disjoint(&mut spans)?;
                let mut ps: Vec<ParamMut> = try_vec(count, "the parameters of the step")?;
                let mut gs: Vec<Option<GradRef>> = try_vec(count, "the gradients of the step")?;
                for i in 0..count {
                    if gv[i].is_null() {
                        ps.push(ParamMut::F32(&mut []));
                        gs.push(None);
                        continue;
                    }
                    // SAFETY: both buffers checked for tensor i's type (non-NULL or empty,
                    // aligned, size) and no written one overlaps another; `lens[i]` live
                    // elements each (caller).
                    ps.push(param_view(dtypes[i], pv[i], lv[i]));
                    gs.push(Some(grad_view(dtypes[i], gv[i], lv[i])));
                }
                Ok(o.step_any(&mut ps, &gs)?)
            })
        }?;
        // SAFETY: the views are gone; the report as the caller promised.
        unsafe { l.write_report(r) };
        Ok(())
    })
}

/// One update of tensor `tensor`, whatever its types: `param` (written) and `grad` (read)
/// hold `len` elements (the tensor's length) of its registered parameter type (`float`,
/// `double`, or `uint16_t` bits of a bfloat16 or binary16). The single-tensor step of
/// bfloat16 and binary16 tensors; for a tensor of `float` or `double` parameters (whatever
/// its state) the same as `vsgd_optimizer_step_tensor_f32`/`_f64`. Its buffers are checked
/// after the handle is taken (their types come from the registration), so with a NULL or
/// busy handle that error comes first, where the typed steps report a bad buffer first. A tensor
/// stepped alone clips its gradient by its own norm and does not advance the global schedule
/// clock (as `vsgd_optimizer_step_tensor_f32`).
///
/// `*outcome` (if not NULL) receives `VSGD_STEP_APPLIED` or `VSGD_STEP_SKIPPED`, as for
/// `vsgd_optimizer_step_tensor_f32`. On error nothing changes.
///
/// Errors: as `vsgd_optimizer_step_tensor_f32`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `param` and `grad` NULL or `len` live elements
/// of the tensor's type, aligned for it; `outcome` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step_tensor(
    optimizer: *mut vsgd_optimizer,
    tensor: usize,
    param: *mut c_void,
    grad: *const c_void,
    len: usize,
    outcome: *mut vsgd_step_outcome,
) -> vsgd_result {
    guard("vsgd_optimizer_step_tensor", || {
        let out = outcome_span(outcome)?;
        // SAFETY: forwarded contract (handle); the views below as their comment says.
        let r = unsafe {
            with(optimizer, |o| {
                let dtype = o.tensor_info(TensorId(tensor))?.dtype;
                let mut spans = [
                    typed_span(dtype, param, len, true, "param", None)?,
                    typed_span(dtype, grad, len, false, "grad", None)?,
                    out,
                ];
                check_disjoint(&mut spans)?;
                // SAFETY: both buffers checked for the tensor's type and disjoint; `len` live
                // elements each (caller).
                let (p, g) = (param_view(dtype, param, len), grad_view(dtype, grad, len));
                Ok(o.step_tensor_any(TensorId(tensor), p, g)?)
            })
        }?;
        // SAFETY: checked by outcome_span; the views are gone.
        unsafe { write_outcome(outcome, r) };
        Ok(())
    })
}
