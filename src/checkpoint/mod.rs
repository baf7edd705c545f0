//! Portable checkpoints of an [`Optimizer`]: MessagePack, little-endian state, xxh3-checksummed
//! (format: `docs/checkpoint-format.md`).
//!
//! A checkpoint holds everything needed to continue bit-exactly: the algorithm, every group's
//! hyperparameters and schedule, the non-finite policy, and per tensor its name, shape, element
//! type, step count (the schedule position) and state arrays. Parameters are not included: they
//! belong to the caller (save them with your model).
//!
//! - [`save`] / [`load`]: bytes ⇄ a new optimizer; [`restore`]: bytes → an optimizer whose
//!   tensors are already registered (they must match; the error names the first that does not).
//! - [`save_file`] / [`load_file`] / [`restore_file`] (feature `std`): atomic files.
//! - [`save_shards`] / [`load_shards`], [`split`] / [`merge`]: the state cut into N shards
//!   along the flattened elements (ZeRO-style), merged back bit-exactly.
//! - [`Checkpoint::parse`]: a verified, zero-copy view (what `vsgd inspect` prints).
//!
//! Works without `std` (`alloc` only). Any damaged input gives a [`CheckpointError`]: lengths
//! are checked against the input before anything is allocated, and the checksum catches
//! changed bytes.
//!
//! ```
//! use vsgd::{checkpoint, Optimizer, Config, Algorithm, TensorSpec};
//! let mut opt = Optimizer::new(Config::default_for(Algorithm::Vsgd))?;
//! let w = opt.add_tensor(TensorSpec::new(&[3]).name("w"))?;
//! let mut param = [1.0f32, 2.0, 3.0];
//! opt.step_tensor(w, &mut param, &[0.1, 0.2, 0.3])?;
//! let bytes = checkpoint::save(&opt)?;
//! let back = checkpoint::load(&bytes)?;
//! assert_eq!(back, opt);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
#[cfg(feature = "std")]
mod file;
mod format;
#[cfg(feature = "serde")]
mod serde_impl;
#[cfg(test)]
mod tests;

use alloc::format;
use alloc::vec::Vec;

pub use error::CheckpointError;
#[cfg(feature = "std")]
pub use file::{load_file, restore_file, save_file, write_file_atomic};
pub use format::{Checkpoint, GroupState, TensorState, FORMAT_NAME, FORMAT_VERSION};

use crate::config::Algorithm;
use crate::element::DType;
use crate::optimizer::{GroupId, Optimizer, TensorId, TensorSpec};
use error::tensor_label;
use format::{from_le, Le};

/// `vsgd <version>`: the library name written into every checkpoint.
pub const LIBRARY: &str = concat!("vsgd ", env!("CARGO_PKG_VERSION"));

/// Encodes the whole state of `opt`.
///
/// Fails only with [`CheckpointError::TooLarge`] (a state array over 4 GiB − 1 bytes: use
/// [`save_shards`]) or [`CheckpointError::AllocationFailed`] (the bytes cannot be had; never an
/// abort).
pub fn save(opt: &Optimizer) -> Result<Vec<u8>, CheckpointError> {
    format::encode_to_vec(opt, 0, 1, LIBRARY)
}

/// The size in bytes [`save`] would produce, computed without encoding or allocating the
/// state (for callers that size a buffer first, like the C ABI's size query).
pub fn encoded_len(opt: &Optimizer) -> Result<usize, CheckpointError> {
    format::encoded_len(opt, 0, 1, LIBRARY)
}

/// Encodes the whole state of `opt` into `out`, replacing its contents and reusing its
/// capacity: periodic saves into the same buffer touch no fresh memory.
pub fn save_into(opt: &Optimizer, out: &mut Vec<u8>) -> Result<(), CheckpointError> {
    out.clear();
    format::encode_into(opt, 0, 1, LIBRARY, out)
}

