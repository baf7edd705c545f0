//! Tensors of a handle: registration (with a shape), what is registered, and read-outs of
//! their state.

use core::ffi::c_char;
use core::mem::{offset_of, size_of};

use vsgd::{Element, GroupId, TensorId, TensorSpec};

use crate::buffers::{
    c_str, check_buffer, check_optional_out, check_out, check_sized, copy_str, slice, try_vec,
    write, write_sized, write_slice,
};
use crate::config::{dtype_from_c, dtype_to_c, vsgd_dtype};
use crate::error::{
    guard, vsgd_result, Failure, VSGD_RESULT_BUFFER_TOO_SMALL, VSGD_RESULT_UNKNOWN_TENSOR,
};
use crate::optimizer::{vsgd_optimizer, with};

/// What is registered for a tensor (`vsgd_optimizer_tensor_info`). A growable struct: set
/// `struct_size` to `sizeof(vsgd_tensor_info)` before the call (`vsgd_tensor_info info =
/// { sizeof info };`); the library fills the fields that fit in that size and sets
/// `struct_size` to the bytes it wrote. Later 1.x versions may append fields, never move
/// one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct vsgd_tensor_info {
    /// Set by the caller to `sizeof(vsgd_tensor_info)`; on return, the bytes filled.
    pub struct_size: usize,
    /// Element count (the product of the shape; 1 for a scalar).
    pub len: usize,
    /// Element type (`VSGD_DTYPE_*`).
    pub dtype: vsgd_dtype,
    /// Parameter group.
    pub group: usize,
    /// Updates applied so far (skipped steps do not count).
    pub step: u64,
    /// Number of dimensions (0 for a scalar); the sizes come from
    /// `vsgd_optimizer_tensor_shape`.
    pub rank: usize,
    /// Element type of the state arrays (added in 0.2): `dtype` itself for `float` and
    /// `double` tensors; `VSGD_DTYPE_F32` or `VSGD_DTYPE_BF16` for mixed precision.
    pub state_dtype: vsgd_dtype,
    /// Seed of the stochastic rounding of bfloat16 state (added in 0.2; 0 for other state).
    pub seed: u64,
}

/// The size of `vsgd_tensor_info`'s first version (ABI 1.0): every later one is larger.
const TENSOR_INFO_V1: usize = offset_of!(vsgd_tensor_info, rank) + size_of::<usize>();

/// Registers a tensor of shape `shape[0] × … × shape[rank − 1]` (`rank` 0: a scalar, and
/// `shape` may be NULL) and element type `dtype` in group `group` (a `VSGD_DTYPE_BF16` or
/// `VSGD_DTYPE_F16` tensor keeps `float` state; see `vsgd_optimizer_add_tensor_mixed` for
/// bfloat16 state), with an optional `name`
/// (copied; NULL for none). Its state starts at zero and its step counter at 0; its index
/// (0, 1, … in registration order) goes to `*out_tensor`. The shape is what a checkpoint
/// records, so a handle restores checkpoints saved with the same shapes from any platform
/// (`vsgd_optimizer_restore`); steps see the tensor as its flat element count.
///
/// Errors: `NULL_PARAMETER`, `INVALID_ENUM` (dtype), `INVALID_STRING`, `UNKNOWN_GROUP`,
/// `SHAPE_OVERFLOW` (the element count overflows), `ALLOCATION_FAILED` (the state would
/// exceed `PTRDIFF_MAX` bytes, or the allocator refused it; nothing was added and the handle
/// stays usable), `HANDLE_BUSY`, `HANDLE_POISONED`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `shape` NULL or `rank` readable `size_t`s;
/// `name` NULL or a NUL-terminated string; `out_tensor` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_add_tensor(
    optimizer: *mut vsgd_optimizer,
    shape: *const usize,
    rank: usize,
    dtype: vsgd_dtype,
    name: *const c_char,
    group: usize,
    out_tensor: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_add_tensor", || {
        // SAFETY: forwarded contract.
        unsafe { add_tensor(optimizer, shape, rank, dtype, None, name, group, out_tensor) }
    })
}

