//! The GPU handler `vsgd_jax_xla_step_cuda` called through the C ABI of XLA's FFI with
//! hand-built call frames and a hand-built API table (`XLA_FFI_Error_Create`,
//! `XLA_FFI_Error_Destroy`, `XLA_FFI_Stream_Get`), on a machine without a GPU.
//!
//! Whatever the driver: the metadata handshake, refused operands (before anything else), and a
//! missing stream (before the driver is looked for) are XLA errors naming the problem.
//! Then, by `VSGD_CUDA_STUB` (scripts/test.d/40-jax.sh runs this once per setting, each in its
//! own process since the driver is loaded once per process):
//! - `none`: no `libcuda.so.1` at all; `cuinit`: `cuInit` returns `CUDA_ERROR_NO_DEVICE` —
//!   a `FAILED_PRECONDITION` error saying "no CUDA device" and why;
//! - `broken`: a driver whose every call after `cuInit` fails and that lacks
//!   `cuStreamGetCtx` (which the core does not check for, the handler does) — "lacks
//!   cuStreamGetCtx"; `broken-ctx`: the same with a failing `cuStreamGetCtx` — an `INTERNAL`
//!   error naming it;
//! - `fake`: `tests/fake_cuda.c`, a driver over host memory that logs what is enqueued on
//!   which stream: the handler binds the stream's context and restores the thread's, reads
//!   its scalars back on XLA's stream, copies unaliased outputs, launches one fused kernel
//!   (no scan) for the finite rows only, and nothing for a non-finite verdict;
//! - unset: whatever this machine has (a usable GPU is left to scripts/gpu-check.sh).
#![cfg(feature = "cuda")]

use core::ffi::{c_char, c_void, CStr};
use core::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use vsgd_jax_native::gpu::vsgd_jax_xla_step_cuda;
use vsgd_jax_native::xla::{self, dtype};

// ------------------------------------------------------------------ a fake XLA API table

/// What `XLA_FFI_Error_Create` made: code and message.
struct FakeError {
    code: i32,
    message: String,
}

static DESTROYED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn error_create(args: *mut xla::ErrorCreateArgs) -> *mut xla::Error {
    let args = unsafe { &*args };
    assert!(args.struct_size >= xla::ERROR_CREATE_ARGS_SIZE);
    let message = unsafe { CStr::from_ptr(args.message) }
        .to_string_lossy()
        .into_owned();
    Box::into_raw(Box::new(FakeError {
        code: args.errc,
        message,
    }))
    .cast()
}

unsafe extern "C" fn error_destroy(args: *mut xla::ErrorDestroyArgs) {
    drop(unsafe { Box::from_raw((*args).error.cast::<FakeError>()) });
    DESTROYED.fetch_add(1, Ordering::SeqCst);
}

/// The fake driver's one stream (tests/fake_cuda.c).
const FAKE_STREAM: usize = 0x5151;
/// Execution contexts (XLA's are opaque: the handler only passes them on to `Stream_Get`).
/// The fake `Stream_Get` gives `FAKE_STREAM` for `CTX`, NULL for `NULL_STREAM_CTX`, and an
/// error for `ERROR_CTX`.
const CTX: usize = 0xE0E0;
const NULL_STREAM_CTX: usize = 0xE1E1;
const ERROR_CTX: usize = 0xE2E2;

unsafe extern "C" fn stream_get(args: *mut xla::StreamGetArgs) -> *mut xla::Error {
    let args = unsafe { &mut *args };
    assert!(args.struct_size >= xla::STREAM_GET_ARGS_SIZE);
    let stream = match args.ctx as usize {
        CTX => FAKE_STREAM,
        NULL_STREAM_CTX => 0,
        other => {
            assert_eq!(other, ERROR_CTX);
            let mut e = xla::ErrorCreateArgs {
                struct_size: xla::ERROR_CREATE_ARGS_SIZE,
                extension_start: ptr::null_mut(),
                message: c"no stream on this platform".as_ptr(),
                errc: xla::ERROR_INTERNAL,
            };
            return unsafe { error_create(&mut e) };
        }
    };
    args.stream = stream as *mut c_void;
    ptr::null_mut()
}

