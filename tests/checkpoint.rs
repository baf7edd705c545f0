//! Checkpoints: bit-exact resume for every algorithm and element type, restore checks, shards,
//! files, serde, an independent MessagePack decoder/encoder (rmp-serde) against the documented
//! schema, and every kind of bad input.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use vsgd::checkpoint::{self, Checkpoint, CheckpointError};
use vsgd::{
    Algorithm, Config, DType, Element, GroupId, LrSchedule, NonFinitePolicy, Optimizer, Schedule,
    TensorId, TensorSpec,
};

mod common;
use common::Rng;

const SHAPES: [&[usize]; 4] = [&[3, 4], &[], &[0], &[17]];

/// An optimizer of `algorithm` with two groups (the second with its own hyperparameters and a
/// schedule), tensors of awkward shapes (a scalar, an empty one), all of element type `T`.
fn build<T: Element>(algorithm: Algorithm) -> Optimizer {
    let mut opt = Optimizer::new(Config::default_for(algorithm)).unwrap();
    let mut c1 = Config::default_for(algorithm);
    c1.set("lr", c1.lr() * 0.5).unwrap();
    c1.set("weight_decay", 0.01).unwrap();
    c1.set("maximize", 1.0).unwrap();
    let g1 = opt.add_group(c1).unwrap();
    opt.set_schedule(
        g1,
        LrSchedule {
            schedule: Schedule::OneCycle {
                total: 20,
                pct_start: 0.3,
                div_factor: 25.0,
                final_div_factor: 1e4,
            },
            warmup: 3,
        },
    )
    .unwrap();
    opt.set_schedule(
        GroupId(0),
        Schedule::Cosine {
            total: 15,
            min_factor: 0.1,
        }
        .into(),
    )
    .unwrap();
    let names = ["w", "", "empty", "b"];
    for (k, shape) in SHAPES.iter().enumerate() {
        let mut spec = TensorSpec::new(shape).dtype(T::DTYPE).group(GroupId(k % 2));
        if !names[k].is_empty() {
            spec = spec.name(names[k]);
        }
        opt.add_tensor(spec).unwrap();
    }
    opt
}

fn params<T: Element>(rng: &mut Rng) -> Vec<Vec<T>> {
    SHAPES
        .iter()
        .map(|s| {
            (0..s.iter().product())
                .map(|_| T::from_f64(rng.unit()))
                .collect()
        })
        .collect()
}

/// One step with random gradients; tensor 3 gets a NaN now and then (skipped under the
/// default policy, so step counters differ between tensors).
fn step<T: Element>(opt: &mut Optimizer, params: &mut [Vec<T>], rng: &mut Rng) {
    let grads: Vec<Vec<T>> = params
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let nan = k == 3 && rng.next() % 4 == 0;
            p.iter()
                .map(|&x| {
                    if nan {
                        T::from_f64(f64::NAN)
                    } else {
                        T::from_f64(x.to_f64() * 0.5 + rng.unit() * 0.1)
                    }
                })
                .collect()
        })
        .collect();
    let g: Vec<&[T]> = grads.iter().map(Vec::as_slice).collect();
    let mut p: Vec<&mut [T]> = params.iter_mut().map(Vec::as_mut_slice).collect();
    opt.step(&mut p, &g).unwrap();
}

fn bits<T: Element>(params: &[Vec<T>]) -> Vec<u64> {
    params
        .iter()
        .flatten()
        .map(|x| x.to_f64().to_bits())
        .collect()
}

