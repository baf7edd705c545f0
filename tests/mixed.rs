//! Mixed precision (`kernels::mixed`): bf16/f16 parameters with f32 state, and bf16 state with
//! stochastic rounding, each against a scalar reference of its rounding.

mod algorithms;
mod common;

use algorithms::ALGORITHMS;
use common::Rng;
use vsgd::kernels::mixed::{
    self, bf16_rne, bf16_stochastic, rounding_bits, Bf16Sr, F32State, Storage,
};
use vsgd::kernels::{self, NonFinitePolicy, StepOutcome, Verdict};
use vsgd::{bf16, f16, Algorithm, Config, Error};

/// A random f32 bit pattern, any class (normal, subnormal, zero, ∞, NaN).
fn any_f32(rng: &mut Rng) -> f32 {
    f32::from_bits(rng.next() as u32)
}

fn specials() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        65504.0,
        65519.99,
        65520.0,
        6.0e-8,
        2.9e-8,
        3.0e-8,
    ];
    // Exact ties and near-ties of bf16 at several magnitudes, both parities of the kept bit.
    for base in [
        0x3f80_0000u32,
        0x3f81_0000,
        0x0080_0000,
        0x7f7f_0000,
        0x7f7e_0000,
    ] {
        for low in [0x7fffu32, 0x8000, 0x8001, 0xffff, 0x0001] {
            v.push(f32::from_bits(base | low));
            v.push(-f32::from_bits(base | low));
        }
    }
    v
}

#[test]
fn bf16_rne_matches_half_on_every_class() {
    let mut rng = Rng(0x5eed);
    let mut xs = specials();
    xs.extend((0..1_000_000).map(|_| any_f32(&mut rng)));
    for x in xs {
        let ours = bf16_rne(x);
        let theirs = bf16::from_f32(x);
        if x.is_nan() {
            assert!(bf16::from_bits(ours).is_nan(), "{x:?}: NaN must stay NaN");
            assert_eq!(ours & 0x8000, theirs.to_bits() & 0x8000, "sign of NaN");
        } else {
            assert_eq!(ours, theirs.to_bits(), "{x:e} ({:#010x})", x.to_bits());
        }
        assert_eq!(<bf16 as Storage>::narrow(x).to_bits(), ours);
    }
}

/// The nearest of the two bf16 values around `x`, ties to an even last bit: the definition,
/// checked against what `narrow` returns (independently of any bit trick).
fn check_nearest_even<P: Storage + Copy>(x: f32, r: P, bits: fn(P) -> u16, from: fn(u16) -> P) {
    let rb = bits(r);
    let rv = r.widen() as f64;
    let xv = x as f64;
    assert!(rv.is_finite(), "{x:e} rounded to {rv}");
    let err = (rv - xv).abs();
    // The neighbours one unit away on each side (the same sign; zero crossing excluded).
    for nb in [rb.wrapping_add(1), rb.wrapping_sub(1)] {
        if nb & 0x7fff == 0x7fff || (nb ^ rb) & 0x8000 != 0 {
            continue;
        }
        let n = from(nb).widen() as f64;
        if !n.is_finite() {
            continue;
        }
        let other = (n - xv).abs();
        assert!(err <= other, "{x:e}: {rv} is farther than {n}");
        if err == other {
            assert_eq!(rb & 1, 0, "{x:e}: a tie must go to the even neighbour");
        }
    }
}

#[test]
fn bf16_and_f16_round_to_nearest_even() {
    let mut rng = Rng(7);
    for i in 0..300_000 {
        // Finite values within each type's range, many near ties.
        let mut x = (rng.unit() * 2f64.powi((rng.below(60) as i32) - 30)) as f32;
        if i % 3 == 0 {
            x = f32::from_bits((x.to_bits() & !0xffff) | 0x8000); // exact bf16 tie
        }
        let b = <bf16 as Storage>::narrow(x);
        check_nearest_even(x, b, bf16::to_bits, bf16::from_bits);
        if x.abs() < 65504.0 {
            let h = <f16 as Storage>::narrow(x);
            check_nearest_even(x, h, f16::to_bits, f16::from_bits);
        }
    }
    // Overflow: past the largest finite value (plus half an ulp) is ∞.
    assert!(<f16 as Storage>::narrow(65520.0).to_f32().is_infinite());
    assert_eq!(<f16 as Storage>::narrow(65519.0).to_f32(), 65504.0);
    assert!(<bf16 as Storage>::narrow(f32::MAX).to_f32().is_infinite());
}

