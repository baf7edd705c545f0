//! Handwritten digits (UCI, 8×8, 10 classes) trained with candle and every optimizer of this
//! crate: does VSGD generalize better than Adam, AdamW and SGD with momentum at this scale?
//!
//! ```text
//! cargo run --release --features candle --example digits                    # default, ≈ minutes
//! cargo run --release --features candle --example digits -- --full          # the docs/results.md run
//! cargo run --release --features candle --example digits -- --model cnn --epochs 40 --seeds 3
//! ```
//!
//! The paper's protocol, scaled down: for each optimizer, a small learning-rate grid; each
//! (optimizer, lr) trained from several seeds; the lr with the best mean *validation* accuracy is
//! chosen, and its *test* accuracy (mean ± sample std over seeds, after the last epoch) is
//! reported. The learning rate is halved every third of the training (the paper's step-halving
//! schedule, `Schedule::StepDecay`). Ends with one markdown table per model, and writes a PNG of
//! mean test accuracy per epoch (and a CSV of the curves) to `results/`.
//!
//! Data: `data/digits.csv.gz`, as scikit-learn ships it (see data/README.md), split once and
//! for all by class: within each class, in file order, image j goes to validation if j mod 5 = 3,
//! to test if j mod 5 = 4, to training otherwise. A seed sets the initial weights and the
//! minibatch order; nothing else is random.
//!
//! Speed: the models are tiny, so each training run is single-threaded and runs are spread
//! over `--jobs` threads (default: the number of CPUs). Results do not depend on `--jobs`.
//!
//! Mixed precision (`--precision f32,bf16,bf16-state`; default `f32`, the runs above): in the
//! `bf16` modes the optimizer is not `CandleOptimizer` but an `Optimizer` holding bf16 tensors
//! (`TensorSpec::dtype(DType::Bf16)`; `bf16`: f32 state; `bf16-state`: bf16 state with
//! stochastic rounding, one seed per tensor), stepped with `Optimizer::step_mixed`. Each
//! parameter lives as a `Vec<bf16>` (the f32 initialization rounded to nearest even). After
//! `loss.backward()` each gradient is rounded to bf16 (nearest even), the kernel widens
//! parameter, gradient and state to f32, applies the same f32 update rule, and rounds the
//! parameter once back to bf16 (no f32 master copy); the bf16 parameter is then widened into
//! the candle `Var` for the next forward pass. This **emulates bf16 storage** of parameters,
//! gradients and optimizer state, exactly as a bf16 training stack stores them; the forward and
//! backward passes still run in f32 (over bf16-representable weights), so the matmuls are not
//! bf16 and activations are not rounded. `--lr vsgd=0.01,adam=0.02` fixes the learning rate
//! instead of choosing it from the grid.

use std::error::Error;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::Optimizer as _;
use indicatif::{ProgressBar, ProgressStyle};
use vsgd::candle::CandleOptimizer;
use vsgd::{bf16, Algorithm, Config, GroupId, LrSchedule, Optimizer, Schedule, TensorSpec};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::Vsgd,
    Algorithm::ConstantVsgd,
    Algorithm::Adam,
    Algorithm::AdamW,
    Algorithm::Sgdm,
];

// ------------------------------------------------------------------------------- options

#[derive(Clone, Copy, Debug, PartialEq)]
enum ModelKind {
    Mlp,
    Cnn,
}

impl ModelKind {
    fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ModelKind::Mlp => "MLP 64-128-10, ReLU",
            ModelKind::Cnn => "CNN conv3x3(8)-pool-conv3x3(16)-pool-linear(10), ReLU",
        }
    }
}

/// How parameters, gradients and optimizer state are stored (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Precision {
    /// Everything f32, through `CandleOptimizer`.
    F32,
    /// bf16 parameters and gradients, f32 optimizer state.
    Bf16,
    /// bf16 parameters, gradients and optimizer state (stochastic rounding).
    Bf16State,
}

impl Precision {
    fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Bf16State => "bf16-state",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Precision::F32, Precision::Bf16, Precision::Bf16State]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// Bytes of optimizer state per parameter.
    fn state_bytes(self, a: Algorithm) -> usize {
        let elem = if self == Precision::Bf16State { 2 } else { 4 };
        a.state_count() * elem
    }

    /// A row's name: the optimizer's alone in f32 (the tables of f32 runs are unchanged).
    fn label(self, a: Algorithm) -> String {
        match self {
            Precision::F32 => a.name().to_string(),
            p => format!("{} {}", a.name(), p.name()),
        }
    }
}

