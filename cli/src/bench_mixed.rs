//! `vsgd bench --mixed`: the mixed-precision kernel (`vsgd::kernels::mixed`) against the
//! memory-bandwidth ceiling of its own bytes, in one process.
//!
//! For each algorithm, three storage recipes, each over one tensor of N elements split over T
//! threads (shards with their offsets, as a sharded caller would):
//! - `bf16+f32`: bfloat16 parameter and gradient, f32 state (2 + 2 read, 2 written, 4·k read
//!   and written per element: VSGD 30 bytes);
//! - `f16+f32`: the same with IEEE binary16;
//! - `bf16+bf16sr`: bfloat16 parameter, gradient and state, stochastic rounding (VSGD 18
//!   bytes).
//!
//! The ceiling is one in-place pass with the same reads and writes and trivial arithmetic
//! (integer adds on the 16-bit arrays, `x ← x + 1` on f32 state), split the same way.
//! `ratio` is the ceiling's time over the kernel's (1 = at memory speed).

use std::ops::Range;

use vsgd::kernels::mixed::{self, Bf16Sr, F32State, StateStorage, Storage};
use vsgd::kernels::{KernelPath, Scalars};
use vsgd::{bf16, f16, Algorithm, Config};

use crate::bench::{par, stream_pass, Options, Ptr, Timer};
use crate::pool::Pool;

/// One measured recipe.
struct Row {
    algorithm: Algorithm,
    recipe: &'static str,
    bytes: usize,
    gbps: f64,
    ceiling_gbps: f64,
}

/// Entry point of `vsgd bench --mixed`.
pub fn main(o: &Options) -> Result<(), String> {
    let mut pool = Pool::new(o.threads);
    let mut rows = Vec::new();
    for &a in &o.algorithms {
        rows.push(measure::<bf16, F32State>(
            a, o, &mut pool, F32State, "bf16+f32",
        ));
        rows.push(measure::<f16, F32State>(
            a, o, &mut pool, F32State, "f16+f32",
        ));
        let sr = Bf16Sr { seed: 1, offset: 0 };
        rows.push(measure::<bf16, Bf16Sr>(a, o, &mut pool, sr, "bf16+bf16sr"));
    }
    let kernel = KernelPath::active().name();
    if o.json {
        let r: Vec<String> = rows
            .iter()
            .map(|m| {
                format!(
                    "{{\"algorithm\": \"{}\", \"recipe\": \"{}\", \"bytes_per_element\": {}, \
                     \"gbps\": {:.3}, \"ceiling_gbps\": {:.3}, \"ratio_to_ceiling\": {:.4}, \
                     \"kernel\": \"{kernel}\"}}",
                    m.algorithm.name(),
                    m.recipe,
                    m.bytes,
                    m.gbps,
                    m.ceiling_gbps,
                    m.gbps / m.ceiling_gbps
                )
            })
            .collect();
        println!(
            "{{\"elements\": {}, \"threads\": {}, \"mixed\": [{}]}}",
            o.elements,
            o.threads,
            r.join(", ")
        );
    } else {
        println!(
            "vsgd bench --mixed: {} elements, {} threads, kernel {kernel}",
            o.elements, o.threads
        );
        println!("algorithm     recipe        B/elem   GB/s  ceiling  ratio");
        for m in &rows {
            println!(
                "{:<13} {:<13} {:>6} {:>6.1} {:>8.1} {:>6.3}",
                m.algorithm.name(),
                m.recipe,
                m.bytes,
                m.gbps,
                m.ceiling_gbps,
                m.gbps / m.ceiling_gbps
            );
        }
    }
    Ok(())
}

