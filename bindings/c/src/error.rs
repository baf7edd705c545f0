//! Result codes, the panic guard every export runs in, and the per-thread last error message.

use core::ffi::{c_char, CStr};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::buffers::{check_optional_out, copy_str};

/// What a call did: `VSGD_RESULT_OK` (0) or the reason it failed. Every fallible function
/// returns one. Numbers are never reused or renumbered: a code that is retired stays
/// reserved, new codes are appended (call-site errors from 1, core errors from 100,
/// checkpoint errors from 200, GPU errors from 300). A failing call changes nothing it was given (no output is
/// written, no state advances) unless its documentation says otherwise, and records a message
/// for `vsgd_last_error`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct vsgd_result(pub u32);

/// Success.
pub const VSGD_RESULT_OK: vsgd_result = vsgd_result(0);
/// A bug inside the library was caught at the boundary (a Rust panic). Nothing unwound into
/// the caller; a handle that was in use is poisoned (see `VSGD_RESULT_HANDLE_POISONED`).
pub const VSGD_RESULT_PANIC: vsgd_result = vsgd_result(1);
/// A pointer argument that must not be NULL was NULL.
pub const VSGD_RESULT_NULL_PARAMETER: vsgd_result = vsgd_result(2);
/// An enum-typed argument (`vsgd_algorithm`, `vsgd_dtype`, `vsgd_policy`, `vsgd_finite`,
/// `vsgd_schedule_kind`, `vsgd_schedule_clock`) held a value that is not one of its constants.
pub const VSGD_RESULT_INVALID_ENUM: vsgd_result = vsgd_result(3);
/// A string argument was not valid UTF-8.
pub const VSGD_RESULT_INVALID_STRING: vsgd_result = vsgd_result(4);
/// A pointer was not aligned for its element type.
pub const VSGD_RESULT_MISALIGNED_BUFFER: vsgd_result = vsgd_result(5);
/// Two buffers of one call overlap where one of them is written (e.g. `param` and `grad`).
pub const VSGD_RESULT_OVERLAPPING_BUFFERS: vsgd_result = vsgd_result(6);
/// A length whose size in bytes does not fit in `ptrdiff_t`.
pub const VSGD_RESULT_BUFFER_TOO_LARGE: vsgd_result = vsgd_result(7);
/// An output text buffer too small for the text: as much as fits was written, NUL-terminated,
/// and the full length was reported.
pub const VSGD_RESULT_BUFFER_TOO_SMALL: vsgd_result = vsgd_result(8);
/// The handle is in use by another call right now (two threads used one handle at once).
/// Nothing was done; the other call is unaffected.
pub const VSGD_RESULT_HANDLE_BUSY: vsgd_result = vsgd_result(9);
/// A panic was caught while this handle was in use, so its state may be half-updated. Every
/// later call on it fails with this code; only `vsgd_optimizer_free` is allowed.
pub const VSGD_RESULT_HANDLE_POISONED: vsgd_result = vsgd_result(10);
/// A `struct_size` field smaller than the first version of its struct (set it to
/// `sizeof` the struct, e.g. `vsgd_tensor_info info = { sizeof info };`).
pub const VSGD_RESULT_INVALID_STRUCT_SIZE: vsgd_result = vsgd_result(11);
/// A hyperparameter outside its range (the message names it and the allowed range), or a
/// boolean field that is neither 0 nor 1.
pub const VSGD_RESULT_INVALID_CONFIG: vsgd_result = vsgd_result(100);
/// A hyperparameter name the algorithm does not have.
pub const VSGD_RESULT_UNKNOWN_HYPERPARAMETER: vsgd_result = vsgd_result(101);
/// A learning rate that is negative or not finite.
pub const VSGD_RESULT_INVALID_LEARNING_RATE: vsgd_result = vsgd_result(102);
/// A schedule parameter outside its range.
pub const VSGD_RESULT_INVALID_SCHEDULE: vsgd_result = vsgd_result(103);
/// Buffers whose lengths disagree (with each other, or with the tensor's registered length).
pub const VSGD_RESULT_LENGTH_MISMATCH: vsgd_result = vsgd_result(104);
/// The wrong number of state arrays for the algorithm (see `vsgd_state_count`).
pub const VSGD_RESULT_STATE_COUNT: vsgd_result = vsgd_result(105);
/// `float` buffers for an `f64` tensor or the reverse.
pub const VSGD_RESULT_DTYPE_MISMATCH: vsgd_result = vsgd_result(106);
/// No tensor with this index in the handle.
pub const VSGD_RESULT_UNKNOWN_TENSOR: vsgd_result = vsgd_result(107);
/// No parameter group with this index in the handle.
pub const VSGD_RESULT_UNKNOWN_GROUP: vsgd_result = vsgd_result(108);
/// No state array of this name for the algorithm.
pub const VSGD_RESULT_UNKNOWN_STATE_ARRAY: vsgd_result = vsgd_result(109);
/// A tensor whose state size overflows, or a shard of bfloat16 state whose element indices
/// (`offset + len` of `vsgd_step_bf16_sr`) pass 2^64 − 1.
pub const VSGD_RESULT_SHAPE_OVERFLOW: vsgd_result = vsgd_result(110);
/// A gradient holding NaN or infinity under `VSGD_POLICY_ERROR`; nothing was updated.
pub const VSGD_RESULT_NON_FINITE_GRADIENT: vsgd_result = vsgd_result(111);
/// A configuration (or handle) of another algorithm than the one required.
pub const VSGD_RESULT_ALGORITHM_MISMATCH: vsgd_result = vsgd_result(112);
/// A step number of 0 given to a stateless kernel (steps count from 1), or a step counter at
/// its maximum.
pub const VSGD_RESULT_INVALID_STEP: vsgd_result = vsgd_result(113);
/// Memory the call needed could not be had: its size in bytes exceeds `PTRDIFF_MAX`
/// (rejected before allocating) or the allocator refused it (a tensor's state, a
/// checkpoint file read whole, the lists of a step over many tensors). Nothing changed and
/// the handle stays usable. No allocation ever aborts the process.
pub const VSGD_RESULT_ALLOCATION_FAILED: vsgd_result = vsgd_result(114);
/// A maximum gradient norm for clipping that is not finite and ≥ 0.
pub const VSGD_RESULT_INVALID_CLIP_NORM: vsgd_result = vsgd_result(115);
/// An error of the core library this version of the C ABI has no specific code for; the
/// message says what it was.
pub const VSGD_RESULT_OTHER_ERROR: vsgd_result = vsgd_result(199);
/// Checkpoint bytes that do not start with the format's magic (`vsgd-checkpoint`): not a
/// vsgd checkpoint at all.
pub const VSGD_RESULT_CHECKPOINT_BAD_MAGIC: vsgd_result = vsgd_result(200);
/// A checkpoint format version this library cannot read (written by a newer library, or 0).
pub const VSGD_RESULT_CHECKPOINT_UNSUPPORTED_VERSION: vsgd_result = vsgd_result(201);
/// Checkpoint bytes that end in the middle of a value (a cut-off file or buffer).
pub const VSGD_RESULT_CHECKPOINT_TRUNCATED: vsgd_result = vsgd_result(202);
/// A length field in the checkpoint claims more bytes than the input holds (truncated or
/// corrupt); rejected before anything is allocated.
pub const VSGD_RESULT_CHECKPOINT_LENGTH_OUT_OF_RANGE: vsgd_result = vsgd_result(203);
/// A checkpoint value of the wrong type, an unknown or repeated key, or bytes after the end.
pub const VSGD_RESULT_CHECKPOINT_MALFORMED: vsgd_result = vsgd_result(204);
/// The checkpoint's xxh3 checksum does not match its bytes: they were changed after writing.
pub const VSGD_RESULT_CHECKPOINT_CHECKSUM_MISMATCH: vsgd_result = vsgd_result(205);
/// A well-formed checkpoint value this library rejects (unknown algorithm, element type,
/// policy or schedule kind; missing or unknown hyperparameter; bad shard numbers).
pub const VSGD_RESULT_CHECKPOINT_INVALID: vsgd_result = vsgd_result(206);
/// A checkpoint tensor whose shape, element range and state arrays disagree.
pub const VSGD_RESULT_CHECKPOINT_INCONSISTENT: vsgd_result = vsgd_result(207);
/// Restoring into a handle whose algorithm, groups or tensors (count, names, lengths, element
/// types, groups) differ from the checkpoint's; the message names the first tensor that
/// differs and how. The handle is unchanged.
pub const VSGD_RESULT_CHECKPOINT_MISMATCH: vsgd_result = vsgd_result(208);
/// One shard of a sharded checkpoint given where a whole checkpoint is needed.
pub const VSGD_RESULT_CHECKPOINT_SHARDS: vsgd_result = vsgd_result(209);
/// A state array over 4 GiB - 1 bytes, too large for one checkpoint (save it sharded from
/// Rust).
pub const VSGD_RESULT_CHECKPOINT_TOO_LARGE: vsgd_result = vsgd_result(210);
/// A checkpoint holding a configuration or schedule the optimizer rejects (the message says
/// which field).
pub const VSGD_RESULT_CHECKPOINT_REJECTED: vsgd_result = vsgd_result(211);
/// A file operation failed (the message names the operation, the path and the OS error). A
/// failed save leaves the previous file in place (see `VSGD_RESULT_CHECKPOINT_NOT_DURABLE`
/// for the one failure after which it does not).
pub const VSGD_RESULT_IO_ERROR: vsgd_result = vsgd_result(212);
/// The checkpoint file (or its directory) does not exist.
pub const VSGD_RESULT_FILE_NOT_FOUND: vsgd_result = vsgd_result(213);
/// The checkpoint was saved and renamed over the target, so the new file is in place and
/// complete, but flushing its directory failed: whether the rename survives a power cut is
/// unknown, and the previous file is gone. Saving again once the cause is fixed makes it
/// durable.
pub const VSGD_RESULT_CHECKPOINT_NOT_DURABLE: vsgd_result = vsgd_result(214);
/// No usable GPU: no CUDA driver library, a driver lacking a needed function, or `cuInit`
/// failed (no device, driver too old). `vsgd_last_error` says which.
pub const VSGD_RESULT_NO_DEVICE: vsgd_result = vsgd_result(300);
/// A CUDA driver call failed, or no kernel image loads on this GPU; `vsgd_last_error` names
/// the call and the `CUDA_ERROR_*` code.
pub const VSGD_RESULT_CUDA_ERROR: vsgd_result = vsgd_result(301);
/// No CUDA context is current on the calling thread.
pub const VSGD_RESULT_NO_CUDA_CONTEXT: vsgd_result = vsgd_result(302);

