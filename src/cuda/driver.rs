//! The CUDA driver, reached safely: the library's presence and every function this module uses
//! are checked before the first call (cudarc panics on a missing library or symbol), and
//! `cuInit`'s failure is [`CudaError::NoDevice`]. Then the [`Backend`] the optimizer runs on:
//! [`Cuda`] over the driver, or the host emulation of the tests.

use alloc::format;
use alloc::string::ToString;
use alloc::sync::Arc;
use core::ffi::c_void;
use std::sync::OnceLock;

use cudarc::driver::sys::{self, CUresult};

use super::error::CudaError;
use super::module::{module_for, Kernel, Module};

/// Every driver function this crate calls, directly or through cudarc's `CudaContext::new`
/// and its stream and event methods; checked by [`init`] before any call.
pub(crate) const REQUIRED_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGet",
    "cuDeviceGetCount",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxGetCurrent",
    "cuCtxSetCurrent",
    "cuCtxGetId",
    "cuCtxSynchronize",
    "cuModuleLoadData",
    "cuModuleGetFunction",
    "cuModuleUnload",
    "cuLaunchKernel",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemAllocAsync",
    "cuMemFreeAsync",
    "cuMemHostAlloc",
    "cuMemFreeHost",
    "cuMemsetD8_v2",
    "cuMemsetD8Async",
    "cuMemcpyHtoD_v2",
    "cuMemcpyDtoH_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuStreamCreate",
    "cuStreamDestroy_v2",
    "cuStreamSynchronize",
    "cuStreamWaitEvent",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventSynchronize",
    "cuEventElapsedTime",
    "cuEventDestroy_v2",
];

/// Loads and initializes the driver once per process: `Ok` when a GPU can be used, else
/// [`CudaError::NoDevice`] saying why. Never panics, also without any CUDA library.
pub fn init() -> Result<(), CudaError> {
    static INIT: OnceLock<Result<(), CudaError>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: only tries to dlopen the driver library under its usual names.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoDevice {
                reason: "no CUDA driver library (libcuda.so.1) could be loaded".to_string(),
            });
        }
        // SAFETY: the library is present (checked above), so `culib` does not panic; looking a
        // symbol up calls nothing.
        let lib = unsafe { sys::culib() };
        for name in REQUIRED_SYMBOLS {
            // SAFETY: only the symbol's address is looked up, never called through this type.
            if unsafe { lib.get::<*const c_void>(name.as_bytes()) }.is_err() {
                return Err(CudaError::NoDevice {
                    reason: format!("the CUDA driver library lacks {name} (driver too old?)"),
                });
            }
        }
        // SAFETY: every function used is present (checked above).
        match unsafe { sys::cuInit(0) } {
            CUresult::CUDA_SUCCESS => Ok(()),
            code => Err(CudaError::NoDevice {
                reason: format!("cuInit failed: {code:?}"),
            }),
        }
    })
    .clone()
}

/// `Ok` for `CUDA_SUCCESS`, else [`CudaError::Driver`] naming `call`.
pub(crate) fn check(call: &'static str, r: CUresult) -> Result<(), CudaError> {
    match r {
        CUresult::CUDA_SUCCESS => Ok(()),
        code => Err(CudaError::Driver { call, code }),
    }
}

/// A context handle (the driver's handles are usable from any thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ctx(pub sys::CUcontext);

// SAFETY: a CUcontext is an opaque handle the driver accepts from any thread.
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

impl Ctx {
    /// The context current on the calling thread ([`CudaError::NoContext`] when none).
    /// Calls [`init`] first.
    pub fn current() -> Result<Ctx, CudaError> {
        init()?;
        let mut c = core::ptr::null_mut();
        // SAFETY: the driver is initialized; `c` is written on success.
        check("cuCtxGetCurrent", unsafe { sys::cuCtxGetCurrent(&mut c) })?;
        if c.is_null() {
            return Err(CudaError::NoContext);
        }
        Ok(Ctx(c))
    }

    /// Makes this context current on the calling thread (if it is not already).
    pub fn bind(self) -> Result<(), CudaError> {
        let mut c = core::ptr::null_mut();
        // SAFETY: `c` is written on success.
        check("cuCtxGetCurrent", unsafe { sys::cuCtxGetCurrent(&mut c) })?;
        if c != self.0 {
            // SAFETY: `self.0` is a live context handle.
            check("cuCtxSetCurrent", unsafe { sys::cuCtxSetCurrent(self.0) })?;
        }
        Ok(())
    }

    /// The context's unique id (`cuCtxGetId`).
    pub fn id(self) -> Result<u64, CudaError> {
        let mut id = 0;
        // SAFETY: a live context; `id` is written on success.
        check("cuCtxGetId", unsafe { sys::cuCtxGetId(self.0, &mut id) })?;
        Ok(id)
    }
}

