//! The handle shape: an opaque `vsgd_optimizer` owning the state of registered tensors, for
//! training loops. Parameters and gradients stay with the caller.

use core::cell::UnsafeCell;
use core::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use vsgd::{Element, GroupId, Optimizer, StepOutcome, TensorId, TensorSpec};

use crate::buffers::{
    c_str, check_buffer, check_disjoint, check_optional_out, check_out, copy_str, input, slice,
    slice_mut, write, write_slice,
};
use crate::config::{
    algorithm_to_c, config_from_c, config_to_c, dtype_from_c, dtype_to_c, policy_from_c,
    policy_to_c, schedule_from_c, vsgd_algorithm, vsgd_config, vsgd_dtype, vsgd_policy,
    vsgd_schedule, vsgd_step_outcome, VSGD_STEP_APPLIED, VSGD_STEP_SKIPPED,
};
use crate::error::{
    guard, vsgd_result, Failure, VSGD_RESULT_BUFFER_TOO_SMALL, VSGD_RESULT_HANDLE_BUSY,
    VSGD_RESULT_HANDLE_POISONED, VSGD_RESULT_UNKNOWN_TENSOR,
};

/// An optimizer owning the state (and step counters) of registered tensors, grouped into
/// parameter groups that share hyperparameters and a schedule. All groups run one algorithm.
///
/// Ownership: created by `vsgd_optimizer_new` (or from a checkpoint by `vsgd_optimizer_load`
/// / `vsgd_optimizer_load_file`), owned by the caller, released exactly once by
/// `vsgd_optimizer_free` (after which the pointer must not be used). Parameters and gradients
/// are never kept: each call reads and writes the caller's buffers only while it runs.
///
/// Thread safety: a handle may be used from any thread, but by one thread at a time. A call
/// made while another call on the same handle is running fails with
/// `VSGD_RESULT_HANDLE_BUSY` instead of racing (freeing a handle in use is still undefined).
/// Distinct handles are fully independent and may be used concurrently.
pub struct vsgd_optimizer {
    busy: AtomicBool,
    poisoned: AtomicBool,
    inner: UnsafeCell<Optimizer>,
}

#[cfg(test)]
impl vsgd_optimizer {
    /// The optimizer, for tests that compare handles.
    pub(crate) fn inner(&self) -> &Optimizer {
        // SAFETY: tests call this only while no export is running on the handle.
        unsafe { &*self.inner.get() }
    }
}

/// Exclusive use of a handle for one call; releases it on drop and poisons it if the call
/// panicked (the optimizer may be half-updated).
struct Lease<'a>(&'a vsgd_optimizer);

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Relaxed);
        }
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Runs `f` with exclusive access to the optimizer behind `h`.
///
/// # Safety
/// `h` must be NULL or a live handle from `vsgd_optimizer_new`.
pub(crate) unsafe fn with<R>(
    h: *const vsgd_optimizer,
    f: impl FnOnce(&mut Optimizer) -> Result<R, Failure>,
) -> Result<R, Failure> {
    // SAFETY: NULL is reported; otherwise a live handle (caller).
    let h = unsafe { input(h, "optimizer") }?;
    if h.busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return Err(Failure::new(
            VSGD_RESULT_HANDLE_BUSY,
            "the handle is in use by another call (one thread per handle at a time)",
        ));
    }
    let lease = Lease(h);
    if h.poisoned.load(Ordering::Relaxed) {
        return Err(Failure::new(
            VSGD_RESULT_HANDLE_POISONED,
            "a panic was caught while this handle was in use; free it",
        ));
    }
    // SAFETY: the busy flag, acquired above and released by `lease`, makes this the only
    // reference to the optimizer until `lease` drops.
    let opt = unsafe { &mut *h.inner.get() };
    let r = f(opt);
    drop(lease);
    r
}

/// What `vsgd_optimizer_step_f32` / `_f64` did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vsgd_step_report {
    /// Tensors updated.
    pub applied: usize,
    /// Tensors left untouched because their gradient was not finite (`VSGD_POLICY_SKIP`);
    /// `vsgd_optimizer_last_skipped` lists them.
    pub skipped: usize,
}

