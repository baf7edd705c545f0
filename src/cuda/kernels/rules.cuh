// The per-element rules of docs/algorithms.md in CUDA C: the one second copy of
// src/kernels/portable.rs, shared by the GPU kernels (multi_tensor.cu, compiled by NVRTC) and
// their host build (host_emulation.cpp, compiled by g++ with -ffp-contract=off), which the tests
// compare with the portable path bit for bit.
//
// Rules of this file:
// - Header-free: NVRTC resolves no system header, so no #include here and no <stdint.h>.
// - The same sequence of correctly rounded IEEE-754 operations as the portable path, operand
//   for operand: every per-step constant (ρ = t^(−κ), 1 − η·λ, bias corrections, 1/pa2, …) is
//   computed on the host in f64 by `Scalars::new` and rounded to T, exactly as for the CPU; the
//   device does only the per-element + − × ÷ sqrt. Kernels are compiled with --fmad=false
//   (no contraction into fused multiply-add), IEEE division and square root; the PTX lint in
//   scripts/test.d/40-cuda.sh checks that.
// - T is the type of the state and of the arithmetic (float or double). Parameters and
//   gradients are loaded and stored through vsgd_load/vsgd_store (identity for now), so a later
//   bf16/f16 parameter type with f32 state adds conversions there and nothing here.
//
// Each scalars struct mirrors a #[repr(C)] struct in src/cuda/layout.rs (sizes checked on both
// sides); `pad` leaves no implicit padding in any of them (the host copies their bytes).
#ifndef VSGD_RULES_CUH
#define VSGD_RULES_CUH

#ifndef VSGD_INLINE
#define VSGD_INLINE __device__ __forceinline__
#endif

// Bits of the `flags` word of every scalars struct.
#define VSGD_FLAG_DECAY 1u     // weight_decay != 0: θ·(1 − η·λ)
#define VSGD_FLAG_L2 2u        // l2 != 0: ĝ + l2·θ
#define VSGD_FLAG_MAXIMIZE 4u  // negate the gradient first
#define VSGD_FLAG_FIRST 8u     // t = 1 (VSGD, Constant VSGD: prior variances; SGDM: buf = ĝ)
#define VSGD_FLAG_NESTEROV 16u // SGDM look-ahead

// Correctly rounded square root, whatever the compiler flags (sqrt.rn).
VSGD_INLINE float vsgd_sqrt(float x) { return __fsqrt_rn(x); }
VSGD_INLINE double vsgd_sqrt(double x) { return __dsqrt_rn(x); }

// Storage type P of parameters and gradients to arithmetic type T and back.
template <typename T, typename P> VSGD_INLINE T vsgd_load(P x) { return x; }
template <typename P, typename T> VSGD_INLINE P vsgd_store(T x) { return x; }

// Common::grad: ĝ, negated if maximize, plus l2·θ (θ before the decay).
template <typename T> VSGD_INLINE T vsgd_grad(unsigned int flags, T l2, T g, T p) {
    if (flags & VSGD_FLAG_MAXIMIZE) g = -g;
    if (flags & VSGD_FLAG_L2) g = g + l2 * p;
    return g;
}

// Common::decayed: θ·(1 − η·λ), or θ when λ = 0.
template <typename T> VSGD_INLINE T vsgd_decayed(unsigned int flags, T decay, T p) {
    return (flags & VSGD_FLAG_DECAY) ? p * decay : p;
}

// θ − η·μ'/(sqrt(σ² + μ'²) + eps): the update of VSGD and Constant VSGD.
template <typename T> VSGD_INLINE T vsgd_param_update(T p, T lr, T mu_new, T var, T eps) {
    return p - lr * (mu_new / (vsgd_sqrt(var + mu_new * mu_new) + eps));
}

// ---------------------------------------------------------------- VSGD
template <typename T> struct VsgdScalars {
    typedef T Elem;
    enum { STATE = 3 }; // mug, bg, bhg
    T lr, decay, l2;
    T sg0, shg0, inv_pa2, pbg2, pbhg2, rho1, omr1, rho2, omr2, eps;
    unsigned int flags, pad;
};

// The prior-or-state variances (sg, shg).
template <typename T>
VSGD_INLINE void vsgd_variances(const VsgdScalars<T>& s, T bg, T bhg, T& sg, T& shg) {
    if (s.flags & VSGD_FLAG_FIRST) {
        sg = s.sg0;
        shg = s.shg0;
    } else {
        sg = bg * s.inv_pa2;
        shg = bhg * s.inv_pa2;
    }
}

// Posterior mean μ' and variance σ² from the variances, the gradient and the old mean.
template <typename T>
VSGD_INLINE void vsgd_posterior(T sg, T shg, T g, T mu, T& mu_new, T& var) {
    T r = T(1) / (sg + shg);
    T wg = sg * r;
    T wm = shg * r;
    mu_new = wg * g + wm * mu;
    var = sg * wm;
}