/// Encodes the whole state of `opt` straight into the caller's buffer `buf` (which may be
/// uninitialized) and returns the number of bytes written, the first ones of `buf`. Nothing
/// is allocated and nothing is written past the end of `buf`: a buffer smaller than
/// [`encoded_len`] gives [`CheckpointError::BufferTooSmall`] (with the size needed) and
/// writes nothing. The size is measured and the bytes encoded under the one borrow of `opt`,
/// so no other change to `opt` can come between them.
///
/// ```
/// use core::mem::MaybeUninit;
/// use vsgd::{checkpoint, Algorithm, Config, Optimizer, TensorSpec};
/// let mut opt = Optimizer::new(Config::default_for(Algorithm::Adam))?;
/// opt.add_tensor(TensorSpec::new(&[4]))?;
/// let mut buf = vec![MaybeUninit::<u8>::uninit(); 4096];
/// let n = checkpoint::save_to_slice(&opt, &mut buf)?;
/// assert_eq!(n, checkpoint::encoded_len(&opt)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_to_slice(
    opt: &Optimizer,
    buf: &mut [core::mem::MaybeUninit<u8>],
) -> Result<usize, CheckpointError> {
    format::encode_to_slice(opt, 0, 1, LIBRARY, buf)
}

/// Decodes a (whole, unsharded) checkpoint into a new optimizer.
pub fn load(bytes: &[u8]) -> Result<Optimizer, CheckpointError> {
    let c = Checkpoint::parse(bytes)?;
    whole(&c)?;
    build(core::slice::from_ref(&c))
}

/// Restores a checkpoint into `opt`, whose algorithm, groups and tensors (count, names,
/// shapes, element types, groups) must match the checkpoint's. Hyperparameters, schedules,
/// policy, step counters and state are replaced. On any error `opt` is unchanged.
pub fn restore(opt: &mut Optimizer, bytes: &[u8]) -> Result<(), CheckpointError> {
    let c = Checkpoint::parse(bytes)?;
    whole(&c)?;
    check_matches(opt, &c)?;
    for (g, group) in c.groups.iter().enumerate() {
        opt.set_config(GroupId(g), group.config)?;
        opt.set_schedule(GroupId(g), group.schedule)?;
    }
    opt.set_policy(c.policy);
    opt.set_schedule_clock(c.clock);
    opt.set_global_step(c.global_step);
    opt.set_clip_norm(c.clip_norm)?;
    for (k, t) in c.tensors.iter().enumerate() {
        copy_in(opt, c.algorithm, k, t)?;
    }
    Ok(())
}

fn whole(c: &Checkpoint<'_>) -> Result<(), CheckpointError> {
    if c.shard_count != 1 {
        return Err(CheckpointError::Shards {
            reason: format!(
                "this is shard {} of {}: load all shards with load_shards",
                c.shard_index, c.shard_count
            ),
        });
    }
    Ok(())
}

fn mismatch(
    tensor: impl Into<alloc::string::String>,
    reason: alloc::string::String,
) -> CheckpointError {
    CheckpointError::Mismatch {
        tensor: tensor.into(),
        reason,
    }
}

fn check_matches(opt: &Optimizer, c: &Checkpoint<'_>) -> Result<(), CheckpointError> {
    if opt.algorithm() != c.algorithm {
        return Err(mismatch(
            "algorithm",
            format!(
                "optimizer runs {}, checkpoint holds {}",
                opt.algorithm(),
                c.algorithm
            ),
        ));
    }
    if opt.num_groups() != c.groups.len() {
        return Err(mismatch(
            "groups",
            format!(
                "optimizer has {} groups, checkpoint {}",
                opt.num_groups(),
                c.groups.len()
            ),
        ));
    }
    let n = opt.num_tensors().max(c.tensors.len());
    for k in 0..n {
        let (mine, theirs) = (opt.tensor_info(TensorId(k)).ok(), c.tensors.get(k));
        let (m, t) = match (mine, theirs) {
            (Some(m), Some(t)) => (m, t),
            (Some(m), None) => {
                return Err(mismatch(
                    tensor_label(k, m.name),
                    format!(
                        "registered but not in the checkpoint ({} tensors)",
                        c.tensors.len()
                    ),
                ))
            }
            (None, Some(t)) => {
                return Err(mismatch(
                    t.label(k),
                    format!(
                        "in the checkpoint but not registered ({} tensors)",
                        opt.num_tensors()
                    ),
                ))
            }
            (None, None) => unreachable!("k < max of both counts"),
        };
        let label = tensor_label(k, m.name);
        if m.name != t.name {
            return Err(mismatch(label, format!("checkpoint names it {:?}", t.name)));
        }
        if m.shape != t.shape.as_slice() {
            return Err(mismatch(
                label,
                format!("shape {:?}, checkpoint has {:?}", m.shape, t.shape),
            ));
        }
        if (m.dtype, m.state_dtype) != (t.param_dtype, t.dtype) {
            return Err(mismatch(
                label,
                format!(
                    "element types {}/{} (parameter/state), checkpoint has {}/{}",
                    m.dtype.name(),
                    m.state_dtype.name(),
                    t.param_dtype.name(),
                    t.dtype.name()
                ),
            ));
        }
        if m.state_dtype == DType::Bf16 && m.seed != t.seed {
            return Err(mismatch(
                label,
                format!("rounding seed {}, checkpoint has {}", m.seed, t.seed),
            ));
        }
        if m.group.0 != t.group {
            return Err(mismatch(
                label,
                format!("group {}, checkpoint has group {}", m.group.0, t.group),
            ));
        }
    }
    Ok(())
}

