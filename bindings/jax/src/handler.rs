//! The XLA FFI handler `vsgd_jax_xla_step`: one optimizer step of any number of parameter
//! arrays of one element type (or of shards of them, or of a batch of them under `vmap`)
//! inside a compiled XLA program.
//!
//! Call frame (built by `vsgd_jax/_ops.py`):
//! - attributes (compile-time): `algorithm` (string) and the algorithm's hyperparameters by
//!   name as f64 scalars (`lr` is the base learning rate; booleans are 0 or 1);
//! - inputs: `lr_scale` (f32/f64), `count` (s32/s64: updates already applied), `finite`
//!   (pred: the gradient verdict computed in JAX over the whole, possibly sharded, gradient),
//!   then for `n` arrays: the `n` parameters, the `n` gradients, and for each state array of
//!   the algorithm (`Algorithm::state_names` order) its `n` arrays; each array's parameter,
//!   gradient and state have one shape, all arrays one element type: f32 or f64, or bf16 or
//!   f16 parameters and gradients with f32 state (mixed precision);
//! - outputs: the `n` parameters, then the state arrays in the same order, normally aliased
//!   to their inputs (updated in place); when XLA gave separate buffers, the inputs are
//!   copied to them first.
//!
//! The step is `vsgd::kernels::step` with learning rate `lr × lr_scale` and step number
//! `count + 1` (for bf16/f16 parameters `vsgd::kernels::mixed::step` with f32 state: the
//! update in f32, the parameter rounded once to nearest even), run only when `finite` holds;
//! otherwise the outputs equal the inputs. The
//! arrays are laid end to end and cut into parts that the threads of XLA's intra-op pool
//! share ([`crate::parallel`]).
//! The three scalars either have one element or, under `vmap` (`vmap_method="broadcast_all"`),
//! `B` elements each, and then every array has `B` leading rows of equal size, stepped row by
//! row with their own scalars.

use core::ffi::{c_char, c_void, CStr};
use core::ptr;

use vsgd::kernels::{self, mixed, NonFinitePolicy, StepOutcome, Verdict};
use vsgd::{bf16, f16, Algorithm, Config, Element};

use crate::xla::{self, dtype};

/// The handler XLA calls (registered by the Python package with `jax.ffi.register_ffi_target`).
///
/// At registration XLA calls it once with a metadata extension: it writes the API version it
/// was written for ([`xla::API_VERSION`]) and returns. At execution it runs the step and
/// returns NULL, or an `XLA_FFI_Error` describing what was wrong with the call. A panic is
/// caught and reported the same way; nothing is touched when an argument is refused.
///
/// # Safety
/// `frame` must be a call frame from XLA (or NULL, which is ignored).
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_xla_step(frame: *mut xla::CallFrame) -> *mut xla::Error {
    // SAFETY: forwarded contract.
    unsafe { entry(frame, xla::API_VERSION, step) }
}

/// The step's body, once the frame is known to be an execution frame of the right size.
unsafe fn step(frame: &xla::CallFrame) -> Result<(), Failure> {
    let call = unsafe { Call::decode(frame)? };
    match call.elem {
        dtype::F32 => unsafe { call.run::<f32, f32>(plain::<f32>) },
        dtype::F64 => unsafe { call.run::<f64, f64>(plain::<f64>) },
        dtype::BF16 => unsafe { call.run::<bf16, f32>(mixed_f32_state::<bf16>) },
        dtype::F16 => unsafe { call.run::<f16, f32>(mixed_f32_state::<f16>) },
        // `Call::decode` admits only the four types above.
        d => Err(invalid(format!(
            "unsupported element type {}",
            dtype_name(d)
        ))),
    }
}

/// The core's step of one piece of a tensor, with parameters and gradients stored as `P` and
/// state as `S`; the verdict is JAX's (finite: the rows that are not are never stepped).
type Kernel<P, S> =
    fn(&Config, u64, f64, &mut [P], &[P], &mut [&mut [S]]) -> Result<StepOutcome, vsgd::Error>;