/// What is registered for a tensor (`vsgd_optimizer_tensor_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vsgd_tensor_info {
    /// Element count.
    pub len: usize,
    /// Element type (`VSGD_DTYPE_*`).
    pub dtype: vsgd_dtype,
    /// Parameter group.
    pub group: usize,
    /// Updates applied so far (skipped steps do not count).
    pub step: u64,
}

/// Creates a handle with one parameter group (group 0) configured by `*config` (validated),
/// no tensors, policy `VSGD_POLICY_SKIP`, and a constant schedule.
///
/// On success `*out` owns the new handle (release it with `vsgd_optimizer_free`). On failure
/// `*out` is set to NULL (when `out` is not NULL), so freeing it is always safe.
///
/// Errors: `VSGD_RESULT_NULL_PARAMETER`, `VSGD_RESULT_INVALID_ENUM`,
/// `VSGD_RESULT_INVALID_CONFIG`.
///
/// # Safety
/// `config` must be NULL or point at a `vsgd_config`; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_new(
    config: *const vsgd_config,
    out: *mut *mut vsgd_optimizer,
) -> vsgd_result {
    guard("vsgd_optimizer_new", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        // SAFETY: NULL or a valid vsgd_config (caller).
        let config = config_from_c(unsafe { input(config, "config") }?)?;
        let opt = Optimizer::new(config)?;
        // SAFETY: as above.
        unsafe { write(out, into_handle(opt)) };
        Ok(())
    })
}

/// A new handle owning `opt`, for the caller to release with `vsgd_optimizer_free`.
pub(crate) fn into_handle(opt: Optimizer) -> *mut vsgd_optimizer {
    Box::into_raw(Box::new(vsgd_optimizer {
        busy: AtomicBool::new(false),
        poisoned: AtomicBool::new(false),
        inner: UnsafeCell::new(opt),
    }))
}

/// Releases a handle and all the state it owns. NULL is accepted and does nothing. The
/// pointer must not be used afterwards; freeing it twice is undefined behaviour.
///
/// # Safety
/// `optimizer` must be NULL or a handle from `vsgd_optimizer_new` or `vsgd_optimizer_load*`
/// not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_free(optimizer: *mut vsgd_optimizer) {
    if optimizer.is_null() {
        return;
    }
    // SAFETY: a live handle from Box::into_raw (caller), released exactly once.
    let b = unsafe { Box::from_raw(optimizer) };
    // Dropping plain vectors does not panic, but nothing may unwind into C.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
}

/// The algorithm every group of the handle runs, into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_algorithm(
    optimizer: *const vsgd_optimizer,
    out: *mut vsgd_algorithm,
) -> vsgd_result {
    guard("vsgd_optimizer_algorithm", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let a = unsafe { with(optimizer, |o| Ok(o.algorithm())) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, algorithm_to_c(a)) };
        Ok(())
    })
}

/// Adds a parameter group configured by `*config` (same algorithm as the handle:
/// `VSGD_RESULT_ALGORITHM_MISMATCH` otherwise; validated); its index goes to `*out_group`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `config` NULL or a `vsgd_config`; `out_group`
/// NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_add_group(
    optimizer: *mut vsgd_optimizer,
    config: *const vsgd_config,
    out_group: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_add_group", || {
        check_out(out_group, "out_group")?;
        // SAFETY: NULL or a valid vsgd_config (caller).
        let config = config_from_c(unsafe { input(config, "config") }?)?;
        // SAFETY: forwarded contract.
        let g = unsafe { with(optimizer, |o| Ok(o.add_group(config)?)) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out_group, g.0) };
        Ok(())
    })
}

/// Copies group `group`'s configuration into `*out` (learning rate included).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_config(
    optimizer: *const vsgd_optimizer,
    group: usize,
    out: *mut vsgd_config,
) -> vsgd_result {
    guard("vsgd_optimizer_config", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let c = unsafe { with(optimizer, |o| Ok(*o.config(GroupId(group))?)) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, config_to_c(&c)) };
        Ok(())
    })
}

