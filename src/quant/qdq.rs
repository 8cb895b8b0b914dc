//! Writes a quantized model as standard QDQ ONNX (docs/quantized-format.md): each eligible
//! weight initializer (MatMul/Gemm B, Conv W) is replaced by
//!
//! * int8: an INT8 initializer `<name>_quantized` (Alembic's symmetric per-output-channel
//!   scheme, same values as [`QWeight::quantize`](super::QWeight::quantize)), an f32
//!   `<name>_scale` and `DequantizeLinear(axis = output-channel axis)` producing `<name>`;
//! * f16: a FLOAT16 initializer `<name>_f16` and `Cast(to = FLOAT)` producing `<name>`;
//! * int4: an INT4 initializer, f16 block scales and an opset-21 blocked DequantizeLinear
//!   ([`super::qdq_int4`]); the model's opset is raised to 21 where needed.
//!
//! The rest of the graph is untouched, so ONNX Runtime and tract load the file, and Alembic's
//! importer folds the pairs back into QGemm/QConv ([`crate::ir::passes::fold_qdq`]).

use super::calibrate::{act_scale, activation_ranges};
use super::scheme::quantize_int8;
use super::Precision;
use crate::error::{Error, Result};
use crate::onnx::pb::{AttributeProto, ModelProto, NodeProto};
use crate::onnx::read_model_proto;
use crate::onnx::tensor_proto::{decode, encode};
use crate::tensor::npy::write_atomic;
use crate::tensor::Tensor;
use half::f16;
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// What [`export_qdq`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QdqReport {
    /// Initializers replaced.
    pub weights: usize,
    /// Their f32 bytes before, and the bytes of their replacements (values + scales).
    pub f32_bytes: usize,
    pub quantized_bytes: usize,
    /// Activations given a static QuantizeLinear -> DequantizeLinear pair (w8a8 only).
    pub activations: usize,
    /// The default-domain opset raised to 21 from this one (int4 only; INT4 and blocked
    /// DequantizeLinear need opset 21).
    pub opset_raised_from: Option<i64>,
}

/// Reads `model`, quantizes its weights to `p` (f16, int8 or int4) and writes QDQ ONNX to `out`
/// atomically.
pub fn export_qdq(model: &Path, p: Precision, out: &Path) -> Result<QdqReport> {
    export(model, p, None, out)
}

/// Writes static w8a8 QDQ ONNX: int8 weights as [`export_qdq`], plus an int8
/// `QuantizeLinear -> DequantizeLinear` (zero point 0) on the activation input of each
/// Gemm/MatMul/Conv with an int8 weight, its scale calibrated on the samples in `data`
/// ([`super::calibrate`]). This is the form ONNX Runtime's static quantizer writes.
pub fn export_qdq_calibrated(model: &Path, data: &Path, out: &Path) -> Result<QdqReport> {
    export(model, Precision::W8a8, Some(data), out)
}

