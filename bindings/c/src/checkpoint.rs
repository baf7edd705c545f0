//! Checkpoints of a handle: the core's portable MessagePack checkpoints
//! (`docs/checkpoint-format.md`, `vsgd::checkpoint`) in caller buffers and in files. No format
//! code lives here: every function forwards to `vsgd::checkpoint` and maps its errors to
//! result codes from 200 on, one per kind of damage.

use core::ffi::c_char;

use vsgd::checkpoint::{self, CheckpointError};

use crate::buffers::{c_str, check_buffer, check_out, slice, slice_uninit, write};
use crate::error::*;
use crate::optimizer::{into_handle, vsgd_optimizer, with};

impl From<CheckpointError> for Failure {
    fn from(e: CheckpointError) -> Self {
        use CheckpointError as E;
        let code = match &e {
            E::BadMagic => VSGD_RESULT_CHECKPOINT_BAD_MAGIC,
            E::UnsupportedVersion { .. } => VSGD_RESULT_CHECKPOINT_UNSUPPORTED_VERSION,
            E::Truncated { .. } => VSGD_RESULT_CHECKPOINT_TRUNCATED,
            E::LengthOutOfRange { .. } => VSGD_RESULT_CHECKPOINT_LENGTH_OUT_OF_RANGE,
            E::Malformed { .. } => VSGD_RESULT_CHECKPOINT_MALFORMED,
            E::ChecksumMismatch { .. } => VSGD_RESULT_CHECKPOINT_CHECKSUM_MISMATCH,
            E::Invalid { .. } => VSGD_RESULT_CHECKPOINT_INVALID,
            E::Inconsistent { .. } => VSGD_RESULT_CHECKPOINT_INCONSISTENT,
            E::Mismatch { .. } => VSGD_RESULT_CHECKPOINT_MISMATCH,
            E::Shards { .. } => VSGD_RESULT_CHECKPOINT_SHARDS,
            E::TooLarge { .. } => VSGD_RESULT_CHECKPOINT_TOO_LARGE,
            E::Optimizer(vsgd::Error::AllocationFailed { .. }) | E::AllocationFailed { .. } => {
                VSGD_RESULT_ALLOCATION_FAILED
            }
            E::Optimizer(_) => VSGD_RESULT_CHECKPOINT_REJECTED,
            E::BufferTooSmall { .. } => VSGD_RESULT_BUFFER_TOO_SMALL,
            E::NotDurable { .. } => VSGD_RESULT_CHECKPOINT_NOT_DURABLE,
            E::Io { kind, .. } if *kind == std::io::ErrorKind::NotFound => {
                VSGD_RESULT_FILE_NOT_FOUND
            }
            E::Io { .. } => VSGD_RESULT_IO_ERROR,
            // `CheckpointError` is non-exhaustive: a kind added later still gets a code and
            // its message until it is given its own number.
            _ => VSGD_RESULT_OTHER_ERROR,
        };
        Failure::new(code, e.to_string())
    }
}

/// Checks `bytes`/`len` and returns them as a slice.
///
/// # Safety
/// `bytes` must be NULL or valid for reading `len` bytes, not written during the call.
unsafe fn input_bytes<'a>(bytes: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    check_buffer(bytes, len, false, "bytes", None)?;
    // SAFETY: checked (non-NULL unless empty, size); `len` readable bytes (caller).
    Ok(unsafe { slice(bytes, len) })
}

