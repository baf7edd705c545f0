/* Bad input for every function of the C ABI: NULL pointers, zero and mismatched lengths,
 * misaligned and overlapping buffers, invalid configurations, unknown enum values, non-UTF-8
 * strings, a handle of the wrong algorithm. Each row states the exact result code expected;
 * every failure must also leave a message naming the function (vsgd_last_error), and failed
 * steps must change nothing. Run under ASan/UBSan and valgrind, so "no crash, no undefined
 * behaviour" is checked too. run.sh checks that every exported function appears here.
 *
 * usage: bad_input SCRATCH_DIR   (the checkpoint file rows write and remove files there) */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

static int rows, failures;

/* The function a row calls: the text of the call up to '('. */
static void function_name(const char *call, char *out, size_t cap) {
    size_t n = strcspn(call, "(");
    if (n >= cap) n = cap - 1;
    memcpy(out, call, n);
    out[n] = '\0';
}

/* Leaves a message from another function, so a row's message cannot be a stale one. */
static void reset_message(const char *call) {
    const char *p;
    size_t n;
    if (strncmp(call, "vsgd_last_error", 15) == 0) return; /* it reports the message */
    if (strncmp(call, "vsgd_state_count", 16) != 0)
        CHECK(vsgd_state_count(9999, &n) == VSGD_RESULT_INVALID_ENUM);
    else
        CHECK(vsgd_algorithm_name(9999, &p) == VSGD_RESULT_INVALID_ENUM);
}

static void row(const char *call, int line, vsgd_result want, vsgd_result got) {
    rows++;
    if (got != want) {
        failures++;
        fprintf(stderr, "bad_input.c:%d: %s\n  want %s, got %s (%s)\n", line, call,
                vsgd_result_name(want), vsgd_result_name(got), last_error());
        return;
    }
    char fn[128];
    function_name(call, fn, sizeof fn);
    /* vsgd_last_error reports messages, it never records its own. */
    if (want == VSGD_RESULT_OK || strcmp(fn, "vsgd_last_error") == 0) return;
    const char *msg = last_error();
    size_t n = strlen(fn);
    if (strncmp(msg, fn, n) != 0 || strncmp(msg + n, ": ", 2) != 0 || strlen(msg) < n + 6) {
        failures++;
        fprintf(stderr, "bad_input.c:%d: %s\n  message does not name the function: '%s'\n",
                line, call, msg);
    }
}

#define ROW(want, call)                           \
    do {                                          \
        reset_message(#call);                     \
        row(#call, __LINE__, (want), (call));     \
    } while (0)

#define OK VSGD_RESULT_OK
#define NUL VSGD_RESULT_NULL_PARAMETER
#define ENUM VSGD_RESULT_INVALID_ENUM

static const char bad_utf8[] = {(char)0xff, (char)0xfe, 'x', 0};

/* A pointer that is not aligned for float/double/size_t. Only its address is used: the
 * library must refuse it before any access. */
static void *misaligned(void *p) { return (void *)((uintptr_t)p + 1); }

static void test_meta(void) {
    CHECK(strcmp(vsgd_version(), VSGD_VERSION_STRING) == 0);
    CHECK(vsgd_abi_version() == VSGD_ABI_VERSION);
    char expect[64];
    snprintf(expect, sizeof expect, "%d.%d.%d", VSGD_VERSION_MAJOR, VSGD_VERSION_MINOR,
             VSGD_VERSION_PATCH);
    CHECK(strcmp(expect, VSGD_VERSION_STRING) == 0);
    CHECK(VSGD_VERSION_NUMBER ==
          VSGD_VERSION_MAJOR * 10000 + VSGD_VERSION_MINOR * 100 + VSGD_VERSION_PATCH);
#if VSGD_VERSION_NUMBER < 200
#error "VSGD_VERSION_NUMBER must be usable in preprocessor comparisons"
#endif
    CHECK(strcmp(vsgd_result_name(VSGD_RESULT_OK), "VSGD_RESULT_OK") == 0);
    CHECK(strcmp(vsgd_result_name(VSGD_RESULT_PANIC), "VSGD_RESULT_PANIC") == 0);
    CHECK(strcmp(vsgd_result_name(VSGD_RESULT_HANDLE_BUSY), "VSGD_RESULT_HANDLE_BUSY") == 0);
    CHECK(strcmp(vsgd_result_name(77777), "VSGD_RESULT_UNKNOWN") == 0);

    /* vsgd_last_error: query, copy, truncation, NULL buffer. */
    size_t n = 0, n2 = 0;
    CHECK(vsgd_state_count(4242, &n) == ENUM);
    ROW(VSGD_RESULT_BUFFER_TOO_SMALL, vsgd_last_error(NULL, 0, &n));
    CHECK(n > 10);
    char big[256], small[8];
    ROW(OK, vsgd_last_error(big, sizeof big, &n2));
    CHECK(n2 == n && strlen(big) == n && strstr(big, "vsgd_state_count: ") == big);
    CHECK(strstr(big, "4242") != NULL);
    ROW(VSGD_RESULT_BUFFER_TOO_SMALL, vsgd_last_error(small, sizeof small, &n2));
    CHECK(n2 == n && strlen(small) == sizeof small - 1 && strncmp(small, big, 7) == 0);
    ROW(NUL, vsgd_last_error(NULL, 5, NULL));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_last_error(big, sizeof big, misaligned(&n2)));
    /* The message survives all of that. */
    CHECK(vsgd_last_error(big, sizeof big, NULL) == OK && strstr(big, "4242") != NULL);
}

static void test_config(void) {
    vsgd_config *c = (vsgd_config *)&rows, *copy = NULL;
    double v = 0;
    const char *name = NULL;
    vsgd_algorithm a = 99;
    ROW(NUL, vsgd_config_new(VSGD_ALGORITHM_VSGD, NULL));
    ROW(ENUM, vsgd_config_new(5, &c));
    CHECK(c == NULL); /* cleared on failure */
    ROW(ENUM, vsgd_config_new(UINT32_MAX, &c));
    ROW(OK, vsgd_config_new(VSGD_ALGORITHM_VSGD, &c));
    CHECK(c != NULL);
    ROW(NUL, vsgd_config_algorithm(NULL, &a));
    ROW(NUL, vsgd_config_algorithm(c, NULL));
    ROW(OK, vsgd_config_algorithm(c, &a));
    CHECK(a == VSGD_ALGORITHM_VSGD);
    CHECK_OK(vsgd_config_get(c, "lr", &v));
    CHECK(v == 0.1);
    CHECK_OK(vsgd_config_get(c, "ghattg", &v));
    CHECK(v == 30.0);

    ROW(NUL, vsgd_config_validate(NULL));
    ROW(OK, vsgd_config_validate(c));
    ROW(OK, vsgd_config_set(c, "lr", -1)); /* ranges are checked on use */
    ROW(VSGD_RESULT_INVALID_CONFIG, vsgd_config_validate(c));
    CHECK(strstr(last_error(), "lr") != NULL && strstr(last_error(), "allowed") != NULL);
    CHECK_OK(vsgd_config_set(c, "lr", NAN));
    ROW(VSGD_RESULT_INVALID_CONFIG, vsgd_config_validate(c));
    CHECK_OK(vsgd_config_set(c, "lr", INFINITY));
    ROW(VSGD_RESULT_INVALID_CONFIG, vsgd_config_validate(c));
    CHECK_OK(vsgd_config_set(c, "lr", 0.1));
    CHECK_OK(vsgd_config_set(c, "tau1", 0));
    ROW(VSGD_RESULT_INVALID_CONFIG, vsgd_config_validate(c));
    CHECK(strstr(last_error(), "tau1") != NULL);
    CHECK_OK(vsgd_config_set(c, "tau1", 0.81));

    ROW(NUL, vsgd_config_set(NULL, "lr", 0.5));
    ROW(NUL, vsgd_config_set(c, NULL, 0.5));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_config_set(c, bad_utf8, 0.5));
    ROW(VSGD_RESULT_UNKNOWN_HYPERPARAMETER, vsgd_config_set(c, "beta1", 0.5));
    CHECK(strstr(last_error(), "'beta1'") != NULL && strstr(last_error(), "tau1") != NULL);
    ROW(VSGD_RESULT_UNKNOWN_HYPERPARAMETER, vsgd_config_set(c, "", 0.5));
    ROW(VSGD_RESULT_INVALID_CONFIG, vsgd_config_set(c, "maximize", 0.5)); /* booleans: 0/1 */
    CHECK(strstr(last_error(), "maximize") != NULL);
    CHECK_OK(vsgd_config_get(c, "maximize", &v));
    CHECK(v == 0); /* failed sets changed nothing */
    ROW(OK, vsgd_config_set(c, "lr", 0.25));

    ROW(NUL, vsgd_config_get(NULL, "lr", &v));
    ROW(NUL, vsgd_config_get(c, NULL, &v));
    ROW(NUL, vsgd_config_get(c, "lr", NULL));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_config_get(c, bad_utf8, &v));
    ROW(VSGD_RESULT_UNKNOWN_HYPERPARAMETER, vsgd_config_get(c, "momentum", &v));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_config_get(c, "lr", misaligned(&v)));
    ROW(OK, vsgd_config_get(c, "lr", &v));
    CHECK(v == 0.25);

    copy = (vsgd_config *)&rows;
    ROW(NUL, vsgd_config_clone(NULL, &copy));
    CHECK(copy == NULL);
    ROW(NUL, vsgd_config_clone(c, NULL));
    ROW(OK, vsgd_config_clone(c, &copy));
    CHECK_OK(vsgd_config_set(c, "lr", 0.5)); /* the clone is independent */
    CHECK_OK(vsgd_config_get(copy, "lr", &v));
    CHECK(v == 0.25);
    vsgd_config_free(copy);
    vsgd_config_free(c);
    vsgd_config_free(NULL); /* NULL is fine */

    ROW(NUL, vsgd_hyper_name(VSGD_ALGORITHM_VSGD, 0, NULL));
    ROW(ENUM, vsgd_hyper_name(5, 0, &name));
    ROW(VSGD_RESULT_UNKNOWN_HYPERPARAMETER, vsgd_hyper_name(VSGD_ALGORITHM_SGDM, 7, &name));
    ROW(VSGD_RESULT_UNKNOWN_HYPERPARAMETER, vsgd_hyper_name(VSGD_ALGORITHM_SGDM, SIZE_MAX, &name));
    ROW(OK, vsgd_hyper_name(VSGD_ALGORITHM_SGDM, 3, &name));
    CHECK(strcmp(name, "nesterov") == 0);

    ROW(NUL, vsgd_algorithm_name(VSGD_ALGORITHM_ADAM, NULL));
    ROW(ENUM, vsgd_algorithm_name(5, &name));
    ROW(OK, vsgd_algorithm_name(VSGD_ALGORITHM_CONSTANT_VSGD, &name));
    CHECK(strcmp(name, "constant_vsgd") == 0);
    ROW(NUL, vsgd_algorithm_from_name(NULL, &a));
    ROW(NUL, vsgd_algorithm_from_name("adam", NULL));
    a = 99;
    ROW(ENUM, vsgd_algorithm_from_name("Adam", &a));
    ROW(ENUM, vsgd_algorithm_from_name("", &a));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_algorithm_from_name(bad_utf8, &a));
    CHECK(a == 99);
    ROW(OK, vsgd_algorithm_from_name("adamw", &a));
    CHECK(a == VSGD_ALGORITHM_ADAMW);

    size_t n = 0;
    ROW(NUL, vsgd_state_count(VSGD_ALGORITHM_VSGD, NULL));
    ROW(ENUM, vsgd_state_count(5, &n));
    ROW(OK, vsgd_state_count(VSGD_ALGORITHM_SGDM, &n));
    CHECK(n == 1);
    ROW(NUL, vsgd_state_name(VSGD_ALGORITHM_VSGD, 0, NULL));
    ROW(ENUM, vsgd_state_name(5, 0, &name));
    ROW(VSGD_RESULT_STATE_COUNT, vsgd_state_name(VSGD_ALGORITHM_VSGD, 3, &name));
    ROW(VSGD_RESULT_STATE_COUNT, vsgd_state_name(VSGD_ALGORITHM_SGDM, SIZE_MAX, &name));
    ROW(OK, vsgd_state_name(VSGD_ALGORITHM_VSGD, 2, &name));
    CHECK(strcmp(name, "bhg") == 0);
}

