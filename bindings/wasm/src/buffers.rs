//! Tensor buffers in wasm memory — the zero-copy form (parameter and gradient buffers seen
//! from JavaScript as typed-array views, stepped in place) and the copies `step` makes — and
//! the step over any mixture of tensor types, by the core's own step calls.

use vsgd::{bf16, f16, DType, NonFinitePolicy, Optimizer, StepOutcome, StepReport, TensorId};
use wasm_bindgen::JsValue;

use crate::convert::{err, try_vec, ArrayKind, JsElement, Result, TypedArray};

/// One buffer of a tensor's parameter type (`f32`, `f64`, `bf16` or `f16`). Never resized
/// after creation, so a view of it stays valid until wasm memory grows.
pub enum Buf {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// bfloat16 elements (a Uint16Array of their bits in JavaScript).
    Bf16(Vec<bf16>),
    /// IEEE half elements (a Uint16Array of their bits in JavaScript).
    F16(Vec<f16>),
}

/// `f(v)` for the vector inside a [`Buf`], whatever its element type.
macro_rules! each {
    ($buf:expr, $v:ident => $f:expr) => {
        match $buf {
            Buf::F32($v) => $f,
            Buf::F64($v) => $f,
            Buf::Bf16($v) => $f,
            Buf::F16($v) => $f,
        }
    };
}

impl Buf {
    /// `len` zeros of `dtype`.
    pub fn zeros(dtype: DType, len: usize) -> Result<Buf> {
        Ok(match dtype {
            DType::F32 => Buf::F32(try_vec(len)?),
            DType::F64 => Buf::F64(try_vec(len)?),
            DType::Bf16 => Buf::Bf16(try_vec(len)?),
            DType::F16 => Buf::F16(try_vec(len)?),
        })
    }

    /// A copy of `a`, which must be the typed array of `dtype` (checked by the caller; a
    /// mismatch, or a view that went stale, is an error).
    pub fn from_js(a: &TypedArray, dtype: DType, what: &str) -> Result<Buf> {
        if a.kind() != ArrayKind::of(dtype) {
            return Err(err(&format!(
                "{what}: expected a {}, got a {}",
                ArrayKind::of(dtype).name(),
                a.kind().name()
            )));
        }
        Ok(match dtype {
            DType::F32 => Buf::F32(a.to_vec(what)?),
            DType::F64 => Buf::F64(a.to_vec(what)?),
            DType::Bf16 => Buf::Bf16(a.to_vec(what)?),
            DType::F16 => Buf::F16(a.to_vec(what)?),
        })
    }

    /// Writes the buffer back into `a` (the array it was copied from).
    pub fn copy_back(&self, a: &TypedArray, what: &str) -> Result<()> {
        each!(self, v => a.copy_back(v, what))
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Buf::F32(_) => DType::F32,
            Buf::F64(_) => DType::F64,
            Buf::Bf16(_) => DType::Bf16,
            Buf::F16(_) => DType::F16,
        }
    }

    /// The element count.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// A typed-array view of the buffer in wasm memory (Float32Array, Float64Array, or
    /// Uint16Array of bf16/f16 bits).
    pub fn view(&self) -> JsValue {
        // SAFETY: the view aliases memory owned by this buffer, which is never resized and
        // lives as long as the optimizer. JavaScript may only read or write it through the
        // view between calls into wasm (JS is single-threaded; no Rust reference to the
        // buffer is live then). When wasm memory grows, the old ArrayBuffer is detached and
        // the view reads as empty: it can never reach memory outside wasm's.
        unsafe { each!(self, v => JsElement::view(v.as_slice())) }
    }

    /// Whether every element is finite, by the core's scans.
    fn all_finite(&self) -> bool {
        match self {
            Buf::F32(v) => vsgd::kernels::all_finite(v),
            Buf::F64(v) => vsgd::kernels::all_finite(v),
            Buf::Bf16(v) => vsgd::kernels::mixed::all_finite(v),
            Buf::F16(v) => vsgd::kernels::mixed::all_finite(v),
        }
    }

    fn slice_mut<T: 'static>(&mut self) -> Option<&mut [T]> {
        let any: &mut dyn core::any::Any = each!(self, v => v);
        any.downcast_mut::<Vec<T>>().map(Vec::as_mut_slice)
    }

    fn slice<T: 'static>(&self) -> Option<&[T]> {
        let any: &dyn core::any::Any = each!(self, v => v);
        any.downcast_ref::<Vec<T>>().map(Vec::as_slice)
    }
}

