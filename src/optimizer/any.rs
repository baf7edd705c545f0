//! One step over tensors of every element type at once ([`Optimizer::step_any`]): a model
//! whose weights are `bf16` and whose norms and biases are `f32` is one step, one global clock
//! tick and one global gradient norm, as torch's and optax's optimizers see it.

use half::{bf16, f16};

use super::{sum_squares_widened, Optimizer, StateBuf, StepReport, TensorId};
use crate::element::{DType, Element};
use crate::error::Error;
use crate::kernels::batch::Item;
use crate::kernels::mixed;
use crate::kernels::{NonFinitePolicy, Scalars, StepOutcome};

/// A tensor's parameter buffer, of whichever element type the tensor was registered with
/// ([`TensorSpec::dtype`](super::TensorSpec::dtype)): the argument of
/// [`Optimizer::step_any`]. Converts from `&mut [f32]`, `&mut [f64]`, `&mut [bf16]` and
/// `&mut [f16]` with `.into()`.
#[derive(Debug)]
pub enum ParamMut<'a> {
    /// `f32` elements.
    F32(&'a mut [f32]),
    /// `f64` elements.
    F64(&'a mut [f64]),
    /// `bf16` elements.
    Bf16(&'a mut [bf16]),
    /// `f16` elements.
    F16(&'a mut [f16]),
}

/// A tensor's gradient, of the same element type as its parameter: the argument of
/// [`Optimizer::step_any`]. Converts from `&[f32]`, `&[f64]`, `&[bf16]` and `&[f16]` with
/// `.into()`.
#[derive(Clone, Copy, Debug)]
pub enum GradRef<'a> {
    /// `f32` elements.
    F32(&'a [f32]),
    /// `f64` elements.
    F64(&'a [f64]),
    /// `bf16` elements.
    Bf16(&'a [bf16]),
    /// `f16` elements.
    F16(&'a [f16]),
}

macro_rules! conversions {
    ($($ty:ty => $variant:ident),*) => {$(
        impl<'a> From<&'a mut [$ty]> for ParamMut<'a> {
            fn from(p: &'a mut [$ty]) -> Self {
                ParamMut::$variant(p)
            }
        }
        impl<'a> From<&'a [$ty]> for GradRef<'a> {
            fn from(g: &'a [$ty]) -> Self {
                GradRef::$variant(g)
            }
        }
    )*};
}
conversions!(f32 => F32, f64 => F64, bf16 => Bf16, f16 => F16);

impl ParamMut<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            ParamMut::F32(_) => DType::F32,
            ParamMut::F64(_) => DType::F64,
            ParamMut::Bf16(_) => DType::Bf16,
            ParamMut::F16(_) => DType::F16,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            ParamMut::F32(p) => p.len(),
            ParamMut::F64(p) => p.len(),
            ParamMut::Bf16(p) => p.len(),
            ParamMut::F16(p) => p.len(),
        }
    }

    /// `true` when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GradRef<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            GradRef::F32(_) => DType::F32,
            GradRef::F64(_) => DType::F64,
            GradRef::Bf16(_) => DType::Bf16,
            GradRef::F16(_) => DType::F16,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            GradRef::F32(g) => g.len(),
            GradRef::F64(g) => g.len(),
            GradRef::Bf16(g) => g.len(),
            GradRef::F16(g) => g.len(),
        }
    }

    /// `true` when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `true` unless an element is NaN or ±∞.
    pub fn all_finite(&self) -> bool {
        match self {
            GradRef::F32(g) => crate::kernels::all_finite(g),
            GradRef::F64(g) => crate::kernels::all_finite(g),
            GradRef::Bf16(g) => mixed::all_finite(g),
            GradRef::F16(g) => mixed::all_finite(g),
        }
    }

    /// Σ g², widened to `f64`, for the tensors of the mixed-precision path.
    fn sum_squares_widened(&self) -> f64 {
        match self {
            GradRef::F32(g) => sum_squares_widened(g),
            GradRef::Bf16(g) => sum_squares_widened(g),
            GradRef::F16(g) => sum_squares_widened(g),
            // f64 tensors never take the mixed path (`check_any`).
            GradRef::F64(g) => g.iter().map(|x| x * x).sum(),
        }
    }
}

