//! Writes the refined student as ONNX: the original graph, node for node, with the trained
//! initializers replaced (stored inline), written atomically.

use super::student::Student;
use crate::error::{Error, Result};
use crate::onnx::tensor_proto::encode;
use crate::tensor::npy::write_atomic;
use prost::Message;
use std::path::Path;

pub fn export_onnx(s: &Student, path: &Path) -> Result<()> {
    let mut proto = s.proto.clone();
    let graph = proto.graph.as_mut().ok_or_else(|| Error::import("student", "no graph"))?;
    for p in &s.params {
        let init = graph.initializer.iter_mut().find(|i| i.name == p.name).ok_or_else(|| {
            Error::import("export", format!("parameter '{}' is not an initializer of the original model", p.name))
        })?;
        *init = encode(&p.tensor, &p.name);
    }
    proto.producer_name = "alembic".into();
    proto.producer_version = env!("CARGO_PKG_VERSION").into();
    write_atomic(path, &proto.encode_to_vec())
}
