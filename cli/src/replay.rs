//! `vsgd replay`: runs a conformance case (format `vsgd-conformance/1`, see
//! `docs/spec.md`) through [`vsgd::Optimizer`] and prints
//! `{"checkpoints": [...], "param": [[tensor...] per checkpoint], "state": {name: [tensor...]}}`.

use serde_json::{json, Map, Value};
use vsgd::{Algorithm, Config, DType, Element, GroupId, Optimizer, TensorId, TensorSpec};

/// A parsed conformance case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The configuration from `algorithm` and `hyper`.
    pub config: Config,
    /// Shapes of the tensors.
    pub shapes: Vec<Vec<usize>>,
    /// Initial parameters per tensor.
    pub param0: Vec<Vec<f64>>,
    /// `grads[k][s]`: gradient of tensor k at step s+1.
    pub grads: Vec<Vec<Vec<f64>>>,
    /// Per-step learning rates, if the case has them.
    pub lr_per_step: Option<Vec<f64>>,
    /// Steps to run.
    pub steps: usize,
    /// Steps after which the parameters are recorded.
    pub checkpoints: Vec<u64>,
}

fn numbers(v: &Value, what: &str) -> Result<Vec<f64>, String> {
    v.as_array()
        .ok_or_else(|| format!("{what}: expected an array of numbers"))?
        .iter()
        .map(|x| {
            x.as_f64()
                .ok_or_else(|| format!("{what}: not a number: {x}"))
        })
        .collect()
}

impl Case {
    /// Parses and checks a case.
    pub fn parse(text: &str) -> Result<Case, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let format = v.get("format").and_then(Value::as_str).unwrap_or("");
        if format != "vsgd-conformance/1" {
            return Err(format!(
                "format is '{format}', expected 'vsgd-conformance/1'"
            ));
        }
        let name = v
            .get("algorithm")
            .and_then(Value::as_str)
            .ok_or("missing 'algorithm'")?;
        let algorithm =
            Algorithm::from_name(name).ok_or_else(|| format!("unknown algorithm '{name}'"))?;
        let mut config = Config::default_for(algorithm);
        let hyper = v
            .get("hyper")
            .and_then(Value::as_object)
            .ok_or("missing 'hyper' object")?;
        for (key, value) in hyper {
            let x = match value {
                Value::Bool(b) => f64::from(u8::from(*b)),
                Value::Number(n) => n
                    .as_f64()
                    .ok_or_else(|| format!("hyper.{key}: bad number"))?,
                _ => return Err(format!("hyper.{key}: expected a number or a boolean")),
            };
            config
                .set(key, x)
                .map_err(|_| format!("hyper.{key}: not a hyperparameter of {algorithm}"))?;
        }
        config.validate().map_err(|e| e.to_string())?;

        let tensors = v
            .get("tensors")
            .and_then(Value::as_array)
            .ok_or("missing 'tensors' array")?;
        let (mut shapes, mut param0, mut grads) = (Vec::new(), Vec::new(), Vec::new());
        for (k, t) in tensors.iter().enumerate() {
            let shape: Vec<usize> = t
                .get("shape")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("tensors[{k}]: missing 'shape'"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("tensors[{k}].shape: expected non-negative integers"))?;
            let len = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= 1 << 28)
                .ok_or_else(|| format!("tensors[{k}].shape: too large"))?;
            let p = numbers(
                t.get("param0").unwrap_or(&Value::Null),
                &format!("tensors[{k}].param0"),
            )?;
            if p.len() != len {
                return Err(format!(
                    "tensors[{k}].param0 has {} values, shape needs {len}",
                    p.len()
                ));
            }
            let g: Vec<Vec<f64>> = t
                .get("grads")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("tensors[{k}]: missing 'grads'"))?
                .iter()
                .enumerate()
                .map(|(s, g)| {
                    let g = numbers(g, &format!("tensors[{k}].grads[{s}]"))?;
                    if g.len() == len {
                        Ok(g)
                    } else {
                        Err(format!(
                            "tensors[{k}].grads[{s}] has {} values, shape needs {len}",
                            g.len()
                        ))
                    }
                })
                .collect::<Result<_, String>>()?;
            shapes.push(shape);
            param0.push(p);
            grads.push(g);
        }
        let available = grads.iter().map(Vec::len).min().unwrap_or(0);
        let steps = match v.get("steps") {
            Some(s) => s.as_u64().ok_or("'steps': expected an integer")? as usize,
            None => available,
        };
        if steps > available {
            return Err(format!(
                "'steps' is {steps} but only {available} gradients per tensor"
            ));
        }
        let lr_per_step = match v.get("lr_per_step") {
            None | Some(Value::Null) => None,
            Some(l) => {
                let l = numbers(l, "lr_per_step")?;
                if l.len() < steps {
                    return Err(format!(
                        "lr_per_step has {} values for {steps} steps",
                        l.len()
                    ));
                }
                Some(l)
            }
        };
        let checkpoints: Vec<u64> = v
            .pointer("/expected/checkpoints")
            .and_then(Value::as_array)
            .ok_or("missing 'expected.checkpoints'")?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<_>>()
            .ok_or("expected.checkpoints: expected integers")?;
        if let Some(&c) = checkpoints.iter().find(|&&c| c == 0 || c as usize > steps) {
            return Err(format!("checkpoint {c} is outside steps 1..={steps}"));
        }
        Ok(Case {
            config,
            shapes,
            param0,
            grads,
            lr_per_step,
            steps,
            checkpoints,
        })
    }

    /// A fresh optimizer with the case's tensors registered in element type `T`.
    pub fn optimizer<T: Element>(&self) -> Result<Optimizer, String> {
        let mut opt = Optimizer::new(self.config).map_err(|e| e.to_string())?;
        for shape in &self.shapes {
            opt.add_tensor(TensorSpec::new(shape).dtype(T::DTYPE))
                .map_err(|e| e.to_string())?;
        }
        Ok(opt)
    }

    /// Runs steps `from+1 ..= to` on `opt`, recording parameters at checkpoints into `out`.
    pub fn run<T: Element>(
        &self,
        opt: &mut Optimizer,
        params: &mut [Vec<T>],
        from: usize,
        to: usize,
        out: &mut Vec<Value>,
    ) -> Result<(), String> {
        for s in from..to {
            if let Some(l) = &self.lr_per_step {
                opt.set_lr(GroupId(0), l[s]).map_err(|e| e.to_string())?;
            }
            let grads: Vec<Vec<T>> = self
                .grads
                .iter()
                .map(|g| g[s].iter().map(|&x| T::from_f64(x)).collect())
                .collect();
            let grad_refs: Vec<&[T]> = grads.iter().map(Vec::as_slice).collect();
            let mut param_refs: Vec<&mut [T]> = params.iter_mut().map(Vec::as_mut_slice).collect();
            opt.step(&mut param_refs, &grad_refs)
                .map_err(|e| format!("step {}: {e}", s + 1))?;
            if self.checkpoints.contains(&(s as u64 + 1)) {
                out.push(json!(params.iter().map(|p| to_json(p)).collect::<Vec<_>>()));
            }
        }
        Ok(())
    }

    /// The initial parameters in element type `T`.
    pub fn params<T: Element>(&self) -> Vec<Vec<T>> {
        self.param0
            .iter()
            .map(|p| p.iter().map(|&x| T::from_f64(x)).collect())
            .collect()
    }
}

