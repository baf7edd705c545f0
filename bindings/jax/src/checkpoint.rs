//! Configuration checks and checkpoints for the Python package, over the core's `Optimizer`
//! and `checkpoint` API (the bytes are the library's format: `vsgd inspect` opens them, the C
//! library's `vsgd_optimizer_load` resumes them).
//!
//! Every function returns 0 on success and 1 on failure, with the reason copied into the
//! caller's `err` buffer (truncated, always NUL-terminated when `err_cap > 0`). A panic is
//! caught and reported the same way.

use core::ffi::{c_char, c_void};
use core::ptr;

use vsgd::{checkpoint, Algorithm, Config, DType, GroupId, LrSchedule, Optimizer, TensorId};
use vsgd::{Element, TensorSpec};

use crate::handler::c_str;

/// Runs `f`, turning an error or a panic into 1 and a message in `err`.
unsafe fn guard(err: *mut c_char, err_cap: usize, f: impl FnOnce() -> Result<(), String>) -> i32 {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let msg = match outcome {
        Ok(Ok(())) => return 0,
        Ok(Err(msg)) => msg,
        Err(_) => "vsgd_jax: panic in the native library".to_string(),
    };
    unsafe { copy_str(&msg, err, err_cap) };
    1
}

/// Copies `s` into `out` (`cap` bytes, or NULL: nothing), truncated, NUL-terminated.
unsafe fn copy_str(s: &str, out: *mut c_char, cap: usize) {
    if !out.is_null() && cap > 0 {
        let n = s.len().min(cap - 1);
        // SAFETY: the caller provides `cap` writable bytes.
        unsafe {
            ptr::copy_nonoverlapping(s.as_ptr(), out.cast::<u8>(), n);
            *out.add(n) = 0;
        }
    }
}

fn any_null(ptrs: &[*const c_void]) -> bool {
    ptrs.iter().any(|p| p.is_null())
}

/// A configuration of `algorithm` with the named hyperparameters set.
unsafe fn config_from(
    algorithm: *const c_char,
    names: *const *const c_char,
    values: *const f64,
    n: usize,
) -> Result<Config, String> {
    let name = unsafe { c_str(algorithm, "algorithm")? };
    let algorithm =
        Algorithm::from_name(name).ok_or_else(|| format!("unknown algorithm '{name}'"))?;
    let mut config = Config::default_for(algorithm);
    if n > 0 && (names.is_null() || values.is_null()) {
        return Err("NULL hyperparameter lists".into());
    }
    for i in 0..n {
        let key = unsafe { c_str(*names.add(i), "hyperparameter name")? };
        let value = unsafe { *values.add(i) };
        config
            .set(key, value)
            .map_err(|_| format!("'{key}' is not a hyperparameter of {algorithm}"))?;
    }
    Ok(config)
}

/// Checks a configuration: `algorithm` by name (`vsgd`, `constant_vsgd`, `adam`, `adamw`,
/// `sgdm`) with `n` hyperparameters `names[i] = values[i]` over its defaults. 0 when valid,
/// else 1 and the core's message (naming the field and its allowed range) in `err`.
///
/// # Safety
/// `algorithm` and the `n` names are NUL-terminated strings; `values` holds `n` numbers;
/// `err` has `err_cap` writable bytes (or is NULL).
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_check_config(
    algorithm: *const c_char,
    names: *const *const c_char,
    values: *const f64,
    n: usize,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    unsafe {
        guard(err, err_cap, || {
            config_from(algorithm, names, values, n)?
                .validate()
                .map_err(|e| e.to_string())
        })
    }
}

/// The default of hyperparameter `name` of `algorithm`, into `*out`.
///
/// # Safety
/// Strings NUL-terminated, `out` writable, `err` as in [`vsgd_jax_check_config`].
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_default(
    algorithm: *const c_char,
    name: *const c_char,
    out: *mut f64,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    unsafe {
        guard(err, err_cap, || {
            let config = config_from(algorithm, ptr::null(), ptr::null(), 0)?;
            let key = c_str(name, "name")?;
            let v = config.get(key).ok_or_else(|| {
                format!("'{key}' is not a hyperparameter of {}", config.algorithm())
            })?;
            if out.is_null() {
                return Err("out is NULL".into());
            }
            *out = v;
            Ok(())
        })
    }
}

