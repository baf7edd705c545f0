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

#[test]
fn step_some_freezes_tensors_without_a_gradient() {
    // Three tensors; the middle one has no gradient at steps 2 and 3 (frozen, as torch skips a
    // parameter whose grad is None). The others get the bits of tensor-by-tensor steps.
    let sizes = [5usize, 3, 70_000];
    let mut a = Optimizer::new(vsgd()).unwrap();
    let mut b = Optimizer::new(vsgd()).unwrap();
    for n in sizes {
        a.add_tensor(TensorSpec::new(&[n])).unwrap();
        b.add_tensor(TensorSpec::new(&[n])).unwrap();
    }
    let mut pa: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.5; n]).collect();
    let mut pb = pa.clone();
    for s in 1..=3u32 {
        let g: Vec<Vec<f32>> = sizes.iter().map(|&n| grad(n, s)).collect();
        let frozen = s > 1;
        let gs: Vec<Option<&[f32]>> = (0..3)
            .map(|i| (i != 1 || !frozen).then_some(g[i].as_slice()))
            .collect();
        let before = pa[1].clone();
        let mut ps: Vec<&mut [f32]> = pa.iter_mut().map(|p| p.as_mut_slice()).collect();
        if frozen {
            ps[1] = &mut []; // not looked at
        }
        let r = a.step_some(&mut ps, &gs).unwrap();
        assert_eq!(
            (r.applied, r.skipped, r.frozen),
            (3 - frozen as usize, 0, frozen as usize)
        );
        if frozen {
            assert_eq!(pa[1], before);
        }
        for i in 0..3 {
            if gs[i].is_some() {
                b.step_tensor(TensorId(i), &mut pb[i], &g[i]).unwrap();
            }
        }
    }
    assert_eq!(a.step_count(TensorId(1)).unwrap(), 1);
    assert_eq!(a.step_count(TensorId(2)).unwrap(), 3);
    assert_eq!(pa, pb);
    assert_eq!(a, b); // state too
                      // A wrong length where a gradient is given is an error that changes nothing; where none
                      // is given, the parameter's length does not matter.
    let g0 = grad(5, 9);
    let mut short = [0.0f32; 2];
    let r = a.step_some(
        &mut [&mut short, &mut [], &mut []],
        &[Some(&g0[..4]), None, None],
    );
    assert!(matches!(r, Err(Error::LengthMismatch { .. })), "{r:?}");
    let r = a.step_some::<f32>(&mut [&mut [], &mut [], &mut []], &[None, None]);
    assert!(
        matches!(r, Err(Error::LengthMismatch { what: "grads", .. })),
        "{r:?}"
    );
    assert_eq!(a, b);
    // Under the error policy the first non-finite gradient among the given ones is named.
    a.set_policy(NonFinitePolicy::Error);
    let bad = vec![f32::NAN; 3];
    let big = grad(70_000, 1);
    let (mut p0, mut p1, mut p2) = (vec![0.0f32; 5], vec![0.0f32; 3], vec![0.0f32; 70_000]);
    let r = a.step_some(
        &mut [&mut p0, &mut p1, &mut p2],
        &[None, Some(&bad), Some(&big)],
    );
    assert!(
        matches!(r, Err(Error::NonFiniteGradient { tensor: 1 })),
        "{r:?}"
    );
}

#[test]
fn schedules_follow_each_tensors_count_by_default_or_one_global_step() {
    use vsgd::ScheduleClock;
    let decay = LrSchedule::from(Schedule::StepDecay {
        every: 1,
        factor: 0.5,
    });
    // Two tensors; tensor 1 has no gradient at step 1 (frozen). At step 2 its update uses
    // either its own count (1: the base rate) or the global step (2: half of it).
    let run = |clock: ScheduleClock| -> (Vec<f32>, u64) {
        let mut opt = Optimizer::new(Config::default_for(Algorithm::Sgdm)).unwrap();
        opt.set_schedule(GroupId(0), decay).unwrap();
        opt.set_schedule_clock(clock);
        opt.add_tensor(TensorSpec::new(&[4])).unwrap();
        opt.add_tensor(TensorSpec::new(&[4])).unwrap();
        let (mut a, mut b) = (vec![1.0f32; 4], vec![1.0f32; 4]);
        let g = [0.5f32; 4];
        opt.step_some(&mut [&mut a, &mut b], &[Some(&g), None])
            .unwrap();
        opt.step_some(&mut [&mut a, &mut b], &[Some(&g), Some(&g)])
            .unwrap();
        // Through a checkpoint, the clock and the global step survive.
        let back = vsgd::checkpoint::load(&vsgd::checkpoint::save(&opt).unwrap()).unwrap();
        assert_eq!(back, opt);
        assert_eq!(back.schedule_clock(), clock);
        (b, opt.global_step())
    };
    assert_eq!(ScheduleClock::default(), ScheduleClock::PerTensor);
    let lr = Config::default_for(Algorithm::Sgdm).lr();
    for (clock, factor, global) in [
        (ScheduleClock::PerTensor, 1.0, 0),
        (ScheduleClock::Global, 0.5, 2),
    ] {
        let (b, g) = run(clock);
        // Tensor 1's one update (SGDM, t = 1: the buffer is the gradient): θ − lr·factor·ĝ.
        let mut want = vec![1.0f32; 4];
        let mut buf = vec![0.0f32; 4];
        kernels::step(
            &Config::default_for(Algorithm::Sgdm),
            1,
            lr * factor,
            &mut want,
            &[0.5; 4],
            &mut [&mut buf],
            NonFinitePolicy::Skip,
        )
        .unwrap();
        assert_eq!(b, want, "{clock:?}");
        assert_eq!(g, global);
    }
}

