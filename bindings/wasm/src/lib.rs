//! WebAssembly binding of `vsgd`: the npm package `vsgd`.
//!
//! A thin layer over the core crate: JavaScript values in, the core's [`vsgd::Optimizer`] and
//! [`vsgd::checkpoint`] do the work, JavaScript values out. It holds no algorithm code. Every
//! failure is a JavaScript `Error` carrying the core's message; nothing that JavaScript can
//! pass ends in a panic (which would be a wasm trap): values are checked here before they
//! reach code that could panic, and memory is reserved fallibly.
//!
//! The API, its rules (zero-copy views and when to re-take them) and examples are in
//! `README.md`; the TypeScript types are generated from the attributes below.
#![warn(missing_docs)]

mod buffers;
mod convert;

use js_sys::{Array, Object, Uint8Array};
use vsgd::checkpoint;
use vsgd::{
    Algorithm, Config, DType, GroupId, LrSchedule, NonFinitePolicy, StepOutcome, StepReport,
    TensorId, TensorSpec,
};
use wasm_bindgen::prelude::*;

use buffers::{Buf, Buffers};
use convert::{
    err, get, group_arg, index, new_object, set, stale, string_arg, try_vec, type_name, typed,
    ArrayKind, JsElement, OrJs, Result, TypedArray,
};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** The algorithms, by the core's names. */
export type Algorithm = "vsgd" | "constant_vsgd" | "adam" | "adamw" | "sgdm";
/**
 * Element type of a tensor's parameter and gradient: "f32", "f64", or, for mixed precision,
 * "bf16" (bfloat16) or "f16" (IEEE half), computed in f32.
 */
export type DType = "f32" | "f64" | "bf16" | "f16";
/**
 * Element type of a tensor's state: the parameter's own for f32 and f64; "f32" (the default)
 * or "bf16" (stochastic rounding) for bf16, f16 and f32 parameters.
 */
export type StateDType = "f32" | "f64" | "bf16";
/** What to do with a gradient holding NaN or ±Infinity. */
export type NonFinitePolicy = "skip" | "error" | "propagate";
/**
 * A tensor's values: a Float32Array for f32, a Float64Array for f64, a Uint16Array of the
 * raw 16-bit patterns for bf16 and f16 (JavaScript has no 16-bit float array).
 */
export type FloatArray = Float32Array | Float64Array | Uint16Array;

/**
 * Hyperparameters by the core's names (defaults in parentheses):
 * vsgd: lr (0.1), ghattg (30), ps (1e-8), tau1 (0.81), tau2 (0.9), eps (1e-8);
 * constant_vsgd: lr (0.1), ghattg (30), ps (1e-8), tau (0.9), eps (1e-8);
 * adam / adamw: lr (1e-3), beta1 (0.9), beta2 (0.999), eps (1e-8);
 * sgdm: lr (0.01), momentum (0.9), dampening (0), nesterov (false);
 * every algorithm: weight_decay (decoupled; 0, adamw 0.01), l2 (coupled; 0), maximize (false).
 */
export interface Hyperparameters {
  lr?: number;
  ghattg?: number;
  ps?: number;
  tau1?: number;
  tau2?: number;
  tau?: number;
  eps?: number;
  beta1?: number;
  beta2?: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weight_decay?: number;
  l2?: number;
  maximize?: boolean;
}

/** Options of `new Optimizer(...)`: the algorithm (default "vsgd"), its hyperparameters for
 * group 0, and the non-finite-gradient policy (default "skip"). */
export interface OptimizerOptions extends Hyperparameters {
  algorithm?: Algorithm;
  policy?: NonFinitePolicy;
}

/** Options of `addTensor`. */
export interface TensorOptions {
  /** Name, reported in errors, read-outs and checkpoints. */
  name?: string;
  /** Element type of the parameter and gradient (default "f32"). */
  dtype?: DType;
  /**
   * Element type of the state (default: "f32" for bf16/f16 parameters, else the
   * parameter's). "bf16" stores the state in bfloat16 with stochastic rounding.
   */
  stateDtype?: StateDType;
  /**
   * Seed of the stochastic rounding of bf16 state (default: the tensor's index; kept in
   * checkpoints). A number up to 2^53 or a BigInt. Only with `stateDtype: "bf16"`: given
   * with any other state it is an error.
   */
  seed?: number | bigint;
  /** Parameter group (default 0). */
  group?: number;
}