/// A tensor's element type code: 0 = f32, 1 = f64 (state of the same type), 2 = bf16,
/// 3 = f16 (mixed precision: f32 state).
fn dtype_from(code: u32) -> Result<DType, String> {
    match code {
        0 => Ok(DType::F32),
        1 => Ok(DType::F64),
        2 => Ok(DType::Bf16),
        3 => Ok(DType::F16),
        _ => Err(format!("unknown element type code {code}")),
    }
}

/// The code of [`dtype_from`] of a tensor with parameters of `param` and state of `state`,
/// or the error for the combinations a JAX state cannot hold (`bf16` state).
fn dtype_code(i: usize, param: DType, state: DType) -> Result<u32, String> {
    match (param, state) {
        (DType::F32, DType::F32) => Ok(0),
        (DType::F64, DType::F64) => Ok(1),
        (DType::Bf16, DType::F32) => Ok(2),
        (DType::F16, DType::F32) => Ok(3),
        (p, s) => Err(mixed_unsupported(i, p, s)),
    }
}

unsafe fn copy_in<T: Element>(
    opt: &mut Optimizer,
    id: TensorId,
    name: &str,
    src: *const c_void,
) -> Result<(), String> {
    let dst = opt.state_mut::<T>(id, name).map_err(|e| e.to_string())?;
    if !dst.is_empty() {
        if src.is_null() {
            return Err(format!("state '{name}' of tensor {} is NULL", id.0));
        }
        // SAFETY: the caller provides `len` elements of T for every state array.
        unsafe { ptr::copy_nonoverlapping(src.cast::<T>(), dst.as_mut_ptr(), dst.len()) };
    }
    Ok(())
}

/// Builds an optimizer from a JAX optimizer state and saves it in the library's checkpoint
/// format. The bytes are returned in `*out` / `*out_len`; free them with
/// [`vsgd_jax_bytes_free`].
///
/// Tensor `i` has name `tensor_names[i]`, `ranks[i]` dimensions (taken in turn from `dims`),
/// element type `dtypes[i]` (0 = f32, 1 = f64; 2 = bf16 and 3 = f16 parameters with f32
/// state), step count `steps[i]`, and state arrays `states[i·k + j]` (`k` arrays in
/// `Algorithm::state_names` order, each as long as the tensor, of the state's element type).
///
/// # Safety
/// Every pointer holds what its description says; `out`, `out_len` are writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn vsgd_jax_save(
    algorithm: *const c_char,
    names: *const *const c_char,
    values: *const f64,
    n_hyper: usize,
    n_tensors: usize,
    tensor_names: *const *const c_char,
    ranks: *const usize,
    dims: *const u64,
    dtypes: *const u32,
    steps: *const u64,
    states: *const *const c_void,
    out: *mut *mut u8,
    out_len: *mut usize,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    unsafe {
        guard(err, err_cap, || {
            if out.is_null() || out_len.is_null() {
                return Err("out or out_len is NULL".into());
            }
            let config = config_from(algorithm, names, values, n_hyper)?;
            let mut opt = Optimizer::new(config).map_err(|e| e.to_string())?;
            let state_names = config.algorithm().state_names();
            let k = state_names.len();
            let lists = [
                tensor_names.cast(),
                ranks.cast(),
                dtypes.cast(),
                steps.cast(),
                states.cast(),
            ];
            if n_tensors > 0 && any_null(&lists) {
                return Err("NULL tensor lists".into());
            }
            let mut offset = 0usize;
            for i in 0..n_tensors {
                let name = c_str(*tensor_names.add(i), "tensor name")?;
                let rank = *ranks.add(i);
                if rank > 64 || (rank > 0 && dims.is_null()) {
                    return Err(format!("tensor '{name}': bad rank {rank}"));
                }
                let shape: Vec<usize> = (0..rank)
                    .map(|d| usize::try_from(*dims.add(offset + d)).unwrap_or(usize::MAX))
                    .collect();
                offset += rank;
                let dtype = dtype_from(*dtypes.add(i))?;
                let id = opt
                    .add_tensor(TensorSpec::new(&shape).name(name).dtype(dtype))
                    .map_err(|e| format!("tensor '{name}': {e}"))?;
                opt.set_step_count(id, *steps.add(i))
                    .map_err(|e| e.to_string())?;
                for (j, s) in state_names.iter().enumerate() {
                    let src = *states.add(i * k + j);
                    // The state is f32 for bf16 and f16 parameters (the spec's default).
                    match dtype {
                        DType::F32 | DType::Bf16 | DType::F16 => {
                            copy_in::<f32>(&mut opt, id, s, src)?
                        }
                        DType::F64 => copy_in::<f64>(&mut opt, id, s, src)?,
                    }
                }
            }
            let bytes = checkpoint::save(&opt).map_err(|e| e.to_string())?;
            let boxed = bytes.into_boxed_slice();
            *out_len = boxed.len();
            *out = Box::into_raw(boxed).cast::<u8>();
            Ok(())
        })
    }
}