// (1 − ρ)·b + ρ·(prior + σ² + d²): the SVI update of bg (d = μ' − μ) and bhg (d = μ' − ĝ).
template <typename T> VSGD_INLINE T vsgd_rate(T omr, T rho, T b, T prior, T var, T d) {
    T b_new = prior + var + d * d;
    return omr * b + rho * b_new;
}

template <typename T, typename P>
VSGD_INLINE void vsgd_rule(const VsgdScalars<T>& s, P& param, P grad, T* st) {
    T p0 = vsgd_load<T>(param);
    T g = vsgd_grad(s.flags, s.l2, vsgd_load<T>(grad), p0);
    T p = vsgd_decayed(s.flags, s.decay, p0);
    T sg, shg, mu_new, var;
    vsgd_variances(s, st[1], st[2], sg, shg);
    T mu = st[0];
    vsgd_posterior(sg, shg, g, mu, mu_new, var);
    st[1] = vsgd_rate(s.omr1, s.rho1, st[1], s.pbg2, var, mu_new - mu);
    st[2] = vsgd_rate(s.omr2, s.rho2, st[2], s.pbhg2, var, mu_new - g);
    st[0] = mu_new;
    param = vsgd_store<P>(vsgd_param_update(p, s.lr, mu_new, var, s.eps));
}

// ---------------------------------------------------------------- Constant VSGD
template <typename T> struct ConstantVsgdScalars {
    typedef T Elem;
    enum { STATE = 2 }; // mug, b
    T lr, decay, l2;
    T v0, inv_pa2, pb2, k, inv_k1, rho, omr, eps;
    unsigned int flags, pad;
};

template <typename T, typename P>
VSGD_INLINE void vsgd_rule(const ConstantVsgdScalars<T>& s, P& param, P grad, T* st) {
    T p0 = vsgd_load<T>(param);
    T g = vsgd_grad(s.flags, s.l2, vsgd_load<T>(grad), p0);
    T p = vsgd_decayed(s.flags, s.decay, p0);
    T v = (s.flags & VSGD_FLAG_FIRST) ? s.v0 : st[1] * s.inv_pa2;
    T mu = st[0];
    T mu_new = (s.k * mu + g) * s.inv_k1;
    T var = v * s.inv_k1;
    T d1 = mu_new - mu;
    T d2 = mu_new - g;
    T b_new = s.pb2 + s.k * (var + d1 * d1) + var + d2 * d2;
    st[1] = s.omr * st[1] + s.rho * b_new;
    st[0] = mu_new;
    param = vsgd_store<P>(vsgd_param_update(p, s.lr, mu_new, var, s.eps));
}

// ---------------------------------------------------------------- Adam / AdamW
template <typename T> struct AdamScalars {
    typedef T Elem;
    enum { STATE = 2 }; // m, v
    T lr, decay, l2;
    T beta1, omb1, beta2, omb2, step_size, bc2_sqrt, eps;
    unsigned int flags, pad;
};

template <typename T, typename P>
VSGD_INLINE void vsgd_rule(const AdamScalars<T>& s, P& param, P grad, T* st) {
    T p0 = vsgd_load<T>(param);
    T g = vsgd_grad(s.flags, s.l2, vsgd_load<T>(grad), p0);
    T p = vsgd_decayed(s.flags, s.decay, p0);
    T m_new = s.beta1 * st[0] + s.omb1 * g;
    T v_new = s.beta2 * st[1] + s.omb2 * (g * g);
    st[0] = m_new;
    st[1] = v_new;
    T den = vsgd_sqrt(v_new) / s.bc2_sqrt + s.eps;
    param = vsgd_store<P>(p - s.step_size * (m_new / den));
}

// ---------------------------------------------------------------- SGD with momentum
template <typename T> struct SgdmScalars {
    typedef T Elem;
    enum { STATE = 1 }; // momentum_buffer
    T lr, decay, l2;
    T momentum, omd;
    unsigned int flags, pad;
};

template <typename T, typename P>
VSGD_INLINE void vsgd_rule(const SgdmScalars<T>& s, P& param, P grad, T* st) {
    T p0 = vsgd_load<T>(param);
    T g = vsgd_grad(s.flags, s.l2, vsgd_load<T>(grad), p0);
    T p = vsgd_decayed(s.flags, s.decay, p0);
    T b = (s.flags & VSGD_FLAG_FIRST) ? g : s.momentum * st[0] + s.omd * g;
    st[0] = b;
    T d = (s.flags & VSGD_FLAG_NESTEROV) ? g + s.momentum * b : b;
    param = vsgd_store<P>(p - s.lr * d);
}

// Finite: not NaN, not ±∞ (x − x is 0 exactly for finite x, NaN otherwise).
template <typename T> VSGD_INLINE bool vsgd_finite(T x) { return x - x == T(0); }

#endif