static void test_schedule(void) {
    vsgd_schedule *s = (vsgd_schedule *)&rows;
    vsgd_schedule_kind k = 99;
    double v = 0;
    ROW(NUL, vsgd_schedule_new(VSGD_SCHEDULE_COSINE, NULL));
    ROW(ENUM, vsgd_schedule_new(4, &s));
    CHECK(s == NULL);
    ROW(OK, vsgd_schedule_new(VSGD_SCHEDULE_COSINE, &s));
    ROW(NUL, vsgd_schedule_kind_of(NULL, &k));
    ROW(NUL, vsgd_schedule_kind_of(s, NULL));
    ROW(OK, vsgd_schedule_kind_of(s, &k));
    CHECK(k == VSGD_SCHEDULE_COSINE);
    ROW(NUL, vsgd_schedule_validate(NULL));
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_schedule_validate(s)); /* total is not set */
    CHECK(strstr(last_error(), "total") != NULL);
    ROW(NUL, vsgd_schedule_set(NULL, "total", 10));
    ROW(NUL, vsgd_schedule_set(s, NULL, 10));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_schedule_set(s, bad_utf8, 10));
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_schedule_set(s, "every", 10)); /* step decay's */
    CHECK(strstr(last_error(), "cosine") != NULL && strstr(last_error(), "min_factor") != NULL);
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_schedule_set(s, "total", -1));
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_schedule_set(s, "total", 2.5));
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_schedule_set(s, "total", NAN));
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_schedule_set(s, "warmup", 1e300));
    ROW(OK, vsgd_schedule_set(s, "total", 100));
    ROW(OK, vsgd_schedule_set(s, "min_factor", 2)); /* ranges are checked on use */
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_schedule_validate(s));
    ROW(OK, vsgd_schedule_set(s, "min_factor", 0.1));
    ROW(OK, vsgd_schedule_validate(s));
    ROW(NUL, vsgd_schedule_get(NULL, "total", &v));
    ROW(NUL, vsgd_schedule_get(s, NULL, &v));
    ROW(NUL, vsgd_schedule_get(s, "total", NULL));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_schedule_get(s, bad_utf8, &v));
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_schedule_get(s, "pct_start", &v));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_schedule_get(s, "total", misaligned(&v)));
    ROW(OK, vsgd_schedule_get(s, "total", &v));
    CHECK(v == 100);
    ROW(OK, vsgd_schedule_get(s, "warmup", &v));
    CHECK(v == 0);
    vsgd_schedule *dup = (vsgd_schedule *)&rows;
    ROW(NUL, vsgd_schedule_clone(NULL, &dup));
    CHECK(dup == NULL);
    ROW(NUL, vsgd_schedule_clone(s, NULL));
    ROW(OK, vsgd_schedule_clone(s, &dup));
    CHECK_OK(vsgd_schedule_set(s, "total", 7)); /* the clone is independent */
    ROW(OK, vsgd_schedule_get(dup, "total", &v));
    CHECK(v == 100);
    vsgd_schedule_free(dup);
    vsgd_schedule_free(s);
    vsgd_schedule_free(NULL);
    /* One-cycle defaults are torch's. */
    CHECK_OK(vsgd_schedule_new(VSGD_SCHEDULE_ONE_CYCLE, &s));
    CHECK_OK(vsgd_schedule_get(s, "div_factor", &v));
    CHECK(v == 25);
    CHECK_OK(vsgd_schedule_get(s, "final_div_factor", &v));
    CHECK(v == 1e4);
    CHECK_OK(vsgd_schedule_set(s, "total", 2));
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_schedule_validate(s)); /* one-cycle needs >= 3 */
    CHECK(strstr(last_error(), ">= 3") != NULL);
    vsgd_schedule_free(s);
}