#[test]
fn widening_is_exact() {
    for b in 0..=u16::MAX {
        let x = bf16::from_bits(b);
        let h = f16::from_bits(b);
        if x.is_nan() {
            assert!(Storage::widen(x).is_nan());
        } else {
            assert_eq!(Storage::widen(x), x.to_f32());
            assert_eq!(
                bf16_rne(Storage::widen(x)),
                b,
                "bf16 round trip of {b:#06x}"
            );
        }
        if !h.is_nan() {
            assert_eq!(<f16 as Storage>::narrow(Storage::widen(h)).to_bits(), b);
        }
        assert_eq!(Storage::is_finite(x), x.is_finite());
        assert_eq!(Storage::is_finite(h), h.is_finite());
    }
}

#[test]
fn stochastic_rounding_picks_a_neighbour_and_is_unbiased() {
    let mut rng = Rng(11);
    // Exactly representable values never move.
    for _ in 0..10_000 {
        let x = bf16::from_bits(rng.next() as u16 & 0x7f7f).to_f32();
        assert_eq!(bf16_stochastic(x, rng.next() as u16), bf16_rne(x));
    }
    // Non-finite values round as RNE does; a finite value never becomes ∞.
    assert_eq!(bf16_stochastic(f32::INFINITY, 0xffff), 0x7f80);
    assert!(bf16::from_bits(bf16_stochastic(f32::NAN, 3)).is_nan());
    assert_eq!(bf16_stochastic(f32::MAX, 0xffff), 0x7f7f);
    assert_eq!(bf16_stochastic(f32::MIN, 0xffff), 0xff7f);
    // The mean over the generator's bits is x: |mean − x| ≤ 6σ/√N, σ ≤ ulp/2.
    const N: u64 = 200_000;
    for case in 0..40 {
        let x = (rng.unit() * 2f64.powi(case % 20 - 10)) as f32;
        let down = f32::from_bits(x.to_bits() & !0xffff) as f64;
        let up = bf16::from_bits(((x.to_bits() >> 16) + 1) as u16).to_f32() as f64;
        let ulp = (up - down).abs();
        let mut sum = 0.0f64;
        let mut ups = 0u64;
        for i in 0..N {
            let r = rounding_bits(case as u64, 1, 0, i);
            let v = bf16::from_bits(bf16_stochastic(x, r)).to_f32() as f64;
            assert!(
                v == down || v == up,
                "{x:e} rounded to {v}, not {down} or {up}"
            );
            ups += u64::from(v == up && up != down);
            sum += v;
        }
        let mean = sum / N as f64;
        let bound = 6.0 * (ulp / 2.0) / (N as f64).sqrt();
        assert!(
            (mean - x as f64).abs() <= bound,
            "x = {x:e}: mean {mean:e}, off by {:e} > {bound:e}",
            (mean - x as f64).abs()
        );
        // P(up) is the fraction of the way from `down` to `up`.
        let p = ((x as f64 - down) / (up - down)).abs();
        let seen = ups as f64 / N as f64;
        assert!(
            (seen - p).abs() <= 6.0 * 0.5 / (N as f64).sqrt(),
            "P(up) {seen} vs {p}"
        );
    }
}

