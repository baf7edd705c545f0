//! The GPU path proven without a GPU.
//!
//! - The embedded artifacts: fresh relative to the kernel sources (manifest hash), entry points
//!   and argument sizes as this crate lays them out (read from the PTX).
//! - The host emulation: `kernels/host_emulation.cpp` compiles the kernels' own source with g++
//!   (`-ffp-contract=off`) into a shared library whose launchers take `cuLaunchKernel`'s argument
//!   array; [`Host`] is a [`Backend`] over host memory that calls them. The real
//!   [`DeviceOptimizer`] and stateless step then run on it, with this crate's launch planning,
//!   and must give the CPU path's bits: every conformance case in both element types, random
//!   inputs with subnormals, NaN and ±∞ gradients under every policy, tables inline and in
//!   "device" memory, several grid and block shapes and chunk sizes, and identical checkpoints.
//!
//! Without g++ these tests print why they are skipped (a failure when `CI=true`).

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::{c_char, c_int, c_void};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::driver::Backend;
use super::error::CudaError;
use super::layout::{AdamDev, Args, ConstantVsgdDev, SgdmDev, VsgdDev};
use super::module::{self, DevType, Kernel, KERNEL_NAMES, PTX};
use super::optimizer::{DeviceOptimizer, TensorPtrs};
use super::stateless::{self, RawTensor};
use crate::checkpoint;
use crate::config::{Algorithm, Config};
use crate::element::{DType, Element};
use crate::error::Error;
use crate::kernels::{self, NonFinitePolicy, StepOutcome};
use crate::optimizer::{GroupId, Optimizer, TensorId, TensorSpec};
use crate::schedule::LrSchedule;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::Rng;

// ------------------------------------------------------------------ artifacts

#[test]
fn artifacts_are_fresh() {
    let options = module::manifest("options").expect("manifest has options");
    let recorded = module::manifest("sources").expect("manifest has sources");
    assert_eq!(
        format!("{:016x}", module::sources_hash(options)),
        recorded,
        "src/cuda/kernels/build is stale: the kernel sources changed since it was generated; \
         run `python3 scripts/cuda/compile_kernels.py` (NVRTC from pip nvidia-cuda-nvrtc-cu12, \
         see scripts/test.d/40-cuda.sh)"
    );
    let h = |b: &[u8]| format!("{:016x}", module::fnv1a64(b, module::FNV_BASIS));
    assert_eq!(
        h(module::CUBIN),
        module::manifest("cubin").unwrap(),
        "cubin edited by hand?"
    );
    assert_eq!(
        h(PTX.as_bytes()),
        module::manifest("ptx").unwrap(),
        "PTX edited by hand?"
    );
}

#[test]
fn a_changed_source_changes_the_hash() {
    let options = module::manifest("options").unwrap();
    let base = module::sources_hash(options);
    assert_ne!(
        base,
        module::sources_hash(&format!("{options} --use_fast_math"))
    );
    // One byte of a source, as the hash walks them.
    let mut h = module::FNV_BASIS;
    for (i, (name, text)) in module::SOURCES.iter().enumerate() {
        let mut bytes = text.as_bytes().to_vec();
        if i == 1 {
            bytes[100] ^= 1;
        }
        h = module::fnv1a64(name.as_bytes(), h);
        h = module::fnv1a64(&[0], h);
        h = module::fnv1a64(&bytes, h);
        h = module::fnv1a64(&[0], h);
    }
    assert_ne!(module::fnv1a64(options.as_bytes(), h), base);
}

/// `.entry NAME(` and the size of its first parameter, from the PTX.
fn ptx_entries() -> Vec<(String, Option<usize>)> {
    let mut out = Vec::new();
    let mut lines = PTX.lines();
    while let Some(l) = lines.next() {
        let Some(rest) = l.trim().strip_prefix(".visible .entry ") else {
            continue;
        };
        let name = rest.trim_end_matches('(').to_string();
        let first = lines.next().unwrap_or("");
        // `.param .align 8 .b8 NAME_param_0[3352]` for a struct argument.
        let size = first
            .split('[')
            .nth(1)
            .and_then(|s| s.split(']').next())
            .and_then(|s| s.parse().ok());
        out.push((name, size));
    }
    out
}

#[test]
fn ptx_entries_are_the_kernels_this_crate_launches() {
    let mut names: Vec<String> = ptx_entries().into_iter().map(|(n, _)| n).collect();
    names.sort();
    let mut want: Vec<String> = KERNEL_NAMES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn argument_sizes_match_the_ptx() {
    use core::mem::size_of;
    let sizes: HashMap<String, Option<usize>> = ptx_entries().into_iter().collect();
    let want = [
        ("vsgd_mt_vsgd_f32", size_of::<Args<VsgdDev<f32>>>()),
        ("vsgd_mt_vsgd_f64", size_of::<Args<VsgdDev<f64>>>()),
        (
            "vsgd_mt_constant_vsgd_f32",
            size_of::<Args<ConstantVsgdDev<f32>>>(),
        ),
        (
            "vsgd_mt_constant_vsgd_f64",
            size_of::<Args<ConstantVsgdDev<f64>>>(),
        ),
        ("vsgd_mt_adam_f32", size_of::<Args<AdamDev<f32>>>()),
        ("vsgd_mt_adam_f64", size_of::<Args<AdamDev<f64>>>()),
        ("vsgd_mt_sgdm_f32", size_of::<Args<SgdmDev<f32>>>()),
        ("vsgd_mt_sgdm_f64", size_of::<Args<SgdmDev<f64>>>()),
    ];
    for (name, size) in want {
        assert_eq!(sizes[name], Some(size), "{name}");
        assert!(size <= 4096, "{name}: {size} bytes of arguments");
    }
    assert_eq!(
        Kernel::multi_tensor(Algorithm::AdamW, DevType::F64).name(),
        "vsgd_mt_adam_f64"
    );
    assert_eq!(Kernel::UNFUSED[0].name(), "vsgd_unfused_f32_posterior");
}

// ------------------------------------------------------------------ the host emulation

type HostFn = unsafe extern "C" fn(u32, u32, *mut *mut c_void);

extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}
const RTLD_NOW: c_int = 2;

