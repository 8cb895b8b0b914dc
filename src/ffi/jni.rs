//! JNI bindings (feature `jni`) for `dev.alembic.NativeLib` (android/src/main/java): thin shims
//! over the C ABI that return its status codes; the Kotlin API turns non-zero codes plus
//! `lastError()` into `AlembicException`. Handles travel to Java as `long`.
//!
//! Nothing may unwind into the JVM: every shim runs under `catch_unwind`, and the progress
//! callback swallows Java exceptions' unwinding by cancelling (the exception stays pending and
//! is thrown in Java when the native call returns).

use super::{
    alembic_distill, alembic_last_error, alembic_model_free, alembic_model_load, alembic_session_free,
    alembic_session_new, alembic_session_run_f32, alembic_version, AlembicModel, AlembicSession, AlembicStatus,
};
use jni::objects::{JClass, JFloatArray, JLongArray, JObject, JObjectArray, JString, JValue};
use jni::sys::{jint, jlong, jstring};
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