/// What a step needs from a device: memory, copies, launches and events. Streams, events and
/// device addresses are plain integers (`CUstream`, `CUevent` and `CUdeviceptr` values).
///
/// Implemented by [`Cuda`] and by the host emulation of the tests, which runs the kernels'
/// own source compiled for the CPU on host memory.
pub(crate) trait Backend: Send + Sync {
    /// Elements per chunk of the multi-tensor launches.
    fn chunk(&self) -> u64 {
        super::plan::CHUNK
    }
    /// `bytes` (> 0) of zeroed device memory.
    fn alloc(&self, bytes: usize) -> Result<u64, CudaError>;
    /// Frees what [`Backend::alloc`] returned (after the work using it is done).
    ///
    /// # Safety
    /// `addr` came from this backend's `alloc` and is not used afterwards.
    unsafe fn free(&self, addr: u64);
    /// `bytes` (> 0) of page-locked host memory.
    fn alloc_host(&self, bytes: usize) -> Result<*mut u8, CudaError>;
    /// Frees what [`Backend::alloc_host`] returned.
    ///
    /// # Safety
    /// `p` came from this backend's `alloc_host` and is not used afterwards.
    unsafe fn free_host(&self, p: *mut u8);
    /// `bytes` (> 0) of device memory allocated in stream order (not zeroed).
    ///
    /// # Safety
    /// `stream` is a live stream of this context.
    unsafe fn alloc_async(&self, stream: u64, bytes: usize) -> Result<u64, CudaError>;
    /// Frees what [`Backend::alloc_async`] returned, in stream order.
    ///
    /// # Safety
    /// `addr` came from `alloc_async`; only work enqueued before on `stream` uses it.
    unsafe fn free_async(&self, stream: u64, addr: u64) -> Result<(), CudaError>;
    /// Copies `src` to device address `dst` in stream order; `src` may be reused on return.
    ///
    /// # Safety
    /// `dst` holds `src.len()` bytes of device memory nothing else uses meanwhile.
    unsafe fn upload_async(&self, stream: u64, dst: u64, src: &[u8]) -> Result<(), CudaError>;
    /// Copies `src` to `dst` now (ordered after all earlier work of the context).
    ///
    /// # Safety
    /// As [`Backend::upload_async`].
    unsafe fn upload(&self, dst: u64, src: &[u8]) -> Result<(), CudaError>;
    /// Copies device bytes to `dst` now.
    ///
    /// # Safety
    /// `src` holds `dst.len()` bytes of device memory.
    unsafe fn download(&self, dst: &mut [u8], src: u64) -> Result<(), CudaError>;
    /// Copies `bytes` device bytes to page-locked `dst` in stream order.
    ///
    /// # Safety
    /// `dst` came from [`Backend::alloc_host`] with room for `bytes`, and is not read before an
    /// event recorded after this copy completes.
    unsafe fn download_async(
        &self,
        stream: u64,
        dst: *mut u8,
        src: u64,
        bytes: usize,
    ) -> Result<(), CudaError>;
    /// Zeroes `bytes` device bytes in stream order.
    ///
    /// # Safety
    /// `dst` holds `bytes` bytes of device memory.
    unsafe fn memset_zero_async(
        &self,
        stream: u64,
        dst: u64,
        bytes: usize,
    ) -> Result<(), CudaError>;
    /// Launches `k` with `grid` blocks of `block` threads; `params` as `cuLaunchKernel` takes
    /// them.
    ///
    /// # Safety
    /// `params` point to the kernel's arguments, whose device addresses are valid for the
    /// launch.
    unsafe fn launch(
        &self,
        stream: u64,
        k: Kernel,
        grid: u32,
        block: u32,
        params: &mut [*mut c_void],
    ) -> Result<(), CudaError>;
    /// A new event.
    fn event(&self) -> Result<u64, CudaError>;
    /// Destroys an event.
    ///
    /// # Safety
    /// `e` came from [`Backend::event`] and is not used afterwards.
    unsafe fn event_destroy(&self, e: u64);
    /// Records `e` on `stream`.
    ///
    /// # Safety
    /// `e` and `stream` are live handles of this context.
    unsafe fn record(&self, e: u64, stream: u64) -> Result<(), CudaError>;
    /// Makes `stream` wait for `e`.
    ///
    /// # Safety
    /// As [`Backend::record`].
    unsafe fn stream_wait(&self, stream: u64, e: u64) -> Result<(), CudaError>;
    /// Blocks the host until `e` has completed.
    ///
    /// # Safety
    /// `e` is a live event.
    unsafe fn event_sync(&self, e: u64) -> Result<(), CudaError>;
}

/// The driver backend: one context and its loaded module.
pub(crate) struct Cuda {
    pub module: Arc<Module>,
}

impl Cuda {
    /// The backend of `ctx` (loads the module into it the first time).
    pub fn new(ctx: Ctx) -> Result<Cuda, CudaError> {
        init()?;
        Ok(Cuda {
            module: module_for(ctx)?,
        })
    }

    /// The backend of the context current on this thread.
    pub fn current() -> Result<Cuda, CudaError> {
        Cuda::new(Ctx::current()?)
    }

    fn bind(&self) -> Result<(), CudaError> {
        self.module.ctx.bind()
    }
}

fn stream(s: u64) -> sys::CUstream {
    s as usize as sys::CUstream
}

fn event(e: u64) -> sys::CUevent {
    e as usize as sys::CUevent
}

