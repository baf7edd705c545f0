//! The owning optimizer: registered tensors with their state, parameter groups, schedules and
//! step counters. Parameters and gradients stay with the caller; only state lives here.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::any::Any;

use crate::config::{Algorithm, Config};
use crate::element::{DType, Element};
use crate::error::Error;
use crate::kernels::batch::{Engine, Item, StateLayout};
use crate::kernels::mixed::{self, Bf16Sr, F32State, StateStorage, Storage};
use crate::kernels::{self, NonFinitePolicy, Scalars, StepOutcome};
use crate::schedule::{LrSchedule, ScheduleClock};
use half::bf16;

mod any;
pub use crate::element::{GradRef, ParamMut};

/// Index of a registered tensor (in registration order, from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

/// Index of a parameter group (group 0 is created with the optimizer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub usize);

/// How to register a tensor: shape, element types, optional name and group.
///
/// Mixed precision: a `bf16` or `f16` parameter (and gradient) keeps `f32` state by default
/// (the common GPU recipe) and is stepped with [`Optimizer::step_mixed`]; `.state_dtype(Bf16)`
/// stores the state in `bf16` too, with stochastic rounding keyed by the tensor's `seed`
/// ([`DType::allows_state`] lists the combinations).
#[derive(Clone, Copy, Debug)]
pub struct TensorSpec<'a> {
    /// Shape (row-major); `[]` is a scalar. The element count is the product.
    pub shape: &'a [usize],
    /// Element type of the parameter and gradient (default `f32`).
    pub dtype: DType,
    /// Element type of the state; `None` (the default): `f32` for a `bf16`/`f16` parameter,
    /// else the parameter's type.
    pub state_dtype: Option<DType>,
    /// Seed of the stochastic rounding of `bf16` state (give each tensor its own; kept in
    /// checkpoints). `None`: the tensor's index. Ignored for other state.
    pub seed: Option<u64>,
    /// Optional name, reported in errors, read-outs and checkpoints.
    pub name: Option<&'a str>,
    /// Parameter group (default group 0).
    pub group: GroupId,
}

impl<'a> TensorSpec<'a> {
    /// An `f32` tensor of `shape` in group 0, unnamed.
    pub fn new(shape: &'a [usize]) -> Self {
        TensorSpec {
            shape,
            dtype: DType::F32,
            state_dtype: None,
            seed: None,
            name: None,
            group: GroupId(0),
        }
    }

    /// Sets the element type of the parameter and gradient.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// Sets the element type of the state (see [`DType::allows_state`]).
    pub fn state_dtype(mut self, dtype: DType) -> Self {
        self.state_dtype = Some(dtype);
        self
    }

    /// Sets the seed of the state's stochastic rounding (`bf16` state).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The state's element type this spec asks for.
    fn resolved_state_dtype(&self) -> DType {
        self.state_dtype.unwrap_or(match self.dtype {
            DType::Bf16 | DType::F16 => DType::F32,
            d => d,
        })
    }

    /// Sets the name.
    pub fn name(mut self, name: &'a str) -> Self {
        self.name = Some(name);
        self
    }

    /// Sets the group.
    pub fn group(mut self, group: GroupId) -> Self {
        self.group = group;
        self
    }
}

/// A copy of `items` in a new vector, or [`Error::AllocationFailed`] (never an abort).
fn try_copy<T: Copy>(items: &[T]) -> Result<Vec<T>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(items.len())
        .map_err(|_| Error::AllocationFailed {
            bytes: core::mem::size_of_val(items),
        })?;
    v.extend_from_slice(items);
    Ok(v)
}

/// A tensor's state arrays, contiguous: array `j` (in [`Algorithm::state_names`] order) is
/// `[j·len, (j+1)·len)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StateBuf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bf16(Vec<bf16>),
}

impl StateBuf {
    /// `n` zeros, or [`Error::AllocationFailed`] (never an abort) when they cannot be had.
    fn zeros(dtype: DType, n: usize) -> Result<Self, Error> {
        fn alloc<T: Clone>(n: usize, zero: T) -> Result<Vec<T>, Error> {
            let bytes = n.saturating_mul(core::mem::size_of::<T>());
            let mut v = Vec::new();
            if bytes > isize::MAX as usize || v.try_reserve_exact(n).is_err() {
                return Err(Error::AllocationFailed { bytes });
            }
            v.resize(n, zero);
            Ok(v)
        }
        Ok(match dtype {
            DType::F32 => StateBuf::F32(alloc(n, 0.0)?),
            DType::F64 => StateBuf::F64(alloc(n, 0.0)?),
            DType::Bf16 => StateBuf::Bf16(alloc(n, bf16::ZERO)?),
            DType::F16 => {
                return Err(Error::DTypeCombination {
                    param: dtype,
                    state: dtype,
                })
            }
        })
    }

    pub(crate) fn dtype(&self) -> DType {
        match self {
            StateBuf::F32(_) => DType::F32,
            StateBuf::F64(_) => DType::F64,
            StateBuf::Bf16(_) => DType::Bf16,
        }
    }

    pub(crate) fn get<T: Element>(&self) -> Option<&[T]> {
        match self {
            StateBuf::F32(v) => (v as &dyn Any).downcast_ref::<Vec<T>>(),
            StateBuf::F64(v) => (v as &dyn Any).downcast_ref::<Vec<T>>(),
            StateBuf::Bf16(_) => None,
        }
        .map(|v| v.as_slice())
    }