struct Options {
    models: Vec<ModelKind>,
    epochs: usize,
    seeds: u64,
    batch: usize,
    full_grid: bool,
    algorithms: Vec<Algorithm>,
    precisions: Vec<Precision>,
    /// Fixed learning rates (`--lr`) instead of the grid: per optimizer, or for all (`None`).
    fixed_lr: Vec<(Option<Algorithm>, f64)>,
    jobs: usize,
    out: PathBuf,
    data: PathBuf,
}

const USAGE: &str = "\
usage: digits [--model mlp|cnn|both] [--epochs N] [--seeds N] [--batch N] [--full]
              [--optimizers a,b,...] [--precision p,q,...] [--lr [OPT=]LR,...]
              [--jobs N] [--out DIR] [--data FILE]

  --model       which model(s) to train (default: both)
  --epochs      epochs per run (default 30; --full: 60)
  --seeds       seeds per (optimizer, lr) (default 5)
  --batch       minibatch size (default 32)
  --full        wider learning-rate grid (6 values instead of 3) and 60 epochs
  --optimizers  subset of vsgd,constant_vsgd,adam,adamw,sgdm (default: all)
  --precision   subset of f32,bf16,bf16-state (default f32): bf16 parameters and gradients
                with f32 state, or with bf16 state (emulated storage; see the source)
  --lr          fixed learning rate(s) instead of the grid: 0.01 for every optimizer, or
                vsgd=0.01,adam=0.02 (an optimizer not named falls back to the grid)
  --jobs        training runs in parallel (default: number of CPUs)
  --out         where the plot and CSV go (default: results)
  --data        the digits file (default: data/digits.csv.gz in this crate)";

fn parse_args() -> Result<Options> {
    let mut o = Options {
        models: vec![ModelKind::Mlp, ModelKind::Cnn],
        epochs: 0,
        seeds: 5,
        batch: 32,
        full_grid: false,
        algorithms: ALGORITHMS.to_vec(),
        precisions: vec![Precision::F32],
        fixed_lr: Vec::new(),
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        out: PathBuf::from("results"),
        data: Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .ok_or_else(|| format!("{flag} needs {what}\n{USAGE}"))
        };
        let count = |v: String| -> Result<usize> {
            match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{flag}: expected a positive integer, got {v:?}").into()),
            }
        };
        match flag.as_str() {
            "--model" => {
                o.models = match value("mlp, cnn or both")?.as_str() {
                    "mlp" => vec![ModelKind::Mlp],
                    "cnn" => vec![ModelKind::Cnn],
                    "both" => vec![ModelKind::Mlp, ModelKind::Cnn],
                    m => return Err(format!("--model: unknown model {m:?}\n{USAGE}").into()),
                }
            }
            "--epochs" => o.epochs = count(value("a number")?)?,
            "--seeds" => o.seeds = count(value("a number")?)? as u64,
            "--batch" => o.batch = count(value("a number")?)?,
            "--jobs" => o.jobs = count(value("a number")?)?,
            "--full" => o.full_grid = true,
            "--out" => o.out = PathBuf::from(value("a directory")?),
            "--data" => o.data = PathBuf::from(value("a file")?),
            "--optimizers" => {
                o.algorithms = value("a list")?
                    .split(',')
                    .map(|n| {
                        Algorithm::from_name(n.trim())
                            .ok_or_else(|| format!("--optimizers: unknown optimizer {n:?}"))
                    })
                    .collect::<std::result::Result<_, _>>()?
            }
            "--precision" => {
                o.precisions = value("a list")?
                    .split(',')
                    .map(|n| {
                        Precision::from_name(n.trim())
                            .ok_or_else(|| format!("--precision: unknown precision {n:?}"))
                    })
                    .collect::<std::result::Result<_, _>>()?
            }
            "--lr" => {
                o.fixed_lr = value("a list")?
                    .split(',')
                    .map(|item| -> Result<(Option<Algorithm>, f64)> {
                        let (a, lr) = match item.split_once('=') {
                            Some((a, lr)) => (
                                Some(
                                    Algorithm::from_name(a.trim())
                                        .ok_or_else(|| format!("--lr: unknown optimizer {a:?}"))?,
                                ),
                                lr,
                            ),
                            None => (None, item),
                        };
                        match lr.trim().parse::<f64>() {
                            Ok(lr) if lr > 0.0 && lr.is_finite() => Ok((a, lr)),
                            _ => Err(format!("--lr: expected a positive rate, got {lr:?}").into()),
                        }
                    })
                    .collect::<Result<_>>()?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}").into()),
        }
    }
    if o.epochs == 0 {
        o.epochs = if o.full_grid { 60 } else { 30 };
    }
    Ok(o)
}