impl Backend for Cuda {
    fn alloc(&self, bytes: usize) -> Result<u64, CudaError> {
        self.bind()?;
        let mut p = 0;
        // SAFETY: `p` is written on success.
        check("cuMemAlloc_v2", unsafe {
            sys::cuMemAlloc_v2(&mut p, bytes)
        })?;
        // SAFETY: `p` holds `bytes` bytes.
        if let Err(e) = check("cuMemsetD8_v2", unsafe { sys::cuMemsetD8_v2(p, 0, bytes) }) {
            // SAFETY: allocated above, unused.
            unsafe { sys::cuMemFree_v2(p) };
            return Err(e);
        }
        Ok(p)
    }

    unsafe fn free(&self, addr: u64) {
        if self.bind().is_ok() {
            // SAFETY: the caller's contract.
            unsafe { sys::cuMemFree_v2(addr) };
        }
    }

    unsafe fn alloc_async(&self, s: u64, bytes: usize) -> Result<u64, CudaError> {
        self.bind()?;
        let mut p = 0;
        // SAFETY: the caller's contract; `p` is written on success.
        check("cuMemAllocAsync", unsafe {
            sys::cuMemAllocAsync(&mut p, bytes, stream(s))
        })?;
        Ok(p)
    }

    unsafe fn free_async(&self, s: u64, addr: u64) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract.
        check("cuMemFreeAsync", unsafe {
            sys::cuMemFreeAsync(addr, stream(s))
        })
    }

    fn alloc_host(&self, bytes: usize) -> Result<*mut u8, CudaError> {
        self.bind()?;
        let mut p = core::ptr::null_mut();
        // SAFETY: `p` is written on success.
        check("cuMemHostAlloc", unsafe {
            sys::cuMemHostAlloc(&mut p, bytes, 0)
        })?;
        Ok(p.cast())
    }

    unsafe fn free_host(&self, p: *mut u8) {
        if self.bind().is_ok() {
            // SAFETY: the caller's contract.
            unsafe { sys::cuMemFreeHost(p.cast()) };
        }
    }

    unsafe fn upload_async(&self, s: u64, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract. From pageable memory the driver stages `src` before
        // returning, so it may be reused at once.
        check("cuMemcpyHtoDAsync_v2", unsafe {
            sys::cuMemcpyHtoDAsync_v2(dst, src.as_ptr().cast(), src.len(), stream(s))
        })
    }

    unsafe fn upload(&self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract.
        check("cuMemcpyHtoD_v2", unsafe {
            sys::cuMemcpyHtoD_v2(dst, src.as_ptr().cast(), src.len())
        })
    }

    unsafe fn download(&self, dst: &mut [u8], src: u64) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract.
        check("cuMemcpyDtoH_v2", unsafe {
            sys::cuMemcpyDtoH_v2(dst.as_mut_ptr().cast(), src, dst.len())
        })
    }

    unsafe fn download_async(
        &self,
        s: u64,
        dst: *mut u8,
        src: u64,
        bytes: usize,
    ) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract.
        check("cuMemcpyDtoHAsync_v2", unsafe {
            sys::cuMemcpyDtoHAsync_v2(dst.cast(), src, bytes, stream(s))
        })
    }

    unsafe fn memset_zero_async(&self, s: u64, dst: u64, bytes: usize) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract.
        check("cuMemsetD8Async", unsafe {
            sys::cuMemsetD8Async(dst, 0, bytes, stream(s))
        })
    }

    unsafe fn launch(
        &self,
        s: u64,
        k: Kernel,
        grid: u32,
        block: u32,
        params: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract; the function belongs to this context's module.
        check("cuLaunchKernel", unsafe {
            sys::cuLaunchKernel(
                self.module.function(k),
                grid,
                1,
                1,
                block,
                1,
                1,
                0,
                stream(s),
                params.as_mut_ptr(),
                core::ptr::null_mut(),
            )
        })
    }

    fn event(&self) -> Result<u64, CudaError> {
        self.bind()?;
        let mut e = core::ptr::null_mut();
        // SAFETY: `e` is written on success. Timing off: these events only order work.
        check("cuEventCreate", unsafe {
            sys::cuEventCreate(&mut e, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32)
        })?;
        Ok(e as usize as u64)
    }

    unsafe fn event_destroy(&self, e: u64) {
        if self.bind().is_ok() {
            // SAFETY: the caller's contract.
            unsafe { sys::cuEventDestroy_v2(event(e)) };
        }
    }

    unsafe fn record(&self, e: u64, s: u64) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract.
        check("cuEventRecord", unsafe {
            sys::cuEventRecord(event(e), stream(s))
        })
    }

    unsafe fn stream_wait(&self, s: u64, e: u64) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract.
        check("cuStreamWaitEvent", unsafe {
            sys::cuStreamWaitEvent(stream(s), event(e), 0)
        })
    }

    unsafe fn event_sync(&self, e: u64) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller's contract.
        check("cuEventSynchronize", unsafe {
            sys::cuEventSynchronize(event(e))
        })
    }
}