fn measure<P: Storage, S: StateStorage>(
    a: Algorithm,
    o: &Options,
    pool: &mut Pool,
    storage: S,
    recipe: &'static str,
) -> Row {
    let n = o.elements;
    let k = a.state_count();
    let config = Config::default_for(a);
    let lr = config.get("lr").unwrap_or(1e-3);
    let mut param: Vec<P> = (0..n)
        .map(|i| P::narrow(((i % 97) as f32 - 48.0) * 0.01))
        .collect();
    let grad: Vec<P> = (0..n)
        .map(|i| P::narrow(((i % 89) as f32 - 44.0) * 0.001))
        .collect();
    let mut state: Vec<Vec<S::Elem>> = (0..k).map(|_| vec![S::Elem::default(); n]).collect();
    let bytes = 3 * size_of::<P>() + 2 * k * size_of::<S::Elem>();
    // Step 2 onward: the steady state (t = 1 takes the first-step branch).
    let t = 2;
    let s = Scalars::<f32>::new(&config, t, lr);
    let p = Ptr(param.as_mut_ptr());
    let g = Ptr(grad.as_ptr() as *mut P);
    let st: Vec<Ptr<S::Elem>> = state.iter_mut().map(|v| Ptr(v.as_mut_ptr())).collect();
    let (st, s) = (&st, &s);
    let storage = &storage;
    let step = move |r: Range<usize>| {
        // SAFETY: `par` gives each part its own range of these n-element buffers.
        unsafe {
            let mut arrays: Vec<&mut [S::Elem]> = st.iter().map(|a| a.slice(&r)).collect();
            let shard = storage.at(r.start as u64);
            mixed::apply_mixed(s, t, p.slice(&r), g.slice(&r), &mut arrays, &shard)
        }
    };
    let ceiling = move |r: Range<usize>| {
        // SAFETY: as above.
        unsafe {
            let (p, g) = (p.slice(&r), &*g.slice(&r));
            ceiling_part::<P, S>(p, g, st, &r);
        }
    };
    let mut t_step = Timer::new(&mut || par(pool, n, &step));
    let mut t_ceiling = Timer::new(&mut || par(pool, n, &ceiling));
    for _ in 0..o.samples {
        t_step.sample(&mut || par(pool, n, &step));
        t_ceiling.sample(&mut || par(pool, n, &ceiling));
    }
    let gbps = |secs: f64| (bytes * n) as f64 / secs / 1e9;
    Row {
        algorithm: a,
        recipe,
        bytes,
        gbps: gbps(t_step.best),
        ceiling_gbps: gbps(t_ceiling.best),
    }
}

/// The ceiling's pass over one part: the 16-bit parameter `p ← p + g` (integer add on the
/// bits) and each state array `x ← x + 1` (f32) or `x ← x + g` (16-bit bits), all arrays
/// streamed together in one loop, as the kernel streams them.
///
/// # Safety
/// `st` points at arrays holding the range `r`, not touched by another thread meanwhile.
unsafe fn ceiling_part<P: Storage, S: StateStorage>(
    p: &mut [P],
    g: &[P],
    st: &[Ptr<S::Elem>],
    r: &Range<usize>,
) {
    assert_eq!(size_of::<P>(), 2);
    let p = std::slice::from_raw_parts_mut(p.as_mut_ptr() as *mut u16, p.len());
    let g = std::slice::from_raw_parts(g.as_ptr() as *const u16, g.len());
    if size_of::<S::Elem>() == 4 {
        let a =
            |j: usize| std::slice::from_raw_parts_mut(st[j].0.add(r.start) as *mut f32, r.len());
        match st.len() {
            1 => pass(p, g, [a(0)], |x: f32, _| x + 1.0),
            2 => pass(p, g, [a(0), a(1)], |x: f32, _| x + 1.0),
            _ => pass(p, g, [a(0), a(1), a(2)], |x: f32, _| x + 1.0),
        }
    } else {
        let a =
            |j: usize| std::slice::from_raw_parts_mut(st[j].0.add(r.start) as *mut u16, r.len());
        match st.len() {
            1 => pass(p, g, [a(0)], u16::wrapping_add),
            2 => pass(p, g, [a(0), a(1)], u16::wrapping_add),
            _ => pass(p, g, [a(0), a(1), a(2)], u16::wrapping_add),
        }
    }
}

/// One loop over the elements touching the parameter and the `K` state arrays.
///
/// With AVX-512F or AVX2 where the CPU has it (as the fused kernel), the lengths checked once so that the
/// loop vectorizes, and the same prefetches as the kernel.
fn pass<X: Copy, const K: usize>(
    p: &mut [u16],
    g: &[u16],
    mut s: [&mut [X]; K],
    f: impl Fn(X, u16) -> X,
) {
    #[inline(always)]
    fn body<X: Copy, const K: usize>(
        p: &mut [u16],
        g: &[u16],
        s: &mut [&mut [X]; K],
        f: &impl Fn(X, u16) -> X,
    ) {
        stream_pass::<u16, X, 32, K>(p, g, s, u16::wrapping_add, f)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<X: Copy, const K: usize>(
        p: &mut [u16],
        g: &[u16],
        s: &mut [&mut [X]; K],
        f: &impl Fn(X, u16) -> X,
    ) {
        body(p, g, s, f)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<X: Copy, const K: usize>(
        p: &mut [u16],
        g: &[u16],
        s: &mut [&mut [X]; K],
        f: &impl Fn(X, u16) -> X,
    ) {
        body(p, g, s, f)
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512(p, g, &mut s, &f) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2(p, g, &mut s, &f) };
    }
    body(p, g, &mut s, &f)
}