/// Runs `before` steps, checkpoints through `via`, runs `after` more on both the original and
/// the resumed optimizer, and demands identical bits everywhere.
fn resume_case<T: Element>(
    algorithm: Algorithm,
    before: usize,
    after: usize,
    via: impl Fn(&Optimizer) -> Optimizer,
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ before as u64);
    let mut a = build::<T>(algorithm);
    let mut pa = params::<T>(&mut rng);
    for _ in 0..before {
        step(&mut a, &mut pa, &mut rng);
    }
    let mut b = via(&a);
    assert_eq!(checkpoint::save(&a).unwrap(), checkpoint::save(&b).unwrap());
    let mut pb = pa.clone();
    let (mut ra, mut rb) = (Rng(rng.0), Rng(rng.0));
    for _ in 0..after {
        step(&mut a, &mut pa, &mut ra);
        step(&mut b, &mut pb, &mut rb);
    }
    assert_eq!(bits(&pa), bits(&pb), "{algorithm} {:?}", T::DTYPE);
    // The whole state (every array, step counters, configs) compared as bytes: bit-exact,
    // NaN payloads included.
    assert_eq!(checkpoint::save(&a).unwrap(), checkpoint::save(&b).unwrap());
    for k in 0..a.num_tensors() {
        assert_eq!(
            a.step_count(TensorId(k)).unwrap(),
            b.step_count(TensorId(k)).unwrap()
        );
    }
}

fn every_algorithm_and_dtype(before: usize, via: impl Fn(&Optimizer) -> Optimizer + Copy) {
    for algorithm in Algorithm::ALL {
        resume_case::<f32>(algorithm, before, 12, via);
        resume_case::<f64>(algorithm, before, 12, via);
    }
}

#[test]
fn resume_from_bytes_is_bit_exact() {
    for before in [0, 1, 2, 9] {
        every_algorithm_and_dtype(before, |o| {
            checkpoint::load(&checkpoint::save(o).unwrap()).unwrap()
        });
    }
}

#[test]
fn resume_by_restore_into_registered_tensors_is_bit_exact() {
    every_algorithm_and_dtype(7, |o| {
        let bytes = checkpoint::save(o).unwrap();
        let mut fresh = match o.tensor_info(TensorId(0)).unwrap().dtype {
            DType::F32 => build::<f32>(o.algorithm()),
            _ => build::<f64>(o.algorithm()),
        };
        fresh.set_policy(NonFinitePolicy::Error);
        checkpoint::restore(&mut fresh, &bytes).unwrap();
        assert_eq!(fresh.policy(), NonFinitePolicy::Skip);
        fresh
    });
}