/// Which executor updates a checked tensor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Parameter and state of one type, `f32` or `f64`: the batched executor.
    Plain,
    /// A 16-bit parameter, or `bf16` state: the mixed-precision loop.
    Mixed,
}

impl Optimizer {
    /// One update of every registered tensor, whatever its element types: `params[i]` and
    /// `grads[i]` are tensor `i`'s buffers, of the parameter type it was registered with
    /// (`grads[i]` `None`: frozen, left untouched as in [`Optimizer::step_some`]).
    ///
    /// It is one step of the whole model: every tensor is checked before any is touched (an
    /// error changes nothing), the non-finite policy sees every gradient, gradient clipping by
    /// global norm takes the norm over all of them, the global schedule clock advances once,
    /// and the report counts every tensor. Tensors whose parameter and state are both `f32`
    /// or both `f64` are updated as [`Optimizer::step_some`] updates them (batched, split
    /// across threads); then those with a 16-bit parameter or `bf16` state as
    /// [`Optimizer::step_mixed`] does (one after another, each split across threads). Each
    /// tensor gets the bits its typed call gives when clipping is off or every tensor is of
    /// one kind (with clipping, the norm then covers every type: that is the point).
    ///
    /// ```
    /// use vsgd::{bf16, Algorithm, Config, DType, Optimizer, ScheduleClock, TensorSpec};
    /// let mut config = Config::default_for(Algorithm::Adam);
    /// config.set("lr", 0.1)?; // Adam's default 1e-3 moves a bf16 1.0 by less than half an ulp
    /// let mut opt = Optimizer::new(config)?;
    /// opt.set_schedule_clock(ScheduleClock::Global); // schedules follow one step count
    /// let w = opt.add_tensor(TensorSpec::new(&[2]).dtype(DType::Bf16))?;
    /// let b = opt.add_tensor(TensorSpec::new(&[1]))?; // f32
    /// let mut pw = [bf16::from_f32(1.0); 2];
    /// let mut pb = [0.5f32];
    /// let gw = [bf16::from_f32(0.25); 2];
    /// let r = opt.step_any(&mut [(&mut pw[..]).into(), (&mut pb[..]).into()],
    ///                      &[Some((&gw[..]).into()), Some((&[-1.0f32][..]).into())])?;
    /// assert_eq!((r.applied, opt.global_step()), (2, 1));
    /// assert!(pw[0].to_f32() < 1.0 && pb[0] > 0.5);
    /// # let _ = (w, b);
    /// # Ok::<(), vsgd::Error>(())
    /// ```
    pub fn step_any(
        &mut self,
        params: &mut [ParamMut<'_>],
        grads: &[Option<GradRef<'_>>],
    ) -> Result<StepReport, Error> {
        let n = self.check_counts(params.len(), grads.len())?;
        // Every check first: nothing changes on error.
        let mut frozen = 0;
        for (i, param) in params.iter().enumerate() {
            let Some(g) = grads[i] else {
                frozen += 1;
                continue;
            };
            if let Err(e) = self.check_any(i, param, &g) {
                // As in the typed steps: an earlier non-finite gradient under the `Error`
                // policy comes first.
                if self.policy == NonFinitePolicy::Error {
                    let bad = (0..i).find(|&j| grads[j].is_some_and(|g| !g.all_finite()));
                    if let Some(j) = bad {
                        return Err(Error::NonFiniteGradient { tensor: j });
                    }
                }
                return Err(e);
            }
        }
        // The work lists: f32 and f64 tensors for the batched executor (their constants
        // computed now), 16-bit or bf16-state ones for the mixed loop.
        let mut items32 = self.engine.take_items::<f32>(n);
        let mut items64 = self.engine.take_items::<f64>(n);
        let (mut last32, mut last64) = (None, None);
        for (i, param) in params.iter_mut().enumerate() {
            let Some(g) = grads[i] else { continue };
            if self.route(i) == Route::Mixed {
                continue;
            }
            match (param, g) {
                (ParamMut::F32(p), GradRef::F32(g)) => {
                    let item = self.item(i, p, g, &mut last32);
                    items32.push(item);
                }
                (ParamMut::F64(p), GradRef::F64(g)) => {
                    let item = self.item(i, p, g, &mut last64);
                    items64.push(item);
                }
                _ => unreachable!("types checked by check_any"),
            }
        }
        // The finite scan (the batched tensors in parallel), before anything changes; each
        // gradient is read once.
        if self.policy != NonFinitePolicy::Propagate {
            self.engine.scan(&mut items32);
            self.engine.scan(&mut items64);
        }
        if self.policy == NonFinitePolicy::Error {
            // Items are in index order, so each list's first flagged item is its lowest.
            let first = [
                items32.iter().find(|it| it.nonfinite()).map(|it| it.tensor),
                items64.iter().find(|it| it.nonfinite()).map(|it| it.tensor),
                (0..n).find(|&i| self.mixed_grad(grads, i).is_some_and(|g| !g.all_finite())),
            ];
            if let Some(tensor) = first.into_iter().flatten().min() {
                self.engine.put_items(items32);
                self.engine.put_items(items64);
                return Err(Error::NonFiniteGradient { tensor });
            }
        }
        // Past the last error: from here the step happens, and reports what it skipped
        // (`skipped` has room for every tensor: reserved at registration). Under `Error`
        // nothing is non-finite here, under `Propagate` nothing is skipped.
        self.skipped.clear();
        if self.policy == NonFinitePolicy::Skip {
            for it in items32.iter().filter(|it| it.nonfinite()) {
                self.skipped.push(TensorId(it.tensor));
            }
            for it in items64.iter().filter(|it| it.nonfinite()) {
                self.skipped.push(TensorId(it.tensor));
            }
            for i in 0..n {
                if self.mixed_grad(grads, i).is_some_and(|g| !g.all_finite()) {
                    self.skipped.push(TensorId(i));
                }
            }
            self.skipped.sort_unstable();
            items32.retain(|it| !it.nonfinite());
            items64.retain(|it| !it.nonfinite());
        }
        let skipped = core::mem::take(&mut self.skipped);
        let applies = |o: &Self, i: usize| {
            o.mixed_grad(grads, i)
                .filter(|_| skipped.binary_search(&TensorId(i)).is_err())
        };
        // Gradient clipping: one norm over every applied tensor.
        self.last_norm = None;
        let mut grad_scale = None;
        if self.clip_norm.is_some() {
            let sum32 = self.engine.sum_squares(&mut items32);
            let sum64 = self.engine.sum_squares(&mut items64);
            let sum16: f64 = (0..n)
                .filter_map(|i| applies(self, i))
                .map(|g| g.sum_squares_widened())
                .sum();
            grad_scale = self.clip_scale(sum32 + sum64 + sum16);
        }
        if let Some(c) = grad_scale {
            for it in items32.iter_mut() {
                it.scalars = it.scalars.with_grad_scale(c);
            }
            for it in items64.iter_mut() {
                it.scalars = it.scalars.with_grad_scale(c);
            }
        }
        // From here the step happens.
        let mut applied = 0;
        self.apply_items(&mut items32, &mut applied);
        self.apply_items(&mut items64, &mut applied);
        self.engine.put_items(items32);
        self.engine.put_items(items64);
        let mut last = None;
        for (i, param) in params.iter_mut().enumerate() {
            let Some(g) = applies(self, i) else { continue };
            let mut s: Scalars<f32> = self.scalars(i, &mut last);
            if let Some(c) = grad_scale {
                s = s.with_grad_scale(c);
            }
            match (param, g) {
                (ParamMut::F32(p), GradRef::F32(g)) => self.apply_mixed_tensor(i, p, g, &s),
                (ParamMut::Bf16(p), GradRef::Bf16(g)) => self.apply_mixed_tensor(i, p, g, &s),
                (ParamMut::F16(p), GradRef::F16(g)) => self.apply_mixed_tensor(i, p, g, &s),
                _ => unreachable!("types checked by check_any"),
            }
            self.tensors[i].step += 1;
            applied += 1;
        }
        self.skipped = skipped;
        Ok(self.finish_step(applied, frozen))
    }

    /// One update of one tensor, whatever its element types: [`Optimizer::step_tensor`] for
    /// `f32`/`f64` tensors, [`Optimizer::step_tensor_mixed`] for those with a 16-bit parameter
    /// or `bf16` state. `param` and `grad` must be of the tensor's parameter type
    /// ([`Error::DTypeMismatch`] otherwise). On error nothing changes.
    pub fn step_tensor_any(
        &mut self,
        id: TensorId,
        param: ParamMut<'_>,
        grad: GradRef<'_>,
    ) -> Result<StepOutcome, Error> {
        self.check_any(id.0, &param, &grad)?;
        let plain = self.route(id.0) == Route::Plain;
        match (param, grad) {
            (ParamMut::F32(p), GradRef::F32(g)) if plain => self.step_tensor(id, p, g),
            (ParamMut::F64(p), GradRef::F64(g)) => self.step_tensor(id, p, g),
            (ParamMut::F32(p), GradRef::F32(g)) => self.step_tensor_mixed(id, p, g),
            (ParamMut::Bf16(p), GradRef::Bf16(g)) => self.step_tensor_mixed(id, p, g),
            (ParamMut::F16(p), GradRef::F16(g)) => self.step_tensor_mixed(id, p, g),
            _ => unreachable!("types checked by check_any"),
        }
    }

    /// Tensor `i`'s gradient when the mixed loop updates it.
    fn mixed_grad<'g>(&self, grads: &[Option<GradRef<'g>>], i: usize) -> Option<GradRef<'g>> {
        grads[i].filter(|_| self.route(i) == Route::Mixed)
    }

    /// The executor of tensor `i` (registered, checked).
    fn route(&self, i: usize) -> Route {
        let t = &self.tensors[i];
        if t.param_dtype == t.state.dtype() && matches!(t.param_dtype, DType::F32 | DType::F64) {
            Route::Plain
        } else {
            Route::Mixed
        }
    }

    /// Checks tensor `i`'s buffers for [`Optimizer::step_any`]: both of the tensor's parameter
    /// type, of its length, and a step counter that can advance.
    fn check_any(&self, i: usize, param: &ParamMut<'_>, grad: &GradRef<'_>) -> Result<(), Error> {
        let t = self.tensor(TensorId(i))?;
        for got in [param.dtype(), grad.dtype()] {
            if got != t.param_dtype {
                return Err(Error::DTypeMismatch {
                    tensor: i,
                    expected: t.param_dtype,
                    got,
                });
            }
        }
        if self.route(i) == Route::Mixed {
            if matches!(t.state, StateBuf::F64(_)) {
                // Not registrable (`add_tensor` refuses f64 state with another parameter type).
                return Err(Error::MixedPrecision {
                    tensor: i,
                    param: t.param_dtype,
                    state: t.state.dtype(),
                });
            }
            return t.check_buffers(param.len(), grad.len());
        }
        match (param, grad) {
            (ParamMut::F32(p), GradRef::F32(g)) => self.check_meta(TensorId(i), p, g),
            (ParamMut::F64(p), GradRef::F64(g)) => self.check_meta(TensorId(i), p, g),
            _ => unreachable!("a plain tensor is f32 or f64, and both types matched it"),
        }
    }

    /// Applies checked, scanned items (their constants final) and advances their counters.
    fn apply_items<T: Element>(&mut self, items: &mut [Item<T>], applied: &mut usize) {
        if items.is_empty() {
            return;
        }
        self.engine.apply(items);
        for it in items.iter() {
            self.tensors[it.tensor].step += 1;
        }
        *applied += items.len();
    }
}