/// Copies tensor `k`'s stored range and step into `opt`.
fn copy_in(
    opt: &mut Optimizer,
    algorithm: Algorithm,
    k: usize,
    t: &TensorState<'_>,
) -> Result<(), CheckpointError> {
    type Dst<T> =
        for<'o> fn(&'o mut Optimizer, TensorId, &str) -> Result<&'o mut [T], crate::Error>;
    fn copy<T: Le>(
        opt: &mut Optimizer,
        algorithm: Algorithm,
        k: usize,
        t: &TensorState<'_>,
        dst: Dst<T>,
    ) -> Result<(), CheckpointError> {
        for (j, &name) in algorithm.state_names().iter().enumerate() {
            from_le(
                t.arrays[j],
                &mut dst(opt, TensorId(k), name)?[t.range.clone()],
            );
        }
        Ok(())
    }
    match t.dtype {
        DType::F32 => copy::<f32>(opt, algorithm, k, t, Optimizer::state_mut)?,
        DType::F64 => copy::<f64>(opt, algorithm, k, t, Optimizer::state_mut)?,
        DType::Bf16 => copy(opt, algorithm, k, t, Optimizer::state_bf16_mut)?,
        // The decoder rejects f16 state (`DType::allows_state`); an error all the same, so
        // that a decoder that let it through could not leave the state unset.
        DType::F16 => {
            return Err(CheckpointError::Inconsistent {
                tensor: format!("tensor {k}"),
                reason: "f16 state is not supported".into(),
            })
        }
    }
    opt.set_step_count(TensorId(k), t.step)?;
    Ok(())
}

