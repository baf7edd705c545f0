//! One step of one tensor over caller-owned slices: the stateless core every binding reaches.
//!
//! A step is split in two:
//! 1. [`Scalars::new`] turns the configuration, the step number `t` and the learning rate into
//!    the per-step constants (ρ = t^(−κ), bias corrections, 1 − η·λ, …), computed once per
//!    tensor in `f64` with `libm` and then rounded to the element type, so every backend sees
//!    the same constants;
//! 2. an elementwise kernel applies them. [`portable`] is the reference; every faster path must
//!    give the same bits. The vector paths (SSE2, AVX2, AVX-512 on x86, chosen at run time;
//!    NEON on AArch64 and simd128 on wasm32, chosen at compile time) are written once over a
//!    vector of lanes and perform the portable path's operations lane by lane; see
//!    [`KernelPath`].
//!
//! Kernels are elementwise, so any contiguous shard of a tensor (with the matching shards of its
//! state arrays) can be stepped on its own: ZeRO-style sharding needs nothing more.

#[macro_use]
mod simd;

#[cfg(feature = "alloc")]
pub(crate) mod batch;
mod dispatch;
pub mod mixed;
#[cfg(all(feature = "alloc", feature = "std", target_arch = "x86_64"))]
mod mixed_x86;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon;
pub mod portable;
#[cfg(feature = "std")]
pub mod threads;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86;

pub use dispatch::{all_finite_on, apply_on, KernelPath};

use crate::config::{Algorithm, Config};
use crate::element::Element;
use crate::error::Error;

/// What to do with a gradient holding NaN or ±∞.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum NonFinitePolicy {
    /// Leave the tensor untouched (parameter, state and step counter) and report it. Default.
    #[default]
    Skip = 0,
    /// Return [`Error::NonFiniteGradient`], changing nothing.
    Error = 1,
    /// Apply the update anyway, as the published code does (NaN spreads into state).
    Propagate = 2,
}

impl NonFinitePolicy {
    /// Name used by the CLI and checkpoints.
    pub const fn name(self) -> &'static str {
        match self {
            NonFinitePolicy::Skip => "skip",
            NonFinitePolicy::Error => "error",
            NonFinitePolicy::Propagate => "propagate",
        }
    }

    /// Parses a name written by [`NonFinitePolicy::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "skip" => Some(NonFinitePolicy::Skip),
            "error" => Some(NonFinitePolicy::Error),
            "propagate" => Some(NonFinitePolicy::Propagate),
            _ => None,
        }
    }
}

/// What a step did to one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The update was applied.
    Applied,
    /// The gradient was not finite and the tensor was left untouched
    /// ([`NonFinitePolicy::Skip`]); the caller must not advance its step counter.
    Skipped,
}

/// Options shared by every algorithm, rounded to the element type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Common<T> {
    /// Learning rate η of this step.
    pub(crate) lr: T,
    /// 1 − η·λ (decoupled weight decay), computed in f64.
    pub(crate) decay: T,
    /// Whether λ ≠ 0 (when false, θ is not multiplied at all).
    pub(crate) has_decay: bool,
    /// Coupled L2 coefficient.
    pub(crate) l2: T,
    /// Whether l2 ≠ 0 (when false, nothing is added to the gradient: keeps −0.0 intact).
    pub(crate) has_l2: bool,
    /// Negate the gradient first.
    pub(crate) maximize: bool,
    /// Gradient scale of gradient clipping (multiplies ĝ first; see [`Scalars::with_grad_scale`]).
    pub(crate) scale: T,
    /// Whether `scale` is applied (when false, ĝ is not multiplied at all).
    pub(crate) has_scale: bool,
}

impl<T: Element> Common<T> {
    fn new(lr: f64, weight_decay: f64, l2: f64, maximize: bool) -> Self {
        Common {
            lr: T::from_f64(lr),
            decay: T::from_f64(1.0 - lr * weight_decay),
            has_decay: weight_decay != 0.0,
            l2: T::from_f64(l2),
            has_l2: l2 != 0.0,
            maximize,
            scale: T::ONE,
            has_scale: false,
        }
    }

