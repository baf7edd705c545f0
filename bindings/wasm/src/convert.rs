//! JavaScript values to and from the core's types, every check made here (no panics).

use js_sys::{Array, ArrayBuffer, Float32Array, Float64Array, Object, Reflect, Uint8Array};
use vsgd::{DType, Element, GroupId, LrSchedule, Schedule};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Results of the binding: errors are JavaScript `Error`s.
pub type Result<T> = core::result::Result<T, JsError>;

/// A JavaScript `Error` with this message.
pub fn err(msg: &str) -> JsError {
    JsError::new(msg)
}

/// Errors of the core as JavaScript `Error`s with the core's message.
pub trait OrJs<T> {
    /// The error as a JavaScript `Error`.
    fn js(self) -> Result<T>;
}

impl<T, E: core::fmt::Display> OrJs<T> for core::result::Result<T, E> {
    fn js(self) -> Result<T> {
        self.map_err(|e| err(&e.to_string()))
    }
}

/// A fresh `{}`.
pub fn new_object() -> Object {
    Object::new()
}

/// `o[key] = value`.
pub fn set(o: &Object, key: &str, value: &JsValue) -> Result<()> {
    Reflect::set(o, &JsValue::from_str(key), value)
        .map(drop)
        .map_err(|_| err(&format!("could not set '{key}'")))
}

/// `options[key]` when `options` is an object and the field is not `undefined`; `None` when
/// `options` itself is `undefined` or `null`; an error when it is anything but an object.
pub fn get(options: &JsValue, key: &str) -> Result<Option<JsValue>> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    if !options.is_object() || Array::is_array(options) {
        return Err(err("options: expected an object"));
    }
    let v = Reflect::get(options, &JsValue::from_str(key))
        .map_err(|_| err(&format!("could not read option '{key}'")))?;
    Ok(if v.is_undefined() { None } else { Some(v) })
}

/// The largest index or count accepted from JavaScript (2^32 − 1: wasm32's `usize`).
const MAX_INDEX: f64 = u32::MAX as f64;

/// A non-negative integer (an index, a size, a step number) given as a JavaScript number.
pub fn index(v: &JsValue, what: &str) -> Result<usize> {
    let x = v
        .as_f64()
        .ok_or_else(|| err(&format!("{what}: expected a number")))?;
    if !((0.0..=MAX_INDEX).contains(&x) && x.fract() == 0.0) {
        return Err(err(&format!(
            "{what}: expected an integer in [0, 2^32 - 1], got {x}"
        )));
    }
    Ok(x as usize)
}

/// A string argument. (Arguments are `JsValue`s, checked here: wasm-bindgen's own `&str`
/// conversion trusts the caller and reads out of bounds when given a non-string.)
pub fn string_arg(v: &JsValue, what: &str) -> Result<String> {
    v.as_string()
        .ok_or_else(|| err(&format!("{what}: expected a string")))
}

/// A group index; `undefined` is group 0.
pub fn group_arg(v: &JsValue) -> Result<GroupId> {
    if v.is_undefined() {
        Ok(GroupId(0))
    } else {
        Ok(GroupId(index(v, "group")?))
    }
}

/// `n` zeros, or an error (never an abort) when wasm memory cannot hold them.
pub fn try_vec<T: Element>(n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        err(&format!(
            "could not allocate {} bytes of wasm memory",
            n.saturating_mul(core::mem::size_of::<T>())
        ))
    })?;
    v.resize(n, T::ZERO);
    Ok(v)
}

/// A shape: an array of non-negative integers.
pub fn shape_from(v: &JsValue) -> Result<Vec<usize>> {
    if !Array::is_array(v) {
        return Err(err(
            "shape: expected an array of non-negative integers ([] for a scalar)",
        ));
    }
    let a: &Array = v.unchecked_ref();
    let mut shape = Vec::new();
    shape
        .try_reserve_exact(a.length() as usize)
        .map_err(|_| err("shape: too many dimensions"))?;
    for (i, d) in a.iter().enumerate() {
        shape.push(index(&d, &format!("shape[{i}]"))?);
    }
    Ok(shape)
}

/// Checkpoint bytes: a Uint8Array (a Node.js Buffer is one) or an ArrayBuffer, copied.
pub fn bytes_from(v: &JsValue) -> Result<Vec<u8>> {
    let a: Uint8Array = if let Some(a) = v.dyn_ref::<Uint8Array>() {
        a.clone()
    } else if let Some(b) = v.dyn_ref::<ArrayBuffer>() {
        Uint8Array::new(b)
    } else {
        return Err(err("checkpoint: expected a Uint8Array or an ArrayBuffer"));
    };
    let n = a.length() as usize;
    let mut out: Vec<u8> = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| err(&format!("could not allocate {n} bytes of wasm memory")))?;
    out.resize(n, 0u8);
    if a.length() as usize != n {
        return Err(err(
            "checkpoint: the array was emptied (a stale view into wasm memory?)",
        ));
    }
    if n > 0 {
        a.copy_to(&mut out);
    }
    Ok(out)
}

