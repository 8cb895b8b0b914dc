/*
 * Alembic C API: on-device ONNX inference and student refinement.
 *
 * Link against libalembic_ffi (.so / .dylib / .a), built by `cargo build -p alembic-ffi`
 * (see docs/embedding.md). Every fallible function returns an AlembicStatus; on failure the
 * calling thread's message is available from alembic_last_error(). No function panics or
 * throws across this boundary; null handles and wrong lengths are reported, not crashed on.
 *
 * Threading: an AlembicSession may be run from many threads at once. Handles must not be
 * freed while another thread uses them.
 */
#ifndef ALEMBIC_H
#define ALEMBIC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum AlembicStatus {
    ALEMBIC_OK = 0,
    /* A required pointer or handle was null. */
    ALEMBIC_ERR_NULL_ARGUMENT = 1,
    /* A length, shape, rank, string or option is invalid. */
    ALEMBIC_ERR_INVALID_ARGUMENT = 2,
    /* An output buffer is too small; the needed sizes were written to out_len / out_rank. */
    ALEMBIC_ERR_BUFFER_TOO_SMALL = 3,
    /* A file could not be read or written. */
    ALEMBIC_ERR_IO = 4,
    /* The model is malformed or unsupported. */
    ALEMBIC_ERR_MODEL = 5,
    /* Run inputs do not fit the model (name, type, shape). */
    ALEMBIC_ERR_INPUT = 6,
    /* A kernel or the trainer failed at run time. */
    ALEMBIC_ERR_RUNTIME = 7,
    /* A backend or feature is not built in or not available on this device. */
    ALEMBIC_ERR_UNAVAILABLE = 8,
    /* Refinement was cancelled (flag or callback); nothing was written. */
    ALEMBIC_ERR_CANCELLED = 9,
    /* Internal error (a caught panic). The process is still usable. */
    ALEMBIC_ERR_PANIC = 10
} AlembicStatus;

/* Element types: the ONNX TensorProto.DataType codes. Data is in native (little-endian) layout;
 * F16/BF16 as 16-bit patterns, BOOL and the F8 types one byte per element. */
typedef enum AlembicDType {
    ALEMBIC_DTYPE_UNKNOWN = 0,
    ALEMBIC_DTYPE_F32 = 1,
    ALEMBIC_DTYPE_U8 = 2,
    ALEMBIC_DTYPE_I8 = 3,
    ALEMBIC_DTYPE_U16 = 4,
    ALEMBIC_DTYPE_I16 = 5,
    ALEMBIC_DTYPE_I32 = 6,
    ALEMBIC_DTYPE_I64 = 7,
    ALEMBIC_DTYPE_BOOL = 9,
    ALEMBIC_DTYPE_F16 = 10,
    ALEMBIC_DTYPE_F64 = 11,
    ALEMBIC_DTYPE_U32 = 12,
    ALEMBIC_DTYPE_U64 = 13,
    ALEMBIC_DTYPE_BF16 = 16,
    ALEMBIC_DTYPE_F8E4M3FN = 17,
    ALEMBIC_DTYPE_F8E4M3FNUZ = 18,
    ALEMBIC_DTYPE_F8E5M2 = 19,
    ALEMBIC_DTYPE_F8E5M2FNUZ = 20
} AlembicDType;

/* `rank` of an input or output whose rank is unknown until a run. */
#define ALEMBIC_RANK_UNKNOWN SIZE_MAX

/*
 * A named tensor. As a run input every field is set by the caller: dtype an AlembicDType,
 * shape[0..rank] (non-negative), data holding len elements. From alembic_session_input_info /
 * output_info: name, dtype (ALEMBIC_DTYPE_UNKNOWN when unknown) and shape, -1 for a symbolic
 * dimension; data NULL, len 0. From alembic_outputs_get: every field, owned by the outputs.
 */
typedef struct AlembicTensor {
    const char *name;
    int32_t dtype;
    const int64_t *shape;
    size_t rank;
    const void *data;
    size_t len;
} AlembicTensor;

/* An imported model. */
typedef struct AlembicModel AlembicModel;
/* A model prepared on a backend; thread-safe to run. */
typedef struct AlembicSession AlembicSession;

/* The outputs of one alembic_session_run, owned by the library until alembic_outputs_free. */
typedef struct AlembicOutputs AlembicOutputs;

/* Called after every refinement step; return non-zero to cancel. */
typedef int32_t (*AlembicProgressFn)(void *user_data, uint64_t step, uint64_t steps, float loss);

/* Library version, a static string such as "0.1.0". */
const char *alembic_version(void);

