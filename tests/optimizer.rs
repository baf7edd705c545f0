//! The owning optimizer's contract: errors change nothing, policies, groups, schedules,
//! read-outs, and equivalence with the stateless kernels (also on shards).

use vsgd::kernels::{self, StepOutcome};
use vsgd::{
    Algorithm, Config, DType, Error, GroupId, LrSchedule, NonFinitePolicy, Optimizer, Schedule,
    TensorId, TensorSpec, VsgdConfig,
};

fn vsgd() -> Config {
    Config::default_for(Algorithm::Vsgd)
}

fn grad(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + 1.0) * (seed as f32 + 0.37)).sin())
        .collect()
}

#[test]
fn error_policy_changes_nothing() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    opt.set_policy(NonFinitePolicy::Error);
    let a = opt.add_tensor(TensorSpec::new(&[3])).unwrap();
    let b = opt.add_tensor(TensorSpec::new(&[2])).unwrap();
    let (mut pa, mut pb) = (vec![1.0f32; 3], vec![2.0f32; 2]);
    opt.step::<f32>(&mut [&mut pa, &mut pb], &[&grad(3, 1), &grad(2, 1)])
        .unwrap();
    let before = (opt.clone(), pa.clone(), pb.clone());
    let err = opt
        .step::<f32>(&mut [&mut pa, &mut pb], &[&grad(3, 2), &[0.5, f32::NAN]])
        .unwrap_err();
    assert_eq!(err, Error::NonFiniteGradient { tensor: b.0 });
    assert!(err.to_string().contains("tensor 1"));
    assert_eq!((opt, pa, pb), before);
    let _ = a;
}

#[test]
fn propagate_policy_does_what_the_published_code_does() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    opt.set_policy(NonFinitePolicy::Propagate);
    let a = opt.add_tensor(TensorSpec::new(&[2])).unwrap();
    let mut p = vec![1.0f32, 1.0];
    let out = opt.step_tensor(a, &mut p, &[f32::NAN, 1.0]).unwrap();
    assert_eq!(out, StepOutcome::Applied);
    assert!(p[0].is_nan() && p[1].is_finite());
    assert_eq!(opt.step_count(a).unwrap(), 1);
}

#[test]
fn skip_policy_reports_and_leaves_step_count() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    let a = opt.add_tensor(TensorSpec::new(&[2]).name("w")).unwrap();
    let mut p = vec![1.0f32, 1.0];
    let out = opt.step_tensor(a, &mut p, &[f32::INFINITY, 1.0]).unwrap();
    assert_eq!(out, StepOutcome::Skipped);
    assert_eq!(opt.last_skipped(), &[a]);
    assert_eq!(p, [1.0, 1.0]);
    assert_eq!(opt.step_count(a).unwrap(), 0);
    assert!(opt
        .state::<f32>(a, "mug")
        .unwrap()
        .iter()
        .all(|&x| x == 0.0));
    opt.step_tensor(a, &mut p, &[1.0, 1.0]).unwrap();
    assert!(opt.last_skipped().is_empty());
}

#[test]
fn bad_buffers_are_typed_errors_and_change_nothing() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    let a = opt.add_tensor(TensorSpec::new(&[3])).unwrap();
    let b = opt
        .add_tensor(TensorSpec::new(&[2]).dtype(DType::F64))
        .unwrap();
    let mut p = vec![1.0f32; 3];
    let snapshot = opt.clone();
    assert!(matches!(
        opt.step_tensor(a, &mut p, &[1.0; 2]),
        Err(Error::LengthMismatch { what: "grad", .. })
    ));
    assert!(matches!(
        opt.step_tensor(a, &mut [1.0f32; 4], &[1.0; 4]),
        Err(Error::LengthMismatch { what: "param", .. })
    ));
    assert!(matches!(
        opt.step_tensor(b, &mut [1.0f32; 2], &[1.0; 2]),
        Err(Error::DTypeMismatch { tensor: 1, .. })
    ));
    assert!(matches!(
        opt.step_tensor(TensorId(7), &mut p, &[1.0; 3]),
        Err(Error::UnknownTensor { tensor: 7 })
    ));
    // A mixed-dtype optimizer cannot step all tensors as f32; nothing is touched.
    let mut q = vec![1.0f32; 2];
    assert!(opt
        .step::<f32>(&mut [&mut p, &mut q], &[&[1.0; 3], &[1.0; 2]])
        .is_err());
    assert!(matches!(
        opt.step::<f32>(&mut [&mut p], &[&[1.0; 3]]),
        Err(Error::LengthMismatch { what: "params", .. })
    ));
    assert_eq!(opt, snapshot);
    assert_eq!(p, [1.0; 3]);
    assert!(matches!(
        opt.state::<f32>(a, "m"),
        Err(Error::UnknownStateArray { .. })
    ));
    assert!(matches!(
        opt.state::<f64>(a, "mug"),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(
        opt.add_tensor(TensorSpec::new(&[usize::MAX, 2])),
        Err(Error::ShapeOverflow)
    ));
    assert!(matches!(
        opt.add_tensor(TensorSpec::new(&[2]).group(GroupId(3))),
        Err(Error::UnknownGroup { group: 3 })
    ));
    assert!(matches!(
        opt.set_lr(GroupId(0), f64::NAN),
        Err(Error::InvalidLearningRate { .. })
    ));
    assert!(matches!(
        opt.set_lr(GroupId(0), -1.0),
        Err(Error::InvalidLearningRate { .. })
    ));
    assert!(Optimizer::new(Config::Vsgd(VsgdConfig {
        ps: 0.0,
        ..Default::default()
    }))
    .is_err());
}

