/*
 * C smoke test of include/alembic.h, built and run by tests/integration/ffi.rs:
 *   smoke MODELS_DIR SCRATCH ROWS TRAIN_ROWS
 * SCRATCH holds raw little-endian f32 files written by the Rust side: x.f32 [ROWS,1,8,8],
 * expected.f32 [ROWS,10] (the Rust Session's output), train_x.f32 [TRAIN_ROWS,1,8,8] and
 * teacher.f32 [TRAIN_ROWS,10]. Prints "smoke: ok" and exits 0 when every check passes.
 */
#include "alembic.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "smoke.c:%d: check failed: %s: ", __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                             \
            fprintf(stderr, " (last error: %s)\n", alembic_last_error()); \
            failures++;                                               \
        }                                                             \
    } while (0)

static float *read_f32(const char *dir, const char *name, size_t count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "smoke: cannot open %s\n", path);
        exit(2);
    }
    float *v = malloc(count * sizeof(float));
    size_t got = fread(v, sizeof(float), count, f);
    fclose(f);
    if (got != count) {
        fprintf(stderr, "smoke: %s: %zu of %zu floats\n", path, got, count);
        exit(2);
    }
    return v;
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

struct progress {
    int calls;
    int cancel_after; /* return non-zero at this step; 0 = never */
    uint64_t last_step;
};