/// f32 or f64 throughout: `kernels::step_with_verdict`.
fn plain<T: Element>(
    config: &Config,
    t: u64,
    lr: f64,
    param: &mut [T],
    grad: &[T],
    state: &mut [&mut [T]],
) -> Result<StepOutcome, vsgd::Error> {
    kernels::step_with_verdict(
        config,
        t,
        lr,
        param,
        grad,
        state,
        NonFinitePolicy::Skip,
        Verdict::Finite,
    )
}

/// bf16 or f16 parameters and gradients with f32 state: `kernels::mixed::step` (the update in
/// f32, the parameter rounded once, to nearest even).
fn mixed_f32_state<P: mixed::Storage>(
    config: &Config,
    t: u64,
    lr: f64,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [f32]],
) -> Result<StepOutcome, vsgd::Error> {
    mixed::step(
        config,
        t,
        lr,
        param,
        grad,
        state,
        &mixed::F32State,
        NonFinitePolicy::Skip,
        Verdict::Finite,
    )
}

/// The name of an element type the step takes.
pub(crate) fn dtype_name(d: i32) -> String {
    match d {
        dtype::F32 => "f32".into(),
        dtype::F64 => "f64".into(),
        dtype::BF16 => "bf16".into(),
        dtype::F16 => "f16".into(),
        dtype::PRED => "pred".into(),
        dtype::S32 => "s32".into(),
        dtype::S64 => "s64".into(),
        dtype::U32 => "u32".into(),
        dtype::U64 => "u64".into(),
        d => format!("XLA type {d}"),
    }
}

/// The state's element type for parameters of element type `elem`: f32 for the 16-bit
/// types (mixed precision), else the parameters' own.
pub(crate) fn state_dtype_of(elem: i32) -> i32 {
    match elem {
        dtype::BF16 | dtype::F16 => dtype::F32,
        d => d,
    }
}

/// A handler that declares an FFI API version no XLA implements (major 9999), for the test
/// that a bad handshake is refused at registration and leaves JAX's backend working. It
/// never runs a step.
///
/// # Safety
/// As [`vsgd_jax_xla_step`].
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_xla_bad_version(frame: *mut xla::CallFrame) -> *mut xla::Error {
    // SAFETY: forwarded contract.
    unsafe { entry(frame, (9999, 0), refuse) }
}

unsafe fn refuse(_: &xla::CallFrame) -> Result<(), Failure> {
    Err(invalid("this handler only answers the metadata query"))
}

/// What a handler does with an execution frame.
pub(crate) type Body = unsafe fn(&xla::CallFrame) -> Result<(), Failure>;

/// Every handler's entry: answers the metadata query with `version`, runs `body` on an
/// execution frame, turns a failure or a panic into an `XLA_FFI_Error`.
pub(crate) unsafe fn entry(
    frame: *mut xla::CallFrame,
    version: (i32, i32),
    body: Body,
) -> *mut xla::Error {
    if frame.is_null() {
        return ptr::null_mut();
    }
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: XLA passes a valid call frame; every field is read only after its size is
        // checked.
        unsafe { dispatch(frame, version, body) }
    });
    match outcome {
        Ok(Ok(())) => ptr::null_mut(),
        Ok(Err((code, msg))) => unsafe { make_error(frame, code, &msg) },
        Err(_) => unsafe { make_error(frame, xla::ERROR_INTERNAL, "vsgd_jax: panic in a handler") },
    }
}

/// A refusal: an `XLA_FFI_Error_Code` and the message.
pub(crate) type Failure = (i32, String);

pub(crate) fn invalid(msg: impl Into<String>) -> Failure {
    (
        xla::ERROR_INVALID_ARGUMENT,
        format!("vsgd_jax: {}", msg.into()),
    )
}

/// Creates an `XLA_FFI_Error` with `msg`, or returns NULL when the frame has no usable API
/// table (then XLA is not running it, and nobody could read the error anyway).
unsafe fn make_error(frame: *mut xla::CallFrame, code: i32, msg: &str) -> *mut xla::Error {
    let size = unsafe { ptr::read(frame.cast::<usize>()) };
    if size < xla::CALL_FRAME_SIZE {
        return ptr::null_mut();
    }
    let api = unsafe { (*frame).api };
    if api.is_null() || unsafe { (*api).struct_size } < xla::API_HEAD_SIZE {
        return ptr::null_mut();
    }
    let Some(create) = (unsafe { (*api).error_create }) else {
        return ptr::null_mut();
    };
    let text: Vec<u8> = msg.bytes().filter(|&b| b != 0).chain([0]).collect();
    let mut args = xla::ErrorCreateArgs {
        struct_size: xla::ERROR_CREATE_ARGS_SIZE,
        extension_start: ptr::null_mut(),
        message: text.as_ptr().cast::<c_char>(),
        errc: code,
    };
    // SAFETY: `create` is XLA's `XLA_FFI_Error_Create`; it copies the message.
    unsafe { create(&mut args) }
}

