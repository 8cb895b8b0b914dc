//! Models and sessions over the C ABI: load, prepare on a backend, run a single-input model with
//! f32 buffers (several inputs of any type: `io.rs`).

use super::io::{io_infos, IoInfo};
use super::{c_str, guard, non_null, opt_c_str, shape_for, slice, AlembicStatus, FfiError, FfiResult};
use crate::{BackendKind, Model, Session, SessionOptions, Tensor};
use std::ffi::c_char;

/// An imported model (opaque to C).
pub struct AlembicModel {
    pub(crate) model: Model,
}

/// A model prepared on a backend (opaque to C). `Send + Sync`: one session may be run from many
/// threads at once.
pub struct AlembicSession {
    pub(crate) session: Session,
    /// Graph inputs and outputs in C form (`alembic_session_input_info`).
    pub(crate) inputs: Vec<IoInfo>,
    pub(crate) outputs: Vec<IoInfo>,
    /// Input and output buffers kept between `alembic_session_run_f32` calls, one set per
    /// concurrent caller: after the first call with given shapes, a CPU run allocates nothing.
    pub(crate) buffers: std::sync::Mutex<Vec<(Tensor, crate::Outputs)>>,
}

/// Writes a new handle to `out` (checked non-null first, so nothing leaks).
///
/// # Safety
/// `out` is null or valid for a pointer write.
unsafe fn put<T>(out: *mut *mut T, make: impl FnOnce() -> FfiResult<T>) -> FfiResult<()> {
    non_null(out, "out")?;
    // SAFETY: checked non-null; writable per the caller's contract. Cleared first so a failed
    // call never leaves a stale handle behind.
    unsafe { *out = std::ptr::null_mut() };
    let v = make()?;
    unsafe { *out = Box::into_raw(Box::new(v)) };
    Ok(())
}

/// Loads an ONNX model from `path` into `*out` (free with `alembic_model_free`).
///
/// # Safety
/// `path` is a NUL-terminated string; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn alembic_model_load(path: *const c_char, out: *mut *mut AlembicModel) -> i32 {
    guard(|| unsafe {
        put(out, || {
            let path = c_str(path, "path")?;
            Ok(AlembicModel { model: Model::load(path)? })
        })
    })
}

/// Frees a model; null is ignored. Sessions made from it stay valid.
///
/// # Safety
/// `model` is null or a live handle from `alembic_model_load`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn alembic_model_free(model: *mut AlembicModel) {
    if !model.is_null() {
        // SAFETY: came from Box::into_raw in alembic_model_load.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(unsafe { Box::from_raw(model) })));
    }
}

/// Prepares `model` on `backend` ("cpu", "wgpu"; null means "cpu") into `*out`.
///
/// # Safety
/// `model` is null or a live model handle; `backend` is null or a NUL-terminated string; `out` is
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn alembic_session_new(
    model: *const AlembicModel,
    backend: *const c_char,
    out: *mut *mut AlembicSession,
) -> i32 {
    // SAFETY: the same contract; a null precision and 0 threads are the defaults.
    unsafe { alembic_session_new_with(model, backend, std::ptr::null(), 0, out) }
}

/// [`alembic_session_new`] with a precision ("f32" or null, "f16", "int8", "int4", "w8a8": the
/// weights are quantized when the session is made) and a cap on the CPU threads one run uses
/// (0: the default, the cores up to 4).
///
/// # Safety
/// As [`alembic_session_new`]; `precision` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn alembic_session_new_with(
    model: *const AlembicModel,
    backend: *const c_char,
    precision: *const c_char,
    threads: u32,
    out: *mut *mut AlembicSession,
) -> i32 {
    guard(|| unsafe {
        put(out, || {
            let model = &*non_null(model, "model")?;
            let mut options = SessionOptions::default().backend(backend_kind(backend)?);
            if let Some(p) = opt_c_str(precision, "precision")? {
                options =
                    options.precision(p.parse().map_err(|m: String| FfiError::new(AlembicStatus::InvalidArgument, m))?);
            }
            if threads > 0 {
                options = options.threads(threads as usize);
            }
            let session = model.model.session(options)?;
            let (inputs, outputs) = io_infos(&session);
            Ok(AlembicSession { session, inputs, outputs, buffers: Default::default() })
        })
    })
}

