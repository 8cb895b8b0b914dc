//! JNI bindings (feature `jni`) for `dev.alembic.NativeLib` (android/src/main/java): thin shims
//! over the C ABI that return its status codes; the Kotlin API turns non-zero codes plus
//! `lastError()` into `AlembicException`. Handles travel to Java as `long`.
//!
//! Nothing may unwind into the JVM: every shim runs under `catch_unwind`, and the progress
//! callback swallows Java exceptions' unwinding by cancelling (the exception stays pending and
//! is thrown in Java when the native call returns).

use super::{
    alembic_distill, alembic_last_error, alembic_model_free, alembic_model_load, alembic_outputs_count,
    alembic_outputs_free, alembic_outputs_get, alembic_session_free, alembic_session_input_count,
    alembic_session_input_info, alembic_session_new, alembic_session_new_with, alembic_session_output_count,
    alembic_session_output_info, alembic_session_run, alembic_session_run_f32, alembic_version, set_last_error,
    AlembicModel, AlembicOutputs, AlembicSession, AlembicStatus, AlembicTensor, ALEMBIC_RANK_UNKNOWN,
};
use crate::tensor::DType;
use jni::objects::{
    JByteArray, JClass, JDoubleArray, JFloatArray, JIntArray, JLongArray, JObject, JObjectArray, JShortArray, JString,
    JValue,
};
use jni::sys::{jboolean, jint, jlong, jstring};
use jni::JNIEnv;
use std::ffi::{c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a shim; JNI failures (a pending Java exception) and panics become status codes.
fn shim(f: impl FnOnce() -> jni::errors::Result<jint>) -> jint {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => AlembicStatus::InvalidArgument as jint,
        Err(_) => AlembicStatus::Panic as jint,
    }
}

/// A Java string as a C string; `None` for a null reference.
fn c_string(env: &mut JNIEnv, s: &JString) -> jni::errors::Result<Option<CString>> {
    if s.is_null() {
        return Ok(None);
    }
    let s: String = env.get_string(s)?.into();
    Ok(Some(CString::new(s.replace('\0', "")).unwrap_or_default()))
}

fn ptr(s: &Option<CString>) -> *const std::ffi::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

fn floats(env: &mut JNIEnv, a: &JFloatArray) -> jni::errors::Result<Vec<f32>> {
    if a.is_null() {
        return Ok(Vec::new());
    }
    let mut v = vec![0f32; env.get_array_length(a)? as usize];
    env.get_float_array_region(a, 0, &mut v)?;
    Ok(v)
}

fn longs(env: &mut JNIEnv, a: &JLongArray) -> jni::errors::Result<Vec<i64>> {
    if a.is_null() {
        return Ok(Vec::new());
    }
    let mut v = vec![0i64; env.get_array_length(a)? as usize];
    env.get_long_array_region(a, 0, &mut v)?;
    Ok(v)
}

/// Stores `v` in `out[0]` when the call succeeded and `out` has room.
fn put_long(env: &mut JNIEnv, out: &JLongArray, code: jint, v: i64) -> jni::errors::Result<jint> {
    if code == 0 && !out.is_null() && env.get_array_length(out)? > 0 {
        env.set_long_array_region(out, 0, &[v])?;
    }
    Ok(code)
}

#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_version<'l>(env: JNIEnv<'l>, _: JClass<'l>) -> jstring {
    let v = unsafe { CStr::from_ptr(alembic_version()) }.to_string_lossy();
    env.new_string(v).map(|s| s.into_raw()).unwrap_or(std::ptr::null_mut())
}

#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_lastError<'l>(env: JNIEnv<'l>, _: JClass<'l>) -> jstring {
    let v = unsafe { CStr::from_ptr(alembic_last_error()) }.to_string_lossy();
    env.new_string(v).map(|s| s.into_raw()).unwrap_or(std::ptr::null_mut())
}

