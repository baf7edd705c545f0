//! Plain C values (the enum-like typedefs) and the two growable descriptions a caller builds:
//! the configuration of an algorithm (`vsgd_config`) and a learning-rate schedule
//! (`vsgd_schedule`). Both are opaque handles set and read by name, so a hyperparameter or
//! schedule field added later changes no struct layout (docs/abi.md).

use core::ffi::{c_char, CStr};

use vsgd::{Algorithm, Config, DType, LrSchedule, NonFinitePolicy, Schedule};

use crate::buffers::{c_str, check_out, input, write};
use crate::error::{
    guard, vsgd_result, Failure, VSGD_RESULT_ALLOCATION_FAILED, VSGD_RESULT_INVALID_ENUM,
    VSGD_RESULT_INVALID_SCHEDULE, VSGD_RESULT_STATE_COUNT, VSGD_RESULT_UNKNOWN_HYPERPARAMETER,
};

/// Which optimizer: one of the `VSGD_ALGORITHM_*` constants. A plain `uint32_t`, so any value
/// can be passed; values that are not constants are rejected with `VSGD_RESULT_INVALID_ENUM`.
pub type vsgd_algorithm = u32;
/// Variational SGD (the paper's Algorithm 1). State arrays: `mug`, `bg`, `bhg`.
pub const VSGD_ALGORITHM_VSGD: vsgd_algorithm = 0;
/// Constant VSGD (the paper's Algorithm 2). State arrays: `mug`, `b`.
pub const VSGD_ALGORITHM_CONSTANT_VSGD: vsgd_algorithm = 1;
/// Adam (torch.optim.Adam semantics). State arrays: `m`, `v`.
pub const VSGD_ALGORITHM_ADAM: vsgd_algorithm = 2;
/// AdamW: Adam whose decoupled `weight_decay` defaults to 0.01. State arrays: `m`, `v`.
pub const VSGD_ALGORITHM_ADAMW: vsgd_algorithm = 3;
/// SGD with momentum (torch.optim.SGD semantics). State array: `momentum`.
pub const VSGD_ALGORITHM_SGDM: vsgd_algorithm = 4;

/// Element type of a tensor: one of the `VSGD_DTYPE_*` constants.
pub type vsgd_dtype = u32;
/// IEEE-754 binary32 (`float`).
pub const VSGD_DTYPE_F32: vsgd_dtype = 0;
/// IEEE-754 binary64 (`double`).
pub const VSGD_DTYPE_F64: vsgd_dtype = 1;
/// bfloat16 (`uint16_t` bits): a mixed-precision tensor's parameter and gradient (state
/// `float` by default, or bfloat16: `vsgd_optimizer_add_tensor_mixed`), stepped with
/// `vsgd_optimizer_step_bf16`.
pub const VSGD_DTYPE_BF16: vsgd_dtype = 2;
/// IEEE-754 binary16 (`uint16_t` bits): a mixed-precision tensor's parameter and gradient
/// (state `float`), stepped with `vsgd_optimizer_step_f16`.
pub const VSGD_DTYPE_F16: vsgd_dtype = 3;

/// What a step does with a gradient holding NaN or infinity: one of `VSGD_POLICY_*`.
pub type vsgd_policy = u32;
/// Leave the tensor untouched (parameter, state, step counter) and report it as skipped.
/// The default of a new handle.
pub const VSGD_POLICY_SKIP: vsgd_policy = 0;
/// Fail with `VSGD_RESULT_NON_FINITE_GRADIENT`, changing nothing.
pub const VSGD_POLICY_ERROR: vsgd_policy = 1;
/// Apply the update anyway, as the published code does (NaN spreads into the state).
pub const VSGD_POLICY_PROPAGATE: vsgd_policy = 2;

/// Who decides whether a stateless step's gradient is finite: one of `VSGD_FINITE_*`.
///
/// A tensor sharded across devices or processes (ZeRO-style) must skip on all shards or on
/// none: compute each shard's verdict with `vsgd_all_finite_f32` / `_f64`, combine them with a
/// logical AND across shards (an all-reduce, as torch's GradScaler does with `found_inf`), and
/// pass `VSGD_FINITE_YES` or `VSGD_FINITE_NO` to every shard's step.
pub type vsgd_finite = u32;
/// The step scans its own `grad` (right for a whole tensor; a shard then decides alone).
pub const VSGD_FINITE_CHECK: vsgd_finite = 0;
/// The caller found the whole tensor (every shard's gradient) finite: the update is applied
/// without a scan.
pub const VSGD_FINITE_YES: vsgd_finite = 1;
/// The caller found a NaN or infinity somewhere in the tensor (perhaps in another shard): the
/// policy applies as if this shard held it (`SKIP`: nothing changes; `ERROR`: fails;
/// `PROPAGATE`: applied anyway).
pub const VSGD_FINITE_NO: vsgd_finite = 2;

/// What a schedule's step number is: one of `VSGD_CLOCK_*` (see
/// `vsgd_optimizer_set_schedule_clock`).
pub type vsgd_schedule_clock = u32;
/// Each tensor's own update count (the default): a tensor whose step was skipped or that had
/// no gradient does not move along its schedule.
pub const VSGD_CLOCK_PER_TENSOR: vsgd_schedule_clock = 0;
/// One counter for the whole handle, advanced by every successful `vsgd_optimizer_step_f32` /
/// `_f64` call (as torch's `lr_scheduler.step()` once per iteration).
pub const VSGD_CLOCK_GLOBAL: vsgd_schedule_clock = 1;