/// Replaces group `group`'s configuration (same algorithm, validated); state is kept.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `config` NULL or a `vsgd_config`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_config(
    optimizer: *mut vsgd_optimizer,
    group: usize,
    config: *const vsgd_config,
) -> vsgd_result {
    guard("vsgd_optimizer_set_config", || {
        // SAFETY: NULL or a valid vsgd_config (caller).
        let config = config_from_c(unsafe { input(config, "config") }?)?;
        // SAFETY: forwarded contract.
        unsafe { with(optimizer, |o| Ok(o.set_config(GroupId(group), config)?)) }
    })
}

/// Sets group `group`'s base learning rate (finite, ≥ 0; 0 freezes the group).
///
/// # Safety
/// `optimizer` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_lr(
    optimizer: *mut vsgd_optimizer,
    group: usize,
    lr: f64,
) -> vsgd_result {
    guard("vsgd_optimizer_set_lr", || {
        // SAFETY: forwarded contract.
        unsafe { with(optimizer, |o| Ok(o.set_lr(GroupId(group), lr)?)) }
    })
}

/// Sets group `group`'s learning-rate schedule (copied; validated).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `schedule` NULL or a `vsgd_schedule`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_schedule(
    optimizer: *mut vsgd_optimizer,
    group: usize,
    schedule: *const vsgd_schedule,
) -> vsgd_result {
    guard("vsgd_optimizer_set_schedule", || {
        // SAFETY: NULL or a valid vsgd_schedule (caller).
        let s = schedule_from_c(unsafe { input(schedule, "schedule") }?)?;
        // SAFETY: forwarded contract.
        unsafe { with(optimizer, |o| Ok(o.set_schedule(GroupId(group), s)?)) }
    })
}

/// The learning rate group `group`'s tensors get at their update number `t` (≥ 1): base
/// rate × schedule factor, into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_lr_at(
    optimizer: *const vsgd_optimizer,
    group: usize,
    t: u64,
    out: *mut f64,
) -> vsgd_result {
    guard("vsgd_optimizer_lr_at", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let lr = unsafe { with(optimizer, |o| Ok(o.lr_at(GroupId(group), t)?)) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, lr) };
        Ok(())
    })
}

/// Sets what steps do with a non-finite gradient (`VSGD_POLICY_*`; default SKIP).
///
/// # Safety
/// `optimizer` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_policy(
    optimizer: *mut vsgd_optimizer,
    policy: vsgd_policy,
) -> vsgd_result {
    guard("vsgd_optimizer_set_policy", || {
        let p = policy_from_c(policy)?;
        // SAFETY: forwarded contract.
        unsafe {
            with(optimizer, |o| {
                o.set_policy(p);
                Ok(())
            })
        }
    })
}

/// The non-finite-gradient policy, into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_policy(
    optimizer: *const vsgd_optimizer,
    out: *mut vsgd_policy,
) -> vsgd_result {
    guard("vsgd_optimizer_policy", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let p = unsafe { with(optimizer, |o| Ok(o.policy())) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, policy_to_c(p)) };
        Ok(())
    })
}

/// Registers a tensor of `len` elements of type `dtype` in group `group`, with an optional
/// `name` (copied; NULL for none). Its state starts at zero and its step counter at 0; its
/// index (0, 1, … in registration order) goes to `*out_tensor`.
///
/// Errors: `NULL_PARAMETER`, `INVALID_ENUM` (dtype), `INVALID_STRING`, `UNKNOWN_GROUP`,
/// `SHAPE_OVERFLOW`, `ALLOCATION_FAILED` (the state would exceed `PTRDIFF_MAX` bytes, or the
/// allocator refused it; nothing was added and the handle stays usable).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `name` NULL or a NUL-terminated string;
/// `out_tensor` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_add_tensor(
    optimizer: *mut vsgd_optimizer,
    len: usize,
    dtype: vsgd_dtype,
    name: *const c_char,
    group: usize,
    out_tensor: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_add_tensor", || {
        check_out(out_tensor, "out_tensor")?;
        let dtype = dtype_from_c(dtype)?;
        let name = if name.is_null() {
            None
        } else {
            // SAFETY: non-NULL and NUL-terminated (caller).
            Some(unsafe { c_str(name, "name") }?)
        };
        let shape = [len];
        let mut spec = TensorSpec::new(&shape).dtype(dtype).group(GroupId(group));
        if let Some(n) = name {
            spec = spec.name(n);
        }
        // SAFETY: forwarded contract.
        let id = unsafe { with(optimizer, |o| Ok(o.add_tensor(spec)?)) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out_tensor, id.0) };
        Ok(())
    })
}

