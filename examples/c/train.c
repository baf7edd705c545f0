/* Logistic regression trained with VSGD through the C ABI.
 *
 * Build against an installed vsgd (scripts/install.sh PREFIX), either way:
 *   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig make && ./train [CHECKPOINT_FILE]
 *   cmake -S . -B build -DCMAKE_PREFIX_PATH=PREFIX && cmake --build build && build/train
 *
 * Two tensors, "w" (the weights) and "b" (the bias), stepped together each minibatch. Halfway
 * the optimizer is checkpointed (to CHECKPOINT_FILE, or to memory without one), freed, and
 * resumed from the checkpoint, as a restarted job would. The program exits 1 unless it
 * learned: final loss below half the initial one, accuracy ≥ 90%. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <vsgd.h>

enum { N = 1024, D = 8, BATCH = 64, EPOCHS = 40 };

static float xs[N][D], ys[N];

/* A reproducible uniform number in [-1, 1). */
static float uniform(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * (1.0 / (double)(1ull << 24))) * 2.0f - 1.0f;
}

static float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

/* Mean cross-entropy and accuracy of (w, b) on the whole set. */
static void evaluate(const float *w, float b, float *loss, float *accuracy) {
    double l = 0;
    int right = 0;
    for (int i = 0; i < N; i++) {
        float z = b;
        for (int j = 0; j < D; j++) z += w[j] * xs[i][j];
        float p = sigmoid(z);
        l -= ys[i] > 0.5f ? log(p + 1e-7) : log(1 - p + 1e-7);
        right += (p > 0.5f) == (ys[i] > 0.5f);
    }
    *loss = (float)(l / N);
    *accuracy = (float)right / N;
}

/* Prints the failed call's code and message and exits. */
static void check(vsgd_result r, const char *what) {
    if (r == VSGD_RESULT_OK) return;
    char message[256];
    vsgd_last_error(message, sizeof message, NULL);
    fprintf(stderr, "%s failed: %s: %s\n", what, vsgd_result_name(r), message);
    exit(1);
}

/* Saves a checkpoint of `opt`, frees it, and returns the optimizer loaded back from the
 * checkpoint: what a training job restarted after a crash does. `path`: a file (replaced
 * atomically), or NULL for a buffer in memory. The checkpoint holds the optimizer's state
 * (step counts, schedule, VSGD's moments); the parameters w and b are the program's own. */
static vsgd_optimizer *checkpoint_and_resume(vsgd_optimizer *opt, const char *path) {
    vsgd_optimizer *resumed = NULL;
    size_t size = 0;
    if (path) {
        check(vsgd_optimizer_save_file(opt, path), "vsgd_optimizer_save_file");
        vsgd_optimizer_free(opt);
        check(vsgd_optimizer_load_file(path, &resumed), "vsgd_optimizer_load_file");
    } else {
        vsgd_optimizer_save(opt, NULL, 0, &size); /* size query (BUFFER_TOO_SMALL) */
        uint8_t *bytes = malloc(size);
        if (!bytes) exit(1);
        check(vsgd_optimizer_save(opt, bytes, size, &size), "vsgd_optimizer_save");
        vsgd_optimizer_free(opt);
        check(vsgd_optimizer_load(bytes, size, &resumed), "vsgd_optimizer_load");
        free(bytes);
    }
    uint64_t steps;
    check(vsgd_optimizer_step_count(resumed, 0, &steps), "step_count");
    printf("checkpoint (%s%s): resumed at step %llu\n", path ? "file " : "memory",
           path ? path : "", (unsigned long long)steps);
    return resumed;
}

int main(int argc, char **argv) {
    if (vsgd_abi_version() != VSGD_ABI_VERSION) {
        fprintf(stderr, "libvsgd ABI %u, header ABI %d\n", vsgd_abi_version(), VSGD_ABI_VERSION);
        return 1;
    }
    /* Data: labels from a hidden linear rule plus 5% flipped labels. */
    const float true_w[D] = {1.5f, -2.0f, 0.7f, 0.0f, 3.0f, -0.5f, 1.0f, -1.2f};
    uint64_t seed = 42;
    for (int i = 0; i < N; i++) {
        float z = 0.3f;
        for (int j = 0; j < D; j++) z += true_w[j] * (xs[i][j] = uniform(&seed));
        ys[i] = (z > 0) != (uniform(&seed) > 0.9f) ? 1.0f : 0.0f;
    }

    vsgd_config *config = NULL;
    check(vsgd_config_new(VSGD_ALGORITHM_VSGD, &config), "vsgd_config_new");
    check(vsgd_config_set(config, "lr", 0.05), "vsgd_config_set");
    vsgd_optimizer *opt = NULL;
    check(vsgd_optimizer_new(config, &opt), "vsgd_optimizer_new");
    vsgd_config_free(config); /* the handle keeps its own copy */
    /* A small model: one thread is plenty (a host with its own pool would do the same). */
    check(vsgd_optimizer_set_threads(opt, 1), "set_threads");
    size_t tw, tb;
    const size_t w_shape[1] = {D};
    check(vsgd_optimizer_add_tensor(opt, w_shape, 1, VSGD_DTYPE_F32, "w", 0, &tw), "add w");
    check(vsgd_optimizer_add_tensor(opt, NULL, 0, VSGD_DTYPE_F32, "b", 0, &tb), "add b");

    float w[D] = {0}, b[1] = {0}, gw[D], gb[1];
    float *params[2] = {w, b};
    const float *grads[2] = {gw, gb};
    const size_t lens[2] = {D, 1};
    float loss0, acc0, loss, acc;
    evaluate(w, b[0], &loss0, &acc0);
    for (int epoch = 0; epoch < EPOCHS; epoch++) {
        if (epoch == EPOCHS / 2) opt = checkpoint_and_resume(opt, argc > 1 ? argv[1] : NULL);
        for (int start = 0; start < N; start += BATCH) {
            for (int j = 0; j < D; j++) gw[j] = 0;
            gb[0] = 0;
            for (int i = start; i < start + BATCH; i++) {
                float z = b[0];
                for (int j = 0; j < D; j++) z += w[j] * xs[i][j];
                float e = (sigmoid(z) - ys[i]) / BATCH; /* d(loss)/dz */
                for (int j = 0; j < D; j++) gw[j] += e * xs[i][j];
                gb[0] += e;
            }
            vsgd_step_report report = {sizeof report, 0, 0};
            check(vsgd_optimizer_step_f32(opt, params, grads, lens, 2, &report), "step");
        }
        if (epoch % 10 == 9) {
            evaluate(w, b[0], &loss, &acc);
            printf("epoch %2d: loss %.4f, accuracy %.3f\n", epoch + 1, loss, acc);
        }
    }
    uint64_t steps;
    check(vsgd_optimizer_step_count(opt, tw, &steps), "step_count");
    float beta[D];
    check(vsgd_optimizer_effective_momentum_f32(opt, tw, beta, D), "effective momentum");
    vsgd_optimizer_free(opt);

    evaluate(w, b[0], &loss, &acc);
    printf("vsgd %s: %llu steps, loss %.4f -> %.4f, accuracy %.3f -> %.3f, "
           "effective momentum of w[0] %.3f\n",
           vsgd_version(), (unsigned long long)steps, loss0, loss, acc0, acc, beta[0]);
    return loss < 0.5f * loss0 && acc >= 0.9f ? 0 : 1;
}
