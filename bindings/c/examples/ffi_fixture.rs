//! Writes the fixture the C and C++ tests (ffi-tests/) replay: each conformance case's inputs
//! and what the Rust API (`vsgd::Optimizer`) produces from them in f32 and f64, every number
//! as the hex digits of its IEEE-754 bits, so C reads exactly the values Rust used (decimal
//! text would depend on two parsers rounding alike) and compares results bit for bit.
//!
//! usage: cargo run -p vsgd-ffi --example ffi_fixture -- OUT CASE.json...
//!
//! Format (whitespace-separated tokens; `b64` = 16 hex digits of an f64, `b32` = 8 of an f32):
//! ```text
//! vsgd-ffi-fixture 2 <ncases>
//! case <name> <algorithm> <steps> <ntensors>
//! hyper <n> (<name> <b64>)*                 booleans as 0.0 / 1.0
//! lr <0|1> [<steps b64>]                    per-step learning rates, if the case has them
//! tensor <len> param0 <len b64> grads <steps*len b64>       (ntensors times)
//! checkpoints <n> <step>*
//! expect f32 param <ncheckpoints*total b32> state <nstate> (<name> <total b32>)*
//! expect f64 param <ncheckpoints*total b64> state <nstate> (<name> <total b64>)*
//! ```
//! (`total` = the summed lengths; values are tensor-major.)

use std::fmt::Write as _;

use serde_json::Value;
use vsgd::{Algorithm, Config, Element, GroupId, Optimizer, TensorId, TensorSpec};

struct Case {
    name: String,
    config: Config,
    hyper: Vec<(String, f64)>,
    lr: Option<Vec<f64>>,
    lens: Vec<usize>,
    param0: Vec<Vec<f64>>,
    grads: Vec<Vec<Vec<f64>>>,
    steps: usize,
    checkpoints: Vec<usize>,
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn parse(text: &str) -> Case {
    let v: Value = serde_json::from_str(text).expect("JSON");
    let algorithm = Algorithm::from_name(v["algorithm"].as_str().unwrap()).expect("algorithm");
    let mut config = Config::default_for(algorithm);
    let mut hyper = Vec::new();
    for (k, x) in v["hyper"].as_object().unwrap() {
        let x = match x {
            Value::Bool(b) => f64::from(u8::from(*b)),
            x => x.as_f64().unwrap(),
        };
        config.set(k, x).expect("hyperparameter");
        hyper.push((k.clone(), x));
    }
    config.validate().expect("valid config");
    let tensors = v["tensors"].as_array().unwrap();
    let lens: Vec<usize> = tensors
        .iter()
        .map(|t| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .product()
        })
        .collect();
    let param0: Vec<Vec<f64>> = tensors.iter().map(|t| numbers(&t["param0"])).collect();
    let grads: Vec<Vec<Vec<f64>>> = tensors
        .iter()
        .map(|t| t["grads"].as_array().unwrap().iter().map(numbers).collect())
        .collect();
    let steps = v["steps"]
        .as_u64()
        .map_or_else(|| grads.iter().map(Vec::len).min().unwrap(), |s| s as usize);
    let lr = v.get("lr_per_step").filter(|l| !l.is_null()).map(numbers);
    let checkpoints = v["expected"]["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    Case {
        name: v["name"].as_str().unwrap().to_string(),
        config,
        hyper,
        lr,
        lens,
        param0,
        grads,
        steps,
        checkpoints,
    }
}

trait Bits: Element {
    fn hex(self) -> String;
}
impl Bits for f32 {
    fn hex(self) -> String {
        format!("{:08x}", self.to_bits())
    }
}
impl Bits for f64 {
    fn hex(self) -> String {
        format!("{:016x}", self.to_bits())
    }
}

fn join<T: Bits>(xs: impl IntoIterator<Item = T>) -> String {
    xs.into_iter().map(T::hex).collect::<Vec<_>>().join(" ")
}

/// Runs the case through `vsgd::Optimizer` in `T` and appends its `expect` block.
fn expect<T: Bits>(case: &Case, out: &mut String) {
    let mut opt = Optimizer::new(case.config).unwrap();
    for &n in &case.lens {
        opt.add_tensor(TensorSpec::new(&[n]).dtype(T::DTYPE))
            .unwrap();
    }
    let mut params: Vec<Vec<T>> = case
        .param0
        .iter()
        .map(|p| p.iter().map(|&x| T::from_f64(x)).collect())
        .collect();
    let mut recorded = Vec::new();
    for s in 0..case.steps {
        if let Some(lr) = &case.lr {
            opt.set_lr(GroupId(0), lr[s]).unwrap();
        }
        let grads: Vec<Vec<T>> = case
            .grads
            .iter()
            .map(|g| g[s].iter().map(|&x| T::from_f64(x)).collect())
            .collect();
        let g: Vec<&[T]> = grads.iter().map(Vec::as_slice).collect();
        let mut p: Vec<&mut [T]> = params.iter_mut().map(Vec::as_mut_slice).collect();
        let report = opt.step(&mut p, &g).unwrap();
        assert_eq!(
            report.skipped, 0,
            "{}: a conformance case skipped a step",
            case.name
        );
        if case.checkpoints.contains(&(s + 1)) {
            recorded.extend(params.iter().flatten().copied());
        }
    }
    let names = opt.algorithm().state_names();
    writeln!(out, "expect {}", T::DTYPE.name()).unwrap();
    writeln!(out, "param {}", join(recorded)).unwrap();
    writeln!(out, "state {}", names.len()).unwrap();
    for name in names {
        let all =
            (0..case.lens.len()).flat_map(|k| opt.state::<T>(TensorId(k), name).unwrap().to_vec());
        writeln!(out, "{name} {}", join(all)).unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out_path, cases) = args
        .split_first()
        .expect("usage: ffi_fixture OUT CASE.json...");
    let mut out = format!("vsgd-ffi-fixture 2 {}\n", cases.len());
    for path in cases {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let c = parse(&text);
        let o = &mut out;
        writeln!(
            o,
            "case {} {} {} {}",
            c.name,
            c.config.algorithm(),
            c.steps,
            c.lens.len()
        )
        .unwrap();
        let hyper: Vec<String> = c
            .hyper
            .iter()
            .map(|(k, x)| format!("{k} {}", x.hex()))
            .collect();
        writeln!(o, "hyper {} {}", c.hyper.len(), hyper.join(" ")).unwrap();
        match &c.lr {
            None => writeln!(o, "lr 0").unwrap(),
            Some(l) => writeln!(o, "lr 1 {}", join(l[..c.steps].iter().copied())).unwrap(),
        }
        for k in 0..c.lens.len() {
            writeln!(
                o,
                "tensor {} param0 {}",
                c.lens[k],
                join(c.param0[k].iter().copied())
            )
            .unwrap();
            let g = c.grads[k][..c.steps].iter().flatten().copied();
            writeln!(o, "grads {}", join(g)).unwrap();
        }
        let cps: Vec<String> = c.checkpoints.iter().map(usize::to_string).collect();
        writeln!(o, "checkpoints {} {}", cps.len(), cps.join(" ")).unwrap();
        expect::<f32>(&c, o);
        expect::<f64>(&c, o);
    }
    std::fs::write(out_path, out).unwrap_or_else(|e| panic!("{out_path}: {e}"));
}