/// The number of registered tensors, into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_num_tensors(
    optimizer: *const vsgd_optimizer,
    out: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_num_tensors", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let n = unsafe { with(optimizer, |o| Ok(o.num_tensors())) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, n) };
        Ok(())
    })
}

/// What is registered for tensor `tensor`, into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_tensor_info(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut vsgd_tensor_info,
) -> vsgd_result {
    guard("vsgd_optimizer_tensor_info", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let info = unsafe {
            with(optimizer, |o| {
                let i = o.tensor_info(TensorId(tensor))?;
                Ok(vsgd_tensor_info {
                    len: i.len,
                    dtype: dtype_to_c(i.dtype),
                    group: i.group.0,
                    step: i.step,
                })
            })
        }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, info) };
        Ok(())
    })
}

/// Copies tensor `tensor`'s name (empty if it has none) into `buf` (`len` bytes,
/// NUL-terminated), its length in bytes to `*out_len` if not NULL. Text buffer rules as
/// `vsgd_last_error` (`VSGD_RESULT_BUFFER_TOO_SMALL` when cut).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `buf` NULL or valid for `len` bytes; `out_len`
/// NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_tensor_name(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_tensor_name", || {
        // SAFETY: forwarded contract.
        let name = unsafe {
            with(optimizer, |o| {
                Ok(o.tensor_info(TensorId(tensor))?
                    .name
                    .unwrap_or("")
                    .to_string())
            })
        }?;
        check_optional_out(out_len, "out_len")?;
        // SAFETY: `buf` NULL or valid for `len` bytes, `out_len` NULL or valid for one write
        // (caller; alignment checked above).
        unsafe { copy_str(&name, buf, len, out_len) }
    })
}

/// The index of the tensor registered under `name`, into `*out`
/// (`VSGD_RESULT_UNKNOWN_TENSOR` if none).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `name` NULL or a NUL-terminated string; `out`
/// NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_find(
    optimizer: *const vsgd_optimizer,
    name: *const c_char,
    out: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_find", || {
        // SAFETY: NULL or NUL-terminated (caller).
        let name = unsafe { c_str(name, "name") }?;
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let id = unsafe { with(optimizer, |o| Ok(o.find(name))) }?.ok_or_else(|| {
            Failure::new(
                VSGD_RESULT_UNKNOWN_TENSOR,
                format!("no tensor is named '{name}'"),
            )
        })?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, id.0) };
        Ok(())
    })
}

/// Updates applied to tensor `tensor` so far (skipped steps do not count), into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step_count(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut u64,
) -> vsgd_result {
    guard("vsgd_optimizer_step_count", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let n = unsafe { with(optimizer, |o| Ok(o.step_count(TensorId(tensor))?)) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, n) };
        Ok(())
    })
}

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
        // SAFETY: forwarded contract.
        let skipped: Vec<usize> = unsafe {
            with(optimizer, |o| {
                Ok(o.last_skipped().iter().map(|t| t.0).collect())
            })
        }?;
        let n = skipped.len().min(cap);
        // SAFETY: checked by check_buffer; `cap` ≥ n writable elements (caller), possibly
        // uninitialized, so written through the pointer; `skipped` is Rust-owned (disjoint).
        unsafe { write_slice(buf, &skipped[..n]) };
        // SAFETY: checked; writable (caller); no reference to `buf` is alive.
        unsafe { write(out_count, skipped.len()) };
        if n < skipped.len() {
            return Err(Failure::new(
                VSGD_RESULT_BUFFER_TOO_SMALL,
                format!("{} tensors were skipped, buf holds {cap}", skipped.len()),
            ));
        }
        Ok(())
    })
}

