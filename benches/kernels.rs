//! `cargo bench --bench kernels`: the optimizer step per algorithm, size and thread count;
//! every kernel path on one in-cache tensor; one tensor against 1,000 of the same total size;
//! the finite-gradient scan. Throughput is the algorithm's own memory traffic (see
//! docs/performance.md: 36 B per f32 element for VSGD, 28 for Constant VSGD and Adam, 20 for
//! SGDM). `vsgd bench --json` reports the same step against the bandwidth ceiling.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vsgd::kernels::{all_finite_on, apply_on, KernelPath, Scalars};
use vsgd::{Algorithm, Config, NonFinitePolicy, Optimizer, TensorSpec};

fn bytes(a: Algorithm) -> u64 {
    (3 + 2 * a.state_count() as u64) * 4
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect()
}

/// An optimizer over `sizes`, past its first step, with its buffers.
struct Setup {
    opt: Optimizer,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

impl Setup {
    fn new(a: Algorithm, sizes: &[usize], threads: usize) -> Setup {
        let mut opt = Optimizer::new(Config::default_for(a)).unwrap();
        opt.set_threads(threads);
        opt.set_policy(NonFinitePolicy::Propagate);
        for &n in sizes {
            opt.add_tensor(TensorSpec::new(&[n])).unwrap();
        }
        let params = sizes.iter().map(|&n| values(n, 1)).collect();
        let grads = sizes.iter().map(|&n| values(n, 2)).collect();
        let mut s = Setup { opt, params, grads };
        s.step();
        s
    }

    fn step(&mut self) {
        let mut p: Vec<&mut [f32]> = self.params.iter_mut().map(|v| v.as_mut_slice()).collect();
        let g: Vec<&[f32]> = self.grads.iter().map(|v| v.as_slice()).collect();
        self.opt.step(&mut p, &g).unwrap();
    }
}

fn step(c: &mut Criterion) {
    for a in Algorithm::ALL {
        let mut group = c.benchmark_group(format!("step/{}", a.name()));
        for n in [1usize << 12, 1 << 20, 1 << 24] {
            group.throughput(Throughput::Bytes(bytes(a) * n as u64));
            group.sample_size(if n >= 1 << 24 { 10 } else { 30 });
            for threads in [1usize, 2] {
                let mut s = Setup::new(a, &[n], threads);
                group.bench_function(BenchmarkId::new(format!("{threads}t"), n), |b| {
                    b.iter(|| s.step())
                });
            }
        }
        group.finish();
    }
}

fn paths(c: &mut Criterion) {
    // 64K elements: in cache, so the kernels' own speed shows.
    let n = 1usize << 16;
    for a in Algorithm::ALL {
        let mut group = c.benchmark_group(format!("path/{}", a.name()));
        group.throughput(Throughput::Bytes(bytes(a) * n as u64));
        let config = Config::default_for(a);
        let s = Scalars::<f32>::new(&config, 2, config.lr());
        let (mut p, g) = (values(n, 1), values(n, 2));
        let mut state: Vec<Vec<f32>> = (0..a.state_count())
            .map(|j| values(n, 3 + j as u32))
            .collect();
        for path in KernelPath::ALL.into_iter().filter(|p| p.is_available()) {
            group.bench_function(path.name(), |b| {
                b.iter(|| {
                    let mut st: Vec<&mut [f32]> =
                        state.iter_mut().map(|v| v.as_mut_slice()).collect();
                    apply_on(path, &s, &mut p, &g, &mut st);
                })
            });
        }
        group.finish();
    }
}

fn tensors(c: &mut Criterion) {
    // 16M elements in one tensor or in 1,000 of mixed sizes, 2 threads.
    let total = 1usize << 24;
    let mut sizes: Vec<usize> = (0..1000).map(|i| 1 + (i * 7919) % 32768).collect();
    let sum: usize = sizes.iter().sum();
    sizes[0] += total - sum;
    let mut group = c.benchmark_group("tensors/vsgd");
    group.throughput(Throughput::Bytes(bytes(Algorithm::Vsgd) * total as u64));
    group.sample_size(10);
    for (name, sizes) in [("1x16M", vec![total]), ("1000x16M", sizes)] {
        let mut s = Setup::new(Algorithm::Vsgd, &sizes, 2);
        group.bench_function(name, |b| b.iter(|| s.step()));
    }
    group.finish();
}

fn finite(c: &mut Criterion) {
    let n = 1usize << 20;
    let x = values(n, 5);
    let mut group = c.benchmark_group("all_finite");
    group.throughput(Throughput::Bytes(4 * n as u64));
    for path in KernelPath::ALL.into_iter().filter(|p| p.is_available()) {
        group.bench_function(path.name(), |b| {
            b.iter(|| all_finite_on(path, black_box(&x)))
        });
    }
    group.finish();
}

criterion_group!(benches, paths, finite, step, tensors);
criterion_main!(benches);