pub(crate) fn clock_from_c(c: vsgd_schedule_clock) -> Result<vsgd::ScheduleClock, Failure> {
    match c {
        VSGD_CLOCK_PER_TENSOR => Ok(vsgd::ScheduleClock::PerTensor),
        VSGD_CLOCK_GLOBAL => Ok(vsgd::ScheduleClock::Global),
        _ => Err(invalid_enum("vsgd_schedule_clock", c)),
    }
}

pub(crate) fn clock_to_c(c: vsgd::ScheduleClock) -> vsgd_schedule_clock {
    match c {
        vsgd::ScheduleClock::PerTensor => VSGD_CLOCK_PER_TENSOR,
        vsgd::ScheduleClock::Global => VSGD_CLOCK_GLOBAL,
    }
}

/// What a step did to one tensor: one of `VSGD_STEP_*`.
pub type vsgd_step_outcome = u32;
/// The update was applied.
pub const VSGD_STEP_APPLIED: vsgd_step_outcome = 0;
/// The gradient was not finite and the tensor was left untouched (`VSGD_POLICY_SKIP`). A
/// caller of the stateless kernels must then not advance its step counter.
pub const VSGD_STEP_SKIPPED: vsgd_step_outcome = 1;

/// Shape of a learning-rate schedule: one of `VSGD_SCHEDULE_*`.
pub type vsgd_schedule_kind = u32;
/// The base learning rate η at every step.
pub const VSGD_SCHEDULE_CONSTANT: vsgd_schedule_kind = 0;
/// η · factor^⌊(t − 1) / every⌋ ("halve every N steps": every = N, factor = 0.5).
pub const VSGD_SCHEDULE_STEP_DECAY: vsgd_schedule_kind = 1;
/// Cosine annealing from η to min_factor·η over `total` steps, then flat.
pub const VSGD_SCHEDULE_COSINE: vsgd_schedule_kind = 2;
/// One-cycle (torch's OneCycleLR, cosine): from η/div_factor up to η over the first
/// pct_start·total steps, then down to η/(div_factor·final_div_factor) at step `total`.
pub const VSGD_SCHEDULE_ONE_CYCLE: vsgd_schedule_kind = 3;

/// The configuration of one algorithm: its hyperparameters, set and read by name.
///
/// Ownership: created by `vsgd_config_new` (defaults), `vsgd_config_clone` or
/// `vsgd_optimizer_config`; owned by the caller; released exactly once by `vsgd_config_free`.
/// Functions that take a `const vsgd_config *` copy what they need during the call and keep
/// no pointer, so a configuration may be freed or changed right after.
///
/// Thread safety: any number of threads may read one configuration at once (stateless steps
/// on many threads sharing it); it must not be changed (`vsgd_config_set`) while read.
pub struct vsgd_config {
    pub(crate) inner: Config,
}

/// A learning-rate schedule: the factor applied to a group's base learning rate at a tensor's
/// update number t (1, 2, …), with its fields set and read by name.
///
/// Ownership and thread safety as `vsgd_config`: created by `vsgd_schedule_new` or
/// `vsgd_optimizer_schedule`, released by `vsgd_schedule_free`, copied by the functions that
/// take it.
pub struct vsgd_schedule {
    pub(crate) inner: LrSchedule,
}

fn invalid_enum(what: &str, value: u32) -> Failure {
    Failure::new(
        VSGD_RESULT_INVALID_ENUM,
        format!("{what} = {value} is not one of its constants"),
    )
}

pub(crate) fn algorithm_from_c(a: vsgd_algorithm) -> Result<Algorithm, Failure> {
    Algorithm::ALL
        .into_iter()
        .find(|x| *x as u32 == a)
        .ok_or_else(|| invalid_enum("vsgd_algorithm", a))
}

pub(crate) fn algorithm_to_c(a: Algorithm) -> vsgd_algorithm {
    a as u32
}

pub(crate) fn dtype_from_c(d: vsgd_dtype) -> Result<DType, Failure> {
    match d {
        VSGD_DTYPE_F32 => Ok(DType::F32),
        VSGD_DTYPE_F64 => Ok(DType::F64),
        VSGD_DTYPE_BF16 => Ok(DType::Bf16),
        VSGD_DTYPE_F16 => Ok(DType::F16),
        _ => Err(invalid_enum("vsgd_dtype", d)),
    }
}

pub(crate) fn dtype_to_c(d: DType) -> vsgd_dtype {
    match d {
        DType::F32 => VSGD_DTYPE_F32,
        DType::F64 => VSGD_DTYPE_F64,
        DType::Bf16 => VSGD_DTYPE_BF16,
        DType::F16 => VSGD_DTYPE_F16,
    }
}

pub(crate) fn policy_from_c(p: vsgd_policy) -> Result<NonFinitePolicy, Failure> {
    match p {
        VSGD_POLICY_SKIP => Ok(NonFinitePolicy::Skip),
        VSGD_POLICY_ERROR => Ok(NonFinitePolicy::Error),
        VSGD_POLICY_PROPAGATE => Ok(NonFinitePolicy::Propagate),
        _ => Err(invalid_enum("vsgd_policy", p)),
    }
}

