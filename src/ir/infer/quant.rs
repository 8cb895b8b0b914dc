//! Inference rules for the ONNX quantization operators: (de)quantization keeps the shape and
//! sets the type; the integer and QLinear matmuls/convs take the f32 rules' shapes (via the
//! kernel fallback) with the integer output type.

use super::{InFact, OutFact, RuleResult};
use crate::ir::op::{Op, QLinear};
use crate::tensor::{DType, Dim};

pub fn rule(op: &Op, inputs: &[Option<InFact>], _n_out: usize) -> RuleResult {
    let Op::QLinear(q) = op else { return Ok(None) };
    let inp = |i: usize| inputs.get(i).copied().flatten();
    let shape = |i: usize| inp(i).and_then(|f| f.shape).map(<[Dim]>::to_vec);
    let dtype = |i: usize| inp(i).and_then(|f| f.dtype);
    Ok(Some(match q {
        QLinear::Quantize { out, .. } => vec![OutFact::new(Some(*out), shape(0))],
        QLinear::Dequantize { .. } => vec![OutFact::new(dtype(1), shape(0))],
        QLinear::DynamicQuantize => vec![
            OutFact::new(Some(DType::U8), shape(0)),
            OutFact::new(Some(DType::F32), Some(vec![])),
            OutFact::new(Some(DType::U8), Some(vec![])),
        ],
        // Shapes as MatMul/Conv; the kernel fallback computes them when inputs are known.
        QLinear::MatMulInteger | QLinear::ConvInteger { .. } => return Ok(None),
        QLinear::QLinearMatMul | QLinear::QLinearConv { .. } => return Ok(None),
    }))
}
