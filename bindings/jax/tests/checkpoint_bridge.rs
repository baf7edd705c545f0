//! The checkpoint bridge (`src/checkpoint.rs`) on checkpoints the Python side cannot write:
//! a native optimizer's mixed-precision tensors. bf16 and f16 parameters with f32 state are
//! read out as element type codes 2 and 3 with their f32 state; `bf16` state (stochastically
//! rounded), which the JAX transformations do not keep, is refused with an error saying so.

use core::ffi::c_char;
use core::ptr;

use vsgd::{checkpoint, Algorithm, Config, DType, Optimizer, TensorSpec};
use vsgd_jax_native::checkpoint::{
    vsgd_jax_ckpt_free, vsgd_jax_ckpt_state, vsgd_jax_ckpt_tensor, vsgd_jax_load,
};

/// (code, dims) of tensor `i`, or the error message.
fn tensor(h: *const Optimizer, i: usize) -> Result<(u32, Vec<u64>), String> {
    let mut name = [0 as c_char; 64];
    let (mut name_len, mut rank, mut dtype, mut step, mut group) = (0usize, 0usize, 0u32, 0, 0);
    let mut dims = [0u64; 8];
    let mut err = [0 as c_char; 512];
    let rc = unsafe {
        vsgd_jax_ckpt_tensor(
            h,
            i,
            name.as_mut_ptr(),
            name.len(),
            &mut name_len,
            &mut rank,
            dims.as_mut_ptr(),
            dims.len(),
            &mut dtype,
            &mut step,
            &mut group,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc == 0 {
        Ok((dtype, dims[..rank].to_vec()))
    } else {
        Err(message(&err))
    }
}

fn message(err: &[c_char]) -> String {
    unsafe { core::ffi::CStr::from_ptr(err.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn mixed_tensors_with_f32_state_are_carried_bf16_state_is_refused() {
    let mut opt = Optimizer::new(Config::default_for(Algorithm::Adam)).unwrap();
    let a = opt
        .add_tensor(TensorSpec::new(&[3]).dtype(DType::Bf16).name("a"))
        .unwrap();
    let b = opt
        .add_tensor(TensorSpec::new(&[2, 2]).dtype(DType::F16).name("b"))
        .unwrap();
    opt.add_tensor(
        TensorSpec::new(&[2])
            .dtype(DType::Bf16)
            .state_dtype(DType::Bf16)
            .name("c"),
    )
    .unwrap();
    opt.state_mut::<f32>(a, "v")
        .unwrap()
        .copy_from_slice(&[1.5, 2.5, 3.5]);
    opt.state_mut::<f32>(b, "m").unwrap()[3] = -4.0;
    let bytes = checkpoint::save(&opt).unwrap();

    let mut h: *mut Optimizer = ptr::null_mut();
    let mut err = [0 as c_char; 512];
    let rc = unsafe {
        vsgd_jax_load(
            bytes.as_ptr(),
            bytes.len(),
            &mut h,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert_eq!(rc, 0, "{}", message(&err));
    assert_eq!(tensor(h, 0), Ok((2, vec![3])));
    assert_eq!(tensor(h, 1), Ok((3, vec![2, 2])));
    let e = tensor(h, 2).unwrap_err();
    assert!(
        e.contains("tensor 2: bf16 parameters with bf16 state are not supported by the JAX")
            && e.contains("bf16 or f16 parameters with f32 state"),
        "{e}"
    );

    // The state of the mixed tensors comes out as f32.
    let mut v = [0f32; 3];
    let rc = unsafe {
        vsgd_jax_ckpt_state(
            h,
            0,
            1,
            v.as_mut_ptr().cast(),
            3,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert_eq!(rc, 0, "{}", message(&err));
    assert_eq!(v, [1.5, 2.5, 3.5]);
    let mut m = [0f32; 4];
    let rc = unsafe {
        vsgd_jax_ckpt_state(
            h,
            1,
            0,
            m.as_mut_ptr().cast(),
            4,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert_eq!(rc, 0, "{}", message(&err));
    assert_eq!(m, [0.0, 0.0, 0.0, -4.0]);
    let rc = unsafe {
        vsgd_jax_ckpt_state(
            h,
            2,
            0,
            m.as_mut_ptr().cast(),
            2,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert_eq!(rc, 1);
    assert!(message(&err).contains("bf16 state are not supported"));
    unsafe { vsgd_jax_ckpt_free(h) };
}