/// The learning rates tried for an optimizer: the one `--lr` fixes, or the grid. The paper's
/// grid is {0.001, 0.005, 0.01, 0.02} for every optimizer; SGD with momentum needs larger
/// rates, so it gets its own.
fn lr_grid(a: Algorithm, o: &Options) -> Vec<f64> {
    let named = o.fixed_lr.iter().find(|(b, _)| *b == Some(a));
    match named.or_else(|| o.fixed_lr.iter().find(|(b, _)| b.is_none())) {
        Some(&(_, lr)) => vec![lr],
        None => default_grid(a, o.full_grid).to_vec(),
    }
}

fn default_grid(a: Algorithm, full: bool) -> &'static [f64] {
    match (a, full) {
        (Algorithm::Sgdm, false) => &[0.01, 0.05, 0.2],
        (Algorithm::Sgdm, true) => &[0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
        (_, false) => &[0.001, 0.005, 0.02],
        (_, true) => &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05],
    }
}

/// The paper's hyperparameters (Table 3) apart from the learning rate: VSGD with K = 30,
/// γ = 1e-8, κ = (0.81, 0.9); Adam β = (0.9, 0.999); AdamW weight decay 0.01; SGD momentum 0.9.
fn config(a: Algorithm, lr: f64) -> Config {
    let mut c = Config::default_for(a);
    c.set_lr(lr);
    c
}

// ------------------------------------------------------------------------------- data

struct Split {
    x: Tensor,
    y: Tensor,
    n: usize,
}

struct Data {
    train: Split,
    val: Split,
    test: Split,
}

fn load(path: &Path) -> Result<Data> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open {}: {e} (see data/README.md)", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut seen = [0usize; 10];
    let (mut parts, mut labels) = (
        [Vec::new(), Vec::new(), Vec::new()],
        [Vec::new(), Vec::new(), Vec::new()],
    );
    for (line_no, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.trim().split(',').collect();
        let bad = || {
            format!(
                "{}:{}: expected 64 pixels and a label",
                path.display(),
                line_no + 1
            )
        };
        if fields.len() != 65 {
            return Err(bad().into());
        }
        let mut pix = [0f32; 64];
        for (p, f) in pix.iter_mut().zip(&fields[..64]) {
            let v: f32 = f.trim().parse().map_err(|_| bad())?;
            if !(0.0..=16.0).contains(&v) {
                return Err(bad().into());
            }
            *p = v / 16.0;
        }
        let label: usize = fields[64].trim().parse().map_err(|_| bad())?;
        if label > 9 {
            return Err(bad().into());
        }
        let which = match seen[label] % 5 {
            3 => 1,
            4 => 2,
            _ => 0,
        };
        seen[label] += 1;
        parts[which].extend_from_slice(&pix);
        labels[which].push(label as u32);
    }
    if labels.iter().map(Vec::len).sum::<usize>() != 1797 {
        return Err(format!("{}: expected 1797 images", path.display()).into());
    }
    let dev = Device::Cpu;
    let [xt, xv, xs] = parts;
    let [yt, yv, ys] = labels;
    let split = |x: Vec<f32>, y: Vec<u32>| -> Result<Split> {
        let n = y.len();
        Ok(Split {
            x: Tensor::from_vec(x, (n, 64), &dev)?,
            y: Tensor::from_vec(y, n, &dev)?,
            n,
        })
    };
    Ok(Data {
        train: split(xt, yt)?,
        val: split(xv, yv)?,
        test: split(xs, ys)?,
    })
}

// ------------------------------------------------------------------------------- models

/// xorshift64*: the seed's only source of randomness (weights and minibatch order).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// PyTorch's default initialization: U(−1/√fan_in, 1/√fan_in) for weights and biases.
fn init(rng: &mut Rng, shape: &[usize], fan_in: usize) -> Result<Var> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| bound * rng.sym()).collect();
    Ok(Var::from_vec(v, shape, &Device::Cpu)?)
}

struct Model {
    kind: ModelKind,
    vars: Vec<Var>,
}

