//! The XLA FFI handler `vsgd_jax_xla_step_cuda`: the step of [`crate::handler`] on an NVIDIA
//! GPU (registered for platform "CUDA" under the CPU handler's target name, so one
//! `jax.ffi.ffi_call` lowers to whichever platform the program is compiled for).
//!
//! The call frame is the CPU handler's, decoded and checked by the same code (operand layout,
//! element types, shapes, overlaps, aliasing); the buffers are device addresses. The step is
//! the core's stateless device step [`vsgd::cuda::step_raw`] (fused multi-tensor kernels, one
//! launch per call, bit-identical to the CPU) on the stream XLA gives the call
//! (`XLA_FFI_Stream_Get`), in that stream's context.
//!
//! What the GPU handler does differently:
//! - **The scalars are read back.** `lr_scale`, `count` and `finite` live in device memory,
//!   while the kernels take per-step constants computed on the host in f64 (the CPU's own
//!   `kernels::Scalars`: that is what makes the bits equal). So each call copies the three
//!   0-d arrays to the host on XLA's stream and waits for them (`cuStreamSynchronize`): the
//!   host stops running ahead of the device once per call (one call per element type and 32
//!   arrays). Not measured yet (no GPU was available to this work).
//! - **The verdict is JAX's.** As on the CPU, `finite` comes from the caller over the whole,
//!   possibly sharded, gradient (on the GPU, `jnp.isfinite(g).all()` reduced by XLA: see
//!   `vsgd_jax/_ops.py`); rows it marks non-finite are not launched, the others run under
//!   `NonFinitePolicy::Propagate` (no second scan of a gradient already known finite).
//! - **No driver, no GPU**: `vsgd::cuda::init` is asked first; its `NoDevice` (no
//!   `libcuda.so.1`, a driver lacking a function, `cuInit` failing) becomes an XLA error
//!   (`FAILED_PRECONDITION`), never a panic: cudarc panics on a missing library or symbol, and
//!   every symbol called here is checked before its first call.
//!
//! - **f32 and f64 only**: the core has no mixed-precision CUDA kernel, so a call with bf16 or
//!   f16 parameters (which the CPU handler steps with `vsgd::kernels::mixed`) is refused,
//!   after the shared decoding and before the stream or the driver is asked for, with an
//!   `INVALID_ARGUMENT` error naming the type.
//!
//! Unaliased outputs (XLA gave separate buffers) get their inputs copied on the stream first,
//! as on the CPU.

use core::ffi::c_void;
use core::ptr;

use vsgd::cuda::cudarc::driver::sys::{self, CUresult};
use vsgd::cuda::{self, CudaError, RawTensor};
use vsgd::{DType, NonFinitePolicy};

use crate::handler::{dtype_name, elem_size, entry, invalid, Buf, Call, Failure};
use crate::xla::{self, dtype};

/// The handler XLA calls on platform "CUDA" (registered by the Python package when jaxlib
/// has a CUDA backend). Answers the metadata query like [`crate::handler::vsgd_jax_xla_step`]
/// (API version 0.1, no traits: XLA never captures it into a CUDA graph, since it reads
/// its scalars back).
///
/// # Safety
/// `frame` must be a call frame from XLA (or NULL, which is ignored).
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_xla_step_cuda(frame: *mut xla::CallFrame) -> *mut xla::Error {
    // SAFETY: forwarded contract.
    unsafe { entry(frame, xla::API_VERSION, step) }
}

/// The order matters for what a refused call reports: the call's own faults (operands,
/// attributes) first, then a missing stream, then a missing driver or GPU; nothing is
/// enqueued before every check has passed, except the scalars' read-back.
unsafe fn step(frame: &xla::CallFrame) -> Result<(), Failure> {
    let mut call = unsafe { Call::decode(frame)? };
    if !matches!(call.elem, dtype::F32 | dtype::F64) {
        // `vsgd::cuda` has kernels for f32 and f64 only: a 16-bit parameter must not reach
        // `enqueue`, which would read it as f64.
        return Err(invalid(format!(
            "the GPU handler steps f32 and f64 arrays only: {} parameters with f32 state \
             (mixed precision) have no CUDA kernel yet; step them on the CPU",
            dtype_name(call.elem)
        )));
    }
    let stream = unsafe { stream_of(frame)? };
    cuda::init().map_err(failure)?;
    let _bound = unsafe { Bound::stream_context(stream)? };
    // The host copies must outlive every use of the scalars below.
    let _host = unsafe { read_scalars(&mut call, stream)? };
    unsafe { call.check_rows()? };
    unsafe { enqueue(&call, stream) }
}