/** What `tensorInfo` reports. */
export interface TensorInfo {
  name: string | null;
  shape: number[];
  len: number;
  /** Element type of the parameter and gradient. */
  dtype: DType;
  /** Element type of the state. */
  stateDtype: StateDType;
  /** Seed of the stochastic rounding of bf16 state (a BigInt above 2^53); null for other state. */
  seed: number | bigint | null;
  group: number;
  /** Updates applied so far (skipped steps do not count). */
  step: number;
}

/** What a step over every tensor did. */
export interface StepReport {
  /** Tensors updated. */
  applied: number;
  /** Tensors left untouched because their gradient was not finite ("skip" policy). */
  skipped: number;
}

/**
 * A learning-rate schedule: a factor of the group's lr at update number t = 1, 2, ...
 * - constant: 1
 * - step_decay: factor ** floor((t - 1) / every)   (every >= 1, factor in (0, 1])
 * - cosine: cosine annealing to min_factor over total steps, then flat
 * - one_cycle: torch's OneCycleLR (total >= 3, pct_start in (0, 1), div_factor 25, final_div_factor 1e4)
 * and, for all, a linear warm-up min(1, t / warmup) (0: none).
 */
export type Schedule =
  | { kind: "constant"; warmup?: number }
  | { kind: "step_decay"; every: number; factor: number; warmup?: number }
  | { kind: "cosine"; total: number; min_factor?: number; warmup?: number }
  | {
      kind: "one_cycle";
      total: number;
      pct_start?: number;
      div_factor?: number;
      final_div_factor?: number;
      warmup?: number;
    };
"#;

/// The kernel path this build steps with: `"simd128"` (built with `+simd128`) or `"portable"`.
#[wasm_bindgen(js_name = kernelPath)]
pub fn kernel_path() -> String {
    vsgd::kernels::KernelPath::active().name().into()
}

/// The core library's name and version, as written into checkpoints (`"vsgd 0.1.0"`).
#[wasm_bindgen(js_name = libraryVersion)]
pub fn library_version() -> String {
    checkpoint::LIBRARY.into()
}

/// The default hyperparameters of an algorithm, by the core's names.
#[wasm_bindgen(unchecked_return_type = "Required<Hyperparameters>")]
pub fn defaults(
    #[wasm_bindgen(unchecked_param_type = "Algorithm")] algorithm: JsValue,
) -> Result<Object> {
    let a = algorithm_arg(&algorithm)?;
    config_object(&Config::default_for(a))
}

fn algorithm_arg(v: &JsValue) -> Result<Algorithm> {
    let name = v
        .as_string()
        .ok_or_else(|| err("algorithm: expected a string"))?;
    Algorithm::from_name(&name).ok_or_else(|| {
        err(&format!(
            "unknown algorithm '{name}' (known: vsgd, constant_vsgd, adam, adamw, sgdm)"
        ))
    })
}

/// A configuration as a plain object: every hyperparameter, booleans as booleans.
fn config_object(c: &Config) -> Result<Object> {
    let o = new_object();
    for &name in c.algorithm().hyper_names() {
        let v = c.get(name).unwrap_or(f64::NAN);
        let value = if name == "maximize" || name == "nesterov" {
            JsValue::from_bool(v != 0.0)
        } else {
            JsValue::from_f64(v)
        };
        set(&o, name, &value)?;
    }
    Ok(o)
}

/// Applies the hyperparameters named in `options` to `config` (keys in `skip` are not
/// hyperparameters: `algorithm`, `policy`). Numbers for numeric fields; booleans (or 0/1) for
/// `maximize` and `nesterov`. Does not validate the ranges.
fn apply_hyper(config: &mut Config, options: &JsValue, skip: &[&str]) -> Result<()> {
    if options.is_undefined() || options.is_null() {
        return Ok(());
    }
    if !options.is_object() || Array::is_array(options) {
        return Err(err("options: expected an object"));
    }
    let entries = Object::entries(options.unchecked_ref::<Object>());
    for entry in entries.iter() {
        let pair: Array = entry.unchecked_into();
        let key = pair.get(0).as_string().unwrap_or_default();
        if skip.contains(&key.as_str()) {
            continue;
        }
        let value = pair.get(1);
        if value.is_undefined() {
            continue;
        }
        let x = if let Some(b) = value.as_bool() {
            if key != "maximize" && key != "nesterov" {
                return Err(err(&format!("{key}: expected a number")));
            }
            f64::from(u8::from(b))
        } else if let Some(x) = value.as_f64() {
            x
        } else {
            let wanted = if key == "maximize" || key == "nesterov" {
                "a boolean"
            } else {
                "a number"
            };
            return Err(err(&format!("{key}: expected {wanted}")));
        };
        config
            .set(&key, x)
            .map_err(|e| err(&format!("{key}: {e}")))?;
    }
    Ok(())
}

