//! A step allocates nothing: a counting global allocator watches whole steps (threads included:
//! the workers are started by `set_threads`, before counting starts).
//!
//! One test in this binary, so nothing else allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use vsgd::{
    bf16, kernels, Algorithm, Config, DType, GradRef, NonFinitePolicy, Optimizer, ParamMut,
    TensorSpec,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::SeqCst) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    (r, ALLOCATIONS.load(Ordering::SeqCst))
}

#[test]
fn steps_do_not_allocate() {
    // The allocator really counts (else the zeros below would prove nothing).
    let (_, n) = counted(|| std::hint::black_box(vec![1u8; 10]));
    assert_eq!(n, 1);
    // The kernel path is chosen (and `VSGD_KERNEL` read) once per process, before counting.
    let _ = kernels::KernelPath::active();

    for algorithm in Algorithm::ALL {
        for threads in [1usize, 2, 3] {
            for policy in [
                NonFinitePolicy::Skip,
                NonFinitePolicy::Propagate,
                NonFinitePolicy::Error,
            ] {
                let mut opt = Optimizer::new(Config::default_for(algorithm)).unwrap();
                opt.set_threads(threads);
                opt.set_policy(policy);
                // One tensor large enough to be split across threads, many small ones.
                let mut sizes = vec![150_000usize, 3, 0, 1025];
                sizes.extend((0..100).map(|i| 1 + i * 13));
                for &n in &sizes {
                    opt.add_tensor(TensorSpec::new(&[n]).dtype(DType::F64))
                        .unwrap();
                }
                let mut params: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.5; n]).collect();
                let mut grads: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.25; n]).collect();
                let mut p: Vec<&mut [f64]> = params.iter_mut().map(|v| v.as_mut_slice()).collect();
                let g: Vec<&[f64]> = grads.iter().map(|v| v.as_slice()).collect();
                for step in 0..3 {
                    let (r, n) = counted(|| opt.step(&mut p, &g));
                    assert_eq!(r.unwrap().applied, sizes.len());
                    assert_eq!(
                        n,
                        0,
                        "{} step {step}, {threads} threads, {policy:?}",
                        algorithm.name()
                    );
                    let (r, n) = counted(|| opt.step_tensor(vsgd::TensorId(0), p[0], g[0]));
                    r.unwrap();
                    assert_eq!(n, 0, "{} step_tensor, {threads} threads", algorithm.name());
                }
                // A skipped (or refused) tensor allocates nothing either.
                drop(p);
                grads[5][0] = f64::NAN;
                let mut p: Vec<&mut [f64]> = params.iter_mut().map(|v| v.as_mut_slice()).collect();
                let g: Vec<&[f64]> = grads.iter().map(|v| v.as_slice()).collect();
                let (r, n) = counted(|| opt.step(&mut p, &g));
                assert_eq!(r.is_err(), policy == NonFinitePolicy::Error);
                assert_eq!(n, 0, "{} non-finite step, {policy:?}", algorithm.name());
            }
        }
    }
    step_any_does_not_allocate();
}