/// Shared body of the `vsgd_optimizer_step_tensor_*` exports.
///
/// # Safety
/// As documented on the exports.
unsafe fn step_tensor<T: Element>(
    optimizer: *mut vsgd_optimizer,
    tensor: usize,
    param: *mut T,
    grad: *const T,
    len: usize,
    outcome: *mut vsgd_step_outcome,
) -> Result<(), Failure> {
    if !outcome.is_null() {
        check_out(outcome, "outcome")?;
    }
    let mut spans = [
        check_buffer(param, len, true, "param", None)?,
        check_buffer(grad, len, false, "grad", None)?,
    ];
    check_disjoint(&mut spans)?;
    // SAFETY: forwarded contract (handle).
    let r = unsafe {
        with(optimizer, |o| {
            // SAFETY: both buffers checked (non-NULL or empty, aligned, size) and disjoint;
            // `len` live elements each (caller).
            let (p, g) = (slice_mut(param, len), slice(grad, len));
            Ok(o.step_tensor(TensorId(tensor), p, g)?)
        })
    }?;
    if !outcome.is_null() {
        let o = match r {
            StepOutcome::Applied => VSGD_STEP_APPLIED,
            StepOutcome::Skipped => VSGD_STEP_SKIPPED,
        };
        // SAFETY: checked; writable (caller); written after the buffers' slices are gone.
        unsafe { write(outcome, o) };
    }
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

/// Shared body of the `vsgd_optimizer_step_*` exports.
///
/// # Safety
/// As documented on the exports.
unsafe fn step_all<T: Element>(
    optimizer: *mut vsgd_optimizer,
    params: *const *mut T,
    grads: *const *const T,
    lens: *const usize,
    count: usize,
    report: *mut vsgd_step_report,
) -> Result<(), Failure> {
    if !report.is_null() {
        check_out(report, "report")?;
    }
    check_buffer(params, count, false, "params", None)?;
    check_buffer(grads, count, false, "grads", None)?;
    check_buffer(lens, count, false, "lens", None)?;
    // Copy the three arrays out first: no reference to them may be alive while the element
    // buffers are borrowed (a caller could place them inside one of those buffers).
    // SAFETY: each array holds `count` readable elements (checked; caller).
    let (pv, gv, lv) = unsafe {
        (
            slice(params, count).to_vec(),
            slice(grads, count).to_vec(),
            slice(lens, count).to_vec(),
        )
    };
    let mut spans = Vec::with_capacity(2 * count);
    for i in 0..count {
        spans.push(check_buffer(pv[i], lv[i], true, "params", Some(i))?);
        spans.push(check_buffer(gv[i], lv[i], false, "grads", Some(i))?);
    }
    check_disjoint(&mut spans)?;
    // SAFETY: forwarded contract (handle).
    let r = unsafe {
        with(optimizer, |o| {
            // SAFETY: every buffer checked (non-NULL or empty, aligned, size) and no written
            // one overlaps another; `lens[i]` live elements each (caller).
            let mut ps: Vec<&mut [T]> = (0..count).map(|i| slice_mut(pv[i], lv[i])).collect();
            let gs: Vec<&[T]> = (0..count).map(|i| slice(gv[i], lv[i])).collect();
            Ok(o.step(&mut ps, &gs)?)
        })
    }?;
    if !report.is_null() {
        // SAFETY: checked; writable (caller); written after the buffers' slices are gone.
        unsafe {
            write(
                report,
                vsgd_step_report {
                    applied: r.applied,
                    skipped: r.skipped,
                },
            )
        };
    }
    Ok(())
}

/// One update of every registered tensor (all `VSGD_DTYPE_F32`), in registration order:
/// `params[i]` (written) and `grads[i]` (read) hold `lens[i]` elements, tensor i's length;
/// `count` must equal the number of tensors. Every tensor is checked before any is touched,
/// so on error nothing changes. Tensors with a non-finite gradient under `VSGD_POLICY_SKIP`
/// are left untouched and counted in `report->skipped`
/// (see `vsgd_optimizer_last_skipped`); `report` may be NULL.
///
/// Errors: as `vsgd_optimizer_step_tensor_f32`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `params`, `grads`, `lens` NULL or `count`
/// readable elements; each `params[i]`/`grads[i]` NULL or `lens[i]` live elements; `report`
/// NULL or valid for one write.
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

/// Shared body of the state read-outs.
///
/// # Safety
/// As documented on the exports.
unsafe fn copy_state<T: Element>(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    name: *const c_char,
    out: *mut T,
    len: usize,
) -> Result<(), Failure> {
    // SAFETY: NULL or NUL-terminated (caller).
    let name = unsafe { c_str(name, "name") }?;
    check_buffer(out, len, true, "out", None)?;
    // SAFETY: forwarded contract (handle).
    unsafe {
        with(optimizer, |o| {
            let s = o.state::<T>(TensorId(tensor), name)?;
            if s.len() != len {
                return Err(vsgd::Error::LengthMismatch {
                    what: "out",
                    expected: s.len(),
                    got: len,
                }
                .into());
            }
            // SAFETY: checked by check_buffer; `len` writable elements (caller), possibly
            // uninitialized, so written through the pointer. The handle's state is
            // Rust-owned, so it cannot overlap the caller's buffer.
            write_slice(out, s);
            Ok(())
        })
    }
}

/// Copies state array `name` (see `vsgd_state_name`) of tensor `tensor` (a
/// `VSGD_DTYPE_F32` tensor) into `out`, which holds `len` elements, the tensor's length.
///
/// Errors: `NULL_PARAMETER`, `INVALID_STRING`, `UNKNOWN_TENSOR`, `UNKNOWN_STATE_ARRAY`,
/// `DTYPE_MISMATCH`, `LENGTH_MISMATCH`, `MISALIGNED_BUFFER`, `HANDLE_BUSY`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `name` NULL or a NUL-terminated string; `out`
/// NULL or valid for `len` writes.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_state_f32(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    name: *const c_char,
    out: *mut f32,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_state_f32", || {
        // SAFETY: forwarded contract.
        unsafe { copy_state(optimizer, tensor, name, out, len) }
    })
}

