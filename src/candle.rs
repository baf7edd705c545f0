//! [candle](https://github.com/huggingface/candle) integration (feature `candle`):
//! [`CandleOptimizer`] implements candle-nn's [`Optimizer`](candle_nn::Optimizer) trait with
//! this crate's engine, for every [`Algorithm`](crate::Algorithm).
//!
//! Swapping candle's AdamW for VSGD is one line:
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::Optimizer as _;
//! use vsgd::candle::CandleOptimizer;
//! use vsgd::{Config, VsgdConfig};
//!
//! let w = Var::new(&[1.0f32, -2.0, 3.0], &Device::Cpu)?;
//! // let mut opt = candle_nn::AdamW::new(vec![w.clone()], candle_nn::ParamsAdamW::default())?;
//! let mut opt = CandleOptimizer::new(vec![w.clone()], Config::Vsgd(VsgdConfig { lr: 0.05, ..Default::default() }))?;
//! for _ in 0..400 {
//!     let loss = w.as_tensor().sqr()?.sum_all()?; // ‖w‖², 14 at the start
//!     opt.backward_step(&loss)?;
//! }
//! assert!(w.as_tensor().sqr()?.sum_all()?.to_scalar::<f32>()? < 0.05);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! How a step runs: each variable's value and gradient are copied to host memory, updated by
//! one [`Optimizer::step_any`] over all of them (the same kernels, state layout, schedules and non-finite policy
//! as everywhere else in the crate, so the bits are those of the core [`Optimizer`] fed the same
//! gradients), and the new value is written back with [`Var::set`]. The copy costs two passes
//! over the parameters per step, small next to a forward and backward pass; on a GPU device it
//! is a round trip through the host.
//!
//! Variables of type `f32` and `f64` are optimized (state in the same type); `bf16` and `f16`
//! variables too, as mixed-precision tensors (as [`Optimizer::step_mixed`]: the update computed in
//! `f32` with `f32` state, the parameter rounded once to nearest even). Integer variables are
//! left out, as candle's own optimizers do.

use candle_core::backprop::GradStore;
use candle_core::{DType as CandleDType, Tensor, Var};
use candle_nn::VarMap;

use crate::config::Config;
use crate::element::DType;
use crate::error::Error;
use crate::kernels::{self, NonFinitePolicy};
use crate::optimizer::{GradRef, GroupId, Optimizer, ParamMut, TensorId, TensorSpec};
use crate::schedule::LrSchedule;

/// candle-nn's [`Optimizer`](candle_nn::Optimizer) run by this crate's engine.
///
/// `Config` is the crate's [`Config`], so the algorithm is chosen by the configuration:
/// `CandleOptimizer::new(vars, Config::Vsgd(..))`, `Config::AdamW(AdamConfig::adamw())`, ….
/// Every variable is registered in group 0 in the order given; the full [`Optimizer`] (groups,
/// schedules, state read-out, policy) is reachable through [`CandleOptimizer::inner_mut`].
///
/// [`learning_rate`](candle_nn::Optimizer::learning_rate) and
/// [`set_learning_rate`](candle_nn::Optimizer::set_learning_rate) read and set group 0's base
/// learning rate η; a [schedule](CandleOptimizer::set_schedule) multiplies it per step. The
/// trait's `set_learning_rate` cannot fail, so an invalid rate (negative, NaN, ∞) is kept aside
/// and returned as an error by the next `step`, which then changes nothing.
#[derive(Debug)]
pub struct CandleOptimizer {
    vars: Vec<Var>,
    ids: Vec<TensorId>,
    inner: Optimizer,
    pending: Option<Error>,
    /// Tensors skipped (non-finite gradient) by the last step, across all its variables.
    skipped: Vec<TensorId>,
}

/// A variable's value or gradient copied to the host.
enum Host {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bf16(Vec<half::bf16>),
    F16(Vec<half::f16>),
}

