//! Steps of a handle: one tensor, or every tensor in one call, and which tensors the last step
//! skipped. Every step is the core's `Optimizer::step_any` or `Optimizer::step_tensor_any`.

use core::mem::{offset_of, size_of};

use vsgd::{bf16, f16, GradRef, ParamMut, StepOutcome, TensorId};

use crate::buffers::{
    check_buffer, check_disjoint, check_out, check_sized, slice, slice_mut, try_to_vec, try_vec,
    write, write_sized, Span,
};
use crate::config::{vsgd_step_outcome, VSGD_STEP_APPLIED, VSGD_STEP_SKIPPED};
use crate::error::{guard, vsgd_result, Failure, VSGD_RESULT_BUFFER_TOO_SMALL};
use crate::optimizer::{vsgd_optimizer, with};

/// What a step over every tensor (`vsgd_optimizer_step` and the typed `vsgd_optimizer_step_*`)
/// did. A growable struct: set `struct_size` to
/// `sizeof(vsgd_step_report)` before the call (`vsgd_step_report r = { sizeof r };`); see
/// `vsgd_tensor_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vsgd_step_report {
    /// Set by the caller to `sizeof(vsgd_step_report)`; on return, the bytes filled.
    pub struct_size: usize,
    /// Tensors updated.
    pub applied: usize,
    /// Tensors left untouched because their gradient was not finite (`VSGD_POLICY_SKIP`);
    /// `vsgd_optimizer_last_skipped` lists them.
    pub skipped: usize,
}

/// The size of `vsgd_step_report`'s first version (ABI 1.0).
const STEP_REPORT_V1: usize = offset_of!(vsgd_step_report, skipped) + size_of::<usize>();

/// The tensors skipped by the last step call (non-finite gradients under
/// `VSGD_POLICY_SKIP`): their indices into `buf` (`cap` entries), their count into
/// `*out_count`. Returns `VSGD_RESULT_BUFFER_TOO_SMALL` (after writing the first `cap`) when
/// more were skipped than fit. `buf` may be NULL when `cap` is 0.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `buf` NULL or valid for `cap` writes;
/// `out_count` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_last_skipped(
    optimizer: *const vsgd_optimizer,
    buf: *mut usize,
    cap: usize,
    out_count: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_last_skipped", || {
        check_out(out_count, "out_count")?;
        check_buffer(buf, cap, true, "buf", None)?;
        // Written under the lease, straight from the handle's list (nothing allocated).
        // SAFETY: forwarded contract.
        let count = unsafe {
            with(optimizer, |o| {
                let skipped = o.last_skipped();
                for (k, t) in skipped.iter().take(cap).enumerate() {
                    // SAFETY: checked by check_buffer; `cap` > k writable elements (caller),
                    // possibly uninitialized, so written through the pointer.
                    write(buf.add(k), t.0);
                }
                Ok(skipped.len())
            })
        }?;
        // SAFETY: checked; writable (caller); no reference to `buf` is alive.
        unsafe { write(out_count, count) };
        if count > cap {
            return Err(Failure::new(
                VSGD_RESULT_BUFFER_TOO_SMALL,
                format!("{count} tensors were skipped, buf holds {cap}"),
            ));
        }
        Ok(())
    })
}

/// The outcome argument of a single-tensor step: NULL or writable; its range for the overlap
/// check (it is written after the step: inside a buffer of the step it would overwrite the
/// result).
pub(crate) fn outcome_span(outcome: *mut vsgd_step_outcome) -> Result<Span, Failure> {
    if !outcome.is_null() {
        check_out(outcome, "outcome")?;
    }
    let written = usize::from(!outcome.is_null());
    check_buffer(outcome, written, true, "outcome", None)
}

/// Writes a step's outcome (if `outcome` is not NULL).
///
/// # Safety
/// `outcome` checked by [`outcome_span`] and valid for one write; no view of the step's
/// buffers alive.
pub(crate) unsafe fn write_outcome(outcome: *mut vsgd_step_outcome, r: StepOutcome) {
    if !outcome.is_null() {
        let o = match r {
            StepOutcome::Applied => VSGD_STEP_APPLIED,
            StepOutcome::Skipped => VSGD_STEP_SKIPPED,
        };
        // SAFETY: forwarded contract.
        unsafe { write(outcome, o) };
    }
}

