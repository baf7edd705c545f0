//! `vsgd bench --placement`: how much the relative placement of the arrays within a 4 KiB page
//! changes the time of one step on one thread (the 4K-aliasing question of docs/performance.md).
//!
//! Every array (parameter, gradient, each state array) is one `f32` buffer of N elements cut
//! from an allocation one page larger, so its start can be put at any offset within a page.
//! The step is the stateless kernel (`vsgd::kernels::step`, the one-thread path of
//! `Optimizer::step`) on the calling thread. Layouts, each timed interleaved with the others
//! (best of S samples):
//! - `same`: every array at the same offset in its page (16 bytes, what glibc's `malloc`
//!   gives every large allocation, so what a user's `Vec`s or tensors get);
//! - `grad+D`: the gradient D bytes further on than the others;
//! - `stagger`: array j at j × 512 bytes (every array on its own part of the page);
//! - `state-stagger`: parameter and gradient as `same`, state array i at i × 1024 bytes
//!   further (what the optimizer can do with the arrays it allocates itself);
//! - `stagger64`: array j at j × 64 bytes (one cache line apart);
//! - `optimizer`: `Optimizer::step_tensor` on one thread with the parameter and gradient as in
//!   `same`, and the state where the optimizer places it (`StateLayout`: staggered).

use std::time::Instant;

use vsgd::kernels::{self, NonFinitePolicy};
use vsgd::{Config, Optimizer, TensorSpec};

use crate::bench::Options;

/// One page-offsettable buffer.
struct Buf {
    data: Vec<f32>,
}

impl Buf {
    fn new(n: usize, value: f32) -> Buf {
        Buf {
            data: vec![value; n + 1024],
        }
    }

    /// The N elements starting `offset` bytes (a multiple of 4) into a page.
    fn at(&mut self, n: usize, offset: usize) -> &mut [f32] {
        let addr = self.data.as_ptr() as usize;
        let skip = ((offset + 4096 - addr % 4096) % 4096) / 4;
        &mut self.data[skip..skip + n]
    }
}

/// The layouts: a name and each array's offset in its page (parameter, gradient, state...).
fn layouts(k: usize) -> Vec<(String, Vec<usize>)> {
    let arrays = 2 + k;
    let mut v = vec![("same".to_string(), vec![16; arrays])];
    for d in [64usize, 256, 1024, 2048] {
        let mut o = vec![16; arrays];
        o[1] = 16 + d;
        v.push((format!("grad+{d}"), o));
    }
    v.push((
        "stagger".to_string(),
        (0..arrays).map(|j| 16 + 512 * j).collect(),
    ));
    // The caller's parameter and gradient where malloc puts them, the state staggered (what
    // the optimizer can do with the arrays it allocates itself).
    v.push((
        "state-stagger".to_string(),
        (0..arrays)
            .map(|j| if j < 2 { 16 } else { 16 + 1024 * (j - 1) })
            .collect(),
    ));
    v.push((
        "stagger64".to_string(),
        (0..arrays).map(|j| 16 + 64 * j).collect(),
    ));
    v
}

/// Entry point of `vsgd bench --placement`.
pub fn main(o: &Options) -> Result<(), String> {
    let n = o.elements;
    println!(
        "vsgd bench --placement: {n} elements (f32), 1 thread, kernel {}; ns per element, best of {}",
        kernels::KernelPath::active().name(),
        o.samples
    );
    println!(
        "{:<14} {:>14} {:>10} {:>8}",
        "algorithm", "layout", "ns/elem", "vs same"
    );
    for &a in &o.algorithms {
        let config = Config::default_for(a);
        let k = a.state_count();
        let mut bufs: Vec<Buf> = (0..2 + k)
            .map(|j| Buf::new(n, if j == 1 { 0.01 } else { 0.1 }))
            .collect();
        let mut layouts = layouts(k);
        let mut opt = Optimizer::new(config).map_err(|e| e.to_string())?;
        opt.set_threads(1);
        opt.set_policy(NonFinitePolicy::Propagate);
        let id = opt
            .add_tensor(TensorSpec::new(&[n]))
            .map_err(|e| e.to_string())?;
        layouts.push(("optimizer".to_string(), vec![16, 16]));
        let mut best = vec![f64::INFINITY; layouts.len()];
        for round in 0..=o.samples {
            // A different layout first in each round, so none is always timed first.
            for i in 0..layouts.len() {
                let l = (i + round) % layouts.len();
                let offsets = &layouts[l].1;
                if layouts[l].0 == "optimizer" {
                    let (head, tail) = bufs.split_at_mut(1);
                    let (p, g) = (head[0].at(n, 16), tail[0].at(n, 16));
                    let t = Instant::now();
                    opt.step_tensor(id, p, g).map_err(|e| e.to_string())?;
                    // Round 0 only warms up (the optimizer's first step uses the priors).
                    if round > 0 {
                        best[l] = best[l].min(t.elapsed().as_secs_f64());
                    }
                    continue;
                }
                let mut slices: Vec<&mut [f32]> = bufs
                    .iter_mut()
                    .zip(offsets)
                    .map(|(b, &off)| b.at(n, off))
                    .collect();
                let (head, state) = slices.split_at_mut(2);
                let (p, g) = head.split_at_mut(1);
                let t = Instant::now();
                kernels::step(
                    &config,
                    2,
                    config.lr(),
                    p[0],
                    g[0],
                    state,
                    NonFinitePolicy::Propagate,
                )
                .map_err(|e| e.to_string())?;
                if round > 0 {
                    best[l] = best[l].min(t.elapsed().as_secs_f64());
                }
            }
        }
        for ((name, _), &t) in layouts.iter().zip(&best) {
            println!(
                "{:<14} {:>14} {:>10.4} {:>8.3}",
                a.name(),
                name,
                t * 1e9 / n as f64,
                t / best[0]
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{layouts, Buf};

    #[test]
    fn buffers_start_where_asked() {
        let mut b = Buf::new(1000, 0.0);
        for off in [0usize, 16, 64, 2048, 4092] {
            let s = b.at(1000, off);
            assert_eq!(s.as_ptr() as usize % 4096, off);
            assert_eq!(s.len(), 1000);
        }
        let l = layouts(3);
        assert!(l.iter().all(|(_, o)| o.len() == 5));
        assert_eq!(l[0].1, vec![16; 5]);
    }
}
