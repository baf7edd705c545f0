//! `Optimizer::step_any`: one step over tensors of every element type (f32, f64, bf16, f16
//! parameters; f32, f64 or bf16 state), against each tensor stepped alone by its typed call,
//! with one global norm for gradient clipping, one tick of the global clock, and errors that
//! change nothing.

mod algorithms;
mod common;

use algorithms::ALGORITHMS;
use common::Rng;
use vsgd::kernels::mixed::Storage;
use vsgd::kernels::NonFinitePolicy;
use vsgd::{
    bf16, f16, Config, DType, Error, GradRef, GroupId, LrSchedule, Optimizer, ParamMut, Schedule,
    ScheduleClock, TensorId, TensorSpec,
};

/// A buffer of one element type.
#[derive(Clone, Debug, PartialEq)]
enum Buf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Buf {
    /// `n` values from `f` (called with the element index), stored as `dtype`.
    fn from_fn(dtype: DType, n: usize, mut f: impl FnMut(usize) -> f64) -> Buf {
        match dtype {
            DType::F32 => Buf::F32((0..n).map(|i| f(i) as f32).collect()),
            DType::F64 => Buf::F64((0..n).map(&mut f).collect()),
            DType::Bf16 => Buf::Bf16((0..n).map(|i| bf16::from_f64(f(i))).collect()),
            DType::F16 => Buf::F16((0..n).map(|i| f16::from_f64(f(i))).collect()),
        }
    }

    fn random(dtype: DType, n: usize, rng: &mut Rng) -> Buf {
        Buf::from_fn(dtype, n, |_| rng.unit() * 2.0 - 1.0)
    }

