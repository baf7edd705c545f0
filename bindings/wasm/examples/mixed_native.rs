//! The native side of the package's mixed-precision tests (test/node/mixed.test.mjs): runs a
//! scenario with the native `vsgd` library (std: threads, x86's fused mixed loop) and prints
//! the parameters' bits and writes the checkpoint, for the package's results to be compared
//! with. Built for the host only, by the test: `cargo run --release --example mixed_native`.
//!
//! Input on stdin, whitespace-separated:
//!   ALGORITHM LR STEPS TENSORS
//!   per tensor: DTYPE STATE_DTYPE SEED LEN, then LEN parameter bit patterns
//!     (DTYPE f32, bf16 or f16; STATE_DTYPE f32 or bf16, or - for the default; SEED - for the
//!     default; bits as decimal integers: u32 for f32, u16 for bf16/f16)
//!   per step, per tensor: LEN gradient bit patterns
//! Output: one line per tensor, its parameter bits after the last step; the checkpoint of the
//! final state is written to the file named by the first argument.
//! Each tensor is stepped on its own (`step_tensor`, `step_tensor_mixed`), as native callers do.
//!
//! `mixed_native --global-clock FILE` instead writes the checkpoint of an Adam optimizer without
//! tensors whose schedules run on the global clock (at global step 3, lr halved every step):
//! a setting the package cannot make itself, for testing its steps over several kinds.
//!
//! `mixed_native --clip-step BEFORE AFTER` writes the checkpoint BEFORE of a VSGD optimizer
//! with gradient clipping (global norm at most 1.5: a setting the package cannot make) and two
//! tensors, f32 of 2 elements and f64 of 1; then steps both at once (`step_any`: one norm over
//! both) with parameters [1, 2] and [3] and gradients [1, 2] and [3], prints the parameters'
//! bits (one line per tensor) and writes the checkpoint AFTER.

use std::io::Read;

use vsgd::{
    bf16, f16, Algorithm, Config, DType, GroupId, LrSchedule, Optimizer, Schedule, ScheduleClock,
    TensorId, TensorSpec,
};

enum Param {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: mixed_native CHECKPOINT < input")?;
    if out == "--global-clock" {
        let file = std::env::args()
            .nth(2)
            .ok_or("--global-clock needs a file")?;
        let mut opt = Optimizer::new(Config::default_for(Algorithm::Adam))?;
        opt.set_lr(GroupId(0), 0.1)?;
        opt.set_schedule(
            GroupId(0),
            LrSchedule::from(Schedule::StepDecay {
                every: 1,
                factor: 0.5,
            }),
        )?;
        opt.set_schedule_clock(ScheduleClock::Global);
        opt.set_global_step(3);
        std::fs::write(file, vsgd::checkpoint::save(&opt)?)?;
        return Ok(());
    }
    if out == "--clip-step" {
        let mut args = std::env::args().skip(2);
        let (from, to) = args
            .next()
            .zip(args.next())
            .ok_or("--clip-step needs two files")?;
        let mut opt = Optimizer::new(Config::default_for(Algorithm::Vsgd))?;
        opt.set_clip_norm(Some(1.5))?;
        opt.add_tensor(TensorSpec::new(&[2]))?;
        opt.add_tensor(TensorSpec::new(&[1]).dtype(DType::F64))?;
        std::fs::write(from, vsgd::checkpoint::save(&opt)?)?;
        let (mut p0, mut p1) = ([1.0f32, 2.0], [3.0f64]);
        opt.step_any(
            &mut [(&mut p0[..]).into(), (&mut p1[..]).into()],
            &[
                Some((&[1.0f32, 2.0][..]).into()),
                Some((&[3.0f64][..]).into()),
            ],
        )?;
        let b0: Vec<String> = p0.iter().map(|x| x.to_bits().to_string()).collect();
        println!("{}\n{}", b0.join(" "), p1[0].to_bits());
        std::fs::write(to, vsgd::checkpoint::save(&opt)?)?;
        return Ok(());
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let mut tok = text.split_whitespace();
    let mut next = || tok.next().ok_or("input ends early");
    let algorithm = Algorithm::from_name(next()?).ok_or("unknown algorithm")?;
    let mut config = Config::default_for(algorithm);
    config.set("lr", next()?.parse()?)?;
    let steps: usize = next()?.parse()?;
    let tensors: usize = next()?.parse()?;
    let mut opt = Optimizer::new(config)?;
    // More threads than most test machines have cores: large tensors are split (the same bits
    // for every split, which is what the package's tests compare).
    opt.set_threads(4);
    let mut params = Vec::new();
    for _ in 0..tensors {
        let dtype = DType::from_name(next()?).ok_or("unknown dtype")?;
        let state = next()?;
        let seed = next()?;
        let len: usize = next()?.parse()?;
        let shape = [len];
        let mut spec = TensorSpec::new(&shape).dtype(dtype);
        if state != "-" {
            spec = spec.state_dtype(DType::from_name(state).ok_or("unknown state dtype")?);
        }
        if seed != "-" {
            spec = spec.seed(seed.parse()?);
        }
        opt.add_tensor(spec)?;
        let mut bits = Vec::with_capacity(len);
        for _ in 0..len {
            bits.push(next()?.parse::<u32>()?);
        }
        params.push(match dtype {
            DType::F32 => Param::F32(bits.iter().map(|&b| f32::from_bits(b)).collect()),
            DType::Bf16 => Param::Bf16(bits.iter().map(|&b| bf16::from_bits(b as u16)).collect()),
            DType::F16 => Param::F16(bits.iter().map(|&b| f16::from_bits(b as u16)).collect()),
            DType::F64 => return Err("f64 is not part of these scenarios".into()),
        });
    }
    for _ in 0..steps {
        for (k, p) in params.iter_mut().enumerate() {
            let t = TensorId(k);
            let mixed = opt.tensor_info(t)?.state_dtype != opt.tensor_info(t)?.dtype;
            let len = opt.tensor_info(t)?.len;
            let mut bits = Vec::with_capacity(len);
            for _ in 0..len {
                bits.push(next()?.parse::<u32>()?);
            }
            match p {
                Param::F32(p) => {
                    let g: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
                    if mixed {
                        opt.step_tensor_mixed(t, p, &g)?;
                    } else {
                        opt.step_tensor(t, p, &g)?;
                    }
                }
                Param::Bf16(p) => {
                    let g: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b as u16)).collect();
                    opt.step_tensor_mixed(t, p, &g)?;
                }
                Param::F16(p) => {
                    let g: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b as u16)).collect();
                    opt.step_tensor_mixed(t, p, &g)?;
                }
            }
        }
    }
    for p in &params {
        let bits: Vec<String> = match p {
            Param::F32(p) => p.iter().map(|x| x.to_bits().to_string()).collect(),
            Param::Bf16(p) => p.iter().map(|x| x.to_bits().to_string()).collect(),
            Param::F16(p) => p.iter().map(|x| x.to_bits().to_string()).collect(),
        };
        println!("{}", bits.join(" "));
    }
    std::fs::write(out, vsgd::checkpoint::save(&opt)?)?;
    Ok(())
}
