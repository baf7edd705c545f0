//! Learning-rate schedules: a factor applied to a group's base learning rate, evaluated at the
//! number `t` (1, 2, …) of the update a tensor is about to take.

use crate::error::Error;

/// The shape of a schedule, as a factor of the base learning rate η.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Schedule {
    /// η at every step.
    #[default]
    Constant,
    /// η · factor^⌊(t − 1) / every⌋: the paper's "halve every N iterations" is
    /// `StepDecay { every: N, factor: 0.5 }`.
    StepDecay {
        /// Steps between two decays, ≥ 1.
        every: u64,
        /// Multiplier at each decay, in (0, 1].
        factor: f64,
    },
    /// Cosine annealing from η to `min_factor`·η over `total` steps, then flat:
    /// η · (m + (1 − m)·(1 + cos(π·min(t − 1, total)/total))/2).
    Cosine {
        /// Length of the decay, ≥ 1.
        total: u64,
        /// Final fraction m of η, in [0, 1].
        min_factor: f64,
    },
    /// One-cycle (torch's `OneCycleLR`, cosine): from η/`div_factor` up to η over the first
    /// `pct_start`·`total` steps, then down to η/(`div_factor`·`final_div_factor`) at `total`.
    OneCycle {
        /// Length of the cycle, ≥ 3.
        total: u64,
        /// Fraction of the cycle spent rising, in (0, 1).
        pct_start: f64,
        /// Initial learning rate is η / div_factor (torch default 25), ≥ 1.
        div_factor: f64,
        /// Final learning rate is the initial one / final_div_factor (torch default 1e4), ≥ 1.
        final_div_factor: f64,
    },
}

/// Which step number a schedule is evaluated at.
///
/// - [`ScheduleClock::PerTensor`] (the default): each tensor's own update count, so a tensor
///   whose gradient was skipped (non-finite) or missing (frozen) does not move along its
///   schedule. Its learning rate then always matches its bias corrections and ρ = t^(−κ).
/// - [`ScheduleClock::Global`]: one counter for the whole optimizer, advanced by every
///   [`crate::Optimizer::step`] / [`crate::Optimizer::step_some`] call that returns `Ok`
///   (skipped and frozen tensors included), as torch's `lr_scheduler.step()` once per
///   iteration and optax's schedules of the update count do. Every tensor of a step then gets
///   the same learning rate, whatever its own count.
///
/// The step number inside the update rules (bias corrections, ρ) is always the tensor's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ScheduleClock {
    /// Each tensor's own update count (the default).
    #[default]
    PerTensor,
    /// One counter of successful step calls for the whole optimizer.
    Global,
}

/// A schedule with an optional linear warm-up: the factor is further multiplied by
/// min(1, t / warmup) (the first step gets η/warmup).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct LrSchedule {
    /// The schedule's shape.
    pub schedule: Schedule,
    /// Warm-up length in steps (0: none).
    pub warmup: u64,
}

impl From<Schedule> for LrSchedule {
    fn from(schedule: Schedule) -> Self {
        LrSchedule {
            schedule,
            warmup: 0,
        }
    }
}

fn cos_anneal(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * (1.0 + libm::cos(core::f64::consts::PI * pct))
}

const EVERY: &str = ">= 1";
const FACTOR: &str = "(0, 1]";
const COSINE_TOTAL: &str = ">= 1";
const MIN_FACTOR: &str = "[0, 1]";
const ONE_CYCLE_TOTAL: &str = ">= 3";
const PCT_START: &str = "(0, 1)";
const DIV_FACTOR: &str = "finite and >= 1";

impl Schedule {
    /// The kind's name: `constant`, `step_decay`, `cosine` or `one_cycle`.
    pub const fn kind_name(&self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::StepDecay { .. } => "step_decay",
            Schedule::Cosine { .. } => "cosine",
            Schedule::OneCycle { .. } => "one_cycle",
        }
    }

    /// This kind's fields, each with the range [`LrSchedule::validate`] requires, in words
    /// (the single source of these bounds: error messages and the C documentation use it).
    pub const fn bounds(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Schedule::Constant => &[],
            Schedule::StepDecay { .. } => &[("every", EVERY), ("factor", FACTOR)],
            Schedule::Cosine { .. } => &[("total", COSINE_TOTAL), ("min_factor", MIN_FACTOR)],
            Schedule::OneCycle { .. } => &[
                ("total", ONE_CYCLE_TOTAL),
                ("pct_start", PCT_START),
                ("div_factor", DIV_FACTOR),
                ("final_div_factor", DIV_FACTOR),
            ],
        }
    }
}

