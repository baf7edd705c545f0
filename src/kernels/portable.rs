//! The portable scalar kernels: the reference every other path is tested against, bit for bit.
//!
//! Each element sees a fixed sequence of correctly rounded IEEE-754 operations; faster paths
//! must perform exactly the same sequence (same operands, same order, no fused multiply-add).

use super::{AdamScalars, ConstantVsgdScalars, Scalars, SgdmScalars, VsgdScalars};
use crate::element::Element;

/// Dispatches to the kernel of `s`'s algorithm. `state` must hold the algorithm's arrays, each
/// as long as `param`, and `grad` too (callers check).
pub fn apply<T: Element>(s: &Scalars<T>, param: &mut [T], grad: &[T], state: &mut [&mut [T]]) {
    match (s, state) {
        (Scalars::Vsgd(s), [mug, bg, bhg]) => vsgd(s, param, grad, mug, bg, bhg),
        (Scalars::ConstantVsgd(s), [mug, b]) => constant_vsgd(s, param, grad, mug, b),
        (Scalars::Adam(s), [m, v]) => adam(s, param, grad, m, v),
        (Scalars::Sgdm(s), [buf]) => sgdm(s, param, grad, buf),
        _ => unreachable!("state count checked by the caller"),
    }
}

/// VSGD, one element at a time (see [`crate::VsgdConfig`] for the rule).
pub fn vsgd<T: Element>(
    s: &VsgdScalars<T>,
    param: &mut [T],
    grad: &[T],
    mug: &mut [T],
    bg: &mut [T],
    bhg: &mut [T],
) {
    let n = param.len();
    let (grad, mug, bg, bhg) = (&grad[..n], &mut mug[..n], &mut bg[..n], &mut bhg[..n]);
    for i in 0..n {
        let p0 = param[i];
        let g = s.common.grad(grad[i], p0);
        let p = s.common.decayed(p0);
        let (sg, shg) = if s.first {
            (s.sg0, s.shg0)
        } else {
            (bg[i] * s.inv_pa2, bhg[i] * s.inv_pa2)
        };
        let r = T::ONE / (sg + shg);
        let wg = sg * r;
        let wm = shg * r;
        let mu = mug[i];
        let mu_new = wg * g + wm * mu;
        let var = sg * wm;
        let d1 = mu_new - mu;
        let d2 = mu_new - g;
        let bg_new = s.pbg2 + var + d1 * d1;
        let bhg_new = s.pbhg2 + var + d2 * d2;
        bg[i] = s.omr1 * bg[i] + s.rho1 * bg_new;
        bhg[i] = s.omr2 * bhg[i] + s.rho2 * bhg_new;
        mug[i] = mu_new;
        param[i] = p - s.common.lr * (mu_new / ((var + mu_new * mu_new).sqrt() + s.eps));
    }
}

/// Constant VSGD (see [`crate::ConstantVsgdConfig`]).
pub fn constant_vsgd<T: Element>(
    s: &ConstantVsgdScalars<T>,
    param: &mut [T],
    grad: &[T],
    mug: &mut [T],
    b: &mut [T],
) {
    let n = param.len();
    let (grad, mug, b) = (&grad[..n], &mut mug[..n], &mut b[..n]);
    for i in 0..n {
        let p0 = param[i];
        let g = s.common.grad(grad[i], p0);
        let p = s.common.decayed(p0);
        let v = if s.first { s.v0 } else { b[i] * s.inv_pa2 };
        let mu = mug[i];
        let mu_new = (s.k * mu + g) * s.inv_k1;
        let var = v * s.inv_k1;
        let d1 = mu_new - mu;
        let d2 = mu_new - g;
        let b_new = s.pb2 + s.k * (var + d1 * d1) + var + d2 * d2;
        b[i] = s.omr * b[i] + s.rho * b_new;
        mug[i] = mu_new;
        param[i] = p - s.common.lr * (mu_new / ((var + mu_new * mu_new).sqrt() + s.eps));
    }
}

/// Adam / AdamW (see [`crate::AdamConfig`]).
pub fn adam<T: Element>(
    s: &AdamScalars<T>,
    param: &mut [T],
    grad: &[T],
    m: &mut [T],
    v: &mut [T],
) {
    let n = param.len();
    let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let p0 = param[i];
        let g = s.common.grad(grad[i], p0);
        let p = s.common.decayed(p0);
        let m_new = s.beta1 * m[i] + s.omb1 * g;
        let v_new = s.beta2 * v[i] + s.omb2 * (g * g);
        m[i] = m_new;
        v[i] = v_new;
        let den = v_new.sqrt() / s.bc2_sqrt + s.eps;
        param[i] = p - s.step_size * (m_new / den);
    }
}

/// SGD with momentum (see [`crate::SgdmConfig`]).
pub fn sgdm<T: Element>(s: &SgdmScalars<T>, param: &mut [T], grad: &[T], buf: &mut [T]) {
    let n = param.len();
    let (grad, buf) = (&grad[..n], &mut buf[..n]);
    for i in 0..n {
        let p0 = param[i];
        let g = s.common.grad(grad[i], p0);
        let p = s.common.decayed(p0);
        let b = if s.first {
            g
        } else {
            s.momentum * buf[i] + s.omd * g
        };
        buf[i] = b;
        let d = if s.nesterov { g + s.momentum * b } else { b };
        param[i] = p - s.common.lr * d;
    }
}

/// `true` when no element is NaN or ±∞.
pub fn all_finite<T: Element>(x: &[T]) -> bool {
    x.iter().all(|v| v.is_finite())
}
