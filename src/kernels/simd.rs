//! The kernels written once over a vector of lanes; each instruction set (`x86`, `neon`,
//! `wasm`) only says what a vector is and how to add, multiply, divide, take the square root.
//!
//! Each algorithm's update is written once, as a [`Rule`] over a generic vector; the portable
//! path is the same rule over [`portable::Scalar`], a vector of one lane. Every lane performs
//! the same IEEE-754 `+ − × ÷ sqrt` operations in the same order, each correctly rounded in
//! every lane of every instruction set used here (no fused multiply-add, no approximate
//! reciprocal or reciprocal square root), so every path gives the portable path's bits by
//! construction. The elements left over after the last whole vector go through the same rule
//! one lane at a time.

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
/// (used by `x86.rs`, `neon.rs` and `wasm.rs`; none of them on a target without SIMD).
#[cfg_attr(
    not(any(
        target_arch = "x86",
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon"),
        all(target_arch = "wasm32", target_feature = "simd128")
    )),
    allow(unused_macros)
)]
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
        pub(crate) struct $name(pub(crate) $raw);

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
    scale: V,
    has_decay: bool,
    has_l2: bool,
    has_scale: bool,
    maximize: bool,
}

impl<V: Vector> CommonV<V> {
    #[inline(always)]
    unsafe fn new(c: &Common<V::E>) -> Self {
        CommonV {
            lr: V::splat(c.lr),
            decay: V::splat(c.decay),
            l2: V::splat(c.l2),
            scale: V::splat(c.scale),
            has_decay: c.has_decay,
            has_l2: c.has_l2,
            has_scale: c.has_scale,
            maximize: c.maximize,
        }
    }