pub(crate) fn policy_to_c(p: NonFinitePolicy) -> vsgd_policy {
    match p {
        NonFinitePolicy::Skip => VSGD_POLICY_SKIP,
        NonFinitePolicy::Error => VSGD_POLICY_ERROR,
        NonFinitePolicy::Propagate => VSGD_POLICY_PROPAGATE,
    }
}

pub(crate) fn verdict_from_c(f: vsgd_finite) -> Result<vsgd::kernels::Verdict, Failure> {
    use vsgd::kernels::Verdict;
    match f {
        VSGD_FINITE_CHECK => Ok(Verdict::Check),
        VSGD_FINITE_YES => Ok(Verdict::Finite),
        VSGD_FINITE_NO => Ok(Verdict::NotFinite),
        _ => Err(invalid_enum("vsgd_finite", f)),
    }
}

/// A heap value handed to the caller; a refused allocation is `ALLOCATION_FAILED`, not an
/// abort.
pub(crate) fn try_box<T>(value: T) -> Result<*mut T, Failure> {
    let mut v: Vec<T> = Vec::new();
    if v.try_reserve_exact(1).is_err() {
        return Err(Failure::new(
            VSGD_RESULT_ALLOCATION_FAILED,
            format!("could not allocate {} bytes", core::mem::size_of::<T>()),
        ));
    }
    v.push(value);
    // A Vec of length and capacity 1 has the layout of a Box.
    Ok(Box::into_raw(v.into_boxed_slice()).cast::<T>())
}

/// Releases a value made by [`try_box`] (NULL does nothing).
///
/// # Safety
/// `ptr` must be NULL or from [`try_box`], not yet released.
pub(crate) unsafe fn free_box<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: from Box::into_raw of a one-element boxed slice, which has Box<T>'s layout.
        let b = unsafe { Box::from_raw(ptr) };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(b)));
    }
}

pub(crate) fn config_handle(config: Config) -> Result<*mut vsgd_config, Failure> {
    try_box(vsgd_config { inner: config })
}

pub(crate) fn schedule_handle(schedule: LrSchedule) -> Result<*mut vsgd_schedule, Failure> {
    try_box(vsgd_schedule { inner: schedule })
}

/// The configuration behind a `const vsgd_config *` argument, copied.
///
/// # Safety
/// `config` must be NULL or a live configuration handle.
pub(crate) unsafe fn config_arg(config: *const vsgd_config) -> Result<Config, Failure> {
    // SAFETY: NULL or a live handle (caller).
    Ok(unsafe { input(config, "config") }?.inner)
}

/// The schedule behind a `const vsgd_schedule *` argument, copied.
///
/// # Safety
/// `schedule` must be NULL or a live schedule handle.
pub(crate) unsafe fn schedule_arg(schedule: *const vsgd_schedule) -> Result<LrSchedule, Failure> {
    // SAFETY: NULL or a live handle (caller).
    Ok(unsafe { input(schedule, "schedule") }?.inner)
}

fn unknown_name(name: &str, algorithm: Algorithm) -> Failure {
    let f = Failure::from(vsgd::Error::UnknownHyperparameter { algorithm });
    Failure::new(f.code, format!("'{name}': {}", f.message))
}

/// Creates a configuration of `algorithm` holding its defaults (the authors' for VSGD,
/// torch's for the others); `*out` owns it (release with `vsgd_config_free`). On failure
/// `*out` is set to NULL (when `out` is not NULL).
///
/// Errors: `NULL_PARAMETER`, `INVALID_ENUM`, `ALLOCATION_FAILED`.
///
/// # Safety
/// `out` must be NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_new(
    algorithm: vsgd_algorithm,
    out: *mut *mut vsgd_config,
) -> vsgd_result {
    guard("vsgd_config_new", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        let a = algorithm_from_c(algorithm)?;
        let h = config_handle(Config::default_for(a))?;
        // SAFETY: as above.
        unsafe { write(out, h) };
        Ok(())
    })
}

/// A new configuration equal to `*config`, into `*out` (release with `vsgd_config_free`).
///
/// Errors: `NULL_PARAMETER`, `ALLOCATION_FAILED`.
///
/// # Safety
/// `config` must be NULL or a live configuration; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_clone(
    config: *const vsgd_config,
    out: *mut *mut vsgd_config,
) -> vsgd_result {
    guard("vsgd_config_clone", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        // SAFETY: NULL or a live handle (caller).
        let c = unsafe { config_arg(config) }?;
        let h = config_handle(c)?;
        // SAFETY: as above.
        unsafe { write(out, h) };
        Ok(())
    })
}

/// Releases a configuration. NULL is accepted and does nothing. The pointer must not be
/// used afterwards; freeing it twice is undefined behaviour.
///
/// # Safety
/// `config` must be NULL or a live configuration not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_free(config: *mut vsgd_config) {
    // SAFETY: NULL or from try_box (every constructor), released once (caller).
    unsafe { free_box(config) }
}

/// The algorithm of `*config`, into `*out`.
///
/// # Safety
/// `config` must be NULL or a live configuration; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_algorithm(
    config: *const vsgd_config,
    out: *mut vsgd_algorithm,
) -> vsgd_result {
    guard("vsgd_config_algorithm", || {
        check_out(out, "out")?;
        // SAFETY: NULL or a live handle (caller).
        let c = unsafe { config_arg(config) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, algorithm_to_c(c.algorithm())) };
        Ok(())
    })
}

