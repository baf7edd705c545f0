/* Defects a demanding C user meets under concurrency, memory limits and fork (issue 9).
 * usage: robustness race|oom DIR|fork
 *  race  one handle shared by threads that add tensors and step while another saves into
 *        buffers sized exactly by the size query: every call returns a code, and no save
 *        writes past its buffer (AddressSanitizer reports it if one does);
 *  oom   run with an address-space limit (setrlimit RLIMIT_AS, i.e. `ulimit -v`) just above
 *        what the process uses: allocations sized by the caller's input fail with
 *        VSGD_RESULT_ALLOCATION_FAILED (a checkpoint file larger than memory, a step over
 *        millions of tensor pointers, a huge tensor) and a save of a large state into the
 *        caller's buffer needs no memory of its own; the handle stays usable. Not for ASan
 *        (its shadow memory needs the address space);
 *  fork  a process forks after the handle's worker threads started; the child steps a large
 *        tensor (which needs the workers) and exits 0 within a time limit (no deadlock). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

static vsgd_optimizer *new_handle(vsgd_algorithm a) {
    vsgd_config *c;
    vsgd_optimizer *h;
    CHECK_OK(vsgd_config_new(a, &c));
    CHECK_OK(vsgd_optimizer_new(c, &h));
    vsgd_config_free(c);
    return h;
}

static size_t add_vector(vsgd_optimizer *h, size_t len, const char *name) {
    size_t id;
    CHECK_OK(vsgd_optimizer_add_tensor(h, &len, 1, VSGD_DTYPE_F32, name, 0, &id));
    return id;
}

/* ------------------------------------------------------------------------------- race */

enum { RACE_SAVES = 400, RACE_MAX_ADDS = 1000, RACE_N = 8 };
static atomic_int race_done;
static atomic_size_t race_added;

static void *race_mutator(void *arg) {
    vsgd_optimizer *h = arg;
    float p[RACE_N] = {0}, g[RACE_N];
    for (size_t i = 0; i < RACE_N; i++) g[i] = 0.25f * (float)(i + 1);
    char name[64];
    size_t added = 0;
    while (!atomic_load(&race_done)) {
        /* A step moves the step count of tensor 0 across MessagePack widths (127 -> 128,
         * 255 -> 256, ...); an add makes the checkpoint longer by a name and a state. */
        vsgd_result r = vsgd_optimizer_step_tensor_f32(h, 0, p, g, RACE_N, NULL);
        CHECK(r == VSGD_RESULT_OK || r == VSGD_RESULT_HANDLE_BUSY);
        if (added == RACE_MAX_ADDS) continue; /* then steps only */
        snprintf(name, sizeof name, "tensor-with-a-rather-long-name-%zu", added);
        size_t len = RACE_N, id;
        r = vsgd_optimizer_add_tensor(h, &len, 1, VSGD_DTYPE_F32, name, 0, &id);
        CHECK(r == VSGD_RESULT_OK || r == VSGD_RESULT_HANDLE_BUSY);
        if (r == VSGD_RESULT_OK) added++;
    }
    atomic_store(&race_added, added);
    return NULL;
}

static void *race_saver(void *arg) {
    vsgd_optimizer *h = arg;
    size_t saves = 0, queries = 0, attempts = 0;
    while (attempts < RACE_SAVES) {
        size_t need = 0;
        vsgd_result r = vsgd_optimizer_save(h, NULL, 0, &need);
        if (r == VSGD_RESULT_HANDLE_BUSY) continue;
        CHECK(r == VSGD_RESULT_BUFFER_TOO_SMALL);
        queries++;
        /* Exactly the size the query reported: one byte more written is a heap overflow. */
        unsigned char *buf = malloc(need);
        CHECK(buf != NULL);
        size_t got = 0;
        attempts++;
        r = vsgd_optimizer_save(h, buf, need, &got);
        CHECK(r == VSGD_RESULT_OK || r == VSGD_RESULT_HANDLE_BUSY ||
              r == VSGD_RESULT_BUFFER_TOO_SMALL);
        if (r == VSGD_RESULT_OK) {
            CHECK(got <= need);
            saves++;
        } else if (r == VSGD_RESULT_BUFFER_TOO_SMALL) {
            CHECK(got > need); /* the handle grew in between: told, nothing written */
        }
        free(buf);
    }
    atomic_store(&race_done, 1);
    printf("race: %zu size queries, %zu saves\n", queries, saves);
    CHECK(saves > 0);
    return NULL;
}

static void race(void) {
    vsgd_optimizer *h = new_handle(VSGD_ALGORITHM_VSGD);
    add_vector(h, RACE_N, "first");
    pthread_t a, b;
    CHECK(pthread_create(&a, NULL, race_mutator, h) == 0);
    CHECK(pthread_create(&b, NULL, race_saver, h) == 0);
    CHECK(pthread_join(a, NULL) == 0);
    CHECK(pthread_join(b, NULL) == 0);
    size_t n;
    CHECK_OK(vsgd_optimizer_num_tensors(h, &n));
    CHECK(n == atomic_load(&race_added) + 1);
    printf("race: %zu tensors added meanwhile\n", n - 1);
    vsgd_optimizer_free(h);
    printf("race: ok\n");
}

/* -------------------------------------------------------------------------------- oom */

static size_t mapped_bytes(void) {
    /* VmSize from /proc/self/status, in bytes. */
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1) break;
    fclose(f);
    CHECK(kb > 0);
    return kb * 1024;
}

static void limit_address_space(size_t headroom) {
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = mapped_bytes() + headroom;
    CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
    /* The limit is real: a plain malloc of twice the headroom fails. */
    void *p = malloc(2 * headroom);
    CHECK(p == NULL);
}

