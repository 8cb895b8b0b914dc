//! ONNX protobuf messages (ModelProto, GraphProto, NodeProto, TensorProto, ...).
//!
//! `onnx.rs` is prost-build's output for `onnx.proto3` (ONNX IR, up to FLOAT4E2M1), taken
//! verbatim from tract-onnx 0.23.9 (MIT OR Apache-2.0), so that import and export do not need
//! tract's engine: a lean embedded build links only `prost`. Regenerate with prost-build 0.14
//! from `onnx.proto3` beside it if the ONNX schema grows.
//!
//! One hand edit: `TensorProto.raw_data` is a `bytes::Bytes` (`#[prost(bytes = "bytes")]`,
//! i.e. prost-build's `.bytes(["onnx.TensorProto.raw_data"])`), so that decoding from the
//! memory-mapped file slices the map instead of copying every weight. Keep it when regenerating.

#![allow(clippy::all, missing_docs, rustdoc::all)]

include!("onnx.rs");
