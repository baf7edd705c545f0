//! Mixed precision in the owning optimizer: tensors whose parameter is bf16/f16 (state f32) or
//! whose state is bf16 (stochastic rounding), stepped with `Optimizer::step_mixed`, against the
//! stateless kernel `kernels::mixed::step`; checkpoints of such tensors (format v2).

mod algorithms;
mod common;

use algorithms::ALGORITHMS;
use common::Rng;
use vsgd::checkpoint::{self, Checkpoint, CheckpointError};
use vsgd::kernels::mixed::{self, Bf16Sr, F32State, StateStorage, Storage};
use vsgd::kernels::{NonFinitePolicy, Verdict};
use vsgd::{
    bf16, f16, Algorithm, Config, DType, Error, LrSchedule, Optimizer, Schedule, TensorId,
    TensorSpec,
};

fn config(a: Algorithm) -> Config {
    algorithms::config_with_every_term(a)
}

fn random<P: Storage>(rng: &mut Rng, n: usize) -> Vec<P> {
    (0..n)
        .map(|_| P::narrow((rng.unit() * 2.0 - 1.0) as f32))
        .collect()
}

/// The stateless reference of one tensor: its parameter, state arrays and step counter.
struct Reference<P: Storage, S: StateStorage> {
    param: Vec<P>,
    state: Vec<Vec<S::Elem>>,
    storage: S,
    t: u64,
}

impl<P: Storage, S: StateStorage> Reference<P, S> {
    fn new(param: Vec<P>, k: usize, storage: S) -> Self {
        let n = param.len();
        Reference {
            param,
            state: vec![vec![S::Elem::default(); n]; k],
            storage,
            t: 0,
        }
    }

    fn step(&mut self, c: &Config, lr: f64, grad: &[P]) {
        self.t += 1;
        let mut arrays: Vec<&mut [S::Elem]> = self.state.iter_mut().map(|v| &mut v[..]).collect();
        mixed::step(
            c,
            self.t,
            lr,
            &mut self.param,
            grad,
            &mut arrays,
            &self.storage,
            NonFinitePolicy::Skip,
            Verdict::Check,
        )
        .unwrap();
    }
}

fn bits<P: Storage>(x: &[P]) -> Vec<u32> {
    x.iter().map(|v| v.widen().to_bits()).collect()
}