/// Frees bytes returned by [`vsgd_jax_save`] (NULL is ignored).
///
/// # Safety
/// `ptr`/`len` exactly as returned, freed once.
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_bytes_free(ptr: *mut u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: made by `Box::into_raw` of a boxed slice of `len` bytes.
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(ptr, len)) });
    }
}

/// Decodes a checkpoint into an optimizer handle (`*out`), read with the `vsgd_jax_ckpt_*`
/// functions and freed with [`vsgd_jax_ckpt_free`]. A truncated, corrupt or future-version
/// checkpoint is refused with the decoder's message.
///
/// # Safety
/// `bytes` holds `len` bytes; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_load(
    bytes: *const u8,
    len: usize,
    out: *mut *mut Optimizer,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    unsafe {
        guard(err, err_cap, || {
            if out.is_null() || (bytes.is_null() && len > 0) {
                return Err("NULL argument".into());
            }
            let data = if len == 0 {
                &[][..]
            } else {
                core::slice::from_raw_parts(bytes, len)
            };
            let opt = checkpoint::load(data).map_err(|e| e.to_string())?;
            *out = Box::into_raw(Box::new(opt));
            Ok(())
        })
    }
}

/// Frees a handle from [`vsgd_jax_load`] (NULL is ignored).
///
/// # Safety
/// A handle from `vsgd_jax_load`, freed once.
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_ckpt_free(h: *mut Optimizer) {
    if !h.is_null() {
        drop(unsafe { Box::from_raw(h) });
    }
}

unsafe fn handle<'a>(h: *const Optimizer) -> Result<&'a Optimizer, String> {
    if h.is_null() {
        Err("NULL handle".into())
    } else {
        Ok(unsafe { &*h })
    }
}

/// The loaded optimizer's algorithm name (copied into `algorithm`, NUL-terminated), its
/// number of groups and of tensors.
///
/// # Safety
/// `h` from [`vsgd_jax_load`]; outputs writable.
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_ckpt_summary(
    h: *const Optimizer,
    algorithm: *mut c_char,
    algorithm_cap: usize,
    groups: *mut usize,
    tensors: *mut usize,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    unsafe {
        guard(err, err_cap, || {
            let opt = handle(h)?;
            if algorithm.is_null() || groups.is_null() || tensors.is_null() {
                return Err("NULL output".into());
            }
            copy_str(opt.algorithm().name(), algorithm, algorithm_cap);
            *groups = opt.num_groups();
            *tensors = opt.num_tensors();
            Ok(())
        })
    }
}

/// Hyperparameter `name` of group `group` into `*out`, and whether the group's schedule is
/// the constant one (`*constant_schedule` = 1) or another (0: the JAX side cannot express it).
///
/// # Safety
/// As [`vsgd_jax_ckpt_summary`]; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_ckpt_hyper(
    h: *const Optimizer,
    group: usize,
    name: *const c_char,
    out: *mut f64,
    constant_schedule: *mut i32,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    unsafe {
        guard(err, err_cap, || {
            let opt = handle(h)?;
            let key = c_str(name, "name")?;
            let config = opt.config(GroupId(group)).map_err(|e| e.to_string())?;
            let v = config
                .get(key)
                .ok_or_else(|| format!("'{key}' is not a hyperparameter of {}", opt.algorithm()))?;
            if out.is_null() || constant_schedule.is_null() {
                return Err("NULL output".into());
            }
            *out = v;
            let schedule = opt.schedule(GroupId(group)).map_err(|e| e.to_string())?;
            *constant_schedule = i32::from(*schedule == LrSchedule::default());
            Ok(())
        })
    }
}