    pub(crate) fn get_mut<T: Element>(&mut self) -> Option<&mut [T]> {
        match self {
            StateBuf::F32(v) => (v as &mut dyn Any).downcast_mut::<Vec<T>>(),
            StateBuf::F64(v) => (v as &mut dyn Any).downcast_mut::<Vec<T>>(),
            StateBuf::Bf16(_) => None,
        }
        .map(|v| v.as_mut_slice())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Group {
    pub(crate) config: Config,
    pub(crate) schedule: LrSchedule,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tensor {
    pub(crate) name: Option<String>,
    pub(crate) shape: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) group: usize,
    pub(crate) step: u64,
    /// Element type of the parameter and gradient (the state's is `state.dtype()`).
    pub(crate) param_dtype: DType,
    /// Seed of the stochastic rounding of `bf16` state.
    pub(crate) seed: u64,
    pub(crate) state: StateBuf,
}

impl Tensor {
    /// Where its state arrays lie in `state` ([`StateLayout`]: staggered within pages when
    /// large).
    pub(crate) fn layout(&self) -> StateLayout {
        StateLayout::new(self.len, self.state.dtype().size())
    }

    /// Checks a step's buffer lengths (`param`, `grad` elements) and that the step counter
    /// can advance.
    fn check_buffers(&self, param: usize, grad: usize) -> Result<(), Error> {
        for (what, len) in [("param", param), ("grad", grad)] {
            if len != self.len {
                return Err(Error::LengthMismatch {
                    what,
                    expected: self.len,
                    got: len,
                });
            }
        }
        if self.step == u64::MAX {
            return Err(Error::InvalidStep { step: self.step });
        }
        Ok(())
    }
}

/// What [`Optimizer::tensor_info`] reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorInfo<'a> {
    /// Registered name, if any.
    pub name: Option<&'a str>,
    /// Registered shape.
    pub shape: &'a [usize],
    /// Element count.
    pub len: usize,
    /// Element type of the parameter and gradient.
    pub dtype: DType,
    /// Element type of the state arrays (the parameter's, or `f32`/`bf16` for mixed precision).
    pub state_dtype: DType,
    /// Seed of the stochastic rounding of `bf16` state (0 for other state).
    pub seed: u64,
    /// Parameter group.
    pub group: GroupId,
    /// Updates applied so far (skipped steps do not count).
    pub step: u64,
}

/// What [`Optimizer::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StepReport {
    /// Tensors updated.
    pub applied: usize,
    /// Tensors left untouched because their gradient was not finite
    /// ([`NonFinitePolicy::Skip`]); [`Optimizer::last_skipped`] names them.
    pub skipped: usize,
    /// Tensors without a gradient in [`Optimizer::step_some`] (frozen or unused parameters),
    /// left untouched; always 0 for [`Optimizer::step`].
    pub frozen: usize,
}

/// An optimizer owning the state of registered tensors.
///
/// All groups run the same algorithm (the state layout depends on it) with their own
/// hyperparameters and schedule. Each tensor has its own step counter; the learning rate of a
/// tensor's update number `t` is `group lr × schedule.factor(t)`.
///
/// ```
/// use vsgd::{Optimizer, Config, Algorithm, TensorSpec};
/// let mut opt = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
/// let w = opt.add_tensor(TensorSpec::new(&[2, 2]).name("w")).unwrap();
/// let mut param = [1.0f32, 2.0, 3.0, 4.0];
/// let grad = [0.1f32, -0.2, 0.3, -0.4];
/// opt.step_tensor(w, &mut param, &grad).unwrap();
/// assert_eq!(opt.step_count(w).unwrap(), 1);
/// assert!(param[0] < 1.0 && param[1] > 2.0);
/// ```
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub(crate) groups: Vec<Group>,
    pub(crate) tensors: Vec<Tensor>,
    pub(crate) policy: NonFinitePolicy,
    /// What the schedules' step number is.
    pub(crate) clock: ScheduleClock,
    /// Successful [`Optimizer::step`] / [`Optimizer::step_some`] calls (the global clock).
    pub(crate) global_step: u64,
    /// Gradient clipping by global norm: the maximum norm, if on.
    pub(crate) clip_norm: Option<f64>,
    /// The global gradient norm the last step computed (with clipping on).
    last_norm: Option<f64>,
    skipped: SkipList,
    /// Threads and work lists of the step (not part of the optimizer's value).
    engine: Engine,
}

/// The tensors the last step skipped, with room for every registered tensor (reserved at
/// registration, and kept by a clone: a step that skips them all allocates nothing).
#[derive(Debug, Default)]
struct SkipList(Vec<TensorId>);

impl Clone for SkipList {
    fn clone(&self) -> Self {
        let mut v = Vec::with_capacity(self.0.capacity());
        v.extend_from_slice(&self.0);
        SkipList(v)
    }
}

impl core::ops::Deref for SkipList {
    type Target = Vec<TensorId>;
    fn deref(&self) -> &Vec<TensorId> {
        &self.0
    }
}

impl core::ops::DerefMut for SkipList {
    fn deref_mut(&mut self) -> &mut Vec<TensorId> {
        &mut self.0
    }
}