#[test]
fn resume_from_file_is_bit_exact() {
    let dir = tempdir("resume");
    let path = dir.join("opt.vsgdckpt");
    every_algorithm_and_dtype(5, |o| {
        checkpoint::save_file(o, &path).unwrap();
        checkpoint::load_file(&path).unwrap()
    });
    // The streaming file writer and the in-memory encoder write the same bytes.
    let o = trained::<f32>(Algorithm::Adam, 4);
    checkpoint::save_file(&o, &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), checkpoint::save(&o).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_from_shards_is_bit_exact() {
    for n in [1, 2, 3, 7, 40, 100] {
        every_algorithm_and_dtype(3, |o| {
            let mut shards = checkpoint::save_shards(o, n).unwrap();
            shards.reverse();
            checkpoint::load_shards(&shards).unwrap()
        });
    }
}

fn trained<T: Element>(algorithm: Algorithm, steps: usize) -> Optimizer {
    let mut rng = Rng(42);
    let mut o = build::<T>(algorithm);
    let mut p = params::<T>(&mut rng);
    for _ in 0..steps {
        step(&mut o, &mut p, &mut rng);
    }
    o
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vsgd-ckpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn split_and_merge_are_bit_exact_and_checked() {
    let o = trained::<f64>(Algorithm::Vsgd, 5);
    let whole = checkpoint::save(&o).unwrap();
    for n in 1..=8 {
        let shards = checkpoint::split(&whole, n).unwrap();
        assert_eq!(shards.len(), n);
        assert_eq!(checkpoint::merge(&shards).unwrap(), whole);
        // Each shard holds its ZeRO range: 30 elements over n shards.
        let held: usize = shards
            .iter()
            .map(|s| {
                Checkpoint::parse(s)
                    .unwrap()
                    .tensors
                    .iter()
                    .map(|t| t.range.len())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(held, 30);
        if n > 1 {
            let missing = checkpoint::load_shards(&shards[1..]).unwrap_err();
            assert!(
                matches!(missing, CheckpointError::Shards { .. }),
                "{missing}"
            );
            let mut twice = shards.clone();
            twice[1] = twice[0].clone();
            let e = checkpoint::load_shards(&twice).unwrap_err();
            assert!(e.to_string().contains("twice"), "{e}");
            // A shard alone is not a checkpoint.
            let e = checkpoint::load(&shards[0]).unwrap_err();
            assert!(matches!(e, CheckpointError::Shards { .. }), "{e}");
        }
    }
    // Shards of another state do not mix.
    let other = checkpoint::save(&trained::<f64>(Algorithm::Vsgd, 6)).unwrap();
    let (a, b) = (
        checkpoint::split(&whole, 2).unwrap(),
        checkpoint::split(&other, 2).unwrap(),
    );
    let e = checkpoint::load_shards(&[&a[0], &b[1]]).unwrap_err();
    assert!(matches!(e, CheckpointError::Shards { .. }), "{e}");
    assert!(checkpoint::save_shard(&o, 2, 2).is_err());
    assert!(checkpoint::save_shard(&o, 0, 0).is_err());
}

#[test]
fn restore_names_the_tensor_that_differs() {
    let bytes = checkpoint::save(&trained::<f32>(Algorithm::Vsgd, 3)).unwrap();
    let check = |mut target: Optimizer, needle: &str| {
        let before = checkpoint::save(&target).unwrap();
        let e = checkpoint::restore(&mut target, &bytes).unwrap_err();
        assert!(matches!(e, CheckpointError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains(needle), "'{e}' lacks '{needle}'");
        // Nothing changed.
        assert_eq!(checkpoint::save(&target).unwrap(), before);
    };
    check(build::<f32>(Algorithm::Adam), "algorithm");
    check(build::<f64>(Algorithm::Vsgd), "tensor 0 (\"w\")");
    let mut o = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
    o.add_group(Config::default_for(Algorithm::Vsgd)).unwrap();
    o.add_tensor(TensorSpec::new(&[3, 4]).name("w")).unwrap();
    o.add_tensor(TensorSpec::new(&[2])).unwrap();
    check(o, "tensor 1");
    let mut o = build::<f32>(Algorithm::Vsgd);
    o.add_tensor(TensorSpec::new(&[1]).name("extra")).unwrap();
    check(o, "tensor 4 (\"extra\")");
    let mut o = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
    o.add_group(Config::default_for(Algorithm::Vsgd)).unwrap();
    o.add_tensor(TensorSpec::new(&[3, 4]).name("v")).unwrap();
    check(o, "tensor 0 (\"v\")");
    let o = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
    check(o, "groups");
}

#[test]
fn serde_round_trips_through_messagepack_and_json() {
    let o = trained::<f32>(Algorithm::ConstantVsgd, 4);
    let mp = rmp_serde::to_vec(&o).unwrap();
    let back: Optimizer = rmp_serde::from_slice(&mp).unwrap();
    assert_eq!(
        checkpoint::save(&back).unwrap(),
        checkpoint::save(&o).unwrap()
    );
    let js = serde_json::to_string(&o).unwrap();
    let back: Optimizer = serde_json::from_str(&js).unwrap();
    assert_eq!(
        checkpoint::save(&back).unwrap(),
        checkpoint::save(&o).unwrap()
    );
    let mut bad = mp.clone();
    let n = bad.len();
    bad[n - 20] ^= 4;
    assert!(rmp_serde::from_slice::<Optimizer>(&bad).is_err());
}

// ------------------------------------------------- the documented schema, via rmp-serde

/// MessagePack `bin` (rmp-serde maps serde bytes to `bin`).
#[derive(Debug, PartialEq, Clone)]
struct Bin(Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bin")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// docs/checkpoint-format.md, element 3.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct Header {
    library: String,
    algorithm: String,
    policy: String,
    groups: Vec<Group>,
    shard: (u64, u64),
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct Group {
    hyper: indexmap_free::Ordered,
    schedule: indexmap_free::Ordered,
}

/// docs/checkpoint-format.md, element 4 (one entry).
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct Tensor {
    name: Option<String>,
    shape: Vec<u64>,
    dtype: String,
    group: u64,
    step: u64,
    range: (u64, u64),
    state: Vec<(String, Bin)>,
}

/// Small ordered maps (string → scalar) without extra crates.
mod indexmap_free {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Debug, PartialEq, Clone, Serialize, Deserialize)]
    #[serde(untagged)]
    pub enum Scalar {
        Bool(bool),
        U(u64),
        F(f64),
        S(String),
    }

    #[derive(Debug, PartialEq, Clone)]
    pub struct Ordered(pub Vec<(String, Scalar)>);

    impl Serialize for Ordered {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in &self.0 {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }

    impl<'de> Deserialize<'de> for Ordered {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Ordered;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                    let mut v = Vec::new();
                    while let Some(e) = a.next_entry()? {
                        v.push(e);
                    }
                    Ok(Ordered(v))
                }
            }
            d.deserialize_map(V)
        }
    }
}

/// Decodes a checkpoint with rmp-serde, following only the documentation.
fn decode_documented(bytes: &[u8]) -> (String, u64, Header, Vec<Tensor>, u64) {
    #[derive(Deserialize)]
    struct TensorRaw {
        name: Option<String>,
        shape: Vec<u64>,
        dtype: String,
        group: u64,
        step: u64,
        range: (u64, u64),
        state: std::collections::BTreeMap<String, Bin>,
    }
    let (name, version, header, tensors, sum): (String, u64, Header, Vec<TensorRaw>, u64) =
        rmp_serde::from_slice(bytes).unwrap();
    let tensors = tensors
        .into_iter()
        .map(|t| Tensor {
            name: t.name,
            shape: t.shape,
            dtype: t.dtype,
            group: t.group,
            step: t.step,
            range: t.range,
            state: t.state.into_iter().collect(),
        })
        .collect();
    (name, version, header, tensors, sum)
}

/// Encodes a checkpoint with rmp-serde from the documented parts (state arrays in `order`).
fn encode_documented(header: &Header, tensors: &[Tensor], order: &[&str]) -> Vec<u8> {
    use rmp_serde::encode::write_named;
    let mut out = vec![0x95];
    write_named(&mut out, "vsgd-checkpoint").unwrap();
    write_named(&mut out, &1u64).unwrap();
    write_named(&mut out, header).unwrap();
    // Tensor maps with `state` as a map in `order`.
    rmp::encode::write_array_len(&mut out, tensors.len() as u32).unwrap();
    for t in tensors {
        rmp::encode::write_map_len(&mut out, 7).unwrap();
        for (k, v) in [
            ("name", rmp_serde::to_vec(&t.name).unwrap()),
            ("shape", rmp_serde::to_vec(&t.shape).unwrap()),
            ("dtype", rmp_serde::to_vec(&t.dtype).unwrap()),
            ("group", rmp_serde::to_vec(&t.group).unwrap()),
            ("step", rmp_serde::to_vec(&t.step).unwrap()),
            ("range", rmp_serde::to_vec(&t.range).unwrap()),
        ] {
            write_named(&mut out, k).unwrap();
            out.extend_from_slice(&v);
        }
        write_named(&mut out, "state").unwrap();
        let present: Vec<_> = order
            .iter()
            .filter_map(|name| t.state.iter().find(|(k, _)| k == name))
            .collect();
        rmp::encode::write_map_len(&mut out, present.len() as u32).unwrap();
        for (k, v) in present {
            write_named(&mut out, k).unwrap();
            write_named(&mut out, v).unwrap();
        }
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.push(0xcf);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

fn documented_parts(o: &Optimizer) -> (Header, Vec<Tensor>) {
    let bytes = checkpoint::save(o).unwrap();
    let (name, version, header, tensors, sum) = decode_documented(&bytes);
    assert_eq!((name.as_str(), version), ("vsgd-checkpoint", 1));
    assert_eq!(sum, xxhash_rust::xxh3::xxh3_64(&bytes[..bytes.len() - 9]));
    assert_eq!(bytes[bytes.len() - 9], 0xcf);
    (header, tensors)
}

#[test]
fn an_independent_messagepack_library_reads_and_writes_the_documented_schema() {
    for algorithm in Algorithm::ALL {
        let o = trained::<f32>(algorithm, 3);
        let (header, tensors) = documented_parts(&o);
        assert_eq!(header.algorithm, algorithm.name());
        let hyper_names: Vec<&str> = header.groups[0]
            .hyper
            .0
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(hyper_names, algorithm.hyper_names());
        for (k, t) in tensors.iter().enumerate() {
            let info = o.tensor_info(TensorId(k)).unwrap();
            assert_eq!(t.step, info.step);
            for &name in algorithm.state_names() {
                let (_, bin) = t.state.iter().find(|(n, _)| n == name).unwrap();
                let expect: Vec<u8> = o
                    .state::<f32>(TensorId(k), name)
                    .unwrap()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                assert_eq!(bin.0, expect, "{name} is little-endian bytes in a bin");
            }
        }
        // rmp-serde writing the documented parts gives our exact bytes.
        let again = encode_documented(&header, &tensors, algorithm.state_names());
        assert_eq!(again, checkpoint::save(&o).unwrap());
    }
}

// ------------------------------------------------------------------------- bad input

fn small() -> Vec<u8> {
    checkpoint::save(&trained::<f32>(Algorithm::Vsgd, 2)).unwrap()
}

#[test]
fn truncation_anywhere_is_reported() {
    let good = small();
    for n in 0..good.len() {
        match checkpoint::load(&good[..n]) {
            Err(CheckpointError::Truncated { .. } | CheckpointError::LengthOutOfRange { .. }) => {}
            Err(CheckpointError::BadMagic) if n == 0 => panic!("empty input is truncated"),
            other => panic!("cut at {n}: {other:?}"),
        }
    }
}

#[test]
fn every_bit_flip_is_rejected() {
    let good = small();
    for i in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[i / 8] ^= 1 << (i % 8);
        let e = checkpoint::load(&bad).expect_err(&format!("bit {i} flipped loaded"));
        // A flip inside the state arrays (or a float) can only be caught by the checksum.
        let _ = e.to_string();
    }
    // A flip in a state array's bytes: the checksum says so.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 12] ^= 0x10;
    assert!(
        matches!(
            checkpoint::load(&bad),
            Err(CheckpointError::ChecksumMismatch { .. })
        ),
        "{:?}",
        checkpoint::load(&bad)
    );
}

#[test]
fn wrong_magic_and_future_versions_are_named() {
    let good = small();
    for bad in [
        &b"PK\x03\x04zipfile"[..],
        b"\x95\xafvsgd-checkpoinT",
        b"{}",
        &[0u8; 64],
    ] {
        assert_eq!(
            checkpoint::load(bad).unwrap_err(),
            CheckpointError::BadMagic
        );
    }
    let mut future = good.clone();
    assert_eq!(future[17], 1);
    future[17] = 3;
    assert_eq!(
        checkpoint::load(&future).unwrap_err(),
        CheckpointError::UnsupportedVersion {
            version: 3,
            supported: 2
        }
    );
    future[17] = 0xcf; // uint 64: a huge version, still named
    future.splice(18..18, [0xff; 8]);
    assert!(matches!(
        checkpoint::load(&future).unwrap_err(),
        CheckpointError::UnsupportedVersion {
            version: u64::MAX,
            ..
        }
    ));
    let e = checkpoint::load(&[]).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Truncated { offset: 0 }),
        "{e:?}"
    );
}

/// Re-encodes documented parts after `edit`, so the checksum is right and the decoder's
/// validation (not the checksum) must catch the problem.
fn edited(edit: impl FnOnce(&mut Header, &mut Vec<Tensor>)) -> Result<Optimizer, CheckpointError> {
    let o = trained::<f32>(Algorithm::Vsgd, 2);
    let (mut header, mut tensors) = documented_parts(&o);
    edit(&mut header, &mut tensors);
    checkpoint::load(&encode_documented(&header, &tensors, &["mug", "bg", "bhg"]))
}

#[test]
fn inconsistent_contents_are_typed_errors() {
    use indexmap_free::Scalar;
    assert!(edited(|_, _| {}).is_ok());
    let inconsistent = |r: Result<Optimizer, CheckpointError>, needle: &str| match r {
        Err(e @ CheckpointError::Inconsistent { .. }) => {
            assert!(e.to_string().contains(needle), "'{e}' lacks '{needle}'")
        }
        other => panic!("{other:?}"),
    };
    inconsistent(edited(|_, t| t[0].shape = vec![3, 5]), "tensor 0 (\"w\")");
    inconsistent(
        edited(|_, t| {
            let bg = t[3].state.iter_mut().find(|(n, _)| n == "bg").unwrap();
            bg.1 .0.pop().unwrap();
        }),
        "'bg'",
    );
    inconsistent(edited(|_, t| t[0].range = (0, 11)), "unsharded");
    inconsistent(edited(|_, t| t[0].range = (5, 2)), "range");
    inconsistent(edited(|_, t| t[1].group = 2), "group 2");
    inconsistent(
        edited(|_, t| t[0].shape = vec![1 << 40, 1 << 40]),
        "too large",
    );
    let invalid = |r: Result<Optimizer, CheckpointError>| {
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                CheckpointError::Invalid { .. } | CheckpointError::Optimizer(_)
            ),
            "{e:?}"
        );
    };
    invalid(edited(|h, _| h.algorithm = "rmsprop".into()));
    invalid(edited(|h, _| h.policy = "ignore".into()));
    invalid(edited(|_, t| t[0].dtype = "f8".into()));
    // Known names that version 1 (what `trained` writes) does not hold.
    invalid(edited(|_, t| t[0].dtype = "f16".into()));
    invalid(edited(|_, t| t[0].dtype = "bf16".into()));
    invalid(edited(|h, _| {
        h.groups[0].hyper.0.retain(|(k, _)| k != "tau2")
    }));
    invalid(edited(|h, _| {
        h.groups[0].hyper.0.push(("beta1".into(), Scalar::F(0.9)))
    }));
    invalid(edited(|h, _| h.groups[0].hyper.0[0].1 = Scalar::F(-1.0)));
    invalid(edited(|h, _| h.groups[0].hyper.0[8].1 = Scalar::F(1.0)));
    invalid(edited(|h, _| {
        h.groups[1].schedule.0[0].1 = Scalar::S("linear".into())
    }));
    invalid(edited(|h, _| h.groups.clear()));
    invalid(edited(|h, _| h.shard = (3, 2)));
    let malformed = edited(|_, t| t[0].state.truncate(2)).unwrap_err();
    assert!(
        matches!(malformed, CheckpointError::Malformed { .. }),
        "{malformed:?}"
    );
}