#[test]
fn rounding_bits_are_uniform_and_independent_of_position_bookkeeping() {
    // Each of the 16 bits is set about half the time, for each array slot.
    const N: u64 = 100_000;
    for array in 0..6 {
        let mut counts = [0u64; 16];
        for i in 0..N {
            let r = rounding_bits(42, 7, array, i);
            for (b, c) in counts.iter_mut().enumerate() {
                *c += u64::from(r >> b & 1);
            }
        }
        for c in counts {
            let f = c as f64 / N as f64;
            assert!(
                (f - 0.5).abs() < 0.01,
                "array {array}: a bit set {f} of the time"
            );
        }
    }
    // Different steps, seeds and arrays give different streams.
    let a: Vec<u16> = (0..64).map(|i| rounding_bits(1, 1, 0, i)).collect();
    assert_ne!(
        a,
        (0..64)
            .map(|i| rounding_bits(1, 2, 0, i))
            .collect::<Vec<_>>()
    );
    assert_ne!(
        a,
        (0..64)
            .map(|i| rounding_bits(2, 1, 0, i))
            .collect::<Vec<_>>()
    );
    assert_ne!(
        a,
        (0..64)
            .map(|i| rounding_bits(1, 1, 1, i))
            .collect::<Vec<_>>()
    );
}

fn config(a: Algorithm) -> Config {
    algorithms::config_with_every_term(a)
}

fn random_storage<P: Storage>(rng: &mut Rng, n: usize, scale: f64) -> Vec<P> {
    (0..n)
        .map(|_| P::narrow((rng.unit() * scale) as f32))
        .collect()
}