fn api(with_stream: bool) -> xla::Api {
    xla::Api {
        struct_size: if with_stream {
            xla::API_POOL_SIZE
        } else {
            // A table that ends before Stream_Get (an older, smaller layout).
            xla::API_STREAM_SIZE - 8
        },
        extension_start: ptr::null_mut(),
        api_version: xla::ApiVersion {
            struct_size: xla::API_VERSION_SIZE,
            extension_start: ptr::null_mut(),
            major_version: 0,
            minor_version: 5,
        },
        internal_api: ptr::null(),
        error_create: Some(error_create),
        error_get_message: ptr::null(),
        error_destroy: Some(error_destroy),
        handler_register: ptr::null(),
        stream_get: with_stream.then_some(stream_get as xla::StreamGet),
        type_id_register: ptr::null(),
        execution_context_get: ptr::null(),
        state_set: ptr::null(),
        state_get: ptr::null(),
        device_memory_allocate: ptr::null(),
        device_memory_free: ptr::null(),
        thread_pool_schedule: None,
    }
}

// ------------------------------------------------------------------ hand-built call frames

/// One operand: element type, shape, address (host memory standing for device memory).
#[derive(Clone)]
struct Operand {
    dtype: i32,
    dims: Vec<i64>,
    data: *mut c_void,
}

/// Everything a call frame points to, kept alive with it (boxed where the frame holds an
/// address into a vector that is still growing).
#[allow(clippy::vec_box)]
struct Frame {
    _dims: Vec<Vec<i64>>,
    _bufs: Vec<Box<xla::Buffer>>,
    _types: [Vec<i32>; 2],
    _ptrs: [Vec<*mut c_void>; 2],
    _names: Vec<Box<xla::ByteSpan>>,
    _name_ptrs: Vec<*const xla::ByteSpan>,
    _values: Vec<Box<f64>>,
    _scalars: Vec<Box<xla::Scalar>>,
    _algorithm: Box<xla::ByteSpan>,
    _attr_types: Vec<i32>,
    _attr_ptrs: Vec<*const c_void>,
    api: Box<xla::Api>,
    frame: Box<xla::CallFrame>,
}