#[test]
fn absurd_length_fields_are_rejected_before_allocating() {
    let good = small();
    // The tensors array header: claim 2^32 − 1 tensors.
    let c = Checkpoint::parse(&good).unwrap();
    assert_eq!(c.tensors.len(), 4);
    let at = good
        .windows(4)
        .position(|w| w == [0x94, 0x87, 0xa4, b'n'])
        .expect("tensors array (fixarray 4) then the first tensor map");
    for claim in [
        [0xdd, 0xff, 0xff, 0xff, 0xff],
        [0xdd, 0x7f, 0xff, 0xff, 0xff],
    ] {
        let mut bad = good[..at].to_vec();
        bad.extend_from_slice(&claim);
        bad.extend_from_slice(&good[at + 1..]);
        let e = checkpoint::load(&bad).unwrap_err();
        assert!(
            matches!(
                e,
                CheckpointError::LengthOutOfRange {
                    what: "tensors",
                    ..
                }
            ),
            "{e:?}"
        );
    }
    // A state array claiming 4 GiB − 1 bytes.
    let at = good
        .windows(3)
        .position(|w| w == [0xa3, b'm', b'u'])
        .unwrap()
        + 4;
    assert_eq!(good[at], 0xc4, "bin 8 of the first array");
    let mut bad = good[..at].to_vec();
    bad.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff]);
    bad.extend_from_slice(&good[at + 2..]);
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(
        matches!(
            e,
            CheckpointError::LengthOutOfRange {
                claimed: 0xffff_ffff,
                ..
            }
        ),
        "{e:?}"
    );
    // Strings and maps likewise.
    let at = good.windows(8).position(|w| w == *b"\xa7library").unwrap();
    let mut bad = good[..at].to_vec();
    bad.extend_from_slice(&[0xdb, 0xff, 0xff, 0xff, 0xf0]);
    bad.extend_from_slice(&good[at + 1..]);
    assert!(matches!(
        checkpoint::load(&bad).unwrap_err(),
        CheckpointError::LengthOutOfRange { .. }
    ));
}

