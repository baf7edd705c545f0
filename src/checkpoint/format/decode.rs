//! The decoder: checkpoint bytes, checked before anything is allocated, as a borrowed view.

use super::*;

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
    /// Element type of the state arrays (the bytes in `arrays`).
    pub dtype: DType,
    /// Element type of the parameter (version 2's `param_dtype`; else `dtype`).
    pub param_dtype: DType,
    /// Seed of the stochastic rounding of `bf16` state (version 2's `seed`; else 0).
    pub seed: u64,
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
                DType::Bf16 => half::bf16::get_le(b).to_f64(),
                DType::F16 => half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64(),
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

    /// State array `j` as `bf16` values, if the tensor's state is `bf16`.
    pub fn array_bf16(&self, j: usize) -> Option<Vec<half::bf16>> {
        self.array::<half::bf16>(j)
    }

    fn array<T: Le>(&self, j: usize) -> Option<Vec<T>> {
        if self.dtype != T::DTYPE {
            return None;
        }
        let src = self.arrays.get(j)?;
        let mut v = vec![T::default(); src.len() / T::DTYPE.size()];
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
    /// What the schedules' step number is (version 1: always per tensor).
    pub clock: ScheduleClock,
    /// The optimizer's global step (version 1: 0).
    pub global_step: u64,
    /// Gradient clipping's maximum norm, if on (version 1: off).
    pub clip_norm: Option<f64>,
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
    // Version 1 has the first 5 keys; version 2 adds "clock" and "clip".
    let keys = if version >= 2 {
        &HEADER_KEYS[..]
    } else {
        &HEADER_KEYS[..5]
    };
    let mut seen = [false; HEADER_KEYS.len()];
    let seen = &mut seen[..keys.len()];
    let (mut library, mut algorithm, mut policy) = ("", None, None);
    let mut groups_raw: Vec<RawGroup<'a>> = Vec::new();
    let (mut shard_index, mut shard_count) = (0, 1);
    let (mut clock, mut global_step) = (ScheduleClock::PerTensor, 0);
    let mut clip_norm = None;
    let hat = r.pos;
    let n = r.map_len("header")?;
    if n != keys.len() {
        let expected = if version >= 2 {
            "a map of 7 keys"
        } else {
            "a map of 5 keys"
        };
        return Err(malformed(hat, "header", expected));
    }
    for _ in 0..n {
        match key(r, "header key", keys, seen)? {
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
            4 => {
                let at = r.pos;
                if r.array_len("shard")? != 2 {
                    return Err(malformed(at, "shard", "an array [index, count]"));
                }
                shard_index = r.uint("shard index")?;
                shard_count = r.uint("shard count")?;
            }
            5 => {
                // "clock" (version 2).
                let at = r.pos;
                if r.array_len("clock")? != 2 {
                    return Err(malformed(at, "clock", "an array [kind, global step]"));
                }
                let name = r.str("clock kind")?;
                clock = [ScheduleClock::PerTensor, ScheduleClock::Global]
                    .into_iter()
                    .find(|c| clock_name(*c) == name)
                    .ok_or_else(|| invalid("clock", format!("unknown schedule clock '{name}'")))?;
                global_step = r.uint("global step")?;
            }
            _ => {
                // 6: "clip" (version 2): nil, or the maximum gradient norm.
                if r.peek() == Some(Marker::Null) {
                    r.nil();
                } else {
                    let at = r.pos;
                    match r.scalar("clip")? {
                        Scalar::Num(m, _) if m.is_finite() && m > 0.0 => clip_norm = Some(m),
                        Scalar::Num(m, _) => {
                            return Err(invalid(
                                "clip",
                                format!("maximum norm {m} (allowed: finite and > 0)"),
                            ))
                        }
                        _ => return Err(malformed(at, "clip", "nil or a number")),
                    }
                }
            }
        }
    }
    missing("header", keys, seen)?;
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
        // 7 keys; a mixed-precision tensor (version 2) has 9.
        let nkeys = r.map_len("tensor")?;
        if nkeys != 7 && (nkeys != 9 || version < 2) {
            let want = if version < 2 {
                "a map of 7 keys"
            } else {
                "a map of 7 or 9 keys"
            };
            return Err(malformed(at, "tensor", want));
        }
        let mut seen = [false; 9];
        let mut name = None;
        let mut shape = Vec::new();
        let (mut dtype, mut group, mut step) = (DType::F32, 0u64, 0u64);
        let (mut param_dtype, mut seed) = (None, 0u64);
        let mut range = (0u64, 0u64);
        let mut arrays: Vec<&'a [u8]> = Vec::new();
        for _ in 0..nkeys {
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
                3 => {
                    let s = r.str("param_dtype")?;
                    param_dtype = Some(DType::from_name(s).ok_or_else(|| {
                        invalid("param_dtype", format!("unknown element type '{s}'"))
                    })?);
                }
                4 => seed = r.uint("seed")?,
                5 => group = r.uint("group")?,
                6 => step = r.uint("step")?,
                7 => {
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
        for (i, &required) in TENSOR_KEY_REQUIRED.iter().enumerate() {
            if required && !seen[i] {
                return Err(invalid(
                    "tensor",
                    format!("missing key '{}'", TENSOR_KEYS[i]),
                ));
            }
        }
        let label = tensor_label(k, name);
        let inconsistent = |reason: String| CheckpointError::Inconsistent {
            tensor: label.clone(),
            reason,
        };
        if version < 2 && !matches!(dtype, DType::F32 | DType::F64) {
            return Err(invalid(
                "dtype",
                format!("version 1 holds f32 or f64 state, not {}", dtype.name()),
            ));
        }
        let keyed = param_dtype.is_some();
        let param_dtype = param_dtype.unwrap_or(dtype);
        // What the encoder writes: the two keys exactly for a mixed-precision tensor.
        if keyed != (param_dtype != dtype || dtype == DType::Bf16) {
            return Err(inconsistent(format!(
                "'param_dtype' and 'seed' belong to mixed-precision tensors (here {} \
                 parameters with {} state)",
                param_dtype.name(),
                dtype.name()
            )));
        }
        if !param_dtype.allows_state(dtype) {
            return Err(inconsistent(format!(
                "a {} parameter cannot have {} state",
                param_dtype.name(),
                dtype.name()
            )));
        }
        if dtype != DType::Bf16 && seed != 0 {
            // The encoder writes 0: only bf16 state is rounded stochastically.
            return Err(inconsistent(format!(
                "seed {seed} with {} state (a seed belongs to bf16 state; 0 otherwise)",
                dtype.name()
            )));
        }
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
            param_dtype,
            seed,
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
        clock,
        global_step,
        clip_norm,
        groups,
        shard_index,
        shard_count,
        tensors,
        checksum: stored,
    })
}
