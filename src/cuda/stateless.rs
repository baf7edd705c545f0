//! The stateless device step: caller-owned device buffers (parameters, gradients, state) and
//! the caller's stream, in the caller's current context — what C++ CUDA code and JAX's GPU
//! custom call reach through the C ABI.

use alloc::sync::Arc;
use alloc::vec::Vec;

use cudarc::driver::{sys, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::driver::{Backend, Ctx, Cuda};
use super::error::CudaError;
use super::launch::StepLaunch;
use super::module::DevType;
use super::plan::Work;
use crate::config::Config;
use crate::element::{DType, Element};
use crate::error::Error;
use crate::kernels::{self, NonFinitePolicy, StepOutcome};

/// One tensor of [`step_raw`]: its device buffers, element type, length, update number and
/// learning rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawTensor {
    /// Element type of the parameters, gradient and state.
    pub dtype: DType,
    /// Elements.
    pub len: usize,
    /// Device address of the parameters.
    pub param: sys::CUdeviceptr,
    /// Device address of the gradient.
    pub grad: sys::CUdeviceptr,
    /// Device addresses of the algorithm's state arrays in [`crate::Algorithm::state_names`]
    /// order (zero before the first step); the unused ones are ignored.
    pub state: [sys::CUdeviceptr; 3],
    /// Number of this update (≥ 1). The caller keeps the counter and advances it only when
    /// the verdict says the tensor was updated.
    pub t: u64,
    /// Learning rate of this update.
    pub lr: f64,
}

/// Enqueues one step of every tensor in `tensors` on `stream`, in the context current on the
/// calling thread (the kernels are loaded into it the first time): one scan launch and one
/// update launch per element type, for all tensors.
///
/// `verdict` is the device address of `tensors.len() + 1` `u32`s that the step overwrites:
/// entry `i` becomes 1 when tensor `i`'s gradient holds NaN or ±∞, the last entry when any
/// does. Under [`NonFinitePolicy::Skip`] a flagged tensor is left untouched; under
/// [`NonFinitePolicy::Error`] every tensor is left untouched when any is flagged; the caller
/// reads the verdict to know (this call does not wait for the device). Under
/// [`NonFinitePolicy::Propagate`] nothing is scanned and `verdict` may be 0.
///
/// Everything is checked before anything is enqueued: the configuration, each update number
/// (≥ 1) and learning rate, every address (non-null and aligned for the element type when the
/// tensor is not empty).
///
/// # Safety
/// Every address points to device memory of the current context holding `len` elements of
/// `dtype` (`verdict`: `tensors.len() + 1` `u32`s), not used by anything else until the step
/// has run on `stream`; `stream` is a live stream of the current context (or null).
pub unsafe fn step_raw(
    stream: sys::CUstream,
    config: &Config,
    policy: NonFinitePolicy,
    tensors: &[RawTensor],
    verdict: sys::CUdeviceptr,
) -> Result<(), CudaError> {
    check(config, policy, tensors, verdict)?;
    let b = Cuda::current()?;
    // SAFETY: the caller's contract.
    unsafe { step_on(&b, stream as usize as u64, config, policy, tensors, verdict) }
}

/// Checks a stateless step's inputs (see [`step_raw`]).
pub(crate) fn check(
    config: &Config,
    policy: NonFinitePolicy,
    tensors: &[RawTensor],
    verdict: u64,
) -> Result<(), CudaError> {
    config.validate_runtime()?;
    let k = config.algorithm().state_count();
    for (i, t) in tensors.iter().enumerate() {
        if t.t == 0 {
            return Err(Error::InvalidStep { step: 0 }.into());
        }
        kernels::check_lr(config, t.lr)?;
        if t.len == 0 {
            continue;
        }
        if DevType::of(t.dtype).is_none() {
            // The GPU kernels run f32 and f64 (mixed precision stays on the CPU).
            return Err(Error::DTypeMismatch {
                tensor: i,
                expected: DType::F32,
                got: t.dtype,
            }
            .into());
        }
        let align = t.dtype.size() as u64;
        let bad = |addr: u64| addr == 0 || addr % align != 0;
        for (what, addr) in [("param", t.param), ("grad", t.grad)] {
            if bad(addr) {
                return Err(CudaError::BadPointer {
                    what,
                    tensor: i,
                    addr,
                });
            }
        }
        if let Some(&addr) = t.state[..k].iter().find(|&&a| bad(a)) {
            return Err(CudaError::BadPointer {
                what: "state",
                tensor: i,
                addr,
            });
        }
    }
    if policy != NonFinitePolicy::Propagate && (verdict == 0 || verdict % 4 != 0) {
        return Err(CudaError::BadPointer {
            what: "verdict",
            tensor: tensors.len(),
            addr: verdict,
        });
    }
    if u32::try_from(tensors.len()).is_err() {
        return Err(Error::LengthMismatch {
            what: "tensors",
            expected: u32::MAX as usize,
            got: tensors.len(),
        }
        .into());
    }
    Ok(())
}