#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_modelLoad<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    path: JString<'l>,
    out: JLongArray<'l>,
) -> jint {
    shim(|| {
        let path = c_string(&mut env, &path)?;
        let mut m: *mut AlembicModel = std::ptr::null_mut();
        let code = unsafe { alembic_model_load(ptr(&path), &mut m) };
        put_long(&mut env, &out, code, m as i64)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_modelFree<'l>(_: JNIEnv<'l>, _: JClass<'l>, h: jlong) {
    unsafe { alembic_model_free(h as *mut AlembicModel) }
}

#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_sessionNew<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    model: jlong,
    backend: JString<'l>,
    out: JLongArray<'l>,
) -> jint {
    shim(|| {
        let backend = c_string(&mut env, &backend)?;
        let mut s: *mut AlembicSession = std::ptr::null_mut();
        let code = unsafe { alembic_session_new(model as *const AlembicModel, ptr(&backend), &mut s) };
        put_long(&mut env, &out, code, s as i64)
    })
}

/// `alembic_session_new_with`: precision null or a name, threads 0 for the default.
#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_sessionNewWith<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    model: jlong,
    backend: JString<'l>,
    precision: JString<'l>,
    threads: jint,
    out: JLongArray<'l>,
) -> jint {
    shim(|| {
        let backend = c_string(&mut env, &backend)?;
        let precision = c_string(&mut env, &precision)?;
        let Ok(threads) = u32::try_from(threads) else {
            return fail(AlembicStatus::InvalidArgument, &format!("threads {threads} is negative"));
        };
        let mut s: *mut AlembicSession = std::ptr::null_mut();
        let code = unsafe {
            alembic_session_new_with(model as *const AlembicModel, ptr(&backend), ptr(&precision), threads, &mut s)
        };
        put_long(&mut env, &out, code, s as i64)
    })
}

#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_sessionFree<'l>(_: JNIEnv<'l>, _: JClass<'l>, h: jlong) {
    unsafe { alembic_session_free(h as *mut AlembicSession) }
}

/// Runs the session; on success `result[0]` gets the output floats and `result[1]` its shape.
#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_sessionRun<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    session: jlong,
    input_name: JString<'l>,
    data: JFloatArray<'l>,
    shape: JLongArray<'l>,
    result: JObjectArray<'l>,
) -> jint {
    shim(|| {
        let name = c_string(&mut env, &input_name)?;
        let (x, dims) = (floats(&mut env, &data)?, longs(&mut env, &shape)?);
        // A first guess, then exactly the size the library asks for.
        let (mut cap, mut rank_cap) = (x.len().max(16), 8usize);
        loop {
            let (mut y, mut ys) = (vec![0f32; cap], vec![0i64; rank_cap]);
            let (mut len, mut rank) = (0usize, 0usize);
            let code = unsafe {
                alembic_session_run_f32(
                    session as *const AlembicSession,
                    ptr(&name),
                    x.as_ptr(),
                    x.len(),
                    dims.as_ptr(),
                    dims.len(),
                    y.as_mut_ptr(),
                    cap,
                    &mut len,
                    ys.as_mut_ptr(),
                    rank_cap,
                    &mut rank,
                )
            };
            if code == AlembicStatus::BufferTooSmall as jint && (len > cap || rank > rank_cap) {
                (cap, rank_cap) = (len.max(cap), rank.max(rank_cap));
                continue;
            }
            if code != 0 {
                return Ok(code);
            }
            if result.is_null() || env.get_array_length(&result)? < 2 {
                return Ok(AlembicStatus::InvalidArgument as jint);
            }
            let out = env.new_float_array(len as i32)?;
            env.set_float_array_region(&out, 0, &y[..len])?;
            let shape = env.new_long_array(rank as i32)?;
            env.set_long_array_region(&shape, 0, &ys[..rank])?;
            env.set_object_array_element(&result, 0, out)?;
            env.set_object_array_element(&result, 1, shape)?;
            return Ok(0);
        }
    })
}

struct Progress<'a, 'l> {
    env: &'a mut JNIEnv<'l>,
    listener: &'a JObject<'l>,
}

/// Calls `listener.onStep(step, steps, loss)`; `false`, a Java exception or a panic cancels.
unsafe extern "C" fn on_step(user: *mut c_void, step: u64, steps: u64, loss: f32) -> i32 {
    let p = unsafe { &mut *(user as *mut Progress) };
    let go = catch_unwind(AssertUnwindSafe(|| {
        let args = [JValue::Long(step as i64), JValue::Long(steps as i64), JValue::Float(loss)];
        p.env.call_method(p.listener, "onStep", "(JJF)Z", &args).and_then(|v| v.z()).unwrap_or(false)
    }));
    (!go.unwrap_or(false)) as i32
}

