//! The library's error type. Every failure is reported; nothing panics on bad input.

use core::fmt;

use crate::config::{Algorithm, ConfigError};
use crate::element::DType;

/// Everything that can go wrong, each variant naming what was wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A hyperparameter outside its range.
    Config(ConfigError),
    /// A hyperparameter name the algorithm does not have.
    UnknownHyperparameter {
        /// The algorithm that was asked.
        algorithm: Algorithm,
    },
    /// A learning rate given at run time (`set_lr`, a schedule, a per-step lr) that is
    /// negative or not finite.
    InvalidLearningRate {
        /// The rejected value.
        lr: f64,
    },
    /// A schedule parameter outside its range.
    InvalidSchedule {
        /// The offending field.
        field: &'static str,
        /// Its allowed range, in words.
        allowed: &'static str,
    },
    /// Two buffers that must have the same length do not.
    LengthMismatch {
        /// Which buffer (`"grad"`, `"state"`, `"tensors"`, …).
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The wrong number of state arrays for the algorithm.
    StateCount {
        /// The algorithm's count ([`Algorithm::state_count`]).
        expected: usize,
        /// The count given.
        got: usize,
    },
    /// A buffer of the wrong element type for the tensor.
    DTypeMismatch {
        /// The tensor index.
        tensor: usize,
        /// The tensor's registered element type.
        expected: DType,
        /// The type passed.
        got: DType,
    },
    /// A parameter type with a state type no step supports ([`DType::allows_state`]).
    DTypeCombination {
        /// The parameter's element type.
        param: DType,
        /// The state's element type asked for.
        state: DType,
    },
    /// A mixed-precision tensor (16-bit parameter, or `bf16` state) where only tensors whose
    /// parameter and state share one type can go (the CUDA optimizer's registration). The
    /// CPU optimizer's steps take every kind of tensor.
    MixedPrecision {
        /// The tensor index.
        tensor: usize,
        /// Its parameter's element type.
        param: DType,
        /// Its state's element type.
        state: DType,
    },
    /// No tensor with this index.
    UnknownTensor {
        /// The index given.
        tensor: usize,
    },
    /// No parameter group with this index.
    UnknownGroup {
        /// The index given.
        group: usize,
    },
    /// No state array of this name for the algorithm.
    UnknownStateArray {
        /// The algorithm asked.
        algorithm: Algorithm,
    },
    /// A shape whose element count overflows `usize`.
    ShapeOverflow,
    /// The state of a tensor could not be allocated (more than `isize::MAX` bytes, or the
    /// allocator refused). Nothing was registered.
    AllocationFailed {
        /// The bytes asked for.
        bytes: usize,
    },
    /// A maximum gradient norm for clipping that is not finite and > 0.
    InvalidClipNorm {
        /// The rejected value.
        max_norm: f64,
    },
    /// A gradient holding NaN or ±∞ under [`crate::NonFinitePolicy::Error`]. Nothing was
    /// changed.
    NonFiniteGradient {
        /// The first tensor (index) whose gradient was not finite.
        tensor: usize,
    },
    /// A configuration (or handle) of another algorithm than the one required.
    AlgorithmMismatch {
        /// The algorithm required.
        expected: Algorithm,
        /// The algorithm given.
        got: Algorithm,
    },
    /// A step number of 0 given to a stateless kernel (steps count from 1), or a step counter
    /// that would overflow.
    InvalidStep {
        /// The step number given.
        step: u64,
    },
    /// A shard of bf16 state whose element indices (its `offset` in the whole tensor plus its
    /// length) pass 2⁶⁴ − 1: the index that keys the stochastic rounding's random bits would
    /// wrap around and repeat another shard's. Nothing was changed.
    IndexOverflow {
        /// The index of the shard's first element in the whole tensor.
        offset: u64,
        /// The shard's length.
        len: usize,
    },
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Config(e) => e.fmt(f),
            Error::UnknownHyperparameter { algorithm } => write!(
                f,
                "unknown hyperparameter for {algorithm} (known: {})",
                Join(algorithm.hyper_names())
            ),
            Error::InvalidLearningRate { lr } => {
                write!(
                    f,
                    "invalid learning rate {lr} (allowed: [0, 1e30] and lr * weight_decay <= 1)"
                )
            }
            Error::InvalidSchedule { field, allowed } => {
                write!(f, "invalid schedule: {field} (allowed: {allowed})")
            }
            Error::LengthMismatch {
                what,
                expected,
                got,
            } => write!(
                f,
                "length mismatch: {what} has {got} elements, expected {expected}"
            ),
            Error::StateCount { expected, got } => {
                write!(
                    f,
                    "{got} state arrays given, the algorithm needs {expected}"
                )
            }
            Error::DTypeMismatch {
                tensor,
                expected,
                got,
            } => write!(
                f,
                "tensor {tensor} holds {} but {} buffers were given",
                expected.name(),
                got.name()
            ),
            Error::DTypeCombination { param, state } => write!(
                f,
                "a {} parameter cannot have {} state (f64 with f64; f32, bf16 or f16 with f32 \
                 or bf16)",
                param.name(),
                state.name()
            ),
            Error::MixedPrecision {
                tensor,
                param,
                state,
            } => write!(
                f,
                "tensor {tensor} holds {} parameters with {} state, which only the CPU optimizer steps",
                param.name(),
                state.name()
            ),
            Error::UnknownTensor { tensor } => write!(f, "no tensor with index {tensor}"),
            Error::UnknownGroup { group } => write!(f, "no parameter group with index {group}"),
            Error::UnknownStateArray { algorithm } => write!(
                f,
                "unknown state array for {algorithm} (known: {})",
                Join(algorithm.state_names())
            ),
            Error::ShapeOverflow => f.write_str("shape's element count overflows"),
            Error::AllocationFailed { bytes } => {
                write!(f, "could not allocate {bytes} bytes of optimizer state")
            }
            Error::InvalidClipNorm { max_norm } => write!(
                f,
                "invalid maximum gradient norm {max_norm} (allowed: finite and > 0)"
            ),
            Error::NonFiniteGradient { tensor } => write!(
                f,
                "gradient of tensor {tensor} holds NaN or infinity; nothing was updated"
            ),
            Error::AlgorithmMismatch { expected, got } => {
                write!(f, "algorithm mismatch: expected {expected}, got {got}")
            }
            Error::InvalidStep { step } => {
                write!(f, "invalid step number {step} (steps count from 1)")
            }
            Error::IndexOverflow { offset, len } => write!(
                f,
                "a shard of {len} elements at offset {offset} runs past element index 2^64 - 1"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

struct Join(&'static [&'static str]);

impl fmt::Display for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}