/// The launchers of the host build, compiled once per test run (None, after saying why, when
/// g++ is missing outside CI).
fn host_kernels() -> Option<&'static [HostFn]> {
    static LIB: OnceLock<Option<Vec<HostFn>>> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = dir.join("target/cuda-host");
        std::fs::create_dir_all(&out).unwrap();
        let lib = out.join(format!("libvsgd_cuda_host_{}.so", std::process::id()));
        let status = std::process::Command::new("g++")
            .args([
                "-std=c++17",
                "-O2",
                "-ffp-contract=off",
                "-fno-fast-math",
                "-fPIC",
            ])
            .args([
                "-shared",
                "-Wall",
                "-Wextra",
                "-Wno-unknown-pragmas",
                "-Werror",
                "-o",
            ])
            .arg(&lib)
            .arg(dir.join("src/cuda/kernels/host_emulation.cpp"))
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("g++ failed to build the host emulation ({s})"),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "g++ is needed for the CUDA host emulation tests: {e}"
                );
                std::eprintln!("SKIPPED: CUDA host emulation tests need g++ ({e})");
                return None;
            }
        }
        let path = std::ffi::CString::new(lib.to_str().unwrap()).unwrap();
        // SAFETY: loading the library just built; its initializers do nothing.
        let handle = unsafe { dlopen(path.as_ptr(), RTLD_NOW) };
        assert!(!handle.is_null(), "dlopen {}", lib.display());
        let _ = std::fs::remove_file(&lib); // mapped; the file is not needed any more
        let fns = KERNEL_NAMES
            .iter()
            .map(|name| {
                let sym = std::ffi::CString::new(format!("{name}_host")).unwrap();
                // SAFETY: looking up a symbol of the loaded library.
                let f = unsafe { dlsym(handle, sym.as_ptr()) };
                assert!(!f.is_null(), "{name}_host missing from the host build");
                // SAFETY: every launcher has this signature (host_emulation.cpp).
                unsafe { core::mem::transmute::<*mut c_void, HostFn>(f) }
            })
            .collect();
        Some(fns)
    })
    .as_deref()
}

/// A [`Backend`] over host memory running the host build of the kernels. `grid` and `block`
/// override the launch shape the plan chose; `chunk` the chunk size.
struct Host {
    fns: &'static [HostFn],
    grid: Option<u32>,
    block: Option<u32>,
    chunk: u64,
    /// Live allocations by address (u64 words: 8-byte aligned).
    mem: Mutex<HashMap<u64, Vec<u64>>>,
    launches: Mutex<Vec<(Kernel, u32, u32)>>,
}

impl Host {
    fn new(grid: Option<u32>, block: Option<u32>, chunk: u64) -> Option<Arc<Host>> {
        Some(Arc::new(Host {
            fns: host_kernels()?,
            grid,
            block,
            chunk,
            mem: Mutex::new(HashMap::new()),
            launches: Mutex::new(Vec::new()),
        }))
    }

    fn live(&self) -> usize {
        self.mem.lock().unwrap().len()
    }
}