unsafe fn dispatch(
    frame: *mut xla::CallFrame,
    version: (i32, i32),
    body: Body,
) -> Result<(), Failure> {
    let size = unsafe { ptr::read(frame.cast::<usize>()) };
    if size < 2 * core::mem::size_of::<usize>() {
        return Err(invalid(format!("call frame of {size} bytes is too small")));
    }
    // The metadata query: XLA walks no further than this at registration.
    let mut ext = unsafe { (*frame).extension_start };
    let mut hops = 0;
    while !ext.is_null() && hops < 64 {
        let base = unsafe { &*ext };
        if base.kind == xla::EXTENSION_METADATA {
            if base.struct_size < xla::METADATA_EXTENSION_SIZE {
                return Err(invalid("metadata extension too small"));
            }
            let meta = unsafe { (*ext.cast::<xla::MetadataExtension>()).metadata };
            if meta.is_null() || unsafe { (*meta).struct_size } < xla::METADATA_SIZE {
                return Err(invalid("metadata struct missing or too small"));
            }
            let meta = unsafe { &mut *meta };
            meta.api_version = xla::ApiVersion {
                struct_size: xla::API_VERSION_SIZE,
                extension_start: ptr::null_mut(),
                major_version: version.0,
                minor_version: version.1,
            };
            meta.traits = 0;
            return Ok(());
        }
        ext = base.next;
        hops += 1;
    }
    if size < xla::CALL_FRAME_SIZE {
        return Err(invalid(format!(
            "call frame of {size} bytes, expected at least {}",
            xla::CALL_FRAME_SIZE
        )));
    }
    let frame = unsafe { &*frame };
    if frame.stage != xla::STAGE_EXECUTE {
        return Ok(());
    }
    unsafe { body(frame) }
}

/// A decoded buffer: element type, element count, data, and its shape for comparisons.
#[derive(Clone, Copy)]
pub(crate) struct Buf {
    pub(crate) dtype: i32,
    pub(crate) len: usize,
    pub(crate) data: *mut c_void,
    rank: usize,
    dims: *const i64,
}

impl Buf {
    /// An unused slot (no elements).
    const EMPTY: Buf = Buf {
        dtype: 0,
        len: 0,
        data: ptr::null_mut(),
        rank: 0,
        dims: ptr::null(),
    };

    pub(crate) unsafe fn decode(p: *mut c_void, what: &str) -> Result<Buf, Failure> {
        if p.is_null() {
            return Err(invalid(format!("{what}: NULL buffer")));
        }
        let b = unsafe { &*p.cast::<xla::Buffer>() };
        if b.struct_size < xla::BUFFER_SIZE {
            return Err(invalid(format!("{what}: buffer struct too small")));
        }
        let rank = usize::try_from(b.rank).map_err(|_| invalid(format!("{what}: bad rank")))?;
        if rank > 0 && b.dims.is_null() {
            return Err(invalid(format!("{what}: NULL dims")));
        }
        let mut len = 1usize;
        for k in 0..rank {
            let d = unsafe { *b.dims.add(k) };
            let d = usize::try_from(d).map_err(|_| invalid(format!("{what}: negative dim")))?;
            len = len
                .checked_mul(d)
                .ok_or_else(|| invalid(format!("{what}: too many elements")))?;
        }
        if len > 0 && b.data.is_null() {
            return Err(invalid(format!("{what}: NULL data")));
        }
        Ok(Buf {
            dtype: b.dtype,
            len,
            data: b.data,
            rank,
            dims: b.dims,
        })
    }

