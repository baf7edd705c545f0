//! NVIDIA GPUs (feature `cuda`): fused multi-tensor kernels, bit-identical to the CPU.
//!
//! - [`DeviceOptimizer`]: the optimizer with its state in GPU memory; one step is one scan
//!   launch and one update launch (per element type) for all tensors, on the caller's stream,
//!   with the non-finite verdict computed on the device. Checkpoints in the format of every
//!   platform.
//! - [`step`] / [`step_raw`]: the stateless device step over caller-owned device buffers (the
//!   C ABI's `vsgd_cuda_step` and JAX's custom call reach it).
//! - [`init`] / [`context`]: a clean [`CudaError::NoDevice`] where there is no GPU or driver
//!   (cudarc itself panics when the driver library is missing).
//!
//! The kernels (`src/cuda/kernels/`) are CUDA C, header-free, with the per-element rules in one
//! header (`rules.cuh`) that the host build for the tests shares. They are compiled ahead of time
//! with `--fmad=false` and IEEE division and square root to an sm_90 cubin and a PTX fallback,
//! both embedded and loaded through the driver (no NVRTC at run time). Every per-step constant
//! is the CPU's [`crate::kernels::Scalars`], computed on the host in f64, so the device performs
//! exactly the portable path's operations: the results are the CPU's bits. See docs/cuda.md.

#[doc(hidden)]
pub mod bench;
mod driver;
mod error;
mod launch;
mod layout;
mod module;
mod optimizer;
mod plan;
mod stateless;
#[cfg(test)]
mod tests;

use alloc::sync::Arc;

pub use cudarc;
use cudarc::driver::CudaContext;

pub use driver::init;
pub use error::CudaError;
pub use optimizer::{DeviceOptimizer, TensorPtrs};
pub use stateless::{step, step_raw, RawTensor};

/// The primary context of GPU `ordinal`, or [`CudaError::NoDevice`] (never a panic) when the
/// driver library, a driver function, or the device is missing.
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>, CudaError> {
    init()?;
    CudaContext::new(ordinal).map_err(|e| CudaError::NoDevice {
        reason: alloc::format!("no GPU {ordinal}: {:?}", e.0),
    })
}
