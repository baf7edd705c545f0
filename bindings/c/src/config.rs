//! Plain C values: the enum-like typedefs, the configuration of every algorithm (a tagged
//! union) and learning-rate schedules, with their conversions to the core types.

use core::ffi::{c_char, CStr};

use vsgd::{
    AdamConfig, Algorithm, Config, ConstantVsgdConfig, DType, LrSchedule, NonFinitePolicy,
    Schedule, SgdmConfig, VsgdConfig,
};

use crate::buffers::{c_str, check_out, input, write};
use crate::error::{
    guard, vsgd_result, Failure, VSGD_RESULT_INVALID_CONFIG, VSGD_RESULT_INVALID_ENUM,
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

/// What a step does with a gradient holding NaN or infinity: one of `VSGD_POLICY_*`.
pub type vsgd_policy = u32;
/// Leave the tensor untouched (parameter, state, step counter) and report it as skipped.
/// The default of a new handle.
pub const VSGD_POLICY_SKIP: vsgd_policy = 0;
/// Fail with `VSGD_RESULT_NON_FINITE_GRADIENT`, changing nothing.
pub const VSGD_POLICY_ERROR: vsgd_policy = 1;
/// Apply the update anyway, as the published code does (NaN spreads into the state).
pub const VSGD_POLICY_PROPAGATE: vsgd_policy = 2;

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

/// VSGD hyperparameters (`VSGD_ALGORITHM_VSGD`); defaults are the authors'. With
/// pa2 = 2γ + 1 + 1e-4, pbg2 = 2γ, pbhg2 = 2Kγ, one step of one element is
/// ```text
/// sg, shg = (pbg2, pbhg2) / (pa2 − 1)   if t = 1,   else (bg, bhg) / pa2
/// μ' = wg·ĝ + wm·μ,  wg = sg/(sg+shg),  wm = shg/(sg+shg),  σ² = sg·wm
/// bg  ← (1−ρ1)·bg  + ρ1·(pbg2  + σ² + (μ'−μ)²),   ρ1 = t^(−κ1)
/// bhg ← (1−ρ2)·bhg + ρ2·(pbhg2 + σ² + (μ'−ĝ)²),   ρ2 = t^(−κ2)
/// θ  ← θ·(1 − ηλ) − η·μ' / (sqrt(σ² + μ'²) + eps)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct vsgd_params_vsgd {
    /// Learning rate η (default 0.1), > 0.
    pub lr: f64,
    /// K = Var(ĝ − g) / Var(g − g_prev), the prior noise ratio (default 30), in [1e-6, 1e6].
    pub ghattg: f64,
    /// γ, the prior strength (default 1e-8), in [1e-30, 1e6].
    pub ps: f64,
    /// κ1, forgetting exponent of `bg` (default 0.81), in (0, 1].
    pub tau1: f64,
    /// κ2, forgetting exponent of `bhg` (default 0.9), in (0, 1].
    pub tau2: f64,
    /// Added to the denominator (default 1e-8), ≥ 1e-30.
    pub eps: f64,
    /// Decoupled weight decay λ (default 0), ≥ 0.
    pub weight_decay: f64,
    /// Coupled L2 penalty: ĝ ← ĝ + l2·θ (default 0), ≥ 0.
    pub l2: f64,
    /// 1: ascend instead of descend (uses −ĝ); 0: descend (default). Other values are invalid.
    pub maximize: u32,
}

/// Constant VSGD hyperparameters (`VSGD_ALGORITHM_CONSTANT_VSGD`). With pa2 = 2γ + 2,
/// pb2 = 2γ:
/// ```text
/// v  = pb2 / (2γ + 1e-4)   if t = 1,   else b / pa2
/// μ' = (K·μ + ĝ) / (K + 1),   σ² = v / (K + 1)
/// b  ← (1−ρ)·b + ρ·(pb2 + K·(σ² + (μ'−μ)²) + σ² + (μ'−ĝ)²),   ρ = t^(−κ)
/// θ  ← θ·(1 − ηλ) − η·μ' / (sqrt(σ² + μ'²) + eps)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct vsgd_params_constant_vsgd {
    /// Learning rate η (default 0.1), > 0.
    pub lr: f64,
    /// K (default 30), in [1e-6, 1e6]. The mean update is Adam's with β1 = K/(K+1).
    pub ghattg: f64,
    /// γ (default 1e-8), in [1e-30, 1e6].
    pub ps: f64,
    /// κ, forgetting exponent of `b` (default 0.9), in (0, 1].
    pub tau: f64,
    /// Added to the denominator (default 1e-8), ≥ 1e-30.
    pub eps: f64,
    /// Decoupled weight decay λ (default 0), ≥ 0.
    pub weight_decay: f64,
    /// Coupled L2 penalty (default 0), ≥ 0.
    pub l2: f64,
    /// 1: ascend; 0: descend (default).
    pub maximize: u32,
}

