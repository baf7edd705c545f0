//! The prepared GPU check (`scripts/gpu-check.sh` runs it; see docs/cuda.md).
//!
//! Built on a machine without a GPU and carried to one (no network there, no compiler needed):
//! `cargo build --release -p vsgd-cli --features cuda --example gpu_check`. It checks and measures:
//! 1. every conformance case (f32, f64): `DeviceOptimizer` against the CPU `Optimizer`, the
//!    parameters' bits after every step and the checkpoints' bytes at the end;
//! 2. random mixed tensors with NaN/±∞ gradients under every policy against the CPU;
//! 3. 1,000 tensors of mixed sizes in one step against one tensor of the same total size (same
//!    bits, and the time ratio);
//! 4. bandwidth at `--elements` f32 elements (default 2^30): fused VSGD and Adam against the
//!    device-to-device copy measured in the same run (goal ≥ 0.85), and fused VSGD against the
//!    unfused four-pass VSGD (same bits).
//!
//! Prints a table; exits 1 on any mismatch, 2 without a usable GPU.

#[allow(dead_code)]
#[path = "../src/replay.rs"]
mod replay;
#[allow(dead_code)]
#[path = "../src/replay_ckpt.rs"]
mod replay_ckpt;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use vsgd::cuda::cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream, DevicePtr};
use vsgd::cuda::{self, bench, CudaError, DeviceOptimizer, TensorPtrs};
use vsgd::{checkpoint, Algorithm, Config, DType, Element, NonFinitePolicy, Optimizer};
use vsgd::{GroupId, TensorId, TensorSpec};

type Res<T> = Result<T, String>;

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

fn driver<E: std::fmt::Debug>(x: E) -> String {
    format!("{x:?}")
}

struct Table {
    rows: Vec<(String, bool, String)>,
}

impl Table {
    fn row(&mut self, check: &str, ok: bool, detail: String) {
        println!(
            "{:<44} {:<8} {detail}",
            check,
            if ok { "ok" } else { "MISMATCH" }
        );
        self.rows.push((check.to_string(), ok, detail));
    }
}

/// Bits of a float, every NaN alike (the GPU's NaNs carry other payloads than the CPU's).
fn key<T: Element>(x: T) -> u64 {
    let f = x.to_f64();
    if f.is_nan() {
        u64::MAX
    } else if T::DTYPE == DType::F32 {
        (f as f32).to_bits() as u64
    } else {
        f.to_bits()
    }
}

fn same<T: Element>(a: &[T], b: &[T]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(0);
    }
    a.iter().zip(b).position(|(x, y)| key(*x) != key(*y))
}

fn up<T: Element + vsgd::cuda::cudarc::driver::DeviceRepr>(
    s: &Arc<CudaStream>,
    x: &[T],
) -> Res<CudaSlice<T>> {
    s.clone_htod(x).map_err(driver)
}

fn down<T: Element + vsgd::cuda::cudarc::driver::DeviceRepr + Default>(
    s: &Arc<CudaStream>,
    x: &CudaSlice<T>,
) -> Res<Vec<T>> {
    s.clone_dtoh(x).map_err(driver)
}

// ------------------------------------------------------------------ 1. conformance

fn conformance<T: Element + vsgd::cuda::cudarc::driver::DeviceRepr + Default>(
    ctx: &Arc<CudaContext>,
    dir: &str,
) -> Res<(usize, usize, Vec<String>)> {
    let stream = ctx.default_stream();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|x| format!("{dir}: {x}"))?
        .map(|p| p.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let (mut cases, mut steps, mut bad) = (0, 0, Vec::new());
    for path in &paths {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let case = replay::Case::parse(&std::fs::read_to_string(path).map_err(e)?)?;
        if case.shapes.iter().any(|s| s.iter().product::<usize>() == 0) {
            continue; // no device buffer of length 0
        }
        let mut cpu = case.optimizer::<T>()?;
        let mut dev = DeviceOptimizer::from_host(ctx, &cpu).map_err(e)?;
        let mut pc = case.params::<T>();
        let mut pd: Vec<CudaSlice<T>> = pc.iter().map(|p| up(&stream, p)).collect::<Res<_>>()?;
        let mut ok = true;
        for s in 0..case.steps {
            if let Some(l) = &case.lr_per_step {
                cpu.set_lr(GroupId(0), l[s]).map_err(e)?;
                dev.set_lr(GroupId(0), l[s]).map_err(e)?;
            }
            let g: Vec<Vec<T>> = case
                .grads
                .iter()
                .map(|g| g[s].iter().map(|&x| T::from_f64(x)).collect())
                .collect();
            let gd: Vec<CudaSlice<T>> = g.iter().map(|x| up(&stream, x)).collect::<Res<_>>()?;
            let gr: Vec<&[T]> = g.iter().map(Vec::as_slice).collect();
            let mut pr: Vec<&mut [T]> = pc.iter_mut().map(Vec::as_mut_slice).collect();
            cpu.step(&mut pr, &gr).map_err(e)?;
            let mut pdr: Vec<&mut CudaSlice<T>> = pd.iter_mut().collect();
            let gdr: Vec<&CudaSlice<T>> = gd.iter().collect();
            dev.step(&stream, &mut pdr, &gdr).map_err(e)?;
            for (k, (c, d)) in pc.iter().zip(&pd).enumerate() {
                if let Some(i) = same(c, &down(&stream, d)?) {
                    bad.push(format!(
                        "{name} {:?} step {} tensor {k} element {i}",
                        T::DTYPE,
                        s + 1
                    ));
                    ok = false;
                }
            }
            steps += 1;
            if !ok {
                break;
            }
        }
        if ok && dev.save().map_err(e)? != checkpoint::save(&cpu).map_err(e)? {
            bad.push(format!("{name} {:?}: checkpoint bytes differ", T::DTYPE));
        }
        cases += 1;
    }
    Ok((cases, steps, bad))
}

