//! The encoder: an optimizer's state as checkpoint bytes (see docs/checkpoint-format.md).

use super::*;

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

/// Whether a tensor needs version 2's mixed-precision keys: a parameter type other than its
/// state's, or `bf16` state (whose seed must be kept).
fn is_mixed(t: &crate::optimizer::TensorInfo<'_>) -> bool {
    t.dtype != t.state_dtype || t.state_dtype == DType::Bf16
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
    // Version 1 unless the optimizer holds something only version 2 can say (a schedule
    // clock other than the default, a global step, gradient clipping, a mixed-precision
    // tensor): the default checkpoint keeps the bytes every reader since version 1 understands.
    let v2 = opt.schedule_clock() != ScheduleClock::PerTensor
        || opt.global_step() != 0
        || opt.clip_norm().is_some()
        || (0..opt.num_tensors()).any(|k| opt.tensor_info(TensorId(k)).is_ok_and(|t| is_mixed(&t)));
    h.uint(if v2 { 2 } else { 1 });

    h.map(if v2 { 7 } else { 5 });
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
    if v2 {
        h.str("clock");
        h.array(2);
        h.str(clock_name(opt.schedule_clock()));
        h.uint(opt.global_step());
        h.str("clip");
        match opt.clip_norm() {
            Some(m) => h.f64(m),
            None => h.nil(),
        }
    }

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
        let mixed = is_mixed(&t);
        h.map(if mixed { 9 } else { 7 });
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
        // "dtype" is the state's element type (the bytes below); a mixed-precision tensor
        // (version 2) adds its parameter's type and its stochastic rounding's seed.
        h.str("dtype");
        h.str(t.state_dtype.name());
        if mixed {
            h.str("param_dtype");
            h.str(t.dtype.name());
            h.str("seed");
            h.uint(t.seed);
        }
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
            let bytes = (end - start) * t.state_dtype.size();
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
            match t.state_dtype {
                DType::F32 => {
                    le_chunks(&opt.state::<f32>(TensorId(k), name)?[start..end], &mut put)
                }
                DType::F64 => {
                    le_chunks(&opt.state::<f64>(TensorId(k), name)?[start..end], &mut put)
                }
                DType::Bf16 => le_chunks(&opt.state_bf16(TensorId(k), name)?[start..end], &mut put),
                // No tensor holds f16 state (`DType::allows_state`).
                DType::F16 => {}
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
    let need = encoded_len(opt, index, count, library)?;
    if need > isize::MAX as usize || out.try_reserve_exact(need).is_err() {
        return Err(CheckpointError::AllocationFailed { bytes: need as u64 });
    }
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

/// Writes shard `index` of `count` into `buf` and returns its length; measured and written
/// from one borrow of `opt`, so the size checked is the size written.
pub(crate) fn encode_to_slice(
    opt: &Optimizer,
    index: u64,
    count: u64,
    library: &str,
    buf: &mut [core::mem::MaybeUninit<u8>],
) -> Result<usize, CheckpointError> {
    let need = encoded_len(opt, index, count, library)?;
    let too_small = CheckpointError::BufferTooSmall {
        needed: need,
        capacity: buf.len(),
    };
    if need > buf.len() {
        return Err(too_small);
    }
    let mut sink = SliceSink { buf, pos: 0 };
    let mut hs = Hashing {
        inner: &mut sink,
        hasher: Xxh3::new(),
    };
    // The sink refuses to pass the end of `buf` even if the size computed above were wrong.
    encode_body(opt, index, count, library, &mut hs)?.map_err(|Overflow| too_small.clone())?;
    let sum = hs.hasher.digest();
    sink.put(&trailer(sum)).map_err(|Overflow| too_small)?;
    Ok(sink.pos)
}
