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
use crate::schedule::{LrSchedule, Schedule};

/// The format's name: the first element of every checkpoint, so every file starts with the
/// bytes `95 af 76 73 67 64 2d 63 68 65 63 6b 70 6f 69 6e 74` (`[` 5 elements, `"vsgd-checkpoint"`).
pub const FORMAT_NAME: &str = "vsgd-checkpoint";
/// The newest format version this library writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The checksum element: MessagePack `uint 64` (marker `0xcf`, 8 bytes big-endian).
const TRAILER_LEN: usize = 9;
/// Hyperparameters stored as MessagePack booleans (the rest are `float 64`).
const BOOLEAN_HYPERS: [&str; 2] = ["maximize", "nesterov"];
/// Bytes hashed and copied at a time: small enough to stay in cache between the two.
const CHUNK: usize = 256 * 1024;

// ------------------------------------------------------------------------------------- bytes

/// Element types with a little-endian byte form.
pub(crate) trait Le: Element {
    fn put_le(self, out: &mut [u8]);
    fn get_le(b: &[u8]) -> Self;
}

impl Le for f32 {
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

/// Calls `f` with the little-endian bytes of `data`, a chunk at a time.
pub(crate) fn le_chunks<T: Le>(data: &[T], mut f: impl FnMut(&[u8])) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32/f64 have no padding and every byte of them is initialized; u8 has
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
        // SAFETY: every bit pattern is a valid f32/f64, u8 has alignment 1, and the view is
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

// ----------------------------------------------------------------------------------- encoder

/// MessagePack scalars into a small buffer. Writing into a `Vec` cannot fail (an allocation
/// failure aborts before any error could be returned), so rmp's results are dropped.
struct Head(Vec<u8>);

impl Head {
    fn array(&mut self, n: u32) {
        let _ = enc::write_array_len(&mut self.0, n);
    }
    fn map(&mut self, n: u32) {
        let _ = enc::write_map_len(&mut self.0, n);
    }
    fn str(&mut self, s: &str) {
        let _ = enc::write_str(&mut self.0, s);
    }
    fn uint(&mut self, v: u64) {
        let _ = enc::write_uint(&mut self.0, v);
    }
    fn f64(&mut self, v: f64) {
        let _ = enc::write_f64(&mut self.0, v);
    }
    fn bool(&mut self, v: bool) {
        let _ = enc::write_bool(&mut self.0, v);
    }
    fn nil(&mut self) {
        let _ = enc::write_nil(&mut self.0);
    }
    fn bin_len(&mut self, n: u32) {
        let _ = enc::write_bin_len(&mut self.0, n);
    }
    /// Moves the buffered bytes into `sink`.
    fn flush<S: Sink>(&mut self, sink: &mut S) -> Result<(), S::Err> {
        let r = sink.put(&self.0);
        self.0.clear();
        r
    }
}

fn u32_len(n: usize, tensor: &dyn Fn() -> String) -> Result<u32, CheckpointError> {
    u32::try_from(n).map_err(|_| CheckpointError::TooLarge {
        tensor: tensor(),
        bytes: n as u64,
    })
}

fn write_schedule(h: &mut Head, s: &LrSchedule) {
    let (kind, fields): (&str, &[(&str, Num)]) = match s.schedule {
        Schedule::Constant => ("constant", &[]),
        Schedule::StepDecay { every, factor } => (
            "step_decay",
            &[("every", Num::U(every)), ("factor", Num::F(factor))],
        ),
        Schedule::Cosine { total, min_factor } => (
            "cosine",
            &[("total", Num::U(total)), ("min_factor", Num::F(min_factor))],
        ),
        Schedule::OneCycle {
            total,
            pct_start,
            div_factor,
            final_div_factor,
        } => (
            "one_cycle",
            &[
                ("total", Num::U(total)),
                ("pct_start", Num::F(pct_start)),
                ("div_factor", Num::F(div_factor)),
                ("final_div_factor", Num::F(final_div_factor)),
            ],
        ),
    };
    h.map(2 + fields.len() as u32);
    h.str("kind");
    h.str(kind);
    for (k, v) in fields {
        h.str(k);
        match *v {
            Num::U(u) => h.uint(u),
            Num::F(f) => h.f64(f),
        }
    }
    h.str("warmup");
    h.uint(s.warmup);
}

#[derive(Clone, Copy)]
enum Num {
    U(u64),
    F(f64),
}

/// Elements `[lo, hi)` of the concatenation of all tensors (in registration order) that shard
/// `index` of `count` holds: the ZeRO partition, as even as integers allow.
pub(crate) fn shard_bounds(total: u64, index: u64, count: u64) -> (u64, u64) {
    let at = |i: u64| ((total as u128 * i as u128) / count as u128) as u64;
    (at(index), at(index + 1))
}

/// Writes everything before the checksum: shard `index` of `count` of `opt`'s state
/// (0 of 1: all of it).
pub(crate) fn encode_body<S: Sink>(
    opt: &Optimizer,
    index: u64,
    count: u64,
    library: &str,
    sink: &mut S,
) -> Result<Result<(), S::Err>, CheckpointError> {
    let algorithm = opt.algorithm();
    let mut h = Head(Vec::with_capacity(512));
    h.array(5);
    h.str(FORMAT_NAME);
    h.uint(FORMAT_VERSION);

    h.map(5);
    h.str("library");
    h.str(library);
    h.str("algorithm");
    h.str(algorithm.name());
    h.str("policy");
    h.str(opt.policy().name());
    h.str("groups");
    h.array(opt.num_groups() as u32);
    for g in 0..opt.num_groups() {
        let config = opt.config(GroupId(g))?;
        h.map(2);
        h.str("hyper");
        h.map(algorithm.hyper_names().len() as u32);
        for &name in algorithm.hyper_names() {
            h.str(name);
            let v = config.get(name).unwrap_or(f64::NAN);
            if BOOLEAN_HYPERS.contains(&name) {
                h.bool(v != 0.0);
            } else {
                h.f64(v);
            }
        }
        h.str("schedule");
        write_schedule(&mut h, opt.schedule(GroupId(g))?);
    }
    h.str("shard");
    h.array(2);
    h.uint(index);
    h.uint(count);

    let n = opt.num_tensors();
    let total: u64 = (0..n)
        .map(|k| opt.tensor_info(TensorId(k)).map(|t| t.len as u64))
        .sum::<Result<u64, _>>()?;
    let (lo, hi) = shard_bounds(total, index, count);
    h.array(n as u32);
    let mut offset = 0u64;
    for k in 0..n {
        let t = opt.tensor_info(TensorId(k))?;
        let label = || tensor_label(k, t.name);
        let len = t.len as u64;
        let start = lo.clamp(offset, offset + len) - offset;
        let end = hi.clamp(offset, offset + len) - offset;
        offset += len;
        let (start, end) = (start as usize, end.max(start) as usize);
        h.map(7);
        h.str("name");
        match t.name {
            Some(name) => {
                u32_len(name.len(), &label)?;
                h.str(name);
            }
            None => h.nil(),
        }
        h.str("shape");
        h.array(u32_len(t.shape.len(), &label)?);
        for &d in t.shape {
            h.uint(d as u64);
        }
        h.str("dtype");
        h.str(t.dtype.name());
        h.str("group");
        h.uint(t.group.0 as u64);
        h.str("step");
        h.uint(t.step);
        h.str("range");
        h.array(2);
        h.uint(start as u64);
        h.uint(end as u64);
        h.str("state");
        h.map(algorithm.state_count() as u32);
        for &name in algorithm.state_names() {
            h.str(name);
            let bytes = (end - start) * t.dtype.size();
            h.bin_len(u32_len(bytes, &label)?);
            if let Err(e) = h.flush(sink) {
                return Ok(Err(e));
            }
            let mut r = Ok(());
            let mut put = |c: &[u8]| {
                if r.is_ok() {
                    r = sink.put(c);
                }
            };
            match t.dtype {
                DType::F32 => {
                    le_chunks(&opt.state::<f32>(TensorId(k), name)?[start..end], &mut put)
                }
                DType::F64 => {
                    le_chunks(&opt.state::<f64>(TensorId(k), name)?[start..end], &mut put)
                }
            }
            if let Err(e) = r {
                return Ok(Err(e));
            }
        }
    }
    Ok(h.flush(sink))
}

/// Encodes shard `index` of `count` into a new vector, sized exactly.
pub(crate) fn encode_to_vec(
    opt: &Optimizer,
    index: u64,
    count: u64,
    library: &str,
) -> Result<Vec<u8>, CheckpointError> {
    let mut out = Vec::new();
    encode_into(opt, index, count, library, &mut out)?;
    Ok(out)
}

/// The encoded size of shard `index` of `count`, trailer included.
pub(crate) fn encoded_len(
    opt: &Optimizer,
    index: u64,
    count: u64,
    library: &str,
) -> Result<usize, CheckpointError> {
    let mut counter = Counter(0);
    let _ = encode_body(opt, index, count, library, &mut counter)?;
    Ok(counter.0 + TRAILER_LEN)
}

/// Appends shard `index` of `count` to `out`, reserving the exact size first.
pub(crate) fn encode_into(
    opt: &Optimizer,
    index: u64,
    count: u64,
    library: &str,
    out: &mut Vec<u8>,
) -> Result<(), CheckpointError> {
    out.reserve_exact(encoded_len(opt, index, count, library)?);
    let start = out.len();
    let mut hs = Hashing {
        inner: out,
        hasher: Xxh3::new(),
    };
    if let Err(e) = encode_body(opt, index, count, library, &mut hs) {
        out.truncate(start);
        return Err(e);
    }
    let sum = hs.hasher.digest();
    out.extend_from_slice(&trailer(sum));
    Ok(())
}

// ----------------------------------------------------------------------------------- decoder

/// A parameter group as stored: its configuration and schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupState {
    /// Hyperparameters (validated).
    pub config: Config,
    /// Schedule (validated); its position is each tensor's step count.
    pub schedule: LrSchedule,
}

