//! # vsgd-jax (native half)
//!
//! The shared library the `vsgd_jax` Python package loads with ctypes. No Python and no C++
//! in it: an XLA FFI handler written against XLA's C API ([`xla`], declared by hand) that runs
//! the core's stateless step `vsgd::kernels::step` (`vsgd::kernels::mixed::step` for bf16 and
//! f16 parameters with f32 state), and a few C functions over the core's
//! `Optimizer` and `checkpoint` API for configuration checks and checkpoints. No algorithm
//! code lives here.
//!
//! - [`handler::vsgd_jax_xla_step`]: the XLA FFI handler of the step (typed FFI, API
//!   version 0.1); [`verdict::vsgd_jax_xla_all_finite`]: the gradient verdict it follows.
//! - `gpu::vsgd_jax_xla_step_cuda` (feature `cuda`, which the Python package's build turns
//!   on): the same step on an NVIDIA GPU (platform "CUDA"), over `vsgd::cuda::step_raw` on
//!   XLA's stream.
//! - [`checkpoint`]: `vsgd_jax_check_config`, `vsgd_jax_default`, `vsgd_jax_save`,
//!   `vsgd_jax_load` and the `vsgd_jax_ckpt_*` read-outs.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// The exports catch panics with `catch_unwind`, which does nothing under `panic = "abort"`.
#[cfg(panic = "abort")]
compile_error!("vsgd-jax must be built with panic = \"unwind\" (its exports catch panics)");

pub mod checkpoint;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod handler;
pub mod parallel;
pub mod verdict;
pub mod xla;
