//! `vsgd bench`: memory-bandwidth benchmark of the optimizer step, in one process.
//!
//! ```text
//! vsgd bench [--json] [--algorithm NAME|all] [--elements N] [--threads T] [--tensors K]
//!            [--dtype f32|f64] [--policy propagate|skip] [--samples S] [--mixed] [--placement]
//! ```
//!
//! `--mixed` times the mixed-precision kernel instead (`bench_mixed.rs`); `--placement` the
//! one-thread step with the arrays at different offsets within a page (`placement.rs`).
//!
//! (defaults: vsgd, 16M elements, the available parallelism, 1 tensor, f32, propagate, 25)
//!
//! For each algorithm it times, interleaved, the best of S samples (S/3 for the baseline):
//! - the **ceiling**: one in-place pass with the algorithm's memory traffic (reads the
//!   parameter, the gradient and the k state arrays; writes the parameter and the k arrays)
//!   and trivial arithmetic (`x ← x + g`), split over the same threads;
//! - the **algorithm**: `Optimizer::step` over K tensors totalling N elements (mixed sizes when
//!   K > 1), T threads;
//! - the **multi-pass baseline**: the update written the way the published PyTorch code is,
//!   one pass per tensor operation with temporaries, each pass split over the same threads
//!   (as torch's CPU kernels are).
//!
//! Bytes per element counted (f32; twice for f64): VSGD 36 (reads 5 arrays, writes 4),
//! Constant VSGD 28, Adam and AdamW 28 (reads 4, writes 3), SGDM 20 (reads 3, writes 2).
//! `gbps` is those bytes × N over the step's time; the finite-gradient scan of the default
//! `skip` policy reads the gradient once more and is not counted (`--policy propagate`, the
//! default here, leaves it out).
//!
//! `--json` prints
//! `{"elements": N, "threads": T, "tensors": K, "ceiling_gbps": x, "results": [{"algorithm":
//! "vsgd", "gbps": y, "ratio_to_ceiling": r, "ns_per_element": z, ...}, ...]}`; each result
//! also carries its own `ceiling_gbps`, `multipass_gbps`, `speedup_vs_multipass` and the
//! `kernel` path, and the top-level `ceiling_gbps` is the highest of the results' ceilings.
//! With K > 1 a result also has `time_vs_one_tensor`: the step's time over that of one tensor
//! of all N elements, timed interleaved in the same process.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use vsgd::kernels::threads::part_range;
use vsgd::kernels::KernelPath;

use crate::pool::Pool;
use vsgd::{Algorithm, Config, DType, Element, NonFinitePolicy, Optimizer, TensorSpec};

const USAGE: &str = "usage: vsgd bench [--json] [--algorithm NAME|all] [--elements N] \
[--threads T] [--tensors K] [--dtype f32|f64] [--policy propagate|skip] [--samples S] \
[--mixed] [--placement]";

pub(crate) struct Options {
    pub(crate) json: bool,
    mixed: bool,
    placement: bool,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) elements: usize,
    pub(crate) threads: usize,
    tensors: usize,
    dtype: DType,
    policy: NonFinitePolicy,
    pub(crate) samples: usize,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        json: false,
        mixed: false,
        placement: false,
        algorithms: vec![Algorithm::Vsgd],
        elements: 1 << 24,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        tensors: 1,
        dtype: DType::F32,
        policy: NonFinitePolicy::Propagate,
        samples: 25,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        // A whole number, optionally with K (2^10), M (2^20) or G (2^30).
        let number = |s: String, name: &str| -> Result<usize, String> {
            let t = s.replace('_', "");
            let (digits, unit) = match t.char_indices().last() {
                Some((i, 'K' | 'k')) => (&t[..i], 1usize << 10),
                Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
                Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
                _ => (&t[..], 1),
            };
            digits
                .parse::<usize>()
                .ok()
                .and_then(|v| v.checked_mul(unit))
                .ok_or_else(|| format!("{name}: not a whole number: {s}"))
        };
        match a.as_str() {
            "--json" => o.json = true,
            "--mixed" => o.mixed = true,
            "--placement" => o.placement = true,
            "--algorithm" => {
                let v = value("--algorithm")?;
                o.algorithms = if v == "all" {
                    Algorithm::ALL.to_vec()
                } else {
                    vec![Algorithm::from_name(&v)
                        .ok_or_else(|| format!("unknown algorithm '{v}'"))?]
                };
            }
            "--elements" => o.elements = number(value("--elements")?, "--elements")?,
            "--threads" => o.threads = number(value("--threads")?, "--threads")?.max(1),
            "--tensors" => o.tensors = number(value("--tensors")?, "--tensors")?.max(1),
            "--samples" => o.samples = number(value("--samples")?, "--samples")?.max(1),
            "--dtype" => {
                let v = value("--dtype")?;
                o.dtype = DType::from_name(&v).ok_or_else(|| format!("unknown dtype '{v}'"))?;
            }
            "--policy" => {
                let v = value("--policy")?;
                o.policy = NonFinitePolicy::from_name(&v)
                    .ok_or_else(|| format!("unknown policy '{v}'"))?;
            }
            other => return Err(format!("unknown option '{other}'\n{USAGE}")),
        }
    }
    // The data: param, grad and the state arrays, plus the ceiling kernel's and the
    // multi-pass baseline's copies: bound it well below what a machine can hold.
    if o.elements == 0 || o.elements > 1 << 28 {
        return Err(format!(
            "--elements must be in 1..={} (got {})",
            1u64 << 28,
            o.elements
        ));
    }
    if o.tensors > o.elements {
        return Err(format!(
            "--tensors ({}) must not exceed --elements ({})",
            o.tensors, o.elements
        ));
    }
    Ok(o)
}

