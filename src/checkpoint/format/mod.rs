//! Format v1 (`docs/checkpoint-format.md`): the encoder, writing from an [`Optimizer`] into any
//! byte sink, and the decoder, a zero-copy [`Checkpoint`] view of a byte slice.
//!
//! MessagePack primitives come from `rmp` (no_std); the schema is walked by hand so that every
//! length is checked against the bytes actually present before anything is allocated, and the
//! state arrays are borrowed from the input rather than copied.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use alloc::{format, vec};
use core::ops::Range;

use rmp::decode::{self as dec, Bytes, NumValueReadError, ValueReadError};
use rmp::encode as enc;
use rmp::Marker;
use xxhash_rust::xxh3::Xxh3;

use super::error::{tensor_label, CheckpointError};
use crate::config::{Algorithm, Config};
use crate::element::{DType, Element};
use crate::kernels::NonFinitePolicy;
use crate::optimizer::{GroupId, Optimizer, TensorId};
use crate::schedule::{LrSchedule, Schedule, ScheduleClock};

/// The format's name: the first element of every checkpoint, so every file starts with the
/// bytes `95 af 76 73 67 64 2d 63 68 65 63 6b 70 6f 69 6e 74` (`[` 5 elements, `"vsgd-checkpoint"`).
pub const FORMAT_NAME: &str = "vsgd-checkpoint";
/// The newest format version this library writes and reads.
pub const FORMAT_VERSION: u64 = 2;
/// The checksum element: MessagePack `uint 64` (marker `0xcf`, 8 bytes big-endian).
const TRAILER_LEN: usize = 9;
/// Hyperparameters stored as MessagePack booleans (the rest are `float 64`).
const BOOLEAN_HYPERS: [&str; 2] = ["maximize", "nesterov"];
/// Bytes hashed and copied at a time: small enough to stay in cache between the two.
const CHUNK: usize = 256 * 1024;

// ------------------------------------------------------------------------------------- bytes

/// Element types with a little-endian byte form (`f32`, `f64`, and `bf16` state).
pub(crate) trait Le: Copy + Default + 'static {
    /// The element type's tag in checkpoints.
    const DTYPE: DType;
    fn put_le(self, out: &mut [u8]);
    fn get_le(b: &[u8]) -> Self;
}

impl Le for f32 {
    const DTYPE: DType = DType::F32;
    #[inline]
    fn put_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    #[inline]
    fn get_le(b: &[u8]) -> Self {
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        f32::from_le_bytes(a)
    }
}

impl Le for f64 {
    const DTYPE: DType = DType::F64;
    #[inline]
    fn put_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    #[inline]
    fn get_le(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        f64::from_le_bytes(a)
    }
}

impl Le for half::bf16 {
    const DTYPE: DType = DType::Bf16;
    #[inline]
    fn put_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_bits().to_le_bytes());
    }
    #[inline]
    fn get_le(b: &[u8]) -> Self {
        half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
}

/// Calls `f` with the little-endian bytes of `data`, a chunk at a time.
pub(crate) fn le_chunks<T: Le>(data: &[T], mut f: impl FnMut(&[u8])) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32/f64/bf16 have no padding and every byte of them is initialized; u8 has
        // alignment 1; the view lives no longer than the borrow of `data`. On a little-endian
        // target these are exactly the bytes the format stores.
        let bytes = unsafe {
            core::slice::from_raw_parts(data.as_ptr().cast::<u8>(), core::mem::size_of_val(data))
        };
        for c in bytes.chunks(CHUNK) {
            f(c);
        }
    }
    #[cfg(not(target_endian = "little"))]
    le_chunks_portable(data, f);
}

/// [`le_chunks`] element by element (the big-endian path; tested on every target).
#[cfg_attr(target_endian = "little", allow(dead_code))]
pub(crate) fn le_chunks_portable<T: Le>(data: &[T], mut f: impl FnMut(&[u8])) {
    let size = core::mem::size_of::<T>();
    let mut buf = vec![0u8; CHUNK.min(core::mem::size_of_val(data))];
    for c in data.chunks(CHUNK / size) {
        let out = &mut buf[..core::mem::size_of_val(c)];
        for (x, o) in c.iter().zip(out.chunks_exact_mut(size)) {
            x.put_le(o);
        }
        f(out);
    }
}

