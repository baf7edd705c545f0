//! Hyperparameters of every algorithm, their defaults and their validation.
//!
//! Names follow `docs/spec.md` (the authors' names for VSGD). Weight decay is named
//! the same way for every algorithm: `weight_decay` is *decoupled* (θ ← θ·(1 − η·λ) before the
//! update, AdamW-style) and `l2` is *coupled* (ĝ ← ĝ + l2·θ). So torch's `Adam(weight_decay=x)`
//! is our `adam` with `l2 = x`.

use core::fmt;

use crate::error::Error;

/// The optimizers this library implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Algorithm {
    /// Variational SGD (the paper's Algorithm 1). State: `mug`, `bg`, `bhg`.
    Vsgd = 0,
    /// Constant VSGD (the paper's Algorithm 2). State: `mug`, `b`.
    ConstantVsgd = 1,
    /// Adam (torch.optim.Adam semantics). State: `m`, `v`.
    Adam = 2,
    /// AdamW: Adam whose `weight_decay` (decoupled) defaults to 0.01. State: `m`, `v`.
    AdamW = 3,
    /// SGD with momentum, dampening and Nesterov (torch.optim.SGD semantics). State: `momentum`.
    Sgdm = 4,
}

impl Algorithm {
    /// Every algorithm, in tag order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Vsgd,
        Algorithm::ConstantVsgd,
        Algorithm::Adam,
        Algorithm::AdamW,
        Algorithm::Sgdm,
    ];

    /// The name used by conformance cases, the CLI and checkpoints.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Vsgd => "vsgd",
            Algorithm::ConstantVsgd => "constant_vsgd",
            Algorithm::Adam => "adam",
            Algorithm::AdamW => "adamw",
            Algorithm::Sgdm => "sgdm",
        }
    }

    /// Parses a name as written by [`Algorithm::name`].
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Names of the per-element state arrays, in the order kernels take them.
    pub const fn state_names(self) -> &'static [&'static str] {
        match self {
            Algorithm::Vsgd => &["mug", "bg", "bhg"],
            Algorithm::ConstantVsgd => &["mug", "b"],
            Algorithm::Adam | Algorithm::AdamW => &["m", "v"],
            Algorithm::Sgdm => &["momentum"],
        }
    }

    /// How many state arrays (each as long as the parameter) the algorithm keeps.
    pub const fn state_count(self) -> usize {
        self.state_names().len()
    }

    /// Names of the hyperparameters [`Config::get`] and [`Config::set`] accept for this
    /// algorithm. Boolean options (`maximize`, `nesterov`) read as 0 or 1.
    pub const fn hyper_names(self) -> &'static [&'static str] {
        match self {
            Algorithm::Vsgd => &[
                "lr",
                "ghattg",
                "ps",
                "tau1",
                "tau2",
                "eps",
                "weight_decay",
                "l2",
                "maximize",
            ],
            Algorithm::ConstantVsgd => &[
                "lr",
                "ghattg",
                "ps",
                "tau",
                "eps",
                "weight_decay",
                "l2",
                "maximize",
            ],
            Algorithm::Adam | Algorithm::AdamW => &[
                "lr",
                "beta1",
                "beta2",
                "eps",
                "weight_decay",
                "l2",
                "maximize",
            ],
            Algorithm::Sgdm => &[
                "lr",
                "momentum",
                "dampening",
                "nesterov",
                "weight_decay",
                "l2",
                "maximize",
            ],
        }
    }

    /// The range hyperparameter `name` of this algorithm must lie in, in words, as
    /// [`Config::validate`] checks it (the single source of these bounds: error messages and
    /// the C documentation use it); `None` for a name the algorithm does not have. Booleans:
    /// `0 or 1`. A learning rate of 0 is also accepted at run time (`set_lr`, schedules).
    pub fn hyper_allowed(self, name: &str) -> Option<&'static str> {
        if !self.hyper_names().contains(&name) {
            return None;
        }
        Some(match name {
            "lr" => LR,
            "ghattg" => GHATTG,
            "ps" => PS,
            "tau" | "tau1" | "tau2" => TAU,
            "eps" => EPS,
            "weight_decay" | "l2" => NON_NEGATIVE,
            "beta1" | "beta2" => UNIT_OPEN,
            "momentum" | "dampening" => UNIT,
            "maximize" | "nesterov" => BOOL,
            _ => return None,
        })
    }

    /// Bytes one `f32` step moves per element: the parameter and state read and written,
    /// the gradient read.
    pub const fn bytes_per_element(self, elem_size: usize) -> usize {
        (2 + 2 * self.state_count() + 1) * elem_size
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hyperparameter outside its allowed range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConfigError {
    /// The algorithm whose configuration was checked.
    pub algorithm: Algorithm,
    /// The offending field, by its public name.
    pub field: &'static str,
    /// The value that was given.
    pub value: f64,
    /// The allowed range, in words.
    pub allowed: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} config: {} = {} (allowed: {})",
            self.algorithm, self.field, self.value, self.allowed
        )
    }
}

