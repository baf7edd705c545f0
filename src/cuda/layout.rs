//! The kernels' argument layouts, mirrored from `kernels/multi_tensor.cu` and `kernels/rules.cuh`
//! as `#[repr(C)]` structs. The sizes are checked here at compile time and against the PTX's
//! declared parameter sizes in the tests; the host emulation checks the meaning of every field.
//!
//! The per-step scalars are the core's [`Scalars`], field for field (computed on the host in f64
//! and rounded to the element type by [`Scalars::new`]); the booleans become bits of `flags`.

use crate::kernels::{AdamScalars, Common, ConstantVsgdScalars, Scalars, SgdmScalars, VsgdScalars};

/// `VSGD_FLAG_*` of rules.cuh.
pub(crate) const FLAG_DECAY: u32 = 1;
pub(crate) const FLAG_L2: u32 = 2;
pub(crate) const FLAG_MAXIMIZE: u32 = 4;
pub(crate) const FLAG_FIRST: u32 = 8;
pub(crate) const FLAG_NESTEROV: u32 = 16;

/// `VSGD_ARGS_SCALARS` / `VSGD_ARGS_TENSORS`: what the kernel arguments hold inline.
pub(crate) const ARGS_SCALARS: usize = 4;
pub(crate) const ARGS_TENSORS: usize = 48;

/// `VSGD_PHASE_*`.
pub(crate) const PHASE_SCAN: u32 = 0;
pub(crate) const PHASE_APPLY: u32 = 1;

/// `VsgdTensorDesc`: one tensor of a launch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TensorDesc {
    pub param: u64,
    pub grad: u64,
    pub state: [u64; 3],
    pub len: u64,
    pub first_chunk: u64,
    pub scalars: u32,
    pub flag: u32,
}

/// `VsgdLaunchHeader`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LaunchHeader {
    /// Device address of the tensor table, 0 when inline.
    pub tensors: u64,
    /// Device address of the scalars table, 0 when inline.
    pub scalars: u64,
    /// Device address of the verdict flags (`u32` each).
    pub flags: u64,
    pub chunk: u64,
    pub total_chunks: u64,
    pub n_tensors: u32,
    pub policy: u32,
    pub phase: u32,
    pub any_flag: u32,
}

/// `VsgdArgs<S>`: the one kernel argument of a multi-tensor entry point.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Args<S> {
    pub h: LaunchHeader,
    pub s: [S; ARGS_SCALARS],
    pub t: [TensorDesc; ARGS_TENSORS],
}

/// `VsgdScalars<T>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct VsgdDev<T> {
    pub lr: T,
    pub decay: T,
    pub l2: T,
    pub sg0: T,
    pub shg0: T,
    pub inv_pa2: T,
    pub pbg2: T,
    pub pbhg2: T,
    pub rho1: T,
    pub omr1: T,
    pub rho2: T,
    pub omr2: T,
    pub eps: T,
    pub flags: u32,
    pub pad: u32,
}

/// `ConstantVsgdScalars<T>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ConstantVsgdDev<T> {
    pub lr: T,
    pub decay: T,
    pub l2: T,
    pub v0: T,
    pub inv_pa2: T,
    pub pb2: T,
    pub k: T,
    pub inv_k1: T,
    pub rho: T,
    pub omr: T,
    pub eps: T,
    pub flags: u32,
    pub pad: u32,
}

/// `AdamScalars<T>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct AdamDev<T> {
    pub lr: T,
    pub decay: T,
    pub l2: T,
    pub beta1: T,
    pub omb1: T,
    pub beta2: T,
    pub omb2: T,
    pub step_size: T,
    pub bc2_sqrt: T,
    pub eps: T,
    pub flags: u32,
    pub pad: u32,
}

/// `SgdmScalars<T>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct SgdmDev<T> {
    pub lr: T,
    pub decay: T,
    pub l2: T,
    pub momentum: T,
    pub omd: T,
    pub flags: u32,
    pub pad: u32,
}

fn common_flags<T>(c: &Common<T>) -> u32 {
    // The device kernels have no gradient scale: the device optimizer never clips, and its
    // constants come from `Scalars::new`, which leaves the scale off.
    assert!(
        !c.has_scale,
        "gradient clipping is not implemented on the device"
    );
    let mut f = 0;
    if c.has_decay {
        f |= FLAG_DECAY;
    }
    if c.has_l2 {
        f |= FLAG_L2;
    }
    if c.maximize {
        f |= FLAG_MAXIMIZE;
    }
    f
}

fn first_flag(first: bool) -> u32 {
    if first {
        FLAG_FIRST
    } else {
        0
    }
}