/// One tensor as stored: metadata and its state arrays, borrowed from the input.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorState<'a> {
    /// Registered name, if any.
    pub name: Option<&'a str>,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Element count (product of the shape).
    pub len: usize,
    /// Element type.
    pub dtype: DType,
    /// Parameter group index.
    pub group: usize,
    /// Updates applied so far (the schedule's position for this tensor).
    pub step: u64,
    /// The flattened elements this checkpoint holds (`0..len` unless sharded).
    pub range: Range<usize>,
    /// Each state array's elements in `range`, little-endian, in
    /// [`Algorithm::state_names`] order.
    pub arrays: Vec<&'a [u8]>,
}

impl TensorState<'_> {
    /// Values of state array `j`, widened to `f64` (exactly).
    pub fn values(&self, j: usize) -> impl Iterator<Item = f64> + '_ {
        let dtype = self.dtype;
        self.arrays
            .get(j)
            .copied()
            .unwrap_or(&[])
            .chunks_exact(dtype.size())
            .map(move |b| match dtype {
                DType::F32 => f32::get_le(b).to_f64(),
                DType::F64 => f64::get_le(b),
            })
    }

    /// State array `j` as `f32` values, if the tensor is `f32`.
    pub fn array_f32(&self, j: usize) -> Option<Vec<f32>> {
        self.array::<f32>(j)
    }

    /// State array `j` as `f64` values, if the tensor is `f64`.
    pub fn array_f64(&self, j: usize) -> Option<Vec<f64>> {
        self.array::<f64>(j)
    }

    fn array<T: Le>(&self, j: usize) -> Option<Vec<T>> {
        if self.dtype != T::DTYPE {
            return None;
        }
        let src = self.arrays.get(j)?;
        let mut v = vec![T::ZERO; src.len() / T::DTYPE.size()];
        from_le(src, &mut v);
        Some(v)
    }

    pub(crate) fn label(&self, index: usize) -> String {
        tensor_label(index, self.name)
    }
}

