//! ONNX file -> IR graph: decode the protobuf, resolve names, map each node through the registry.

use super::node::NodeCtx;
use super::registry::registry;
use super::tensor_proto;
use crate::error::{Error, Result};
use crate::ir::{Graph, Node, Value, ValueId};
use crate::onnx::pb::{self, ModelProto, NodeProto, ValueInfoProto};
use crate::tensor::{onnx_type_name, DType, Dim, Shape};
use bytes::Bytes;
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// Reads and decodes an ONNX file, memory-mapped: every initializer's `raw_data` is a slice of
/// the map (no copy), and the tensors and packed weights built from it keep borrowing it, so the
/// map lives as long as they do.
pub fn read_model_proto(path: &Path) -> Result<ModelProto> {
    decode_model_bytes(map_file(path)?, &path.display().to_string())
}

/// The whole file, memory-mapped, as a shared buffer.
pub fn map_file(path: &Path) -> Result<Bytes> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only. The file must not be modified while anything borrows the
    // map (the model's weights do), as with ONNX Runtime's and tract's mapped loads: truncation
    // faults on access, in-place writes change the weights. `alembic quantize` and the exporters
    // replace files atomically (temp + rename), which leaves existing maps intact.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Bytes::from_owner(map))
}

/// Decodes a model from bytes, copying initializer data out of them (see [`decode_model_bytes`]
/// to borrow instead).
pub fn decode_model_proto(bytes: &[u8], what: &str) -> Result<ModelProto> {
    decode_model(bytes, what)
}

/// Decodes a model from a shared buffer; initializer data stays in it (sliced, not copied).
pub fn decode_model_bytes(bytes: Bytes, what: &str) -> Result<ModelProto> {
    decode_model(bytes, what)
}

fn decode_model(buf: impl bytes::Buf, what: &str) -> Result<ModelProto> {
    let model = ModelProto::decode(buf)
        .map_err(|e| Error::import(what, format!("not a valid ONNX protobuf (truncated or corrupt?): {e}")))?;
    if model.graph.is_none() {
        return Err(Error::import(what, "ONNX model has no graph"));
    }
    Ok(model)
}

/// Opset of the default domain.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version)
}