/// A device scalars struct: built from the core's [`Scalars`] of its algorithm.
pub(crate) trait DeviceScalars<T>: Copy + Default + PartialEq {
    /// The device form of `s`, or `None` when `s` is another algorithm's.
    fn from_scalars(s: &Scalars<T>) -> Option<Self>;
}

impl<T: Copy + Default + PartialEq> DeviceScalars<T> for VsgdDev<T> {
    fn from_scalars(s: &Scalars<T>) -> Option<Self> {
        let Scalars::Vsgd(VsgdScalars {
            common: c,
            first,
            sg0,
            shg0,
            inv_pa2,
            pbg2,
            pbhg2,
            rho1,
            omr1,
            rho2,
            omr2,
            eps,
        }) = *s
        else {
            return None;
        };
        Some(VsgdDev {
            pad: 0,
            lr: c.lr,
            decay: c.decay,
            l2: c.l2,
            sg0,
            shg0,
            inv_pa2,
            pbg2,
            pbhg2,
            rho1,
            omr1,
            rho2,
            omr2,
            eps,
            flags: common_flags(&c) | first_flag(first),
        })
    }
}

impl<T: Copy + Default + PartialEq> DeviceScalars<T> for ConstantVsgdDev<T> {
    fn from_scalars(s: &Scalars<T>) -> Option<Self> {
        let Scalars::ConstantVsgd(ConstantVsgdScalars {
            common: c,
            first,
            v0,
            inv_pa2,
            pb2,
            k,
            inv_k1,
            rho,
            omr,
            eps,
        }) = *s
        else {
            return None;
        };
        Some(ConstantVsgdDev {
            pad: 0,
            lr: c.lr,
            decay: c.decay,
            l2: c.l2,
            v0,
            inv_pa2,
            pb2,
            k,
            inv_k1,
            rho,
            omr,
            eps,
            flags: common_flags(&c) | first_flag(first),
        })
    }
}

impl<T: Copy + Default + PartialEq> DeviceScalars<T> for AdamDev<T> {
    fn from_scalars(s: &Scalars<T>) -> Option<Self> {
        let Scalars::Adam(AdamScalars {
            common: c,
            beta1,
            omb1,
            beta2,
            omb2,
            step_size,
            bc2_sqrt,
            eps,
        }) = *s
        else {
            return None;
        };
        Some(AdamDev {
            pad: 0,
            lr: c.lr,
            decay: c.decay,
            l2: c.l2,
            beta1,
            omb1,
            beta2,
            omb2,
            step_size,
            bc2_sqrt,
            eps,
            flags: common_flags(&c),
        })
    }
}

impl<T: Copy + Default + PartialEq> DeviceScalars<T> for SgdmDev<T> {
    fn from_scalars(s: &Scalars<T>) -> Option<Self> {
        let Scalars::Sgdm(SgdmScalars {
            common: c,
            first,
            momentum,
            omd,
            nesterov,
        }) = *s
        else {
            return None;
        };
        let nesterov = if nesterov { FLAG_NESTEROV } else { 0 };
        Some(SgdmDev {
            pad: 0,
            lr: c.lr,
            decay: c.decay,
            l2: c.l2,
            momentum,
            omd,
            flags: common_flags(&c) | first_flag(first) | nesterov,
        })
    }
}

// No implicit padding anywhere (sizes equal the sum of the fields), so the bytes of these values
// are all initialized; the C++ side asserts the same sizes (static_assert in multi_tensor.cu)
// and the tests compare size_of::<Args<S>>() with the PTX's declared parameter sizes.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<TensorDesc>() == 7 * 8 + 2 * 4);
    assert!(size_of::<LaunchHeader>() == 5 * 8 + 4 * 4);
    assert!(size_of::<VsgdDev<f32>>() == 13 * 4 + 8);
    assert!(size_of::<VsgdDev<f64>>() == 13 * 8 + 8);
    assert!(size_of::<ConstantVsgdDev<f32>>() == 11 * 4 + 8);
    assert!(size_of::<ConstantVsgdDev<f64>>() == 11 * 8 + 8);
    assert!(size_of::<AdamDev<f32>>() == 10 * 4 + 8);
    assert!(size_of::<AdamDev<f64>>() == 10 * 8 + 8);
    assert!(size_of::<SgdmDev<f32>>() == 5 * 4 + 8);
    assert!(size_of::<SgdmDev<f64>>() == 5 * 8 + 8);
    // 56 + 4·size_of::<S>() is a multiple of 8: no padding before the tensor table either.
    assert!(size_of::<Args<VsgdDev<f32>>>() == 56 + 4 * 60 + 48 * 64);
    assert!(size_of::<Args<VsgdDev<f64>>>() <= 4096);
};
