//! A convergence table in the manner of optax's alias tests: every optimizer reaches the
//! minimum of a parabola and of the Rosenbrock function from a fixed start, in a stated number
//! of steps, in f32 and f64. Deterministic (no noise).

use vsgd::{Algorithm, Config, Element, GroupId, LrSchedule, Optimizer, Schedule, TensorSpec};

/// A test problem: its gradient, minimum and start.
struct Problem {
    name: &'static str,
    start: &'static [f64],
    minimum: &'static [f64],
    grad: fn(&[f64], &mut [f64]),
}

const CURV: [f64; 4] = [1.0, 10.0, 0.1, 3.0];
const CENTER: [f64; 4] = [1.0, -2.0, 3.0, 0.5];

fn parabola(x: &[f64], g: &mut [f64]) {
    for i in 0..4 {
        g[i] = CURV[i] * (x[i] - CENTER[i]);
    }
}

fn rosenbrock(x: &[f64], g: &mut [f64]) {
    let (a, b) = (x[0], x[1]);
    g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
    g[1] = 200.0 * (b - a * a);
}

const PARABOLA: Problem = Problem {
    name: "parabola",
    start: &[0.0, 0.0, 0.0, 0.0],
    minimum: &CENTER,
    grad: parabola,
};

const ROSENBROCK: Problem = Problem {
    name: "rosenbrock",
    start: &[-1.2, 1.0],
    minimum: &[1.0, 1.0],
    grad: rosenbrock,
};

/// Runs `steps` steps with learning rate `lr` annealed to 0 by a cosine schedule (weight decay
/// off, so AdamW's minimum is the problem's) and returns the
/// final max-norm distance to the minimum.
fn distance<T: Element>(alg: Algorithm, lr: f64, steps: u64, p: &Problem) -> f64 {
    let mut config = Config::default_for(alg);
    config.set("lr", lr).unwrap();
    config.set("weight_decay", 0.0).unwrap();
    let mut opt = Optimizer::new(config).unwrap();
    opt.set_schedule(
        GroupId(0),
        LrSchedule::from(Schedule::Cosine {
            total: steps,
            min_factor: 0.0,
        }),
    )
    .unwrap();
    let n = p.start.len();
    let id = opt
        .add_tensor(TensorSpec::new(&[n]).dtype(T::DTYPE))
        .unwrap();
    let mut x: Vec<T> = p.start.iter().map(|&v| T::from_f64(v)).collect();
    let (mut g64, mut g) = (vec![0.0; n], vec![T::ZERO; n]);
    for _ in 0..steps {
        let x64: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
        (p.grad)(&x64, &mut g64);
        for (gi, &v) in g.iter_mut().zip(&g64) {
            *gi = T::from_f64(v);
        }
        opt.step_tensor(id, &mut x, &g).unwrap();
    }
    x.iter()
        .zip(p.minimum)
        .map(|(v, m)| (v.to_f64() - m).abs())
        .fold(0.0, f64::max)
}

/// (algorithm, problem, lr, steps, tolerance on the max-norm distance to the minimum).
const TABLE: &[(Algorithm, &Problem, f64, u64, f64)] = &[
    (Algorithm::Vsgd, &PARABOLA, 0.1, 2000, 1e-3),
    (Algorithm::ConstantVsgd, &PARABOLA, 0.1, 2000, 1e-3),
    (Algorithm::Adam, &PARABOLA, 0.1, 2000, 1e-3),
    (Algorithm::AdamW, &PARABOLA, 0.1, 2000, 1e-3),
    (Algorithm::Sgdm, &PARABOLA, 0.01, 2000, 1e-3),
    (Algorithm::Vsgd, &ROSENBROCK, 0.03, 5000, 1e-3),
    (Algorithm::ConstantVsgd, &ROSENBROCK, 0.03, 5000, 1e-3),
    (Algorithm::Adam, &ROSENBROCK, 0.1, 5000, 1e-3),
    (Algorithm::AdamW, &ROSENBROCK, 0.1, 5000, 1e-3),
    (Algorithm::Sgdm, &ROSENBROCK, 0.003, 5000, 1e-3),
];

fn table<T: Element>() {
    let mut failures = Vec::new();
    for &(alg, p, lr, steps, tol) in TABLE {
        let d = distance::<T>(alg, lr, steps, p);
        println!(
            "{:?} {alg} {}: distance {d:.2e} (tolerance {tol:.0e})",
            T::DTYPE,
            p.name
        );
        if d.is_nan() || d > tol {
            failures.push(format!(
                "{alg} on {} ({:?}): distance {d:.3e} > {tol:.0e}",
                p.name,
                T::DTYPE
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_optimizer_converges_in_f32() {
    table::<f32>();
}

#[test]
fn every_optimizer_converges_in_f64() {
    table::<f64>();
}