impl Frame {
    fn new(
        algorithm: &'static str,
        hyper: &[(&'static str, f64)],
        ins: &[Operand],
        outs: &[Operand],
    ) -> Frame {
        let mut dims = Vec::new();
        let mut bufs = Vec::new();
        let mut types = [Vec::new(), Vec::new()];
        let mut ptrs = [Vec::new(), Vec::new()];
        for (side, ops) in [ins, outs].into_iter().enumerate() {
            for op in ops {
                dims.push(op.dims.clone());
                let d = dims.last().unwrap();
                let mut b = Box::new(xla::Buffer {
                    struct_size: xla::BUFFER_SIZE,
                    extension_start: ptr::null_mut(),
                    dtype: op.dtype,
                    data: op.data,
                    rank: d.len() as i64,
                    dims: d.as_ptr(),
                });
                types[side].push(xla::BUFFER);
                ptrs[side].push((&mut *b as *mut xla::Buffer).cast());
                bufs.push(b);
            }
        }
        // Attributes: `algorithm`, then the scalars (XLA sorts them by name; the handler
        // does not rely on it).
        let algo = Box::new(xla::ByteSpan {
            ptr: algorithm.as_ptr().cast(),
            len: algorithm.len(),
        });
        let mut names = vec![Box::new(xla::ByteSpan {
            ptr: c"algorithm".as_ptr(),
            len: 9,
        })];
        let mut attr_types = vec![xla::ATTR_STRING];
        let mut attr_ptrs: Vec<*const c_void> = vec![(&*algo as *const xla::ByteSpan).cast()];
        let mut values = Vec::new();
        let mut scalars = Vec::new();
        for &(name, v) in hyper {
            names.push(Box::new(xla::ByteSpan {
                ptr: name.as_ptr().cast(),
                len: name.len(),
            }));
            values.push(Box::new(v));
            let s = Box::new(xla::Scalar {
                dtype: dtype::F64,
                value: (&**values.last().unwrap() as *const f64).cast(),
            });
            attr_types.push(xla::ATTR_SCALAR);
            attr_ptrs.push((&*s as *const xla::Scalar).cast());
            scalars.push(s);
        }
        let name_ptrs: Vec<*const xla::ByteSpan> =
            names.iter().map(|n| &**n as *const xla::ByteSpan).collect();
        let api = Box::new(api(true));
        let args = |side: usize| xla::Args {
            struct_size: xla::ARGS_SIZE,
            extension_start: ptr::null_mut(),
            size: types[side].len() as i64,
            types: types[side].as_ptr(),
            args: ptrs[side].as_ptr(),
        };
        let frame = Box::new(xla::CallFrame {
            struct_size: xla::CALL_FRAME_SIZE,
            extension_start: ptr::null_mut(),
            api: &*api,
            ctx: CTX as *mut c_void,
            stage: xla::STAGE_EXECUTE,
            args: args(0),
            rets: args(1),
            attrs: xla::Attrs {
                struct_size: xla::ATTRS_SIZE,
                extension_start: ptr::null_mut(),
                size: attr_types.len() as i64,
                types: attr_types.as_ptr(),
                names: name_ptrs.as_ptr(),
                attrs: attr_ptrs.as_ptr(),
            },
        });
        Frame {
            _dims: dims,
            _bufs: bufs,
            _types: types,
            _ptrs: ptrs,
            _names: names,
            _name_ptrs: name_ptrs,
            _values: values,
            _scalars: scalars,
            _algorithm: algo,
            _attr_types: attr_types,
            _attr_ptrs: attr_ptrs,
            api,
            frame,
        }
    }

    /// Calls the handler: `Ok` for NULL, else the error's code and message.
    fn call(&mut self) -> Result<(), (i32, String)> {
        let e = unsafe { vsgd_jax_xla_step_cuda(&mut *self.frame) };
        if e.is_null() {
            return Ok(());
        }
        let e = unsafe { Box::from_raw(e.cast::<FakeError>()) };
        Err((e.code, e.message))
    }
}

/// Memory standing for device buffers: 64-bit words, so every element type is aligned.
struct Mem(Vec<Vec<u64>>);

impl Mem {
    fn new() -> Mem {
        Mem(Vec::new())
    }

    fn f32s(&mut self, dims: &[i64], values: impl Fn(usize) -> f32) -> Operand {
        let n: usize = dims.iter().product::<i64>() as usize;
        let mut v = vec![0u64; n.div_ceil(2).max(1)];
        let p = v.as_mut_ptr().cast::<f32>();
        for i in 0..n {
            unsafe { *p.add(i) = values(i) };
        }
        self.0.push(v);
        Operand {
            dtype: dtype::F32,
            dims: dims.to_vec(),
            data: p.cast(),
        }
    }

    fn f64s(&mut self, dims: &[i64], value: f64) -> Operand {
        let n: usize = dims.iter().product::<i64>() as usize;
        let mut v = vec![value.to_bits(); n.max(1)];
        let p = v.as_mut_ptr();
        self.0.push(v);
        Operand {
            dtype: dtype::F64,
            dims: dims.to_vec(),
            data: p.cast(),
        }
    }

    fn scalar(&mut self, dt: i32, dims: &[i64], bits: &[u64]) -> Operand {
        let mut v = vec![0u64; bits.len().max(1)];
        let p = v.as_mut_ptr().cast::<u8>();
        let size = match dt {
            dtype::PRED => 1,
            dtype::S32 | dtype::F32 => 4,
            _ => 8,
        };
        for (i, &b) in bits.iter().enumerate() {
            let bytes = b.to_le_bytes();
            unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(i * size), size) };
        }
        self.0.push(v);
        Operand {
            dtype: dt,
            dims: dims.to_vec(),
            data: p.cast(),
        }
    }
}

/// The operands of a step of `n` f32 arrays of shape `dims` with `k` state arrays, aliased
/// (outputs are the inputs), with scalars `lr_scale = 1`, `count`, `finite`.
fn f32_step(
    mem: &mut Mem,
    n: usize,
    k: usize,
    dims: &[i64],
    count: i64,
    finite: bool,
) -> (Vec<Operand>, Vec<Operand>) {
    let mut ins = vec![
        mem.scalar(dtype::F32, &[], &[u64::from(1.0f32.to_bits())]),
        mem.scalar(dtype::S32, &[], &[count as u32 as u64]),
        mem.scalar(dtype::PRED, &[], &[u64::from(finite)]),
    ];
    let params: Vec<Operand> = (0..n).map(|_| mem.f32s(dims, |i| i as f32)).collect();
    let grads: Vec<Operand> = (0..n).map(|_| mem.f32s(dims, |i| 0.5 - i as f32)).collect();
    let states: Vec<Vec<Operand>> = (0..k)
        .map(|_| (0..n).map(|_| mem.f32s(dims, |_| 0.0)).collect())
        .collect();
    ins.extend(params.iter().cloned());
    ins.extend(grads);
    let mut outs = params;
    for s in states {
        ins.extend(s.iter().cloned());
        outs.extend(s);
    }
    (ins, outs)
}