impl Backend for Host {
    fn chunk(&self) -> u64 {
        self.chunk
    }
    fn alloc(&self, bytes: usize) -> Result<u64, CudaError> {
        let mut v = vec![0u64; bytes.div_ceil(8)];
        let addr = v.as_mut_ptr() as u64;
        self.mem.lock().unwrap().insert(addr, v);
        Ok(addr)
    }
    unsafe fn free(&self, addr: u64) {
        assert!(
            self.mem.lock().unwrap().remove(&addr).is_some(),
            "double free"
        );
    }
    unsafe fn alloc_async(&self, _stream: u64, bytes: usize) -> Result<u64, CudaError> {
        self.alloc(bytes)
    }
    unsafe fn free_async(&self, _stream: u64, addr: u64) -> Result<(), CudaError> {
        // SAFETY: forwarded contract.
        unsafe { self.free(addr) };
        Ok(())
    }
    fn alloc_host(&self, bytes: usize) -> Result<*mut u8, CudaError> {
        Ok(self.alloc(bytes)? as *mut u8)
    }
    unsafe fn free_host(&self, p: *mut u8) {
        // SAFETY: forwarded contract.
        unsafe { self.free(p as u64) }
    }
    unsafe fn upload_async(&self, _s: u64, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        // SAFETY: the caller's contract: `dst` is host memory of this backend.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }
    unsafe fn upload(&self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        // SAFETY: as above.
        unsafe { self.upload_async(0, dst, src) }
    }
    unsafe fn download(&self, dst: &mut [u8], src: u64) -> Result<(), CudaError> {
        // SAFETY: as above.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }
    unsafe fn download_async(
        &self,
        _s: u64,
        dst: *mut u8,
        src: u64,
        n: usize,
    ) -> Result<(), CudaError> {
        // SAFETY: as above.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, dst, n) };
        Ok(())
    }
    unsafe fn memset_zero_async(&self, _s: u64, dst: u64, bytes: usize) -> Result<(), CudaError> {
        // SAFETY: as above.
        unsafe { core::ptr::write_bytes(dst as *mut u8, 0, bytes) };
        Ok(())
    }
    unsafe fn launch(
        &self,
        _s: u64,
        k: Kernel,
        grid: u32,
        block: u32,
        params: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        let (g, b) = (self.grid.unwrap_or(grid), self.block.unwrap_or(block));
        self.launches.lock().unwrap().push((k, g, b));
        // SAFETY: the launcher takes cuLaunchKernel's argument array, which the caller built
        // for this kernel; its addresses are host memory.
        unsafe { (self.fns[k.0])(g, b, params.as_mut_ptr()) };
        Ok(())
    }
    fn event(&self) -> Result<u64, CudaError> {
        Ok(1)
    }
    unsafe fn event_destroy(&self, _e: u64) {}
    unsafe fn record(&self, _e: u64, _s: u64) -> Result<(), CudaError> {
        Ok(())
    }
    unsafe fn stream_wait(&self, _s: u64, _e: u64) -> Result<(), CudaError> {
        Ok(())
    }
    unsafe fn event_sync(&self, _e: u64) -> Result<(), CudaError> {
        Ok(())
    }
}

/// The launch shapes the tests run: (grid override, block override, chunk).
const SHAPES: [(Option<u32>, Option<u32>, u64); 5] = [
    (None, Some(32), 1 << 16),
    (Some(1), Some(1), 7),
    (Some(3), Some(64), 64),
    (Some(5), Some(96), 1),
    (None, Some(8), 5),
];

// ------------------------------------------------------------------ helpers

fn bits<T: Element>(x: &[T]) -> Vec<u64> {
    x.iter()
        .map(|v| match T::DTYPE {
            DType::F32 => (v.to_f64() as f32).to_bits() as u64,
            _ => v.to_f64().to_bits(),
        })
        .collect()
}

fn ptrs<T>(params: &mut [Vec<T>], grads: &[Vec<T>]) -> Vec<TensorPtrs> {
    params
        .iter_mut()
        .zip(grads)
        .map(|(p, g)| TensorPtrs {
            param: p.as_mut_ptr() as u64,
            grad: g.as_ptr() as u64,
        })
        .collect()
}

/// A conformance case: configuration, shapes, initial parameters, gradients per step and
/// learning rates (the format of shared/spec; the replay binary parses the same).
struct Case {
    name: String,
    config: Config,
    shapes: Vec<Vec<usize>>,
    param0: Vec<Vec<f64>>,
    grads: Vec<Vec<Vec<f64>>>,
    lr_per_step: Option<Vec<f64>>,
    steps: usize,
}

fn numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cases() -> Vec<Case> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 22,
        "conformance cases missing in {}",
        dir.display()
    );
    paths
        .iter()
        .map(|p| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            let algorithm = Algorithm::from_name(v["algorithm"].as_str().unwrap()).unwrap();
            let mut config = Config::default_for(algorithm);
            for (k, x) in v["hyper"].as_object().unwrap() {
                let x = x
                    .as_f64()
                    .or(x.as_bool().map(|b| f64::from(u8::from(b))))
                    .unwrap();
                config.set(k, x).unwrap();
            }
            let tensors = v["tensors"].as_array().unwrap();
            let grads: Vec<Vec<Vec<f64>>> = tensors
                .iter()
                .map(|t| t["grads"].as_array().unwrap().iter().map(numbers).collect())
                .collect();
            let available = grads.iter().map(Vec::len).min().unwrap_or(0);
            Case {
                name: p.file_stem().unwrap().to_string_lossy().into_owned(),
                config,
                shapes: tensors
                    .iter()
                    .map(|t| {
                        let s = t["shape"].as_array().unwrap();
                        s.iter().map(|d| d.as_u64().unwrap() as usize).collect()
                    })
                    .collect(),
                param0: tensors.iter().map(|t| numbers(&t["param0"])).collect(),
                grads,
                lr_per_step: v.get("lr_per_step").filter(|l| !l.is_null()).map(numbers),
                steps: v
                    .get("steps")
                    .and_then(|s| s.as_u64())
                    .map_or(available, |s| s as usize),
            }
        })
        .collect()
}

/// Runs `case` on the CPU and on `backend` side by side in element type `T`, comparing the
/// parameters' bits after every step and the checkpoints' bytes at the end.
fn replay_both<T: Element>(case: &Case, backend: Arc<Host>) {
    let mut cpu = Optimizer::new(case.config).unwrap();
    for s in &case.shapes {
        cpu.add_tensor(TensorSpec::new(s).dtype(T::DTYPE)).unwrap();
    }
    let mut dev = DeviceOptimizer::from_host_on(backend, &cpu).unwrap();
    let p0: Vec<Vec<T>> = case
        .param0
        .iter()
        .map(|p| p.iter().map(|&x| T::from_f64(x)).collect())
        .collect();
    let (mut pc, mut pd) = (p0.clone(), p0);
    for s in 0..case.steps {
        if let Some(l) = &case.lr_per_step {
            cpu.set_lr(GroupId(0), l[s]).unwrap();
            dev.set_lr(GroupId(0), l[s]).unwrap();
        }
        let grads: Vec<Vec<T>> = case
            .grads
            .iter()
            .map(|g| g[s].iter().map(|&x| T::from_f64(x)).collect())
            .collect();
        let gr: Vec<&[T]> = grads.iter().map(Vec::as_slice).collect();
        let mut pr: Vec<&mut [T]> = pc.iter_mut().map(Vec::as_mut_slice).collect();
        let rc = cpu.step(&mut pr, &gr).unwrap();
        let ptrs = ptrs(&mut pd, &grads);
        // SAFETY: host memory of the registered lengths (the host backend's "device").
        unsafe { dev.step_raw(core::ptr::null_mut(), &ptrs) }.unwrap();
        assert_eq!(dev.report().unwrap(), rc, "{} step {}", case.name, s + 1);
        for (k, (a, b)) in pc.iter().zip(&pd).enumerate() {
            assert_eq!(
                bits(a),
                bits(b),
                "{} {:?} step {} tensor {k}",
                case.name,
                T::DTYPE,
                s + 1
            );
        }
    }
    assert_eq!(
        dev.save().unwrap(),
        checkpoint::save(&cpu).unwrap(),
        "{} {:?}: final state differs",
        case.name,
        T::DTYPE
    );
}

