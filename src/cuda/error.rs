//! The error type of [`crate::cuda`].

use alloc::string::String;
use core::fmt;

use cudarc::driver::sys::CUresult;

use crate::checkpoint::CheckpointError;
use crate::error::Error;

/// Everything that can go wrong on the GPU path. Nothing panics: a missing driver library, a
/// driver without a needed function, or a machine without a GPU is [`CudaError::NoDevice`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CudaError {
    /// No usable GPU: no CUDA driver library, a driver that lacks a function this library
    /// needs, or `cuInit` failed (no device, driver too old, …). Nothing else was attempted.
    NoDevice {
        /// What was missing, in words.
        reason: String,
    },
    /// A CUDA driver call failed.
    Driver {
        /// The driver function.
        call: &'static str,
        /// Its result (`CUDA_ERROR_*`).
        code: CUresult,
    },
    /// No kernel image loads on this GPU: the sm_90 cubin does not fit it and the driver could
    /// not JIT-compile the embedded PTX (a driver older than the PTX, CUDA 12.9).
    NoKernelImage {
        /// Result of loading the cubin.
        cubin: CUresult,
        /// Result of loading the PTX.
        ptx: CUresult,
    },
    /// Bad input caught by the core's checks (configuration, learning rate, step number,
    /// lengths, element types, a non-finite gradient under [`crate::NonFinitePolicy::Error`]).
    /// Nothing was changed.
    Core(Error),
    /// A checkpoint could not be saved or restored. Nothing was changed.
    Checkpoint(CheckpointError),
    /// A device address that is null or not aligned for its element type. Nothing was
    /// launched.
    BadPointer {
        /// Which buffer (`"param"`, `"grad"`, `"state"`, `"verdict"`).
        what: &'static str,
        /// Index of the tensor in the call.
        tensor: usize,
        /// The address given.
        addr: u64,
    },
    /// No CUDA context is current on the calling thread (the stateless step runs in the
    /// caller's current context, as CUDA runtime code has it).
    NoContext,
    /// The stream belongs to another context than the one the optimizer was created in.
    ContextMismatch,
}

impl From<Error> for CudaError {
    fn from(e: Error) -> Self {
        CudaError::Core(e)
    }
}

impl From<crate::config::ConfigError> for CudaError {
    fn from(e: crate::config::ConfigError) -> Self {
        CudaError::Core(Error::Config(e))
    }
}

impl From<CheckpointError> for CudaError {
    fn from(e: CheckpointError) -> Self {
        CudaError::Checkpoint(e)
    }
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::NoDevice { reason } => write!(f, "no CUDA device: {reason}"),
            // The code's name comes from the enum, not from cuGetErrorString: a broken driver
            // may not answer that either.
            CudaError::Driver { call, code } => write!(f, "{call} failed: {code:?}"),
            CudaError::NoKernelImage { cubin, ptx } => write!(
                f,
                "no kernel image for this GPU: the sm_90 cubin gave {cubin:?}, the PTX {ptx:?} \
                 (the PTX needs a CUDA 12.9 driver or newer)"
            ),
            CudaError::Core(e) => e.fmt(f),
            CudaError::Checkpoint(e) => e.fmt(f),
            CudaError::BadPointer { what, tensor, addr } => write!(
                f,
                "tensor {tensor}: {what} device address {addr:#x} is null or misaligned"
            ),
            CudaError::NoContext => f.write_str("no CUDA context is current on this thread"),
            CudaError::ContextMismatch => {
                f.write_str("the stream belongs to another CUDA context than the optimizer")
            }
        }
    }
}

impl std::error::Error for CudaError {}