fn expect_err(r: Result<(), (i32, String)>, code: i32, needle: &str) {
    match r {
        Err((c, m)) => {
            assert!(m.contains(needle), "error {m:?} should mention {needle:?}");
            assert_eq!(c, code, "error code of {m:?}");
            assert!(m.starts_with("vsgd_jax: "), "{m:?}");
        }
        Ok(()) => panic!("expected an error mentioning {needle:?}, the call succeeded"),
    }
}

// ------------------------------------------------------------------ with any driver

#[test]
fn the_metadata_handshake_answers_the_api_version() {
    let mut meta = xla::Metadata {
        struct_size: xla::METADATA_SIZE,
        api_version: xla::ApiVersion {
            struct_size: 0,
            extension_start: ptr::null_mut(),
            major_version: -1,
            minor_version: -1,
        },
        traits: 77,
    };
    let mut ext = xla::MetadataExtension {
        extension_base: xla::ExtensionBase {
            struct_size: xla::METADATA_EXTENSION_SIZE,
            kind: xla::EXTENSION_METADATA,
            next: ptr::null_mut(),
        },
        metadata: &mut meta,
    };
    // As at registration: a metadata extension and no context.
    let mut f = Frame::new("vsgd", &[], &[], &[]);
    f.frame.extension_start = (&mut ext as *mut xla::MetadataExtension).cast();
    f.frame.ctx = ptr::null_mut();
    assert_eq!(f.call(), Ok(()));
    assert_eq!(
        (
            meta.api_version.major_version,
            meta.api_version.minor_version
        ),
        xla::API_VERSION
    );
    assert_eq!(meta.api_version.struct_size, xla::API_VERSION_SIZE);
    // No traits: never captured into a command buffer (it reads scalars back).
    assert_eq!(meta.traits, 0);
    // A NULL frame is ignored, never dereferenced.
    assert!(unsafe { vsgd_jax_xla_step_cuda(ptr::null_mut()) }.is_null());
}

#[test]
fn bad_operands_are_refused_before_the_stream_or_the_driver() {
    let mut mem = Mem::new();
    let (ins, outs) = f32_step(&mut mem, 2, 3, &[4], 0, true);
    // Every refusal below comes with a stream-less API table: the operands are checked first.
    let check = |ins: &[Operand], outs: &[Operand], algorithm, needle: &str| {
        let mut f = Frame::new(algorithm, &[], ins, outs);
        *f.api = api(false);
        expect_err(f.call(), xla::ERROR_INVALID_ARGUMENT, needle);
    };
    // Parameters of an integer type.
    let mut bad = ins.clone();
    bad[3].dtype = dtype::S32;
    check(
        &bad,
        &outs,
        "vsgd",
        "differs from the gradient in element type or shape",
    );
    let mut bad = ins.clone();
    bad[5].dtype = dtype::S32; // the first gradient
    check(&bad, &outs, "vsgd", "arrays must be f32 or f64");
    // A state array of another shape.
    let mut bad = ins.clone();
    bad[9].dims = vec![2, 2]; // array 0's bg
    check(&bad, &outs, "vsgd", "bg differs from the gradient");
    // An output of another shape.
    let mut bad_out = outs.clone();
    bad_out[1].dims = vec![5];
    check(&ins, &bad_out, "vsgd", "differs from the gradient");
    // Operand counts that are not VSGD's (3 states) but Adam's (2).
    check(
        &ins,
        &outs,
        "adam",
        "adam takes 3 + 4 inputs and 3 outputs per array",
    );
    check(&ins[..ins.len() - 1], &outs, "vsgd", "takes 3 + 5 inputs");
    // Scalars of the wrong types.
    let mut bad = ins.clone();
    bad[0].dtype = dtype::S32;
    check(&bad, &outs, "vsgd", "lr_scale must be f32 or f64");
    let mut bad = ins.clone();
    bad[1].dtype = dtype::F32;
    check(&bad, &outs, "vsgd", "count must be an integer array");
    let mut bad = ins.clone();
    bad[2].dtype = dtype::F32;
    check(&bad, &outs, "vsgd", "finite must be a boolean array");
    // A NULL device address, an unknown algorithm, an unknown hyperparameter.
    let mut bad = ins.clone();
    bad[4].data = ptr::null_mut();
    check(&bad, &outs, "vsgd", "param: NULL data");
    check(&ins, &outs, "lion", "unknown algorithm 'lion'");
    let mut f = Frame::new("vsgd", &[("beta1", 0.9)], &ins, &outs);
    *f.api = api(false);
    expect_err(
        f.call(),
        xla::ERROR_INVALID_ARGUMENT,
        "'beta1' is not a hyperparameter of",
    );
    // An output that overlaps an input it does not alias.
    let mut bad_out = outs.clone();
    bad_out[0].data = ins[5].data;
    check(
        &ins,
        &bad_out,
        "vsgd",
        "overlaps an input it does not alias",
    );
}

