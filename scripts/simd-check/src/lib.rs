//! Bit-identity of the wasm32 simd128 kernels against the portable ones, run inside
//! WebAssembly (see Cargo.toml). `check()` returns 0 when every comparison agrees, the number
//! of disagreements otherwise, and `u32::MAX` when the simd128 path was not built in.
#![no_std]

use vsgd::kernels::{all_finite_on, apply_on, KernelPath, Scalars};
use vsgd::{Algorithm, Config, Element};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

const MAX: usize = 1031;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn value(&mut self) -> f64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        match self.next() % 8 {
            0 => 0.0,
            1 => -0.0,
            2 => u * 1e-40,
            _ => u * 4.0,
        }
    }
}

fn same<T: Element>(a: T, b: T) -> bool {
    let (a, b) = (a.to_f64(), b.to_f64());
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// One comparison; returns the number of differing elements (all arrays).
fn compare<T: Element>(config: &Config, t: u64, n: usize, seed: u64) -> u32 {
    let k = config.algorithm().state_count();
    let mut rng = Rng(seed | 1);
    let mut p = [T::ZERO; MAX];
    let mut g = [T::ZERO; MAX];
    let mut s = [[T::ZERO; MAX]; 3];
    for i in 0..n {
        p[i] = T::from_f64(rng.value());
        g[i] = T::from_f64(rng.value());
        for a in s.iter_mut() {
            a[i] = if t == 1 {
                T::ZERO
            } else {
                T::from_f64(rng.value().abs() + 1e-3)
            };
        }
    }
    let (mut p2, mut s2) = (p, s);
    let sc = Scalars::<T>::new(config, t, config.lr());
    let run = |path: KernelPath, p: &mut [T; MAX], s: &mut [[T; MAX]; 3]| {
        let [a, b, c] = s;
        let (a, b, c) = (&mut a[..n], &mut b[..n], &mut c[..n]);
        match k {
            1 => apply_on(path, &sc, &mut p[..n], &g[..n], &mut [a]),
            2 => apply_on(path, &sc, &mut p[..n], &g[..n], &mut [a, b]),
            _ => apply_on(path, &sc, &mut p[..n], &g[..n], &mut [a, b, c]),
        }
    };
    run(KernelPath::Portable, &mut p, &mut s);
    run(KernelPath::Simd128, &mut p2, &mut s2);
    let mut bad = 0;
    for i in 0..n {
        bad += u32::from(!same(p[i], p2[i]));
        for j in 0..k {
            bad += u32::from(!same(s[j][i], s2[j][i]));
        }
    }
    if all_finite_on(KernelPath::Simd128, &g[..n]) != all_finite_on(KernelPath::Portable, &g[..n]) {
        bad += 1;
    }
    bad
}

fn configs(a: Algorithm) -> [Config; 3] {
    let base = Config::default_for(a);
    let mut m = base;
    let _ = m.set("maximize", 1.0);
    let _ = m.set("l2", 0.01);
    let mut w = base;
    let _ = w.set("weight_decay", 0.1);
    let _ = w.set("nesterov", 1.0);
    [base, m, w]
}

/// Every algorithm, both element types, three option sets, first and later steps, lengths
/// 0 to 67 and 1031.
#[no_mangle]
pub extern "C" fn check() -> u32 {
    if !KernelPath::Simd128.is_available() {
        return u32::MAX;
    }
    let mut bad = 0u32;
    let mut seed = 1u64;
    for a in Algorithm::ALL {
        for c in configs(a) {
            for t in [1u64, 4] {
                for n in (0..=67).chain([MAX]) {
                    seed += 1;
                    bad += compare::<f32>(&c, t, n, seed);
                    bad += compare::<f64>(&c, t, n, seed);
                }
            }
        }
    }
    // The finite scan finds a single bad element anywhere.
    let mut x = [1.0f32; 300];
    for pos in [0usize, 150, 299] {
        x[pos] = f32::INFINITY;
        if all_finite_on(KernelPath::Simd128, &x) != Some(false) {
            bad += 1;
        }
        x[pos] = 1.0;
    }
    bad
}
