//! Format pins: the exact bytes of a tiny checkpoint, and one decode test per released format
//! version. Regenerate the committed file (only when the format deliberately changes, with a
//! new version) with `VSGD_BLESS_CHECKPOINT=1 cargo test --lib checkpoint` (its own
//! variable: regenerating the C header, `VSGD_BLESS_HEADER`, can never accept a format
//! change).

use super::format::{le_chunks, le_chunks_portable};
use super::*;
use crate::config::{Config, VsgdConfig};
use crate::kernels::NonFinitePolicy;
use crate::schedule::{LrSchedule, Schedule};

const V1_TINY: &[u8] = include_bytes!("../../tests/data/checkpoint/v1-tiny.vsgdckpt");
const V1_PATH: &str = "tests/data/checkpoint/v1-tiny.vsgdckpt";
const V2_TINY: &[u8] = include_bytes!("../../tests/data/checkpoint/v2-tiny-global-clock.vsgdckpt");
const V2_PATH: &str = "tests/data/checkpoint/v2-tiny-global-clock.vsgdckpt";

/// [`tiny`] under the global schedule clock at global step 5, with gradient clipping at
/// norm 1.5: what version 2 exists for.
fn tiny_global() -> Optimizer {
    let mut opt = tiny();
    opt.set_schedule_clock(crate::ScheduleClock::Global);
    opt.set_global_step(5);
    opt.set_clip_norm(Some(1.5)).unwrap();
    opt
}

/// Special values that must survive bit-exactly: −0, subnormals, ±∞, NaN with a payload.
const W_STATE: [[u32; 2]; 3] = [
    [0x8000_0000, 0x3fc0_0000],
    [0x0000_0001, 0x7f80_0000],
    [0x7fc0_0001, 0xc050_0000],
];
const B_STATE: [u64; 3] = [
    0xc004_0000_0000_0000,
    0x0000_0000_0000_0001,
    0x7ff8_0000_0000_0123,
];

/// VSGD, two groups (the second with a step-decay schedule and warm-up), policy
/// `propagate`, an f32 tensor `w` of shape [2] at step 3 and an unnamed f64 scalar at step 7.
fn tiny() -> Optimizer {
    let mut opt = Optimizer::new(Config::Vsgd(VsgdConfig {
        lr: 0.05,
        ghattg: 10.0,
        ..Default::default()
    }))
    .unwrap();
    let g1 = opt
        .add_group(Config::Vsgd(VsgdConfig {
            weight_decay: 0.01,
            maximize: true,
            ..Default::default()
        }))
        .unwrap();
    opt.set_schedule(
        g1,
        LrSchedule {
            schedule: Schedule::StepDecay {
                every: 10,
                factor: 0.5,
            },
            warmup: 2,
        },
    )
    .unwrap();
    opt.set_policy(NonFinitePolicy::Propagate);
    let w = opt.add_tensor(TensorSpec::new(&[2]).name("w")).unwrap();
    let b = opt
        .add_tensor(TensorSpec::new(&[]).dtype(DType::F64).group(g1))
        .unwrap();
    for (j, name) in ["mug", "bg", "bhg"].iter().enumerate() {
        let s = opt.state_mut::<f32>(w, name).unwrap();
        s[0] = f32::from_bits(W_STATE[j][0]);
        s[1] = f32::from_bits(W_STATE[j][1]);
        opt.state_mut::<f64>(b, name).unwrap()[0] = f64::from_bits(B_STATE[j]);
    }
    opt.set_step_count(w, 3).unwrap();
    opt.set_step_count(b, 7).unwrap();
    opt
}

#[test]
fn v1_bytes_are_pinned() {
    assert!(
        std::env::var_os("VSGD_BLESS").is_none(),
        "VSGD_BLESS is retired: VSGD_BLESS_CHECKPOINT rewrites the pinned checkpoint, \
         VSGD_BLESS_HEADER the C header"
    );
    let bytes = format::encode_to_vec(&tiny(), 0, 1, "vsgd 0.1.0").unwrap();
    if std::env::var_os("VSGD_BLESS_CHECKPOINT").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/checkpoint/v1-tiny.vsgdckpt"
        );
        std::fs::write(path, &bytes).unwrap();
    }
    assert_eq!(
        bytes, V1_TINY,
        "the encoder no longer writes {V1_PATH}: a format change needs a new version"
    );
}

#[test]
fn v2_bytes_are_pinned() {
    let bytes = format::encode_to_vec(&tiny_global(), 0, 1, "vsgd 0.1.0").unwrap();
    if std::env::var_os("VSGD_BLESS_CHECKPOINT").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/checkpoint/v2-tiny-global-clock.vsgdckpt"
        );
        std::fs::write(path, &bytes).unwrap();
    }
    assert_eq!(
        bytes, V2_TINY,
        "the encoder no longer writes {V2_PATH}: a format change needs a new version"
    );
    // The default clock still writes version 1, byte for byte what version-1 readers read.
    let v1 = format::encode_to_vec(&tiny(), 0, 1, "vsgd 0.1.0").unwrap();
    assert_eq!(v1, V1_TINY);
}

