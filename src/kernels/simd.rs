//! The kernels written once over a vector of lanes; each instruction set (`x86`, `neon`,
//! `wasm`) only says what a vector is and how to add, multiply, divide, take the square root.
//!
//! Every lane performs exactly the operations of [`super::portable`], in the same order and
//! with the same operands: IEEE-754 `+ − × ÷ sqrt`, each correctly rounded in every lane of
//! every instruction set used here, no fused multiply-add, no approximate reciprocal or
//! reciprocal square root. So a vector path gives the bits of the portable path. The elements
//! left over after the last whole vector go through the portable kernel itself.

use super::{
    portable, AdamScalars, Common, ConstantVsgdScalars, Scalars, SgdmScalars, VsgdScalars,
};
use crate::element::Element;

/// A vector of `LANES` elements of type `E` in one register of some instruction set.
///
/// # Safety
/// Every method is `unsafe`: it executes instructions of the implementing type's instruction
/// set, so it may only run on a CPU that has them. The kernels below are called only from
/// functions compiled with those instructions enabled (`#[target_feature]`), which the
/// dispatcher calls only after run-time detection (or where the target guarantees them).
/// `load` and `store` also need `LANES` valid elements at the pointer (any alignment).
pub(crate) trait Vector: Copy {
    /// Element type of each lane.
    type E: Element;
    /// Number of lanes.
    const LANES: usize;
    /// Every lane set to `x`.
    unsafe fn splat(x: Self::E) -> Self;
    /// `LANES` elements from `p` (unaligned).
    unsafe fn load(p: *const Self::E) -> Self;
    /// Writes the lanes to `p` (unaligned).
    unsafe fn store(self, p: *mut Self::E);
    /// Lane-wise `self + b`.
    unsafe fn add(self, b: Self) -> Self;
    /// Lane-wise `self − b`.
    unsafe fn sub(self, b: Self) -> Self;
    /// Lane-wise `self × b`.
    unsafe fn mul(self, b: Self) -> Self;
    /// Lane-wise `self ÷ b` (exact IEEE division).
    unsafe fn div(self, b: Self) -> Self;
    /// Lane-wise correctly rounded square root.
    unsafe fn sqrt(self) -> Self;
    /// Lane-wise sign flip (like scalar `-x`: `-0.0` for `0.0`).
    unsafe fn neg(self) -> Self;
}