    fn same_shape(&self, other: &Buf) -> bool {
        self.rank == other.rank
            && (0..self.rank).all(|k| unsafe { *self.dims.add(k) == *other.dims.add(k) })
    }

    pub(crate) fn bytes(&self) -> core::ops::Range<usize> {
        let start = self.data as usize;
        start..start.saturating_add(self.len.saturating_mul(elem_size(self.dtype)))
    }

    /// Scalar `i` (or the only one, when there is one) as f64; `i128_at` and `bool_at` read
    /// integers and verdicts the same way.
    unsafe fn f64_at(&self, i: usize) -> f64 {
        let i = if self.len == 1 { 0 } else { i };
        match self.dtype {
            dtype::F32 => f64::from(unsafe { *self.data.cast::<f32>().add(i) }),
            _ => unsafe { *self.data.cast::<f64>().add(i) },
        }
    }

    unsafe fn i128_at(&self, i: usize) -> i128 {
        let i = if self.len == 1 { 0 } else { i };
        unsafe {
            match self.dtype {
                dtype::S32 => i128::from(*self.data.cast::<i32>().add(i)),
                dtype::S64 => i128::from(*self.data.cast::<i64>().add(i)),
                dtype::U32 => i128::from(*self.data.cast::<u32>().add(i)),
                _ => i128::from(*self.data.cast::<u64>().add(i)),
            }
        }
    }

    unsafe fn bool_at(&self, i: usize) -> bool {
        let i = if self.len == 1 { 0 } else { i };
        unsafe {
            match self.dtype {
                dtype::PRED => *self.data.cast::<u8>().add(i) != 0,
                dtype::S32 => *self.data.cast::<i32>().add(i) != 0,
                _ => *self.data.cast::<i64>().add(i) != 0,
            }
        }
    }
}

pub(crate) fn elem_size(d: i32) -> usize {
    match d {
        dtype::PRED => 1,
        dtype::BF16 | dtype::F16 => 2,
        dtype::S32 | dtype::U32 | dtype::F32 => 4,
        _ => 8,
    }
}

/// The most state arrays an algorithm has.
const MAX_STATE: usize = 3;

/// One parameter array of the call: its gradient, and the parameter and state arrays as
/// inputs and as outputs (`[param, state...]`, the first `Call::arrays` entries used).
pub(crate) struct Leaf {
    pub(crate) grad: Buf,
    pub(crate) ins: [Buf; 1 + MAX_STATE],
    pub(crate) outs: [Buf; 1 + MAX_STATE],
}

/// A decoded, checked call of the step (the CPU's and the GPU's handler share it).
pub(crate) struct Call {
    pub(crate) config: Config,
    lr: f64,
    pub(crate) lr_scale: Buf,
    pub(crate) count: Buf,
    pub(crate) finite: Buf,
    /// Rows under `vmap` (1 otherwise).
    pub(crate) batch: usize,
    /// Element type of the parameters and gradients.
    pub(crate) elem: i32,
    /// Element type of the state ([`state_dtype_of`] `elem`).
    pub(crate) state_elem: i32,
    /// 1 + the algorithm's state arrays.
    pub(crate) arrays: usize,
    pub(crate) leaves: Vec<Leaf>,
    /// XLA's intra-op thread pool, when the frame offers it.
    pool: Option<crate::parallel::Pool>,
}

fn utf8<'a>(span: &'a xla::ByteSpan, what: &str) -> Result<&'a str, Failure> {
    if span.ptr.is_null() {
        return Err(invalid(format!("{what}: NULL string")));
    }
    let bytes = unsafe { core::slice::from_raw_parts(span.ptr.cast::<u8>(), span.len) };
    core::str::from_utf8(bytes).map_err(|_| invalid(format!("{what}: not UTF-8")))
}