#[test]
fn conformance_cases_bit_identical_on_the_host_emulation() {
    if host_kernels().is_none() {
        return;
    }
    let cases = cases();
    for (i, case) in cases.iter().enumerate() {
        // Every case under the default shape, and each under one of the others in turn.
        for shape in [SHAPES[0], SHAPES[1 + i % (SHAPES.len() - 1)]] {
            let (g, b, c) = shape;
            replay_both::<f32>(case, Host::new(g, b, c).unwrap());
            replay_both::<f64>(case, Host::new(g, b, c).unwrap());
        }
    }
}

/// A gradient value: ordinary, tiny, huge, subnormal, zero of either sign, or (when `bad`)
/// NaN and ±∞.
fn value<T: Element>(rng: &mut Rng, bad: bool) -> T {
    let tiny = match T::DTYPE {
        DType::F32 => f32::MIN_POSITIVE as f64,
        _ => f64::MIN_POSITIVE,
    };
    let x = match rng.below(if bad { 12 } else { 9 }) {
        0 => rng.unit() * tiny,       // subnormal
        1 => rng.unit() * tiny * 1e3, // near the normal range's bottom
        2 => rng.unit() * 1e-20,
        3 => rng.unit() * 1e15,
        4 => 0.0,
        5 => -0.0,
        6..=8 => rng.unit() * 3.0,
        9 => f64::NAN,
        10 => f64::INFINITY,
        _ => f64::NEG_INFINITY,
    };
    T::from_f64(x)
}

/// The configurations the random tests run: every algorithm with its options varied.
fn configs() -> Vec<Config> {
    let mut out = Vec::new();
    for a in Algorithm::ALL {
        let base = Config::default_for(a);
        out.push(base);
        let mut c = base;
        c.set("weight_decay", 0.05).unwrap();
        c.set("maximize", 1.0).unwrap();
        c.set("l2", 0.01).unwrap();
        out.push(c);
        if a == Algorithm::Sgdm {
            let mut c = base;
            c.set("nesterov", 1.0).unwrap();
            c.set("momentum", 0.8).unwrap();
            out.push(c);
            let mut c = base;
            c.set("dampening", 0.3).unwrap();
            c.set("momentum", 0.5).unwrap();
            out.push(c);
        }
        if a == Algorithm::Vsgd {
            let mut c = base;
            c.set("ghattg", 1e-3).unwrap();
            c.set("ps", 1e-30).unwrap();
            c.set("eps", 1e-30).unwrap();
            out.push(c);
        }
    }
    out
}

/// Random steps of mixed tensors (both element types, two groups with their own learning
/// rates and schedules, lengths around the chunk and block sizes) under `policy`, on the CPU
/// (tensor by tensor) and on the host emulation, compared bit for bit.
fn random_both(
    config: Config,
    policy: NonFinitePolicy,
    host: Arc<Host>,
    seed: u64,
    tensors: usize,
) {
    let mut rng = Rng(seed);
    let mut cpu = Optimizer::new(config).unwrap();
    let mut c2 = config;
    c2.set_lr(config.lr() * 0.5);
    let g1 = cpu.add_group(c2).unwrap();
    cpu.set_schedule(
        g1,
        LrSchedule {
            schedule: crate::Schedule::StepDecay {
                every: 2,
                factor: 0.5,
            },
            warmup: 2,
        },
    )
    .unwrap();
    cpu.set_policy(policy);
    let lens: Vec<usize> = (0..tensors)
        .map(|_| [0, 1, 2, 7, 8, 33, 64, 65, 100, 257][rng.below(10) as usize])
        .collect();
    let dtypes: Vec<DType> = (0..tensors)
        .map(|_| {
            if rng.below(2) == 0 {
                DType::F32
            } else {
                DType::F64
            }
        })
        .collect();
    for (k, (&len, &d)) in lens.iter().zip(&dtypes).enumerate() {
        let g = GroupId(k % 2);
        cpu.add_tensor(TensorSpec::new(&[len]).dtype(d).group(g))
            .unwrap();
    }
    let mut dev = DeviceOptimizer::from_host_on(host, &cpu).unwrap();
    let mut p32: Vec<Vec<f32>> = lens
        .iter()
        .map(|&n| (0..n).map(|_| value(&mut rng, false)).collect())
        .collect();
    let mut p64: Vec<Vec<f64>> = lens
        .iter()
        .map(|&n| (0..n).map(|_| value(&mut rng, false)).collect())
        .collect();
    let (mut d32, mut d64) = (p32.clone(), p64.clone());
    for step in 0..5 {
        // Some tensors get a non-finite gradient on some steps.
        let g32: Vec<Vec<f32>> = lens
            .iter()
            .map(|&n| {
                let bad = rng.below(4) == 0;
                (0..n).map(|_| value(&mut rng, bad)).collect()
            })
            .collect();
        let g64: Vec<Vec<f64>> = lens
            .iter()
            .map(|&n| {
                let bad = rng.below(4) == 0;
                (0..n).map(|_| value(&mut rng, bad)).collect()
            })
            .collect();
        // The CPU, tensor by tensor (an Optimizer::step takes one element type); under `error`
        // the first non-finite gradient stops the step before anything changes.
        let finite = |k: usize| match dtypes[k] {
            DType::F32 => kernels::all_finite(&g32[k]),
            _ => kernels::all_finite(&g64[k]),
        };
        let first_bad = (0..tensors).find(|&k| !finite(k));
        let want_err = policy == NonFinitePolicy::Error && first_bad.is_some();
        let mut skipped = Vec::new();
        if !want_err {
            for k in 0..tensors {
                let r = match dtypes[k] {
                    DType::F32 => cpu.step_tensor(TensorId(k), &mut p32[k], &g32[k]),
                    _ => cpu.step_tensor(TensorId(k), &mut p64[k], &g64[k]),
                };
                if r.unwrap() == StepOutcome::Skipped {
                    skipped.push(TensorId(k));
                }
            }
        }
        let ptrs: Vec<TensorPtrs> = (0..tensors)
            .map(|k| match dtypes[k] {
                DType::F32 => TensorPtrs {
                    param: d32[k].as_mut_ptr() as u64,
                    grad: g32[k].as_ptr() as u64,
                },
                _ => TensorPtrs {
                    param: d64[k].as_mut_ptr() as u64,
                    grad: g64[k].as_ptr() as u64,
                },
            })
            .collect();
        // SAFETY: host memory of the registered lengths and types.
        let r = unsafe { dev.step_raw(core::ptr::null_mut(), &ptrs) };
        if want_err {
            assert_eq!(
                r,
                Err(Error::NonFiniteGradient {
                    tensor: first_bad.unwrap()
                }
                .into())
            );
        } else {
            r.unwrap();
            assert_eq!(
                dev.last_skipped().unwrap(),
                skipped.as_slice(),
                "step {step}"
            );
        }
        for k in 0..tensors {
            let what = format!("{config:?} {policy:?} step {step} tensor {k}");
            match dtypes[k] {
                DType::F32 => assert_eq!(bits(&p32[k]), bits(&d32[k]), "{what}"),
                _ => assert_eq!(bits(&p64[k]), bits(&d64[k]), "{what}"),
            }
        }
    }
    assert_eq!(
        dev.save().unwrap(),
        checkpoint::save(&cpu).unwrap(),
        "{config:?} {policy:?}"
    );
}

