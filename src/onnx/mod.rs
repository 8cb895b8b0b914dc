//! ONNX import (protobuf via tract-onnx's generated types) into Alembic's IR.

pub mod import;
pub mod node;
pub mod ops;
pub mod registry;
pub mod tensor_proto;

pub use import::{decode_model_proto, import_model, read_model_proto};
pub use registry::registry;