/// Shared body of the `vsgd_optimizer_step_tensor_*` exports: `Optimizer::step_tensor_any`
/// over `T` buffers, checked before the handle is taken.
///
/// # Safety
/// As documented on the exports.
unsafe fn step_tensor<T>(
    optimizer: *mut vsgd_optimizer,
    tensor: usize,
    param: *mut T,
    grad: *const T,
    len: usize,
    outcome: *mut vsgd_step_outcome,
) -> Result<(), Failure>
where
    for<'a> ParamMut<'a>: From<&'a mut [T]>,
    for<'a> GradRef<'a>: From<&'a [T]>,
{
    let out = outcome_span(outcome)?;
    let mut spans = [
        check_buffer(param, len, true, "param", None)?,
        check_buffer(grad, len, false, "grad", None)?,
        out,
    ];
    check_disjoint(&mut spans)?;
    // SAFETY: forwarded contract (handle).
    let r = unsafe {
        with(optimizer, |o| {
            // SAFETY: both buffers checked (non-NULL or empty, aligned, size) and disjoint;
            // `len` live elements each (caller).
            let (p, g) = (slice_mut(param, len), slice(grad, len));
            Ok(o.step_tensor_any(TensorId(tensor), p.into(), g.into())?)
        })
    }?;
    // SAFETY: checked by outcome_span; the buffers' views are gone.
    unsafe { write_outcome(outcome, r) };
    Ok(())
}

/// One update of tensor `tensor` (registered as `VSGD_DTYPE_F32`): `param` (written) and
/// `grad` (read) hold `len` elements, the tensor's length. The learning rate is the group's
/// base rate × its schedule at the tensor's next update number.
///
/// `*outcome` (if not NULL) receives `VSGD_STEP_APPLIED`, or `VSGD_STEP_SKIPPED` when the
/// gradient was not finite under `VSGD_POLICY_SKIP` (nothing changed, the step counter did
/// not advance). On error nothing changes.
///
/// Errors: `NULL_PARAMETER`, `MISALIGNED_BUFFER`, `OVERLAPPING_BUFFERS`, `BUFFER_TOO_LARGE`,
/// `UNKNOWN_TENSOR`, `DTYPE_MISMATCH`, `LENGTH_MISMATCH`, `NON_FINITE_GRADIENT`,
/// `INVALID_STEP`, `HANDLE_BUSY`, `HANDLE_POISONED`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `param` and `grad` NULL or `len` live elements;
/// `outcome` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step_tensor_f32(
    optimizer: *mut vsgd_optimizer,
    tensor: usize,
    param: *mut f32,
    grad: *const f32,
    len: usize,
    outcome: *mut vsgd_step_outcome,
) -> vsgd_result {
    guard("vsgd_optimizer_step_tensor_f32", || {
        // SAFETY: forwarded contract.
        unsafe { step_tensor(optimizer, tensor, param, grad, len, outcome) }
    })
}

/// `vsgd_optimizer_step_tensor_f32` for a `VSGD_DTYPE_F64` tensor.
///
/// # Safety
/// As `vsgd_optimizer_step_tensor_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step_tensor_f64(
    optimizer: *mut vsgd_optimizer,
    tensor: usize,
    param: *mut f64,
    grad: *const f64,
    len: usize,
    outcome: *mut vsgd_step_outcome,
) -> vsgd_result {
    guard("vsgd_optimizer_step_tensor_f64", || {
        // SAFETY: forwarded contract.
        unsafe { step_tensor(optimizer, tensor, param, grad, len, outcome) }
    })
}

/// The argument arrays of an all-tensor step, copied out of the caller's (see [`lists`]).
pub(crate) struct Lists<P, G> {
    /// `params[i]`.
    pub(crate) params: Vec<P>,
    /// `grads[i]`.
    pub(crate) grads: Vec<G>,
    /// `lens[i]`.
    pub(crate) lens: Vec<usize>,
    report: *mut vsgd_step_report,
    report_size: usize,
}