/// Every code and its name, in numeric order (the single source for `vsgd_result_name`).
pub(crate) const RESULT_NAMES: &[(vsgd_result, &CStr)] = &[
    (VSGD_RESULT_OK, c"VSGD_RESULT_OK"),
    (VSGD_RESULT_PANIC, c"VSGD_RESULT_PANIC"),
    (VSGD_RESULT_NULL_PARAMETER, c"VSGD_RESULT_NULL_PARAMETER"),
    (VSGD_RESULT_INVALID_ENUM, c"VSGD_RESULT_INVALID_ENUM"),
    (VSGD_RESULT_INVALID_STRING, c"VSGD_RESULT_INVALID_STRING"),
    (
        VSGD_RESULT_MISALIGNED_BUFFER,
        c"VSGD_RESULT_MISALIGNED_BUFFER",
    ),
    (
        VSGD_RESULT_OVERLAPPING_BUFFERS,
        c"VSGD_RESULT_OVERLAPPING_BUFFERS",
    ),
    (
        VSGD_RESULT_BUFFER_TOO_LARGE,
        c"VSGD_RESULT_BUFFER_TOO_LARGE",
    ),
    (
        VSGD_RESULT_BUFFER_TOO_SMALL,
        c"VSGD_RESULT_BUFFER_TOO_SMALL",
    ),
    (VSGD_RESULT_HANDLE_BUSY, c"VSGD_RESULT_HANDLE_BUSY"),
    (VSGD_RESULT_HANDLE_POISONED, c"VSGD_RESULT_HANDLE_POISONED"),
    (
        VSGD_RESULT_INVALID_STRUCT_SIZE,
        c"VSGD_RESULT_INVALID_STRUCT_SIZE",
    ),
    (VSGD_RESULT_INVALID_CONFIG, c"VSGD_RESULT_INVALID_CONFIG"),
    (
        VSGD_RESULT_UNKNOWN_HYPERPARAMETER,
        c"VSGD_RESULT_UNKNOWN_HYPERPARAMETER",
    ),
    (
        VSGD_RESULT_INVALID_LEARNING_RATE,
        c"VSGD_RESULT_INVALID_LEARNING_RATE",
    ),
    (
        VSGD_RESULT_INVALID_SCHEDULE,
        c"VSGD_RESULT_INVALID_SCHEDULE",
    ),
    (VSGD_RESULT_LENGTH_MISMATCH, c"VSGD_RESULT_LENGTH_MISMATCH"),
    (VSGD_RESULT_STATE_COUNT, c"VSGD_RESULT_STATE_COUNT"),
    (VSGD_RESULT_DTYPE_MISMATCH, c"VSGD_RESULT_DTYPE_MISMATCH"),
    (VSGD_RESULT_UNKNOWN_TENSOR, c"VSGD_RESULT_UNKNOWN_TENSOR"),
    (VSGD_RESULT_UNKNOWN_GROUP, c"VSGD_RESULT_UNKNOWN_GROUP"),
    (
        VSGD_RESULT_UNKNOWN_STATE_ARRAY,
        c"VSGD_RESULT_UNKNOWN_STATE_ARRAY",
    ),
    (VSGD_RESULT_SHAPE_OVERFLOW, c"VSGD_RESULT_SHAPE_OVERFLOW"),
    (
        VSGD_RESULT_NON_FINITE_GRADIENT,
        c"VSGD_RESULT_NON_FINITE_GRADIENT",
    ),
    (
        VSGD_RESULT_ALGORITHM_MISMATCH,
        c"VSGD_RESULT_ALGORITHM_MISMATCH",
    ),
    (VSGD_RESULT_INVALID_STEP, c"VSGD_RESULT_INVALID_STEP"),
    (
        VSGD_RESULT_ALLOCATION_FAILED,
        c"VSGD_RESULT_ALLOCATION_FAILED",
    ),
    (
        VSGD_RESULT_INVALID_CLIP_NORM,
        c"VSGD_RESULT_INVALID_CLIP_NORM",
    ),
    (VSGD_RESULT_OTHER_ERROR, c"VSGD_RESULT_OTHER_ERROR"),
    (
        VSGD_RESULT_CHECKPOINT_BAD_MAGIC,
        c"VSGD_RESULT_CHECKPOINT_BAD_MAGIC",
    ),
    (
        VSGD_RESULT_CHECKPOINT_UNSUPPORTED_VERSION,
        c"VSGD_RESULT_CHECKPOINT_UNSUPPORTED_VERSION",
    ),
    (
        VSGD_RESULT_CHECKPOINT_TRUNCATED,
        c"VSGD_RESULT_CHECKPOINT_TRUNCATED",
    ),
    (
        VSGD_RESULT_CHECKPOINT_LENGTH_OUT_OF_RANGE,
        c"VSGD_RESULT_CHECKPOINT_LENGTH_OUT_OF_RANGE",
    ),
    (
        VSGD_RESULT_CHECKPOINT_MALFORMED,
        c"VSGD_RESULT_CHECKPOINT_MALFORMED",
    ),
    (
        VSGD_RESULT_CHECKPOINT_CHECKSUM_MISMATCH,
        c"VSGD_RESULT_CHECKPOINT_CHECKSUM_MISMATCH",
    ),
    (
        VSGD_RESULT_CHECKPOINT_INVALID,
        c"VSGD_RESULT_CHECKPOINT_INVALID",
    ),
    (
        VSGD_RESULT_CHECKPOINT_INCONSISTENT,
        c"VSGD_RESULT_CHECKPOINT_INCONSISTENT",
    ),
    (
        VSGD_RESULT_CHECKPOINT_MISMATCH,
        c"VSGD_RESULT_CHECKPOINT_MISMATCH",
    ),
    (
        VSGD_RESULT_CHECKPOINT_SHARDS,
        c"VSGD_RESULT_CHECKPOINT_SHARDS",
    ),
    (
        VSGD_RESULT_CHECKPOINT_TOO_LARGE,
        c"VSGD_RESULT_CHECKPOINT_TOO_LARGE",
    ),
    (
        VSGD_RESULT_CHECKPOINT_REJECTED,
        c"VSGD_RESULT_CHECKPOINT_REJECTED",
    ),
    (VSGD_RESULT_IO_ERROR, c"VSGD_RESULT_IO_ERROR"),
    (VSGD_RESULT_FILE_NOT_FOUND, c"VSGD_RESULT_FILE_NOT_FOUND"),
    (
        VSGD_RESULT_CHECKPOINT_NOT_DURABLE,
        c"VSGD_RESULT_CHECKPOINT_NOT_DURABLE",
    ),
    (VSGD_RESULT_NO_DEVICE, c"VSGD_RESULT_NO_DEVICE"),
    (VSGD_RESULT_CUDA_ERROR, c"VSGD_RESULT_CUDA_ERROR"),
    (VSGD_RESULT_NO_CUDA_CONTEXT, c"VSGD_RESULT_NO_CUDA_CONTEXT"),
];

