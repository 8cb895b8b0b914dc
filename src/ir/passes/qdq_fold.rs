//! Folds weights stored the QDQ way into Alembic's quantized ops, so they stay packed in memory:
//! `DequantizeLinear(constant int8 W, scale, zero point 0)` feeding MatMul's or Gemm's B, or
//! Conv's W, becomes [`Op::QGemm`] / [`Op::QConv`] with the int8 per-output-channel scheme when
//! the layout fits (symmetric, per tensor or per output channel); `Cast(constant f16 W -> f32)`
//! becomes the f16 scheme; blocked 4-bit weights (opset 21) become the int4 scheme
//! ([`super::qdq_fold_int4`]). Anything else is left to the generic kernels (and constant folding).
//! Runs before constant folding, which would otherwise expand the weight to f32.
//!
//! Zero copy: where the file's layout is the kernels' `[n, k]` (Conv W, Gemm B under transB)
//! the packed weight borrows the constant's buffer, i.e. the memory-mapped model file; the
//! `[k, n]` layout (MatMul B, Gemm B without transB) is transposed into an owned copy.

use super::qdq_fold_int4::blocked_int4;
use crate::ir::graph::Graph;
use crate::ir::op::{Op, QLinear};
use crate::quant::{QData, QWeight};
use crate::tensor::shared::Plain;
use crate::tensor::{norm_axis, DType, Element, SharedSlice, Tensor};
use std::sync::Arc;

/// Where the output channels sit in the weight tensor.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Layout {
    /// MatMul B / Gemm B without transB: `[k, n]`.
    KN,
    /// Gemm B under transB, Conv W: `[n, k..]`.
    NK,
}

pub fn fold_qdq(g: &mut Graph) {
    let producers = g.producers();
    let mut changed = false;
    for n in 0..g.nodes.len() {
        let node = &g.nodes[n];
        let (layout, conv) = match &node.op {
            Op::MatMul => (Layout::KN, false),
            Op::Gemm { trans_a: false, trans_b, .. } => (if *trans_b { Layout::NK } else { Layout::KN }, false),
            Op::Conv { .. } => (Layout::NK, true),
            _ => continue,
        };
        let (Some(a), Some(w)) = (node.input(0), node.input(1)) else { continue };
        if g.values[a].dtype.is_some_and(|d| d != DType::F32) {
            continue;
        }
        let Some(p) = producers[w] else { continue };
        let folded = packed_weight(g, p, layout, conv).or_else(|| blocked_int4(g, &producers, w, layout, conv));
        let Some(mut q) = folded else { continue };
        // A static activation Q -> DQ pair in front of an int8 weight: the w8a8 kernels
        // quantize with that scale themselves, so the node reads the f32 activation directly.
        let mut a = a;
        if let QData::Int8 { q: wq, scales } = &mut q.0.data {
            let static_act = static_act_qdq(g, &producers, a).filter(|_| crate::quant::w8a8_compatible(&wq[..]));
            if let Some((x, s)) = static_act {
                let (wq, scales) = (std::mem::replace(wq, Vec::new().into()), std::mem::take(scales));
                q.0.data = QData::W8a8 { q: wq, scales, act_scale: Some(s) };
                a = x;
            }
        }
        let bias = node.input(2);
        let node = &mut g.nodes[n];
        node.op = match &node.op {
            Op::Conv { window, group } => {
                Op::QConv { window: window.clone(), group: *group, w: Arc::new(q.0), wshape: q.1 }
            }
            Op::Gemm { alpha, beta, .. } => Op::QGemm { w: Arc::new(q.0), alpha: *alpha, beta: *beta },
            _ => Op::QGemm { w: Arc::new(q.0), alpha: 1.0, beta: 0.0 },
        };
        node.inputs = vec![Some(a), bias];
        changed = true;
    }
    if changed {
        g.prune_dead_nodes();
    }
}

/// `(x, scale)` when `v` is `DequantizeLinear(QuantizeLinear(x, s, 0), s, 0)` with int8 zero
/// points and one constant positive f32 scale `s` (ONNX Runtime's static QDQ activation form).
/// The kernels saturate to [-128, 127] as QuantizeLinear does.
fn static_act_qdq(g: &Graph, producers: &[Option<usize>], v: usize) -> Option<(usize, f32)> {
    let scalar_scale = |node: &crate::ir::graph::Node| -> Option<f32> {
        let s = g.constant(node.input(1)?)?;
        let zp = g.constant(node.input(2)?)?;
        let (&[s], &[0]) = (s.as_slice::<f32>()?, zp.as_slice::<i8>()?) else { return None };
        (s > 0.0 && s.is_finite()).then_some(s)
    };
    let dq = &g.nodes[producers[v]?];
    if !matches!(dq.op, Op::QLinear(QLinear::Dequantize { block_size: 0, .. })) {
        return None;
    }
    let qv = dq.input(0)?;
    let qn = &g.nodes[producers[qv]?];
    if !matches!(qn.op, Op::QLinear(QLinear::Quantize { block_size: 0, out: DType::I8, .. })) {
        return None;
    }
    let s = scalar_scale(dq)?;
    (scalar_scale(qn)? == s).then_some((qn.input(0)?, s))
}

/// The packed `[n, k]` weight (and the original weight shape) produced by node `p`, if it is a
/// foldable DequantizeLinear or f16 Cast of a constant.
fn packed_weight(g: &Graph, p: usize, layout: Layout, conv: bool) -> Option<(QWeight, Vec<usize>)> {
    let node = &g.nodes[p];
    let c = |i: usize| node.input(i).and_then(|v| g.constant(v));
    let x = c(0)?;
    let shape = x.shape().to_vec();
    if if conv { shape.len() < 3 } else { shape.len() != 2 } || x.is_empty() {
        return None;
    }
    let (n, k) = match layout {
        Layout::KN => (shape[1], shape[0]),
        Layout::NK => (shape[0], x.len() / shape[0]),
    };
    let data = match &node.op {
        Op::QLinear(QLinear::Dequantize { axis, block_size: 0 }) => {
            let s = c(1)?.as_slice::<f32>()?;
            if node.input(2).is_some() && c(2)?.to_i64_vec()?.iter().any(|&z| z != 0) {
                return None;
            }
            let scales = if s.len() == 1 {
                vec![s[0]; n]
            } else {
                let out_axis = if layout == Layout::KN { 1 } else { 0 };
                if norm_axis(*axis, shape.len())? != out_axis || s.len() != n {
                    return None;
                }
                s.to_vec()
            };
            QData::Int8 { q: nk(x, &shape, layout)?, scales }
        }
        Op::Cast { to: DType::F32, .. } => QData::F16(nk(x, &shape, layout)?),
        _ => return None,
    };
    Some((QWeight { n, k, data }, shape))
}

/// The weight as row-major `[n, k]`: the constant's own buffer for the `[n, k]` layout
/// (borrowed from the model file when the constant is), a transposed copy for `[k, n]`.
/// `None` if the constant holds another type.
fn nk<T: Element + Plain>(x: &Tensor, shape: &[usize], layout: Layout) -> Option<SharedSlice<T>> {
    match layout {
        Layout::NK => x.to_shared::<T>(),
        Layout::KN => {
            let v = x.as_slice::<T>()?;
            let (r, c) = (shape[0], shape[1]);
            let mut w = vec![T::default(); r * c];
            for i in 0..r {
                for j in 0..c {
                    w[j * r + i] = v[i * c + j];
                }
            }
            Some(w.into())
        }
    }
}