static int32_t on_progress(void *user_data, uint64_t step, uint64_t steps, float loss) {
    struct progress *p = user_data;
    p->calls++;
    p->last_step = step;
    (void)steps;
    (void)loss;
    return p->cancel_after != 0 && (int)step >= p->cancel_after;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: smoke MODELS_DIR SCRATCH ROWS TRAIN_ROWS\n");
        return 2;
    }
    const char *models = argv[1], *scratch = argv[2];
    size_t rows = (size_t)atol(argv[3]), train_rows = (size_t)atol(argv[4]);
    char student[4096], out_path[4096];
    snprintf(student, sizeof student, "%s/student.onnx", models);

    CHECK(strlen(alembic_version()) > 0, "empty version");

    /* Inference, compared with the Rust Session's output. */
    float *x = read_f32(scratch, "x.f32", rows * 64);
    float *expected = read_f32(scratch, "expected.f32", rows * 10);
    AlembicModel *model = NULL;
    AlembicSession *session = NULL;
    CHECK(alembic_model_load(student, &model) == ALEMBIC_OK && model, "load");
    CHECK(alembic_session_new(model, "cpu", &session) == ALEMBIC_OK && session, "session");
    alembic_model_free(model); /* the session keeps what it needs */
    int64_t shape[4] = {(int64_t)rows, 1, 8, 8};
    float *y = calloc(rows * 10, sizeof(float));
    int64_t out_shape[4] = {0};
    size_t out_len = 0, out_rank = 0;
    int32_t rc = alembic_session_run_f32(session, "input", x, rows * 64, shape, 4, y, rows * 10, &out_len,
                                         out_shape, 4, &out_rank);
    CHECK(rc == ALEMBIC_OK, "run returned %d", rc);
    CHECK(out_len == rows * 10 && out_rank == 2 && out_shape[0] == (int64_t)rows && out_shape[1] == 10,
          "output len %zu rank %zu", out_len, out_rank);
    float max_diff = 0;
    for (size_t i = 0; i < rows * 10; i++) max_diff = fmaxf(max_diff, fabsf(y[i] - expected[i]));
    CHECK(max_diff <= 1e-5f, "max |C - Rust| = %g", max_diff);
    printf("smoke: %zu rows, max |C - Rust| = %g\n", rows, max_diff);

    /* Misuse: codes and messages, never a crash. */
    rc = alembic_session_run_f32(session, "input", x, rows * 64, shape, 4, y, 5, &out_len, out_shape, 4, &out_rank);
    CHECK(rc == ALEMBIC_ERR_BUFFER_TOO_SMALL && out_len == rows * 10 && out_rank == 2, "small buffer: %d", rc);
    CHECK(strstr(alembic_last_error(), "needs") != NULL, "small buffer message");
    rc = alembic_session_run_f32(session, "input", x, rows * 64, shape, 4, y, rows * 10, &out_len, out_shape, 1,
                                 &out_rank);
    CHECK(rc == ALEMBIC_ERR_BUFFER_TOO_SMALL && out_rank == 2, "small shape buffer: %d", rc);
    rc = alembic_session_run_f32(session, "input", x, 63, shape, 4, y, rows * 10, &out_len, out_shape, 4, &out_rank);
    CHECK(rc == ALEMBIC_ERR_INVALID_ARGUMENT && strstr(alembic_last_error(), "63"), "wrong length: %d", rc);
    rc = alembic_session_run_f32(NULL, "input", x, rows * 64, shape, 4, y, rows * 10, &out_len, out_shape, 4,
                                 &out_rank);
    CHECK(rc == ALEMBIC_ERR_NULL_ARGUMENT && strstr(alembic_last_error(), "session"), "null session: %d", rc);
    rc = alembic_session_run_f32(session, "input", NULL, rows * 64, shape, 4, y, rows * 10, &out_len, out_shape, 4,
                                 &out_rank);
    CHECK(rc == ALEMBIC_ERR_NULL_ARGUMENT && strstr(alembic_last_error(), "data"), "null data: %d", rc);
    rc = alembic_session_run_f32(session, "nope", x, rows * 64, shape, 4, y, rows * 10, &out_len, out_shape, 4,
                                 &out_rank);
    CHECK(rc == ALEMBIC_ERR_INPUT && strstr(alembic_last_error(), "nope"), "unknown input: %d", rc);
    int64_t bad_shape[4] = {(int64_t)rows, 1, 8, -8};
    rc = alembic_session_run_f32(session, "input", x, rows * 64, bad_shape, 4, y, rows * 10, &out_len, out_shape, 4,
                                 &out_rank);
    CHECK(rc == ALEMBIC_ERR_INVALID_ARGUMENT, "negative dim: %d", rc);
    AlembicModel *m2 = (AlembicModel *)0x1;
    CHECK(alembic_model_load(NULL, &m2) == ALEMBIC_ERR_NULL_ARGUMENT && m2 == NULL, "null path");
    CHECK(alembic_model_load(student, NULL) == ALEMBIC_ERR_NULL_ARGUMENT, "null out");
    CHECK(alembic_model_load("/nonexistent/model.onnx", &m2) == ALEMBIC_ERR_IO, "missing file");
    CHECK(strstr(alembic_last_error(), "/nonexistent/model.onnx") != NULL, "missing file message");
    AlembicSession *s2 = NULL;
    CHECK(alembic_session_new(NULL, NULL, &s2) == ALEMBIC_ERR_NULL_ARGUMENT && s2 == NULL, "null model");
    CHECK(alembic_model_load(student, &m2) == ALEMBIC_OK, "reload");
    CHECK(alembic_session_new(m2, "tpu", &s2) == ALEMBIC_ERR_UNAVAILABLE && s2 == NULL, "unknown backend");
    alembic_model_free(m2);
    alembic_model_free(NULL);
    alembic_session_free(NULL);
    CHECK(strlen(alembic_last_error()) > 0, "message kept after a failure");

    /* Refinement: progress calls, a refined model that loads and runs differently. */
    float *train_x = read_f32(scratch, "train_x.f32", train_rows * 64);
    float *teacher = read_f32(scratch, "teacher.f32", train_rows * 10);
    int64_t train_shape[4] = {(int64_t)train_rows, 1, 8, 8};
    struct progress p = {0, 0, 0};
    uint64_t done = 99;
    snprintf(out_path, sizeof out_path, "%s/refined.onnx", scratch);
    rc = alembic_distill(student, train_x, train_rows * 64, train_shape, 4, NULL, teacher, train_rows * 10,
                         out_path, 5, on_progress, &p, NULL, &done);
    CHECK(rc == ALEMBIC_OK && p.calls == 5 && p.last_step == 5 && done == 5, "distill rc %d calls %d", rc, p.calls);
    CHECK(strlen(alembic_last_error()) == 0, "success clears the message");
    AlembicModel *refined = NULL;
    AlembicSession *rs = NULL;
    CHECK(alembic_model_load(out_path, &refined) == ALEMBIC_OK, "load refined");
    CHECK(alembic_session_new(refined, NULL, &rs) == ALEMBIC_OK, "refined session");
    float *y2 = calloc(rows * 10, sizeof(float));
    rc = alembic_session_run_f32(rs, "input", x, rows * 64, shape, 4, y2, rows * 10, &out_len, out_shape, 4,
                                 &out_rank);
    float moved = 0;
    for (size_t i = 0; i < rows * 10; i++) moved = fmaxf(moved, fabsf(y2[i] - y[i]));
    CHECK(rc == ALEMBIC_OK && moved > 0, "refined run rc %d, max change %g", rc, moved);
    printf("smoke: refined 5 steps, %d progress calls, max logit change %g\n", p.calls, moved);
    alembic_session_free(rs);
    alembic_model_free(refined);

    /* Cancellation by the callback's return value: stops after step 2, writes nothing. */
    struct progress c = {0, 2, 0};
    snprintf(out_path, sizeof out_path, "%s/cancelled.onnx", scratch);
    rc = alembic_distill(student, train_x, train_rows * 64, train_shape, 4, NULL, teacher, train_rows * 10,
                         out_path, 50, on_progress, &c, NULL, &done);
    CHECK(rc == ALEMBIC_ERR_CANCELLED && c.calls == 2 && done == 2, "callback cancel rc %d calls %d", rc, c.calls);
    CHECK(!file_exists(out_path), "cancelled run wrote %s", out_path);
    /* ... and by the atomic flag, here set before the start: no step runs. */
    _Atomic int32_t flag = 1;
    struct progress f = {0, 0, 0};
    rc = alembic_distill(student, train_x, train_rows * 64, train_shape, 4, NULL, teacher, train_rows * 10,
                         out_path, 50, on_progress, &f, (const int32_t *)&flag, &done);
    CHECK(rc == ALEMBIC_ERR_CANCELLED && f.calls == 0 && done == 0, "flag cancel rc %d calls %d", rc, f.calls);
    /* Misuse of the refinement entry point. */
    rc = alembic_distill(student, train_x, train_rows * 64, train_shape, 4, NULL, NULL, 0, out_path, 5, NULL, NULL,
                         NULL, NULL);
    CHECK(rc == ALEMBIC_ERR_INVALID_ARGUMENT, "no teacher: %d", rc);
    rc = alembic_distill(student, train_x, train_rows * 64, train_shape, 4, NULL, teacher, 7, out_path, 5, NULL,
                         NULL, NULL, NULL);
    CHECK(rc == ALEMBIC_ERR_INVALID_ARGUMENT, "ragged teacher logits: %d", rc);
    rc = alembic_distill(NULL, train_x, train_rows * 64, train_shape, 4, NULL, teacher, train_rows * 10, out_path, 5,
                         NULL, NULL, NULL, NULL);
    CHECK(rc == ALEMBIC_ERR_NULL_ARGUMENT, "null student: %d", rc);

    alembic_session_free(session);
    free(x);
    free(expected);
    free(y);
    free(y2);
    free(train_x);
    free(teacher);
    if (failures) {
        fprintf(stderr, "smoke: %d checks failed\n", failures);
        return 1;
    }
    printf("smoke: ok\n");
    return 0;
}