/* bfloat16 bits of a float, round-to-nearest-even (NaN excluded): the C reference. */
static uint16_t to_bf16(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static float from_bf16(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float x;
    memcpy(&x, &b, 4);
    return x;
}

/* The 16-bit steps: the same checks as vsgd_step_f32, and the result is the float step of the
 * widened values, rounded once. */
static void test_half(void) {
    vsgd_config *cfg;
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_SGDM, &cfg));
    const vsgd_config *c = cfg;
    float pf[5] = {1, -2, 0.3f, 4, -0.7f}, gf[5] = {0.5f, -0.25f, 0.125f, 1, 0.3f};
    _Alignas(4) uint16_t p[5];
    uint16_t g[5], p0[5], buf[16] = {0};
    for (int i = 0; i < 5; i++) {
        p[i] = to_bf16(pf[i]);
        g[i] = to_bf16(gf[i]);
        pf[i] = from_bf16(p[i]);
        gf[i] = from_bf16(g[i]);
    }
    memcpy(p0, p, sizeof p);
    float m[5] = {0}, mf[5] = {0};
    float *st[1] = {m}, *stf[1] = {mf}, *st_null[1] = {NULL};
    float *st_param[1] = {(float *)(void *)p};
    uint16_t s16_early[6] = {0};
    uint16_t *st16_early[1] = {s16_early};
    vsgd_step_outcome o = 42;
    ROW(NUL, vsgd_step_bf16(NULL, 1, 0.1, p, g, 5, st, 1, 0, VSGD_FINITE_CHECK, &o));
    ROW(NUL, vsgd_step_bf16(c, 1, 0.1, NULL, g, 5, st, 1, 0, VSGD_FINITE_CHECK, &o));
    ROW(NUL, vsgd_step_bf16(c, 1, 0.1, p, g, 5, st_null, 1, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_STATE_COUNT, vsgd_step_bf16(c, 1, 0.1, p, g, 5, st, 2, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_INVALID_STEP, vsgd_step_bf16(c, 0, 0.1, p, g, 5, st, 1, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_step_bf16(c, 1, 0.1, (uint16_t *)misaligned(buf), g, 5, st, 1, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_step_bf16(c, 1, 0.1, p, p, 5, st, 1, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS,
        vsgd_step_bf16(c, 1, 0.1, p, g, 5, st_param, 1, 0, VSGD_FINITE_CHECK, &o));
    /* The outcome is written after the step: inside the parameter it would overwrite it. */
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS,
        vsgd_step_bf16(c, 1, 0.1, p, g, 5, st, 1, 0, VSGD_FINITE_CHECK, (vsgd_step_outcome *)(void *)p));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS,
        vsgd_step_bf16_sr(c, 1, 0.1, p, g, 5, st16_early, 1, 7, 0, 0, VSGD_FINITE_CHECK,
                          (vsgd_step_outcome *)(void *)s16_early));
    ROW(NUL, vsgd_step_f16(c, 1, 0.1, p, NULL, 5, st, 1, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_BUFFER_TOO_LARGE, vsgd_step_f16(c, 1, 0.1, p, g, SIZE_MAX / 2, st, 1, 0, VSGD_FINITE_CHECK, &o));
    ROW(ENUM, vsgd_step_f16(c, 1, 0.1, p, g, 5, st, 1, 9, VSGD_FINITE_CHECK, &o));
    uint16_t gnan[5] = {0x7fc0, 0, 0, 0, 0}, s16[5] = {0};
    uint16_t *st16[1] = {s16}, *st16_alias[1] = {p};
    ROW(NUL, vsgd_step_bf16_sr(c, 1, 0.1, p, g, 5, NULL, 1, 7, 0, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS,
        vsgd_step_bf16_sr(c, 1, 0.1, p, g, 5, st16_alias, 1, 7, 0, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_NON_FINITE_GRADIENT,
        vsgd_step_bf16_sr(c, 1, 0.1, p, gnan, 5, st16, 1, 7, 0, VSGD_POLICY_ERROR, VSGD_FINITE_CHECK, &o));
    /* A shard whose last index would pass 2^64 - 1: the rounding's index would wrap. */
    ROW(VSGD_RESULT_SHAPE_OVERFLOW,
        vsgd_step_bf16_sr(c, 1, 0.1, p, g, 5, st16, 1, 7, UINT64_MAX - 3, 0, VSGD_FINITE_CHECK, &o));
    ROW(OK, vsgd_step_bf16(c, 1, 0.1, p, gnan, 5, st, 1, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    CHECK(o == VSGD_STEP_SKIPPED);
    CHECK(memcmp(p, p0, sizeof p) == 0 && m[0] == 0 && s16[0] == 0);
    /* A good step: the float step of the widened values, rounded to nearest even. */
    ROW(OK, vsgd_step_bf16(c, 1, 0.1, p, g, 5, st, 1, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    CHECK(o == VSGD_STEP_APPLIED);
    ROW(OK, vsgd_step_f32(c, 1, 0.1, pf, gf, 5, stf, 1, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    for (int i = 0; i < 5; i++) CHECK(p[i] == to_bf16(pf[i]) && m[i] == mf[i]);
    CHECK(memcmp(p, p0, sizeof p) != 0);
    /* bf16 state: the state moved and is a neighbour of the float state. */
    ROW(OK, vsgd_step_bf16_sr(c, 1, 0.1, p0, g, 5, st16, 1, 7, 0, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    for (int i = 0; i < 5; i++) {
        float v = from_bf16(s16[i]);
        CHECK(fabsf(v - mf[i]) <= fabsf(mf[i]) * (1.0f / 128));
    }
    uint32_t fin = 7;
    ROW(NUL, vsgd_all_finite_bf16(NULL, 5, &fin));
    ROW(NUL, vsgd_all_finite_f16(g, 5, NULL));
    ROW(OK, vsgd_all_finite_bf16(gnan, 5, &fin));
    CHECK(fin == 0);
    ROW(OK, vsgd_all_finite_f16(g, 5, &fin));
    CHECK(fin == 1);
    vsgd_config_free(cfg);
}

static void test_stateless(void) {
    vsgd_config *cfg, *bad;
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_VSGD, &cfg));
    const vsgd_config *c = cfg;
    float p[4] = {1, 2, 3, 4}, g[4] = {0.5f, -0.5f, 0.25f, 1}, s0[4] = {0}, s1[4] = {0},
          s2[4] = {0}, buf[16] = {0};
    float p0[4];
    memcpy(p0, p, sizeof p);
    float *st[3] = {s0, s1, s2};
    float *st_null[3] = {s0, NULL, s2};
    float *st_alias[3] = {s0, s0, s2};
    float *st_param[3] = {s0, s1, p};
    vsgd_step_outcome o = 42;

    ROW(NUL, vsgd_step_f32(NULL, 1, 0.1, p, g, 4, st, 3, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    ROW(NUL, vsgd_step_f32(c, 1, 0.1, NULL, g, 4, st, 3, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    ROW(NUL, vsgd_step_f32(c, 1, 0.1, p, NULL, 4, st, 3, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    ROW(NUL, vsgd_step_f32(c, 1, 0.1, p, g, 4, NULL, 3, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    ROW(NUL, vsgd_step_f32(c, 1, 0.1, p, g, 4, st_null, 3, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_STATE_COUNT, vsgd_step_f32(c, 1, 0.1, p, g, 4, st, 2, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_STATE_COUNT, vsgd_step_f32(c, 1, 0.1, p, g, 4, st, 0, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_STATE_COUNT, vsgd_step_f32(c, 1, 0.1, p, g, 4, st, 4, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_INVALID_STEP, vsgd_step_f32(c, 0, 0.1, p, g, 4, st, 3, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_INVALID_LEARNING_RATE, vsgd_step_f32(c, 1, -0.1, p, g, 4, st, 3, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_INVALID_LEARNING_RATE, vsgd_step_f32(c, 1, NAN, p, g, 4, st, 3, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_INVALID_LEARNING_RATE, vsgd_step_f32(c, 1, INFINITY, p, g, 4, st, 3, 0, VSGD_FINITE_CHECK, &o));
    ROW(ENUM, vsgd_step_f32(c, 1, 0.1, p, g, 4, st, 3, 3, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_step_f32(c, 1, 0.1, (float *)misaligned(buf), g, 4, st, 3, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_step_f32(c, 1, 0.1, p, g, 4, st, 3, 0, VSGD_FINITE_CHECK, (vsgd_step_outcome *)misaligned(buf)));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_step_f32(c, 1, 0.1, p, p, 4, st, 3, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_step_f32(c, 1, 0.1, p, p + 3, 4, st, 3, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_step_f32(c, 1, 0.1, p, g, 4, st_alias, 3, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_step_f32(c, 1, 0.1, p, g, 4, st_param, 3, 0, VSGD_FINITE_CHECK, &o));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS,
        vsgd_step_f32(c, 1, 0.1, p, g, 4, st, 3, 0, VSGD_FINITE_CHECK, (vsgd_step_outcome *)(void *)(p + 2)));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS,
        vsgd_step_f32(c, 1, 0.1, p, g, 4, st, 3, 0, VSGD_FINITE_CHECK, (vsgd_step_outcome *)(void *)s1));
    ROW(VSGD_RESULT_BUFFER_TOO_LARGE, vsgd_step_f32(c, 1, 0.1, p, g, SIZE_MAX / 2, st, 3, 0, VSGD_FINITE_CHECK, &o));
    /* Wrong algorithm: an SGDM configuration with VSGD's three state arrays. */
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_SGDM, &bad));
    ROW(VSGD_RESULT_STATE_COUNT, vsgd_step_f32(bad, 1, 0.1, p, g, 4, st, 3, 0, VSGD_FINITE_CHECK, &o));
    vsgd_config_free(bad);
    CHECK_OK(vsgd_config_clone(c, &bad));
    CHECK_OK(vsgd_config_set(bad, "ps", 0));
    ROW(VSGD_RESULT_INVALID_CONFIG, vsgd_step_f32(bad, 1, 0.1, p, g, 4, st, 3, 0, VSGD_FINITE_CHECK, &o));
    vsgd_config_free(bad);
    ROW(ENUM, vsgd_step_f32(c, 1, 0.1, p, g, 4, st, 3, 0, 3, &o)); /* an unknown verdict */
    /* Non-finite gradients: ERROR fails, SKIP reports, neither changes anything. */
    float gnan[4] = {0.5f, NAN, 0, 0}, ginf[4] = {0, 0, 0, -INFINITY};
    ROW(VSGD_RESULT_NON_FINITE_GRADIENT,
        vsgd_step_f32(c, 1, 0.1, p, gnan, 4, st, 3, VSGD_POLICY_ERROR, VSGD_FINITE_CHECK, &o));
    CHECK(o == 42); /* failures write no output */
    ROW(OK, vsgd_step_f32(c, 1, 0.1, p, ginf, 4, st, 3, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    CHECK(o == VSGD_STEP_SKIPPED);
    CHECK(memcmp(p, p0, sizeof p) == 0);
    for (int i = 0; i < 4; i++) CHECK(s0[i] == 0 && s1[i] == 0 && s2[i] == 0);
    /* Zero length: NULL buffers are fine and nothing happens. */
    float *nulls[3] = {NULL, NULL, NULL};
    ROW(OK, vsgd_step_f32(c, 1, 0.1, NULL, NULL, 0, nulls, 3, 0, VSGD_FINITE_CHECK, NULL));
    ROW(OK, vsgd_step_f32(c, 1, 0.1, p, g, 0, st, 3, 0, VSGD_FINITE_CHECK, &o));
    CHECK(memcmp(p, p0, sizeof p) == 0);
    /* Finally a good step does change the parameter. */
    ROW(OK, vsgd_step_f32(c, 1, 0.1, p, g, 4, st, 3, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
    CHECK(o == VSGD_STEP_APPLIED && p[0] < p0[0] && p[1] > p0[1]);

    /* The caller's verdict: NO skips a finite shard, YES applies without a scan. */
    float q[4] = {1, 2, 3, 4}, qs[3][4] = {{0}};
    float *qst[3] = {qs[0], qs[1], qs[2]};
    ROW(OK, vsgd_step_f32(c, 1, 0.1, q, g, 4, qst, 3, VSGD_POLICY_SKIP, VSGD_FINITE_NO, &o));
    CHECK(o == VSGD_STEP_SKIPPED && q[0] == 1 && qs[0][0] == 0);
    ROW(VSGD_RESULT_NON_FINITE_GRADIENT,
        vsgd_step_f32(c, 1, 0.1, q, g, 4, qst, 3, VSGD_POLICY_ERROR, VSGD_FINITE_NO, &o));
    ROW(OK, vsgd_step_f32(c, 1, 0.1, q, g, 4, qst, 3, VSGD_POLICY_SKIP, VSGD_FINITE_YES, &o));
    CHECK(o == VSGD_STEP_APPLIED && q[0] < 1);

    /* vsgd_all_finite_*: the local verdict of a shard. */
    uint32_t fin = 7;
    ROW(NUL, vsgd_all_finite_f32(NULL, 4, &fin));
    ROW(NUL, vsgd_all_finite_f32(g, 4, NULL));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_all_finite_f32((const float *)misaligned(buf), 2, &fin));
    ROW(VSGD_RESULT_BUFFER_TOO_LARGE, vsgd_all_finite_f32(g, SIZE_MAX / 2, &fin));
    CHECK(fin == 7);
    ROW(OK, vsgd_all_finite_f32(g, 4, &fin));
    CHECK(fin == 1);
    ROW(OK, vsgd_all_finite_f32(gnan, 4, &fin));
    CHECK(fin == 0);
    ROW(OK, vsgd_all_finite_f32(NULL, 0, &fin));
    CHECK(fin == 1);
    double dinf[3] = {1, -INFINITY, 0};
    ROW(NUL, vsgd_all_finite_f64(NULL, 1, &fin));
    ROW(OK, vsgd_all_finite_f64(dinf, 3, &fin));
    CHECK(fin == 0);
    ROW(OK, vsgd_all_finite_f64(dinf, 1, &fin));
    CHECK(fin == 1);

    double dp[2] = {1, 2}, dg[2] = {1, 1}, dm[2] = {0, 0};
    double *dst[1] = {dm};
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_SGDM, &bad));
    ROW(NUL, vsgd_step_f64(bad, 1, 0.1, dp, NULL, 2, dst, 1, 0, VSGD_FINITE_CHECK, NULL));
    ROW(VSGD_RESULT_STATE_COUNT, vsgd_step_f64(bad, 1, 0.1, dp, dg, 2, dst, 2, 0, VSGD_FINITE_CHECK, NULL));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_step_f64(bad, 1, 0.1, dp, dp + 1, 2, dst, 1, 0, VSGD_FINITE_CHECK, NULL));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_step_f64(bad, 1, 0.1, dp, (double *)misaligned(dg), 1, dst, 1, 0, VSGD_FINITE_CHECK, NULL));
    ROW(VSGD_RESULT_INVALID_STEP, vsgd_step_f64(bad, 0, 0.1, dp, dg, 2, dst, 1, 0, VSGD_FINITE_CHECK, NULL));
    ROW(OK, vsgd_step_f64(bad, 1, 0.1, dp, dg, 2, dst, 1, 0, VSGD_FINITE_CHECK, NULL));
    CHECK(dm[0] == 1 && dp[0] < 1);
    vsgd_config_free(bad);
    vsgd_config_free(cfg);
}

static vsgd_optimizer *make(vsgd_algorithm a) {
    vsgd_config *c;
    vsgd_optimizer *h = NULL;
    CHECK_OK(vsgd_config_new(a, &c));
    CHECK_OK(vsgd_optimizer_new(c, &h));
    vsgd_config_free(c);
    return h;
}

static void test_handle(void) {
    vsgd_config *c, *adam, *bad;
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_VSGD, &c));
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_ADAM, &adam));
    CHECK_OK(vsgd_config_clone(c, &bad));
    CHECK_OK(vsgd_config_set(bad, "ghattg", -1));
    vsgd_optimizer *h = (vsgd_optimizer *)c; /* must be overwritten with NULL on failure */
    ROW(NUL, vsgd_optimizer_new(NULL, &h));
    CHECK(h == NULL);
    ROW(NUL, vsgd_optimizer_new(c, NULL));
    h = (vsgd_optimizer *)c;
    ROW(VSGD_RESULT_INVALID_CONFIG, vsgd_optimizer_new(bad, &h));
    CHECK(h == NULL);
    vsgd_optimizer_free(h); /* NULL is fine */
    ROW(OK, vsgd_optimizer_new(c, &h));
    CHECK(h != NULL);

    vsgd_algorithm a = 99;
    ROW(NUL, vsgd_optimizer_algorithm(NULL, &a));
    ROW(NUL, vsgd_optimizer_algorithm(h, NULL));
    ROW(OK, vsgd_optimizer_algorithm(h, &a));
    CHECK(a == VSGD_ALGORITHM_VSGD);

    /* Threads: 1 runs on the caller's thread, 0 means every core. */
    size_t threads = 0;
    ROW(NUL, vsgd_optimizer_set_threads(NULL, 1));
    ROW(NUL, vsgd_optimizer_threads(NULL, &threads));
    ROW(NUL, vsgd_optimizer_threads(h, NULL));
    ROW(OK, vsgd_optimizer_set_threads(h, 1));
    ROW(OK, vsgd_optimizer_threads(h, &threads));
    CHECK(threads == 1);
    ROW(OK, vsgd_optimizer_set_threads(h, 3));
    ROW(OK, vsgd_optimizer_threads(h, &threads));
    CHECK(threads == 3);
    ROW(OK, vsgd_optimizer_set_threads(h, 0));
    ROW(OK, vsgd_optimizer_threads(h, &threads));
    CHECK(threads >= 1);

    /* The schedule clock: per tensor by default; the global step under the global clock. */
    vsgd_schedule_clock clock = 99;
    uint64_t gstep = 99;
    ROW(NUL, vsgd_optimizer_set_schedule_clock(NULL, VSGD_CLOCK_GLOBAL));
    ROW(ENUM, vsgd_optimizer_set_schedule_clock(h, 2));
    ROW(NUL, vsgd_optimizer_schedule_clock(NULL, &clock));
    ROW(NUL, vsgd_optimizer_schedule_clock(h, NULL));
    ROW(OK, vsgd_optimizer_schedule_clock(h, &clock));
    CHECK(clock == VSGD_CLOCK_PER_TENSOR);
    ROW(NUL, vsgd_optimizer_global_step(NULL, &gstep));
    ROW(NUL, vsgd_optimizer_global_step(h, NULL));
    ROW(NUL, vsgd_optimizer_set_global_step(NULL, 3));
    ROW(OK, vsgd_optimizer_set_schedule_clock(h, VSGD_CLOCK_GLOBAL));
    ROW(OK, vsgd_optimizer_set_global_step(h, 3));
    ROW(OK, vsgd_optimizer_global_step(h, &gstep));
    ROW(OK, vsgd_optimizer_schedule_clock(h, &clock));
    CHECK(gstep == 3 && clock == VSGD_CLOCK_GLOBAL);
    CHECK_OK(vsgd_optimizer_set_schedule_clock(h, VSGD_CLOCK_PER_TENSOR));
    CHECK_OK(vsgd_optimizer_set_global_step(h, 0));

    /* Gradient clipping: 0 turns it off; the norm of the last step is NaN until computed. */
    double clip = -1, gnorm = 0;
    ROW(NUL, vsgd_optimizer_set_clip_norm(NULL, 1.0));
    ROW(VSGD_RESULT_INVALID_CLIP_NORM, vsgd_optimizer_set_clip_norm(h, -1.0));
    ROW(VSGD_RESULT_INVALID_CLIP_NORM, vsgd_optimizer_set_clip_norm(h, NAN));
    ROW(VSGD_RESULT_INVALID_CLIP_NORM, vsgd_optimizer_set_clip_norm(h, INFINITY));
    ROW(NUL, vsgd_optimizer_clip_norm(NULL, &clip));
    ROW(NUL, vsgd_optimizer_clip_norm(h, NULL));
    ROW(OK, vsgd_optimizer_clip_norm(h, &clip));
    CHECK(clip == 0);
    ROW(OK, vsgd_optimizer_set_clip_norm(h, 0.5));
    ROW(OK, vsgd_optimizer_clip_norm(h, &clip));
    CHECK(clip == 0.5);
    ROW(NUL, vsgd_optimizer_last_grad_norm(NULL, &gnorm));
    ROW(NUL, vsgd_optimizer_last_grad_norm(h, NULL));
    ROW(OK, vsgd_optimizer_last_grad_norm(h, &gnorm));
    CHECK(isnan(gnorm));
    CHECK_OK(vsgd_optimizer_set_clip_norm(h, 0));

    /* Groups: a handle of one algorithm refuses another's configuration. */
    size_t grp = 99, ngroups = 0;
    ROW(NUL, vsgd_optimizer_num_groups(NULL, &ngroups));
    ROW(NUL, vsgd_optimizer_num_groups(h, NULL));
    ROW(OK, vsgd_optimizer_num_groups(h, &ngroups));
    CHECK(ngroups == 1);
    ROW(NUL, vsgd_optimizer_add_group(NULL, c, &grp));
    ROW(NUL, vsgd_optimizer_add_group(h, NULL, &grp));
    ROW(NUL, vsgd_optimizer_add_group(h, c, NULL));
    ROW(VSGD_RESULT_ALGORITHM_MISMATCH, vsgd_optimizer_add_group(h, adam, &grp));
    CHECK(strstr(last_error(), "vsgd") && strstr(last_error(), "adam"));
    CHECK_OK(vsgd_config_set(bad, "ghattg", 30));
    CHECK_OK(vsgd_config_set(bad, "tau2", 2));
    ROW(VSGD_RESULT_INVALID_CONFIG, vsgd_optimizer_add_group(h, bad, &grp));
    CHECK(grp == 99);
    CHECK_OK(vsgd_config_set(c, "lr", 0.125));
    ROW(OK, vsgd_optimizer_add_group(h, c, &grp));
    CHECK(grp == 1);
    ROW(OK, vsgd_optimizer_num_groups(h, &ngroups));
    CHECK(ngroups == 2);

    vsgd_config *got = c;
    double v = 0;
    ROW(NUL, vsgd_optimizer_config(NULL, 0, &got));
    CHECK(got == NULL);
    ROW(NUL, vsgd_optimizer_config(h, 0, NULL));
    ROW(VSGD_RESULT_UNKNOWN_GROUP, vsgd_optimizer_config(h, 2, &got));
    ROW(OK, vsgd_optimizer_config(h, 1, &got));
    CHECK_OK(vsgd_config_algorithm(got, &a));
    CHECK_OK(vsgd_config_get(got, "lr", &v));
    CHECK(a == VSGD_ALGORITHM_VSGD && v == 0.125);
    vsgd_config_free(got);
    ROW(NUL, vsgd_optimizer_set_config(NULL, 0, c));
    ROW(NUL, vsgd_optimizer_set_config(h, 0, NULL));
    ROW(VSGD_RESULT_ALGORITHM_MISMATCH, vsgd_optimizer_set_config(h, 0, adam));
    ROW(VSGD_RESULT_INVALID_CONFIG, vsgd_optimizer_set_config(h, 0, bad));
    ROW(VSGD_RESULT_UNKNOWN_GROUP, vsgd_optimizer_set_config(h, 9, c));
    ROW(OK, vsgd_optimizer_set_config(h, 1, c));

    double lr = -1;
    ROW(NUL, vsgd_optimizer_set_lr(NULL, 0, 0.1));
    ROW(VSGD_RESULT_INVALID_LEARNING_RATE, vsgd_optimizer_set_lr(h, 0, -0.1));
    ROW(VSGD_RESULT_INVALID_LEARNING_RATE, vsgd_optimizer_set_lr(h, 0, NAN));
    ROW(VSGD_RESULT_INVALID_LEARNING_RATE, vsgd_optimizer_set_lr(h, 0, INFINITY));
    ROW(VSGD_RESULT_UNKNOWN_GROUP, vsgd_optimizer_set_lr(h, 2, 0.1));
    ROW(OK, vsgd_optimizer_set_lr(h, 0, 0.05));

    vsgd_schedule *s, *back = (vsgd_schedule *)c;
    CHECK_OK(vsgd_schedule_new(VSGD_SCHEDULE_STEP_DECAY, &s));
    CHECK_OK(vsgd_schedule_set(s, "factor", 0.5));
    ROW(NUL, vsgd_optimizer_set_schedule(NULL, 0, s));
    ROW(NUL, vsgd_optimizer_set_schedule(h, 0, NULL));
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_optimizer_set_schedule(h, 0, s)); /* every = 0 */
    CHECK(strstr(last_error(), "every") != NULL);
    CHECK_OK(vsgd_schedule_set(s, "every", 10));
    CHECK_OK(vsgd_schedule_set(s, "factor", 1.5));
    ROW(VSGD_RESULT_INVALID_SCHEDULE, vsgd_optimizer_set_schedule(h, 0, s));
    CHECK_OK(vsgd_schedule_set(s, "factor", 0.5));
    ROW(VSGD_RESULT_UNKNOWN_GROUP, vsgd_optimizer_set_schedule(h, 5, s));
    ROW(OK, vsgd_optimizer_set_schedule(h, 0, s));
    vsgd_schedule_free(s);
    ROW(NUL, vsgd_optimizer_schedule(NULL, 0, &back));
    CHECK(back == NULL);
    ROW(NUL, vsgd_optimizer_schedule(h, 0, NULL));
    ROW(VSGD_RESULT_UNKNOWN_GROUP, vsgd_optimizer_schedule(h, 2, &back));
    ROW(OK, vsgd_optimizer_schedule(h, 0, &back));
    {
        vsgd_schedule_kind kind = 99;
        double every = 0;
        CHECK_OK(vsgd_schedule_kind_of(back, &kind));
        CHECK_OK(vsgd_schedule_get(back, "every", &every));
        CHECK(kind == VSGD_SCHEDULE_STEP_DECAY && every == 10);
    }
    vsgd_schedule_free(back);
    ROW(OK, vsgd_optimizer_schedule(h, 1, &back)); /* a new group's: constant */
    {
        vsgd_schedule_kind kind = 99;
        CHECK_OK(vsgd_schedule_kind_of(back, &kind));
        CHECK(kind == VSGD_SCHEDULE_CONSTANT);
    }
    vsgd_schedule_free(back);
    ROW(NUL, vsgd_optimizer_lr_at(NULL, 0, 1, &lr));
    ROW(NUL, vsgd_optimizer_lr_at(h, 0, 1, NULL));
    ROW(VSGD_RESULT_UNKNOWN_GROUP, vsgd_optimizer_lr_at(h, 3, 1, &lr));
    ROW(VSGD_RESULT_INVALID_STEP, vsgd_optimizer_lr_at(h, 0, 0, &lr));
    ROW(OK, vsgd_optimizer_lr_at(h, 0, 11, &lr));
    CHECK(lr == 0.05 * 0.5);

    vsgd_policy pol = 99;
    ROW(NUL, vsgd_optimizer_set_policy(NULL, VSGD_POLICY_ERROR));
    ROW(ENUM, vsgd_optimizer_set_policy(h, 3));
    ROW(NUL, vsgd_optimizer_policy(NULL, &pol));
    ROW(NUL, vsgd_optimizer_policy(h, NULL));
    ROW(OK, vsgd_optimizer_policy(h, &pol));
    CHECK(pol == VSGD_POLICY_SKIP); /* the failed set changed nothing */

    /* Tensors: 0 is "w" (f32, 4), 1 is "b" (f64, 2) in group 1, 2 is empty (f32, 0). */
    size_t id = 99;
    ROW(NUL, vsgd_optimizer_add_tensor(NULL, (size_t[]){4}, 1, VSGD_DTYPE_F32, "w", 0, &id));
    ROW(NUL, vsgd_optimizer_add_tensor(h, (size_t[]){4}, 1, VSGD_DTYPE_F32, "w", 0, NULL));
    ROW(ENUM, vsgd_optimizer_add_tensor(h, (size_t[]){4}, 1, 4, "w", 0, &id));
    ROW(VSGD_RESULT_UNKNOWN_GROUP, vsgd_optimizer_add_tensor(h, (size_t[]){4}, 1, VSGD_DTYPE_F32, "w", 2, &id));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_optimizer_add_tensor(h, (size_t[]){4}, 1, VSGD_DTYPE_F32, bad_utf8, 0, &id));
    ROW(VSGD_RESULT_SHAPE_OVERFLOW, vsgd_optimizer_add_tensor(h, (size_t[]){SIZE_MAX}, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    /* State bytes over PTRDIFF_MAX: refused before any allocation (so no huge malloc under
     * ASan or valgrind), a typed error, and the handle is not poisoned. */
    ROW(VSGD_RESULT_ALLOCATION_FAILED, vsgd_optimizer_add_tensor(h, (size_t[]){SIZE_MAX / 4}, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    ROW(VSGD_RESULT_ALLOCATION_FAILED, vsgd_optimizer_add_tensor(h, (size_t[]){SIZE_MAX / 4}, 1, VSGD_DTYPE_F64, "w", 1, &id));
    CHECK(strstr(last_error(), "could not allocate") != NULL);
    CHECK(id == 99);
    {
        size_t count = 99;
        CHECK_OK(vsgd_optimizer_num_tensors(h, &count));
        CHECK(count == 0); /* nothing was added */
    }
    ROW(OK, vsgd_optimizer_add_tensor(h, (size_t[]){4}, 1, VSGD_DTYPE_F32, "w", 0, &id));
    CHECK(id == 0);
    ROW(OK, vsgd_optimizer_add_tensor(h, (size_t[]){2}, 1, VSGD_DTYPE_F64, "b", 1, &id));
    CHECK(id == 1);
    ROW(OK, vsgd_optimizer_add_tensor(h, (size_t[]){0}, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    CHECK(id == 2);

    size_t n = 0;
    ROW(NUL, vsgd_optimizer_num_tensors(NULL, &n));
    ROW(NUL, vsgd_optimizer_num_tensors(h, NULL));
    ROW(OK, vsgd_optimizer_num_tensors(h, &n));
    CHECK(n == 3);
    vsgd_tensor_info info = {sizeof info, 9, 9, 9, 9, 9, 9, 9};
    ROW(NUL, vsgd_optimizer_tensor_info(NULL, 0, &info));
    ROW(NUL, vsgd_optimizer_tensor_info(h, 0, NULL));
    ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_tensor_info(h, 3, &info));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_optimizer_tensor_info(h, 0, (vsgd_tensor_info *)misaligned(&info)));
    /* 0.1's struct ended before state_dtype: one byte less is older than any version. */
    const size_t v1_size = offsetof(vsgd_tensor_info, state_dtype);
    info.struct_size = v1_size - 1;
    ROW(VSGD_RESULT_INVALID_STRUCT_SIZE, vsgd_optimizer_tensor_info(h, 1, &info));
    CHECK(info.len == 9);
    info.struct_size = 0;
    ROW(VSGD_RESULT_INVALID_STRUCT_SIZE, vsgd_optimizer_tensor_info(h, 1, &info));
    info.struct_size = sizeof info;
    ROW(OK, vsgd_optimizer_tensor_info(h, 1, &info));
    CHECK(info.struct_size == sizeof info);
    CHECK(info.len == 2 && info.dtype == VSGD_DTYPE_F64 && info.group == 1 && info.step == 0);
    CHECK(info.rank == 1);
    CHECK(info.state_dtype == VSGD_DTYPE_F64 && info.seed == 0);
    /* A caller built against 0.1 (the struct without state_dtype and seed): only its fields. */
    info.struct_size = v1_size;
    info.state_dtype = 9;
    info.seed = 9;
    ROW(OK, vsgd_optimizer_tensor_info(h, 1, &info));
    CHECK(info.struct_size == v1_size && info.len == 2 && info.state_dtype == 9 && info.seed == 9);
    {
        /* A caller built against a newer, larger struct: only this version's bytes are
         * written, and struct_size says how many. */
        struct {
            vsgd_tensor_info v1;
            uint64_t later_field;
        } newer = {{sizeof newer, 0, 0, 0, 0, 0, 0, 0}, 0x5555};
        ROW(OK, vsgd_optimizer_tensor_info(h, 0, &newer.v1));
        CHECK(newer.v1.struct_size == sizeof(vsgd_tensor_info) && newer.later_field == 0x5555);
        CHECK(newer.v1.len == 4);
    }

    /* Shapes: rank and sizes as registered; a scalar has rank 0. */
    size_t dims[4] = {9, 9, 9, 9}, rank = 9, sid = 99;
    const size_t mat[3] = {2, 3, 4};
    ROW(NUL, vsgd_optimizer_add_tensor(h, NULL, 3, VSGD_DTYPE_F32, "m", 0, &sid));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_optimizer_add_tensor(h, (const size_t *)misaligned(dims), 2, VSGD_DTYPE_F32, "m", 0, &sid));
    ROW(VSGD_RESULT_BUFFER_TOO_LARGE, vsgd_optimizer_add_tensor(h, mat, SIZE_MAX, VSGD_DTYPE_F32, "m", 0, &sid));
    const size_t huge[2] = {SIZE_MAX / 2, 3};
    ROW(VSGD_RESULT_SHAPE_OVERFLOW, vsgd_optimizer_add_tensor(h, huge, 2, VSGD_DTYPE_F32, "m", 0, &sid));
    CHECK(sid == 99);
    ROW(OK, vsgd_optimizer_add_tensor(h, mat, 3, VSGD_DTYPE_F32, "m", 0, &sid));
    CHECK(sid == 3);
    ROW(OK, vsgd_optimizer_add_tensor(h, NULL, 0, VSGD_DTYPE_F64, "s", 1, &sid));
    CHECK(sid == 4);
    ROW(NUL, vsgd_optimizer_tensor_shape(NULL, 3, dims, 4, &rank));
    ROW(NUL, vsgd_optimizer_tensor_shape(h, 3, dims, 4, NULL));
    ROW(NUL, vsgd_optimizer_tensor_shape(h, 3, NULL, 4, &rank));
    ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_tensor_shape(h, 5, dims, 4, &rank));
    ROW(VSGD_RESULT_BUFFER_TOO_SMALL, vsgd_optimizer_tensor_shape(h, 3, dims, 2, &rank));
    CHECK(rank == 3 && dims[0] == 9); /* nothing written but the rank */
    ROW(VSGD_RESULT_BUFFER_TOO_SMALL, vsgd_optimizer_tensor_shape(h, 3, NULL, 0, &rank));
    ROW(OK, vsgd_optimizer_tensor_shape(h, 3, dims, 4, &rank));
    CHECK(rank == 3 && dims[0] == 2 && dims[1] == 3 && dims[2] == 4 && dims[3] == 9);
    ROW(OK, vsgd_optimizer_tensor_shape(h, 4, NULL, 0, &rank));
    CHECK(rank == 0);
    ROW(OK, vsgd_optimizer_tensor_info(h, 4, &info));
    CHECK(info.len == 1 && info.rank == 0 && info.group == 1);
    ROW(OK, vsgd_optimizer_tensor_info(h, 3, &info));
    CHECK(info.len == 24 && info.rank == 3);
    /* Tensors 3 and 4 go again so that the rows below see three tensors. */
    vsgd_optimizer *h3 = make(VSGD_ALGORITHM_VSGD);
    CHECK_OK(vsgd_optimizer_add_group(h3, c, &grp));
    CHECK_OK(vsgd_optimizer_add_tensor(h3, (size_t[]){4}, 1, VSGD_DTYPE_F32, "w", 0, &id));
    CHECK_OK(vsgd_optimizer_add_tensor(h3, (size_t[]){2}, 1, VSGD_DTYPE_F64, "b", 1, &id));
    CHECK_OK(vsgd_optimizer_add_tensor(h3, (size_t[]){0}, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    CHECK_OK(vsgd_optimizer_set_lr(h3, 0, 0.05));
    vsgd_optimizer_free(h);
    h = h3;

    char name[8];
    ROW(NUL, vsgd_optimizer_tensor_name(NULL, 0, name, sizeof name, &n));
    ROW(NUL, vsgd_optimizer_tensor_name(h, 0, NULL, 4, &n));
    ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_tensor_name(h, 7, name, sizeof name, &n));
    ROW(VSGD_RESULT_BUFFER_TOO_SMALL, vsgd_optimizer_tensor_name(h, 0, name, 1, &n));
    CHECK(n == 1 && name[0] == '\0');
    ROW(OK, vsgd_optimizer_tensor_name(h, 0, name, sizeof name, &n));
    CHECK(strcmp(name, "w") == 0);
    ROW(OK, vsgd_optimizer_tensor_name(h, 2, name, sizeof name, NULL));
    CHECK(strcmp(name, "") == 0);
    ROW(NUL, vsgd_optimizer_find(NULL, "w", &n));
    ROW(NUL, vsgd_optimizer_find(h, NULL, &n));
    ROW(NUL, vsgd_optimizer_find(h, "w", NULL));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_optimizer_find(h, bad_utf8, &n));
    ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_find(h, "nope", &n));
    ROW(OK, vsgd_optimizer_find(h, "b", &n));
    CHECK(n == 1);

    uint64_t steps = 99;
    ROW(NUL, vsgd_optimizer_step_count(NULL, 0, &steps));
    ROW(NUL, vsgd_optimizer_step_count(h, 0, NULL));
    ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_step_count(h, 3, &steps));

    /* One tensor at a time. */
    float w[4] = {1, -1, 2, -2}, gw[4] = {0.1f, 0.2f, -0.3f, 0.4f}, w0[4], big[5] = {0};
    double b[2] = {0.5, -0.5}, gb[2] = {1, -1}, b0[2];
    memcpy(w0, w, sizeof w);
    memcpy(b0, b, sizeof b);
    vsgd_step_outcome o = 42;
    ROW(NUL, vsgd_optimizer_step_tensor_f32(NULL, 0, w, gw, 4, &o));
    ROW(NUL, vsgd_optimizer_step_tensor_f32(h, 0, NULL, gw, 4, &o));
    ROW(NUL, vsgd_optimizer_step_tensor_f32(h, 0, w, NULL, 4, &o));
    ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_step_tensor_f32(h, 3, w, gw, 4, &o));
    ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_step_tensor_f32(h, 1, w, gw, 2, &o));
    ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_step_tensor_f64(h, 0, b, gb, 2, &o));
    ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step_tensor_f32(h, 0, w, gw, 3, &o));
    ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step_tensor_f32(h, 0, big, gw, 0, &o));
    ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step_tensor_f64(h, 1, b, gb, 1, &o));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step_tensor_f32(h, 0, w, w, 4, &o));
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step_tensor_f32(h, 0, big, big + 1, 4, &o));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_optimizer_step_tensor_f64(h, 1, (double *)misaligned(big), gb, 2, &o));
    ROW(VSGD_RESULT_BUFFER_TOO_LARGE, vsgd_optimizer_step_tensor_f32(h, 0, w, gw, SIZE_MAX, &o));
    /* The typed steps check their buffers before they take the handle. */
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_optimizer_step_tensor_f32(NULL, 0, (float *)misaligned(big), gw, 4, &o));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_optimizer_step_f32(NULL, (float *[]){(float *)misaligned(big)}, (const float *[]){gw}, (size_t[]){4}, 1, NULL));
    /* The outcome, written after the step, must not lie inside the parameter. */
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS,
        vsgd_optimizer_step_tensor_f32(h, 0, w, gw, 4, (vsgd_step_outcome *)(void *)(w + 1)));
    CHECK_OK(vsgd_optimizer_set_policy(h, VSGD_POLICY_ERROR));
    float wnan[4] = {0, 0, NAN, 0};
    ROW(VSGD_RESULT_NON_FINITE_GRADIENT, vsgd_optimizer_step_tensor_f32(h, 0, w, wnan, 4, &o));
    CHECK(o == 42 && memcmp(w, w0, sizeof w) == 0);
    ROW(OK, vsgd_optimizer_step_count(h, 0, &steps));
    CHECK(steps == 0);
    CHECK_OK(vsgd_optimizer_set_policy(h, VSGD_POLICY_SKIP));
    ROW(OK, vsgd_optimizer_step_tensor_f32(h, 0, w, wnan, 4, &o));
    CHECK(o == VSGD_STEP_SKIPPED && memcmp(w, w0, sizeof w) == 0);
    size_t skipped[4] = {9, 9, 9, 9};
    ROW(NUL, vsgd_optimizer_last_skipped(NULL, skipped, 4, &n));
    ROW(NUL, vsgd_optimizer_last_skipped(h, skipped, 4, NULL));
    ROW(NUL, vsgd_optimizer_last_skipped(h, NULL, 4, &n));
    ROW(VSGD_RESULT_BUFFER_TOO_SMALL, vsgd_optimizer_last_skipped(h, NULL, 0, &n));
    CHECK(n == 1);
    ROW(OK, vsgd_optimizer_last_skipped(h, skipped, 4, &n));
    CHECK(n == 1 && skipped[0] == 0 && skipped[1] == 9);
    ROW(OK, vsgd_optimizer_step_tensor_f32(h, 2, NULL, NULL, 0, &o)); /* the empty tensor */
    CHECK(o == VSGD_STEP_APPLIED);
    ROW(OK, vsgd_optimizer_step_tensor_f32(h, 0, w, gw, 4, NULL));
    CHECK(w[0] < w0[0]);
    ROW(OK, vsgd_optimizer_step_count(h, 0, &steps));
    CHECK(steps == 1);

    /* All tensors at once: count, lengths and types must match the registration. */
    float *ps[3] = {w, NULL, NULL};
    const float *gs[3] = {gw, NULL, NULL};
    size_t lens[3] = {4, 2, 0};
    vsgd_step_report rep = {sizeof rep, 77, 77};
    ROW(NUL, vsgd_optimizer_step_f32(NULL, ps, gs, lens, 3, &rep));
    ROW(NUL, vsgd_optimizer_step_f32(h, NULL, gs, lens, 3, &rep));
    ROW(NUL, vsgd_optimizer_step_f32(h, ps, NULL, lens, 3, &rep));
    ROW(NUL, vsgd_optimizer_step_f32(h, ps, gs, NULL, 3, &rep));
    ROW(NUL, vsgd_optimizer_step_f32(h, ps, gs, lens, 3, &rep)); /* ps[1] is NULL, lens[1] 2 */
    ps[1] = big;
    gs[1] = big + 2;
    ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step_f32(h, ps, gs, lens, 2, &rep));
    ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step_f32(h, NULL, NULL, NULL, 0, &rep));
    ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_step_f32(h, ps, gs, lens, 3, &rep));
    ps[1] = w + 2; /* overlaps tensor 0's parameter */
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step_f32(h, ps, gs, lens, 3, &rep));
    CHECK(rep.applied == 77);
    {
        /* The report is written after the step: inside a parameter it would overwrite it. */
        union {
            vsgd_step_report r;
            float f[8];
        } u;
        u.r.struct_size = sizeof u.r; /* u.f[0..1] */
        memcpy(u.f + 2, w, sizeof w); /* tensor 0's parameter: u.f[2..5], inside the report */
        float *ps_u[3] = {u.f + 2, big, NULL};
        ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step_f32(h, ps_u, gs, lens, 3, &u.r));
        CHECK(memcmp(u.f + 2, w, sizeof w) == 0 && u.r.struct_size == sizeof u.r);
    }
    rep.struct_size = 8;
    ROW(VSGD_RESULT_INVALID_STRUCT_SIZE, vsgd_optimizer_step_f32(h, ps, gs, lens, 3, &rep));
    rep.struct_size = sizeof rep;
    double *dps[3] = {b, b, NULL};
    const double *dgs[3] = {gb, gb, NULL};
    size_t dlens[3] = {4, 2, 0};
    ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step_f64(h, dps, dgs, dlens, 3, &rep));
    dlens[0] = 2;
    double d0[2] = {0, 0};
    dps[0] = d0; /* tensor 0 holds floats */
    dps[1] = b;
    ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_step_f64(h, dps, dgs, dlens, 3, &rep));
    ROW(NUL, vsgd_optimizer_step_f64(h, NULL, dgs, dlens, 3, &rep));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER,
        vsgd_optimizer_step_f64(h, dps, dgs, (const size_t *)misaligned(dlens), 3, &rep));
    ROW(OK, vsgd_optimizer_step_count(h, 0, &steps));
    CHECK(steps == 1 && memcmp(b, b0, sizeof b) == 0);

    /* State read-out: name, element type and length must match. */
    float m[4];
    double dm[2];
    ROW(NUL, vsgd_optimizer_state_f32(NULL, 0, "mug", m, 4));
    ROW(NUL, vsgd_optimizer_state_f32(h, 0, NULL, m, 4));
    ROW(NUL, vsgd_optimizer_state_f32(h, 0, "mug", NULL, 4));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_optimizer_state_f32(h, 0, bad_utf8, m, 4));
    ROW(VSGD_RESULT_UNKNOWN_STATE_ARRAY, vsgd_optimizer_state_f32(h, 0, "m", m, 4)); /* Adam's */
    ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_state_f32(h, 3, "mug", m, 4));
    ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_state_f32(h, 1, "mug", m, 2));
    ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_state_f64(h, 0, "mug", dm, 2));
    ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_state_f32(h, 0, "mug", m, 3));
    ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_state_f64(h, 1, "bg", dm, 0));
    ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_optimizer_state_f32(h, 0, "mug", (float *)misaligned(big), 4));
    ROW(OK, vsgd_optimizer_state_f32(h, 0, "mug", m, 4));
    CHECK(m[0] != 0);
    ROW(OK, vsgd_optimizer_state_f64(h, 1, "bhg", dm, 2));
    CHECK(dm[0] == 0 && dm[1] == 0); /* tensor 1 has not stepped */

    ROW(NUL, vsgd_optimizer_effective_momentum_f32(NULL, 0, m, 4));
    ROW(NUL, vsgd_optimizer_effective_momentum_f32(h, 0, NULL, 4));
    ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_effective_momentum_f32(h, 0, m, 2));
    ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_effective_momentum_f64(h, 0, dm, 4));
    ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_effective_momentum_f64(h, 8, dm, 2));
    ROW(OK, vsgd_optimizer_effective_momentum_f32(h, 0, m, 4));
    CHECK(m[0] > 0 && m[0] < 1);

    /* Wrong algorithm: effective momentum exists for VSGD only. */
    vsgd_optimizer *ha = make(VSGD_ALGORITHM_ADAM);
    CHECK_OK(vsgd_optimizer_add_tensor(ha, (size_t[]){4}, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    ROW(VSGD_RESULT_ALGORITHM_MISMATCH, vsgd_optimizer_effective_momentum_f32(ha, 0, m, 4));
    ROW(VSGD_RESULT_UNKNOWN_STATE_ARRAY, vsgd_optimizer_state_f32(ha, 0, "mug", m, 4));
    ROW(VSGD_RESULT_ALGORITHM_MISMATCH, vsgd_optimizer_add_group(ha, c, &grp));
    ROW(OK, vsgd_optimizer_state_f32(ha, 0, "v", m, 4));
    vsgd_optimizer_free(ha);

    /* Mixed precision on a handle: tensor 0 bf16 with bf16 state (seed 7), tensor 1 bf16 with
     * float state. */
    {
        vsgd_optimizer *hm = make(VSGD_ALGORITHM_VSGD);
        size_t mid = 99;
        ROW(NUL, vsgd_optimizer_add_tensor_mixed(NULL, (size_t[]){4}, 1, VSGD_DTYPE_BF16, VSGD_DTYPE_BF16, 7, "m", 0, &mid));
        ROW(NUL, vsgd_optimizer_add_tensor_mixed(hm, (size_t[]){4}, 1, VSGD_DTYPE_BF16, VSGD_DTYPE_BF16, 7, "m", 0, NULL));
        ROW(ENUM, vsgd_optimizer_add_tensor_mixed(hm, (size_t[]){4}, 1, VSGD_DTYPE_BF16, 9, 7, "m", 0, &mid));
        ROW(ENUM, vsgd_optimizer_add_tensor_mixed(hm, (size_t[]){4}, 1, 9, VSGD_DTYPE_F32, 7, "m", 0, &mid));
        ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_add_tensor_mixed(hm, (size_t[]){4}, 1, VSGD_DTYPE_F16, VSGD_DTYPE_F16, 7, "m", 0, &mid));
        ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_add_tensor_mixed(hm, (size_t[]){4}, 1, VSGD_DTYPE_F64, VSGD_DTYPE_F32, 7, "m", 0, &mid));
        ROW(VSGD_RESULT_UNKNOWN_GROUP, vsgd_optimizer_add_tensor_mixed(hm, (size_t[]){4}, 1, VSGD_DTYPE_BF16, VSGD_DTYPE_BF16, 7, "m", 5, &mid));
        ROW(VSGD_RESULT_INVALID_STRING, vsgd_optimizer_add_tensor_mixed(hm, (size_t[]){4}, 1, VSGD_DTYPE_BF16, VSGD_DTYPE_F32, 7, bad_utf8, 0, &mid));
        CHECK(mid == 99);
        ROW(OK, vsgd_optimizer_add_tensor_mixed(hm, (size_t[]){4}, 1, VSGD_DTYPE_BF16, VSGD_DTYPE_BF16, 7, "m", 0, &mid));
        CHECK(mid == 0);
        ROW(OK, vsgd_optimizer_add_tensor(hm, (size_t[]){4}, 1, VSGD_DTYPE_BF16, "p", 0, &mid));
        CHECK(mid == 1);
        vsgd_tensor_info mi = {sizeof mi, 0, 0, 0, 0, 0, 0, 0};
        CHECK_OK(vsgd_optimizer_tensor_info(hm, 0, &mi));
        CHECK(mi.dtype == VSGD_DTYPE_BF16 && mi.state_dtype == VSGD_DTYPE_BF16 && mi.seed == 7);
        CHECK_OK(vsgd_optimizer_tensor_info(hm, 1, &mi));
        CHECK(mi.dtype == VSGD_DTYPE_BF16 && mi.state_dtype == VSGD_DTYPE_F32 && mi.seed == 0);
        uint16_t q0[4] = {0x3f80, 0x3f80, 0x3f80, 0x3f80}, q1[4] = {0x3f80, 0x3f80, 0x3f80, 0x3f80};
        uint16_t qg[4] = {0x3f00, 0x3f00, 0x3f00, 0x3f00}, qnan[4] = {0x3f00, 0x7fc0, 0x3f00, 0x3f00};
        uint16_t *qps[2] = {q0, q1};
        const uint16_t *qgs[2] = {qg, qnan};
        size_t qlens[2] = {4, 4};
        vsgd_step_report mr = {sizeof mr, 77, 77};
        ROW(NUL, vsgd_optimizer_step_bf16(NULL, qps, qgs, qlens, 2, &mr));
        ROW(NUL, vsgd_optimizer_step_bf16(hm, NULL, qgs, qlens, 2, &mr));
        ROW(NUL, vsgd_optimizer_step_bf16(hm, qps, qgs, NULL, 2, &mr));
        ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step_bf16(hm, qps, qgs, qlens, 1, &mr));
        ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_step_f16(hm, qps, qgs, qlens, 2, &mr));
        ROW(VSGD_RESULT_DTYPE_MISMATCH,
            vsgd_optimizer_step_f32(hm, (float *[]){NULL, NULL}, (const float *[]){NULL, NULL}, (size_t[]){0, 0}, 2, &mr));
        qgs[1] = q0; /* overlaps a written parameter */
        ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step_bf16(hm, qps, qgs, qlens, 2, &mr));
        qgs[1] = qnan;
        qps[0] = (uint16_t *)misaligned(q0);
        ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_optimizer_step_bf16(hm, qps, qgs, qlens, 2, &mr));
        qps[0] = q0;
        CHECK_OK(vsgd_optimizer_set_policy(hm, VSGD_POLICY_ERROR));
        ROW(VSGD_RESULT_NON_FINITE_GRADIENT, vsgd_optimizer_step_bf16(hm, qps, qgs, qlens, 2, &mr));
        CHECK(mr.applied == 77 && q0[0] == 0x3f80 && q1[0] == 0x3f80);
        CHECK_OK(vsgd_optimizer_set_policy(hm, VSGD_POLICY_SKIP));
        ROW(OK, vsgd_optimizer_step_bf16(hm, qps, qgs, qlens, 2, &mr));
        CHECK(mr.applied == 1 && mr.skipped == 1 && q0[0] != 0x3f80 && q1[0] == 0x3f80);
        uint16_t qs[4] = {0, 0, 0, 0};
        float qf[4] = {1, 1, 1, 1};
        ROW(NUL, vsgd_optimizer_state_bf16(NULL, 0, "mug", qs, 4));
        ROW(NUL, vsgd_optimizer_state_bf16(hm, 0, NULL, qs, 4));
        ROW(NUL, vsgd_optimizer_state_bf16(hm, 0, "mug", NULL, 4));
        ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_state_bf16(hm, 2, "mug", qs, 4));
        ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_state_bf16(hm, 1, "mug", qs, 4)); /* float state */
        ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_state_f32(hm, 0, "mug", qf, 4));  /* bf16 state */
        ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_state_bf16(hm, 0, "mug", qs, 3));
        ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_optimizer_state_bf16(hm, 0, "mug", (uint16_t *)misaligned(qs), 4));
        ROW(OK, vsgd_optimizer_state_bf16(hm, 0, "mug", qs, 4));
        CHECK(qs[0] != 0);
        ROW(OK, vsgd_optimizer_state_f32(hm, 1, "mug", qf, 4));
        CHECK(qf[0] == 0); /* tensor 1 was skipped */
        vsgd_optimizer_free(hm);

        vsgd_optimizer *hh = make(VSGD_ALGORITHM_ADAM);
        CHECK_OK(vsgd_optimizer_add_tensor(hh, (size_t[]){2}, 1, VSGD_DTYPE_F16, NULL, 0, &mid));
        uint16_t e0[2] = {0x3c00, 0x3c00}, eg[2] = {0x3800, 0x3800}; /* binary16 1.0, 0.5 */
        uint16_t *eps[1] = {e0};
        const uint16_t *egs[1] = {eg};
        size_t el[1] = {2};
        ROW(NUL, vsgd_optimizer_step_f16(NULL, eps, egs, el, 1, NULL));
        ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_step_bf16(hh, eps, egs, el, 1, NULL));
        CHECK(e0[0] == 0x3c00);
        CHECK_OK(vsgd_optimizer_set_lr(hh, 0, 0.1)); /* 1e-3 is under half an ulp of 1.0 */
        ROW(OK, vsgd_optimizer_step_f16(hh, eps, egs, el, 1, NULL));
        CHECK(e0[0] != 0x3c00);
        vsgd_optimizer_free(hh);
    }

    /* The steps for any type (each buffer typed by its tensor's registration):
     * tensor 0 float, 1 float with bfloat16 state, 2 bfloat16 with float state. */
    {
        vsgd_optimizer *ha = make(VSGD_ALGORITHM_ADAM);
        size_t t = 99, cnt = 99;
        CHECK_OK(vsgd_optimizer_add_tensor(ha, (size_t[]){4}, 1, VSGD_DTYPE_F32, "f", 0, &t));
        ROW(OK, vsgd_optimizer_add_tensor_mixed(ha, (size_t[]){4}, 1, VSGD_DTYPE_F32, VSGD_DTYPE_BF16, 3, "fb", 0, &t));
        CHECK(t == 1);
        CHECK_OK(vsgd_optimizer_add_tensor(ha, (size_t[]){4}, 1, VSGD_DTYPE_BF16, "b", 0, &t));
        CHECK_OK(vsgd_optimizer_set_lr(ha, 0, 0.1));
        _Alignas(16) float a0[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        float a1[4] = {1, 1, 1, 1}, ag[4] = {0.5f, 0.5f, 0.5f, 0.5f}, anan[4] = {0.5f, NAN, 0.5f, 0.5f};
        float a00[8], a10[4];
        uint16_t b0[4] = {0x3f80, 0x3f80, 0x3f80, 0x3f80}, bg[4] = {0x3f00, 0x3f00, 0x3f00, 0x3f00}, b00[4];
        memcpy(a00, a0, sizeof a0);
        memcpy(a10, a1, sizeof a1);
        memcpy(b00, b0, sizeof b0);
        void *aps[3] = {a0, a1, b0};
        const void *ags[3] = {ag, ag, bg}; /* one gradient read by two tensors: allowed */
        size_t al[3] = {4, 4, 4};
        vsgd_step_report ar = {sizeof ar, 77, 77};
        ROW(NUL, vsgd_optimizer_step(NULL, aps, ags, al, 3, &ar));
        ROW(NUL, vsgd_optimizer_step(ha, NULL, ags, al, 3, &ar));
        ROW(NUL, vsgd_optimizer_step(ha, aps, NULL, al, 3, &ar));
        ROW(NUL, vsgd_optimizer_step(ha, aps, ags, NULL, 3, &ar));
        ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step(ha, aps, ags, al, 2, &ar));
        al[2] = 3;
        ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step(ha, aps, ags, al, 3, &ar));
        al[2] = 4;
        aps[0] = NULL;
        ROW(NUL, vsgd_optimizer_step(ha, aps, ags, al, 3, &ar));
        aps[0] = a0;
        aps[2] = misaligned(b0); /* odd address: misaligned for bfloat16 */
        ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_optimizer_step(ha, aps, ags, al, 3, &ar));
        aps[2] = b0;
        ags[1] = a0 + 2; /* read inside a written parameter */
        ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step(ha, aps, ags, al, 3, &ar));
        ags[1] = ag;
        al[0] = SIZE_MAX;
        ROW(VSGD_RESULT_BUFFER_TOO_LARGE, vsgd_optimizer_step(ha, aps, ags, al, 3, &ar));
        al[0] = 4;
        /* The report, written after the step, inside a parameter (a0's last 4 elements). */
        float a0_tail[4];
        memcpy(a0_tail, a0 + 4, sizeof a0_tail);
        vsgd_step_report *inside = (vsgd_step_report *)(void *)(a0 + 4);
        inside->struct_size = sizeof *inside;
        al[0] = 8;
        ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step(ha, aps, ags, al, 3, &ar));
        ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step(ha, aps, ags, al, 3, inside));
        al[0] = 4;
        memcpy(a0 + 4, a0_tail, sizeof a0_tail);
        CHECK_OK(vsgd_optimizer_set_policy(ha, VSGD_POLICY_ERROR));
        ags[1] = anan;
        ROW(VSGD_RESULT_NON_FINITE_GRADIENT, vsgd_optimizer_step(ha, aps, ags, al, 3, &ar));
        CHECK(ar.applied == 77 && memcmp(a0, a00, sizeof a0) == 0 && memcmp(a1, a10, sizeof a1) == 0 &&
              memcmp(b0, b00, sizeof b0) == 0);
        /* The typed steps refuse what they cannot take. */
        ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_step_f32(ha, (float *[]){a0, a1, NULL},
                                                                (const float *[]){ag, ag, NULL}, (size_t[]){4, 4, 0}, 3, &ar));
        CHECK_OK(vsgd_optimizer_set_policy(ha, VSGD_POLICY_SKIP));
        /* Tensor 1 skipped (NaN), tensor 2 frozen (no gradient; its parameter not looked at). */
        ags[2] = NULL;
        aps[2] = NULL;
        ROW(OK, vsgd_optimizer_step(ha, aps, ags, al, 3, &ar));
        CHECK(ar.struct_size == sizeof ar && ar.applied == 1 && ar.skipped == 1);
        CHECK(a0[0] < 1 && memcmp(a1, a10, sizeof a1) == 0 && memcmp(b0, b00, sizeof b0) == 0);
        size_t sk[2] = {9, 9};
        CHECK_OK(vsgd_optimizer_last_skipped(ha, sk, 2, &cnt));
        CHECK(cnt == 1 && sk[0] == 1);
        uint64_t st = 9;
        CHECK_OK(vsgd_optimizer_step_count(ha, 2, &st));
        CHECK(st == 0);
        /* Every tensor. */
        ags[1] = ag;
        ags[2] = bg;
        aps[2] = b0;
        ROW(OK, vsgd_optimizer_step(ha, aps, ags, al, 3, &ar));
        CHECK(ar.applied == 3 && ar.skipped == 0);
        CHECK(a1[0] < 1 && b0[0] != 0x3f80);

        /* One tensor, any type. */
        vsgd_step_outcome so = 42;
        ROW(NUL, vsgd_optimizer_step_tensor(NULL, 2, b0, bg, 4, &so));
        ROW(NUL, vsgd_optimizer_step_tensor(ha, 2, NULL, bg, 4, &so));
        ROW(NUL, vsgd_optimizer_step_tensor(ha, 2, b0, NULL, 4, &so));
        ROW(VSGD_RESULT_UNKNOWN_TENSOR, vsgd_optimizer_step_tensor(ha, 3, b0, bg, 4, &so));
        ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step_tensor(ha, 2, b0, bg, 3, &so));
        ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_optimizer_step_tensor(ha, 2, misaligned(b0), bg, 4, &so));
        ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_optimizer_step_tensor(ha, 0, a0, (const char *)ag + 2, 4, &so));
        ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step_tensor(ha, 2, b0, b0 + 1, 4, &so));
        ROW(VSGD_RESULT_OVERLAPPING_BUFFERS, vsgd_optimizer_step_tensor(ha, 0, a0, ag, 4, (vsgd_step_outcome *)(void *)(a0 + 3)));
        ROW(VSGD_RESULT_BUFFER_TOO_LARGE, vsgd_optimizer_step_tensor(ha, 0, a0, ag, SIZE_MAX, &so));
        CHECK_OK(vsgd_optimizer_set_policy(ha, VSGD_POLICY_ERROR));
        ROW(VSGD_RESULT_NON_FINITE_GRADIENT, vsgd_optimizer_step_tensor(ha, 1, a1, anan, 4, &so));
        CHECK(so == 42);
        CHECK_OK(vsgd_optimizer_set_policy(ha, VSGD_POLICY_SKIP));
        ROW(OK, vsgd_optimizer_step_tensor(ha, 1, a1, anan, 4, &so));
        CHECK(so == VSGD_STEP_SKIPPED);
        memcpy(b00, b0, sizeof b0);
        ROW(OK, vsgd_optimizer_step_tensor(ha, 2, b0, bg, 4, NULL));
        CHECK(memcmp(b0, b00, sizeof b0) != 0);
        ROW(OK, vsgd_optimizer_step_tensor(ha, 1, a1, ag, 4, &so));
        CHECK(so == VSGD_STEP_APPLIED);
        CHECK_OK(vsgd_optimizer_step_count(ha, 1, &st));
        CHECK(st == 2);
        /* The float steps take float parameters with bfloat16 state too (tensor 1). */
        so = 42;
        memcpy(a10, a1, sizeof a1);
        ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_optimizer_step_tensor_f32(ha, 1, a1, ag, 3, &so));
        CHECK_OK(vsgd_optimizer_set_policy(ha, VSGD_POLICY_ERROR));
        ROW(VSGD_RESULT_NON_FINITE_GRADIENT, vsgd_optimizer_step_tensor_f32(ha, 1, a1, anan, 4, &so));
        CHECK(so == 42 && memcmp(a1, a10, sizeof a1) == 0);
        CHECK_OK(vsgd_optimizer_set_policy(ha, VSGD_POLICY_SKIP));
        ROW(OK, vsgd_optimizer_step_tensor_f32(ha, 1, a1, anan, 4, &so));
        CHECK(so == VSGD_STEP_SKIPPED && memcmp(a1, a10, sizeof a1) == 0);
        CHECK_OK(vsgd_optimizer_last_skipped(ha, sk, 2, &cnt));
        CHECK(cnt == 1 && sk[0] == 1);
        ROW(OK, vsgd_optimizer_step_tensor_f32(ha, 1, a1, ag, 4, &so));
        CHECK(so == VSGD_STEP_APPLIED && a1[0] < a10[0]);
        vsgd_optimizer_free(ha);

        /* vsgd_optimizer_step_f32 over float tensors with float and bfloat16 state: the bits of
         * vsgd_optimizer_step on a twin handle. */
        vsgd_optimizer *hf[2] = {make(VSGD_ALGORITHM_VSGD), make(VSGD_ALGORITHM_VSGD)};
        float fp[2][2][3] = {{{1, 2, 3}, {-1, 0.5f, 4}}, {{1, 2, 3}, {-1, 0.5f, 4}}};
        const float fg[2][3] = {{0.25f, -0.5f, 1}, {2, -0.125f, 0.75f}};
        for (int k = 0; k < 2; k++) {
            CHECK_OK(vsgd_optimizer_add_tensor(hf[k], (size_t[]){3}, 1, VSGD_DTYPE_F32, NULL, 0, &t));
            CHECK_OK(vsgd_optimizer_add_tensor_mixed(hf[k], (size_t[]){3}, 1, VSGD_DTYPE_F32, VSGD_DTYPE_BF16, 9, NULL, 0, &t));
        }
        vsgd_step_report fr = {sizeof fr, 0, 0};
        for (int step = 0; step < 2; step++) {
            ROW(OK, vsgd_optimizer_step_f32(hf[0], (float *[]){fp[0][0], fp[0][1]},
                                            (const float *[]){fg[0], fg[1]}, (size_t[]){3, 3}, 2, &fr));
            CHECK(fr.applied == 2);
            ROW(OK, vsgd_optimizer_step(hf[1], (void *[]){fp[1][0], fp[1][1]},
                                        (const void *[]){fg[0], fg[1]}, (size_t[]){3, 3}, 2, &fr));
        }
        CHECK(memcmp(fp[0], fp[1], sizeof fp[0]) == 0 && fp[0][1][0] != -1);
        vsgd_optimizer_free(hf[0]);
        vsgd_optimizer_free(hf[1]);
    }

    /* A good all-tensor step at the end: everything applies. */
    float *ps2[3] = {w, NULL, NULL};
    const float *gs2[3] = {gw, NULL, NULL};
    size_t lens2[3] = {4, 0, 0};
    ROW(VSGD_RESULT_DTYPE_MISMATCH, vsgd_optimizer_step_f32(h, ps2, gs2, lens2, 3, &rep));
    vsgd_optimizer_free(h);
    h = make(VSGD_ALGORITHM_SGDM);
    CHECK_OK(vsgd_optimizer_add_tensor(h, (size_t[]){4}, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    CHECK_OK(vsgd_optimizer_add_tensor(h, (size_t[]){0}, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    ROW(OK, vsgd_optimizer_step_f32(h, ps2, gs2, lens2, 2, &rep));
    CHECK(rep.applied == 2 && rep.skipped == 0);
    ROW(OK, vsgd_optimizer_step_f32(h, ps2, gs2, lens2, 2, NULL));
    ROW(OK, vsgd_optimizer_step_count(h, 0, &steps));
    CHECK(steps == 2);
    vsgd_optimizer_free(h);
    vsgd_config_free(c);
    vsgd_config_free(adam);
    vsgd_config_free(bad);
}

/* Writes `n` bytes to `path` (a damaged checkpoint file for the load rows). */
static void write_file(const char *path, const uint8_t *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(bytes, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

/* A handle of `a` with tensors named `w` (f32, `nw`) and `b` (`bt`, `nb`), group 0. */
static vsgd_optimizer *two_tensors(vsgd_algorithm a, size_t nw, const char *b, vsgd_dtype bt,
                                   size_t nb) {
    size_t id;
    vsgd_optimizer *h = make(a);
    CHECK_OK(vsgd_optimizer_add_tensor(h, &nw, 1, VSGD_DTYPE_F32, "w", 0, &id));
    if (b) CHECK_OK(vsgd_optimizer_add_tensor(h, &nb, 1, bt, b, 0, &id));
    return h;
}

/* The checkpoint of `h` in a new buffer (freed by the caller); its size in `*n`. */
static uint8_t *saved(const vsgd_optimizer *h, size_t *n) {
    CHECK(vsgd_optimizer_save(h, NULL, 0, n) == VSGD_RESULT_BUFFER_TOO_SMALL);
    uint8_t *buf = malloc(*n);
    CHECK(buf != NULL);
    CHECK_OK(vsgd_optimizer_save(h, buf, *n, n));
    return buf;
}

/* Loads `n` bytes that must be refused with a checkpoint code (>= 200), a message naming
 * the function, and *out set to NULL. Returns the code. */
static vsgd_result refused(const uint8_t *bytes, size_t n) {
    vsgd_optimizer *out = (vsgd_optimizer *)&n;
    reset_message("vsgd_optimizer_load");
    vsgd_result r = vsgd_optimizer_load(bytes, n, &out);
    rows++;
    if (r < 200 || r > 299 || out != NULL ||
        strncmp(last_error(), "vsgd_optimizer_load: ", 21) != 0) {
        failures++;
        fprintf(stderr, "damaged checkpoint of %zu bytes: got %s (%s), out %p\n", n,
                vsgd_result_name(r), last_error(), (void *)out);
        vsgd_optimizer_free(out == (vsgd_optimizer *)&n ? NULL : out);
    }
    return r;
}

#define CK(name) VSGD_RESULT_CHECKPOINT_##name

static void test_checkpoint(const char *dir) {
    size_t id, n = 0, need = 0;
    vsgd_optimizer *h = two_tensors(VSGD_ALGORITHM_VSGD, 4, "b", VSGD_DTYPE_F64, 2);
    float w[4] = {1, 2, 3, 4}, gw[4] = {0.1f, -0.2f, 0.3f, -0.4f};
    double b[2] = {1, -1}, gb[2] = {0.5, 0.25};
    CHECK_OK(vsgd_optimizer_step_tensor_f32(h, 0, w, gw, 4, NULL));
    CHECK_OK(vsgd_optimizer_step_tensor_f64(h, 1, b, gb, 2, NULL));

    /* Save: NULLs, size query, zero and short capacity (nothing written), misaligned out. */
    ROW(VSGD_RESULT_BUFFER_TOO_SMALL, vsgd_optimizer_save(h, NULL, 0, &need));
    CHECK(need > 100);
    uint8_t *buf = malloc(need + 8), *copy = malloc(need + 8);
    CHECK(buf != NULL && copy != NULL);
    memset(buf, 0xAA, need + 8);
    ROW(NUL, vsgd_optimizer_save(NULL, buf, need, &n));
    ROW(NUL, vsgd_optimizer_save(h, buf, need, NULL));
    ROW(NUL, vsgd_optimizer_save(h, NULL, need, &n));
    ROW(VSGD_RESULT_BUFFER_TOO_SMALL, vsgd_optimizer_save(h, buf, 0, &n));
    CHECK(n == need);
    n = 0;
    ROW(VSGD_RESULT_BUFFER_TOO_SMALL, vsgd_optimizer_save(h, buf, need - 1, &n));
    CHECK(n == need && strstr(last_error(), "needs") != NULL);
    for (size_t i = 0; i < need + 8; i++) CHECK(buf[i] == 0xAA); /* no partial checkpoint */
    ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_optimizer_save(h, buf, need, misaligned(&n)));
    ROW(VSGD_RESULT_BUFFER_TOO_LARGE, vsgd_optimizer_save(h, buf, SIZE_MAX, &n));
    n = 0;
    ROW(OK, vsgd_optimizer_save(h, buf, need + 8, &n));
    CHECK(n == need && buf[need] == 0xAA && buf[0] == 0x95);
    memcpy(copy, buf, need);

    /* Load: NULLs (out cleared), empty, every truncation, every single-bit flip, a wrong
     * magic, a future version. */
    vsgd_optimizer *out = h;
    ROW(NUL, vsgd_optimizer_load(NULL, need, &out));
    CHECK(out == NULL);
    ROW(NUL, vsgd_optimizer_load(buf, need, NULL));
    ROW(CK(TRUNCATED), vsgd_optimizer_load(NULL, 0, &out));
    ROW(CK(TRUNCATED), vsgd_optimizer_load(buf, 0, &out));
    ROW(CK(TRUNCATED), vsgd_optimizer_load(buf, need - 1, &out));
    ROW(CK(TRUNCATED), vsgd_optimizer_load(buf, 17, &out));
    ROW(VSGD_RESULT_BUFFER_TOO_LARGE, vsgd_optimizer_load(buf, SIZE_MAX, &out));
    int truncated = 0, out_of_range = 0;
    for (size_t len = 0; len < need; len++) {
        vsgd_result r = refused(buf, len);
        truncated += r == CK(TRUNCATED);
        out_of_range += r == CK(LENGTH_OUT_OF_RANGE);
    }
    CHECK(truncated > 0 && out_of_range > 0); /* both kinds of cut were seen */
    int checksum = 0;
    for (size_t i = 0; i < need; i++)
        for (int bit = 0; bit < 8; bit++) {
            copy[i] ^= (uint8_t)(1u << bit);
            checksum += refused(copy, need) == CK(CHECKSUM_MISMATCH);
            copy[i] ^= (uint8_t)(1u << bit);
        }
    CHECK(checksum > (int)need); /* most flips land in the checksummed payload */
    CHECK(memcmp(copy, buf, need) == 0);
    copy[1] ^= 0x20; /* fixstr "vsgd-checkpoint" → "Vsgd-checkpoint" */
    ROW(CK(BAD_MAGIC), vsgd_optimizer_load(copy, need, &out));
    copy[1] ^= 0x20;
    copy[17] = 3; /* format version 3 */
    ROW(CK(UNSUPPORTED_VERSION), vsgd_optimizer_load(copy, need, &out));
    CHECK(strstr(last_error(), "version 3") != NULL);
    copy[17] = buf[17];
    copy[need - 1] ^= 1; /* the stored checksum itself */
    ROW(CK(CHECKSUM_MISMATCH), vsgd_optimizer_load(copy, need, &out));
    copy[need - 1] ^= 1;
    static const char junk[] = "definitely not a checkpoint";
    ROW(CK(BAD_MAGIC), vsgd_optimizer_load((const uint8_t *)junk, sizeof junk, &out));
    CHECK(out == NULL);
    ROW(OK, vsgd_optimizer_load(buf, need, &out));
    CHECK(out != NULL);
    vsgd_optimizer_free(out);

    /* Restore: NULLs, damaged bytes, and handles whose tensors differ, each named; a failed
     * restore leaves the handle as it was. */
    ROW(NUL, vsgd_optimizer_restore(NULL, buf, need));
    ROW(NUL, vsgd_optimizer_restore(h, NULL, need));
    ROW(CK(TRUNCATED), vsgd_optimizer_restore(h, buf, 0));
    ROW(CK(TRUNCATED), vsgd_optimizer_restore(h, NULL, 0));
    copy[need / 2] ^= 0x10;
    ROW(CK(CHECKSUM_MISMATCH), vsgd_optimizer_restore(h, copy, need));
    copy[need / 2] ^= 0x10;
    struct {
        vsgd_optimizer *h;
        const char *names; /* in the message */
    } wrong[] = {
        {two_tensors(VSGD_ALGORITHM_VSGD, 4, "b", VSGD_DTYPE_F64, 3), "tensor 1 (\"b\")"},
        {two_tensors(VSGD_ALGORITHM_VSGD, 4, "c", VSGD_DTYPE_F64, 2), "tensor 1 (\"c\")"},
        {two_tensors(VSGD_ALGORITHM_VSGD, 4, "b", VSGD_DTYPE_F32, 2), "element type"},
        {two_tensors(VSGD_ALGORITHM_VSGD, 5, "b", VSGD_DTYPE_F64, 2), "tensor 0 (\"w\")"},
        {two_tensors(VSGD_ALGORITHM_VSGD, 4, NULL, 0, 0), "tensor 1 (\"b\")"},
        {two_tensors(VSGD_ALGORITHM_ADAM, 4, "b", VSGD_DTYPE_F64, 2), "algorithm"},
    };
    for (size_t k = 0; k < sizeof wrong / sizeof wrong[0]; k++) {
        size_t before_n, after_n;
        uint8_t *before = saved(wrong[k].h, &before_n);
        ROW(CK(MISMATCH), vsgd_optimizer_restore(wrong[k].h, buf, need));
        if (strstr(last_error(), wrong[k].names) == NULL) {
            failures++;
            fprintf(stderr, "restore mismatch %zu: '%s' lacks '%s'\n", k, last_error(),
                    wrong[k].names);
        }
        uint8_t *after = saved(wrong[k].h, &after_n);
        CHECK(before_n == after_n && memcmp(before, after, before_n) == 0);
        free(before);
        free(after);
        vsgd_optimizer_free(wrong[k].h);
    }
    vsgd_optimizer *fresh = two_tensors(VSGD_ALGORITHM_VSGD, 4, "b", VSGD_DTYPE_F64, 2);
    ROW(OK, vsgd_optimizer_restore(fresh, buf, need));
    uint64_t steps = 0;
    CHECK_OK(vsgd_optimizer_step_count(fresh, 1, &steps));
    CHECK(steps == 1);

    /* Files: NULLs, non-UTF-8, missing directories and files, directories, damaged files. */
    char path[1024], missing[1024], bad_file[1024];
    snprintf(path, sizeof path, "%s/bad_input.vsgdckpt", dir);
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.vsgdckpt", dir);
    snprintf(bad_file, sizeof bad_file, "%s/damaged.vsgdckpt", dir);
    ROW(NUL, vsgd_optimizer_save_file(NULL, path));
    ROW(NUL, vsgd_optimizer_save_file(h, NULL));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_optimizer_save_file(h, bad_utf8));
    ROW(VSGD_RESULT_FILE_NOT_FOUND, vsgd_optimizer_save_file(h, missing));
    CHECK(strstr(last_error(), "no/such/dir") != NULL);
    ROW(VSGD_RESULT_IO_ERROR, vsgd_optimizer_save_file(h, ""));
    ROW(VSGD_RESULT_IO_ERROR, vsgd_optimizer_save_file(h, dir)); /* a directory is in the way */
    ROW(OK, vsgd_optimizer_save_file(h, path));

    out = h;
    ROW(NUL, vsgd_optimizer_load_file(NULL, &out));
    CHECK(out == NULL);
    ROW(NUL, vsgd_optimizer_load_file(path, NULL));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_optimizer_load_file(bad_utf8, &out));
    ROW(VSGD_RESULT_FILE_NOT_FOUND, vsgd_optimizer_load_file(missing, &out));
    ROW(VSGD_RESULT_FILE_NOT_FOUND, vsgd_optimizer_load_file("", &out));
    ROW(VSGD_RESULT_IO_ERROR, vsgd_optimizer_load_file(dir, &out));
    write_file(bad_file, buf, 0);
    ROW(CK(TRUNCATED), vsgd_optimizer_load_file(bad_file, &out));
    write_file(bad_file, buf, need / 2);
    vsgd_result r = vsgd_optimizer_load_file(bad_file, &out);
    CHECK(r == CK(TRUNCATED) || r == CK(LENGTH_OUT_OF_RANGE));
    copy[need / 3] ^= 0x01;
    write_file(bad_file, copy, need);
    ROW(CK(CHECKSUM_MISMATCH), vsgd_optimizer_load_file(bad_file, &out));
    CHECK(out == NULL);
    ROW(OK, vsgd_optimizer_load_file(path, &out));
    CHECK(out != NULL);

    ROW(NUL, vsgd_optimizer_restore_file(NULL, path));
    ROW(NUL, vsgd_optimizer_restore_file(out, NULL));
    ROW(VSGD_RESULT_INVALID_STRING, vsgd_optimizer_restore_file(out, bad_utf8));
    ROW(VSGD_RESULT_FILE_NOT_FOUND, vsgd_optimizer_restore_file(out, missing));
    ROW(CK(CHECKSUM_MISMATCH), vsgd_optimizer_restore_file(out, bad_file));
    vsgd_optimizer *other = two_tensors(VSGD_ALGORITHM_VSGD, 4, "b", VSGD_DTYPE_F64, 3);
    ROW(CK(MISMATCH), vsgd_optimizer_restore_file(other, path));
    CHECK(strstr(last_error(), "tensor 1 (\"b\")") != NULL);
    ROW(OK, vsgd_optimizer_restore_file(fresh, path));
    uint8_t *again = saved(fresh, &n);
    CHECK(n == need && memcmp(again, buf, need) == 0);
    free(again);

    vsgd_optimizer_free(other);
    vsgd_optimizer_free(out);
    vsgd_optimizer_free(fresh);
    vsgd_optimizer_free(h);
    free(buf);
    free(copy);
    CHECK(remove(path) == 0 && remove(bad_file) == 0);
    (void)id;
}

/* The CUDA entry points: argument errors come first, on any machine; then, without a GPU
 * (CI, development machines), NO_DEVICE. scripts/test.d/40-cuda.sh checks stub drivers. */
static void test_cuda(void) {
    vsgd_config *c;
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_ADAM, &c));
    vsgd_cuda_tensor t = {0x1000, 0x2000, {0x3000, 0x4000, 0}, 16, 1, 1e-3, VSGD_DTYPE_F32, 0};
    ROW(NUL, vsgd_cuda_step(NULL, VSGD_POLICY_SKIP, &t, 1, sizeof t, 64, NULL));
    ROW(NUL, vsgd_cuda_step(c, VSGD_POLICY_SKIP, NULL, 1, sizeof t, 64, NULL));
    ROW(VSGD_RESULT_INVALID_STRUCT_SIZE, vsgd_cuda_step(c, VSGD_POLICY_SKIP, &t, 1, 8, 64, NULL));
    ROW(ENUM, vsgd_cuda_step(c, 7, &t, 1, sizeof t, 64, NULL));
    ROW(NUL, vsgd_cuda_step(c, VSGD_POLICY_SKIP, &t, 1, sizeof t, 0, NULL)); /* verdict */
    vsgd_cuda_tensor bad = t;
    bad.t = 0;
    ROW(VSGD_RESULT_INVALID_STEP, vsgd_cuda_step(c, VSGD_POLICY_SKIP, &bad, 1, sizeof t, 64, NULL));
    bad = t;
    bad.grad = 0x2002; /* not aligned for float */
    ROW(VSGD_RESULT_MISALIGNED_BUFFER, vsgd_cuda_step(c, VSGD_POLICY_SKIP, &bad, 1, sizeof t, 64, NULL));
    bad = t;
    bad.reserved = 1;
    ROW(VSGD_RESULT_LENGTH_MISMATCH, vsgd_cuda_step(c, VSGD_POLICY_SKIP, &bad, 1, sizeof t, 64, NULL));
    if (vsgd_cuda_available() == VSGD_RESULT_OK) {
        printf("bad_input: a GPU is present: the device rows are scripts/gpu-check.sh's\n");
    } else {
        ROW(VSGD_RESULT_NO_DEVICE, vsgd_cuda_available());
        ROW(VSGD_RESULT_NO_DEVICE, vsgd_cuda_step(c, VSGD_POLICY_SKIP, &t, 1, sizeof t, 64, NULL));
    }
    vsgd_config_free(c);
}

int main(int argc, char **argv) {
    CHECK(argc == 2); /* a scratch directory for the checkpoint file rows */
    test_meta();
    test_config();
    test_schedule();
    test_stateless();
    test_half();
    test_handle();
    test_checkpoint(argv[1]);
    test_cuda();
    if (failures) {
        fprintf(stderr, "bad_input: %d of %d rows failed\n", failures, rows);
        return 1;
    }
    printf("bad_input: %d rows, each with its exact result code and message\n", rows);
    return 0;
}