    /// The gradient the update sees: ĝ, times the clipping scale if any, negated if
    /// `maximize`, plus `l2·θ` (θ before decay).
    #[inline(always)]
    pub fn grad(&self, g: T, p: T) -> T {
        let g = if self.has_scale { g * self.scale } else { g };
        let g = if self.maximize { -g } else { g };
        if self.has_l2 {
            g + self.l2 * p
        } else {
            g
        }
    }

    /// θ·(1 − η·λ), or θ unchanged when λ = 0.
    #[inline(always)]
    pub fn decayed(&self, p: T) -> T {
        if self.has_decay {
            p * self.decay
        } else {
            p
        }
    }
}

/// Per-step constants of VSGD. See [`crate::VsgdConfig`] for the rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VsgdScalars<T> {
    /// Shared options.
    pub(crate) common: Common<T>,
    /// `t = 1`: use the prior variances instead of the state.
    pub(crate) first: bool,
    /// Prior variance of the systematic noise, pbg2 / (pa2 − 1) (used when `first`).
    pub(crate) sg0: T,
    /// Prior variance of the observation noise, pbhg2 / (pa2 − 1) (used when `first`).
    pub(crate) shg0: T,
    /// 1 / pa2.
    pub(crate) inv_pa2: T,
    /// pbg2 = 2γ.
    pub(crate) pbg2: T,
    /// pbhg2 = 2Kγ.
    pub(crate) pbhg2: T,
    /// ρ1 = t^(−κ1).
    pub(crate) rho1: T,
    /// 1 − ρ1.
    pub(crate) omr1: T,
    /// ρ2 = t^(−κ2).
    pub(crate) rho2: T,
    /// 1 − ρ2.
    pub(crate) omr2: T,
    /// Denominator guard.
    pub(crate) eps: T,
}

/// Per-step constants of Constant VSGD. See [`crate::ConstantVsgdConfig`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConstantVsgdScalars<T> {
    /// Shared options.
    pub(crate) common: Common<T>,
    /// `t = 1`: use the prior variance.
    pub(crate) first: bool,
    /// Prior observation variance pb2 / (2γ + 1e-4).
    pub(crate) v0: T,
    /// 1 / pa2, pa2 = 2γ + 2.
    pub(crate) inv_pa2: T,
    /// pb2 = 2γ.
    pub(crate) pb2: T,
    /// K.
    pub(crate) k: T,
    /// 1 / (K + 1).
    pub(crate) inv_k1: T,
    /// ρ = t^(−κ).
    pub(crate) rho: T,
    /// 1 − ρ.
    pub(crate) omr: T,
    /// Denominator guard.
    pub(crate) eps: T,
}

/// Per-step constants of Adam and AdamW. See [`crate::AdamConfig`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars<T> {
    /// Shared options.
    pub(crate) common: Common<T>,
    /// β1.
    pub(crate) beta1: T,
    /// 1 − β1.
    pub(crate) omb1: T,
    /// β2.
    pub(crate) beta2: T,
    /// 1 − β2.
    pub(crate) omb2: T,
    /// η / (1 − β1^t).
    pub(crate) step_size: T,
    /// sqrt(1 − β2^t).
    pub(crate) bc2_sqrt: T,
    /// Denominator guard.
    pub(crate) eps: T,
}

/// Per-step constants of SGD with momentum. See [`crate::SgdmConfig`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdmScalars<T> {
    /// Shared options.
    pub(crate) common: Common<T>,
    /// `t = 1`: the buffer becomes the gradient.
    pub(crate) first: bool,
    /// Momentum μ.
    pub(crate) momentum: T,
    /// 1 − dampening.
    pub(crate) omd: T,
    /// Nesterov look-ahead.
    pub(crate) nesterov: bool,
}