/// Tensor `i`: its name (copied into `name`, NUL-terminated, `*name_len` = full length
/// without the NUL), rank and dimensions (at most `dims_cap`), element type (0 = f32, 1 =
/// f64; 2 = bf16 and 3 = f16 parameters with f32 state; `bf16` state is refused), step count
/// and group.
///
/// # Safety
/// As [`vsgd_jax_ckpt_summary`]; `name` has `name_cap` bytes, `dims` `dims_cap` entries.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn vsgd_jax_ckpt_tensor(
    h: *const Optimizer,
    i: usize,
    name: *mut c_char,
    name_cap: usize,
    name_len: *mut usize,
    rank: *mut usize,
    dims: *mut u64,
    dims_cap: usize,
    dtype: *mut u32,
    step: *mut u64,
    group: *mut usize,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    unsafe {
        guard(err, err_cap, || {
            let opt = handle(h)?;
            let info = opt.tensor_info(TensorId(i)).map_err(|e| e.to_string())?;
            if any_null(&[
                name_len.cast(),
                rank.cast(),
                dtype.cast(),
                step.cast(),
                group.cast(),
            ]) {
                return Err("NULL output".into());
            }
            let n = info.name.unwrap_or("");
            *name_len = n.len();
            copy_str(n, name, name_cap);
            *rank = info.shape.len();
            if info.shape.len() > dims_cap || (dims.is_null() && !info.shape.is_empty()) {
                return Err(format!("tensor {i} has rank {}", info.shape.len()));
            }
            for (d, &x) in info.shape.iter().enumerate() {
                *dims.add(d) = x as u64;
            }
            *dtype = dtype_code(i, info.dtype, info.state_dtype)?;
            *step = info.step;
            *group = info.group.0;
            Ok(())
        })
    }
}

/// Copies state array `j` (in `Algorithm::state_names` order) of tensor `i` into `out`, which
/// holds `len` elements of the state's element type (f32 for bf16 and f16 parameters; `len`
/// must equal the tensor's length).
///
/// # Safety
/// As [`vsgd_jax_ckpt_summary`]; `out` has room for `len` elements.
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_ckpt_state(
    h: *const Optimizer,
    i: usize,
    j: usize,
    out: *mut c_void,
    len: usize,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    unsafe fn copy<T: Element>(
        opt: &Optimizer,
        id: TensorId,
        name: &str,
        out: *mut c_void,
        len: usize,
    ) -> Result<(), String> {
        let src = opt.state::<T>(id, name).map_err(|e| e.to_string())?;
        if src.len() != len {
            return Err(format!(
                "tensor {} has {} elements, not {len}",
                id.0,
                src.len()
            ));
        }
        if len > 0 {
            if out.is_null() {
                return Err("out is NULL".into());
            }
            unsafe { ptr::copy_nonoverlapping(src.as_ptr(), out.cast::<T>(), len) };
        }
        Ok(())
    }
    unsafe {
        guard(err, err_cap, || {
            let opt = handle(h)?;
            let id = TensorId(i);
            let name = *opt
                .algorithm()
                .state_names()
                .get(j)
                .ok_or_else(|| format!("{} has no state array {j}", opt.algorithm()))?;
            let info = opt.tensor_info(id).map_err(|e| e.to_string())?;
            match dtype_code(i, info.dtype, info.state_dtype)? {
                1 => copy::<f64>(opt, id, name, out, len),
                _ => copy::<f32>(opt, id, name, out, len),
            }
        })
    }
}

/// The error for a checkpoint tensor this bridge does not carry: `bf16` state (stochastically
/// rounded), which the JAX transformations do not keep (their state of bf16 and f16
/// parameters is f32).
fn mixed_unsupported(i: usize, param: DType, state: DType) -> String {
    format!(
        "tensor {i}: {} parameters with {} state are not supported by the JAX checkpoint \
         bridge (it carries f32 and f64 tensors, and bf16 or f16 parameters with f32 state)",
        param.name(),
        state.name()
    )
}
