//! Property tests of the update rules and of the optimizer's guarantees.

use proptest::prelude::*;
use vsgd::{
    AdamConfig, Algorithm, Config, ConstantVsgdConfig, Element, GroupId, Optimizer, TensorId,
    TensorSpec, VsgdConfig,
};

/// Runs `grads` (one gradient vector per step) through a fresh optimizer holding one tensor.
fn run<T: Element>(config: Config, param0: &[f64], grads: &[Vec<f64>]) -> (Optimizer, Vec<T>) {
    let mut opt = Optimizer::new(config).unwrap();
    let id = opt
        .add_tensor(TensorSpec::new(&[param0.len()]).dtype(T::DTYPE))
        .unwrap();
    let mut p: Vec<T> = param0.iter().map(|&x| T::from_f64(x)).collect();
    for g in grads {
        let g: Vec<T> = g.iter().map(|&x| T::from_f64(x)).collect();
        opt.step_tensor(id, &mut p, &g).unwrap();
    }
    (opt, p)
}

fn bits<T: Element>(x: &[T]) -> Vec<u64> {
    x.iter().map(|v| v.to_f64().to_bits()).collect()
}

fn log_uniform(lo: f64, hi: f64) -> impl Strategy<Value = f64> {
    (lo.ln()..=hi.ln()).prop_map(f64::exp)
}

/// Any valid VSGD configuration whose decoupled decay keeps 1 − η·λ in [0, 1].
fn vsgd_config() -> impl Strategy<Value = VsgdConfig> {
    (
        (
            log_uniform(1e-6, 10.0),
            log_uniform(1e-6, 1e6),
            log_uniform(1e-30, 1e6),
        ),
        (1e-3..=1.0f64, 1e-3..=1.0f64, log_uniform(1e-30, 1.0)),
        (0.0..=1.0f64, 0.0..=1.0f64, any::<bool>()),
    )
        .prop_map(
            |((lr, ghattg, ps), (tau1, tau2, eps), (wd, l2, maximize))| VsgdConfig {
                lr,
                ghattg,
                ps,
                tau1,
                tau2,
                eps,
                weight_decay: wd / lr.max(1.0),
                l2,
                maximize,
            },
        )
}

/// Gradient sequences: `steps` vectors of `n` finite values in ±`scale` (spanning many
/// magnitudes, with zeros).
fn grads(n: usize, steps: usize, scale: f64) -> impl Strategy<Value = Vec<Vec<f64>>> {
    let value = prop_oneof![
        Just(0.0),
        (-1.0..=1.0f64, -30.0..=0.0f64).prop_map(move |(m, e)| m * scale * 10f64.powf(e)),
        (-1.0..=1.0f64).prop_map(move |m| m * scale),
    ];
    prop::collection::vec(prop::collection::vec(value, n), steps)
}