    /// [`Common::grad`], lane-wise.
    #[inline(always)]
    unsafe fn grad(&self, g: V, p: V) -> V {
        let g = if self.has_scale { g.mul(self.scale) } else { g };
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

/// One algorithm's update of one element, written once for any vector of lanes: the only
/// place its formulas live. [`run`] applies it with the vectors of an instruction set and, for
/// the elements after the last whole vector and for the portable path, with
/// [`portable::Scalar`] (a vector of one lane), so every path performs the same IEEE
/// operations on every element by construction.
///
/// `K` is the number of state arrays. Adding an algorithm is: its configuration, its
/// [`Scalars`] variant, an `impl Rule<K>` here and its tests; the exhaustive match in
/// [`Scalars::visit`] makes a forgotten case a compile error.
///
/// # Safety
/// The methods run instructions of `V`'s instruction set (see [`Vector`]).
pub(crate) trait Rule<const K: usize>: Copy {
    /// The element type.
    type E: Element;
    /// The per-step constants, splatted into vectors of type `V` once per call of [`run`].
    type Lanes<V: Vector<E = Self::E>>: Copy;
    /// Splats the constants.
    unsafe fn lanes<V: Vector<E = Self::E>>(&self) -> Self::Lanes<V>;
    /// The update of one vector of elements: reads the parameter `p`, the gradient `g` and
    /// the state `st` (updated in place) and returns the new parameter.
    unsafe fn update<V: Vector<E = Self::E>>(
        &self,
        c: &Self::Lanes<V>,
        p: V,
        g: V,
        st: &mut [V; K],
    ) -> V;
}

/// Lanes of [`VsgdScalars`].
#[derive(Clone, Copy)]
pub(crate) struct VsgdLanes<V> {
    c: CommonV<V>,
    sg0: V,
    shg0: V,
    inv_pa2: V,
    pbg2: V,
    pbhg2: V,
    rho1: V,
    omr1: V,
    rho2: V,
    omr2: V,
    eps: V,
    one: V,
}

/// VSGD (docs/algorithms.md): state `[mug, bg, bhg]`.
impl<T: Element> Rule<3> for VsgdScalars<T> {
    type E = T;
    type Lanes<V: Vector<E = T>> = VsgdLanes<V>;
    #[inline(always)]
    unsafe fn lanes<V: Vector<E = T>>(&self) -> VsgdLanes<V> {
        VsgdLanes {
            c: CommonV::new(&self.common),
            sg0: V::splat(self.sg0),
            shg0: V::splat(self.shg0),
            inv_pa2: V::splat(self.inv_pa2),
            pbg2: V::splat(self.pbg2),
            pbhg2: V::splat(self.pbhg2),
            rho1: V::splat(self.rho1),
            omr1: V::splat(self.omr1),
            rho2: V::splat(self.rho2),
            omr2: V::splat(self.omr2),
            eps: V::splat(self.eps),
            one: V::splat(T::ONE),
        }
    }
    #[inline(always)]
    unsafe fn update<V: Vector<E = T>>(&self, k: &VsgdLanes<V>, p0: V, g: V, st: &mut [V; 3]) -> V {
        let [mu, bg, bhg] = *st;
        let g = k.c.grad(g, p0);
        let p = k.c.decayed(p0);
        // sg, shg: 1/E[precision] of the systematic and observation noise.
        let (sg, shg) = if self.first {
            (k.sg0, k.shg0)
        } else {
            (bg.mul(k.inv_pa2), bhg.mul(k.inv_pa2))
        };
        let r = k.one.div(sg.add(shg));
        let wg = sg.mul(r); // weight of the observation
        let wm = shg.mul(r); // weight of the prior mean (the effective momentum)
        let mu_new = wg.mul(g).add(wm.mul(mu)); // μ' = wg·ĝ + wm·μ
        let var = sg.mul(wm); // σ² = sg·wm
        let d1 = mu_new.sub(mu);
        let d2 = mu_new.sub(g);
        let bg_new = k.pbg2.add(var).add(d1.mul(d1)); // pbg2 + σ² + (μ' − μ)²
        let bhg_new = k.pbhg2.add(var).add(d2.mul(d2)); // pbhg2 + σ² + (μ' − ĝ)²
        *st = [
            mu_new,
            k.omr1.mul(bg).add(k.rho1.mul(bg_new)),
            k.omr2.mul(bhg).add(k.rho2.mul(bhg_new)),
        ];
        // θ − η · μ' / (sqrt(σ² + μ'²) + eps)
        let den = var.add(mu_new.mul(mu_new)).sqrt().add(k.eps);
        p.sub(k.c.lr.mul(mu_new.div(den)))
    }
}

/// Lanes of [`ConstantVsgdScalars`].
#[derive(Clone, Copy)]
pub(crate) struct ConstantVsgdLanes<V> {
    c: CommonV<V>,
    v0: V,
    inv_pa2: V,
    pb2: V,
    k: V,
    inv_k1: V,
    rho: V,
    omr: V,
    eps: V,
}

/// Constant VSGD (docs/algorithms.md): state `[mug, b]`.
impl<T: Element> Rule<2> for ConstantVsgdScalars<T> {
    type E = T;
    type Lanes<V: Vector<E = T>> = ConstantVsgdLanes<V>;
    #[inline(always)]
    unsafe fn lanes<V: Vector<E = T>>(&self) -> ConstantVsgdLanes<V> {
        ConstantVsgdLanes {
            c: CommonV::new(&self.common),
            v0: V::splat(self.v0),
            inv_pa2: V::splat(self.inv_pa2),
            pb2: V::splat(self.pb2),
            k: V::splat(self.k),
            inv_k1: V::splat(self.inv_k1),
            rho: V::splat(self.rho),
            omr: V::splat(self.omr),
            eps: V::splat(self.eps),
        }
    }
    #[inline(always)]
    unsafe fn update<V: Vector<E = T>>(
        &self,
        k: &ConstantVsgdLanes<V>,
        p0: V,
        g: V,
        st: &mut [V; 2],
    ) -> V {
        let [mu, b] = *st;
        let g = k.c.grad(g, p0);
        let p = k.c.decayed(p0);
        let v = if self.first { k.v0 } else { b.mul(k.inv_pa2) };
        let mu_new = k.k.mul(mu).add(g).mul(k.inv_k1); // (K·μ + ĝ) / (K + 1)
        let var = v.mul(k.inv_k1); // σ² = v / (K + 1)
        let d1 = mu_new.sub(mu);
        let d2 = mu_new.sub(g);
        // pb2 + K·(σ² + (μ' − μ)²) + σ² + (μ' − ĝ)²
        let b_new = k
            .pb2
            .add(k.k.mul(var.add(d1.mul(d1))))
            .add(var)
            .add(d2.mul(d2));
        *st = [mu_new, k.omr.mul(b).add(k.rho.mul(b_new))];
        let den = var.add(mu_new.mul(mu_new)).sqrt().add(k.eps);
        p.sub(k.c.lr.mul(mu_new.div(den)))
    }
}

/// Lanes of [`AdamScalars`].
#[derive(Clone, Copy)]
pub(crate) struct AdamLanes<V> {
    c: CommonV<V>,
    beta1: V,
    omb1: V,
    beta2: V,
    omb2: V,
    step_size: V,
    bc2_sqrt: V,
    eps: V,
}

/// Adam and AdamW (torch semantics): state `[m, v]`.
impl<T: Element> Rule<2> for AdamScalars<T> {
    type E = T;
    type Lanes<V: Vector<E = T>> = AdamLanes<V>;
    #[inline(always)]
    unsafe fn lanes<V: Vector<E = T>>(&self) -> AdamLanes<V> {
        AdamLanes {
            c: CommonV::new(&self.common),
            beta1: V::splat(self.beta1),
            omb1: V::splat(self.omb1),
            beta2: V::splat(self.beta2),
            omb2: V::splat(self.omb2),
            step_size: V::splat(self.step_size),
            bc2_sqrt: V::splat(self.bc2_sqrt),
            eps: V::splat(self.eps),
        }
    }
    #[inline(always)]
    unsafe fn update<V: Vector<E = T>>(&self, k: &AdamLanes<V>, p0: V, g: V, st: &mut [V; 2]) -> V {
        let [m, v] = *st;
        let g = k.c.grad(g, p0);
        let p = k.c.decayed(p0);
        let m_new = k.beta1.mul(m).add(k.omb1.mul(g)); // β1·m + (1 − β1)·ĝ
        let v_new = k.beta2.mul(v).add(k.omb2.mul(g.mul(g))); // β2·v + (1 − β2)·ĝ²
        *st = [m_new, v_new];
        // θ − (η / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
        let den = v_new.sqrt().div(k.bc2_sqrt).add(k.eps);
        p.sub(k.step_size.mul(m_new.div(den)))
    }
}

/// Lanes of [`SgdmScalars`].
#[derive(Clone, Copy)]
pub(crate) struct SgdmLanes<V> {
    c: CommonV<V>,
    momentum: V,
    omd: V,
}

/// SGD with momentum (torch semantics): state `[momentum]`.
impl<T: Element> Rule<1> for SgdmScalars<T> {
    type E = T;
    type Lanes<V: Vector<E = T>> = SgdmLanes<V>;
    #[inline(always)]
    unsafe fn lanes<V: Vector<E = T>>(&self) -> SgdmLanes<V> {
        SgdmLanes {
            c: CommonV::new(&self.common),
            momentum: V::splat(self.momentum),
            omd: V::splat(self.omd),
        }
    }
    #[inline(always)]
    unsafe fn update<V: Vector<E = T>>(&self, k: &SgdmLanes<V>, p0: V, g: V, st: &mut [V; 1]) -> V {
        let g = k.c.grad(g, p0);
        let p = k.c.decayed(p0);
        // buf ← ĝ at t = 1, else momentum·buf + (1 − dampening)·ĝ
        let b = if self.first {
            g
        } else {
            k.momentum.mul(st[0]).add(k.omd.mul(g))
        };
        st[0] = b;
        let d = if self.nesterov {
            g.add(k.momentum.mul(b))
        } else {
            b
        };
        p.sub(k.c.lr.mul(d))
    }
}

/// How far ahead of a vector loop its streams' cache lines are requested, in bytes.
///
/// One core streaming five to eight arrays with a long computation per vector (VSGD: two
/// divisions and a square root) keeps too few loads in flight for its bandwidth: the hardware
/// prefetchers start over at every 4 KiB page and the out-of-order window is full of
/// arithmetic. Asking for each stream's line 2 KiB ahead made one-thread VSGD and Adam over a
/// 16M tensor 10–25% faster on the machines measured (docs/performance.md); it changes no bits.
pub(crate) const PREFETCH_AHEAD: usize = 2048;

/// Asks for the cache line [`PREFETCH_AHEAD`] bytes past `p` (a hint: never faults, whatever
/// the address; a no-op off x86 and under Miri).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a prefetch is a hint that does not access memory; SSE is part of x86-64.
    #[allow(unused_unsafe)]
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(PREFETCH_AHEAD))
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = (p, PREFETCH_AHEAD);
}