impl Model {
    fn new(kind: ModelKind, rng: &mut Rng) -> Result<Self> {
        let vars = match kind {
            ModelKind::Mlp => vec![
                init(rng, &[128, 64], 64)?,
                init(rng, &[128], 64)?,
                init(rng, &[10, 128], 128)?,
                init(rng, &[10], 128)?,
            ],
            ModelKind::Cnn => vec![
                init(rng, &[8, 1, 3, 3], 9)?,
                init(rng, &[8], 9)?,
                init(rng, &[16, 8, 3, 3], 72)?,
                init(rng, &[16], 72)?,
                init(rng, &[10, 64], 64)?,
                init(rng, &[10], 64)?,
            ],
        };
        Ok(Model { kind, vars })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let v = |i: usize| self.vars[i].as_tensor();
        let linear = |h: &Tensor, w: usize| h.matmul(&v(w).t()?)?.broadcast_add(v(w + 1));
        match self.kind {
            ModelKind::Mlp => linear(&linear(x, 0)?.relu()?, 2),
            ModelKind::Cnn => {
                let conv = |h: &Tensor, w: usize| -> candle_core::Result<Tensor> {
                    let c = v(w).dim(0)?;
                    h.conv2d(v(w), 1, 1, 1, 1)?
                        .broadcast_add(&v(w + 1).reshape((1, c, 1, 1))?)?
                        .relu()?
                        .max_pool2d(2)
                };
                let h = x.reshape((x.dim(0)?, 1, 8, 8))?;
                let h = conv(&conv(&h, 0)?, 2)?.flatten_from(1)?;
                linear(&h, 4)
            }
        }
    }

    /// Number of correct predictions on `s` (an integer, so that runs can be compared exactly).
    fn correct(&self, s: &Split) -> candle_core::Result<u64> {
        let pred = self.forward(&s.x)?.argmax(D::Minus1)?;
        let right = pred.eq(&s.y)?.to_dtype(DType::U32)?.sum_all()?;
        Ok(u64::from(right.to_scalar::<u32>()?))
    }
}

/// Accuracy in percent from a count of correct predictions out of `n`.
fn percent(correct: u64, n: usize) -> f64 {
    100.0 * correct as f64 / n as f64
}

// ------------------------------------------------------------------------------- training

struct Job {
    model: ModelKind,
    algorithm: Algorithm,
    precision: Precision,
    lr: f64,
    seed: u64,
}

/// One tensor of a mixed-precision run: the bf16 parameter (the `Var` holds it widened), its
/// optimizer state and its step count.
/// The optimizer of a training run: this crate's engine through the candle adapter (f32), or
/// the owning `Optimizer` holding bf16 tensors (`Optimizer::step_mixed`) over bf16 copies of
/// the parameters, widened into the `Var`s after each step.
enum Stepper {
    F32(Box<CandleOptimizer>),
    Mixed {
        opt: Box<Optimizer>,
        vars: Vec<Var>,
        params: Vec<Vec<bf16>>,
    },
}

impl Stepper {
    /// Rounds the model's parameters to bf16 (nearest even) in the mixed modes, so that the
    /// first forward pass already sees bf16 weights.
    fn new(
        precision: Precision,
        vars: &[Var],
        config: Config,
        schedule: LrSchedule,
        seed: u64,
    ) -> Result<Self> {
        if precision == Precision::F32 {
            let mut opt = CandleOptimizer::new(vars.to_vec(), config)?;
            opt.set_schedule(schedule)?;
            return Ok(Stepper::F32(Box::new(opt)));
        }
        let mut opt = Optimizer::new(config)?;
        opt.set_schedule(GroupId(0), schedule)?;
        opt.set_threads(1); // runs are spread over threads instead (see --jobs)
        let mut params = Vec::with_capacity(vars.len());
        for (i, var) in vars.iter().enumerate() {
            let init = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let param: Vec<bf16> = init.iter().map(|&x| bf16::from_f32(x)).collect();
            set_widened(var, &param)?;
            let mut spec = TensorSpec::new(var.shape().dims()).dtype(vsgd::DType::Bf16);
            if precision == Precision::Bf16State {
                // A seed per tensor and per run: the same bits on every rerun.
                let sr_seed = seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(i as u64 + 1);
                spec = spec.state_dtype(vsgd::DType::Bf16).seed(sr_seed);
            }
            opt.add_tensor(spec)?;
            params.push(param);
        }
        Ok(Stepper::Mixed {
            opt: Box::new(opt),
            vars: vars.to_vec(),
            params,
        })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (opt, vars, params) = match self {
            Stepper::F32(opt) => return Ok(opt.step(grads)?),
            Stepper::Mixed { opt, vars, params } => (opt, vars, params),
        };
        // Each gradient as a bf16 stack stores it: rounded to nearest even (None: unused).
        let mut g16: Vec<Option<Vec<bf16>>> = Vec::with_capacity(vars.len());
        for var in vars.iter() {
            g16.push(match grads.get(var.as_tensor()) {
                Some(g) => Some(
                    g.flatten_all()?
                        .to_vec1::<f32>()?
                        .iter()
                        .map(|&v| bf16::from_f32(v))
                        .collect(),
                ),
                None => None,
            });
        }
        let gs: Vec<Option<&[bf16]>> = g16.iter().map(|g| g.as_deref()).collect();
        let mut ps: Vec<&mut [bf16]> = params.iter_mut().map(|p| &mut p[..]).collect();
        opt.step_mixed(&mut ps, &gs)?;
        for (var, p) in vars.iter().zip(params.iter()) {
            set_widened(var, p)?;
        }
        Ok(())
    }
}

