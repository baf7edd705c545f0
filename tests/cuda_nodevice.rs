//! The GPU path's error paths on a machine without a GPU: every entry point returns
//! `CudaError::NoDevice`, never a panic (cudarc itself panics when the driver library or one
//! of its functions is missing).
//!
//! scripts/test.d/40-cuda.sh runs this once per setting of `VSGD_CUDA_STUB`:
//! - `none`: no driver library on the library path;
//! - `cuinit`: a stub `libcuda.so.1` whose `cuInit` returns `CUDA_ERROR_NO_DEVICE` (100);
//! - `missing`: a stub that lacks `cuLaunchKernel`;
//! - `broken`: a stub whose `cuInit` succeeds and every other function fails
//!   (`CUDA_ERROR_UNKNOWN`): the errors past initialization are clean too.
//!
//! Unset, it checks whatever this machine has, and says so when a GPU is actually usable.
#![cfg(feature = "cuda")]

use vsgd::cuda::{self, CudaError, RawTensor};
use vsgd::{Algorithm, Config, DType, NonFinitePolicy};

fn expect_no_device(r: Result<impl std::fmt::Debug, CudaError>, reason: &str) {
    match r {
        Err(CudaError::NoDevice { reason: got }) => {
            assert!(
                got.contains(reason),
                "reason {got:?} should mention {reason:?}"
            )
        }
        other => panic!("expected NoDevice ({reason}), got {other:?}"),
    }
}

#[test]
fn without_a_gpu_every_entry_point_is_no_device() {
    let stub = std::env::var("VSGD_CUDA_STUB").ok();
    let reason = match stub.as_deref() {
        Some("none") => "no CUDA driver library",
        Some("cuinit") => "cuInit failed: CUDA_ERROR_NO_DEVICE",
        Some("missing") => "lacks cuLaunchKernel",
        Some("broken") => return broken_driver(),
        Some(other) => panic!("unknown VSGD_CUDA_STUB={other}"),
        None => {
            if cuda::init().is_ok() {
                eprintln!("SKIPPED: a usable GPU is present (the GPU check covers it)");
                return;
            }
            ""
        }
    };
    expect_no_device(cuda::init(), reason);
    // Cached: asking again gives the same answer, and loads nothing twice.
    expect_no_device(cuda::init(), reason);
    expect_no_device(cuda::context(0), reason);
    // The stateless step checks its inputs first (these pass), then finds no device.
    let config = Config::default_for(Algorithm::Vsgd);
    let t = RawTensor {
        dtype: DType::F32,
        len: 4,
        param: 0x1000,
        grad: 0x2000,
        state: [0x3000, 0x4000, 0x5000],
        t: 1,
        lr: 0.1,
    };
    // SAFETY: no device is reached: the call fails before any memory is touched.
    let r = unsafe {
        cuda::step_raw(
            core::ptr::null_mut(),
            &config,
            NonFinitePolicy::Skip,
            &[t],
            0x6000,
        )
    };
    expect_no_device(r, reason);
    // Bad input is reported as such, before the device is looked for.
    // SAFETY: as above.
    let r = unsafe {
        cuda::step_raw(
            core::ptr::null_mut(),
            &config,
            NonFinitePolicy::Skip,
            &[RawTensor { t: 0, ..t }],
            0x6000,
        )
    };
    assert!(
        matches!(
            r,
            Err(CudaError::Core(vsgd::Error::InvalidStep { step: 0 }))
        ),
        "{r:?}"
    );
    let text = cuda::init().unwrap_err().to_string();
    assert!(text.starts_with("no CUDA device: "), "{text}");
}

/// A driver that initializes and then fails every call.
fn broken_driver() {
    cuda::init().unwrap();
    expect_no_device(cuda::context(0), "no GPU 0: CUDA_ERROR_UNKNOWN");
    let config = Config::default_for(Algorithm::Adam);
    let t = RawTensor {
        dtype: DType::F64,
        len: 2,
        param: 0x1000,
        grad: 0x2000,
        state: [0x3000, 0x4000, 0],
        t: 3,
        lr: 0.01,
    };
    // SAFETY: the (stub) driver fails before any memory is touched.
    let r = unsafe {
        cuda::step_raw(
            core::ptr::null_mut(),
            &config,
            NonFinitePolicy::Error,
            &[t],
            0x6000,
        )
    };
    match r {
        Err(CudaError::Driver { call, code }) => {
            assert_eq!(call, "cuCtxGetCurrent");
            assert_eq!(
                code,
                cuda::cudarc::driver::sys::CUresult::CUDA_ERROR_UNKNOWN
            );
        }
        other => panic!("expected a driver error, got {other:?}"),
    }
}
