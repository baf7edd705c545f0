//! The stateless shape: one step of one tensor (or any contiguous shard of it) over
//! caller-owned buffers, for XLA custom calls, GPU streams and sharded (ZeRO-style) state.

use vsgd::kernels::mixed::{self, Bf16Sr, F32State};
use vsgd::{bf16, f16, kernels, Element, NonFinitePolicy, StepOutcome};

use crate::buffers::{check_buffer, check_disjoint, check_out, slice, slice_mut, write, Span};
use crate::config::{
    config_arg, policy_from_c, verdict_from_c, vsgd_config, vsgd_finite, vsgd_policy,
    vsgd_step_outcome, VSGD_STEP_APPLIED, VSGD_STEP_SKIPPED,
};
use crate::error::{guard, vsgd_result, Failure};

/// State arrays a stateless step takes without allocating (every algorithm today has at
/// most 3); more would be copied into a fallibly allocated list.
const INLINE_STATE: usize = 8;

/// The kernel a stateless step calls once its buffers are checked: `(config, param, grad,
/// state, policy, verdict)`.
type Kernel<'k, P, S> = &'k dyn Fn(
    &vsgd::Config,
    &mut [P],
    &[P],
    &mut [&mut [S]],
    NonFinitePolicy,
    kernels::Verdict,
) -> Result<StepOutcome, vsgd::Error>;

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
    finite: vsgd_finite,
    outcome: *mut vsgd_step_outcome,
) -> Result<(), Failure> {
    let kernel: Kernel<'_, T, T> = &|c, p, g, s, policy, verdict| {
        kernels::step_with_verdict(c, t, lr, p, g, s, policy, verdict)
    };
    // SAFETY: forwarded contract.
    unsafe {
        step_any(
            config,
            param,
            grad,
            len,
            state,
            state_count,
            policy,
            finite,
            outcome,
            kernel,
        )
    }
}

/// Shared body of every stateless step: checks the arguments and buffers, then runs `kernel`
/// (parameter and gradient elements `P`, state elements `S`).
///
/// # Safety
/// As documented on the exports.
#[allow(clippy::too_many_arguments)]
unsafe fn step_any<P, S>(
    config: *const vsgd_config,
    param: *mut P,
    grad: *const P,
    len: usize,
    state: *const *mut S,
    state_count: usize,
    policy: vsgd_policy,
    finite: vsgd_finite,
    outcome: *mut vsgd_step_outcome,
    kernel: Kernel<'_, P, S>,
) -> Result<(), Failure> {
    // SAFETY: NULL or a live configuration (caller); copied into a Rust value at once.
    let config = unsafe { config_arg(config) }?;
    let policy = policy_from_c(policy)?;
    let verdict = verdict_from_c(finite)?;
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
    if state_count > INLINE_STATE {
        return Err(Failure::new(
            crate::error::VSGD_RESULT_OTHER_ERROR,
            format!("{state_count} state arrays: this build steps at most {INLINE_STATE}"),
        ));
    }
    check_buffer(state, state_count, false, "state", None)?;
    let mut ptrs = [core::ptr::null_mut::<S>(); INLINE_STATE];
    // SAFETY: `state` holds `state_count` readable pointers (checked non-NULL and aligned
    // above; readable by the caller's contract). Copied out so no reference to the pointer
    // array outlives this line.
    ptrs[..state_count].copy_from_slice(unsafe { slice(state, state_count) });
    let mut spans = [Span::EMPTY; 3 + INLINE_STATE];
    spans[0] = check_buffer(param, len, true, "param", None)?;
    spans[1] = check_buffer(grad, len, false, "grad", None)?;
    for (j, &p) in ptrs[..state_count].iter().enumerate() {
        spans[2 + j] = check_buffer(p, len, true, "state", Some(j))?;
    }
    let mut n = 2 + state_count;
    if !outcome.is_null() {
        // Written after the step: inside a buffer of the step it would overwrite its result.
        spans[n] = check_buffer(outcome, 1, true, "outcome", None)?;
        n += 1;
    }
    check_disjoint(&mut spans[..n])?;
    let result = {
        // SAFETY: every buffer is non-NULL (or empty), aligned, fits in isize, and no written
        // buffer overlaps another (checked above); each holds `len` elements (caller).
        let param = unsafe { slice_mut(param, len) };
        // SAFETY: as above; `grad` is only read.
        let grad = unsafe { slice(grad, len) };
        // SAFETY: as above, for each state array passed; the unused entries stay NULL with
        // length 0 (empty) and are not handed to the kernel.
        let mut arrays: [&mut [S]; INLINE_STATE] = core::array::from_fn(|j| unsafe {
            slice_mut(ptrs[j], if j < state_count { len } else { 0 })
        });
        kernel(
            &config,
            param,
            grad,
            &mut arrays[..state_count],
            policy,
            verdict,
        )?
    };
    if !outcome.is_null() {
        let o = match result {
            StepOutcome::Applied => VSGD_STEP_APPLIED,
            StepOutcome::Skipped => VSGD_STEP_SKIPPED,
        };
        // SAFETY: checked above; the slices that could alias it are gone.
        unsafe { write(outcome, o) };
    }
    Ok(())
}