/// Writes the checkpoint of the handle (see `docs/checkpoint-format.md`) into `buf`.
///
/// The checkpoint holds everything needed to continue bit-exactly: the algorithm, every
/// group's hyperparameters and schedule, the non-finite policy, and per tensor its name,
/// length, element type, step count and state arrays. It does not hold parameters: they are
/// the caller's (save them with your model). Its bytes are the same on every platform.
///
/// - `buf`: `cap` bytes owned by the caller. May be NULL when `cap` is 0 (a size query).
/// - `out_len` (required): the checkpoint's size in bytes, on success and on
///   `VSGD_RESULT_BUFFER_TOO_SMALL` alike.
///
/// Returns `VSGD_RESULT_BUFFER_TOO_SMALL` when the checkpoint does not fit in `cap` bytes;
/// then nothing is written to `buf` (unlike text buffers, no partial checkpoint), only
/// `*out_len`. A handle that is not changed between a size query and the save gives the same
/// bytes, so `cap = *out_len` then succeeds.
///
/// The size is measured and the bytes written under one use of the handle, straight into
/// `buf`: no other call on the handle can change the size in between, nothing is written past
/// `cap`, and no copy of the state is allocated (a save needs no memory of its own).
///
/// Errors: `NULL_PARAMETER`, `MISALIGNED_BUFFER` (`out_len`), `BUFFER_TOO_LARGE`,
/// `BUFFER_TOO_SMALL`, `CHECKPOINT_TOO_LARGE`, `HANDLE_BUSY`, `HANDLE_POISONED`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `buf` NULL or valid for `cap` byte writes;
/// `out_len` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_save(
    optimizer: *const vsgd_optimizer,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> vsgd_result {
    guard("vsgd_optimizer_save", || {
        check_out(out_len, "out_len")?;
        check_buffer(buf, cap, true, "buf", None)?;
        // Measured and encoded under one lease, straight into the caller's buffer: no other
        // call on the handle can come between the size check and the bytes written, and
        // the encoder refuses to pass `cap` in any case.
        // SAFETY: forwarded contract (handle).
        let n = unsafe {
            with(optimizer, |o| {
                // SAFETY: checked by check_buffer (non-NULL unless cap is 0, size fits
                // isize); `cap` writable bytes (caller), possibly uninitialized, hence
                // MaybeUninit. The handle's state is Rust-owned, so disjoint from it.
                let dst = slice_uninit(buf, cap);
                match checkpoint::save_to_slice(o, dst) {
                    Ok(n) => Ok(Ok(n)),
                    Err(CheckpointError::BufferTooSmall { needed, .. }) => Ok(Err(needed)),
                    Err(e) => Err(e.into()),
                }
            })
        }?;
        match n {
            Ok(n) => {
                // SAFETY: checked; writable (caller); the buffer's slice is gone.
                unsafe { write(out_len, n) };
                Ok(())
            }
            Err(needed) => {
                // SAFETY: as above.
                unsafe { write(out_len, needed) };
                Err(Failure::new(
                    VSGD_RESULT_BUFFER_TOO_SMALL,
                    format!("the checkpoint needs {needed} bytes, buf holds {cap}"),
                ))
            }
        }
    })
}

/// Creates a handle from checkpoint bytes (from `vsgd_optimizer_save`, a file, or any
/// platform's vsgd): its groups, tensors (in the saved order, with their names), schedules,
/// policy, step counts and state are the saved ones, so training continues bit-exactly.
///
/// On success `*out` owns the new handle (release it with `vsgd_optimizer_free`). On failure
/// `*out` is set to NULL (when `out` is not NULL). Damaged bytes never crash or allocate
/// what they claim: each kind of damage has its own `VSGD_RESULT_CHECKPOINT_*` code.
///
/// Errors: `NULL_PARAMETER`, `BUFFER_TOO_LARGE`, `CHECKPOINT_BAD_MAGIC`,
/// `CHECKPOINT_UNSUPPORTED_VERSION`, `CHECKPOINT_TRUNCATED`,
/// `CHECKPOINT_LENGTH_OUT_OF_RANGE`, `CHECKPOINT_MALFORMED`, `CHECKPOINT_CHECKSUM_MISMATCH`,
/// `CHECKPOINT_INVALID`, `CHECKPOINT_INCONSISTENT`, `CHECKPOINT_SHARDS`,
/// `CHECKPOINT_REJECTED`, `ALLOCATION_FAILED` (the state it describes cannot be allocated).
///
/// # Safety
/// `bytes` must be NULL or valid for reading `len` bytes; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_load(
    bytes: *const u8,
    len: usize,
    out: *mut *mut vsgd_optimizer,
) -> vsgd_result {
    guard("vsgd_optimizer_load", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        // SAFETY: forwarded contract.
        let bytes = unsafe { input_bytes(bytes, len) }?;
        let opt = checkpoint::load(bytes)?;
        // SAFETY: as above.
        unsafe { write(out, into_handle(opt)?) };
        Ok(())
    })
}

