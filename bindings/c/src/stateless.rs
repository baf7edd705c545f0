//! The stateless shape: one step of one tensor (or any contiguous shard of it) over
//! caller-owned buffers, for XLA custom calls, GPU streams and sharded (ZeRO-style) state.

use core::ffi::c_char;

use vsgd::{kernels, Element, StepOutcome};

use crate::buffers::{check_buffer, check_disjoint, check_out, input, slice, slice_mut, write};
use crate::config::{
    algorithm_from_c, config_from_c, policy_from_c, vsgd_algorithm, vsgd_config, vsgd_policy,
    vsgd_step_outcome, VSGD_STEP_APPLIED, VSGD_STEP_SKIPPED,
};
use crate::error::{guard, vsgd_result, Failure, VSGD_RESULT_STATE_COUNT};

/// The most state arrays any algorithm keeps (VSGD: 3).
pub const VSGD_MAX_STATE_COUNT: usize = 3;

/// How many state arrays `algorithm` keeps per tensor (VSGD 3, Constant VSGD 2, Adam and
/// AdamW 2, SGDM 1), into `*out`. Each array is as long as the parameter.
///
/// Errors: `VSGD_RESULT_NULL_PARAMETER`, `VSGD_RESULT_INVALID_ENUM`.
///
/// # Safety
/// `out` must be NULL or valid for writing one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_state_count(
    algorithm: vsgd_algorithm,
    out: *mut usize,
) -> vsgd_result {
    guard("vsgd_state_count", || {
        check_out(out, "out")?;
        let a = algorithm_from_c(algorithm)?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, a.state_count()) };
        Ok(())
    })
}

/// The name of state array `index` of `algorithm` (VSGD: `"mug"`, `"bg"`, `"bhg"`; Constant
/// VSGD: `"mug"`, `"b"`; Adam/AdamW: `"m"`, `"v"`; SGDM: `"momentum"`), in the order the
/// kernels take them, as a static NUL-terminated string into `*out` (never free it).
///
/// Errors: `VSGD_RESULT_NULL_PARAMETER`, `VSGD_RESULT_INVALID_ENUM`,
/// `VSGD_RESULT_STATE_COUNT` (`index` ≥ the algorithm's state count).
///
/// # Safety
/// `out` must be NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn vsgd_state_name(
    algorithm: vsgd_algorithm,
    index: usize,
    out: *mut *const c_char,
) -> vsgd_result {
    guard("vsgd_state_name", || {
        check_out(out, "out")?;
        let a = algorithm_from_c(algorithm)?;
        let names: &[&core::ffi::CStr] = match a {
            vsgd::Algorithm::Vsgd => &[c"mug", c"bg", c"bhg"],
            vsgd::Algorithm::ConstantVsgd => &[c"mug", c"b"],
            vsgd::Algorithm::Adam | vsgd::Algorithm::AdamW => &[c"m", c"v"],
            vsgd::Algorithm::Sgdm => &[c"momentum"],
        };
        debug_assert_eq!(names.len(), a.state_count());
        let name = names.get(index).ok_or_else(|| {
            Failure::new(
                VSGD_RESULT_STATE_COUNT,
                format!("{a} has {} state arrays, index {index} asked", names.len()),
            )
        })?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, name.as_ptr()) };
        Ok(())
    })
}