/// A failed call: its code and the message `vsgd_last_error` will return.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: vsgd_result,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: vsgd_result, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn null(what: &str) -> Self {
        Failure::new(VSGD_RESULT_NULL_PARAMETER, format!("{what} is NULL"))
    }
}

impl From<vsgd::Error> for Failure {
    fn from(e: vsgd::Error) -> Self {
        use vsgd::Error as E;
        let code = match e {
            E::Config(_) => VSGD_RESULT_INVALID_CONFIG,
            E::UnknownHyperparameter { .. } => VSGD_RESULT_UNKNOWN_HYPERPARAMETER,
            E::InvalidLearningRate { .. } => VSGD_RESULT_INVALID_LEARNING_RATE,
            E::InvalidSchedule { .. } => VSGD_RESULT_INVALID_SCHEDULE,
            E::LengthMismatch { .. } => VSGD_RESULT_LENGTH_MISMATCH,
            E::StateCount { .. } => VSGD_RESULT_STATE_COUNT,
            E::DTypeMismatch { .. } | E::DTypeCombination { .. } | E::MixedPrecision { .. } => {
                VSGD_RESULT_DTYPE_MISMATCH
            }
            E::UnknownTensor { .. } => VSGD_RESULT_UNKNOWN_TENSOR,
            E::UnknownGroup { .. } => VSGD_RESULT_UNKNOWN_GROUP,
            E::UnknownStateArray { .. } => VSGD_RESULT_UNKNOWN_STATE_ARRAY,
            E::ShapeOverflow | E::IndexOverflow { .. } => VSGD_RESULT_SHAPE_OVERFLOW,
            E::NonFiniteGradient { .. } => VSGD_RESULT_NON_FINITE_GRADIENT,
            E::AlgorithmMismatch { .. } => VSGD_RESULT_ALGORITHM_MISMATCH,
            E::InvalidStep { .. } => VSGD_RESULT_INVALID_STEP,
            E::AllocationFailed { .. } => VSGD_RESULT_ALLOCATION_FAILED,
            E::InvalidClipNorm { .. } => VSGD_RESULT_INVALID_CLIP_NORM,
            // `vsgd::Error` is non-exhaustive: a variant added later still gets a code and its
            // message until it is given its own number.
            _ => VSGD_RESULT_OTHER_ERROR,
        };
        Failure::new(code, e.to_string())
    }
}