/// Whether every element of `x` (`len` floats) is finite, no NaN and no infinity: 1 or 0
/// into `*out`. The local verdict of one shard, to be combined across shards (logical AND)
/// and passed to `vsgd_step_f32` as `VSGD_FINITE_YES` / `VSGD_FINITE_NO` (see
/// `vsgd_finite`). The same scan the steps use (vectorized; NaN payloads and signs do not
/// matter).
///
/// Errors: `NULL_PARAMETER`, `MISALIGNED_BUFFER`, `BUFFER_TOO_LARGE`.
///
/// # Safety
/// `x` must be NULL or valid for reading `len` floats; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_all_finite_f32(
    x: *const f32,
    len: usize,
    out: *mut u32,
) -> vsgd_result {
    guard("vsgd_all_finite_f32", || {
        // SAFETY: forwarded contract.
        unsafe { all_finite(x, len, out) }
    })
}

/// `vsgd_all_finite_f32` for `double` buffers.
///
/// # Safety
/// As `vsgd_all_finite_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_all_finite_f64(
    x: *const f64,
    len: usize,
    out: *mut u32,
) -> vsgd_result {
    guard("vsgd_all_finite_f64", || {
        // SAFETY: forwarded contract.
        unsafe { all_finite(x, len, out) }
    })
}

/// Shared body of the `vsgd_all_finite_*` exports.
///
/// # Safety
/// As documented on the exports.
unsafe fn all_finite<T: Element>(x: *const T, len: usize, out: *mut u32) -> Result<(), Failure> {
    check_out(out, "out")?;
    check_buffer(x, len, false, "x", None)?;
    // SAFETY: checked (non-NULL or empty, aligned, size); `len` readable elements (caller).
    let finite = kernels::all_finite(unsafe { slice(x, len) });
    // SAFETY: checked; writable (caller); the slice above is gone.
    unsafe { write(out, u32::from(finite)) };
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
/// - `finite`: who decides whether the gradient is finite (`VSGD_FINITE_*`): `CHECK` scans
///   `grad`; a sharded tensor passes the verdict all its shards agreed on (`YES`/`NO`, see
///   `vsgd_finite`), so every shard skips together.
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
    finite: vsgd_finite,
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
                finite,
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
    finite: vsgd_finite,
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
                finite,
                outcome,
            )
        }
    })
}

/// Shared body of `vsgd_step_bf16` / `vsgd_step_f16`: 16-bit parameter and gradient
/// (`uint16_t` bits, cast to `H`), `float` state.
///
/// # Safety
/// As documented on the exports.
#[allow(clippy::too_many_arguments)]
unsafe fn step_half<H: mixed::Storage>(
    config: *const vsgd_config,
    t: u64,
    lr: f64,
    param: *mut u16,
    grad: *const u16,
    len: usize,
    state: *const *mut f32,
    state_count: usize,
    policy: vsgd_policy,
    finite: vsgd_finite,
    outcome: *mut vsgd_step_outcome,
) -> Result<(), Failure> {
    let kernel: Kernel<'_, H, f32> =
        &|c, p, g, s, policy, verdict| mixed::step(c, t, lr, p, g, s, &F32State, policy, verdict);
    // SAFETY: forwarded contract; `bf16` and `f16` are `repr(transparent)` over `u16`, so the
    // casts keep size, alignment and validity (every bit pattern is a value).
    unsafe {
        step_any(
            config,
            param.cast::<H>(),
            grad.cast::<H>(),
            len,
            state,
            state_count,
            policy,
            finite,
            outcome,
            kernel,
        )
    }
}

