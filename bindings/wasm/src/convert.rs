//! JavaScript values to and from the core's types, every check made here (no panics).

use half::slice::HalfFloatSliceExt;
use js_sys::{
    Array, ArrayBuffer, Float32Array, Float64Array, Object, Reflect, Uint16Array, Uint8Array,
};
use vsgd::{bf16, f16, DType, GroupId, LrSchedule, Schedule};
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
pub fn try_vec<T: Copy + Default>(n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        err(&format!(
            "could not allocate {} bytes of wasm memory",
            n.saturating_mul(core::mem::size_of::<T>())
        ))
    })?;
    v.resize(n, T::default());
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

/// The JavaScript typed arrays that carry tensors: Float32Array (f32), Float64Array (f64) and
/// Uint16Array (the raw bits of bf16 and f16: JavaScript has no 16-bit float array).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayKind {
    /// Float32Array.
    F32,
    /// Float64Array.
    F64,
    /// Uint16Array.
    U16,
}

impl ArrayKind {
    /// The typed array a tensor of parameter type `d` is passed as.
    pub fn of(d: DType) -> ArrayKind {
        match d {
            DType::F32 => ArrayKind::F32,
            DType::F64 => ArrayKind::F64,
            DType::Bf16 | DType::F16 => ArrayKind::U16,
        }
    }

    /// The JavaScript name of the typed array.
    pub fn name(self) -> &'static str {
        match self {
            ArrayKind::F32 => "Float32Array",
            ArrayKind::F64 => "Float64Array",
            ArrayKind::U16 => "Uint16Array",
        }
    }
}

/// The name of the typed array of a dtype (with what it holds, for the 16-bit types).
pub fn type_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "Float32Array",
        DType::F64 => "Float64Array",
        DType::Bf16 => "Uint16Array (of bfloat16 bits)",
        DType::F16 => "Uint16Array (of float16 bits)",
    }
}

/// The element types, with their JavaScript array types: `f32`, `f64`, and `bf16`/`f16` as
/// Uint16Array of their bits.
pub trait JsElement: Copy + Default + 'static {
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

/// The impl of one element type: its typed array, `TypedArray` variant, and how its slices
/// are seen as slices of the typed array's elements (`$raw`, `$raw_mut`).
macro_rules! js_element {
    ($t:ty, $array:ident, $variant:ident, $raw:expr, $raw_mut:expr) => {
        impl JsElement for $t {
            fn new_array(x: &[$t]) -> JsValue {
                $array::from($raw(x)).into()
            }
            unsafe fn view(x: &[$t]) -> JsValue {
                $array::view($raw(x)).into()
            }
            fn copy_in(a: &TypedArray, out: &mut [$t]) -> bool {
                match a {
                    TypedArray::$variant(a) if a.length() as usize == out.len() => {
                        // An empty array needs no copy; a detached one (an emptied view) would
                        // throw.
                        if !out.is_empty() {
                            a.copy_to($raw_mut(out));
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
                            a.copy_from($raw(x));
                        }
                        true
                    }
                    _ => false,
                }
            }
        }
    };
}

fn same<T>(x: &[T]) -> &[T] {
    x
}

fn same_mut<T>(x: &mut [T]) -> &mut [T] {
    x
}

fn bits<H: HalfFloatSliceExt + ?Sized>(x: &H) -> &[u16] {
    x.reinterpret_cast()
}

fn bits_mut<H: HalfFloatSliceExt + ?Sized>(x: &mut H) -> &mut [u16] {
    x.reinterpret_cast_mut()
}

js_element!(f32, Float32Array, F32, same, same_mut);
js_element!(f64, Float64Array, F64, same, same_mut);
js_element!(bf16, Uint16Array, U16, bits, bits_mut);
js_element!(f16, Uint16Array, U16, bits, bits_mut);

/// A Float32Array, a Float64Array or a Uint16Array passed in.
pub enum TypedArray {
    /// f32 elements.
    F32(Float32Array),
    /// f64 elements.
    F64(Float64Array),
    /// 16-bit elements: the bits of bf16 or f16 values.
    U16(Uint16Array),
}

impl TypedArray {
    /// Which typed array it is.
    pub fn kind(&self) -> ArrayKind {
        match self {
            TypedArray::F32(_) => ArrayKind::F32,
            TypedArray::F64(_) => ArrayKind::F64,
            TypedArray::U16(_) => ArrayKind::U16,
        }
    }

    fn len(&self) -> usize {
        match self {
            TypedArray::F32(a) => a.length() as usize,
            TypedArray::F64(a) => a.length() as usize,
            TypedArray::U16(a) => a.length() as usize,
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

/// The typed arrays a tensor may be given as, for error messages.
const EXPECTED: &str = "a Float32Array, a Float64Array or a Uint16Array (bf16/f16 bits)";

/// A Float32Array, Float64Array or Uint16Array argument.
pub fn typed(v: &JsValue, what: &str) -> Result<TypedArray> {
    if let Some(a) = v.dyn_ref::<Float32Array>() {
        Ok(TypedArray::F32(a.clone()))
    } else if let Some(a) = v.dyn_ref::<Float64Array>() {
        Ok(TypedArray::F64(a.clone()))
    } else if let Some(a) = v.dyn_ref::<Uint16Array>() {
        Ok(TypedArray::U16(a.clone()))
    } else {
        Err(err(&format!("{what}: expected {EXPECTED}")))
    }
}

/// An array of typed arrays (one per tensor).
pub fn typed_list(v: &JsValue, what: &str) -> Result<Vec<TypedArray>> {
    if !Array::is_array(v) {
        return Err(err(&format!(
            "{what}: expected an array of typed arrays, one per tensor ({EXPECTED})"
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

/// A seed of stochastic rounding: a non-negative integer number (up to 2^53) or a BigInt
/// (up to 2^64 − 1).
pub fn seed_arg(v: &JsValue) -> Result<u64> {
    if v.is_bigint() {
        return u64::try_from(v.clone())
            .map_err(|_| err("seed: expected an integer in [0, 2^64 - 1]"));
    }
    let x = v
        .as_f64()
        .ok_or_else(|| err("seed: expected a number or a BigInt"))?;
    if !((0.0..=9_007_199_254_740_992.0).contains(&x) && x.fract() == 0.0) {
        return Err(err(&format!(
            "seed: expected an integer in [0, 2^53] (a BigInt for larger seeds), got {x}"
        )));
    }
    Ok(x as u64)
}

/// A seed as JavaScript sees it: a number when exact (up to 2^53), else a BigInt.
pub fn seed_value(seed: u64) -> JsValue {
    if seed <= 1 << 53 {
        JsValue::from_f64(seed as f64)
    } else {
        JsValue::from(seed)
    }
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