#[test]
fn groups_have_their_own_hyperparameters_and_one_algorithm() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    let slow = opt
        .add_group(Config::Vsgd(VsgdConfig {
            lr: 0.01,
            ..Default::default()
        }))
        .unwrap();
    assert!(matches!(
        opt.add_group(Config::default_for(Algorithm::Adam)),
        Err(Error::AlgorithmMismatch { .. })
    ));
    let a = opt.add_tensor(TensorSpec::new(&[4])).unwrap();
    let b = opt.add_tensor(TensorSpec::new(&[4]).group(slow)).unwrap();
    let (mut pa, mut pb) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let g = grad(4, 3);
    opt.step::<f32>(&mut [&mut pa, &mut pb], &[&g, &g]).unwrap();
    for i in 0..4 {
        // Same state, lr ten times smaller: the update is ten times smaller (up to rounding).
        assert!((pa[i] - 10.0 * pb[i]).abs() <= 1e-6 * pa[i].abs());
    }
    assert_eq!(opt.tensor_info(b).unwrap().group, slow);
    assert_eq!(opt.tensor_info(a).unwrap().step, 1);
}

#[test]
fn schedule_equals_setting_lr_by_hand() {
    let schedule = LrSchedule {
        schedule: Schedule::StepDecay {
            every: 3,
            factor: 0.5,
        },
        warmup: 2,
    };
    let mut auto = Optimizer::new(vsgd()).unwrap();
    auto.set_schedule(GroupId(0), schedule).unwrap();
    let mut manual = Optimizer::new(vsgd()).unwrap();
    let (ia, im) = (
        auto.add_tensor(TensorSpec::new(&[5])).unwrap(),
        manual.add_tensor(TensorSpec::new(&[5])).unwrap(),
    );
    let (mut pa, mut pm) = (vec![1.0f32; 5], vec![1.0f32; 5]);
    for t in 1..=10u64 {
        let g = grad(5, t as u32);
        auto.step_tensor(ia, &mut pa, &g).unwrap();
        manual.set_lr(GroupId(0), 0.1 * schedule.factor(t)).unwrap();
        manual.step_tensor(im, &mut pm, &g).unwrap();
        assert_eq!(pa, pm, "step {t}");
    }
    assert_eq!(auto.lr_at(GroupId(0), 7).unwrap(), 0.1 * 0.25);
}

