//! Multi-threaded steps: the same bits for every thread count (large tensors split, small ones
//! batched), the check-everything-first contract, and the worker pool's own behaviour.

use vsgd::kernels::threads::part_range;
use vsgd::kernels::{self, Scalars};
use vsgd::{Algorithm, Config, Error, NonFinitePolicy, Optimizer, TensorSpec};

/// Sizes mixing one tensor big enough to be split (several MiB of traffic) with many small
/// and odd ones, empty ones included.
fn sizes() -> Vec<usize> {
    let mut v = vec![300_001, 0, 1, 7, 16, 17, 65, 1000, 40_000, 4097, 0, 123_457];
    v.extend((0..40).map(|i| 1 + i * 37 % 513));
    v
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

/// Runs `steps` steps of `config` over `sizes()` with `threads` threads; the gradient of
/// tensor 3 holds a NaN at step 2 (skipped under the default policy). Returns parameters and
/// every state array.
fn run(config: Config, threads: usize, steps: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut opt = Optimizer::new(config).unwrap();
    opt.set_threads(threads);
    assert!(opt.threads() == threads || threads == 0);
    let sizes = sizes();
    for &n in &sizes {
        opt.add_tensor(TensorSpec::new(&[n])).unwrap();
    }
    let mut params: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| values(n, i as u64))
        .collect();
    for step in 1..=steps {
        let mut grads: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| values(n, 1000 * step + i as u64))
            .collect();
        if step == 2 {
            grads[3][5] = f32::NAN;
        }
        let mut p: Vec<&mut [f32]> = params.iter_mut().map(|v| v.as_mut_slice()).collect();
        let g: Vec<&[f32]> = grads.iter().map(|v| v.as_slice()).collect();
        let report = opt.step(&mut p, &g).unwrap();
        assert_eq!(report.skipped, usize::from(step == 2));
    }
    assert_eq!(opt.step_count(vsgd::TensorId(3)).unwrap(), steps - 1);
    let mut state = Vec::new();
    for i in 0..sizes.len() {
        for name in config.algorithm().state_names() {
            state.push(opt.state::<f32>(vsgd::TensorId(i), name).unwrap().to_vec());
        }
    }
    (params, state)
}

fn bits(x: &[Vec<f32>]) -> Vec<Vec<u32>> {
    x.iter()
        .map(|v| v.iter().map(|f| f.to_bits()).collect())
        .collect()
}

#[test]
fn every_thread_count_gives_the_same_bits_as_the_portable_path() {
    for algorithm in Algorithm::ALL {
        let mut config = Config::default_for(algorithm);
        config.set("weight_decay", 0.01).unwrap();
        // Reference: the portable kernel, tensor by tensor, no threads.
        let (ref_p, ref_s) = {
            let sizes = sizes();
            let mut params: Vec<Vec<f32>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| values(n, i as u64))
                .collect();
            let k = algorithm.state_count();
            let mut state: Vec<Vec<Vec<f32>>> =
                sizes.iter().map(|&n| vec![vec![0.0; n]; k]).collect();
            let mut counts = vec![0u64; sizes.len()];
            for step in 1..=3u64 {
                for (i, &n) in sizes.iter().enumerate() {
                    let g = values(n, 1000 * step + i as u64);
                    if step == 2 && i == 3 {
                        continue; // the NaN gradient is skipped
                    }
                    counts[i] += 1;
                    let s = Scalars::<f32>::new(&config, counts[i], config.lr());
                    let mut arrays: Vec<&mut [f32]> =
                        state[i].iter_mut().map(|v| v.as_mut_slice()).collect();
                    kernels::portable::apply(&s, &mut params[i], &g, &mut arrays);
                }
            }
            (params, state.into_iter().flatten().collect::<Vec<_>>())
        };
        for threads in [1, 2, 3, 4, 7] {
            let (p, s) = run(config, threads, 3);
            assert!(
                bits(&p) == bits(&ref_p),
                "{} params, {threads} threads",
                algorithm.name()
            );
            assert!(
                bits(&s) == bits(&ref_s),
                "{} state, {threads} threads",
                algorithm.name()
            );
        }
    }
}

#[test]
fn error_policy_changes_nothing_when_any_gradient_is_bad() {
    let mut opt = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
    opt.set_threads(3);
    opt.set_policy(NonFinitePolicy::Error);
    let sizes = [200_000usize, 10, 300_000];
    for &n in &sizes {
        opt.add_tensor(TensorSpec::new(&[n])).unwrap();
    }
    let mut params: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, n as u64)).collect();
    let mut grads: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 7 + n as u64)).collect();
    grads[2][299_999] = f32::INFINITY;
    let before = params.clone();
    let mut p: Vec<&mut [f32]> = params.iter_mut().map(|v| v.as_mut_slice()).collect();
    let g: Vec<&[f32]> = grads.iter().map(|v| v.as_slice()).collect();
    assert_eq!(
        opt.step(&mut p, &g),
        Err(Error::NonFiniteGradient { tensor: 2 })
    );
    assert!(bits(&params) == bits(&before));
    for i in 0..3 {
        assert_eq!(opt.step_count(vsgd::TensorId(i)).unwrap(), 0);
        assert!(opt
            .state::<f32>(vsgd::TensorId(i), "bg")
            .unwrap()
            .iter()
            .all(|x| *x == 0.0));
    }
}