// ------------------------------------------------------------------ 2. random, non-finite

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn value(&mut self, bad: bool) -> f32 {
        match self.below(if bad { 10 } else { 7 }) {
            0 => (self.unit() * f32::MIN_POSITIVE as f64) as f32,
            1 => (self.unit() * 1e-20) as f32,
            2 => (self.unit() * 1e15) as f32,
            3 => -0.0,
            7 => f32::NAN,
            8 => f32::INFINITY,
            9 => f32::NEG_INFINITY,
            _ => (self.unit() * 3.0) as f32,
        }
    }
}

fn random_mixed(
    ctx: &Arc<CudaContext>,
    algorithm: Algorithm,
    policy: NonFinitePolicy,
) -> Res<Option<String>> {
    let stream = ctx.default_stream();
    let mut rng = Rng(algorithm as u64 * 7 + policy as u64 + 1);
    let mut cpu = Optimizer::new(Config::default_for(algorithm)).map_err(e)?;
    cpu.set_policy(policy);
    let lens: Vec<usize> = (0..40).map(|_| 1 + rng.below(100_000) as usize).collect();
    for &n in &lens {
        cpu.add_tensor(TensorSpec::new(&[n])).map_err(e)?;
    }
    let mut dev = DeviceOptimizer::from_host(ctx, &cpu).map_err(e)?;
    let mut pc: Vec<Vec<f32>> = lens
        .iter()
        .map(|&n| (0..n).map(|_| rng.value(false)).collect())
        .collect();
    let mut pd: Vec<CudaSlice<f32>> = pc.iter().map(|p| up(&stream, p)).collect::<Res<_>>()?;
    for step in 0..4 {
        let g: Vec<Vec<f32>> = lens
            .iter()
            .map(|&n| {
                let bad = rng.below(5) == 0;
                (0..n).map(|_| rng.value(bad)).collect()
            })
            .collect();
        let gd: Vec<CudaSlice<f32>> = g.iter().map(|x| up(&stream, x)).collect::<Res<_>>()?;
        let gr: Vec<&[f32]> = g.iter().map(Vec::as_slice).collect();
        let mut pr: Vec<&mut [f32]> = pc.iter_mut().map(Vec::as_mut_slice).collect();
        let rc = cpu.step(&mut pr, &gr);
        let mut pdr: Vec<&mut CudaSlice<f32>> = pd.iter_mut().collect();
        let gdr: Vec<&CudaSlice<f32>> = gd.iter().collect();
        let rd = dev.step(&stream, &mut pdr, &gdr);
        match (&rc, &rd) {
            (Ok(_), Ok(())) => {
                if dev.last_skipped().map_err(e)? != cpu.last_skipped() {
                    return Ok(Some(format!("step {step}: skipped tensors differ")));
                }
            }
            (Err(a), Err(CudaError::Core(b))) if a == b => {}
            _ => return Ok(Some(format!("step {step}: CPU {rc:?}, GPU {rd:?}"))),
        }
        for (k, (c, d)) in pc.iter().zip(&pd).enumerate() {
            if let Some(i) = same(c, &down(&stream, d)?) {
                return Ok(Some(format!("step {step} tensor {k} element {i}")));
            }
        }
    }
    let host = dev.to_host().map_err(e)?;
    for k in 0..lens.len() {
        for name in algorithm.state_names() {
            let (a, b) = (
                cpu.state::<f32>(TensorId(k), name).map_err(e)?,
                host.state::<f32>(TensorId(k), name).map_err(e)?,
            );
            if let Some(i) = same(a, b) {
                return Ok(Some(format!("state {name} tensor {k} element {i}")));
            }
        }
        if cpu.step_count(TensorId(k)).map_err(e)? != host.step_count(TensorId(k)).map_err(e)? {
            return Ok(Some(format!("step count of tensor {k}")));
        }
    }
    Ok(None)
}