/* The calling thread's last error message ("" after a success). Valid until the next
 * alembic_* call on this thread. */
const char *alembic_last_error(void);

/* Loads an ONNX model; free *out with alembic_model_free. */
int32_t alembic_model_load(const char *path, AlembicModel **out);

/* Frees a model (null is ignored). Sessions made from it stay valid. */
void alembic_model_free(AlembicModel *model);

/* Prepares a model on a backend: "cpu" (or NULL), "wgpu" when built with it. */
int32_t alembic_session_new(const AlembicModel *model, const char *backend, AlembicSession **out);

/*
 * alembic_session_new with options: precision "f32" (or NULL), "f16", "int8", "int4", "w8a8" (the
 * weights are quantized when the session is made; an int8 QDQ file runs its own int8 weights), and
 * threads, the most CPU threads one run uses (0: the default, the cores up to 4). An unknown
 * precision is ALEMBIC_ERR_INVALID_ARGUMENT.
 */
int32_t alembic_session_new_with(const AlembicModel *model, const char *backend, const char *precision,
                                 uint32_t threads, AlembicSession **out);

/* Frees a session (null is ignored). No run may be in flight on it. */
void alembic_session_free(AlembicSession *session);

/*
 * Runs a single-input model on `data` (`len` floats with shape shape[0..rank]) and writes its
 * first output: floats to out[0..out_cap], their count to *out_len, dimensions to
 * out_shape[0..out_rank_cap], the rank to *out_rank. On ALEMBIC_ERR_BUFFER_TOO_SMALL the needed
 * *out_len and *out_rank are still written.
 */
int32_t alembic_session_run_f32(const AlembicSession *session, const char *input_name,
                                const float *data, size_t len, const int64_t *shape, size_t rank,
                                float *out, size_t out_cap, size_t *out_len,
                                int64_t *out_shape, size_t out_rank_cap, size_t *out_rank);

/* Number of inputs to feed / of outputs. */
int32_t alembic_session_input_count(const AlembicSession *session, size_t *out);
int32_t alembic_session_output_count(const AlembicSession *session, size_t *out);

/* Describes input / output `index` into *out (see AlembicTensor); its pointers live as long as
 * the session. An index out of range is ALEMBIC_ERR_INVALID_ARGUMENT. */
int32_t alembic_session_input_info(const AlembicSession *session, size_t index, AlembicTensor *out);
int32_t alembic_session_output_info(const AlembicSession *session, size_t index, AlembicTensor *out);

/*
 * Runs a model with any number of inputs (inputs[0..n_inputs], each model input once, by name,
 * of any AlembicDType) and stores every output in a new *out (NULL on failure). Thread-safe.
 */
int32_t alembic_session_run(const AlembicSession *session, const AlembicTensor *inputs, size_t n_inputs,
                            AlembicOutputs **out);

/* Number of tensors in a run's outputs. */
int32_t alembic_outputs_count(const AlembicOutputs *outputs, size_t *out);

/* Output `index` into *out: name, dtype, shape, rank, data and element count; the pointers live
 * until alembic_outputs_free. */
int32_t alembic_outputs_get(const AlembicOutputs *outputs, size_t index, AlembicTensor *out);

/* Frees a run's outputs (null is ignored). */
void alembic_outputs_free(AlembicOutputs *outputs);

/*
 * Refines the student ONNX model at student_path on `inputs` (shape input_shape[0..input_rank],
 * the first dimension counting samples) against the teacher's soft labels: either a .kdc cache
 * at cache_path (one record per sample) or teacher_logits ([samples, classes] row-major,
 * teacher_logits_len floats); pass NULL / 0 for the other. Runs `steps` steps, then writes the
 * refined model as ONNX to out_path.
 *
 * progress (may be NULL) is called on the calling thread after every step; a non-zero return
 * cancels. cancel_flag (may be NULL) is read atomically before every step: store non-zero
 * from any thread (C11 atomic_store on an _Atomic int32_t, std::atomic<int32_t>) to cancel.
 * A cancelled run returns ALEMBIC_ERR_CANCELLED and writes nothing. *out_steps_done (may be
 * NULL) receives the number of steps completed.
 */
int32_t alembic_distill(const char *student_path, const float *inputs, size_t inputs_len,
                        const int64_t *input_shape, size_t input_rank, const char *cache_path,
                        const float *teacher_logits, size_t teacher_logits_len,
                        const char *out_path, uint64_t steps, AlembicProgressFn progress,
                        void *user_data, const int32_t *cancel_flag, uint64_t *out_steps_done);

#ifdef __cplusplus
}
#endif

#endif /* ALEMBIC_H */