/// A decoded, checksum-verified checkpoint (or shard) borrowing its state arrays from the
/// input bytes: reading one copies no state.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint<'a> {
    /// Format version of the input.
    pub version: u64,
    /// The library that wrote it (`vsgd 0.1.0`).
    pub library: &'a str,
    /// The algorithm of every group.
    pub algorithm: Algorithm,
    /// The non-finite-gradient policy.
    pub policy: NonFinitePolicy,
    /// Parameter groups (group 0 first).
    pub groups: Vec<GroupState>,
    /// This shard's index (0 when not sharded).
    pub shard_index: u64,
    /// The number of shards (1 when not sharded).
    pub shard_count: u64,
    /// Tensors in registration order.
    pub tensors: Vec<TensorState<'a>>,
    /// The stored xxh3-64 checksum (verified).
    pub checksum: u64,
}

/// A scalar of a small map (hyperparameters, schedules).
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Num(f64, Option<u64>),
    Bool(bool),
    Str(&'a str),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

fn malformed(offset: usize, what: &'static str, expected: &'static str) -> CheckpointError {
    CheckpointError::Malformed {
        offset,
        what,
        expected,
    }
}

fn invalid(what: impl ToString, reason: impl ToString) -> CheckpointError {
    CheckpointError::Invalid {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Runs an rmp reader on the rest of the input and advances past what it consumed.
    fn rmp<T, E>(
        &mut self,
        f: impl FnOnce(&mut Bytes<'a>) -> Result<T, E>,
        err: impl FnOnce(E, usize) -> CheckpointError,
    ) -> Result<T, CheckpointError> {
        let mut b = Bytes::new(&self.data[self.pos..]);
        let at = self.pos;
        let r = f(&mut b);
        self.pos = self.data.len() - b.remaining_slice().len();
        r.map_err(|e| err(e, at))
    }

    fn value_err(
        what: &'static str,
        expected: &'static str,
    ) -> impl FnOnce(ValueReadError<dec::bytes::BytesReadError>, usize) -> CheckpointError {
        move |e, at| match e {
            ValueReadError::TypeMismatch(_) => malformed(at, what, expected),
            _ => CheckpointError::Truncated { offset: at },
        }
    }

    /// A length `n` of elements at least `min` bytes each must fit in what is left.
    fn fits(
        &self,
        at: usize,
        what: &'static str,
        n: u64,
        min: u64,
    ) -> Result<usize, CheckpointError> {
        let available = self.left() as u64;
        if n.saturating_mul(min) > available {
            return Err(CheckpointError::LengthOutOfRange {
                offset: at,
                what,
                claimed: n,
                available,
            });
        }
        Ok(n as usize)
    }

    fn array_len(&mut self, what: &'static str) -> Result<usize, CheckpointError> {
        let at = self.pos;
        let n = self.rmp(dec::read_array_len, Self::value_err(what, "an array"))?;
        self.fits(at, what, n.into(), 1)
    }

    fn map_len(&mut self, what: &'static str) -> Result<usize, CheckpointError> {
        let at = self.pos;
        let n = self.rmp(dec::read_map_len, Self::value_err(what, "a map"))?;
        self.fits(at, what, n.into(), 2)
    }

    fn take(&mut self, at: usize, what: &'static str, n: u32) -> Result<&'a [u8], CheckpointError> {
        let n = self.fits(at, what, n.into(), 1)?;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, CheckpointError> {
        let at = self.pos;
        let n = self.rmp(dec::read_str_len, Self::value_err(what, "a string"))?;
        let s = self.take(at, what, n)?;
        core::str::from_utf8(s).map_err(|_| malformed(at, what, "UTF-8 text"))
    }

    fn bin(&mut self, what: &'static str) -> Result<&'a [u8], CheckpointError> {
        let at = self.pos;
        let n = self.rmp(dec::read_bin_len, Self::value_err(what, "binary (bin)"))?;
        self.take(at, what, n)
    }

    fn uint(&mut self, what: &'static str) -> Result<u64, CheckpointError> {
        self.rmp(dec::read_int::<u64, _>, |e, at| match e {
            NumValueReadError::TypeMismatch(_) | NumValueReadError::OutOfRange => {
                malformed(at, what, "an unsigned integer")
            }
            _ => CheckpointError::Truncated { offset: at },
        })
    }

    fn peek(&self) -> Option<Marker> {
        self.data.get(self.pos).map(|&b| Marker::from_u8(b))
    }

    fn nil(&mut self) {
        self.pos += 1;
    }

    /// A number, boolean or string (the values of hyperparameter and schedule maps).
    fn scalar(&mut self, what: &'static str) -> Result<Scalar<'a>, CheckpointError> {
        let at = self.pos;
        let trunc = |_, at| CheckpointError::Truncated { offset: at };
        match self.peek() {
            None => Err(CheckpointError::Truncated { offset: at }),
            Some(Marker::True | Marker::False) => self
                .rmp(dec::read_bool, Self::value_err(what, "a boolean"))
                .map(Scalar::Bool),
            Some(Marker::F64) => self.rmp(dec::read_f64, trunc).map(|v| Scalar::Num(v, None)),
            Some(Marker::F32) => self
                .rmp(dec::read_f32, trunc)
                .map(|v| Scalar::Num(v.into(), None)),
            Some(Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32) => {
                self.str(what).map(Scalar::Str)
            }
            Some(Marker::FixPos(_) | Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64) => {
                self.uint(what).map(|u| Scalar::Num(u as f64, Some(u)))
            }
            Some(_) => Err(malformed(at, what, "a number, boolean or string")),
        }
    }

    /// A map of at most `max` string keys to scalars, keys unique.
    fn scalar_map(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<Vec<(&'a str, Scalar<'a>)>, CheckpointError> {
        let at = self.pos;
        let n = self.map_len(what)?;
        if n > max {
            return Err(malformed(at, what, "a small map (too many keys)"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let kat = self.pos;
            let k = self.str(what)?;
            if out.iter().any(|(key, _)| *key == k) {
                return Err(malformed(kat, what, "unique keys"));
            }
            let v = self.scalar(what)?;
            out.push((k, v));
        }
        Ok(out)
    }
}

/// Reads map keys, rejecting unknown and repeated ones.
fn key(
    r: &mut Reader<'_>,
    what: &'static str,
    keys: &[&str],
    seen: &mut [bool],
) -> Result<usize, CheckpointError> {
    let at = r.pos;
    let k = r.str(what)?;
    match keys.iter().position(|&x| x == k) {
        Some(i) if !seen[i] => {
            seen[i] = true;
            Ok(i)
        }
        Some(_) => Err(malformed(at, what, "unique keys")),
        None => Err(malformed(at, what, "a known key")),
    }
}

fn missing(what: &str, keys: &[&str], seen: &[bool]) -> Result<(), CheckpointError> {
    match seen.iter().position(|&s| !s) {
        Some(i) => Err(invalid(what, format!("missing key '{}'", keys[i]))),
        None => Ok(()),
    }
}

struct RawGroup<'a> {
    hyper: Vec<(&'a str, Scalar<'a>)>,
    schedule: Vec<(&'a str, Scalar<'a>)>,
}

fn group_config(
    algorithm: Algorithm,
    g: usize,
    raw: &RawGroup<'_>,
) -> Result<GroupState, CheckpointError> {
    let what = || format!("groups[{g}].hyper");
    let mut config = Config::default_for(algorithm);
    for &name in algorithm.hyper_names() {
        let v = raw
            .hyper
            .iter()
            .find(|(k, _)| *k == name)
            .ok_or_else(|| invalid(what(), format!("missing hyperparameter '{name}'")))?
            .1;
        let x = match (BOOLEAN_HYPERS.contains(&name), v) {
            (true, Scalar::Bool(b)) => f64::from(u8::from(b)),
            (false, Scalar::Num(x, _)) => x,
            _ => return Err(invalid(what(), format!("'{name}' has the wrong type"))),
        };
        config.set(name, x)?;
    }
    if let Some((k, _)) = raw
        .hyper
        .iter()
        .find(|(k, _)| !algorithm.hyper_names().contains(k))
    {
        return Err(invalid(
            what(),
            format!("'{k}' is not a hyperparameter of {algorithm}"),
        ));
    }
    // A group's lr may have been set to 0 at run time (`set_lr`), so 0 is a valid saved lr.
    config.validate_runtime().map_err(crate::Error::from)?;

    let what = || format!("groups[{g}].schedule");
    let get = |name: &str| raw.schedule.iter().find(|(k, _)| *k == name).map(|e| e.1);
    let uint = |name: &str| match get(name) {
        Some(Scalar::Num(_, Some(u))) => Ok(u),
        _ => Err(invalid(
            what(),
            format!("'{name}' missing or not an unsigned integer"),
        )),
    };
    let num = |name: &str| match get(name) {
        Some(Scalar::Num(x, _)) => Ok(x),
        _ => Err(invalid(what(), format!("'{name}' missing or not a number"))),
    };
    let (schedule, keys): (Schedule, &[&str]) = match get("kind") {
        Some(Scalar::Str("constant")) => (Schedule::Constant, &[]),
        Some(Scalar::Str("step_decay")) => (
            Schedule::StepDecay {
                every: uint("every")?,
                factor: num("factor")?,
            },
            &["every", "factor"],
        ),
        Some(Scalar::Str("cosine")) => (
            Schedule::Cosine {
                total: uint("total")?,
                min_factor: num("min_factor")?,
            },
            &["total", "min_factor"],
        ),
        Some(Scalar::Str("one_cycle")) => (
            Schedule::OneCycle {
                total: uint("total")?,
                pct_start: num("pct_start")?,
                div_factor: num("div_factor")?,
                final_div_factor: num("final_div_factor")?,
            },
            &["total", "pct_start", "div_factor", "final_div_factor"],
        ),
        _ => return Err(invalid(what(), "'kind' missing or unknown")),
    };
    if let Some((k, _)) = raw
        .schedule
        .iter()
        .find(|(k, _)| !keys.contains(k) && *k != "kind" && *k != "warmup")
    {
        return Err(invalid(what(), format!("unknown key '{k}'")));
    }
    let schedule = LrSchedule {
        schedule,
        warmup: uint("warmup")?,
    };
    schedule.validate()?;
    Ok(GroupState { config, schedule })
}

const HEADER_KEYS: [&str; 5] = ["library", "algorithm", "policy", "groups", "shard"];
const TENSOR_KEYS: [&str; 7] = ["name", "shape", "dtype", "group", "step", "range", "state"];

impl<'a> Checkpoint<'a> {
    /// Decodes and verifies a checkpoint (or one shard of one). Every length is checked
    /// against the input before use, the checksum is verified, and every value is validated;
    /// the state arrays are borrowed, not copied.
    pub fn parse(data: &'a [u8]) -> Result<Checkpoint<'a>, CheckpointError> {
        // Magic first: a prefix of the magic is a truncated file, anything else is not ours.
        let magic = magic_bytes();
        let n = data.len().min(magic.len());
        if data[..n] != magic[..n] {
            return Err(CheckpointError::BadMagic);
        }
        if data.len() < magic.len() {
            return Err(CheckpointError::Truncated { offset: data.len() });
        }
        let mut r = Reader {
            data,
            pos: magic.len(),
        };
        let version = r.uint("version")?;
        if version == 0 || version > FORMAT_VERSION {
            return Err(CheckpointError::UnsupportedVersion {
                version,
                supported: FORMAT_VERSION,
            });
        }
        let parsed = parse_v1(&mut r, version);
        match parsed {
            Ok(c) => Ok(c),
            // A structural error in an intact-looking file is more likely corruption than a
            // bad writer: report the checksum when it disagrees.
            Err(
                e @ (CheckpointError::Truncated { .. } | CheckpointError::LengthOutOfRange { .. }),
            ) => Err(e),
            Err(e) => match stored_vs_computed(data) {
                Some((s, c)) if s != c => Err(CheckpointError::ChecksumMismatch {
                    stored: s,
                    computed: c,
                }),
                _ => Err(e),
            },
        }
    }
}

fn magic_bytes() -> [u8; 17] {
    let mut m = [0u8; 17];
    m[0] = 0x95;
    m[1] = 0xa0 | FORMAT_NAME.len() as u8;
    m[2..].copy_from_slice(FORMAT_NAME.as_bytes());
    m
}

/// (stored, computed) checksums assuming the trailer is the last 9 bytes.
fn stored_vs_computed(data: &[u8]) -> Option<(u64, u64)> {
    let body = data.len().checked_sub(TRAILER_LEN)?;
    let t = &data[body..];
    if t[0] != 0xcf {
        return None;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&t[1..]);
    Some((
        u64::from_be_bytes(s),
        xxhash_rust::xxh3::xxh3_64(&data[..body]),
    ))
}

fn parse_v1<'a>(r: &mut Reader<'a>, version: u64) -> Result<Checkpoint<'a>, CheckpointError> {
    // ---- header
    let mut seen = [false; 5];
    let (mut library, mut algorithm, mut policy) = ("", None, None);
    let mut groups_raw: Vec<RawGroup<'a>> = Vec::new();
    let (mut shard_index, mut shard_count) = (0, 1);
    let hat = r.pos;
    let n = r.map_len("header")?;
    if n != HEADER_KEYS.len() {
        return Err(malformed(hat, "header", "a map of 5 keys"));
    }
    for _ in 0..n {
        match key(r, "header key", &HEADER_KEYS, &mut seen)? {
            0 => library = r.str("library")?,
            1 => {
                let name = r.str("algorithm")?;
                algorithm =
                    Some(Algorithm::from_name(name).ok_or_else(|| {
                        invalid("algorithm", format!("unknown algorithm '{name}'"))
                    })?);
            }
            2 => {
                let name = r.str("policy")?;
                policy = Some(
                    NonFinitePolicy::from_name(name)
                        .ok_or_else(|| invalid("policy", format!("unknown policy '{name}'")))?,
                );
            }
            3 => {
                let n = r.array_len("groups")?;
                for _ in 0..n {
                    let at = r.pos;
                    if r.map_len("group")? != 2 {
                        return Err(malformed(at, "group", "a map of 2 keys"));
                    }
                    let mut gseen = [false; 2];
                    let (mut hyper, mut schedule) = (Vec::new(), Vec::new());
                    for _ in 0..2 {
                        match key(r, "group key", &["hyper", "schedule"], &mut gseen)? {
                            0 => hyper = r.scalar_map("hyper", 16)?,
                            _ => schedule = r.scalar_map("schedule", 16)?,
                        }
                    }
                    groups_raw.push(RawGroup { hyper, schedule });
                }
            }
            _ => {
                let at = r.pos;
                if r.array_len("shard")? != 2 {
                    return Err(malformed(at, "shard", "an array [index, count]"));
                }
                shard_index = r.uint("shard index")?;
                shard_count = r.uint("shard count")?;
            }
        }
    }
    missing("header", &HEADER_KEYS, &seen)?;
    let (algorithm, policy) = match (algorithm, policy) {
        (Some(a), Some(p)) => (a, p),
        _ => return Err(invalid("header", "missing algorithm or policy")),
    };
    if groups_raw.is_empty() {
        return Err(invalid("groups", "at least one group is needed"));
    }
    let groups = groups_raw
        .iter()
        .enumerate()
        .map(|(g, raw)| group_config(algorithm, g, raw))
        .collect::<Result<Vec<_>, _>>()?;
    if shard_count == 0 || shard_index >= shard_count {
        return Err(invalid(
            "shard",
            format!("index {shard_index} of {shard_count} shards"),
        ));
    }

    // ---- tensors
    let n = r.array_len("tensors")?;
    let mut tensors = Vec::new();
    let state_names = algorithm.state_names();
    for k in 0..n {
        let at = r.pos;
        if r.map_len("tensor")? != TENSOR_KEYS.len() {
            return Err(malformed(at, "tensor", "a map of 7 keys"));
        }
        let mut seen = [false; 7];
        let mut name = None;
        let mut shape = Vec::new();
        let (mut dtype, mut group, mut step) = (DType::F32, 0u64, 0u64);
        let mut range = (0u64, 0u64);
        let mut arrays: Vec<&'a [u8]> = Vec::new();
        for _ in 0..TENSOR_KEYS.len() {
            match key(r, "tensor key", &TENSOR_KEYS, &mut seen)? {
                0 => {
                    if r.peek() == Some(Marker::Null) {
                        r.nil();
                    } else {
                        name = Some(r.str("tensor name")?);
                    }
                }
                1 => {
                    let d = r.array_len("shape")?;
                    shape = Vec::with_capacity(d);
                    for _ in 0..d {
                        let at = r.pos;
                        let v = r.uint("shape dimension")?;
                        shape.push(
                            usize::try_from(v)
                                .map_err(|_| malformed(at, "shape dimension", "a usize"))?,
                        );
                    }
                }
                2 => {
                    let s = r.str("dtype")?;
                    dtype = DType::from_name(s)
                        .ok_or_else(|| invalid("dtype", format!("unknown element type '{s}'")))?;
                }
                3 => group = r.uint("group")?,
                4 => step = r.uint("step")?,
                5 => {
                    let at = r.pos;
                    if r.array_len("range")? != 2 {
                        return Err(malformed(at, "range", "an array [start, end]"));
                    }
                    range = (r.uint("range start")?, r.uint("range end")?);
                }
                _ => {
                    let at = r.pos;
                    if r.map_len("state")? != state_names.len() {
                        return Err(malformed(at, "state", "one entry per state array"));
                    }
                    arrays = vec![&[][..]; state_names.len()];
                    let mut sseen = [false; 3];
                    for _ in 0..state_names.len() {
                        let j = key(r, "state array name", state_names, &mut sseen)?;
                        arrays[j] = r.bin("state array")?;
                    }
                }
            }
        }
        let label = tensor_label(k, name);
        let inconsistent = |reason: String| CheckpointError::Inconsistent {
            tensor: label.clone(),
            reason,
        };
        let len = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&l| l.checked_mul(state_names.len() * dtype.size()).is_some())
            .ok_or_else(|| inconsistent(format!("shape {shape:?} is too large")))?;
        if group >= groups.len() as u64 {
            return Err(inconsistent(format!(
                "group {group} does not exist ({} groups)",
                groups.len()
            )));
        }
        let (start, end) = range;
        if start > end || end > len as u64 {
            return Err(inconsistent(format!(
                "element range {start}..{end} is outside the shape's {len} elements"
            )));
        }
        if shard_count == 1 && (start, end) != (0, len as u64) {
            return Err(inconsistent(format!(
                "an unsharded checkpoint must hold all {len} elements, not {start}..{end}"
            )));
        }
        let (start, end) = (start as usize, end as usize);
        let want = (end - start) * dtype.size();
        for (j, a) in arrays.iter().enumerate() {
            if a.len() != want {
                return Err(inconsistent(format!(
                    "state array '{}' has {} bytes, {} {} elements need {want}",
                    state_names[j],
                    a.len(),
                    end - start,
                    dtype.name()
                )));
            }
        }
        tensors.push(TensorState {
            name,
            shape,
            len,
            dtype,
            group: group as usize,
            step,
            range: start..end,
            arrays,
        });
    }

    // ---- checksum: the last element, exactly at the end.
    let body = r.pos;
    let rest = &r.data[body..];
    if rest.len() < TRAILER_LEN {
        if rest.first().is_some_and(|&b| b != 0xcf) {
            return Err(malformed(body, "checksum", "uint 64 (0xcf)"));
        }
        return Err(CheckpointError::Truncated {
            offset: r.data.len(),
        });
    }
    if rest[0] != 0xcf {
        return Err(malformed(body, "checksum", "uint 64 (0xcf)"));
    }
    if rest.len() > TRAILER_LEN {
        return Err(malformed(
            body + TRAILER_LEN,
            "end of input",
            "nothing after the checksum",
        ));
    }
    let (stored, computed) = stored_vs_computed(r.data).unwrap_or((0, 1));
    if stored != computed {
        return Err(CheckpointError::ChecksumMismatch { stored, computed });
    }
    Ok(Checkpoint {
        version,
        library,
        algorithm,
        policy,
        groups,
        shard_index,
        shard_count,
        tensors,
        checksum: stored,
    })
}