    fn param(&mut self) -> ParamMut<'_> {
        match self {
            Buf::F32(v) => ParamMut::F32(v),
            Buf::F64(v) => ParamMut::F64(v),
            Buf::Bf16(v) => ParamMut::Bf16(v),
            Buf::F16(v) => ParamMut::F16(v),
        }
    }

    fn grad(&self) -> GradRef<'_> {
        match self {
            Buf::F32(v) => GradRef::F32(v),
            Buf::F64(v) => GradRef::F64(v),
            Buf::Bf16(v) => GradRef::Bf16(v),
            Buf::F16(v) => GradRef::F16(v),
        }
    }

    /// The bits of every element (NaN compares equal to itself here).
    fn bits(&self) -> Vec<u64> {
        match self {
            Buf::F32(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
            Buf::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
            Buf::Bf16(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
            Buf::F16(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        }
    }

    fn set(&mut self, i: usize, x: f64) {
        match self {
            Buf::F32(v) => v[i] = x as f32,
            Buf::F64(v) => v[i] = x,
            Buf::Bf16(v) => v[i] = bf16::from_f64(x),
            Buf::F16(v) => v[i] = f16::from_f64(x),
        }
    }
}

/// Parameter type, state type and length of each tensor of the test model: every
/// combination a tensor can have, sizes below and above the threads' split.
const MODEL: [(DType, DType, usize); 7] = [
    (DType::F32, DType::F32, 5),
    (DType::Bf16, DType::F32, 300),
    (DType::F64, DType::F64, 7),
    (DType::F16, DType::F32, 1029),
    (DType::Bf16, DType::Bf16, 64),
    (DType::F32, DType::Bf16, 33),
    (DType::F32, DType::F32, 70_000),
];

fn register(opt: &mut Optimizer, i: usize, (param, state, n): (DType, DType, usize)) -> TensorId {
    let spec = TensorSpec::new(core::slice::from_ref(&n))
        .dtype(param)
        .state_dtype(state);
    let spec = if state == DType::Bf16 {
        spec.seed(40 + i as u64)
    } else {
        spec
    };
    opt.add_tensor(spec).unwrap()
}

fn with_schedule(c: Config, clock: ScheduleClock) -> Optimizer {
    let mut opt = Optimizer::new(c).unwrap();
    let schedule = LrSchedule::from(Schedule::StepDecay {
        every: 2,
        factor: 0.5,
    });
    opt.set_schedule(GroupId(0), schedule).unwrap();
    opt.set_schedule_clock(clock);
    opt
}

/// The single-tensor call a tensor of this kind takes (`step_tensor` for f32/f64 tensors,
/// `step_tensor_mixed` for the others: code paths apart from the all-tensor step), with the
/// global clock advanced by hand as a loop of single-tensor steps does.
fn typed_step(opt: &mut Optimizer, p: &mut Buf, g: &Buf) {
    let t = TensorId(0);
    let plain = opt.tensor_info(t).unwrap().state_dtype == opt.tensor_info(t).unwrap().dtype;
    let r = match (p, g) {
        (Buf::F32(p), Buf::F32(g)) if plain => opt.step_tensor(t, p, g),
        (Buf::F32(p), Buf::F32(g)) => opt.step_tensor_mixed(t, p, g),
        (Buf::F64(p), Buf::F64(g)) => opt.step_tensor(t, p, g),
        (Buf::Bf16(p), Buf::Bf16(g)) => opt.step_tensor_mixed(t, p, g),
        (Buf::F16(p), Buf::F16(g)) => opt.step_tensor_mixed(t, p, g),
        _ => unreachable!("one type per tensor"),
    };
    assert_eq!(r, Ok(vsgd::StepOutcome::Applied));
    if opt.schedule_clock() == ScheduleClock::Global {
        opt.set_global_step(opt.global_step() + 1);
    }
}

/// The state of tensor `id`, every array, as bits.
fn state_bits(opt: &Optimizer, id: TensorId) -> Vec<Vec<u64>> {
    let info = opt.tensor_info(id).unwrap();
    opt.algorithm()
        .state_names()
        .iter()
        .map(|name| match info.state_dtype {
            DType::F32 => opt
                .state::<f32>(id, name)
                .unwrap()
                .iter()
                .map(|x| x.to_bits() as u64)
                .collect(),
            DType::F64 => opt
                .state::<f64>(id, name)
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect(),
            DType::Bf16 => opt
                .state_bf16(id, name)
                .unwrap()
                .iter()
                .map(|x| x.to_bits() as u64)
                .collect(),
            DType::F16 => unreachable!("no f16 state"),
        })
        .collect()
}

/// Every tensor of the model after four `step_any` calls has the bits of the same tensor
/// stepped alone by its typed call, for every algorithm, both schedule clocks (per tensor:
/// some tensors frozen at some steps) and one or two threads.
#[test]
fn each_tensor_as_its_own_typed_step() {
    for a in ALGORITHMS {
        let c = algorithms::config_with_every_term(a);
        for clock in [ScheduleClock::Global, ScheduleClock::PerTensor] {
            for threads in [1, 2] {
                let mut rng = Rng(3 + threads as u64);
                let mut opt = with_schedule(c, clock);
                opt.set_threads(threads);
                let mut alone = Vec::new();
                let mut params = Vec::new();
                for (i, &kind) in MODEL.iter().enumerate() {
                    register(&mut opt, i, kind);
                    let mut one = with_schedule(c, clock);
                    register(&mut one, i, kind);
                    alone.push(one);
                    params.push(Buf::random(kind.0, kind.2, &mut rng));
                }
                let mut reference = params.clone();
                for s in 0..4 {
                    let grads: Vec<Buf> = MODEL
                        .iter()
                        .map(|k| Buf::random(k.0, k.2, &mut rng))
                        .collect();
                    // Under the global clock a frozen tensor would still see the clock move,
                    // which its optimizer alone cannot: freeze only with per-tensor clocks.
                    let frozen = |i: usize| clock == ScheduleClock::PerTensor && (i + s) % 3 == 0;
                    let given: Vec<Option<GradRef>> = grads
                        .iter()
                        .enumerate()
                        .map(|(i, g)| (!frozen(i)).then(|| g.grad()))
                        .collect();
                    let mut ps: Vec<ParamMut> = params.iter_mut().map(Buf::param).collect();
                    let r = opt.step_any(&mut ps, &given).unwrap();
                    let n_frozen = (0..MODEL.len()).filter(|&i| frozen(i)).count();
                    assert_eq!(
                        (r.applied, r.frozen, r.skipped),
                        (MODEL.len() - n_frozen, n_frozen, 0)
                    );
                    for i in (0..MODEL.len()).filter(|&i| !frozen(i)) {
                        typed_step(&mut alone[i], &mut reference[i], &grads[i]);
                    }
                }
                assert_eq!(
                    opt.global_step(),
                    if clock == ScheduleClock::Global { 4 } else { 0 }
                );
                for i in 0..MODEL.len() {
                    let what = format!(
                        "{a:?} {clock:?} threads {threads} tensor {i} {:?}",
                        MODEL[i]
                    );
                    assert_eq!(params[i], reference[i], "{what}");
                    assert_eq!(
                        state_bits(&opt, TensorId(i)),
                        state_bits(&alone[i], TensorId(0)),
                        "{what}"
                    );
                    assert_eq!(
                        opt.step_count(TensorId(i)).unwrap(),
                        alone[i].step_count(TensorId(0)).unwrap()
                    );
                }
            }
        }
    }
}

/// One model of one kind: `step_any` over `ParamMut`/`GradRef` lists gives the bits of
/// `step_some` (f32) or `step_mixed` (bf16 parameters, bf16 state) over typed slices,
/// gradient clipping included. The four share one body, so this checks the list adapters
/// (a wrong type or buffer mapping in them fails it) and that clipping acted.
#[test]
fn one_kind_is_the_typed_step() {
    for a in ALGORITHMS {
        let c = algorithms::config_with_every_term(a);
        for (param, state) in [(DType::F32, DType::F32), (DType::Bf16, DType::Bf16)] {
            let lens = [3usize, 500, 40_000];
            let mut rng = Rng(11);
            let mut any = Optimizer::new(c).unwrap();
            any.set_clip_norm(Some(2.0)).unwrap();
            for (i, &n) in lens.iter().enumerate() {
                register(&mut any, i, (param, state, n));
            }
            let mut typed = any.clone();
            let mut p_any: Vec<Buf> = lens
                .iter()
                .map(|&n| Buf::random(param, n, &mut rng))
                .collect();
            let mut p_typed = p_any.clone();
            for _ in 0..3 {
                let grads: Vec<Buf> = lens
                    .iter()
                    .map(|&n| Buf::random(param, n, &mut rng))
                    .collect();
                let given: Vec<Option<GradRef>> = grads.iter().map(|g| Some(g.grad())).collect();
                let mut ps: Vec<ParamMut> = p_any.iter_mut().map(Buf::param).collect();
                any.step_any(&mut ps, &given).unwrap();
                match param {
                    DType::F32 => {
                        let mut ps: Vec<&mut [f32]> = p_typed
                            .iter_mut()
                            .map(|p| match p {
                                Buf::F32(v) => &mut v[..],
                                _ => unreachable!(),
                            })
                            .collect();
                        let gs: Vec<Option<&[f32]>> = grads
                            .iter()
                            .map(|g| match g {
                                Buf::F32(v) => Some(&v[..]),
                                _ => unreachable!(),
                            })
                            .collect();
                        typed.step_some(&mut ps, &gs).unwrap();
                    }
                    _ => {
                        let mut ps: Vec<&mut [bf16]> = p_typed
                            .iter_mut()
                            .map(|p| match p {
                                Buf::Bf16(v) => &mut v[..],
                                _ => unreachable!(),
                            })
                            .collect();
                        let gs: Vec<Option<&[bf16]>> = grads
                            .iter()
                            .map(|g| match g {
                                Buf::Bf16(v) => Some(&v[..]),
                                _ => unreachable!(),
                            })
                            .collect();
                        typed.step_mixed(&mut ps, &gs).unwrap();
                    }
                }
                assert!(any.last_grad_norm().unwrap() > 2.0, "clipping is active");
                assert_eq!(
                    any.last_grad_norm().unwrap().to_bits(),
                    typed.last_grad_norm().unwrap().to_bits()
                );
            }
            assert_eq!(p_any, p_typed, "{a:?} {param:?}");
            assert!(
                any == typed,
                "{a:?} {param:?}: the optimizers' states differ"
            );
        }
    }
}

/// Gradient clipping takes one norm over every tensor, whatever its type. Gradients are small
/// multiples of 1/8, so every sum of squares is exact and the norm is the same in any order;
/// then tensor A (f32) steps as in a model whose other tensor is f32 with the same values,
/// and tensor B (bf16) as in a model whose other tensor is bf16 with the same values.
#[test]
fn clipping_spans_every_type() {
    let dyadic =
        |rng: &mut Rng, i: usize| ((rng.below(33) as f64) - 16.0) / 8.0 + (i % 2) as f64 / 8.0;
    for a in ALGORITHMS {
        let c = algorithms::config_with_every_term(a);
        let (na, nb) = (37usize, 1029usize);
        let build = |ta: DType, tb: DType| {
            let mut opt = Optimizer::new(c).unwrap();
            opt.set_clip_norm(Some(1.5)).unwrap();
            register(&mut opt, 0, (ta, DType::F32, na));
            register(&mut opt, 1, (tb, DType::F32, nb));
            opt
        };
        let (mut mixed, mut all_f32, mut all_bf16) = (
            build(DType::F32, DType::Bf16),
            build(DType::F32, DType::F32),
            build(DType::Bf16, DType::Bf16),
        );
        let mut rng = Rng(5);
        let pa = Buf::from_fn(DType::F32, na, |_| rng.unit() - 0.5);
        let pb = Buf::from_fn(DType::Bf16, nb, |_| rng.unit() - 0.5);
        let as_type = |b: &Buf, t: DType| match b {
            Buf::F32(v) => Buf::from_fn(t, v.len(), |i| v[i] as f64),
            Buf::Bf16(v) => Buf::from_fn(t, v.len(), |i| v[i].to_f64()),
            _ => unreachable!(),
        };
        let mut m = [pa.clone(), pb.clone()];
        let mut f = [pa.clone(), as_type(&pb, DType::F32)];
        let mut h = [as_type(&pa, DType::Bf16), pb.clone()];
        for _ in 0..3 {
            let ga = Buf::from_fn(DType::F32, na, |i| dyadic(&mut rng, i));
            let gb = Buf::from_fn(DType::Bf16, nb, |i| dyadic(&mut rng, i));
            let exact: f64 = [&ga, &as_type(&gb, DType::F64)]
                .iter()
                .map(|b| match b {
                    Buf::F32(v) => v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>(),
                    Buf::F64(v) => v.iter().map(|&x| x * x).sum::<f64>(),
                    _ => unreachable!(),
                })
                .sum();
            for (opt, ps, gs) in [
                (&mut mixed, &mut m, [ga.clone(), gb.clone()]),
                (&mut all_f32, &mut f, [ga.clone(), as_type(&gb, DType::F32)]),
                (
                    &mut all_bf16,
                    &mut h,
                    [as_type(&ga, DType::Bf16), gb.clone()],
                ),
            ] {
                let mut p: Vec<ParamMut> = ps.iter_mut().map(Buf::param).collect();
                opt.step_any(&mut p, &[Some(gs[0].grad()), Some(gs[1].grad())])
                    .unwrap();
                assert_eq!(opt.last_grad_norm(), Some(exact.sqrt()), "{a:?}");
            }
        }
        assert_eq!(m[0], f[0], "{a:?}: the f32 tensor");
        assert_eq!(m[1], h[1], "{a:?}: the bf16 tensor");
    }
}

fn model(policy: NonFinitePolicy) -> (Optimizer, Vec<Buf>, Vec<Buf>) {
    let c = algorithms::config_with_every_term(vsgd::Algorithm::Vsgd);
    let mut opt = with_schedule(c, ScheduleClock::Global);
    opt.set_policy(policy);
    let mut rng = Rng(9);
    let (mut params, mut grads) = (Vec::new(), Vec::new());
    for (i, &kind) in MODEL.iter().enumerate() {
        register(&mut opt, i, kind);
        params.push(Buf::random(kind.0, kind.2, &mut rng));
        grads.push(Buf::random(kind.0, kind.2, &mut rng));
    }
    // One step first, so that state and counters are not all zero.
    let given: Vec<Option<GradRef>> = grads.iter().map(|g| Some(g.grad())).collect();
    let mut ps: Vec<ParamMut> = params.iter_mut().map(Buf::param).collect();
    opt.step_any(&mut ps, &given).unwrap();
    (opt, params, grads)
}

fn step(opt: &mut Optimizer, params: &mut [Buf], grads: &[Buf]) -> Result<vsgd::StepReport, Error> {
    let given: Vec<Option<GradRef>> = grads.iter().map(|g| Some(g.grad())).collect();
    let mut ps: Vec<ParamMut> = params.iter_mut().map(Buf::param).collect();
    opt.step_any(&mut ps, &given)
}

/// A wrong type, a wrong length or a missing tensor is an error that changes nothing.
#[test]
fn bad_buffers_change_nothing() {
    let (mut opt, mut params, grads) = model(NonFinitePolicy::Skip);
    let (before, p_before) = (opt.clone(), params.clone());
    let last = MODEL.len() - 1;
    // The gradient of the last tensor as bf16 (its parameter is f32).
    let mut g = grads.clone();
    g[last] = Buf::from_fn(DType::Bf16, MODEL[last].2, |_| 0.5);
    assert_eq!(
        step(&mut opt, &mut params, &g),
        Err(Error::DTypeMismatch {
            tensor: last,
            expected: DType::F32,
            got: DType::Bf16
        })
    );
    // The parameter of tensor 1 as f16 (registered bf16).
    let mut p = params.clone();
    p[1] = Buf::from_fn(DType::F16, MODEL[1].2, |_| 0.5);
    assert_eq!(
        step(&mut opt, &mut p, &grads),
        Err(Error::DTypeMismatch {
            tensor: 1,
            expected: DType::Bf16,
            got: DType::F16
        })
    );
    // One element short.
    let mut g = grads.clone();
    g[4] = Buf::from_fn(DType::Bf16, MODEL[4].2 - 1, |_| 0.5);
    assert!(matches!(
        step(&mut opt, &mut params, &g),
        Err(Error::LengthMismatch { .. })
    ));
    // One tensor missing.
    let mut ps: Vec<ParamMut> = params.iter_mut().map(Buf::param).collect();
    ps.pop();
    let given: Vec<Option<GradRef>> = grads.iter().map(|g| Some(g.grad())).collect();
    assert!(matches!(
        opt.step_any(&mut ps, &given),
        Err(Error::LengthMismatch { what: "params", .. })
    ));
    assert!(opt == before, "an error changed the optimizer");
    assert_eq!(params, p_before, "an error changed a parameter");
    assert_eq!(opt.global_step(), 1);
}

/// Non-finite gradients in tensors of several types: under `Error` the lowest index across all
/// of them, nothing changed; under `Skip` every one of them skipped (listed in index order) and
/// the others applied, the clock advanced once.
#[test]
fn non_finite_gradients_across_types() {
    for (nan_at, first) in [([4usize, 6], 4usize), ([0, 3], 0), ([3, 5], 3)] {
        let (mut opt, mut params, mut grads) = model(NonFinitePolicy::Error);
        for &i in &nan_at {
            grads[i].set(i % 2, f64::NAN);
        }
        let (before, p_before) = (opt.clone(), params.clone());
        assert_eq!(
            step(&mut opt, &mut params, &grads),
            Err(Error::NonFiniteGradient { tensor: first })
        );
        assert!(
            opt == before && params == p_before,
            "NaN at {nan_at:?}: an error changed something"
        );
        assert!(opt.last_skipped().is_empty());

        let (mut opt, mut params, mut grads) = model(NonFinitePolicy::Skip);
        for &i in &nan_at {
            grads[i].set(i % 2, f64::INFINITY);
        }
        let (before, p_before) = (opt.clone(), params.clone());
        let r = step(&mut opt, &mut params, &grads).unwrap();
        assert_eq!((r.applied, r.skipped), (MODEL.len() - 2, 2));
        assert_eq!(opt.last_skipped(), &nan_at.map(TensorId)[..]);
        assert_eq!(opt.global_step(), 2);
        for i in 0..MODEL.len() {
            let skipped = nan_at.contains(&i);
            assert_eq!(
                params[i] == p_before[i],
                skipped,
                "tensor {i}, NaN at {nan_at:?}"
            );
            assert_eq!(
                state_bits(&opt, TensorId(i)) == state_bits(&before, TensorId(i)),
                skipped,
                "tensor {i}"
            );
            assert_eq!(
                opt.step_count(TensorId(i)).unwrap(),
                if skipped { 1 } else { 2 }
            );
        }
    }
}

/// The storage types all widen exactly, so `Buf::from_fn` of a converted buffer is exact.
#[test]
fn conversions_used_above_are_exact() {
    for x in [0.5f64, -1.875, 3.0, 1.0 / 8.0] {
        assert_eq!(<bf16 as Storage>::widen(bf16::from_f64(x)) as f64, x);
        assert_eq!(<f16 as Storage>::widen(f16::from_f64(x)) as f64, x);
    }
}

/// `step_tensor_any` steps each kind of tensor as its typed single-tensor call does, and
/// refuses buffers of another type or an unknown tensor without changing anything.
#[test]
fn step_tensor_any_is_the_typed_call() {
    for a in ALGORITHMS {
        let c = algorithms::config_with_every_term(a);
        let mut rng = Rng(21);
        let mut opt = with_schedule(c, ScheduleClock::PerTensor);
        let mut alone = Vec::new();
        let mut params = Vec::new();
        for (i, &kind) in MODEL.iter().enumerate() {
            register(&mut opt, i, kind);
            let mut one = with_schedule(c, ScheduleClock::PerTensor);
            register(&mut one, i, kind);
            alone.push(one);
            params.push(Buf::random(kind.0, kind.2, &mut rng));
        }
        let mut reference = params.clone();
        for _ in 0..3 {
            for (i, &(d, _, n)) in MODEL.iter().enumerate() {
                let g = Buf::random(d, n, &mut rng);
                let out = opt.step_tensor_any(TensorId(i), params[i].param(), g.grad());
                assert_eq!(out, Ok(vsgd::StepOutcome::Applied));
                typed_step(&mut alone[i], &mut reference[i], &g);
            }
        }
        for i in 0..MODEL.len() {
            assert_eq!(params[i], reference[i], "{a:?} tensor {i}");
            assert_eq!(
                state_bits(&opt, TensorId(i)),
                state_bits(&alone[i], TensorId(0))
            );
        }
        let before = opt.clone();
        let mut wrong = Buf::from_fn(DType::F16, MODEL[1].2, |_| 0.5);
        let g = Buf::from_fn(DType::Bf16, MODEL[1].2, |_| 0.5);
        assert_eq!(
            opt.step_tensor_any(TensorId(1), wrong.param(), g.grad()),
            Err(Error::DTypeMismatch {
                tensor: 1,
                expected: DType::Bf16,
                got: DType::F16
            })
        );
        assert_eq!(
            opt.step_tensor_any(TensorId(1), params[1].param(), wrong.grad()),
            Err(Error::DTypeMismatch {
                tensor: 1,
                expected: DType::Bf16,
                got: DType::F16
            })
        );
        assert_eq!(
            opt.step_tensor_any(TensorId(MODEL.len()), params[1].param(), g.grad()),
            Err(Error::UnknownTensor {
                tensor: MODEL.len()
            })
        );
        assert!(opt == before);
    }
}

/// A skipped single-tensor step reports the same gradient norm (none applied: 0) whichever
/// path the tensor takes, f32 or 16-bit.
#[test]
fn skipped_tensor_step_reports_norm_zero_on_every_path() {
    for (param, state) in [
        (DType::F32, DType::F32),
        (DType::Bf16, DType::F32),
        (DType::F32, DType::Bf16),
    ] {
        let mut opt =
            Optimizer::new(algorithms::config_with_every_term(vsgd::Algorithm::Adam)).unwrap();
        opt.set_clip_norm(Some(1.0)).unwrap();
        register(&mut opt, 0, (param, state, 3));
        let mut p = Buf::from_fn(param, 3, |_| 1.0);
        let g = Buf::from_fn(param, 3, |_| 3.0);
        opt.step_tensor_any(TensorId(0), p.param(), g.grad())
            .unwrap();
        assert!(opt.last_grad_norm().unwrap() > 5.0);
        let mut bad = g.clone();
        bad.set(1, f64::NAN);
        let out = opt
            .step_tensor_any(TensorId(0), p.param(), bad.grad())
            .unwrap();
        assert_eq!(out, vsgd::StepOutcome::Skipped);
        assert_eq!(
            opt.last_grad_norm(),
            Some(0.0),
            "{param:?} with {state:?} state"
        );
    }
}

/// An `f32` tensor with `f32` state steps the same through every single-tensor call and every
/// all-tensor call, clipping included (one executor, one order of the norm's sum).
#[test]
fn f32_tensors_step_alike_through_every_call() {
    for a in ALGORITHMS {
        let c = algorithms::config_with_every_term(a);
        let n = 70_001;
        let mut rng = Rng(8);
        let p0 = Buf::random(DType::F32, n, &mut rng);
        let g = Buf::random(DType::F32, n, &mut rng);
        let (Buf::F32(p0), Buf::F32(g)) = (p0, g) else {
            unreachable!()
        };
        let g: Vec<f32> = g.iter().map(|x| x * 40.0).collect(); // norm far above the limit
        let mut results = Vec::new();
        for call in 0..5 {
            let mut opt = Optimizer::new(c).unwrap();
            opt.set_clip_norm(Some(1.5)).unwrap();
            let t = opt.add_tensor(TensorSpec::new(&[n])).unwrap();
            let mut p = p0.clone();
            for _ in 0..2 {
                match call {
                    0 => drop(opt.step_tensor(t, &mut p, &g).unwrap()),
                    1 => drop(opt.step_tensor_mixed(t, &mut p, &g).unwrap()),
                    2 => drop(opt.step(&mut [&mut p[..]], &[&g[..]]).unwrap()),
                    3 => drop(opt.step_mixed(&mut [&mut p[..]], &[Some(&g[..])]).unwrap()),
                    _ => drop(
                        opt.step_any(&mut [(&mut p[..]).into()], &[Some((&g[..]).into())])
                            .unwrap(),
                    ),
                }
            }
            let norm = opt.last_grad_norm().unwrap().to_bits();
            let bits: Vec<u32> = p.iter().map(|x| x.to_bits()).collect();
            results.push((norm, bits, state_bits(&opt, t)));
        }
        for (call, r) in results.iter().enumerate().skip(1) {
            assert!(
                r == &results[0],
                "{a:?}: call {call} differs from step_tensor"
            );
        }
    }
}

// ------------------------------------------------------------------ random models

use proptest::prelude::*;

/// The kinds a tensor can be (parameter type, state type).
const KINDS: [(DType, DType); 6] = [
    (DType::F32, DType::F32),
    (DType::F64, DType::F64),
    (DType::Bf16, DType::F32),
    (DType::F16, DType::F32),
    (DType::Bf16, DType::Bf16),
    (DType::F32, DType::Bf16),
];

const POLICIES: [NonFinitePolicy; 3] = [
    NonFinitePolicy::Skip,
    NonFinitePolicy::Error,
    NonFinitePolicy::Propagate,
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A random model (kinds, lengths 0 to 300, frozen tensors, NaN or ∞ in some gradients,
    /// every policy, one or two threads) stepped with `step_any` three times: every tensor
    /// as its single-tensor call steps it alone (skipped alone when its gradient is not
    /// finite), or, under `Error`, the whole step refused with the first such tensor and
    /// nothing changed.
    #[test]
    fn random_models_step_as_each_tensor_alone(
        tensors in prop::collection::vec((0usize..6, 0usize..300), 1..6),
        algorithm in 0usize..5,
        policy in 0usize..3,
        threads in 1usize..3,
        seed in any::<u64>(),
        events in prop::collection::vec((0usize..3, 0usize..6, 0usize..5), 0..10),
    ) {
        let c = algorithms::config_with_every_term(ALGORITHMS[algorithm]);
        let policy = POLICIES[policy];
        let mut opt = Optimizer::new(c).unwrap();
        opt.set_policy(policy);
        opt.set_threads(threads);
        let mut rng = Rng(seed | 1);
        let mut alone = Vec::new();
        let mut params = Vec::new();
        for (i, &(k, n)) in tensors.iter().enumerate() {
            let kind = (KINDS[k].0, KINDS[k].1, n);
            register(&mut opt, i, kind);
            let mut one = Optimizer::new(c).unwrap();
            one.set_policy(policy);
            register(&mut one, i, kind);
            alone.push(one);
            params.push(Buf::random(kind.0, n, &mut rng));
        }
        let mut reference = params.clone();
        for step in 0..3 {
            let mut grads: Vec<Buf> = tensors
                .iter()
                .map(|&(k, n)| Buf::random(KINDS[k].0, n, &mut rng))
                .collect();
            // events: (step, tensor, what): 0 freezes, 1 or 2 a NaN, 3 or 4 an ∞ (where the
            // tensor has elements).
            let mut frozen = vec![false; tensors.len()];
            for &(s, t, what) in &events {
                if s != step || t >= tensors.len() {
                    continue;
                }
                match what {
                    0 => frozen[t] = true,
                    w if tensors[t].1 > 0 => {
                        let x = if w <= 2 { f64::NAN } else { f64::NEG_INFINITY };
                        grads[t].set(seed as usize % tensors[t].1, x);
                    }
                    _ => {}
                }
            }
            let finite = |i: usize| grads[i].grad().all_finite();
            let given: Vec<Option<GradRef>> = grads
                .iter()
                .enumerate()
                .map(|(i, g)| (!frozen[i]).then(|| g.grad()))
                .collect();
            let all_bits = |o: &Optimizer, p: &[Buf]| -> Vec<Vec<u64>> {
                (0..p.len())
                    .flat_map(|i| state_bits(o, TensorId(i)).into_iter().chain([p[i].bits()]))
                    .collect()
            };
            let before = all_bits(&opt, &params);
            let mut ps: Vec<ParamMut> = params.iter_mut().map(Buf::param).collect();
            let r = opt.step_any(&mut ps, &given);
            let bad = (0..tensors.len()).find(|&i| !frozen[i] && !finite(i));
            if let (NonFinitePolicy::Error, Some(first)) = (policy, bad) {
                prop_assert_eq!(r, Err(Error::NonFiniteGradient { tensor: first }));
                prop_assert!(all_bits(&opt, &params) == before, "an error changed something");
                continue;
            }
            let report = r.unwrap();
            let skipped: Vec<TensorId> = (0..tensors.len())
                .filter(|&i| !frozen[i] && !finite(i) && policy == NonFinitePolicy::Skip)
                .map(TensorId)
                .collect();
            prop_assert_eq!(opt.last_skipped(), &skipped[..]);
            prop_assert_eq!(report.skipped, skipped.len());
            prop_assert_eq!(report.frozen, frozen.iter().filter(|&&f| f).count());
            for i in (0..tensors.len()).filter(|&i| !frozen[i]) {
                let t = TensorId(0);
                let plain = alone[i].tensor_info(t).unwrap().state_dtype
                    == alone[i].tensor_info(t).unwrap().dtype;
                let out = match (&mut reference[i], &grads[i]) {
                    (Buf::F32(p), Buf::F32(g)) if plain => alone[i].step_tensor(t, p, g),
                    (Buf::F32(p), Buf::F32(g)) => alone[i].step_tensor_mixed(t, p, g),
                    (Buf::F64(p), Buf::F64(g)) => alone[i].step_tensor(t, p, g),
                    (Buf::Bf16(p), Buf::Bf16(g)) => alone[i].step_tensor_mixed(t, p, g),
                    (Buf::F16(p), Buf::F16(g)) => alone[i].step_tensor_mixed(t, p, g),
                    _ => unreachable!(),
                };
                prop_assert!(out.is_ok());
            }
            for i in 0..tensors.len() {
                prop_assert_eq!(
                    params[i].bits(),
                    reference[i].bits(),
                    "step {} tensor {} {:?}",
                    step,
                    i,
                    KINDS[tensors[i].0]
                );
                prop_assert_eq!(state_bits(&opt, TensorId(i)), state_bits(&alone[i], TensorId(0)));
                prop_assert_eq!(
                    opt.step_count(TensorId(i)).unwrap(),
                    alone[i].step_count(TensorId(0)).unwrap()
                );
            }
        }
    }
}