/// Several steps of a `P` tensor with f32 state, against the reference: widen, step the f32
/// tensor with `kernels::step`, round the parameter to nearest even.
fn mixed_matches_reference<P: Storage + PartialEq + core::fmt::Debug>() {
    let n = 1000; // several chunks and a partial one
    for a in ALGORITHMS {
        let c = config(a);
        let k = a.state_count();
        let mut rng = Rng(3 + a as u64);
        let mut param: Vec<P> = random_storage(&mut rng, n, 1.0);
        let mut reference = param.clone();
        let mut state = vec![vec![0.0f32; n]; k];
        let mut ref_state = state.clone();
        for t in 1..=5 {
            let grad: Vec<P> = random_storage(&mut rng, n, 0.1);
            let mut arrays: Vec<&mut [f32]> = state.iter_mut().map(|v| &mut v[..]).collect();
            let out = mixed::step(
                &c,
                t,
                0.01,
                &mut param,
                &grad,
                &mut arrays,
                &F32State,
                NonFinitePolicy::Skip,
                Verdict::Check,
            )
            .unwrap();
            assert_eq!(out, StepOutcome::Applied);
            let mut p32: Vec<f32> = reference.iter().map(|v| v.widen()).collect();
            let g32: Vec<f32> = grad.iter().map(|v| v.widen()).collect();
            let mut arrays: Vec<&mut [f32]> = ref_state.iter_mut().map(|v| &mut v[..]).collect();
            kernels::step(
                &c,
                t,
                0.01,
                &mut p32,
                &g32,
                &mut arrays,
                NonFinitePolicy::Skip,
            )
            .unwrap();
            reference = p32.iter().map(|&v| P::narrow(v)).collect();
            assert_eq!(param, reference, "{a:?} {} t={t}", P::NAME);
            for (s, r) in state.iter().zip(&ref_state) {
                assert!(s.iter().zip(r).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
        // The parameter moved.
        assert_ne!(param, random_storage::<P>(&mut Rng(3 + a as u64), n, 1.0));
    }
}

#[test]
fn bf16_params_with_f32_state_match_the_reference() {
    mixed_matches_reference::<bf16>();
}

#[test]
fn f16_params_with_f32_state_match_the_reference() {
    mixed_matches_reference::<f16>();
}

#[test]
fn f32_storage_is_the_f32_step() {
    mixed_matches_reference::<f32>();
}

/// bf16 state: widened, stepped in f32, each element rounded with the generator's bits for
/// its whole-tensor index.
#[test]
fn bf16_state_matches_the_reference_and_any_sharding() {
    let n = 700;
    for a in [Algorithm::Vsgd, Algorithm::Adam, Algorithm::Sgdm] {
        let c = config(a);
        let k = a.state_count();
        let mut rng = Rng(99);
        let seed = 0xabcd;
        let mut param: Vec<bf16> = random_storage(&mut rng, n, 1.0);
        let mut sharded = param.clone();
        let mut reference = param.clone();
        let mut state = vec![vec![bf16::ZERO; n]; k];
        let mut sharded_state = state.clone();
        let mut ref_state = state.clone();
        for t in 1..=4 {
            let grad: Vec<bf16> = random_storage(&mut rng, n, 0.1);
            // Whole tensor.
            let mut arrays: Vec<&mut [bf16]> = state.iter_mut().map(|v| &mut v[..]).collect();
            let sr = Bf16Sr { seed, offset: 0 };
            mixed::step(
                &c,
                t,
                0.01,
                &mut param,
                &grad,
                &mut arrays,
                &sr,
                NonFinitePolicy::Skip,
                Verdict::Check,
            )
            .unwrap();
            // Three shards at odd boundaries, each with its offset.
            for (lo, hi) in [(0usize, 301usize), (301, 302), (302, n)] {
                let mut arrays: Vec<&mut [bf16]> =
                    sharded_state.iter_mut().map(|v| &mut v[lo..hi]).collect();
                let sr = Bf16Sr {
                    seed,
                    offset: lo as u64,
                };
                mixed::step(
                    &c,
                    t,
                    0.01,
                    &mut sharded[lo..hi],
                    &grad[lo..hi],
                    &mut arrays,
                    &sr,
                    NonFinitePolicy::Skip,
                    Verdict::Finite,
                )
                .unwrap();
            }
            // Scalar reference.
            let mut p32: Vec<f32> = reference.iter().map(|v| v.to_f32()).collect();
            let g32: Vec<f32> = grad.iter().map(|v| v.to_f32()).collect();
            let mut s32: Vec<Vec<f32>> = ref_state
                .iter()
                .map(|v| v.iter().map(|x| x.to_f32()).collect())
                .collect();
            let mut arrays: Vec<&mut [f32]> = s32.iter_mut().map(|v| &mut v[..]).collect();
            kernels::step(
                &c,
                t,
                0.01,
                &mut p32,
                &g32,
                &mut arrays,
                NonFinitePolicy::Skip,
            )
            .unwrap();
            reference = p32.iter().map(|&v| bf16::from_bits(bf16_rne(v))).collect();
            for (j, (dst, src)) in ref_state.iter_mut().zip(&s32).enumerate() {
                for (i, (d, &v)) in dst.iter_mut().zip(src).enumerate() {
                    let r = rounding_bits(seed, t, j, i as u64);
                    *d = bf16::from_bits(bf16_stochastic(v, r));
                }
            }
            assert_eq!(param, reference, "{a:?} t={t}");
            assert_eq!(state, ref_state, "{a:?} t={t}: state");
            assert_eq!(sharded, param, "{a:?} t={t}: sharded parameter");
            assert_eq!(sharded_state, state, "{a:?} t={t}: sharded state");
        }
        // The state is not all zero (stochastic rounding kept the small updates).
        assert!(state.iter().all(|s| s.iter().any(|x| x.to_f32() != 0.0)));
    }
}

/// The reason for stochastic rounding: an exponential moving average of a constant, stored in
/// bf16, reaches the constant on average; rounded to nearest it stalls.
#[test]
fn bf16_state_with_stochastic_rounding_tracks_small_updates() {
    let n = 4096;
    let c = Config::default_for(Algorithm::Adam); // β2 = 0.999: v moves by 0.1% per step
    let g = vec![bf16::from_f32(1.0); n];
    let mut p = vec![bf16::from_f32(0.0); n];
    let (mut m, mut v) = (vec![bf16::ZERO; n], vec![bf16::ZERO; n]);
    let sr = Bf16Sr { seed: 5, offset: 0 };
    for t in 1..=3000 {
        mixed::step(
            &c,
            t,
            0.0,
            &mut p,
            &g,
            &mut [&mut m, &mut v],
            &sr,
            NonFinitePolicy::Skip,
            Verdict::Check,
        )
        .unwrap();
    }
    // The exact f32 value of v after 3000 steps: 1 − 0.999^3000 ≈ 0.9503.
    let exact = 1.0 - 0.999f64.powi(3000);
    let mean = v.iter().map(|x| x.to_f32() as f64).sum::<f64>() / n as f64;
    assert!(
        (mean - exact).abs() < 0.005,
        "mean of v {mean}, exact {exact}"
    );
    // Round-to-nearest in bf16 (8 bits of mantissa) stalls far below: v·0.999 + 0.001 rounds
    // back to v once 0.001·(1 − v) is under half an ulp.
    let mut rne = 0.0f32;
    for _ in 0..3000 {
        rne = bf16::from_f32(rne * 0.999 + 0.001).to_f32();
    }
    assert!((rne as f64 - exact).abs() > 0.02, "RNE reached {rne}");
}

#[test]
fn bad_input_is_an_error_and_changes_nothing() {
    let c = Config::default_for(Algorithm::Adam);
    let mut p = vec![bf16::from_f32(1.0); 4];
    let g = vec![bf16::from_f32(0.5); 4];
    let (mut m, mut v) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let before = p.clone();
    let run = |p: &mut [bf16], g: &[bf16], m: &mut [f32], v: &mut [f32], t, policy, verdict| {
        mixed::step(&c, t, 0.1, p, g, &mut [m, v], &F32State, policy, verdict)
    };
    let skip = NonFinitePolicy::Skip;
    assert!(matches!(
        run(&mut p, &g[..3], &mut m, &mut v, 1, skip, Verdict::Check),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        run(&mut p, &g, &mut m[..2], &mut v, 1, skip, Verdict::Check),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        run(&mut p, &g, &mut m, &mut v, 0, skip, Verdict::Check),
        Err(Error::InvalidStep { .. })
    ));
    let mut bad = g.clone();
    bad[2] = bf16::NAN;
    assert_eq!(
        run(&mut p, &bad, &mut m, &mut v, 1, skip, Verdict::Check).unwrap(),
        StepOutcome::Skipped
    );
    bad[2] = bf16::INFINITY;
    assert!(matches!(
        run(
            &mut p,
            &bad,
            &mut m,
            &mut v,
            1,
            NonFinitePolicy::Error,
            Verdict::Check
        ),
        Err(Error::NonFiniteGradient { .. })
    ));
    assert_eq!(
        run(&mut p, &g, &mut m, &mut v, 1, skip, Verdict::NotFinite).unwrap(),
        StepOutcome::Skipped
    );
    assert_eq!(p, before);
    assert!(m.iter().chain(&v).all(|x| *x == 0.0));
    let mut s = [0.0f32; 4];
    assert!(matches!(
        mixed::step(
            &c,
            1,
            0.1,
            &mut p,
            &g,
            &mut [&mut s[..]],
            &F32State,
            skip,
            Verdict::Check
        ),
        Err(Error::StateCount { .. })
    ));
    assert!(matches!(
        run(&mut p, &g, &mut m, &mut v, 1, skip, Verdict::Check).unwrap(),
        StepOutcome::Applied
    ));
    assert_ne!(p, before);
}

#[test]
fn finite_scan_of_16_bit_gradients() {
    let mut g = vec![f16::from_f32(1.0); 1000];
    assert!(mixed::all_finite(&g));
    g[999] = f16::NEG_INFINITY;
    assert!(!mixed::all_finite(&g));
    g[999] = f16::MAX;
    assert!(mixed::all_finite(&g));
    let mut b = vec![bf16::from_f32(-3.0); 300];
    b[257] = bf16::NAN;
    assert!(!mixed::all_finite(&b));
}

/// VSGD with its three state arrays in bf16 (6 bytes per parameter instead of 12) follows the
/// run with f32 state: after 500 steps of noisy gradients, each state array differs from the
/// f32 run's by under 12 bf16 ulps (2^-8) relative to its size, summed over the tensor, and the
/// parameters end up apart by under 0.5% of how far they moved. A state array that is not
/// stored back, or stored in another's slot, fails it.
#[test]
fn vsgd_with_bf16_state_follows_the_f32_state_run() {
    let n = 4096;
    let c = Config::default_for(Algorithm::Vsgd);
    let k = c.algorithm().state_count();
    assert_eq!(
        k * core::mem::size_of::<bf16>(),
        6,
        "bytes of bf16 state per parameter"
    );
    let mut rng = Rng(11);
    let p0: Vec<f32> = (0..n).map(|_| rng.unit() as f32).collect();
    let mean_g: Vec<f32> = (0..n).map(|_| (rng.unit() - 0.5) as f32).collect();
    let (mut p32, mut p16) = (p0.clone(), p0.clone());
    let mut s32 = vec![vec![0.0f32; n]; k];
    let mut s16 = vec![vec![bf16::ZERO; n]; k];
    let sr = Bf16Sr { seed: 3, offset: 0 };
    let lr = 0.01;
    for t in 1..=500 {
        let g: Vec<f32> = mean_g
            .iter()
            .map(|&m| m + 0.5 * (rng.unit() - 0.5) as f32)
            .collect();
        let mut a: Vec<&mut [f32]> = s32.iter_mut().map(|v| v.as_mut_slice()).collect();
        mixed::step(
            &c,
            t,
            lr,
            &mut p32,
            &g,
            &mut a,
            &F32State,
            NonFinitePolicy::Skip,
            Verdict::Check,
        )
        .unwrap();
        let mut b: Vec<&mut [bf16]> = s16.iter_mut().map(|v| v.as_mut_slice()).collect();
        mixed::step(
            &c,
            t,
            lr,
            &mut p16,
            &g,
            &mut b,
            &sr,
            NonFinitePolicy::Skip,
            Verdict::Check,
        )
        .unwrap();
    }
    let ulp = 2f64.powi(-8);
    for (j, (x, y)) in s32.iter().zip(&s16).enumerate() {
        let diff: f64 = x
            .iter()
            .zip(y)
            .map(|(&a, &b)| ((b.to_f32() - a) as f64).abs())
            .sum();
        let rel = diff / x.iter().map(|&a| (a as f64).abs()).sum::<f64>();
        // Measured: 2.1e-2, 1.5e-2, 2.9e-2 (mug, bg, bhg): 4–8 bf16 ulps, the random walk of
        // 500 stochastic roundings, each unbiased.
        assert!(
            rel < 12.0 * ulp,
            "state array {j}: relative difference {rel:.2e}"
        );
    }
    let moved = p32
        .iter()
        .zip(&p0)
        .map(|(a, b)| ((a - b) as f64).abs())
        .sum::<f64>();
    let apart = p32
        .iter()
        .zip(&p16)
        .map(|(a, b)| ((a - b) as f64).abs())
        .sum::<f64>();
    assert!(moved > 0.0);
    // Measured: 7.1e-4.
    assert!(
        apart / moved < 5e-3,
        "parameters apart by {apart}, moved {moved}"
    );
}

#[test]
fn a_part_of_a_shard_keeps_the_whole_tensor_index() {
    use vsgd::kernels::mixed::StateStorage;
    let sr = Bf16Sr { seed: 9, offset: 5 };
    assert_eq!(
        sr.at(10),
        Bf16Sr {
            seed: 9,
            offset: 15
        }
    );
    assert_eq!(F32State.at(10), F32State);
}

/// Every class of value (signed zeros, subnormals, ±∞, NaN, the largest finite, ties) in the
/// parameters, gradients and state, stepped as one tensor (whole vectors through the fused
/// loop where the CPU has one) and one element at a time (the chunked path), with the
/// `propagate` policy so that nothing is skipped: NaN where NaN, the same bits elsewhere.
fn every_class_whole_equals_one_by_one<P: Storage, S: mixed::StateStorage>(
    storage: impl Fn(u64) -> S,
    make: fn(f32) -> S::Elem,
) {
    /// A comparable form of a widened value: NaN for any NaN, the bits otherwise.
    fn key(x: f32) -> Option<u32> {
        (!x.is_nan()).then_some(x.to_bits())
    }
    let n = 16 * 4 + 5;
    let pool = specials();
    let mut rng = Rng(0xc1a55);
    let mut pick = move || {
        if rng.below(2) == 0 {
            pool[rng.below(pool.len() as u64) as usize]
        } else {
            any_f32(&mut rng)
        }
    };
    for a in ALGORITHMS {
        let c = config(a);
        let k = a.state_count();
        let mut param: Vec<P> = (0..n).map(|_| P::narrow(pick())).collect();
        let mut state: Vec<Vec<S::Elem>> = (0..k)
            .map(|_| (0..n).map(|_| make(pick())).collect())
            .collect();
        let (mut p1, mut s1) = (param.clone(), state.clone());
        for t in 1..=3 {
            let grad: Vec<P> = (0..n).map(|_| P::narrow(pick())).collect();
            let mut arrays: Vec<&mut [S::Elem]> = state.iter_mut().map(|v| &mut v[..]).collect();
            let (policy, verdict) = (NonFinitePolicy::Propagate, Verdict::Check);
            let s = storage(0);
            mixed::step(
                &c,
                t,
                0.01,
                &mut param,
                &grad,
                &mut arrays,
                &s,
                policy,
                verdict,
            )
            .unwrap();
            for i in 0..n {
                let mut arrays: Vec<&mut [S::Elem]> =
                    s1.iter_mut().map(|v| &mut v[i..i + 1]).collect();
                let (p, g, s) = (&mut p1[i..i + 1], &grad[i..i + 1], storage(i as u64));
                mixed::step(&c, t, 0.01, p, g, &mut arrays, &s, policy, verdict).unwrap();
            }
            for i in 0..n {
                let (x, y) = (param[i].widen(), p1[i].widen());
                assert_eq!(key(x), key(y), "{a:?} t={t} param[{i}]: {x:e} vs {y:e}");
                for j in 0..k {
                    let (x, y) = (S::widen(state[j][i]), S::widen(s1[j][i]));
                    assert_eq!(
                        key(x),
                        key(y),
                        "{a:?} t={t} state[{j}][{i}]: {x:e} vs {y:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_class_through_whole_vectors_bf16_f32_state() {
    every_class_whole_equals_one_by_one::<bf16, F32State>(|_| F32State, |x| x);
}

#[test]
fn every_class_through_whole_vectors_f16_f32_state() {
    every_class_whole_equals_one_by_one::<f16, F32State>(|_| F32State, |x| x);
}

#[test]
fn every_class_through_whole_vectors_bf16_state() {
    every_class_whole_equals_one_by_one::<bf16, Bf16Sr>(
        |offset| Bf16Sr { seed: 77, offset },
        bf16::from_f32,
    );
}

/// A shard of bf16 state whose indices would pass 2^64 − 1 is refused (the stochastic
/// rounding's index would wrap and repeat another shard's bits), before anything changes; the
/// last shard that fits steps.
#[test]
fn bf16_state_shard_past_the_last_index_is_refused() {
    let c = Config::default_for(Algorithm::Adam);
    let mut p = vec![bf16::ONE; 4];
    let g = vec![bf16::from_f32(0.5); 4];
    let (mut m, mut v) = (vec![bf16::ZERO; 4], vec![bf16::ZERO; 4]);
    for (offset, ok) in [
        (u64::MAX - 2, false),
        (u64::MAX - 3, true),
        (u64::MAX, false),
    ] {
        let storage = Bf16Sr { seed: 1, offset };
        let before = (p.clone(), m.clone(), v.clone());
        let r = mixed::step(
            &c,
            1,
            0.1,
            &mut p,
            &g,
            &mut [&mut m[..], &mut v[..]],
            &storage,
            NonFinitePolicy::Skip,
            Verdict::Check,
        );
        if ok {
            assert_eq!(r, Ok(StepOutcome::Applied));
            assert_ne!(p, before.0);
        } else {
            assert_eq!(r, Err(Error::IndexOverflow { offset, len: 4 }));
            assert_eq!(
                (p.clone(), m.clone(), v.clone()),
                before,
                "offset {offset}: changed"
            );
        }
    }
    // An empty shard indexes nothing: fine at any offset.
    let storage = Bf16Sr {
        seed: 1,
        offset: u64::MAX,
    };
    let r = mixed::step::<bf16, Bf16Sr>(
        &c,
        1,
        0.1,
        &mut [],
        &[],
        &mut [&mut [][..], &mut [][..]],
        &storage,
        NonFinitePolicy::Skip,
        Verdict::Check,
    );
    assert_eq!(r, Ok(StepOutcome::Applied));
}
