//! The XLA FFI handler `vsgd_jax_xla_all_finite`: whether every element of some gradient
//! arrays is finite (no NaN, no ±∞), with the core's vectorized scan
//! (`vsgd::kernels::all_finite`), split across XLA's thread pool like the step.
//!
//! Call frame: inputs, any number of arrays of one element type (f32, f64, bf16 or f16, the
//! 16-bit types scanned by `vsgd::kernels::mixed::all_finite`); one output,
//! a pred array of `B` elements (`B` = 1, or the rows under `vmap` with
//! `vmap_method="broadcast_all"`, each input then holding `B` leading rows of equal size).
//! Element `b` of the output is the verdict over row `b` of every input.
//!
//! On a mesh, each device scans its own shards and JAX reduces the per-device verdicts
//! across the mesh (`vsgd_jax/_ops.py`), so every shard of a step follows one verdict.

use core::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use vsgd::kernels::{self, mixed};
use vsgd::{bf16, f16};

use crate::handler::{buffers, dtype_name, elem_size, entry, invalid, pieces, Buf, Failure};
use crate::xla::{self, dtype};

/// The handler XLA calls (registered by the Python package). Answers the metadata query like
/// [`crate::handler::vsgd_jax_xla_step`].
///
/// # Safety
/// `frame` must be a call frame from XLA (or NULL, which is ignored).
#[no_mangle]
pub unsafe extern "C" fn vsgd_jax_xla_all_finite(frame: *mut xla::CallFrame) -> *mut xla::Error {
    // SAFETY: forwarded contract.
    unsafe { entry(frame, xla::API_VERSION, all_finite) }
}

unsafe fn all_finite(frame: &xla::CallFrame) -> Result<(), Failure> {
    let args = unsafe { buffers(&frame.args, "inputs")? };
    let rets = unsafe { buffers(&frame.rets, "outputs")? };
    if rets.len() != 1 {
        return Err(invalid(format!(
            "all_finite has 1 output, got {}",
            rets.len()
        )));
    }
    let out = unsafe { Buf::decode(rets[0], "verdict")? };
    if out.dtype != dtype::PRED || out.len == 0 {
        return Err(invalid("the verdict must be a non-empty pred array"));
    }
    let batch = out.len;
    let mut grads = Vec::with_capacity(args.len());
    for (j, &a) in args.iter().enumerate() {
        let g = unsafe { Buf::decode(a, "grad")? };
        if !matches!(g.dtype, dtype::F32 | dtype::F64 | dtype::BF16 | dtype::F16)
            || g.dtype != grads.first().map_or(g.dtype, |f: &Buf| f.dtype)
        {
            return Err(invalid(format!(
                "arrays must be f32, f64, bf16 or f16, one type per call; gradient {j} is {}",
                dtype_name(g.dtype)
            )));
        }
        if g.len % batch != 0 {
            return Err(invalid(format!(
                "array {j}: {} elements do not split into {batch} rows",
                g.len
            )));
        }
        let (r, o) = (g.bytes(), out.bytes());
        if !r.is_empty() && r.start < o.end && o.start < r.end {
            return Err(invalid("the output overlaps an input"));
        }
        grads.push(g);
    }
    let pool = unsafe { crate::parallel::Pool::of(frame) };
    match grads.first().map(|g| g.dtype) {
        Some(dtype::F64) => unsafe { scan::<f64>(&grads, batch, out, pool, kernels::all_finite) },
        Some(dtype::BF16) => unsafe { scan::<bf16>(&grads, batch, out, pool, mixed::all_finite) },
        Some(dtype::F16) => unsafe { scan::<f16>(&grads, batch, out, pool, mixed::all_finite) },
        _ => unsafe { scan::<f32>(&grads, batch, out, pool, kernels::all_finite) },
    }
}

/// Pointers to the arrays, shareable across threads (only read).
struct Arrays<T>(Vec<*const T>);

// SAFETY: the arrays are only read, and outlive the scan.
unsafe impl<T> Sync for Arrays<T> {}

impl<T> Arrays<T> {
    fn get(&self, j: usize) -> *const T {
        self.0[j]
    }
}

unsafe fn scan<T>(
    grads: &[Buf],
    batch: usize,
    out: Buf,
    pool: Option<crate::parallel::Pool>,
    all_finite: fn(&[T]) -> bool,
) -> Result<(), Failure> {
    let mut starts = Vec::with_capacity(grads.len() + 1);
    starts.push(0usize);
    for g in grads {
        starts.push(starts.last().copied().unwrap_or(0) + g.len / batch);
    }
    let total = starts.last().copied().unwrap_or(0);
    let arrays = Arrays(
        grads
            .iter()
            .map(|g| g.data.cast::<T>().cast_const())
            .collect(),
    );
    let bytes = total * elem_size(grads.first().map_or(dtype::F32, |g| g.dtype));
    for b in 0..batch {
        let finite = AtomicBool::new(true);
        let scanned = crate::parallel::for_ranges(total, bytes, pool, &|range| {
            for (j, piece) in pieces(&starts, range) {
                if !finite.load(Ordering::Relaxed) {
                    return;
                }
                let row_len = starts[j + 1] - starts[j];
                // SAFETY: the piece lies inside row `b` of array `j`.
                let x = unsafe {
                    core::slice::from_raw_parts(
                        arrays.get(j).add(b * row_len + piece.start),
                        piece.len(),
                    )
                };
                if !all_finite(x) {
                    finite.store(false, Ordering::Relaxed);
                }
            }
        });
        if !scanned {
            return Err((xla::ERROR_INTERNAL, "vsgd_jax: the scan panicked".into()));
        }
        // SAFETY: the output holds `batch` pred bytes.
        unsafe { ptr::write(out.data.cast::<u8>().add(b), u8::from(finite.into_inner())) };
    }
    Ok(())
}