#[test]
fn v2_decodes_with_its_clock() {
    let c = Checkpoint::parse(V2_TINY).unwrap();
    assert_eq!(c.version, 2);
    assert_eq!((c.clock, c.global_step), (crate::ScheduleClock::Global, 5));
    assert_eq!(c.clip_norm, Some(1.5));
    let opt = load(V2_TINY).unwrap();
    assert_eq!(opt.schedule_clock(), crate::ScheduleClock::Global);
    assert_eq!(opt.global_step(), 5);
    assert_eq!(opt.clip_norm(), Some(1.5));
    // (The state holds NaNs, so compare the bytes, not the optimizers.)
    assert_eq!(
        format::encode_to_vec(&opt, 0, 1, "vsgd 0.1.0").unwrap(),
        V2_TINY
    );
    // Version 1 reads as the per-tensor clock at global step 0.
    let c1 = Checkpoint::parse(V1_TINY).unwrap();
    assert_eq!(
        (c1.clock, c1.global_step),
        (crate::ScheduleClock::PerTensor, 0)
    );
    // A version-1 header with a clock key, or a version-2 header without one, is malformed.
    let mut v1_with_v2_header = V2_TINY.to_vec();
    v1_with_v2_header[17] = 1;
    assert!(Checkpoint::parse(&v1_with_v2_header).is_err());
    let mut v2_with_v1_header = V1_TINY.to_vec();
    v2_with_v1_header[17] = 2;
    assert!(Checkpoint::parse(&v2_with_v1_header).is_err());
}

#[test]
fn v1_decodes() {
    let c = Checkpoint::parse(V1_TINY).unwrap();
    assert_eq!((c.version, c.library), (1, "vsgd 0.1.0"));
    assert_eq!(c.algorithm, crate::Algorithm::Vsgd);
    assert_eq!(c.policy, NonFinitePolicy::Propagate);
    assert_eq!((c.shard_index, c.shard_count), (0, 1));
    assert_eq!(c.groups.len(), 2);
    assert_eq!(c.groups[0].config.get("lr"), Some(0.05));
    assert_eq!(c.groups[0].config.get("ghattg"), Some(10.0));
    assert_eq!(c.groups[0].schedule, LrSchedule::default());
    assert_eq!(c.groups[1].config.get("weight_decay"), Some(0.01));
    assert_eq!(c.groups[1].config.get("maximize"), Some(1.0));
    assert_eq!(
        c.groups[1].schedule,
        LrSchedule {
            schedule: Schedule::StepDecay {
                every: 10,
                factor: 0.5
            },
            warmup: 2
        }
    );
    let opt = load(V1_TINY).unwrap();
    let (w, b) = (TensorId(0), TensorId(1));
    let wi = opt.tensor_info(w).unwrap();
    assert_eq!(
        (wi.name, wi.shape, wi.dtype, wi.group.0, wi.step),
        (Some("w"), &[2][..], DType::F32, 0, 3)
    );
    let bi = opt.tensor_info(b).unwrap();
    assert_eq!(
        (bi.name, bi.shape, bi.dtype, bi.group.0, bi.step),
        (None, &[][..], DType::F64, 1, 7)
    );
    for (j, name) in ["mug", "bg", "bhg"].iter().enumerate() {
        let s: Vec<u32> = opt
            .state::<f32>(w, name)
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(s, W_STATE[j]);
        assert_eq!(opt.state::<f64>(b, name).unwrap()[0].to_bits(), B_STATE[j]);
    }
    assert_eq!(opt.lr_at(GroupId(1), 11).unwrap(), 0.1 * 0.5);
}

#[test]
fn library_version_is_written() {
    let c = save(&tiny()).unwrap();
    assert_eq!(Checkpoint::parse(&c).unwrap().library, LIBRARY);
    assert!(LIBRARY.starts_with("vsgd ") && LIBRARY.len() > 5);
}

#[test]
fn portable_byte_paths_match_fast_ones() {
    let xs: Vec<f32> = (0..100_000).map(|i| f32::from_bits(i * 40_503)).collect();
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    le_chunks(&xs, |c| fast.extend_from_slice(c));
    le_chunks_portable(&xs, |c| slow.extend_from_slice(c));
    assert_eq!(fast, slow);
    let expect: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(fast, expect);
    let (mut a, mut b) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
    format::from_le(&fast, &mut a);
    format::from_le_portable(&fast, &mut b);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&xs));
    assert_eq!(bits(&b), bits(&xs));
}