impl LrSchedule {
    /// Checks the schedule's parameters against [`Schedule::bounds`].
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, allowed| Err(Error::InvalidSchedule { field, allowed });
        match self.schedule {
            Schedule::Constant => {}
            Schedule::StepDecay { every, factor } => {
                if every == 0 {
                    return bad("every", EVERY);
                }
                if !(factor > 0.0 && factor <= 1.0) {
                    return bad("factor", FACTOR);
                }
            }
            Schedule::Cosine { total, min_factor } => {
                if total == 0 {
                    return bad("total", COSINE_TOTAL);
                }
                if !(0.0..=1.0).contains(&min_factor) {
                    return bad("min_factor", MIN_FACTOR);
                }
            }
            Schedule::OneCycle {
                total,
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                if total < 3 {
                    return bad("total", ONE_CYCLE_TOTAL);
                }
                if !(pct_start > 0.0 && pct_start < 1.0) {
                    return bad("pct_start", PCT_START);
                }
                if !(div_factor.is_finite() && div_factor >= 1.0) {
                    return bad("div_factor", DIV_FACTOR);
                }
                if !(final_div_factor.is_finite() && final_div_factor >= 1.0) {
                    return bad("final_div_factor", DIV_FACTOR);
                }
            }
        }
        Ok(())
    }

    /// The factor of the base learning rate for update number `t` (≥ 1), in [0, 1].
    pub fn factor(&self, t: u64) -> f64 {
        let t = t.max(1);
        let s = (t - 1) as f64;
        let f = match self.schedule {
            Schedule::Constant => 1.0,
            Schedule::StepDecay { every, factor } => {
                let k = (t - 1) / every.max(1);
                libm::pow(factor, k as f64)
            }
            Schedule::Cosine { total, min_factor } => {
                let total = total.max(1) as f64;
                cos_anneal(1.0, min_factor, s.min(total) / total)
            }
            Schedule::OneCycle {
                total,
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let initial = 1.0 / div_factor;
                let min = initial / final_div_factor;
                // Rise over steps 0..=peak, fall over peak..=last, each at least one step long
                // (max/min, not clamp: never a panic, even for an unvalidated schedule).
                let last = (total.max(3) - 1) as f64;
                let peak = (pct_start * total as f64 - 1.0).min(last - 1.0).max(1.0);
                let s = s.min(last);
                if s <= peak {
                    cos_anneal(initial, 1.0, s / peak)
                } else {
                    cos_anneal(1.0, min, (s - peak) / (last - peak))
                }
            }
        };
        if self.warmup > 0 && t < self.warmup {
            f * (t as f64 / self.warmup as f64)
        } else {
            f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn step_decay_halves_every_n() {
        let s: LrSchedule = Schedule::StepDecay {
            every: 10,
            factor: 0.5,
        }
        .into();
        assert_eq!(s.factor(1), 1.0);
        assert_eq!(s.factor(10), 1.0);
        assert_eq!(s.factor(11), 0.5);
        assert_eq!(s.factor(21), 0.25);
    }

    #[test]
    fn cosine_goes_from_one_to_min_and_stays() {
        let s: LrSchedule = Schedule::Cosine {
            total: 100,
            min_factor: 0.1,
        }
        .into();
        assert!(close(s.factor(1), 1.0));
        assert!(close(s.factor(51), 0.55));
        assert!(close(s.factor(101), 0.1));
        assert!(close(s.factor(1000), 0.1));
        for t in 1..100 {
            assert!(s.factor(t + 1) <= s.factor(t));
        }
    }

    #[test]
    fn one_cycle_rises_then_falls() {
        let s: LrSchedule = Schedule::OneCycle {
            total: 100,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
        .into();
        assert!(close(s.factor(1), 1.0 / 25.0));
        assert!(close(s.factor(30), 1.0));
        assert!(close(s.factor(100), 1.0 / 25.0 / 1e4));
        for t in 1..29 {
            assert!(s.factor(t + 1) > s.factor(t));
        }
        for t in 30..99 {
            assert!(s.factor(t + 1) < s.factor(t));
        }
    }

    #[test]
    fn one_cycle_factor_is_finite_for_short_and_odd_cycles() {
        for total in 0..8 {
            for pct_start in [0.01, 0.3, 0.5, 0.99] {
                let s: LrSchedule = Schedule::OneCycle {
                    total,
                    pct_start,
                    div_factor: 25.0,
                    final_div_factor: 1e4,
                }
                .into();
                for t in 0..12 {
                    let f = s.factor(t);
                    assert!(
                        f.is_finite() && f > 0.0 && f <= 1.0,
                        "{total} {pct_start} {t}: {f}"
                    );
                }
            }
        }
    }

    #[test]
    fn warmup_is_linear() {
        let s = LrSchedule {
            schedule: Schedule::Constant,
            warmup: 4,
        };
        assert_eq!(s.factor(1), 0.25);
        assert_eq!(s.factor(2), 0.5);
        assert_eq!(s.factor(4), 1.0);
        assert_eq!(s.factor(5), 1.0);
    }

    #[test]
    fn bad_parameters_are_named() {
        let bad = [
            Schedule::StepDecay {
                every: 0,
                factor: 0.5,
            },
            Schedule::StepDecay {
                every: 1,
                factor: 1.5,
            },
            Schedule::Cosine {
                total: 10,
                min_factor: f64::NAN,
            },
            Schedule::OneCycle {
                total: 2,
                pct_start: 0.3,
                div_factor: 25.0,
                final_div_factor: 1e4,
            },
            Schedule::OneCycle {
                total: 10,
                pct_start: 0.3,
                div_factor: 0.5,
                final_div_factor: 1e4,
            },
        ];
        for s in bad {
            assert!(matches!(
                LrSchedule::from(s).validate(),
                Err(Error::InvalidSchedule { .. })
            ));
        }
    }
}
