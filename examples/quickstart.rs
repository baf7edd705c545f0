//! Quickstart: a noisy least-squares problem minimized by VSGD, Constant VSGD and Adam.
//!
//! Find `x` minimizing ½·mean_i (a_i·x − b_i)² over 2,048 noisy observations in 64 dimensions,
//! with minibatch gradients (batch 32), so every gradient the optimizer sees is a noisy
//! observation of the true one: the setting VSGD models.
//!
//! Run: `cargo run --release --example quickstart [-- --steps N --every K]`

use vsgd::{
    AdamConfig, Config, ConstantVsgdConfig, GroupId, LrSchedule, Optimizer, Schedule, TensorSpec,
    VsgdConfig,
};

const DIM: usize = 64;
const ROWS: usize = 2048;
const BATCH: usize = 32;

/// A small deterministic generator (SplitMix64), so runs are reproducible without dependencies.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

struct Problem {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Problem {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let truth: Vec<f64> = (0..DIM).map(|_| rng.normal()).collect();
        // Columns of very different scales make the problem ill-conditioned.
        let scale: Vec<f64> = (0..DIM)
            .map(|j| 10f64.powf(-1.0 + 2.0 * j as f64 / DIM as f64))
            .collect();
        let mut a = Vec::with_capacity(ROWS * DIM);
        let mut b = Vec::with_capacity(ROWS);
        for _ in 0..ROWS {
            let row: Vec<f64> = (0..DIM).map(|j| rng.normal() * scale[j]).collect();
            let y: f64 =
                row.iter().zip(&truth).map(|(x, t)| x * t).sum::<f64>() + 0.5 * rng.normal();
            a.extend(row.iter().map(|&x| x as f32));
            b.push(y as f32);
        }
        Problem { a, b }
    }

    /// ½·mean (a_i·x − b_i)² over the rows `rows`, and its gradient into `grad`.
    fn loss_grad(&self, x: &[f32], rows: impl Iterator<Item = usize>, grad: &mut [f32]) -> f64 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let (mut loss, mut count) = (0.0f64, 0usize);
        for i in rows {
            let row = &self.a[i * DIM..(i + 1) * DIM];
            let r: f32 = row.iter().zip(x).map(|(a, x)| a * x).sum::<f32>() - self.b[i];
            loss += 0.5 * f64::from(r * r);
            for (g, a) in grad.iter_mut().zip(row) {
                *g += r * a;
            }
            count += 1;
        }
        grad.iter_mut().for_each(|g| *g /= count as f32);
        loss / count as f64
    }

    fn full_loss(&self, x: &[f32]) -> f64 {
        self.loss_grad(x, 0..ROWS, &mut [0.0; DIM])
    }
}

fn train(name: &str, config: Config, problem: &Problem, steps: u64, every: u64) -> f64 {
    let mut opt = Optimizer::new(config).expect("valid config");
    // The paper's schedule: halve the learning rate every `steps / 4` iterations.
    opt.set_schedule(
        GroupId(0),
        LrSchedule::from(Schedule::StepDecay {
            every: (steps / 4).max(1),
            factor: 0.5,
        }),
    )
    .expect("valid schedule");
    let id = opt
        .add_tensor(TensorSpec::new(&[DIM]).name("x"))
        .expect("tensor");
    let mut x = vec![0.0f32; DIM];
    let mut grad = vec![0.0f32; DIM];
    let mut rng = Rng(7);
    println!("\n{name}: {config:?}");
    println!("{:>8} {:>14}", "step", "full loss");
    for step in 1..=steps {
        let start = (rng.next_u64() as usize) % (ROWS - BATCH);
        problem.loss_grad(&x, start..start + BATCH, &mut grad);
        opt.step_tensor(id, &mut x, &grad).expect("step");
        if step % every == 0 || step == steps {
            println!("{step:>8} {:>14.6}", problem.full_loss(&x));
        }
    }
    problem.full_loss(&x)
}

fn main() {
    let mut steps = 2000u64;
    let mut every = 250u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse().ok());
        match (args[i].as_str(), value) {
            ("--steps", Some(v)) => steps = v,
            ("--every", Some(v)) => every = v,
            _ => {
                eprintln!("usage: quickstart [--steps N] [--every K]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let every = every.max(1);
    let problem = Problem::new(42);
    println!(
        "noisy least squares: {ROWS} rows, {DIM} dims, batch {BATCH}; loss at x = 0: {:.4}",
        problem.full_loss(&[0.0; DIM])
    );
    let runs = [
        (
            "VSGD",
            // VSGD's update is close to lr·sign(μ) once its posterior is confident, so it
            // wants a smaller lr than Adam here (see docs/algorithms.md).
            Config::Vsgd(VsgdConfig {
                lr: 0.01,
                ..Default::default()
            }),
        ),
        (
            "Constant VSGD",
            Config::ConstantVsgd(ConstantVsgdConfig {
                lr: 0.05,
                ..Default::default()
            }),
        ),
        (
            "Adam",
            Config::Adam(AdamConfig {
                lr: 0.05,
                ..AdamConfig::adam()
            }),
        ),
    ];
    let results: Vec<(&str, f64)> = runs
        .iter()
        .map(|&(name, config)| (name, train(name, config, &problem, steps, every)))
        .collect();
    println!("\n| optimizer | lr | final full loss |\n|---|---|---|");
    for ((name, loss), (_, config)) in results.iter().zip(&runs) {
        println!("| {name} | {} | {loss:.6} |", config.lr());
    }
    println!("(the noise floor, ½·0.5² = 0.125, is the best any x can do on average)");
}