/// Refinement; `listener` (a `dev.alembic.ProgressListener`, may be null) returns false to
/// cancel. `stepsDone[0]` gets the steps completed.
#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_distill<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    student: JString<'l>,
    inputs: JFloatArray<'l>,
    shape: JLongArray<'l>,
    cache_path: JString<'l>,
    teacher_logits: JFloatArray<'l>,
    out_path: JString<'l>,
    steps: jlong,
    listener: JObject<'l>,
    steps_done: JLongArray<'l>,
) -> jint {
    shim(|| {
        let (student, cache, out) =
            (c_string(&mut env, &student)?, c_string(&mut env, &cache_path)?, c_string(&mut env, &out_path)?);
        let (x, dims, logits) =
            (floats(&mut env, &inputs)?, longs(&mut env, &shape)?, floats(&mut env, &teacher_logits)?);
        let mut done = 0u64;
        let code = {
            let mut p = Progress { env: &mut env, listener: &listener };
            let (cb, user) = if listener.is_null() {
                (None, std::ptr::null_mut())
            } else {
                (Some(on_step as unsafe extern "C" fn(_, _, _, _) -> _), &mut p as *mut Progress as *mut c_void)
            };
            let logits_ptr = if logits.is_empty() { std::ptr::null() } else { logits.as_ptr() };
            unsafe {
                alembic_distill(
                    ptr(&student),
                    x.as_ptr(),
                    x.len(),
                    dims.as_ptr(),
                    dims.len(),
                    ptr(&cache),
                    logits_ptr,
                    logits.len(),
                    ptr(&out),
                    steps.max(0) as u64,
                    cb,
                    user,
                    std::ptr::null(),
                    &mut done,
                )
            }
        };
        if env.exception_check()? {
            return Ok(code); // the listener threw: let Java see its exception
        }
        if !steps_done.is_null() && env.get_array_length(&steps_done)? > 0 {
            env.set_long_array_region(&steps_done, 0, &[done as i64])?;
        }
        Ok(code)
    })
}

/// A Java primitive array's contents, typed by the element size of the dtype it carries.
enum Buf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I16(Vec<i16>),
    I8(Vec<i8>),
}

impl Buf {
    fn raw(&self) -> (*const c_void, usize) {
        match self {
            Buf::F32(v) => (v.as_ptr().cast(), v.len()),
            Buf::F64(v) => (v.as_ptr().cast(), v.len()),
            Buf::I64(v) => (v.as_ptr().cast(), v.len()),
            Buf::I32(v) => (v.as_ptr().cast(), v.len()),
            Buf::I16(v) => (v.as_ptr().cast(), v.len()),
            Buf::I8(v) => (v.as_ptr().cast(), v.len()),
        }
    }
}

/// The Java array class that carries `dtype`: float[] for f32, double[] for f64, and long[],
/// int[], short[], byte[] for the other 8-, 4-, 2- and 1-byte types (f16/bf16 as bits, bool as
/// 0/1 bytes).
fn array_class(dtype: DType) -> &'static str {
    match (dtype, dtype.size()) {
        (DType::F32, _) => "[F",
        (DType::F64, _) => "[D",
        (_, 8) => "[J",
        (_, 4) => "[I",
        (_, 2) => "[S",
        _ => "[B",
    }
}

/// Reads input `i`'s data array after checking its class against the dtype.
fn read_buf(env: &mut JNIEnv, a: JObject, dtype: DType, i: usize) -> jni::errors::Result<Result<Buf, String>> {
    let class = array_class(dtype);
    if a.is_null() || !env.is_instance_of(&a, class)? {
        return Ok(Err(format!("data[{i}] must be a non-null {class} array for dtype {dtype}")));
    }
    macro_rules! read {
        ($arr:ty, $get:ident, $t:ty, $variant:ident) => {{
            let a = <$arr>::from(a);
            let mut v = vec![<$t>::default(); env.get_array_length(&a)? as usize];
            env.$get(&a, 0, &mut v)?;
            Buf::$variant(v)
        }};
    }
    Ok(Ok(match class {
        "[F" => read!(JFloatArray, get_float_array_region, f32, F32),
        "[D" => read!(JDoubleArray, get_double_array_region, f64, F64),
        "[J" => read!(JLongArray, get_long_array_region, i64, I64),
        "[I" => read!(JIntArray, get_int_array_region, i32, I32),
        "[S" => read!(JShortArray, get_short_array_region, i16, I16),
        _ => read!(JByteArray, get_byte_array_region, i8, I8),
    }))
}

