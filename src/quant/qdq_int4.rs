//! The int4 form of QDQ export (docs/quantized-format.md, "int4"): Alembic's int4 scheme
//! written as standard ONNX opset-21 blocked quantization, so ONNX Runtime runs the file and
//! Alembic's importer folds it back onto QData::Int4 bit for bit:
//!
//! ```text
//! <name>_quantized (INT4, two per byte) ─┐
//! <name>_scale (FLOAT16, one per 32 k) ──┴─ DequantizeLinear(axis = K, block_size = 32)
//!     ─> <name>_f16 ─ Cast(to = FLOAT) ─> <name>            (MatMul / Gemm B)
//!     ─> <name>_f16 ─ Cast(to = FLOAT) ─> <name>_2d ─ Reshape(<name>_shape) ─> <name>   (Conv W)
//! ```
//!
//! Scales stay f16 (the scheme's own, 2 bytes per 32 weights), so DequantizeLinear yields f16
//! and a Cast brings the weight back to f32. Conv weights are grouped along the flattened
//! `c_in/group * prod(kernel)`, which no single ONNX block axis expresses, hence the 2-D
//! initializer and the Reshape.

use super::scheme::{quantize_int4, INT4_GROUP};
use crate::error::{Error, Result};
use crate::onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::onnx::tensor_proto::{encode, encode_4bit};
use crate::tensor::Tensor;

/// Opset that introduced INT4 and blocked DequantizeLinear, and the IR version that carries INT4.
pub const INT4_OPSET: i64 = 21;
const INT4_IR_VERSION: i64 = 10;

/// Default-domain ops whose meaning changed between opset 13 and 21 for inputs and attributes
/// an older model already uses, with the opset of the change: a model below that opset is
/// refused rather than silently reinterpreted. (Checked against onnx 1.21's schema history;
/// every other op up to 21 only gained types or optional attributes/inputs with defaults
/// equal to the old behaviour.)
const CHANGED_BY_21: &[(&str, i64, &str)] = &[
    ("ReduceL1", 18, "axes moved from attribute to input"),
    ("ReduceL2", 18, "axes moved from attribute to input"),
    ("ReduceLogSum", 18, "axes moved from attribute to input"),
    ("ReduceLogSumExp", 18, "axes moved from attribute to input"),
    ("ReduceMax", 18, "axes moved from attribute to input"),
    ("ReduceMean", 18, "axes moved from attribute to input"),
    ("ReduceMin", 18, "axes moved from attribute to input"),
    ("ReduceProd", 18, "axes moved from attribute to input"),
    ("ReduceSumSquare", 18, "axes moved from attribute to input"),
    ("Split", 18, "an equal split needs num_outputs"),
    ("DFT", 20, "axis moved from attribute to input"),
    ("GridSample", 20, "mode values were renamed"),
    ("GroupNormalization", 21, "scale and bias became per channel"),
];

/// Raises the default-domain opset to 21 (and the IR version to 10) when it is lower, after
/// checking that no op in the graph (subgraphs included) changes meaning on the way. Returns
/// the opset it raised from, if it did.
pub fn require_opset_21(proto: &mut ModelProto, what: &str) -> Result<Option<i64>> {
    let Some(imp) = proto.opset_import.iter_mut().find(|o| o.domain.is_empty() || o.domain == "ai.onnx") else {
        return Err(Error::import(what, "model imports no default-domain opset"));
    };
    let from = imp.version;
    // INT4 tensors need IR version 10 whatever the opset.
    proto.ir_version = proto.ir_version.max(INT4_IR_VERSION);
    if from >= INT4_OPSET {
        return Ok(None);
    }
    if let Some(g) = &proto.graph {
        let mut ops = Vec::new();
        op_types(g, &mut ops);
        for &(op, since, why) in CHANGED_BY_21 {
            if from < since && ops.iter().any(|o| o == op) {
                return Err(Error::import(
                    what,
                    format!(
                        "int4 QDQ needs opset {INT4_OPSET} (INT4, blocked DequantizeLinear) but {op} changed meaning at opset {since} ({why}); re-export the model at opset >= {INT4_OPSET}"
                    ),
                ));
            }
        }
    }
    set_default_opset(proto, INT4_OPSET);
    Ok(Some(from))
}

fn set_default_opset(proto: &mut ModelProto, version: i64) {
    for o in proto.opset_import.iter_mut().filter(|o| o.domain.is_empty() || o.domain == "ai.onnx") {
        o.version = version;
    }
}

/// Default-domain op types of `g` and its subgraphs.
fn op_types(g: &GraphProto, out: &mut Vec<String>) {
    for n in &g.node {
        if n.domain.is_empty() || n.domain == "ai.onnx" {
            out.push(n.op_type.clone());
        }
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                op_types(sub, out);
            }
        }
    }
}

/// What replaces one f32 weight initializer: new initializers (the first replaces the
/// original in place) and the nodes that rebuild the f32 weight under its old name.
pub struct Int4Weight {
    pub initializers: Vec<TensorProto>,
    pub nodes: Vec<NodeProto>,
    /// Bytes of packed values and scales.
    pub bytes: usize,
}