/// Entry point of `vsgd bench`.
pub fn main(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    if o.mixed {
        return crate::bench_mixed::main(&o);
    }
    if o.placement {
        return crate::placement::main(&o);
    }
    let results: Vec<Measured> = o
        .algorithms
        .iter()
        .map(|&a| match o.dtype {
            DType::F32 => Ok(measure::<f32>(a, &o)),
            DType::F64 => Ok(measure::<f64>(a, &o)),
            d => Err(format!(
                "--dtype {}: 16-bit types run with --mixed",
                d.name()
            )),
        })
        .collect::<Result<_, _>>()?;
    let ceiling = results.iter().map(|m| m.ceiling_gbps).fold(0.0, f64::max);
    let kernel = KernelPath::active().name();
    if o.json {
        let rows: Vec<String> = results
            .iter()
            .map(|m| {
                format!(
                    "{{\"algorithm\": \"{}\", \"gbps\": {:.3}, \"ratio_to_ceiling\": {:.4}, \
                     \"ns_per_element\": {:.5}, \"ceiling_gbps\": {:.3}, \"multipass_gbps\": {:.3}, \
                     \"speedup_vs_multipass\": {:.3}, \"kernel\": \"{kernel}\"{}}}",
                    m.algorithm.name(),
                    m.gbps,
                    m.gbps / m.ceiling_gbps,
                    m.ns_per_element,
                    m.ceiling_gbps,
                    m.multipass_gbps,
                    m.speedup,
                    m.vs_one_tensor
                        .map(|r| format!(", \"time_vs_one_tensor\": {r:.4}"))
                        .unwrap_or_default(),
                )
            })
            .collect();
        println!(
            "{{\"elements\": {}, \"threads\": {}, \"tensors\": {}, \"ceiling_gbps\": {:.3}, \"results\": [{}]}}",
            o.elements,
            o.threads,
            o.tensors,
            ceiling,
            rows.join(", ")
        );
    } else {
        println!(
            "{} elements ({}), {} tensors, {} threads, kernel {kernel}, policy {}",
            o.elements,
            o.dtype.name(),
            o.tensors,
            o.threads,
            o.policy.name()
        );
        println!(
            "algorithm       B/elem   GB/s  ceiling  ratio  ns/elem  multipass  speedup{}",
            if o.tensors > 1 { "  vs 1 tensor" } else { "" }
        );
        for m in &results {
            println!(
                "{:<14} {:>6} {:>7.2} {:>8.2} {:>6.3} {:>8.4} {:>10.2} {:>8.2}{}",
                m.algorithm.name(),
                bytes_per_element(m.algorithm, o.dtype),
                m.gbps,
                m.ceiling_gbps,
                m.gbps / m.ceiling_gbps,
                m.ns_per_element,
                m.multipass_gbps,
                m.speedup,
                m.vs_one_tensor
                    .map(|r| format!(" {r:>12.3}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Bytes one step moves per element: reads param, grad and k state arrays, writes param and
/// the k arrays.
fn bytes_per_element(a: Algorithm, dtype: DType) -> usize {
    (3 + 2 * a.state_count()) * dtype.size()
}

struct Measured {
    algorithm: Algorithm,
    gbps: f64,
    ns_per_element: f64,
    ceiling_gbps: f64,
    multipass_gbps: f64,
    speedup: f64,
    /// K tensors' time over one tensor's of the same total size (K > 1).
    vs_one_tensor: Option<f64>,
}

/// K sizes, log-uniform between 1 and 1000 (relative), summing to `total`.
fn sizes(total: usize, k: usize) -> Vec<usize> {
    if k == 1 {
        return vec![total];
    }
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let w: Vec<f64> = (0..k)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1000f64.powf((x >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect();
    let sum: f64 = w.iter().sum();
    let mut s: Vec<usize> = w
        .iter()
        .map(|w| (total as f64 * w / sum) as usize)
        .collect();
    let mut rest = total - s.iter().sum::<usize>();
    for v in s.iter_mut() {
        if rest == 0 {
            break;
        }
        *v += 1;
        rest -= 1;
    }
    s
}

fn fill<T: Element>(n: usize, seed: u64, scale: f64) -> Vec<T> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            T::from_f64(((x >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * scale)
        })
        .collect()
}

/// Best time in seconds of `f` over interleaved samples, each long enough to time (≥ 0.3 ms)
/// and short enough that, on a busy machine, some samples run undisturbed.
pub(crate) struct Timer {
    reps: usize,
    pub(crate) best: f64,
}

impl Timer {
    pub(crate) fn new(f: &mut dyn FnMut()) -> Timer {
        f(); // warm up (pages touched, workers awake)
        let t = Instant::now();
        f();
        let once = t.elapsed().as_secs_f64().max(1e-9);
        Timer {
            reps: ((3e-4 / once).ceil() as usize).clamp(1, 100_000),
            best: f64::INFINITY,
        }
    }

    pub(crate) fn sample(&mut self, f: &mut dyn FnMut()) {
        let t = Instant::now();
        for _ in 0..self.reps {
            f();
        }
        self.best = self.best.min(t.elapsed().as_secs_f64() / self.reps as f64);
    }
}

fn measure<T: Element>(algorithm: Algorithm, o: &Options) -> Measured {
    let config = Config::default_for(algorithm);
    let k = algorithm.state_count();
    let sizes = sizes(o.elements, o.tensors);
    let n = o.elements;

    // The optimizer and its caller-owned buffers.
    let mut opt = Optimizer::new(config).expect("default configuration is valid");
    opt.set_threads(o.threads);
    opt.set_policy(o.policy);
    for &len in &sizes {
        opt.add_tensor(TensorSpec::new(&[len]).dtype(T::DTYPE))
            .expect("tensor fits");
    }
    let mut params: Vec<Vec<T>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &l)| fill(l, i as u64, 2.0))
        .collect();
    let grads: Vec<Vec<T>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &l)| fill(l, 99 + i as u64, 0.02))
        .collect();
    let mut p: Vec<&mut [T]> = params.iter_mut().map(|v| v.as_mut_slice()).collect();
    let g: Vec<&[T]> = grads.iter().map(|v| v.as_slice()).collect();
    // Past the first step (which uses the priors instead of the state).
    opt.step(&mut p, &g).expect("step");

    // Plain arrays of the same total size for the ceiling and the baseline.
    let mut pool = Pool::new(o.threads);
    let mut flat = Flat {
        param: fill(n, 1, 2.0),
        grad: fill(n, 2, 0.02),
        // Each state array 1 KiB further within its page than the one before (from 1 KiB after
        // where its allocation starts), as the optimizer places its own (`StateLayout` in the
        // library); the parameter and gradient where `malloc` puts them.
        state: (0..k)
            .map(|j| fill::<T>(n + 4096 / size_of::<T>(), 3 + j as u64, 0.02))
            .collect(),
        state_at: (0..k)
            .map(|j| (1024 * (j + 1) % 4096) / size_of::<T>())
            .collect(),
        temps: Vec::new(),
    };
    for s in flat.state.iter_mut().skip(1) {
        for x in s.iter_mut() {
            *x = T::from_f64(x.to_f64().abs() + 1e-4); // variances: positive
        }
    }
    let scalars = Baseline::<T>::new(&config);

    // With K > 1 tensors: the same step over one tensor of all N elements, for the ratio
    // of the two, measured interleaved in this process (cross-process timings on a shared
    // machine vary more than the effect).
    let mut one = (o.tensors > 1).then(|| {
        let mut opt1 = Optimizer::new(config).expect("valid");
        opt1.set_threads(o.threads);
        opt1.set_policy(o.policy);
        opt1.add_tensor(TensorSpec::new(&[n]).dtype(T::DTYPE))
            .expect("fits");
        let p1: Vec<T> = fill(n, 7, 2.0);
        let g1: Vec<T> = fill(n, 8, 0.02);
        (opt1, p1, g1)
    });

    // Ceiling and step interleaved, so that both see the same machine load.
    let (t_step, t_ceiling, t_one) = {
        let mut step = || {
            opt.step(&mut p, &g).expect("step");
        };
        let mut ceiling = || flat_ceiling(&mut pool, &mut flat);
        let mut step_one = || {
            if let Some((opt1, p1, g1)) = one.as_mut() {
                opt1.step(&mut [&mut p1[..]], &[&g1[..]]).expect("step");
            }
        };
        let mut t_step = Timer::new(&mut step);
        let mut t_ceiling = Timer::new(&mut ceiling);
        let mut t_one = Timer::new(&mut step_one);
        for _ in 0..o.samples {
            t_ceiling.sample(&mut ceiling);
            t_step.sample(&mut step);
            t_one.sample(&mut step_one);
        }
        (t_step, t_ceiling, t_one)
    };
    drop(one);
    let mut multipass = || multipass::<T>(&mut pool, &mut flat, &sizes, &scalars);
    let mut t_multi = Timer::new(&mut multipass);
    for _ in 0..o.samples.div_ceil(3) {
        t_multi.sample(&mut multipass);
    }

    let bytes = (bytes_per_element(algorithm, T::DTYPE) * n) as f64;
    let gbps = |t: f64| bytes / t / 1e9;
    Measured {
        algorithm,
        gbps: gbps(t_step.best),
        ns_per_element: t_step.best * 1e9 / n.max(1) as f64,
        ceiling_gbps: gbps(t_ceiling.best),
        multipass_gbps: gbps(t_multi.best),
        speedup: t_multi.best / t_step.best,
        vs_one_tensor: (o.tensors > 1).then(|| t_step.best / t_one.best),
    }
}

/// Arrays for the ceiling and the multi-pass baseline: one contiguous tensor per role.
struct Flat<T> {
    param: Vec<T>,
    grad: Vec<T>,
    state: Vec<Vec<T>>,
    /// Where in `state[j]` array `j` starts.
    state_at: Vec<usize>,
    temps: Vec<Vec<T>>,
}

impl<T> Flat<T> {
    fn state_ptrs(&mut self) -> Vec<Ptr<T>> {
        let at = &self.state_at;
        self.state
            .iter_mut()
            .zip(at)
            .map(|(v, &o)| Ptr(v[o..].as_mut_ptr()))
            .collect()
    }
}

/// A raw pointer shared with the pool's threads, each of which touches a disjoint range.
#[derive(Clone, Copy)]
pub(crate) struct Ptr<T>(pub(crate) *mut T);
// SAFETY: parts write disjoint ranges (see `par`).
unsafe impl<T> Send for Ptr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Ptr<T> {}

impl<T> Ptr<T> {
    /// # Safety
    /// `r` within the buffer; no other thread touches `r` meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, r: &Range<usize>) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(r.start), r.len())
    }
}

/// Runs `f` over `0..n` shared by the pool's threads the way the optimizer shares a step:
/// about 8 chunks per thread taken in turn (no thread below 32768 elements, torch's grain).
pub(crate) fn par(pool: &mut Pool, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    let threads = pool.threads().min(n / 32768).max(1);
    let chunks = if threads == 1 { 1 } else { threads * 8 };
    let next = AtomicUsize::new(0);
    let next = &next;
    pool.run(threads, &move |_| loop {
        let c = next.fetch_add(1, Ordering::Relaxed);
        if c >= chunks {
            break;
        }
        f(part_range(n, chunks, c));
    });
}

/// The ceiling: one in-place pass, the algorithm's reads and writes, `x ← x + g`.
fn flat_ceiling<T: Element>(pool: &mut Pool, f: &mut Flat<T>) {
    let n = f.param.len();
    let (p, g) = (Ptr(f.param.as_mut_ptr()), Ptr(f.grad.as_mut_ptr()));
    let s = f.state_ptrs();
    let s = &s;
    par(pool, n, &move |r| {
        // SAFETY: `par` gives each part its own range of these n-element buffers.
        unsafe {
            let (p, g) = (p.slice(&r), &*g.slice(&r));
            match s.len() {
                1 => ceiling_part(p, g, [s[0].slice(&r)]),
                2 => ceiling_part(p, g, [s[0].slice(&r), s[1].slice(&r)]),
                _ => ceiling_part(p, g, [s[0].slice(&r), s[1].slice(&r), s[2].slice(&r)]),
            }
        }
    });
}

/// `x ← x + g` for the parameter and every state array, in one pass (the kernels' access
/// pattern: all arrays streamed together), with the widest vectors this CPU has, so that
/// in-cache sizes compare the step with an equally vectorized pass.
fn ceiling_part<T: Element, const K: usize>(p: &mut [T], g: &[T], mut s: [&mut [T]; K]) {
    #[inline(always)]
    fn body<T: Element, const K: usize>(p: &mut [T], g: &[T], s: &mut [&mut [T]; K]) {
        if size_of::<T>() == 4 {
            stream_pass::<T, T, 16, K>(p, g, s, |x, g| x + g, |x, g| x + g)
        } else {
            stream_pass::<T, T, 8, K>(p, g, s, |x, g| x + g, |x, g| x + g)
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<T: Element, const K: usize>(p: &mut [T], g: &[T], s: &mut [&mut [T]; K]) {
        body(p, g, s)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<T: Element, const K: usize>(p: &mut [T], g: &[T], s: &mut [&mut [T]; K]) {
        body(p, g, s)
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512(p, g, &mut s) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2(p, g, &mut s) };
    }
    body(p, g, &mut s)
}

/// How far ahead the library's vector loops request each stream's cache line, in bytes (its
/// `kernels::simd::PREFETCH_AHEAD`). The ceilings do the same, so that they stay ceilings.
const PREFETCH_AHEAD: usize = 2048;

/// Prefetch hints for the `bytes` that start [`PREFETCH_AHEAD`] bytes past `p`, one per
/// 64-byte line (hints never fault).
#[inline(always)]
fn prefetch_ahead<T>(p: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..bytes).step_by(64) {
        // SAFETY: a prefetch is a hint that does not access memory; SSE is part of x86-64.
        #[allow(unused_unsafe)]
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_AHEAD + line))
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// The ceilings' pass: `p ← fp(p, g)` and `a ← fs(a, g)` for each state array, all streams
/// together, `L` elements at a time (each stream's block loaded whole, updated, stored: a
/// loop the compiler vectorizes), every stream's lines requested [`PREFETCH_AHEAD`] bytes
/// ahead as the kernels request them.
///
/// # Panics
/// If a buffer is shorter than `p`.
#[inline(always)]
pub(crate) fn stream_pass<P: Copy, X: Copy, const L: usize, const K: usize>(
    p: &mut [P],
    g: &[P],
    s: &mut [&mut [X]; K],
    fp: impl Fn(P, P) -> P,
    fs: impl Fn(X, P) -> X,
) {
    let n = p.len();
    let g = &g[..n];
    let mut s = s.each_mut().map(|a| &mut a[..n]);
    let (pc, _) = p.as_chunks_mut::<L>();
    let (gc, _) = g.as_chunks::<L>();
    let blocks = pc.len();
    {
        let mut sc = s.each_mut().map(|a| a.as_chunks_mut::<L>().0);
        for b in 0..blocks {
            prefetch_ahead(pc[b].as_ptr(), size_of::<[P; L]>());
            prefetch_ahead(gc[b].as_ptr(), size_of::<[P; L]>());
            for a in sc.iter() {
                prefetch_ahead(a[b].as_ptr(), size_of::<[X; L]>());
            }
            let gv = gc[b];
            let mut pv = pc[b];
            for i in 0..L {
                pv[i] = fp(pv[i], gv[i]);
            }
            pc[b] = pv;
            for a in sc.iter_mut() {
                let mut av = a[b];
                for i in 0..L {
                    av[i] = fs(av[i], gv[i]);
                }
                a[b] = av;
            }
        }
    }
    for i in blocks * L..n {
        p[i] = fp(p[i], g[i]);
        for a in s.iter_mut() {
            a[i] = fs(a[i], g[i]);
        }
    }
}

/// The kinds of elementwise pass a torch operation makes (each a separate, vectorizable loop
/// over `r`, split over the pool's threads): `out = f(a)`, `out = f(a, b)`, `x = f(x)`,
/// `x = f(x, a)`, `x = f(x, a, b)`. Buffers written are never among the ones read.
#[derive(Clone, Copy)]
enum Args<T> {
    Map(Ptr<T>, Ptr<T>),
    Zip(Ptr<T>, Ptr<T>, Ptr<T>),
    Update(Ptr<T>),
    Update2(Ptr<T>, Ptr<T>),
    Update3(Ptr<T>, Ptr<T>, Ptr<T>),
}

fn pass<T: Element, F: Fn(T, T, T) -> T + Sync>(
    pool: &mut Pool,
    r: Range<usize>,
    args: Args<T>,
    f: F,
) {
    let base = r.start;
    par(pool, r.len(), &move |part| {
        let r = base + part.start..base + part.end;
        let z = T::ZERO;
        // SAFETY: each part has its own range of every buffer; written buffers are distinct
        // from the buffers read (see `Args`), so the slices do not alias.
        unsafe {
            match args {
                Args::Map(o, a) => {
                    let (o, a) = (o.slice(&r), &*a.slice(&r));
                    for (o, &a) in o.iter_mut().zip(a) {
                        *o = f(a, z, z);
                    }
                }
                Args::Zip(o, a, b) => {
                    let (o, a, b) = (o.slice(&r), &*a.slice(&r), &*b.slice(&r));
                    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                        *o = f(a, b, z);
                    }
                }
                Args::Update(x) => {
                    for x in x.slice(&r) {
                        *x = f(*x, z, z);
                    }
                }
                Args::Update2(x, a) => {
                    let (x, a) = (x.slice(&r), &*a.slice(&r));
                    for (x, &a) in x.iter_mut().zip(a) {
                        *x = f(*x, a, z);
                    }
                }
                Args::Update3(x, a, b) => {
                    let (x, a, b) = (x.slice(&r), &*a.slice(&r), &*b.slice(&r));
                    for ((x, &a), &b) in x.iter_mut().zip(a).zip(b) {
                        *x = f(*x, a, b);
                    }
                }
            }
        }
    });
}

/// The scalars the published code computes for its second step (`t = 2`), from the
/// configuration as that code does: the multi-pass baseline's constants (only its time is
/// used, so they need only be the right kind of numbers: finite, no subnormals).
enum Baseline<T> {
    Vsgd(VsgdBase<T>),
    ConstantVsgd(ConstantVsgdBase<T>),
    Adam(AdamBase<T>),
    Sgdm(SgdmBase<T>),
}

/// VSGD (the authors' code): `pa2 = 2γ + 1 + 1e-4`, `pbg2 = 2γ`, `pbhg2 = 2·ghattg·γ`,
/// `ρᵢ = t^(−τᵢ)`.
struct VsgdBase<T> {
    inv_pa2: T,
    pbg2: T,
    pbhg2: T,
    rho1: T,
    omr1: T,
    rho2: T,
    omr2: T,
    eps: T,
    lr: T,
}

/// Constant VSGD: `pa2 = 2γ + 2`, `pb2 = 2γ`, `K = ghattg`, `ρ = t^(−τ)`.
struct ConstantVsgdBase<T> {
    inv_pa2: T,
    pb2: T,
    k: T,
    inv_k1: T,
    rho: T,
    omr: T,
    eps: T,
    lr: T,
}

/// torch's Adam/AdamW: `step_size = lr / (1 − β₁ᵗ)`, `bc2_sqrt = √(1 − β₂ᵗ)`.
struct AdamBase<T> {
    has_decay: bool,
    decay: T,
    omb1: T,
    beta2: T,
    omb2: T,
    step_size: T,
    bc2_sqrt: T,
    eps: T,
}

/// torch's SGD with momentum.
struct SgdmBase<T> {
    momentum: T,
    omd: T,
    lr: T,
}

impl<T: Element> Baseline<T> {
    fn new(config: &Config) -> Self {
        let t = 2.0f64;
        let r = T::from_f64;
        match *config {
            Config::Vsgd(c) => {
                let pa2 = 2.0 * c.ps + 1.0 + 1e-4;
                let (rho1, rho2) = (t.powf(-c.tau1), t.powf(-c.tau2));
                Baseline::Vsgd(VsgdBase {
                    inv_pa2: r(1.0 / pa2),
                    pbg2: r(2.0 * c.ps),
                    pbhg2: r(2.0 * c.ghattg * c.ps),
                    rho1: r(rho1),
                    omr1: r(1.0 - rho1),
                    rho2: r(rho2),
                    omr2: r(1.0 - rho2),
                    eps: r(c.eps),
                    lr: r(c.lr),
                })
            }
            Config::ConstantVsgd(c) => {
                let rho = t.powf(-c.tau);
                Baseline::ConstantVsgd(ConstantVsgdBase {
                    inv_pa2: r(1.0 / (2.0 * c.ps + 2.0)),
                    pb2: r(2.0 * c.ps),
                    k: r(c.ghattg),
                    inv_k1: r(1.0 / (c.ghattg + 1.0)),
                    rho: r(rho),
                    omr: r(1.0 - rho),
                    eps: r(c.eps),
                    lr: r(c.lr),
                })
            }
            Config::Adam(c) | Config::AdamW(c) => Baseline::Adam(AdamBase {
                has_decay: c.weight_decay != 0.0,
                decay: r(1.0 - c.lr * c.weight_decay),
                omb1: r(1.0 - c.beta1),
                beta2: r(c.beta2),
                omb2: r(1.0 - c.beta2),
                step_size: r(c.lr / (1.0 - c.beta1.powf(t))),
                bc2_sqrt: r((1.0 - c.beta2.powf(t)).sqrt()),
                eps: r(c.eps),
            }),
            Config::Sgdm(c) => Baseline::Sgdm(SgdmBase {
                momentum: r(c.momentum),
                omd: r(1.0 - c.dampening),
                lr: r(c.lr),
            }),
        }
    }
}

/// The update written as the published code writes it, one pass per tensor operation, tensor
/// by tensor, with temporaries. Times only; the values are not checked here.
fn multipass<T: Element>(pool: &mut Pool, f: &mut Flat<T>, sizes: &[usize], s: &Baseline<T>) {
    let n = f.param.len();
    while f.temps.len() < 8 {
        f.temps.push(vec![T::ZERO; n]);
    }
    let p = Ptr(f.param.as_mut_ptr());
    let g = Ptr(f.grad.as_mut_ptr());
    let st = f.state_ptrs();
    let t: Vec<Ptr<T>> = f.temps.iter_mut().map(|v| Ptr(v.as_mut_ptr())).collect();
    let mut start = 0;
    for &len in sizes {
        let r = start..start + len;
        start += len;
        // One operation = one monomorphized pass, like one torch kernel launch.
        macro_rules! map {
            ($o:expr, $a:expr, $f:expr) => {
                pass(pool, r.clone(), Args::Map($o, $a), $f)
            };
        }
        macro_rules! zip {
            ($o:expr, $a:expr, $b:expr, $f:expr) => {
                pass(pool, r.clone(), Args::Zip($o, $a, $b), $f)
            };
        }
        macro_rules! update {
            ($x:expr, $f:expr) => {
                pass(pool, r.clone(), Args::Update($x), $f)
            };
            ($x:expr, $a:expr, $f:expr) => {
                pass(pool, r.clone(), Args::Update2($x, $a), $f)
            };
            ($x:expr, $a:expr, $b:expr, $f:expr) => {
                pass(pool, r.clone(), Args::Update3($x, $a, $b), $f)
            };
        }
        match s {
            Baseline::Vsgd(s) => {
                // The authors' VSGD step (pa2, pbg2, pbhg2, rho as in the paper's code).
                let (mug, bg, bhg) = (st[0], st[1], st[2]);
                let (sg, shg, mug1, den, tmp, sigg, mug_sq, d) =
                    (t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
                let pa = s.inv_pa2;
                map!(sg, bg, |b, _, _| b * pa); // sg = bg / pa2
                map!(shg, bhg, |b, _, _| b * pa); // sghat = bhg / pa2
                map!(mug1, mug, |m, _, _| m); // mug1 = mug.clone()
                zip!(den, sg, shg, |a, b, _| a + b); // sg + sghat
                update!(mug, shg, |m, h, _| m * h); // mug.mul_(sghat)
                zip!(tmp, g, sg, |x, y, _| x * y); // grad * sg
                update!(mug, tmp, |m, x, _| m + x); // .add_(grad * sg)
                update!(mug, den, |m, x, _| m / x); // .div_(sg + sghat)
                zip!(sigg, sg, shg, |a, b, _| a * b); // sg * sghat
                update!(sigg, den, |a, b, _| a / b); // / (sg + sghat)
                map!(mug_sq, mug, |m, _, _| m * m); // mug ** 2
                update!(mug_sq, sigg, |a, b, _| a + b); // + sigg
                                                        // bg2 = pbg2 + mug_sq - 2 mug mug1 + mug1 ** 2
                let pbg2 = s.pbg2;
                map!(tmp, mug_sq, |a, _, _| a + pbg2);
                zip!(d, mug, mug1, |a, b, _| (a + a) * b);
                update!(tmp, d, |a, b, _| a - b);
                map!(d, mug1, |a, _, _| a * a);
                update!(tmp, d, |a, b, _| a + b);
                let (omr1, rho1) = (s.omr1, s.rho1);
                update!(bg, |a, _, _| a * omr1); // bg.mul_(1 - rho1)
                update!(bg, tmp, |a, b, _| a + rho1 * b); // .add_(bg2, alpha=rho1)
                                                          // bhg2 = pbhg2 + mug_sq - 2 grad mug + grad ** 2
                let pbhg2 = s.pbhg2;
                map!(tmp, mug_sq, |a, _, _| a + pbhg2);
                zip!(d, g, mug, |a, b, _| (a + a) * b);
                update!(tmp, d, |a, b, _| a - b);
                map!(d, g, |a, _, _| a * a);
                update!(tmp, d, |a, b, _| a + b);
                let (omr2, rho2) = (s.omr2, s.rho2);
                update!(bhg, |a, _, _| a * omr2);
                update!(bhg, tmp, |a, b, _| a + rho2 * b);
                // p.addcdiv_(mug, mug_sq.sqrt().add_(eps), value=-lr)
                let (eps, lr) = (s.eps, s.lr);
                map!(d, mug_sq, |a, _, _| a.sqrt());
                update!(d, |a, _, _| a + eps);
                update!(p, mug, d, |x, m, q| x - lr * (m / q));
            }
            Baseline::ConstantVsgd(s) => {
                // No published code: the same style as the authors' VSGD.
                let (mug, b) = (st[0], st[1]);
                let (v, mug1, tmp, var, mug_sq, d) = (t[0], t[1], t[2], t[3], t[4], t[5]);
                let (pa, kk, ik) = (s.inv_pa2, s.k, s.inv_k1);
                map!(v, b, |x, _, _| x * pa);
                map!(mug1, mug, |m, _, _| m);
                update!(mug, |m, _, _| m * kk);
                update!(mug, g, |m, x, _| m + x);
                update!(mug, |m, _, _| m * ik);
                map!(var, v, |x, _, _| x * ik);
                map!(mug_sq, mug, |m, _, _| m * m);
                update!(mug_sq, var, |a, x, _| a + x);
                zip!(tmp, mug, mug1, |a, x, _| a - x);
                update!(tmp, |a, _, _| a * a);
                update!(tmp, var, |a, x, _| (a + x) * kk);
                zip!(d, mug, g, |a, x, _| a - x);
                update!(d, |a, _, _| a * a);
                update!(tmp, d, |a, x, _| a + x);
                let pb2 = s.pb2;
                update!(tmp, var, |a, x, _| a + x + pb2);
                let (omr, rho) = (s.omr, s.rho);
                update!(b, |a, _, _| a * omr);
                update!(b, tmp, |a, x, _| a + rho * x);
                let (eps, lr) = (s.eps, s.lr);
                map!(d, mug_sq, |a, _, _| a.sqrt());
                update!(d, |a, _, _| a + eps);
                update!(p, mug, d, |x, m, q| x - lr * (m / q));
            }
            Baseline::Adam(s) => {
                // torch.optim.Adam / AdamW, single-tensor (non-foreach) path.
                let (m, v) = (st[0], st[1]);
                let (den, tmp) = (t[0], t[1]);
                if s.has_decay {
                    let decay = s.decay;
                    update!(p, |x, _, _| x * decay); // param.mul_(1 - lr * wd)
                }
                let omb1 = s.omb1;
                update!(m, g, |a, x, _| a + omb1 * (x - a)); // exp_avg.lerp_(grad, 1 - beta1)
                let (b2, omb2) = (s.beta2, s.omb2);
                update!(v, |a, _, _| a * b2); // exp_avg_sq.mul_(beta2)
                update!(v, g, |a, x, _| a + omb2 * x * x); // .addcmul_(grad, grad, 1 - beta2)
                let (bc2, eps, ss) = (s.bc2_sqrt, s.eps, s.step_size);
                map!(tmp, v, |a, _, _| a.sqrt()); // exp_avg_sq.sqrt()
                map!(den, tmp, |a, _, _| a / bc2); // / bias_correction2_sqrt
                update!(den, |a, _, _| a + eps); // .add_(eps)
                update!(p, m, den, |x, a, q| x - ss * (a / q)); // param.addcdiv_(exp_avg, denom, value=-step_size)
            }
            Baseline::Sgdm(s) => {
                // torch.optim.SGD with momentum.
                let buf = st[0];
                let (mu, omd, lr) = (s.momentum, s.omd, s.lr);
                update!(buf, |a, _, _| a * mu); // buf.mul_(momentum)
                update!(buf, g, |a, x, _| a + omd * x); // .add_(grad, alpha=1 - dampening)
                update!(p, buf, |x, b, _| x - lr * b); // param.add_(buf, alpha=-lr)
            }
        }
    }
}