/// A refusal that is not the call's fault.
fn precondition(msg: impl Into<String>) -> Failure {
    (
        xla::ERROR_FAILED_PRECONDITION,
        format!("vsgd_jax: {}", msg.into()),
    )
}

/// A [`CudaError`] as an XLA error: no device or context is a failed precondition, a failing
/// driver or kernel image an internal error, anything else (caught by the core's checks) an
/// invalid argument.
fn failure(e: CudaError) -> Failure {
    let code = match e {
        CudaError::NoDevice { .. } | CudaError::NoContext => xla::ERROR_FAILED_PRECONDITION,
        CudaError::Driver { .. } | CudaError::NoKernelImage { .. } => xla::ERROR_INTERNAL,
        _ => xla::ERROR_INVALID_ARGUMENT,
    };
    (code, format!("vsgd_jax: {e}"))
}

/// `r` as a result, [`CudaError::Driver`] naming `call` when it failed.
fn driver(call: &'static str, r: CUresult) -> Result<(), Failure> {
    match r {
        CUresult::CUDA_SUCCESS => Ok(()),
        code => Err(failure(CudaError::Driver { call, code })),
    }
}

/// The stream XLA runs this call on (`XLA_FFI_Stream_Get`): a `CUstream` on platform "CUDA".
/// A frame without one (an API table without the function, no execution context, an error
/// from XLA, a NULL stream) is refused: the legacy default stream would not be ordered with
/// XLA's own streams.
unsafe fn stream_of(frame: &xla::CallFrame) -> Result<sys::CUstream, Failure> {
    let api = frame.api;
    let table = (!api.is_null()).then(|| unsafe { &*api });
    let get = table
        .filter(|a| a.struct_size >= xla::API_STREAM_SIZE)
        .and_then(|a| a.stream_get)
        .ok_or_else(|| precondition("no CUDA stream: XLA's API table has no XLA_FFI_Stream_Get"))?;
    if frame.ctx.is_null() {
        return Err(precondition(
            "no CUDA stream: the call frame has no execution context",
        ));
    }
    let mut args = xla::StreamGetArgs {
        struct_size: xla::STREAM_GET_ARGS_SIZE,
        extension_start: ptr::null_mut(),
        ctx: frame.ctx,
        stream: ptr::null_mut(),
    };
    // SAFETY: XLA's own function, with its argument struct.
    let err = unsafe { get(&mut args) };
    if !err.is_null() {
        // The table reaches past `error_destroy` (it has `stream_get`, checked above).
        if let Some(destroy) = table.and_then(|a| a.error_destroy) {
            let mut d = xla::ErrorDestroyArgs {
                struct_size: xla::ERROR_DESTROY_ARGS_SIZE,
                extension_start: ptr::null_mut(),
                error: err,
            };
            // SAFETY: the error XLA just returned, destroyed once.
            unsafe { destroy(&mut d) };
        }
        return Err(precondition(
            "no CUDA stream: XLA_FFI_Stream_Get failed (is this the GPU handler on another \
             platform than \"CUDA\"?)",
        ));
    }
    if args.stream.is_null() {
        return Err(precondition("no CUDA stream: XLA_FFI_Stream_Get gave NULL"));
    }
    Ok(args.stream.cast())
}

/// The stream's context made current on this thread for the call, and the thread's previous
/// context restored afterwards (the stateless step runs in the current context; XLA normally
/// has it current already, and then nothing is switched).
struct Bound {
    previous: Option<sys::CUcontext>,
}

impl Bound {
    /// # Safety
    /// `stream` is a live stream; the driver is initialized (`vsgd::cuda::init` succeeded).
    unsafe fn stream_context(stream: sys::CUstream) -> Result<Bound, Failure> {
        // Not among the functions `vsgd::cuda::init` checks: cudarc would panic without it.
        // SAFETY: the driver library is loaded (init succeeded); only an address is looked up.
        let lib = unsafe { sys::culib() };
        if unsafe { lib.get::<*const c_void>(b"cuStreamGetCtx") }.is_err() {
            return Err(failure(CudaError::NoDevice {
                reason: "the CUDA driver library lacks cuStreamGetCtx (driver too old?)".into(),
            }));
        }
        let mut ctx = ptr::null_mut();
        // SAFETY: `stream` is live (the caller's contract); `ctx` is written on success.
        driver("cuStreamGetCtx", unsafe {
            sys::cuStreamGetCtx(stream, &mut ctx)
        })?;
        let mut current = ptr::null_mut();
        // SAFETY: `current` is written on success.
        driver("cuCtxGetCurrent", unsafe {
            sys::cuCtxGetCurrent(&mut current)
        })?;
        if current == ctx {
            return Ok(Bound { previous: None });
        }
        // SAFETY: the stream's own, live context.
        driver("cuCtxSetCurrent", unsafe { sys::cuCtxSetCurrent(ctx) })?;
        Ok(Bound {
            previous: Some(current),
        })
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // SAFETY: the context (or NULL) that was current when the call began.
            unsafe { sys::cuCtxSetCurrent(previous) };
        }
    }
}