/// Adam and AdamW hyperparameters (`VSGD_ALGORITHM_ADAM`, `VSGD_ALGORITHM_ADAMW`; torch
/// semantics, `eps` outside the square root):
/// ```text
/// m ← β1·m + (1−β1)·ĝ,   v ← β2·v + (1−β2)·ĝ²
/// θ ← θ·(1 − ηλ) − (η / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct vsgd_params_adam {
    /// Learning rate η (default 1e-3), > 0.
    pub lr: f64,
    /// β1 (default 0.9), in [0, 1).
    pub beta1: f64,
    /// β2 (default 0.999), in [0, 1).
    pub beta2: f64,
    /// Added to the denominator (default 1e-8), ≥ 1e-30.
    pub eps: f64,
    /// Decoupled weight decay λ (Adam: 0, AdamW: 0.01), ≥ 0.
    pub weight_decay: f64,
    /// Coupled L2 penalty (torch's `Adam(weight_decay=…)`), ≥ 0.
    pub l2: f64,
    /// 1: ascend; 0: descend (default).
    pub maximize: u32,
}

/// SGD with momentum (`VSGD_ALGORITHM_SGDM`; torch semantics, the buffer starts as the first
/// gradient):
/// ```text
/// buf ← ĝ  if t = 1,   else momentum·buf + (1 − dampening)·ĝ
/// d   ← ĝ + momentum·buf  if nesterov,   else buf
/// θ   ← θ·(1 − ηλ) − η·d
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct vsgd_params_sgdm {
    /// Learning rate η (default 0.01), > 0.
    pub lr: f64,
    /// Momentum (default 0.9), in [0, 1].
    pub momentum: f64,
    /// Dampening (default 0), in [0, 1].
    pub dampening: f64,
    /// 1: Nesterov momentum (needs momentum > 0 and dampening = 0); 0: off (default).
    pub nesterov: u32,
    /// Decoupled weight decay λ (default 0), ≥ 0.
    pub weight_decay: f64,
    /// Coupled L2 penalty (torch's `SGD(weight_decay=…)`), ≥ 0.
    pub l2: f64,
    /// 1: ascend; 0: descend (default).
    pub maximize: u32,
}

/// The hyperparameters of one algorithm; `vsgd_config.algorithm` says which member is used.
#[repr(C)]
#[derive(Clone, Copy)]
pub union vsgd_params {
    /// For `VSGD_ALGORITHM_VSGD`.
    pub vsgd: vsgd_params_vsgd,
    /// For `VSGD_ALGORITHM_CONSTANT_VSGD`.
    pub constant_vsgd: vsgd_params_constant_vsgd,
    /// For `VSGD_ALGORITHM_ADAM` and `VSGD_ALGORITHM_ADAMW`.
    pub adam: vsgd_params_adam,
    /// For `VSGD_ALGORITHM_SGDM`.
    pub sgdm: vsgd_params_sgdm,
}

/// The configuration of one algorithm: a plain value the caller owns, copied by every
/// function that takes it (no function keeps the pointer).
///
/// Start from `vsgd_config_default`, then change members of `params` directly or by name with
/// `vsgd_config_set`; functions that use a configuration validate it
/// (`VSGD_RESULT_INVALID_CONFIG` names the field and its allowed range).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct vsgd_config {
    /// Which algorithm, and so which member of `params` is read.
    pub algorithm: vsgd_algorithm,
    /// Its hyperparameters.
    pub params: vsgd_params,
}