impl Host {
    /// The engine's views of a value and its gradient, if they are of one type.
    fn buffers<'a>(&'a mut self, grad: &'a Host) -> Option<(ParamMut<'a>, GradRef<'a>)> {
        Some(match (self, grad) {
            (Host::F32(p), Host::F32(g)) => (ParamMut::F32(p), GradRef::F32(g)),
            (Host::F64(p), Host::F64(g)) => (ParamMut::F64(p), GradRef::F64(g)),
            (Host::Bf16(p), Host::Bf16(g)) => (ParamMut::Bf16(p), GradRef::Bf16(g)),
            (Host::F16(p), Host::F16(g)) => (ParamMut::F16(p), GradRef::F16(g)),
            _ => return None,
        })
    }

    /// Whether every element is finite (not NaN or ±∞).
    fn all_finite(&self) -> bool {
        match self {
            Host::F32(g) => kernels::all_finite(g),
            Host::F64(g) => kernels::all_finite(g),
            Host::Bf16(g) => kernels::mixed::all_finite(g),
            Host::F16(g) => kernels::mixed::all_finite(g),
        }
    }
}

fn wrap(e: Error) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

fn dtype_of(var: &Tensor) -> candle_core::Result<Option<DType>> {
    match var.dtype() {
        CandleDType::F32 => Ok(Some(DType::F32)),
        CandleDType::F64 => Ok(Some(DType::F64)),
        CandleDType::BF16 => Ok(Some(DType::Bf16)),
        CandleDType::F16 => Ok(Some(DType::F16)),
        d if d.is_float() => Err(candle_core::Error::msg(format!(
            "vsgd: variables of type {d:?} are not supported (use f32, f64, bf16 or f16)"
        ))),
        _ => Ok(None),
    }
}

fn to_host(t: &Tensor, dtype: DType) -> candle_core::Result<Host> {
    let flat = t.flatten_all()?;
    Ok(match dtype {
        DType::F32 => Host::F32(flat.to_dtype(CandleDType::F32)?.to_vec1()?),
        DType::F64 => Host::F64(flat.to_dtype(CandleDType::F64)?.to_vec1()?),
        DType::Bf16 => Host::Bf16(flat.to_dtype(CandleDType::BF16)?.to_vec1()?),
        DType::F16 => Host::F16(flat.to_dtype(CandleDType::F16)?.to_vec1()?),
    })
}

impl CandleOptimizer {
    /// Registers `vars` (optionally named) with a fresh [`Optimizer`] configured by `config`.
    fn build<'a>(
        vars: impl IntoIterator<Item = (Option<&'a str>, Var)>,
        config: Config,
    ) -> candle_core::Result<Self> {
        let mut inner = Optimizer::new(config).map_err(wrap)?;
        let mut kept = Vec::new();
        let mut ids = Vec::new();
        for (name, var) in vars {
            let Some(dtype) = dtype_of(&var)? else {
                continue;
            };
            let mut spec = TensorSpec::new(var.dims()).dtype(dtype);
            if let Some(name) = name {
                spec = spec.name(name);
            }
            ids.push(inner.add_tensor(spec).map_err(wrap)?);
            kept.push(var);
        }
        Ok(CandleOptimizer {
            vars: kept,
            ids,
            inner,
            pending: None,
            skipped: Vec::new(),
        })
    }

    /// Every variable of a [`VarMap`], registered under its name in name order (so tensor ids,
    /// read-outs and checkpoints do not depend on the map's hash order).
    pub fn from_varmap(varmap: &VarMap, config: Config) -> candle_core::Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::msg("vsgd: the VarMap's lock is poisoned"))?;
        let mut named: Vec<(&String, &Var)> = data.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        Self::build(
            named
                .into_iter()
                .map(|(n, v)| (Some(n.as_str()), v.clone())),
            config,
        )
    }

    /// The variables being optimized, in registration order (integer variables left out).
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The engine's tensor id of `vars()[k]`.
    pub fn tensor_id(&self, k: usize) -> Option<TensorId> {
        self.ids.get(k).copied()
    }

    /// The engine ids of the variables whose update the last [`step`](candle_nn::Optimizer::step)
    /// skipped because their gradient held NaN or ±∞ (under [`NonFinitePolicy::Skip`]), in
    /// registration order: [`tensor_id`](Self::tensor_id) maps a variable to its id.
    ///
    /// The same list as `inner().last_skipped()` after a step (the adapter steps the engine
    /// once, [`Optimizer::step_any`], whatever the variables' types). A step that returns an
    /// error before changing anything leaves this list as it was.
    pub fn last_skipped(&self) -> &[TensorId] {
        &self.skipped
    }

    /// The engine: state read-out ([`Optimizer::state`]), groups, policy, ….
    pub fn inner(&self) -> &Optimizer {
        &self.inner
    }

    /// The engine, writable. Changing group 0's algorithm is impossible (it is checked), and
    /// registering tensors here makes them part of no candle variable: they are never stepped.
    pub fn inner_mut(&mut self) -> &mut Optimizer {
        &mut self.inner
    }

    /// Consumes the adapter, returning the variables and the engine.
    pub fn into_parts(self) -> (Vec<Var>, Optimizer) {
        (self.vars, self.inner)
    }

    /// Sets group 0's learning-rate schedule; the paper halves η every N steps:
    /// `Schedule::StepDecay { every: N, factor: 0.5 }.into()`.
    pub fn set_schedule(&mut self, schedule: LrSchedule) -> candle_core::Result<()> {
        self.inner.set_schedule(GroupId(0), schedule).map_err(wrap)
    }

    /// The learning rate the next step of the first variable will use (base η × schedule).
    pub fn current_lr(&self) -> f64 {
        let step = match self.ids.first() {
            Some(&id) => self.inner.step_count(id).unwrap_or(0),
            None => 0,
        };
        self.inner
            .lr_at(GroupId(0), step.saturating_add(1))
            .unwrap_or(0.0)
    }
}