#[test]
fn random_inputs_bit_identical_on_the_host_emulation() {
    if host_kernels().is_none() {
        return;
    }
    let policies = [
        NonFinitePolicy::Skip,
        NonFinitePolicy::Error,
        NonFinitePolicy::Propagate,
    ];
    for (i, config) in configs().into_iter().enumerate() {
        for (j, policy) in policies.into_iter().enumerate() {
            let (g, b, c) = SHAPES[(i + j) % SHAPES.len()];
            random_both(
                config,
                policy,
                Host::new(g, b, c).unwrap(),
                1 + (i * 3 + j) as u64,
                9,
            );
        }
    }
}

#[test]
fn many_tensors_use_device_tables() {
    let Some(host) = Host::new(Some(4), Some(16), 8) else {
        return;
    };
    // 120 tensors in two groups whose step counts drift apart (skips): more tensors and more
    // distinct scalars than the arguments hold.
    random_both(
        Config::default_for(Algorithm::Vsgd),
        NonFinitePolicy::Skip,
        host.clone(),
        99,
        120,
    );
    let launches = host.launches.lock().unwrap();
    assert!(
        launches.iter().all(|&(k, _, _)| k.0 < 8),
        "only multi-tensor kernels"
    );
    drop(launches);
    // Everything freed when the optimizer went away.
    assert_eq!(host.live(), 0);
}

#[test]
fn one_launch_per_phase_and_element_type() {
    let Some(host) = Host::new(None, Some(4), 4) else {
        return;
    };
    let mut cpu = Optimizer::new(Config::default_for(Algorithm::Adam)).unwrap();
    for k in 0..60 {
        let d = if k % 3 == 0 { DType::F64 } else { DType::F32 };
        cpu.add_tensor(TensorSpec::new(&[k % 7]).dtype(d)).unwrap();
    }
    let mut dev = DeviceOptimizer::from_host_on(host.clone(), &cpu).unwrap();
    let mut p32: Vec<Vec<f32>> = (0..60).map(|k| vec![1.0; k % 7]).collect();
    let mut p64: Vec<Vec<f64>> = (0..60).map(|k| vec![1.0; k % 7]).collect();
    let (g32, g64) = (p32.clone(), p64.clone());
    let ptrs: Vec<TensorPtrs> = (0..60)
        .map(|k| {
            if k % 3 == 0 {
                TensorPtrs {
                    param: p64[k].as_mut_ptr() as u64,
                    grad: g64[k].as_ptr() as u64,
                }
            } else {
                TensorPtrs {
                    param: p32[k].as_mut_ptr() as u64,
                    grad: g32[k].as_ptr() as u64,
                }
            }
        })
        .collect();
    // SAFETY: host memory of the registered lengths and types.
    unsafe { dev.step_raw(core::ptr::null_mut(), &ptrs) }.unwrap();
    let launches: Vec<usize> = host
        .launches
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.0 .0)
        .collect();
    // Scan f32, scan f64, apply f32, apply f64.
    let (a32, a64) = (
        Kernel::multi_tensor(Algorithm::Adam, DevType::F32).0,
        Kernel::multi_tensor(Algorithm::Adam, DevType::F64).0,
    );
    assert_eq!(launches, [a32, a64, a32, a64]);
    assert_eq!(dev.report().unwrap().applied, 60);
    // Propagate: no scan.
    host.launches.lock().unwrap().clear();
    dev.set_policy(NonFinitePolicy::Propagate);
    // SAFETY: as above.
    unsafe { dev.step_raw(core::ptr::null_mut(), &ptrs) }.unwrap();
    assert_eq!(host.launches.lock().unwrap().len(), 2);
    assert_eq!(dev.step_count(TensorId(5)).unwrap(), 2);
}

