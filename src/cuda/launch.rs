//! The launches of one step: per element type a [`Plan`] of the algorithm's kernel, then the
//! sequence every step enqueues on the caller's stream:
//! zero the verdict flags, copy the tables that do not fit in the arguments, run the scan phase
//! of every plan (unless the policy is `propagate`), let the caller enqueue the verdict's copy,
//! then run the apply phase of every plan.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::marker::PhantomData;

use super::driver::Backend;
use super::error::CudaError;
use super::layout::{
    AdamDev, Args, ConstantVsgdDev, DeviceScalars, SgdmDev, VsgdDev, PHASE_APPLY, PHASE_SCAN,
};
use super::module::DevType;
use super::module::Kernel;
use super::plan::{Plan, Work, BLOCK};
use crate::config::{Algorithm, Config};
use crate::element::Element;
use crate::kernels::{NonFinitePolicy, Scalars};

/// A plan of one algorithm and element type, its types erased.
pub(crate) trait AnyPlan: Send {
    /// Adds a tensor stepped with `config` at update number `t` and learning rate `lr`
    /// (checked by the caller).
    fn push(&mut self, w: Work, config: &Config, t: u64, lr: f64);
    fn is_empty(&self) -> bool;
    fn fits_inline(&self) -> bool;
    fn table_bytes(&self) -> usize;
    fn write_tables(&self, out: &mut Vec<u8>);
    /// Launches phase `phase`.
    ///
    /// # Safety
    /// The plan's device addresses, `flags` (verdict flags) and `table` (when not inline, the
    /// tables' bytes) are valid device memory for the launch.
    unsafe fn launch(
        &self,
        b: &dyn Backend,
        stream: u64,
        phase: u32,
        flags: u64,
        table: Option<u64>,
    ) -> Result<(), CudaError>;
}

struct Typed<T, S> {
    plan: Plan<S>,
    kernel: Kernel,
    /// The scalars of the last tensor pushed and what they were computed from: tensors of one
    /// group at the same step share them (two `pow`s saved per tensor).
    last: Option<(Config, u64, u64, S)>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Element, S: DeviceScalars<T> + Send> AnyPlan for Typed<T, S> {
    fn push(&mut self, w: Work, config: &Config, t: u64, lr: f64) {
        let s = match self.last {
            Some((c, tt, l, s)) if c == *config && tt == t && l == lr.to_bits() => s,
            _ => {
                let s = S::from_scalars(&Scalars::<T>::new(config, t, lr))
                    .expect("the plan's algorithm is the configuration's");
                self.last = Some((*config, t, lr.to_bits(), s));
                s
            }
        };
        self.plan.push(w, s);
    }

    fn is_empty(&self) -> bool {
        self.plan.is_empty()
    }

    fn fits_inline(&self) -> bool {
        self.plan.fits_inline()
    }

    fn table_bytes(&self) -> usize {
        self.plan.table_bytes()
    }

    fn write_tables(&self, out: &mut Vec<u8>) {
        self.plan.write_tables(out)
    }

    unsafe fn launch(
        &self,
        b: &dyn Backend,
        stream: u64,
        phase: u32,
        flags: u64,
        table: Option<u64>,
    ) -> Result<(), CudaError> {
        let mut args: Args<S> = self.plan.args(phase, flags, table);
        let mut params = [(&mut args as *mut Args<S>).cast::<c_void>()];
        // SAFETY: the caller's contract; `args` outlives the call (the driver copies it).
        unsafe { b.launch(stream, self.kernel, self.plan.grid(), BLOCK, &mut params) }
    }
}

fn typed<T: Element, S: DeviceScalars<T> + Send + 'static>(
    kernel: Kernel,
    chunk: u64,
    policy: NonFinitePolicy,
    any_flag: u32,
) -> Box<dyn AnyPlan> {
    Box::new(Typed::<T, S> {
        plan: Plan::new(chunk, policy, any_flag),
        kernel,
        last: None,
        _t: PhantomData,
    })
}

/// An empty plan for `algorithm`'s kernel over `dtype`.
pub(crate) fn new_plan(
    algorithm: Algorithm,
    dtype: DevType,
    chunk: u64,
    policy: NonFinitePolicy,
    any_flag: u32,
) -> Box<dyn AnyPlan> {
    let k = Kernel::multi_tensor(algorithm, dtype);
    match (algorithm, dtype) {
        (Algorithm::Vsgd, DevType::F32) => typed::<f32, VsgdDev<f32>>(k, chunk, policy, any_flag),
        (Algorithm::Vsgd, DevType::F64) => typed::<f64, VsgdDev<f64>>(k, chunk, policy, any_flag),
        (Algorithm::ConstantVsgd, DevType::F32) => {
            typed::<f32, ConstantVsgdDev<f32>>(k, chunk, policy, any_flag)
        }
        (Algorithm::ConstantVsgd, DevType::F64) => {
            typed::<f64, ConstantVsgdDev<f64>>(k, chunk, policy, any_flag)
        }
        (Algorithm::Adam | Algorithm::AdamW, DevType::F32) => {
            typed::<f32, AdamDev<f32>>(k, chunk, policy, any_flag)
        }
        (Algorithm::Adam | Algorithm::AdamW, DevType::F64) => {
            typed::<f64, AdamDev<f64>>(k, chunk, policy, any_flag)
        }
        (Algorithm::Sgdm, DevType::F32) => typed::<f32, SgdmDev<f32>>(k, chunk, policy, any_flag),
        (Algorithm::Sgdm, DevType::F64) => typed::<f64, SgdmDev<f64>>(k, chunk, policy, any_flag),
    }
}