/// A tensor's parameter and gradient buffers.
pub struct Buffers {
    /// The parameter, updated in place by a step.
    pub param: Buf,
    /// The gradient, read by a step.
    pub grad: Buf,
}

/// Reserves, then frees, the scratch a step over `tensors` tensors needs (the lists of
/// buffers handed to the core, one set per kind of tensor, and the skipped tensors), so that
/// the step reuses it instead of growing wasm memory (which would empty the views the caller
/// has just taken, or a parameter of `step` that is such a view, before its copy back).
///
/// Fallible: where wasm memory cannot hold it, `false`, and the caller reports that before
/// anything changes (an infallible reservation would trap the instance).
#[must_use]
pub fn warm_scratch(tensors: usize) -> bool {
    let mut scratch: Vec<[usize; 16]> = Vec::new();
    let ok = scratch
        .try_reserve_exact(tensors.saturating_add(16))
        .is_ok();
    core::hint::black_box(&scratch);
    ok
}

/// How the core steps a tensor: which of its step calls takes it. One call takes tensors of
/// one kind only, so a step over tensors of several kinds is one core call per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// f32 parameter and state: `Optimizer::step` with `f32`.
    F32,
    /// f64 parameter and state: `Optimizer::step` with `f64`.
    F64,
    /// f32 parameter, bf16 state: `Optimizer::step_mixed` with `f32`.
    MixedF32,
    /// bf16 parameter (f32 or bf16 state): `Optimizer::step_mixed` with `bf16`.
    Bf16,
    /// f16 parameter (f32 or bf16 state): `Optimizer::step_mixed` with `f16`.
    F16,
}

/// Every kind, in the order a step over several kinds runs them.
const KINDS: [Kind; 5] = [Kind::F32, Kind::F64, Kind::MixedF32, Kind::Bf16, Kind::F16];

/// The kind of tensor `t`.
pub fn kind_of(opt: &Optimizer, t: usize) -> core::result::Result<Kind, vsgd::Error> {
    let info = opt.tensor_info(TensorId(t))?;
    Ok(match (info.dtype, info.state_dtype) {
        (DType::F32, DType::F32) => Kind::F32,
        (DType::F64, _) => Kind::F64,
        (DType::F32, _) => Kind::MixedF32,
        (DType::Bf16, _) => Kind::Bf16,
        (DType::F16, _) => Kind::F16,
    })
}

type Lists<'a, T> = (Vec<&'a mut [T]>, Vec<Option<&'a [T]>>);

/// The core's argument lists for the tensors of `kind`: their buffers as `T` slices, every
/// other tensor an empty parameter without a gradient (left untouched by the core).
fn lists<'a, T: 'static>(
    opt: &Optimizer,
    kind: Kind,
    params: &'a mut [&mut Buf],
    grads: &'a [&Buf],
) -> core::result::Result<Lists<'a, T>, vsgd::Error> {
    let mut ps: Vec<&'a mut [T]> = Vec::with_capacity(params.len());
    let mut gs: Vec<Option<&'a [T]>> = Vec::with_capacity(grads.len());
    for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
        if kind_of(opt, i)? != kind {
            ps.push(<&mut [T]>::default());
            gs.push(None);
            continue;
        }
        let got = p.dtype();
        match (p.slice_mut::<T>(), g.slice::<T>()) {
            (Some(p), Some(g)) => {
                ps.push(p);
                gs.push(Some(g));
            }
            (p, _) => {
                let got = if p.is_some() { g.dtype() } else { got };
                return Err(vsgd::Error::DTypeMismatch {
                    tensor: i,
                    expected: opt.tensor_info(TensorId(i))?.dtype,
                    got,
                });
            }
        }
    }
    Ok((ps, gs))
}

