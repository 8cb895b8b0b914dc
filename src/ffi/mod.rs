//! C ABI (feature `ffi`): opaque handles, integer status codes and a per-thread error message,
//! declared in `include/alembic.h`. Built as a `cdylib`/`staticlib` by the `ffi/` workspace
//! member (see docs/embedding.md for why it is a separate crate).
//!
//! Rules every entry point follows, so a C, Kotlin or Swift caller can never take the process
//! down through us:
//! - every pointer is checked for null and every length against the data it describes before
//!   anything is read or written;
//! - the body runs under `catch_unwind`: a panic becomes `ALEMBIC_ERR_PANIC` plus a message;
//! - failures return a non-zero [`AlembicStatus`] and set the calling thread's message, read
//!   with [`alembic_last_error`]; success clears it.

mod distill;
mod io;
#[cfg(feature = "jni")]
mod jni;
mod run;

pub use distill::*;
pub use io::*;
pub use run::*;

use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Status codes returned by every fallible entry point (`AlembicStatus` in the header).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlembicStatus {
    Ok = 0,
    /// A required pointer or handle was null.
    NullArgument = 1,
    /// A length, shape, rank, string or option is invalid.
    InvalidArgument = 2,
    /// The output buffer (data or shape) is too small; the needed sizes were written.
    BufferTooSmall = 3,
    /// A file could not be read or written.
    Io = 4,
    /// The model is malformed or unsupported.
    Model = 5,
    /// Run inputs do not fit the model (name, type, shape).
    Input = 6,
    /// A kernel or the trainer failed at run time.
    Runtime = 7,
    /// A backend or feature is not built in or not available on this device.
    Unavailable = 8,
    /// Refinement was cancelled (flag or callback); nothing was written.
    Cancelled = 9,
    /// A bug: Alembic panicked. The process is still usable; the handle may not be.
    Panic = 10,
}

impl AlembicStatus {
    /// Every code with its C name, for the header check.
    pub const ALL: [(AlembicStatus, &'static str); 11] = [
        (AlembicStatus::Ok, "ALEMBIC_OK"),
        (AlembicStatus::NullArgument, "ALEMBIC_ERR_NULL_ARGUMENT"),
        (AlembicStatus::InvalidArgument, "ALEMBIC_ERR_INVALID_ARGUMENT"),
        (AlembicStatus::BufferTooSmall, "ALEMBIC_ERR_BUFFER_TOO_SMALL"),
        (AlembicStatus::Io, "ALEMBIC_ERR_IO"),
        (AlembicStatus::Model, "ALEMBIC_ERR_MODEL"),
        (AlembicStatus::Input, "ALEMBIC_ERR_INPUT"),
        (AlembicStatus::Runtime, "ALEMBIC_ERR_RUNTIME"),
        (AlembicStatus::Unavailable, "ALEMBIC_ERR_UNAVAILABLE"),
        (AlembicStatus::Cancelled, "ALEMBIC_ERR_CANCELLED"),
        (AlembicStatus::Panic, "ALEMBIC_ERR_PANIC"),
    ];
}

/// A failure on its way to the C caller.
#[derive(Debug)]
pub struct FfiError {
    pub status: AlembicStatus,
    pub message: String,
}

impl FfiError {
    pub fn new(status: AlembicStatus, message: impl Into<String>) -> FfiError {
        FfiError { status, message: message.into() }
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> FfiError {
        #[allow(unreachable_patterns)] // `Error` is non_exhaustive: new variants map to Runtime
        let status = match &e {
            Error::Io { .. } | Error::TensorFile { .. } => AlembicStatus::Io,
            Error::Import { .. } | Error::UnsupportedOp { .. } | Error::Shape { .. } => AlembicStatus::Model,
            Error::Input { .. } => AlembicStatus::Input,
            Error::Unavailable(_) => AlembicStatus::Unavailable,
            _ => AlembicStatus::Runtime,
        };
        FfiError::new(status, e.to_string())
    }
}

pub type FfiResult<T> = Result<T, FfiError>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    // Interior NULs would truncate the C string silently; make them visible instead.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs an entry point's body: panics are caught, errors recorded for `alembic_last_error`.
pub(crate) fn guard(f: impl FnOnce() -> FfiResult<()>) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic payload".into());
        Err(FfiError::new(AlembicStatus::Panic, format!("internal error (panic): {what}")))
    });
    match outcome {
        Ok(()) => {
            // Cleared only when set: a success allocates nothing (`alembic_session_run_f32`
            // in a loop).
            LAST_ERROR.with(|e| {
                if !e.borrow().as_bytes().is_empty() {
                    set_last_error("");
                }
            });
            AlembicStatus::Ok as i32
        }
        Err(e) => {
            set_last_error(&e.message);
            e.status as i32
        }
    }
}