fn check_vsgd_state<T: Element>(opt: &Optimizer) -> Result<(), TestCaseError> {
    let id = TensorId(0);
    for name in ["mug", "bg", "bhg"] {
        let s = opt.state::<T>(id, name).unwrap();
        prop_assert!(s.iter().all(|v| v.is_finite()), "{name} not finite: {s:?}");
    }
    for name in ["bg", "bhg"] {
        let s = opt.state::<T>(id, name).unwrap();
        prop_assert!(s.iter().all(|&v| v > T::ZERO), "{name} not positive: {s:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Constant VSGD's mean update is Adam's first moment with β1 = K/(K+1), whatever the
    /// gradients (the paper's claim), up to rounding.
    #[test]
    fn constant_vsgd_mean_is_adams_first_moment(
        k in log_uniform(1e-3, 1e3),
        g in grads(8, 20, 1e3),
    ) {
        let cv = Config::ConstantVsgd(ConstantVsgdConfig { ghattg: k, ..Default::default() });
        let adam = Config::Adam(AdamConfig { beta1: k / (k + 1.0), ..AdamConfig::adam() });
        let p0 = [0.0; 8];
        for (a, b) in [(run::<f64>(cv, &p0, &g).0, run::<f64>(adam, &p0, &g).0)] {
            let (mug, m) = (a.state::<f64>(TensorId(0), "mug").unwrap(),
                            b.state::<f64>(TensorId(0), "m").unwrap());
            let scale = g.iter().flatten().fold(1e-300f64, |s, x| s.max(x.abs()));
            for (x, y) in mug.iter().zip(m) {
                prop_assert!((x - y).abs() <= 1e-12 * scale, "{x} vs {y}");
            }
        }
        let (a, b) = (run::<f32>(cv, &p0, &g).0, run::<f32>(adam, &p0, &g).0);
        let (mug, m) = (a.state::<f32>(TensorId(0), "mug").unwrap(),
                        b.state::<f32>(TensorId(0), "m").unwrap());
        let scale = g.iter().flatten().fold(1e-30f64, |s, x| s.max(x.abs()));
        for (x, y) in mug.iter().zip(m) {
            prop_assert!(f64::from(x - y).abs() <= 1e-4 * scale, "{x} vs {y}");
        }
    }

    /// VSGD's state stays finite with bg, bhg > 0 for every valid config and every finite
    /// gradient within ±1e30 (f64). In f32, bg and bhg carry units of ĝ² and so can hold
    /// gradients up to about 1.8e19; the f32 property is checked within ±1e18.
    #[test]
    fn vsgd_state_stays_finite_and_positive(
        c in vsgd_config(),
        g64 in grads(6, 12, 1e30),
        g32 in grads(6, 12, 1e18),
        p0 in prop::collection::vec(-1e3..=1e3f64, 6),
    ) {
        check_vsgd_state::<f64>(&run::<f64>(Config::Vsgd(c), &p0, &g64).0)?;
        check_vsgd_state::<f32>(&run::<f32>(Config::Vsgd(c), &p0, &g32).0)?;
    }

    /// The effective momentum bhg / (bg + bhg) lies strictly inside (0, 1) for gradients
    /// within ±1e6 at the default prior strength, and in [0, 1] (never NaN) always.
    #[test]
    fn effective_momentum_is_a_fraction(
        c in vsgd_config(),
        g in grads(6, 30, 1e6),
        g_wide in grads(6, 12, 1e30),
    ) {
        let c_default_ps = VsgdConfig { ps: 1e-8, ..c };
        let (opt, _) = run::<f64>(Config::Vsgd(c_default_ps), &[0.5; 6], &g);
        let mut m = [0.0f64; 6];
        opt.effective_momentum(TensorId(0), &mut m).unwrap();
        prop_assert!(m.iter().all(|&x| x > 0.0 && x < 1.0), "{m:?}");
        let (opt, _) = run::<f64>(Config::Vsgd(c), &[0.5; 6], &g_wide);
        opt.effective_momentum(TensorId(0), &mut m).unwrap();
        prop_assert!(m.iter().all(|&x| (0.0..=1.0).contains(&x)), "{m:?}");
    }

    /// lr = 0 leaves the parameters bit-identical, for every algorithm and option.
    #[test]
    fn zero_lr_leaves_params_unchanged(
        alg in 0usize..5,
        wd in 0.0..=0.5f64,
        l2 in 0.0..=0.5f64,
        g in grads(7, 5, 1e3),
        p0 in prop::collection::vec(-10.0..=10.0f64, 7),
    ) {
        let mut config = Config::default_for(Algorithm::ALL[alg]);
        config.set("weight_decay", wd).unwrap();
        config.set("l2", l2).unwrap();
        for dtype in [vsgd::DType::F32, vsgd::DType::F64] {
            let mut opt = Optimizer::new(config).unwrap();
            opt.set_lr(GroupId(0), 0.0).unwrap();
            let id = opt.add_tensor(TensorSpec::new(&[7]).dtype(dtype)).unwrap();
            if dtype == vsgd::DType::F32 {
                let mut p: Vec<f32> = p0.iter().map(|&x| x as f32).collect();
                let before = p.clone();
                for s in &g {
                    let s: Vec<f32> = s.iter().map(|&x| x as f32).collect();
                    opt.step_tensor(id, &mut p, &s).unwrap();
                }
                prop_assert_eq!(bits(&p), bits(&before));
            } else {
                let mut p = p0.clone();
                for s in &g {
                    opt.step_tensor(id, &mut p, s).unwrap();
                }
                prop_assert_eq!(bits(&p), bits(&p0));
            }
        }
    }

    /// `maximize` with gradient ĝ is bit-identical to minimizing with −ĝ.
    #[test]
    fn maximize_equals_negated_gradients(
        alg in 0usize..5,
        l2 in prop_oneof![Just(0.0), 0.0..=0.1f64],
        g in grads(9, 8, 1e3),
        p0 in prop::collection::vec(-10.0..=10.0f64, 9),
    ) {
        let mut plain = Config::default_for(Algorithm::ALL[alg]);
        plain.set("l2", l2).unwrap();
        let mut maxi = plain;
        maxi.set("maximize", 1.0).unwrap();
        let neg: Vec<Vec<f64>> = g.iter().map(|s| s.iter().map(|x| -x).collect()).collect();
        let (a, pa) = run::<f32>(maxi, &p0, &g);
        let (b, pb) = run::<f32>(plain, &p0, &neg);
        prop_assert_eq!(bits(&pa), bits(&pb));
        for name in a.algorithm().state_names() {
            prop_assert_eq!(bits(a.state::<f32>(TensorId(0), name).unwrap()),
                            bits(b.state::<f32>(TensorId(0), name).unwrap()));
        }
        let (a, pa) = run::<f64>(maxi, &p0, &g);
        let (b, pb) = run::<f64>(plain, &p0, &neg);
        prop_assert_eq!(bits(&pa), bits(&pb));
        for name in a.algorithm().state_names() {
            prop_assert_eq!(bits(a.state::<f64>(TensorId(0), name).unwrap()),
                            bits(b.state::<f64>(TensorId(0), name).unwrap()));
        }
    }

    /// Under the default `skip` policy, a tensor whose gradient holds NaN or ±∞ is not touched
    /// (parameter, state, step counter bit-identical) while the others are updated as if it
    /// did not exist.
    #[test]
    fn skipped_step_changes_nothing(
        alg in 0usize..5,
        warm in grads(10, 3, 1.0),
        g in grads(10, 1, 1.0),
        bad_at in 0usize..10,
        bad in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
    ) {
        let config = Config::default_for(Algorithm::ALL[alg]);
        let mut opt = Optimizer::new(config).unwrap();
        let a = opt.add_tensor(TensorSpec::new(&[4])).unwrap();
        let b = opt.add_tensor(TensorSpec::new(&[6])).unwrap();
        let mut pa = vec![1.0f32; 4];
        let mut pb = vec![-1.0f32; 6];
        let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        for w in &warm {
            let w = to32(w);
            opt.step::<f32>(&mut [&mut pa, &mut pb], &[&w[..4], &w[4..]]).unwrap();
        }
        let mut reference = opt.clone();
        let (pa0, mut pb_ref) = (pa.clone(), pb.clone());
        let mut gg = to32(&g[0]);
        gg[bad_at] = bad as f32;
        let bad_tensor = if bad_at < 4 { a } else { b };
        let report = opt.step::<f32>(&mut [&mut pa, &mut pb], &[&gg[..4], &gg[4..]]).unwrap();
        prop_assert_eq!(report.skipped, 1);
        prop_assert_eq!(report.applied, 1);
        prop_assert_eq!(opt.last_skipped(), &[bad_tensor]);
        prop_assert_eq!(opt.step_count(bad_tensor).unwrap(), 3);
        if bad_tensor == a {
            prop_assert_eq!(bits(&pa), bits(&pa0));
            reference.step_tensor(b, &mut pb_ref, &gg[4..]).unwrap();
            prop_assert_eq!(bits(&pb), bits(&pb_ref));
        } else {
            prop_assert_eq!(bits(&pb), bits(&pb_ref));
            let mut pa_ref = pa0.clone();
            reference.step_tensor(a, &mut pa_ref, &gg[..4]).unwrap();
            prop_assert_eq!(bits(&pa), bits(&pa_ref));
        }
        // `reference` stepped only the good tensor: the whole optimizer state must agree.
        for name in opt.algorithm().state_names() {
            for id in [a, b] {
                prop_assert_eq!(bits(opt.state::<f32>(id, name).unwrap()),
                                bits(reference.state::<f32>(id, name).unwrap()));
            }
        }
    }
}