/// Lower bound of `ps`, `eps`: keeps the derived constants positive *normal* float32 numbers,
/// so no step ever divides zero by zero.
pub const MIN_TINY: f64 = 1e-30;

/// Upper bound of learning rates, `weight_decay` and `l2`: keeps them finite in f32.
pub const MAX_LR: f64 = 1e30;

/// VSGD hyperparameters (Algorithm 1). Defaults are the authors'.
///
/// With `pa2 = 2γ + 1 + 1e-4`, `pbg2 = 2γ`, `pbhg2 = 2Kγ`, one step of one element is
/// ```text
/// sg, shg = (pbg2, pbhg2) / (pa2 − 1)   if t = 1,   else (bg, bhg) / pa2
/// μ' = wg·ĝ + wm·μ,  wg = sg/(sg+shg),  wm = shg/(sg+shg),  σ² = sg·wm
/// bg  ← (1−ρ1)·bg  + ρ1·(pbg2  + σ² + (μ'−μ)²),   ρ1 = t^(−κ1)
/// bhg ← (1−ρ2)·bhg + ρ2·(pbhg2 + σ² + (μ'−ĝ)²),   ρ2 = t^(−κ2)
/// θ  ← θ·(1 − ηλ) − η·μ' / (sqrt(σ² + μ'²) + eps)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VsgdConfig {
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
    /// Ascend instead of descend (uses −ĝ).
    pub maximize: bool,
}

impl Default for VsgdConfig {
    fn default() -> Self {
        VsgdConfig {
            lr: 0.1,
            ghattg: 30.0,
            ps: 1e-8,
            tau1: 0.81,
            tau2: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
            l2: 0.0,
            maximize: false,
        }
    }
}

/// Constant VSGD hyperparameters (Algorithm 2; derivation in `docs/algorithms.md`).
///
/// With `pa2 = 2γ + 2`, `pb2 = 2γ`:
/// ```text
/// v  = pb2 / (2γ + 1e-4)   if t = 1,   else b / pa2
/// μ' = (K·μ + ĝ) / (K + 1),   σ² = v / (K + 1)
/// b  ← (1−ρ)·b + ρ·(pb2 + K·(σ² + (μ'−μ)²) + σ² + (μ'−ĝ)²),   ρ = t^(−κ)
/// θ  ← θ·(1 − ηλ) − η·μ' / (sqrt(σ² + μ'²) + eps)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConstantVsgdConfig {
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
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for ConstantVsgdConfig {
    fn default() -> Self {
        ConstantVsgdConfig {
            lr: 0.1,
            ghattg: 30.0,
            ps: 1e-8,
            tau: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
            l2: 0.0,
            maximize: false,
        }
    }
}

/// Adam / AdamW hyperparameters (torch.optim semantics: bias correction, `eps` outside the
/// square root):
/// ```text
/// m ← β1·m + (1−β1)·ĝ,   v ← β2·v + (1−β2)·ĝ²
/// θ ← θ·(1 − ηλ) − (η / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
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
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl AdamConfig {
    /// torch.optim.Adam's defaults.
    pub const fn adam() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            l2: 0.0,
            maximize: false,
        }
    }

    /// torch.optim.AdamW's defaults (`weight_decay` 0.01).
    pub const fn adamw() -> Self {
        AdamConfig {
            weight_decay: 0.01,
            ..AdamConfig::adam()
        }
    }
}

