//! Alembic's integration tests, in one binary to keep link time down.

mod cli;
mod common;
mod conformance;
#[cfg(feature = "wgpu")]
mod gpu;
mod quant;
mod readme;
