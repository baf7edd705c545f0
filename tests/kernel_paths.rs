//! Every kernel path this machine can run gives the bits of the portable path: every
//! algorithm, both element types, option sets, first and later steps, random state, and
//! lengths around every lane width and block size.
//!
//! Paths this machine cannot run are printed (to stderr, past the test harness's capture).
//! `VSGD_REQUIRE_PATHS=avx2,avx512` turns a missing path into a failure (for CI machines that
//! are known to have them), and a `VSGD_KERNEL` naming an unavailable path fails too, so a
//! forced run never silently falls back.

use std::io::Write;

use vsgd::kernels::{all_finite_on, apply_on, KernelPath, Scalars};
use vsgd::{Algorithm, Config, Element};

/// Lengths: 0, 1, every lane width (2, 4, 8, 16) ± 1, the finite-scan block (4 vectors:
/// 8, 16, 32, 64) ± 1, its early-exit chunk (16384) ± 1, and a large odd one.
fn lengths() -> Vec<usize> {
    let mut v = vec![0, 1];
    for w in [2usize, 4, 8, 16, 32, 64, 16384] {
        v.extend([w - 1, w, w + 1]);
    }
    v.extend([3 * 16384 + 67, 100_003]);
    v.sort_unstable();
    v.dedup();
    v
}

mod common;
use common::Rng;

impl Rng {
    /// A gradient-like value: mostly ordinary magnitudes, sometimes ±0, subnormal-small or
    /// huge, so that rounding, signed zeros and overflow paths are all exercised.
    fn value(&mut self) -> f64 {
        match self.next() % 16 {
            0 => 0.0,
            1 => -0.0,
            2 => self.unit() * 1e-40,
            3 => self.unit() * 1e30,
            _ => self.unit() * 10f64.powi((self.next() % 9) as i32 - 4),
        }
    }

    /// A positive state value (variances, second moments).
    fn positive(&mut self) -> f64 {
        self.unit().abs() * 10f64.powi((self.next() % 7) as i32 - 3) + 1e-12
    }
}

/// Same bits, except that any NaN matches any NaN (Rust, like IEEE-754 and WebAssembly,
/// leaves NaN payloads unspecified, even for scalar code).
fn same_bits<T: Element>(a: T, b: T) -> bool {
    let (a, b) = (a.to_f64(), b.to_f64());
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn first_difference<T: Element>(a: &[T], b: &[T]) -> Option<(usize, T, T)> {
    a.iter()
        .zip(b)
        .position(|(x, y)| !same_bits(*x, *y))
        .map(|i| (i, a[i], b[i]))
}

/// The shared helper: runs one step of `config` at step `t` on `n` random elements through
/// every available path and compares each with the portable path, bit for bit.
/// `nonfinite` puts NaN and ±∞ into the gradient (what `NonFinitePolicy::Propagate` lets
/// through). Returns the paths compared.
fn check_paths<T: Element>(config: &Config, t: u64, n: usize, seed: u64, nonfinite: bool) -> usize {
    let algorithm = config.algorithm();
    let k = algorithm.state_count();
    let mut rng = Rng(seed | 1);
    let param: Vec<T> = (0..n).map(|_| T::from_f64(rng.value())).collect();
    let mut grad: Vec<T> = (0..n).map(|_| T::from_f64(rng.value())).collect();
    if nonfinite {
        for (i, g) in grad.iter_mut().enumerate() {
            match rng.next() % 23 {
                0 => *g = T::from_f64(f64::NAN),
                1 => *g = T::from_f64(f64::INFINITY),
                2 => *g = T::from_f64(f64::NEG_INFINITY),
                _ if i % 97 == 5 => *g = T::from_f64(-f64::NAN),
                _ => {}
            }
        }
    }
    let names = algorithm.state_names();
    let state: Vec<Vec<T>> = names
        .iter()
        .map(|name| {
            (0..n)
                .map(|_| match (t, *name) {
                    (1, _) => T::ZERO, // state is zero before the first step
                    (_, "bg" | "bhg" | "b" | "v") => T::from_f64(rng.positive()),
                    _ => T::from_f64(rng.value()),
                })
                .collect()
        })
        .collect();
    let lr = config.lr() * (0.5 + 0.5 * rng.unit().abs());
    let s = Scalars::<T>::new(config, t, lr);

    let run = |path: KernelPath| -> Option<(Vec<T>, Vec<Vec<T>>)> {
        let mut p = param.clone();
        let mut st = state.clone();
        let mut refs: Vec<&mut [T]> = st.iter_mut().map(|v| v.as_mut_slice()).collect();
        assert_eq!(refs.len(), k);
        if !apply_on(path, &s, &mut p, &grad, &mut refs) {
            return None;
        }
        Some((p, st))
    };
    let (p_ref, st_ref) = run(KernelPath::Portable).expect("portable always runs");
    let finite_ref = all_finite_on(KernelPath::Portable, &grad).unwrap();
    let mut compared = 0;
    for path in KernelPath::ALL {
        if path == KernelPath::Portable {
            continue;
        }
        let Some((p, st)) = run(path) else { continue };
        compared += 1;
        let ctx = format!(
            "{} {:?} path {path} t={t} n={n} seed={seed} nonfinite={nonfinite} config={config:?}",
            algorithm.name(),
            T::DTYPE
        );
        if let Some((i, a, b)) = first_difference(&p, &p_ref) {
            panic!("param[{i}]: {a:?} vs portable {b:?} ({ctx})");
        }
        for (j, (x, y)) in st.iter().zip(&st_ref).enumerate() {
            if let Some((i, a, b)) = first_difference(x, y) {
                panic!("{}[{i}]: {a:?} vs portable {b:?} ({ctx})", names[j]);
            }
        }
        assert_eq!(
            all_finite_on(path, &grad),
            Some(finite_ref),
            "all_finite ({ctx})"
        );
    }
    compared
}

/// The option sets each algorithm is checked with.
fn configs(algorithm: Algorithm) -> Vec<Config> {
    let base = Config::default_for(algorithm);
    let with = |pairs: &[(&str, f64)]| {
        let mut c = base;
        for (name, value) in pairs {
            c.set(name, *value).unwrap();
        }
        c.validate().unwrap();
        c
    };
    let mut v = vec![
        base,
        with(&[("maximize", 1.0)]),
        with(&[("l2", 0.01)]),
        with(&[("weight_decay", 0.1)]),
        with(&[("maximize", 1.0), ("l2", 0.5), ("weight_decay", 0.01)]),
    ];
    if algorithm == Algorithm::Sgdm {
        v.push(with(&[("nesterov", 1.0)]));
        v.push(with(&[("nesterov", 1.0), ("maximize", 1.0), ("l2", 0.1)]));
        v.push(with(&[("dampening", 0.25), ("momentum", 0.5)]));
    }
    v
}

fn report_untested() {
    let missing: Vec<&str> = KernelPath::ALL
        .into_iter()
        .filter(|p| !p.is_available())
        .map(KernelPath::name)
        .collect();
    let tested: Vec<&str> = KernelPath::ALL
        .into_iter()
        .filter(|p| p.is_available())
        .map(KernelPath::name)
        .collect();
    // Straight to stderr, so the harness's capture does not hide it.
    let _ = writeln!(
        std::io::stderr(),
        "kernel paths tested against portable: {}; NOT tested on this machine: {}",
        tested.join(", "),
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        }
    );
}