/// Defines a [`Vector`] over one register type from the names of its intrinsics
/// (used by `x86.rs`, `neon.rs` and `wasm.rs`).
macro_rules! vector {
    (
        $(#[$attr:meta])*
        $name:ident($raw:ty) of $lanes:literal x $e:ty:
        set1 $set1:ident, loadu $loadu:ident, storeu $storeu:ident,
        add $add:ident, sub $sub:ident, mul $mul:ident, div $div:ident, sqrt $sqrt:ident,
        neg $neg:ident
    ) => {
        $(#[$attr])*
        #[derive(Clone, Copy)]
        pub(crate) struct $name($raw);

        // SAFETY (all methods): the trait's contract; each is one exact instruction of the
        // named instruction set and only runs inside functions compiled with it enabled.
        impl $crate::kernels::simd::Vector for $name {
            type E = $e;
            const LANES: usize = $lanes;
            #[inline(always)]
            unsafe fn splat(x: $e) -> Self {
                $name($set1(x))
            }
            #[inline(always)]
            unsafe fn load(p: *const $e) -> Self {
                $name($loadu(p))
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut $e) {
                $storeu(p, self.0)
            }
            #[inline(always)]
            unsafe fn add(self, b: Self) -> Self {
                $name($add(self.0, b.0))
            }
            #[inline(always)]
            unsafe fn sub(self, b: Self) -> Self {
                $name($sub(self.0, b.0))
            }
            #[inline(always)]
            unsafe fn mul(self, b: Self) -> Self {
                $name($mul(self.0, b.0))
            }
            #[inline(always)]
            unsafe fn div(self, b: Self) -> Self {
                $name($div(self.0, b.0))
            }
            #[inline(always)]
            unsafe fn sqrt(self) -> Self {
                $name($sqrt(self.0))
            }
            #[inline(always)]
            unsafe fn neg(self) -> Self {
                $name($neg(self.0))
            }
        }
    };
}

/// [`Common`] as vectors.
#[derive(Clone, Copy)]
struct CommonV<V> {
    lr: V,
    decay: V,
    l2: V,
    has_decay: bool,
    has_l2: bool,
    maximize: bool,
}

impl<V: Vector> CommonV<V> {
    #[inline(always)]
    unsafe fn new(c: &Common<V::E>) -> Self {
        CommonV {
            lr: V::splat(c.lr),
            decay: V::splat(c.decay),
            l2: V::splat(c.l2),
            has_decay: c.has_decay,
            has_l2: c.has_l2,
            maximize: c.maximize,
        }
    }

    /// [`Common::grad`], lane-wise.
    #[inline(always)]
    unsafe fn grad(&self, g: V, p: V) -> V {
        let g = if self.maximize { g.neg() } else { g };
        if self.has_l2 {
            g.add(self.l2.mul(p))
        } else {
            g
        }
    }

    /// [`Common::decayed`], lane-wise.
    #[inline(always)]
    unsafe fn decayed(&self, p: V) -> V {
        if self.has_decay {
            p.mul(self.decay)
        } else {
            p
        }
    }
}

/// [`portable::apply`] with vectors of type `V`.
///
/// # Safety
/// See [`Vector`]; `grad` and every state array at least as long as `param`.
#[inline(always)]
pub(crate) unsafe fn apply<V: Vector>(
    s: &Scalars<V::E>,
    param: &mut [V::E],
    grad: &[V::E],
    state: &mut [&mut [V::E]],
) {
    match (s, state) {
        (Scalars::Vsgd(s), [mug, bg, bhg]) => vsgd::<V>(s, param, grad, mug, bg, bhg),
        (Scalars::ConstantVsgd(s), [mug, b]) => constant_vsgd::<V>(s, param, grad, mug, b),
        (Scalars::Adam(s), [m, v]) => adam::<V>(s, param, grad, m, v),
        (Scalars::Sgdm(s), [buf]) => sgdm::<V>(s, param, grad, buf),
        _ => unreachable!("state count checked by the caller"),
    }
}

/// [`portable::vsgd`] with vectors of type `V`.
#[inline(always)]
unsafe fn vsgd<V: Vector>(
    s: &VsgdScalars<V::E>,
    param: &mut [V::E],
    grad: &[V::E],
    mug: &mut [V::E],
    bg: &mut [V::E],
    bhg: &mut [V::E],
) {
    let n = param.len();
    // Slicing to `n` once makes every pointer below valid for `n` elements (panics, never
    // reads out of bounds, if a caller broke the length contract).
    let (grad, mug, bg, bhg) = (&grad[..n], &mut mug[..n], &mut bg[..n], &mut bhg[..n]);
    let body = n - n % V::LANES;
    let c = CommonV::<V>::new(&s.common);
    let (sg0, shg0, inv_pa2) = (V::splat(s.sg0), V::splat(s.shg0), V::splat(s.inv_pa2));
    let (pbg2, pbhg2, eps) = (V::splat(s.pbg2), V::splat(s.pbhg2), V::splat(s.eps));
    let (rho1, omr1) = (V::splat(s.rho1), V::splat(s.omr1));
    let (rho2, omr2) = (V::splat(s.rho2), V::splat(s.omr2));
    let one = V::splat(V::E::ONE);
    let (pp, gp) = (param.as_mut_ptr(), grad.as_ptr());
    let (mp, bp, hp) = (mug.as_mut_ptr(), bg.as_mut_ptr(), bhg.as_mut_ptr());
    let mut i = 0;
    while i < body {
        let p0 = V::load(pp.add(i));
        let g = c.grad(V::load(gp.add(i)), p0);
        let p = c.decayed(p0);
        let bg_old = V::load(bp.add(i));
        let bhg_old = V::load(hp.add(i));
        let (sg, shg) = if s.first {
            (sg0, shg0)
        } else {
            (bg_old.mul(inv_pa2), bhg_old.mul(inv_pa2))
        };
        let r = one.div(sg.add(shg));
        let wg = sg.mul(r);
        let wm = shg.mul(r);
        let mu = V::load(mp.add(i));
        let mu_new = wg.mul(g).add(wm.mul(mu));
        let var = sg.mul(wm);
        let d1 = mu_new.sub(mu);
        let d2 = mu_new.sub(g);
        let bg_new = pbg2.add(var).add(d1.mul(d1));
        let bhg_new = pbhg2.add(var).add(d2.mul(d2));
        omr1.mul(bg_old).add(rho1.mul(bg_new)).store(bp.add(i));
        omr2.mul(bhg_old).add(rho2.mul(bhg_new)).store(hp.add(i));
        mu_new.store(mp.add(i));
        let den = var.add(mu_new.mul(mu_new)).sqrt().add(eps);
        p.sub(c.lr.mul(mu_new.div(den))).store(pp.add(i));
        i += V::LANES;
    }
    portable::vsgd(
        s,
        &mut param[body..],
        &grad[body..],
        &mut mug[body..],
        &mut bg[body..],
        &mut bhg[body..],
    );
}

/// [`portable::constant_vsgd`] with vectors of type `V`.
#[inline(always)]
unsafe fn constant_vsgd<V: Vector>(
    s: &ConstantVsgdScalars<V::E>,
    param: &mut [V::E],
    grad: &[V::E],
    mug: &mut [V::E],
    b: &mut [V::E],
) {
    let n = param.len();
    let (grad, mug, b) = (&grad[..n], &mut mug[..n], &mut b[..n]);
    let body = n - n % V::LANES;
    let c = CommonV::<V>::new(&s.common);
    let (v0, inv_pa2, pb2) = (V::splat(s.v0), V::splat(s.inv_pa2), V::splat(s.pb2));
    let (k, inv_k1, eps) = (V::splat(s.k), V::splat(s.inv_k1), V::splat(s.eps));
    let (rho, omr) = (V::splat(s.rho), V::splat(s.omr));
    let (pp, gp, mp, bp) = (
        param.as_mut_ptr(),
        grad.as_ptr(),
        mug.as_mut_ptr(),
        b.as_mut_ptr(),
    );
    let mut i = 0;
    while i < body {
        let p0 = V::load(pp.add(i));
        let g = c.grad(V::load(gp.add(i)), p0);
        let p = c.decayed(p0);
        let b_old = V::load(bp.add(i));
        let v = if s.first { v0 } else { b_old.mul(inv_pa2) };
        let mu = V::load(mp.add(i));
        let mu_new = k.mul(mu).add(g).mul(inv_k1);
        let var = v.mul(inv_k1);
        let d1 = mu_new.sub(mu);
        let d2 = mu_new.sub(g);
        let b_new = pb2.add(k.mul(var.add(d1.mul(d1)))).add(var).add(d2.mul(d2));
        omr.mul(b_old).add(rho.mul(b_new)).store(bp.add(i));
        mu_new.store(mp.add(i));
        let den = var.add(mu_new.mul(mu_new)).sqrt().add(eps);
        p.sub(c.lr.mul(mu_new.div(den))).store(pp.add(i));
        i += V::LANES;
    }
    portable::constant_vsgd(
        s,
        &mut param[body..],
        &grad[body..],
        &mut mug[body..],
        &mut b[body..],
    );
}

/// [`portable::adam`] with vectors of type `V`.
#[inline(always)]
unsafe fn adam<V: Vector>(
    s: &AdamScalars<V::E>,
    param: &mut [V::E],
    grad: &[V::E],
    m: &mut [V::E],
    v: &mut [V::E],
) {
    let n = param.len();
    let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
    let body = n - n % V::LANES;
    let c = CommonV::<V>::new(&s.common);
    let (beta1, omb1) = (V::splat(s.beta1), V::splat(s.omb1));
    let (beta2, omb2) = (V::splat(s.beta2), V::splat(s.omb2));
    let (step_size, bc2_sqrt, eps) = (V::splat(s.step_size), V::splat(s.bc2_sqrt), V::splat(s.eps));
    let (pp, gp, mp, vp) = (
        param.as_mut_ptr(),
        grad.as_ptr(),
        m.as_mut_ptr(),
        v.as_mut_ptr(),
    );
    let mut i = 0;
    while i < body {
        let p0 = V::load(pp.add(i));
        let g = c.grad(V::load(gp.add(i)), p0);
        let p = c.decayed(p0);
        let m_new = beta1.mul(V::load(mp.add(i))).add(omb1.mul(g));
        let v_new = beta2.mul(V::load(vp.add(i))).add(omb2.mul(g.mul(g)));
        m_new.store(mp.add(i));
        v_new.store(vp.add(i));
        let den = v_new.sqrt().div(bc2_sqrt).add(eps);
        p.sub(step_size.mul(m_new.div(den))).store(pp.add(i));
        i += V::LANES;
    }
    portable::adam(
        s,
        &mut param[body..],
        &grad[body..],
        &mut m[body..],
        &mut v[body..],
    );
}

/// [`portable::sgdm`] with vectors of type `V`.
#[inline(always)]
unsafe fn sgdm<V: Vector>(
    s: &SgdmScalars<V::E>,
    param: &mut [V::E],
    grad: &[V::E],
    buf: &mut [V::E],
) {
    let n = param.len();
    let (grad, buf) = (&grad[..n], &mut buf[..n]);
    let body = n - n % V::LANES;
    let c = CommonV::<V>::new(&s.common);
    let (momentum, omd) = (V::splat(s.momentum), V::splat(s.omd));
    let (pp, gp, bp) = (param.as_mut_ptr(), grad.as_ptr(), buf.as_mut_ptr());
    let mut i = 0;
    while i < body {
        let p0 = V::load(pp.add(i));
        let g = c.grad(V::load(gp.add(i)), p0);
        let p = c.decayed(p0);
        let b = if s.first {
            g
        } else {
            momentum.mul(V::load(bp.add(i))).add(omd.mul(g))
        };
        b.store(bp.add(i));
        let d = if s.nesterov {
            g.add(momentum.mul(b))
        } else {
            b
        };
        p.sub(c.lr.mul(d)).store(pp.add(i));
        i += V::LANES;
    }
    portable::sgdm(s, &mut param[body..], &grad[body..], &mut buf[body..]);
}

/// [`portable::all_finite`] with vectors of type `V`.
///
/// For finite `x`, `x − x` is exactly `+0`; for ±∞ and NaN it is NaN, and NaN survives any
/// sum. So the lanes of `Σ (x − x)` are all zero exactly when every element is finite: no
/// compare or mask instruction needed, and four independent sums keep the loop at memory
/// speed. The sums are looked at every `CHUNK` elements so a bad gradient stops the scan early.
///
/// # Safety
/// See [`Vector`].
#[inline(always)]
pub(crate) unsafe fn all_finite<V: Vector>(x: &[V::E]) -> bool {
    const CHUNK: usize = 1 << 14;
    // The read-out below holds 16 lanes; CHUNK must be a multiple of `step`.
    assert!(V::LANES <= 16 && CHUNK % (4 * V::LANES) == 0);
    let step = 4 * V::LANES;
    let body = x.len() - x.len() % step;
    let xp = x.as_ptr();
    let zero = V::splat(V::E::ZERO);
    let mut start = 0;
    while start < body {
        let end = if body - start > CHUNK {
            start + CHUNK
        } else {
            body
        };
        let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
        let mut i = start;
        while i < end {
            let x0 = V::load(xp.add(i));
            let x1 = V::load(xp.add(i + V::LANES));
            let x2 = V::load(xp.add(i + 2 * V::LANES));
            let x3 = V::load(xp.add(i + 3 * V::LANES));
            a0 = a0.add(x0.sub(x0));
            a1 = a1.add(x1.sub(x1));
            a2 = a2.add(x2.sub(x2));
            a3 = a3.add(x3.sub(x3));
            i += step;
        }
        // At most 16 lanes (AVX-512 f32); every lane is 0 or NaN.
        let mut lanes = [V::E::ZERO; 16];
        a0.add(a1).add(a2.add(a3)).store(lanes.as_mut_ptr());
        if lanes[..V::LANES].iter().any(|v| *v != V::E::ZERO) {
            return false;
        }
        start = end;
    }
    portable::all_finite(&x[body..])
}