fn policy_arg(v: &JsValue) -> Result<NonFinitePolicy> {
    let name = v
        .as_string()
        .ok_or_else(|| err("policy: expected \"skip\", \"error\" or \"propagate\""))?;
    NonFinitePolicy::from_name(&name).ok_or_else(|| {
        err(&format!(
            "unknown policy '{name}' (known: skip, error, propagate)"
        ))
    })
}

fn dtype_name(d: DType) -> JsValue {
    JsValue::from_str(d.name())
}

fn report_object(r: StepReport) -> Result<Object> {
    let o = new_object();
    set(&o, "applied", &JsValue::from_f64(r.applied as f64))?;
    set(&o, "skipped", &JsValue::from_f64(r.skipped as f64))?;
    Ok(o)
}

/// An optimizer owning the state of registered tensors (the core's `Optimizer`), plus, for
/// the zero-copy form, parameter and gradient buffers in wasm memory.
#[wasm_bindgen]
pub struct Optimizer {
    inner: vsgd::Optimizer,
    /// Per tensor: its zero-copy buffers, created by the first `paramBuffer`/`gradBuffer`.
    buffers: Vec<Option<Buffers>>,
}

#[wasm_bindgen]
impl Optimizer {
    /// A new optimizer: `{algorithm, ...hyperparameters, policy}`, every field optional
    /// (defaults: VSGD with the core's defaults, policy "skip").
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_optional_param_type = "OptimizerOptions")] options: Option<
            JsValue,
        >,
    ) -> Result<Optimizer> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let algorithm = match get(&options, "algorithm")? {
            Some(a) => algorithm_arg(&a)?,
            None => Algorithm::Vsgd,
        };
        let mut config = Config::default_for(algorithm);
        apply_hyper(&mut config, &options, &["algorithm", "policy"])?;
        let mut inner = vsgd::Optimizer::new(config).js()?;
        if let Some(p) = get(&options, "policy")? {
            inner.set_policy(policy_arg(&p)?);
        }
        Ok(Optimizer {
            inner,
            buffers: Vec::new(),
        })
    }

    /// The algorithm every group runs.
    #[wasm_bindgen(getter, unchecked_return_type = "Algorithm")]
    pub fn algorithm(&self) -> String {
        self.inner.algorithm().name().into()
    }

    /// Names of the per-element state arrays (`["mug", "bg", "bhg"]` for VSGD, ...).
    #[wasm_bindgen(getter, js_name = stateNames, unchecked_return_type = "string[]")]
    pub fn state_names(&self) -> Array {
        self.inner
            .algorithm()
            .state_names()
            .iter()
            .map(|&s| JsValue::from_str(s))
            .collect()
    }

    /// Adds a parameter group with its own hyperparameters (same algorithm; unset fields take
    /// the algorithm's defaults). Returns its index.
    #[wasm_bindgen(js_name = addGroup)]
    pub fn add_group(
        &mut self,
        #[wasm_bindgen(unchecked_optional_param_type = "Hyperparameters")] options: Option<JsValue>,
    ) -> Result<u32> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        if let Some(a) = get(&options, "algorithm")? {
            let a = algorithm_arg(&a)?;
            if a != self.inner.algorithm() {
                return Err(err(&vsgd::Error::AlgorithmMismatch {
                    expected: self.inner.algorithm(),
                    got: a,
                }
                .to_string()));
            }
        }
        let mut config = Config::default_for(self.inner.algorithm());
        apply_hyper(&mut config, &options, &["algorithm"])?;
        let g = self.inner.add_group(config).js()?;
        Ok(g.0 as u32)
    }

    /// Number of parameter groups.
    #[wasm_bindgen(getter, js_name = numGroups)]
    pub fn num_groups(&self) -> u32 {
        self.inner.num_groups() as u32
    }

    /// A group's hyperparameters (default group 0).
    #[wasm_bindgen(unchecked_return_type = "Required<Hyperparameters>")]
    pub fn config(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "number")] group: Option<JsValue>,
    ) -> Result<Object> {
        let group = group.unwrap_or(JsValue::UNDEFINED);
        let g = group_arg(&group)?;
        config_object(self.inner.config(g).js()?)
    }

    /// Changes some hyperparameters of a group (the others keep their values; state is kept).
    #[wasm_bindgen(js_name = setConfig)]
    pub fn set_config(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "number")] group: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Hyperparameters")] options: JsValue,
    ) -> Result<()> {
        let g = group_arg(&group)?;
        let mut config = *self.inner.config(g).js()?;
        apply_hyper(&mut config, &options, &[])?;
        self.inner.set_config(g, config).js()
    }

    /// Sets a group's base learning rate (finite, >= 0; 0 freezes the group).
    #[wasm_bindgen(js_name = setLr)]
    pub fn set_lr(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "number")] group: JsValue,
        lr: JsValue,
    ) -> Result<()> {
        let g = group_arg(&group)?;
        let lr = lr.as_f64().ok_or_else(|| err("lr: expected a number"))?;
        self.inner.set_lr(g, lr).js()
    }

    /// Sets a group's learning-rate schedule.
    #[wasm_bindgen(js_name = setSchedule)]
    pub fn set_schedule(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "number")] group: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Schedule")] schedule: JsValue,
    ) -> Result<()> {
        let g = group_arg(&group)?;
        let s = convert::schedule_from(&schedule)?;
        self.inner.set_schedule(g, s).js()
    }

    /// A group's schedule (default group 0), as `setSchedule` takes it.
    #[wasm_bindgen(unchecked_return_type = "Schedule")]
    pub fn schedule(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "number")] group: Option<JsValue>,
    ) -> Result<Object> {
        let group = group.unwrap_or(JsValue::UNDEFINED);
        let g = group_arg(&group)?;
        let s: &LrSchedule = self.inner.schedule(g).js()?;
        convert::schedule_object(s)
    }

    /// The learning rate a group's tensors get at their update number `t` (>= 1).
    #[wasm_bindgen(js_name = lrAt)]
    pub fn lr_at(
        &self,
        #[wasm_bindgen(unchecked_param_type = "number")] group: JsValue,
        #[wasm_bindgen(unchecked_param_type = "number")] t: JsValue,
    ) -> Result<f64> {
        let g = group_arg(&group)?;
        let t = index(&t, "t")?;
        if t == 0 {
            return Err(err(&vsgd::Error::InvalidStep { step: 0 }.to_string()));
        }
        self.inner.lr_at(g, t as u64).js()
    }

    /// The non-finite-gradient policy.
    #[wasm_bindgen(getter, unchecked_return_type = "NonFinitePolicy")]
    pub fn policy(&self) -> String {
        self.inner.policy().name().into()
    }

    /// Sets the non-finite-gradient policy: "skip" (default: the tensor is left bit-identical
    /// and reported), "error" (the step throws, changing nothing) or "propagate".
    #[wasm_bindgen(js_name = setPolicy)]
    pub fn set_policy(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "NonFinitePolicy")] policy: JsValue,
    ) -> Result<()> {
        self.inner.set_policy(policy_arg(&policy)?);
        Ok(())
    }

    /// Registers a tensor of `shape` (an array of sizes; `[]` is a scalar). Its state starts
    /// at zero. Returns its index (0, 1, ... in registration order).
    #[wasm_bindgen(js_name = addTensor)]
    pub fn add_tensor(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "number[]")] shape: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "TensorOptions")] options: Option<JsValue>,
    ) -> Result<u32> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let shape = convert::shape_from(&shape)?;
        let name = match get(&options, "name")? {
            Some(n) => Some(
                n.as_string()
                    .ok_or_else(|| err("name: expected a string"))?,
            ),
            None => None,
        };
        let dtype = match get(&options, "dtype")? {
            Some(d) => d
                .as_string()
                .and_then(|d| DType::from_name(&d))
                .ok_or_else(|| err("dtype: expected \"f32\", \"f64\", \"bf16\" or \"f16\""))?,
            None => DType::F32,
        };
        // Which combinations are allowed is the core's to say (add_tensor below).
        let state_dtype = match get(&options, "stateDtype")? {
            Some(d) => Some(
                d.as_string()
                    .and_then(|d| DType::from_name(&d))
                    .ok_or_else(|| err("stateDtype: expected \"f32\", \"f64\" or \"bf16\""))?,
            ),
            None => None,
        };
        let seed = match get(&options, "seed")? {
            Some(s) => Some(convert::seed_arg(&s)?),
            None => None,
        };
        if seed.is_some() && state_dtype != Some(DType::Bf16) {
            // A seed that nothing would use is a caller's mistake, not an option to drop.
            return Err(err(
                "seed: only bf16 state (stateDtype: \"bf16\") is rounded stochastically",
            ));
        }
        let group = match get(&options, "group")? {
            Some(g) => GroupId(index(&g, "group")?),
            None => GroupId(0),
        };
        if self.inner.num_tensors() >= u32::MAX as usize {
            return Err(err("too many tensors"));
        }
        self.buffers
            .try_reserve(1)
            .map_err(|_| err("could not allocate memory for a tensor"))?;
        let mut spec = TensorSpec::new(&shape).dtype(dtype).group(group);
        if let Some(n) = &name {
            spec = spec.name(n);
        }
        if let Some(d) = state_dtype {
            spec = spec.state_dtype(d);
        }
        if let Some(s) = seed {
            spec = spec.seed(s);
        }
        let id = self.inner.add_tensor(spec).js()?;
        self.buffers.push(None);
        Ok(id.0 as u32)
    }

    /// Number of registered tensors.
    #[wasm_bindgen(getter, js_name = numTensors)]
    pub fn num_tensors(&self) -> u32 {
        self.inner.num_tensors() as u32
    }

    /// The index of the tensor registered under `name`, or `undefined`.
    pub fn find(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] name: JsValue,
    ) -> Result<Option<u32>> {
        let name = string_arg(&name, "name")?;
        Ok(self.inner.find(&name).map(|t| t.0 as u32))
    }

    /// What is registered for a tensor: name, shape, element count, dtype, state dtype, seed
    /// (bf16 state), group, step count.
    #[wasm_bindgen(js_name = tensorInfo, unchecked_return_type = "TensorInfo")]
    pub fn tensor_info(
        &self,
        #[wasm_bindgen(unchecked_param_type = "number")] tensor: JsValue,
    ) -> Result<Object> {
        let t = self.tensor_arg(&tensor)?;
        let info = self.inner.tensor_info(t).js()?;
        let o = new_object();
        let name = info.name.map_or(JsValue::NULL, JsValue::from_str);
        set(&o, "name", &name)?;
        let shape: Array = info
            .shape
            .iter()
            .map(|&d| JsValue::from_f64(d as f64))
            .collect();
        set(&o, "shape", &shape)?;
        set(&o, "len", &JsValue::from_f64(info.len as f64))?;
        set(&o, "dtype", &dtype_name(info.dtype))?;
        set(&o, "stateDtype", &dtype_name(info.state_dtype))?;
        let seed = if info.state_dtype == DType::Bf16 {
            convert::seed_value(info.seed)
        } else {
            JsValue::NULL
        };
        set(&o, "seed", &seed)?;
        set(&o, "group", &JsValue::from_f64(info.group.0 as f64))?;
        set(&o, "step", &JsValue::from_f64(info.step as f64))?;
        Ok(o)
    }

    /// Updates applied to a tensor so far.
    #[wasm_bindgen(js_name = stepCount)]
    pub fn step_count(
        &self,
        #[wasm_bindgen(unchecked_param_type = "number")] tensor: JsValue,
    ) -> Result<f64> {
        let t = self.tensor_arg(&tensor)?;
        self.inner.step_count(t).map(|s| s as f64).js()
    }

    /// One update of every tensor: `params[i]` and `grads[i]` belong to tensor `i`, each the
    /// typed array of that tensor's dtype (Float32Array for f32, Float64Array for f64,
    /// Uint16Array of the bits for bf16 and f16). The parameters are updated in place (copied
    /// into wasm memory and back). Every tensor is checked before any is touched: on an error
    /// nothing changes.
    #[wasm_bindgen(unchecked_return_type = "StepReport")]
    pub fn step(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "FloatArray[]")] params: JsValue,
        #[wasm_bindgen(unchecked_param_type = "FloatArray[]")] grads: JsValue,
    ) -> Result<Object> {
        let params = convert::typed_list(&params, "params")?;
        let grads = convert::typed_list(&grads, "grads")?;
        let n = self.inner.num_tensors();
        for (what, len) in [("params", params.len()), ("grads", grads.len())] {
            if len != n {
                return Err(err(&vsgd::Error::LengthMismatch {
                    what,
                    expected: n,
                    got: len,
                }
                .to_string()));
            }
        }
        let mut dtypes = Vec::new();
        dtypes.try_reserve_exact(n).map_err(|_| oom())?;
        for i in 0..n {
            let d = self.inner.tensor_info(TensorId(i)).js()?.dtype;
            for (what, list) in [("params", &params), ("grads", &grads)] {
                check_kind(&list[i], &format!("{what}[{i}]"), i, d)?;
            }
            dtypes.push(d);
        }
        let mut p = Vec::new();
        let mut g = Vec::new();
        p.try_reserve_exact(n).map_err(|_| oom())?;
        g.try_reserve_exact(n).map_err(|_| oom())?;
        for (i, (a, &d)) in params.iter().zip(&dtypes).enumerate() {
            p.push(Buf::from_js(a, d, &format!("params[{i}]"))?);
        }
        for (i, (a, &d)) in grads.iter().zip(&dtypes).enumerate() {
            g.push(Buf::from_js(a, d, &format!("grads[{i}]"))?);
        }
        // The scratch of the step, reserved and freed here, so that the step reuses it rather
        // than grow wasm memory between the check below and the copies back.
        if !buffers::warm_scratch(n) {
            return Err(oom());
        }
        // The copies above may have grown wasm memory: a parameter that is a view into it
        // would now be empty and could not take the result. Checked before anything changes.
        for (i, (a, v)) in params.iter().zip(&p).enumerate() {
            if !a.has_len(v.len()) {
                return Err(stale(&format!("params[{i}]")));
            }
        }
        let mut p_refs: Vec<&mut Buf> = p.iter_mut().collect();
        let g_refs: Vec<&Buf> = g.iter().collect();
        let stepped = buffers::step_all(&mut self.inner, &mut p_refs, &g_refs)?;
        for (i, (a, v)) in params.iter().zip(&p).enumerate() {
            v.copy_back(a, &format!("params[{i}]"))?;
        }
        self.finish(stepped)
    }

    /// One update of one tensor (`param` updated in place; the typed array of the tensor's
    /// dtype, as for `step`). Returns "applied", or "skipped" when the gradient was not finite
    /// under the "skip" policy (nothing changed).
    #[wasm_bindgen(js_name = stepTensor, unchecked_return_type = "\"applied\" | \"skipped\"")]
    pub fn step_tensor(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "number")] tensor: JsValue,
        #[wasm_bindgen(unchecked_param_type = "FloatArray")] param: JsValue,
        #[wasm_bindgen(unchecked_param_type = "FloatArray")] grad: JsValue,
    ) -> Result<String> {
        let t = self.tensor_arg(&tensor)?;
        let param = typed(&param, "param")?;
        let grad = typed(&grad, "grad")?;
        if param.kind() != grad.kind() {
            return Err(err(&format!(
                "param is a {} but grad is a {}",
                param.kind().name(),
                grad.kind().name()
            )));
        }
        let d = self.inner.tensor_info(t).js()?.dtype;
        check_kind(&param, "param", t.0, d)?;
        let mut p = Buf::from_js(&param, d, "param")?;
        let g = Buf::from_js(&grad, d, "grad")?;
        if !param.has_len(p.len()) {
            return Err(stale("param"));
        }
        let outcome = buffers::step_one(&mut self.inner, t, &mut p, &g).js()?;
        p.copy_back(&param, "param")?;
        Ok(match outcome {
            StepOutcome::Applied => "applied",
            StepOutcome::Skipped => "skipped",
        }
        .into())
    }

    /// The zero-copy parameter buffer of a tensor: a view into wasm memory of the tensor's
    /// typed array (Float32Array, Float64Array, or Uint16Array of bf16/f16 bits), created
    /// (zero-filled) by the first call. Fill it with the initial
    /// parameters; `stepBuffers()` updates it in place. A view stays valid across
    /// `stepBuffers()` and the buffer getters; any other call may grow wasm memory, which
    /// empties every view (`length` 0): take views again after such a call. Views die with
    /// the optimizer (`free()`).
    #[wasm_bindgen(js_name = paramBuffer, unchecked_return_type = "FloatArray")]
    pub fn param_buffer(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "number")] tensor: JsValue,
    ) -> Result<JsValue> {
        let t = self.tensor_arg(&tensor)?;
        Ok(self.buffers_of(t)?.param.view())
    }

    /// The zero-copy gradient buffer of a tensor (see `paramBuffer`): write the gradient
    /// here before `stepBuffers()`.
    #[wasm_bindgen(js_name = gradBuffer, unchecked_return_type = "FloatArray")]
    pub fn grad_buffer(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "number")] tensor: JsValue,
    ) -> Result<JsValue> {
        let t = self.tensor_arg(&tensor)?;
        Ok(self.buffers_of(t)?.grad.view())
    }

    /// One update of every tensor over its zero-copy buffers (`paramBuffer`, `gradBuffer`),
    /// in place, without copying. Every tensor needs its buffers (of any dtypes). Does not
    /// grow wasm memory: views taken before stay valid.
    #[wasm_bindgen(js_name = stepBuffers, unchecked_return_type = "StepReport")]
    pub fn step_buffers(&mut self) -> Result<Object> {
        if let Some(k) = self.buffers.iter().position(Option::is_none) {
            return Err(err(&format!(
                "tensor {k} has no buffers: call paramBuffer({k}) and gradBuffer({k}) first"
            )));
        }
        let stepped = buffers::step_buffers(&mut self.inner, &mut self.buffers)?;
        self.finish(stepped)
    }

    /// A copy of one state array of a tensor (`stateNames` gives the names): a Float32Array
    /// or Float64Array, or for bf16 state a Uint16Array of its bits.
    #[wasm_bindgen(unchecked_return_type = "FloatArray")]
    pub fn state(
        &self,
        #[wasm_bindgen(unchecked_param_type = "number")] tensor: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] name: JsValue,
    ) -> Result<JsValue> {
        let t = self.tensor_arg(&tensor)?;
        let info = self.inner.tensor_info(t).js()?;
        let name = string_arg(&name, "name")?;
        Ok(match info.state_dtype {
            DType::Bf16 => JsElement::new_array(self.inner.state_bf16(t, &name).js()?),
            DType::F64 => JsElement::new_array(self.inner.state::<f64>(t, &name).js()?),
            _ => JsElement::new_array(self.inner.state::<f32>(t, &name).js()?),
        })
    }

    /// VSGD's learned effective momentum `bhg / (bg + bhg)` per element of a tensor: a new
    /// Float64Array for f64 tensors, a Float32Array for the others (computed in f32 from bf16
    /// state). Only for VSGD.
    #[wasm_bindgen(
        js_name = effectiveMomentum,
        unchecked_return_type = "Float32Array | Float64Array"
    )]
    pub fn effective_momentum(
        &self,
        #[wasm_bindgen(unchecked_param_type = "number")] tensor: JsValue,
    ) -> Result<JsValue> {
        let t = self.tensor_arg(&tensor)?;
        let info = self.inner.tensor_info(t).js()?;
        match info.state_dtype {
            DType::F64 => {
                let mut out = try_vec::<f64>(info.len)?;
                self.inner.effective_momentum(t, &mut out).js()?;
                Ok(JsElement::new_array(&out))
            }
            DType::Bf16 => {
                // The core reads f32 or f64 state: bf16 state is widened (exactly) first.
                if self.inner.algorithm() != Algorithm::Vsgd {
                    return Err(err(&vsgd::Error::AlgorithmMismatch {
                        expected: Algorithm::Vsgd,
                        got: self.inner.algorithm(),
                    }
                    .to_string()));
                }
                let widen = |name: &str| -> Result<Vec<f32>> {
                    let s = self.inner.state_bf16(t, name).js()?;
                    let mut v = try_vec::<f32>(s.len())?;
                    for (d, x) in v.iter_mut().zip(s) {
                        *d = x.to_f32();
                    }
                    Ok(v)
                };
                let (bg, bhg) = (widen("bg")?, widen("bhg")?);
                let mut out = try_vec::<f32>(info.len)?;
                vsgd::kernels::effective_momentum(&bg, &bhg, &mut out).js()?;
                Ok(JsElement::new_array(&out))
            }
            _ => {
                let mut out = try_vec::<f32>(info.len)?;
                self.inner.effective_momentum(t, &mut out).js()?;
                Ok(JsElement::new_array(&out))
            }
        }
    }

    /// Tensors skipped by the last step (non-finite gradient under the "skip" policy).
    #[wasm_bindgen(js_name = lastSkipped, unchecked_return_type = "number[]")]
    pub fn last_skipped(&self) -> Array {
        self.inner
            .last_skipped()
            .iter()
            .map(|t| JsValue::from_f64(t.0 as f64))
            .collect()
    }

    /// The whole optimizer state in the library's checkpoint format
    /// (`docs/checkpoint-format.md`): the same bytes as native `vsgd` for the same run.
    /// Parameters are not included (the zero-copy buffers neither).
    pub fn save(&self) -> Result<Uint8Array> {
        let bytes = checkpoint::save(&self.inner).js()?;
        Ok(Uint8Array::from(&bytes[..]))
    }

    /// A new optimizer from checkpoint bytes (a Uint8Array, e.g. a Node.js Buffer, or an
    /// ArrayBuffer), written by `save()` here or by any other vsgd (Rust, C, CLI).
    pub fn load(
        #[wasm_bindgen(unchecked_param_type = "Uint8Array | ArrayBuffer")] bytes: JsValue,
    ) -> Result<Optimizer> {
        let data = convert::bytes_from(&bytes)?;
        let inner = checkpoint::load(&data).js()?;
        let mut buffers = Vec::new();
        buffers
            .try_reserve_exact(inner.num_tensors())
            .map_err(|_| err("could not allocate memory for the tensors"))?;
        buffers.resize_with(inner.num_tensors(), || None);
        Ok(Optimizer { inner, buffers })
    }
}

