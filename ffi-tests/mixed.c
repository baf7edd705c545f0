/* The steps for any type on a handle (vsgd_optimizer_step, vsgd_optimizer_step_tensor) over a
 * model of every kind of tensor: float, double, bfloat16 and binary16 parameters with float,
 * double or bfloat16 state. One all-tensor step gives each tensor the bits of stepping it
 * alone (the any-type single-tensor step, and the typed float/double ones); gradient clipping
 * takes one norm over every type. usage: mixed */
#include <math.h>
#include <stdint.h>

#include "common.h"

enum { TENSORS = 6, STEPS = 3 };

static const vsgd_dtype PARAM[TENSORS] = {VSGD_DTYPE_F32, VSGD_DTYPE_BF16, VSGD_DTYPE_F64,
                                          VSGD_DTYPE_F16, VSGD_DTYPE_BF16, VSGD_DTYPE_F32};
static const vsgd_dtype STATE[TENSORS] = {VSGD_DTYPE_F32, VSGD_DTYPE_F32, VSGD_DTYPE_F64,
                                          VSGD_DTYPE_F32, VSGD_DTYPE_BF16, VSGD_DTYPE_BF16};
static const size_t LEN[TENSORS] = {5, 300, 7, 1029, 64, 33};

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint32_t next_u32(void) {
    rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(rng_state >> 32);
}
/* A value in [-1, 1). */
static float unit(void) { return (float)(next_u32() >> 8) / 8388608.0f - 1.0f; }

static size_t elem_size(vsgd_dtype d) {
    return d == VSGD_DTYPE_F64 ? 8 : d == VSGD_DTYPE_F32 ? 4 : 2;
}

/* `n` random elements of type `d` into `p`. */
static void fill(vsgd_dtype d, void *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = unit();
        uint32_t bits;
        memcpy(&bits, &x, sizeof bits);
        switch (d) {
        case VSGD_DTYPE_F32: ((float *)p)[i] = x; break;
        case VSGD_DTYPE_F64: ((double *)p)[i] = (double)x; break;
        case VSGD_DTYPE_BF16: ((uint16_t *)p)[i] = (uint16_t)(bits >> 16); break;
        default: /* binary16: sign, exponent 10..14 (magnitudes 2^-5 .. 1), random mantissa */
            ((uint16_t *)p)[i] = (uint16_t)((bits >> 31 << 15) | ((10 + bits % 5) << 10) | ((bits >> 8) & 0x3ff));
        }
    }
}

static vsgd_optimizer *model(void) {
    vsgd_config *c = NULL;
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_VSGD, &c));
    CHECK_OK(vsgd_config_set(c, "lr", 0.05));
    vsgd_optimizer *h = NULL;
    CHECK_OK(vsgd_optimizer_new(c, &h));
    vsgd_config_free(c);
    for (size_t i = 0; i < TENSORS; i++) {
        size_t id = 99;
        CHECK_OK(vsgd_optimizer_add_tensor_mixed(h, &LEN[i], 1, PARAM[i], STATE[i], 40 + i, NULL, 0, &id));
        CHECK(id == i);
    }
    return h;
}

static unsigned char *save(const vsgd_optimizer *h, size_t *len) {
    size_t need = 0;
    CHECK(vsgd_optimizer_save(h, NULL, 0, &need) == VSGD_RESULT_BUFFER_TOO_SMALL);
    unsigned char *buf = malloc(need);
    CHECK(buf != NULL);
    CHECK_OK(vsgd_optimizer_save(h, buf, need, len));
    return buf;
}

