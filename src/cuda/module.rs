//! The kernels compiled ahead of time (`scripts/cuda/compile_kernels.py`, NVRTC 12.9), embedded,
//! and loaded through the driver alone: the sm_90 cubin first, the PTX (compute_75, JIT-compiled
//! by the driver) when the cubin does not fit the GPU. NVRTC is not needed at run time.
//!
//! `kernels/build/manifest.txt` records a hash of the kernel sources and compile options; a test
//! fails when the sources changed without the artifacts being regenerated.

use alloc::sync::Arc;
use alloc::vec::Vec;
use std::sync::Mutex;

use cudarc::driver::sys::{self, CUresult};

use super::driver::{check, Ctx};
use super::error::CudaError;
use crate::config::Algorithm;
use crate::element::DType;

/// The element types the GPU kernels run on (a mixed-precision tensor stays on the CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DevType {
    F32 = 0,
    F64 = 1,
}

impl DevType {
    /// The device type of `dtype`, if the kernels have one.
    pub(crate) fn of(dtype: DType) -> Option<DevType> {
        match dtype {
            DType::F32 => Some(DevType::F32),
            DType::F64 => Some(DevType::F64),
            DType::Bf16 | DType::F16 => None,
        }
    }

    /// Size of one element in bytes.
    pub(crate) fn size(self) -> usize {
        self.dtype().size()
    }

    /// Back to the library's tag.
    pub(crate) fn dtype(self) -> DType {
        match self {
            DevType::F32 => DType::F32,
            DevType::F64 => DType::F64,
        }
    }
}

/// SASS for sm_90.
pub(crate) static CUBIN: &[u8] = include_bytes!("kernels/build/multi_tensor.sm_90.cubin");
/// PTX for compute_75 and later.
pub(crate) static PTX: &str = include_str!("kernels/build/multi_tensor.compute_75.ptx");
/// Versions and hashes of the artifacts.
pub(crate) static MANIFEST: &str = include_str!("kernels/build/manifest.txt");
/// The sources the manifest hashes, in its order (compile_kernels.py: SOURCES).
#[cfg(test)]
pub(crate) static SOURCES: [(&str, &str); 2] = [
    ("rules.cuh", include_str!("kernels/rules.cuh")),
    ("multi_tensor.cu", include_str!("kernels/multi_tensor.cu")),
];

/// Every entry point of the module, in [`Kernel`] index order.
pub(crate) const KERNEL_NAMES: [&str; 12] = [
    "vsgd_mt_vsgd_f32",
    "vsgd_mt_vsgd_f64",
    "vsgd_mt_constant_vsgd_f32",
    "vsgd_mt_constant_vsgd_f64",
    "vsgd_mt_adam_f32",
    "vsgd_mt_adam_f64",
    "vsgd_mt_sgdm_f32",
    "vsgd_mt_sgdm_f64",
    "vsgd_unfused_f32_posterior",
    "vsgd_unfused_f32_bg",
    "vsgd_unfused_f32_bhg",
    "vsgd_unfused_f32_param",
];

/// An entry point (index into [`KERNEL_NAMES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kernel(pub usize);

impl Kernel {
    /// The multi-tensor kernel of `algorithm` (AdamW runs Adam's) for `dtype`.
    pub(crate) fn multi_tensor(algorithm: Algorithm, dtype: DevType) -> Kernel {
        let a = match algorithm {
            Algorithm::Vsgd => 0,
            Algorithm::ConstantVsgd => 1,
            Algorithm::Adam | Algorithm::AdamW => 2,
            Algorithm::Sgdm => 3,
        };
        let d = match dtype {
            DevType::F32 => 0,
            DevType::F64 => 1,
        };
        Kernel(2 * a + d)
    }

    /// The four passes of the unfused VSGD (f32), in order.
    pub const UNFUSED: [Kernel; 4] = [Kernel(8), Kernel(9), Kernel(10), Kernel(11)];

    /// The entry point's name.
    pub fn name(self) -> &'static str {
        KERNEL_NAMES[self.0]
    }
}

/// The module loaded in one context, with its functions.
pub(crate) struct Module {
    /// `cuCtxGetId` of the context: unique for the process's lifetime.
    pub ctx_id: u64,
    pub ctx: Ctx,
    module: sys::CUmodule,
    functions: Vec<sys::CUfunction>,
    /// Whether the PTX had to be JIT-compiled (the cubin does not fit this GPU).
    pub jit: bool,
}

