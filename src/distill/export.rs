//! Writes the refined student as ONNX: the original graph, node for node, with the trained
//! initializers replaced (stored inline; LoRA adapters merged into their weights), written
//! atomically.

use super::student::Student;
use crate::error::{Error, Result};
use crate::onnx::tensor_proto::encode;
use crate::tensor::npy::write_atomic;
use prost::Message;
use std::path::Path;

pub fn export_onnx(s: &Student, path: &Path) -> Result<()> {
    let mut proto = s.proto.clone();
    let graph = proto.graph.as_mut().ok_or_else(|| Error::import("student", "no graph"))?;
    // LoRA adapters are merged (W + s·B·A) into their base weights: the graph stays as it was.
    for (name, tensor) in s.merged_weights() {
        let init = graph.initializer.iter_mut().find(|i| i.name == name).ok_or_else(|| {
            Error::import("export", format!("parameter '{name}' is not an initializer of the original model"))
        })?;
        *init = encode(&tensor, &name);
    }
    proto.producer_name = "alembic".into();
    proto.producer_version = env!("CARGO_PKG_VERSION").into();
    write_atomic(path, &proto.encode_to_vec())
}