/// Copies `lr_scale`, `count` and `finite` from the device to the host on `stream`, waits,
/// and points the call's scalar buffers at the copies (returned: they must outlive the call's
/// use of them).
///
/// # Safety
/// The scalars' data are device addresses of the current context holding their elements.
unsafe fn read_scalars(call: &mut Call, stream: sys::CUstream) -> Result<[Vec<u64>; 3], Failure> {
    let mut host: [Vec<u64>; 3] = Default::default();
    for (buf, copy) in [&mut call.lr_scale, &mut call.count, &mut call.finite]
        .into_iter()
        .zip(&mut host)
    {
        let bytes = buf.len * elem_size(buf.dtype);
        if bytes == 0 {
            continue;
        }
        *copy = vec![0u64; bytes.div_ceil(8)];
        // SAFETY: `copy` holds `bytes` bytes; the source holds them on the device (checked
        // by the decoder: its element type and count).
        driver("cuMemcpyDtoHAsync_v2", unsafe {
            sys::cuMemcpyDtoHAsync_v2(copy.as_mut_ptr().cast(), buf.data as u64, bytes, stream)
        })?;
        buf.data = copy.as_mut_ptr().cast();
    }
    // SAFETY: a live stream.
    driver("cuStreamSynchronize", unsafe {
        sys::cuStreamSynchronize(stream)
    })?;
    Ok(host)
}

/// Copies unaliased inputs to their outputs, then enqueues one device step of every array
/// row whose verdict is finite (rows of a `vmap` batch are tensors of their own, with their
/// own step number and learning rate).
///
/// # Safety
/// The call's scalars are host copies ([`read_scalars`]); its arrays are device memory of the
/// current context, used by nothing else on `stream` meanwhile.
unsafe fn enqueue(call: &Call, stream: sys::CUstream) -> Result<(), Failure> {
    let size = elem_size(call.elem);
    for leaf in &call.leaves {
        for (i, o) in leaf.ins.iter().zip(&leaf.outs).take(call.arrays) {
            if i.data != o.data && i.len > 0 {
                // SAFETY: both hold `len` elements and do not overlap (checked by the decoder).
                driver("cuMemcpyDtoDAsync_v2", unsafe {
                    sys::cuMemcpyDtoDAsync_v2(o.data as u64, i.data as u64, i.len * size, stream)
                })?;
            }
        }
    }
    let dtype = match call.elem {
        dtype::F32 => DType::F32,
        dtype::F64 => DType::F64,
        d => return Err(invalid(format!("no CUDA kernel for {}", dtype_name(d)))),
    };
    let mut tensors = Vec::with_capacity(call.leaves.len() * call.batch);
    for b in 0..call.batch {
        let (t, lr, finite) = unsafe { call.row_scalars(b)? };
        if !finite {
            continue;
        }
        for leaf in &call.leaves {
            let len = leaf.grad.len / call.batch;
            if len == 0 {
                continue;
            }
            let at = |buf: &Buf| buf.data as u64 + (b * len * size) as u64;
            let mut state = [0; 3];
            for (s, out) in state.iter_mut().zip(&leaf.outs[1..call.arrays]) {
                *s = at(out);
            }
            tensors.push(RawTensor {
                dtype,
                len,
                param: at(&leaf.outs[0]),
                grad: at(&leaf.grad),
                state,
                t,
                lr,
            });
        }
    }
    if tensors.is_empty() {
        return Ok(());
    }
    // The rows left are finite by JAX's verdict: nothing to scan, no verdict buffer.
    // SAFETY: the addresses are the checked device buffers of this call, on XLA's stream.
    unsafe {
        cuda::step_raw(
            stream,
            &call.config,
            NonFinitePolicy::Propagate,
            &tensors,
            0,
        )
    }
    .map_err(failure)
}