/// A learning-rate schedule: the factor applied to a group's base learning rate at a
/// tensor's update number t (1, 2, …). Zero-initialize it, set `kind` and the fields that
/// kind uses; the other fields are ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct vsgd_schedule {
    /// Which schedule (`VSGD_SCHEDULE_*`).
    pub kind: vsgd_schedule_kind,
    /// Linear warm-up length in steps (every kind; 0: none): the factor is further
    /// multiplied by min(1, t / warmup).
    pub warmup: u64,
    /// `VSGD_SCHEDULE_STEP_DECAY`: steps between two decays, ≥ 1.
    pub every: u64,
    /// `VSGD_SCHEDULE_STEP_DECAY`: multiplier at each decay, in (0, 1].
    pub factor: f64,
    /// `VSGD_SCHEDULE_COSINE` (≥ 1) and `VSGD_SCHEDULE_ONE_CYCLE` (≥ 2): length in steps.
    pub total: u64,
    /// `VSGD_SCHEDULE_COSINE`: final fraction of η, in [0, 1].
    pub min_factor: f64,
    /// `VSGD_SCHEDULE_ONE_CYCLE`: fraction of the cycle spent rising, in (0, 1).
    pub pct_start: f64,
    /// `VSGD_SCHEDULE_ONE_CYCLE`: initial learning rate is η / div_factor (torch: 25), ≥ 1.
    pub div_factor: f64,
    /// `VSGD_SCHEDULE_ONE_CYCLE`: final rate is the initial one / final_div_factor (torch:
    /// 1e4), ≥ 1.
    pub final_div_factor: f64,
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
        _ => Err(invalid_enum("vsgd_dtype", d)),
    }
}

pub(crate) fn dtype_to_c(d: DType) -> vsgd_dtype {
    match d {
        DType::F32 => VSGD_DTYPE_F32,
        DType::F64 => VSGD_DTYPE_F64,
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

fn flag(a: Algorithm, field: &'static str, v: u32) -> Result<bool, Failure> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Failure::new(
            VSGD_RESULT_INVALID_CONFIG,
            format!("invalid {a} config: {field} = {v} (allowed: 0 (false) or 1 (true))"),
        )),
    }
}

/// The core configuration a C value describes. Ranges are *not* checked here (the core's
/// `Config::validate` does that where a configuration is used); the algorithm tag and the
/// booleans are, since they have no core representation otherwise.
pub(crate) fn config_from_c(c: &vsgd_config) -> Result<Config, Failure> {
    let a = algorithm_from_c(c.algorithm)?;
    // SAFETY (every union read below): each member is plain `f64`/`u32` fields, for which
    // every bit pattern is valid, and the member read is the one `algorithm` selects, which
    // the caller filled (vsgd_config_default writes all of it).
    Ok(match a {
        Algorithm::Vsgd => {
            let p = unsafe { c.params.vsgd };
            Config::Vsgd(VsgdConfig {
                lr: p.lr,
                ghattg: p.ghattg,
                ps: p.ps,
                tau1: p.tau1,
                tau2: p.tau2,
                eps: p.eps,
                weight_decay: p.weight_decay,
                l2: p.l2,
                maximize: flag(a, "maximize", p.maximize)?,
            })
        }
        Algorithm::ConstantVsgd => {
            let p = unsafe { c.params.constant_vsgd };
            Config::ConstantVsgd(ConstantVsgdConfig {
                lr: p.lr,
                ghattg: p.ghattg,
                ps: p.ps,
                tau: p.tau,
                eps: p.eps,
                weight_decay: p.weight_decay,
                l2: p.l2,
                maximize: flag(a, "maximize", p.maximize)?,
            })
        }
        Algorithm::Adam | Algorithm::AdamW => {
            let p = unsafe { c.params.adam };
            let adam = AdamConfig {
                lr: p.lr,
                beta1: p.beta1,
                beta2: p.beta2,
                eps: p.eps,
                weight_decay: p.weight_decay,
                l2: p.l2,
                maximize: flag(a, "maximize", p.maximize)?,
            };
            if a == Algorithm::Adam {
                Config::Adam(adam)
            } else {
                Config::AdamW(adam)
            }
        }
        Algorithm::Sgdm => {
            let p = unsafe { c.params.sgdm };
            Config::Sgdm(SgdmConfig {
                lr: p.lr,
                momentum: p.momentum,
                dampening: p.dampening,
                nesterov: flag(a, "nesterov", p.nesterov)?,
                weight_decay: p.weight_decay,
                l2: p.l2,
                maximize: flag(a, "maximize", p.maximize)?,
            })
        }
    })
}