#[test]
fn stateless_step_matches_kernels_step() {
    let Some(host) = Host::new(Some(2), Some(8), 16) else {
        return;
    };
    let mut rng = Rng(7);
    for config in configs() {
        let k = config.algorithm().state_count();
        for policy in [
            NonFinitePolicy::Skip,
            NonFinitePolicy::Error,
            NonFinitePolicy::Propagate,
        ] {
            // Three f64 tensors at different update numbers and learning rates.
            let lens = [5usize, 0, 40];
            let mut cpu: Vec<(Vec<f64>, Vec<Vec<f64>>)> = lens
                .iter()
                .map(|&n| {
                    (
                        (0..n).map(|_| value(&mut rng, false)).collect(),
                        vec![vec![0.0; n]; k],
                    )
                })
                .collect();
            let mut dev = cpu.clone();
            for t in 1..4u64 {
                let grads: Vec<Vec<f64>> = lens
                    .iter()
                    .map(|&n| {
                        let bad = rng.below(5) == 0;
                        (0..n).map(|_| value(&mut rng, bad)).collect()
                    })
                    .collect();
                let lr = |i: usize| 0.01 * (i + 1) as f64;
                // The CPU: `error` leaves every tensor when any gradient is bad (as the
                // device); otherwise each tensor is `kernels::step`ped under its policy.
                let any_bad = grads.iter().any(|g| !kernels::all_finite(g));
                if !(policy == NonFinitePolicy::Error && any_bad) {
                    for (i, (p, s)) in cpu.iter_mut().enumerate() {
                        let mut st: Vec<&mut [f64]> = s.iter_mut().map(Vec::as_mut_slice).collect();
                        kernels::step(&config, t + i as u64, lr(i), p, &grads[i], &mut st, policy)
                            .unwrap();
                    }
                }
                let mut verdict = vec![7u32; lens.len() + 1];
                let raw: Vec<RawTensor> = dev
                    .iter_mut()
                    .enumerate()
                    .map(|(i, (p, s))| {
                        let mut state = [0u64; 3];
                        for (j, a) in s.iter_mut().enumerate() {
                            state[j] = a.as_mut_ptr() as u64;
                        }
                        RawTensor {
                            dtype: DType::F64,
                            len: p.len(),
                            param: p.as_mut_ptr() as u64,
                            grad: grads[i].as_ptr() as u64,
                            state,
                            t: t + i as u64,
                            lr: lr(i),
                        }
                    })
                    .collect();
                let v = if policy == NonFinitePolicy::Propagate {
                    0
                } else {
                    verdict.as_mut_ptr() as u64
                };
                stateless::check(&config, policy, &raw, v).unwrap();
                // SAFETY: host memory of the given lengths.
                unsafe { stateless::step_on(&*host, 0, &config, policy, &raw, v) }.unwrap();
                if policy != NonFinitePolicy::Propagate {
                    let flagged: Vec<u32> = grads
                        .iter()
                        .map(|g| u32::from(!kernels::all_finite(g)))
                        .collect();
                    assert_eq!(&verdict[..lens.len()], &flagged[..]);
                    assert_eq!(verdict[lens.len()], u32::from(any_bad));
                }
                for ((pc, sc), (pd, sd)) in cpu.iter().zip(&dev) {
                    assert_eq!(bits(pc), bits(pd), "{config:?} {policy:?} t {t}");
                    for (a, b) in sc.iter().zip(sd) {
                        assert_eq!(bits(a), bits(b), "{config:?} {policy:?} t {t} state");
                    }
                }
            }
        }
    }
}

#[test]
fn unfused_vsgd_gives_the_fused_bits() {
    let Some(host) = Host::new(Some(3), Some(32), 1 << 16) else {
        return;
    };
    let mut rng = Rng(3);
    let mut config = Config::default_for(Algorithm::Vsgd);
    config.set("weight_decay", 0.1).unwrap();
    config.set("l2", 0.01).unwrap();
    let n = 1000;
    let mut p: Vec<f32> = (0..n).map(|_| value(&mut rng, false)).collect();
    let mut st = vec![vec![0f32; n]; 3];
    let (mut q, mut su) = (p.clone(), st.clone());
    let (mut mu_new, mut var) = (vec![0f32; n], vec![0f32; n]);
    for t in 1..5 {
        let g: Vec<f32> = (0..n).map(|_| value(&mut rng, false)).collect();
        let mut arrays: Vec<&mut [f32]> = st.iter_mut().map(Vec::as_mut_slice).collect();
        kernels::step(
            &config,
            t,
            0.1,
            &mut p,
            &g,
            &mut arrays,
            NonFinitePolicy::Propagate,
        )
        .unwrap();
        let s = VsgdDev::<f32>::from_scalars_for(&config, t, 0.1);
        let a: Vec<u64> = su.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
        let n64 = n as u64;
        let gp = g.as_ptr() as u64;
        let qp = q.as_mut_ptr() as u64;
        let (mp, vp) = (mu_new.as_mut_ptr() as u64, var.as_mut_ptr() as u64);
        // The four passes with their argument lists (vsgd_unfused_f32_*).
        let mut s1 = s;
        let passes: [Vec<u64>; 4] = [
            vec![gp, qp, a[0], a[1], a[2], mp, vp, n64],
            vec![a[1], a[0], mp, vp, n64],
            vec![a[2], gp, qp, mp, vp, n64],
            vec![qp, a[0], mp, vp, n64],
        ];
        for (k, args) in Kernel::UNFUSED.iter().zip(passes) {
            let mut args = args;
            let mut params: Vec<*mut c_void> = vec![(&mut s1 as *mut VsgdDev<f32>).cast()];
            params.extend(args.iter_mut().map(|x| (x as *mut u64).cast::<c_void>()));
            // SAFETY: the kernels' argument lists; host memory of n elements.
            unsafe { host.launch(0, *k, 4, 32, &mut params) }.unwrap();
        }
        assert_eq!(bits(&p), bits(&q), "t {t}");
        for (x, y) in st.iter().zip(&su) {
            assert_eq!(bits(x), bits(y), "t {t} state");
        }
    }
}

impl VsgdDev<f32> {
    fn from_scalars_for(config: &Config, t: u64, lr: f64) -> Self {
        use super::layout::DeviceScalars;
        Self::from_scalars(&kernels::Scalars::<f32>::new(config, t, lr)).unwrap()
    }
}