/// Writes a bf16 parameter, widened (exactly) to f32, into its `Var`.
fn set_widened(var: &Var, param: &[bf16]) -> Result<()> {
    let wide: Vec<f32> = param.iter().map(|v| v.to_f32()).collect();
    var.set(&Tensor::from_vec(wide, var.shape(), &Device::Cpu)?)?;
    Ok(())
}

struct RunResult {
    /// Validation and test accuracy (%) after each epoch.
    val: Vec<f64>,
    /// Correct validation predictions after the last epoch: the learning rate is chosen on the
    /// sum of these over seeds, an integer, so equal counts tie exactly.
    val_correct: u64,
    test: Vec<f64>,
    steps: u64,
    /// Time inside `Optimizer::step`, and for the whole training step (forward, backward, step).
    opt_time: Duration,
    step_time: Duration,
    diverged: bool,
}

fn train(job: &Job, data: &Data, o: &Options, bar: &ProgressBar) -> Result<RunResult> {
    let mut rng = Rng::new(job.seed);
    let model = Model::new(job.model, &mut rng)?;
    let n = data.train.n;
    let steps_per_epoch = n.div_ceil(o.batch) as u64;
    // The paper halves the learning rate at fixed step counts; here every third of the run.
    let every = steps_per_epoch * (o.epochs as u64 / 3).max(1);
    let schedule = Schedule::StepDecay { every, factor: 0.5 }.into();
    let mut opt = Stepper::new(
        job.precision,
        &model.vars,
        config(job.algorithm, job.lr),
        schedule,
        job.seed,
    )?;
    let mut r = RunResult {
        val: Vec::with_capacity(o.epochs),
        val_correct: 0,
        test: Vec::with_capacity(o.epochs),
        steps: 0,
        opt_time: Duration::ZERO,
        step_time: Duration::ZERO,
        diverged: false,
    };
    let mut order: Vec<u32> = (0..n as u32).collect();
    for _ in 0..o.epochs {
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for chunk in order.chunks(o.batch) {
            let idx = Tensor::new(chunk, &Device::Cpu)?;
            let (xb, yb) = (
                data.train.x.index_select(&idx, 0)?,
                data.train.y.index_select(&idx, 0)?,
            );
            let t0 = Instant::now();
            let loss = candle_nn::loss::cross_entropy(&model.forward(&xb)?, &yb)?;
            let grads = loss.backward()?;
            let t1 = Instant::now();
            opt.step(&grads)?;
            let t2 = Instant::now();
            r.opt_time += t2 - t1;
            r.step_time += t2 - t0;
            r.steps += 1;
            if !loss.to_scalar::<f32>()?.is_finite() {
                r.diverged = true;
            }
        }
        r.val_correct = model.correct(&data.val)?;
        r.val.push(percent(r.val_correct, data.val.n));
        r.test
            .push(percent(model.correct(&data.test)?, data.test.n));
        bar.inc(1);
    }
    Ok(r)
}