#[test]
fn stateless_kernel_matches_optimizer_and_works_on_shards() {
    for alg in Algorithm::ALL {
        let config = Config::default_for(alg);
        let k = alg.state_count();
        let n = 37;
        let mut opt = Optimizer::new(config).unwrap();
        let id = opt.add_tensor(TensorSpec::new(&[n])).unwrap();
        let mut p_opt = vec![0.5f32; n];
        let mut p_whole = p_opt.clone();
        let mut p_shard = p_opt.clone();
        let mut s_whole = vec![vec![0.0f32; n]; k];
        let mut s_shard = vec![vec![0.0f32; n]; k];
        for t in 1..=5u64 {
            let g = grad(n, t as u32);
            opt.step_tensor(id, &mut p_opt, &g).unwrap();
            let lr = config.lr();
            let mut refs: Vec<&mut [f32]> = s_whole.iter_mut().map(|v| &mut v[..]).collect();
            kernels::step(
                &config,
                t,
                lr,
                &mut p_whole,
                &g,
                &mut refs,
                NonFinitePolicy::Skip,
            )
            .unwrap();
            // Two shards of the same tensor, stepped separately (ZeRO-style).
            for (lo, hi) in [(0, 20), (20, n)] {
                let mut refs: Vec<&mut [f32]> =
                    s_shard.iter_mut().map(|v| &mut v[lo..hi]).collect();
                kernels::step(
                    &config,
                    t,
                    lr,
                    &mut p_shard[lo..hi],
                    &g[lo..hi],
                    &mut refs,
                    NonFinitePolicy::Skip,
                )
                .unwrap();
            }
        }
        assert_eq!(p_opt, p_whole, "{alg}");
        assert_eq!(p_whole, p_shard, "{alg}");
        for (j, name) in alg.state_names().iter().enumerate() {
            assert_eq!(opt.state::<f32>(id, name).unwrap(), &s_whole[j][..]);
            assert_eq!(s_whole[j], s_shard[j]);
        }
    }
}

#[test]
fn stateless_kernel_rejects_bad_input() {
    let c = vsgd();
    let mut p = [1.0f64; 3];
    let (mut a, mut b, mut d) = ([0.0f64; 3], [0.0f64; 3], [0.0f64; 2]);
    let pol = NonFinitePolicy::Skip;
    assert!(matches!(
        kernels::step(
            &c,
            0,
            0.1,
            &mut p,
            &[1.0; 3],
            &mut [&mut a, &mut b, &mut d],
            pol
        ),
        Err(Error::InvalidStep { step: 0 })
    ));
    assert!(matches!(
        kernels::step(&c, 1, 0.1, &mut p, &[1.0; 3], &mut [&mut a, &mut b], pol),
        Err(Error::StateCount {
            expected: 3,
            got: 2
        })
    ));
    let mut c2 = [0.0f64; 3];
    assert!(matches!(
        kernels::step(
            &c,
            1,
            0.1,
            &mut p,
            &[1.0; 3],
            &mut [&mut a, &mut b, &mut d],
            pol
        ),
        Err(Error::LengthMismatch { what: "state", .. })
    ));
    assert!(matches!(
        kernels::step(
            &c,
            1,
            f64::NAN,
            &mut p,
            &[1.0; 3],
            &mut [&mut a, &mut b, &mut c2],
            pol
        ),
        Err(Error::InvalidLearningRate { .. })
    ));
    assert!(matches!(
        kernels::step(
            &c,
            1,
            0.1,
            &mut p,
            &[1.0, f64::NAN, 1.0],
            &mut [&mut a, &mut b, &mut c2],
            NonFinitePolicy::Error
        ),
        Err(Error::NonFiniteGradient { .. })
    ));
    assert_eq!(
        kernels::step(
            &c,
            1,
            0.1,
            &mut p,
            &[1.0, f64::NAN, 1.0],
            &mut [&mut a, &mut b, &mut c2],
            pol
        ),
        Ok(StepOutcome::Skipped)
    );
    assert_eq!(p, [1.0; 3]);
    assert!(a.iter().chain(&b).chain(&c2).all(|&x| x == 0.0));
}

#[test]
fn effective_momentum_reads_out_vsgd_only() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    let a = opt.add_tensor(TensorSpec::new(&[3])).unwrap();
    let mut p = vec![1.0f32; 3];
    opt.step_tensor(a, &mut p, &[0.1, -0.2, 0.3]).unwrap();
    let mut m = [0.0f32; 3];
    opt.effective_momentum(a, &mut m).unwrap();
    let (bg, bhg) = (
        opt.state::<f32>(a, "bg").unwrap(),
        opt.state::<f32>(a, "bhg").unwrap(),
    );
    for i in 0..3 {
        assert_eq!(m[i], bhg[i] / (bg[i] + bhg[i]));
        assert!(m[i] > 0.0 && m[i] < 1.0);
    }
    assert!(opt.effective_momentum(a, &mut [0.0f32; 2]).is_err());
    let mut adam = Optimizer::new(Config::default_for(Algorithm::Adam)).unwrap();
    let b = adam.add_tensor(TensorSpec::new(&[3])).unwrap();
    assert!(matches!(
        adam.effective_momentum(b, &mut m),
        Err(Error::AlgorithmMismatch { .. })
    ));
    assert_eq!(opt.find("nope"), None);
}