// SAFETY: driver handles may be used from any thread (the driver API is thread-safe); the
// module is never unloaded while a `Module` exists (it is only unloaded in `Drop`).
unsafe impl Send for Module {}
// SAFETY: as above; `&Module` only hands out copies of the handles.
unsafe impl Sync for Module {}

impl Module {
    /// The function handle of `k`.
    pub fn function(&self, k: Kernel) -> sys::CUfunction {
        self.functions[k.0]
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // Only modules that never made it into the cache are dropped (cached ones live as long
        // as the process). Errors cannot be reported from here.
        if self.ctx.bind().is_ok() {
            // SAFETY: the module was loaded by `load` and nothing refers to it any more.
            let _ = unsafe { sys::cuModuleUnload(self.module) };
        }
    }
}

/// Modules by context id: each context loads the module once, the first time it is needed.
static CACHE: Mutex<Vec<Arc<Module>>> = Mutex::new(Vec::new());

/// The module for `ctx` (loaded now if this context has none yet). `ctx` is bound to the
/// calling thread on return.
pub(crate) fn module_for(ctx: Ctx) -> Result<Arc<Module>, CudaError> {
    ctx.bind()?;
    let id = ctx.id()?;
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = cache.iter().find(|m| m.ctx_id == id) {
        return Ok(m.clone());
    }
    let m = Arc::new(load(ctx, id)?);
    cache.push(m.clone());
    Ok(m)
}

fn load(ctx: Ctx, ctx_id: u64) -> Result<Module, CudaError> {
    // The cubin is an ELF image: give the driver an 8-byte aligned copy.
    let mut cubin = alloc::vec![0u64; CUBIN.len().div_ceil(8)];
    // SAFETY: `cubin` holds at least CUBIN.len() bytes; the regions do not overlap.
    unsafe {
        core::ptr::copy_nonoverlapping(CUBIN.as_ptr(), cubin.as_mut_ptr().cast::<u8>(), CUBIN.len())
    };
    let mut module = core::ptr::null_mut();
    // SAFETY: a valid cubin image; `module` is written on success.
    let r = unsafe { sys::cuModuleLoadData(&mut module, cubin.as_ptr().cast()) };
    let mut jit = false;
    if r != CUresult::CUDA_SUCCESS {
        let mut ptx = Vec::with_capacity(PTX.len() + 1);
        ptx.extend_from_slice(PTX.as_bytes());
        ptx.push(0);
        // SAFETY: NUL-terminated PTX text.
        let r2 = unsafe { sys::cuModuleLoadData(&mut module, ptx.as_ptr().cast()) };
        if r2 != CUresult::CUDA_SUCCESS {
            return Err(CudaError::NoKernelImage { cubin: r, ptx: r2 });
        }
        jit = true;
    }
    let mut m = Module {
        ctx_id,
        ctx,
        module,
        functions: Vec::with_capacity(KERNEL_NAMES.len()),
        jit,
    };
    for k in 0..KERNEL_NAMES.len() {
        let cname = alloc::ffi::CString::new(Kernel(k).name()).expect("kernel names have no NUL");
        let mut f = core::ptr::null_mut();
        // SAFETY: `m.module` is loaded; `f` is written on success.
        check("cuModuleGetFunction", unsafe {
            sys::cuModuleGetFunction(&mut f, m.module, cname.as_ptr())
        })?;
        m.functions.push(f);
    }
    Ok(m)
}

#[cfg(test)]
/// FNV-1a 64 (compile_kernels.py: fnv1a64).
pub(crate) fn fnv1a64(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001B3);
    }
    h
}

#[cfg(test)]
/// FNV-1a 64 offset basis.
pub(crate) const FNV_BASIS: u64 = 0xCBF29CE484222325;

#[cfg(test)]
/// The value of `key` in the manifest.
pub(crate) fn manifest(key: &str) -> Option<&'static str> {
    MANIFEST.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then_some(v)
    })
}

#[cfg(test)]
/// The hash compile_kernels.py records as `sources`: each source's name, NUL, bytes, NUL, then
/// the options.
pub(crate) fn sources_hash(options: &str) -> u64 {
    let mut h = FNV_BASIS;
    for (name, text) in SOURCES {
        h = fnv1a64(name.as_bytes(), h);
        h = fnv1a64(&[0], h);
        h = fnv1a64(text.as_bytes(), h);
        h = fnv1a64(&[0], h);
    }
    fnv1a64(options.as_bytes(), h)
}