/// The per-step constants of any algorithm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalars<T> {
    /// VSGD.
    Vsgd(VsgdScalars<T>),
    /// Constant VSGD.
    ConstantVsgd(ConstantVsgdScalars<T>),
    /// Adam and AdamW.
    Adam(AdamScalars<T>),
    /// SGD with momentum.
    Sgdm(SgdmScalars<T>),
}

/// t^(−κ), in f64 with `libm` (the same bits on every target).
pub fn rho(t: u64, kappa: f64) -> f64 {
    libm::pow(t as f64, -kappa)
}

impl<T: Element> Scalars<T> {
    /// The constants of step `t` (≥ 1) at learning rate `lr`. The configuration is assumed
    /// valid ([`Config::validate`]); `lr` finite and ≥ 0.
    pub fn new(config: &Config, t: u64, lr: f64) -> Self {
        let first = t <= 1;
        let r = T::from_f64;
        match *config {
            Config::Vsgd(c) => {
                let gamma = c.ps;
                let pa2 = 2.0 * gamma + 1.0 + 1e-4;
                let pbg2 = 2.0 * gamma;
                let pbhg2 = 2.0 * c.ghattg * gamma;
                let rho1 = rho(t, c.tau1);
                let rho2 = rho(t, c.tau2);
                Scalars::Vsgd(VsgdScalars {
                    common: Common::new(lr, c.weight_decay, c.l2, c.maximize),
                    first,
                    sg0: r(pbg2 / (pa2 - 1.0)),
                    shg0: r(pbhg2 / (pa2 - 1.0)),
                    inv_pa2: r(1.0 / pa2),
                    pbg2: r(pbg2),
                    pbhg2: r(pbhg2),
                    rho1: r(rho1),
                    omr1: r(1.0 - rho1),
                    rho2: r(rho2),
                    omr2: r(1.0 - rho2),
                    eps: r(c.eps),
                })
            }
            Config::ConstantVsgd(c) => {
                let gamma = c.ps;
                let pa2 = 2.0 * gamma + 2.0;
                let pb2 = 2.0 * gamma;
                let rho = rho(t, c.tau);
                Scalars::ConstantVsgd(ConstantVsgdScalars {
                    common: Common::new(lr, c.weight_decay, c.l2, c.maximize),
                    first,
                    v0: r(pb2 / (2.0 * gamma + 1e-4)),
                    inv_pa2: r(1.0 / pa2),
                    pb2: r(pb2),
                    k: r(c.ghattg),
                    inv_k1: r(1.0 / (c.ghattg + 1.0)),
                    rho: r(rho),
                    omr: r(1.0 - rho),
                    eps: r(c.eps),
                })
            }
            Config::Adam(c) | Config::AdamW(c) => {
                let tf = t as f64;
                let bc1 = 1.0 - libm::pow(c.beta1, tf);
                let bc2 = 1.0 - libm::pow(c.beta2, tf);
                Scalars::Adam(AdamScalars {
                    common: Common::new(lr, c.weight_decay, c.l2, c.maximize),
                    beta1: r(c.beta1),
                    omb1: r(1.0 - c.beta1),
                    beta2: r(c.beta2),
                    omb2: r(1.0 - c.beta2),
                    step_size: r(lr / bc1),
                    bc2_sqrt: r(libm::sqrt(bc2)),
                    eps: r(c.eps),
                })
            }
            Config::Sgdm(c) => Scalars::Sgdm(SgdmScalars {
                common: Common::new(lr, c.weight_decay, c.l2, c.maximize),
                first,
                momentum: r(c.momentum),
                omd: r(1.0 - c.dampening),
                nesterov: c.nesterov,
            }),
        }
    }

