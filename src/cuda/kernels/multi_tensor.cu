// Fused multi-tensor optimizer kernels: one launch steps every tensor of a step, in the manner
// of PyTorch's multi_tensor_apply. The rules are in rules.cuh; this file only walks tensors.
//
// Work is cut into chunks of `h.chunk` elements (65,536 in real launches); tensor i owns chunks
// first_chunk[i] .. first_chunk[i+1] (empty tensors are left out by the host). Blocks take
// chunks in a grid-stride loop and find their tensor by binary search over first_chunk, so the
// result does not depend on the grid or block shape (the host emulation tests several). The
// metadata (launch header, per-step scalars, tensor table) travels in the kernel arguments when
// it fits (VSGD_ARGS_SCALARS / VSGD_ARGS_TENSORS, under the 4 KiB argument limit of every CUDA
// version); otherwise the host copies the tables to device memory and the header points there.
//
// One entry point per algorithm and element type runs two phases over the same arguments:
// - phase SCAN: flags[t.flag] = 1 (and flags[h.any_flag] = 1) when tensor t's gradient holds
//   NaN or ±∞ (skipped under the propagate policy);
// - phase APPLY: the update of every chunk, except (skip) the tensors flagged, or (error) every
//   tensor when any is flagged. A skipped tensor is not touched at all.
// The host reads the flags back to learn the step's verdict.
//
// Header-free: no #include resolves under NVRTC except rules.cuh, which the compile script
// passes in memory (scripts/cuda/compile_kernels.py).
#include "rules.cuh"

#define VSGD_ARGS_SCALARS 4
#define VSGD_ARGS_TENSORS 48
// Elements each thread keeps in flight per iteration (loads issued before the arithmetic).
#define VSGD_ILP 4
// Threads per block of the multi-tensor launches (src/cuda/plan.rs: BLOCK).
#define VSGD_BLOCK 512

#define VSGD_PHASE_SCAN 0u
#define VSGD_PHASE_APPLY 1u
#define VSGD_POLICY_SKIP 0u
#define VSGD_POLICY_ERROR 1u
#define VSGD_POLICY_PROPAGATE 2u

// One tensor of a launch (64 bytes; src/cuda/layout.rs: TensorDesc).
struct VsgdTensorDesc {
    unsigned long long param;       // device address of the parameters (P)
    unsigned long long grad;        // device address of the gradient (P)
    unsigned long long state[3];    // device addresses of the state arrays (T), unused ones 0
    unsigned long long len;         // elements (> 0)
    unsigned long long first_chunk; // index of the tensor's first chunk
    unsigned int scalars;           // index into the scalars table
    unsigned int flag;              // index of the tensor's verdict flag
};

// The launch header (src/cuda/layout.rs: LaunchHeader).
struct VsgdLaunchHeader {
    unsigned long long tensors;      // device address of the tensor table; 0: inline (args.t)
    unsigned long long scalars;      // device address of the scalars table; 0: inline (args.s)
    unsigned long long flags;        // device address of the verdict flags (unsigned int)
    unsigned long long chunk;        // elements per chunk (> 0)
    unsigned long long total_chunks; // chunks of all tensors
    unsigned int n_tensors;          // tensors in the table (> 0)
    unsigned int policy;             // VSGD_POLICY_*
    unsigned int phase;              // VSGD_PHASE_*
    unsigned int any_flag;           // index of the flag set when any tensor is flagged
};

template <class S> struct VsgdArgs {
    VsgdLaunchHeader h;
    S s[VSGD_ARGS_SCALARS];
    VsgdTensorDesc t[VSGD_ARGS_TENSORS];
};

static_assert(sizeof(VsgdTensorDesc) == 64, "TensorDesc layout");
static_assert(sizeof(VsgdLaunchHeader) == 56, "LaunchHeader layout");
static_assert(sizeof(VsgdScalars<float>) == 13 * 4 + 8, "VsgdScalars layout");
static_assert(sizeof(VsgdScalars<double>) == 13 * 8 + 8, "VsgdScalars layout");
static_assert(sizeof(ConstantVsgdScalars<double>) == 11 * 8 + 8, "ConstantVsgdScalars layout");
static_assert(sizeof(AdamScalars<double>) == 10 * 8 + 8, "AdamScalars layout");
static_assert(sizeof(SgdmScalars<double>) == 5 * 8 + 8, "SgdmScalars layout");
static_assert(sizeof(VsgdArgs<VsgdScalars<double> >) <= 4096, "kernel arguments over 4 KiB");

