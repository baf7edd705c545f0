/* Conformance cases through both shapes of the C ABI, in float and double: the handle
 * (vsgd_optimizer_step_* over all tensors, and vsgd_optimizer_step_tensor_* one by one) and the
 * stateless kernels (vsgd_step_*). Every parameter at every checkpoint and every final state
 * element must have the same bits as the Rust API's run of the case (vsgd::Optimizer, recorded
 * in the fixture by bindings/c/examples/ffi_fixture.rs, which documents the format).
 *
 * usage: conformance FIXTURE */
#include <math.h>
#include <stdint.h>

#include "common.h"

enum { MAX_HYPER = 16, MAX_STATE = 8 };

typedef struct {
    size_t len;
    double *param0; /* len */
    double *grads;  /* steps * len */
} tensor_t;

typedef struct {
    char name[128], algorithm[64];
    size_t steps, ntensors, total, nhyper, ncheck;
    char hyper_names[MAX_HYPER][64];
    double hyper_values[MAX_HYPER];
    double *lr; /* NULL: the configured rate */
    tensor_t *tensors;
    size_t *checkpoints;
    uint64_t *exp_param[2]; /* bits, [dtype][checkpoint * total] */
    size_t nstate[2];
    char state_names[2][MAX_STATE][64];
    uint64_t *exp_state[2][MAX_STATE]; /* bits, [dtype][j][total] */
} case_t;

static char *cursor;

static const char *token(void) {
    while (*cursor == ' ' || *cursor == '\n') cursor++;
    CHECK(*cursor != '\0');
    const char *t = cursor;
    while (*cursor && *cursor != ' ' && *cursor != '\n') cursor++;
    if (*cursor) *cursor++ = '\0';
    return t;
}

static void expect_word(const char *w) {
    const char *t = token();
    if (strcmp(t, w) != 0) {
        fprintf(stderr, "fixture: expected '%s', found '%s'\n", w, t);
        exit(1);
    }
}

static size_t number(void) {
    char *end;
    unsigned long long v = strtoull(token(), &end, 10);
    CHECK(*end == '\0');
    return (size_t)v;
}

/* One number as the hex digits of its bits. */
static uint64_t bits(void) {
    char *end;
    const char *t = token();
    uint64_t v = strtoull(t, &end, 16);
    CHECK(*end == '\0' && (strlen(t) == 8 || strlen(t) == 16));
    return v;
}