/// Applies `r` to the elements `[start, end)` (a multiple of `V::LANES` long) of the buffers.
///
/// # Safety
/// See [`Vector`]; every pointer valid for `end` elements, the written ones not aliased.
#[inline(always)]
unsafe fn lanes_loop<V: Vector, R: Rule<K, E = V::E>, const K: usize>(
    r: &R,
    c: &R::Lanes<V>,
    param: *mut V::E,
    grad: *const V::E,
    state: &[*mut V::E; K],
    start: usize,
    end: usize,
) {
    let mut i = start;
    while i < end {
        if V::LANES > 1 {
            prefetch(param.wrapping_add(i));
            prefetch(grad.wrapping_add(i));
            for a in state {
                prefetch(a.wrapping_add(i));
            }
        }
        let p = V::load(param.add(i));
        let g = V::load(grad.add(i));
        let mut st: [V; K] = core::array::from_fn(|j| V::load(state[j].add(i)));
        let p = r.update(c, p, g, &mut st);
        for (v, a) in st.iter().zip(state) {
            v.store(a.add(i));
        }
        p.store(param.add(i));
        i += V::LANES;
    }
}

/// Applies `r` to `n` elements: whole vectors of `V`, then the rest one element at a time with
/// the same rule.
///
/// # Safety
/// See [`Vector`]; every pointer valid for `n` elements, the written ones not aliased.
#[inline(always)]
pub(crate) unsafe fn run<V: Vector, R: Rule<K, E = V::E>, const K: usize>(
    r: &R,
    param: *mut V::E,
    grad: *const V::E,
    state: &[*mut V::E; K],
    n: usize,
) {
    let body = n - n % V::LANES;
    lanes_loop::<V, R, K>(r, &r.lanes::<V>(), param, grad, state, 0, body);
    if body < n {
        let c = r.lanes::<portable::Scalar<V::E>>();
        lanes_loop::<portable::Scalar<V::E>, R, K>(r, &c, param, grad, state, body, n);
    }
}