thread_local! {
    /// The message of the last failed call on this thread (empty before the first failure).
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(func: &str, message: &str) {
    // Never let recording an error panic or abort: during thread teardown the thread-local may
    // be gone (`try_with` fails) and then the message is simply dropped.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _ = LAST_ERROR.try_with(|e| {
            if let Ok(mut e) = e.try_borrow_mut() {
                e.clear();
                e.push_str(func);
                e.push_str(": ");
                e.push_str(message);
            }
        });
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Frees a caught panic's payload. Its `Drop` could itself panic (an exotic payload type):
/// that second panic is caught too and its payload leaked, so nothing unwinds into C.
fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// Runs the body of export `func`: a panic becomes `VSGD_RESULT_PANIC`, an error its code, and
/// either records the last error message of this thread.
pub(crate) fn guard(func: &'static str, f: impl FnOnce() -> Result<(), Failure>) -> vsgd_result {
    // AssertUnwindSafe: the only state a panic can leave half-updated is an optimizer handle,
    // and the handle's busy guard poisons it (optimizer.rs), so it is never observed again.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => VSGD_RESULT_OK,
        Ok(Err(e)) => {
            set_last_error(func, &e.message);
            e.code
        }
        Err(payload) => {
            set_last_error(func, &format!("panic: {}", panic_message(&*payload)));
            drop_payload(payload);
            VSGD_RESULT_PANIC
        }
    }
}