/// The element types, with their JavaScript array types.
pub trait JsElement: Element {
    /// The typed array of this element type.
    fn name() -> &'static str;
    /// A new JavaScript array holding a copy of `x`.
    fn new_array(x: &[Self]) -> JsValue;
    /// A view of `x` in wasm memory.
    ///
    /// # Safety
    /// As `Float32Array::view`: valid until wasm memory grows or `x` is freed.
    unsafe fn view(x: &[Self]) -> JsValue;
    /// Copies `a` (of the same length and element type) into `out`.
    fn copy_in(a: &TypedArray, out: &mut [Self]) -> bool;
    /// Copies `x` into `a` (of the same length and element type).
    fn copy_out(a: &TypedArray, x: &[Self]) -> bool;
}

/// The impl of one element type: its typed array and `TypedArray` variant.
macro_rules! js_element {
    ($t:ty, $array:ident, $variant:ident) => {
        impl JsElement for $t {
            fn name() -> &'static str {
                stringify!($array)
            }
            fn new_array(x: &[$t]) -> JsValue {
                $array::from(x).into()
            }
            unsafe fn view(x: &[$t]) -> JsValue {
                $array::view(x).into()
            }
            fn copy_in(a: &TypedArray, out: &mut [$t]) -> bool {
                match a {
                    TypedArray::$variant(a) if a.length() as usize == out.len() => {
                        // An empty array needs no copy; a detached one (an emptied view) would
                        // throw.
                        if !out.is_empty() {
                            a.copy_to(out);
                        }
                        true
                    }
                    _ => false,
                }
            }
            fn copy_out(a: &TypedArray, x: &[$t]) -> bool {
                match a {
                    TypedArray::$variant(a) if a.length() as usize == x.len() => {
                        if !x.is_empty() {
                            a.copy_from(x);
                        }
                        true
                    }
                    _ => false,
                }
            }
        }
    };
}

js_element!(f32, Float32Array, F32);
js_element!(f64, Float64Array, F64);

/// The name of the typed array of a dtype.
pub fn type_name(d: DType) -> &'static str {
    match d {
        DType::F32 => f32::name(),
        DType::F64 => f64::name(),
        DType::Bf16 | DType::F16 => "Uint16Array",
    }
}

/// A Float32Array or a Float64Array passed in.
pub enum TypedArray {
    /// f32 elements.
    F32(Float32Array),
    /// f64 elements.
    F64(Float64Array),
}

impl TypedArray {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TypedArray::F32(_) => DType::F32,
            TypedArray::F64(_) => DType::F64,
        }
    }

    fn len(&self) -> usize {
        match self {
            TypedArray::F32(a) => a.length() as usize,
            TypedArray::F64(a) => a.length() as usize,
        }
    }

    /// A copy in wasm memory (of the array's own element type `T`).
    pub fn to_vec<T: JsElement>(&self, what: &str) -> Result<Vec<T>> {
        let mut v = try_vec::<T>(self.len())?;
        // The allocation may have grown wasm memory and emptied a view into it.
        if !T::copy_in(self, &mut v) {
            return Err(stale(what));
        }
        Ok(v)
    }

    /// Whether the array still has `n` elements (a view into wasm memory loses them when
    /// memory grows).
    pub fn has_len(&self, n: usize) -> bool {
        self.len() == n
    }

    /// Writes `x` back into the array.
    pub fn copy_back<T: JsElement>(&self, x: &[T], what: &str) -> Result<()> {
        if T::copy_out(self, x) {
            Ok(())
        } else {
            Err(stale(what))
        }
    }
}

/// The error for an array that lost its elements while in use.
pub fn stale(what: &str) -> JsError {
    err(&format!(
        "{what}: the array was emptied while in use (a view into wasm memory that went stale?)"
    ))
}

/// A Float32Array or Float64Array argument.
pub fn typed(v: &JsValue, what: &str) -> Result<TypedArray> {
    if let Some(a) = v.dyn_ref::<Float32Array>() {
        Ok(TypedArray::F32(a.clone()))
    } else if let Some(a) = v.dyn_ref::<Float64Array>() {
        Ok(TypedArray::F64(a.clone()))
    } else {
        Err(err(&format!(
            "{what}: expected a Float32Array or a Float64Array"
        )))
    }
}