/// Two optimizers are equal when their value is: groups (hyperparameters, schedules), policy,
/// schedule clock and global step, and tensors (names, shapes, groups, step counts, state bits
/// as `==` compares them). What the last step skipped and the thread settings are not part of
/// the value.
impl PartialEq for Optimizer {
    fn eq(&self, other: &Self) -> bool {
        self.groups == other.groups
            && self.tensors == other.tensors
            && self.policy == other.policy
            && self.clock == other.clock
            && self.global_step == other.global_step
            && self.clip_norm == other.clip_norm
    }
}

impl Optimizer {
    /// An optimizer with no tensors and one group (group 0) configured by `config`.
    pub fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        Self::new_runtime(config)
    }

    /// As [`Optimizer::new`] for a configuration that may carry a learning rate of 0 (set at
    /// run time before it was saved): used when restoring checkpoints.
    pub(crate) fn new_runtime(config: Config) -> Result<Self, Error> {
        config.validate_runtime()?;
        Ok(Optimizer {
            groups: vec![Group {
                config,
                schedule: LrSchedule::default(),
            }],
            tensors: Vec::new(),
            policy: NonFinitePolicy::default(),
            clock: ScheduleClock::default(),
            global_step: 0,
            clip_norm: None,
            last_norm: None,
            skipped: SkipList::default(),
            engine: Engine::new(),
        })
    }

    /// The algorithm every group runs.
    pub fn algorithm(&self) -> Algorithm {
        self.groups[0].config.algorithm()
    }

    /// Adds a parameter group with its own hyperparameters (same algorithm as group 0).
    pub fn add_group(&mut self, config: Config) -> Result<GroupId, Error> {
        config.validate()?;
        self.add_group_runtime(config)
    }

    /// As [`Optimizer::add_group`], the learning rate may be 0 (checkpoint restore).
    pub(crate) fn add_group_runtime(&mut self, config: Config) -> Result<GroupId, Error> {
        self.check_algorithm(&config)?;
        config.validate_runtime()?;
        self.groups.push(Group {
            config,
            schedule: LrSchedule::default(),
        });
        Ok(GroupId(self.groups.len() - 1))
    }

    fn check_algorithm(&self, config: &Config) -> Result<(), Error> {
        if config.algorithm() != self.algorithm() {
            return Err(Error::AlgorithmMismatch {
                expected: self.algorithm(),
                got: config.algorithm(),
            });
        }
        Ok(())
    }

    /// Number of groups.
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    fn group(&self, g: GroupId) -> Result<&Group, Error> {
        self.groups
            .get(g.0)
            .ok_or(Error::UnknownGroup { group: g.0 })
    }

    fn group_mut(&mut self, g: GroupId) -> Result<&mut Group, Error> {
        self.groups
            .get_mut(g.0)
            .ok_or(Error::UnknownGroup { group: g.0 })
    }

    /// A group's configuration.
    pub fn config(&self, g: GroupId) -> Result<&Config, Error> {
        Ok(&self.group(g)?.config)
    }

    /// Replaces a group's configuration (same algorithm; state is kept). As with
    /// [`Optimizer::set_lr`], its learning rate may be 0 ([`Config::validate_runtime`]).
    pub fn set_config(&mut self, g: GroupId, config: Config) -> Result<(), Error> {
        self.check_algorithm(&config)?;
        config.validate_runtime()?;
        self.group_mut(g)?.config = config;
        Ok(())
    }

    /// Sets a group's base learning rate (finite, ≥ 0; 0 freezes the group's parameters).
    pub fn set_lr(&mut self, g: GroupId, lr: f64) -> Result<(), Error> {
        let group = self.group_mut(g)?;
        kernels::check_lr(&group.config, lr)?;
        group.config.set_lr(lr);
        Ok(())
    }

    /// Sets a group's schedule.
    pub fn set_schedule(&mut self, g: GroupId, schedule: LrSchedule) -> Result<(), Error> {
        schedule.validate()?;
        self.group_mut(g)?.schedule = schedule;
        Ok(())
    }

    /// A group's schedule.
    pub fn schedule(&self, g: GroupId) -> Result<&LrSchedule, Error> {
        Ok(&self.group(g)?.schedule)
    }

    /// The learning rate a group's tensors get at their update number `t` (≥ 1).
    pub fn lr_at(&self, g: GroupId, t: u64) -> Result<f64, Error> {
        let group = self.group(g)?;
        Ok(group.config.lr() * group.schedule.factor(t))
    }

    /// The non-finite-gradient policy (default [`NonFinitePolicy::Skip`]).
    pub fn policy(&self) -> NonFinitePolicy {
        self.policy
    }

    /// Sets the non-finite-gradient policy.
    pub fn set_policy(&mut self, policy: NonFinitePolicy) {
        self.policy = policy;
    }

    /// What the schedules' step number is ([`ScheduleClock`]; default: each tensor's own).
    pub fn schedule_clock(&self) -> ScheduleClock {
        self.clock
    }

    /// Sets what the schedules' step number is. With [`ScheduleClock::Global`] the next step
    /// call evaluates every schedule at [`Optimizer::global_step`] + 1. Checkpoints keep the
    /// clock and the global step.
    pub fn set_schedule_clock(&mut self, clock: ScheduleClock) {
        self.clock = clock;
    }

    /// Calls of [`Optimizer::step`] / [`Optimizer::step_some`] / [`Optimizer::step_mixed`] /
    /// [`Optimizer::step_any`] that returned `Ok` while the
    /// clock was [`ScheduleClock::Global`] (0 under the default clock). A loop of
    /// [`Optimizer::step_tensor`] calls, which do not advance it, advances it itself with
    /// [`Optimizer::set_global_step`].
    pub fn global_step(&self) -> u64 {
        self.global_step
    }

    /// Sets the global step (resuming a count kept elsewhere, or advancing it by hand).
    pub fn set_global_step(&mut self, step: u64) {
        self.global_step = step;
    }

    /// Turns on gradient clipping by global norm (torch's `clip_grad_norm_`, optax's
    /// `clip_by_global_norm`), or off with `None`. Each step then computes the L2 norm of all
    /// the gradients it applies, `‖ĝ‖ = sqrt(Σ ĝ²)` (in `f64`, in a fixed order: the same bits
    /// for every thread count), and when `‖ĝ‖ > max_norm` multiplies every gradient by
    /// `c = max_norm / (‖ĝ‖ + 1e-6)` (torch's formula) before anything else: the same bits as
    /// stepping with `ĝ · c` computed in the element type. Skipped (non-finite) and frozen
    /// tensors are not part of the norm; a non-finite norm (possible only under
    /// [`NonFinitePolicy::Propagate`]) scales nothing. [`Optimizer::step_tensor`] clips by the
    /// norm of its one tensor. The norm costs one extra read of the gradients, no extra pass
    /// over the parameters or state. Checkpoints keep the setting.
    pub fn set_clip_norm(&mut self, max_norm: Option<f64>) -> Result<(), Error> {
        if let Some(m) = max_norm {
            if !(m.is_finite() && m > 0.0) {
                return Err(Error::InvalidClipNorm { max_norm: m });
            }
        }
        self.clip_norm = max_norm;
        Ok(())
    }

    /// The maximum gradient norm of [`Optimizer::set_clip_norm`], if clipping is on.
    pub fn clip_norm(&self) -> Option<f64> {
        self.clip_norm
    }

    /// The global gradient norm the last step computed (clipping on, before scaling), or `None`.
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.last_norm
    }

    /// Registers a tensor; its state starts at zero and its step counter at 0.
    pub fn add_tensor(&mut self, spec: TensorSpec<'_>) -> Result<TensorId, Error> {
        self.group(spec.group)?;
        let len = spec
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(Error::ShapeOverflow)?;
        let state_dtype = spec.resolved_state_dtype();
        if !spec.dtype.allows_state(state_dtype) {
            return Err(Error::DTypeCombination {
                param: spec.dtype,
                state: state_dtype,
            });
        }
        let total = StateLayout::new(len, state_dtype.size())
            .total(self.algorithm().state_count(), len)
            .ok_or(Error::ShapeOverflow)?;
        let state = StateBuf::zeros(state_dtype, total)?;
        // The name and shape are the caller's sizes too: copied with fallible allocations.
        let name = match spec.name {
            Some(n) => {
                let mut s = String::new();
                s.try_reserve_exact(n.len())
                    .map_err(|_| Error::AllocationFailed { bytes: n.len() })?;
                s.push_str(n);
                Some(s)
            }
            None => None,
        };
        let shape = try_copy(spec.shape)?;
        // Room for the tensor's blocks in the gradient norm's list, and for every tensor in
        // the skipped list: a step over them all allocates nothing.
        self.engine
            .reserve_norm_blocks(len)
            .map_err(|bytes| Error::AllocationFailed { bytes })?;
        let room = (self.tensors.len() + 1).saturating_sub(self.skipped.len());
        self.skipped.reserve(room);
        self.engine.reserve_for(self.tensors.len() + 1);
        self.tensors.push(Tensor {
            name,
            shape,
            len,
            group: spec.group.0,
            step: 0,
            param_dtype: spec.dtype,
            // Only bf16 state rounds stochastically (and checkpoints keep only its seed).
            seed: match state_dtype {
                DType::Bf16 => spec.seed.unwrap_or(self.tensors.len() as u64),
                _ => 0,
            },
            state,
        });
        Ok(TensorId(self.tensors.len() - 1))
    }

    /// Number of registered tensors.
    pub fn num_tensors(&self) -> usize {
        self.tensors.len()
    }

    fn tensor(&self, id: TensorId) -> Result<&Tensor, Error> {
        self.tensors
            .get(id.0)
            .ok_or(Error::UnknownTensor { tensor: id.0 })
    }

    /// The tensor registered under `name`, if any.
    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name.as_deref() == Some(name))
            .map(TensorId)
    }

    /// What is registered for a tensor.
    pub fn tensor_info(&self, id: TensorId) -> Result<TensorInfo<'_>, Error> {
        let t = self.tensor(id)?;
        Ok(TensorInfo {
            name: t.name.as_deref(),
            shape: &t.shape,
            len: t.len,
            dtype: t.param_dtype,
            state_dtype: t.state.dtype(),
            seed: t.seed,
            group: GroupId(t.group),
            step: t.step,
        })
    }

    /// Updates applied to a tensor so far.
    pub fn step_count(&self, id: TensorId) -> Result<u64, Error> {
        Ok(self.tensor(id)?.step)
    }

    /// Sets a tensor's step counter: the number of updates already applied, so the next
    /// update is number `step + 1` (the schedule position follows it). For restoring state
    /// kept elsewhere together with [`Optimizer::state_mut`] (checkpoints, a JAX optimizer
    /// state); a running training loop never needs it.
    pub fn set_step_count(&mut self, id: TensorId, step: u64) -> Result<(), Error> {
        self.tensors
            .get_mut(id.0)
            .ok_or(Error::UnknownTensor { tensor: id.0 })?
            .step = step;
        Ok(())
    }

    /// A state array of a tensor by name ([`Algorithm::state_names`]).
    pub fn state<T: Element>(&self, id: TensorId, name: &str) -> Result<&[T], Error> {
        let j = self.state_index(name)?;
        let t = self.tensor(id)?;
        let buf = t.state.get::<T>().ok_or(Error::DTypeMismatch {
            tensor: id.0,
            expected: t.state.dtype(),
            got: T::DTYPE,
        })?;
        Ok(&buf[t.layout().range(j, t.len)])
    }

    /// A state array of a tensor by name, writable (for restoring state from elsewhere).
    pub fn state_mut<T: Element>(&mut self, id: TensorId, name: &str) -> Result<&mut [T], Error> {
        let j = self.state_index(name)?;
        let t = self
            .tensors
            .get_mut(id.0)
            .ok_or(Error::UnknownTensor { tensor: id.0 })?;
        let (range, dtype) = (t.layout().range(j, t.len), t.state.dtype());
        let buf = t.state.get_mut::<T>().ok_or(Error::DTypeMismatch {
            tensor: id.0,
            expected: dtype,
            got: T::DTYPE,
        })?;
        Ok(&mut buf[range])
    }

    /// A `bf16` state array of a tensor by name (a tensor registered with
    /// `.state_dtype(DType::Bf16)`).
    pub fn state_bf16(&self, id: TensorId, name: &str) -> Result<&[bf16], Error> {
        let j = self.state_index(name)?;
        let t = self.tensor(id)?;
        match &t.state {
            StateBuf::Bf16(v) => Ok(&v[t.layout().range(j, t.len)]),
            other => Err(Error::DTypeMismatch {
                tensor: id.0,
                expected: other.dtype(),
                got: DType::Bf16,
            }),
        }
    }

    /// A `bf16` state array of a tensor by name, writable (for restoring state from elsewhere).
    pub fn state_bf16_mut(&mut self, id: TensorId, name: &str) -> Result<&mut [bf16], Error> {
        let j = self.state_index(name)?;
        let t = self
            .tensors
            .get_mut(id.0)
            .ok_or(Error::UnknownTensor { tensor: id.0 })?;
        let range = t.layout().range(j, t.len);
        match &mut t.state {
            StateBuf::Bf16(v) => Ok(&mut v[range]),
            other => Err(Error::DTypeMismatch {
                tensor: id.0,
                expected: other.dtype(),
                got: DType::Bf16,
            }),
        }
    }

    fn state_index(&self, name: &str) -> Result<usize, Error> {
        let a = self.algorithm();
        a.state_names()
            .iter()
            .position(|&n| n == name)
            .ok_or(Error::UnknownStateArray { algorithm: a })
    }

    /// VSGD's effective momentum `bhg / (bg + bhg)` per element of a tensor, into `out`
    /// (see [`kernels::effective_momentum`]). Only for VSGD.
    pub fn effective_momentum<T: Element>(&self, id: TensorId, out: &mut [T]) -> Result<(), Error> {
        if self.algorithm() != Algorithm::Vsgd {
            return Err(Error::AlgorithmMismatch {
                expected: Algorithm::Vsgd,
                got: self.algorithm(),
            });
        }
        kernels::effective_momentum(self.state(id, "bg")?, self.state(id, "bhg")?, out)
    }

    /// Tensors skipped by the last [`Optimizer::step`] or [`Optimizer::step_tensor`] call.
    pub fn last_skipped(&self) -> &[TensorId] {
        &self.skipped
    }

    /// The work item of a checked tensor: its buffers and this step's constants. `last`
    /// carries the constants of the previous item: tensors of one group at the same step
    /// share them (computing them takes two `pow`s, which adds up over many small tensors).
    fn item<T: Element>(
        &mut self,
        i: usize,
        param: &mut [T],
        grad: &[T],
        last: &mut Option<(usize, u64, Scalars<T>)>,
    ) -> Item<T> {
        let s = self.scalars(i, last);
        let t = &mut self.tensors[i];
        let layout = t.layout();
        let buf = t.state.get_mut::<T>().expect("dtype checked");
        Item::new(i, param, grad, buf, layout, s)
    }

    /// This step's constants for tensor `i` (its next update number, the group's learning rate
    /// at the schedule's position). `last` carries the previous tensor's: tensors of one group
    /// at the same step share them (computing them takes two `pow`s).
    fn scalars<T: Element>(
        &self,
        i: usize,
        last: &mut Option<(usize, u64, Scalars<T>)>,
    ) -> Scalars<T> {
        let clock_step = match self.clock {
            ScheduleClock::PerTensor => None,
            ScheduleClock::Global => Some(self.global_step.saturating_add(1)),
        };
        let t = &self.tensors[i];
        let step = t.step + 1;
        match *last {
            Some((g, st, s)) if g == t.group && st == step => s,
            _ => {
                let group = &self.groups[t.group];
                let position = clock_step.unwrap_or(step);
                let lr = group.config.lr() * group.schedule.factor(position);
                let s = Scalars::<T>::new(&group.config, step, lr);
                *last = Some((t.group, step, s));
                s
            }
        }
    }

    /// Scans the gradients of checked tensors (unless the policy is `Propagate`), then
    /// applies the updates, across threads. Under `Error` a non-finite gradient returns the
    /// error before anything is touched; under `Skip` its tensor joins `self.skipped`.
    /// Returns how many tensors were updated.
    fn run_items<T: Element>(&mut self, mut items: Vec<Item<T>>) -> Result<usize, Error> {
        if self.policy != NonFinitePolicy::Propagate {
            self.engine.scan(&mut items);
            let bad = items.iter().find(|it| it.nonfinite()).map(|it| it.tensor);
            if let (Some(tensor), NonFinitePolicy::Error) = (bad, self.policy) {
                self.engine.put_items(items);
                return Err(Error::NonFiniteGradient { tensor });
            }
        }
        // Past the last error: from here the step happens, and reports what it skipped.
        self.skipped.clear();
        if self.policy != NonFinitePolicy::Propagate {
            for it in items.iter().filter(|it| it.nonfinite()) {
                self.skipped.push(TensorId(it.tensor));
            }
            items.retain(|it| !it.nonfinite());
        }
        self.last_norm = None;
        if self.clip_norm.is_some() {
            let sum = self.engine.sum_squares(&mut items);
            if let Some(c) = self.clip_scale(sum) {
                for it in items.iter_mut() {
                    it.scalars = it.scalars.with_grad_scale(c);
                }
            }
        }
        self.engine.apply(&mut items);
        for it in &items {
            self.tensors[it.tensor].step += 1;
        }
        let applied = items.len();
        self.engine.put_items(items);
        Ok(applied)
    }

    /// Threads a step may use: the count given to [`Optimizer::set_threads`], by default the
    /// available parallelism. Small steps use fewer (another thread only pays off past about
    /// a megabyte of memory traffic per thread).
    pub fn threads(&self) -> usize {
        self.engine.threads()
    }

    /// Sets how many threads a step may use (0: the available parallelism, the default; at
    /// most [`kernels::threads::MAX_THREADS`]) and starts the worker threads now, so that no
    /// step allocates. The calling thread is one of them: `set_threads(1)` uses no workers.
    /// Results are the same bits for every thread count. Without this call the workers start
    /// at the first step large enough to use them (that step allocates, once); a clone keeps
    /// the thread count and starts its own workers the same way. Dropping the optimizer stops
    /// and joins its workers.
    #[cfg(feature = "std")]
    pub fn set_threads(&mut self, threads: usize) {
        self.engine.set_threads(threads);
    }

    /// One update of one tensor (its parameter of type `T`, its state of any type). On error
    /// nothing changes; a non-finite gradient under [`NonFinitePolicy::Skip`] returns
    /// [`StepOutcome::Skipped`] and changes nothing. A large tensor is split across
    /// [`Optimizer::threads`] threads. The same as [`Optimizer::step_tensor_any`].
    pub fn step_tensor<T: Element>(
        &mut self,
        id: TensorId,
        param: &mut [T],
        grad: &[T],
    ) -> Result<StepOutcome, Error> {
        self.step_tensor_any(id, T::param_buf(param), T::grad_buf(grad))
    }

    /// [`Optimizer::step_tensor`] of a checked `f32`/`f64` tensor with state of its type: the
    /// batched executor.
    fn step_tensor_plain<T: Element>(
        &mut self,
        id: TensorId,
        param: &mut [T],
        grad: &[T],
    ) -> Result<StepOutcome, Error> {
        let mut items = self.engine.take_items::<T>(1);
        items.push(self.item(id.0, param, grad, &mut None));
        Ok(match self.run_items(items)? {
            0 => StepOutcome::Skipped,
            _ => StepOutcome::Applied,
        })
    }

    /// One update of every registered tensor, in registration order (`params[i]` and
    /// `grads[i]` belong to tensor `i`; all of element type `T`: an optimizer holding tensors
    /// of several types steps them with [`Optimizer::step_any`]). Every tensor is checked
    /// before any is touched, so an error changes nothing. The tensors whose state is of type
    /// `T` too are laid end to end and cut into equal chunks that [`Optimizer::threads`]
    /// threads share: large tensors are split, small ones batched; `f32` tensors with `bf16`
    /// state are then updated one after another by the mixed loop (each split across threads).
    /// Does not allocate (once the worker threads are started; see
    /// [`Optimizer::set_threads`]). Its body is [`Optimizer::step_any`]'s.
    pub fn step<T: Element>(
        &mut self,
        params: &mut [&mut [T]],
        grads: &[&[T]],
    ) -> Result<StepReport, Error> {
        self.step_lists(params, grads)
    }

    /// [`Optimizer::step`] where some tensors have no gradient (`None`: frozen or unused
    /// parameters, as torch's optimizers skip parameters whose `grad` is `None`). Those are left
    /// untouched, state and step counter included, and their `params` entry is not looked at
    /// (it may be empty); the others are checked, scanned and updated exactly as
    /// [`Optimizer::step`] would. The report counts them as `frozen`.
    ///
    /// ```
    /// use vsgd::{Algorithm, Config, Optimizer, TensorSpec};
    /// let mut opt = Optimizer::new(Config::default_for(Algorithm::Adam))?;
    /// let a = opt.add_tensor(TensorSpec::new(&[2]))?;
    /// let b = opt.add_tensor(TensorSpec::new(&[3]))?;
    /// let (mut pa, mut pb) = ([1.0f32; 2], [1.0f32; 3]);
    /// let r = opt.step_some(&mut [&mut pa, &mut pb], &[Some(&[0.5, 0.5]), None])?;
    /// assert_eq!((r.applied, r.frozen), (1, 1));
    /// assert_eq!((opt.step_count(a)?, opt.step_count(b)?), (1, 0));
    /// assert_eq!(pb, [1.0; 3]);
    /// # Ok::<(), vsgd::Error>(())
    /// ```
    pub fn step_some<T: Element>(
        &mut self,
        params: &mut [&mut [T]],
        grads: &[Option<&[T]>],
    ) -> Result<StepReport, Error> {
        self.step_lists(params, grads)
    }

    /// Gradient clipping by global norm: records the norm `√sum_squares` and returns the factor
    /// `max / (norm + 1e-6)` that scales every gradient, or `None` when that is not below 1
    /// (or clipping is off).
    fn clip_scale(&mut self, sum_squares: f64) -> Option<f64> {
        let max_norm = self.clip_norm?;
        let norm = libm::sqrt(sum_squares);
        self.last_norm = Some(norm);
        let c = max_norm / (norm + 1e-6);
        (c < 1.0).then_some(c)
    }

    /// The end of every all-tensor step: the global clock advances, and the report.
    fn finish_step(&mut self, applied: usize, frozen: usize) -> StepReport {
        if self.clock == ScheduleClock::Global {
            self.global_step = self.global_step.saturating_add(1);
        }
        StepReport {
            applied,
            skipped: self.skipped.len(),
            frozen,
        }
    }

    /// Checks that a step was given one parameter and one gradient entry per tensor; returns
    /// the tensor count.
    fn check_counts(&self, params: usize, grads: usize) -> Result<usize, Error> {
        let n = self.tensors.len();
        for (what, len) in [("params", params), ("grads", grads)] {
            if len != n {
                return Err(Error::LengthMismatch {
                    what,
                    expected: n,
                    got: len,
                });
            }
        }
        Ok(n)
    }

    // ------------------------------------------------------------------ mixed precision

    /// One update of every registered tensor whose parameter is of type `P` (`f32`, [`bf16`]
    /// or [`half::f16`]), with `f32` or `bf16` state: mixed precision. Otherwise as
    /// [`Optimizer::step_some`]: `grads[i]` is tensor `i`'s gradient or `None` (frozen); the
    /// tensors given gradients are all checked before any is touched; the non-finite policy,
    /// gradient clipping, schedules and step counters work as in [`Optimizer::step`]. Large
    /// tensors are split across [`Optimizer::threads`] threads (the same bits for every split).
    ///
    /// The update of each element is the `f32` rule (`kernels::mixed::apply_mixed`) over the
    /// widened values; the parameter is rounded to `P` once, to nearest even. `f32` tensors
    /// with `f32` state go through the batched executor of [`Optimizer::step`] (the same
    /// update bits; with clipping, the gradient norm summed in its blocked order). Its body
    /// is [`Optimizer::step_any`]'s. `bf16` state is
    /// rounded stochastically with bits keyed by the tensor's seed, step and element index, so
    /// a resumed run gives the same bits as an uninterrupted one.
    ///
    /// ```
    /// use vsgd::{bf16, Algorithm, Config, DType, Optimizer, TensorSpec};
    /// let mut opt = Optimizer::new(Config::default_for(Algorithm::Vsgd))?;
    /// let w = opt.add_tensor(TensorSpec::new(&[2]).dtype(DType::Bf16))?; // f32 state
    /// let b = opt.add_tensor(TensorSpec::new(&[1]).dtype(DType::Bf16).state_dtype(DType::Bf16))?;
    /// let mut pw = [bf16::from_f32(1.0); 2];
    /// let mut pb = [bf16::from_f32(0.5)];
    /// let (gw, gb) = ([bf16::from_f32(0.25); 2], [bf16::from_f32(-1.0)]);
    /// let r = opt.step_mixed(&mut [&mut pw, &mut pb], &[Some(&gw), Some(&gb)])?;
    /// assert_eq!(r.applied, 2);
    /// assert!(pw[0].to_f32() < 1.0 && pb[0].to_f32() > 0.5);
    /// assert_eq!(opt.state_bf16(b, "mug")?.len(), 1);
    /// # Ok::<(), vsgd::Error>(())
    /// ```
    pub fn step_mixed<P: Storage>(
        &mut self,
        params: &mut [&mut [P]],
        grads: &[Option<&[P]>],
    ) -> Result<StepReport, Error> {
        self.step_lists(params, grads)
    }

    /// One mixed-precision update of one tensor (see [`Optimizer::step_mixed`]). On error
    /// nothing changes; a non-finite gradient under [`NonFinitePolicy::Skip`] returns
    /// [`StepOutcome::Skipped`]. Advances the global clock only through
    /// [`Optimizer::step_mixed`], as [`Optimizer::step_tensor`] does. The same as
    /// [`Optimizer::step_tensor_any`] (an `f32` tensor with `f32` state takes the batched
    /// executor, as in [`Optimizer::step_tensor`]).
    pub fn step_tensor_mixed<P: Storage>(
        &mut self,
        id: TensorId,
        param: &mut [P],
        grad: &[P],
    ) -> Result<StepOutcome, Error> {
        self.step_tensor_any(id, P::param_buf(param), P::grad_buf(grad))
    }

    /// [`Optimizer::step_tensor_mixed`] of a checked tensor with a 16-bit parameter or `bf16`
    /// state: the fused mixed loop.
    fn step_tensor_mixed_loop<P: Storage>(
        &mut self,
        id: TensorId,
        param: &mut [P],
        grad: &[P],
    ) -> Result<StepOutcome, Error> {
        if self.policy != NonFinitePolicy::Propagate && !mixed::all_finite(grad) {
            if self.policy == NonFinitePolicy::Error {
                return Err(Error::NonFiniteGradient { tensor: id.0 });
            }
            self.skipped.clear();
            self.skipped.push(id);
            // As the f32 path reports it: the norm of the gradients applied, none.
            self.last_norm = self.clip_norm.map(|_| 0.0);
            return Ok(StepOutcome::Skipped);
        }
        self.skipped.clear();
        self.last_norm = None;
        let mut s = self.scalars::<f32>(id.0, &mut None);
        if self.clip_norm.is_some() {
            if let Some(c) = self.clip_scale(sum_squares_widened(grad)) {
                s = s.with_grad_scale(c);
            }
        }
        self.apply_mixed_tensor(id.0, param, grad, &s);
        self.tensors[id.0].step += 1;
        Ok(StepOutcome::Applied)
    }

    /// Applies `s` to checked tensor `i`, split across threads.
    fn apply_mixed_tensor<P: Storage>(
        &mut self,
        i: usize,
        param: &mut [P],
        grad: &[P],
        s: &Scalars<f32>,
    ) {
        let t = &mut self.tensors[i];
        let (len, step, layout) = (t.len, t.step + 1, t.layout());
        match &mut t.state {
            StateBuf::F32(v) => apply_parts(
                &mut self.engine,
                s,
                step,
                param,
                grad,
                v,
                len,
                layout,
                &F32State,
            ),
            StateBuf::Bf16(v) => {
                let sr = Bf16Sr {
                    seed: t.seed,
                    offset: 0,
                };
                apply_parts(&mut self.engine, s, step, param, grad, v, len, layout, &sr)
            }
            // Excluded by `check_any` (f64 parameters take f64 state only).
            StateBuf::F64(_) => {}
        }
    }
}