impl Call {
    /// Inputs: `lr_scale, count, finite`, then for `n` arrays the `n` parameters, the `n`
    /// gradients and, per state array in order, its `n` arrays. Outputs: the `n` parameters,
    /// then per state array its `n` arrays.
    pub(crate) unsafe fn decode(frame: &xla::CallFrame) -> Result<Call, Failure> {
        let (config, lr) = unsafe { decode_attrs(&frame.attrs)? };
        let algorithm = config.algorithm();
        let k = algorithm.state_count();
        let args = unsafe { buffers(&frame.args, "inputs")? };
        let rets = unsafe { buffers(&frame.rets, "outputs")? };
        let n = args.len().saturating_sub(3) / (2 + k);
        if args.len() < 3 || args.len() != 3 + (2 + k) * n || rets.len() != (1 + k) * n {
            return Err(invalid(format!(
                "{algorithm} takes 3 + {} inputs and {} outputs per array, got {} and {}",
                2 + k,
                1 + k,
                args.len(),
                rets.len()
            )));
        }
        let arg = |i: usize, what: &str| unsafe { Buf::decode(args[i], what) };
        let lr_scale = arg(0, "lr_scale")?;
        let count = arg(1, "count")?;
        let finite = arg(2, "finite")?;
        if !matches!(lr_scale.dtype, dtype::F32 | dtype::F64) {
            return Err(invalid("lr_scale must be f32 or f64"));
        }
        if !matches!(
            count.dtype,
            dtype::S32 | dtype::S64 | dtype::U32 | dtype::U64
        ) {
            return Err(invalid("count must be an integer array"));
        }
        if !matches!(finite.dtype, dtype::PRED | dtype::S32 | dtype::S64) {
            return Err(invalid("finite must be a boolean array"));
        }
        let batch = lr_scale.len.max(count.len).max(finite.len);
        for (s, what) in [
            (&lr_scale, "lr_scale"),
            (&count, "count"),
            (&finite, "finite"),
        ] {
            if s.len != 1 && s.len != batch {
                return Err(invalid(format!(
                    "{what} has {} elements, expected 1 or {batch}",
                    s.len
                )));
            }
        }
        let names = algorithm.state_names();
        let mut leaves = Vec::with_capacity(n);
        let mut elem = dtype::F32;
        for j in 0..n {
            let grad = arg(3 + n + j, "grad")?;
            if j == 0 {
                elem = grad.dtype;
            }
            if grad.dtype != elem
                || !matches!(elem, dtype::F32 | dtype::F64 | dtype::BF16 | dtype::F16)
            {
                return Err(invalid(format!(
                    "arrays must be f32 or f64 (or bf16 or f16 with f32 state), one type per \
                     call; gradient {j} is {}{}",
                    dtype_name(grad.dtype),
                    if j > 0 && grad.dtype != elem {
                        format!(", gradient 0 {}", dtype_name(elem))
                    } else {
                        String::new()
                    }
                )));
            }
            if batch == 0 || grad.len % batch != 0 {
                return Err(invalid(format!(
                    "array {j}: {} elements do not split into {batch} rows",
                    grad.len
                )));
            }
            let mut leaf = Leaf {
                grad,
                ins: [Buf::EMPTY; 1 + MAX_STATE],
                outs: [Buf::EMPTY; 1 + MAX_STATE],
            };
            for a in 0..=k {
                let what = if a == 0 { "param" } else { names[a - 1] };
                let input = if a == 0 {
                    arg(3 + j, what)?
                } else {
                    arg(3 + (1 + a) * n + j, what)?
                };
                let output = unsafe { Buf::decode(rets[a * n + j], what)? };
                let want = if a == 0 { elem } else { state_dtype_of(elem) };
                for b in [&input, &output] {
                    if a > 0 && b.dtype != want && b.same_shape(&grad) && want != elem {
                        return Err(invalid(format!(
                            "array {j}: state {what} is {}; the state of {} parameters must \
                             be f32 (mixed precision)",
                            dtype_name(b.dtype),
                            dtype_name(elem)
                        )));
                    }
                    if b.dtype != want || !b.same_shape(&grad) {
                        return Err(invalid(format!(
                            "array {j}: {what} differs from the gradient in element type or shape"
                        )));
                    }
                }
                leaf.ins[a] = input;
                leaf.outs[a] = output;
            }
            leaves.push(leaf);
        }
        let call = Call {
            config,
            lr,
            lr_scale,
            count,
            finite,
            batch,
            elem,
            state_elem: state_dtype_of(elem),
            arrays: 1 + k,
            leaves,
            pool: unsafe { crate::parallel::Pool::of(frame) },
        };
        call.check_layout()?;
        Ok(call)
    }

