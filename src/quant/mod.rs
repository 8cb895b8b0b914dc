//! Post-training weight quantization: schemes ([`scheme`]) and the graph rewrite that turns
//! Gemm/MatMul nodes with constant f32 weights into [`Op::QGemm`] nodes holding packed weights.
//!
//! Layouts and tolerances: docs/quantized-format.md.

pub mod calibrate;
pub mod nbits;
pub mod qdq;
pub mod qdq_int4;
pub mod scheme;

pub use qdq::{export_qdq, export_qdq_calibrated, QdqReport};

pub use scheme::{Precision, QData, QWeight, INT4_GROUP};

use crate::ir::{Graph, Op};
use crate::tensor::DType;
use std::sync::Arc;

/// Returns a copy of `graph` with the weights of eligible Gemm/MatMul nodes quantized to `p`
/// (the graph itself for [`Precision::F32`]). Eligible: a constant 2-D f32 weight (Gemm's B,
/// MatMul's right operand), f32 activations, Gemm without `transA`; and Conv with a constant
/// f32 weight (becomes [`Op::QConv`], the weight a `[c_out, c_in/group * prod(kernel)]` matrix).
/// For [`Precision::W8a8`], int8 QGemm/QConv nodes already in the graph (an int8 QDQ file)
/// also get their activations quantized: the same weights, run by the w8a8 kernels; depthwise
/// and short-reduction convs stay int8 weight-only ([`w8a8_keeps_f32_activations`]).
pub fn quantize_graph(graph: &Graph, p: Precision) -> Graph {
    let mut g = graph.clone();
    if p == Precision::F32 {
        return g;
    }
    for n in 0..g.nodes.len() {
        let f32_acts =
            matches!(&g.nodes[n].op, Op::QConv { group, wshape, .. } if w8a8_keeps_f32_activations(*group, wshape));
        if p == Precision::W8a8 && !f32_acts {
            if let Op::QGemm { w, .. } | Op::QConv { w, .. } = &mut g.nodes[n].op {
                if let QData::Int8 { q, scales } = &w.data {
                    if !w8a8_compatible(&q[..]) {
                        continue;
                    }
                    // A borrowed (memory-mapped) q is shared, not copied.
                    let data = QData::W8a8 { q: q.clone(), scales: scales.clone(), act_scale: None };
                    *w = Arc::new(QWeight { n: w.n, k: w.k, data });
                }
            }
        }
        let node = &g.nodes[n];
        if let Op::Conv { window, group } = &node.op {
            let (Some(x), Some(wv)) = (node.input(0), node.input(1)) else { continue };
            if g.values[x].dtype.is_some_and(|d| d != DType::F32) {
                continue;
            }
            let Some(wt) = g.constant(wv) else { continue };
            let Some(wf) = wt.as_slice::<f32>() else { continue };
            let ws = wt.shape().to_vec();
            if ws.len() < 3 || ws[0] == 0 || wf.is_empty() {
                continue;
            }
            // Conv weights [c_out, c_in/group, k..] are already a row-major [c_out, rest] matrix.
            let (nn, k) = (ws[0], wf.len() / ws[0]);
            let wp = if p == Precision::W8a8 && w8a8_keeps_f32_activations(*group, &ws) { Precision::Int8 } else { p };
            let Some(q) = QWeight::quantize(wf, nn, k, wp) else { continue };
            let op = Op::QConv { window: window.clone(), group: *group, w: Arc::new(q), wshape: ws };
            let bias = node.input(2);
            let node = &mut g.nodes[n];
            node.op = op;
            node.inputs = vec![Some(x), bias];
            continue;
        }
        let (alpha, beta, trans_b) = match node.op {
            Op::Gemm { alpha, beta, trans_a: false, trans_b } => (alpha, beta, trans_b),
            Op::MatMul => (1.0, 0.0, false),
            _ => continue,
        };
        let (Some(a), Some(b)) = (node.input(0), node.input(1)) else { continue };
        if g.values[a].dtype.is_some_and(|d| d != DType::F32) {
            continue;
        }
        let Some(bt) = g.constant(b) else { continue };
        let (Some(bv), [r, c]) = (bt.as_slice::<f32>(), bt.shape()) else { continue };
        let (r, c) = (*r, *c);
        // W is [n, k]: B itself under transB, else B transposed.
        let (nn, k, w) = if trans_b {
            (r, c, bv.to_vec())
        } else {
            let mut w = vec![0f32; r * c];
            for i in 0..r {
                for j in 0..c {
                    w[j * r + i] = bv[i * c + j];
                }
            }
            (c, r, w)
        };
        if nn == 0 || k == 0 {
            continue;
        }
        let Some(q) = QWeight::quantize(&w, nn, k, p) else { continue };
        let bias = if matches!(node.op, Op::Gemm { .. }) { node.input(2) } else { None };
        let node = &mut g.nodes[n];
        node.op = Op::QGemm { w: Arc::new(q), alpha, beta };
        node.inputs = vec![Some(a), bias];
    }
    g.prune_dead_nodes();
    g
}

/// Whether a conv with `group` groups and weight shape `wshape` is depthwise (one input channel
/// per group). Under [`Precision::W8a8`] these keep f32 activations with int8 weights: each
/// output is a dot product of only `kernel` taps, so quantizing the activations (one scale per
/// output position) costs more than the integer product saves (measured on MobileNetV3:
/// depthwise w8a8 took 4x the f32 direct kernel's time and ~80% of the model's w8a8 time).
pub fn is_depthwise(group: usize, wshape: &[usize]) -> bool {
    group > 1 && wshape.get(1) == Some(&1)
}

/// Largest reduction (input channels per group x kernel taps) of a conv that keeps f32
/// activations under w8a8: an RGB stem's 27; a 1x1 conv over 16 or 24 channels.
pub const W8A8_MIN_REDUCTION: usize = 33;

/// Whether a conv keeps f32 activations with int8 weights under [`Precision::W8a8`]: depthwise
/// convs ([`is_depthwise`]) and convs reducing over fewer than [`W8A8_MIN_REDUCTION`] values
/// (a 3-channel 3x3 stem, a 1x1 conv over 16 channels). These run faster in f32 than
/// quantizing their activations per position: MobileNetV3-224's stem took 0.93 ms w8a8 vs
/// 0.3 ms direct f32; its 16->72 1x1 conv on 112x112 positions 0.24 ms vs 0.19 ms, 16->16
/// 0.081 vs 0.044 ms, 24->96 on 56x56 0.087 vs 0.069 ms.
pub fn w8a8_keeps_f32_activations(group: usize, wshape: &[usize]) -> bool {
    let taps: usize = wshape.iter().skip(2).product();
    let short = wshape.len() > 2 && wshape[1] * taps < W8A8_MIN_REDUCTION;
    is_depthwise(group, wshape) || short
}

/// Whether int8 weights can run on the w8a8 kernels: all in [-127, 127]. Alembic's own
/// quantizer never writes -128, but a QDQ file from another tool may, and the AVX2 kernel's
/// `w * sign(a)` would overflow on it; such weights keep the int8 (f32 activation) kernels.
pub fn w8a8_compatible(q: &[i8]) -> bool {
    !q.contains(&i8::MIN)
}

/// Number of nodes holding quantized weights, and their packed bytes.
pub fn quantized_stats(graph: &Graph) -> (usize, usize) {
    graph.nodes.iter().fold((0, 0), |(c, b), n| match &n.op {
        Op::QGemm { w, .. } | Op::QConv { w, .. } => (c + 1, b + w.byte_size()),
        _ => (c, b),
    })
}