/// Fills `dst` from little-endian bytes (`src.len() == dst.len() · size`, checked by the
/// decoder).
pub(crate) fn from_le<T: Le>(src: &[u8], dst: &mut [T]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: every bit pattern is a valid f32/f64/bf16, u8 has alignment 1, and the view is
        // the only access to `dst` while it lives.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(
                dst.as_mut_ptr().cast::<u8>(),
                core::mem::size_of_val(dst),
            )
        };
        bytes.copy_from_slice(src);
    }
    #[cfg(not(target_endian = "little"))]
    from_le_portable(src, dst);
}

/// [`from_le`] element by element.
#[cfg_attr(target_endian = "little", allow(dead_code))]
pub(crate) fn from_le_portable<T: Le>(src: &[u8], dst: &mut [T]) {
    for (d, b) in dst
        .iter_mut()
        .zip(src.chunks_exact(core::mem::size_of::<T>()))
    {
        *d = T::get_le(b);
    }
}

/// Where encoded bytes go.
pub(crate) trait Sink {
    type Err;
    fn put(&mut self, bytes: &[u8]) -> Result<(), Self::Err>;
}

impl Sink for Vec<u8> {
    type Err = core::convert::Infallible;
    fn put(&mut self, bytes: &[u8]) -> Result<(), Self::Err> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Writes into a caller's (possibly uninitialized) buffer, refusing to go past its end.
pub(crate) struct SliceSink<'a> {
    pub(crate) buf: &'a mut [core::mem::MaybeUninit<u8>],
    pub(crate) pos: usize,
}

/// A [`SliceSink`] asked to write past the end of its buffer.
pub(crate) struct Overflow;

impl Sink for SliceSink<'_> {
    type Err = Overflow;
    fn put(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        let end = self.pos.checked_add(bytes.len()).ok_or(Overflow)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(Overflow)?;
        for (d, &b) in dst.iter_mut().zip(bytes) {
            d.write(b);
        }
        self.pos = end;
        Ok(())
    }
}

/// Counts bytes only (sizes the output before writing).
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    type Err = core::convert::Infallible;
    fn put(&mut self, bytes: &[u8]) -> Result<(), Self::Err> {
        self.0 += bytes.len();
        Ok(())
    }
}

/// Hashes everything passed on to the inner sink.
pub(crate) struct Hashing<'s, S> {
    pub(crate) inner: &'s mut S,
    pub(crate) hasher: Xxh3,
}

impl<S: Sink> Sink for Hashing<'_, S> {
    type Err = S::Err;
    fn put(&mut self, bytes: &[u8]) -> Result<(), S::Err> {
        self.hasher.update(bytes);
        self.inner.put(bytes)
    }
}

/// The checksum element that ends every checkpoint.
pub(crate) fn trailer(checksum: u64) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[0] = 0xcf;
    t[1..].copy_from_slice(&checksum.to_be_bytes());
    t
}

/// The header keys, in the order writers emit them (version 1: the first 5; version 2: all 7).
pub(crate) const HEADER_KEYS: [&str; 7] = [
    "library",
    "algorithm",
    "policy",
    "groups",
    "shard",
    "clock",
    "clip",
];

/// The tensor keys, in the order writers emit them: the first 7 always, the last two
/// (version 2) for a mixed-precision tensor only.
pub(crate) const TENSOR_KEYS: [&str; 9] = [
    "name",
    "shape",
    "dtype",
    "param_dtype",
    "seed",
    "group",
    "step",
    "range",
    "state",
];
/// Which of [`TENSOR_KEYS`] every tensor has.
pub(crate) const TENSOR_KEY_REQUIRED: [bool; 9] =
    [true, true, true, false, false, true, true, true, true];

/// The name of a schedule clock in checkpoints (version 2).
pub(crate) fn clock_name(c: ScheduleClock) -> &'static str {
    match c {
        ScheduleClock::PerTensor => "per_tensor",
        ScheduleClock::Global => "global",
    }
}

mod decode;
mod encode;

pub use decode::{Checkpoint, GroupState, TensorState};
#[cfg(feature = "std")]
pub(crate) use encode::encode_body;
pub(crate) use encode::{encode_into, encode_to_slice, encode_to_vec, encoded_len};
