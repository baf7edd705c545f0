//! Fuzzes the checkpoint decoder. Every input is tried twice: as given (the checksum rejects
//! almost all mutations early), and with the trailing xxh3 checksum recomputed, so mutations
//! reach the schema walk, the validation and the optimizer construction behind it.
//!
//! What must hold for every input:
//! - nothing panics (`load`, `parse` and every array walk, `load_shards`, `restore`);
//! - what loads keeps what the bytes say: `parse(save(load(x)))` equals `parse(x)` field by
//!   field, state arrays bit for bit (only the format version, the writer's name and the
//!   checksum may differ);
//! - what loads also restores into a fresh optimizer of the same layout, to the same bytes;
//! - a restore that fails leaves the optimizer it was given unchanged (the seeds' layout, so
//!   mutations of the seeds reach the checks past the layout match).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vsgd::checkpoint::{self, Checkpoint};
use vsgd::{Algorithm, Config, DType, GroupId, Optimizer, TensorSpec};

/// A fresh optimizer (zero state, counters at 0) with the layout `c` records: its algorithm,
/// groups and tensors (names, shapes, types, seeds, groups). `None` if one cannot be built.
fn fresh_like(c: &Checkpoint) -> Option<Optimizer> {
    let first = c.groups.first()?;
    let mut o = Optimizer::new(first.config).ok()?;
    for g in &c.groups[1..] {
        o.add_group(g.config).ok()?;
    }
    for t in &c.tensors {
        let mut spec = TensorSpec::new(&t.shape)
            .dtype(t.param_dtype)
            .state_dtype(t.dtype)
            .group(GroupId(t.group));
        if t.dtype == DType::Bf16 {
            spec = spec.seed(t.seed);
        }
        if let Some(name) = t.name {
            spec = spec.name(name);
        }
        o.add_tensor(spec).ok()?;
    }
    Some(o)
}

/// The optimizer the seeds were saved from (tests/checkpoint.rs `fuzz_seeds_decode`, VSGD):
/// restoring mutated seeds into it reaches the checks after the layout match.
fn seed_layout() -> Optimizer {
    let mut o = Optimizer::new(Config::default_for(Algorithm::Vsgd)).expect("defaults are valid");
    o.add_tensor(TensorSpec::new(&[2]).name("w")).expect("small tensor");
    o.add_tensor(TensorSpec::new(&[]).dtype(DType::F64)).expect("scalar");
    o
}

fn check(data: &[u8]) {
    let parsed = Checkpoint::parse(data);
    if let Ok(c) = &parsed {
        // Walking every array must not panic either.
        for t in &c.tensors {
            for j in 0..t.arrays.len() {
                t.values(j).for_each(drop);
            }
        }
    }
    if let Ok(opt) = checkpoint::load(data) {
        let c = parsed.as_ref().expect("what loads parses");
        let again = checkpoint::save(&opt).expect("a loaded optimizer saves");
        let mut back = Checkpoint::parse(&again).expect("what was saved parses");
        back.version = c.version;
        back.library = c.library;
        back.checksum = c.checksum;
        assert_eq!(&back, c, "load + save changed what the checkpoint says");
        let reloaded = checkpoint::load(&again).expect("what was saved loads");
        assert_eq!(checkpoint::save(&reloaded).unwrap(), again);
        // Restored into a fresh optimizer of the same layout: the same optimizer.
        let mut fresh = fresh_like(c).expect("the layout of a checkpoint that loads is valid");
        checkpoint::restore(&mut fresh, data).expect("a checkpoint restores into its own layout");
        assert_eq!(checkpoint::save(&fresh).unwrap(), again, "restore differs from load");
    }
    // A restore that fails changes nothing.
    let mut target = seed_layout();
    let before = checkpoint::save(&target).unwrap();
    if checkpoint::restore(&mut target, data).is_err() {
        assert_eq!(checkpoint::save(&target).unwrap(), before, "a failed restore changed the optimizer");
    }
    // As a shard set of one (and of two copies).
    let _ = checkpoint::load_shards(&[data]);
    let _ = checkpoint::load_shards(&[data, data]);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 9 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 9;
        let sum = xxhash_rust::xxh3::xxh3_64(&fixed[..body]);
        fixed[body] = 0xcf;
        fixed[body + 1..].copy_from_slice(&sum.to_be_bytes());
        check(&fixed);
    }
});