#[test]
fn mixed_precision_is_refused_before_the_stream_or_the_driver() {
    // Adam over 2 arrays: inputs 3 scalars, 2 params, 2 grads, 2 m, 2 v; outputs 2 params,
    // 2 m, 2 v. The parameters and gradients relabelled as 16-bit (the buffers are larger
    // than needed), the state f32: the CPU handler would step it (`kernels::mixed`); the GPU
    // has no mixed-precision kernel, and says so instead of reading the arrays as f64.
    for (half, name) in [(dtype::BF16, "bf16"), (dtype::F16, "f16")] {
        let mut mem = Mem::new();
        let (mut ins, mut outs) = f32_step(&mut mem, 2, 2, &[4], 0, true);
        for op in ins[3..7].iter_mut().chain(&mut outs[..2]) {
            op.dtype = half;
        }
        let needle = format!(
            "the GPU handler steps f32 and f64 arrays only: {name} parameters with f32 state \
             (mixed precision) have no CUDA kernel yet"
        );
        for with_stream in [false, true] {
            let mut f = Frame::new("adam", &[], &ins, &outs);
            *f.api = api(with_stream);
            expect_err(f.call(), xla::ERROR_INVALID_ARGUMENT, &needle);
        }
        // 16-bit state is refused by the shared decoder, naming the array.
        let mut bad = ins.clone();
        bad[7].dtype = half; // array 0's m
        let mut f = Frame::new("adam", &[], &bad, &outs);
        *f.api = api(false);
        expect_err(
            f.call(),
            xla::ERROR_INVALID_ARGUMENT,
            &format!("array 0: state m is {name}; the state of {name} parameters must be f32"),
        );
    }
}

#[test]
fn a_missing_stream_is_refused_before_the_driver() {
    let mut mem = Mem::new();
    let (ins, outs) = f32_step(&mut mem, 1, 2, &[3], 0, true);
    let pre = xla::ERROR_FAILED_PRECONDITION;
    // An API table without XLA_FFI_Stream_Get.
    let mut f = Frame::new("adam", &[], &ins, &outs);
    *f.api = api(false);
    expect_err(
        f.call(),
        pre,
        "no CUDA stream: XLA's API table has no XLA_FFI_Stream_Get",
    );
    // No execution context to ask for it.
    let mut f = Frame::new("adam", &[], &ins, &outs);
    f.frame.ctx = ptr::null_mut();
    expect_err(f.call(), pre, "the call frame has no execution context");
    // XLA says there is none (as on a platform without streams): its error is destroyed.
    let before = DESTROYED.load(Ordering::SeqCst);
    let mut f = Frame::new("adam", &[], &ins, &outs);
    f.frame.ctx = ERROR_CTX as *mut c_void;
    expect_err(f.call(), pre, "XLA_FFI_Stream_Get failed");
    assert!(
        DESTROYED.load(Ordering::SeqCst) > before,
        "XLA's error was not destroyed"
    );
    // A NULL stream.
    let mut f = Frame::new("adam", &[], &ins, &outs);
    f.frame.ctx = NULL_STREAM_CTX as *mut c_void;
    expect_err(f.call(), pre, "XLA_FFI_Stream_Get gave NULL");
}

// ------------------------------------------------------------------ by driver