template <class S>
VSGD_INLINE unsigned long long vsgd_first_chunk(const VsgdArgs<S>& a, unsigned int i) {
    return a.h.tensors ? ((const VsgdTensorDesc*)a.h.tensors)[i].first_chunk : a.t[i].first_chunk;
}

template <class S> VSGD_INLINE VsgdTensorDesc vsgd_tensor(const VsgdArgs<S>& a, unsigned int i) {
    return a.h.tensors ? ((const VsgdTensorDesc*)a.h.tensors)[i] : a.t[i];
}

template <class S> VSGD_INLINE S vsgd_scalars(const VsgdArgs<S>& a, unsigned int i) {
    return a.h.scalars ? ((const S*)a.h.scalars)[i] : a.s[i];
}

template <class S, typename P> VSGD_INLINE void vsgd_multi_tensor(const VsgdArgs<S>& a) {
    typedef typename S::Elem T;
    const unsigned int K = S::STATE;
    unsigned int* flags = (unsigned int*)a.h.flags;
    for (unsigned long long c = blockIdx.x; c < a.h.total_chunks; c += gridDim.x) {
        // The last tensor whose first chunk is <= c.
        unsigned int lo = 0, hi = a.h.n_tensors;
        while (hi - lo > 1) {
            unsigned int mid = lo + (hi - lo) / 2;
            if (vsgd_first_chunk(a, mid) <= c) lo = mid;
            else hi = mid;
        }
        const VsgdTensorDesc t = vsgd_tensor(a, lo);
        // This chunk: elements [start, start + n) of the tensor, n <= chunk < 2^31.
        const unsigned long long start = (c - t.first_chunk) * a.h.chunk;
        const unsigned long long rest = t.len - start;
        const unsigned int n = (unsigned int)(rest < a.h.chunk ? rest : a.h.chunk);
        const P* grad = (const P*)t.grad + start;
        if (a.h.phase == VSGD_PHASE_SCAN) {
            bool bad = false;
            for (unsigned int base = threadIdx.x; base < n; base += blockDim.x * VSGD_ILP) {
                T g[VSGD_ILP];
#pragma unroll
                for (unsigned int k = 0; k < VSGD_ILP; k++) {
                    const unsigned int i = base + k * blockDim.x;
                    g[k] = i < n ? vsgd_load<T>(grad[i]) : T(0);
                }
#pragma unroll
                for (unsigned int k = 0; k < VSGD_ILP; k++) bad |= !vsgd_finite(g[k]);
            }
            if (bad) {
                flags[t.flag] = 1u;
                flags[a.h.any_flag] = 1u;
            }
            continue;
        }
        if (a.h.policy == VSGD_POLICY_SKIP && flags[t.flag]) continue;
        if (a.h.policy == VSGD_POLICY_ERROR && flags[a.h.any_flag]) return;
        const S s = vsgd_scalars(a, t.scalars);
        P* param = (P*)t.param + start;
        T* st[3] = {(T*)t.state[0] + start, (T*)t.state[1] + start, (T*)t.state[2] + start};
        const unsigned int stride = blockDim.x * VSGD_ILP;
        for (unsigned int base = threadIdx.x; base < n; base += stride) {
            P p[VSGD_ILP], g[VSGD_ILP];
            T v[VSGD_ILP][3];
            // All loads first, so that each thread has VSGD_ILP elements in flight.
#pragma unroll
            for (unsigned int k = 0; k < VSGD_ILP; k++) {
                const unsigned int i = base + k * blockDim.x;
                p[k] = 0;
                g[k] = 0;
#pragma unroll
                for (unsigned int j = 0; j < 3; j++) v[k][j] = 0;
                if (i < n) {
                    p[k] = param[i];
                    g[k] = grad[i];
#pragma unroll
                    for (unsigned int j = 0; j < K; j++) v[k][j] = st[j][i];
                }
            }
#pragma unroll
            for (unsigned int k = 0; k < VSGD_ILP; k++) {
                const unsigned int i = base + k * blockDim.x;
                if (i < n) {
                    vsgd_rule(s, p[k], g[k], v[k]);
                    param[i] = p[k];
#pragma unroll
                    for (unsigned int j = 0; j < K; j++) st[j][i] = v[k][j];
                }
            }
        }
    }
}

