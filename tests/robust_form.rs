//! Why the spec's robust form: the published code's float32 arithmetic
//! (`bg' = pbg2 + σ² + μ'² − 2μ'μ + μ²`, `σ² = sg·shg/(sg+shg)`) overflows and returns NaN once
//! gradients reach about 1e12, while the weight/squared-difference form stays finite.
//! `published_f32` transcribes the authors' PyTorch update into scalar f32 arithmetic.

use vsgd::{Config, Optimizer, TensorId, TensorSpec, VsgdConfig};

/// One element through `steps` steps of the authors' float32 formulas with gradient `g`
/// alternating in sign; returns the final parameter.
fn published_f32(g: f32, steps: u32) -> f32 {
    let c = VsgdConfig::default();
    let gamma = c.ps as f32;
    let k = c.ghattg as f32;
    let (pa2, pbg2, pbhg2) = (2.0 * gamma + 1.0 + 1e-4, 2.0 * gamma, 2.0 * k * gamma);
    let (mut mug, mut bg, mut bhg, mut p) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for t in 1..=steps {
        let grad = if t % 2 == 0 { g } else { -0.5 * g };
        let (sg, shg) = if t == 1 {
            (pbg2 / (pa2 - 1.0), pbhg2 / (pa2 - 1.0))
        } else {
            (bg / pa2, bhg / pa2)
        };
        let mug_prev = mug;
        mug = (mug * shg + grad * sg) / (sg + shg);
        let sigg = sg * shg / (sg + shg);
        let mug_sq = sigg + mug * mug;
        let bg2 = pbg2 + mug_sq - 2.0 * mug * mug_prev + mug_prev * mug_prev;
        let bhg2 = pbhg2 + mug_sq - 2.0 * mug * grad + grad * grad;
        let rho1 = (t as f32).powf(-c.tau1 as f32);
        let rho2 = (t as f32).powf(-c.tau2 as f32);
        bg = (1.0 - rho1) * bg + rho1 * bg2;
        bhg = (1.0 - rho2) * bhg + rho2 * bhg2;
        p -= c.lr as f32 * mug / (mug_sq.sqrt() + c.eps as f32);
    }
    p
}

fn ours_f32(g: f32, steps: u32) -> (f32, Optimizer) {
    let mut opt = Optimizer::new(Config::Vsgd(VsgdConfig::default())).unwrap();
    let id = opt.add_tensor(TensorSpec::new(&[1])).unwrap();
    let mut p = [0.0f32];
    for t in 1..=steps {
        let grad = if t % 2 == 0 { g } else { -0.5 * g };
        opt.step_tensor(id, &mut p, &[grad]).unwrap();
    }
    (p[0], opt)
}

#[test]
fn published_float32_form_breaks_near_1e12_and_ours_does_not() {
    // Small gradients: both forms agree closely.
    let (ours, _) = ours_f32(1.0, 20);
    assert!((published_f32(1.0, 20) - ours).abs() < 1e-4);
    // Large gradients: the published form returns NaN, ours stays finite with finite state.
    assert!(published_f32(1e12, 20).is_nan());
    for g in [1e12f32, 1e15, 1e18] {
        let (p, opt) = ours_f32(g, 20);
        assert!(p.is_finite(), "g = {g}: {p}");
        for name in ["mug", "bg", "bhg"] {
            let s = opt.state::<f32>(TensorId(0), name).unwrap();
            assert!(s[0].is_finite(), "g = {g}: {name} = {}", s[0]);
        }
    }
}
