//! Several named inputs and outputs of any element type over the C ABI: one tensor description
//! (`AlembicTensor`) for inputs, input/output queries and outputs; `alembic_session_run` returns
//! its outputs in a library-owned `AlembicOutputs` (no second run to size buffers).

use super::{c_str, guard, non_null, shape_for, slice, AlembicSession, AlembicStatus, FfiError, FfiResult};
use crate::dispatch_data;
use crate::tensor::{DType, Data, Tensor};
use crate::Session;
use std::ffi::{c_char, c_void, CString};

/// `rank` of an input or output whose rank is not known before a run.
pub const ALEMBIC_RANK_UNKNOWN: usize = usize::MAX;

/// A tensor as C sees it. Inputs: every field set by the caller, `dtype` an `AlembicDType` (the
/// ONNX `TensorProto.DataType` code), `len` counting elements, `data` in native (little-endian)
/// layout, bool as one byte per element. Queries and outputs: filled by the library, pointers
/// owned by the session / the outputs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AlembicTensor {
    pub name: *const c_char,
    pub dtype: i32,
    pub shape: *const i64,
    pub rank: usize,
    pub data: *const c_void,
    pub len: usize,
}

impl AlembicTensor {
    const EMPTY: AlembicTensor = AlembicTensor {
        name: std::ptr::null(),
        dtype: 0,
        shape: std::ptr::null(),
        rank: 0,
        data: std::ptr::null(),
        len: 0,
    };
}

/// Name, type and shape of a model input or output, kept in C form by the session so the
/// pointers handed out stay valid as long as it lives.
pub(crate) struct IoInfo {
    name: CString,
    dtype: i32,
    /// Dimensions, -1 for symbolic or unknown ones; `None` when even the rank is unknown.
    dims: Option<Vec<i64>>,
}

impl IoInfo {
    fn view(&self) -> AlembicTensor {
        AlembicTensor {
            name: self.name.as_ptr(),
            dtype: self.dtype,
            shape: self.dims.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
            rank: self.dims.as_ref().map_or(ALEMBIC_RANK_UNKNOWN, Vec::len),
            ..AlembicTensor::EMPTY
        }
    }
}

fn c_name(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).expect("NULs replaced")
}

/// The session's graph inputs and outputs in C form.
pub(crate) fn io_infos(session: &Session) -> (Vec<IoInfo>, Vec<IoInfo>) {
    let g = session.graph();
    let info = |&v: &usize| {
        let val = g.value(v);
        let dims = val.shape.as_ref().map(|s| s.0.iter().map(|d| d.known().map_or(-1, |n| n as i64)).collect());
        IoInfo { name: c_name(&val.name), dtype: val.dtype.map_or(0, DType::onnx_code), dims }
    };
    (g.inputs.iter().map(info).collect(), g.outputs.iter().map(info).collect())
}

/// Outputs of one run (opaque to C), owned by the library until `alembic_outputs_free`.
pub struct AlembicOutputs {
    names: Vec<CString>,
    dims: Vec<Vec<i64>>,
    tensors: Vec<Tensor>,
}

fn invalid(m: String) -> FfiError {
    FfiError::new(AlembicStatus::InvalidArgument, m)
}

/// Copies one C input into a tensor, checking every field.
///
/// # Safety
/// The pointers in `t` are null or valid for the lengths the struct gives.
unsafe fn input_tensor(t: &AlembicTensor, i: usize) -> FfiResult<(String, Tensor)> {
    let name = unsafe { c_str(t.name, &format!("inputs[{i}].name")) }?.to_string();
    let what = |f: &str| format!("input '{name}' {f}");
    let dtype = DType::from_onnx(t.dtype)
        .ok_or_else(|| invalid(format!("{}: unknown dtype code {}", what("dtype"), t.dtype)))?;
    let dims = shape_for(unsafe { slice(t.shape, t.rank, &what("shape")) }?, t.len, &what("shape"))?;
    let bytes = t
        .len
        .checked_mul(dtype.size())
        .ok_or_else(|| invalid(format!("{}: {} elements overflow", what("data"), t.len)))?;
    let raw = unsafe { slice(t.data.cast::<u8>(), bytes, &what("data")) }?;
    let tensor = Tensor::new(dims.to_vec(), Data::from_le_bytes(dtype, raw)).expect("shape checked against len");
    Ok((name, tensor))
}

/// Number of graph inputs to feed (initializers excluded) into `*out`.
///
/// # Safety
/// `session` is null or a live session; `out` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn alembic_session_input_count(session: *const AlembicSession, out: *mut usize) -> i32 {
    guard(|| unsafe {
        let s = &*non_null(session, "session")?;
        *non_null(out, "out")?.cast_mut() = s.inputs.len();
        Ok(())
    })
}

/// Number of graph outputs into `*out`.
///
/// # Safety
/// As [`alembic_session_input_count`].
#[no_mangle]
pub unsafe extern "C" fn alembic_session_output_count(session: *const AlembicSession, out: *mut usize) -> i32 {
    guard(|| unsafe {
        let s = &*non_null(session, "session")?;
        *non_null(out, "out")?.cast_mut() = s.outputs.len();
        Ok(())
    })
}

/// # Safety
/// `session` is null or live; `out` is null or valid for a write.
unsafe fn info(session: *const AlembicSession, index: usize, out: *mut AlembicTensor, outputs: bool) -> i32 {
    guard(|| unsafe {
        let s = &*non_null(session, "session")?;
        let out = non_null(out, "out")?.cast_mut();
        let (list, kind) = if outputs { (&s.outputs, "output") } else { (&s.inputs, "input") };
        let i = list
            .get(index)
            .ok_or_else(|| invalid(format!("{kind} index {index} is out of range (the model has {})", list.len())))?;
        *out = i.view();
        Ok(())
    })
}