#[test]
fn required_paths_are_present() {
    report_untested();
    if let Ok(list) = std::env::var("VSGD_REQUIRE_PATHS") {
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let path = KernelPath::from_name(name)
                .unwrap_or_else(|| panic!("VSGD_REQUIRE_PATHS names unknown path {name:?}"));
            assert!(
                path.is_available(),
                "required kernel path {name} is not available"
            );
        }
    }
    match KernelPath::requested() {
        None => {}
        Some(Ok(p)) => {
            assert!(p.is_available(), "VSGD_KERNEL={p} is not available here");
            assert_eq!(KernelPath::active(), p, "VSGD_KERNEL not honoured");
        }
        Some(Err(v)) => panic!("VSGD_KERNEL={v:?} names no kernel path"),
    }
}

#[test]
fn best_path_is_available_and_active_by_default() {
    let best = KernelPath::best();
    assert!(best.is_available());
    assert!(KernelPath::Portable.is_available());
    if KernelPath::requested().is_none() {
        assert_eq!(KernelPath::active(), best);
    }
    for p in KernelPath::ALL {
        assert_eq!(KernelPath::from_name(p.name()), Some(p));
        if p.is_available() {
            assert!(p.is_compiled());
        }
    }
}

fn check_algorithm<T: Element>(algorithm: Algorithm) {
    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ algorithm as u64;
    for config in configs(algorithm) {
        for t in [1u64, 2, 9] {
            for n in lengths() {
                seed = seed.wrapping_add(0x1234_5678_9ABC);
                check_paths::<T>(&config, t, n, seed, false);
            }
        }
        // Non-finite gradients, as `NonFinitePolicy::Propagate` lets them through.
        for n in [15usize, 64, 1001] {
            check_paths::<T>(&config, 3, n, seed ^ n as u64, true);
        }
    }
}

macro_rules! per_algorithm {
    ($($name:ident: $alg:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn f32_all_paths_match_portable() {
                check_algorithm::<f32>($alg);
            }
            #[test]
            fn f64_all_paths_match_portable() {
                check_algorithm::<f64>($alg);
            }
        }
    )*};
}

per_algorithm! {
    vsgd_: Algorithm::Vsgd;
    constant_vsgd_: Algorithm::ConstantVsgd;
    adam_: Algorithm::Adam;
    adamw_: Algorithm::AdamW;
    sgdm_: Algorithm::Sgdm;
}

#[test]
fn some_vector_path_was_compared_on_x86_64() {
    // Guards against a dispatcher that silently reports nothing available.
    if cfg!(target_arch = "x86_64") {
        let c = Config::default_for(Algorithm::Vsgd);
        assert!(check_paths::<f32>(&c, 2, 33, 7, false) >= 1);
    }
}

#[test]
fn all_finite_finds_one_bad_element_anywhere() {
    for path in KernelPath::ALL.into_iter().filter(|p| p.is_available()) {
        for n in [1usize, 17, 64, 65, 16384, 16385, 40_000] {
            let mut x = vec![1.5f32; n];
            let mut y = vec![-2.5f64; n];
            assert_eq!(all_finite_on(path, &x), Some(true));
            assert_eq!(all_finite_on(path, &y), Some(true));
            for pos in [0, n / 2, n - 1] {
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    x[pos] = bad as f32;
                    y[pos] = bad;
                    assert_eq!(
                        all_finite_on(path, &x),
                        Some(false),
                        "{path} n={n} pos={pos}"
                    );
                    assert_eq!(
                        all_finite_on(path, &y),
                        Some(false),
                        "{path} n={n} pos={pos}"
                    );
                    x[pos] = 1.5;
                    y[pos] = -2.5;
                }
            }
            // Extremes that are finite: the largest values and subnormals.
            x[n - 1] = f32::MAX;
            y[0] = -f64::MAX;
            x[0] = f32::from_bits(1);
            assert_eq!(all_finite_on(path, &x), Some(true));
            assert_eq!(all_finite_on(path, &y), Some(true));
        }
    }
}