/// One output as a new Java array of [`array_class`]'s type.
///
/// # Safety
/// `t` comes from `alembic_outputs_get` on live outputs.
unsafe fn output_array<'l>(env: &mut JNIEnv<'l>, t: &AlembicTensor, dtype: DType) -> jni::errors::Result<JObject<'l>> {
    macro_rules! write {
        ($new:ident, $set:ident, $t:ty) => {{
            let a = env.$new(t.len as i32)?;
            let v: &[$t] = if t.len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(t.data.cast(), t.len) } };
            env.$set(&a, 0, v)?;
            JObject::from(a)
        }};
    }
    Ok(match array_class(dtype) {
        "[F" => write!(new_float_array, set_float_array_region, f32),
        "[D" => write!(new_double_array, set_double_array_region, f64),
        "[J" => write!(new_long_array, set_long_array_region, i64),
        "[I" => write!(new_int_array, set_int_array_region, i32),
        "[S" => write!(new_short_array, set_short_array_region, i16),
        _ => write!(new_byte_array, set_byte_array_region, i8),
    })
}

fn fail(code: AlembicStatus, msg: &str) -> jni::errors::Result<jint> {
    set_last_error(msg);
    Ok(code as jint)
}

/// `count[0]` gets the number of inputs (`outputs` false) or outputs.
#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_sessionIoCount<'l>(
    env: JNIEnv<'l>,
    _: JClass<'l>,
    session: jlong,
    outputs: jboolean,
    count: JIntArray<'l>,
) -> jint {
    shim(|| {
        let s = session as *const AlembicSession;
        let mut n = 0usize;
        let code = unsafe {
            if outputs != 0 {
                alembic_session_output_count(s, &mut n)
            } else {
                alembic_session_input_count(s, &mut n)
            }
        };
        if code == 0 && !count.is_null() && env.get_array_length(&count)? > 0 {
            env.set_int_array_region(&count, 0, &[n as i32])?;
        }
        Ok(code)
    })
}

/// Input or output `index`: `name[0]`, `dtype[0]` (an AlembicDType code, 0 when unknown) and
/// `shape[0]` (-1 for symbolic dimensions; null when not even the rank is known).
#[no_mangle]
pub extern "system" fn Java_dev_alembic_NativeLib_sessionIoInfo<'l>(
    env: JNIEnv<'l>,
    _: JClass<'l>,
    session: jlong,
    outputs: jboolean,
    index: jint,
    name: JObjectArray<'l>,
    dtype: JIntArray<'l>,
    shape: JObjectArray<'l>,
) -> jint {
    shim(|| {
        if index < 0 {
            return fail(AlembicStatus::InvalidArgument, &format!("index {index} is negative"));
        }
        if name.is_null() || dtype.is_null() || shape.is_null() {
            return fail(AlembicStatus::NullArgument, "name, dtype and shape arrays must not be null");
        }
        let s = session as *const AlembicSession;
        let mut t = std::mem::MaybeUninit::<AlembicTensor>::uninit();
        let code = unsafe {
            if outputs != 0 {
                alembic_session_output_info(s, index as usize, t.as_mut_ptr())
            } else {
                alembic_session_input_info(s, index as usize, t.as_mut_ptr())
            }
        };
        if code != 0 {
            return Ok(code);
        }
        let t = unsafe { t.assume_init() };
        let n = env.new_string(unsafe { CStr::from_ptr(t.name) }.to_string_lossy())?;
        env.set_object_array_element(&name, 0, n)?;
        env.set_int_array_region(&dtype, 0, &[t.dtype])?;
        let dims = if t.rank == ALEMBIC_RANK_UNKNOWN {
            JObject::null()
        } else {
            let d = env.new_long_array(t.rank as i32)?;
            if t.rank > 0 {
                env.set_long_array_region(&d, 0, unsafe { std::slice::from_raw_parts(t.shape, t.rank) })?;
            }
            JObject::from(d)
        };
        env.set_object_array_element(&shape, 0, dims)?;
        Ok(0)
    })
}