/// Shared body of `vsgd_step_f32` / `vsgd_step_f64`.
///
/// # Safety
/// As documented on the exports.
#[allow(clippy::too_many_arguments)]
unsafe fn step<T: Element>(
    config: *const vsgd_config,
    t: u64,
    lr: f64,
    param: *mut T,
    grad: *const T,
    len: usize,
    state: *const *mut T,
    state_count: usize,
    policy: vsgd_policy,
    outcome: *mut vsgd_step_outcome,
) -> Result<(), Failure> {
    // SAFETY: NULL or a valid vsgd_config (caller); copied into a Rust value at once.
    let config = config_from_c(unsafe { input(config, "config") }?)?;
    let policy = policy_from_c(policy)?;
    if !outcome.is_null() {
        check_out(outcome, "outcome")?;
    }
    let need = config.algorithm().state_count();
    if state_count != need {
        return Err(vsgd::Error::StateCount {
            expected: need,
            got: state_count,
        }
        .into());
    }
    check_buffer(state, state_count, false, "state", None)?;
    let mut ptrs = [core::ptr::null_mut::<T>(); VSGD_MAX_STATE_COUNT];
    // SAFETY: `state` holds `state_count` ≤ 3 readable pointers (checked non-NULL and aligned
    // above; readable by the caller's contract). Copied out so no reference to the pointer
    // array outlives this line.
    ptrs[..state_count].copy_from_slice(unsafe { slice(state, state_count) });
    let mut spans = [check_buffer(param, len, true, "param", None)?; 2 + VSGD_MAX_STATE_COUNT];
    spans[1] = check_buffer(grad, len, false, "grad", None)?;
    for (j, &p) in ptrs[..state_count].iter().enumerate() {
        spans[2 + j] = check_buffer(p, len, true, "state", Some(j))?;
    }
    check_disjoint(&mut spans[..2 + state_count])?;
    let result = {
        // SAFETY: every buffer is non-NULL (or empty), aligned, fits in isize, and no written
        // buffer overlaps another (checked above); each holds `len` elements (caller).
        let param = unsafe { slice_mut(param, len) };
        // SAFETY: as above; `grad` is only read.
        let grad = unsafe { slice(grad, len) };
        // SAFETY: as above, for each state array actually passed (the others are NULL
        // with length 0, i.e. empty).
        let mut arrays: [&mut [T]; VSGD_MAX_STATE_COUNT] = unsafe {
            [
                slice_mut(ptrs[0], if state_count > 0 { len } else { 0 }),
                slice_mut(ptrs[1], if state_count > 1 { len } else { 0 }),
                slice_mut(ptrs[2], if state_count > 2 { len } else { 0 }),
            ]
        };
        kernels::step(
            &config,
            t,
            lr,
            param,
            grad,
            &mut arrays[..state_count],
            policy,
        )?
    };
    if !outcome.is_null() {
        let o = match result {
            StepOutcome::Applied => VSGD_STEP_APPLIED,
            StepOutcome::Skipped => VSGD_STEP_SKIPPED,
        };
        // SAFETY: checked above; the slices that could alias it are gone (they would have
        // failed nothing, but the outcome is written only after the step).
        unsafe { write(outcome, o) };
    }
    Ok(())
}

/// One step of one `float` tensor (or of any contiguous shard of it, with the matching shards
/// of its state) over caller-owned buffers. The same bits as the Rust API
/// (`vsgd::kernels::step`) and as a handle's step.
///
/// - `config`: the algorithm and hyperparameters (validated on every call; `lr` in it is not
///   used, the `lr` argument is).
/// - `t`: the number of this update, 1 for the first. The caller keeps the counter and
///   advances it only when `*outcome` is `VSGD_STEP_APPLIED`.
/// - `lr`: this step's learning rate (apply any schedule yourself), finite and ≥ 0.
/// - `param` (written), `grad` (read): `len` elements each.
/// - `state`: an array of `state_count` pointers (`vsgd_state_count`), each to `len`
///   elements, in the order of `vsgd_state_name`, all zero before the first step (written).
/// - `policy`: what to do with a non-finite gradient (`VSGD_POLICY_*`).
/// - `outcome`: if not NULL, receives `VSGD_STEP_APPLIED` or `VSGD_STEP_SKIPPED`.
///
/// Buffers may be NULL only when `len` is 0. No written buffer may overlap another.
/// Nothing is modified when an error is returned. Reentrant: calls on disjoint buffers may run
/// on any number of threads at once.
///
/// Errors: `NULL_PARAMETER`, `MISALIGNED_BUFFER`, `OVERLAPPING_BUFFERS`, `BUFFER_TOO_LARGE`,
/// `INVALID_ENUM`, `INVALID_CONFIG`, `INVALID_LEARNING_RATE`, `INVALID_STEP` (t = 0),
/// `STATE_COUNT`, `NON_FINITE_GRADIENT` (with `VSGD_POLICY_ERROR`).
///
/// # Safety
/// Each non-NULL pointer must point at as many live elements as stated, not used by another
/// thread during the call.
#[no_mangle]
pub unsafe extern "C" fn vsgd_step_f32(
    config: *const vsgd_config,
    t: u64,
    lr: f64,
    param: *mut f32,
    grad: *const f32,
    len: usize,
    state: *const *mut f32,
    state_count: usize,
    policy: vsgd_policy,
    outcome: *mut vsgd_step_outcome,
) -> vsgd_result {
    guard("vsgd_step_f32", || {
        // SAFETY: forwarded contract.
        unsafe {
            step(
                config,
                t,
                lr,
                param,
                grad,
                len,
                state,
                state_count,
                policy,
                outcome,
            )
        }
    })
}