static double real(void) {
    uint64_t b = bits();
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static double *reals(size_t n) {
    double *v = malloc((n ? n : 1) * sizeof *v);
    CHECK(v != NULL);
    for (size_t i = 0; i < n; i++) v[i] = real();
    return v;
}

static uint64_t *bits_array(size_t n) {
    uint64_t *v = malloc((n ? n : 1) * sizeof *v);
    CHECK(v != NULL);
    for (size_t i = 0; i < n; i++) v[i] = bits();
    return v;
}

static void copy_word(char *dst, size_t cap, const char *src) {
    CHECK(strlen(src) < cap);
    strcpy(dst, src);
}

static void parse_case(case_t *c) {
    memset(c, 0, sizeof *c);
    expect_word("case");
    copy_word(c->name, sizeof c->name, token());
    copy_word(c->algorithm, sizeof c->algorithm, token());
    c->steps = number();
    c->ntensors = number();
    expect_word("hyper");
    c->nhyper = number();
    CHECK(c->nhyper <= MAX_HYPER);
    for (size_t i = 0; i < c->nhyper; i++) {
        copy_word(c->hyper_names[i], sizeof c->hyper_names[i], token());
        c->hyper_values[i] = real();
    }
    expect_word("lr");
    if (number() == 1) c->lr = reals(c->steps);
    c->tensors = calloc(c->ntensors, sizeof *c->tensors);
    CHECK(c->tensors != NULL);
    for (size_t k = 0; k < c->ntensors; k++) {
        tensor_t *t = &c->tensors[k];
        expect_word("tensor");
        t->len = number();
        expect_word("param0");
        t->param0 = reals(t->len);
        expect_word("grads");
        t->grads = reals(c->steps * t->len);
        c->total += t->len;
    }
    expect_word("checkpoints");
    c->ncheck = number();
    c->checkpoints = malloc((c->ncheck ? c->ncheck : 1) * sizeof *c->checkpoints);
    CHECK(c->checkpoints != NULL);
    for (size_t i = 0; i < c->ncheck; i++) c->checkpoints[i] = number();
    for (int d = 0; d < 2; d++) {
        expect_word("expect");
        expect_word(d == 0 ? "f32" : "f64");
        expect_word("param");
        c->exp_param[d] = bits_array(c->ncheck * c->total);
        expect_word("state");
        c->nstate[d] = number();
        CHECK(c->nstate[d] <= MAX_STATE);
        for (size_t j = 0; j < c->nstate[d]; j++) {
            copy_word(c->state_names[d][j], sizeof c->state_names[d][j], token());
            c->exp_state[d][j] = bits_array(c->total);
        }
    }
}

static void free_case(case_t *c) {
    free(c->lr);
    for (size_t k = 0; k < c->ntensors; k++) {
        free(c->tensors[k].param0);
        free(c->tensors[k].grads);
    }
    free(c->tensors);
    free(c->checkpoints);
    for (int d = 0; d < 2; d++) {
        free(c->exp_param[d]);
        for (size_t j = 0; j < c->nstate[d]; j++) free(c->exp_state[d][j]);
    }
}

/* A new configuration (the caller frees it). */
static vsgd_config *case_config(const case_t *c, vsgd_algorithm *algorithm) {
    vsgd_config *config;
    CHECK_OK(vsgd_algorithm_from_name(c->algorithm, algorithm));
    CHECK_OK(vsgd_config_new(*algorithm, &config));
    for (size_t i = 0; i < c->nhyper; i++)
        CHECK_OK(vsgd_config_set(config, c->hyper_names[i], c->hyper_values[i]));
    CHECK_OK(vsgd_config_validate(config));
    return config;
}

static int is_checkpoint(const case_t *c, size_t step, size_t *index) {
    for (size_t i = 0; i < c->ncheck; i++)
        if (c->checkpoints[i] == step) {
            *index = i;
            return 1;
        }
    return 0;
}

static long mismatches;

/* Compares `got` with the bits Rust produced. */
#define DEFINE_COMPARE(T, U, SUFFIX)                                                      \
    static void compare_##SUFFIX(const case_t *c, const char *what, const char *run,      \
                                 const T *got, const uint64_t *want, size_t n) {          \
        for (size_t i = 0; i < n; i++) {                                                  \
            U g;                                                                          \
            memcpy(&g, &got[i], sizeof g);                                                \
            if ((uint64_t)g != want[i] && mismatches++ < 10) {                            \
                U wb = (U)want[i];                                                        \
                T w;                                                                      \
                memcpy(&w, &wb, sizeof w);                                                \
                fprintf(stderr, "%s [%s, %s] %s[%zu]: got %a, Rust gave %a\n", c->name,   \
                        #SUFFIX, run, what, i, (double)got[i], (double)w);                \
            }                                                                             \
        }                                                                                 \
    }
DEFINE_COMPARE(float, uint32_t, f32)
DEFINE_COMPARE(double, uint64_t, f64)

/* One runner per element type and shape. `mode` 0: vsgd_optimizer_step_* over all tensors;
 * 1: vsgd_optimizer_step_tensor_* one tensor at a time; 2: stateless vsgd_step_*. */
#define DEFINE_RUN(T, SUFFIX, DTYPE, D)                                                       \
    static void run_##SUFFIX(const case_t *c, int mode) {                                     \
        static const char *const runs[] = {"handle, all tensors", "handle, per tensor",      \
                                           "stateless"};                                      \
        vsgd_algorithm algorithm;                                                             \
        vsgd_config *config = case_config(c, &algorithm);                                     \
        size_t nstate;                                                                        \
        CHECK_OK(vsgd_state_count(algorithm, &nstate));                                       \
        CHECK(nstate <= MAX_STATE);                                                           \
        CHECK(nstate == c->nstate[D]);                                                        \
        T *param = malloc(c->total * sizeof(T));                                              \
        T *grad = malloc(c->total * sizeof(T));                                               \
        T *state = calloc(nstate * c->total, sizeof(T));                                      \
        T **pp = malloc(c->ntensors * sizeof(T *));                                           \
        const T **gp = malloc(c->ntensors * sizeof(T *));                                     \
        size_t *lens = malloc(c->ntensors * sizeof(size_t));                                  \
        CHECK(param && grad && state && pp && gp && lens);                                    \
        vsgd_optimizer *h = NULL;                                                             \
        if (mode < 2) CHECK_OK(vsgd_optimizer_new(config, &h));                               \
        for (size_t k = 0, off = 0; k < c->ntensors; off += c->tensors[k].len, k++) {        \
            const tensor_t *t = &c->tensors[k];                                               \
            for (size_t i = 0; i < t->len; i++) param[off + i] = (T)t->param0[i];           \
            pp[k] = param + off;                                                              \
            gp[k] = grad + off;                                                               \
            lens[k] = t->len;                                                                 \
            size_t id = 99;                                                                   \
            if (h) {                                                                          \
                CHECK_OK(vsgd_optimizer_add_tensor(h, &t->len, 1, DTYPE, NULL, 0, &id));     \
                CHECK(id == k);                                                               \
            }                                                                                 \
        }                                                                                     \
        double base_lr;                                                                       \
        CHECK_OK(vsgd_config_get(config, "lr", &base_lr));                                    \
        for (size_t s = 0; s < c->steps; s++) {                                               \
            for (size_t k = 0, off = 0; k < c->ntensors; off += c->tensors[k].len, k++)      \
                for (size_t i = 0; i < c->tensors[k].len; i++)                               \
                    grad[off + i] = (T)c->tensors[k].grads[s * c->tensors[k].len + i];       \
            double lr = c->lr ? c->lr[s] : base_lr;                                           \
            if (h && c->lr) CHECK_OK(vsgd_optimizer_set_lr(h, 0, lr));                        \
            if (mode == 0) {                                                                  \
                vsgd_step_report rep = {sizeof rep, 99, 99};                                  \
                CHECK_OK(vsgd_optimizer_step_##SUFFIX(h, pp, gp, lens, c->ntensors, &rep)); \
                CHECK(rep.struct_size == sizeof rep);                                         \
                CHECK(rep.applied == c->ntensors && rep.skipped == 0);                        \
            }                                                                                 \
            for (size_t k = 0, off = 0; mode > 0 && k < c->ntensors;                         \
                 off += c->tensors[k].len, k++) {                                             \
                vsgd_step_outcome o = 99;                                                     \
                size_t n = c->tensors[k].len;                                                 \
                if (mode == 1) {                                                              \
                    CHECK_OK(vsgd_optimizer_step_tensor_##SUFFIX(h, k, pp[k], gp[k], n, &o)); \
                } else {                                                                      \
                    T *arrays[MAX_STATE];                                                     \
                    for (size_t j = 0; j < nstate; j++) arrays[j] = state + j * c->total + off; \
                    CHECK_OK(vsgd_step_##SUFFIX(config, s + 1, lr, pp[k], gp[k], n, arrays,    \
                                                nstate, VSGD_POLICY_SKIP, VSGD_FINITE_CHECK,  \
                                                &o));                                         \
                }                                                                             \
                CHECK(o == VSGD_STEP_APPLIED);                                                \
            }                                                                                 \
            size_t ci;                                                                        \
            if (is_checkpoint(c, s + 1, &ci))                                                 \
                compare_##SUFFIX(c, "param", runs[mode], param,                               \
                                 c->exp_param[D] + ci * c->total, c->total);                  \
        }                                                                                     \
        for (size_t j = 0; j < nstate; j++) {                                                 \
            const char *name;                                                                 \
            CHECK_OK(vsgd_state_name(algorithm, j, &name));                                   \
            size_t e = 0;                                                                     \
            while (e < nstate && strcmp(c->state_names[D][e], name) != 0) e++;                \
            CHECK(e < nstate);                                                                \
            T *got = state + j * c->total;                                                    \
            for (size_t k = 0, off = 0; h && k < c->ntensors; off += c->tensors[k].len, k++) { \
                uint64_t steps = 0;                                                           \
                CHECK_OK(vsgd_optimizer_state_##SUFFIX(h, k, name, got + off,                \
                                                       c->tensors[k].len));                   \
                CHECK_OK(vsgd_optimizer_step_count(h, k, &steps));                            \
                CHECK(steps == c->steps);                                                     \
            }                                                                                 \
            compare_##SUFFIX(c, name, runs[mode], got, c->exp_state[D][e], c->total);         \
        }                                                                                     \
        vsgd_optimizer_free(h);                                                               \
        vsgd_config_free(config);                                                             \
        free(param);                                                                          \
        free(grad);                                                                           \
        free(state);                                                                          \
        free(pp);                                                                             \
        free(gp);                                                                             \
        free(lens);                                                                           \
    }