/// `vsgd_optimizer_add_tensor` for mixed precision: a parameter (and gradient) of
/// `param_dtype` (`VSGD_DTYPE_F32`, `_BF16` or `_F16`) with state of `state_dtype`
/// (`VSGD_DTYPE_F32`, or `VSGD_DTYPE_BF16`: 6 bytes of VSGD state per parameter instead of 12,
/// rounded stochastically with bits keyed by `seed`, the step and the element's index, so a
/// resumed run and every thread split give the same bits; give each tensor its own seed).
/// `seed` is ignored for `float` state. Checkpoints keep each array in its own type.
/// `float` parameters with bfloat16 state (`float` master weights, half the state memory)
/// are stepped by the `float` steps (`vsgd_optimizer_step_f32`,
/// `vsgd_optimizer_step_tensor_f32`) and by the steps for any type.
///
/// Errors: as `vsgd_optimizer_add_tensor`, and `DTYPE_MISMATCH` for a combination no step
/// supports (`double` parameters take `double` state only; binary16 state does not exist).
///
/// # Safety
/// As `vsgd_optimizer_add_tensor`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn vsgd_optimizer_add_tensor_mixed(
    optimizer: *mut vsgd_optimizer,
    shape: *const usize,
    rank: usize,
    param_dtype: vsgd_dtype,
    state_dtype: vsgd_dtype,
    seed: u64,
    name: *const c_char,
    group: usize,
    out_tensor: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_add_tensor_mixed", || {
        let state = dtype_from_c(state_dtype)?;
        let state = Some((state, seed));
        // SAFETY: forwarded contract.
        unsafe {
            add_tensor(
                optimizer,
                shape,
                rank,
                param_dtype,
                state,
                name,
                group,
                out_tensor,
            )
        }
    })
}

/// Shared body of the `vsgd_optimizer_add_tensor*` exports (`state`: the state's type and
/// rounding seed, when given).
///
/// # Safety
/// As documented on the exports.
#[allow(clippy::too_many_arguments)]
unsafe fn add_tensor(
    optimizer: *mut vsgd_optimizer,
    shape: *const usize,
    rank: usize,
    dtype: vsgd_dtype,
    state: Option<(vsgd::DType, u64)>,
    name: *const c_char,
    group: usize,
    out_tensor: *mut usize,
) -> Result<(), Failure> {
    check_out(out_tensor, "out_tensor")?;
    let dtype = dtype_from_c(dtype)?;
    let name = if name.is_null() {
        None
    } else {
        // SAFETY: non-NULL and NUL-terminated (caller).
        Some(unsafe { c_str(name, "name") }?)
    };
    check_buffer(shape, rank, false, "shape", None)?;
    // SAFETY: checked (non-NULL unless rank is 0, aligned, size); `rank` readable
    // elements (caller), only read (the core copies them, fallibly).
    let dims = unsafe { slice(shape, rank) };
    let mut spec = TensorSpec::new(dims).dtype(dtype).group(GroupId(group));
    if let Some((state_dtype, seed)) = state {
        spec = spec.state_dtype(state_dtype).seed(seed);
    }
    if let Some(n) = name {
        spec = spec.name(n);
    }
    // SAFETY: forwarded contract.
    let id = unsafe { with(optimizer, |o| Ok(o.add_tensor(spec)?)) }?;
    // SAFETY: checked; writable (caller).
    unsafe { write(out_tensor, id.0) };
    Ok(())
}

/// The number of registered tensors, into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_num_tensors(
    optimizer: *const vsgd_optimizer,
    out: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_num_tensors", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let n = unsafe { with(optimizer, |o| Ok(o.num_tensors())) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, n) };
        Ok(())
    })
}

/// What is registered for tensor `tensor`, into `*out` (set `out->struct_size` first; see
/// `vsgd_tensor_info`).
///
/// Errors: `NULL_PARAMETER`, `MISALIGNED_BUFFER`, `INVALID_STRUCT_SIZE`, `UNKNOWN_TENSOR`,
/// `HANDLE_BUSY`, `HANDLE_POISONED`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for reading its
/// `struct_size` and writing that many bytes.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_tensor_info(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut vsgd_tensor_info,
) -> vsgd_result {
    guard("vsgd_optimizer_tensor_info", || {
        // SAFETY: NULL or valid for reading struct_size (caller).
        let size = unsafe { check_sized(out, TENSOR_INFO_V1, "out") }?;
        // SAFETY: forwarded contract.
        let info = unsafe {
            with(optimizer, |o| {
                let i = o.tensor_info(TensorId(tensor))?;
                Ok(vsgd_tensor_info {
                    struct_size: 0,
                    len: i.len,
                    dtype: dtype_to_c(i.dtype),
                    group: i.group.0,
                    step: i.step,
                    rank: i.shape.len(),
                    state_dtype: dtype_to_c(i.state_dtype),
                    seed: i.seed,
                })
            })
        }?;
        // SAFETY: checked by check_sized; `size` writable bytes (caller).
        unsafe { write_sized(out, info, size) };
        Ok(())
    })
}

