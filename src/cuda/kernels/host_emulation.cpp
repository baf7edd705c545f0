// Host build of the CUDA kernels, for the tests (src/cuda/emulation.rs): multi_tensor.cu and
// rules.cuh compiled by g++ as plain C++ with -ffp-contract=off (no fused multiply-add), so the
// kernels' own source runs on the CPU and is compared with the Rust portable path bit for bit.
//
// Thread and block indices are thread_local variables; a launch visits every block and, in each,
// every thread in turn, running the kernel body to completion. That is exact for these kernels:
// no shared memory, no barriers, no warp intrinsics; threads of a launch touch disjoint elements,
// and the verdict flags they share are only set to 1.
//
// Each kernel NAME gets `extern "C" void NAME_host(unsigned grid, unsigned block, void** params)`,
// taking the same argument array as cuLaunchKernel.
#include <cmath>
#include <cstddef>
#include <utility>

#define VSGD_INLINE inline
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct vsgd_dim3 {
    unsigned int x, y, z;
};
static thread_local vsgd_dim3 threadIdx, blockIdx, blockDim, gridDim;

// The correctly rounded square roots of the device (sqrt.rn): IEEE sqrt on the host.
static inline float __fsqrt_rn(float x) { return std::sqrt(x); }
static inline double __dsqrt_rn(double x) { return std::sqrt(x); }

#include "multi_tensor.cu"

template <class... A, std::size_t... I>
static void vsgd_call(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<A*>(params[I])...);
}

template <class... A>
static void vsgd_launch(void (*kernel)(A...), unsigned int grid, unsigned int block, void** params) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned int b = 0; b < grid; b++) {
        for (unsigned int t = 0; t < block; t++) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            vsgd_call(kernel, params, std::index_sequence_for<A...>{});
        }
    }
}

#define VSGD_HOST_MT(name, S, P, MIN_BLOCKS) \
    extern "C" void name##_host(unsigned int g, unsigned int b, void** p) { vsgd_launch(name, g, b, p); }
VSGD_MULTI_TENSOR_KERNELS(VSGD_HOST_MT)

#define VSGD_HOST_UNFUSED(name) \
    extern "C" void name##_host(unsigned int g, unsigned int b, void** p) { vsgd_launch(name, g, b, p); }
VSGD_UNFUSED_KERNELS(VSGD_HOST_UNFUSED)
