/* A fake CUDA driver (libcuda.so.1) over host memory, for the GPU handler's tests on machines
 * without a GPU (bindings/jax/tests/cuda_handler.rs, VSGD_CUDA_STUB=fake; built by
 * scripts/test.d/40-jax.sh).
 *
 * "Device" addresses are host addresses: copies are memcpy, stream-ordered allocations are
 * malloc. One stream exists, FAKE_STREAM, in one context, FAKE_CTX; a call on any other stream
 * fails with CUDA_ERROR_INVALID_HANDLE, so a handler that used another stream than XLA's would
 * fail. Modules load (any image), functions are their names, launches run nothing: each is
 * logged. Every call that touches a stream is logged too, per thread, for the test to read
 * (fake_cuda_log). Every other function the core checks for returns CUDA_ERROR_UNKNOWN.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#define FAKE_STREAM ((void *)0x5151)
#define FAKE_CTX ((void *)0xC7C7)
#define OK 0
#define INVALID_HANDLE 400
#define UNKNOWN 999

typedef unsigned long long dptr;

static __thread char log_buf[8192];
static __thread void *current;

static void note(const char *what, void *stream) {
    size_t n = strlen(log_buf);
    snprintf(log_buf + n, sizeof log_buf - n, "%s%s@%lx", n ? " " : "", what,
             (unsigned long)stream);
}

const char *fake_cuda_log(void) { return log_buf; }
void fake_cuda_reset(void) { log_buf[0] = 0; }

int cuInit(unsigned flags) { (void)flags; return OK; }
int cuDriverGetVersion(int *v) { *v = 12090; return OK; }
int cuStreamGetCtx(void *s, void **ctx) {
    if (s != FAKE_STREAM) return INVALID_HANDLE;
    *ctx = FAKE_CTX;
    return OK;
}
int cuCtxGetCurrent(void **c) { *c = current; return OK; }
int cuCtxSetCurrent(void *c) {
    if (c != NULL && c != FAKE_CTX) return INVALID_HANDLE;
    current = c;
    return OK;
}
int cuCtxGetId(void *c, unsigned long long *id) {
    if (c != FAKE_CTX) return INVALID_HANDLE;
    *id = 1;
    return OK;
}
int cuModuleLoadData(void **m, const void *image) {
    (void)image;
    if (current != FAKE_CTX) return INVALID_HANDLE;
    *m = (void *)0x30D;
    return OK;
}
int cuModuleGetFunction(void **f, void *m, const char *name) {
    (void)m;
    *f = strdup(name);
    return *f ? OK : UNKNOWN;
}
int cuModuleUnload(void *m) { (void)m; return OK; }
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shared, void *s, void **params, void **extra) {
    (void)gx, (void)gy, (void)gz, (void)bx, (void)by, (void)bz, (void)shared, (void)params,
        (void)extra;
    if (s != FAKE_STREAM || current != FAKE_CTX) return INVALID_HANDLE;
    char what[160];
    snprintf(what, sizeof what, "launch:%s", (const char *)f);
    note(what, s);
    return OK;
}
int cuMemcpyDtoHAsync_v2(void *dst, dptr src, size_t n, void *s) {
    if (s != FAKE_STREAM) return INVALID_HANDLE;
    memcpy(dst, (void *)src, n);
    note("dtoh", s);
    return OK;
}
int cuMemcpyDtoDAsync_v2(dptr dst, dptr src, size_t n, void *s) {
    if (s != FAKE_STREAM) return INVALID_HANDLE;
    memcpy((void *)dst, (void *)src, n);
    note("dtod", s);
    return OK;
}
int cuMemcpyHtoDAsync_v2(dptr dst, const void *src, size_t n, void *s) {
    if (s != FAKE_STREAM) return INVALID_HANDLE;
    memcpy((void *)dst, src, n);
    note("htod", s);
    return OK;
}
int cuMemsetD8Async(dptr dst, unsigned char v, size_t n, void *s) {
    if (s != FAKE_STREAM) return INVALID_HANDLE;
    memset((void *)dst, v, n);
    note("memset", s);
    return OK;
}
int cuMemAllocAsync(dptr *p, size_t n, void *s) {
    if (s != FAKE_STREAM) return INVALID_HANDLE;
    *p = (dptr)malloc(n);
    note("alloc", s);
    return *p ? OK : UNKNOWN;
}
int cuMemFreeAsync(dptr p, void *s) {
    if (s != FAKE_STREAM) return INVALID_HANDLE;
    free((void *)p);
    note("free", s);
    return OK;
}
int cuStreamSynchronize(void *s) {
    if (s != FAKE_STREAM) return INVALID_HANDLE;
    note("sync", s);
    return OK;
}

/* The rest of what vsgd::cuda::init checks for: present, failing. */
#define FAILS(name) int name(void) { return UNKNOWN; }
FAILS(cuDeviceGet) FAILS(cuDeviceGetCount) FAILS(cuDeviceGetAttribute)
FAILS(cuDevicePrimaryCtxRetain) FAILS(cuDevicePrimaryCtxRelease_v2) FAILS(cuCtxSynchronize)
FAILS(cuMemAlloc_v2) FAILS(cuMemFree_v2) FAILS(cuMemHostAlloc) FAILS(cuMemFreeHost)
FAILS(cuMemsetD8_v2) FAILS(cuMemcpyHtoD_v2) FAILS(cuMemcpyDtoH_v2) FAILS(cuStreamCreate)
FAILS(cuStreamDestroy_v2) FAILS(cuStreamWaitEvent) FAILS(cuEventCreate) FAILS(cuEventRecord)
FAILS(cuEventSynchronize) FAILS(cuEventElapsedTime) FAILS(cuEventDestroy_v2)
