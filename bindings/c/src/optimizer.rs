//! The handle shape: an opaque `vsgd_optimizer` owning the state of registered tensors, for
//! training loops. Parameters and gradients stay with the caller.

use core::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

use vsgd::{GroupId, Optimizer};

use crate::buffers::{check_out, input, write};
use crate::config::{
    algorithm_to_c, clock_from_c, clock_to_c, config_arg, config_handle, policy_from_c,
    policy_to_c, schedule_arg, schedule_handle, try_box, vsgd_algorithm, vsgd_config, vsgd_policy,
    vsgd_schedule, vsgd_schedule_clock,
};
use crate::error::{
    guard, vsgd_result, Failure, VSGD_RESULT_HANDLE_BUSY, VSGD_RESULT_HANDLE_POISONED,
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

/// Creates a handle with one parameter group (group 0) configured by `*config` (validated;
/// copied, so the configuration may be freed right after), no tensors, policy
/// `VSGD_POLICY_SKIP`, a constant schedule, and as many threads as the machine has cores
/// (`vsgd_optimizer_set_threads`).
///
/// On success `*out` owns the new handle (release it with `vsgd_optimizer_free`). On failure
/// `*out` is set to NULL (when `out` is not NULL), so freeing it is always safe.
///
/// Errors: `NULL_PARAMETER`, `INVALID_CONFIG`, `ALLOCATION_FAILED`.
///
/// # Safety
/// `config` must be NULL or a live configuration; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_new(
    config: *const vsgd_config,
    out: *mut *mut vsgd_optimizer,
) -> vsgd_result {
    guard("vsgd_optimizer_new", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        // SAFETY: NULL or a live configuration (caller).
        let config = unsafe { config_arg(config) }?;
        let opt = Optimizer::new(config)?;
        let h = into_handle(opt)?;
        // SAFETY: as above.
        unsafe { write(out, h) };
        Ok(())
    })
}

/// A new handle owning `opt`, for the caller to release with `vsgd_optimizer_free`.
pub(crate) fn into_handle(opt: Optimizer) -> Result<*mut vsgd_optimizer, Failure> {
    try_box(vsgd_optimizer {
        busy: AtomicBool::new(false),
        poisoned: AtomicBool::new(false),
        inner: UnsafeCell::new(opt),
    })
}

/// Releases a handle and all the state it owns. NULL is accepted and does nothing. The
/// pointer must not be used afterwards; freeing it twice is undefined behaviour.
///
/// # Safety
/// `optimizer` must be NULL or a handle from `vsgd_optimizer_new` or `vsgd_optimizer_load*`
/// not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_free(optimizer: *mut vsgd_optimizer) {
    // SAFETY: NULL or a live handle from into_handle (caller), released exactly once.
    // Dropping it joins the worker threads (or, in a forked child, leaks the parent's).
    unsafe { crate::config::free_box(optimizer) }
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
/// `VSGD_RESULT_ALGORITHM_MISMATCH` otherwise; validated; copied) with a constant schedule;
/// its index (1, 2, … in order) goes to `*out_group`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `config` NULL or a live configuration;
/// `out_group` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_add_group(
    optimizer: *mut vsgd_optimizer,
    config: *const vsgd_config,
    out_group: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_add_group", || {
        check_out(out_group, "out_group")?;
        // SAFETY: NULL or a live configuration (caller).
        let config = unsafe { config_arg(config) }?;
        // SAFETY: forwarded contract.
        let g = unsafe { with(optimizer, |o| Ok(o.add_group(config)?)) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out_group, g.0) };
        Ok(())
    })
}

/// A new configuration equal to group `group`'s (learning rate included) into `*out`, owned
/// by the caller (release with `vsgd_config_free`). On failure `*out` is set to NULL (when
/// `out` is not NULL).
///
/// Errors: `NULL_PARAMETER`, `UNKNOWN_GROUP`, `ALLOCATION_FAILED`, `HANDLE_BUSY`,
/// `HANDLE_POISONED`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_config(
    optimizer: *const vsgd_optimizer,
    group: usize,
    out: *mut *mut vsgd_config,
) -> vsgd_result {
    guard("vsgd_optimizer_config", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        // SAFETY: forwarded contract.
        let c = unsafe { with(optimizer, |o| Ok(*o.config(GroupId(group))?)) }?;
        let h = config_handle(c)?;
        // SAFETY: as above.
        unsafe { write(out, h) };
        Ok(())
    })
}

/// The number of parameter groups (1 + those added by `vsgd_optimizer_add_group`), into
/// `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_num_groups(
    optimizer: *const vsgd_optimizer,
    out: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_num_groups", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let n = unsafe { with(optimizer, |o| Ok(o.num_groups())) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, n) };
        Ok(())
    })
}