/// The name of a result code, e.g. `"VSGD_RESULT_NULL_PARAMETER"`, as a static NUL-terminated
/// string (never free it). Unknown numbers give `"VSGD_RESULT_UNKNOWN"`. Never fails, never
/// touches the last error.
#[no_mangle]
pub extern "C" fn vsgd_result_name(result: vsgd_result) -> *const c_char {
    RESULT_NAMES
        .iter()
        .find(|(r, _)| *r == result)
        .map_or(c"VSGD_RESULT_UNKNOWN", |(_, n)| n)
        .as_ptr()
}

/// Copies the message of the last call on this thread that failed into `buf`.
///
/// The message (UTF-8, no trailing newline) names the function and what was wrong, e.g.
/// `"vsgd_step_f32: length mismatch: grad has 3 elements, expected 4"`. It is kept per
/// thread, like `errno`: each thread sees only its own failures, successful calls leave it
/// unchanged, and it is empty before the first failure. Calling this function never changes it.
///
/// - `buf`: where to write, `len` bytes (the caller owns it). May be NULL only when `len` is 0
///   (a size query).
/// - `out_len`: if not NULL, receives the message length in bytes, without the NUL.
///
/// Writes at most `len - 1` bytes (cut at a character boundary) plus a NUL. Returns
/// `VSGD_RESULT_BUFFER_TOO_SMALL` when the message was cut (or `len` is 0 and the message is
/// not empty), `VSGD_RESULT_NULL_PARAMETER` for a NULL `buf` with `len > 0`.
///
/// # Safety
/// `buf` must be valid for writing `len` bytes; `out_len`, if not NULL, for one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn vsgd_last_error(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> vsgd_result {
    let run = || -> Result<(), Failure> {
        let message = LAST_ERROR
            .try_with(|e| e.try_borrow().map(|e| e.clone()).unwrap_or_default())
            .unwrap_or_default();
        check_optional_out(out_len, "out_len")?;
        // SAFETY: the caller guarantees `buf` is valid for `len` bytes and `out_len` NULL or
        // valid for one write (checked for alignment above).
        unsafe { copy_str(&message, buf, len, out_len) }
    };
    // Not `guard`: this function must not overwrite the message it reports.
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(())) => VSGD_RESULT_OK,
        Ok(Err(e)) => e.code,
        Err(payload) => {
            drop_payload(payload);
            VSGD_RESULT_PANIC
        }
    }
}

