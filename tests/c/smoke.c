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

/* The general run call on SCRATCH/two_inputs.onnx (written by the Rust side):
 * sum = x + table[ids] (x f32 [N,3], ids i64 [N], table[r][c] = 10 r + c), twice = ids + ids. */
static void check_two_inputs(const char *scratch) {
    char path[4096];
    snprintf(path, sizeof path, "%s/two_inputs.onnx", scratch);
    AlembicModel *model = NULL;
    AlembicSession *s = NULL;
    CHECK(alembic_model_load(path, &model) == ALEMBIC_OK, "load two_inputs");
    CHECK(alembic_session_new(model, NULL, &s) == ALEMBIC_OK && s, "two_inputs session");
    alembic_model_free(model);
    if (!s) return;

    /* Queries: counts, names, types, shapes with -1 for the symbolic batch. */
    size_t n_in = 0, n_out = 0;
    CHECK(alembic_session_input_count(s, &n_in) == ALEMBIC_OK && n_in == 2, "input count %zu", n_in);
    CHECK(alembic_session_output_count(s, &n_out) == ALEMBIC_OK && n_out == 2, "output count %zu", n_out);
    AlembicTensor info;
    CHECK(alembic_session_input_info(s, 0, &info) == ALEMBIC_OK && strcmp(info.name, "x") == 0 &&
              info.dtype == ALEMBIC_DTYPE_F32 && info.rank == 2 && info.shape[0] == -1 && info.shape[1] == 3,
          "input 0 info");
    CHECK(alembic_session_input_info(s, 1, &info) == ALEMBIC_OK && strcmp(info.name, "ids") == 0 &&
              info.dtype == ALEMBIC_DTYPE_I64 && info.rank == 1 && info.shape[0] == -1,
          "input 1 info");
    CHECK(alembic_session_output_info(s, 1, &info) == ALEMBIC_OK && strcmp(info.name, "twice") == 0 &&
              info.dtype == ALEMBIC_DTYPE_I64,
          "output 1 info");
    CHECK(alembic_session_input_info(s, 2, &info) == ALEMBIC_ERR_INVALID_ARGUMENT &&
              strstr(alembic_last_error(), "out of range"),
          "input index 2");
    CHECK(alembic_session_output_info(s, 0, NULL) == ALEMBIC_ERR_NULL_ARGUMENT, "null info out");
    CHECK(alembic_session_input_count(NULL, &n_in) == ALEMBIC_ERR_NULL_ARGUMENT, "null session count");

    /* A run, inputs given in the opposite order to the model's. */
    float x[4 * 3];
    for (int i = 0; i < 12; i++) x[i] = 0.5f * (float)i;
    int64_t ids[4] = {4, 0, 2, 2}, x_shape[2] = {4, 3}, ids_shape[1] = {4};
    AlembicTensor in[2] = {
        {"ids", ALEMBIC_DTYPE_I64, ids_shape, 1, ids, 4},
        {"x", ALEMBIC_DTYPE_F32, x_shape, 2, x, 12},
    };
    AlembicOutputs *out = NULL;
    int32_t rc = alembic_session_run(s, in, 2, &out);
    CHECK(rc == ALEMBIC_OK && out, "run rc %d", rc);
    size_t count = 0;
    CHECK(alembic_outputs_count(out, &count) == ALEMBIC_OK && count == 2, "outputs %zu", count);
    AlembicTensor sum, twice;
    CHECK(alembic_outputs_get(out, 0, &sum) == ALEMBIC_OK && strcmp(sum.name, "sum") == 0 &&
              sum.dtype == ALEMBIC_DTYPE_F32 && sum.rank == 2 && sum.shape[0] == 4 && sum.shape[1] == 3 &&
              sum.len == 12,
          "sum output");
    CHECK(alembic_outputs_get(out, 1, &twice) == ALEMBIC_OK && strcmp(twice.name, "twice") == 0 &&
              twice.dtype == ALEMBIC_DTYPE_I64 && twice.rank == 1 && twice.len == 4,
          "twice output");
    float worst = 0;
    for (int i = 0; i < 4 && sum.data; i++)
        for (int c = 0; c < 3; c++)
            worst = fmaxf(worst, fabsf(((const float *)sum.data)[i * 3 + c] - (x[i * 3 + c] + 10.0f * ids[i] + c)));
    CHECK(sum.data && worst == 0, "sum differs by %g", worst);
    for (int i = 0; i < 4 && twice.data; i++)
        CHECK(((const int64_t *)twice.data)[i] == 2 * ids[i], "twice[%d]", i);
    CHECK(alembic_outputs_get(out, 2, &sum) == ALEMBIC_ERR_INVALID_ARGUMENT, "output index 2");
    alembic_outputs_free(out);
    alembic_outputs_free(NULL);
    printf("smoke: two-input model (f32 + i64) ok\n");

    /* Misuse: each a code and a message, *out left NULL. */
    out = (AlembicOutputs *)0x1;
    rc = alembic_session_run(s, in, 1, &out);
    CHECK(rc == ALEMBIC_ERR_INPUT && out == NULL && strstr(alembic_last_error(), "x"), "one input missing: %d", rc);
    rc = alembic_session_run(s, in, 0, &out);
    CHECK(rc == ALEMBIC_ERR_INVALID_ARGUMENT, "zero inputs: %d", rc);
    rc = alembic_session_run(s, NULL, 2, &out);
    CHECK(rc == ALEMBIC_ERR_NULL_ARGUMENT && strstr(alembic_last_error(), "inputs"), "null inputs: %d", rc);
    rc = alembic_session_run(s, in, 2, NULL);
    CHECK(rc == ALEMBIC_ERR_NULL_ARGUMENT, "null out: %d", rc);
    AlembicTensor bad[2] = {in[0], in[1]};
    bad[1].name = NULL;
    rc = alembic_session_run(s, bad, 2, &out);
    CHECK(rc == ALEMBIC_ERR_NULL_ARGUMENT && strstr(alembic_last_error(), "inputs[1].name"), "null name: %d", rc);
    bad[1] = in[1];
    bad[0].dtype = 99;
    rc = alembic_session_run(s, bad, 2, &out);
    CHECK(rc == ALEMBIC_ERR_INVALID_ARGUMENT && strstr(alembic_last_error(), "99"), "bad dtype: %d", rc);
    bad[0].dtype = ALEMBIC_DTYPE_I32; /* the model wants i64 */
    rc = alembic_session_run(s, bad, 2, &out);
    CHECK(rc == ALEMBIC_ERR_INPUT && strstr(alembic_last_error(), "ids"), "wrong dtype: %d", rc);
    bad[0] = in[0];
    bad[0].len = 3;
    rc = alembic_session_run(s, bad, 2, &out);
    CHECK(rc == ALEMBIC_ERR_INVALID_ARGUMENT && strstr(alembic_last_error(), "ids"), "wrong len: %d", rc);
    bad[0] = in[1];
    rc = alembic_session_run(s, bad, 2, &out);
    CHECK(rc == ALEMBIC_ERR_INPUT && out == NULL, "x given twice: %d", rc);
    CHECK(alembic_outputs_count(NULL, &count) == ALEMBIC_ERR_NULL_ARGUMENT, "null outputs");
    alembic_session_free(s);
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

    /* Options: an unknown precision is refused with its name; w8a8 on one thread runs. */
    AlembicModel *qmodel = NULL;
    AlembicSession *qsession = NULL;
    CHECK(alembic_model_load(student, &qmodel) == ALEMBIC_OK, "load for options");
    CHECK(alembic_session_new_with(qmodel, "cpu", "int7", 0, &qsession) == ALEMBIC_ERR_INVALID_ARGUMENT && !qsession &&
              strstr(alembic_last_error(), "int7"),
          "unknown precision");
    CHECK(alembic_session_new_with(qmodel, NULL, "w8a8", 1, &qsession) == ALEMBIC_OK && qsession, "w8a8 session");
    alembic_model_free(qmodel);
    rc = alembic_session_run_f32(qsession, "input", x, rows * 64, shape, 4, y, rows * 10, &out_len, out_shape, 4,
                                 &out_rank);
    CHECK(rc == ALEMBIC_OK && out_len == rows * 10, "w8a8 run: %d", rc);
    alembic_session_free(qsession);
    /* The f32 output again for the checks below. */
    rc = alembic_session_run_f32(session, "input", x, rows * 64, shape, 4, y, rows * 10, &out_len, out_shape, 4,
                                 &out_rank);
    CHECK(rc == ALEMBIC_OK, "f32 rerun: %d", rc);

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

    check_two_inputs(scratch);

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
