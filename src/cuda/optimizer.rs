//! [`DeviceOptimizer`]: the optimizer with its state on the GPU.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::driver::{Backend, Ctx, Cuda};
use super::error::CudaError;
use super::launch::StepLaunch;
use super::module::DevType;
use super::plan::Work;
use crate::checkpoint;
use crate::config::{Algorithm, Config};
use crate::element::Element;
use crate::error::Error;
use crate::kernels::NonFinitePolicy;
use crate::optimizer::{GroupId, Optimizer, StepReport, TensorId, TensorInfo, TensorSpec};
use crate::schedule::LrSchedule;

/// Device memory owned by the optimizer, freed on drop.
struct DevBuf {
    backend: Arc<dyn Backend>,
    addr: u64,
    bytes: usize,
}

impl DevBuf {
    fn zeroed(backend: &Arc<dyn Backend>, bytes: usize) -> Result<DevBuf, CudaError> {
        Ok(DevBuf {
            backend: backend.clone(),
            // Never 0 bytes: the driver rejects empty allocations.
            addr: backend.alloc(bytes.max(8))?,
            bytes,
        })
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by this backend; the optimizer waits for its last step before
        // dropping buffers (see `DeviceOptimizer::drop` and `grow`).
        unsafe { self.backend.free(self.addr) }
    }
}

/// Page-locked host memory for the verdict flags, freed on drop.
struct HostBuf {
    backend: Arc<dyn Backend>,
    ptr: *mut u8,
}

// SAFETY: the buffer is plain memory owned by this value; the device writes it only between a
// step and the event the optimizer waits for before reading it.
unsafe impl Send for HostBuf {}
// SAFETY: as above; `&HostBuf` gives no access to the memory.
unsafe impl Sync for HostBuf {}

impl Drop for HostBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by this backend; no copy into it is pending (see `DevBuf`).
        unsafe { self.backend.free_host(self.ptr) }
    }
}

/// An event, destroyed on drop.
struct Event {
    backend: Arc<dyn Backend>,
    handle: u64,
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by this backend, not used afterwards.
        unsafe { self.backend.event_destroy(self.handle) }
    }
}

struct DeviceTensor {
    name: Option<String>,
    shape: Vec<usize>,
    len: usize,
    dtype: DevType,
    group: usize,
    step: u64,
    /// `state_count` arrays of `len` elements, contiguous (as the CPU optimizer).
    state: DevBuf,
}

/// The optimizer with its state on the GPU: the same algorithms, groups, schedules, step
/// counters, non-finite policy and checkpoints as [`Optimizer`], bit for bit.
///
/// Parameters and gradients stay with the caller, on the device (cudarc slices or raw device
/// addresses). [`DeviceOptimizer::step`] enqueues on the caller's stream:
/// 1. a scan of every gradient (one launch per element type for all tensors), which sets a
///    device flag per tensor holding NaN or ±∞ (not under `propagate`);
/// 2. the fused update of every tensor (again one launch per element type), which leaves a
///    flagged tensor untouched (`skip`) or every tensor untouched when any is flagged
///    (`error`).
///
/// The host learns the verdict from a small copy of the flags: under `error` the step waits for
/// it and returns [`Error::NonFiniteGradient`] (nothing changed); under `skip` it is read when
/// next needed (the next step, [`DeviceOptimizer::report`], a checkpoint), so steps do not
/// stall the caller's stream. Step counters, and with them the next step's constants, follow
/// the verdict.
///
/// ```no_run
/// use vsgd::cuda::{self, DeviceOptimizer};
/// use vsgd::{Config, Algorithm, TensorSpec};
/// let ctx = cuda::context(0)?; // CudaError::NoDevice without a GPU
/// let stream = ctx.default_stream();
/// let mut opt = DeviceOptimizer::new(&ctx, Config::default_for(Algorithm::Vsgd))?;
/// let w = opt.add_tensor(TensorSpec::new(&[1024]).name("w"))?;
/// let mut param = stream.clone_htod(&vec![0.5f32; 1024]).unwrap();
/// let grad = stream.clone_htod(&vec![0.1f32; 1024]).unwrap();
/// opt.step(&stream, &mut [&mut param], &[&grad])?;
/// assert_eq!(opt.step_count(w)?, 1);
/// # Ok::<(), vsgd::cuda::CudaError>(())
/// ```
pub struct DeviceOptimizer {
    backend: Arc<dyn Backend>,
    /// Keeps the cudarc context alive (None for the host emulation of the tests).
    ctx: Option<Arc<CudaContext>>,
    /// Groups, schedules and policy (it holds no tensors).
    host: Optimizer,
    tensors: Vec<DeviceTensor>,
    /// Verdict flags: one `u32` per tensor, then the "any" flag.
    flags: Option<DevBuf>,
    /// The flags copied back, and the event after that copy.
    verdict: Option<HostBuf>,
    verdict_event: Event,
    /// Recorded after each step: the next step (on any stream) waits for it.
    done_event: Event,
    /// Whether `done_event` was ever recorded.
    any_step: bool,
    /// Tables of launches whose metadata does not fit in the kernel arguments.
    table: Option<DevBuf>,
    scratch: Vec<u8>,
    /// A step whose verdict was not read yet: its policy and tensor count.
    pending: Option<(NonFinitePolicy, usize)>,
    skipped: Vec<TensorId>,
    report: StepReport,
}