    /// Data is aligned for the element type; outputs overlap neither one another nor any
    /// input, except that an output may be exactly the input it aliases.
    fn check_layout(&self) -> Result<(), Failure> {
        // (start, end, leaf, array) of every non-empty output, sorted.
        let mut outs: Vec<(usize, usize, usize, usize)> = Vec::new();
        for (j, leaf) in self.leaves.iter().enumerate() {
            for a in 0..self.arrays {
                let r = leaf.outs[a].bytes();
                if !r.is_empty() {
                    outs.push((r.start, r.end, j, a));
                }
            }
            let bufs = leaf.ins[..self.arrays]
                .iter()
                .chain(&leaf.outs[..self.arrays])
                .chain([&leaf.grad]);
            if bufs
                .into_iter()
                .any(|b| b.len > 0 && (b.data as usize) % elem_size(b.dtype) != 0)
            {
                return Err(invalid("misaligned buffer"));
            }
        }
        outs.sort_unstable();
        if outs.windows(2).any(|w| w[1].0 < w[0].1) {
            return Err(invalid("output buffers overlap"));
        }
        let check = |r: core::ops::Range<usize>, own: Option<(usize, usize)>| {
            if r.is_empty() {
                return Ok(());
            }
            // The outputs are disjoint and sorted, so their ends are sorted too: the last one
            // starting before `r` ends is the only candidate for an overlap.
            let i = outs.partition_point(|o| o.0 < r.end);
            match i.checked_sub(1).map(|i| outs[i]) {
                Some((s, e, j, a)) if e > r.start => {
                    if own == Some((j, a)) && s == r.start && e == r.end {
                        Ok(())
                    } else {
                        Err(invalid(
                            "an output buffer overlaps an input it does not alias",
                        ))
                    }
                }
                _ => Ok(()),
            }
        };
        for s in [&self.lr_scale, &self.count, &self.finite] {
            check(s.bytes(), None)?;
        }
        for (j, leaf) in self.leaves.iter().enumerate() {
            check(leaf.grad.bytes(), None)?;
            for a in 0..self.arrays {
                check(leaf.ins[a].bytes(), Some((j, a)))?;
            }
        }
        Ok(())
    }