/// `vsgd_step_f32` for `double` buffers.
///
/// # Safety
/// As `vsgd_step_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_step_f64(
    config: *const vsgd_config,
    t: u64,
    lr: f64,
    param: *mut f64,
    grad: *const f64,
    len: usize,
    state: *const *mut f64,
    state_count: usize,
    policy: vsgd_policy,
    outcome: *mut vsgd_step_outcome,
) -> vsgd_result {
    guard("vsgd_step_f64", || {
        // SAFETY: forwarded contract.
        unsafe {
            step(
                config,
                t,
                lr,
                param,
                grad,
                len,
                state,
                state_count,
                policy,
                outcome,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{config_to_c, VSGD_POLICY_SKIP};
    use crate::error::*;
    use vsgd::{Algorithm, Config, NonFinitePolicy};

    #[test]
    fn same_bits_as_the_rust_kernel() {
        for a in Algorithm::ALL {
            // Miri cannot run libm's inline-assembly `sqrt`, which Adam's bias correction uses;
            // the other algorithms still walk every pointer path of the export under Miri.
            if cfg!(miri) && matches!(a, Algorithm::Adam | Algorithm::AdamW) {
                continue;
            }
            let config = Config::default_for(a);
            let c = config_to_c(&config);
            let k = a.state_count();
            let n = 7;
            let mut p_c: Vec<f32> = (0..n).map(|i| i as f32 * 0.3 - 1.0).collect();
            let mut p_r = p_c.clone();
            let mut s_c = vec![vec![0f32; n]; k];
            let mut s_r = s_c.clone();
            for t in 1..=5u64 {
                let g: Vec<f32> = (0..n)
                    .map(|i| ((i as f32 + t as f32) * 0.7).sin())
                    .collect();
                let ptrs: Vec<*mut f32> = s_c.iter_mut().map(|s| s.as_mut_ptr()).collect();
                let mut out = 99;
                // SAFETY: every buffer holds n elements; disjoint.
                let r = unsafe {
                    vsgd_step_f32(
                        &c,
                        t,
                        0.05,
                        p_c.as_mut_ptr(),
                        g.as_ptr(),
                        n,
                        ptrs.as_ptr(),
                        k,
                        VSGD_POLICY_SKIP,
                        &mut out,
                    )
                };
                assert_eq!((r, out), (VSGD_RESULT_OK, VSGD_STEP_APPLIED));
                let mut refs: Vec<&mut [f32]> = s_r.iter_mut().map(|s| s.as_mut_slice()).collect();
                kernels::step(
                    &config,
                    t,
                    0.05,
                    &mut p_r,
                    &g,
                    &mut refs,
                    NonFinitePolicy::Skip,
                )
                .unwrap();
            }
            assert_eq!(
                p_c.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                p_r.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
            assert_eq!(s_c, s_r);
        }
    }

    #[test]
    fn aliasing_is_refused_and_nothing_changes() {
        let c = config_to_c(&Config::default_for(Algorithm::Sgdm));
        let mut p = [1.0f64, 2.0, 3.0];
        let mut m = [0.0f64; 3];
        let ptrs = [m.as_mut_ptr()];
        // SAFETY: buffers valid; param and grad alias on purpose.
        let r = unsafe {
            vsgd_step_f64(
                &c,
                1,
                0.1,
                p.as_mut_ptr(),
                p.as_ptr(),
                3,
                ptrs.as_ptr(),
                1,
                0,
                core::ptr::null_mut(),
            )
        };
        assert_eq!(r, VSGD_RESULT_OVERLAPPING_BUFFERS);
        let ptrs = [p.as_mut_ptr()];
        let g = [0.5f64; 3];
        // SAFETY: state aliases param on purpose.
        let r = unsafe {
            vsgd_step_f64(
                &c,
                1,
                0.1,
                p.as_mut_ptr(),
                g.as_ptr(),
                3,
                ptrs.as_ptr(),
                1,
                0,
                core::ptr::null_mut(),
            )
        };
        assert_eq!(r, VSGD_RESULT_OVERLAPPING_BUFFERS);
        assert_eq!(p, [1.0, 2.0, 3.0]);
        assert_eq!(m, [0.0; 3]);
    }
}