impl core::fmt::Debug for DeviceOptimizer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceOptimizer")
            .field("algorithm", &self.algorithm())
            .field("groups", &self.host.num_groups())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// The device buffers of one tensor for [`DeviceOptimizer::step_raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorPtrs {
    /// Device address of the parameters (the tensor's element type, `len` elements).
    pub param: sys::CUdeviceptr,
    /// Device address of the gradient (same type and length).
    pub grad: sys::CUdeviceptr,
}

impl DeviceOptimizer {
    /// An optimizer with one group configured by `config`, its state to live in `ctx`.
    pub fn new(ctx: &Arc<CudaContext>, config: Config) -> Result<Self, CudaError> {
        let backend = Arc::new(Cuda::new(Ctx(ctx.cu_ctx()))?);
        let mut opt = Self::with_backend(backend, Optimizer::new(config)?)?;
        opt.ctx = Some(ctx.clone());
        Ok(opt)
    }

    /// An optimizer on `backend` with `host`'s groups, schedules and policy (not its tensors).
    pub(crate) fn with_backend(
        backend: Arc<dyn Backend>,
        host: Optimizer,
    ) -> Result<Self, CudaError> {
        let mut groups_only = Optimizer::new_runtime(*host.config(GroupId(0))?)?;
        groups_only.set_schedule(GroupId(0), *host.schedule(GroupId(0))?)?;
        for g in 1..host.num_groups() {
            let id = groups_only.add_group_runtime(*host.config(GroupId(g))?)?;
            groups_only.set_schedule(id, *host.schedule(GroupId(g))?)?;
        }
        groups_only.set_policy(host.policy());
        let event = |b: &Arc<dyn Backend>| -> Result<Event, CudaError> {
            Ok(Event {
                backend: b.clone(),
                handle: b.event()?,
            })
        };
        Ok(DeviceOptimizer {
            verdict_event: event(&backend)?,
            done_event: event(&backend)?,
            backend,
            ctx: None,
            host: groups_only,
            tensors: Vec::new(),
            flags: None,
            verdict: None,
            any_step: false,
            table: None,
            scratch: Vec::new(),
            pending: None,
            skipped: Vec::new(),
            report: StepReport::default(),
        })
    }

    /// An optimizer in `ctx` holding `opt`'s groups, schedules, policy, tensors, step counters
    /// and state (copied to the device).
    pub fn from_host(ctx: &Arc<CudaContext>, opt: &Optimizer) -> Result<Self, CudaError> {
        let backend = Arc::new(Cuda::new(Ctx(ctx.cu_ctx()))?);
        let mut d = Self::from_host_on(backend, opt)?;
        d.ctx = Some(ctx.clone());
        Ok(d)
    }

