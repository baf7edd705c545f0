//! What can go wrong while saving, loading or restoring a checkpoint.

use alloc::string::String;
use core::fmt;

use crate::error::Error;

/// A checkpoint could not be written, read or applied. Every variant says what was wrong and,
/// where a tensor is involved, names it (`tensor 3 ("w")`). Nothing is changed when one is
/// returned: a failed load builds nothing, a failed restore leaves the optimizer as it was, a
/// failed file save leaves the previous file in place — except [`CheckpointError::NotDurable`],
/// which says exactly that the new file *is* in place.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The input does not start with the format's magic (`vsgd-checkpoint`).
    BadMagic,
    /// A format version this library cannot read (newer, or 0).
    UnsupportedVersion {
        /// The version in the file.
        version: u64,
        /// The newest version this library reads.
        supported: u64,
    },
    /// The input ends in the middle of a value.
    Truncated {
        /// Byte offset where more input was needed.
        offset: usize,
    },
    /// A length field (string, binary, array or map) claims more than the rest of the input
    /// holds: a truncated or corrupt file. Rejected before anything is allocated.
    LengthOutOfRange {
        /// Byte offset of the value.
        offset: usize,
        /// Which field.
        what: &'static str,
        /// The length claimed (bytes, or elements for arrays and maps).
        claimed: u64,
        /// Bytes left in the input.
        available: u64,
    },
    /// A value of the wrong MessagePack type, an unknown or repeated key, or bytes after the end.
    Malformed {
        /// Byte offset of the value.
        offset: usize,
        /// Which field.
        what: &'static str,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// The xxh3-64 checksum over the file does not match: the bytes were changed after writing.
    ChecksumMismatch {
        /// The checksum stored in the file.
        stored: u64,
        /// The checksum of the bytes read.
        computed: u64,
    },
    /// A well-formed value with a meaning this library rejects (unknown algorithm, dtype,
    /// policy, schedule kind; missing or unknown hyperparameter; bad shard numbers).
    Invalid {
        /// Which field.
        what: String,
        /// Why, in words.
        reason: String,
    },
    /// A tensor whose shape, element range and state arrays do not agree.
    Inconsistent {
        /// The tensor (`tensor 3 ("w")`).
        tensor: String,
        /// What disagrees.
        reason: String,
    },
    /// Restoring into an optimizer whose algorithm, groups or tensors differ from the
    /// checkpoint's.
    Mismatch {
        /// The tensor (or `algorithm`, `groups`, `tensors`) that differs.
        tensor: String,
        /// How it differs.
        reason: String,
    },
    /// Shards that do not form one checkpoint (missing, repeated, disagreeing, gaps).
    Shards {
        /// Why, in words.
        reason: String,
    },
    /// A state array too large for one MessagePack `bin` (4 GiB − 1 bytes): save it sharded.
    TooLarge {
        /// The tensor.
        tensor: String,
        /// Its array size in bytes.
        bytes: u64,
    },
    /// The checkpoint holds a configuration or schedule the optimizer rejects.
    Optimizer(Error),
    /// The caller's buffer cannot hold the checkpoint ([`super::save_to_slice`]); nothing was
    /// written.
    BufferTooSmall {
        /// The checkpoint's size in bytes.
        needed: usize,
        /// The buffer's size in bytes.
        capacity: usize,
    },
    /// Memory for the encoded checkpoint, or for a file's bytes, could not be had: the size
    /// exceeds `isize::MAX` (rejected before allocating) or the allocator refused it. Never an
    /// abort; nothing was changed.
    AllocationFailed {
        /// Bytes asked for.
        bytes: u64,
    },
    /// The file was saved and renamed over the target (the new checkpoint is in place and
    /// complete), but flushing the directory failed, so whether the rename survives a power
    /// cut is unknown. The previous file is gone. Saving again, once the cause is fixed, makes
    /// it durable.
    #[cfg(feature = "std")]
    NotDurable {
        /// The checkpoint's path.
        path: String,
        /// The directory flush's OS error text.
        message: String,
    },
    /// A file operation failed.
    #[cfg(feature = "std")]
    Io {
        /// The operation (`create`, `write`, `fsync`, `rename`, `read`, …).
        op: &'static str,
        /// The path involved.
        path: String,
        /// The OS error kind.
        kind: std::io::ErrorKind,
        /// The OS error text.
        message: String,
    },
}

impl From<Error> for CheckpointError {
    fn from(e: Error) -> Self {
        CheckpointError::Optimizer(e)
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::BadMagic => {
                f.write_str("not a vsgd checkpoint (the file does not start with 'vsgd-checkpoint')")
            }
            CheckpointError::UnsupportedVersion { version, supported } => write!(
                f,
                "checkpoint format version {version} is not supported (this library reads 1 to {supported})"
            ),
            CheckpointError::Truncated { offset } => {
                write!(f, "checkpoint truncated: input ends at byte {offset} inside a value")
            }
            CheckpointError::LengthOutOfRange {
                offset,
                what,
                claimed,
                available,
            } => write!(
                f,
                "checkpoint truncated or corrupt: {what} at byte {offset} claims length {claimed} but only {available} bytes remain"
            ),
            CheckpointError::Malformed {
                offset,
                what,
                expected,
            } => write!(f, "malformed checkpoint: {what} at byte {offset}: expected {expected}"),
            CheckpointError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checkpoint corrupt: checksum mismatch (stored xxh3 {stored:016x}, computed {computed:016x})"
            ),
            CheckpointError::Invalid { what, reason } => {
                write!(f, "invalid checkpoint: {what}: {reason}")
            }
            CheckpointError::Inconsistent { tensor, reason } => {
                write!(f, "inconsistent checkpoint: {tensor}: {reason}")
            }
            CheckpointError::Mismatch { tensor, reason } => {
                write!(f, "checkpoint does not match the optimizer: {tensor}: {reason}")
            }
            CheckpointError::Shards { reason } => write!(f, "bad checkpoint shards: {reason}"),
            CheckpointError::TooLarge { tensor, bytes } => write!(
                f,
                "{tensor}: a state array of {bytes} bytes exceeds one MessagePack bin (4 GiB - 1); save sharded"
            ),
            CheckpointError::Optimizer(e) => write!(f, "checkpoint rejected: {e}"),
            CheckpointError::BufferTooSmall { needed, capacity } => write!(
                f,
                "the checkpoint needs {needed} bytes, the buffer holds {capacity}"
            ),
            CheckpointError::AllocationFailed { bytes } => {
                write!(f, "could not allocate {bytes} bytes for the checkpoint")
            }
            #[cfg(feature = "std")]
            CheckpointError::NotDurable { path, message } => write!(
                f,
                "{path}: the new checkpoint is in place, but flushing its directory failed ({message}): durability unknown, the previous file is gone"
            ),
            #[cfg(feature = "std")]
            CheckpointError::Io {
                op,
                path,
                message,
                ..
            } => write!(f, "{op} {path}: {message}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CheckpointError {}

/// `tensor 3 ("w")` or `tensor 3`.
pub(crate) fn tensor_label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => alloc::format!("tensor {index} ({n:?})"),
        None => alloc::format!("tensor {index}"),
    }
}