static void expect_allocation_failed(vsgd_result r, const char *what) {
    if (r != VSGD_RESULT_ALLOCATION_FAILED) {
        fprintf(stderr, "%s: expected VSGD_RESULT_ALLOCATION_FAILED, got %s: %s\n", what,
                vsgd_result_name(r), last_error());
        exit(1);
    }
    printf("oom: %s -> ALLOCATION_FAILED (%s)\n", what, last_error());
}

static void oom(const char *dir) {
    enum { BIG = 48 << 20 }; /* elements of the large tensor: 192 MiB of f32 per array */
    const size_t headroom = 64u << 20;
    vsgd_optimizer *h = new_handle(VSGD_ALGORITHM_SGDM);
    CHECK_OK(vsgd_optimizer_set_threads(h, 1));
    size_t big = add_vector(h, BIG, "big");
    size_t small = add_vector(h, 4, "small");

    /* A sparse file of 1 GiB named like a checkpoint. */
    char path[4096];
    snprintf(path, sizeof path, "%s/huge.vsgdckpt", dir);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)1 << 30) == 0);
    close(fd);

    /* Pointer arrays for a step over 64M tensors, mapped before the limit (zero pages: NULL
     * buffers of length 0, which a step accepts). */
    const size_t many = (size_t)64 << 20;
    void *params = mmap(NULL, many * sizeof(void *), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *lens = mmap(NULL, many * sizeof(size_t), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(params != MAP_FAILED && lens != MAP_FAILED);

    /* The caller's checkpoint buffer, allocated (and touched) before the limit. */
    size_t need = 0;
    CHECK(vsgd_optimizer_save(h, NULL, 0, &need) == VSGD_RESULT_BUFFER_TOO_SMALL);
    CHECK(need > (size_t)BIG * 4);
    unsigned char *ckpt = malloc(need);
    CHECK(ckpt != NULL);
    memset(ckpt, 0, need);

    limit_address_space(headroom);

    vsgd_optimizer *loaded = (vsgd_optimizer *)1;
    expect_allocation_failed(vsgd_optimizer_load_file(path, &loaded), "load_file of a 1 GiB file");
    CHECK(loaded == NULL);
    expect_allocation_failed(vsgd_optimizer_restore_file(h, path), "restore_file of a 1 GiB file");
    expect_allocation_failed(
        vsgd_optimizer_step_f32(h, (float *const *)params, (const float *const *)params,
                                (const size_t *)lens, many, NULL),
        "step over 64M tensor pointers");
    size_t huge = (size_t)1 << 30, id;
    expect_allocation_failed(
        vsgd_optimizer_add_tensor(h, &huge, 1, VSGD_DTYPE_F32, "huge", 0, &id),
        "add_tensor of 2^30 elements");

    /* The save writes straight into the caller's buffer: no copy of the state is made. */
    size_t got = 0;
    CHECK_OK(vsgd_optimizer_save(h, ckpt, need, &got));
    CHECK(got == need);

    /* Still usable, and nothing changed. */
    size_t n;
    CHECK_OK(vsgd_optimizer_num_tensors(h, &n));
    CHECK(n == 2);
    float p[4] = {1, 2, 3, 4}, g[4] = {1, 1, 1, 1};
    CHECK_OK(vsgd_optimizer_step_tensor_f32(h, small, p, g, 4, NULL));
    CHECK(p[0] < 1.0f);
    (void)big;
    free(ckpt);
    vsgd_optimizer_free(h);
    unlink(path);
    printf("oom: ok\n");
}

/* ------------------------------------------------------------------------------- fork */

static void step_large(vsgd_optimizer *h, size_t id, float *p, const float *g, size_t n) {
    CHECK_OK(vsgd_optimizer_step_tensor_f32(h, id, p, g, n, NULL));
}

static void fork_test(void) {
    enum { N = 1 << 22 }; /* 16 MiB per array: large enough for every worker to get a part */
    vsgd_optimizer *h = new_handle(VSGD_ALGORITHM_ADAM);
    CHECK_OK(vsgd_optimizer_set_threads(h, 4));
    size_t id = add_vector(h, N, "w");
    float *p = calloc(N, sizeof(float)), *g = malloc(N * sizeof(float));
    CHECK(p && g);
    for (size_t i = 0; i < N; i++) g[i] = (float)(i % 17) - 8.0f;
    step_large(h, id, p, g, N); /* starts the worker threads */
    float after_one = p[1];

    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        alarm(60); /* a deadlock ends in SIGALRM, which the parent reports */
        step_large(h, id, p, g, N);
        /* The child's step continued from the parent's state: same as the parent's next. */
        printf("fork: child stepped (p[1] %g -> %g)\n", (double)after_one, (double)p[1]);
        fflush(stdout);
        vsgd_optimizer_free(h);
        free(p);
        free(g);
        _exit(p == NULL ? 1 : 0);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fork: the child did not exit 0 (%s %d)\n",
                WIFSIGNALED(status) ? "signal" : "status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        exit(1);
    }
    /* The parent's own workers still work. */
    step_large(h, id, p, g, N);
    uint64_t steps;
    CHECK_OK(vsgd_optimizer_step_count(h, id, &steps));
    CHECK(steps == 2);
    vsgd_optimizer_free(h);
    free(p);
    free(g);
    printf("fork: ok\n");
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "race") == 0) {
        race();
    } else if (argc >= 3 && strcmp(argv[1], "oom") == 0) {
        oom(argv[2]);
    } else if (argc >= 2 && strcmp(argv[1], "fork") == 0) {
        fork_test();
    } else {
        fprintf(stderr, "usage: %s race|oom DIR|fork\n", argv[0]);
        return 2;
    }
    return 0;
}