/// One step of one bfloat16 tensor (or shard) with `float` state: the common mixed-precision
/// recipe. `param` and `grad` hold bfloat16 values as `uint16_t` bits (the top half of a
/// `float`'s bits); the update is computed in `float` by the same rule as `vsgd_step_f32` and
/// the new parameter rounded once to bfloat16, round-to-nearest-even. The state arrays are
/// `float`, exactly as `vsgd_step_f32` keeps them. A gradient is finite when every bfloat16
/// element is. Everything else (arguments, errors, sharding, reentrancy) is as
/// `vsgd_step_f32`.
///
/// # Safety
/// As `vsgd_step_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_step_bf16(
    config: *const vsgd_config,
    t: u64,
    lr: f64,
    param: *mut u16,
    grad: *const u16,
    len: usize,
    state: *const *mut f32,
    state_count: usize,
    policy: vsgd_policy,
    finite: vsgd_finite,
    outcome: *mut vsgd_step_outcome,
) -> vsgd_result {
    guard("vsgd_step_bf16", || {
        // SAFETY: forwarded contract.
        unsafe {
            step_half::<bf16>(
                config,
                t,
                lr,
                param,
                grad,
                len,
                state,
                state_count,
                policy,
                finite,
                outcome,
            )
        }
    })
}

/// `vsgd_step_bf16` for IEEE binary16 (`_Float16`, CUDA's `__half`) parameters and gradients,
/// as `uint16_t` bits; `float` state.
///
/// # Safety
/// As `vsgd_step_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_step_f16(
    config: *const vsgd_config,
    t: u64,
    lr: f64,
    param: *mut u16,
    grad: *const u16,
    len: usize,
    state: *const *mut f32,
    state_count: usize,
    policy: vsgd_policy,
    finite: vsgd_finite,
    outcome: *mut vsgd_step_outcome,
) -> vsgd_result {
    guard("vsgd_step_f16", || {
        // SAFETY: forwarded contract.
        unsafe {
            step_half::<f16>(
                config,
                t,
                lr,
                param,
                grad,
                len,
                state,
                state_count,
                policy,
                finite,
                outcome,
            )
        }
    })
}

/// One step of one bfloat16 tensor (or shard) whose state is bfloat16 too, written back with
/// stochastic rounding: 6 bytes of VSGD state per parameter instead of 12. Parameter,
/// gradient and each state array hold bfloat16 bits (`uint16_t`). Each state element is
/// widened to `float`, updated by the rule of `vsgd_step_f32`, and rounded up or down to a
/// neighbouring bfloat16 with the probability that makes the expected value exact; the
/// parameter is rounded to nearest even.
///
/// The random bits are a pure function of (`seed`, `t`, state array, element index), the
/// index counted from the start of the whole tensor: `offset` is the index of `param[0]` in
/// it (0 for a whole tensor, the shard's start for a shard). So a resumed run, any sharding
/// and any thread split give the same bits. Give each tensor its own `seed` and keep it. A
/// shard whose indices would pass 2^64 − 1 (`offset + len` > 2^64) is `SHAPE_OVERFLOW`:
/// the index would wrap and repeat another shard's random bits. Everything else is as
/// `vsgd_step_f32`.
///
/// # Safety
/// As `vsgd_step_f32` (state arrays of `uint16_t`).
#[no_mangle]
pub unsafe extern "C" fn vsgd_step_bf16_sr(
    config: *const vsgd_config,
    t: u64,
    lr: f64,
    param: *mut u16,
    grad: *const u16,
    len: usize,
    state: *const *mut u16,
    state_count: usize,
    seed: u64,
    offset: u64,
    policy: vsgd_policy,
    finite: vsgd_finite,
    outcome: *mut vsgd_step_outcome,
) -> vsgd_result {
    guard("vsgd_step_bf16_sr", || {
        let sr = Bf16Sr { seed, offset };
        let kernel: Kernel<'_, bf16, bf16> =
            &|c, p, g, s, policy, verdict| mixed::step(c, t, lr, p, g, s, &sr, policy, verdict);
        // SAFETY: forwarded contract; `bf16` is `repr(transparent)` over `u16` (see
        // `step_half`), for the state arrays too.
        unsafe {
            step_any(
                config,
                param.cast::<bf16>(),
                grad.cast::<bf16>(),
                len,
                state.cast::<*mut bf16>(),
                state_count,
                policy,
                finite,
                outcome,
                kernel,
            )
        }
    })
}

