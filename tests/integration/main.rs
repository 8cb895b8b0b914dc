//! Alembic's integration tests, in one binary to keep link time down.

mod alloc;
mod bench;
mod cache;
mod cli;
mod common;
mod conformance;
mod distill;
#[cfg(feature = "ffi")]
mod ffi;
mod fixtures;
#[cfg(feature = "wgpu")]
mod gpu;
#[cfg(feature = "wgpu")]
mod gpu_limits;
#[cfg(feature = "wgpu")]
mod gpu_ops;
#[cfg(feature = "wgpu")]
mod gpu_plan;
mod grad;
mod mobilenet;
mod parity;
mod qdq_int4;
mod quant;
#[cfg(feature = "wgpu")]
mod quant_gpu;
mod readme;
mod zerocopy;