/// The kernel of `s`'s algorithm with vectors of type `V`.
///
/// # Safety
/// See [`Vector`].
///
/// # Panics
/// If `state` does not hold the algorithm's arrays, or a buffer is shorter than `param` (a
/// caller's bug; checked before any memory is touched).
#[inline(always)]
pub(crate) unsafe fn apply<V: Vector>(
    s: &Scalars<V::E>,
    param: &mut [V::E],
    grad: &[V::E],
    state: &mut [&mut [V::E]],
) {
    struct Apply<'a, 'b, V: Vector> {
        param: &'a mut [V::E],
        grad: &'a [V::E],
        state: &'a mut [&'b mut [V::E]],
    }
    impl<V: Vector> super::RuleVisitor<V::E> for Apply<'_, '_, V> {
        type Out = ();
        #[inline(always)]
        fn visit<R: Rule<K, E = V::E>, const K: usize>(self, r: &R) {
            let n = self.param.len();
            assert!(
                self.state.len() == K,
                "{} state arrays given, the algorithm has {K}",
                self.state.len()
            );
            assert!(self.grad.len() >= n && self.state.iter().all(|a| a.len() >= n));
            let ptrs: [*mut V::E; K] = core::array::from_fn(|j| self.state[j].as_mut_ptr());
            // SAFETY: every buffer holds at least `n` elements (checked above); the state
            // arrays and `param` are distinct `&mut` slices, so not aliased; the instruction
            // set is the caller's promise.
            unsafe { run::<V, R, K>(r, self.param.as_mut_ptr(), self.grad.as_ptr(), &ptrs, n) }
        }
    }
    s.visit(Apply::<V> { param, grad, state })
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
#[cfg_attr(
    not(any(
        target_arch = "x86",
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon"),
        all(target_arch = "wasm32", target_feature = "simd128")
    )),
    allow(dead_code)
)]
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