#[test]
fn trailing_bytes_and_missing_checksum_are_rejected() {
    let good = small();
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        checkpoint::load(&long).unwrap_err(),
        CheckpointError::Malformed {
            what: "end of input",
            ..
        }
    ));
    let mut wrong = good.clone();
    let n = wrong.len();
    wrong[n - 1] ^= 1;
    assert!(matches!(
        checkpoint::load(&wrong).unwrap_err(),
        CheckpointError::ChecksumMismatch { .. }
    ));
}

#[test]
fn failed_file_save_leaves_the_previous_file() {
    let dir = tempdir("fail");
    let path = dir.join("ckpt");
    let o = trained::<f32>(Algorithm::Sgdm, 2);
    checkpoint::save_file(&o, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    // The target is a directory now: the rename fails, the old contents stay, no temp file
    // remains.
    let blocked = dir.join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("x"), b"keep").unwrap();
    let e = checkpoint::save_file(&o, &blocked).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Io { op: "rename", .. }),
        "{e:?}"
    );
    assert_eq!(std::fs::read(blocked.join("x")).unwrap(), b"keep");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let e = checkpoint::load_file(dir.join("absent")).unwrap_err();
    assert!(e.to_string().contains("absent"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Writes the fuzz seed corpus (run with VSGD_WRITE_FUZZ_SEEDS=1).
#[test]
fn fuzz_seeds_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/checkpoint_decode");
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for algorithm in Algorithm::ALL {
        let mut o = Optimizer::new(Config::default_for(algorithm)).unwrap();
        o.add_tensor(TensorSpec::new(&[2]).name("w")).unwrap();
        o.add_tensor(TensorSpec::new(&[]).dtype(DType::F64))
            .unwrap();
        let mut p = [0.5f32, -1.0];
        o.step_tensor(TensorId(0), &mut p, &[0.1, 0.2]).unwrap();
        seeds.push((algorithm.name().to_string(), checkpoint::save(&o).unwrap()));
    }
    // Every kind of tensor (16-bit parameters, bf16 state with seeds), two groups, clipping
    // and the global clock: the decoder's version-2 paths.
    let mut o = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
    let g1 = o.add_group(Config::default_for(Algorithm::Vsgd)).unwrap();
    o.set_clip_norm(Some(2.0)).unwrap();
    o.set_schedule_clock(vsgd::ScheduleClock::Global);
    o.add_tensor(TensorSpec::new(&[3]).dtype(DType::Bf16))
        .unwrap();
    let sr = TensorSpec::new(&[4])
        .dtype(DType::Bf16)
        .state_dtype(DType::Bf16);
    o.add_tensor(sr.seed(9).name("sr")).unwrap();
    let f32_sr = TensorSpec::new(&[2]).state_dtype(DType::Bf16).seed(11);
    o.add_tensor(f32_sr.group(g1)).unwrap();
    o.add_tensor(TensorSpec::new(&[2]).dtype(DType::F16))
        .unwrap();
    o.add_tensor(TensorSpec::new(&[]).dtype(DType::F64))
        .unwrap();
    let h = |x: f32| vsgd::bf16::from_f32(x);
    let (mut p0, mut p1) = ([h(1.0), h(-0.5), h(0.25)], [h(0.5); 4]);
    let (mut p2, mut p3, mut p4) = ([0.5f32, -0.25], [vsgd::f16::from_f32(0.75); 2], [2.0f64]);
    let r = o
        .step_any(
            &mut [
                (&mut p0[..]).into(),
                (&mut p1[..]).into(),
                (&mut p2[..]).into(),
                (&mut p3[..]).into(),
                (&mut p4[..]).into(),
            ],
            &[
                Some((&[h(0.1), h(0.2), h(-0.3)][..]).into()),
                Some((&[h(-1.0); 4][..]).into()),
                Some((&[0.3f32, 0.1][..]).into()),
                Some((&[vsgd::f16::from_f32(0.5); 2][..]).into()),
                Some((&[1.5f64][..]).into()),
            ],
        )
        .unwrap();
    assert_eq!(r.applied, 5);
    seeds.push(("mixed".to_string(), checkpoint::save(&o).unwrap()));
    let o = trained::<f32>(Algorithm::Vsgd, 2);
    for (i, s) in checkpoint::save_shards(&o, 3)
        .unwrap()
        .into_iter()
        .enumerate()
    {
        seeds.push((format!("vsgd-shard{i}of3"), s));
    }
    if std::env::var_os("VSGD_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    // The committed seeds are valid inputs (so the fuzzer starts from deep coverage).
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/checkpoint_decode is committed") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        Checkpoint::parse(&bytes).unwrap();
    }
}

// ------------------------------------------------------------------ random mutations

fn mutate(good: &[u8], ops: &[(u8, usize, u8)], fix_checksum: bool) -> Vec<u8> {
    let mut v = good.to_vec();
    for &(kind, at, byte) in ops {
        if v.is_empty() {
            break;
        }
        let i = at % v.len();
        match kind % 5 {
            0 => v[i] ^= 1 << (byte % 8),
            1 => v[i] = byte,
            2 => v.truncate(i),
            3 => v.insert(i, byte),
            _ => {
                v.remove(i);
            }
        }
    }
    if fix_checksum && v.len() >= 9 {
        let body = v.len() - 9;
        let sum = xxhash_rust::xxh3::xxh3_64(&v[..body]);
        v[body] = 0xcf;
        v[body + 1..].copy_from_slice(&sum.to_be_bytes());
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_mutations_never_panic_nor_load_garbage(
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
        fix in any::<bool>(),
    ) {
        let good = small();
        let bad = mutate(&good, &ops, fix);
        match checkpoint::load(&bad) {
            Err(e) => { let _ = e.to_string(); }
            Ok(o) => {
                // Without a repaired checksum only an unchanged file loads; with one, whatever
                // loads must be self-consistent.
                let again = checkpoint::save(&o).unwrap();
                if !fix {
                    prop_assert_eq!(&bad, &good);
                }
                prop_assert_eq!(checkpoint::save(&checkpoint::load(&again).unwrap()).unwrap(), again);
            }
        }
    }
}

#[test]
fn save_into_replaces_the_buffer_contents() {
    let o = trained::<f64>(Algorithm::AdamW, 3);
    let mut buf = b"old contents".to_vec();
    checkpoint::save_into(&o, &mut buf).unwrap();
    assert_eq!(buf, checkpoint::save(&o).unwrap());
    let cap = buf.capacity();
    checkpoint::save_into(&o, &mut buf).unwrap();
    assert_eq!(buf.capacity(), cap, "the buffer is reused");
    assert_eq!(buf, checkpoint::save(&o).unwrap());
}

#[test]
fn encoded_len_is_the_size_of_save() {
    use vsgd::{Algorithm, Config, DType, Optimizer, TensorSpec};
    for alg in Algorithm::ALL {
        let mut opt = Optimizer::new(Config::default_for(alg)).unwrap();
        assert_eq!(
            vsgd::checkpoint::encoded_len(&opt).unwrap(),
            vsgd::checkpoint::save(&opt).unwrap().len()
        );
        opt.add_tensor(TensorSpec::new(&[3, 5]).name("w")).unwrap();
        opt.add_tensor(TensorSpec::new(&[7]).dtype(DType::F64))
            .unwrap();
        opt.add_tensor(TensorSpec::new(&[0])).unwrap();
        assert_eq!(
            vsgd::checkpoint::encoded_len(&opt).unwrap(),
            vsgd::checkpoint::save(&opt).unwrap().len()
        );
    }
}