impl<P, G> Lists<P, G> {
    /// Where the report lies (`None` without one), for the overlap check: written after the
    /// step, it must not overlap a written buffer. Checked after the element buffers.
    pub(crate) fn report_span(&self) -> Result<Option<Span>, Failure> {
        if self.report.is_null() {
            return Ok(None);
        }
        let r = self.report as *const u8;
        Ok(Some(check_buffer(
            r,
            self.report_size,
            true,
            "report",
            None,
        )?))
    }

    /// Writes the report of a step (if one was given).
    ///
    /// # Safety
    /// No view of the step's buffers alive; the report as the caller promised.
    pub(crate) unsafe fn write_report(&self, r: vsgd::StepReport) {
        if !self.report.is_null() {
            let value = vsgd_step_report {
                struct_size: 0,
                applied: r.applied,
                skipped: r.skipped,
            };
            // SAFETY: checked by check_sized; writable (caller).
            unsafe { write_sized(self.report, value, self.report_size) };
        }
    }
}

/// The arguments of an all-tensor step: checks the report (its `struct_size`) and the three
/// argument arrays and copies them out (no reference to them may be alive while the element
/// buffers are borrowed: a caller could place them inside one of those buffers; their length
/// is the caller's, so allocated fallibly).
///
/// # Safety
/// `params`, `grads`, `lens` NULL or `count` readable elements; `report` NULL or valid for
/// reading its `struct_size` and writing that many bytes.
pub(crate) unsafe fn lists<P: Copy, G: Copy>(
    params: *const P,
    grads: *const G,
    lens: *const usize,
    count: usize,
    report: *mut vsgd_step_report,
) -> Result<Lists<P, G>, Failure> {
    let report_size = if report.is_null() {
        0
    } else {
        // SAFETY: valid for reading struct_size (caller).
        unsafe { check_sized(report, STEP_REPORT_V1, "report") }?
    };
    check_buffer(params, count, false, "params", None)?;
    check_buffer(grads, count, false, "grads", None)?;
    check_buffer(lens, count, false, "lens", None)?;
    // SAFETY: each array holds `count` readable elements (checked; caller).
    unsafe {
        Ok(Lists {
            params: try_to_vec(slice(params, count), "params")?,
            grads: try_to_vec(slice(grads, count), "grads")?,
            lens: try_to_vec(slice(lens, count), "lens")?,
            report,
            report_size,
        })
    }
}

/// Shared body of the typed `vsgd_optimizer_step_*` exports: `Optimizer::step_any` over `T`
/// buffers (checked before the handle is taken), every gradient given.
///
/// # Safety
/// As documented on the exports.
unsafe fn step_all<T>(
    optimizer: *mut vsgd_optimizer,
    params: *const *mut T,
    grads: *const *const T,
    lens: *const usize,
    count: usize,
    report: *mut vsgd_step_report,
) -> Result<(), Failure>
where
    for<'a> ParamMut<'a>: From<&'a mut [T]>,
    for<'a> GradRef<'a>: From<&'a [T]>,
{
    // SAFETY: forwarded contract.
    let l = unsafe { lists(params, grads, lens, count, report) }?;
    let mut spans = try_vec(
        count.saturating_mul(2).saturating_add(1),
        "the buffers of the step",
    )?;
    for i in 0..count {
        spans.push(check_buffer(
            l.params[i],
            l.lens[i],
            true,
            "params",
            Some(i),
        )?);
        spans.push(check_buffer(
            l.grads[i],
            l.lens[i],
            false,
            "grads",
            Some(i),
        )?);
    }
    spans.extend(l.report_span()?);
    check_disjoint(&mut spans)?;
    let mut ps: Vec<ParamMut> = try_vec(count, "the parameters of the step")?;
    let mut gs: Vec<Option<GradRef>> = try_vec(count, "the gradients of the step")?;
    for i in 0..count {
        // SAFETY: every buffer checked (non-NULL or empty, aligned, size) and no written one
        // overlaps another; `lens[i]` live elements each (caller).
        unsafe {
            ps.push(slice_mut(l.params[i], l.lens[i]).into());
            gs.push(Some(slice(l.grads[i], l.lens[i]).into()));
        }
    }
    // SAFETY: forwarded contract (handle).
    let r = unsafe { with(optimizer, |o| Ok(o.step_any(&mut ps, &gs)?)) }?;
    drop((ps, gs));
    // SAFETY: the views are gone; the report as the caller promised.
    unsafe { l.write_report(r) };
    Ok(())
}