/// Restores checkpoint bytes into an existing handle whose algorithm, groups and tensors
/// (count, order, names, lengths, element types, groups) match the checkpoint's: its
/// hyperparameters, schedules, policy, step counts and state become the saved ones.
///
/// On a mismatch (`VSGD_RESULT_CHECKPOINT_MISMATCH`) the message names the first tensor that
/// differs and how, e.g. `tensor 1 ("b"): shape [2], checkpoint has [3]`. On any error the
/// handle is unchanged.
///
/// Errors: as `vsgd_optimizer_load`, plus `CHECKPOINT_MISMATCH`, `HANDLE_BUSY`,
/// `HANDLE_POISONED`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `bytes` NULL or valid for reading `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_restore(
    optimizer: *mut vsgd_optimizer,
    bytes: *const u8,
    len: usize,
) -> vsgd_result {
    guard("vsgd_optimizer_restore", || {
        // SAFETY: forwarded contract. The bytes are the caller's; the handle's state is
        // Rust-owned, so they cannot overlap.
        let bytes = unsafe { input_bytes(bytes, len) }?;
        // SAFETY: forwarded contract.
        unsafe { with(optimizer, |o| Ok(checkpoint::restore(o, bytes)?)) }
    })
}

/// Saves the handle's checkpoint (as `vsgd_optimizer_save`) to the file `path` (UTF-8),
/// atomically: the bytes go to a temporary file in the same directory, which is flushed to
/// disk and renamed over `path`, and then the directory is flushed. A crash or error at any
/// moment leaves either the previous file or the new one, never a mix (a stale
/// `.NAME.tmp-*` file may remain after a crash; it is never read). The state is streamed to
/// the file: no copy of it is made in memory.
///
/// Errors before the rename (`IO_ERROR`, `FILE_NOT_FOUND`, ...) leave the previous file in
/// place. `CHECKPOINT_NOT_DURABLE` is the one failure after the rename: the new file is in
/// place and complete, only the directory flush failed (durability unknown).
///
/// Errors: `NULL_PARAMETER`, `INVALID_STRING`, `IO_ERROR` (message: operation, path, OS
/// error), `FILE_NOT_FOUND` (the directory does not exist), `CHECKPOINT_NOT_DURABLE`,
/// `CHECKPOINT_TOO_LARGE`, `HANDLE_BUSY`, `HANDLE_POISONED`.
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `path` NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_save_file(
    optimizer: *const vsgd_optimizer,
    path: *const c_char,
) -> vsgd_result {
    guard("vsgd_optimizer_save_file", || {
        // SAFETY: NULL or NUL-terminated (caller).
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: forwarded contract.
        unsafe { with(optimizer, |o| Ok(checkpoint::save_file(o, path)?)) }
    })
}

/// Creates a handle from the checkpoint file `path` (UTF-8); see `vsgd_optimizer_load`.
/// On failure `*out` is set to NULL (when `out` is not NULL). The file is read whole: its
/// size is checked first, and a file that cannot be held in memory is `ALLOCATION_FAILED`
/// before anything is read.
///
/// Errors: as `vsgd_optimizer_load`, plus `INVALID_STRING`, `FILE_NOT_FOUND`, `IO_ERROR`,
/// `ALLOCATION_FAILED`.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string; `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_load_file(
    path: *const c_char,
    out: *mut *mut vsgd_optimizer,
) -> vsgd_result {
    guard("vsgd_optimizer_load_file", || {
        check_out(out, "out")?;
        // SAFETY: checked; writable (caller). Cleared first so it is NULL on any failure.
        unsafe { write(out, core::ptr::null_mut()) };
        // SAFETY: NULL or NUL-terminated (caller).
        let path = unsafe { c_str(path, "path") }?;
        let opt = checkpoint::load_file(path)?;
        // SAFETY: as above.
        unsafe { write(out, into_handle(opt)?) };
        Ok(())
    })
}