/// Checks every hyperparameter of `*config` against its range. `VSGD_RESULT_INVALID_CONFIG`
/// names the first bad field, its value and the allowed range.
///
/// # Safety
/// `config` must be NULL or a live configuration.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_validate(config: *const vsgd_config) -> vsgd_result {
    guard("vsgd_config_validate", || {
        // SAFETY: NULL or a live handle (caller).
        let c = unsafe { config_arg(config) }?;
        c.validate().map_err(vsgd::Error::from)?;
        Ok(())
    })
}

/// Sets a hyperparameter by name. Booleans take 0 or 1. The range is not checked here (call
/// `vsgd_config_validate` once all fields are set, or let the function that uses the
/// configuration do it), so fields can be changed in any order.
///
/// The names, each with its allowed range (`vsgd_hyper_name` lists them per algorithm):
/// - `lr`: (0, 1e30]
/// - `ghattg`: [1e-6, 1e6]
/// - `ps`: [1e-30, 1e6]
/// - `tau1`: (0, 1]
/// - `tau2`: (0, 1]
/// - `tau`: (0, 1]
/// - `eps`: finite and >= 1e-30
/// - `beta1`: [0, 1)
/// - `beta2`: [0, 1)
/// - `momentum`: [0, 1]
/// - `dampening`: [0, 1]
/// - `nesterov`: 0 (false) or 1 (true)
/// - `weight_decay`: [0, 1e30]
/// - `l2`: [0, 1e30]
/// - `maximize`: 0 (false) or 1 (true)
///
/// What they mean, per algorithm (defaults in parentheses):
/// - VSGD: `lr` η (0.1), `ghattg` K, the prior ratio of observation to systematic noise
///   (30), `ps` γ, the prior strength (1e-8), `tau1` κ1 and `tau2` κ2, forgetting exponents
///   of `bg` and `bhg` (0.81, 0.9), `eps` (1e-8), `weight_decay` λ, decoupled (0), `l2`,
///   coupled ĝ ← ĝ + l2·θ (0), `maximize` (0). With pa2 = 2γ + 1 + 1e-4, pbg2 = 2γ,
///   pbhg2 = 2Kγ, one step of one element is
///   ```text
///   sg, shg = (pbg2, pbhg2) / (pa2 − 1)   if t = 1,   else (bg, bhg) / pa2
///   μ' = wg·ĝ + wm·μ,  wg = sg/(sg+shg),  wm = shg/(sg+shg),  σ² = sg·wm
///   bg  ← (1−ρ1)·bg  + ρ1·(pbg2  + σ² + (μ'−μ)²),   ρ1 = t^(−κ1)
///   bhg ← (1−ρ2)·bhg + ρ2·(pbhg2 + σ² + (μ'−ĝ)²),   ρ2 = t^(−κ2)
///   θ  ← θ·(1 − ηλ) − η·μ' / (sqrt(σ² + μ'²) + eps)
///   ```
/// - Constant VSGD: `lr` (0.1), `ghattg` K (30), `ps` γ (1e-8), `tau` κ (0.9), `eps`
///   (1e-8), `weight_decay`, `l2`, `maximize`. With pa2 = 2γ + 2, pb2 = 2γ:
///   ```text
///   v  = pb2 / (2γ + 1e-4)   if t = 1,   else b / pa2
///   μ' = (K·μ + ĝ) / (K + 1),   σ² = v / (K + 1)
///   b  ← (1−ρ)·b + ρ·(pb2 + K·(σ² + (μ'−μ)²) + σ² + (μ'−ĝ)²),   ρ = t^(−κ)
///   θ  ← θ·(1 − ηλ) − η·μ' / (sqrt(σ² + μ'²) + eps)
///   ```
/// - Adam and AdamW (torch semantics, `eps` outside the square root): `lr` (1e-3), `beta1`
///   (0.9), `beta2` (0.999), `eps` (1e-8), `weight_decay` (Adam 0, AdamW 0.01), `l2`
///   (torch's `Adam(weight_decay=…)`), `maximize`:
///   ```text
///   m ← β1·m + (1−β1)·ĝ,   v ← β2·v + (1−β2)·ĝ²
///   θ ← θ·(1 − ηλ) − (η / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
///   ```
/// - SGD with momentum (torch semantics): `lr` (0.01), `momentum` (0.9), `dampening` (0),
///   `nesterov` (0; needs momentum > 0 and dampening = 0), `weight_decay`, `l2`, `maximize`:
///   ```text
///   buf ← ĝ  if t = 1,   else momentum·buf + (1 − dampening)·ĝ
///   d   ← ĝ + momentum·buf  if nesterov,   else buf
///   θ   ← θ·(1 − ηλ) − η·d
///   ```
///
/// Errors: `NULL_PARAMETER`, `INVALID_STRING`, `UNKNOWN_HYPERPARAMETER` (a name the
/// algorithm does not have), `INVALID_CONFIG` (a boolean other than 0 or 1). On error
/// `*config` is unchanged.
///
/// # Safety
/// `config` must be NULL or a live configuration not used by another thread during the call;
/// `name` NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_set(
    config: *mut vsgd_config,
    name: *const c_char,
    value: f64,
) -> vsgd_result {
    guard("vsgd_config_set", || {
        if config.is_null() {
            return Err(Failure::null("config"));
        }
        // SAFETY: NULL or NUL-terminated (caller).
        let name = unsafe { c_str(name, "name") }?;
        // SAFETY: non-NULL, a live handle used by this thread only (caller); the reference
        // is the only one during the call.
        let c = unsafe { &mut (*config).inner };
        let mut changed = *c;
        changed.set(name, value).map_err(|e| match e {
            // Say which name was unknown: the core's message lists the known ones.
            vsgd::Error::UnknownHyperparameter { algorithm } => unknown_name(name, algorithm),
            e => e.into(),
        })?;
        *c = changed;
        Ok(())
    })
}