/// An array of Float32Array/Float64Array.
pub fn typed_list(v: &JsValue, what: &str) -> Result<Vec<TypedArray>> {
    if !Array::is_array(v) {
        return Err(err(&format!(
            "{what}: expected an array of Float32Array or Float64Array (one per tensor)"
        )));
    }
    let a: &Array = v.unchecked_ref();
    let mut out = Vec::new();
    out.try_reserve_exact(a.length() as usize)
        .map_err(|_| err(&format!("{what}: too many arrays")))?;
    for (i, x) in a.iter().enumerate() {
        out.push(typed(&x, &format!("{what}[{i}]"))?);
    }
    Ok(out)
}

// ------------------------------------------------------------------------------ schedules

/// Reads the fields of a schedule object: numbers by name, every other key an error.
struct Fields<'a> {
    obj: &'a JsValue,
    kind: String,
}

impl Fields<'_> {
    fn number(&self, key: &str, default: Option<f64>) -> Result<f64> {
        match get(self.obj, key)? {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| err(&format!("schedule {}: {key}: expected a number", self.kind))),
            None => default.ok_or_else(|| err(&format!("schedule {}: missing '{key}'", self.kind))),
        }
    }

    fn count(&self, key: &str, default: Option<u64>) -> Result<u64> {
        let x = self.number(key, default.map(|d| d as f64))?;
        // 2^53: every integer below is exact in a JavaScript number.
        if !((0.0..=9_007_199_254_740_992.0).contains(&x) && x.fract() == 0.0) {
            return Err(err(&format!(
                "schedule {}: {key}: expected a non-negative integer, got {x}",
                self.kind
            )));
        }
        Ok(x as u64)
    }
}

/// A schedule from `{kind, ...parameters, warmup}` (the checkpoint format's names).
pub fn schedule_from(v: &JsValue) -> Result<LrSchedule> {
    let kind = get(v, "kind")?
        .and_then(|k| k.as_string())
        .ok_or_else(|| {
            err("schedule: expected {kind: \"constant\" | \"step_decay\" | \"cosine\" | \"one_cycle\", ...}")
        })?;
    let f = Fields {
        obj: v,
        kind: kind.clone(),
    };
    let (schedule, keys): (Schedule, &[&str]) = match kind.as_str() {
        "constant" => (Schedule::Constant, &[]),
        "step_decay" => (
            Schedule::StepDecay {
                every: f.count("every", None)?,
                factor: f.number("factor", None)?,
            },
            &["every", "factor"],
        ),
        "cosine" => (
            Schedule::Cosine {
                total: f.count("total", None)?,
                min_factor: f.number("min_factor", Some(0.0))?,
            },
            &["total", "min_factor"],
        ),
        "one_cycle" => (
            Schedule::OneCycle {
                total: f.count("total", None)?,
                pct_start: f.number("pct_start", Some(0.3))?,
                div_factor: f.number("div_factor", Some(25.0))?,
                final_div_factor: f.number("final_div_factor", Some(1e4))?,
            },
            &["total", "pct_start", "div_factor", "final_div_factor"],
        ),
        other => {
            return Err(err(&format!(
                "unknown schedule kind '{other}' (known: constant, step_decay, cosine, one_cycle)"
            )))
        }
    };
    // Unknown fields are mistakes (a misspelt parameter would silently take its default).
    let entries = Object::keys(v.unchecked_ref::<Object>());
    for key in entries.iter() {
        let key = key.as_string().unwrap_or_default();
        if key != "kind" && key != "warmup" && !keys.contains(&key.as_str()) {
            return Err(err(&format!(
                "schedule {kind}: unknown field '{key}' (known: kind, {}warmup)",
                keys.iter().map(|k| format!("{k}, ")).collect::<String>()
            )));
        }
    }
    Ok(LrSchedule {
        schedule,
        warmup: f.count("warmup", Some(0))?,
    })
}

/// A schedule as `schedule_from` reads it.
pub fn schedule_object(s: &LrSchedule) -> Result<Object> {
    let o = new_object();
    let num = |k: &str, x: f64| set(&o, k, &JsValue::from_f64(x));
    match s.schedule {
        Schedule::Constant => set(&o, "kind", &"constant".into())?,
        Schedule::StepDecay { every, factor } => {
            set(&o, "kind", &"step_decay".into())?;
            num("every", every as f64)?;
            num("factor", factor)?;
        }
        Schedule::Cosine { total, min_factor } => {
            set(&o, "kind", &"cosine".into())?;
            num("total", total as f64)?;
            num("min_factor", min_factor)?;
        }
        Schedule::OneCycle {
            total,
            pct_start,
            div_factor,
            final_div_factor,
        } => {
            set(&o, "kind", &"one_cycle".into())?;
            num("total", total as f64)?;
            num("pct_start", pct_start)?;
            num("div_factor", div_factor)?;
            num("final_div_factor", final_div_factor)?;
        }
    }
    num("warmup", s.warmup as f64)?;
    Ok(o)
}