DEFINE_RUN(float, f32, VSGD_DTYPE_F32, 0)
DEFINE_RUN(double, f64, VSGD_DTYPE_F64, 1)

int main(int argc, char **argv) {
    CHECK(argc == 2);
    FILE *f = fopen(argv[1], "rb");
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    long size = ftell(f);
    CHECK(size > 0);
    rewind(f);
    char *text = malloc((size_t)size + 1);
    CHECK(text != NULL);
    CHECK(fread(text, 1, (size_t)size, f) == (size_t)size);
    text[size] = '\0';
    fclose(f);
    cursor = text;
    expect_word("vsgd-ffi-fixture");
    expect_word("2");
    size_t ncases = number();
    CHECK(ncases > 0);
    size_t values = 0;
    for (size_t i = 0; i < ncases; i++) {
        case_t c;
        parse_case(&c);
        for (int mode = 0; mode < 3; mode++) {
            run_f32(&c, mode);
            run_f64(&c, mode);
        }
        values += 2 * 3 * (c.ncheck + c.nstate[0]) * c.total;
        free_case(&c);
    }
    free(text);
    if (mismatches) {
        fprintf(stderr, "conformance: %ld values differ from the Rust library\n", mismatches);
        return 1;
    }
    printf("conformance: %zu cases x {f32, f64} x {handle all, handle per tensor, stateless}: "
           "%zu values bit-identical to Rust\n", ncases, values);
    return 0;
}