/// Quantizes weight `name` of `shape` (row-major `w`) with Alembic's int4 scheme. `out_axis`
/// is its output-channel axis (0: `[n, k..]`, Gemm B under transB and Conv W; 1: `[k, n]`);
/// `conv` marks a Conv weight (rank >= 3), stored 2-D and reshaped back.
pub fn quantize_weight(name: &str, w: &[f32], shape: &[usize], out_axis: i64, conv: bool) -> Int4Weight {
    let (n, k) = if out_axis == 0 { (shape[0], w.len() / shape[0]) } else { (shape[1], shape[0]) };
    let nk = if out_axis == 0 { w.to_vec() } else { transpose(w, shape[0], shape[1]) };
    let (packed, scales) = quantize_int4(&nk, n, k);
    let groups = k.div_ceil(INT4_GROUP);
    // One i8 per value, [n, k], from the scheme's own packing (so the file holds exactly
    // what the kernels would).
    let mut q = Vec::with_capacity(n * k);
    for r in 0..n {
        let words = &packed[r * groups * 4..(r + 1) * groups * 4];
        q.extend((0..k).map(|j| (((words[j / 8] >> (4 * (j % 8))) as u8 & 0xF) << 4) as i8 >> 4));
    }
    // Block axis = the K axis: [n, k] blocks along 1 (scales [n, groups]); [k, n] along 0.
    let (q, qshape, s, sshape, block_axis) = if out_axis == 0 {
        (q, vec![n, k], scales, vec![n, groups], 1)
    } else {
        (transpose(&q, n, k), vec![k, n], transpose(&scales, n, groups), vec![groups, n], 0)
    };
    let (qn, sn, hn) = (format!("{name}_quantized"), format!("{name}_scale"), format!("{name}_f16"));
    let values = Tensor::from_vec(qshape, q).expect("n * k values");
    let mut initializers = vec![
        encode_4bit(&values, &qn).expect("int4 scheme values are in [-7, 7]"),
        encode(&Tensor::from_vec(sshape, s).expect("n * groups scales"), &sn),
    ];
    let int = |n: &str, i: i64| AttributeProto { name: n.into(), r#type: 2, i, ..Default::default() };
    let f32_name = if conv { format!("{name}_2d") } else { name.to_string() };
    let mut nodes = vec![
        NodeProto {
            name: format!("{name}_dequantize"),
            op_type: "DequantizeLinear".into(),
            input: vec![qn, sn],
            output: vec![hn.clone()],
            attribute: vec![int("axis", block_axis), int("block_size", INT4_GROUP as i64)],
            ..Default::default()
        },
        NodeProto {
            name: format!("{name}_cast"),
            op_type: "Cast".into(),
            input: vec![hn],
            output: vec![f32_name.clone()],
            attribute: vec![int("to", 1)],
            ..Default::default()
        },
    ];
    if conv {
        let shn = format!("{name}_shape");
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        initializers.push(encode(&Tensor::from_vec(vec![dims.len()], dims).expect("rank"), &shn));
        nodes.push(NodeProto {
            name: format!("{name}_reshape"),
            op_type: "Reshape".into(),
            input: vec![f32_name, shn],
            output: vec![name.to_string()],
            ..Default::default()
        });
    }
    Int4Weight { initializers, nodes, bytes: (n * k).div_ceil(2) + n * groups * 2 }
}

/// `[r, c]` row-major to `[c, r]`.
fn transpose<T: Copy + Default>(v: &[T], r: usize, c: usize) -> Vec<T> {
    let mut out = vec![T::default(); r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::pb::{OperatorSetIdProto, TensorProto};

    fn model(opset: i64, nodes: Vec<NodeProto>) -> ModelProto {
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: "ai.onnx".into(), version: opset }],
            graph: Some(GraphProto { node: nodes, ..Default::default() }),
            ..Default::default()
        }
    }

    fn op(t: &str) -> NodeProto {
        NodeProto { op_type: t.into(), ..Default::default() }
    }

    #[test]
    fn opset_raised_only_when_no_op_changes_meaning() {
        let mut m = model(17, vec![op("Gemm"), op("Relu"), op("Conv")]);
        assert_eq!(require_opset_21(&mut m, "m").unwrap(), Some(17));
        assert_eq!((m.opset_import[0].version, m.ir_version), (21, 10));
        // Already 21 or above: left as is (IR version still at least 10 for INT4).
        let mut m = model(22, vec![op("ReduceMean")]);
        assert_eq!(require_opset_21(&mut m, "m").unwrap(), None);
        assert_eq!((m.opset_import[0].version, m.ir_version), (22, 10));
        // ReduceMean changed at 18: an opset-18 model is fine, a 17 one is refused, also when
        // the op hides in a subgraph.
        let mut m = model(18, vec![op("ReduceMean")]);
        require_opset_21(&mut m, "m").unwrap();
        let branch = GraphProto { node: vec![op("ReduceMean")], ..Default::default() };
        let attr = AttributeProto { name: "then_branch".into(), g: Some(branch), ..Default::default() };
        let mut m = model(17, vec![NodeProto { attribute: vec![attr], ..op("If") }]);
        let e = require_opset_21(&mut m, "m").unwrap_err().to_string();
        assert!(e.contains("ReduceMean changed meaning at opset 18"), "{e}");
        assert_eq!(m.opset_import[0].version, 17, "refused models are not modified");
    }

    #[test]
    fn conv_weight_becomes_2d_int4_with_reshape() {
        // [2, 1, 3, 3] weights: K = 9, one ragged block of 32 per output channel.
        let w: Vec<f32> = (0..18).map(|i| i as f32 - 9.0).collect();
        let q = quantize_weight("c", &w, &[2, 1, 3, 3], 0, true);
        let ops: Vec<&str> = q.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["DequantizeLinear", "Cast", "Reshape"]);
        let [values, scales, shape]: [TensorProto; 3] = q.initializers.try_into().unwrap();
        assert_eq!((values.data_type, values.dims.as_slice()), (22, &[2i64, 9][..]));
        assert_eq!((scales.data_type, scales.dims.as_slice()), (10, &[2i64, 1][..]));
        assert_eq!(crate::onnx::tensor_proto::decode(&shape, None, "s").unwrap().to_i64_vec().unwrap(), [2, 1, 3, 3]);
        assert_eq!(q.bytes, 9 + 2 * 2);
    }
}