/// Reads a hyperparameter by name (see `vsgd_config_set`) into `*out`; booleans read as 0 or
/// 1.
///
/// Errors: `NULL_PARAMETER`, `INVALID_STRING`, `UNKNOWN_HYPERPARAMETER`.
///
/// # Safety
/// `config` must be NULL or a live configuration; `name` NULL or a NUL-terminated string;
/// `out` NULL or valid for writing one `double`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_get(
    config: *const vsgd_config,
    name: *const c_char,
    out: *mut f64,
) -> vsgd_result {
    guard("vsgd_config_get", || {
        // SAFETY: NULL or a live handle (caller).
        let c = unsafe { config_arg(config) }?;
        // SAFETY: NULL or NUL-terminated (caller).
        let name = unsafe { c_str(name, "name") }?;
        check_out(out, "out")?;
        let v = c
            .get(name)
            .ok_or_else(|| unknown_name(name, c.algorithm()))?;
        // SAFETY: checked by check_out; writable (caller).
        unsafe { write(out, v) };
        Ok(())
    })
}

/// The name of hyperparameter `index` (0, 1, …) of `algorithm`, as a static NUL-terminated
/// string into `*out` (never free it): iterate until `VSGD_RESULT_UNKNOWN_HYPERPARAMETER` to
/// list them all (VSGD: `lr`, `ghattg`, `ps`, `tau1`, `tau2`, `eps`, `weight_decay`, `l2`,
/// `maximize`). A later 1.x version may append names, never reorder them.
///
/// Errors: `NULL_PARAMETER`, `INVALID_ENUM`, `UNKNOWN_HYPERPARAMETER` (`index` too large).
///
/// # Safety
/// `out` must be NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn vsgd_hyper_name(
    algorithm: vsgd_algorithm,
    index: usize,
    out: *mut *const c_char,
) -> vsgd_result {
    guard("vsgd_hyper_name", || {
        check_out(out, "out")?;
        let a = algorithm_from_c(algorithm)?;
        let name = HYPER_NAMES
            .iter()
            .find(|(n, _)| a.hyper_names().get(index) == Some(n))
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                Failure::new(
                    VSGD_RESULT_UNKNOWN_HYPERPARAMETER,
                    format!(
                        "{a} has {} hyperparameters, index {index} asked",
                        a.hyper_names().len()
                    ),
                )
            })?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, name.as_ptr()) };
        Ok(())
    })
}

/// Every hyperparameter name of every algorithm as a static C string.
const HYPER_NAMES: &[(&str, &CStr)] = &[
    ("lr", c"lr"),
    ("ghattg", c"ghattg"),
    ("ps", c"ps"),
    ("tau1", c"tau1"),
    ("tau2", c"tau2"),
    ("tau", c"tau"),
    ("eps", c"eps"),
    ("beta1", c"beta1"),
    ("beta2", c"beta2"),
    ("momentum", c"momentum"),
    ("dampening", c"dampening"),
    ("nesterov", c"nesterov"),
    ("weight_decay", c"weight_decay"),
    ("l2", c"l2"),
    ("maximize", c"maximize"),
];

/// The name of an algorithm (`"vsgd"`, `"constant_vsgd"`, `"adam"`, `"adamw"`, `"sgdm"`) as a
/// static NUL-terminated string into `*out` (never free it).
///
/// Errors: `VSGD_RESULT_NULL_PARAMETER`, `VSGD_RESULT_INVALID_ENUM`.
///
/// # Safety
/// `out` must be NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn vsgd_algorithm_name(
    algorithm: vsgd_algorithm,
    out: *mut *const c_char,
) -> vsgd_result {
    guard("vsgd_algorithm_name", || {
        check_out(out, "out")?;
        let name: &CStr = match algorithm_from_c(algorithm)? {
            Algorithm::Vsgd => c"vsgd",
            Algorithm::ConstantVsgd => c"constant_vsgd",
            Algorithm::Adam => c"adam",
            Algorithm::AdamW => c"adamw",
            Algorithm::Sgdm => c"sgdm",
        };
        // SAFETY: checked by check_out; writable (caller).
        unsafe { write(out, name.as_ptr()) };
        Ok(())
    })
}