/// Replaces group `group`'s configuration (same algorithm, validated, copied); state is
/// kept.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `config` NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_config(
    optimizer: *mut vsgd_optimizer,
    group: usize,
    config: *const vsgd_config,
) -> vsgd_result {
    guard("vsgd_optimizer_set_config", || {
        // SAFETY: NULL or a live configuration (caller).
        let config = unsafe { config_arg(config) }?;
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

/// Sets group `group`'s learning-rate schedule (validated; copied, so the schedule may be
/// freed right after). It is evaluated at each tensor's own update number.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `schedule` NULL or a live schedule.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_schedule(
    optimizer: *mut vsgd_optimizer,
    group: usize,
    schedule: *const vsgd_schedule,
) -> vsgd_result {
    guard("vsgd_optimizer_set_schedule", || {
        // SAFETY: NULL or a live schedule (caller).
        let s = unsafe { schedule_arg(schedule) }?;
        // SAFETY: forwarded contract.
        unsafe { with(optimizer, |o| Ok(o.set_schedule(GroupId(group), s)?)) }
    })
}

/// A new schedule equal to group `group`'s into `*out`, owned by the caller (release with
/// `vsgd_schedule_free`). On failure `*out` is set to NULL (when `out` is not NULL).
///
/// Errors: `NULL_PARAMETER`, `UNKNOWN_GROUP`, `ALLOCATION_FAILED`, `HANDLE_BUSY`,
/// `HANDLE_POISONED`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_schedule(
    optimizer: *const vsgd_optimizer,
    group: usize,
    out: *mut *mut vsgd_schedule,
) -> vsgd_result {
    guard("vsgd_optimizer_schedule", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        // SAFETY: forwarded contract.
        let s = unsafe { with(optimizer, |o| Ok(*o.schedule(GroupId(group))?)) }?;
        let h = schedule_handle(s)?;
        // SAFETY: as above.
        unsafe { write(out, h) };
        Ok(())
    })
}

/// The learning rate group `group`'s tensors get at their update number `t` (≥ 1): base
/// rate × schedule factor, into `*out`.
///
/// Errors: `NULL_PARAMETER`, `INVALID_STEP` (t = 0), `UNKNOWN_GROUP`, `HANDLE_BUSY`,
/// `HANDLE_POISONED`.
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
        if t == 0 {
            return Err(vsgd::Error::InvalidStep { step: 0 }.into());
        }
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

/// Sets what the schedules' step number is (`VSGD_CLOCK_*`): each tensor's own update count
/// (`VSGD_CLOCK_PER_TENSOR`, the default) or one global step of the handle
/// (`VSGD_CLOCK_GLOBAL`: the next `vsgd_optimizer_step_*` call evaluates every group's schedule
/// at `vsgd_optimizer_global_step` + 1, and each successful call advances it). The update
/// rules' own step number (bias corrections) is always the tensor's. Checkpoints keep the clock
/// and the global step.
///
/// # Safety
/// `optimizer` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_schedule_clock(
    optimizer: *mut vsgd_optimizer,
    clock: vsgd_schedule_clock,
) -> vsgd_result {
    guard("vsgd_optimizer_set_schedule_clock", || {
        let c = clock_from_c(clock)?;
        // SAFETY: forwarded contract.
        unsafe {
            with(optimizer, |o| {
                o.set_schedule_clock(c);
                Ok(())
            })
        }
    })
}

/// The schedule clock (`VSGD_CLOCK_*`), into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_schedule_clock(
    optimizer: *const vsgd_optimizer,
    out: *mut vsgd_schedule_clock,
) -> vsgd_result {
    guard("vsgd_optimizer_schedule_clock", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let c = unsafe { with(optimizer, |o| Ok(o.schedule_clock())) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, clock_to_c(c)) };
        Ok(())
    })
}

/// The global step: successful `vsgd_optimizer_step_f32`/`_f64` calls made while the clock was
/// `VSGD_CLOCK_GLOBAL` (0 under the default clock), into `*out`. A loop of
/// `vsgd_optimizer_step_tensor_*` calls, which do not advance it, advances it with
/// `vsgd_optimizer_set_global_step`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_global_step(
    optimizer: *const vsgd_optimizer,
    out: *mut u64,
) -> vsgd_result {
    guard("vsgd_optimizer_global_step", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let n = unsafe { with(optimizer, |o| Ok(o.global_step())) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, n) };
        Ok(())
    })
}

/// Sets the global step (resuming a count kept elsewhere, or advancing it by hand).
///
/// # Safety
/// `optimizer` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_global_step(
    optimizer: *mut vsgd_optimizer,
    step: u64,
) -> vsgd_result {
    guard("vsgd_optimizer_set_global_step", || {
        // SAFETY: forwarded contract.
        unsafe {
            with(optimizer, |o| {
                o.set_global_step(step);
                Ok(())
            })
        }
    })
}