/// A required pointer, or `ALEMBIC_ERR_NULL_ARGUMENT` naming it.
pub(crate) fn non_null<T>(p: *const T, what: &str) -> FfiResult<*const T> {
    if p.is_null() {
        Err(FfiError::new(AlembicStatus::NullArgument, format!("{what} is null")))
    } else {
        Ok(p)
    }
}

/// A required NUL-terminated UTF-8 string.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that outlives the returned borrow.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    non_null(p, what)?;
    // SAFETY: non-null, and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| FfiError::new(AlembicStatus::InvalidArgument, format!("{what} is not valid UTF-8")))
}

/// An optional string: null is `None`.
///
/// # Safety
/// As [`c_str`].
pub(crate) unsafe fn opt_c_str<'a>(p: *const c_char, what: &str) -> FfiResult<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        unsafe { c_str(p, what) }.map(Some)
    }
}

/// `len` elements at `p`; null is allowed only for an empty slice.
///
/// # Safety
/// A non-null `p` points to `len` initialised, aligned `T`s valid for the borrow.
pub(crate) unsafe fn slice<'a, T>(p: *const T, len: usize, what: &str) -> FfiResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    non_null(p, what)?;
    if len.checked_mul(size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(FfiError::new(AlembicStatus::InvalidArgument, format!("{what}: length {len} is too large")));
    }
    // SAFETY: non-null, size checked, validity per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A tensor shape from C: every dimension non-negative, the element count matching `len`.
pub(crate) fn shape_for(dims: &[i64], len: usize, what: &str) -> FfiResult<crate::tensor::Dims> {
    let bad = |m: String| FfiError::new(AlembicStatus::InvalidArgument, format!("{what}: {m}"));
    let mut shape = crate::tensor::Dims::new();
    let mut count = 1usize;
    for &d in dims {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension in shape {dims:?}")))?;
        count = count.checked_mul(d).ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
        shape.push(d);
    }
    if count != len {
        return Err(bad(format!("shape {dims:?} holds {count} elements but the buffer length is {len}")));
    }
    Ok(shape)
}

/// The message of the calling thread's last failed call ("" after a success). The pointer stays
/// valid until the next `alembic_*` call on the same thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn alembic_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The library version ("0.1.0"), a static string.
#[no_mangle]
pub extern "C" fn alembic_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> String {
        unsafe { CStr::from_ptr(alembic_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn panics_become_a_status_and_success_clears_the_message() {
        let code = guard(|| panic!("boom"));
        assert_eq!(code, AlembicStatus::Panic as i32);
        assert!(message().contains("boom"), "{}", message());
        assert_eq!(guard(|| Ok(())), 0);
        assert_eq!(message(), "");
    }

    #[test]
    fn shapes_must_match_lengths() {
        assert_eq!(shape_for(&[2, 3], 6, "x").unwrap().as_slice(), &[2, 3]);
        assert!(shape_for(&[2, -3], 6, "x").is_err());
        assert!(shape_for(&[2, 3], 5, "x").is_err());
        assert!(shape_for(&[i64::MAX, i64::MAX], 0, "x").is_err());
        assert!(unsafe { slice::<f32>(std::ptr::null(), 3, "data") }.is_err());
        assert!(unsafe { slice::<f32>(std::ptr::null(), 0, "data") }.unwrap().is_empty());
    }
}