// ------------------------------------------------------------------ errors and checkpoints

#[test]
fn bad_input_is_an_error_and_changes_nothing() {
    let Some(host) = Host::new(None, Some(8), 64) else {
        return;
    };
    let mut cpu = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
    cpu.add_tensor(TensorSpec::new(&[4]).name("w")).unwrap();
    cpu.add_tensor(TensorSpec::new(&[3]).dtype(DType::F64).name("b"))
        .unwrap();
    let mut dev = DeviceOptimizer::from_host_on(host, &cpu).unwrap();
    let mut w = vec![1.0f32; 4];
    let mut b = vec![1.0f64; 3];
    let gw = [0.5f32; 4];
    let gb = [0.5f64; 3];
    let good = [
        TensorPtrs {
            param: w.as_mut_ptr() as u64,
            grad: gw.as_ptr() as u64,
        },
        TensorPtrs {
            param: b.as_mut_ptr() as u64,
            grad: gb.as_ptr() as u64,
        },
    ];
    let before = dev.save().unwrap();
    // SAFETY (all calls): host memory, or addresses the checks reject before any use.
    unsafe {
        assert!(matches!(
            dev.step_raw(core::ptr::null_mut(), &good[..1]),
            Err(CudaError::Core(Error::LengthMismatch {
                what: "tensors",
                expected: 2,
                got: 1
            }))
        ));
        let mut bad = good;
        bad[1].grad = 0;
        assert_eq!(
            dev.step_raw(core::ptr::null_mut(), &bad),
            Err(CudaError::BadPointer {
                what: "grad",
                tensor: 1,
                addr: 0
            })
        );
        let mut bad = good;
        bad[1].param += 4; // f64 needs 8-byte alignment
        assert!(matches!(
            dev.step_raw(core::ptr::null_mut(), &bad),
            Err(CudaError::BadPointer {
                what: "param",
                tensor: 1,
                ..
            })
        ));
    }
    assert_eq!(dev.save().unwrap(), before);
    assert_eq!(w, [1.0; 4]);
    // Non-finite gradient under `error`: the error names the first tensor, nothing changes.
    dev.set_policy(NonFinitePolicy::Error);
    let gb_bad = [0.5, f64::NAN, 0.5];
    let ptrs = [
        good[0],
        TensorPtrs {
            param: b.as_mut_ptr() as u64,
            grad: gb_bad.as_ptr() as u64,
        },
    ];
    // SAFETY: as above.
    let r = unsafe { dev.step_raw(core::ptr::null_mut(), &ptrs) };
    assert_eq!(
        r,
        Err(CudaError::Core(Error::NonFiniteGradient { tensor: 1 }))
    );
    assert_eq!(w, [1.0; 4]);
    assert_eq!(b, [1.0; 3]);
    assert_eq!(dev.step_count(TensorId(0)).unwrap(), 0);
    dev.set_policy(NonFinitePolicy::Skip);
    let mut after_policy = Optimizer::clone(&cpu);
    after_policy.set_policy(NonFinitePolicy::Skip);
    assert_eq!(
        dev.save().unwrap(),
        checkpoint::save(&after_policy).unwrap()
    );
    // Skip: tensor 1 untouched, tensor 0 updated; counters follow.
    // SAFETY: as above.
    unsafe { dev.step_raw(core::ptr::null_mut(), &ptrs) }.unwrap();
    assert_eq!(dev.last_skipped().unwrap(), [TensorId(1)]);
    assert_eq!(
        (
            dev.step_count(TensorId(0)).unwrap(),
            dev.step_count(TensorId(1)).unwrap()
        ),
        (1, 0)
    );
    assert!(w[0] < 1.0);
    assert_eq!(b, [1.0; 3]);
    // Stateless: every check before anything runs.
    let config = Config::default_for(Algorithm::Adam);
    let t = RawTensor {
        dtype: DType::F32,
        len: 4,
        param: w.as_mut_ptr() as u64,
        grad: gw.as_ptr() as u64,
        state: [8, 16, 0],
        t: 1,
        lr: 0.1,
    };
    let v = 64u64;
    assert!(stateless::check(&config, NonFinitePolicy::Skip, &[t], v).is_ok());
    assert_eq!(
        stateless::check(
            &config,
            NonFinitePolicy::Skip,
            &[RawTensor { t: 0, ..t }],
            v
        ),
        Err(Error::InvalidStep { step: 0 }.into())
    );
    assert!(matches!(
        stateless::check(
            &config,
            NonFinitePolicy::Skip,
            &[RawTensor { lr: -1.0, ..t }],
            v
        ),
        Err(CudaError::Core(Error::InvalidLearningRate { .. }))
    ));
    assert!(matches!(
        stateless::check(
            &config,
            NonFinitePolicy::Skip,
            &[RawTensor {
                state: [8, 0, 0],
                ..t
            }],
            v
        ),
        Err(CudaError::BadPointer { what: "state", .. })
    ));
    assert!(matches!(
        stateless::check(&config, NonFinitePolicy::Skip, &[t], 0),
        Err(CudaError::BadPointer {
            what: "verdict",
            ..
        })
    ));
    assert!(stateless::check(&config, NonFinitePolicy::Propagate, &[t], 0).is_ok());
    assert!(stateless::check(
        &config,
        NonFinitePolicy::Skip,
        &[RawTensor {
            len: 0,
            param: 0,
            grad: 0,
            state: [0; 3],
            ..t
        }],
        v
    )
    .is_ok());
    let mut bad = config;
    bad.set_lr(-1.0);
    assert!(matches!(
        stateless::check(&bad, NonFinitePolicy::Skip, &[t], v),
        Err(CudaError::Core(Error::Config(_)))
    ));
}