#[cfg(test)]
pub(crate) fn last_error_string() -> String {
    LAST_ERROR.with(|e| e.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_pinned() {
        // Changing a number breaks every compiled caller: this table may only grow.
        let pinned: &[(u32, &str)] = &[
            (0, "OK"),
            (1, "PANIC"),
            (2, "NULL_PARAMETER"),
            (3, "INVALID_ENUM"),
            (4, "INVALID_STRING"),
            (5, "MISALIGNED_BUFFER"),
            (6, "OVERLAPPING_BUFFERS"),
            (7, "BUFFER_TOO_LARGE"),
            (8, "BUFFER_TOO_SMALL"),
            (9, "HANDLE_BUSY"),
            (10, "HANDLE_POISONED"),
            (11, "INVALID_STRUCT_SIZE"),
            (100, "INVALID_CONFIG"),
            (101, "UNKNOWN_HYPERPARAMETER"),
            (102, "INVALID_LEARNING_RATE"),
            (103, "INVALID_SCHEDULE"),
            (104, "LENGTH_MISMATCH"),
            (105, "STATE_COUNT"),
            (106, "DTYPE_MISMATCH"),
            (107, "UNKNOWN_TENSOR"),
            (108, "UNKNOWN_GROUP"),
            (109, "UNKNOWN_STATE_ARRAY"),
            (110, "SHAPE_OVERFLOW"),
            (111, "NON_FINITE_GRADIENT"),
            (112, "ALGORITHM_MISMATCH"),
            (113, "INVALID_STEP"),
            (114, "ALLOCATION_FAILED"),
            (115, "INVALID_CLIP_NORM"),
            (199, "OTHER_ERROR"),
            (200, "CHECKPOINT_BAD_MAGIC"),
            (201, "CHECKPOINT_UNSUPPORTED_VERSION"),
            (202, "CHECKPOINT_TRUNCATED"),
            (203, "CHECKPOINT_LENGTH_OUT_OF_RANGE"),
            (204, "CHECKPOINT_MALFORMED"),
            (205, "CHECKPOINT_CHECKSUM_MISMATCH"),
            (206, "CHECKPOINT_INVALID"),
            (207, "CHECKPOINT_INCONSISTENT"),
            (208, "CHECKPOINT_MISMATCH"),
            (209, "CHECKPOINT_SHARDS"),
            (210, "CHECKPOINT_TOO_LARGE"),
            (211, "CHECKPOINT_REJECTED"),
            (212, "IO_ERROR"),
            (213, "FILE_NOT_FOUND"),
            (214, "CHECKPOINT_NOT_DURABLE"),
            (300, "NO_DEVICE"),
            (301, "CUDA_ERROR"),
            (302, "NO_CUDA_CONTEXT"),
        ];
        assert_eq!(pinned.len(), RESULT_NAMES.len());
        for ((n, name), (code, cname)) in pinned.iter().zip(RESULT_NAMES) {
            assert_eq!(code.0, *n);
            assert_eq!(cname.to_str().unwrap(), format!("VSGD_RESULT_{name}"));
            // SAFETY: vsgd_result_name returns a static NUL-terminated string.
            let got = unsafe { CStr::from_ptr(vsgd_result_name(*code)) };
            assert_eq!(got, *cname);
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(vsgd_result_name(vsgd_result(12345))) };
        assert_eq!(unknown.to_str().unwrap(), "VSGD_RESULT_UNKNOWN");
    }

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let r = guard("vsgd_test", || panic!("boom {}", 42));
        assert_eq!(r, VSGD_RESULT_PANIC);
        assert_eq!(last_error_string(), "vsgd_test: panic: boom 42");
        let r = guard("vsgd_test", || std::panic::panic_any(7u8));
        assert_eq!(r, VSGD_RESULT_PANIC);
        assert_eq!(last_error_string(), "vsgd_test: panic: (no message)");
    }

    #[test]
    fn every_core_error_maps_to_its_code() {
        use vsgd::{Algorithm, DType, Error as E};
        let cases = [
            (
                E::Config(vsgd::ConfigError {
                    algorithm: Algorithm::Vsgd,
                    field: "lr",
                    value: 0.0,
                    allowed: "finite and > 0",
                }),
                VSGD_RESULT_INVALID_CONFIG,
            ),
            (
                E::UnknownHyperparameter {
                    algorithm: Algorithm::Adam,
                },
                VSGD_RESULT_UNKNOWN_HYPERPARAMETER,
            ),
            (
                E::InvalidLearningRate { lr: -1.0 },
                VSGD_RESULT_INVALID_LEARNING_RATE,
            ),
            (
                E::InvalidSchedule {
                    field: "every",
                    allowed: ">= 1",
                },
                VSGD_RESULT_INVALID_SCHEDULE,
            ),
            (
                E::LengthMismatch {
                    what: "grad",
                    expected: 1,
                    got: 2,
                },
                VSGD_RESULT_LENGTH_MISMATCH,
            ),
            (
                E::StateCount {
                    expected: 3,
                    got: 2,
                },
                VSGD_RESULT_STATE_COUNT,
            ),
            (
                E::DTypeMismatch {
                    tensor: 0,
                    expected: DType::F32,
                    got: DType::F64,
                },
                VSGD_RESULT_DTYPE_MISMATCH,
            ),
            (E::UnknownTensor { tensor: 3 }, VSGD_RESULT_UNKNOWN_TENSOR),
            (E::UnknownGroup { group: 3 }, VSGD_RESULT_UNKNOWN_GROUP),
            (
                E::UnknownStateArray {
                    algorithm: Algorithm::Sgdm,
                },
                VSGD_RESULT_UNKNOWN_STATE_ARRAY,
            ),
            (E::ShapeOverflow, VSGD_RESULT_SHAPE_OVERFLOW),
            (
                E::NonFiniteGradient { tensor: 1 },
                VSGD_RESULT_NON_FINITE_GRADIENT,
            ),
            (
                E::AlgorithmMismatch {
                    expected: Algorithm::Vsgd,
                    got: Algorithm::Adam,
                },
                VSGD_RESULT_ALGORITHM_MISMATCH,
            ),
            (E::InvalidStep { step: 0 }, VSGD_RESULT_INVALID_STEP),
            (
                E::AllocationFailed { bytes: usize::MAX },
                VSGD_RESULT_ALLOCATION_FAILED,
            ),
            (
                E::InvalidClipNorm { max_norm: -1.0 },
                VSGD_RESULT_INVALID_CLIP_NORM,
            ),
        ];
        for (e, code) in cases {
            let f = Failure::from(e);
            assert_eq!(f.code, code, "{e:?}");
            assert_eq!(f.message, e.to_string());
        }
    }

    #[test]
    fn last_error_copies_truncates_and_is_per_thread() {
        let r = guard("vsgd_x", || {
            Err(Failure::new(VSGD_RESULT_LENGTH_MISMATCH, "abcdef"))
        });
        assert_eq!(r, VSGD_RESULT_LENGTH_MISMATCH);
        let mut buf = [0x55 as c_char; 32];
        let mut n = 0usize;
        // SAFETY: buf and n are valid for the lengths given.
        let r = unsafe { vsgd_last_error(buf.as_mut_ptr(), buf.len(), &mut n) };
        assert_eq!(r, VSGD_RESULT_OK);
        assert_eq!(n, "vsgd_x: abcdef".len());
        // SAFETY: vsgd_last_error NUL-terminated the buffer.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(s.to_str().unwrap(), "vsgd_x: abcdef");
        // Too small: cut, NUL-terminated, full length reported; the message is unchanged.
        // SAFETY: as above, with a shorter length.
        let r = unsafe { vsgd_last_error(buf.as_mut_ptr(), 5, &mut n) };
        assert_eq!(r, VSGD_RESULT_BUFFER_TOO_SMALL);
        assert_eq!(n, 14);
        // SAFETY: NUL-terminated within the 5 bytes.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(s.to_str().unwrap(), "vsgd");
        // Size query.
        // SAFETY: NULL with len 0 is allowed.
        let r = unsafe { vsgd_last_error(std::ptr::null_mut(), 0, &mut n) };
        assert_eq!((r, n), (VSGD_RESULT_BUFFER_TOO_SMALL, 14));
        // SAFETY: NULL with len > 0 is reported, not written.
        let r = unsafe { vsgd_last_error(std::ptr::null_mut(), 4, &mut n) };
        assert_eq!(r, VSGD_RESULT_NULL_PARAMETER);
        assert_eq!(last_error_string(), "vsgd_x: abcdef");
        // Another thread has its own (empty) message.
        std::thread::spawn(|| {
            let mut n = 99usize;
            let mut b = [1 as c_char; 4];
            // SAFETY: valid buffers.
            let r = unsafe { vsgd_last_error(b.as_mut_ptr(), 4, &mut n) };
            assert_eq!((r, n, b[0]), (VSGD_RESULT_OK, 0, 0));
        })
        .join()
        .unwrap();
    }
}