fn export(model: &Path, p: Precision, calibration: Option<&Path>, out: &Path) -> Result<QdqReport> {
    let what = model.display().to_string();
    let supported = matches!(p, Precision::F16 | Precision::Int8 | Precision::Int4)
        || (p == Precision::W8a8 && calibration.is_some());
    if !supported {
        let hint = match p {
            Precision::W8a8 => {
                " without --calibrate DATA (dynamic per-row activation scales have no standard ONNX form: give sample inputs for static scales, or write int8 and load it with precision w8a8)"
            }
            _ => "",
        };
        return Err(Error::input(
            "precision",
            format!("QDQ export supports f16, int8, int4 and calibrated w8a8, not {p}{hint}"),
        ));
    }
    let mut proto = read_model_proto(model)?;
    // Calibration runs the f32 model, as ONNX Runtime's quantizer does.
    let f32_proto = calibration.map(|_| proto.clone());
    let opset = crate::onnx::import::default_opset(&proto).unwrap_or(1);
    if p != Precision::F16 && opset < 13 {
        let why = if p == Precision::Int4 {
            "int4 export raises the opset to 21 only from opset >= 13"
        } else {
            "per-axis DequantizeLinear needs opset >= 13"
        };
        return Err(Error::import(&what, format!("opset {opset}: {why}")));
    }
    let opset_raised_from =
        if p == Precision::Int4 { super::qdq_int4::require_opset_21(&mut proto, &what)? } else { None };
    let g = proto.graph.as_mut().ok_or_else(|| Error::import(&what, "no graph"))?;
    // Output-channel axis per weight use; None marks a use that cannot take a QDQ weight.
    let mut uses: HashMap<String, Vec<Option<(i64, usize)>>> = HashMap::new();
    for node in &g.node {
        for (i, name) in node.input.iter().enumerate() {
            let trans_b = node.attribute.iter().any(|a| a.name == "transB" && a.i != 0);
            let slot = match (node.op_type.as_str(), i, node.domain.as_str()) {
                ("MatMul", 1, "") => Some((1, 2)),
                ("Gemm", 1, "") => Some((if trans_b { 0 } else { 1 }, 2)),
                ("Conv", 1, "") => Some((0, 3)),
                _ => None,
            };
            uses.entry(name.clone()).or_default().push(slot);
        }
    }
    for o in &g.output {
        uses.entry(o.name.clone()).or_default().push(None);
    }
    let base = model.parent();
    let mut report = QdqReport { opset_raised_from, ..Default::default() };
    let mut new_nodes = Vec::new();
    let mut replaced = Vec::new();
    let mut names = Vec::new();
    for init in g.initializer.iter_mut() {
        let Some(u) = uses.get(&init.name) else { continue };
        let Some(Some((axis, min_rank))) = u.first().copied() else { continue };
        if init.data_type != 1 || u.iter().any(|s| *s != Some((axis, min_rank))) {
            continue;
        }
        let t = decode(init, base, &format!("{what}: initializer {}", init.name))?;
        let shape = t.shape().to_vec();
        let rank_ok = if min_rank == 2 { shape.len() == 2 } else { shape.len() >= 3 };
        let Some(w) = t.as_slice::<f32>() else { continue };
        if !rank_ok || w.is_empty() {
            continue;
        }
        let name = init.name.clone();
        match p {
            Precision::Int8 | Precision::W8a8 => {
                // Output channels first ([n, k]), as the in-memory scheme; [k, n] is transposed.
                let (n, k) = if axis == 0 { (shape[0], w.len() / shape[0]) } else { (shape[1], shape[0]) };
                let nk = if axis == 0 { w.to_vec() } else { transpose(w, shape[0], shape[1]) };
                let (q, scales) = quantize_int8(&nk, n, k);
                let q = if axis == 0 { q } else { transpose(&q, n, k) };
                let qn = format!("{name}_quantized");
                let sn = format!("{name}_scale");
                *init = encode(&Tensor::from_vec(shape, q).expect("same length"), &qn);
                replaced.push(encode(&Tensor::from_vec(vec![n], scales).expect("n scales"), &sn));
                let attr = AttributeProto { name: "axis".into(), r#type: 2, i: axis, ..Default::default() };
                new_nodes.push(node(&format!("{name}_dequantize"), "DequantizeLinear", vec![qn, sn], &name, attr));
                report.quantized_bytes += w.len() + n * 4;
            }
            Precision::Int4 => {
                let mut q = super::qdq_int4::quantize_weight(&name, w, &shape, axis, min_rank == 3);
                *init = q.initializers.remove(0);
                replaced.append(&mut q.initializers);
                new_nodes.append(&mut q.nodes);
                report.quantized_bytes += q.bytes;
            }
            _ => {
                let h: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
                let hn = format!("{name}_f16");
                *init = encode(&Tensor::from_vec(shape, h).expect("same length"), &hn);
                let attr = AttributeProto { name: "to".into(), r#type: 2, i: 1, ..Default::default() };
                new_nodes.push(node(&format!("{name}_cast"), "Cast", vec![hn], &name, attr));
                report.quantized_bytes += w.len() * 2;
            }
        }
        report.weights += 1;
        report.f32_bytes += w.len() * 4;
        names.push(name);
    }
    // Older exporters also list initializers as graph inputs.
    g.input.retain(|i| !names.contains(&i.name));
    g.initializer.extend(replaced);
    new_nodes.append(&mut g.node);
    g.node = new_nodes;
    if let (Some(data), Some(f32_proto)) = (calibration, &f32_proto) {
        report.activations = add_activation_qdq(&mut proto, f32_proto, &names, data)?;
    }
    proto.producer_name = "alembic".into();
    proto.producer_version = env!("CARGO_PKG_VERSION").into();
    write_atomic(out, &proto.encode_to_vec())?;
    Ok(report)
}

/// Inserts the static activation QuantizeLinear -> DequantizeLinear pairs (one per activation,
/// shared by its quantized consumers, placed just before the first of them so the node list
/// stays topologically sorted). Returns how many.
fn add_activation_qdq(
    proto: &mut ModelProto,
    f32_proto: &ModelProto,
    weights: &[String],
    data: &Path,
) -> Result<usize> {
    let g = proto.graph.as_ref().expect("checked above");
    let quantized = |n: &NodeProto| {
        matches!(n.op_type.as_str(), "MatMul" | "Gemm" | "Conv")
            && n.domain.is_empty()
            && n.input.len() >= 2
            && weights.contains(&n.input[1])
    };
    let mut wanted: Vec<String> = Vec::new();
    for n in g.node.iter().filter(|n| quantized(n)) {
        if !wanted.contains(&n.input[0]) {
            wanted.push(n.input[0].clone());
        }
    }
    let ranges = activation_ranges(f32_proto, &wanted, data)?;
    let g = proto.graph.as_mut().expect("checked above");
    let mut nodes = Vec::with_capacity(g.node.len() + 2 * wanted.len());
    let mut done: HashMap<String, String> = HashMap::new();
    for mut n in std::mem::take(&mut g.node) {
        if quantized(&n) {
            let a = n.input[0].clone();
            if let Some(&max) = ranges.get(&a) {
                if !done.contains_key(&a) {
                    let (sn, zn) = (format!("{a}_act_scale"), format!("{a}_act_zero_point"));
                    let (qn, dn) = (format!("{a}_act_quantized"), format!("{a}_act_dequantized"));
                    g.initializer.push(encode(&Tensor::scalar(act_scale(max)), &sn));
                    g.initializer.push(encode(&Tensor::scalar(0i8), &zn));
                    let io = |x: &str| vec![x.to_string(), sn.clone(), zn.clone()];
                    nodes.push(plain_node(&format!("{a}_act_quantize"), "QuantizeLinear", io(&a), &qn));
                    nodes.push(plain_node(&format!("{a}_act_dequantize"), "DequantizeLinear", io(&qn), &dn));
                    done.insert(a.clone(), dn);
                }
                n.input[0] = done[&a].clone();
            }
        }
        nodes.push(n);
    }
    g.node = nodes;
    Ok(done.len())
}

fn plain_node(name: &str, op: &str, input: Vec<String>, output: &str) -> NodeProto {
    NodeProto { name: name.into(), op_type: op.into(), input, output: vec![output.into()], ..Default::default() }
}

fn node(name: &str, op: &str, input: Vec<String>, output: &str, attr: AttributeProto) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input,
        output: vec![output.into()],
        attribute: vec![attr],
        ..Default::default()
    }
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