#[test]
fn checkpoints_round_trip_and_mismatches_are_rejected() {
    let Some(host) = Host::new(None, Some(8), 64) else {
        return;
    };
    let mut cpu = Optimizer::new(Config::default_for(Algorithm::ConstantVsgd)).unwrap();
    cpu.add_tensor(TensorSpec::new(&[2, 3]).name("w")).unwrap();
    let mut dev = DeviceOptimizer::from_host_on(host.clone(), &cpu).unwrap();
    let mut p = vec![0.5f32; 6];
    let g = vec![0.25f32; 6];
    for _ in 0..3 {
        cpu.step_tensor(TensorId(0), &mut p.clone(), &g).unwrap();
        let ptrs = [TensorPtrs {
            param: p.as_mut_ptr() as u64,
            grad: g.as_ptr() as u64,
        }];
        // SAFETY: host memory of the registered length.
        unsafe { dev.step_raw(core::ptr::null_mut(), &ptrs) }.unwrap();
    }
    let saved = dev.save().unwrap();
    assert_eq!(saved, checkpoint::save(&cpu).unwrap());
    assert_eq!(checkpoint::load(&saved).unwrap(), cpu);
    // Restore into a fresh device optimizer, and from there again.
    let mut fresh = Optimizer::new(Config::default_for(Algorithm::ConstantVsgd)).unwrap();
    fresh
        .add_tensor(TensorSpec::new(&[2, 3]).name("w"))
        .unwrap();
    let mut dev2 = DeviceOptimizer::from_host_on(host.clone(), &fresh).unwrap();
    dev2.restore(&saved).unwrap();
    assert_eq!(dev2.save().unwrap(), saved);
    assert_eq!(dev2.step_count(TensorId(0)).unwrap(), 3);
    assert_eq!(
        dev2.state_to_host::<f32>(TensorId(0), "b").unwrap(),
        cpu.state::<f32>(TensorId(0), "b").unwrap()
    );
    // A checkpoint of another shape: an error naming the tensor, nothing changed.
    let mut other = Optimizer::new(Config::default_for(Algorithm::ConstantVsgd)).unwrap();
    other.add_tensor(TensorSpec::new(&[7]).name("w")).unwrap();
    let wrong = checkpoint::save(&other).unwrap();
    let err = dev2.restore(&wrong).unwrap_err();
    assert!(matches!(err, CudaError::Checkpoint(_)), "{err}");
    assert!(err.to_string().contains("\"w\""), "{err}");
    assert_eq!(dev2.save().unwrap(), saved);
    // Corrupt bytes.
    let mut corrupt = saved.clone();
    let at = corrupt.len() / 2;
    corrupt[at] ^= 0x40;
    assert!(matches!(
        dev2.restore(&corrupt),
        Err(CudaError::Checkpoint(_))
    ));
    assert_eq!(dev2.save().unwrap(), saved);
    drop((dev, dev2));
    assert_eq!(host.live(), 0);
}

#[test]
fn errors_display_what_went_wrong() {
    use cudarc::driver::sys::CUresult;
    let e = CudaError::Driver {
        call: "cuLaunchKernel",
        code: CUresult::CUDA_ERROR_INVALID_VALUE,
    };
    assert_eq!(
        e.to_string(),
        "cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE"
    );
    let e = CudaError::NoDevice {
        reason: "cuInit failed: CUDA_ERROR_NO_DEVICE".into(),
    };
    assert!(e.to_string().starts_with("no CUDA device: "));
}

#[test]
fn a_tensor_added_after_a_step_does_not_take_its_verdict() {
    let Some(host) = Host::new(None, Some(8), 64) else {
        return;
    };
    let mut cpu = Optimizer::new(Config::default_for(Algorithm::Sgdm)).unwrap();
    cpu.add_tensor(TensorSpec::new(&[3])).unwrap();
    cpu.add_tensor(TensorSpec::new(&[2])).unwrap();
    let mut dev = DeviceOptimizer::from_host_on(host, &cpu).unwrap();
    let (mut a, mut b) = ([1.0f32; 3], [1.0f32; 2]);
    let (ga, gb) = ([f32::INFINITY, 0.0, 0.0], [0.5f32; 2]);
    let ptrs = [
        TensorPtrs {
            param: a.as_mut_ptr() as u64,
            grad: ga.as_ptr() as u64,
        },
        TensorPtrs {
            param: b.as_mut_ptr() as u64,
            grad: gb.as_ptr() as u64,
        },
    ];
    // SAFETY: host memory of the registered lengths.
    unsafe { dev.step_raw(core::ptr::null_mut(), &ptrs) }.unwrap();
    let c = dev.add_tensor(TensorSpec::new(&[4])).unwrap();
    assert_eq!(dev.step_count(TensorId(0)).unwrap(), 0);
    assert_eq!(dev.step_count(TensorId(1)).unwrap(), 1);
    assert_eq!(dev.step_count(c).unwrap(), 0);
    assert_eq!(dev.last_skipped().unwrap(), [TensorId(0)]);
    assert_eq!(
        dev.report().unwrap(),
        crate::optimizer::StepReport {
            applied: 1,
            skipped: 1,
            frozen: 0,
        }
    );
    assert_eq!(a, [1.0; 3]);
    assert!(b[0] < 1.0);
}

#[test]
fn a_step_without_tensors_does_nothing() {
    let Some(host) = Host::new(None, None, 64) else {
        return;
    };
    let cpu = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
    let mut dev = DeviceOptimizer::from_host_on(host.clone(), &cpu).unwrap();
    // SAFETY: no tensors, no addresses.
    unsafe { dev.step_raw(core::ptr::null_mut(), &[]) }.unwrap();
    assert_eq!(
        dev.report().unwrap(),
        crate::optimizer::StepReport::default()
    );
    assert!(host.launches.lock().unwrap().is_empty());
    assert_eq!(dev.save().unwrap(), checkpoint::save(&cpu).unwrap());
}
