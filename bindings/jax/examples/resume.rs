//! Resumes a checkpoint natively, with the core's `Optimizer`: the check that a JAX optimizer
//! state saved by `vsgd_jax.save` continues in Rust exactly as it does in JAX
//! (`bindings/jax/tests/test_checkpoint.py` runs it).
//!
//! ```text
//! cargo run --release -p vsgd-jax --example resume -- \
//!     STATE.ckpt PARAMS.bin GRADS.bin STEPS PARAMS_OUT.bin STATE_OUT.ckpt
//! ```
//!
//! `PARAMS.bin`: the parameters of every tensor, in the checkpoint's tensor order, end to end
//! (little-endian, each tensor in its element type). `GRADS.bin`: `STEPS` such blocks, one
//! per step. Writes the parameters after the steps and the optimizer's final checkpoint.
//! All tensors have one element type: f32 or f64 (`Optimizer::step`), or bf16 or f16 with
//! f32 state (mixed precision, `Optimizer::step_mixed`).

use std::error::Error;

use vsgd::kernels::mixed::Storage;
use vsgd::{bf16, checkpoint, f16, DType, Element, Optimizer, TensorId};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn read_values<T: Element>(bytes: &[u8], at: &mut usize, n: usize) -> Result<Vec<T>> {
    let size = core::mem::size_of::<T>();
    let end = *at + n * size;
    let chunk = bytes.get(*at..end).ok_or("input file too short")?;
    *at = end;
    Ok(chunk
        .chunks_exact(size)
        .map(|c| match size {
            4 => T::from_f64(f64::from(f32::from_le_bytes(
                c.try_into().expect("4 bytes"),
            ))),
            _ => T::from_f64(f64::from_le_bytes(c.try_into().expect("8 bytes"))),
        })
        .collect())
}

fn run<T: Element>(opt: &mut Optimizer, args: &[String]) -> Result<()> {
    let n = opt.num_tensors();
    let lens: Vec<usize> = (0..n)
        .map(|i| opt.tensor_info(TensorId(i)).map(|t| t.len))
        .collect::<std::result::Result<_, _>>()?;
    let pbytes = std::fs::read(&args[1])?;
    let gbytes = std::fs::read(&args[2])?;
    let steps: usize = args[3].parse()?;
    let mut at = 0;
    let mut params: Vec<Vec<T>> = lens
        .iter()
        .map(|&l| read_values(&pbytes, &mut at, l))
        .collect::<Result<_>>()?;
    let mut at = 0;
    for s in 0..steps {
        let grads: Vec<Vec<T>> = lens
            .iter()
            .map(|&l| read_values(&gbytes, &mut at, l))
            .collect::<Result<_>>()?;
        let grad_refs: Vec<&[T]> = grads.iter().map(Vec::as_slice).collect();
        let mut param_refs: Vec<&mut [T]> = params.iter_mut().map(Vec::as_mut_slice).collect();
        let report = opt.step(&mut param_refs, &grad_refs)?;
        if report.skipped != 0 {
            return Err(format!("step {}: {} tensors skipped", s + 1, report.skipped).into());
        }
    }
    let mut out = Vec::new();
    for p in &params {
        for &x in p {
            if core::mem::size_of::<T>() == 4 {
                out.extend_from_slice(&(x.to_f64() as f32).to_le_bytes());
            } else {
                out.extend_from_slice(&x.to_f64().to_le_bytes());
            }
        }
    }
    std::fs::write(&args[4], out)?;
    checkpoint::save_file(opt, &args[5])?;
    Ok(())
}

/// [`run`] for bf16 or f16 parameters (`from_bits`/`to_bits` read and write them).
fn run_mixed<P: Storage>(
    opt: &mut Optimizer,
    args: &[String],
    from_bits: fn(u16) -> P,
    to_bits: fn(P) -> u16,
) -> Result<()> {
    let n = opt.num_tensors();
    let lens: Vec<usize> = (0..n)
        .map(|i| opt.tensor_info(TensorId(i)).map(|t| t.len))
        .collect::<std::result::Result<_, _>>()?;
    let read = |bytes: &[u8], at: &mut usize, n: usize| -> Result<Vec<P>> {
        let end = *at + 2 * n;
        let chunk = bytes.get(*at..end).ok_or("input file too short")?;
        *at = end;
        Ok(chunk
            .chunks_exact(2)
            .map(|c| from_bits(u16::from_le_bytes([c[0], c[1]])))
            .collect())
    };
    let pbytes = std::fs::read(&args[1])?;
    let gbytes = std::fs::read(&args[2])?;
    let steps: usize = args[3].parse()?;
    let mut at = 0;
    let mut params: Vec<Vec<P>> = lens
        .iter()
        .map(|&l| read(&pbytes, &mut at, l))
        .collect::<Result<_>>()?;
    let mut at = 0;
    for s in 0..steps {
        let grads: Vec<Vec<P>> = lens
            .iter()
            .map(|&l| read(&gbytes, &mut at, l))
            .collect::<Result<_>>()?;
        let grad_refs: Vec<Option<&[P]>> = grads.iter().map(|g| Some(g.as_slice())).collect();
        let mut param_refs: Vec<&mut [P]> = params.iter_mut().map(Vec::as_mut_slice).collect();
        let report = opt.step_mixed(&mut param_refs, &grad_refs)?;
        if report.skipped != 0 {
            return Err(format!("step {}: {} tensors skipped", s + 1, report.skipped).into());
        }
    }
    let out: Vec<u8> = params
        .iter()
        .flatten()
        .flat_map(|&x| to_bits(x).to_le_bytes())
        .collect();
    std::fs::write(&args[4], out)?;
    checkpoint::save_file(opt, &args[5])?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 6 {
        return Err(
            "usage: resume STATE.ckpt PARAMS.bin GRADS.bin STEPS PARAMS_OUT.bin STATE_OUT.ckpt"
                .into(),
        );
    }
    let mut opt = checkpoint::load_file(&args[0])?;
    let dtype = match opt.num_tensors() {
        0 => DType::F32,
        _ => opt.tensor_info(TensorId(0))?.dtype,
    };
    match dtype {
        DType::F32 => run::<f32>(&mut opt, &args),
        DType::F64 => run::<f64>(&mut opt, &args),
        DType::Bf16 => run_mixed::<bf16>(&mut opt, &args, bf16::from_bits, bf16::to_bits),
        DType::F16 => run_mixed::<f16>(&mut opt, &args, f16::from_bits, f16::to_bits),
    }
}
