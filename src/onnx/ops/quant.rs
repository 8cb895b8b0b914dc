//! ONNX quantization operators, for models quantized by other tools (ONNX Runtime's quantizer,
//! Olive, ...): QuantizeLinear, DequantizeLinear (per tensor, per axis, opset-21 blocked),
//! DynamicQuantizeLinear, MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv; and
//! com.microsoft MatMulNBits (4-bit) straight onto the int4 QGemm.
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
    r.insert_domain("com.microsoft", "MatMulNBits", matmul_nbits);
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

/// `MatMulNBits(A, B, scales[, zero_points, g_idx, bias])` with constant 4-bit B: a QGemm with
/// the int4 weight (see [`crate::quant::nbits`]), inputs `[A, bias]`.
fn matmul_nbits(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(3)?;
    let dim = |name: &str| -> Result<usize> {
        match c.int_opt(name) {
            Some(v) if v > 0 => Ok(v as usize),
            other => Err(c.err(format!("attribute {name} must be positive, got {other:?}"))),
        }
    };
    let (n, k, bits, block) = (dim("N")?, dim("K")?, dim("bits")?, dim("block_size")?);
    if bits != 4 {
        return Err(c.err(format!("bits = {bits}: only 4-bit weights are supported")));
    }
    if c.input(4).is_some() {
        return Err(c.err("g_idx (act-order) is not supported"));
    }
    let b = c.const_input(1).ok_or_else(|| c.err("B must be a constant initializer"))?;
    let b = b.as_slice::<u8>().ok_or_else(|| c.err(format!("B must be uint8, got {}", b.dtype())))?;
    let s = c.const_input(2).ok_or_else(|| c.err("scales must be a constant initializer"))?;
    if !s.dtype().is_float() {
        return Err(c.err(format!("scales must be float, got {}", s.dtype())));
    }
    let scales: Vec<f32> = s.to_f64_vec().iter().map(|&v| v as f32).collect();
    let zp = match c.input(3) {
        None => None,
        Some(_) => {
            let z = c.const_input(3).ok_or_else(|| c.err("zero_points must be a constant initializer"))?;
            Some(z.as_slice::<u8>().ok_or_else(|| c.err(format!("zero_points must be uint8, got {}", z.dtype())))?)
        }
    };
    let w = crate::quant::nbits::from_matmul_nbits(b, &scales, zp, n, k, block).map_err(|m| c.err(m))?;
    let bias = c.input(5);
    c.inputs = vec![c.input(0), bias];
    Ok(Op::QGemm { w: std::sync::Arc::new(w), alpha: 1.0, beta: if bias.is_some() { 1.0 } else { 0.0 } })
}