/// Numbers as JSON (non-finite values become `null`).
pub fn to_json<T: Element>(x: &[T]) -> Value {
    Value::Array(x.iter().map(|v| Value::from(v.to_f64())).collect())
}

/// The result object: checkpoints, recorded parameters and final state.
pub fn result<T: Element>(case: &Case, opt: &Optimizer, recorded: Vec<Value>) -> Value {
    let mut state = Map::new();
    for &name in opt.algorithm().state_names() {
        let arrays = (0..opt.num_tensors())
            .map(|k| to_json(opt.state::<T>(TensorId(k), name).expect("registered")))
            .collect();
        state.insert(name.to_string(), Value::Array(arrays));
    }
    json!({
        "checkpoints": case.checkpoints,
        "param": recorded,
        "state": state,
    })
}

fn replay<T: Element>(case: &Case, opts: &crate::replay_ckpt::Options) -> Result<Value, String> {
    let mut opt = case.optimizer::<T>()?;
    let mut params = case.params::<T>();
    let mut recorded = Vec::new();
    let mut from = 0;
    if let Some(at) = opts.checkpoint_at {
        case.run(&mut opt, &mut params, 0, at, &mut recorded)?;
        opt = crate::replay_ckpt::round_trip(opt)?;
        from = at;
    }
    case.run(&mut opt, &mut params, from, case.steps, &mut recorded)?;
    if let Some(path) = &opts.save {
        crate::replay_ckpt::save(&opt, path)?;
    }
    Ok(result::<T>(case, &opt, recorded))
}

/// Entry point of `vsgd replay`.
pub fn main(args: &[String]) -> Result<(), String> {
    let mut path = None;
    let mut dtype = DType::F64;
    let mut opts = crate::replay_ckpt::Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if opts.parse(a, &mut it)? {
            continue;
        }
        match a.as_str() {
            "--dtype" => {
                let d = it.next().ok_or("--dtype needs f32 or f64")?;
                dtype = DType::from_name(d).ok_or_else(|| format!("unknown dtype '{d}'"))?;
            }
            s if s.starts_with("--") => return Err(format!("unknown option '{s}'")),
            s if path.is_none() => path = Some(s.to_string()),
            s => return Err(format!("unexpected argument '{s}'")),
        }
    }
    let path = path.ok_or("replay needs a CASE.json")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let case = Case::parse(&text).map_err(|e| format!("{path}: {e}"))?;
    opts.check(&case)?;
    let out = match dtype {
        DType::F32 => replay::<f32>(&case, &opts),
        DType::F64 => replay::<f64>(&case, &opts),
        d => return Err(format!("--dtype {}: replay runs f32 or f64", d.name())),
    }
    .map_err(|e| format!("{path}: {e}"))?;
    println!("{out}");
    Ok(())
}