/// Three tensors of `P` (one large enough to be split across threads), stepped 4 times with a
/// step-decay schedule by `step_mixed` on 1 and 2 threads, against `mixed::step` per tensor.
fn matches_stateless<P: Storage>(state: DType) {
    let lens = [5usize, 300, 300_000];
    for a in ALGORITHMS {
        let c = config(a);
        let k = a.state_count();
        for threads in [1, 2] {
            let mut rng = Rng(7 + threads as u64);
            let mut opt = Optimizer::new(c).unwrap();
            opt.set_threads(threads);
            let schedule = LrSchedule::from(Schedule::StepDecay {
                every: 2,
                factor: 0.5,
            });
            opt.set_schedule(vsgd::GroupId(0), schedule).unwrap();
            let mut params: Vec<Vec<P>> = lens.iter().map(|&n| random(&mut rng, n)).collect();
            for (i, n) in lens.iter().enumerate() {
                let spec = TensorSpec::new(core::slice::from_ref(n))
                    .dtype(P::DTYPE)
                    .state_dtype(state)
                    .seed(100 + i as u64);
                opt.add_tensor(spec).unwrap();
            }
            let mut f32_refs: Vec<Reference<P, F32State>> = Vec::new();
            let mut bf16_refs: Vec<Reference<P, Bf16Sr>> = Vec::new();
            for (i, p) in params.iter().enumerate() {
                match state {
                    DType::F32 => f32_refs.push(Reference::new(p.clone(), k, F32State)),
                    _ => bf16_refs.push(Reference::new(
                        p.clone(),
                        k,
                        Bf16Sr {
                            seed: 100 + i as u64,
                            offset: 0,
                        },
                    )),
                }
            }
            for step in 1..=4u64 {
                let grads: Vec<Vec<P>> = lens.iter().map(|&n| random(&mut rng, n)).collect();
                let lr = c.lr() * schedule.factor(step);
                let mut ps: Vec<&mut [P]> = params.iter_mut().map(|v| &mut v[..]).collect();
                let gs: Vec<Option<&[P]>> = grads.iter().map(|g| Some(&g[..])).collect();
                let r = opt.step_mixed(&mut ps, &gs).unwrap();
                assert_eq!(r.applied, 3);
                for (i, g) in grads.iter().enumerate() {
                    if let Some(r) = f32_refs.get_mut(i) {
                        r.step(&c, lr, g);
                    }
                    if let Some(r) = bf16_refs.get_mut(i) {
                        r.step(&c, lr, g);
                    }
                }
            }
            for (i, p) in params.iter().enumerate() {
                let what = format!("{a} {} threads {threads} tensor {i}", P::NAME);
                let id = TensorId(i);
                assert_eq!(opt.step_count(id).unwrap(), 4);
                let names = a.state_names();
                match state {
                    DType::F32 => {
                        let r = &f32_refs[i];
                        assert_eq!(bits(p), bits(&r.param), "{what}");
                        for (j, name) in names.iter().enumerate() {
                            let got = opt.state::<f32>(id, name).unwrap();
                            assert_eq!(bits(got), bits(&r.state[j]), "{what} {name}");
                        }
                    }
                    _ => {
                        let r = &bf16_refs[i];
                        assert_eq!(bits(p), bits(&r.param), "{what}");
                        for (j, name) in names.iter().enumerate() {
                            let got = opt.state_bf16(id, name).unwrap();
                            assert_eq!(bits(got), bits(&r.state[j]), "{what} {name}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_params_with_f32_state_step_as_the_stateless_kernel() {
    matches_stateless::<bf16>(DType::F32);
}

#[test]
fn f16_params_with_f32_state_step_as_the_stateless_kernel() {
    matches_stateless::<f16>(DType::F32);
}

#[test]
fn bf16_state_steps_as_the_stateless_kernel_on_any_thread_count() {
    matches_stateless::<bf16>(DType::Bf16);
}

#[test]
fn f32_params_with_bf16_state_step_as_the_stateless_kernel() {
    matches_stateless::<f32>(DType::Bf16);
}

/// An optimizer of every mixed recipe, trained `steps` times from seed `seed`.
fn trained(a: Algorithm, steps: u64, seed: u64) -> (Optimizer, Vec<Vec<bf16>>, Vec<f16>) {
    let mut opt = Optimizer::new(config(a)).unwrap();
    opt.set_clip_norm(Some(50.0)).unwrap();
    opt.add_tensor(TensorSpec::new(&[4, 8]).dtype(DType::Bf16).name("w"))
        .unwrap();
    opt.add_tensor(
        TensorSpec::new(&[33])
            .dtype(DType::Bf16)
            .state_dtype(DType::Bf16)
            .seed(0xfeed),
    )
    .unwrap();
    let mut rng = Rng(seed);
    let mut p: Vec<Vec<bf16>> = vec![random(&mut rng, 32), random(&mut rng, 33)];
    let mut h: Vec<f16> = random(&mut rng, 7);
    let hid = opt
        .add_tensor(TensorSpec::new(&[7]).dtype(DType::F16))
        .unwrap();
    assert_eq!(hid, TensorId(2));
    for _ in 0..steps {
        advance(&mut opt, &mut p, &mut h, &mut rng);
    }
    (opt, p, h)
}

/// One step of the bf16 tensors (the f16 one frozen), then one of the f16 tensor alone.
fn advance(opt: &mut Optimizer, p: &mut [Vec<bf16>], h: &mut [f16], rng: &mut Rng) {
    let g: Vec<Vec<bf16>> = vec![random(rng, 32), random(rng, 33)];
    let (a, b) = p.split_at_mut(1);
    let mut ps: Vec<&mut [bf16]> = vec![&mut a[0], &mut b[0], &mut []];
    let r = opt
        .step_mixed(&mut ps, &[Some(&g[0]), Some(&g[1]), None])
        .unwrap();
    assert_eq!((r.applied, r.frozen), (2, 1));
    let gh: Vec<f16> = random(rng, 7);
    opt.step_tensor_mixed(TensorId(2), h, &gh).unwrap();
}

#[test]
fn mixed_checkpoints_resume_bit_exact_and_keep_each_dtype() {
    for a in ALGORITHMS {
        let (whole, p, h) = trained(a, 6, 3);
        let (half_way, mut p2, mut h2) = trained(a, 3, 3);
        let bytes = checkpoint::save(&half_way).unwrap();
        // Version 2, each array in its own type: 2 bytes per bf16 element.
        let view = Checkpoint::parse(&bytes).unwrap();
        assert_eq!(view.version, 2);
        let t1 = &view.tensors[1];
        assert_eq!(
            (t1.param_dtype, t1.dtype, t1.seed),
            (DType::Bf16, DType::Bf16, 0xfeed)
        );
        assert!(t1.arrays.iter().all(|x| x.len() == 2 * 33));
        assert_eq!(
            (view.tensors[0].param_dtype, view.tensors[0].dtype),
            (DType::Bf16, DType::F32)
        );
        assert_eq!(view.tensors[2].param_dtype, DType::F16);
        assert!(view.tensors[0].arrays.iter().all(|x| x.len() == 4 * 32));
        // Resume: three more steps from the checkpoint equal six uninterrupted ones.
        let mut resumed = checkpoint::load(&bytes).unwrap();
        assert_eq!(resumed, half_way);
        // The random stream of the gradients continues where `trained` left it.
        let mut rng = Rng(3);
        trained_rng_skip(&mut rng, 3);
        for _ in 0..3 {
            advance(&mut resumed, &mut p2, &mut h2, &mut rng);
        }
        assert_eq!(resumed, whole, "{a}");
        assert_eq!(p2, p, "{a}");
        assert_eq!(h2, h, "{a}");
        assert_eq!(
            checkpoint::save(&resumed).unwrap(),
            checkpoint::save(&whole).unwrap()
        );
        // Shards (ZeRO partition) merge back to the same bytes, and load to the same value.
        let shards = checkpoint::save_shards(&whole, 3).unwrap();
        assert_eq!(
            checkpoint::merge(&shards).unwrap(),
            checkpoint::save(&whole).unwrap()
        );
        assert_eq!(checkpoint::load_shards(&shards).unwrap(), whole);
        // Restoring into tensors registered with another seed or dtype is refused.
        let mut other = Optimizer::new(config(a)).unwrap();
        other
            .add_tensor(TensorSpec::new(&[4, 8]).dtype(DType::Bf16).name("w"))
            .unwrap();
        other
            .add_tensor(
                TensorSpec::new(&[33])
                    .dtype(DType::Bf16)
                    .state_dtype(DType::Bf16)
                    .seed(1),
            )
            .unwrap();
        other
            .add_tensor(TensorSpec::new(&[7]).dtype(DType::F16))
            .unwrap();
        let before = other.clone();
        let e = checkpoint::restore(&mut other, &bytes).unwrap_err();
        assert!(e.to_string().contains("seed"), "{e}");
        assert_eq!(other, before);
    }
}

/// Draws what `trained(_, steps, _)` drew from `rng` (the initial values and the gradients).
fn trained_rng_skip(rng: &mut Rng, steps: u64) {
    let _: Vec<bf16> = random(rng, 32);
    let _: Vec<bf16> = random(rng, 33);
    let _: Vec<f16> = random(rng, 7);
    for _ in 0..steps {
        let _: Vec<bf16> = random(rng, 32);
        let _: Vec<bf16> = random(rng, 33);
        let _: Vec<f16> = random(rng, 7);
    }
}

#[test]
fn wrong_types_and_combinations_are_errors_that_change_nothing() {
    let mut opt = Optimizer::new(config(Algorithm::Vsgd)).unwrap();
    // Combinations no step supports.
    for (p, s) in [
        (DType::F64, DType::F32),
        (DType::F32, DType::F64),
        (DType::Bf16, DType::F16),
        (DType::F16, DType::F16),
        (DType::Bf16, DType::F64),
    ] {
        let e = opt
            .add_tensor(TensorSpec::new(&[3]).dtype(p).state_dtype(s))
            .unwrap_err();
        assert_eq!(e, Error::DTypeCombination { param: p, state: s });
    }
    assert_eq!(opt.num_tensors(), 0);
    let w = opt
        .add_tensor(TensorSpec::new(&[3]).dtype(DType::Bf16))
        .unwrap();
    let info = opt.tensor_info(w).unwrap();
    assert_eq!((info.dtype, info.state_dtype), (DType::Bf16, DType::F32));
    let before = opt.clone();
    // The f32 step refuses a bf16 tensor (its parameter is not f32), naming both types.
    let e = opt
        .step_tensor(w, &mut [0.0f32; 3], &[0.0f32; 3])
        .unwrap_err();
    assert_eq!(
        e,
        Error::DTypeMismatch {
            tensor: 0,
            expected: DType::Bf16,
            got: DType::F32
        }
    );
    assert!(
        e.to_string().contains("bf16") && e.to_string().contains("f32"),
        "{e}"
    );
    // step_mixed with the wrong 16-bit type, or the wrong length.
    let mut ph = [f16::ZERO; 3];
    let e = opt
        .step_tensor_mixed(w, &mut ph, &[f16::ZERO; 3])
        .unwrap_err();
    assert!(matches!(e, Error::DTypeMismatch { .. }), "{e:?}");
    let mut pb = [bf16::ONE; 3];
    let e = opt
        .step_tensor_mixed(w, &mut pb[..2], &[bf16::ONE; 2])
        .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { .. }), "{e:?}");
    assert_eq!(opt, before);
    // An f32 tensor is not stepped by step_mixed::<bf16>; a plain f64 tensor never.
    let mut o2 = Optimizer::new(config(Algorithm::Adam)).unwrap();
    let d = o2
        .add_tensor(TensorSpec::new(&[2]).dtype(DType::F64))
        .unwrap();
    let e = o2
        .step_tensor_mixed(d, &mut [bf16::ONE; 2], &[bf16::ONE; 2])
        .unwrap_err();
    assert!(matches!(e, Error::DTypeMismatch { .. }), "{e:?}");
}

#[test]
fn non_finite_gradients_follow_the_policy() {
    let n = 16;
    let build = |policy| {
        let mut opt = Optimizer::new(config(Algorithm::Vsgd)).unwrap();
        opt.set_policy(policy);
        for seed in [1, 2] {
            opt.add_tensor(
                TensorSpec::new(&[n])
                    .dtype(DType::Bf16)
                    .state_dtype(DType::Bf16)
                    .seed(seed),
            )
            .unwrap();
        }
        opt
    };
    let good = vec![bf16::from_f32(0.5); n];
    let mut bad = good.clone();
    bad[7] = bf16::NAN;
    let p0 = vec![bf16::ONE; n];
    // Error: nothing changes, the first bad tensor is named.
    let mut opt = build(NonFinitePolicy::Error);
    let before = opt.clone();
    let (mut a, mut b) = (p0.clone(), p0.clone());
    let e = opt
        .step_mixed(&mut [&mut a, &mut b], &[Some(&good), Some(&bad)])
        .unwrap_err();
    assert_eq!(e, Error::NonFiniteGradient { tensor: 1 });
    assert_eq!((opt == before, &a, &b), (true, &p0, &p0));
    // Skip: the bad tensor is left as it was, the good one updated.
    let mut opt = build(NonFinitePolicy::Skip);
    let r = opt
        .step_mixed(&mut [&mut a, &mut b], &[Some(&good), Some(&bad)])
        .unwrap();
    assert_eq!((r.applied, r.skipped), (1, 1));
    assert_eq!(opt.last_skipped(), &[TensorId(1)]);
    assert_ne!(a, p0);
    assert_eq!(b, p0);
    assert_eq!(opt.step_count(TensorId(1)).unwrap(), 0);
    assert!(opt
        .state_bf16(TensorId(1), "mug")
        .unwrap()
        .iter()
        .all(|x| *x == bf16::ZERO));
}

#[test]
fn clipping_scales_mixed_gradients_by_the_global_norm() {
    let n = 64;
    let g: Vec<bf16> = (0..n).map(|i| bf16::from_f32(i as f32 / 8.0)).collect();
    let norm = g
        .iter()
        .map(|x| (x.to_f32() as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let run = |clip: Option<f64>, grad: &[bf16]| {
        let mut opt = Optimizer::new(config(Algorithm::Sgdm)).unwrap();
        opt.set_clip_norm(clip).unwrap();
        opt.add_tensor(TensorSpec::new(&[n]).dtype(DType::Bf16))
            .unwrap();
        let mut p = vec![bf16::ZERO; n];
        opt.step_mixed(&mut [&mut p], &[Some(grad)]).unwrap();
        (p, opt.last_grad_norm())
    };
    let (unclipped, none) = run(None, &g);
    assert_eq!(none, None);
    let (p, seen) = run(Some(norm * 10.0), &g);
    assert_eq!(seen, Some(norm));
    assert_eq!(p, unclipped, "a norm under the maximum changes nothing");
    // Clipped to a quarter of the norm: SGD's first step moves by lr·c·g.
    let (p, _) = run(Some(norm / 4.0), &g);
    let c = (norm / 4.0) / (norm + 1e-6);
    let lr = config(Algorithm::Sgdm).lr();
    for (i, (x, gi)) in p.iter().zip(&g).enumerate() {
        let want = -(lr * c * gi.to_f32() as f64);
        let ulp = (want.abs() / 128.0).max(1e-30);
        assert!(
            (x.to_f32() as f64 - want).abs() <= ulp,
            "element {i}: {x} vs {want}"
        );
    }
}

#[test]
fn a_version_2_tensor_with_unknown_or_missing_mixed_keys_is_refused() {
    let (opt, _, _) = trained(Algorithm::Adam, 1, 5);
    let bytes = checkpoint::save(&opt).unwrap();
    // Every truncation is an error, never a panic (the mixed keys sit mid-tensor).
    for cut in (0..bytes.len()).step_by(7) {
        assert!(checkpoint::load(&bytes[..cut]).is_err());
    }
    // Renaming the "seed" key (checksum recomputed, so the decoder's schema check and not the
    // checksum must catch it): an unknown key in a tensor map is a typed error.
    let at = bytes
        .windows(5)
        .position(|w| w == b"\xa4seed")
        .expect("a seed key");
    let mut b = bytes.clone();
    b[at + 1..at + 5].copy_from_slice(b"sead");
    let body = b.len() - 9;
    let sum = xxhash_rust::xxh3::xxh3_64(&b[..body]);
    b[body + 1..].copy_from_slice(&sum.to_be_bytes());
    let e = checkpoint::load(&b).unwrap_err();
    assert!(matches!(e, CheckpointError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("known key"), "{e}");
    // A seed on a tensor whose state is f32 (the encoder writes 0: only bf16 state is
    // rounded stochastically) is refused, not dropped.
    let at = bytes
        .windows(6)
        .position(|w| w == b"\xa4seed\x00")
        .expect("a mixed tensor with f32 state");
    let mut b = bytes.clone();
    b[at + 5] = 7;
    let sum = xxhash_rust::xxh3::xxh3_64(&b[..body]);
    b[body + 1..].copy_from_slice(&sum.to_be_bytes());
    let e = checkpoint::load(&b).unwrap_err();
    assert!(matches!(e, CheckpointError::Inconsistent { .. }), "{e:?}");
    assert!(e.to_string().contains("seed 7 with f32 state"), "{e}");
}