    /// Checks every row's learning rate and step number (the scalars are host memory).
    pub(crate) unsafe fn check_rows(&mut self) -> Result<(), Failure> {
        for b in 0..self.batch {
            let (_, lr, _) = unsafe { self.row_scalars(b)? };
            self.config.set_lr(lr);
            self.config
                .validate_runtime()
                .map_err(|e| invalid(e.to_string()))?;
            kernels::check_lr(&self.config, lr).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// Checks every row's learning rate and step number, then copies unaliased inputs to
    /// their outputs and steps the rows whose gradient is finite: all arrays of a row as one
    /// range of elements, cut into parts that threads share.
    unsafe fn run<P, S>(mut self, kernel: Kernel<P, S>) -> Result<(), Failure> {
        unsafe { self.check_rows()? };
        for leaf in &self.leaves {
            for a in 0..self.arrays {
                let (i, o) = (leaf.ins[a], leaf.outs[a]);
                if i.data != o.data && i.len > 0 {
                    // SAFETY: both hold `len` elements of one type (checked: `bytes` is that
                    // many bytes) and do not overlap (checked).
                    unsafe {
                        ptr::copy_nonoverlapping(
                            i.data.cast::<u8>(),
                            o.data.cast::<u8>(),
                            i.bytes().len(),
                        )
                    };
                }
            }
        }
        // Where each array's row starts in the row laid end to end.
        let mut starts = Vec::with_capacity(self.leaves.len() + 1);
        starts.push(0usize);
        for leaf in &self.leaves {
            starts.push(starts.last().copied().unwrap_or(0) + leaf.grad.len / self.batch);
        }
        let total = starts.last().copied().unwrap_or(0);
        // Bytes touched per step: parameter read and written, gradient read, state read and
        // written.
        let bytes =
            total * (3 * elem_size(self.elem) + 2 * (self.arrays - 1) * elem_size(self.state_elem));
        let leaves: Vec<LeafPtrs<P, S>> = self
            .leaves
            .iter()
            .map(|l| LeafPtrs {
                grad: l.grad.data.cast::<P>(),
                param: l.outs[0].data.cast::<P>(),
                state: core::array::from_fn(|a| l.outs[1 + a].data.cast::<S>()),
                row_len: l.grad.len / self.batch,
            })
            .collect();
        for b in 0..self.batch {
            let (t, lr, finite) = unsafe { self.row_scalars(b)? };
            if !finite || total == 0 {
                continue;
            }
            self.config.set_lr(lr);
            let row = Row {
                kernel,
                config: &self.config,
                t,
                lr,
                row: b,
                leaves: &leaves,
                starts: &starts,
                arrays: self.arrays,
            };
            let failure = std::sync::Mutex::new(None);
            let finished = crate::parallel::for_ranges(total, bytes, self.pool, &|range| {
                // SAFETY: the ranges of one row are disjoint and inside it.
                if let Err(e) = unsafe { row.step(range) } {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            });
            if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
                return Err(e);
            }
            if !finished {
                return Err((xla::ERROR_INTERNAL, "vsgd_jax: the step panicked".into()));
            }
        }
        Ok(())
    }

    /// Row `b`'s step number (`count + 1`), learning rate and verdict (the scalars are host
    /// memory).
    pub(crate) unsafe fn row_scalars(&self, b: usize) -> Result<(u64, f64, bool), Failure> {
        let count = unsafe { self.count.i128_at(b) };
        let t = u64::try_from(count + 1)
            .ok()
            .filter(|&t| t >= 1)
            .ok_or_else(|| invalid(format!("count {count} is not a step count")))?;
        let lr = self.lr * unsafe { self.lr_scale.f64_at(b) };
        Ok((t, lr, unsafe { self.finite.bool_at(b) }))
    }
}

/// The pieces of arrays laid end to end (array `j` from `starts[j]` to `starts[j + 1]`)
/// that `range` covers, as (array, range within the array); empty pieces are left out.
pub(crate) fn pieces(
    starts: &[usize],
    range: core::ops::Range<usize>,
) -> impl Iterator<Item = (usize, core::ops::Range<usize>)> + '_ {
    let first = starts
        .partition_point(|&s| s <= range.start)
        .saturating_sub(1);
    (first..starts.len().saturating_sub(1))
        .take_while(move |&j| starts[j] < range.end)
        .map(move |j| {
            let lo = range.start.max(starts[j]) - starts[j];
            let hi = range.end.min(starts[j + 1]) - starts[j];
            (j, lo..hi.max(lo))
        })
        .filter(|(_, r)| !r.is_empty())
}

/// An array's gradient and outputs as typed pointers (parameter and gradient stored as `P`,
/// state as `S`), and the length of one of its rows.
struct LeafPtrs<P, S> {
    grad: *const P,
    param: *mut P,
    state: [*mut S; MAX_STATE],
    row_len: usize,
}

/// One row of every array of the call, laid end to end (`starts`), over raw pointers so that
/// threads can share it; each thread takes a disjoint range of that row.
struct Row<'a, P, S> {
    kernel: Kernel<P, S>,
    config: &'a Config,
    t: u64,
    lr: f64,
    row: usize,
    leaves: &'a [LeafPtrs<P, S>],
    starts: &'a [usize],
    arrays: usize,
}

// SAFETY: the pointers are only used by `step`, on ranges the caller keeps disjoint.
unsafe impl<P, S> Sync for Row<'_, P, S> {}

impl<P, S> Row<'_, P, S> {
    /// Steps elements `range` of the row (the pieces of the arrays that range covers).
    ///
    /// # Safety
    /// `range` lies inside the row, and no other thread touches it meanwhile.
    unsafe fn step(&self, range: core::ops::Range<usize>) -> Result<(), Failure> {
        for (j, piece) in pieces(self.starts, range) {
            let leaf = &self.leaves[j];
            let (start, n) = (self.row * leaf.row_len + piece.start, piece.len());
            let grad = unsafe { core::slice::from_raw_parts(leaf.grad.add(start), n) };
            let param = unsafe { core::slice::from_raw_parts_mut(leaf.param.add(start), n) };
            let mut state: [&mut [S]; MAX_STATE] = [&mut [], &mut [], &mut []];
            for (a, s) in state.iter_mut().enumerate().take(self.arrays - 1) {
                *s = unsafe { core::slice::from_raw_parts_mut(leaf.state[a].add(start), n) };
            }
            // The verdict came from JAX (over the whole gradient, across shards) and said
            // finite, so the kernel takes it instead of scanning this piece again.
            (self.kernel)(
                self.config,
                self.t,
                self.lr,
                param,
                grad,
                &mut state[..self.arrays - 1],
            )
            .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(())
    }
}

