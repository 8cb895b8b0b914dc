//! Elementwise math, activations, Gemm and MatMul.

use crate::error::Result;
use crate::ir::{Binary, Op, Unary};
use crate::onnx::node::NodeCtx;
use crate::onnx::registry::Registry;
use crate::tensor::DType;

pub fn register(r: &mut Registry) {
    macro_rules! unary {
        ($name:literal, $u:expr) => {
            r.insert($name, |c| {
                c.require_inputs(1)?;
                Ok(Op::Unary($u))
            });
        };
    }
    unary!("Relu", Unary::Relu);
    unary!("Sigmoid", Unary::Sigmoid);
    unary!("HardSwish", Unary::HardSwish);
    unary!("Tanh", Unary::Tanh);
    unary!("Erf", Unary::Erf);
    unary!("Exp", Unary::Exp);
    unary!("Log", Unary::Log);
    unary!("Sqrt", Unary::Sqrt);
    unary!("Neg", Unary::Neg);
    unary!("Abs", Unary::Abs);
    unary!("Reciprocal", Unary::Reciprocal);
    unary!("Floor", Unary::Floor);
    unary!("Ceil", Unary::Ceil);
    unary!("Softplus", Unary::Softplus);
    unary!("Not", Unary::Not);
    r.insert("LeakyRelu", |c| Ok(Op::Unary(Unary::LeakyRelu { alpha: c.float("alpha", 0.01) })));
    r.insert("Elu", |c| Ok(Op::Unary(Unary::Elu { alpha: c.float("alpha", 1.0) })));
    r.insert("HardSigmoid", |c| {
        Ok(Op::Unary(Unary::HardSigmoid { alpha: c.float("alpha", 0.2), beta: c.float("beta", 0.5) }))
    });
    r.insert("Gelu", gelu);
    r.insert("Clip", clip);

    macro_rules! binary {
        ($name:literal, $b:expr) => {
            r.insert($name, |c| {
                c.require_inputs(2)?;
                Ok(Op::Binary($b))
            });
        };
    }
    binary!("Add", Binary::Add);
    binary!("Sub", Binary::Sub);
    binary!("Mul", Binary::Mul);
    binary!("Div", Binary::Div);
    binary!("Pow", Binary::Pow);
    binary!("PRelu", Binary::PRelu);
    binary!("Equal", Binary::Equal);
    binary!("Less", Binary::Less);
    binary!("Greater", Binary::Greater);
    binary!("And", Binary::And);
    binary!("Or", Binary::Or);
    r.insert("Max", |c| variadic(c, Binary::Max));
    r.insert("Min", |c| variadic(c, Binary::Min));
    r.insert("Sum", |c| {
        c.require_inputs(1)?;
        Ok(Op::Sum)
    });
    r.insert("Where", |c| {
        c.require_inputs(3)?;
        Ok(Op::Where)
    });
    r.insert("Cast", cast);
    r.insert("CastLike", cast_like);
    r.insert("Gemm", gemm);
    r.insert("MatMul", |c| {
        c.require_inputs(2)?;
        Ok(Op::MatMul)
    });
}

fn gelu(c: &mut NodeCtx) -> Result<Op> {
    let tanh = match c.string("approximate", "none")?.as_str() {
        "none" => false,
        "tanh" => true,
        other => return Err(c.err(format!("approximate='{other}' is not one of none, tanh"))),
    };
    Ok(Op::Unary(Unary::Gelu { tanh }))
}

/// Clip: bounds as attributes (opset < 11) or inputs; constant bounds become a unary op.
fn clip(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    if c.opset < 11 {
        let min = c.float("min", f32::NEG_INFINITY);
        let max = c.float("max", f32::INFINITY);
        return Ok(Op::Unary(Unary::Clip { min, max }));
    }
    let bound = |i: usize, default: f32| -> Option<f32> {
        match c.input(i) {
            None => Some(default),
            Some(_) => {
                c.const_input(i).filter(|t| t.len() == 1 && t.dtype() == DType::F32).map(|t| t.to_f64_vec()[0] as f32)
            }
        }
    };
    let is_f32 = c.input(0).and_then(|v| c.graph.value(v).dtype) == Some(DType::F32);
    match (bound(1, f32::NEG_INFINITY), bound(2, f32::INFINITY)) {
        (Some(min), Some(max)) if is_f32 => {
            c.inputs.truncate(1);
            Ok(Op::Unary(Unary::Clip { min, max }))
        }
        _ => Ok(Op::Clip),
    }
}

/// Max/Min take any number of inputs; one input is a copy, two a binary op, more are folded
/// pairwise by the importer is avoided: ONNX allows 1..N, we accept 1 or 2 and reject more.
fn variadic(c: &mut NodeCtx, b: Binary) -> Result<Op> {
    c.require_inputs(1)?;
    match c.inputs.iter().flatten().count() {
        1 => Ok(Op::Identity),
        2 => Ok(Op::Binary(b)),
        n => Err(c.err(format!("{n} inputs: only 1 or 2 are supported"))),
    }
}

fn cast(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    let code = c.int_opt("to").ok_or_else(|| c.err("missing attribute 'to'"))?;
    let to = DType::from_onnx(code as i32)
        .ok_or_else(|| c.err(format!("cast to {} is not supported", crate::tensor::onnx_type_name(code as i32))))?;
    let saturate = c.int_opt("saturate").unwrap_or(1) != 0;
    Ok(Op::Cast { to, saturate })
}

/// CastLike is Cast to the element type of its second input, which must be known at import (a
/// graph input, initializer or typed value); the second input is then dropped.
fn cast_like(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(2)?;
    let like = c.input(1).expect("required");
    let to = c.graph.values[like]
        .dtype
        .ok_or_else(|| c.err("the element type of the 'target_type' input is not known at import"))?;
    let saturate = c.int_opt("saturate").unwrap_or(1) != 0;
    c.inputs.truncate(1);
    Ok(Op::Cast { to, saturate })
}

fn gemm(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(2)?;
    Ok(Op::Gemm {
        alpha: c.float("alpha", 1.0),
        beta: c.float("beta", 1.0),
        trans_a: c.flag("transA", false),
        trans_b: c.flag("transB", false),
    })
}