/// Runs with several inputs (parallel arrays `names`, `dtypes`, `shapes`, `data`, the data of
/// [`array_class`]'s type); on success `result` gets `String[]` names, `int[]` dtypes, `long[][]`
/// shapes and `Object[]` data of every output.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_dev_alembic_NativeLib_sessionRunMany<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    session: jlong,
    names: JObjectArray<'l>,
    dtypes: JIntArray<'l>,
    shapes: JObjectArray<'l>,
    data: JObjectArray<'l>,
    result: JObjectArray<'l>,
) -> jint {
    shim(|| {
        if names.is_null() || dtypes.is_null() || shapes.is_null() || data.is_null() || result.is_null() {
            return fail(AlembicStatus::NullArgument, "names, dtypes, shapes, data and result must not be null");
        }
        let n = env.get_array_length(&names)?;
        let lens = [env.get_array_length(&dtypes)?, env.get_array_length(&shapes)?, env.get_array_length(&data)?];
        if lens.iter().any(|&l| l != n) {
            let m =
                format!("names, dtypes, shapes and data differ in length ({n}, {}, {}, {})", lens[0], lens[1], lens[2]);
            return fail(AlembicStatus::InvalidArgument, &m);
        }
        if env.get_array_length(&result)? < 4 {
            return fail(AlembicStatus::InvalidArgument, "result must have room for 4 elements");
        }
        let mut codes = vec![0i32; n as usize];
        env.get_int_array_region(&dtypes, 0, &mut codes)?;
        let (mut cnames, mut cdims, mut bufs) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let name = JString::from(env.get_object_array_element(&names, i)?);
            cnames.push(c_string(&mut env, &name)?);
            let dims = JLongArray::from(env.get_object_array_element(&shapes, i)?);
            if dims.is_null() {
                return fail(AlembicStatus::NullArgument, &format!("shapes[{i}] is null"));
            }
            cdims.push(longs(&mut env, &dims)?);
            let Some(dtype) = DType::from_onnx(codes[i as usize]) else {
                let m = format!("input {i}: unknown dtype code {}", codes[i as usize]);
                return fail(AlembicStatus::InvalidArgument, &m);
            };
            let a = env.get_object_array_element(&data, i)?;
            match read_buf(&mut env, a, dtype, i as usize)? {
                Ok(b) => bufs.push(b),
                Err(m) => return fail(AlembicStatus::InvalidArgument, &m),
            }
        }
        let inputs: Vec<AlembicTensor> = (0..n as usize)
            .map(|i| {
                let (data, len) = bufs[i].raw();
                let dims = &cdims[i];
                AlembicTensor {
                    name: ptr(&cnames[i]),
                    dtype: codes[i],
                    shape: dims.as_ptr(),
                    rank: dims.len(),
                    data,
                    len,
                }
            })
            .collect();
        let mut outs: *mut AlembicOutputs = std::ptr::null_mut();
        let code =
            unsafe { alembic_session_run(session as *const AlembicSession, inputs.as_ptr(), inputs.len(), &mut outs) };
        if code != 0 {
            return Ok(code);
        }
        // Copy out, then free the outputs whatever happens on the Java side.
        let copied = (|| -> jni::errors::Result<jint> {
            let mut count = 0usize;
            unsafe { alembic_outputs_count(outs, &mut count) };
            let out_names = env.new_object_array(count as i32, "java/lang/String", JObject::null())?;
            let out_types = env.new_int_array(count as i32)?;
            let out_shapes = env.new_object_array(count as i32, "[J", JObject::null())?;
            let out_data = env.new_object_array(count as i32, "java/lang/Object", JObject::null())?;
            for i in 0..count {
                let mut t = std::mem::MaybeUninit::<AlembicTensor>::uninit();
                let code = unsafe { alembic_outputs_get(outs, i, t.as_mut_ptr()) };
                if code != 0 {
                    return Ok(code);
                }
                let t = unsafe { t.assume_init() };
                let dtype = DType::from_onnx(t.dtype).expect("outputs carry known dtypes");
                let name = env.new_string(unsafe { CStr::from_ptr(t.name) }.to_string_lossy())?;
                env.set_object_array_element(&out_names, i as i32, name)?;
                env.set_int_array_region(&out_types, i as i32, &[t.dtype])?;
                let dims = env.new_long_array(t.rank as i32)?;
                if t.rank > 0 {
                    env.set_long_array_region(&dims, 0, unsafe { std::slice::from_raw_parts(t.shape, t.rank) })?;
                }
                env.set_object_array_element(&out_shapes, i as i32, dims)?;
                let arr = unsafe { output_array(&mut env, &t, dtype) }?;
                env.set_object_array_element(&out_data, i as i32, arr)?;
            }
            env.set_object_array_element(&result, 0, out_names)?;
            env.set_object_array_element(&result, 1, out_types)?;
            env.set_object_array_element(&result, 2, out_shapes)?;
            env.set_object_array_element(&result, 3, out_data)?;
            Ok(0)
        })();
        unsafe { alembic_outputs_free(outs) };
        copied
    })
}