/// One core call: every tensor of `kind` (the others untouched).
fn step_kind(
    opt: &mut Optimizer,
    kind: Kind,
    params: &mut [&mut Buf],
    grads: &[&Buf],
) -> core::result::Result<StepReport, vsgd::Error> {
    match kind {
        Kind::F32 => {
            let (mut p, g) = lists::<f32>(opt, kind, params, grads)?;
            opt.step_some(&mut p, &g)
        }
        Kind::F64 => {
            let (mut p, g) = lists::<f64>(opt, kind, params, grads)?;
            opt.step_some(&mut p, &g)
        }
        Kind::MixedF32 => {
            let (mut p, g) = lists::<f32>(opt, kind, params, grads)?;
            opt.step_mixed(&mut p, &g)
        }
        Kind::Bf16 => {
            let (mut p, g) = lists::<bf16>(opt, kind, params, grads)?;
            opt.step_mixed(&mut p, &g)
        }
        Kind::F16 => {
            let (mut p, g) = lists::<f16>(opt, kind, params, grads)?;
            opt.step_mixed(&mut p, &g)
        }
    }
}

/// What a step over every tensor did, and, when it took several core calls (tensors of
/// several kinds), the tensors skipped by all of them (the core remembers the last call's).
pub struct Stepped {
    /// Applied and skipped tensors.
    pub report: StepReport,
    /// The skipped tensors, when the core's `last_skipped` does not have them all.
    pub skipped: Option<Vec<TensorId>>,
}

/// One update of every tensor: `params[i]`, `grads[i]` are tensor `i`'s buffers (one per
/// tensor, of its parameter type). All tensors of one kind: one core call, the core's checks
/// and errors. Tensors of several kinds: one core call per kind, after every check the core
/// would make (so that an error still changes nothing), with the schedules' global step
/// restored before each call (one step advances it once). Gradient clipping by global norm
/// spans all the tensors of a step, which separate calls cannot do: an error then.
pub fn step_all(opt: &mut Optimizer, params: &mut [&mut Buf], grads: &[&Buf]) -> Result<Stepped> {
    let js = |e: vsgd::Error| err(&e.to_string());
    let n = opt.num_tensors();
    for (what, len) in [("params", params.len()), ("grads", grads.len())] {
        if len != n {
            return Err(js(vsgd::Error::LengthMismatch {
                what,
                expected: n,
                got: len,
            }));
        }
    }
    let mut present = [false; KINDS.len()];
    for i in 0..n {
        let k = kind_of(opt, i).map_err(js)?;
        present[KINDS.iter().position(|&x| x == k).unwrap_or(0)] = true;
    }
    let kinds = || {
        KINDS
            .iter()
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|(&k, _)| k)
    };
    if kinds().count() <= 1 {
        let kind = kinds().next().unwrap_or(Kind::F32);
        let report = step_kind(opt, kind, params, grads).map_err(js)?;
        return Ok(Stepped {
            report,
            skipped: None,
        });
    }
    if opt.clip_norm().is_some() {
        let names: Vec<&str> = (0..n)
            .filter_map(|i| opt.tensor_info(TensorId(i)).ok())
            .map(|t| t.dtype.name())
            .collect();
        return Err(err(&format!(
            "this optimizer clips gradients by their global norm, which one step over tensors \
             of several types ({}) cannot do in wasm yet",
            dedup_names(&names)
        )));
    }
    // The core's checks, in its order: tensor by tensor the buffers' types and lengths and
    // the step counter (a failure reported as an earlier non-finite gradient under the "error"
    // policy, as the core does), then the non-finite scan under the "error" policy.
    let error_policy = opt.policy() == NonFinitePolicy::Error;
    let nonfinite_before = |i: usize| (0..i).find(|&j| !grads[j].all_finite());
    for i in 0..n {
        let info = opt.tensor_info(TensorId(i)).map_err(js)?;
        let problem = if params[i].dtype() != info.dtype || grads[i].dtype() != info.dtype {
            let got = if params[i].dtype() != info.dtype {
                params[i].dtype()
            } else {
                grads[i].dtype()
            };
            Some(vsgd::Error::DTypeMismatch {
                tensor: i,
                expected: info.dtype,
                got,
            })
        } else if params[i].len() != info.len {
            Some(vsgd::Error::LengthMismatch {
                what: "param",
                expected: info.len,
                got: params[i].len(),
            })
        } else if grads[i].len() != info.len {
            Some(vsgd::Error::LengthMismatch {
                what: "grad",
                expected: info.len,
                got: grads[i].len(),
            })
        } else if info.step == u64::MAX {
            Some(vsgd::Error::InvalidStep { step: info.step })
        } else {
            None
        };
        if let Some(e) = problem {
            if let Some(j) = nonfinite_before(i).filter(|_| error_policy) {
                return Err(js(vsgd::Error::NonFiniteGradient { tensor: j }));
            }
            return Err(js(e));
        }
    }
    if let Some(j) = nonfinite_before(n).filter(|_| error_policy) {
        return Err(js(vsgd::Error::NonFiniteGradient { tensor: j }));
    }
    let global = opt.global_step();
    let mut report = StepReport::default();
    let mut skipped = Vec::new();
    for kind in kinds() {
        opt.set_global_step(global);
        let r = step_kind(opt, kind, params, grads).map_err(js)?;
        report.applied += r.applied;
        report.skipped += r.skipped;
        skipped.extend_from_slice(opt.last_skipped());
    }
    skipped.sort_unstable();
    Ok(Stepped {
        report,
        skipped: Some(skipped),
    })
}