impl Optimizer {
    fn tensor_arg(&self, v: &JsValue) -> Result<TensorId> {
        Ok(TensorId(index(v, "tensor")?))
    }

    /// The buffers of tensor `t`, created zero-filled on first use.
    fn buffers_of(&mut self, t: TensorId) -> Result<&Buffers> {
        let info = self.inner.tensor_info(t).js()?;
        let (len, dtype) = (info.len, info.dtype);
        let tensors = self.buffers.len();
        let slot = self
            .buffers
            .get_mut(t.0)
            .ok_or_else(|| err(&vsgd::Error::UnknownTensor { tensor: t.0 }.to_string()))?;
        if slot.is_none() {
            *slot = Some(Buffers {
                param: Buf::zeros(dtype, len)?,
                grad: Buf::zeros(dtype, len)?,
            });
            // After the buffers: the scratch freed here stays free for `stepBuffers`.
            if !buffers::warm_scratch(tensors) {
                *slot = None;
                return Err(err("could not allocate memory for the tensor's buffers"));
            }
        }
        slot.as_ref()
            .ok_or_else(|| err(&vsgd::Error::UnknownTensor { tensor: t.0 }.to_string()))
    }

    /// The end of a step over every tensor: its report.
    fn finish(&mut self, report: StepReport) -> Result<Object> {
        report_object(report)
    }
}

fn oom() -> JsError {
    err("could not allocate memory for the step")
}

/// Checks that `a` (argument `what`) is the typed array of tensor `t`'s parameter type `d`.
fn check_kind(a: &TypedArray, what: &str, t: usize, d: DType) -> Result<()> {
    if a.kind() == ArrayKind::of(d) {
        return Ok(());
    }
    Err(err(&format!(
        "{what} is a {} but tensor {t} holds {} parameters: expected a {}",
        a.kind().name(),
        d.name(),
        type_name(d)
    )))
}