/// SGD with momentum (torch.optim.SGD semantics; the buffer starts as the first gradient):
/// ```text
/// buf ← ĝ  if t = 1,   else momentum·buf + (1 − dampening)·ĝ
/// d   ← ĝ + momentum·buf  if nesterov,   else buf
/// θ   ← θ·(1 − ηλ) − η·d
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdmConfig {
    /// Learning rate η (default 0.01), > 0.
    pub lr: f64,
    /// Momentum (default 0.9), in [0, 1].
    pub momentum: f64,
    /// Dampening (default 0), in [0, 1].
    pub dampening: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening = 0, as in torch).
    pub nesterov: bool,
    /// Decoupled weight decay λ (default 0), ≥ 0.
    pub weight_decay: f64,
    /// Coupled L2 penalty (torch's `SGD(weight_decay=…)`), ≥ 0.
    pub l2: f64,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for SgdmConfig {
    fn default() -> Self {
        SgdmConfig {
            lr: 0.01,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            l2: 0.0,
            maximize: false,
        }
    }
}

/// The configuration of one algorithm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Config {
    /// VSGD.
    Vsgd(VsgdConfig),
    /// Constant VSGD.
    ConstantVsgd(ConstantVsgdConfig),
    /// Adam.
    Adam(AdamConfig),
    /// AdamW (same fields as Adam, other defaults).
    AdamW(AdamConfig),
    /// SGD with momentum.
    Sgdm(SgdmConfig),
}

fn check(
    algorithm: Algorithm,
    field: &'static str,
    value: f64,
    ok: bool,
    allowed: &'static str,
) -> Result<(), ConfigError> {
    if ok && !value.is_nan() {
        Ok(())
    } else {
        Err(ConfigError {
            algorithm,
            field,
            value,
            allowed,
        })
    }
}

fn bool_value(algorithm: Algorithm, field: &'static str, value: f64) -> Result<bool, Error> {
    if value == 0.0 {
        Ok(false)
    } else if value == 1.0 {
        Ok(true)
    } else {
        Err(Error::Config(ConfigError {
            algorithm,
            field,
            value,
            allowed: BOOL,
        }))
    }
}

const LR: &str = "(0, 1e30]";
const LR_RUNTIME: &str = "[0, 1e30]";
const NON_NEGATIVE: &str = "[0, 1e30]";
const DECAY: &str = "lr * weight_decay <= 1";
const TAU: &str = "(0, 1]";
const UNIT_OPEN: &str = "[0, 1)";
const UNIT: &str = "[0, 1]";
const GHATTG: &str = "[1e-6, 1e6]";
const PS: &str = "[1e-30, 1e6]";
const EPS: &str = "finite and >= 1e-30";
const BOOL: &str = "0 (false) or 1 (true)";

impl Config {
    /// The defaults of `algorithm` (the authors' for VSGD, torch's for the baselines).
    pub fn default_for(algorithm: Algorithm) -> Config {
        match algorithm {
            Algorithm::Vsgd => Config::Vsgd(VsgdConfig::default()),
            Algorithm::ConstantVsgd => Config::ConstantVsgd(ConstantVsgdConfig::default()),
            Algorithm::Adam => Config::Adam(AdamConfig::adam()),
            Algorithm::AdamW => Config::AdamW(AdamConfig::adamw()),
            Algorithm::Sgdm => Config::Sgdm(SgdmConfig::default()),
        }
    }