/// The algorithm named `name` (as `vsgd_algorithm_name` writes it) into `*out`.
///
/// Errors: `VSGD_RESULT_NULL_PARAMETER`, `VSGD_RESULT_INVALID_STRING`,
/// `VSGD_RESULT_INVALID_ENUM` (no algorithm has this name).
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_algorithm_from_name(
    name: *const c_char,
    out: *mut vsgd_algorithm,
) -> vsgd_result {
    guard("vsgd_algorithm_from_name", || {
        // SAFETY: NULL or NUL-terminated (caller).
        let name = unsafe { c_str(name, "name") }?;
        check_out(out, "out")?;
        let a = Algorithm::from_name(name).ok_or_else(|| {
            Failure::new(
                VSGD_RESULT_INVALID_ENUM,
                format!("no algorithm is named '{name}'"),
            )
        })?;
        // SAFETY: checked by check_out; writable (caller).
        unsafe { write(out, algorithm_to_c(a)) };
        Ok(())
    })
}

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
        let names = a.state_names();
        let name = names.get(index).ok_or_else(|| {
            Failure::new(
                VSGD_RESULT_STATE_COUNT,
                format!("{a} has {} state arrays, index {index} asked", names.len()),
            )
        })?;
        let c = STATE_NAMES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                Failure::new(
                    crate::error::VSGD_RESULT_OTHER_ERROR,
                    format!("state array '{name}' has no C name in this build"),
                )
            })?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, c.as_ptr()) };
        Ok(())
    })
}

/// Every state array name of every algorithm as a static C string.
const STATE_NAMES: &[(&str, &CStr)] = &[
    ("mug", c"mug"),
    ("bg", c"bg"),
    ("bhg", c"bhg"),
    ("b", c"b"),
    ("m", c"m"),
    ("v", c"v"),
    ("momentum", c"momentum"),
];

// ------------------------------------------------------------------------------ schedules

fn kind_from_c(kind: vsgd_schedule_kind) -> Result<Schedule, Failure> {
    // The defaults of each kind: torch's where torch has one (StepLR's gamma 0.1, OneCycleLR's
    // pct_start 0.3, div_factor 25, final_div_factor 1e4); lengths are 0, which validation
    // refuses until they are set.
    Ok(match kind {
        VSGD_SCHEDULE_CONSTANT => Schedule::Constant,
        VSGD_SCHEDULE_STEP_DECAY => Schedule::StepDecay {
            every: 0,
            factor: 0.1,
        },
        VSGD_SCHEDULE_COSINE => Schedule::Cosine {
            total: 0,
            min_factor: 0.0,
        },
        VSGD_SCHEDULE_ONE_CYCLE => Schedule::OneCycle {
            total: 0,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        },
        k => return Err(invalid_enum("vsgd_schedule_kind", k)),
    })
}

fn kind_to_c(s: &Schedule) -> vsgd_schedule_kind {
    match s {
        Schedule::Constant => VSGD_SCHEDULE_CONSTANT,
        Schedule::StepDecay { .. } => VSGD_SCHEDULE_STEP_DECAY,
        Schedule::Cosine { .. } => VSGD_SCHEDULE_COSINE,
        Schedule::OneCycle { .. } => VSGD_SCHEDULE_ONE_CYCLE,
    }
}

/// A step count given as a `double`: a whole number in [0, 2^53].
fn count(field: &str, value: f64) -> Result<u64, Failure> {
    if (0.0..=9_007_199_254_740_992.0).contains(&value) && value.fract() == 0.0 {
        Ok(value as u64)
    } else {
        Err(Failure::new(
            VSGD_RESULT_INVALID_SCHEDULE,
            format!("{field} = {value}: a step count must be a whole number in [0, 2^53]"),
        ))
    }
}

/// The field `name` of `s`, as a place to read or write.
enum Field<'a> {
    Count(&'a mut u64),
    Real(&'a mut f64),
}

fn field<'a>(s: &'a mut LrSchedule, name: &str) -> Option<Field<'a>> {
    if name == "warmup" {
        return Some(Field::Count(&mut s.warmup));
    }
    Some(match (&mut s.schedule, name) {
        (Schedule::StepDecay { every, .. }, "every") => Field::Count(every),
        (Schedule::StepDecay { factor, .. }, "factor") => Field::Real(factor),
        (Schedule::Cosine { total, .. }, "total") => Field::Count(total),
        (Schedule::Cosine { min_factor, .. }, "min_factor") => Field::Real(min_factor),
        (Schedule::OneCycle { total, .. }, "total") => Field::Count(total),
        (Schedule::OneCycle { pct_start, .. }, "pct_start") => Field::Real(pct_start),
        (Schedule::OneCycle { div_factor, .. }, "div_factor") => Field::Real(div_factor),
        (
            Schedule::OneCycle {
                final_div_factor, ..
            },
            "final_div_factor",
        ) => Field::Real(final_div_factor),
        _ => return None,
    })
}

fn no_field(s: &LrSchedule, name: &str) -> Failure {
    let mut names: Vec<&str> = vec!["warmup"];
    names.extend(s.schedule.bounds().iter().map(|(n, _)| *n));
    Failure::new(
        VSGD_RESULT_INVALID_SCHEDULE,
        format!(
            "a {} schedule has no field '{name}' (it has: {})",
            s.schedule.kind_name(),
            names.join(", ")
        ),
    )
}