/// `vsgd_optimizer_state_f32` for a `VSGD_DTYPE_F64` tensor.
///
/// # Safety
/// As `vsgd_optimizer_state_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_state_f64(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    name: *const c_char,
    out: *mut f64,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_state_f64", || {
        // SAFETY: forwarded contract.
        unsafe { copy_state(optimizer, tensor, name, out, len) }
    })
}

/// Shared body of the effective-momentum read-outs.
///
/// # Safety
/// As documented on the exports.
unsafe fn momentum<T: Element>(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut T,
    len: usize,
) -> Result<(), Failure> {
    check_buffer(out, len, true, "out", None)?;
    // SAFETY: forwarded contract (handle).
    unsafe {
        with(optimizer, |o| {
            let id = TensorId(tensor);
            if o.algorithm() != vsgd::Algorithm::Vsgd {
                // The core reports the algorithm mismatch before looking at anything else.
                return Ok(o.effective_momentum::<T>(id, &mut [])?);
            }
            let want = o.state::<T>(id, "bg")?.len();
            if want != len {
                return Err(vsgd::Error::LengthMismatch {
                    what: "out",
                    expected: want,
                    got: len,
                }
                .into());
            }
            // `out` may be uninitialized, so no `&mut [T]` over it: the core computes into a
            // Rust buffer, copied out only on success (a failed call writes nothing).
            let mut tmp = Vec::new();
            if tmp.try_reserve_exact(len).is_err() {
                return Err(vsgd::Error::AllocationFailed {
                    bytes: len.saturating_mul(core::mem::size_of::<T>()),
                }
                .into());
            }
            tmp.resize(len, T::ZERO);
            o.effective_momentum(id, &mut tmp)?;
            // SAFETY: checked by check_buffer; `len` writable elements (caller); `tmp` is
            // Rust-owned, so disjoint from it.
            write_slice(out, &tmp);
            Ok(())
        })
    }
}

/// VSGD's effective momentum `bhg / (bg + bhg)` per element of tensor `tensor` (a
/// `VSGD_DTYPE_F32` tensor) into `out` (`len` elements, the tensor's length): the weight the
/// previous mean gets when the next gradient arrives. Only for VSGD handles
/// (`VSGD_RESULT_ALGORITHM_MISMATCH` otherwise). NaN before the first step (0/0).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for `len` writes.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_effective_momentum_f32(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut f32,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_effective_momentum_f32", || {
        // SAFETY: forwarded contract.
        unsafe { momentum(optimizer, tensor, out, len) }
    })
}

