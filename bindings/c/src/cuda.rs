//! CUDA (feature `cuda`): the stateless device step for C++ CUDA code and JAX's GPU custom
//! call, forwarding to `vsgd::cuda::step_raw`. It runs in the CUDA context current on the
//! calling thread (what CUDA runtime code has) on the caller's stream, and never waits for the
//! device: the verdict stays in device memory for the caller to read.

use core::ffi::c_void;

use vsgd::cuda::{self, CudaError, RawTensor};

use crate::buffers::{slice, try_vec};
use crate::config::{
    config_arg, dtype_from_c, policy_from_c, vsgd_config, vsgd_dtype, vsgd_policy,
};
use crate::error::{
    guard, vsgd_result, Failure, VSGD_RESULT_CUDA_ERROR, VSGD_RESULT_INVALID_STRUCT_SIZE,
    VSGD_RESULT_LENGTH_MISMATCH, VSGD_RESULT_MISALIGNED_BUFFER, VSGD_RESULT_NO_CUDA_CONTEXT,
    VSGD_RESULT_NO_DEVICE, VSGD_RESULT_NULL_PARAMETER,
};

/// One tensor of `vsgd_cuda_step`: device addresses (`CUdeviceptr` values) of its buffers in
/// the current context, its length, element type, update number and learning rate.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vsgd_cuda_tensor {
    /// Parameters (`len` elements of `dtype`).
    pub param: u64,
    /// Gradient (same).
    pub grad: u64,
    /// The algorithm's state arrays in `vsgd_state_name` order (zero before the first step);
    /// entries past `vsgd_state_count` are ignored.
    pub state: [u64; 3],
    /// Elements.
    pub len: u64,
    /// Number of this update (≥ 1). The caller keeps the counter and advances it only when
    /// the verdict says the tensor was updated.
    pub t: u64,
    /// Learning rate of this update.
    pub lr: f64,
    /// Element type: `VSGD_DTYPE_F32` or `VSGD_DTYPE_F64`.
    pub dtype: vsgd_dtype,
    /// Must be 0.
    pub reserved: u32,
}

fn failure(e: CudaError) -> Failure {
    let code = match &e {
        CudaError::NoDevice { .. } => VSGD_RESULT_NO_DEVICE,
        CudaError::NoContext | CudaError::ContextMismatch => VSGD_RESULT_NO_CUDA_CONTEXT,
        CudaError::Core(c) => return Failure::from(*c),
        CudaError::BadPointer { addr: 0, .. } => VSGD_RESULT_NULL_PARAMETER,
        CudaError::BadPointer { .. } => VSGD_RESULT_MISALIGNED_BUFFER,
        _ => VSGD_RESULT_CUDA_ERROR,
    };
    Failure::new(code, e.to_string())
}

/// `VSGD_RESULT_OK` when a GPU can be used (the CUDA driver loads and initializes), else
/// `VSGD_RESULT_NO_DEVICE` with the reason in `vsgd_last_error`. Never crashes, also without
/// any CUDA library installed.
#[no_mangle]
pub extern "C" fn vsgd_cuda_available() -> vsgd_result {
    guard("vsgd_cuda_available", || cuda::init().map_err(failure))
}

