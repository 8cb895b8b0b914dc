//! ONNX quantization operators, for models quantized by other tools (ONNX Runtime's quantizer,
//! Olive, ...): QuantizeLinear, DequantizeLinear (per tensor, per axis, opset-21 blocked),
//! DynamicQuantizeLinear, MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv.
//! Constant int8 weights dequantized into MatMul/Gemm/Conv are folded into QGemm/QConv by
//! [`crate::ir::passes::fold_qdq`].

use super::nn::{group, window};
use crate::error::Result;
use crate::ir::{Op, QLinear};
use crate::onnx::node::NodeCtx;
use crate::onnx::registry::Registry;
use crate::tensor::DType;

pub fn register(r: &mut Registry) {
    r.insert("QuantizeLinear", quantize);
    r.insert("DequantizeLinear", dequantize);
    r.insert("DynamicQuantizeLinear", |c| {
        c.require_inputs(1)?;
        Ok(Op::QLinear(QLinear::DynamicQuantize))
    });
    r.insert("MatMulInteger", |c| {
        c.require_inputs(2)?;
        Ok(Op::QLinear(QLinear::MatMulInteger))
    });
    r.insert("QLinearMatMul", |c| {
        c.require_inputs(8)?;
        Ok(Op::QLinear(QLinear::QLinearMatMul))
    });
    r.insert("ConvInteger", |c| {
        c.require_inputs(2)?;
        Ok(Op::QLinear(QLinear::ConvInteger { window: window(c, false)?, group: group(c)? }))
    });
    r.insert("QLinearConv", |c| {
        c.require_inputs(8)?;
        Ok(Op::QLinear(QLinear::QLinearConv { window: window(c, false)?, group: group(c)? }))
    });
}

fn block_size(c: &NodeCtx) -> Result<usize> {
    match c.int("block_size", 0) {
        b if b >= 0 => Ok(b as usize),
        b => Err(c.err(format!("block_size {b} must be non-negative"))),
    }
}

fn quantize(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(2)?;
    let zp_type = c.input(2).and_then(|v| c.graph.value(v).dtype);
    let out = match c.int_opt("output_dtype").filter(|&d| d != 0) {
        Some(code) => DType::from_onnx(code as i32).ok_or_else(|| {
            c.err(format!("output_dtype {} is not supported", crate::tensor::onnx_type_name(code as i32)))
        })?,
        None => zp_type.unwrap_or(DType::U8),
    };
    if !matches!(out, DType::I8 | DType::U8) {
        return Err(c.err(format!("quantizing to {out} is not supported (int8, uint8)")));
    }
    Ok(Op::QLinear(QLinear::Quantize { axis: c.int("axis", 1), block_size: block_size(c)?, out }))
}

fn dequantize(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(2)?;
    Ok(Op::QLinear(QLinear::Dequantize { axis: c.int("axis", 1), block_size: block_size(c)? }))
}