    pub(crate) fn from_host_on(
        backend: Arc<dyn Backend>,
        opt: &Optimizer,
    ) -> Result<Self, CudaError> {
        let mut d = Self::with_backend(backend, opt.clone())?;
        for k in 0..opt.num_tensors() {
            let info = opt.tensor_info(TensorId(k))?;
            let mut spec = TensorSpec::new(info.shape)
                .dtype(info.dtype)
                .state_dtype(info.state_dtype)
                .group(info.group);
            if let Some(name) = info.name {
                spec = spec.name(name);
            }
            d.add_tensor(spec)?;
        }
        d.upload_state(opt)?;
        Ok(d)
    }

    /// Loads a checkpoint (any platform's, [`crate::checkpoint`] format) into a new optimizer
    /// in `ctx`.
    pub fn load(ctx: &Arc<CudaContext>, bytes: &[u8]) -> Result<Self, CudaError> {
        Self::from_host(ctx, &checkpoint::load(bytes)?)
    }

    /// The algorithm every group runs.
    pub fn algorithm(&self) -> Algorithm {
        self.host.algorithm()
    }

    /// Adds a parameter group (see [`Optimizer::add_group`]).
    pub fn add_group(&mut self, config: Config) -> Result<GroupId, CudaError> {
        Ok(self.host.add_group(config)?)
    }

    /// Number of groups.
    pub fn num_groups(&self) -> usize {
        self.host.num_groups()
    }

    /// A group's configuration.
    pub fn config(&self, g: GroupId) -> Result<&Config, CudaError> {
        Ok(self.host.config(g)?)
    }

    /// Replaces a group's configuration (see [`Optimizer::set_config`]).
    pub fn set_config(&mut self, g: GroupId, config: Config) -> Result<(), CudaError> {
        Ok(self.host.set_config(g, config)?)
    }

    /// Sets a group's base learning rate (see [`Optimizer::set_lr`]).
    pub fn set_lr(&mut self, g: GroupId, lr: f64) -> Result<(), CudaError> {
        Ok(self.host.set_lr(g, lr)?)
    }

    /// Sets a group's schedule.
    pub fn set_schedule(&mut self, g: GroupId, schedule: LrSchedule) -> Result<(), CudaError> {
        Ok(self.host.set_schedule(g, schedule)?)
    }

    /// A group's schedule.
    pub fn schedule(&self, g: GroupId) -> Result<&LrSchedule, CudaError> {
        Ok(self.host.schedule(g)?)
    }

    /// The non-finite-gradient policy (default [`NonFinitePolicy::Skip`]).
    pub fn policy(&self) -> NonFinitePolicy {
        self.host.policy()
    }

    /// Sets the non-finite-gradient policy.
    pub fn set_policy(&mut self, policy: NonFinitePolicy) {
        self.host.set_policy(policy)
    }

    /// Registers a tensor; its state (zeros) is allocated on the device now.
    pub fn add_tensor(&mut self, spec: TensorSpec<'_>) -> Result<TensorId, CudaError> {
        self.host.config(spec.group)?;
        // The pending verdict is about the tensors registered before.
        self.resolve()?;
        // The GPU kernels run f32 and f64 tensors; mixed precision stays on the CPU.
        let state_dtype = spec.state_dtype.unwrap_or(spec.dtype);
        let dtype = DevType::of(spec.dtype)
            .filter(|_| state_dtype == spec.dtype)
            .ok_or(Error::MixedPrecision {
                tensor: self.tensors.len(),
                param: spec.dtype,
                state: state_dtype,
            })?;
        let len = spec
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(Error::ShapeOverflow)?;
        let bytes = len
            .checked_mul(self.algorithm().state_count() * spec.dtype.size())
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or(Error::ShapeOverflow)?;
        let state = DevBuf::zeroed(&self.backend, bytes)?;
        let n = self.tensors.len() + 1;
        self.grow(n)?;
        self.tensors.push(DeviceTensor {
            name: spec.name.map(String::from),
            shape: spec.shape.to_vec(),
            len,
            dtype,
            group: spec.group.0,
            step: 0,
            state,
        });
        Ok(TensorId(n - 1))
    }

