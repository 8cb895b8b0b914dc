//! ONNX import (protobuf messages in `pb`, decoded with prost) into Alembic's IR.

pub mod import;
pub mod node;
pub mod ops;
pub mod pb;
pub mod registry;
pub mod tensor_proto;

pub use import::{decode_model_bytes, decode_model_proto, import_model, map_file, read_model_proto};
pub use registry::registry;
