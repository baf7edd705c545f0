/* Threads (pthreads):
 *  1. distinct handles used at once from several threads give the same bits as one thread,
 *     and each thread's last error message is its own;
 *  2. the stateless kernel stepping disjoint shards of one tensor from several threads gives
 *     the same bits as stepping the whole tensor (ZeRO-style sharding);
 *  3. one handle hammered from several threads: every call either runs or is refused with
 *     VSGD_RESULT_HANDLE_BUSY, and the step counters agree with the calls that ran. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include "common.h"

enum { THREADS = 4, N32 = 1000, N64 = 333, STEPS = 60, SHARD_N = 4096, HAMMER = 300, HAMMER_N = 4096 };

static pthread_barrier_t barrier;

static float grad32(size_t step, size_t i) { return (float)sin(0.01 * (double)(i * 7 + step * 13)); }
static double grad64(size_t step, size_t i) { return cos(0.02 * (double)(i * 3 + step * 5)); }

typedef struct {
    int id;
    float p32[N32];
    double p64[N64];
    float mug[N32];
} train_t;

/* Trains a VSGD handle with two tensors (f32 and f64) on fixed gradients. */
static void train(train_t *t) {
    vsgd_config *c;
    vsgd_optimizer *h;
    size_t a, b;
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_VSGD, &c));
    CHECK_OK(vsgd_optimizer_new(c, &h));
    vsgd_config_free(c);
    CHECK_OK(vsgd_optimizer_add_tensor(h, (size_t[]){N32}, 1, VSGD_DTYPE_F32, "w", 0, &a));
    CHECK_OK(vsgd_optimizer_add_tensor(h, (size_t[]){N64}, 1, VSGD_DTYPE_F64, "b", 0, &b));
    static _Thread_local float g32[N32];
    static _Thread_local double g64[N64];
    for (size_t i = 0; i < N32; i++) t->p32[i] = (float)i / N32 - 0.5f;
    for (size_t i = 0; i < N64; i++) t->p64[i] = 1.0 - (double)i / N64;
    for (size_t s = 0; s < STEPS; s++) {
        for (size_t i = 0; i < N32; i++) g32[i] = grad32(s, i);
        for (size_t i = 0; i < N64; i++) g64[i] = grad64(s, i);
        CHECK_OK(vsgd_optimizer_step_tensor_f32(h, a, t->p32, g32, N32, NULL));
        CHECK_OK(vsgd_optimizer_step_tensor_f64(h, b, t->p64, g64, N64, NULL));
        if (t->id >= 0 && s % 10 == 0) {
            /* A failure of this thread's own: the message must be this thread's. */
            uint64_t n;
            size_t bad = 1000 + (size_t)t->id;
            CHECK(vsgd_optimizer_step_count(h, bad, &n) == VSGD_RESULT_UNKNOWN_TENSOR);
            char want[64];
            snprintf(want, sizeof want, "index %zu", bad);
            if (strstr(last_error(), want) == NULL) {
                fprintf(stderr, "thread %d sees another thread's error: %s\n", t->id,
                        last_error());
                exit(1);
            }
        }
    }
    CHECK_OK(vsgd_optimizer_state_f32(h, a, "mug", t->mug, N32));
    vsgd_optimizer_free(h);
}

static void *train_thread(void *arg) {
    pthread_barrier_wait(&barrier);
    train(arg);
    return NULL;
}