pub(crate) fn config_to_c(c: &Config) -> vsgd_config {
    let b = u32::from;
    // Start from all-zero bytes so the bytes a smaller member leaves unused are initialized
    // too (the caller may copy the struct byte-wise, e.g. into an XLA opaque descriptor).
    // SAFETY: vsgd_config is plain integers and floats; all-zero is a valid value.
    let mut out: vsgd_config = unsafe { core::mem::zeroed() };
    out.algorithm = algorithm_to_c(c.algorithm());
    match *c {
        Config::Vsgd(p) => {
            out.params.vsgd = vsgd_params_vsgd {
                lr: p.lr,
                ghattg: p.ghattg,
                ps: p.ps,
                tau1: p.tau1,
                tau2: p.tau2,
                eps: p.eps,
                weight_decay: p.weight_decay,
                l2: p.l2,
                maximize: b(p.maximize),
            }
        }
        Config::ConstantVsgd(p) => {
            out.params.constant_vsgd = vsgd_params_constant_vsgd {
                lr: p.lr,
                ghattg: p.ghattg,
                ps: p.ps,
                tau: p.tau,
                eps: p.eps,
                weight_decay: p.weight_decay,
                l2: p.l2,
                maximize: b(p.maximize),
            }
        }
        Config::Adam(p) | Config::AdamW(p) => {
            out.params.adam = vsgd_params_adam {
                lr: p.lr,
                beta1: p.beta1,
                beta2: p.beta2,
                eps: p.eps,
                weight_decay: p.weight_decay,
                l2: p.l2,
                maximize: b(p.maximize),
            }
        }
        Config::Sgdm(p) => {
            out.params.sgdm = vsgd_params_sgdm {
                lr: p.lr,
                momentum: p.momentum,
                dampening: p.dampening,
                nesterov: b(p.nesterov),
                weight_decay: p.weight_decay,
                l2: p.l2,
                maximize: b(p.maximize),
            }
        }
    }
    out
}

pub(crate) fn schedule_from_c(s: &vsgd_schedule) -> Result<LrSchedule, Failure> {
    let schedule = match s.kind {
        VSGD_SCHEDULE_CONSTANT => Schedule::Constant,
        VSGD_SCHEDULE_STEP_DECAY => Schedule::StepDecay {
            every: s.every,
            factor: s.factor,
        },
        VSGD_SCHEDULE_COSINE => Schedule::Cosine {
            total: s.total,
            min_factor: s.min_factor,
        },
        VSGD_SCHEDULE_ONE_CYCLE => Schedule::OneCycle {
            total: s.total,
            pct_start: s.pct_start,
            div_factor: s.div_factor,
            final_div_factor: s.final_div_factor,
        },
        k => return Err(invalid_enum("vsgd_schedule_kind", k)),
    };
    Ok(LrSchedule {
        schedule,
        warmup: s.warmup,
    })
}

/// Fills `*out` with the defaults of `algorithm` (the authors' for VSGD, torch's for the
/// others), every byte written.
///
/// Errors: `VSGD_RESULT_NULL_PARAMETER` (`out`), `VSGD_RESULT_INVALID_ENUM` (`algorithm`).
///
/// # Safety
/// `out` must be NULL or valid for writing one `vsgd_config`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_default(
    algorithm: vsgd_algorithm,
    out: *mut vsgd_config,
) -> vsgd_result {
    guard("vsgd_config_default", || {
        check_out(out, "out")?;
        let a = algorithm_from_c(algorithm)?;
        // SAFETY: checked above; valid for a write (caller).
        unsafe { write(out, config_to_c(&Config::default_for(a))) };
        Ok(())
    })
}

/// Checks every hyperparameter of `*config` against its range. `VSGD_RESULT_INVALID_CONFIG`
/// names the first bad field, its value and the allowed range.
///
/// # Safety
/// `config` must be NULL or point at a `vsgd_config`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_validate(config: *const vsgd_config) -> vsgd_result {
    guard("vsgd_config_validate", || {
        // SAFETY: NULL or a valid vsgd_config (caller).
        let c = config_from_c(unsafe { input(config, "config") }?)?;
        c.validate().map_err(vsgd::Error::from)?;
        Ok(())
    })
}