/// The fake driver's exports (tests/fake_cuda.c), through the library cudarc loaded.
fn fake_log() -> String {
    type LogFn = unsafe extern "C" fn() -> *const c_char;
    let lib = unsafe { vsgd::cuda::cudarc::driver::sys::culib() };
    let log = unsafe { lib.get::<LogFn>(b"fake_cuda_log") }.expect("not the fake driver");
    unsafe { CStr::from_ptr(log()) }
        .to_string_lossy()
        .into_owned()
}

fn fake_reset() {
    type ResetFn = unsafe extern "C" fn();
    let lib = unsafe { vsgd::cuda::cudarc::driver::sys::culib() };
    let reset = unsafe { lib.get::<ResetFn>(b"fake_cuda_reset") }.expect("not the fake driver");
    unsafe { reset() };
}

#[test]
fn without_a_usable_driver_the_error_says_why() {
    let mut mem = Mem::new();
    let (ins, outs) = f32_step(&mut mem, 2, 3, &[4], 0, true);
    let mut f = Frame::new("vsgd", &[("lr", 0.1)], &ins, &outs);
    let (code, needle) = match std::env::var("VSGD_CUDA_STUB").ok().as_deref() {
        Some("none") => (
            xla::ERROR_FAILED_PRECONDITION,
            "no CUDA device: no CUDA driver library",
        ),
        Some("cuinit") => (
            xla::ERROR_FAILED_PRECONDITION,
            "no CUDA device: cuInit failed: CUDA_ERROR_NO_DEVICE",
        ),
        // The stub has every function the core checks but not cuStreamGetCtx.
        Some("broken") => (xla::ERROR_FAILED_PRECONDITION, "lacks cuStreamGetCtx"),
        Some("broken-ctx") => (
            xla::ERROR_INTERNAL,
            "cuStreamGetCtx failed: CUDA_ERROR_UNKNOWN",
        ),
        Some("fake") => return, // the fake_driver_* tests
        Some(other) => panic!("unknown VSGD_CUDA_STUB={other}"),
        None => {
            if vsgd::cuda::init().is_ok() {
                eprintln!("SKIPPED: a usable GPU is present (scripts/gpu-check.sh covers it)");
                return;
            }
            (xla::ERROR_FAILED_PRECONDITION, "no CUDA device: ")
        }
    };
    expect_err(f.call(), code, needle);
    // Asked again (the driver is loaded once per process): the same answer.
    expect_err(f.call(), code, needle);
}

fn fake() -> bool {
    std::env::var("VSGD_CUDA_STUB").as_deref() == Ok("fake")
}

fn current_context() -> usize {
    let mut c = ptr::null_mut();
    let r = unsafe { vsgd::cuda::cudarc::driver::sys::cuCtxGetCurrent(&mut c) };
    assert_eq!(r, vsgd::cuda::cudarc::driver::sys::CUresult::CUDA_SUCCESS);
    c as usize
}

#[test]
fn fake_driver_one_fused_launch_on_xlas_stream() {
    if !fake() {
        return;
    }
    let mut mem = Mem::new();
    let (ins, outs) = f32_step(&mut mem, 3, 3, &[2, 3], 4, true);
    let before = ins[3].data;
    let mut f = Frame::new("vsgd", &[("lr", 0.1)], &ins, &outs);
    fake_reset();
    assert_eq!(current_context(), 0);
    assert_eq!(f.call(), Ok(()));
    // The three scalars read back on XLA's stream, then one launch of the fused VSGD kernel
    // for the three arrays (no scan: the verdict is JAX's), on that stream.
    assert_eq!(
        fake_log(),
        "dtoh@5151 dtoh@5151 dtoh@5151 sync@5151 launch:vsgd_mt_vsgd_f32@5151"
    );
    // The thread's context is restored (none was current).
    assert_eq!(current_context(), 0);
    assert_eq!(ins[3].data, before);

    // f64 Adam: its own kernel.
    let mut mem = Mem::new();
    let mut ins = vec![
        mem.scalar(dtype::F64, &[], &[0.5f64.to_bits()]),
        mem.scalar(dtype::S64, &[], &[0]),
        mem.scalar(dtype::PRED, &[], &[1]),
    ];
    let arrays: Vec<Operand> = (0..4).map(|_| mem.f64s(&[5], 0.25)).collect();
    ins.extend(arrays.iter().cloned());
    let outs = vec![arrays[0].clone(), arrays[2].clone(), arrays[3].clone()];
    let mut f = Frame::new("adam", &[], &ins, &outs);
    fake_reset();
    assert_eq!(f.call(), Ok(()));
    assert!(
        fake_log().ends_with("sync@5151 launch:vsgd_mt_adam_f64@5151"),
        "{}",
        fake_log()
    );
}