/// `"f32, bf16"` from `["f32", "bf16", "f32"]` (first appearance order).
fn dedup_names(names: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n);
        }
    }
    out.join(", ")
}

/// One update of tensor `t` with the core's call for its kind.
pub fn step_one(
    opt: &mut Optimizer,
    t: TensorId,
    param: &mut Buf,
    grad: &Buf,
) -> core::result::Result<StepOutcome, vsgd::Error> {
    match (kind_of(opt, t.0)?, param, grad) {
        (Kind::F32, Buf::F32(p), Buf::F32(g)) => opt.step_tensor(t, p, g),
        (Kind::F64, Buf::F64(p), Buf::F64(g)) => opt.step_tensor(t, p, g),
        (Kind::MixedF32, Buf::F32(p), Buf::F32(g)) => opt.step_tensor_mixed(t, p, g),
        (Kind::Bf16, Buf::Bf16(p), Buf::Bf16(g)) => opt.step_tensor_mixed(t, p, g),
        (Kind::F16, Buf::F16(p), Buf::F16(g)) => opt.step_tensor_mixed(t, p, g),
        (_, p, g) => Err(vsgd::Error::DTypeMismatch {
            tensor: t.0,
            expected: opt.tensor_info(t)?.dtype,
            got: if p.dtype() == opt.tensor_info(t)?.dtype {
                g.dtype()
            } else {
                p.dtype()
            },
        }),
    }
}

/// One step of every tensor over its zero-copy buffers (all present).
pub fn step_buffers(opt: &mut Optimizer, buffers: &mut [Option<Buffers>]) -> Result<Stepped> {
    let mut params: Vec<&mut Buf> = Vec::with_capacity(buffers.len());
    let mut grads: Vec<&Buf> = Vec::with_capacity(buffers.len());
    for (k, b) in buffers.iter_mut().enumerate() {
        let Some(Buffers { param, grad }) = b else {
            // Checked by the caller; an error rather than a panic all the same.
            return Err(err(&format!("tensor {k} has no buffers")));
        };
        params.push(param);
        grads.push(grad);
    }
    step_all(opt, &mut params, &grads)
}