/// Runs every job on `o.jobs` threads; results come back in job order.
fn run_all(jobs: &[Job], data: &Data, o: &Options, bar: &ProgressBar) -> Result<Vec<RunResult>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<RunResult>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..o.jobs.min(jobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() {
                    break;
                }
                let r = train(&jobs[i], data, o, bar);
                let failed = r.is_err();
                results.lock().expect("no thread panics holding it")[i] = Some(r);
                if failed {
                    next.store(jobs.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let results = results.into_inner().expect("no thread panicked");
    let mut out = Vec::with_capacity(jobs.len());
    for r in results {
        out.push(r.ok_or("a training run did not finish")??);
    }
    Ok(out)
}

// ------------------------------------------------------------------------------- report

fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// What one (model, optimizer) came to.
struct Chosen {
    algorithm: Algorithm,
    precision: Precision,
    lr: f64,
    /// Mean final validation accuracy per lr of the grid (for the grid table).
    grid: Vec<(f64, f64, usize)>,
    test_final: Vec<f64>,
    /// Mean test accuracy per epoch at the chosen lr, over seeds.
    curve: Vec<f64>,
    us_per_step: f64,
    opt_us_per_step: f64,
}

impl Chosen {
    fn label(&self) -> String {
        self.precision.label(self.algorithm)
    }
}

/// Two panels: every epoch, and the last three quarters of training zoomed in, where the
/// optimizers differ by tenths of a point.
fn plot(path: &Path, title: &str, chosen: &[Chosen]) -> Result<()> {
    use plotters::prelude::*;
    let epochs = chosen.iter().map(|c| c.curve.len()).max().unwrap_or(1);
    let range = |from: usize| {
        let vals = chosen
            .iter()
            .flat_map(|c| c.curve.iter().skip(from).copied());
        let (lo, hi) = vals.fold((100.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if lo > hi {
            (0.0, 100.0)
        } else {
            ((lo - 0.5).max(0.0), (hi + 0.5).min(100.0))
        }
    };
    let root = BitMapBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(640);
    let zoom_from = epochs / 4;
    let colors = [
        RED,
        BLUE,
        GREEN,
        MAGENTA,
        BLACK,
        CYAN,
        RGBColor(255, 140, 0),
        RGBColor(128, 128, 128),
    ];
    for (area, from, caption) in [
        (&left, 0, "all epochs".to_string()),
        (
            &right,
            zoom_from,
            format!("epochs {} to {epochs}, zoomed", zoom_from + 1),
        ),
    ] {
        let (lo, hi) = range(from);
        let x0 = (from + 1) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..(epochs as f64).max(x0 + 1.0), lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("test accuracy (%), mean over seeds")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style(("sans-serif", 13))
            .draw()?;
        for (c, color) in chosen.iter().zip(colors.iter().cycle()) {
            let style = ShapeStyle::from(color).stroke_width(2);
            let points = c.curve.iter().enumerate().skip(from);
            chart
                .draw_series(LineSeries::new(
                    points.map(|(i, &a)| ((i + 1) as f64, a)),
                    style,
                ))?
                .label(format!("{} (lr {})", c.label(), c.lr))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Time of one optimizer step on a model's parameters with a fixed gradient: this crate's
/// optimizers (through the candle adapter) beside candle's own AdamW and SGD, on one thread,
/// interleaved in rounds and the fastest round kept, so the ratios hold on a busy machine.
fn bench_steps(
    kind: ModelKind,
    data: &Data,
    algorithms: &[Algorithm],
) -> Result<Vec<(String, f64)>> {
    const ROUNDS: usize = 7;
    const REPS: u32 = 100;
    let model = Model::new(kind, &mut Rng::new(12345))?;
    let (xb, yb) = (
        data.train.x.narrow(0, 0, 32)?,
        data.train.y.narrow(0, 0, 32)?,
    );
    let grads = candle_nn::loss::cross_entropy(&model.forward(&xb)?, &yb)?.backward()?;
    type Stepper<'a> = Box<dyn FnMut() -> candle_core::Result<()> + 'a>;
    fn stepper<'a, O: candle_nn::Optimizer + 'a>(
        mut opt: O,
        grads: &'a candle_core::backprop::GradStore,
    ) -> Stepper<'a> {
        Box::new(move || opt.step(grads))
    }
    // a tiny learning rate: the parameters stay where they are, the work is the same
    let lr = 1e-6;
    let mut named: Vec<(String, Stepper)> = Vec::new();
    for &a in algorithms {
        let opt = CandleOptimizer::new(model.vars.clone(), config(a, lr))?;
        named.push((a.name().to_string(), stepper(opt, &grads)));
    }
    let params = candle_nn::ParamsAdamW {
        lr,
        ..Default::default()
    };
    let adamw = candle_nn::AdamW::new(model.vars.clone(), params)?;
    named.push(("candle_nn::AdamW".to_string(), stepper(adamw, &grads)));
    let sgd = candle_nn::SGD::new(model.vars.clone(), lr)?;
    named.push(("candle_nn::SGD".to_string(), stepper(sgd, &grads)));
    let mut best = vec![f64::INFINITY; named.len()];
    for round in 0..=ROUNDS {
        for (k, (_, step)) in named.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..REPS {
                step()?;
            }
            // round 0 warms up
            if round > 0 {
                best[k] = best[k].min(t.elapsed().as_secs_f64() * 1e6 / f64::from(REPS));
            }
        }
    }
    Ok(named.into_iter().map(|(n, _)| n).zip(best).collect())
}

/// Each (optimizer, precision) against the same optimizer in f32 (if it ran): the difference
/// of the means, and the spread of the per-seed differences (the seeds share the initial
/// weights, up to rounding, and the minibatch order).
fn mixed_table(out: &mut String, model: ModelKind, chosen: &[Chosen], seeds: u64) -> Result<()> {
    writeln!(
        out,
        "\n### {}: mixed precision, final test accuracy (%), mean ± std over {seeds} seed(s)\n",
        model.name()
    )?;
    writeln!(
        out,
        "| optimizer | precision | state bytes/param | lr | test accuracy | Δ vs f32 | per-seed Δ: std, min … max |\n|---|---|---|---|---|---|---|"
    )?;
    for c in chosen {
        let (m, s) = mean_std(&c.test_final);
        let base = chosen
            .iter()
            .find(|b| b.algorithm == c.algorithm && b.precision == Precision::F32);
        let (delta, paired) = match base {
            Some(b) if c.precision != Precision::F32 => {
                let d: Vec<f64> = c
                    .test_final
                    .iter()
                    .zip(&b.test_final)
                    .map(|(x, y)| x - y)
                    .collect();
                let (dm, ds) = mean_std(&d);
                let lo = d.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (format!("{dm:+.2}"), format!("{ds:.2}, {lo:+.2} … {hi:+.2}"))
            }
            _ => ("".to_string(), "".to_string()),
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {m:.2} ± {s:.2} | {delta} | {paired} |",
            c.algorithm.name(),
            c.precision.name(),
            c.precision.state_bytes(c.algorithm),
            c.lr,
        )?;
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("digits: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let o = parse_args()?;
    // Tiny matrices: one thread per run is fastest; runs are spread over threads instead.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    plotters::style::register_font(
        "sans-serif",
        plotters::style::FontStyle::Normal,
        include_bytes!("../assets/DejaVuSans-subset.ttf"),
    )
    .map_err(|_| "the bundled font does not load")?;
    let data = load(&o.data)?;
    eprintln!(
        "digits: {} train / {} validation / {} test images; {} epoch(s), {} seed(s), batch {}, {} job(s)",
        data.train.n, data.val.n, data.test.n, o.epochs, o.seeds, o.batch, o.jobs
    );
    let mut jobs = Vec::new();
    for &model in &o.models {
        for &algorithm in &o.algorithms {
            for &precision in &o.precisions {
                for lr in lr_grid(algorithm, &o) {
                    for seed in 0..o.seeds {
                        jobs.push(Job {
                            model,
                            algorithm,
                            precision,
                            lr,
                            seed,
                        });
                    }
                }
            }
        }
    }
    let bar = ProgressBar::new((jobs.len() * o.epochs) as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} epochs, eta {eta}")?
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let results = run_all(&jobs, &data, &o, &bar)?;
    bar.finish_and_clear();
    eprintln!(
        "trained {} runs in {:.1} s",
        jobs.len(),
        start.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(&o.out)
        .map_err(|e| format!("cannot create {}: {e}", o.out.display()))?;

    let mut tables = String::new();
    let mut details = String::new();
    for &model in &o.models {
        let mut chosen = Vec::new();
        let variants = o
            .algorithms
            .iter()
            .flat_map(|&a| o.precisions.iter().map(move |&p| (a, p)));
        for (algorithm, precision) in variants {
            let of_variant =
                |j: &Job| j.model == model && j.algorithm == algorithm && j.precision == precision;
            let runs_at = |lr: f64| -> Vec<&RunResult> {
                jobs.iter()
                    .zip(&results)
                    .filter(|(j, _)| of_variant(j) && j.lr == lr)
                    .map(|(_, r)| r)
                    .collect()
            };
            let mut grid = Vec::new();
            let mut best: Option<(f64, u64)> = None;
            for lr in lr_grid(algorithm, &o) {
                let runs = runs_at(lr);
                let finals: Vec<f64> = runs.iter().map(|r| *r.val.last().unwrap_or(&0.0)).collect();
                let (m, _) = mean_std(&finals);
                grid.push((lr, m, runs.iter().filter(|r| r.diverged).count()));
                // Chosen on the integer count of correct validation answers summed over seeds
                // (every lr has the same seeds), not on the float mean, whose summation order
                // can break an exact tie; ties go to the smaller learning rate (the grid is
                // ascending, and only a strictly larger count replaces the best).
                let correct: u64 = runs.iter().map(|r| r.val_correct).sum();
                if best.is_none_or(|(_, b)| correct > b) {
                    best = Some((lr, correct));
                }
            }
            let (lr, _) = best.ok_or("empty learning-rate grid")?;
            let runs = runs_at(lr);
            let test_final: Vec<f64> = runs
                .iter()
                .map(|r| *r.test.last().unwrap_or(&0.0))
                .collect();
            let curve = (0..o.epochs)
                .map(|e| runs.iter().map(|r| r.test[e]).sum::<f64>() / runs.len() as f64)
                .collect();
            let all: Vec<&RunResult> = jobs
                .iter()
                .zip(&results)
                .filter(|(j, _)| of_variant(j))
                .map(|(_, r)| r)
                .collect();
            let steps: u64 = all.iter().map(|r| r.steps).sum();
            let micros = |f: fn(&RunResult) -> Duration| {
                all.iter().map(|r| f(r).as_secs_f64()).sum::<f64>() * 1e6 / steps.max(1) as f64
            };
            chosen.push(Chosen {
                algorithm,
                precision,
                lr,
                grid,
                test_final,
                curve,
                us_per_step: micros(|r| r.step_time),
                opt_us_per_step: micros(|r| r.opt_time),
            });
        }

        let png = o.out.join(format!("digits-{}.png", model.name()));
        let title = format!(
            "digits, {}: mean test accuracy per epoch over {} seed(s), lr {}",
            model.name(),
            o.seeds,
            if o.fixed_lr.is_empty() {
                "chosen on validation"
            } else {
                "fixed"
            }
        );
        plot(&png, &title, &chosen).map_err(|e| format!("plot {}: {e}", png.display()))?;
        let mut csv = String::from("optimizer,lr,epoch,mean_test_accuracy\n");
        for c in &chosen {
            for (e, a) in c.curve.iter().enumerate() {
                writeln!(csv, "{},{},{},{:.4}", c.label(), c.lr, e + 1, a)?;
            }
        }
        let csv_path = o.out.join(format!("digits-{}.csv", model.name()));
        std::fs::write(&csv_path, csv)
            .map_err(|e| format!("cannot write {}: {e}", csv_path.display()))?;

        writeln!(details, "\n#### {}: validation accuracy (%) per learning rate, mean of {} seeds, after epoch {}", model.name(), o.seeds, o.epochs)?;
        writeln!(
            details,
            "\n| optimizer | lr: mean validation accuracy (diverged runs) |\n|---|---|"
        )?;
        for c in &chosen {
            let cells: Vec<String> = c
                .grid
                .iter()
                .map(|(lr, m, d)| {
                    let mark = if *lr == c.lr { "**" } else { "" };
                    let div = if *d > 0 {
                        format!(" ({d} diverged)")
                    } else {
                        String::new()
                    };
                    format!("{mark}{lr}: {m:.2}{mark}{div}")
                })
                .collect();
            writeln!(details, "| {} | {} |", c.label(), cells.join(", "))?;
        }
        writeln!(details, "\n#### {}: time per training step (μs, all runs; single-threaded runs, {} in parallel)", model.name(), o.jobs)?;
        writeln!(
            details,
            "\n| optimizer | whole step | optimizer step | share |\n|---|---|---|---|"
        )?;
        for c in &chosen {
            writeln!(
                details,
                "| {} | {:.0} | {:.0} | {:.0}% |",
                c.label(),
                c.us_per_step,
                c.opt_us_per_step,
                100.0 * c.opt_us_per_step / c.us_per_step
            )?;
        }

        let n_params: usize = Model::new(model, &mut Rng::new(0))?
            .vars
            .iter()
            .map(|v| v.elem_count())
            .sum();
        writeln!(
            details,
            "\n#### {}: one optimizer step alone ({} parameters, fixed gradient, fastest of 7 rounds, μs)",
            model.name(),
            n_params
        )?;
        writeln!(
            details,
            "\n| optimizer | μs per step | vs candle_nn::AdamW |\n|---|---|---|"
        )?;
        let bench = bench_steps(model, &data, &o.algorithms)?;
        let reference = bench
            .iter()
            .find(|(n, _)| n == "candle_nn::AdamW")
            .map_or(1.0, |b| b.1);
        for (name, us) in &bench {
            writeln!(details, "| {name} | {us:.1} | {:.2}× |", us / reference)?;
        }

        let lr_how = if o.fixed_lr.is_empty() {
            "lr chosen on validation"
        } else {
            "lr fixed by --lr (else chosen on validation)"
        };
        writeln!(
            tables,
            "\n### {} ({}): test accuracy after {} epoch(s), {lr_how}, mean ± std over {} seed(s)\n",
            model.name(),
            model.describe(),
            o.epochs,
            o.seeds
        )?;
        writeln!(tables, "plot: {}\n", png.display())?;
        writeln!(tables, "| optimizer | lr | test accuracy |\n|---|---|---|")?;
        for c in &chosen {
            let (m, s) = mean_std(&c.test_final);
            writeln!(tables, "| {} | {} | {:.2} ± {:.2} |", c.label(), c.lr, m, s)?;
        }
        if o.precisions != [Precision::F32] {
            mixed_table(&mut tables, model, &chosen, o.seeds)?;
        }
    }
    print!("{details}");
    print!("{tables}");
    Ok(())
}