#[test]
fn names_and_shapes_are_kept() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    let s = opt.add_tensor(TensorSpec::new(&[])).unwrap();
    let w = opt
        .add_tensor(TensorSpec::new(&[2, 0, 3]).name("empty"))
        .unwrap();
    assert_eq!(opt.tensor_info(s).unwrap().len, 1);
    assert_eq!(opt.tensor_info(w).unwrap().len, 0);
    assert_eq!(opt.find("empty"), Some(w));
    // Empty tensors step fine.
    opt.step_tensor::<f32>(w, &mut [], &[]).unwrap();
    assert_eq!(opt.step_count(w).unwrap(), 1);
}

#[test]
fn a_group_frozen_at_run_time_saves_loads_and_reconfigures() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    let a = opt.add_tensor(TensorSpec::new(&[3])).unwrap();
    let mut p = vec![1.0f32; 3];
    opt.step_tensor(a, &mut p, &[0.1, 0.2, 0.3]).unwrap();
    opt.set_lr(GroupId(0), 0.0).unwrap();
    let own = *opt.config(GroupId(0)).unwrap();
    opt.set_config(GroupId(0), own).unwrap();
    let bytes = vsgd::checkpoint::save(&opt).unwrap();
    let back = vsgd::checkpoint::load(&bytes).unwrap();
    assert_eq!(back, opt);
    let before = p.clone();
    opt.step_tensor(a, &mut p, &[0.1, 0.2, 0.3]).unwrap();
    assert_eq!(p, before);
    // A new optimizer still needs a positive learning rate, as the spec says.
    let mut c = vsgd();
    c.set_lr(0.0);
    assert!(matches!(Optimizer::new(c), Err(Error::Config(e)) if e.field == "lr"));
}

#[test]
fn learning_rates_that_would_overflow_are_rejected() {
    let mut c = Config::default_for(Algorithm::AdamW); // weight_decay 0.01
    c.set_lr(1e39);
    assert!(matches!(c.validate(), Err(e) if e.field == "lr"));
    c.set_lr(200.0); // lr · weight_decay = 2: the decay factor would be negative
    assert!(matches!(c.validate(), Err(e) if e.field == "weight_decay"));
    c.set_lr(1e-3);
    let mut opt = Optimizer::new(c).unwrap();
    assert!(matches!(
        opt.set_lr(GroupId(0), 1e3),
        Err(Error::InvalidLearningRate { .. })
    ));
    assert!(matches!(
        opt.set_lr(GroupId(0), 1e39),
        Err(Error::InvalidLearningRate { .. })
    ));
    let mut p = [1.0f32; 2];
    let (mut m, mut v) = ([0.0f32; 2], [0.0f32; 2]);
    assert!(matches!(
        kernels::step(
            &c,
            1,
            1e3,
            &mut p,
            &[1.0; 2],
            &mut [&mut m, &mut v],
            NonFinitePolicy::Skip
        ),
        Err(Error::InvalidLearningRate { .. })
    ));
}

#[test]
fn huge_tensors_are_an_error_not_an_abort() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    for shape in [&[1usize << 62][..], &[1 << 31, 1 << 31], &[usize::MAX / 2]] {
        let e = opt.add_tensor(TensorSpec::new(shape)).unwrap_err();
        assert!(
            matches!(e, Error::AllocationFailed { .. } | Error::ShapeOverflow),
            "{e}"
        );
    }
    assert_eq!(opt.num_tensors(), 0);
}

#[test]
fn a_rejected_step_keeps_the_last_report() {
    let mut opt = Optimizer::new(vsgd()).unwrap();
    let a = opt.add_tensor(TensorSpec::new(&[2])).unwrap();
    let mut p = vec![1.0f32; 2];
    opt.step_tensor(a, &mut p, &[f32::NAN, 1.0]).unwrap();
    assert_eq!(opt.last_skipped(), &[a]);
    assert!(opt.step_tensor(a, &mut p, &[1.0]).is_err());
    opt.set_policy(NonFinitePolicy::Error);
    assert!(opt.step_tensor(a, &mut p, &[f32::NAN, 1.0]).is_err());
    assert_eq!(opt.last_skipped(), &[a]);
    // The report is not part of the optimizer's value: a reloaded copy compares equal.
    let back = vsgd::checkpoint::load(&vsgd::checkpoint::save(&opt).unwrap()).unwrap();
    assert_eq!(back, opt);
}
