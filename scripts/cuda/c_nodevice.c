/* The CUDA exports of libvsgd from C, without a GPU: clean result codes and messages, never a
 * crash. Run by scripts/test.d/40-cuda.sh with the stub drivers; argv[1] is the expected
 * setting ("none", "cuinit" or "broken"). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "vsgd.h"

static int failures = 0;
static void expect(const char *what, vsgd_result got, uint32_t want, const char *text) {
    char msg[512] = {0};
    size_t len = 0;
    vsgd_last_error(msg, sizeof msg, &len);
    if ((uint32_t)got != want || (text && !strstr(msg, text))) {
        fprintf(stderr, "%s: got %u (%s), want %u containing \"%s\"\n", what, (unsigned)got, msg,
                (unsigned)want, text ? text : "");
        failures++;
    } else {
        printf("%s: %u %s\n", what, (unsigned)got, msg);
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "none";
    vsgd_config *c = NULL;
    if (vsgd_config_new(VSGD_ALGORITHM_ADAM, &c) != VSGD_RESULT_OK) return 2;
    vsgd_cuda_tensor t = {0x1000, 0x2000, {0x3000, 0x4000, 0}, 16, 1, 1e-3, VSGD_DTYPE_F32, 0};
    expect("null config", vsgd_cuda_step(NULL, VSGD_POLICY_SKIP, &t, 1, sizeof t, 64, NULL),
           VSGD_RESULT_NULL_PARAMETER, "config");
    vsgd_cuda_tensor bad = t;
    bad.t = 0;
    expect("t = 0", vsgd_cuda_step(c, VSGD_POLICY_SKIP, &bad, 1, sizeof t, 64, NULL),
           VSGD_RESULT_INVALID_STEP, NULL);
    expect("wrong struct size", vsgd_cuda_step(c, VSGD_POLICY_SKIP, &t, 1, 8, 64, NULL),
           VSGD_RESULT_INVALID_STRUCT_SIZE, "tensor_size");
    int broken = strcmp(mode, "broken") == 0;
    expect("available", vsgd_cuda_available(), broken ? VSGD_RESULT_OK : VSGD_RESULT_NO_DEVICE,
           broken ? NULL : "no CUDA device");
    expect("step", vsgd_cuda_step(c, VSGD_POLICY_SKIP, &t, 1, sizeof t, 64, NULL),
           broken ? VSGD_RESULT_CUDA_ERROR : VSGD_RESULT_NO_DEVICE,
           broken ? "CUDA_ERROR_UNKNOWN" : "no CUDA device");
    vsgd_config_free(c);
    return failures ? 1 : 0;
}