    /// The algorithm this configures.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Config::Vsgd(_) => Algorithm::Vsgd,
            Config::ConstantVsgd(_) => Algorithm::ConstantVsgd,
            Config::Adam(_) => Algorithm::Adam,
            Config::AdamW(_) => Algorithm::AdamW,
            Config::Sgdm(_) => Algorithm::Sgdm,
        }
    }

    /// The configured (base) learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Config::Vsgd(c) => c.lr,
            Config::ConstantVsgd(c) => c.lr,
            Config::Adam(c) | Config::AdamW(c) => c.lr,
            Config::Sgdm(c) => c.lr,
        }
    }

    /// Checks every field against its allowed range; the error names the first bad field.
    /// The learning rate must be in (0, 1e30] and `lr · weight_decay` ≤ 1 (so the decay factor
    /// 1 − η·λ stays in [0, 1] and every constant stays finite in f32).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(false)
    }

    /// As [`Config::validate`], but a learning rate of 0 passes: the configuration of a group
    /// whose learning rate was set to 0 at run time ([`crate::Optimizer::set_lr`]), as
    /// checkpoints and `set_config` see it.
    pub fn validate_runtime(&self) -> Result<(), ConfigError> {
        self.validate_with(true)
    }

    fn validate_with(&self, zero_lr: bool) -> Result<(), ConfigError> {
        let a = self.algorithm();
        let positive = |field, v: f64| {
            let ok = v.is_finite() && v <= MAX_LR && (v > 0.0 || (zero_lr && v == 0.0));
            check(a, field, v, ok, if zero_lr { LR_RUNTIME } else { LR })
        };
        let non_negative = |field, v: f64| {
            check(
                a,
                field,
                v,
                v.is_finite() && (0.0..=1e30).contains(&v),
                NON_NEGATIVE,
            )
        };
        let tau = |field, v: f64| check(a, field, v, v > 0.0 && v <= 1.0, TAU);
        let eps = |v: f64| check(a, "eps", v, v.is_finite() && v >= MIN_TINY, EPS);
        let ghattg = |v: f64| check(a, "ghattg", v, (1e-6..=1e6).contains(&v), GHATTG);
        let ps = |v: f64| check(a, "ps", v, (MIN_TINY..=1e6).contains(&v), PS);
        match *self {
            Config::Vsgd(c) => {
                positive("lr", c.lr)?;
                ghattg(c.ghattg)?;
                ps(c.ps)?;
                tau("tau1", c.tau1)?;
                tau("tau2", c.tau2)?;
                eps(c.eps)?;
                non_negative("weight_decay", c.weight_decay)?;
                non_negative("l2", c.l2)
            }
            Config::ConstantVsgd(c) => {
                positive("lr", c.lr)?;
                ghattg(c.ghattg)?;
                ps(c.ps)?;
                tau("tau", c.tau)?;
                eps(c.eps)?;
                non_negative("weight_decay", c.weight_decay)?;
                non_negative("l2", c.l2)
            }
            Config::Adam(c) | Config::AdamW(c) => {
                positive("lr", c.lr)?;
                check(
                    a,
                    "beta1",
                    c.beta1,
                    (0.0..1.0).contains(&c.beta1),
                    UNIT_OPEN,
                )?;
                check(
                    a,
                    "beta2",
                    c.beta2,
                    (0.0..1.0).contains(&c.beta2),
                    UNIT_OPEN,
                )?;
                eps(c.eps)?;
                non_negative("weight_decay", c.weight_decay)?;
                non_negative("l2", c.l2)
            }
            Config::Sgdm(c) => {
                positive("lr", c.lr)?;
                check(
                    a,
                    "momentum",
                    c.momentum,
                    (0.0..=1.0).contains(&c.momentum),
                    UNIT,
                )?;
                check(
                    a,
                    "dampening",
                    c.dampening,
                    (0.0..=1.0).contains(&c.dampening),
                    UNIT,
                )?;
                if c.nesterov {
                    check(
                        a,
                        "momentum",
                        c.momentum,
                        c.momentum > 0.0,
                        "> 0 with nesterov",
                    )?;
                    check(
                        a,
                        "dampening",
                        c.dampening,
                        c.dampening == 0.0,
                        "0 with nesterov",
                    )?;
                }
                non_negative("weight_decay", c.weight_decay)?;
                non_negative("l2", c.l2)
            }
        }?;
        let (lr, wd) = (self.lr(), self.get("weight_decay").unwrap_or(0.0));
        check(a, "weight_decay", wd, lr * wd <= 1.0, DECAY)
    }

    /// Reads a hyperparameter by name (see [`Algorithm::hyper_names`]); booleans read as 0/1.
    pub fn get(&self, name: &str) -> Option<f64> {
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        Some(match (self, name) {
            (Config::Vsgd(c), "lr") => c.lr,
            (Config::Vsgd(c), "ghattg") => c.ghattg,
            (Config::Vsgd(c), "ps") => c.ps,
            (Config::Vsgd(c), "tau1") => c.tau1,
            (Config::Vsgd(c), "tau2") => c.tau2,
            (Config::Vsgd(c), "eps") => c.eps,
            (Config::Vsgd(c), "weight_decay") => c.weight_decay,
            (Config::Vsgd(c), "l2") => c.l2,
            (Config::Vsgd(c), "maximize") => b(c.maximize),
            (Config::ConstantVsgd(c), "lr") => c.lr,
            (Config::ConstantVsgd(c), "ghattg") => c.ghattg,
            (Config::ConstantVsgd(c), "ps") => c.ps,
            (Config::ConstantVsgd(c), "tau") => c.tau,
            (Config::ConstantVsgd(c), "eps") => c.eps,
            (Config::ConstantVsgd(c), "weight_decay") => c.weight_decay,
            (Config::ConstantVsgd(c), "l2") => c.l2,
            (Config::ConstantVsgd(c), "maximize") => b(c.maximize),
            (Config::Adam(c) | Config::AdamW(c), "lr") => c.lr,
            (Config::Adam(c) | Config::AdamW(c), "beta1") => c.beta1,
            (Config::Adam(c) | Config::AdamW(c), "beta2") => c.beta2,
            (Config::Adam(c) | Config::AdamW(c), "eps") => c.eps,
            (Config::Adam(c) | Config::AdamW(c), "weight_decay") => c.weight_decay,
            (Config::Adam(c) | Config::AdamW(c), "l2") => c.l2,
            (Config::Adam(c) | Config::AdamW(c), "maximize") => b(c.maximize),
            (Config::Sgdm(c), "lr") => c.lr,
            (Config::Sgdm(c), "momentum") => c.momentum,
            (Config::Sgdm(c), "dampening") => c.dampening,
            (Config::Sgdm(c), "nesterov") => b(c.nesterov),
            (Config::Sgdm(c), "weight_decay") => c.weight_decay,
            (Config::Sgdm(c), "l2") => c.l2,
            (Config::Sgdm(c), "maximize") => b(c.maximize),
            _ => return None,
        })
    }

    /// Sets a hyperparameter by name (see [`Algorithm::hyper_names`]). The value is not
    /// range-checked here (call [`Config::validate`] once all fields are set), except that
    /// booleans must be 0 or 1. An unknown name is [`Error::UnknownHyperparameter`].
    pub fn set(&mut self, name: &str, value: f64) -> Result<(), Error> {
        let a = self.algorithm();
        let slot: &mut f64 = match (&mut *self, name) {
            (Config::Vsgd(c), "maximize") => {
                c.maximize = bool_value(a, "maximize", value)?;
                return Ok(());
            }
            (Config::ConstantVsgd(c), "maximize") => {
                c.maximize = bool_value(a, "maximize", value)?;
                return Ok(());
            }
            (Config::Adam(c) | Config::AdamW(c), "maximize") => {
                c.maximize = bool_value(a, "maximize", value)?;
                return Ok(());
            }
            (Config::Sgdm(c), "maximize") => {
                c.maximize = bool_value(a, "maximize", value)?;
                return Ok(());
            }
            (Config::Sgdm(c), "nesterov") => {
                c.nesterov = bool_value(a, "nesterov", value)?;
                return Ok(());
            }
            (Config::Vsgd(c), "lr") => &mut c.lr,
            (Config::Vsgd(c), "ghattg") => &mut c.ghattg,
            (Config::Vsgd(c), "ps") => &mut c.ps,
            (Config::Vsgd(c), "tau1") => &mut c.tau1,
            (Config::Vsgd(c), "tau2") => &mut c.tau2,
            (Config::Vsgd(c), "eps") => &mut c.eps,
            (Config::Vsgd(c), "weight_decay") => &mut c.weight_decay,
            (Config::Vsgd(c), "l2") => &mut c.l2,
            (Config::ConstantVsgd(c), "lr") => &mut c.lr,
            (Config::ConstantVsgd(c), "ghattg") => &mut c.ghattg,
            (Config::ConstantVsgd(c), "ps") => &mut c.ps,
            (Config::ConstantVsgd(c), "tau") => &mut c.tau,
            (Config::ConstantVsgd(c), "eps") => &mut c.eps,
            (Config::ConstantVsgd(c), "weight_decay") => &mut c.weight_decay,
            (Config::ConstantVsgd(c), "l2") => &mut c.l2,
            (Config::Adam(c) | Config::AdamW(c), "lr") => &mut c.lr,
            (Config::Adam(c) | Config::AdamW(c), "beta1") => &mut c.beta1,
            (Config::Adam(c) | Config::AdamW(c), "beta2") => &mut c.beta2,
            (Config::Adam(c) | Config::AdamW(c), "eps") => &mut c.eps,
            (Config::Adam(c) | Config::AdamW(c), "weight_decay") => &mut c.weight_decay,
            (Config::Adam(c) | Config::AdamW(c), "l2") => &mut c.l2,
            (Config::Sgdm(c), "lr") => &mut c.lr,
            (Config::Sgdm(c), "momentum") => &mut c.momentum,
            (Config::Sgdm(c), "dampening") => &mut c.dampening,
            (Config::Sgdm(c), "weight_decay") => &mut c.weight_decay,
            (Config::Sgdm(c), "l2") => &mut c.l2,
            _ => return Err(Error::UnknownHyperparameter { algorithm: a }),
        };
        *slot = value;
        Ok(())
    }

    /// Replaces the base learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Config::Vsgd(c) => c.lr = lr,
            Config::ConstantVsgd(c) => c.lr = lr,
            Config::Adam(c) | Config::AdamW(c) => c.lr = lr,
            Config::Sgdm(c) => c.lr = lr,
        }
    }
}

