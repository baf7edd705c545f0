//! # vsgd
//!
//! Variational Stochastic Gradient Descent (VSGD; Chen, Kuzina, Esmaeili & Tomczak) and its
//! relatives as a drop-in optimizer component.
//!
//! VSGD treats the true gradient `g` as a latent variable and the minibatch gradient `ĝ` as a
//! noisy observation of it, `ĝ ~ N(g, 1/w_ĝ)`, `g ~ N(μ_prev, 1/w_g)`, with Gamma priors on
//! both precisions, and infers `g` by stochastic variational inference. The result is an
//! Adam-like update whose momentum `bhg / (bg + bhg)` is learned per element.
//!
//! The crate has three layers:
//! - [`kernels`]: one step of one tensor (or of any shard of it) over caller-owned slices, for
//!   `f32` and `f64`, never allocating; the portable path is the reference. Mixed precision
//!   ([`kernels::mixed`]): `bf16`/`f16` parameters with `f32` state, or `bf16` state with
//!   stochastic rounding.
//! - [`Optimizer`] (feature `alloc`): registered tensors with names, shapes and element types
//!   (mixed precision through [`Optimizer::step_mixed`]), parameter groups, schedules
//!   ([`LrSchedule`]), step counters, state read-out and a non-finite-gradient policy.
//! - [`checkpoint`] (feature `checkpoint`, no_std + `alloc`): portable MessagePack checkpoints,
//!   atomic files, sharding (`docs/checkpoint-format.md`).
//! - the `vsgd` command is its own package, `vsgd-cli` (cli/ in the repository): `vsgd replay`,
//!   `vsgd inspect`, `vsgd bench`. This library's features never pull it or serde_json in.
//!
//! `no_std`: without the `std` feature the crate needs only `core` (kernels) and `alloc`
//! (the optimizer).
//!
//! ```
//! use vsgd::{Optimizer, Config, VsgdConfig, TensorSpec};
//! let mut opt = Optimizer::new(Config::Vsgd(VsgdConfig { lr: 0.05, ..Default::default() }))?;
//! let w = opt.add_tensor(TensorSpec::new(&[3]).name("w"))?;
//! let mut param = [1.0f32, -1.0, 0.5];
//! for _ in 0..300 {
//!     // gradient of ½‖θ‖²
//!     let grad = param;
//!     opt.step_tensor(w, &mut param, &grad)?;
//! }
//! assert!(param.iter().all(|p| p.abs() < 0.1));
//! # Ok::<(), vsgd::Error>(())
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "candle")]
pub mod candle;
#[cfg(feature = "checkpoint")]
pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod element;
pub mod error;
pub mod kernels;
#[cfg(feature = "alloc")]
pub mod optimizer;
pub mod schedule;

pub use config::{
    AdamConfig, Algorithm, Config, ConfigError, ConstantVsgdConfig, SgdmConfig, VsgdConfig,
};
pub use element::{DType, Element, GradRef, ParamMut};
pub use error::Error;
/// The 16-bit float types of mixed precision ([`kernels::mixed`]), re-exported from `half`.
pub use half::{bf16, f16};
pub use kernels::{NonFinitePolicy, StepOutcome};
#[cfg(feature = "alloc")]
pub use optimizer::{GroupId, Optimizer, StepReport, TensorId, TensorInfo, TensorSpec};
pub use schedule::{LrSchedule, Schedule, ScheduleClock};

/// README.md's Rust examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