/// [`step_raw`] on any backend, inputs already checked.
///
/// # Safety
/// As [`step_raw`], for `b`'s memory and `stream`.
pub(crate) unsafe fn step_on(
    b: &dyn Backend,
    stream: u64,
    config: &Config,
    policy: NonFinitePolicy,
    tensors: &[RawTensor],
    verdict: u64,
) -> Result<(), CudaError> {
    let k = config.algorithm().state_count();
    let mut launch = StepLaunch::new(b, config.algorithm(), policy, tensors.len() as u32);
    for (i, t) in tensors.iter().enumerate() {
        let mut state = [0; 3];
        state[..k].copy_from_slice(&t.state[..k]);
        let w = Work {
            param: t.param,
            grad: t.grad,
            state,
            len: t.len as u64,
            flag: i as u32,
        };
        let Some(dtype) = DevType::of(t.dtype) else {
            continue; // refused by `check`
        };
        launch.push(dtype, w, config, t.t, t.lr);
    }
    let need = launch.table_bytes();
    let mut scratch = Vec::new();
    // Tables that do not fit in the arguments live in stream-ordered memory for the step.
    // SAFETY (block): the caller's contract; the table is allocated and freed in stream order
    // around the launches that read it.
    unsafe {
        let table = if need > 0 {
            b.alloc_async(stream, need)?
        } else {
            0
        };
        let r = launch.enqueue(b, stream, verdict, table, &mut scratch, &mut || Ok(()));
        if need > 0 {
            b.free_async(stream, table)?;
        }
        r
    }
}

/// One step of one tensor over cudarc slices on `stream`, as [`crate::kernels::step`] on the
/// CPU: `t` is the number of this update (≥ 1), `state` holds the algorithm's arrays. Waits for
/// the verdict: returns [`StepOutcome::Skipped`] (tensor untouched) for a non-finite gradient
/// under [`NonFinitePolicy::Skip`], [`Error::NonFiniteGradient`] under
/// [`NonFinitePolicy::Error`] (nothing changed). Everything is checked before anything is
/// enqueued.
// `kernels::step`'s arguments plus the stream.
#[allow(clippy::too_many_arguments)]
pub fn step<T: Element>(
    stream: &Arc<CudaStream>,
    config: &Config,
    t: u64,
    lr: f64,
    param: &mut CudaSlice<T>,
    grad: &CudaSlice<T>,
    state: &mut [&mut CudaSlice<T>],
    policy: NonFinitePolicy,
) -> Result<StepOutcome, CudaError> {
    let n = param.len();
    if grad.len() != n {
        return Err(Error::LengthMismatch {
            what: "grad",
            expected: n,
            got: grad.len(),
        }
        .into());
    }
    let k = config.algorithm().state_count();
    if state.len() != k {
        return Err(Error::StateCount {
            expected: k,
            got: state.len(),
        }
        .into());
    }
    if let Some(s) = state.iter().find(|s| s.len() != n) {
        return Err(Error::LengthMismatch {
            what: "state",
            expected: n,
            got: s.len(),
        }
        .into());
    }
    let b = Cuda::new(Ctx(stream.context().cu_ctx()))?;
    let mut verdict = stream
        .alloc_zeros::<u32>(2)
        .map_err(|e| CudaError::Driver {
            call: "cuMemAlloc",
            code: e.0,
        })?;
    {
        let (g, _g) = grad.device_ptr(stream);
        let (p, _p) = param.device_ptr_mut(stream);
        let mut addrs = [0; 3];
        let mut guards = Vec::with_capacity(k);
        for (a, s) in addrs.iter_mut().zip(state.iter_mut()) {
            let (addr, guard) = s.device_ptr_mut(stream);
            *a = addr;
            guards.push(guard);
        }
        let (v, _v) = verdict.device_ptr_mut(stream);
        let tensor = RawTensor {
            dtype: T::DTYPE,
            len: n,
            param: p,
            grad: g,
            state: addrs,
            t,
            lr,
        };
        check(config, policy, core::slice::from_ref(&tensor), v)?;
        // SAFETY: the slices are live device memory of the checked lengths and element type,
        // borrowed for this call; cudarc's events order later uses after the step.
        unsafe {
            step_on(
                &b,
                stream.cu_stream() as usize as u64,
                config,
                policy,
                &[tensor],
                v,
            )?
        };
    }
    if policy == NonFinitePolicy::Propagate {
        return Ok(StepOutcome::Applied);
    }
    let flags = stream.clone_dtoh(&verdict).map_err(|e| CudaError::Driver {
        call: "cuMemcpyDtoH",
        code: e.0,
    })?;
    match (flags[0], policy) {
        (0, _) => Ok(StepOutcome::Applied),
        (_, NonFinitePolicy::Error) => Err(Error::NonFiniteGradient { tensor: 0 }.into()),
        _ => Ok(StepOutcome::Skipped),
    }
}