/// Creates a schedule of `kind` into `*out` (release with `vsgd_schedule_free`), with no
/// warm-up and these defaults (torch's where it has one); set the rest with
/// `vsgd_schedule_set`. On failure `*out` is set to NULL (when `out` is not NULL).
///
/// The fields, by kind, each with its allowed range (checked where the schedule is used, or
/// by `vsgd_schedule_validate`); step counts are whole numbers given as doubles:
/// - `warmup` (every kind): step count, default 0 (none); the factor is further multiplied
///   by min(1, t / warmup)
/// - `every` (step_decay): >= 1; steps between two decays; default 0 (must be set)
/// - `factor` (step_decay): (0, 1]; multiplier at each decay; default 0.1
/// - `total` (cosine): >= 1; length in steps; default 0 (must be set)
/// - `min_factor` (cosine): [0, 1]; final fraction of η; default 0
/// - `total` (one_cycle): >= 3; length in steps; default 0 (must be set)
/// - `pct_start` (one_cycle): (0, 1); fraction of the cycle spent rising; default 0.3
/// - `div_factor` (one_cycle): finite and >= 1; the first rate is η / div_factor; default 25
/// - `final_div_factor` (one_cycle): finite and >= 1; the last rate is the first one /
///   final_div_factor; default 1e4
///
/// Errors: `NULL_PARAMETER`, `INVALID_ENUM`, `ALLOCATION_FAILED`.
///
/// # Safety
/// `out` must be NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_schedule_new(
    kind: vsgd_schedule_kind,
    out: *mut *mut vsgd_schedule,
) -> vsgd_result {
    guard("vsgd_schedule_new", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        let h = schedule_handle(LrSchedule::from(kind_from_c(kind)?))?;
        // SAFETY: as above.
        unsafe { write(out, h) };
        Ok(())
    })
}

/// A new schedule equal to `*schedule`, into `*out` (release with `vsgd_schedule_free`). On
/// failure `*out` is set to NULL (when `out` is not NULL).
///
/// Errors: `NULL_PARAMETER`, `ALLOCATION_FAILED`.
///
/// # Safety
/// `schedule` must be NULL or a live schedule; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_schedule_clone(
    schedule: *const vsgd_schedule,
    out: *mut *mut vsgd_schedule,
) -> vsgd_result {
    guard("vsgd_schedule_clone", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        // SAFETY: NULL or a live handle (caller).
        let s = unsafe { schedule_arg(schedule) }?;
        let h = schedule_handle(s)?;
        // SAFETY: as above.
        unsafe { write(out, h) };
        Ok(())
    })
}

/// Releases a schedule. NULL is accepted and does nothing; freeing twice is undefined.
///
/// # Safety
/// `schedule` must be NULL or a live schedule not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn vsgd_schedule_free(schedule: *mut vsgd_schedule) {
    // SAFETY: NULL or from try_box (every constructor), released once (caller).
    unsafe { free_box(schedule) }
}

/// The kind of `*schedule` (`VSGD_SCHEDULE_*`), into `*out`.
///
/// # Safety
/// `schedule` must be NULL or a live schedule; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_schedule_kind_of(
    schedule: *const vsgd_schedule,
    out: *mut vsgd_schedule_kind,
) -> vsgd_result {
    guard("vsgd_schedule_kind_of", || {
        check_out(out, "out")?;
        // SAFETY: NULL or a live handle (caller).
        let s = unsafe { schedule_arg(schedule) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, kind_to_c(&s.schedule)) };
        Ok(())
    })
}

/// Sets field `name` of `*schedule` (see `vsgd_schedule_new` for the fields of each kind).
/// Ranges are checked where the schedule is used (or by `vsgd_schedule_validate`); a step
/// count that is not a whole number in [0, 2^53] is refused here.
///
/// Errors: `NULL_PARAMETER`, `INVALID_STRING`, `INVALID_SCHEDULE` (a field this kind does not
/// have, or a bad step count). On error `*schedule` is unchanged.
///
/// # Safety
/// `schedule` must be NULL or a live schedule not used by another thread during the call;
/// `name` NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vsgd_schedule_set(
    schedule: *mut vsgd_schedule,
    name: *const c_char,
    value: f64,
) -> vsgd_result {
    guard("vsgd_schedule_set", || {
        if schedule.is_null() {
            return Err(Failure::null("schedule"));
        }
        // SAFETY: NULL or NUL-terminated (caller).
        let name = unsafe { c_str(name, "name") }?;
        // SAFETY: non-NULL, live, used by this thread only (caller).
        let s = unsafe { &mut (*schedule).inner };
        let copy = *s;
        match field(s, name).ok_or_else(|| no_field(&copy, name))? {
            Field::Count(c) => *c = count(name, value)?,
            Field::Real(r) => *r = value,
        }
        Ok(())
    })
}

/// Reads field `name` of `*schedule` into `*out` (step counts as whole doubles).
///
/// Errors: `NULL_PARAMETER`, `INVALID_STRING`, `INVALID_SCHEDULE` (no such field).
///
/// # Safety
/// `schedule` must be NULL or a live schedule; `name` NULL or a NUL-terminated string; `out`
/// NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_schedule_get(
    schedule: *const vsgd_schedule,
    name: *const c_char,
    out: *mut f64,
) -> vsgd_result {
    guard("vsgd_schedule_get", || {
        // SAFETY: NULL or a live handle (caller).
        let mut s = unsafe { schedule_arg(schedule) }?;
        // SAFETY: NULL or NUL-terminated (caller).
        let name = unsafe { c_str(name, "name") }?;
        check_out(out, "out")?;
        let copy = s;
        let v = match field(&mut s, name).ok_or_else(|| no_field(&copy, name))? {
            Field::Count(c) => *c as f64,
            Field::Real(r) => *r,
        };
        // SAFETY: checked; writable (caller).
        unsafe { write(out, v) };
        Ok(())
    })
}