// Every entry point: X(name, scalars type, parameter type, blocks per SM). f32 kernels fit
// 64 registers (two 512-thread blocks per SM); f64 kernels need more and get one.
#define VSGD_MULTI_TENSOR_KERNELS(X)                                   \
    X(vsgd_mt_vsgd_f32, VsgdScalars<float>, float, 2)                  \
    X(vsgd_mt_vsgd_f64, VsgdScalars<double>, double, 1)                \
    X(vsgd_mt_constant_vsgd_f32, ConstantVsgdScalars<float>, float, 2) \
    X(vsgd_mt_constant_vsgd_f64, ConstantVsgdScalars<double>, double, 1) \
    X(vsgd_mt_adam_f32, AdamScalars<float>, float, 2)                  \
    X(vsgd_mt_adam_f64, AdamScalars<double>, double, 1)                \
    X(vsgd_mt_sgdm_f32, SgdmScalars<float>, float, 2)                  \
    X(vsgd_mt_sgdm_f64, SgdmScalars<double>, double, 1)

#define VSGD_DEFINE_MT(name, S, P, MIN_BLOCKS)                                          \
    extern "C" __global__ void __launch_bounds__(VSGD_BLOCK, MIN_BLOCKS) name(const VsgdArgs<S> a) { \
        vsgd_multi_tensor<S, P>(a);                                                      \
    }
VSGD_MULTI_TENSOR_KERNELS(VSGD_DEFINE_MT)

// ---------------------------------------------------------------- unfused VSGD (benchmark)
// The same VSGD step as four plain elementwise passes over global memory (μ', σ² written to
// scratch arrays between passes): what a framework without a fused kernel does. Only the
// bandwidth comparison of scripts/gpu-check.sh uses it; it gives the fused kernel's bits.
#define VSGD_GRID_STRIDE(i, n)                                                          \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; \
         i < (n); i += (unsigned long long)gridDim.x * blockDim.x)

// Pass 1: μ', σ² from ĝ, θ, μ, bg, bhg.
extern "C" __global__ void vsgd_unfused_f32_posterior(const VsgdScalars<float> s, const float* grad,
                                                      const float* param, const float* mug,
                                                      const float* bg, const float* bhg,
                                                      float* mu_new, float* var,
                                                      unsigned long long n) {
    VSGD_GRID_STRIDE(i, n) {
        float g = vsgd_grad(s.flags, s.l2, grad[i], param[i]);
        float sg, shg;
        vsgd_variances(s, bg[i], bhg[i], sg, shg);
        vsgd_posterior(sg, shg, g, mug[i], mu_new[i], var[i]);
    }
}

// Pass 2: bg.
extern "C" __global__ void vsgd_unfused_f32_bg(const VsgdScalars<float> s, float* bg,
                                               const float* mug, const float* mu_new,
                                               const float* var, unsigned long long n) {
    VSGD_GRID_STRIDE(i, n) { bg[i] = vsgd_rate(s.omr1, s.rho1, bg[i], s.pbg2, var[i], mu_new[i] - mug[i]); }
}

// Pass 3: bhg (ĝ recomputed from the gradient and the old θ).
extern "C" __global__ void vsgd_unfused_f32_bhg(const VsgdScalars<float> s, float* bhg,
                                                const float* grad, const float* param,
                                                const float* mu_new, const float* var,
                                                unsigned long long n) {
    VSGD_GRID_STRIDE(i, n) {
        float g = vsgd_grad(s.flags, s.l2, grad[i], param[i]);
        bhg[i] = vsgd_rate(s.omr2, s.rho2, bhg[i], s.pbhg2, var[i], mu_new[i] - g);
    }
}

// Pass 4: θ and μ.
extern "C" __global__ void vsgd_unfused_f32_param(const VsgdScalars<float> s, float* param,
                                                  float* mug, const float* mu_new,
                                                  const float* var, unsigned long long n) {
    VSGD_GRID_STRIDE(i, n) {
        float p = vsgd_decayed(s.flags, s.decay, param[i]);
        param[i] = vsgd_param_update(p, s.lr, mu_new[i], var[i], s.eps);
        mug[i] = mu_new[i];
    }
}

#define VSGD_UNFUSED_KERNELS(X) \
    X(vsgd_unfused_f32_posterior) X(vsgd_unfused_f32_bg) X(vsgd_unfused_f32_bhg) X(vsgd_unfused_f32_param)
