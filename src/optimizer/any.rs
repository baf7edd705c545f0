//! One step over tensors of every element type at once ([`Optimizer::step_any`]): a model
//! whose weights are `bf16` and whose norms and biases are `f32` is one step, one global clock
//! tick and one global gradient norm, as torch's and optax's optimizers see it.

use super::{sum_squares_widened, Optimizer, StateBuf, StepReport, TensorId};
use crate::element::buffers::AsBuffer;
use crate::element::{DType, Element, GradRef, ParamMut};
use crate::error::Error;
use crate::kernels::batch::Item;
use crate::kernels::{NonFinitePolicy, Scalars, StepOutcome};

/// Σ g², widened to `f64`: the gradient-clipping sum of a tensor of the mixed-precision path.
fn sum_squares_any(g: &GradRef<'_>) -> f64 {
    match g {
        GradRef::F32(g) => sum_squares_widened(g),
        GradRef::Bf16(g) => sum_squares_widened(g),
        GradRef::F16(g) => sum_squares_widened(g),
        // f64 tensors never take the mixed path (`check_any`).
        GradRef::F64(g) => g.iter().map(|x| x * x).sum(),
    }
}

/// The parameters of a step over every tensor, by index: a list of [`ParamMut`], or of
/// slices of one element type (the typed steps), seen without copying the list.
pub(crate) trait ParamList {
    /// The number of entries.
    fn count(&self) -> usize;
    /// Entry `i`'s element type and length (for the checks).
    fn meta(&self, i: usize) -> (DType, usize);
    /// Entry `i`.
    fn get(&mut self, i: usize) -> ParamMut<'_>;
}

impl ParamList for [ParamMut<'_>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn meta(&self, i: usize) -> (DType, usize) {
        (self[i].dtype(), self[i].len())
    }
    fn get(&mut self, i: usize) -> ParamMut<'_> {
        self[i].reborrow()
    }
}

impl<T: AsBuffer> ParamList for [&mut [T]] {
    fn count(&self) -> usize {
        self.len()
    }
    fn meta(&self, i: usize) -> (DType, usize) {
        (T::BUFFER_DTYPE, self[i].len())
    }
    fn get(&mut self, i: usize) -> ParamMut<'_> {
        T::param_buf(self[i])
    }
}

/// The gradients of a step over every tensor, by index (`None`: frozen): a list of
/// [`GradRef`], or of slices of one element type, optional or not.
pub(crate) trait GradList {
    /// The number of entries.
    fn count(&self) -> usize;
    /// Entry `i`.
    fn get(&self, i: usize) -> Option<GradRef<'_>>;
}

impl GradList for [Option<GradRef<'_>>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn get(&self, i: usize) -> Option<GradRef<'_>> {
        self[i]
    }
}

impl<T: AsBuffer> GradList for [Option<&[T]>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn get(&self, i: usize) -> Option<GradRef<'_>> {
        self[i].map(T::grad_buf)
    }
}

impl<T: AsBuffer> GradList for [&[T]] {
    fn count(&self) -> usize {
        self.len()
    }
    fn get(&self, i: usize) -> Option<GradRef<'_>> {
        Some(T::grad_buf(self[i]))
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
    /// tensor gets the bits of its single-tensor step ([`Optimizer::step_tensor_any`]) when
    /// clipping is off (with clipping, the norm covers every tensor: that is the point).
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
        self.step_lists(params, grads)
    }

    /// The one body of every step over all tensors ([`Optimizer::step`],
    /// [`Optimizer::step_some`], [`Optimizer::step_mixed`], [`Optimizer::step_any`]): their
    /// buffers seen through [`ParamList`] and [`GradList`], so none allocates.
    pub(super) fn step_lists<P: ParamList + ?Sized, G: GradList + ?Sized>(
        &mut self,
        params: &mut P,
        grads: &G,
    ) -> Result<StepReport, Error> {
        let n = self.check_counts(params.count(), grads.count())?;
        // Every check first: nothing changes on error.
        let mut frozen = 0;
        for i in 0..n {
            let Some(g) = grads.get(i) else {
                frozen += 1;
                continue;
            };
            if let Err(e) = self.check_any(i, params.meta(i), &g) {
                // An earlier non-finite gradient under the `Error` policy comes first (as the
                // scan below would report it).
                if self.policy == NonFinitePolicy::Error {
                    let bad = (0..i).find(|&j| grads.get(j).is_some_and(|g| !g.all_finite()));
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
        for i in 0..n {
            let Some(g) = grads.get(i) else { continue };
            if self.route(i) == Route::Mixed {
                continue;
            }
            match (params.get(i), g) {
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
                .map(|g| sum_squares_any(&g))
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
        for i in 0..n {
            let Some(g) = applies(self, i) else { continue };
            let mut s: Scalars<f32> = self.scalars(i, &mut last);
            if let Some(c) = grad_scale {
                s = s.with_grad_scale(c);
            }
            match (params.get(i), g) {
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

    /// One update of one tensor, whatever its element types: the batched executor for
    /// `f32`/`f64` tensors with state of their type, the fused mixed loop for those with a
    /// 16-bit parameter or `bf16` state. `param` and `grad` must be of the tensor's parameter
    /// type ([`Error::DTypeMismatch`] otherwise). On error nothing changes. The body of
    /// [`Optimizer::step_tensor`] and [`Optimizer::step_tensor_mixed`].
    pub fn step_tensor_any(
        &mut self,
        id: TensorId,
        param: ParamMut<'_>,
        grad: GradRef<'_>,
    ) -> Result<StepOutcome, Error> {
        self.check_any(id.0, (param.dtype(), param.len()), &grad)?;
        let plain = self.route(id.0) == Route::Plain;
        match (param, grad) {
            (ParamMut::F32(p), GradRef::F32(g)) if plain => self.step_tensor_plain(id, p, g),
            (ParamMut::F64(p), GradRef::F64(g)) => self.step_tensor_plain(id, p, g),
            (ParamMut::F32(p), GradRef::F32(g)) => self.step_tensor_mixed_loop(id, p, g),
            (ParamMut::Bf16(p), GradRef::Bf16(g)) => self.step_tensor_mixed_loop(id, p, g),
            (ParamMut::F16(p), GradRef::F16(g)) => self.step_tensor_mixed_loop(id, p, g),
            _ => unreachable!("types checked by check_any"),
        }
    }

    /// Tensor `i`'s gradient when the mixed loop updates it.
    fn mixed_grad<'g, G: GradList + ?Sized>(&self, grads: &'g G, i: usize) -> Option<GradRef<'g>> {
        grads.get(i).filter(|_| self.route(i) == Route::Mixed)
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
    fn check_any(&self, i: usize, param: (DType, usize), grad: &GradRef<'_>) -> Result<(), Error> {
        let t = self.tensor(TensorId(i))?;
        for got in [param.0, grad.dtype()] {
            if got != t.param_dtype {
                return Err(Error::DTypeMismatch {
                    tensor: i,
                    expected: t.param_dtype,
                    got,
                });
            }
        }
        if self.route(i) == Route::Mixed && matches!(t.state, StateBuf::F64(_)) {
            // Not registrable (`add_tensor` refuses f64 state with another parameter type).
            return Err(Error::MixedPrecision {
                tensor: i,
                param: t.param_dtype,
                state: t.state.dtype(),
            });
        }
        t.check_buffers(param.1, grad.len())
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