/// The launches of one step over tensors of any element types.
pub(crate) struct StepLaunch {
    algorithm: Algorithm,
    policy: NonFinitePolicy,
    chunk: u64,
    any_flag: u32,
    /// One plan per element type present (f32, f64).
    plans: [Option<Box<dyn AnyPlan>>; 2],
}

impl StepLaunch {
    /// A step of `algorithm` under `policy` whose verdict flags are `0..=any_flag` (one per
    /// tensor, then the one set when any tensor is flagged).
    pub fn new(
        b: &dyn Backend,
        algorithm: Algorithm,
        policy: NonFinitePolicy,
        any_flag: u32,
    ) -> Self {
        StepLaunch {
            algorithm,
            policy,
            chunk: b.chunk(),
            any_flag,
            plans: [None, None],
        }
    }

    /// Adds a tensor (see [`AnyPlan::push`]).
    pub fn push(&mut self, dtype: DevType, w: Work, config: &Config, t: u64, lr: f64) {
        let (algorithm, chunk, policy, any) =
            (self.algorithm, self.chunk, self.policy, self.any_flag);
        self.plans[dtype as usize]
            .get_or_insert_with(|| new_plan(algorithm, dtype, chunk, policy, any))
            .push(w, config, t, lr);
    }

    fn active(&self) -> impl Iterator<Item = &dyn AnyPlan> {
        self.plans
            .iter()
            .flatten()
            .map(|p| &**p)
            .filter(|p| !p.is_empty())
    }

    /// Bytes of device tables the step needs (0 when everything fits in the arguments).
    pub fn table_bytes(&self) -> usize {
        self.active()
            .filter(|p| !p.fits_inline())
            .map(|p| p.table_bytes().next_multiple_of(8))
            .sum()
    }

    /// Bytes of the verdict flags.
    pub fn flag_bytes(&self) -> usize {
        (self.any_flag as usize + 1) * 4
    }

    /// Enqueues the step on `stream`: zero the flags (unless `propagate`), copy the tables to
    /// `table` (`scratch` holds their bytes meanwhile), scan every plan, call `after_scan`,
    /// apply every plan.
    ///
    /// # Safety
    /// Every tensor's device addresses are valid for the step and not used by anything else
    /// until it is done; `flags` holds [`StepLaunch::flag_bytes`] and `table`
    /// [`StepLaunch::table_bytes`] bytes of device memory no earlier work still reads.
    pub unsafe fn enqueue(
        &self,
        b: &dyn Backend,
        stream: u64,
        flags: u64,
        table: u64,
        scratch: &mut Vec<u8>,
        after_scan: &mut dyn FnMut() -> Result<(), CudaError>,
    ) -> Result<(), CudaError> {
        let propagate = self.policy == NonFinitePolicy::Propagate;
        // Where each plan's tables go.
        let mut at = [None, None];
        scratch.clear();
        for (i, p) in self.plans.iter().enumerate() {
            if let Some(p) = p.as_ref().filter(|p| !p.is_empty() && !p.fits_inline()) {
                at[i] = Some(table + scratch.len() as u64);
                p.write_tables(scratch);
                scratch.resize(scratch.len().next_multiple_of(8), 0);
            }
        }
        // SAFETY (all below): the caller's contract.
        unsafe {
            if !propagate {
                b.memset_zero_async(stream, flags, self.flag_bytes())?;
            }
            if !scratch.is_empty() {
                b.upload_async(stream, table, scratch)?;
            }
            let plans = || {
                self.plans
                    .iter()
                    .zip(at)
                    .filter_map(|(p, t)| Some((p.as_ref()?, t)))
            };
            if !propagate {
                for (p, t) in plans().filter(|(p, _)| !p.is_empty()) {
                    p.launch(b, stream, PHASE_SCAN, flags, t)?;
                }
            }
            after_scan()?;
            for (p, t) in plans().filter(|(p, _)| !p.is_empty()) {
                p.launch(b, stream, PHASE_APPLY, flags, t)?;
            }
        }
        Ok(())
    }
}