/// One update of every registered tensor (all `VSGD_DTYPE_F32`), in registration order:
/// `params[i]` (written) and `grads[i]` (read) hold `lens[i]` elements, tensor i's length;
/// `count` must equal the number of tensors. Every tensor is checked before any is touched,
/// so on error nothing changes. Tensors with a non-finite gradient under `VSGD_POLICY_SKIP`
/// are left untouched and counted in `report->skipped`
/// (see `vsgd_optimizer_last_skipped`); `report` may be NULL (set `report->struct_size`
/// otherwise). The lists of a step over many tensors are allocated fallibly
/// (`ALLOCATION_FAILED`, nothing changed). A model whose tensors are of several types (or
/// whose frozen tensors have no gradient) steps with `vsgd_optimizer_step`.
///
/// Errors: as `vsgd_optimizer_step_tensor_f32`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `params`, `grads`, `lens` NULL or `count`
/// readable elements; each `params[i]`/`grads[i]` NULL or `lens[i]` live elements; `report`
/// NULL or valid for reading its `struct_size` and writing that many bytes.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step_f32(
    optimizer: *mut vsgd_optimizer,
    params: *const *mut f32,
    grads: *const *const f32,
    lens: *const usize,
    count: usize,
    report: *mut vsgd_step_report,
) -> vsgd_result {
    guard("vsgd_optimizer_step_f32", || {
        // SAFETY: forwarded contract.
        unsafe { step_all(optimizer, params, grads, lens, count, report) }
    })
}

/// `vsgd_optimizer_step_f32` for tensors registered as `VSGD_DTYPE_F64`.
///
/// # Safety
/// As `vsgd_optimizer_step_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step_f64(
    optimizer: *mut vsgd_optimizer,
    params: *const *mut f64,
    grads: *const *const f64,
    lens: *const usize,
    count: usize,
    report: *mut vsgd_step_report,
) -> vsgd_result {
    guard("vsgd_optimizer_step_f64", || {
        // SAFETY: forwarded contract.
        unsafe { step_all(optimizer, params, grads, lens, count, report) }
    })
}

/// One update of every registered tensor, all with bfloat16 parameters and gradients
/// (`uint16_t` bits; `float` or bfloat16 state as registered by
/// `vsgd_optimizer_add_tensor_mixed`), each split across threads: otherwise as
/// `vsgd_optimizer_step_f32`. The update is the `float` rule over the widened values; the
/// parameter is rounded once, to nearest even; bfloat16 state is rounded stochastically (the
/// same bits for every thread count, and after a checkpoint resume).
///
/// Errors: as `vsgd_optimizer_step_f32` (`DTYPE_MISMATCH` for a tensor of another type).
///
/// # Safety
/// As `vsgd_optimizer_step_f32`; every buffer 2-byte aligned.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step_bf16(
    optimizer: *mut vsgd_optimizer,
    params: *const *mut u16,
    grads: *const *const u16,
    lens: *const usize,
    count: usize,
    report: *mut vsgd_step_report,
) -> vsgd_result {
    guard("vsgd_optimizer_step_bf16", || {
        // `bf16` is `repr(transparent)` over the `u16` of its bits.
        let (p, g) = (params.cast::<*mut bf16>(), grads.cast::<*const bf16>());
        // SAFETY: forwarded contract.
        unsafe { step_all(optimizer, p, g, lens, count, report) }
    })
}

/// `vsgd_optimizer_step_bf16` for IEEE binary16 parameters and gradients (`float` state).
///
/// # Safety
/// As `vsgd_optimizer_step_bf16`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step_f16(
    optimizer: *mut vsgd_optimizer,
    params: *const *mut u16,
    grads: *const *const u16,
    lens: *const usize,
    count: usize,
    report: *mut vsgd_step_report,
) -> vsgd_result {
    guard("vsgd_optimizer_step_f16", || {
        // `f16` is `repr(transparent)` over the `u16` of its bits.
        let (p, g) = (params.cast::<*mut f16>(), grads.cast::<*const f16>());
        // SAFETY: forwarded contract.
        unsafe { step_all(optimizer, p, g, lens, count, report) }
    })
}