/// Checks every field of `*schedule` against its range (`VSGD_RESULT_INVALID_SCHEDULE`
/// names the first bad one and the allowed range).
///
/// # Safety
/// `schedule` must be NULL or a live schedule.
#[no_mangle]
pub unsafe extern "C" fn vsgd_schedule_validate(schedule: *const vsgd_schedule) -> vsgd_result {
    guard("vsgd_schedule_validate", || {
        // SAFETY: NULL or a live handle (caller).
        let s = unsafe { schedule_arg(schedule) }?;
        Ok(s.validate()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{VSGD_RESULT_INVALID_CONFIG, VSGD_RESULT_OK};

    fn new(a: Algorithm) -> *mut vsgd_config {
        let mut c = core::ptr::null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { vsgd_config_new(a as u32, &mut c) }, VSGD_RESULT_OK);
        c
    }

    #[test]
    fn defaults_and_names_round_trip() {
        for a in Algorithm::ALL {
            let h = new(a);
            // SAFETY: live handle.
            assert_eq!(unsafe { &(*h).inner }, &Config::default_for(a));
            let mut k = 0;
            loop {
                let mut name = core::ptr::null();
                // SAFETY: valid pointers.
                let r = unsafe { vsgd_hyper_name(a as u32, k, &mut name) };
                if r != VSGD_RESULT_OK {
                    assert_eq!(r, VSGD_RESULT_UNKNOWN_HYPERPARAMETER);
                    break;
                }
                // SAFETY: a static NUL-terminated string.
                let n = unsafe { CStr::from_ptr(name) }.to_str().unwrap();
                assert_eq!(n, a.hyper_names()[k]);
                let mut v = f64::NAN;
                // SAFETY: valid pointers.
                let r = unsafe { vsgd_config_get(h, name, &mut v) };
                assert_eq!(
                    (r, v),
                    (VSGD_RESULT_OK, Config::default_for(a).get(n).unwrap())
                );
                k += 1;
            }
            assert_eq!(k, a.hyper_names().len());
            for (j, want) in a.state_names().iter().enumerate() {
                let mut name = core::ptr::null();
                // SAFETY: valid pointers; a static string comes back.
                unsafe {
                    assert_eq!(vsgd_state_name(a as u32, j, &mut name), VSGD_RESULT_OK);
                    assert_eq!(CStr::from_ptr(name).to_str().unwrap(), *want);
                }
            }
            // SAFETY: releasing once.
            unsafe { vsgd_config_free(h) };
        }
    }

    #[test]
    fn bad_flags_names_and_tags_are_rejected_and_change_nothing() {
        let h = new(Algorithm::Sgdm);
        // SAFETY: live handle, static strings.
        unsafe {
            assert_eq!(
                vsgd_config_set(h, c"nesterov".as_ptr(), 2.0),
                VSGD_RESULT_INVALID_CONFIG
            );
            assert_eq!(
                vsgd_config_set(h, c"tau".as_ptr(), 0.5),
                VSGD_RESULT_UNKNOWN_HYPERPARAMETER
            );
            assert!(crate::error::last_error_string().contains("'tau'"));
            assert_eq!((*h).inner, Config::default_for(Algorithm::Sgdm));
            vsgd_config_free(h);
            let mut out = core::ptr::NonNull::dangling().as_ptr();
            assert_eq!(vsgd_config_new(5, &mut out), VSGD_RESULT_INVALID_ENUM);
            assert!(out.is_null());
        }
    }

    #[test]
    fn schedule_fields_by_kind() {
        let mut s = core::ptr::null_mut();
        // SAFETY: valid pointers; handles freed once.
        unsafe {
            assert_eq!(
                vsgd_schedule_new(VSGD_SCHEDULE_ONE_CYCLE, &mut s),
                VSGD_RESULT_OK
            );
            assert_eq!(vsgd_schedule_validate(s), VSGD_RESULT_INVALID_SCHEDULE);
            assert_eq!(
                vsgd_schedule_set(s, c"total".as_ptr(), 100.0),
                VSGD_RESULT_OK
            );
            assert_eq!(
                vsgd_schedule_set(s, c"warmup".as_ptr(), 5.0),
                VSGD_RESULT_OK
            );
            assert_eq!(vsgd_schedule_validate(s), VSGD_RESULT_OK);
            assert_eq!(
                (*s).inner,
                LrSchedule {
                    schedule: Schedule::OneCycle {
                        total: 100,
                        pct_start: 0.3,
                        div_factor: 25.0,
                        final_div_factor: 1e4
                    },
                    warmup: 5
                }
            );
            for bad in [-1.0, 2.5, f64::NAN, 1e300] {
                assert_eq!(
                    vsgd_schedule_set(s, c"total".as_ptr(), bad),
                    VSGD_RESULT_INVALID_SCHEDULE
                );
            }
            assert_eq!(
                vsgd_schedule_set(s, c"every".as_ptr(), 3.0),
                VSGD_RESULT_INVALID_SCHEDULE
            );
            assert!(crate::error::last_error_string().contains("no field 'every'"));
            let mut v = 0.0;
            assert_eq!(
                vsgd_schedule_get(s, c"total".as_ptr(), &mut v),
                VSGD_RESULT_OK
            );
            assert_eq!(v, 100.0);
            let mut k = 9;
            assert_eq!(vsgd_schedule_kind_of(s, &mut k), VSGD_RESULT_OK);
            assert_eq!(k, VSGD_SCHEDULE_ONE_CYCLE);
            vsgd_schedule_free(s);
            vsgd_schedule_free(core::ptr::null_mut());
        }
    }
}