impl From<VsgdConfig> for Config {
    fn from(c: VsgdConfig) -> Self {
        Config::Vsgd(c)
    }
}

impl From<ConstantVsgdConfig> for Config {
    fn from(c: ConstantVsgdConfig) -> Self {
        Config::ConstantVsgd(c)
    }
}

impl From<SgdmConfig> for Config {
    fn from(c: SgdmConfig) -> Self {
        Config::Sgdm(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_named() {
        for a in Algorithm::ALL {
            let c = Config::default_for(a);
            assert_eq!(c.algorithm(), a);
            c.validate().unwrap();
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
            for name in a.hyper_names() {
                let v = c.get(name).unwrap();
                let mut d = c;
                d.set(name, v).unwrap();
                assert_eq!(d, c);
            }
        }
        assert_eq!(
            Config::default_for(Algorithm::AdamW).get("weight_decay"),
            Some(0.01)
        );
    }

    #[test]
    fn every_bad_value_names_its_field() {
        let bad: &[(Algorithm, &str, f64)] = &[
            (Algorithm::Vsgd, "lr", 0.0),
            (Algorithm::Vsgd, "lr", f64::NAN),
            (Algorithm::Vsgd, "lr", f64::INFINITY),
            (Algorithm::Vsgd, "ps", 0.0),
            (Algorithm::Vsgd, "ps", -1.0),
            (Algorithm::Vsgd, "tau1", 0.0),
            (Algorithm::Vsgd, "tau2", 1.5),
            (Algorithm::Vsgd, "ghattg", 0.0),
            (Algorithm::Vsgd, "eps", 0.0),
            (Algorithm::Vsgd, "weight_decay", -0.1),
            (Algorithm::Vsgd, "l2", f64::NAN),
            (Algorithm::ConstantVsgd, "tau", 0.0),
            (Algorithm::ConstantVsgd, "ps", 0.0),
            (Algorithm::Adam, "beta1", 1.0),
            (Algorithm::Adam, "beta2", -0.1),
            (Algorithm::AdamW, "eps", -1.0),
            (Algorithm::Sgdm, "momentum", 1.5),
            (Algorithm::Sgdm, "dampening", -1.0),
        ];
        for &(a, field, value) in bad {
            let mut c = Config::default_for(a);
            c.set(field, value).unwrap();
            let e = c.validate().unwrap_err();
            assert_eq!(e.field, field, "{a} {field}={value}");
            assert_eq!(e.algorithm, a);
            let text = format!("{e}");
            assert!(text.contains(field) && text.contains("allowed"), "{text}");
        }
    }

    #[test]
    fn nesterov_needs_momentum_without_dampening() {
        let mut c = SgdmConfig {
            nesterov: true,
            ..Default::default()
        };
        Config::Sgdm(c).validate().unwrap();
        c.dampening = 0.5;
        assert_eq!(Config::Sgdm(c).validate().unwrap_err().field, "dampening");
        c.dampening = 0.0;
        c.momentum = 0.0;
        assert_eq!(Config::Sgdm(c).validate().unwrap_err().field, "momentum");
    }

    #[test]
    fn unknown_and_bad_boolean_names_are_errors() {
        let mut c = Config::default_for(Algorithm::Vsgd);
        assert!(c.set("beta1", 0.9).is_err());
        assert!(c.set("maximize", 0.5).is_err());
        assert!(c.get("momentum").is_none());
    }
}