/// Σ g² over a 16-bit (or f32) gradient, widened, in `f64`: the global norm of gradient
/// clipping for mixed-precision tensors.
fn sum_squares_widened<P: Storage>(grad: &[P]) -> f64 {
    grad.iter()
        .map(|g| {
            let x = g.widen() as f64;
            x * x
        })
        .sum()
}

/// A pointer that may cross to the worker threads: each part of [`apply_parts`] derives
/// disjoint slices from it.
#[derive(Clone, Copy)]
struct SharedPtr<T>(*mut T);
// SAFETY: only used by `apply_parts`, whose parts touch disjoint ranges of the pointee while
// the caller's exclusive borrow of it lasts.
unsafe impl<T: Send> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedPtr<T> {}

/// [`mixed::apply_mixed`] over `param`, `grad` and the `k` state arrays placed in `state` as
/// `layout` says, in parts across the engine's threads; each part's stochastic rounding is
/// keyed by its whole-tensor index ([`StateStorage::at`]).
#[allow(clippy::too_many_arguments)]
fn apply_parts<P: Storage, S: StateStorage>(
    engine: &mut Engine,
    s: &Scalars<f32>,
    t: u64,
    param: &mut [P],
    grad: &[P],
    state: &mut [S::Elem],
    len: usize,
    layout: StateLayout,
    storage: &S,
) {
    let k = s.state_count();
    let need = layout.total(k, len);
    assert!(param.len() == len && grad.len() == len && need.is_some_and(|n| state.len() >= n));
    let bytes = (3 * core::mem::size_of::<P>() + 2 * k * core::mem::size_of::<S::Elem>()).max(1);
    let (p, st) = (SharedPtr(param.as_mut_ptr()), SharedPtr(state.as_mut_ptr()));
    engine.split(len, bytes, &|r: core::ops::Range<usize>| {
        let (p, st) = (p, st);
        // SAFETY: `r` lies within `0..len`, and the parts `split` makes are disjoint, so each
        // slice below is touched by this part alone while `param`/`state` stay borrowed.
        let param = unsafe { core::slice::from_raw_parts_mut(p.0.add(r.start), r.len()) };
        let mut arrays: [&mut [S::Elem]; mixed::MAX_STATES] = Default::default();
        for (j, a) in arrays.iter_mut().enumerate().take(k) {
            // SAFETY: as above; array `j` is `layout.range(j, len)` of `state` (checked to fit
            // above), and the arrays do not overlap.
            let start = layout.range(j, len).start + r.start;
            *a = unsafe { core::slice::from_raw_parts_mut(st.0.add(start), r.len()) };
        }
        let part = storage.at(r.start as u64);
        mixed::apply_mixed(s, t, param, &grad[r], &mut arrays[..k], &part);
    });
}