/// Builds the IR graph of a decoded model. `base_dir` resolves external data.
pub fn import_model(model: &ModelProto, base_dir: Option<&Path>, what: &str) -> Result<Graph> {
    let opset = default_opset(model).ok_or_else(|| Error::import(what, "model imports no default-domain opset"))?;
    let domain_opset = |d: &str| -> i64 {
        if d.is_empty() || d == "ai.onnx" {
            return opset;
        }
        model.opset_import.iter().find(|o| o.domain == d).map(|o| o.version).unwrap_or(1)
    };
    let g = model.graph.as_ref().expect("checked on decode");
    let mut graph = Graph { opset, ..Default::default() };
    let mut names: HashMap<String, ValueId> = HashMap::new();

    for init in &g.initializer {
        let t = tensor_proto::decode(init, base_dir, &format!("{what}: initializer '{}'", init.name))?;
        let id = graph.add_constant(init.name.clone(), t);
        names.insert(init.name.clone(), id);
    }
    if !g.sparse_initializer.is_empty() {
        return Err(Error::import(what, "sparse initializers are not supported"));
    }
    for vi in &g.input {
        if names.contains_key(&vi.name) {
            continue; // an initializer listed as input (IR < 4): a constant here
        }
        let (dtype, shape) = declared_type(vi, what)?;
        let mut v = Value::new(vi.name.clone());
        v.dtype =
            Some(dtype.ok_or_else(|| Error::import(what, format!("graph input '{}' has no tensor type", vi.name)))?);
        v.shape = shape;
        let id = graph.add_value(v);
        names.insert(vi.name.clone(), id);
        graph.inputs.push(id);
    }

    for node in topo_sorted(&g.node, &names, what)? {
        let mut inputs = Vec::with_capacity(node.input.len());
        for name in &node.input {
            if name.is_empty() {
                inputs.push(None);
            } else {
                let id = *names.get(name).ok_or_else(|| {
                    Error::import(
                        format!("node '{}' ({})", node.name, node.op_type),
                        format!("input '{name}' is produced by no node"),
                    )
                })?;
                inputs.push(Some(id));
            }
        }
        let parser = registry().get(&node.domain, &node.op_type).ok_or_else(|| Error::UnsupportedOp {
            op_type: node.op_type.clone(),
            domain: if node.domain.is_empty() { String::new() } else { format!("{}.", node.domain) },
            node: node.name.clone(),
            opset: domain_opset(&node.domain),
        })?;
        let mut ctx = NodeCtx { node, opset: domain_opset(&node.domain), graph: &mut graph, inputs };
        let op = parser(&mut ctx)?;
        let inputs = std::mem::take(&mut ctx.inputs);
        let mut outputs = Vec::with_capacity(node.output.len());
        for (k, name) in node.output.iter().enumerate() {
            let name = if name.is_empty() { format!("{}::unused{k}", node.name) } else { name.clone() };
            if names.contains_key(&name) {
                return Err(Error::import(
                    format!("node '{}' ({})", node.name, node.op_type),
                    format!("output '{name}' is already defined"),
                ));
            }
            let id = graph.add_value(Value::new(name.clone()));
            names.insert(name, id);
            outputs.push(id);
        }
        let name =
            if node.name.is_empty() { format!("{}_{}", node.op_type, graph.nodes.len()) } else { node.name.clone() };
        graph.nodes.push(Node { name, op, inputs, outputs });
    }

    for vi in &g.output {
        let id = *names
            .get(&vi.name)
            .ok_or_else(|| Error::import(what, format!("graph output '{}' is produced by no node", vi.name)))?;
        let (dtype, shape) = declared_type(vi, what)?;
        let v = &mut graph.values[id];
        if v.dtype.is_none() {
            v.dtype = dtype;
        }
        if v.shape.is_none() {
            v.shape = shape;
        }
        graph.outputs.push(id);
    }
    // Declared intermediate shapes are hints only: inference overrides them, but keeping them
    // helps where inference cannot see through (data-dependent shapes).
    for vi in &g.value_info {
        if let Some(&id) = names.get(&vi.name) {
            if let Ok((dtype, shape)) = declared_type(vi, what) {
                let v = &mut graph.values[id];
                v.dtype = v.dtype.or(dtype);
                if v.shape.is_none() {
                    v.shape = shape;
                }
            }
        }
    }
    Ok(graph)
}

/// The element type and shape an ValueInfoProto declares.
fn declared_type(vi: &ValueInfoProto, what: &str) -> Result<(Option<DType>, Option<Shape>)> {
    let Some(pb::type_proto::Value::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Ok((None, None));
    };
    let dtype = if tt.elem_type == 0 {
        None
    } else {
        Some(DType::from_onnx(tt.elem_type).ok_or_else(|| {
            Error::import(
                what,
                format!("'{}' has type {}, which is not supported", vi.name, onnx_type_name(tt.elem_type)),
            )
        })?)
    };
    let shape = tt.shape.as_ref().map(|s| {
        Shape(
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                    _ => Dim::Unknown,
                })
                .collect(),
        )
    });
    Ok((dtype, shape))
}

/// Nodes in an order where every input is defined before use (exporters usually comply; some
/// do not).
fn topo_sorted<'a>(nodes: &'a [NodeProto], known: &HashMap<String, ValueId>, what: &str) -> Result<Vec<&'a NodeProto>> {
    let mut defined: std::collections::HashSet<&str> = known.keys().map(|s| s.as_str()).collect();
    let mut pending: Vec<&NodeProto> = nodes.iter().collect();
    let mut out = Vec::with_capacity(nodes.len());
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for n in pending {
            if n.input.iter().all(|i| i.is_empty() || defined.contains(i.as_str())) {
                for o in &n.output {
                    defined.insert(o.as_str());
                }
                out.push(n);
            } else {
                rest.push(n);
            }
        }
        if rest.len() == before {
            let n = rest[0];
            let missing =
                n.input.iter().find(|i| !i.is_empty() && !defined.contains(i.as_str())).cloned().unwrap_or_default();
            return Err(Error::import(
                format!("{what}: node '{}' ({})", n.name, n.op_type),
                format!("input '{missing}' is produced by no node (or by a cycle)"),
            ));
        }
        pending = rest;
    }
    Ok(out)
}