#[test]
fn gradient_clipping_scales_by_the_global_norm_for_every_thread_count() {
    // Three tensors (one large enough to be cut into norm blocks and across threads).
    let sizes = [7usize, 0, 200_000];
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| grad(n, 3)).collect();
    let exact: f64 = grads
        .iter()
        .flatten()
        .map(|&g| (g as f64) * (g as f64))
        .sum();
    let norm_ref = exact.sqrt();
    let max_norm = norm_ref / 4.0;
    let run = |threads: usize, clip: Option<f64>, scale: f32| {
        let mut opt = Optimizer::new(Config::default_for(Algorithm::Adam)).unwrap();
        opt.set_threads(threads);
        opt.set_clip_norm(clip).unwrap();
        for n in sizes {
            opt.add_tensor(TensorSpec::new(&[n])).unwrap();
        }
        let mut ps: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.25; n]).collect();
        let gs: Vec<Vec<f32>> = grads
            .iter()
            .map(|g| g.iter().map(|&x| x * scale).collect())
            .collect();
        let mut p: Vec<&mut [f32]> = ps.iter_mut().map(|p| p.as_mut_slice()).collect();
        let g: Vec<&[f32]> = gs.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut p, &g).unwrap();
        (ps, opt.last_grad_norm(), opt)
    };
    let (clipped, norm, opt) = run(1, Some(max_norm), 1.0);
    let norm = norm.unwrap();
    assert!(
        (norm - norm_ref).abs() <= 1e-12 * norm_ref,
        "{norm} vs {norm_ref}"
    );
    // The same bits as stepping with ĝ·c, c = max_norm / (norm + 1e-6) rounded to f32.
    let c = (max_norm / (norm + 1e-6)) as f32;
    let (by_hand, none, _) = run(1, None, c);
    assert_eq!(none, None);
    assert_eq!(clipped, by_hand);
    // Every thread count: the same norm bits and the same parameters.
    for threads in [2, 3, 4] {
        let (p, n, _) = run(threads, Some(max_norm), 1.0);
        assert_eq!(n.unwrap().to_bits(), norm.to_bits(), "{threads} threads");
        assert_eq!(p, clipped, "{threads} threads");
    }
    // Below the maximum nothing is scaled.
    let (loose, _, _) = run(2, Some(norm_ref * 2.0), 1.0);
    let (plain, _, _) = run(2, None, 1.0);
    assert_eq!(loose, plain);
    // The setting is checked, kept by checkpoints, and part of the optimizer's value.
    let mut o = Optimizer::new(vsgd()).unwrap();
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            o.set_clip_norm(Some(bad)),
            Err(Error::InvalidClipNorm { .. })
        ));
    }
    assert_eq!(o.clip_norm(), None);
    let back = vsgd::checkpoint::load(&vsgd::checkpoint::save(&opt).unwrap()).unwrap();
    assert_eq!(back.clip_norm(), Some(max_norm));
    assert_eq!(back, opt);
}

/// Large tensors' state arrays start on different quarters of a 4 KiB page (and 1 KiB past the
/// buffer's start), so that a step streaming them together with the caller's parameter and
/// gradient (which usually share one page offset) avoids 4K aliasing; small ones stay packed.
#[test]
fn large_state_arrays_start_on_different_page_offsets() {
    for algorithm in Algorithm::ALL {
        let mut opt = Optimizer::new(Config::default_for(algorithm)).unwrap();
        let big = opt.add_tensor(TensorSpec::new(&[1 << 20])).unwrap();
        let small = opt.add_tensor(TensorSpec::new(&[100])).unwrap();
        let names = algorithm.state_names();
        let offsets: Vec<usize> = names
            .iter()
            .map(|n| opt.state::<f32>(big, n).unwrap().as_ptr() as usize % 4096)
            .collect();
        for (j, &o) in offsets.iter().enumerate() {
            assert_eq!(
                o,
                (offsets[0] + 1024 * j) % 4096,
                "{algorithm}: {offsets:?}"
            );
            assert_eq!(opt.state::<f32>(big, names[j]).unwrap().len(), 1 << 20);
        }
        // The arrays do not overlap: writing one leaves the others as they were.
        for (j, n) in names.iter().enumerate() {
            opt.state_mut::<f32>(big, n).unwrap().fill(j as f32 + 1.0);
        }
        for (j, n) in names.iter().enumerate() {
            assert!(opt
                .state::<f32>(big, n)
                .unwrap()
                .iter()
                .all(|&x| x == j as f32 + 1.0));
        }
        let p0 = opt.state::<f32>(small, names[0]).unwrap().as_ptr() as usize;
        for (j, n) in names.iter().enumerate() {
            let p = opt.state::<f32>(small, n).unwrap().as_ptr() as usize;
            assert_eq!(p - p0, j * 100 * 4, "small tensors stay packed");
        }
    }
}