/// Describes input `index` into `*out`: name, dtype (0 when unknown), shape with -1 for
/// symbolic dimensions (rank `ALEMBIC_RANK_UNKNOWN` and a null shape when not even the rank is
/// known); `data` null, `len` 0. The pointers live as long as the session.
///
/// # Safety
/// `session` is null or a live session; `out` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn alembic_session_input_info(
    session: *const AlembicSession,
    index: usize,
    out: *mut AlembicTensor,
) -> i32 {
    unsafe { info(session, index, out, false) }
}

/// Describes output `index`, as [`alembic_session_input_info`].
///
/// # Safety
/// As [`alembic_session_input_info`].
#[no_mangle]
pub unsafe extern "C" fn alembic_session_output_info(
    session: *const AlembicSession,
    index: usize,
    out: *mut AlembicTensor,
) -> i32 {
    unsafe { info(session, index, out, true) }
}

/// Runs the session on `inputs[0..n_inputs]` (every model input once, by name) and stores all
/// outputs in a new `*out` (free with `alembic_outputs_free`). Thread-safe.
///
/// # Safety
/// `inputs` is null or valid for `n_inputs` structs whose pointers are valid for the lengths
/// they give; `out` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn alembic_session_run(
    session: *const AlembicSession,
    inputs: *const AlembicTensor,
    n_inputs: usize,
    out: *mut *mut AlembicOutputs,
) -> i32 {
    guard(|| unsafe {
        let out = non_null(out, "out")?.cast_mut();
        *out = std::ptr::null_mut();
        let s = &*non_null(session, "session")?;
        if n_inputs == 0 {
            return Err(invalid(format!("no inputs given; the model takes {}", s.inputs.len())));
        }
        let given = slice(inputs, n_inputs, "inputs")?;
        let named = given.iter().enumerate().map(|(i, t)| input_tensor(t, i)).collect::<FfiResult<Vec<_>>>()?;
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let outputs = s.session.run_refs(&refs)?;
        let (names, tensors): (Vec<_>, Vec<_>) = outputs.0.into_iter().map(|(n, t)| (c_name(&n), t)).unzip();
        let dims = tensors.iter().map(|t| t.shape().iter().map(|&d| d as i64).collect()).collect();
        *out = Box::into_raw(Box::new(AlembicOutputs { names, dims, tensors }));
        Ok(())
    })
}

/// Number of tensors in `outputs` into `*out`.
///
/// # Safety
/// `outputs` is null or a live handle; `out` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn alembic_outputs_count(outputs: *const AlembicOutputs, out: *mut usize) -> i32 {
    guard(|| unsafe {
        let o = &*non_null(outputs, "outputs")?;
        *non_null(out, "out")?.cast_mut() = o.tensors.len();
        Ok(())
    })
}

/// Output `index` into `*out`: name, dtype, shape, rank, data (native layout, bool as bytes)
/// and element count. The pointers live until `alembic_outputs_free`.
///
/// # Safety
/// `outputs` is null or a live handle; `out` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn alembic_outputs_get(
    outputs: *const AlembicOutputs,
    index: usize,
    out: *mut AlembicTensor,
) -> i32 {
    guard(|| unsafe {
        let o = &*non_null(outputs, "outputs")?;
        let out = non_null(out, "out")?.cast_mut();
        let t = o.tensors.get(index).ok_or_else(|| {
            invalid(format!("output index {index} is out of range (the run has {} outputs)", o.tensors.len()))
        })?;
        *out = AlembicTensor {
            name: o.names[index].as_ptr(),
            dtype: t.dtype().onnx_code(),
            shape: o.dims[index].as_ptr(),
            rank: t.rank(),
            data: dispatch_data!(t.data(), v => v.as_ptr().cast::<c_void>()),
            len: t.len(),
        };
        Ok(())
    })
}

/// Frees the outputs of a run; null is ignored.
///
/// # Safety
/// `outputs` is null or a live handle from `alembic_session_run`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn alembic_outputs_free(outputs: *mut AlembicOutputs) {
    if !outputs.is_null() {
        // SAFETY: came from Box::into_raw in alembic_session_run.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(unsafe { Box::from_raw(outputs) })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked_field_by_field() {
        let name = c"x";
        let (dims, data) = ([2i64, 2], [1i64, 2, 3, 4]);
        let t = AlembicTensor {
            name: name.as_ptr(),
            dtype: DType::I64.onnx_code(),
            shape: dims.as_ptr(),
            rank: 2,
            data: data.as_ptr().cast(),
            len: 4,
        };
        let (n, x) = unsafe { input_tensor(&t, 0) }.unwrap();
        assert_eq!((n.as_str(), x.shape(), x.as_slice::<i64>().unwrap()), ("x", &[2usize, 2][..], &data[..]));
        let bad = |t: AlembicTensor| unsafe { input_tensor(&t, 3) }.unwrap_err();
        let e = bad(AlembicTensor { name: std::ptr::null(), ..t });
        assert_eq!((e.status, e.message.as_str()), (AlembicStatus::NullArgument, "inputs[3].name is null"));
        let e = bad(AlembicTensor { dtype: 99, ..t });
        assert!(e.status == AlembicStatus::InvalidArgument && e.message.contains("dtype code 99"), "{}", e.message);
        let e = bad(AlembicTensor { len: 3, ..t });
        assert!(e.message.contains("3"), "{}", e.message);
        let e = bad(AlembicTensor { data: std::ptr::null(), ..t });
        assert_eq!(e.status, AlembicStatus::NullArgument);
        let e = bad(AlembicTensor { len: usize::MAX, ..t });
        assert_eq!(e.status, AlembicStatus::InvalidArgument);
    }
}