/// The backend a C string names (null: the CPU).
unsafe fn backend_kind(backend: *const c_char) -> FfiResult<BackendKind> {
    match unsafe { opt_c_str(backend, "backend")? } {
        None => Ok(BackendKind::Cpu),
        Some(b) => b.parse().map_err(|m: String| FfiError::new(AlembicStatus::Unavailable, m)),
    }
}

/// Frees a session; null is ignored. No run may be in flight on it.
///
/// # Safety
/// `session` is null or a live handle from `alembic_session_new`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn alembic_session_free(session: *mut AlembicSession) {
    if !session.is_null() {
        // SAFETY: came from Box::into_raw in alembic_session_new.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(unsafe { Box::from_raw(session) })));
    }
}

/// Runs a single-input model on `data` (`len` floats, shape `shape[0..rank]`) and writes its
/// first output: the floats into `out[0..out_cap]`, the count to `*out_len`, the dimensions to
/// `out_shape[0..out_rank_cap]` and the rank to `*out_rank`. `*out_len` and `*out_rank` are
/// written even on `ALEMBIC_ERR_BUFFER_TOO_SMALL`, so a caller can size its buffers and retry.
/// Thread-safe: many threads may run one session at once.
///
/// # Safety
/// Every non-null pointer is valid for the length given with it; `input_name` is a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn alembic_session_run_f32(
    session: *const AlembicSession,
    input_name: *const c_char,
    data: *const f32,
    len: usize,
    shape: *const i64,
    rank: usize,
    out: *mut f32,
    out_cap: usize,
    out_len: *mut usize,
    out_shape: *mut i64,
    out_rank_cap: usize,
    out_rank: *mut usize,
) -> i32 {
    guard(|| unsafe {
        let s = &*non_null(session, "session")?;
        let name = c_str(input_name, "input_name")?;
        let data = slice(data, len, "data")?;
        let dims = shape_for(slice(shape, rank, "shape")?, len, "input shape")?;
        non_null(out_len, "out_len")?;
        non_null(out_rank, "out_rank")?;
        if out_cap > 0 {
            non_null(out, "out")?;
        }
        if out_rank_cap > 0 {
            non_null(out_shape, "out_shape")?;
        }
        let pool = || s.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let (mut x, mut outputs) = pool().pop().unwrap_or_else(|| (Tensor::placeholder(), crate::Outputs::default()));
        x.reuse_f32(&dims).copy_from_slice(data);
        let result = s.session.run_into(&[(name, &x)], &mut outputs).map_err(FfiError::from).and_then(|()| {
            let (oname, y) =
                outputs.0.first().ok_or_else(|| FfiError::new(AlembicStatus::Model, "the model has no outputs"))?;
            let ys = y.as_slice::<f32>().ok_or_else(|| {
                FfiError::new(
                    AlembicStatus::InvalidArgument,
                    format!("output '{oname}' is {}; alembic_session_run_f32 returns f32 outputs only", y.dtype()),
                )
            })?;
            *out_len = ys.len();
            *out_rank = y.rank();
            if ys.len() > out_cap || y.rank() > out_rank_cap {
                return Err(FfiError::new(
                    AlembicStatus::BufferTooSmall,
                    format!(
                        "output '{oname}' {:?} needs {} floats and rank {}; buffers hold {out_cap} floats, rank {out_rank_cap}",
                        y.shape(),
                        ys.len(),
                        y.rank()
                    ),
                ));
            }
            if !ys.is_empty() {
                std::ptr::copy_nonoverlapping(ys.as_ptr(), out, ys.len());
            }
            for (i, &d) in y.shape().iter().enumerate() {
                *out_shape.add(i) = d as i64;
            }
            Ok(())
        });
        pool().push((x, outputs));
        result
    })
}
