//! What `cli/examples/gpu_check.rs` measures besides the public API (not a stable interface).

use alloc::sync::Arc;
use core::ffi::c_void;

use cudarc::driver::{sys, CudaContext, CudaStream};

use super::driver::{Backend, Ctx, Cuda};
use super::error::CudaError;
use super::layout::{DeviceScalars, VsgdDev};
use super::module::Kernel;
use crate::config::{Algorithm, Config};
use crate::error::Error;
use crate::kernels::Scalars;

/// The embedded kernels' manifest (NVRTC version, options, source and artifact hashes).
pub fn manifest() -> &'static str {
    super::module::MANIFEST
}

/// Whether the kernels in `ctx` were JIT-compiled from the PTX (the sm_90 cubin did not fit).
pub fn loaded_from_ptx(ctx: &Arc<CudaContext>) -> Result<bool, CudaError> {
    Ok(Cuda::new(Ctx(ctx.cu_ctx()))?.module.jit)
}

/// Device arrays of [`unfused_vsgd_f32`]: `n` f32 each.
#[derive(Clone, Copy, Debug)]
pub struct UnfusedArrays {
    /// Parameters.
    pub param: sys::CUdeviceptr,
    /// Gradient.
    pub grad: sys::CUdeviceptr,
    /// VSGD state `mug`, `bg`, `bhg`.
    pub state: [sys::CUdeviceptr; 3],
    /// Scratch for μ' and σ² between the passes.
    pub mu_new: sys::CUdeviceptr,
    /// See `mu_new`.
    pub var: sys::CUdeviceptr,
}

/// One VSGD step of one f32 tensor as four plain elementwise passes (the baseline a framework
/// without a fused kernel runs); the same bits as the fused kernel.
///
/// # Safety
/// Every address holds `n` f32 of device memory in `stream`'s context.
pub unsafe fn unfused_vsgd_f32(
    stream: &CudaStream,
    config: &Config,
    t: u64,
    lr: f64,
    n: usize,
    a: UnfusedArrays,
) -> Result<(), CudaError> {
    if config.algorithm() != Algorithm::Vsgd {
        return Err(Error::AlgorithmMismatch {
            expected: Algorithm::Vsgd,
            got: config.algorithm(),
        }
        .into());
    }
    let b = Cuda::new(Ctx(stream.context().cu_ctx()))?;
    let mut s = VsgdDev::<f32>::from_scalars(&Scalars::<f32>::new(config, t, lr))
        .expect("a VSGD configuration");
    let n64 = n as u64;
    let [mug, bg, bhg] = a.state;
    let passes: [(Kernel, [u64; 8], usize); 4] = [
        (
            Kernel::UNFUSED[0],
            [a.grad, a.param, mug, bg, bhg, a.mu_new, a.var, n64],
            8,
        ),
        (
            Kernel::UNFUSED[1],
            [bg, mug, a.mu_new, a.var, n64, 0, 0, 0],
            5,
        ),
        (
            Kernel::UNFUSED[2],
            [bhg, a.grad, a.param, a.mu_new, a.var, n64, 0, 0],
            6,
        ),
        (
            Kernel::UNFUSED[3],
            [a.param, mug, a.mu_new, a.var, n64, 0, 0, 0],
            5,
        ),
    ];
    const BLOCK: u32 = 256;
    let grid = n.div_ceil(BLOCK as usize).clamp(1, 1 << 24) as u32;
    for (k, mut args, count) in passes {
        let mut params: [*mut c_void; 9] = [core::ptr::null_mut(); 9];
        params[0] = (&mut s as *mut VsgdDev<f32>).cast();
        for (p, x) in params[1..].iter_mut().zip(args.iter_mut()).take(count) {
            *p = (x as *mut u64).cast();
        }
        // SAFETY: the kernel's argument list; the caller's contract for the arrays.
        unsafe {
            b.launch(
                stream.cu_stream() as usize as u64,
                k,
                grid,
                BLOCK,
                &mut params[..=count],
            )?
        };
    }
    Ok(())
}
