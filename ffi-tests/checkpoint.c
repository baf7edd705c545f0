/* Checkpoints through the C ABI: training interrupted at a step, saved (to bytes or a file),
 * dropped, and resumed (loaded into a new handle, or restored into a freshly built one) must
 * end with the same bits as uninterrupted training: parameters, every state array, step
 * counts and the final checkpoint bytes. For every algorithm, with two groups, a schedule,
 * f32 and f64 tensors, an empty tensor and a skipped (non-finite) step.
 *
 * It also writes DIR/from_c.vsgdckpt and DIR/from_c.expect (lines `vsgd inspect` must print
 * for it, as the C side sees the handle), for run.sh to check on the Rust side; and given a
 * checkpoint written by Rust (`vsgd replay --save`), loads it and saves it again: the bytes
 * must be identical.
 *
 * usage: checkpoint DIR [RUST_CHECKPOINT...] */
#include <math.h>
#include <stdint.h>

#include "common.h"

enum { STEPS = 12, CUT = 5, NAN_STEP = 7, NW = 5, NB = 3, NALG = 5 };

static const vsgd_algorithm algorithms[NALG] = {
    VSGD_ALGORITHM_VSGD, VSGD_ALGORITHM_CONSTANT_VSGD, VSGD_ALGORITHM_ADAM,
    VSGD_ALGORITHM_ADAMW, VSGD_ALGORITHM_SGDM};

/* A reproducible number in [-1, 1) from (step, tensor, element): splitmix64. */
static double noise(uint64_t s, uint64_t k, uint64_t i) {
    uint64_t z = s * 0x9E3779B97F4A7C15ull + k * 0xBF58476D1CE4E5B9ull + i + 1;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
}

enum { MAX_STATE = 8 }; /* room for more state arrays than any algorithm keeps today */

typedef struct {
    float w[NW];
    double b[NB];
} params_t;

/* What a run ends with: parameters, state (as bytes), step counts, the final checkpoint. */
typedef struct {
    params_t p;
    uint8_t state[MAX_STATE][NW * sizeof(float) + NB * sizeof(double)];
    uint64_t steps[3];
    uint8_t *ckpt;
    size_t ckpt_len;
} result_t;

/* The checkpoint of `h` in a new buffer (size query, then save). */
static uint8_t *save_bytes(const vsgd_optimizer *h, size_t *n) {
    vsgd_result r = vsgd_optimizer_save(h, NULL, 0, n);
    CHECK(r == VSGD_RESULT_BUFFER_TOO_SMALL && *n > 0);
    uint8_t *buf = malloc(*n);
    CHECK(buf != NULL);
    size_t written = 0;
    CHECK_OK(vsgd_optimizer_save(h, buf, *n, &written));
    CHECK(written == *n);
    return buf;
}

/* Group 0: the defaults with a step-decay schedule; group 1: half the learning rate, no
 * schedule. Tensors "w" (f32, group 0), "b" (f64, group 1), and an unnamed empty one.
 * `plain`: the same registration with other settings (policy ERROR, no schedule, default
 * rates), which a restore must replace. */