static void same_bits_as_each_tensor_alone(void) {
    vsgd_optimizer *all = model(), *alone = model();
    void *pa[TENSORS], *pb[TENSORS], *g[TENSORS];
    for (size_t i = 0; i < TENSORS; i++) {
        size_t bytes = LEN[i] * elem_size(PARAM[i]);
        pa[i] = malloc(bytes);
        pb[i] = malloc(bytes);
        g[i] = malloc(bytes);
        CHECK(pa[i] && pb[i] && g[i]);
        fill(PARAM[i], pa[i], LEN[i]);
        memcpy(pb[i], pa[i], bytes);
    }
    for (int s = 0; s < STEPS; s++) {
        for (size_t i = 0; i < TENSORS; i++) fill(PARAM[i], g[i], LEN[i]);
        vsgd_step_report r = {sizeof r, 0, 0};
        CHECK_OK(vsgd_optimizer_step(all, pa, (const void *const *)g, LEN, TENSORS, &r));
        CHECK(r.applied == TENSORS && r.skipped == 0);
        for (size_t i = 0; i < TENSORS; i++) {
            vsgd_step_outcome o = 42;
            if (PARAM[i] == VSGD_DTYPE_F32 && STATE[i] == VSGD_DTYPE_F32) {
                CHECK_OK(vsgd_optimizer_step_tensor_f32(alone, i, pb[i], g[i], LEN[i], &o));
            } else if (PARAM[i] == VSGD_DTYPE_F64) {
                CHECK_OK(vsgd_optimizer_step_tensor_f64(alone, i, pb[i], g[i], LEN[i], &o));
            } else {
                CHECK_OK(vsgd_optimizer_step_tensor(alone, i, pb[i], g[i], LEN[i], &o));
            }
            CHECK(o == VSGD_STEP_APPLIED);
        }
    }
    for (size_t i = 0; i < TENSORS; i++) {
        if (memcmp(pa[i], pb[i], LEN[i] * elem_size(PARAM[i])) != 0) {
            fprintf(stderr, "mixed.c: tensor %zu: one step over all tensors differs from stepping it alone\n", i);
            exit(1);
        }
    }
    /* The whole state too: the checkpoints are the same bytes (the schedule clock is the
     * default, per tensor: no global counter differs). */
    size_t la = 0, lb = 0;
    unsigned char *ca = save(all, &la), *cb = save(alone, &lb);
    CHECK(la == lb && memcmp(ca, cb, la) == 0);
    free(ca);
    free(cb);
    for (size_t i = 0; i < TENSORS; i++) {
        free(pa[i]);
        free(pb[i]);
        free(g[i]);
    }
    vsgd_optimizer_free(all);
    vsgd_optimizer_free(alone);
    printf("mixed: %d steps of %d tensors of every type: the bits of each tensor stepped alone\n", STEPS, TENSORS);
}

/* Gradients that are small multiples of 1/8: every sum of squares is exact, so the norm the
 * library reports must be the exact norm over both tensors. */
static void clipping_takes_one_norm(void) {
    vsgd_optimizer *h = NULL;
    vsgd_config *c = NULL;
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_ADAM, &c));
    CHECK_OK(vsgd_optimizer_new(c, &h));
    vsgd_config_free(c);
    CHECK_OK(vsgd_optimizer_set_clip_norm(h, 1.0));
    size_t id = 0, n3 = 3, n2 = 2;
    CHECK_OK(vsgd_optimizer_add_tensor(h, &n3, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    CHECK_OK(vsgd_optimizer_add_tensor(h, &n2, 1, VSGD_DTYPE_BF16, NULL, 0, &id));
    float p0[3] = {1, 2, 3}, g0[3] = {0.5f, -1.25f, 2};
    uint16_t p1[2] = {0x3f80, 0x3f80}, g1[2] = {0x4040, 0xbf00}; /* bfloat16 3 and -0.5 */
    void *ps[2] = {p0, p1};
    const void *gs[2] = {g0, g1};
    size_t lens[2] = {3, 2};
    CHECK_OK(vsgd_optimizer_step(h, ps, gs, lens, 2, NULL));
    double norm = -1;
    CHECK_OK(vsgd_optimizer_last_grad_norm(h, &norm));
    double exact = sqrt(0.25 + 1.5625 + 4 + 9 + 0.25);
    if (norm != exact) {
        fprintf(stderr, "mixed.c: clipping norm %.17g, expected %.17g over both tensors\n", norm, exact);
        exit(1);
    }
    vsgd_optimizer_free(h);
    printf("mixed: gradient clipping took one norm over a float and a bfloat16 tensor\n");
}

int main(void) {
    same_bits_as_each_tensor_alone();
    clipping_takes_one_norm();
    return 0;
}