    /// These constants with the gradient multiplied by `scale` before anything else (the
    /// coefficient of gradient clipping, `max_norm / (norm + 1e-6)` when below 1), rounded once
    /// to the element type: the same bits as stepping with the gradient `ĝ · scale` computed in
    /// the element type. A scale of exactly 1 leaves them unchanged.
    pub fn with_grad_scale(mut self, scale: f64) -> Self {
        let c = match &mut self {
            Scalars::Vsgd(s) => &mut s.common,
            Scalars::ConstantVsgd(s) => &mut s.common,
            Scalars::Adam(s) => &mut s.common,
            Scalars::Sgdm(s) => &mut s.common,
        };
        c.scale = T::from_f64(scale);
        c.has_scale = scale != 1.0;
        self
    }

    /// How many state arrays the kernel of these constants takes.
    pub fn state_count(&self) -> usize {
        struct Count;
        impl<T: Element> RuleVisitor<T> for Count {
            type Out = usize;
            fn visit<R: simd::Rule<K, E = T>, const K: usize>(self, _: &R) -> usize {
                K
            }
        }
        self.visit(Count)
    }

    /// Calls `v` with the rule of these constants and its number of state arrays: the one
    /// place that lists every algorithm's kernel (a new [`Scalars`] variant without a rule
    /// does not compile).
    #[inline(always)]
    pub(crate) fn visit<V: RuleVisitor<T>>(&self, v: V) -> V::Out {
        match self {
            Scalars::Vsgd(r) => v.visit::<_, 3>(r),
            Scalars::ConstantVsgd(r) => v.visit::<_, 2>(r),
            Scalars::Adam(r) => v.visit::<_, 2>(r),
            Scalars::Sgdm(r) => v.visit::<_, 1>(r),
        }
    }
}

/// Something done with an algorithm's [`simd::Rule`] once its type and state count are known
/// (see [`Scalars::visit`]).
pub(crate) trait RuleVisitor<T: Element> {
    /// What the visit returns.
    type Out;
    /// Called with the rule `r`, which keeps `K` state arrays.
    fn visit<R: simd::Rule<K, E = T>, const K: usize>(self, r: &R) -> Self::Out;
}

/// Applies one step to `param` given `grad` and the state arrays, with the fastest path this
/// build has ([`KernelPath::active`]). Lengths must already agree (checked by every public
/// caller); `state` holds [`Scalars::state_count`] arrays.
///
/// # Panics
/// If `state` does not hold [`Scalars::state_count`] arrays or a buffer is shorter than
/// `param`: a caller's bug, never memory unsafety. [`step`] checks all of it and returns an
/// error instead.
#[inline]
pub fn apply<T: Element>(s: &Scalars<T>, param: &mut [T], grad: &[T], state: &mut [&mut [T]]) {
    apply_on(KernelPath::active(), s, param, grad, state);
}

/// `true` when every element is finite (no NaN, no ±∞), with the fastest path this build has.
#[inline]
pub fn all_finite<T: Element>(x: &[T]) -> bool {
    all_finite_on(KernelPath::active(), x).unwrap_or_else(|| portable::all_finite(x))
}

/// Σ x², in `f64`, summed in a fixed order (eight interleaved partial sums, combined
/// pairwise), so the result is the same bits on every machine and path. The building block of
/// gradient clipping by global norm ([`crate::Optimizer::set_clip_norm`]); for a shard, add the
/// shards' sums (in a fixed order) and take the square root.
pub fn sum_squares<T: Element>(x: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let v = v.to_f64();
            *a += v * v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        let v = v.to_f64();
        *a += v * v;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Checks a learning rate given at run time for `config`: in [0, 1e30], and
/// `lr · weight_decay` ≤ 1 (the decay factor 1 − η·λ stays in [0, 1]).
pub fn check_lr(config: &Config, lr: f64) -> Result<(), Error> {
    let wd = config.get("weight_decay").unwrap_or(0.0);
    if (0.0..=crate::config::MAX_LR).contains(&lr) && lr * wd <= 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidLearningRate { lr })
    }
}

