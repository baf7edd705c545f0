//! A threaded `Optimizer::step` small enough to run under Miri (`scripts/test.d/30-simd.sh`
//! runs it there), so the pool's lifetime-erased job, the raw-pointer work items and the kernel
//! dispatch are checked for undefined behaviour, not only by their SAFETY comments.
//! Under plain `cargo test` it checks the same step against single-threaded stepping.

use vsgd::{Algorithm, Config, Optimizer, TensorSpec};

#[test]
fn threaded_step_with_a_skipped_tensor() {
    // 110k SGDM f32 elements move about 2 MiB: enough for the step to use both threads. Under
    // Miri the engine splits 256 times finer (src/kernels/batch.rs), so a tenth is enough.
    let sizes: [usize; 4] = if cfg!(miri) {
        [4_000, 3, 7_000, 65]
    } else {
        [40_000, 3, 70_000, 65]
    };
    let run = |threads: usize| {
        let mut opt = Optimizer::new(Config::default_for(Algorithm::Sgdm)).unwrap();
        opt.set_threads(threads);
        for s in sizes {
            opt.add_tensor(TensorSpec::new(&[s])).unwrap();
        }
        let mut ps: Vec<Vec<f32>> = sizes.iter().map(|&s| vec![1.0; s]).collect();
        let mut gs: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&s| (0..s).map(|i| (i % 7) as f32 - 3.0).collect())
            .collect();
        gs[1][1] = f32::NAN;
        for _ in 0..2 {
            let g: Vec<&[f32]> = gs.iter().map(|v| v.as_slice()).collect();
            let mut p: Vec<&mut [f32]> = ps.iter_mut().map(|v| v.as_mut_slice()).collect();
            let r = opt.step(&mut p, &g).unwrap();
            assert_eq!((r.applied, r.skipped), (3, 1));
        }
        (ps, opt)
    };
    let (p2, o2) = run(2);
    let (p1, o1) = run(1);
    assert_eq!(p1, p2);
    assert_eq!(o1, o2);
}