/// `vsgd_all_finite_f32` for bfloat16 buffers (`uint16_t` bits).
///
/// # Safety
/// As `vsgd_all_finite_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_all_finite_bf16(
    x: *const u16,
    len: usize,
    out: *mut u32,
) -> vsgd_result {
    guard("vsgd_all_finite_bf16", || {
        // SAFETY: forwarded contract; `bf16` is `repr(transparent)` over `u16`.
        unsafe { all_finite_half(x.cast::<bf16>(), len, out) }
    })
}

/// `vsgd_all_finite_f32` for IEEE binary16 buffers (`uint16_t` bits).
///
/// # Safety
/// As `vsgd_all_finite_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_all_finite_f16(
    x: *const u16,
    len: usize,
    out: *mut u32,
) -> vsgd_result {
    guard("vsgd_all_finite_f16", || {
        // SAFETY: forwarded contract; `f16` is `repr(transparent)` over `u16`.
        unsafe { all_finite_half(x.cast::<f16>(), len, out) }
    })
}

/// Shared body of `vsgd_all_finite_bf16` / `_f16`.
///
/// # Safety
/// As documented on the exports.
unsafe fn all_finite_half<H: mixed::Storage>(
    x: *const H,
    len: usize,
    out: *mut u32,
) -> Result<(), Failure> {
    check_out(out, "out")?;
    check_buffer(x, len, false, "x", None)?;
    // SAFETY: checked (non-NULL or empty, aligned, size); `len` readable elements (caller).
    let finite = mixed::all_finite(unsafe { slice(x, len) });
    // SAFETY: checked; writable (caller); the slice above is gone.
    unsafe { write(out, u32::from(finite)) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{VSGD_FINITE_CHECK, VSGD_FINITE_NO, VSGD_FINITE_YES, VSGD_POLICY_SKIP};
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
            let c = vsgd_config { inner: config };
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
                        VSGD_FINITE_CHECK,
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

    /// The 16-bit exports against `vsgd::kernels::mixed::step`, bit for bit.
    #[test]
    fn half_precision_steps_match_the_rust_kernel() {
        for a in [Algorithm::Vsgd, Algorithm::Sgdm, Algorithm::ConstantVsgd] {
            let config = Config::default_for(a);
            let c = vsgd_config { inner: config };
            let k = a.state_count();
            let n = 5;
            let p0: Vec<u16> = (0..n)
                .map(|i| bf16::from_f32(i as f32 * 0.3 - 1.0).to_bits())
                .collect();
            let g: Vec<u16> = (0..n)
                .map(|i| bf16::from_f32(((i + 1) as f32 * 0.7).sin()).to_bits())
                .collect();
            // bf16 and f16 parameters, f32 state.
            for (export, is_bf16) in [
                (vsgd_step_bf16 as StepHalf, true),
                (vsgd_step_f16 as StepHalf, false),
            ] {
                let mut p_c = p0.clone();
                let mut s_c = vec![vec![0f32; n]; k];
                let ptrs: Vec<*mut f32> = s_c.iter_mut().map(|s| s.as_mut_ptr()).collect();
                let mut out = 99;
                // SAFETY: every buffer holds n elements; disjoint.
                let r = unsafe {
                    export(
                        &c,
                        1,
                        0.05,
                        p_c.as_mut_ptr(),
                        g.as_ptr(),
                        n,
                        ptrs.as_ptr(),
                        k,
                        VSGD_POLICY_SKIP,
                        VSGD_FINITE_CHECK,
                        &mut out,
                    )
                };
                assert_eq!((r, out), (VSGD_RESULT_OK, VSGD_STEP_APPLIED));
                let mut s_r = vec![vec![0f32; n]; k];
                let mut refs: Vec<&mut [f32]> = s_r.iter_mut().map(|s| s.as_mut_slice()).collect();
                let p_r: Vec<u16> = if is_bf16 {
                    let mut p: Vec<bf16> = p0.iter().map(|&b| bf16::from_bits(b)).collect();
                    let g: Vec<bf16> = g.iter().map(|&b| bf16::from_bits(b)).collect();
                    mixed::step(
                        &config,
                        1,
                        0.05,
                        &mut p,
                        &g,
                        &mut refs,
                        &F32State,
                        NonFinitePolicy::Skip,
                        kernels::Verdict::Check,
                    )
                    .unwrap();
                    p.iter().map(|x| x.to_bits()).collect()
                } else {
                    let mut p: Vec<f16> = p0.iter().map(|&b| f16::from_bits(b)).collect();
                    let g: Vec<f16> = g.iter().map(|&b| f16::from_bits(b)).collect();
                    mixed::step(
                        &config,
                        1,
                        0.05,
                        &mut p,
                        &g,
                        &mut refs,
                        &F32State,
                        NonFinitePolicy::Skip,
                        kernels::Verdict::Check,
                    )
                    .unwrap();
                    p.iter().map(|x| x.to_bits()).collect()
                };
                assert_eq!(p_c, p_r);
                assert_ne!(p_c, p0);
                assert_eq!(s_c, s_r);
            }
            // bf16 state with stochastic rounding, as a shard at offset 3.
            let mut p_c = p0.clone();
            let mut s_c = vec![vec![0u16; n]; k];
            let ptrs: Vec<*mut u16> = s_c.iter_mut().map(|s| s.as_mut_ptr()).collect();
            // SAFETY: every buffer holds n elements; disjoint.
            let r = unsafe {
                vsgd_step_bf16_sr(
                    &c,
                    1,
                    0.05,
                    p_c.as_mut_ptr(),
                    g.as_ptr(),
                    n,
                    ptrs.as_ptr(),
                    k,
                    17,
                    3,
                    VSGD_POLICY_SKIP,
                    VSGD_FINITE_CHECK,
                    core::ptr::null_mut(),
                )
            };
            assert_eq!(r, VSGD_RESULT_OK);
            let mut p: Vec<bf16> = p0.iter().map(|&b| bf16::from_bits(b)).collect();
            let gb: Vec<bf16> = g.iter().map(|&b| bf16::from_bits(b)).collect();
            let mut s_r = vec![vec![bf16::ZERO; n]; k];
            let mut refs: Vec<&mut [bf16]> = s_r.iter_mut().map(|s| s.as_mut_slice()).collect();
            let sr = Bf16Sr {
                seed: 17,
                offset: 3,
            };
            mixed::step(
                &config,
                1,
                0.05,
                &mut p,
                &gb,
                &mut refs,
                &sr,
                NonFinitePolicy::Skip,
                kernels::Verdict::Check,
            )
            .unwrap();
            assert_eq!(p_c, p.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            let s_r: Vec<Vec<u16>> = s_r
                .iter()
                .map(|s| s.iter().map(|x| x.to_bits()).collect())
                .collect();
            assert_eq!(s_c, s_r);
        }
    }

    /// The signature of `vsgd_step_bf16` / `vsgd_step_f16`.
    type StepHalf = unsafe extern "C" fn(
        *const vsgd_config,
        u64,
        f64,
        *mut u16,
        *const u16,
        usize,
        *const *mut f32,
        usize,
        vsgd_policy,
        vsgd_finite,
        *mut vsgd_step_outcome,
    ) -> vsgd_result;

    #[test]
    fn half_precision_bad_input_changes_nothing() {
        let c = vsgd_config {
            inner: Config::default_for(Algorithm::Sgdm),
        };
        let mut p = [bf16::from_f32(1.0).to_bits(); 3];
        let mut g = [bf16::from_f32(0.5).to_bits(); 3];
        let mut m = [0u16; 3];
        let ptrs = [m.as_mut_ptr()];
        let run = |p: *mut u16, g: *const u16, st: *const *mut u16| unsafe {
            // SAFETY: buffers valid for 3 elements (or NULL, refused).
            vsgd_step_bf16_sr(
                &c,
                1,
                0.1,
                p,
                g,
                3,
                st,
                1,
                0,
                0,
                0,
                VSGD_FINITE_CHECK,
                core::ptr::null_mut(),
            )
        };
        assert_eq!(
            run(p.as_mut_ptr(), p.as_ptr(), ptrs.as_ptr()),
            VSGD_RESULT_OVERLAPPING_BUFFERS
        );
        let alias = [p.as_mut_ptr()];
        assert_eq!(
            run(p.as_mut_ptr(), g.as_ptr(), alias.as_ptr()),
            VSGD_RESULT_OVERLAPPING_BUFFERS
        );
        assert_eq!(
            run(core::ptr::null_mut(), g.as_ptr(), ptrs.as_ptr()),
            VSGD_RESULT_NULL_PARAMETER
        );
        assert_eq!(
            run(p.as_mut_ptr(), g.as_ptr(), core::ptr::null()),
            VSGD_RESULT_NULL_PARAMETER
        );
        // A NaN gradient is skipped (policy skip): nothing changes.
        g[1] = bf16::NAN.to_bits();
        let mut out = 99;
        // SAFETY: valid buffers.
        let r = unsafe {
            vsgd_step_bf16_sr(
                &c,
                1,
                0.1,
                p.as_mut_ptr(),
                g.as_ptr(),
                3,
                ptrs.as_ptr(),
                1,
                0,
                0,
                VSGD_POLICY_SKIP,
                VSGD_FINITE_CHECK,
                &mut out,
            )
        };
        assert_eq!((r, out), (VSGD_RESULT_OK, VSGD_STEP_SKIPPED));
        assert_eq!(p, [bf16::from_f32(1.0).to_bits(); 3]);
        assert_eq!(m, [0; 3]);
        let mut verdict = 7;
        // SAFETY: valid buffers.
        assert_eq!(
            unsafe { vsgd_all_finite_bf16(g.as_ptr(), 3, &mut verdict) },
            VSGD_RESULT_OK
        );
        assert_eq!(verdict, 0);
        let h = [f16::from_f32(2.0).to_bits(); 2];
        // SAFETY: valid buffers.
        assert_eq!(
            unsafe { vsgd_all_finite_f16(h.as_ptr(), 2, &mut verdict) },
            VSGD_RESULT_OK
        );
        assert_eq!(verdict, 1);
        // SAFETY: NULL output refused before anything is read.
        assert_eq!(
            unsafe { vsgd_all_finite_f16(h.as_ptr(), 2, core::ptr::null_mut()) },
            VSGD_RESULT_NULL_PARAMETER
        );
    }

    #[test]
    fn aliasing_is_refused_and_nothing_changes() {
        let c = vsgd_config {
            inner: Config::default_for(Algorithm::Sgdm),
        };
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
                0,
                core::ptr::null_mut(),
            )
        };
        assert_eq!(r, VSGD_RESULT_OVERLAPPING_BUFFERS);
        assert_eq!(p, [1.0, 2.0, 3.0]);
        assert_eq!(m, [0.0; 3]);
    }

    #[test]
    fn shards_skip_together_on_the_callers_verdict() {
        let c = vsgd_config {
            inner: Config::default_for(Algorithm::Adam),
        };
        if cfg!(miri) {
            return; // libm's sqrt (Adam's bias correction) is inline assembly
        }
        let n = 12;
        let p0: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 1.0).collect();
        let g1: Vec<f32> = (0..n).map(|i| (i as f32 * 0.9).cos()).collect();
        let mut g2 = g1.clone();
        g2[10] = f32::NAN; // in the last of three shards
                           // Unsharded: step 1 applies, step 2 (NaN) skips.
        let (mut p, mut m, mut v) = (p0.clone(), vec![0f32; n], vec![0f32; n]);
        let whole = |p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], t| {
            let ptrs = [m.as_mut_ptr(), v.as_mut_ptr()];
            let mut out = 9;
            // SAFETY: disjoint buffers of n elements.
            let r = unsafe {
                vsgd_step_f32(
                    &c,
                    t,
                    0.01,
                    p.as_mut_ptr(),
                    g.as_ptr(),
                    n,
                    ptrs.as_ptr(),
                    2,
                    VSGD_POLICY_SKIP,
                    VSGD_FINITE_CHECK,
                    &mut out,
                )
            };
            assert_eq!(r, VSGD_RESULT_OK);
            out
        };
        assert_eq!(whole(&mut p, &mut m, &mut v, &g1, 1), VSGD_STEP_APPLIED);
        assert_eq!(whole(&mut p, &mut m, &mut v, &g2, 2), VSGD_STEP_SKIPPED);
        // Three shards of 4, each with its own state shard and its own step counter.
        let (mut ps, mut ms, mut vs) = (p0.clone(), vec![0f32; n], vec![0f32; n]);
        let mut steps = [0u64; 3];
        for g in [&g1, &g2] {
            let mut agreed = 1u32;
            for k in 0..3 {
                let mut f = 9;
                // SAFETY: a readable shard of 4.
                let r = unsafe { vsgd_all_finite_f32(g[4 * k..].as_ptr(), 4, &mut f) };
                assert_eq!(r, VSGD_RESULT_OK);
                agreed &= f;
            }
            let finite = if agreed == 1 {
                VSGD_FINITE_YES
            } else {
                VSGD_FINITE_NO
            };
            for (k, step) in steps.iter_mut().enumerate() {
                let r = 4 * k..4 * k + 4;
                let ptrs = [ms[r.clone()].as_mut_ptr(), vs[r.clone()].as_mut_ptr()];
                let mut out = 9;
                // SAFETY: disjoint shards of 4 elements.
                let res = unsafe {
                    vsgd_step_f32(
                        &c,
                        *step + 1,
                        0.01,
                        ps[r.clone()].as_mut_ptr(),
                        g[r].as_ptr(),
                        4,
                        ptrs.as_ptr(),
                        2,
                        VSGD_POLICY_SKIP,
                        finite,
                        &mut out,
                    )
                };
                assert_eq!(res, VSGD_RESULT_OK);
                if out == VSGD_STEP_APPLIED {
                    *step += 1;
                }
            }
        }
        // Every shard skipped the NaN step: the counters agree and the bits equal unsharded.
        assert_eq!(steps, [1, 1, 1]);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ps), bits(&p));
        assert_eq!(bits(&ms), bits(&m));
        assert_eq!(bits(&vs), bits(&v));
        // Deciding alone (CHECK), the NaN-free shards would have applied.
        let (mut q, mut mq, mut vq) = (p0[..4].to_vec(), vec![0f32; 4], vec![0f32; 4]);
        let ptrs = [mq.as_mut_ptr(), vq.as_mut_ptr()];
        let mut out = 9;
        // SAFETY: disjoint buffers of 4.
        let r = unsafe {
            vsgd_step_f32(
                &c,
                1,
                0.01,
                q.as_mut_ptr(),
                g2.as_ptr(),
                4,
                ptrs.as_ptr(),
                2,
                VSGD_POLICY_SKIP,
                VSGD_FINITE_CHECK,
                &mut out,
            )
        };
        assert_eq!((r, out), (VSGD_RESULT_OK, VSGD_STEP_APPLIED));
        // An unknown verdict is refused.
        // SAFETY: as above.
        let r = unsafe {
            vsgd_step_f32(
                &c,
                1,
                0.01,
                q.as_mut_ptr(),
                g2.as_ptr(),
                4,
                ptrs.as_ptr(),
                2,
                VSGD_POLICY_SKIP,
                7,
                &mut out,
            )
        };
        assert_eq!(r, VSGD_RESULT_INVALID_ENUM);
    }
}