/// Checks that `param`, `grad` and every state array have one length and that the number of
/// state arrays fits `algorithm`.
pub fn check_lengths<T>(
    algorithm: Algorithm,
    param: &[T],
    grad: &[T],
    state: &[&mut [T]],
) -> Result<(), Error> {
    check_lengths_of(algorithm, param.len(), grad.len(), state)
}

/// [`check_lengths`] for a parameter of `n` elements and a gradient of `grad` elements, with
/// state arrays of any element type (the mixed-precision steps).
pub(crate) fn check_lengths_of<S>(
    algorithm: Algorithm,
    n: usize,
    grad: usize,
    state: &[&mut [S]],
) -> Result<(), Error> {
    if grad != n {
        return Err(Error::LengthMismatch {
            what: "grad",
            expected: n,
            got: grad,
        });
    }
    if state.len() != algorithm.state_count() {
        return Err(Error::StateCount {
            expected: algorithm.state_count(),
            got: state.len(),
        });
    }
    for s in state {
        if s.len() != n {
            return Err(Error::LengthMismatch {
                what: "state",
                expected: n,
                got: s.len(),
            });
        }
    }
    Ok(())
}

/// One step of one tensor (or of any contiguous shard of it) over caller-owned buffers.
///
/// `t` is the number of this update (1 for the first); the caller keeps the counter and
/// advances it only when the outcome is [`StepOutcome::Applied`]. `state` holds the
/// algorithm's arrays in the order of [`Algorithm::state_names`], zero before the first step.
/// Nothing is modified when an error is returned.
///
/// ```
/// use vsgd::{kernels, Config, Algorithm, NonFinitePolicy};
/// let config = Config::default_for(Algorithm::Vsgd);
/// let (mut p, g) = ([1.0f32, -2.0], [0.5f32, 0.25]);
/// let (mut mug, mut bg, mut bhg) = ([0.0f32; 2], [0.0f32; 2], [0.0f32; 2]);
/// let out = kernels::step(&config, 1, 0.1, &mut p, &g, &mut [&mut mug, &mut bg, &mut bhg],
///                         NonFinitePolicy::Skip).unwrap();
/// assert_eq!(out, kernels::StepOutcome::Applied);
/// assert!(p[0] < 1.0 && p[1] < -2.0);
/// ```
pub fn step<T: Element>(
    config: &Config,
    t: u64,
    lr: f64,
    param: &mut [T],
    grad: &[T],
    state: &mut [&mut [T]],
    policy: NonFinitePolicy,
) -> Result<StepOutcome, Error> {
    step_with_verdict(config, t, lr, param, grad, state, policy, Verdict::Check)
}

/// Who decides whether a gradient is finite, for [`step_with_verdict`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// This call scans its own `grad` (what [`step`] does). Right for a whole tensor; for a
    /// shard it means each shard decides alone.
    Check,
    /// The caller has checked the whole tensor (every shard) and found it finite: apply.
    Finite,
    /// The caller found a NaN or ±∞ somewhere in the tensor, maybe in another shard: the
    /// policy decides (skip, error), as if this shard held it.
    NotFinite,
}

