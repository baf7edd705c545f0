//! `vsgd inspect FILE`: what a checkpoint holds (format, algorithm, hyperparameters, schedules,
//! tensors, steps) and per-array statistics over the finite values (min, max, mean) with the
//! count of non-finite ones; for VSGD also the effective momentum `bhg / (bg + bhg)`.
//! An invalid file is an error: one line on stderr, non-zero exit.

use std::fmt::Write as _;

use vsgd::checkpoint::{Checkpoint, TensorState};
use vsgd::{Algorithm, DType, Schedule};

/// min, max, mean of the finite values, and how many were not finite.
struct Stats {
    min: f64,
    max: f64,
    sum: f64,
    finite: u64,
    non_finite: u64,
}

impl Stats {
    fn of(values: impl Iterator<Item = f64>) -> Stats {
        let mut s = Stats {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            finite: 0,
            non_finite: 0,
        };
        for v in values {
            if v.is_finite() {
                s.min = s.min.min(v);
                s.max = s.max.max(v);
                s.sum += v;
                s.finite += 1;
            } else {
                s.non_finite += 1;
            }
        }
        s
    }

    fn line(&self, label: &str, dtype: DType) -> String {
        let num = |x: f64| match dtype {
            DType::F32 => format!("{:e}", x as f32),
            DType::F64 => format!("{x:e}"),
            DType::Bf16 => format!("{:e}", vsgd::bf16::from_f64(x)),
            DType::F16 => format!("{:e}", vsgd::f16::from_f64(x)),
        };
        if self.finite == 0 {
            return format!(
                "    {label:<20} min -  max -  mean -  non-finite {}\n",
                self.non_finite
            );
        }
        format!(
            "    {label:<20} min {}  max {}  mean {}  non-finite {}\n",
            num(self.min),
            num(self.max),
            num(self.sum / self.finite as f64),
            self.non_finite
        )
    }
}

fn schedule(s: &vsgd::LrSchedule) -> String {
    let body = match s.schedule {
        Schedule::Constant => "constant".to_string(),
        Schedule::StepDecay { every, factor } => format!("step_decay every={every} factor={factor}"),
        Schedule::Cosine { total, min_factor } => {
            format!("cosine total={total} min_factor={min_factor}")
        }
        Schedule::OneCycle {
            total,
            pct_start,
            div_factor,
            final_div_factor,
        } => format!(
            "one_cycle total={total} pct_start={pct_start} div_factor={div_factor} final_div_factor={final_div_factor}"
        ),
    };
    format!("{body}, warmup={}", s.warmup)
}

/// The element type as v1 printed it, or for a mixed-precision tensor `param bf16, state f32`
/// (with the seed when the state is bf16).
fn dtypes(t: &TensorState<'_>) -> String {
    if t.param_dtype == t.dtype && t.dtype != DType::Bf16 {
        return t.dtype.name().to_string();
    }
    let mut s = format!("param {}, state {}", t.param_dtype.name(), t.dtype.name());
    if t.dtype == DType::Bf16 {
        s.push_str(&format!(" (rounding seed {})", t.seed));
    }
    s
}

fn effective_momentum(t: &TensorState<'_>) -> Stats {
    // In the tensor's own precision, as the optimizer computes it.
    // bf16 state is computed in f32 (kernels::mixed), so is this.
    let em = t.values(1).zip(t.values(2)).map(|(b, h)| match t.dtype {
        DType::F64 => h / (b + h),
        _ => {
            let (b, h) = (b as f32, h as f32);
            f64::from(h / (b + h))
        }
    });
    Stats::of(em)
}

/// The report for a valid checkpoint.
pub fn describe(c: &Checkpoint<'_>, size: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "format: vsgd-checkpoint v{} ({size} bytes), written by {}, xxh3 {:016x} verified",
        c.version, c.library, c.checksum
    );
    let _ = writeln!(out, "algorithm: {}", c.algorithm);
    let _ = writeln!(out, "non-finite policy: {}", c.policy.name());
    if c.version >= 2 {
        let clock = match c.clock {
            vsgd::ScheduleClock::PerTensor => "per tensor",
            vsgd::ScheduleClock::Global => "global",
        };
        let _ = writeln!(
            out,
            "schedule clock: {clock}, global step {}",
            c.global_step
        );
        if let Some(m) = c.clip_norm {
            let _ = writeln!(out, "gradient clipping: global norm at most {m}");
        }
    }
    if c.shard_count > 1 {
        let _ = writeln!(
            out,
            "shard: {} of {} (0-based)",
            c.shard_index, c.shard_count
        );
    }
    for (g, group) in c.groups.iter().enumerate() {
        let hyper: Vec<String> = c
            .algorithm
            .hyper_names()
            .iter()
            .map(|&n| {
                let v = group.config.get(n).unwrap_or(f64::NAN);
                if n == "maximize" || n == "nesterov" {
                    format!("{n}={}", v != 0.0)
                } else if v != 0.0 && !(1e-3..1e6).contains(&v.abs()) {
                    format!("{n}={v:e}")
                } else {
                    format!("{n}={v}")
                }
            })
            .collect();
        let _ = writeln!(out, "group {g}: {}", hyper.join(" "));
        let _ = writeln!(out, "  schedule: {}", schedule(&group.schedule));
    }
    let elements: usize = c.tensors.iter().map(|t| t.range.len()).sum();
    let _ = writeln!(
        out,
        "tensors: {} ({elements} elements stored)",
        c.tensors.len()
    );
    for (k, t) in c.tensors.iter().enumerate() {
        let name = t.name.map_or(String::new(), |n| format!(" {n:?}"));
        let part = if t.range.len() == t.len {
            String::new()
        } else {
            format!(", elements {}..{} of {}", t.range.start, t.range.end, t.len)
        };
        let _ = writeln!(
            out,
            "tensor {k}{name}: shape {:?}, {}, group {}, step {}{part}",
            t.shape,
            dtypes(t),
            t.group,
            t.step
        );
        for (j, array) in c.algorithm.state_names().iter().enumerate() {
            out.push_str(&Stats::of(t.values(j)).line(array, t.dtype));
        }
        if c.algorithm == Algorithm::Vsgd {
            out.push_str(&effective_momentum(t).line("effective momentum", t.dtype));
        }
    }
    out
}

/// Entry point of `vsgd inspect`.
pub fn main(args: &[String]) -> Result<(), String> {
    let [path] = args else {
        return Err("inspect needs exactly one FILE".into());
    };
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let c = Checkpoint::parse(&bytes).map_err(|e| format!("{path}: {e}"))?;
    print!("{}", describe(&c, bytes.len()));
    Ok(())
}
