//! Links Alembic's C ABI (`alembic::ffi`, declared in include/alembic.h) into a cdylib and a
//! staticlib. The `#[no_mangle]` functions live in the main crate; re-exporting them here makes
//! them part of this crate's exported symbol set.

pub use alembic::ffi::*;
