//! The CLI's checkpoint paths: `vsgd replay --checkpoint-at S` prints byte-identical output to
//! the plain replay for every conformance case, both element types and several S;
//! `--save` writes a loadable file; `vsgd inspect` describes valid files and rejects every
//! corrupt one with one line on stderr and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VSGD: &str = env!("CARGO_BIN_EXE_vsgd");

fn run(args: &[&str]) -> Output {
    Command::new(VSGD).args(args).output().expect("vsgd runs")
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/conformance");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    assert!(v.len() >= 10, "conformance cases are committed");
    v
}

/// Steps a case runs: `steps`, else the gradients available (as `vsgd replay` decides).
fn steps(case: &Path) -> usize {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case).unwrap()).unwrap();
    v["steps"].as_u64().map(|s| s as usize).unwrap_or_else(|| {
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["grads"].as_array().unwrap().len())
            .min()
            .unwrap()
    })
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vsgd-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn checkpoint_at_any_step_leaves_replay_output_unchanged() {
    let mut checked = 0;
    for case in cases() {
        let case_s = case.to_str().unwrap();
        let n = steps(&case);
        for dtype in ["f32", "f64"] {
            let plain = run(&["replay", case_s, "--dtype", dtype]);
            assert!(plain.status.success(), "{case_s} {dtype}: {plain:?}");
            let mut at: Vec<usize> = vec![0, 1, n / 2, n.saturating_sub(1), n];
            at.dedup();
            for s in at {
                let resumed = run(&[
                    "replay",
                    case_s,
                    "--dtype",
                    dtype,
                    "--checkpoint-at",
                    &s.to_string(),
                ]);
                assert!(
                    resumed.status.success(),
                    "{case_s} {dtype} at {s}: {resumed:?}"
                );
                assert!(
                    resumed.stdout == plain.stdout,
                    "{case_s} {dtype}: output differs after a checkpoint at step {s}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 60);
    let case = &cases()[0];
    let too_far = run(&[
        "replay",
        case.to_str().unwrap(),
        "--checkpoint-at",
        "100000",
    ]);
    assert!(!too_far.status.success());
}

#[test]
fn save_writes_the_final_state_and_inspect_describes_it() {
    let dir = tempdir("inspect");
    let file = dir.join("final.vsgdckpt");
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/conformance/vsgd-default.json");
    let out = run(&[
        "replay",
        case.to_str().unwrap(),
        "--dtype",
        "f32",
        "--save",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let opt = vsgd::checkpoint::load_file(&file).unwrap();
    assert_eq!(opt.algorithm(), vsgd::Algorithm::Vsgd);
    let first_step = opt.step_count(vsgd::TensorId(0)).unwrap();
    assert_eq!(first_step as usize, steps(&case));

    let report = run(&["inspect", file.to_str().unwrap()]);
    assert!(report.status.success(), "{report:?}");
    let text = String::from_utf8(report.stdout).unwrap();
    for needle in [
        "algorithm: vsgd",
        "non-finite policy: skip",
        "lr=0.1",
        "ghattg=30",
        "tau1=0.81",
        "maximize=false",
        "schedule: constant",
        &format!("step {first_step}"),
        "mug ",
        "bg ",
        "bhg ",
        "effective momentum",
        "non-finite 0",
    ] {
        assert!(
            text.contains(needle),
            "inspect output lacks '{needle}':\n{text}"
        );
    }
    // Shards are described too.
    let shards = vsgd::checkpoint::split(&std::fs::read(&file).unwrap(), 3).unwrap();
    let shard = dir.join("shard1");
    std::fs::write(&shard, &shards[1]).unwrap();
    let report = run(&["inspect", shard.to_str().unwrap()]);
    assert!(report.status.success());
    assert!(String::from_utf8(report.stdout)
        .unwrap()
        .contains("shard: 1 of 3"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn inspect_rejects_every_corrupt_file_with_one_line() {
    let dir = tempdir("corrupt");
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/conformance/adam-default.json");
    let good_path = dir.join("good");
    let out = run(&[
        "replay",
        case.to_str().unwrap(),
        "--save",
        good_path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let good = std::fs::read(&good_path).unwrap();
    let n = good.len();
    let mut variants: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "truncated"),
        (
            "magic",
            b"GIF89a not a checkpoint".to_vec(),
            "not a vsgd checkpoint",
        ),
        ("truncated-head", good[..30].to_vec(), "truncated"),
        ("truncated-tail", good[..n - 4].to_vec(), "truncated"),
        ("truncated-mid", good[..n / 2].to_vec(), "truncated"),
    ];
    let mut flipped = good.clone();
    flipped[n - 30] ^= 0x01;
    variants.push(("bitflip", flipped, "checksum"));
    let mut future = good.clone();
    future[17] = 7;
    variants.push(("future", future, "version 7"));
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk");
    variants.push(("trailing", trailing, "malformed"));
    for (name, bytes, needle) in &variants {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let out = run(&["inspect", p.to_str().unwrap()]);
        assert!(!out.status.success(), "{name} accepted");
        assert!(out.stdout.is_empty(), "{name}: printed a report");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{name}: not one line: {err}");
        assert!(err.contains(needle), "{name}: '{err}' lacks '{needle}'");
    }
    let out = run(&["inspect", dir.join("absent").to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn inspect_describes_mixed_precision_tensors() {
    use vsgd::{bf16, Config, DType, Optimizer, TensorSpec};
    let dir = tempdir("mixed");
    let file = dir.join("mixed.vsgdckpt");
    let mut opt = Optimizer::new(Config::default_for(vsgd::Algorithm::Vsgd)).unwrap();
    opt.add_tensor(TensorSpec::new(&[3]).dtype(DType::Bf16).name("w"))
        .unwrap();
    opt.add_tensor(
        TensorSpec::new(&[2])
            .dtype(DType::Bf16)
            .state_dtype(DType::Bf16)
            .seed(41)
            .name("b"),
    )
    .unwrap();
    let (mut w, mut b) = ([bf16::ONE; 3], [bf16::ONE; 2]);
    let (gw, gb) = ([bf16::from_f32(0.5); 3], [bf16::from_f32(-0.25); 2]);
    opt.step_mixed(&mut [&mut w, &mut b], &[Some(&gw), Some(&gb)])
        .unwrap();
    vsgd::checkpoint::save_file(&opt, &file).unwrap();
    let report = run(&["inspect", file.to_str().unwrap()]);
    assert!(report.status.success(), "{report:?}");
    let text = String::from_utf8(report.stdout).unwrap();
    for needle in [
        "vsgd-checkpoint v2 (",
        "tensor 0 \"w\": shape [3], param bf16, state f32, group 0, step 1",
        "tensor 1 \"b\": shape [2], param bf16, state bf16 (rounding seed 41), group 0, step 1",
        "effective momentum",
    ] {
        assert!(
            text.contains(needle),
            "inspect output lacks '{needle}':\n{text}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