/// Tensor `tensor`'s shape: its rank into `*out_rank` and, when `cap` ≥ rank, its sizes into
/// `dims[0..rank]`. Returns `VSGD_RESULT_BUFFER_TOO_SMALL` (writing only `*out_rank`) when
/// `cap` < rank; `dims` may be NULL when `cap` is 0 (a rank query). A scalar has rank 0.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `dims` NULL or valid for `cap` writes;
/// `out_rank` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_tensor_shape(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    dims: *mut usize,
    cap: usize,
    out_rank: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_tensor_shape", || {
        check_out(out_rank, "out_rank")?;
        check_buffer(dims, cap, true, "dims", None)?;
        // SAFETY: forwarded contract (handle).
        let rank = unsafe {
            with(optimizer, |o| {
                let shape = o.tensor_info(TensorId(tensor))?.shape;
                if shape.len() <= cap {
                    // SAFETY: checked by check_buffer; `cap` ≥ rank writable elements
                    // (caller), possibly uninitialized; the shape is Rust-owned (disjoint).
                    write_slice(dims, shape);
                }
                Ok(shape.len())
            })
        }?;
        // SAFETY: checked; writable (caller); no reference to `dims` is alive.
        unsafe { write(out_rank, rank) };
        if rank > cap {
            return Err(Failure::new(
                VSGD_RESULT_BUFFER_TOO_SMALL,
                format!("tensor {tensor} has rank {rank}, dims holds {cap}"),
            ));
        }
        Ok(())
    })
}

/// Copies tensor `tensor`'s name (empty if it has none) into `buf` (`len` bytes,
/// NUL-terminated), its length in bytes to `*out_len` if not NULL. Text buffer rules as
/// `vsgd_last_error` (`VSGD_RESULT_BUFFER_TOO_SMALL` when cut).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `buf` NULL or valid for `len` bytes; `out_len`
/// NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_tensor_name(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_tensor_name", || {
        check_optional_out(out_len, "out_len")?;
        // Copied out under the lease (no copy of the name is allocated).
        // SAFETY: forwarded contract.
        unsafe {
            with(optimizer, |o| {
                let name = o.tensor_info(TensorId(tensor))?.name.unwrap_or("");
                // SAFETY: `buf` NULL or valid for `len` bytes, `out_len` NULL or valid for
                // one write (caller; alignment checked above); the name is Rust-owned.
                copy_str(name, buf, len, out_len)
            })
        }
    })
}

/// The index of the tensor registered under `name`, into `*out`
/// (`VSGD_RESULT_UNKNOWN_TENSOR` if none).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `name` NULL or a NUL-terminated string; `out`
/// NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_find(
    optimizer: *const vsgd_optimizer,
    name: *const c_char,
    out: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_find", || {
        // SAFETY: NULL or NUL-terminated (caller).
        let name = unsafe { c_str(name, "name") }?;
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let id = unsafe { with(optimizer, |o| Ok(o.find(name))) }?.ok_or_else(|| {
            Failure::new(
                VSGD_RESULT_UNKNOWN_TENSOR,
                format!("no tensor is named '{name}'"),
            )
        })?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, id.0) };
        Ok(())
    })
}

/// Updates applied to tensor `tensor` so far (skipped steps do not count), into `*out`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_step_count(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut u64,
) -> vsgd_result {
    guard("vsgd_optimizer_step_count", || {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let n = unsafe { with(optimizer, |o| Ok(o.step_count(TensorId(tensor))?)) }?;
        // SAFETY: checked; writable (caller).
        unsafe { write(out, n) };
        Ok(())
    })
}

/// Shared body of the state read-outs.
///
/// # Safety
/// As documented on the exports.
unsafe fn copy_state<T: Copy>(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    name: *const c_char,
    out: *mut T,
    len: usize,
    get: StateOf<T>,
) -> Result<(), Failure> {
    // SAFETY: NULL or NUL-terminated (caller).
    let name = unsafe { c_str(name, "name") }?;
    check_buffer(out, len, true, "out", None)?;
    // SAFETY: forwarded contract (handle).
    unsafe {
        with(optimizer, |o| {
            let s = get(o, TensorId(tensor), name)?;
            if s.len() != len {
                return Err(vsgd::Error::LengthMismatch {
                    what: "out",
                    expected: s.len(),
                    got: len,
                }
                .into());
            }
            // SAFETY: checked by check_buffer; `len` writable elements (caller), possibly
            // uninitialized, so written through the pointer. The handle's state is
            // Rust-owned, so it cannot overlap the caller's buffer.
            write_slice(out, s);
            Ok(())
        })
    }
}