/// Builds an optimizer from checked, agreeing parts (one whole checkpoint or all shards).
fn build(parts: &[Checkpoint<'_>]) -> Result<Optimizer, CheckpointError> {
    let c = &parts[0];
    let mut opt = Optimizer::new_runtime(c.groups[0].config)?;
    opt.set_schedule(GroupId(0), c.groups[0].schedule)?;
    for g in &c.groups[1..] {
        let id = opt.add_group_runtime(g.config)?;
        opt.set_schedule(id, g.schedule)?;
    }
    opt.set_policy(c.policy);
    opt.set_schedule_clock(c.clock);
    opt.set_global_step(c.global_step);
    opt.set_clip_norm(c.clip_norm)?;
    for t in &c.tensors {
        let mut spec = TensorSpec::new(&t.shape)
            .dtype(t.param_dtype)
            .state_dtype(t.dtype)
            .seed(t.seed)
            .group(GroupId(t.group));
        if let Some(name) = t.name {
            spec = spec.name(name);
        }
        opt.add_tensor(spec)?;
    }
    for part in parts {
        for (k, t) in part.tensors.iter().enumerate() {
            copy_in(&mut opt, c.algorithm, k, t)?;
        }
    }
    Ok(opt)
}

/// Encodes shard `index` of `count` (0 ≤ index < count) of `opt`'s state: the tensors'
/// flattened elements, concatenated in registration order, cut into `count` ranges as even as
/// integers allow (shard `i` holds elements `⌊i·E/count⌋ .. ⌊(i+1)·E/count⌋`). Each shard
/// carries all metadata; its tensors hold only their part of the range.
pub fn save_shard(opt: &Optimizer, index: usize, count: usize) -> Result<Vec<u8>, CheckpointError> {
    if count == 0 || index >= count {
        return Err(CheckpointError::Shards {
            reason: format!("shard index {index} of {count} shards"),
        });
    }
    format::encode_to_vec(opt, index as u64, count as u64, LIBRARY)
}

/// All `count` shards of `opt`'s state (see [`save_shard`]).
pub fn save_shards(opt: &Optimizer, count: usize) -> Result<Vec<Vec<u8>>, CheckpointError> {
    (0..count.max(1))
        .map(|i| save_shard(opt, i, count))
        .collect()
}

/// Merges shards (in any order) into a new optimizer. The shards must all be there, once each,
/// agree on everything but their ranges, and their ranges must tile every tensor exactly.
pub fn load_shards<B: AsRef<[u8]>>(shards: &[B]) -> Result<Optimizer, CheckpointError> {
    let parts = shards
        .iter()
        .map(|s| Checkpoint::parse(s.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    check_shards(&parts)?;
    build(&parts)
}

fn check_shards(parts: &[Checkpoint<'_>]) -> Result<(), CheckpointError> {
    let bad = |reason: alloc::string::String| Err(CheckpointError::Shards { reason });
    let Some(first) = parts.first() else {
        return bad("no shards given".into());
    };
    if first.shard_count != parts.len() as u64 {
        return bad(format!(
            "{} shards given, the checkpoint has {}",
            parts.len(),
            first.shard_count
        ));
    }
    let mut seen = alloc::vec![false; parts.len()];
    for p in parts {
        if p.shard_count != first.shard_count {
            return bad("shards of different checkpoints (shard counts differ)".into());
        }
        let i = p.shard_index as usize;
        if seen[i] {
            return bad(format!("shard {i} given twice"));
        }
        seen[i] = true;
        if p.algorithm != first.algorithm
            || p.policy != first.policy
            || (p.clock, p.global_step, p.clip_norm)
                != (first.clock, first.global_step, first.clip_norm)
            || p.groups != first.groups
            || p.tensors.len() != first.tensors.len()
        {
            return bad(format!(
                "shard {i} disagrees with shard {} on algorithm, policy, schedule clock, groups \
                 or tensors",
                first.shard_index
            ));
        }
        for (k, (a, b)) in p.tensors.iter().zip(&first.tensors).enumerate() {
            if (
                a.name,
                &a.shape,
                a.dtype,
                a.param_dtype,
                a.seed,
                a.group,
                a.step,
            ) != (
                b.name,
                &b.shape,
                b.dtype,
                b.param_dtype,
                b.seed,
                b.group,
                b.step,
            ) {
                return bad(format!(
                    "shard {i} disagrees with shard {} on {}",
                    first.shard_index,
                    a.label(k)
                ));
            }
        }
    }
    // Ranges must tile 0..len for every tensor.
    let mut ranges = Vec::with_capacity(parts.len());
    for (k, t) in first.tensors.iter().enumerate() {
        ranges.clear();
        ranges.extend(
            parts
                .iter()
                .map(|p| p.tensors[k].range.clone())
                .filter(|r| !r.is_empty()),
        );
        ranges.sort_by_key(|r| r.start);
        let mut at = 0;
        for r in &ranges {
            if r.start != at {
                return bad(format!(
                    "{}: elements {}..{} are {}",
                    t.label(k),
                    at.min(r.start),
                    at.max(r.start),
                    if r.start > at {
                        "missing"
                    } else {
                        "in two shards"
                    }
                ));
            }
            at = r.end;
        }
        if at != t.len {
            return bad(format!(
                "{}: elements {at}..{} are missing",
                t.label(k),
                t.len
            ));
        }
    }
    Ok(())
}

/// Cuts a whole checkpoint into `count` shards (bit-exact; see [`save_shard`]).
pub fn split(bytes: &[u8], count: usize) -> Result<Vec<Vec<u8>>, CheckpointError> {
    save_shards(&load(bytes)?, count)
}

/// Merges shards back into one whole checkpoint (bit-exact).
pub fn merge<B: AsRef<[u8]>>(shards: &[B]) -> Result<Vec<u8>, CheckpointError> {
    save(&load_shards(shards)?)
}
