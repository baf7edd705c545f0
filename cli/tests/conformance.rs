//! Replays every conformance case in ../tests/data/conformance through `vsgd::Optimizer` in f32
//! and f64 and applies the spec's tolerance rule: for every array,
//! `max |x − expected| / (1 + |expected|)` ≤ the case's tolerance for that dtype (and array).

// The binary's replay code, compiled into this test (it refers to its sibling module).
#[allow(dead_code)]
#[path = "../src/replay.rs"]
mod replay;
#[allow(dead_code)]
#[path = "../src/replay_ckpt.rs"]
mod replay_ckpt;

use serde_json::Value;
use std::path::PathBuf;
use vsgd::Element;

fn flat(v: &Value, out: &mut Vec<Option<f64>>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flat(x, out)),
        x => out.push(x.as_f64()),
    }
}

fn worst(got: &Value, want: &Value) -> f64 {
    let (mut g, mut w) = (Vec::new(), Vec::new());
    flat(got, &mut g);
    flat(want, &mut w);
    if g.len() != w.len() {
        return f64::INFINITY;
    }
    g.iter().zip(&w).fold(0.0, |acc, (g, w)| {
        let w = w.expect("expected values are numbers");
        match g {
            Some(g) if g.is_finite() => acc.max((g - w).abs() / (1.0 + w.abs())),
            _ => f64::INFINITY,
        }
    })
}

fn cases() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/conformance");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 17,
        "conformance cases missing in {}",
        dir.display()
    );
    v
}

/// Replays a parsed case from the start and returns the result object.
fn replay_case<T: Element>(case: &replay::Case) -> Value {
    let mut opt = case.optimizer::<T>().unwrap();
    let mut params = case.params::<T>();
    let mut recorded = Vec::new();
    case.run(&mut opt, &mut params, 0, case.steps, &mut recorded)
        .unwrap();
    replay::result::<T>(case, &opt, recorded)
}

fn run<T: Element>(dtype: &str) {
    let mut failures = Vec::new();
    for path in cases() {
        let text = std::fs::read_to_string(&path).unwrap();
        let raw: Value = serde_json::from_str(&text).unwrap();
        let got = replay_case::<T>(&replay::Case::parse(&text).unwrap());
        let expected = &raw["expected"];
        assert_eq!(got["checkpoints"], expected["checkpoints"]);
        let tol = &raw["tolerance"][dtype];
        let limit = |name: &str| {
            tol.get(name)
                .and_then(Value::as_f64)
                .or(tol.as_f64())
                .unwrap()
        };
        let mut arrays = vec![("param".to_string(), &got["param"], &expected["param"])];
        for (name, want) in expected["state"].as_object().unwrap() {
            arrays.push((name.clone(), &got["state"][name], want));
        }
        for (name, got, want) in arrays {
            let err = worst(got, want);
            if err > limit(&name) {
                failures.push(format!(
                    "{} {dtype} {name}: {err:.3e} > {:.3e}",
                    path.display(),
                    limit(&name)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_case_passes_in_f32() {
    run::<f32>("f32");
}

#[test]
fn every_case_passes_in_f64() {
    run::<f64>("f64");
}

/// The tolerance rule is not vacuous: a perturbed result fails it.
#[test]
fn a_wrong_result_fails_the_rule() {
    let path = &cases()[0];
    let text = std::fs::read_to_string(path).unwrap();
    let raw: Value = serde_json::from_str(&text).unwrap();
    let mut case = replay::Case::parse(&text).unwrap();
    case.grads[0][0][0] += 1e-3;
    let got = replay_case::<f64>(&case);
    assert!(worst(&got["param"], &raw["expected"]["param"]) > 1e-9);
}

#[test]
fn bad_cases_are_rejected_with_a_reason() {
    let text = std::fs::read_to_string(&cases()[0]).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["hyper"]["lr"] = Value::from(-1.0);
    let e = replay::Case::parse(&v.to_string()).err().unwrap();
    assert!(e.contains("lr"), "{e}");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["tensors"][0]["param0"] = Value::from(vec![1.0]);
    assert!(replay::Case::parse(&v.to_string()).is_err());
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["algorithm"] = Value::from("lion");
    assert!(replay::Case::parse(&v.to_string())
        .unwrap_err()
        .contains("lion"));
    assert!(replay::Case::parse("{").is_err());
}