// ------------------------------------------------------------------ timing helpers

fn fill(stream: &CudaStream, ptr: u64, value: f32, n: usize) -> Res<()> {
    // SAFETY: `ptr` holds n f32 (callers allocate them).
    let r = unsafe { sys::cuMemsetD32Async(ptr, value.to_bits(), n, stream.cu_stream()) };
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("cuMemsetD32Async: {r:?}"))
    }
}

/// Milliseconds per run of `f` on `stream`: `reps` runs back to back (as steps follow each other
/// in training) between two events, after two warm-up runs. The host's work per run (planning
/// the launch, reading the previous step's verdict) overlaps the device's work of the run before.
fn time_ms(
    ctx: &Arc<CudaContext>,
    stream: &Arc<CudaStream>,
    reps: usize,
    f: &mut dyn FnMut() -> Res<()>,
) -> Res<f64> {
    let ev = || {
        ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver)
    };
    let (a, b) = (ev()?, ev()?);
    f()?;
    f()?;
    a.record(stream).map_err(driver)?;
    for _ in 0..reps {
        f()?;
    }
    b.record(stream).map_err(driver)?;
    b.synchronize().map_err(driver)?;
    Ok(a.elapsed_ms(&b).map_err(driver)? as f64 / reps as f64)
}

fn gbps(bytes: f64, ms: f64) -> f64 {
    bytes / ms / 1e6
}

fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (p, _sync) = s.device_ptr(stream);
    p
}

// ------------------------------------------------------------------ 3. many tensors vs one

fn many_vs_one(ctx: &Arc<CudaContext>, t: &mut Table) -> Res<()> {
    let stream = ctx.default_stream();
    let mut rng = Rng(42);
    let lens: Vec<usize> = (0..1000).map(|_| 1 + rng.below(200_000) as usize).collect();
    let total: usize = lens.iter().sum();
    let config = Config::default_for(Algorithm::Vsgd);
    let mut cpu = Optimizer::new(config).map_err(e)?;
    for &n in &lens {
        cpu.add_tensor(TensorSpec::new(&[n])).map_err(e)?;
    }
    let mut many = DeviceOptimizer::from_host(ctx, &cpu).map_err(e)?;
    let mut one = DeviceOptimizer::new(ctx, config).map_err(e)?;
    one.add_tensor(TensorSpec::new(&[total])).map_err(e)?;
    let p0: Vec<f32> = (0..total).map(|_| rng.value(false)).collect();
    let grads: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..total).map(|_| rng.value(false)).collect())
        .collect();
    let (pm, po) = (up(&stream, &p0)?, up(&stream, &p0)?);
    let gd: Vec<CudaSlice<f32>> = grads.iter().map(|g| up(&stream, g)).collect::<Res<_>>()?;
    let (pmb, pob) = (ptr(&pm, &stream), ptr(&po, &stream));
    let views = |p: u64, g: u64| -> Vec<TensorPtrs> {
        let mut at = 0u64;
        lens.iter()
            .map(|&n| {
                let x = TensorPtrs {
                    param: p + 4 * at,
                    grad: g + 4 * at,
                };
                at += n as u64;
                x
            })
            .collect()
    };
    let mut pc: Vec<Vec<f32>> = Vec::new();
    let mut at = 0;
    for &n in &lens {
        pc.push(p0[at..at + n].to_vec());
        at += n;
    }
    for g in 0..3 {
        let gb = ptr(&gd[g], &stream);
        // SAFETY: views into live buffers of `total` f32; the default stream orders them.
        unsafe {
            many.step_raw(stream.cu_stream(), &views(pmb, gb))
                .map_err(e)?;
            one.step_raw(
                stream.cu_stream(),
                &[TensorPtrs {
                    param: pob,
                    grad: gb,
                }],
            )
            .map_err(e)?;
        }
        let mut at = 0;
        let gr: Vec<&[f32]> = lens
            .iter()
            .map(|&n| {
                let s = &grads[g][at..at + n];
                at += n;
                s
            })
            .collect();
        let mut pr: Vec<&mut [f32]> = pc.iter_mut().map(Vec::as_mut_slice).collect();
        cpu.step(&mut pr, &gr).map_err(e)?;
    }
    let (a, b) = (down(&stream, &pm)?, down(&stream, &po)?);
    let flat: Vec<f32> = pc.concat();
    let ok = same(&a, &b).is_none() && same(&a, &flat).is_none();
    // Timing: the same step (state keeps evolving; the work per element is the same).
    let gb = ptr(&gd[0], &stream);
    let v = views(pmb, gb);
    // SAFETY (both closures): as above.
    let tm = time_ms(ctx, &stream, 9, &mut || unsafe {
        many.step_raw(stream.cu_stream(), &v).map_err(e)
    })?;
    let to = time_ms(ctx, &stream, 9, &mut || unsafe {
        one.step_raw(
            stream.cu_stream(),
            &[TensorPtrs {
                param: pob,
                grad: gb,
            }],
        )
        .map_err(e)
    })?;
    t.row(
        "1,000 mixed tensors vs one tensor (VSGD f32)",
        ok,
        format!(
            "{total} elements; bits equal to the single tensor and the CPU: {ok}; step {tm:.3} ms vs {to:.3} ms (ratio {:.2})",
            tm / to
        ),
    );
    Ok(())
}