/// `vsgd_optimizer_effective_momentum_f32` for a `VSGD_DTYPE_F64` tensor.
///
/// # Safety
/// As `vsgd_optimizer_effective_momentum_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_effective_momentum_f64(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut f64,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_effective_momentum_f64", || {
        // SAFETY: forwarded contract.
        unsafe { momentum(optimizer, tensor, out, len) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{VSGD_ALGORITHM_VSGD, VSGD_DTYPE_F32};
    use crate::error::*;

    fn new(algorithm: u32) -> *mut vsgd_optimizer {
        let mut c = core::mem::MaybeUninit::<vsgd_config>::uninit();
        let mut h = core::ptr::null_mut();
        // SAFETY: valid out pointers.
        unsafe {
            assert_eq!(
                crate::config::vsgd_config_default(algorithm, c.as_mut_ptr()),
                VSGD_RESULT_OK
            );
            assert_eq!(vsgd_optimizer_new(c.as_ptr(), &mut h), VSGD_RESULT_OK);
        }
        h
    }

    #[test]
    fn busy_and_poisoned_handles_refuse_calls() {
        let h = new(VSGD_ALGORITHM_VSGD);
        let mut n = 7usize;
        // SAFETY: h is live; simulate another thread inside a call.
        unsafe {
            (*h).busy.store(true, Ordering::SeqCst);
            assert_eq!(
                vsgd_optimizer_num_tensors(h, &mut n),
                VSGD_RESULT_HANDLE_BUSY
            );
            (*h).busy.store(false, Ordering::SeqCst);
            assert_eq!(vsgd_optimizer_num_tensors(h, &mut n), VSGD_RESULT_OK);
            assert_eq!(n, 0);
        }
        // A panic inside a call poisons the handle; the panic itself becomes a code.
        let r = guard("vsgd_test", || {
            // SAFETY: h is live.
            unsafe { with(h, |_| -> Result<(), Failure> { panic!("inside") }) }
        });
        assert_eq!(r, VSGD_RESULT_PANIC);
        // SAFETY: h is live (poisoned, still allocated).
        unsafe {
            assert_eq!(
                vsgd_optimizer_num_tensors(h, &mut n),
                VSGD_RESULT_HANDLE_POISONED
            );
            vsgd_optimizer_free(h);
            vsgd_optimizer_free(core::ptr::null_mut());
        }
    }

    #[test]
    fn new_clears_out_on_failure() {
        let mut c = core::mem::MaybeUninit::<vsgd_config>::uninit();
        let mut h = core::ptr::NonNull::<vsgd_optimizer>::dangling().as_ptr();
        // SAFETY: valid pointers.
        unsafe {
            crate::config::vsgd_config_default(VSGD_ALGORITHM_VSGD, c.as_mut_ptr());
            let mut c = c.assume_init();
            c.params.vsgd.lr = -1.0;
            assert_eq!(vsgd_optimizer_new(&c, &mut h), VSGD_RESULT_INVALID_CONFIG);
        }
        assert!(h.is_null());
    }

    #[test]
    fn step_all_refuses_aliasing_across_tensors() {
        let h = new(VSGD_ALGORITHM_VSGD);
        let mut id = 0;
        let mut buf = [1.0f32; 8];
        let g = [0.5f32; 4];
        // SAFETY: live handle; buffers valid; params[1] overlaps params[0] on purpose.
        unsafe {
            for _ in 0..2 {
                assert_eq!(
                    vsgd_optimizer_add_tensor(h, 4, VSGD_DTYPE_F32, core::ptr::null(), 0, &mut id),
                    VSGD_RESULT_OK
                );
            }
            let base = buf.as_mut_ptr();
            let params = [base, base.add(2)];
            let grads = [g.as_ptr(), g.as_ptr()];
            let lens = [4usize, 4];
            let r = vsgd_optimizer_step_f32(
                h,
                params.as_ptr(),
                grads.as_ptr(),
                lens.as_ptr(),
                2,
                core::ptr::null_mut(),
            );
            assert_eq!(r, VSGD_RESULT_OVERLAPPING_BUFFERS);
            // Shared gradients are fine.
            let base = buf.as_mut_ptr();
            let params = [base, base.add(4)];
            let r = vsgd_optimizer_step_f32(
                h,
                params.as_ptr(),
                grads.as_ptr(),
                lens.as_ptr(),
                2,
                core::ptr::null_mut(),
            );
            assert_eq!(r, VSGD_RESULT_OK);
            vsgd_optimizer_free(h);
        }
        assert!(buf.iter().all(|&x| x < 1.0));
    }

    #[test]
    fn outputs_may_be_uninitialized_and_may_overlap() {
        use core::mem::MaybeUninit;
        let h = new(VSGD_ALGORITHM_VSGD);
        let mut id = 0;
        // SAFETY: live handle; every buffer below is valid for the lengths given. The output
        // buffers are uninitialized on purpose (like fresh malloc memory): under Miri a
        // `&mut [f32]` over them, or a reference alive while an overlapping output is
        // written, is reported.
        unsafe {
            let name = c"w".as_ptr();
            assert_eq!(
                vsgd_optimizer_add_tensor(h, 4, VSGD_DTYPE_F32, name, 0, &mut id),
                VSGD_RESULT_OK
            );
            let mut p = [1.0f32; 4];
            let g = [0.5f32; 4];
            assert_eq!(
                vsgd_optimizer_step_tensor_f32(
                    h,
                    0,
                    p.as_mut_ptr(),
                    g.as_ptr(),
                    4,
                    core::ptr::null_mut()
                ),
                VSGD_RESULT_OK
            );

            let mut st = [MaybeUninit::<f32>::uninit(); 4];
            let out = st.as_mut_ptr().cast::<f32>();
            assert_eq!(
                vsgd_optimizer_state_f32(h, 0, c"mug".as_ptr(), out, 4),
                VSGD_RESULT_OK
            );
            let mug: [f32; 4] = core::array::from_fn(|i| st[i].assume_init());
            assert!(mug.iter().all(|x| x.is_finite() && *x != 0.0));

            let mut em = [MaybeUninit::<f32>::uninit(); 4];
            let out = em.as_mut_ptr().cast::<f32>();
            // A wrong length writes nothing and is reported.
            assert_eq!(
                vsgd_optimizer_effective_momentum_f32(h, 0, out, 3),
                VSGD_RESULT_LENGTH_MISMATCH
            );
            assert_eq!(
                vsgd_optimizer_effective_momentum_f32(h, 0, out, 4),
                VSGD_RESULT_OK
            );
            let em: [f32; 4] = core::array::from_fn(|i| em[i].assume_init());
            assert!(em.iter().all(|x| *x > 0.0 && *x < 1.0));

            let mut sk = [MaybeUninit::<usize>::uninit(); 2];
            let mut count = 9;
            assert_eq!(
                vsgd_optimizer_last_skipped(h, sk.as_mut_ptr().cast(), 2, &mut count),
                VSGD_RESULT_OK
            );
            assert_eq!(count, 0);

            // `out_len` over the first bytes of `buf`: the text is written, then the length
            // over it (the length wins); no reference to either is alive meanwhile.
            let mut text = [MaybeUninit::<usize>::uninit(); 32];
            let bytes = core::mem::size_of_val(&text);
            let base = text.as_mut_ptr().cast::<usize>();
            let r = vsgd_optimizer_tensor_name(h, 0, base.cast::<c_char>(), bytes, base);
            assert_eq!(r, VSGD_RESULT_OK);
            assert_eq!(*base, 1);
            let r = crate::error::vsgd_last_error(base.cast::<c_char>(), bytes, base);
            assert_eq!(r, VSGD_RESULT_OK);
            let n = *base;
            let w = core::mem::size_of::<usize>();
            assert!(n > w && n < bytes);
            let tail = core::slice::from_raw_parts(base.cast::<u8>().add(w), n - w);
            let full = b"vsgd_optimizer_effective_momentum_f32: ";
            assert!(full[w..].iter().zip(tail).all(|(a, b)| a == b));

            vsgd_optimizer_free(h);
        }
    }
}