static void test_distinct_handles(void) {
    static train_t ref, runs[THREADS];
    ref.id = -1;
    train(&ref);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        runs[i].id = i;
        CHECK(pthread_create(&th[i], NULL, train_thread, &runs[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(th[i], NULL) == 0);
    for (int i = 0; i < THREADS; i++) {
        CHECK(memcmp(runs[i].p32, ref.p32, sizeof ref.p32) == 0);
        CHECK(memcmp(runs[i].p64, ref.p64, sizeof ref.p64) == 0);
        CHECK(memcmp(runs[i].mug, ref.mug, sizeof ref.mug) == 0);
    }
    printf("threads: %d handles trained concurrently, bit-identical to one thread\n", THREADS);
}

/* Stateless shards: tensor of SHARD_N floats, thread k owns [k*SHARD_N/THREADS, ...). */
static float sp[SHARD_N], sm[SHARD_N], sv[SHARD_N];
static vsgd_config *adam;

typedef struct {
    size_t begin, end;
} shard_t;

static void step_range(size_t begin, size_t end) {
    float g[SHARD_N];
    for (size_t s = 0; s < STEPS; s++) {
        for (size_t i = begin; i < end; i++) g[i - begin] = grad32(s, i);
        float *state[2] = {sm + begin, sv + begin};
        vsgd_step_outcome o;
        CHECK_OK(vsgd_step_f32(adam, s + 1, 0.01, sp + begin, g, end - begin, state, 2,
                               VSGD_POLICY_SKIP, VSGD_FINITE_CHECK, &o));
        CHECK(o == VSGD_STEP_APPLIED);
    }
}

static void *shard_thread(void *arg) {
    shard_t *s = arg;
    pthread_barrier_wait(&barrier);
    step_range(s->begin, s->end);
    return NULL;
}

static void reset_shards(void) {
    for (size_t i = 0; i < SHARD_N; i++) {
        sp[i] = (float)i * 0.001f;
        sm[i] = sv[i] = 0;
    }
}

static void test_shards(void) {
    static float whole_p[SHARD_N], whole_m[SHARD_N], whole_v[SHARD_N];
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_ADAM, &adam));
    reset_shards();
    step_range(0, SHARD_N);
    memcpy(whole_p, sp, sizeof sp);
    memcpy(whole_m, sm, sizeof sm);
    memcpy(whole_v, sv, sizeof sv);
    reset_shards();
    pthread_t th[THREADS];
    shard_t sh[THREADS];
    for (int k = 0; k < THREADS; k++) {
        /* Uneven shard edges on purpose (not multiples of any vector width). */
        sh[k].begin = k == 0 ? 0 : (size_t)k * SHARD_N / THREADS + 3;
        sh[k].end = k == THREADS - 1 ? SHARD_N : (size_t)(k + 1) * SHARD_N / THREADS + 3;
        CHECK(pthread_create(&th[k], NULL, shard_thread, &sh[k]) == 0);
    }
    for (int k = 0; k < THREADS; k++) CHECK(pthread_join(th[k], NULL) == 0);
    CHECK(memcmp(whole_p, sp, sizeof sp) == 0);
    CHECK(memcmp(whole_m, sm, sizeof sm) == 0);
    CHECK(memcmp(whole_v, sv, sizeof sv) == 0);
    vsgd_config_free(adam);
    printf("threads: %d shards stepped concurrently, bit-identical to the whole tensor\n",
           THREADS);
}

/* One handle, one tensor per thread, all threads stepping at once. */
static vsgd_optimizer *shared;
static long ran[THREADS], busy[THREADS];

static void *hammer_thread(void *arg) {
    int k = *(int *)arg;
    static _Thread_local float p[HAMMER_N], g[HAMMER_N];
    for (int i = 0; i < HAMMER_N; i++) {
        p[i] = (float)i;
        g[i] = 1;
    }
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < HAMMER; i++) {
        vsgd_result r = vsgd_optimizer_step_tensor_f32(shared, (size_t)k, p, g, HAMMER_N, NULL);
        if (r == VSGD_RESULT_OK) {
            ran[k]++;
        } else if (r == VSGD_RESULT_HANDLE_BUSY) {
            busy[k]++;
        } else {
            fprintf(stderr, "thread %d: %s: %s\n", k, vsgd_result_name(r), last_error());
            exit(1);
        }
    }
    return NULL;
}

static void test_shared_handle(void) {
    vsgd_config *c;
    size_t id;
    CHECK_OK(vsgd_config_new(VSGD_ALGORITHM_SGDM, &c));
    CHECK_OK(vsgd_optimizer_new(c, &shared));
    vsgd_config_free(c);
    for (int k = 0; k < THREADS; k++)
        CHECK_OK(vsgd_optimizer_add_tensor(shared, (size_t[]){HAMMER_N}, 1, VSGD_DTYPE_F32, NULL, 0, &id));
    pthread_t th[THREADS];
    int ids[THREADS];
    for (int k = 0; k < THREADS; k++) {
        ids[k] = k;
        CHECK(pthread_create(&th[k], NULL, hammer_thread, &ids[k]) == 0);
    }
    long total_busy = 0;
    for (int k = 0; k < THREADS; k++) CHECK(pthread_join(th[k], NULL) == 0);
    for (int k = 0; k < THREADS; k++) {
        uint64_t n;
        CHECK_OK(vsgd_optimizer_step_count(shared, (size_t)k, &n));
        CHECK(n == (uint64_t)ran[k]);
        CHECK(ran[k] + busy[k] == HAMMER);
        total_busy += busy[k];
    }
    vsgd_optimizer_free(shared);
    printf("threads: one handle shared by %d threads: every call ran or was refused as busy "
           "(%ld refused), counters consistent\n", THREADS, total_busy);
}

int main(void) {
    CHECK(pthread_barrier_init(&barrier, NULL, THREADS) == 0);
    test_distinct_handles();
    test_shards();
    test_shared_handle();
    pthread_barrier_destroy(&barrier);
    return 0;
}