/// Sets a hyperparameter by name (`"lr"`, `"ghattg"`, `"tau1"`, `"beta1"`, `"momentum"`, …:
/// the member names of the algorithm's `vsgd_params_*`). Booleans take 0 or 1. The range is
/// not checked here (call `vsgd_config_validate` once all fields are set, or let the function
/// that uses the configuration do it), so fields can be changed in any order.
///
/// Errors: `VSGD_RESULT_NULL_PARAMETER`, `VSGD_RESULT_INVALID_STRING`,
/// `VSGD_RESULT_INVALID_ENUM` (`config->algorithm`), `VSGD_RESULT_UNKNOWN_HYPERPARAMETER`,
/// `VSGD_RESULT_INVALID_CONFIG` (a boolean other than 0 or 1). On error `*config` is unchanged.
///
/// # Safety
/// `config` must be NULL or valid for reading and writing one `vsgd_config`; `name` NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_set(
    config: *mut vsgd_config,
    name: *const c_char,
    value: f64,
) -> vsgd_result {
    guard("vsgd_config_set", || {
        // SAFETY: NULL or a valid vsgd_config (caller); copied out before the write below.
        let mut c = config_from_c(unsafe { input(config, "config") }?)?;
        // SAFETY: NULL or NUL-terminated (caller).
        let name = unsafe { c_str(name, "name") }?;
        c.set(name, value).map_err(|e| match e {
            // Say which name was unknown: the core's message lists the known ones.
            vsgd::Error::UnknownHyperparameter { .. } => {
                let f = Failure::from(e);
                Failure::new(f.code, format!("'{name}': {}", f.message))
            }
            e => e.into(),
        })?;
        // SAFETY: `config` passed `input` (non-NULL, aligned) and is writable (caller).
        unsafe { write(config, config_to_c(&c)) };
        Ok(())
    })
}

/// Reads a hyperparameter by name into `*out` (booleans read as 0 or 1).
///
/// Errors: `VSGD_RESULT_NULL_PARAMETER`, `VSGD_RESULT_INVALID_STRING`,
/// `VSGD_RESULT_INVALID_ENUM`, `VSGD_RESULT_UNKNOWN_HYPERPARAMETER`,
/// `VSGD_RESULT_INVALID_CONFIG` (a boolean field holding neither 0 nor 1).
///
/// # Safety
/// `config` must be NULL or point at a `vsgd_config`; `name` NULL or a NUL-terminated string;
/// `out` NULL or valid for writing one `double`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_config_get(
    config: *const vsgd_config,
    name: *const c_char,
    out: *mut f64,
) -> vsgd_result {
    guard("vsgd_config_get", || {
        // SAFETY: NULL or a valid vsgd_config (caller).
        let c = config_from_c(unsafe { input(config, "config") }?)?;
        // SAFETY: NULL or NUL-terminated (caller).
        let name = unsafe { c_str(name, "name") }?;
        check_out(out, "out")?;
        let v = c.get(name).ok_or_else(|| {
            let f = Failure::from(vsgd::Error::UnknownHyperparameter {
                algorithm: c.algorithm(),
            });
            Failure::new(f.code, format!("'{name}': {}", f.message))
        })?;
        // SAFETY: checked by check_out; writable (caller).
        unsafe { write(out, v) };
        Ok(())
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{VSGD_RESULT_OK, VSGD_RESULT_UNKNOWN_HYPERPARAMETER};

    #[test]
    fn defaults_round_trip_through_c() {
        for a in Algorithm::ALL {
            let c = Config::default_for(a);
            assert_eq!(config_from_c(&config_to_c(&c)).unwrap(), c);
            let mut out = config_to_c(&Config::default_for(Algorithm::Sgdm));
            // SAFETY: valid pointer.
            assert_eq!(
                unsafe { vsgd_config_default(a as u32, &mut out) },
                VSGD_RESULT_OK
            );
            assert_eq!(config_from_c(&out).unwrap(), c);
            for name in a.hyper_names() {
                let cname = std::ffi::CString::new(*name).unwrap();
                let mut v = f64::NAN;
                // SAFETY: valid pointers.
                let r = unsafe { vsgd_config_get(&out, cname.as_ptr(), &mut v) };
                assert_eq!((r, v), (VSGD_RESULT_OK, c.get(name).unwrap()));
            }
        }
    }

    #[test]
    fn bad_tags_and_flags_are_rejected() {
        let mut c = config_to_c(&Config::default_for(Algorithm::Sgdm));
        c.params.sgdm.nesterov = 2;
        assert_eq!(
            config_from_c(&c).unwrap_err().code,
            VSGD_RESULT_INVALID_CONFIG
        );
        c.algorithm = 5;
        assert_eq!(
            config_from_c(&c).unwrap_err().code,
            VSGD_RESULT_INVALID_ENUM
        );
        let mut v = 0.0;
        // SAFETY: valid pointers.
        let r = unsafe {
            vsgd_config_get(
                &config_to_c(&Config::default_for(Algorithm::Adam)),
                c"tau".as_ptr(),
                &mut v,
            )
        };
        assert_eq!(r, VSGD_RESULT_UNKNOWN_HYPERPARAMETER);
        assert!(crate::error::last_error_string().contains("'tau'"));
    }
}