#[test]
fn earlier_bad_gradient_is_reported_before_a_later_length_error() {
    let mut opt = Optimizer::new(Config::default_for(Algorithm::Adam)).unwrap();
    opt.set_policy(NonFinitePolicy::Error);
    opt.add_tensor(TensorSpec::new(&[4])).unwrap();
    opt.add_tensor(TensorSpec::new(&[4])).unwrap();
    let (mut a, mut b) = ([0.0f32; 4], [0.0f32; 3]);
    let ga = [1.0, f32::NAN, 0.0, 0.0];
    let gb = [0.0f32; 3];
    let r = opt.step(&mut [&mut a[..], &mut b[..]], &[&ga[..], &gb[..]]);
    assert_eq!(r, Err(Error::NonFiniteGradient { tensor: 0 }));
    opt.set_policy(NonFinitePolicy::Skip);
    let r = opt.step(&mut [&mut a[..], &mut b[..]], &[&ga[..], &gb[..]]);
    assert!(matches!(r, Err(Error::LengthMismatch { .. })), "{r:?}");
}

#[test]
fn step_tensor_splits_a_large_tensor_with_the_same_bits() {
    let n = 1_000_003;
    let config = Config::default_for(Algorithm::Vsgd);
    let mut results = Vec::new();
    for threads in [1, 2, 5] {
        let mut opt = Optimizer::new(config).unwrap();
        opt.set_threads(threads);
        let id = opt.add_tensor(TensorSpec::new(&[n])).unwrap();
        let mut p = values(n, 1);
        for step in 0..3 {
            let g = values(n, 2 + step);
            opt.step_tensor(id, &mut p, &g).unwrap();
        }
        results.push(p.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }
    assert!(results[0] == results[1] && results[0] == results[2]);
}

#[test]
fn part_ranges_cover_everything_in_order() {
    for total in [0usize, 1, 63, 64, 65, 1000, 1 << 20, 12_345_678] {
        for parts in 1..=9 {
            let mut next = 0;
            for k in 0..parts {
                let r = part_range(total, parts, k);
                assert_eq!(r.start, next);
                assert!(r.end >= r.start);
                if k + 1 < parts {
                    assert_eq!(r.end % 64, 0);
                }
                next = r.end;
            }
            assert_eq!(next, total);
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn dropping_the_optimizer_joins_its_workers() {
    // Other tests in this binary run concurrently with at most 7 threads (worker indices up
    // to 6): count only workers 7 to 11, which only this optimizer has.
    let high = || -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
            .filter_map(|c| c.trim().strip_prefix("vsgd-worker-")?.parse::<usize>().ok())
            .filter(|&i| i >= 7)
            .count()
    };
    // A new thread names itself once it runs, and a joined one disappears: poll briefly.
    let wait_for = |want: usize| {
        for _ in 0..200 {
            if high() == want {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    };
    assert!(wait_for(0));
    let mut opt = Optimizer::new(Config::default_for(Algorithm::Sgdm)).unwrap();
    opt.set_threads(12);
    assert_eq!(opt.threads(), 12);
    assert!(wait_for(5), "workers 7..=11 started");
    drop(opt);
    // `drop` joined them (the kernel may list an exited thread for a moment longer).
    assert!(wait_for(0), "workers joined");
}

#[test]
fn groups_and_uneven_step_counts_get_their_own_constants() {
    // Tensors alternate between two groups (different lr), and tensor 1 skips a step, so
    // neighbouring tensors differ in group and step number: each must get its own constants.
    let base = Config::default_for(Algorithm::Vsgd);
    let mut other = base;
    other.set("lr", 0.025).unwrap();
    let mut opt = Optimizer::new(base).unwrap();
    let g1 = opt.add_group(other).unwrap();
    let n = 100;
    let shape = [n];
    for i in 0..6 {
        let spec = TensorSpec::new(&shape);
        opt.add_tensor(if i % 2 == 1 { spec.group(g1) } else { spec })
            .unwrap();
    }
    let mut params: Vec<Vec<f32>> = (0..6).map(|i| values(n, i)).collect();
    let mut reference = params.clone();
    let mut state: Vec<Vec<Vec<f32>>> = (0..6).map(|_| vec![vec![0.0; n]; 3]).collect();
    let mut counts = [0u64; 6];
    for step in 1..=3u64 {
        let mut grads: Vec<Vec<f32>> = (0..6).map(|i| values(n, 50 * step + i)).collect();
        if step == 1 {
            grads[1][0] = f32::NAN;
        }
        let mut p: Vec<&mut [f32]> = params.iter_mut().map(|v| v.as_mut_slice()).collect();
        let g: Vec<&[f32]> = grads.iter().map(|v| v.as_slice()).collect();
        opt.step(&mut p, &g).unwrap();
        for i in 0..6 {
            if step == 1 && i == 1 {
                continue;
            }
            counts[i] += 1;
            let config = if i % 2 == 1 { other } else { base };
            let mut arrays: Vec<&mut [f32]> =
                state[i].iter_mut().map(|v| v.as_mut_slice()).collect();
            kernels::step(
                &config,
                counts[i],
                config.lr(),
                &mut reference[i],
                &grads[i],
                &mut arrays,
                NonFinitePolicy::Propagate,
            )
            .unwrap();
        }
    }
    assert!(bits(&params) == bits(&reference));
}