pub(crate) unsafe fn buffers(a: &xla::Args, what: &str) -> Result<Vec<*mut c_void>, Failure> {
    if a.struct_size < xla::ARGS_SIZE {
        return Err(invalid(format!("{what}: struct too small")));
    }
    let n = usize::try_from(a.size).map_err(|_| invalid(format!("{what}: bad count")))?;
    if n > 0 && (a.types.is_null() || a.args.is_null()) {
        return Err(invalid(format!("{what}: NULL lists")));
    }
    (0..n)
        .map(|i| unsafe {
            if *a.types.add(i) != xla::BUFFER {
                return Err(invalid(format!("{what}[{i}] is not a buffer")));
            }
            Ok(*a.args.add(i))
        })
        .collect()
}

/// The algorithm and its hyperparameters from the attributes; returns the base lr too.
unsafe fn decode_attrs(attrs: &xla::Attrs) -> Result<(Config, f64), Failure> {
    if attrs.struct_size < xla::ATTRS_SIZE {
        return Err(invalid("attributes struct too small"));
    }
    let n = usize::try_from(attrs.size).map_err(|_| invalid("bad attribute count"))?;
    if n > 0 && (attrs.types.is_null() || attrs.names.is_null() || attrs.attrs.is_null()) {
        return Err(invalid("NULL attribute lists"));
    }
    let entry = |i: usize| -> Result<(&str, i32, *const c_void), Failure> {
        let name = unsafe { *attrs.names.add(i) };
        if name.is_null() {
            return Err(invalid("NULL attribute name"));
        }
        let name = utf8(unsafe { &*name }, "attribute name")?;
        Ok((name, unsafe { *attrs.types.add(i) }, unsafe {
            *attrs.attrs.add(i)
        }))
    };
    let mut algorithm = None;
    for i in 0..n {
        let (name, kind, value) = entry(i)?;
        if name == "algorithm" {
            if kind != xla::ATTR_STRING || value.is_null() {
                return Err(invalid("attribute 'algorithm' must be a string"));
            }
            let s = utf8(unsafe { &*value.cast::<xla::ByteSpan>() }, "algorithm")?;
            algorithm = Some(
                Algorithm::from_name(s)
                    .ok_or_else(|| invalid(format!("unknown algorithm '{s}'")))?,
            );
        }
    }
    let algorithm = algorithm.ok_or_else(|| invalid("missing attribute 'algorithm'"))?;
    let mut config = Config::default_for(algorithm);
    for i in 0..n {
        let (name, kind, value) = entry(i)?;
        if name == "algorithm" {
            continue;
        }
        if kind != xla::ATTR_SCALAR || value.is_null() {
            return Err(invalid(format!("attribute '{name}' must be a scalar")));
        }
        let s = unsafe { &*value.cast::<xla::Scalar>() };
        if s.value.is_null() {
            return Err(invalid(format!("attribute '{name}': NULL value")));
        }
        let x = unsafe {
            match s.dtype {
                dtype::F64 => *s.value.cast::<f64>(),
                dtype::F32 => f64::from(*s.value.cast::<f32>()),
                dtype::S64 => *s.value.cast::<i64>() as f64,
                dtype::S32 => f64::from(*s.value.cast::<i32>()),
                _ => return Err(invalid(format!("attribute '{name}' must be a number"))),
            }
        };
        config
            .set(name, x)
            .map_err(|_| invalid(format!("'{name}' is not a hyperparameter of {algorithm}")))?;
    }
    let lr = config.lr();
    Ok((config, lr))
}

/// Reads a NUL-terminated string argument of the checkpoint functions.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, String> {
    if p.is_null() {
        return Err(format!("{what} is NULL"));
    }
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| format!("{what} is not UTF-8"))
}