static vsgd_optimizer *build(vsgd_algorithm a, int plain) {
    vsgd_config *c;
    vsgd_optimizer *h = NULL;
    size_t g, id;
    double lr;
    CHECK_OK(vsgd_config_new(a, &c));
    CHECK_OK(vsgd_optimizer_new(c, &h));
    CHECK_OK(vsgd_config_get(c, "lr", &lr));
    if (!plain) CHECK_OK(vsgd_config_set(c, "lr", lr * 0.5));
    CHECK_OK(vsgd_optimizer_add_group(h, c, &g));
    CHECK(g == 1);
    vsgd_config_free(c);
    if (!plain) {
        vsgd_schedule *s;
        CHECK_OK(vsgd_schedule_new(VSGD_SCHEDULE_STEP_DECAY, &s));
        CHECK_OK(vsgd_schedule_set(s, "every", 3));
        CHECK_OK(vsgd_schedule_set(s, "factor", 0.5));
        CHECK_OK(vsgd_optimizer_set_schedule(h, 0, s));
        vsgd_schedule_free(s);
    } else {
        CHECK_OK(vsgd_optimizer_set_policy(h, VSGD_POLICY_ERROR));
    }
    /* "w" is a 1 x NW matrix: checkpoints record shapes. */
    const size_t w_shape[2] = {1, NW}, b_shape[1] = {NB}, empty[1] = {0};
    CHECK_OK(vsgd_optimizer_add_tensor(h, w_shape, 2, VSGD_DTYPE_F32, "w", 0, &id));
    CHECK_OK(vsgd_optimizer_add_tensor(h, b_shape, 1, VSGD_DTYPE_F64, "b", 1, &id));
    CHECK_OK(vsgd_optimizer_add_tensor(h, empty, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    CHECK(id == 2);
    return h;
}

/* Training step `s` (0-based) of all three tensors; at NAN_STEP "w" gets a NaN gradient
 * and is skipped. */
static void step(vsgd_optimizer *h, size_t s, params_t *p) {
    float gw[NW];
    double gb[NB];
    for (size_t i = 0; i < NW; i++) gw[i] = (float)noise(s, 0, i) + 0.01f * p->w[i];
    for (size_t i = 0; i < NB; i++) gb[i] = noise(s, 1, i) + 0.01 * p->b[i];
    if (s == NAN_STEP) gw[2] = NAN;
    vsgd_step_outcome o = 99;
    CHECK_OK(vsgd_optimizer_step_tensor_f32(h, 0, p->w, gw, NW, &o));
    CHECK(o == (s == NAN_STEP ? VSGD_STEP_SKIPPED : VSGD_STEP_APPLIED));
    CHECK_OK(vsgd_optimizer_step_tensor_f64(h, 1, p->b, gb, NB, &o));
    CHECK_OK(vsgd_optimizer_step_tensor_f32(h, 2, NULL, NULL, 0, &o));
}

static void collect(vsgd_optimizer *h, vsgd_algorithm a, const params_t *p, result_t *r) {
    size_t nstate;
    memset(r, 0, sizeof *r);
    r->p = *p;
    CHECK_OK(vsgd_state_count(a, &nstate));
    CHECK(nstate <= MAX_STATE);
    for (size_t j = 0; j < nstate; j++) {
        const char *name;
        float sw[NW];
        double sb[NB];
        CHECK_OK(vsgd_state_name(a, j, &name));
        CHECK_OK(vsgd_optimizer_state_f32(h, 0, name, sw, NW));
        CHECK_OK(vsgd_optimizer_state_f64(h, 1, name, sb, NB));
        memcpy(r->state[j], sw, sizeof sw);
        memcpy(r->state[j] + sizeof sw, sb, sizeof sb);
    }
    for (size_t k = 0; k < 3; k++) CHECK_OK(vsgd_optimizer_step_count(h, k, &r->steps[k]));
    r->ckpt = save_bytes(h, &r->ckpt_len);
}

enum { UNINTERRUPTED, LOAD_BYTES, LOAD_FILE, RESTORE_BYTES, RESTORE_FILE, NMODES };
static const char *const mode_names[NMODES] = {"uninterrupted", "load bytes", "load file",
                                               "restore bytes", "restore file"};

/* One training run; `mode` says how it is interrupted at step CUT. */
static void run(vsgd_algorithm a, int mode, const char *path, result_t *r) {
    params_t p;
    for (size_t i = 0; i < NW; i++) p.w[i] = (float)noise(1000, 0, i);
    for (size_t i = 0; i < NB; i++) p.b[i] = noise(1000, 1, i);
    vsgd_optimizer *h = build(a, 0);
    for (size_t s = 0; s < STEPS; s++) {
        if (s == CUT && mode != UNINTERRUPTED) {
            /* Save, drop the handle (the process "dies"), resume. The parameters are the
             * caller's and survive on their own. */
            size_t n = 0;
            uint8_t *bytes = NULL;
            if (mode == LOAD_FILE || mode == RESTORE_FILE)
                CHECK_OK(vsgd_optimizer_save_file(h, path));
            else
                bytes = save_bytes(h, &n);
            vsgd_optimizer_free(h);
            h = NULL;
            switch (mode) {
                case LOAD_BYTES:
                    CHECK_OK(vsgd_optimizer_load(bytes, n, &h));
                    break;
                case LOAD_FILE:
                    CHECK_OK(vsgd_optimizer_load_file(path, &h));
                    break;
                case RESTORE_BYTES:
                    h = build(a, 1);
                    CHECK_OK(vsgd_optimizer_restore(h, bytes, n));
                    break;
                default:
                    h = build(a, 1);
                    CHECK_OK(vsgd_optimizer_restore_file(h, path));
            }
            /* The resumed handle is the saved one: same checkpoint bytes, settings back. */
            if (bytes) {
                size_t n2;
                uint8_t *again = save_bytes(h, &n2);
                CHECK(n2 == n && memcmp(again, bytes, n) == 0);
                free(again);
            }
            vsgd_policy pol;
            double lr;
            CHECK_OK(vsgd_optimizer_policy(h, &pol));
            CHECK(pol == VSGD_POLICY_SKIP);
            CHECK_OK(vsgd_optimizer_lr_at(h, 0, 4, &lr));
            vsgd_config *c;
            CHECK_OK(vsgd_optimizer_config(h, 0, &c));
            double base;
            CHECK_OK(vsgd_config_get(c, "lr", &base));
            vsgd_config_free(c);
            CHECK(lr == base * 0.5); /* the schedule came back */
            free(bytes);
        }
        step(h, s, &p);
    }
    collect(h, a, &p, r);
    vsgd_optimizer_free(h);
}

static int failures;

static void compare(vsgd_algorithm a, int mode, const result_t *want, const result_t *got) {
    const char *name;
    CHECK_OK(vsgd_algorithm_name(a, &name));
    const char *what = NULL;
    /* Member by member: params_t has padding, whose bytes mean nothing. */
    if (memcmp(want->p.w, got->p.w, sizeof want->p.w) != 0 ||
        memcmp(want->p.b, got->p.b, sizeof want->p.b) != 0)
        what = "parameters";
    else if (memcmp(want->state, got->state, sizeof want->state) != 0)
        what = "state";
    else if (memcmp(want->steps, got->steps, sizeof want->steps) != 0)
        what = "step counts";
    else if (want->ckpt_len != got->ckpt_len ||
             memcmp(want->ckpt, got->ckpt, want->ckpt_len) != 0)
        what = "final checkpoint bytes";
    if (what) {
        failures++;
        fprintf(stderr, "%s, %s: %s differ from uninterrupted training\n", name,
                mode_names[mode], what);
    }
}

/* Writes the checkpoint of a trained VSGD handle and the lines `vsgd inspect` must print
 * for it, built from what the C API reports. */
static void write_for_rust(const char *dir) {
    char path[1024], expect[1024], tname[64];
    snprintf(path, sizeof path, "%s/from_c.vsgdckpt", dir);
    snprintf(expect, sizeof expect, "%s/from_c.expect", dir);
    params_t p = {{0.5f, -0.5f, 1, 2, -3}, {0.25, 0, -1}};
    vsgd_optimizer *h = build(VSGD_ALGORITHM_VSGD, 0);
    for (size_t s = 0; s < STEPS; s++) step(h, s, &p);
    CHECK_OK(vsgd_optimizer_save_file(h, path));
    FILE *f = fopen(expect, "w");
    CHECK(f != NULL);
    vsgd_algorithm a;
    const char *aname;
    CHECK_OK(vsgd_optimizer_algorithm(h, &a));
    CHECK_OK(vsgd_algorithm_name(a, &aname));
    fprintf(f, "algorithm: %s\nnon-finite policy: skip\n", aname);
    fprintf(f, "  schedule: step_decay every=3 factor=0.5, warmup=0\n");
    size_t n, total = 0;
    CHECK_OK(vsgd_optimizer_num_tensors(h, &n));
    for (size_t k = 0; k < n; k++) {
        vsgd_tensor_info info = {sizeof info, 0, 0, 0, 0, 0, 0, 0};
        CHECK_OK(vsgd_optimizer_tensor_info(h, k, &info));
        total += info.len;
    }
    fprintf(f, "tensors: %zu (%zu elements stored)\n", n, total);
    for (size_t k = 0; k < n; k++) {
        vsgd_tensor_info info = {sizeof info, 0, 0, 0, 0, 0, 0, 0};
        size_t len, dims[8], rank;
        CHECK_OK(vsgd_optimizer_tensor_info(h, k, &info));
        CHECK_OK(vsgd_optimizer_tensor_name(h, k, tname, sizeof tname, &len));
        CHECK_OK(vsgd_optimizer_tensor_shape(h, k, dims, 8, &rank));
        CHECK(rank == info.rank);
        char quoted[80] = "", shape[128] = "";
        if (len > 0) snprintf(quoted, sizeof quoted, " \"%s\"", tname);
        for (size_t d = 0, at = 0; d < rank; d++)
            at += (size_t)snprintf(shape + at, sizeof shape - at, "%s%zu", d ? ", " : "", dims[d]);
        fprintf(f, "tensor %zu%s: shape [%s], %s, group %zu, step %llu\n", k, quoted, shape,
                info.dtype == VSGD_DTYPE_F32 ? "f32" : "f64", info.group,
                (unsigned long long)info.step);
    }
    CHECK(fclose(f) == 0);
    vsgd_optimizer_free(h);
}

/* Loads a checkpoint Rust wrote and saves it again: the bytes must be identical. */
static void reread_rust(const char *path) {
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    long size = ftell(f);
    CHECK(size > 0);
    rewind(f);
    uint8_t *want = malloc((size_t)size);
    CHECK(want != NULL && fread(want, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    vsgd_optimizer *from_file = NULL, *from_bytes = NULL;
    CHECK_OK(vsgd_optimizer_load_file(path, &from_file));
    CHECK_OK(vsgd_optimizer_load(want, (size_t)size, &from_bytes));
    size_t n1, n2, tensors;
    uint8_t *a = save_bytes(from_file, &n1), *b = save_bytes(from_bytes, &n2);
    CHECK(n1 == (size_t)size && memcmp(a, want, n1) == 0);
    CHECK(n2 == (size_t)size && memcmp(b, want, n2) == 0);
    CHECK_OK(vsgd_optimizer_num_tensors(from_file, &tensors));

    /* Restored into a handle built from scratch with the same groups and shaped tensors
     * (as a C program that owns its model would): the same bytes again. */
    vsgd_algorithm alg;
    vsgd_config *c;
    size_t groups, id, multi = 0;
    vsgd_optimizer *fresh = NULL;
    CHECK_OK(vsgd_optimizer_algorithm(from_file, &alg));
    CHECK_OK(vsgd_config_new(alg, &c));
    CHECK_OK(vsgd_optimizer_new(c, &fresh));
    CHECK_OK(vsgd_optimizer_num_groups(from_file, &groups));
    for (size_t g = 1; g < groups; g++) CHECK_OK(vsgd_optimizer_add_group(fresh, c, &id));
    vsgd_config_free(c);
    for (size_t k = 0; k < tensors; k++) {
        vsgd_tensor_info info = {sizeof info, 0, 0, 0, 0, 0, 0, 0};
        size_t dims[16], rank, len;
        char tname[128];
        CHECK_OK(vsgd_optimizer_tensor_info(from_file, k, &info));
        CHECK_OK(vsgd_optimizer_tensor_shape(from_file, k, dims, 16, &rank));
        CHECK_OK(vsgd_optimizer_tensor_name(from_file, k, tname, sizeof tname, &len));
        multi += rank > 1;
        CHECK_OK(vsgd_optimizer_add_tensor(fresh, dims, rank, info.dtype, len ? tname : NULL,
                                           info.group, &id));
    }
    CHECK_OK(vsgd_optimizer_restore(fresh, want, (size_t)size));
    size_t n3;
    uint8_t *c3 = save_bytes(fresh, &n3);
    CHECK(n3 == (size_t)size && memcmp(c3, want, n3) == 0);
    free(c3);
    vsgd_optimizer_free(fresh);
    printf("checkpoint: %s (%ld bytes, %zu tensors, %zu of rank > 1) loaded, and restored "
           "into a handle registered from C, saved again byte-identical\n",
           path, size, tensors, multi);
    free(a);
    free(b);
    free(want);
    vsgd_optimizer_free(from_file);
    vsgd_optimizer_free(from_bytes);
}

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    char path[1024];
    snprintf(path, sizeof path, "%s/resume.vsgdckpt", argv[1]);
    for (size_t k = 0; k < NALG; k++) {
        result_t want, got;
        run(algorithms[k], UNINTERRUPTED, path, &want);
        CHECK(want.steps[0] == STEPS - 1 && want.steps[1] == STEPS && want.steps[2] == STEPS);
        for (int mode = 1; mode < NMODES; mode++) {
            run(algorithms[k], mode, path, &got);
            compare(algorithms[k], mode, &want, &got);
            free(got.ckpt);
        }
        free(want.ckpt);
    }
    CHECK(remove(path) == 0);
    write_for_rust(argv[1]);
    for (int i = 2; i < argc; i++) reread_rust(argv[i]);
    if (failures) return 1;
    printf("checkpoint: %d algorithms x %d ways to resume at step %d of %d: same bits as "
           "uninterrupted training\n", NALG, NMODES - 1, CUT, STEPS);
    return 0;
}