/// Enqueues one step of `count` tensors on `stream` (a `CUstream`; NULL is the legacy default
/// stream) in the CUDA context current on the calling thread: one scan launch and one update
/// launch per element type for all tensors, bit-identical to `vsgd_step_f32`/`_f64` on the CPU.
/// Does not wait for the device.
///
/// `verdict` is the device address of `count + 1` `uint32_t`s the step overwrites: entry `i`
/// becomes 1 when tensor `i`'s gradient holds NaN or infinity, the last entry when any does.
/// Under `VSGD_POLICY_SKIP` a flagged tensor is left untouched; under `VSGD_POLICY_ERROR` every
/// tensor is left untouched when any is flagged (read the verdict to know); under
/// `VSGD_POLICY_PROPAGATE` nothing is scanned and `verdict` may be 0.
///
/// `tensor_size` must be `sizeof(vsgd_cuda_tensor)` (so that a later, larger struct is never
/// misread).
///
/// Errors (nothing enqueued): `VSGD_RESULT_NULL_PARAMETER` (config, tensors with count > 0,
/// a device address of a non-empty tensor, verdict), `VSGD_RESULT_MISALIGNED_BUFFER` (a device
/// address not aligned for its type), `VSGD_RESULT_INVALID_ENUM`, `VSGD_RESULT_INVALID_CONFIG`,
/// `VSGD_RESULT_INVALID_STEP` (t = 0), `VSGD_RESULT_INVALID_LEARNING_RATE`,
/// `VSGD_RESULT_INVALID_STRUCT_SIZE` (`tensor_size`), `VSGD_RESULT_LENGTH_MISMATCH`
/// (`reserved` ≠ 0), `VSGD_RESULT_ALLOCATION_FAILED`, `VSGD_RESULT_NO_DEVICE`,
/// `VSGD_RESULT_NO_CUDA_CONTEXT`, `VSGD_RESULT_CUDA_ERROR`.
///
/// # Safety
/// `config` is NULL or a live configuration; `tensors` is NULL or holds `count` readable
/// structs; every device address points to memory of the current context holding what the
/// struct says, not used by anything else until the step has run on `stream`; `stream` is NULL
/// or a live stream of the current context.
#[no_mangle]
pub unsafe extern "C" fn vsgd_cuda_step(
    config: *const vsgd_config,
    policy: vsgd_policy,
    tensors: *const vsgd_cuda_tensor,
    count: usize,
    tensor_size: usize,
    verdict: u64,
    stream: *mut c_void,
) -> vsgd_result {
    guard("vsgd_cuda_step", || {
        // SAFETY: NULL or a live configuration (caller); copied at once.
        let config = unsafe { config_arg(config) }?;
        let policy = policy_from_c(policy)?;
        if tensor_size != core::mem::size_of::<vsgd_cuda_tensor>() {
            return Err(Failure::new(
                VSGD_RESULT_INVALID_STRUCT_SIZE,
                format!(
                    "tensor_size is {tensor_size}, sizeof(vsgd_cuda_tensor) is {}",
                    core::mem::size_of::<vsgd_cuda_tensor>()
                ),
            ));
        }
        if count > 0 && tensors.is_null() {
            return Err(Failure::null("tensors"));
        }
        let given = if count == 0 {
            &[][..]
        } else {
            crate::buffers::check_buffer(tensors, count, false, "tensors", None)?;
            // SAFETY: non-NULL, aligned, size checked; `count` readable structs (caller).
            unsafe { slice(tensors, count) }
        };
        let mut raw = try_vec(count, "tensors")?;
        for (i, t) in given.iter().enumerate() {
            if t.reserved != 0 {
                return Err(Failure::new(
                    VSGD_RESULT_LENGTH_MISMATCH,
                    format!("tensors[{i}].reserved is {}, must be 0", t.reserved),
                ));
            }
            raw.push(RawTensor {
                dtype: dtype_from_c(t.dtype)?,
                len: usize::try_from(t.len).map_err(|_| {
                    Failure::new(
                        VSGD_RESULT_LENGTH_MISMATCH,
                        format!("tensors[{i}].len too large"),
                    )
                })?,
                param: t.param,
                grad: t.grad,
                state: t.state,
                t: t.t,
                lr: t.lr,
            });
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { cuda::step_raw(stream.cast(), &config, policy, &raw, verdict) }.map_err(failure)
    })
}

#[cfg(test)]
mod tests {
    //! Error paths without a GPU. scripts/test.d/40-cuda.sh runs them with `VSGD_CUDA_STUB`
    //! set to `none` (no driver library), `cuinit` (a stub whose cuInit fails) and `broken` (a
    //! stub whose cuInit succeeds and every other call fails); unset, they expect no GPU.
    use super::*;
    use crate::config::{VSGD_DTYPE_F32, VSGD_POLICY_PROPAGATE, VSGD_POLICY_SKIP};
    use crate::error::{
        last_error_string, VSGD_RESULT_INVALID_ENUM, VSGD_RESULT_INVALID_STEP, VSGD_RESULT_OK,
    };

    fn config() -> vsgd_config {
        vsgd_config {
            inner: vsgd::Config::default_for(vsgd::Algorithm::Vsgd),
        }
    }

    fn tensor() -> vsgd_cuda_tensor {
        vsgd_cuda_tensor {
            param: 0x1000,
            grad: 0x2000,
            state: [0x3000, 0x4000, 0x5000],
            len: 8,
            t: 1,
            lr: 0.1,
            dtype: VSGD_DTYPE_F32,
            reserved: 0,
        }
    }

    fn step(
        c: *const vsgd_config,
        t: &[vsgd_cuda_tensor],
        size: usize,
        verdict: u64,
    ) -> vsgd_result {
        // SAFETY: no device memory is touched without a GPU; the pointers are valid host data.
        unsafe {
            vsgd_cuda_step(
                c,
                VSGD_POLICY_SKIP,
                t.as_ptr(),
                t.len(),
                size,
                verdict,
                core::ptr::null_mut(),
            )
        }
    }

    // Miri cannot load the driver library (dlopen is a foreign call); 40-cuda.sh runs this.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn cuda_entry_points_fail_cleanly_without_a_gpu() {
        let stub = std::env::var("VSGD_CUDA_STUB").ok();
        let size = core::mem::size_of::<vsgd_cuda_tensor>();
        let c = config();
        // Input errors first, whatever the machine.
        assert_eq!(
            step(core::ptr::null(), &[tensor()], size, 64),
            VSGD_RESULT_NULL_PARAMETER
        );
        assert_eq!(
            step(&c, &[tensor()], size - 8, 64),
            VSGD_RESULT_INVALID_STRUCT_SIZE
        );
        assert_eq!(
            step(&c, &[vsgd_cuda_tensor { t: 0, ..tensor() }], size, 64),
            VSGD_RESULT_INVALID_STEP
        );
        assert_eq!(
            step(
                &c,
                &[vsgd_cuda_tensor {
                    dtype: 9,
                    ..tensor()
                }],
                size,
                64
            ),
            VSGD_RESULT_INVALID_ENUM
        );
        assert_eq!(
            step(
                &c,
                &[vsgd_cuda_tensor {
                    grad: 0,
                    ..tensor()
                }],
                size,
                64
            ),
            VSGD_RESULT_NULL_PARAMETER
        );
        assert_eq!(
            step(
                &c,
                &[vsgd_cuda_tensor {
                    state: [0x3000, 0x4002, 0x5000],
                    ..tensor()
                }],
                size,
                64
            ),
            VSGD_RESULT_MISALIGNED_BUFFER
        );
        assert_eq!(step(&c, &[tensor()], size, 0), VSGD_RESULT_NULL_PARAMETER);
        assert!(
            last_error_string().contains("verdict"),
            "{}",
            last_error_string()
        );
        assert_eq!(
            step(
                &c,
                &[vsgd_cuda_tensor {
                    reserved: 1,
                    ..tensor()
                }],
                size,
                64
            ),
            VSGD_RESULT_LENGTH_MISMATCH
        );
        // SAFETY: NULL tensors with count 2 is reported, not read.
        let r = unsafe {
            vsgd_cuda_step(
                &c,
                VSGD_POLICY_PROPAGATE,
                core::ptr::null(),
                2,
                size,
                0,
                core::ptr::null_mut(),
            )
        };
        assert_eq!(r, VSGD_RESULT_NULL_PARAMETER);
        // Then the device.
        let (available, stepped, message) = match stub.as_deref() {
            Some("none") => (
                VSGD_RESULT_NO_DEVICE,
                VSGD_RESULT_NO_DEVICE,
                "no CUDA driver library",
            ),
            Some("cuinit") => (
                VSGD_RESULT_NO_DEVICE,
                VSGD_RESULT_NO_DEVICE,
                "CUDA_ERROR_NO_DEVICE",
            ),
            Some("broken") => (
                VSGD_RESULT_OK,
                VSGD_RESULT_CUDA_ERROR,
                "cuCtxGetCurrent failed: CUDA_ERROR_UNKNOWN",
            ),
            Some(other) => panic!("unknown VSGD_CUDA_STUB={other}"),
            None if vsgd_cuda_available() == VSGD_RESULT_OK => {
                eprintln!("SKIPPED: a usable GPU is present");
                return;
            }
            None => (
                VSGD_RESULT_NO_DEVICE,
                VSGD_RESULT_NO_DEVICE,
                "no CUDA device",
            ),
        };
        assert_eq!(vsgd_cuda_available(), available);
        assert_eq!(step(&c, &[tensor()], size, 64), stepped);
        let text = last_error_string();
        assert!(
            text.starts_with("vsgd_cuda_step: ") && text.contains(message),
            "{text}"
        );
    }
}
