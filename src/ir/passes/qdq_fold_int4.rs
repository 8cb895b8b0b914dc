//! The blocked 4-bit part of [`super::fold_qdq`]: a constant weight dequantized in blocks along
//! K (opset-21 `DequantizeLinear(axis = K, block_size)`, the form `alembic quantize --precision
//! int4` writes and ONNX Runtime's 4-bit QDQ quantizer too) becomes Alembic's int4 scheme
//! ([`QData::Int4`]), optionally through `Cast(to = FLOAT)` (f16 scales) and, for Conv, a
//! `Reshape` of the 2-D `[c_out, k]` weight to the kernel's shape:
//!
//! `W <- [Reshape(., constant shape) <-] [Cast(to f32) <-] DequantizeLinear(q, scale[, zp = 0])`
//!
//! Folds when every value is in [-8, 7] (INT4, or INT8 that happens to fit), zero points are
//! absent or 0, the block size is a multiple of 32 (each group of 32 takes its block's scale)
//! and the scale tensor has the blocked shape. f16 scales are kept as they are; f32 scales are
//! rounded to f16 (relative 2^-11, as for MatMulNBits). Anything else is left to the generic
//! DequantizeLinear kernel.

use super::qdq_fold::Layout;
use crate::ir::graph::Graph;
use crate::ir::op::{Op, QLinear};
use crate::quant::{QData, QWeight, INT4_GROUP};
use crate::tensor::{norm_axis, DType};
use half::f16;

/// The int4 `[n, k]` weight behind value `w` and the shape the consumer sees, if `w` is such a
/// chain.
pub(super) fn blocked_int4(
    g: &Graph,
    producers: &[Option<usize>],
    w: usize,
    layout: Layout,
    conv: bool,
) -> Option<(QWeight, Vec<usize>)> {
    let mut node = &g.nodes[producers[w]?];
    let mut wshape = None;
    if conv {
        let Op::Reshape { .. } = node.op else { return None };
        let dims = g.constant(node.input(1)?)?.to_i64_vec()?;
        if dims.len() < 3 || dims.iter().any(|&d| d <= 0) {
            return None;
        }
        wshape = Some(dims.iter().map(|&d| d as usize).collect::<Vec<_>>());
        node = &g.nodes[producers[node.input(0)?]?];
    }
    let mut via_cast = false;
    if let Op::Cast { to: DType::F32, .. } = node.op {
        via_cast = true;
        node = &g.nodes[producers[node.input(0)?]?];
    }
    let Op::QLinear(QLinear::Dequantize { axis, block_size }) = node.op else { return None };
    if block_size == 0 || !block_size.is_multiple_of(INT4_GROUP) {
        return None;
    }
    let c = |i: usize| node.input(i).and_then(|v| g.constant(v));
    let x = c(0)?;
    let q = x.as_slice::<i8>()?;
    let shape = x.shape();
    if shape.len() != 2 || q.is_empty() || q.iter().any(|v| !(-8..=7).contains(v)) {
        return None;
    }
    let s = c(1)?;
    // Without the Cast, the dequantized weight must already be f32.
    let scales: Vec<f16> = match (s.as_slice::<f16>(), s.as_slice::<f32>()) {
        (Some(h), _) if via_cast => h.to_vec(),
        (_, Some(f)) if !via_cast => f.iter().map(|&v| f16::from_f32(v)).collect(),
        _ => return None,
    };
    if node.input(2).is_some() && c(2)?.to_i64_vec()?.iter().any(|&z| z != 0) {
        return None;
    }
    // The K axis of the 2-D weight: [k, n] for MatMul / Gemm B, [n, k] under transB and Conv.
    let k_axis = if layout == Layout::KN { 0 } else { 1 };
    if norm_axis(axis, 2)? != k_axis {
        return None;
    }
    let (n, k) = if k_axis == 0 { (shape[1], shape[0]) } else { (shape[0], shape[1]) };
    let blocks = k.div_ceil(block_size);
    let want = if k_axis == 0 { [blocks, n] } else { [n, blocks] };
    if s.shape() != want {
        return None;
    }
    let wshape = match wshape {
        Some(ws) if ws[0] == n && ws.iter().product::<usize>() == n * k => ws,
        Some(_) => return None,
        None => shape.to_vec(),
    };
    let groups = k.div_ceil(INT4_GROUP);
    let mut packed = vec![0u32; n * groups * 4];
    let mut s16 = Vec::with_capacity(n * groups);
    for r in 0..n {
        for gi in 0..groups {
            let b = gi * INT4_GROUP / block_size;
            s16.push(scales[if k_axis == 0 { b * n + r } else { r * blocks + b }]);
        }
        for j in 0..k {
            let v = q[if k_axis == 0 { j * n + r } else { r * k + j }];
            packed[r * groups * 4 + j / 8] |= ((v as u32) & 0xF) << (4 * (j % 8));
        }
    }
    Some((QWeight { n, k, data: QData::Int4 { packed: packed.into(), scales: s16 } }, wshape))
}