// ------------------------------------------------------------------ 4. bandwidth

fn bandwidth(ctx: &Arc<CudaContext>, n: usize, t: &mut Table) -> Res<()> {
    let stream = ctx.default_stream();
    let alloc = |k: usize| -> Res<CudaSlice<f32>> { stream.alloc_zeros::<f32>(k).map_err(driver) };
    let (p, g) = (alloc(n)?, alloc(n)?);
    let (pp, gp) = (ptr(&p, &stream), ptr(&g, &stream));
    fill(&stream, pp, 0.5, n)?;
    fill(&stream, gp, 0.01, n)?;
    let bytes = (n * 4) as f64;
    // SAFETY: two live buffers of n f32.
    let copy = time_ms(ctx, &stream, 7, &mut || unsafe {
        let r = sys::cuMemcpyDtoDAsync_v2(pp, gp, n * 4, stream.cu_stream());
        if r == sys::CUresult::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })?;
    let copy_bw = gbps(2.0 * bytes, copy);
    t.row(
        "device-to-device copy",
        true,
        format!("{n} f32: {copy:.3} ms, {copy_bw:.0} GB/s (read + write)"),
    );
    fill(&stream, pp, 0.5, n)?;
    let mut results = Vec::new();
    for (algorithm, arrays) in [(Algorithm::Vsgd, 9.0), (Algorithm::Adam, 7.0)] {
        for policy in [NonFinitePolicy::Propagate, NonFinitePolicy::Skip] {
            let mut opt = DeviceOptimizer::new(ctx, Config::default_for(algorithm)).map_err(e)?;
            opt.set_policy(policy);
            opt.add_tensor(TensorSpec::new(&[n])).map_err(e)?;
            // SAFETY: live buffers of n f32.
            let ms = time_ms(ctx, &stream, 7, &mut || unsafe {
                opt.step_raw(
                    stream.cu_stream(),
                    &[TensorPtrs {
                        param: pp,
                        grad: gp,
                    }],
                )
                .map_err(e)
            })?;
            let bw = gbps(arrays * bytes, ms);
            let ratio = bw / copy_bw;
            let goal = if ratio >= 0.85 {
                "goal 0.85 met"
            } else {
                "BELOW the 0.85 goal"
            };
            t.row(
                &format!("{algorithm} fused, policy {}", policy.name()),
                true,
                format!(
                    "{ms:.3} ms, {bw:.0} GB/s over {arrays} arrays = {ratio:.3} of copy ({goal})"
                ),
            );
            results.push((algorithm, policy, ms));
        }
    }
    // Fused against unfused VSGD (f32), same bits from the same start.
    let config = Config::default_for(Algorithm::Vsgd);
    let st: Vec<CudaSlice<f32>> = (0..5).map(|_| alloc(n)).collect::<Res<_>>()?;
    let a: Vec<u64> = st.iter().map(|s| ptr(s, &stream)).collect();
    let q = alloc(n)?;
    let qp = ptr(&q, &stream);
    fill(&stream, pp, 0.5, n)?;
    fill(&stream, qp, 0.5, n)?;
    let arrays = bench::UnfusedArrays {
        param: qp,
        grad: gp,
        state: [a[0], a[1], a[2]],
        mu_new: a[3],
        var: a[4],
    };
    let mut fused = DeviceOptimizer::new(ctx, config).map_err(e)?;
    fused.set_policy(NonFinitePolicy::Propagate);
    fused.add_tensor(TensorSpec::new(&[n])).map_err(e)?;
    for t in 1..=2 {
        // SAFETY: live buffers of n f32.
        unsafe {
            fused
                .step_raw(
                    stream.cu_stream(),
                    &[TensorPtrs {
                        param: pp,
                        grad: gp,
                    }],
                )
                .map_err(e)?;
            bench::unfused_vsgd_f32(&stream, &config, t, config.lr(), n, arrays).map_err(e)?;
        }
    }
    let same_bits = same(&down(&stream, &p)?, &down(&stream, &q)?).is_none();
    // SAFETY: as above.
    let unfused = time_ms(ctx, &stream, 7, &mut || unsafe {
        bench::unfused_vsgd_f32(&stream, &config, 3, config.lr(), n, arrays).map_err(e)
    })?;
    let fused_ms = results[0].2;
    t.row(
        "VSGD fused vs unfused (4 passes)",
        same_bits,
        format!("unfused {unfused:.3} ms vs fused {fused_ms:.3} ms: fused {:.2}x faster; same bits: {same_bits}", unfused / fused_ms),
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mut n: usize = 1 << 30;
    let mut dir = "tests/data/conformance".to_string();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--elements" => {
                i += 1;
                n = args.get(i).and_then(|s| s.parse().ok()).unwrap_or(n);
            }
            "--cases" => {
                i += 1;
                dir = args.get(i).cloned().unwrap_or(dir);
            }
            other => {
                eprintln!("gpu_check: unknown argument {other} (--elements N, --cases DIR)");
                return ExitCode::from(2);
            }
        }
        i += 1;
    }
    let ctx = match cuda::context(0) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("gpu_check: {err}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut t = Table { rows: Vec::new() };
    let name = ctx.name().unwrap_or_default();
    let cc = ctx.compute_capability().unwrap_or((0, 0));
    let mut driver_version = 0;
    // SAFETY: the driver is initialized (context above).
    unsafe { sys::cuDriverGetVersion(&mut driver_version) };
    let ptx = bench::loaded_from_ptx(&ctx).map(|j| if j { "PTX (JIT)" } else { "sm_90 cubin" });
    println!(
        "device: {name}, sm_{}{}, driver {}.{}; kernels from {}",
        cc.0,
        cc.1,
        driver_version / 1000,
        driver_version % 1000 / 10,
        ptx.clone().unwrap_or("?")
    );
    println!(
        "{}",
        bench::manifest()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!("{:<44} {:<8} detail", "check", "result");
    let run = |t: &mut Table, what: &str, r: Res<()>| {
        if let Err(err) = r {
            t.row(what, false, format!("error: {err}"));
        }
    };
    let conf = |t: &mut Table, dtype: DType| -> Res<()> {
        let (cases, steps, bad) = match dtype {
            DType::F32 => conformance::<f32>(&ctx, &dir)?,
            DType::F64 => conformance::<f64>(&ctx, &dir)?,
            d => return Err(format!("no GPU conformance for {}", d.name())),
        };
        t.row(
            &format!("conformance {}", dtype.name()),
            bad.is_empty() && cases >= 22,
            format!(
                "{cases} cases, {steps} steps, bit-identical to the CPU{}",
                if bad.is_empty() {
                    String::new()
                } else {
                    format!(": {}", bad.join("; "))
                }
            ),
        );
        Ok(())
    };
    let r = conf(&mut t, DType::F32);
    run(&mut t, "conformance f32", r);
    let r = conf(&mut t, DType::F64);
    run(&mut t, "conformance f64", r);
    for algorithm in Algorithm::ALL {
        for policy in [
            NonFinitePolicy::Skip,
            NonFinitePolicy::Error,
            NonFinitePolicy::Propagate,
        ] {
            let what = format!("random + NaN/Inf, {algorithm}, {}", policy.name());
            match random_mixed(&ctx, algorithm, policy) {
                Ok(None) => t.row(
                    &what,
                    true,
                    "40 tensors, 4 steps, CPU bits (NaNs alike)".into(),
                ),
                Ok(Some(m)) => t.row(&what, false, m),
                Err(err) => t.row(&what, false, format!("error: {err}")),
            }
        }
    }
    let r = many_vs_one(&ctx, &mut t);
    run(&mut t, "1,000 mixed tensors vs one tensor", r);
    let r = bandwidth(&ctx, n, &mut t);
    run(&mut t, "bandwidth", r);
    let failed = t.rows.iter().filter(|r| !r.1).count();
    println!(
        "\n{} checks, {failed} failed, {:.1} s",
        t.rows.len(),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