/// Restores the checkpoint file `path` (UTF-8) into an existing handle; see
/// `vsgd_optimizer_restore`. On any error the handle is unchanged.
///
/// Errors: as `vsgd_optimizer_restore`, plus `INVALID_STRING`, `FILE_NOT_FOUND`,
/// `IO_ERROR`, `ALLOCATION_FAILED` (as `vsgd_optimizer_load_file`).
///
/// # Safety
/// `optimizer` must be NULL or a live handle; `path` NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vsgd_optimizer_restore_file(
    optimizer: *mut vsgd_optimizer,
    path: *const c_char,
) -> vsgd_result {
    guard("vsgd_optimizer_restore_file", || {
        // SAFETY: NULL or NUL-terminated (caller).
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: forwarded contract.
        unsafe { with(optimizer, |o| Ok(checkpoint::restore_file(o, path)?)) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use core::ptr::{null, null_mut};

    /// A VSGD handle with tensors "w" (f32, `len`) stepped once.
    fn handle(len: usize) -> *mut vsgd_optimizer {
        let mut c = null_mut();
        let mut h = null_mut();
        let mut id = 0;
        let mut p = vec![1.0f32; len];
        let g = vec![0.5f32; len];
        // SAFETY: valid pointers throughout.
        unsafe {
            assert_eq!(vsgd_config_new(VSGD_ALGORITHM_VSGD, &mut c), VSGD_RESULT_OK);
            assert_eq!(vsgd_optimizer_new(c, &mut h), VSGD_RESULT_OK);
            vsgd_config_free(c);
            assert_eq!(
                vsgd_optimizer_add_tensor(h, &len, 1, VSGD_DTYPE_F32, c"w".as_ptr(), 0, &mut id),
                VSGD_RESULT_OK
            );
            let r =
                vsgd_optimizer_step_tensor_f32(h, 0, p.as_mut_ptr(), g.as_ptr(), len, null_mut());
            assert_eq!(r, VSGD_RESULT_OK);
        }
        h
    }

    fn save(h: *const vsgd_optimizer) -> Vec<u8> {
        let mut n = 0;
        // SAFETY: size query, then a buffer of that size.
        unsafe {
            assert_eq!(
                vsgd_optimizer_save(h, null_mut(), 0, &mut n),
                VSGD_RESULT_BUFFER_TOO_SMALL
            );
            let mut buf = vec![0u8; n];
            assert_eq!(
                vsgd_optimizer_save(h, buf.as_mut_ptr(), n, &mut n),
                VSGD_RESULT_OK
            );
            assert_eq!(n, buf.len());
            buf
        }
    }

    #[test]
    fn save_load_restore_round_trip() {
        let h = handle(3);
        let bytes = save(h);
        // A buffer one byte short: nothing written, the size reported.
        let mut short = vec![0xAAu8; bytes.len() - 1];
        let mut n = 0;
        // SAFETY: valid buffers.
        let r = unsafe { vsgd_optimizer_save(h, short.as_mut_ptr(), short.len(), &mut n) };
        assert_eq!((r, n), (VSGD_RESULT_BUFFER_TOO_SMALL, bytes.len()));
        assert!(short.iter().all(|&b| b == 0xAA));
        let mut back = null_mut();
        // SAFETY: valid buffers; handles freed once.
        unsafe {
            assert_eq!(
                vsgd_optimizer_load(bytes.as_ptr(), bytes.len(), &mut back),
                VSGD_RESULT_OK
            );
            assert_eq!(*(*back).inner(), *(*h).inner());
            assert_eq!(save(back), bytes);
            // Restore into a fresh handle with the same registration.
            let fresh = handle(3);
            assert_eq!(
                vsgd_optimizer_restore(fresh, bytes.as_ptr(), bytes.len()),
                VSGD_RESULT_OK
            );
            assert_eq!(save(fresh), bytes);
            vsgd_optimizer_free(fresh);
            vsgd_optimizer_free(back);
            vsgd_optimizer_free(h);
        }
    }

    #[test]
    fn damaged_bytes_get_their_codes_and_change_nothing() {
        let h = handle(2);
        let bytes = save(h);
        let mut out = core::ptr::NonNull::<vsgd_optimizer>::dangling().as_ptr();
        let load = |b: &[u8], out: &mut *mut vsgd_optimizer| {
            // SAFETY: valid buffers.
            unsafe { vsgd_optimizer_load(b.as_ptr(), b.len(), out) }
        };
        assert_eq!(
            load(&bytes[..0], &mut out),
            VSGD_RESULT_CHECKPOINT_TRUNCATED
        );
        assert!(out.is_null());
        assert_eq!(
            load(&bytes[..bytes.len() - 1], &mut out),
            VSGD_RESULT_CHECKPOINT_TRUNCATED
        );
        let mut flipped = bytes.clone();
        let k = flipped.len() - 20;
        flipped[k] ^= 1;
        assert_eq!(
            load(&flipped, &mut out),
            VSGD_RESULT_CHECKPOINT_CHECKSUM_MISMATCH
        );
        assert!(out.is_null());
        assert_eq!(
            load(b"not a checkpoint at all", &mut out),
            VSGD_RESULT_CHECKPOINT_BAD_MAGIC
        );
        // SAFETY: NULL with length 0 is an empty input; NULL with a length is refused.
        unsafe {
            assert_eq!(
                vsgd_optimizer_load(null(), 0, &mut out),
                VSGD_RESULT_CHECKPOINT_TRUNCATED
            );
            assert_eq!(
                vsgd_optimizer_load(null(), 4, &mut out),
                VSGD_RESULT_NULL_PARAMETER
            );
            assert_eq!(
                vsgd_optimizer_load(bytes.as_ptr(), bytes.len(), null_mut()),
                VSGD_RESULT_NULL_PARAMETER
            );
        }
        // Restoring damaged bytes or another shape leaves the handle as it was.
        let other = handle(3);
        let other_bytes = save(other);
        // SAFETY: live handles, valid buffers.
        unsafe {
            assert_eq!(
                vsgd_optimizer_restore(h, flipped.as_ptr(), flipped.len()),
                VSGD_RESULT_CHECKPOINT_CHECKSUM_MISMATCH
            );
            assert_eq!(
                vsgd_optimizer_restore(h, other_bytes.as_ptr(), other_bytes.len()),
                VSGD_RESULT_CHECKPOINT_MISMATCH
            );
            let msg = crate::error::last_error_string();
            assert!(msg.starts_with("vsgd_optimizer_restore: "), "{msg}");
            assert!(
                msg.contains("tensor 0 (\"w\")") && msg.contains("[3]"),
                "{msg}"
            );
            assert_eq!(save(h), bytes);
            vsgd_optimizer_free(other);
            vsgd_optimizer_free(h);
        }
    }

    #[test]
    fn every_checkpoint_error_has_its_own_code() {
        use std::collections::HashSet;
        use CheckpointError as E;
        let s = String::new;
        let errors = [
            E::BadMagic,
            E::UnsupportedVersion {
                version: 9,
                supported: 1,
            },
            E::Truncated { offset: 3 },
            E::LengthOutOfRange {
                offset: 1,
                what: "name",
                claimed: 1 << 40,
                available: 4,
            },
            E::Malformed {
                offset: 0,
                what: "x",
                expected: "y",
            },
            E::ChecksumMismatch {
                stored: 1,
                computed: 2,
            },
            E::Invalid {
                what: s(),
                reason: s(),
            },
            E::Inconsistent {
                tensor: s(),
                reason: s(),
            },
            E::Mismatch {
                tensor: s(),
                reason: s(),
            },
            E::Shards { reason: s() },
            E::TooLarge {
                tensor: s(),
                bytes: 1,
            },
            E::Optimizer(vsgd::Error::ShapeOverflow),
            E::Io {
                op: "read",
                path: "p".into(),
                kind: std::io::ErrorKind::PermissionDenied,
                message: s(),
            },
            E::Io {
                op: "read",
                path: "p".into(),
                kind: std::io::ErrorKind::NotFound,
                message: s(),
            },
            E::NotDurable {
                path: s(),
                message: s(),
            },
        ];
        let mut codes = HashSet::new();
        for e in errors {
            let f = Failure::from(e.clone());
            assert!(f.code.0 >= 200 && f.code.0 < 300, "{e:?} → {}", f.code.0);
            assert!(codes.insert(f.code.0), "{e:?} shares code {}", f.code.0);
            assert_eq!(f.message, e.to_string());
            // Every code has a name.
            // SAFETY: static NUL-terminated string.
            let name = unsafe { core::ffi::CStr::from_ptr(vsgd_result_name(f.code)) };
            assert_ne!(name.to_str().unwrap(), "VSGD_RESULT_UNKNOWN");
        }
        // Errors that are not about the checkpoint's bytes keep their general codes.
        let general = [
            (
                E::BufferTooSmall {
                    needed: 9,
                    capacity: 8,
                },
                VSGD_RESULT_BUFFER_TOO_SMALL,
            ),
            (
                E::AllocationFailed { bytes: 1 << 40 },
                VSGD_RESULT_ALLOCATION_FAILED,
            ),
            (
                E::Optimizer(vsgd::Error::AllocationFailed { bytes: 1 << 40 }),
                VSGD_RESULT_ALLOCATION_FAILED,
            ),
        ];
        for (e, code) in general {
            let f = Failure::from(e.clone());
            assert_eq!(f.code, code, "{e:?}");
            assert_eq!(f.message, e.to_string());
        }
    }

    // Miri's isolation forbids file system access; the C tests cover files under sanitizers.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn files_round_trip_and_report_missing_paths() {
        let dir = std::env::temp_dir().join(format!("vsgd-ffi-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = std::ffi::CString::new(dir.join("a.ckpt").to_str().unwrap()).unwrap();
        let missing = std::ffi::CString::new(dir.join("nope/a.ckpt").to_str().unwrap()).unwrap();
        let h = handle(4);
        let mut back = null_mut();
        // SAFETY: live handles, NUL-terminated paths, valid out pointers.
        unsafe {
            assert_eq!(vsgd_optimizer_save_file(h, path.as_ptr()), VSGD_RESULT_OK);
            assert_eq!(
                vsgd_optimizer_load_file(path.as_ptr(), &mut back),
                VSGD_RESULT_OK
            );
            assert_eq!(save(back), save(h));
            assert_eq!(
                vsgd_optimizer_restore_file(back, path.as_ptr()),
                VSGD_RESULT_OK
            );
            assert_eq!(
                vsgd_optimizer_save_file(h, missing.as_ptr()),
                VSGD_RESULT_FILE_NOT_FOUND
            );
            let mut out = back;
            assert_eq!(
                vsgd_optimizer_load_file(missing.as_ptr(), &mut out),
                VSGD_RESULT_FILE_NOT_FOUND
            );
            assert!(out.is_null());
            assert_eq!(
                vsgd_optimizer_restore_file(back, missing.as_ptr()),
                VSGD_RESULT_FILE_NOT_FOUND
            );
            vsgd_optimizer_free(back);
            vsgd_optimizer_free(h);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