/// How [`copy_state`] reads a state array of the optimizer.
type StateOf<T> = for<'o> fn(&'o vsgd::Optimizer, TensorId, &str) -> Result<&'o [T], vsgd::Error>;

/// Copies state array `name` (see `vsgd_state_name`) of tensor `tensor` (a tensor with
/// `float` state: `VSGD_DTYPE_F32`, or mixed precision with `float` state) into `out`, which holds `len` elements, the tensor's length.
///
/// Errors: `NULL_PARAMETER`, `INVALID_STRING`, `UNKNOWN_TENSOR`, `UNKNOWN_STATE_ARRAY`,
/// `DTYPE_MISMATCH`, `LENGTH_MISMATCH`, `MISALIGNED_BUFFER`, `HANDLE_BUSY`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `name` NULL or a NUL-terminated string; `out`
/// NULL or valid for `len` writes.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_state_f32(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    name: *const c_char,
    out: *mut f32,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_state_f32", || {
        // SAFETY: forwarded contract.
        unsafe { copy_state(optimizer, tensor, name, out, len, vsgd::Optimizer::state) }
    })
}

/// `vsgd_optimizer_state_f32` for a `VSGD_DTYPE_F64` tensor.
///
/// # Safety
/// As `vsgd_optimizer_state_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_state_f64(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    name: *const c_char,
    out: *mut f64,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_state_f64", || {
        // SAFETY: forwarded contract.
        unsafe { copy_state(optimizer, tensor, name, out, len, vsgd::Optimizer::state) }
    })
}

/// `vsgd_optimizer_state_f32` for a tensor with bfloat16 state (`uint16_t` bits; see
/// `vsgd_optimizer_add_tensor_mixed`).
///
/// # Safety
/// As `vsgd_optimizer_state_f32`; `out` 2-byte aligned.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_state_bf16(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    name: *const c_char,
    out: *mut u16,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_state_bf16", || {
        // `bf16` is `repr(transparent)` over the `u16` of its bits.
        let out = out.cast::<vsgd::bf16>();
        // SAFETY: forwarded contract.
        unsafe {
            copy_state(
                optimizer,
                tensor,
                name,
                out,
                len,
                vsgd::Optimizer::state_bf16,
            )
        }
    })
}

/// Shared body of the effective-momentum read-outs.
///
/// # Safety
/// As documented on the exports.
unsafe fn momentum<T: Element>(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut T,
    len: usize,
) -> Result<(), Failure> {
    check_buffer(out, len, true, "out", None)?;
    // SAFETY: forwarded contract (handle).
    unsafe {
        with(optimizer, |o| {
            let id = TensorId(tensor);
            if o.algorithm() != vsgd::Algorithm::Vsgd {
                // The core reports the algorithm mismatch before looking at anything else.
                return Ok(o.effective_momentum::<T>(id, &mut [])?);
            }
            let want = o.state::<T>(id, "bg")?.len();
            if want != len {
                return Err(vsgd::Error::LengthMismatch {
                    what: "out",
                    expected: want,
                    got: len,
                }
                .into());
            }
            // `out` may be uninitialized, so no `&mut [T]` over it: the core computes into a
            // Rust buffer, copied out only on success (a failed call writes nothing).
            let mut tmp = try_vec(len, "out")?;
            tmp.resize(len, T::ZERO);
            o.effective_momentum(id, &mut tmp)?;
            // SAFETY: checked by check_buffer; `len` writable elements (caller); `tmp` is
            // Rust-owned, so disjoint from it.
            write_slice(out, &tmp);
            Ok(())
        })
    }
}

/// VSGD's effective momentum `bhg / (bg + bhg)` per element of tensor `tensor` (a
/// `VSGD_DTYPE_F32` tensor) into `out` (`len` elements, the tensor's length): the weight the
/// previous mean gets when the next gradient arrives. Only for VSGD handles
/// (`VSGD_RESULT_ALGORITHM_MISMATCH` otherwise). NaN before the first step (0/0).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `out` NULL or valid for `len` writes.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_effective_momentum_f32(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut f32,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_effective_momentum_f32", || {
        // SAFETY: forwarded contract.
        unsafe { momentum(optimizer, tensor, out, len) }
    })
}

/// `vsgd_optimizer_effective_momentum_f32` for a `VSGD_DTYPE_F64` tensor.
///
/// # Safety
/// As `vsgd_optimizer_effective_momentum_f32`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_effective_momentum_f64(
    optimizer: *const vsgd_optimizer,
    tensor: usize,
    out: *mut f64,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_effective_momentum_f64", || {
        // SAFETY: forwarded contract.
        unsafe { momentum(optimizer, tensor, out, len) }
    })
}
