//! Alembic's integration tests, in one binary to keep link time down.

mod cli;
mod common;
mod conformance;
mod quant;
mod readme;
#[cfg(feature = "wgpu")]
mod gpu;