impl candle_nn::Optimizer for CandleOptimizer {
    type Config = Config;

    /// Registers the floating-point variables (integer ones are left out; `bf16`/`f16` ones as
    /// mixed-precision tensors with `f32` state) with an engine configured by `config`
    /// (checked: a bad hyperparameter is an error).
    fn new(vars: Vec<Var>, config: Config) -> candle_core::Result<Self> {
        Self::build(vars.into_iter().map(|v| (None, v)), config)
    }

    /// One update of every variable that has a gradient in `grads` (the others, and their step
    /// counters, are left alone). Every gradient is fetched and checked (type, shape, and
    /// finiteness under [`NonFinitePolicy::Error`]) before any variable changes, so an error of
    /// that kind, or a pending invalid learning rate, leaves the model and the optimizer as they
    /// were. All the variables are then stepped together, whatever their types, in one batched
    /// engine step split across threads ([`Optimizer::step_any`]: one global norm for gradient
    /// clipping, one tick of the global schedule clock; variables without a gradient are
    /// frozen), and written back; an error writing a variable back leaves the
    /// ones before it updated. Under the default [`NonFinitePolicy::Skip`], a
    /// variable whose gradient holds NaN or ±∞ is skipped and named by
    /// [`CandleOptimizer::last_skipped`].
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(wrap(e));
        }
        let mut work = Vec::with_capacity(self.vars.len());
        for (k, var) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var) else {
                continue;
            };
            if grad.dims() != var.dims() {
                return Err(candle_core::Error::msg(format!(
                    "vsgd: gradient of variable {k} has shape {:?}, the variable {:?}",
                    grad.dims(),
                    var.dims()
                )));
            }
            let dtype = self.inner.tensor_info(self.ids[k]).map_err(wrap)?.dtype;
            if grad.dtype() != var.dtype() {
                return Err(candle_core::Error::msg(format!(
                    "vsgd: gradient of variable {k} is {:?}, the variable {:?}",
                    grad.dtype(),
                    var.dtype()
                )));
            }
            let (p, g) = (to_host(var, dtype)?, to_host(grad, dtype)?);
            if self.inner.policy() == NonFinitePolicy::Error && !g.all_finite() {
                return Err(wrap(Error::NonFiniteGradient {
                    tensor: self.ids[k].0,
                }));
            }
            work.push((k, p, g));
        }
        // One engine step over every variable, whatever its type (one global norm for
        // clipping, one tick of the global clock): the ones without a gradient frozen.
        let n = self.inner.num_tensors();
        let mut hosts: Vec<Option<(Host, Host)>> = (0..n).map(|_| None).collect();
        for (k, p, g) in work {
            hosts[self.ids[k].0] = Some((p, g));
        }
        let mut params = Vec::with_capacity(n);
        let mut given = Vec::with_capacity(n);
        for h in hosts.iter_mut() {
            match h {
                Some((p, g)) => {
                    let (p, g) = p.buffers(g).ok_or_else(|| {
                        candle_core::Error::msg(
                            "vsgd: a variable and its gradient were copied as different types",
                        )
                    })?;
                    params.push(p);
                    given.push(Some(g));
                }
                None => {
                    params.push(ParamMut::F32(&mut []));
                    given.push(None);
                }
            }
        }
        self.inner.step_any(&mut params, &given).map_err(wrap)?;
        drop((params, given));
        self.skipped.clear();
        self.skipped.extend_from_slice(self.inner.last_skipped());
        for (k, id) in self.ids.iter().enumerate() {
            let Some((value, _)) = hosts[id.0].take() else {
                continue;
            };
            if self.skipped.contains(id) {
                continue;
            }
            let var = &self.vars[k];
            let t = match value {
                Host::F32(v) => Tensor::from_vec(v, var.shape(), var.device())?,
                Host::F64(v) => Tensor::from_vec(v, var.shape(), var.device())?,
                Host::Bf16(v) => Tensor::from_vec(v, var.shape(), var.device())?,
                Host::F16(v) => Tensor::from_vec(v, var.shape(), var.device())?,
            };
            var.set(&t)?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.inner.config(GroupId(0)).map_or(0.0, |c| c.lr())
    }

    fn set_learning_rate(&mut self, lr: f64) {
        if let Err(e) = self.inner.set_lr(GroupId(0), lr) {
            self.pending = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdamConfig, Algorithm, ConstantVsgdConfig, SgdmConfig, VsgdConfig};
    use crate::schedule::Schedule;
    use candle_core::Device;
    use candle_nn::Optimizer as _;

    fn configs() -> Vec<Config> {
        vec![
            Config::Vsgd(VsgdConfig {
                lr: 0.05,
                ..Default::default()
            }),
            Config::ConstantVsgd(ConstantVsgdConfig {
                lr: 0.05,
                ..Default::default()
            }),
            Config::Adam(AdamConfig {
                lr: 0.05,
                ..AdamConfig::adam()
            }),
            Config::AdamW(AdamConfig {
                lr: 0.05,
                ..AdamConfig::adamw()
            }),
            Config::Sgdm(SgdmConfig {
                lr: 0.05,
                ..Default::default()
            }),
        ]
    }

    /// A deterministic pseudo-random sequence in [-1, 1) (xorshift64*).
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
                (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// A two-layer network on a fixed two-class problem: the loss must fall by half for every
    /// algorithm (an adapter that wrote nothing back, or the wrong sign, would not).
    #[test]
    fn loss_falls_for_every_algorithm() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let n = 64;
        let x = Tensor::from_vec(noise(1, n * 4), (n, 4), &dev)?;
        // label: sign of x0·x1 + x2 (needs the hidden layer)
        let xs = x.to_vec2::<f32>()?;
        let y: Vec<u32> = xs
            .iter()
            .map(|r| u32::from(r[0] * r[1] + r[2] > 0.0))
            .collect();
        let y = Tensor::from_vec(y, n, &dev)?;
        for config in configs() {
            let algo = config.algorithm();
            let w1 = Var::from_vec(noise(2, 4 * 16), (4, 16), &dev)?;
            let b1 = Var::zeros(16, CandleDType::F32, &dev)?;
            let w2 = Var::from_vec(noise(3, 16 * 2), (16, 2), &dev)?;
            let mut opt = CandleOptimizer::new(vec![w1.clone(), b1.clone(), w2.clone()], config)?;
            let loss = |()| -> candle_core::Result<Tensor> {
                let h = x.matmul(&w1)?.broadcast_add(&b1)?.relu()?;
                candle_nn::loss::cross_entropy(&h.matmul(&w2)?, &y)
            };
            let first = loss(())?.to_scalar::<f32>()?;
            for _ in 0..150 {
                opt.backward_step(&loss(())?)?;
            }
            let last = loss(())?.to_scalar::<f32>()?;
            assert!(
                last < 0.5 * first,
                "{algo:?}: loss {first} -> {last} did not halve"
            );
            assert_eq!(opt.inner().step_count(TensorId(0)).unwrap(), 150);
        }
        Ok(())
    }

    fn bits_f32(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The adapter and the core optimizer, fed the same gradients (from candle's backprop),
    /// give the same bits, for every algorithm, with a schedule, in f32 and f64.
    #[test]
    fn same_bits_as_core_optimizer() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let shapes: [&[usize]; 2] = [&[3, 5], &[7]];
        for config in configs() {
            for dtype in [CandleDType::F32, CandleDType::F64] {
                let vars: Vec<Var> = shapes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let n = s.iter().product();
                        let t = Tensor::from_vec(noise(10 + i as u64, n), *s, &dev)?;
                        Var::from_tensor(&t.to_dtype(dtype)?)
                    })
                    .collect::<candle_core::Result<_>>()?;
                let mut host: Vec<Vec<f64>> = vars
                    .iter()
                    .map(|v| v.flatten_all()?.to_dtype(CandleDType::F64)?.to_vec1())
                    .collect::<candle_core::Result<_>>()?;
                let mut opt = CandleOptimizer::new(vars.clone(), config)?;
                let sched: LrSchedule = Schedule::StepDecay {
                    every: 3,
                    factor: 0.5,
                }
                .into();
                opt.set_schedule(sched)?;
                let vdtype = match dtype {
                    CandleDType::F32 => DType::F32,
                    _ => DType::F64,
                };
                let mut core = Optimizer::new(config).unwrap();
                for s in shapes {
                    core.add_tensor(TensorSpec::new(s).dtype(vdtype)).unwrap();
                }
                core.set_schedule(GroupId(0), sched).unwrap();
                for step in 0..10u64 {
                    // a loss with nonlinear gradients: Σ (w·c)² + sin(w)
                    let mut loss = Tensor::zeros((), dtype, &dev)?;
                    for (i, v) in vars.iter().enumerate() {
                        let c = Tensor::from_vec(
                            noise(100 * step + i as u64, v.elem_count()),
                            v.shape(),
                            &dev,
                        )?
                        .to_dtype(dtype)?;
                        let term = (v.as_tensor().mul(&c)?.sqr()? + v.as_tensor().sin()?)?;
                        loss = (loss + term.sum_all()?)?;
                    }
                    let grads = loss.backward()?;
                    for (i, v) in vars.iter().enumerate() {
                        let g = grads.get(v).unwrap().flatten_all()?;
                        match dtype {
                            CandleDType::F32 => {
                                let g: Vec<f32> = g.to_vec1()?;
                                let mut p: Vec<f32> = host[i].iter().map(|&x| x as f32).collect();
                                core.step_tensor(TensorId(i), &mut p, &g).unwrap();
                                host[i] = p.iter().map(|&x| f64::from(x)).collect();
                            }
                            _ => {
                                let g: Vec<f64> = g.to_vec1()?;
                                core.step_tensor(TensorId(i), &mut host[i], &g).unwrap();
                            }
                        }
                    }
                    opt.step(&grads)?;
                }
                for (i, v) in vars.iter().enumerate() {
                    let got: Vec<f64> = v.flatten_all()?.to_dtype(CandleDType::F64)?.to_vec1()?;
                    let got: Vec<u64> = got.iter().map(|x| x.to_bits()).collect();
                    let want: Vec<u64> = host[i].iter().map(|x| x.to_bits()).collect();
                    assert_eq!(got, want, "{:?} {dtype:?} tensor {i}", config.algorithm());
                }
                for name in config.algorithm().state_names() {
                    for i in 0..shapes.len() {
                        let (a, b) = match dtype {
                            CandleDType::F32 => (
                                opt.inner()
                                    .state::<f32>(TensorId(i), name)
                                    .unwrap()
                                    .iter()
                                    .map(|x| f64::from(*x).to_bits())
                                    .collect::<Vec<_>>(),
                                core.state::<f32>(TensorId(i), name)
                                    .unwrap()
                                    .iter()
                                    .map(|x| f64::from(*x).to_bits())
                                    .collect::<Vec<_>>(),
                            ),
                            _ => (
                                opt.inner()
                                    .state::<f64>(TensorId(i), name)
                                    .unwrap()
                                    .iter()
                                    .map(|x| x.to_bits())
                                    .collect(),
                                core.state::<f64>(TensorId(i), name)
                                    .unwrap()
                                    .iter()
                                    .map(|x| x.to_bits())
                                    .collect(),
                            ),
                        };
                        assert_eq!(a, b, "state {name} of tensor {i}");
                    }
                }
            }
        }
        Ok(())
    }

    /// bf16 and f16 variables train as mixed-precision tensors: the same bits as the core
    /// optimizer's `step_mixed` fed the same gradients (f32 state, parameter rounded once).
    #[test]
    fn bf16_and_f16_variables_step_as_step_mixed() -> candle_core::Result<()> {
        use half::{bf16, f16};
        let dev = Device::Cpu;
        let config = Config::default_for(Algorithm::Adam);
        let wb = Var::new(&[bf16::from_f32(1.0), bf16::from_f32(-0.5)], &dev)?;
        let wh = Var::new(&[f16::from_f32(0.25); 3], &dev)?;
        let w32 = Var::new(&[2.0f32], &dev)?;
        let mut opt = CandleOptimizer::new(vec![wb.clone(), wh.clone(), w32.clone()], config)?;
        opt.set_learning_rate(0.05);
        let info = opt.inner().tensor_info(TensorId(0)).map_err(wrap)?;
        assert_eq!((info.dtype, info.state_dtype), (DType::Bf16, DType::F32));
        let mut core = Optimizer::new(config).map_err(wrap)?;
        core.set_lr(GroupId(0), 0.05).map_err(wrap)?;
        core.add_tensor(TensorSpec::new(&[2]).dtype(DType::Bf16))
            .map_err(wrap)?;
        core.add_tensor(TensorSpec::new(&[3]).dtype(DType::F16))
            .map_err(wrap)?;
        let mut pb = [bf16::from_f32(1.0), bf16::from_f32(-0.5)];
        let mut ph = [f16::from_f32(0.25); 3];
        for step in 0..3 {
            // loss = Σ wb·c + Σ wh² + w32²: gradients c, 2·wh and 2·w32.
            let c = Tensor::new(
                &[bf16::from_f32(0.5), bf16::from_f32(-1.0 - step as f32)],
                &dev,
            )?;
            let loss = wb
                .as_tensor()
                .mul(&c)?
                .to_dtype(CandleDType::F32)?
                .sum_all()?
                .add(
                    &wh.as_tensor()
                        .sqr()?
                        .to_dtype(CandleDType::F32)?
                        .sum_all()?,
                )?
                .add(&w32.as_tensor().sqr()?.sum_all()?)?;
            let grads = loss.backward()?;
            let gb: Vec<bf16> = grads.get(&wb).expect("grad").to_vec1()?;
            let gh: Vec<f16> = grads.get(&wh).expect("grad").to_vec1()?;
            opt.step(&grads)?;
            core.step_tensor_mixed(TensorId(0), &mut pb, &gb)
                .map_err(wrap)?;
            core.step_tensor_mixed(TensorId(1), &mut ph, &gh)
                .map_err(wrap)?;
            assert_eq!(
                wb.as_tensor().to_vec1::<bf16>()?,
                pb.to_vec(),
                "step {step}"
            );
            assert_eq!(wh.as_tensor().to_vec1::<f16>()?, ph.to_vec(), "step {step}");
        }
        assert!(pb[1].to_f32() > -0.5 && ph[0].to_f32() < 0.25);
        assert_eq!(opt.inner().step_count(TensorId(2)).map_err(wrap)?, 3);
        Ok(())
    }

    /// A model of f32 and bf16 variables is one engine step: the global schedule clock
    /// advances once per step and gradient clipping takes the norm over both types (it took
    /// one norm and one clock tick per type before `step_any`).
    #[test]
    fn mixed_types_are_one_step() -> candle_core::Result<()> {
        use crate::optimizer::{GradRef, ParamMut};
        use crate::schedule::{Schedule, ScheduleClock};
        use half::bf16;
        let dev = Device::Cpu;
        let config = Config::default_for(Algorithm::Vsgd);
        let schedule = || {
            LrSchedule::from(Schedule::StepDecay {
                every: 1,
                factor: 0.5,
            })
        };
        let wb = Var::new(&[bf16::from_f32(1.0), bf16::from_f32(-0.5)], &dev)?;
        let w32 = Var::new(&[2.0f32, 0.25, -3.0], &dev)?;
        let mut opt = CandleOptimizer::new(vec![wb.clone(), w32.clone()], config)?;
        opt.set_schedule(schedule())?;
        opt.inner_mut().set_schedule_clock(ScheduleClock::Global);
        opt.inner_mut().set_clip_norm(Some(0.5)).map_err(wrap)?;
        let mut core = Optimizer::new(config).map_err(wrap)?;
        core.set_schedule(GroupId(0), schedule()).map_err(wrap)?;
        core.set_schedule_clock(ScheduleClock::Global);
        core.set_clip_norm(Some(0.5)).map_err(wrap)?;
        core.add_tensor(TensorSpec::new(&[2]).dtype(DType::Bf16))
            .map_err(wrap)?;
        core.add_tensor(TensorSpec::new(&[3])).map_err(wrap)?;
        let mut pb = [bf16::from_f32(1.0), bf16::from_f32(-0.5)];
        let mut p32 = [2.0f32, 0.25, -3.0];
        for step in 1..=3u64 {
            // loss = Σ wb² + Σ w32²: gradients 2·wb and 2·w32.
            let loss = wb
                .as_tensor()
                .sqr()?
                .to_dtype(CandleDType::F32)?
                .sum_all()?
                .add(&w32.as_tensor().sqr()?.sum_all()?)?;
            let grads = loss.backward()?;
            let gb: Vec<bf16> = grads.get(&wb).expect("grad").to_vec1()?;
            let g32: Vec<f32> = grads.get(&w32).expect("grad").to_vec1()?;
            opt.step(&grads)?;
            let r = core
                .step_any(
                    &mut [ParamMut::Bf16(&mut pb), ParamMut::F32(&mut p32)],
                    &[Some(GradRef::Bf16(&gb)), Some(GradRef::F32(&g32))],
                )
                .map_err(wrap)?;
            assert_eq!(r.applied, 2);
            assert_eq!(opt.inner().global_step(), step);
            let norm = (gb.iter().map(|g| g.to_f64().powi(2)).sum::<f64>()
                + g32.iter().map(|&g| (g as f64).powi(2)).sum::<f64>())
            .sqrt();
            let got = opt.inner().last_grad_norm().expect("clipping on");
            assert!((got - norm).abs() <= 1e-12 * norm, "{got} vs {norm}");
            assert_eq!(
                wb.as_tensor().to_vec1::<bf16>()?,
                pb.to_vec(),
                "step {step}"
            );
            assert_eq!(
                w32.as_tensor().to_vec1::<f32>()?,
                p32.to_vec(),
                "step {step}"
            );
        }
        Ok(())
    }

    #[test]
    fn unsupported_and_integer_variables() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let fp8 = Var::zeros(3, CandleDType::F8E4M3, &dev)?;
        let err = CandleOptimizer::new(vec![fp8], Config::default_for(Algorithm::Vsgd))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported"), "{err}");
        let int = Var::zeros(3, CandleDType::U32, &dev)?;
        let w = Var::zeros(2, CandleDType::F32, &dev)?;
        let opt = CandleOptimizer::new(vec![int, w], Config::default_for(Algorithm::Adam))?;
        assert_eq!(opt.vars().len(), 1);
        assert_eq!(opt.inner().num_tensors(), 1);
        // a bad hyperparameter is an error, not a NaN later
        let bad = Config::Vsgd(VsgdConfig {
            ps: 0.0,
            ..Default::default()
        });
        assert!(CandleOptimizer::new(vec![], bad).is_err());
        Ok(())
    }

    #[test]
    fn invalid_lr_is_reported_by_next_step_and_changes_nothing() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, 2.0], &dev)?;
        let mut opt = CandleOptimizer::new(vec![w.clone()], Config::default_for(Algorithm::Sgdm))?;
        assert_eq!(
            opt.learning_rate(),
            Config::default_for(Algorithm::Sgdm).lr()
        );
        opt.set_learning_rate(0.25);
        assert_eq!(opt.learning_rate(), 0.25);
        opt.set_learning_rate(f64::NAN);
        assert_eq!(opt.learning_rate(), 0.25);
        let loss = w.as_tensor().sum_all()?;
        let err = opt.backward_step(&loss).unwrap_err().to_string();
        assert!(err.contains("learning rate"), "{err}");
        assert_eq!(w.as_tensor().to_vec1::<f32>()?, [1.0, 2.0]);
        assert_eq!(opt.inner().step_count(TensorId(0)).unwrap(), 0);
        // the error is reported once; the next step runs with the last valid rate
        opt.backward_step(&loss)?;
        assert_eq!(w.as_tensor().to_vec1::<f32>()?, [0.75, 1.75]);
        Ok(())
    }

    #[test]
    fn non_finite_gradients_and_missing_gradients() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let a = Var::new(&[1.0f32, 2.0], &dev)?;
        let b = Var::new(&[3.0f32], &dev)?;
        let c = Var::new(&[4.0f32], &dev)?;
        let mut opt = CandleOptimizer::new(
            vec![a.clone(), b.clone(), c.clone()],
            Config::default_for(Algorithm::Adam),
        )?;
        let mut grads = GradStore::default();
        grads.insert(&a, Tensor::new(&[f32::NAN, 1.0], &dev)?);
        grads.insert(&b, Tensor::new(&[1.0f32], &dev)?);
        // c has no gradient: untouched, its step count stays 0
        opt.step(&grads)?;
        assert_eq!(bits_f32(&a), bits_f32(&Tensor::new(&[1.0f32, 2.0], &dev)?));
        assert!(b.as_tensor().to_vec1::<f32>()?[0] < 3.0);
        assert_eq!(c.as_tensor().to_vec1::<f32>()?, [4.0]);
        let steps: Vec<u64> = (0..3)
            .map(|i| opt.inner().step_count(TensorId(i)).unwrap())
            .collect();
        assert_eq!(steps, [0, 1, 0]);
        assert_eq!(opt.last_skipped(), [TensorId(0)]);
        // under the Error policy, nothing changes, not even the finite tensors
        opt.inner_mut().set_policy(NonFinitePolicy::Error);
        let before = bits_f32(&b);
        assert!(opt.step(&grads).is_err());
        assert_eq!(bits_f32(&b), before);
        assert_eq!(opt.inner().step_count(TensorId(1)).unwrap(), 1);
        // a gradient of the wrong shape is an error, nothing changes
        let mut wrong = GradStore::default();
        wrong.insert(&b, Tensor::new(&[1.0f32, 1.0], &dev)?);
        assert!(opt.step(&wrong).is_err());
        assert_eq!(bits_f32(&b), before);
        Ok(())
    }

    #[test]
    fn skip_in_an_earlier_variable_is_reported() -> candle_core::Result<()> {
        // one engine step over both types: the engine's report and the adapter's agree
        let dev = Device::Cpu;
        let a = Var::new(&[1.0f32, 2.0], &dev)?;
        let b = Var::new(&[3.0f64], &dev)?;
        let mut opt = CandleOptimizer::new(
            vec![a.clone(), b.clone()],
            Config::default_for(Algorithm::Vsgd),
        )?;
        let mut grads = GradStore::default();
        grads.insert(&a, Tensor::new(&[1.0f32, f32::NAN], &dev)?);
        grads.insert(&b, Tensor::new(&[1.0f64], &dev)?);
        opt.step(&grads)?;
        assert_eq!(opt.last_skipped(), [opt.tensor_id(0).unwrap()]);
        assert_eq!(opt.inner().last_skipped(), opt.last_skipped());
        assert_eq!(a.as_tensor().to_vec1::<f32>()?, [1.0, 2.0]);
        assert!(b.as_tensor().to_vec1::<f64>()?[0] < 3.0);
        // a rejected step (wrong shape) keeps the report; a clean step clears it
        let mut wrong = GradStore::default();
        wrong.insert(&b, Tensor::new(&[1.0f64, 1.0], &dev)?);
        assert!(opt.step(&wrong).is_err());
        assert_eq!(opt.last_skipped(), [TensorId(0)]);
        let mut clean = GradStore::default();
        clean.insert(&a, Tensor::new(&[1.0f32, 1.0], &dev)?);
        clean.insert(&b, Tensor::new(&[1.0f64], &dev)?);
        opt.step(&clean)?;
        assert!(opt.last_skipped().is_empty());
        Ok(())
    }

    #[test]
    fn varmap_names_in_order() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, CandleDType::F32, &dev);
        let _ = candle_nn::linear(3, 2, vb.pp("zeta"))?;
        let _ = candle_nn::linear(2, 2, vb.pp("alpha"))?;
        let opt = CandleOptimizer::from_varmap(&vm, Config::default_for(Algorithm::Vsgd))?;
        let names: Vec<&str> = (0..4)
            .map(|i| opt.inner().tensor_info(TensorId(i)).unwrap().name.unwrap())
            .collect();
        assert_eq!(
            names,
            ["alpha.bias", "alpha.weight", "zeta.bias", "zeta.weight"]
        );
        Ok(())
    }
}