/// Turns on gradient clipping by global norm (torch's `clip_grad_norm_`, optax's
/// `clip_by_global_norm`) with maximum `max_norm` (finite, > 0), or off with 0. Each
/// `vsgd_optimizer_step_*` then computes the L2 norm of all the gradients it applies (in
/// double, in a fixed order: the same bits for every thread count) and, when it exceeds
/// `max_norm`, multiplies every gradient by `max_norm / (norm + 1e-6)` first. Skipped and
/// frozen tensors are not counted; `vsgd_optimizer_step_tensor_*` clips by its one tensor's
/// norm. Checkpoints keep the setting.
///
/// Errors: `NULL_PARAMETER`, `INVALID_CLIP_NORM` (negative, NaN or infinite),
/// `HANDLE_BUSY`, `HANDLE_POISONED`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_clip_norm(
    optimizer: *mut vsgd_optimizer,
    max_norm: f64,
) -> vsgd_result {
    guard("vsgd_optimizer_set_clip_norm", || {
        let m = if max_norm == 0.0 {
            None
        } else {
            Some(max_norm)
        };
        // SAFETY: forwarded contract.
        unsafe { with(optimizer, |o| Ok(o.set_clip_norm(m)?)) }
    })
}

/// The maximum gradient norm of `vsgd_optimizer_set_clip_norm` (0 when clipping is off),
/// into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_clip_norm(
    optimizer: *const vsgd_optimizer,
    out: *mut f64,
) -> vsgd_result {
    guard("vsgd_optimizer_clip_norm", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let m = unsafe { with(optimizer, |o| Ok(o.clip_norm().unwrap_or(0.0))) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, m) };
        Ok(())
    })
}

/// The global gradient norm the last step computed (with clipping on, before scaling), into
/// `*out`; NaN when the last step computed none (clipping off, or no step yet).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_last_grad_norm(
    optimizer: *const vsgd_optimizer,
    out: *mut f64,
) -> vsgd_result {
    guard("vsgd_optimizer_last_grad_norm", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let n = unsafe { with(optimizer, |o| Ok(o.last_grad_norm().unwrap_or(f64::NAN))) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, n) };
        Ok(())
    })
}

/// Sets how many threads the handle's steps use: 1 runs every step on the calling thread
/// (for a host that has its own thread pool), 0 means as many as the machine has cores (the
/// default). The worker threads are started here, not during a step. The results are the
/// same bits for every thread count. A process forked after the workers started gets its own
/// workers at its next step.
///
/// # Safety
/// `optimizer` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_set_threads(
    optimizer: *mut vsgd_optimizer,
    threads: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_set_threads", || {
        // SAFETY: forwarded contract.
        unsafe {
            with(optimizer, |o| {
                o.set_threads(threads);
                Ok(())
            })
        }
    })
}

/// The number of threads the handle's steps may use (the cores of the machine when set to
/// 0, clamped to the implementation's limit), into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_threads(
    optimizer: *const vsgd_optimizer,
    out: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_threads", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let n = unsafe { with(optimizer, |o| Ok(o.threads())) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, n) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use core::ffi::c_char;

    fn new(algorithm: u32) -> *mut vsgd_optimizer {
        let mut c = core::ptr::null_mut();
        let mut h = core::ptr::null_mut();
        // SAFETY: valid out pointers.
        unsafe {
            assert_eq!(vsgd_config_new(algorithm, &mut c), VSGD_RESULT_OK);
            assert_eq!(vsgd_optimizer_new(c, &mut h), VSGD_RESULT_OK);
            vsgd_config_free(c);
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
        let mut c = core::ptr::null_mut();
        let mut h = core::ptr::NonNull::<vsgd_optimizer>::dangling().as_ptr();
        // SAFETY: valid pointers.
        unsafe {
            vsgd_config_new(VSGD_ALGORITHM_VSGD, &mut c);
            assert_eq!(vsgd_config_set(c, c"lr".as_ptr(), -1.0), VSGD_RESULT_OK);
            assert_eq!(vsgd_optimizer_new(c, &mut h), VSGD_RESULT_INVALID_CONFIG);
            vsgd_config_free(c);
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
                    vsgd_optimizer_add_tensor(
                        h,
                        &4,
                        1,
                        VSGD_DTYPE_F32,
                        core::ptr::null(),
                        0,
                        &mut id
                    ),
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
                vsgd_optimizer_add_tensor(h, &4, 1, VSGD_DTYPE_F32, name, 0, &mut id),
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