    /// Verdict buffers for `n` tensors (reallocated after the last step is done).
    fn grow(&mut self, n: usize) -> Result<(), CudaError> {
        let bytes = (n + 1) * 4;
        if self.flags.as_ref().is_some_and(|f| f.bytes >= bytes) {
            return Ok(());
        }
        self.resolve()?;
        self.wait_done()?;
        let bytes = bytes.next_power_of_two();
        self.flags = Some(DevBuf::zeroed(&self.backend, bytes)?);
        self.verdict = Some(HostBuf {
            ptr: self.backend.alloc_host(bytes)?,
            backend: self.backend.clone(),
        });
        Ok(())
    }

    /// Number of registered tensors.
    pub fn num_tensors(&self) -> usize {
        self.tensors.len()
    }

    fn tensor(&self, id: TensorId) -> Result<&DeviceTensor, CudaError> {
        Ok(self
            .tensors
            .get(id.0)
            .ok_or(Error::UnknownTensor { tensor: id.0 })?)
    }

    /// The tensor registered under `name`, if any.
    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name.as_deref() == Some(name))
            .map(TensorId)
    }

    /// What is registered for a tensor. Its `step` is as of the last verdict read (see
    /// [`DeviceOptimizer::step_count`]).
    pub fn tensor_info(&self, id: TensorId) -> Result<TensorInfo<'_>, CudaError> {
        let t = self.tensor(id)?;
        Ok(TensorInfo {
            name: t.name.as_deref(),
            shape: &t.shape,
            len: t.len,
            dtype: t.dtype.dtype(),
            state_dtype: t.dtype.dtype(),
            seed: 0,
            group: GroupId(t.group),
            step: t.step,
        })
    }

    /// Updates applied to a tensor so far (waits for the last step's verdict).
    pub fn step_count(&mut self, id: TensorId) -> Result<u64, CudaError> {
        self.resolve()?;
        Ok(self.tensor(id)?.step)
    }

    /// What the last step did (waits for its verdict).
    pub fn report(&mut self) -> Result<StepReport, CudaError> {
        self.resolve()?;
        Ok(self.report)
    }

    /// Tensors the last step skipped (waits for its verdict).
    pub fn last_skipped(&mut self) -> Result<&[TensorId], CudaError> {
        self.resolve()?;
        Ok(&self.skipped)
    }

    /// Blocks until the last step has finished on the device.
    pub fn synchronize(&mut self) -> Result<(), CudaError> {
        self.resolve()?;
        self.wait_done()
    }

    fn wait_done(&self) -> Result<(), CudaError> {
        if self.any_step {
            // SAFETY: a live event of this backend.
            unsafe { self.backend.event_sync(self.done_event.handle) }?;
        }
        Ok(())
    }

    /// Reads the pending step's verdict: advances the step counters of the tensors it updated
    /// and records what it skipped. Under `error`, a flagged step returns the error (nothing was
    /// changed on the device, no counter moves).
    fn resolve(&mut self) -> Result<(), CudaError> {
        let Some((policy, n)) = self.pending.take() else {
            return Ok(());
        };
        // SAFETY: a live event, recorded after the flags' copy.
        unsafe { self.backend.event_sync(self.verdict_event.handle) }?;
        let v = self.verdict.as_ref().expect("a step allocated the verdict");
        // SAFETY: the buffer holds n + 1 flags, written by the copy the event followed.
        let flags = unsafe { core::slice::from_raw_parts(v.ptr.cast::<u32>(), n + 1) };
        self.skipped.clear();
        if policy == NonFinitePolicy::Error && flags[n] != 0 {
            let tensor = flags.iter().position(|&f| f != 0).unwrap_or(0);
            self.report = StepReport::default();
            return Err(Error::NonFiniteGradient { tensor }.into());
        }
        for (i, t) in self.tensors[..n].iter_mut().enumerate() {
            if flags[i] != 0 {
                self.skipped.push(TensorId(i));
            } else {
                t.step += 1;
            }
        }
        self.report = StepReport {
            applied: n - self.skipped.len(),
            skipped: self.skipped.len(),
            frozen: 0,
        };
        Ok(())
    }

    /// One update of every registered tensor (all of element type `T`), enqueued on `stream`
    /// (which must belong to the optimizer's context). `params[i]` and `grads[i]` belong to
    /// tensor `i`. Every length and type is checked before anything is enqueued; an error
    /// changes nothing.
    pub fn step<T: Element>(
        &mut self,
        stream: &CudaStream,
        params: &mut [&mut CudaSlice<T>],
        grads: &[&CudaSlice<T>],
    ) -> Result<(), CudaError> {
        if let Some(ctx) = &self.ctx {
            if stream.context().cu_ctx() != ctx.cu_ctx() {
                return Err(CudaError::ContextMismatch);
            }
        }
        let n = self.tensors.len();
        for (what, len) in [("params", params.len()), ("grads", grads.len())] {
            if len != n {
                return Err(Error::LengthMismatch {
                    what,
                    expected: n,
                    got: len,
                }
                .into());
            }
        }
        for (i, t) in self.tensors.iter().enumerate() {
            if t.dtype.dtype() != T::DTYPE {
                return Err(Error::DTypeMismatch {
                    tensor: i,
                    expected: t.dtype.dtype(),
                    got: T::DTYPE,
                }
                .into());
            }
            for (what, len) in [("param", params[i].len()), ("grad", grads[i].len())] {
                if len != t.len {
                    return Err(Error::LengthMismatch {
                        what,
                        expected: t.len,
                        got: len,
                    }
                    .into());
                }
            }
        }
        // cudarc's stream ordering: the reads wait for earlier writes; the guards record the
        // step's accesses when dropped, after the launches.
        let mut guards = Vec::with_capacity(2 * n);
        let mut ptrs = Vec::with_capacity(n);
        for (p, g) in params.iter_mut().zip(grads) {
            let (gp, gg) = g.device_ptr(stream);
            let (pp, pg) = p.device_ptr_mut(stream);
            ptrs.push(TensorPtrs {
                param: pp,
                grad: gp,
            });
            guards.push(gg);
            guards.push(pg);
        }
        // SAFETY: the slices are live device memory of the checked lengths and types, borrowed
        // for this call; cudarc's events order later uses after the step.
        unsafe { self.step_raw(stream.cu_stream(), &ptrs) }
    }

    /// [`DeviceOptimizer::step`] over raw device addresses, one [`TensorPtrs`] per registered
    /// tensor, on a raw stream of the optimizer's context (C++ and JAX callers).
    ///
    /// # Safety
    /// Each address points to the tensor's registered length of its element type, valid and
    /// not used by anything else until the step has run on `stream`; `stream` is a live stream
    /// of the optimizer's context (or null, the legacy default stream).
    pub unsafe fn step_raw(
        &mut self,
        stream: sys::CUstream,
        tensors: &[TensorPtrs],
    ) -> Result<(), CudaError> {
        let n = self.tensors.len();
        if tensors.len() != n {
            return Err(Error::LengthMismatch {
                what: "tensors",
                expected: n,
                got: tensors.len(),
            }
            .into());
        }
        for (i, (t, p)) in self.tensors.iter().zip(tensors).enumerate() {
            let align = t.dtype.size() as u64;
            for (what, addr) in [("param", p.param), ("grad", p.grad)] {
                if t.len > 0 && (addr == 0 || addr % align != 0) {
                    return Err(CudaError::BadPointer {
                        what,
                        tensor: i,
                        addr,
                    });
                }
            }
        }
        self.resolve()?;
        if n == 0 {
            self.skipped.clear();
            self.report = StepReport::default();
            return Ok(());
        }
        if let Some(t) = self.tensors.iter().find(|t| t.step == u64::MAX) {
            return Err(Error::InvalidStep { step: t.step }.into());
        }
        let policy = self.policy();
        let stream = stream as usize as u64;
        let b = &*self.backend;
        let mut launch = StepLaunch::new(b, self.algorithm(), policy, n as u32);
        for (i, (t, p)) in self.tensors.iter().zip(tensors).enumerate() {
            let group = GroupId(t.group);
            let step = t.step + 1;
            let config = self.host.config(group)?;
            let lr = self.host.lr_at(group, step)?;
            let k = self.algorithm().state_count();
            let size = t.dtype.size() as u64;
            let mut state = [0u64; 3];
            for (j, s) in state.iter_mut().enumerate().take(k) {
                *s = t.state.addr + (j * t.len) as u64 * size;
            }
            let w = Work {
                param: p.param,
                grad: p.grad,
                state,
                len: t.len as u64,
                flag: i as u32,
            };
            launch.push(t.dtype, w, config, step, lr);
        }
        let need = launch.table_bytes();
        if need > self.table.as_ref().map_or(0, |t| t.bytes) {
            // The old table may still be read by the last step.
            self.wait_done()?;
            self.table = None;
            self.table = Some(DevBuf::zeroed(&self.backend, need.next_power_of_two())?);
        }
        let flags = self.flags.as_ref().map_or(0, |f| f.addr);
        let table = self.table.as_ref().map_or(0, |t| t.addr);
        let verdict = self
            .verdict
            .as_ref()
            .map_or(core::ptr::null_mut(), |v| v.ptr);
        let verdict_event = self.verdict_event.handle;
        // SAFETY: the caller's contract for the tensors; the optimizer's buffers are live and,
        // after the wait below, no earlier step uses them.
        unsafe {
            if self.any_step {
                b.stream_wait(stream, self.done_event.handle)?;
            }
            launch.enqueue(b, stream, flags, table, &mut self.scratch, &mut || {
                if policy != NonFinitePolicy::Propagate {
                    b.download_async(stream, verdict, flags, (n + 1) * 4)?;
                    b.record(verdict_event, stream)?;
                }
                Ok(())
            })?;
            b.record(self.done_event.handle, stream)?;
        }
        self.any_step = true;
        match policy {
            NonFinitePolicy::Propagate => {
                for t in &mut self.tensors {
                    t.step += 1;
                }
                self.skipped.clear();
                self.report = StepReport {
                    applied: n,
                    skipped: 0,
                    frozen: 0,
                };
                Ok(())
            }
            NonFinitePolicy::Skip => {
                self.pending = Some((policy, n));
                Ok(())
            }
            NonFinitePolicy::Error => {
                self.pending = Some((policy, n));
                self.resolve()
            }
        }
    }

    /// A state array of a tensor by name ([`Algorithm::state_names`]), copied to the host
    /// (after the last step).
    pub fn state_to_host<T: Element>(
        &mut self,
        id: TensorId,
        name: &str,
    ) -> Result<Vec<T>, CudaError> {
        self.synchronize()?;
        let j = self.state_index(name)?;
        let t = self.tensor(id)?;
        if t.dtype.dtype() != T::DTYPE {
            return Err(Error::DTypeMismatch {
                tensor: id.0,
                expected: t.dtype.dtype(),
                got: T::DTYPE,
            }
            .into());
        }
        let mut out = vec![T::ZERO; t.len];
        // SAFETY: array j of the tensor's state holds t.len elements of T; `out` is plain
        // floats, every byte pattern valid.
        unsafe {
            let bytes = core::slice::from_raw_parts_mut(
                out.as_mut_ptr().cast::<u8>(),
                t.len * t.dtype.size(),
            );
            if !bytes.is_empty() {
                self.backend
                    .download(bytes, t.state.addr + (j * bytes.len()) as u64)?;
            }
        }
        Ok(out)
    }

    fn state_index(&self, name: &str) -> Result<usize, CudaError> {
        let a = self.algorithm();
        Ok(a.state_names()
            .iter()
            .position(|&n| n == name)
            .ok_or(Error::UnknownStateArray { algorithm: a })?)
    }

    /// The whole optimizer copied to the host: groups, schedules, policy, tensors, step
    /// counters and state (after the last step).
    pub fn to_host(&mut self) -> Result<Optimizer, CudaError> {
        self.synchronize()?;
        let mut opt = self.host.clone();
        for (k, t) in self.tensors.iter().enumerate() {
            let mut spec = TensorSpec::new(&t.shape)
                .dtype(t.dtype.dtype())
                .group(GroupId(t.group));
            if let Some(name) = &t.name {
                spec = spec.name(name);
            }
            opt.add_tensor(spec)?;
            opt.set_step_count(TensorId(k), t.step)?;
        }
        for k in 0..self.tensors.len() {
            match self.tensors[k].dtype {
                DevType::F32 => self.download_state::<f32>(&mut opt, k)?,
                DevType::F64 => self.download_state::<f64>(&mut opt, k)?,
            }
        }
        Ok(opt)
    }

    fn download_state<T: Element>(&self, opt: &mut Optimizer, k: usize) -> Result<(), CudaError> {
        let t = &self.tensors[k];
        for (j, name) in self.algorithm().state_names().iter().enumerate() {
            let dst = opt.state_mut::<T>(TensorId(k), name)?;
            // SAFETY: as in `state_to_host`.
            unsafe {
                let bytes = core::slice::from_raw_parts_mut(
                    dst.as_mut_ptr().cast::<u8>(),
                    core::mem::size_of_val(dst),
                );
                if !bytes.is_empty() {
                    self.backend
                        .download(bytes, t.state.addr + (j * bytes.len()) as u64)?;
                }
            }
        }
        Ok(())
    }

    /// Copies `opt`'s step counters and state to the device (tensors checked to match).
    fn upload_state(&mut self, opt: &Optimizer) -> Result<(), CudaError> {
        fn up<T: Element>(d: &DeviceOptimizer, opt: &Optimizer, k: usize) -> Result<(), CudaError> {
            let t = &d.tensors[k];
            for (j, name) in d.algorithm().state_names().iter().enumerate() {
                let src = opt.state::<T>(TensorId(k), name)?;
                // SAFETY: plain floats; the device array holds as many.
                unsafe {
                    let bytes = core::slice::from_raw_parts(
                        src.as_ptr().cast::<u8>(),
                        core::mem::size_of_val(src),
                    );
                    if !bytes.is_empty() {
                        d.backend
                            .upload(t.state.addr + (j * bytes.len()) as u64, bytes)?;
                    }
                }
            }
            Ok(())
        }
        self.synchronize()?;
        for k in 0..self.tensors.len() {
            match self.tensors[k].dtype {
                DevType::F32 => up::<f32>(self, opt, k)?,
                DevType::F64 => up::<f64>(self, opt, k)?,
            }
        }
        for (k, t) in self.tensors.iter_mut().enumerate() {
            t.step = opt.step_count(TensorId(k))?;
        }
        Ok(())
    }

    /// A checkpoint of the whole state, in the format of every platform
    /// ([`crate::checkpoint::save`] of [`DeviceOptimizer::to_host`]).
    pub fn save(&mut self) -> Result<Vec<u8>, CudaError> {
        Ok(checkpoint::save(&self.to_host()?)?)
    }

    /// Restores a checkpoint whose algorithm, groups and tensors match this optimizer's (see
    /// [`crate::checkpoint::restore`]). On error nothing changes.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), CudaError> {
        let mut opt = self.to_host()?;
        checkpoint::restore(&mut opt, bytes)?;
        for g in 0..opt.num_groups() {
            self.host.set_config(GroupId(g), *opt.config(GroupId(g))?)?;
            self.host
                .set_schedule(GroupId(g), *opt.schedule(GroupId(g))?)?;
        }
        self.host.set_policy(opt.policy());
        self.upload_state(&opt)
    }
}

impl Drop for DeviceOptimizer {
    fn drop(&mut self) {
        // Kernels of the last step may still use the state and tables: wait before the buffers
        // are freed. Errors cannot be reported from here.
        let _ = self.wait_done();
        if self.pending.is_some() {
            // SAFETY: a live event.
            let _ = unsafe { self.backend.event_sync(self.verdict_event.handle) };
        }
    }
}