/// `step_any` over tensors of every type allocates nothing once warm (the first step may:
/// clipping's per-block partial sums grow then), skipped ones included: a step that skips
/// every tensor too, also in a clone. Called by the test above (one test per binary).
fn step_any_does_not_allocate() {
    let _ = kernels::KernelPath::active();
    for threads in [1usize, 2] {
        let mut opt = Optimizer::new(Config::default_for(Algorithm::Vsgd)).unwrap();
        opt.set_threads(threads);
        opt.set_clip_norm(Some(1.0)).unwrap();
        let n = 150_000;
        opt.add_tensor(TensorSpec::new(&[n])).unwrap();
        opt.add_tensor(TensorSpec::new(&[7]).dtype(DType::F64))
            .unwrap();
        opt.add_tensor(TensorSpec::new(&[n]).dtype(DType::Bf16))
            .unwrap();
        let bf16_state = TensorSpec::new(&[1025])
            .dtype(DType::Bf16)
            .state_dtype(DType::Bf16);
        opt.add_tensor(bf16_state.seed(3)).unwrap();
        let (mut p32, g32) = (vec![0.5f32; n], vec![0.25f32; n]);
        let (mut p64, g64) = (vec![0.5f64; 7], vec![0.25f64; 7]);
        let (mut pb, gb) = (vec![bf16::ONE; n], vec![bf16::from_f32(0.25); n]);
        let (mut ps, mut gs) = (vec![bf16::ONE; 1025], vec![bf16::from_f32(-0.5); 1025]);
        for step in 0..4 {
            if step == 3 {
                gs[9] = bf16::NAN;
            }
            let (r, allocations) = step_four(
                &mut opt,
                (&mut p32, &mut p64, &mut pb, &mut ps),
                (&g32, &g64, &gb, &gs),
            );
            assert_eq!(r.unwrap().skipped, usize::from(step == 3));
            if step > 0 {
                assert_eq!(allocations, 0, "step {step}, {threads} threads");
            }
        }
        // Every tensor skipped (room for all of them in the skipped list), here and in a clone
        // (warmed by a clean step first, which skips nothing).
        let mut twin = opt.clone();
        twin.set_threads(threads);
        gs[9] = bf16::from_f32(0.5);
        let (r, _) = step_four(
            &mut twin,
            (&mut p32, &mut p64, &mut pb, &mut ps),
            (&g32, &g64, &gb, &gs),
        );
        assert_eq!(r.unwrap().skipped, 0);
        gs[9] = bf16::NAN;
        let nan32 = vec![f32::NAN; n];
        let nan64 = [f64::NAN; 7];
        let nanb = vec![bf16::NAN; n];
        for o in [&mut opt, &mut twin] {
            let (r, allocations) = step_four(
                o,
                (&mut p32, &mut p64, &mut pb, &mut ps),
                (&nan32, &nan64, &nanb, &gs),
            );
            assert_eq!(r.unwrap().skipped, 4);
            assert_eq!(
                allocations, 0,
                "a step skipping every tensor, {threads} threads"
            );
        }
    }
    // step_mixed (bf16 parameters, f32 and bf16 state) and step_tensor_mixed, once warm.
    for threads in [1usize, 2] {
        let mut opt = Optimizer::new(Config::default_for(Algorithm::Adam)).unwrap();
        opt.set_threads(threads);
        let n = 200_000;
        opt.add_tensor(TensorSpec::new(&[n]).dtype(DType::Bf16))
            .unwrap();
        let shape = [n];
        let sr = TensorSpec::new(&shape)
            .dtype(DType::Bf16)
            .state_dtype(DType::Bf16);
        opt.add_tensor(sr.seed(5)).unwrap();
        let (mut a, mut b) = (vec![bf16::ONE; n], vec![bf16::ONE; n]);
        let g = vec![bf16::from_f32(0.25); n];
        for step in 0..3 {
            let mut p: [&mut [bf16]; 2] = [&mut a, &mut b];
            let (r, allocations) = counted(|| opt.step_mixed(&mut p, &[Some(&g), Some(&g)]));
            assert_eq!(r.unwrap().applied, 2);
            let (r2, allocations2) =
                counted(|| opt.step_tensor_mixed(vsgd::TensorId(1), &mut b, &g));
            r2.unwrap();
            if step > 0 {
                assert_eq!(allocations, 0, "step_mixed, {threads} threads");
                assert_eq!(allocations2, 0, "step_tensor_mixed, {threads} threads");
            }
        }
    }
    // Clipping's block list has room for every registered tensor: a large tensor frozen in the
    // first steps, given a gradient later, allocates nothing then.
    for threads in [1usize, 2] {
        let mut opt = Optimizer::new(Config::default_for(Algorithm::Sgdm)).unwrap();
        opt.set_threads(threads);
        opt.set_clip_norm(Some(1.0)).unwrap();
        opt.add_tensor(TensorSpec::new(&[8])).unwrap();
        opt.add_tensor(TensorSpec::new(&[300_000])).unwrap();
        let (mut small, mut large) = (vec![1.0f32; 8], vec![1.0f32; 300_000]);
        let (gs, gl) = (vec![0.5f32; 8], vec![0.5f32; 300_000]);
        for step in 0..3 {
            let given: [Option<&[f32]>; 2] = [Some(&gs), (step == 2).then_some(&gl[..])];
            let mut p: [&mut [f32]; 2] = [&mut small, &mut large];
            let (r, allocations) = counted(|| opt.step_some(&mut p, &given));
            r.unwrap();
            if step > 0 {
                assert_eq!(allocations, 0, "step {step}, {threads} threads");
            }
        }
    }
    // The typed step too: 40 tensors, every one skipped.
    let mut opt = Optimizer::new(Config::default_for(Algorithm::Adam)).unwrap();
    opt.set_threads(1);
    for _ in 0..40 {
        opt.add_tensor(TensorSpec::new(&[3])).unwrap();
    }
    let mut params = vec![[1.0f32; 3]; 40];
    let nan = [f32::NAN; 3];
    let fine = [0.5f32; 3];
    let mut p: Vec<&mut [f32]> = params.iter_mut().map(|v| &mut v[..]).collect();
    let warm: Vec<&[f32]> = vec![&fine[..]; 40];
    assert_eq!(opt.step(&mut p, &warm).unwrap().skipped, 0);
    let g: Vec<&[f32]> = vec![&nan[..]; 40];
    let (r, allocations) = counted(|| opt.step(&mut p, &g));
    assert_eq!(r.unwrap().skipped, 40);
    assert_eq!(allocations, 0, "a typed step skipping 40 tensors");
}

type Four<'a> = (&'a mut [f32], &'a mut [f64], &'a mut [bf16], &'a mut [bf16]);
type FourGrads<'a> = (&'a [f32], &'a [f64], &'a [bf16], &'a [bf16]);

/// One `step_any` over the four tensors of `step_any_does_not_allocate`, counted: its result
/// and the allocations it made.
fn step_four(
    opt: &mut Optimizer,
    p: Four<'_>,
    g: FourGrads<'_>,
) -> (Result<vsgd::StepReport, vsgd::Error>, usize) {
    let mut p: [ParamMut; 4] = [p.0.into(), p.1.into(), p.2.into(), p.3.into()];
    let g: [Option<GradRef>; 4] = [
        Some(g.0.into()),
        Some(g.1.into()),
        Some(g.2.into()),
        Some(g.3.into()),
    ];
    counted(|| opt.step_any(&mut p, &g))
}