/// [`step`] with the finite verdict given by the caller: what a sharded tensor needs, so
/// that every shard skips (or fails) together when any shard's gradient is not finite.
///
/// Compute each shard's [`all_finite`], combine them across shards with a logical AND (an
/// all-reduce, as torch's `GradScaler` does for its `found_inf`), and pass the result to every
/// shard's step as [`Verdict::Finite`] or [`Verdict::NotFinite`]. Under
/// [`NonFinitePolicy::Propagate`] the verdict is ignored and the update applied.
///
/// ```
/// use vsgd::{kernels::{self, Verdict}, Algorithm, Config, NonFinitePolicy};
/// let config = Config::default_for(Algorithm::Sgdm);
/// let (mut p, g) = ([1.0f32, 2.0, 3.0, 4.0], [0.5f32, 0.5, f32::NAN, 0.5]);
/// let (mut m0, mut m1) = ([0.0f32; 2], [0.0f32; 2]);
/// let finite = kernels::all_finite(&g[..2]) && kernels::all_finite(&g[2..]);
/// let verdict = if finite { Verdict::Finite } else { Verdict::NotFinite };
/// let (p0, p1) = p.split_at_mut(2);
/// for (p, g, m) in [(p0, &g[..2], &mut m0), (p1, &g[2..], &mut m1)] {
///     let out = kernels::step_with_verdict(&config, 1, 0.1, p, g, &mut [m],
///                                          NonFinitePolicy::Skip, verdict).unwrap();
///     assert_eq!(out, kernels::StepOutcome::Skipped); // both shards, not only the NaN one
/// }
/// assert_eq!(p, [1.0, 2.0, 3.0, 4.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn step_with_verdict<T: Element>(
    config: &Config,
    t: u64,
    lr: f64,
    param: &mut [T],
    grad: &[T],
    state: &mut [&mut [T]],
    policy: NonFinitePolicy,
    verdict: Verdict,
) -> Result<StepOutcome, Error> {
    let lengths = (param.len(), grad.len());
    if let Some(skipped) = pre_step(config, t, lr, lengths, state, policy, verdict, || {
        all_finite(grad)
    })? {
        return Ok(skipped);
    }
    let s = Scalars::<T>::new(config, t, lr);
    apply(&s, param, grad, state);
    Ok(StepOutcome::Applied)
}

/// The checks and the non-finite decision every step function makes before it touches
/// anything ([`step_with_verdict`] and the mixed-precision [`mixed::step`]): the config, the
/// learning rate, `t ≥ 1`, the lengths `(param, grad)` and the state arrays, then the policy
/// applied to the verdict (`scan` reads the gradient when the verdict is [`Verdict::Check`]).
/// `Ok(None)`: apply the update; `Ok(Some(Skipped))`: skip it; `Err`: nothing was touched.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pre_step<S>(
    config: &Config,
    t: u64,
    lr: f64,
    (param, grad): (usize, usize),
    state: &[&mut [S]],
    policy: NonFinitePolicy,
    verdict: Verdict,
    scan: impl FnOnce() -> bool,
) -> Result<Option<StepOutcome>, Error> {
    config.validate_runtime()?;
    check_lr(config, lr)?;
    if t == 0 {
        return Err(Error::InvalidStep { step: t });
    }
    check_lengths_of(config.algorithm(), param, grad, state)?;
    if policy == NonFinitePolicy::Propagate {
        return Ok(None);
    }
    let finite = match verdict {
        Verdict::Check => scan(),
        Verdict::Finite => true,
        Verdict::NotFinite => false,
    };
    match (finite, policy) {
        (true, _) => Ok(None),
        (false, NonFinitePolicy::Error) => Err(Error::NonFiniteGradient { tensor: 0 }),
        (false, _) => Ok(Some(StepOutcome::Skipped)),
    }
}

/// Effective momentum of VSGD per element, `bhg / (bg + bhg)` (the authors'
/// `get_current_beta1_estimate`): the weight the previous mean gets when the next gradient
/// arrives. Written into `out`; lengths must match.
pub fn effective_momentum<T: Element>(bg: &[T], bhg: &[T], out: &mut [T]) -> Result<(), Error> {
    if bg.len() != out.len() || bhg.len() != out.len() {
        return Err(Error::LengthMismatch {
            what: "effective momentum",
            expected: out.len(),
            got: if bg.len() != out.len() {
                bg.len()
            } else {
                bhg.len()
            },
        });
    }
    for ((o, &b), &h) in out.iter_mut().zip(bg).zip(bhg) {
        *o = h / (b + h);
    }
    Ok(())
}