#[test]
fn fake_driver_a_non_finite_verdict_launches_nothing() {
    if !fake() {
        return;
    }
    let mut mem = Mem::new();
    let (ins, outs) = f32_step(&mut mem, 2, 2, &[3], 7, false);
    // Separate output buffers (XLA did not alias them): they get the inputs, and nothing else.
    let mut sep: Vec<Operand> = outs.iter().map(|o| mem.f32s(&o.dims, |_| -9.0)).collect();
    let mut f = Frame::new("adam", &[], &ins, &sep);
    fake_reset();
    assert_eq!(f.call(), Ok(()));
    assert_eq!(
        fake_log(),
        "dtoh@5151 dtoh@5151 dtoh@5151 sync@5151 dtod@5151 dtod@5151 dtod@5151 dtod@5151 \
         dtod@5151 dtod@5151"
    );
    for (o, i) in sep.iter_mut().zip(outs.iter()) {
        let o = unsafe { core::slice::from_raw_parts(o.data.cast::<f32>(), 3) };
        let i = unsafe { core::slice::from_raw_parts(i.data.cast::<f32>(), 3) };
        assert_eq!(o, i);
    }
}

#[test]
fn fake_driver_scalars_are_read_from_the_device() {
    if !fake() {
        return;
    }
    // A count that is no step count, and a learning rate scale that is NaN: read back from
    // "device" memory and refused before anything is launched.
    let mut mem = Mem::new();
    let (ins, outs) = f32_step(&mut mem, 1, 1, &[2], -3, true);
    let mut f = Frame::new("sgdm", &[], &ins, &outs);
    fake_reset();
    expect_err(
        f.call(),
        xla::ERROR_INVALID_ARGUMENT,
        "count -3 is not a step count",
    );
    assert!(!fake_log().contains("launch"), "{}", fake_log());
    let (mut ins, outs) = f32_step(&mut mem, 1, 1, &[2], 0, true);
    ins[0] = mem.scalar(dtype::F32, &[], &[u64::from(f32::NAN.to_bits())]);
    let mut f = Frame::new("sgdm", &[], &ins, &outs);
    fake_reset();
    expect_err(f.call(), xla::ERROR_INVALID_ARGUMENT, "lr = NaN");
    assert!(!fake_log().contains("launch"), "{}", fake_log());
    assert_eq!(current_context(), 0);
}

#[test]
fn fake_driver_vmap_rows_and_device_tables() {
    if !fake() {
        return;
    }
    // Under vmap: 4 rows × 13 arrays, each row with its own count and verdict. With rows 0,
    // 2 and 3 finite: 39 tensors, which fit in the launch's arguments (48 do): one launch.
    // With all 4 rows: 52 tensors, so the tables go to stream-ordered device memory (alloc,
    // upload, launch, free, all on XLA's stream).
    for (verdicts, log) in [
        (
            [1u64, 0, 1, 1],
            "dtoh@5151 dtoh@5151 dtoh@5151 sync@5151 launch:vsgd_mt_constant_vsgd_f32@5151",
        ),
        (
            [1, 1, 1, 1],
            "dtoh@5151 dtoh@5151 dtoh@5151 sync@5151 alloc@5151 htod@5151 \
             launch:vsgd_mt_constant_vsgd_f32@5151 free@5151",
        ),
    ] {
        let mut mem = Mem::new();
        let mut ins = vec![
            mem.scalar(dtype::F32, &[4], &[u64::from(1.0f32.to_bits()); 4]),
            mem.scalar(dtype::S32, &[4], &[0, 1, 2, 3]),
            mem.scalar(dtype::PRED, &[4], &verdicts),
        ];
        let n = 13;
        let arrays: Vec<Operand> = (0..4 * n)
            .map(|_| mem.f32s(&[4, 6], |i| i as f32))
            .collect();
        ins.extend(arrays.iter().cloned());
        let outs: Vec<Operand> = arrays[..n]
            .iter()
            .chain(&arrays[2 * n..])
            .cloned()
            .collect();
        let mut f = Frame::new("constant_vsgd", &[], &ins, &outs);
        fake_reset();
        assert_eq!(f.call(), Ok(()));
        assert_eq!(fake_log(), log);
    }
}
