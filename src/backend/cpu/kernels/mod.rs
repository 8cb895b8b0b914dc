//! CPU kernels, one module per op family, behind one dispatch function.
//!
//! Contract for every family: read `inputs` (None = omitted optional input), write each
//! output with `Tensor::reuse*` so the allocation carries over between runs, use `scratch` for
//! temporary f32 buffers (it persists per node), and return a one-line message on failure.

pub mod activation;
pub mod broadcast;
pub mod conv;
pub mod conv_transpose;
pub mod direct;
pub mod direct_c8;
pub mod elementwise;
pub mod gather;
pub mod i8tile;
pub mod im2col;
pub mod linalg;
pub mod microkernel;
pub mod norm;
pub mod packed;
pub mod pool;
pub mod qdense;
pub mod qgemm_i8;
pub mod qlinear;
pub mod qpatches;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod shape_ops;
pub mod slice_pad;
pub mod threads;
pub mod window;

use crate::ir::{Op, Unary};
use crate::tensor::Tensor;

/// Kernel result: the message is wrapped with the node's name by the engine.
pub type KResult = Result<(), String>;

/// Input `i`, which must be present.
pub fn req<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor, String> {
    inputs.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
}

/// Input `i` if present.
pub fn opt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Runs `op` on the CPU, then the activation `act` on its f32 output 0: inside the kernel's
/// output pass for Conv, otherwise in place after it (the CPU plan fuses an activation that is
/// the only reader of a node's output this way, saving a node and a buffer).
pub fn eval_fused(
    op: &Op,
    act: Option<&Unary>,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    let Some(u) = act else { return eval(op, inputs, outputs, scratch) };
    if let Op::Conv { .. } | Op::ConvTranspose(_) = op {
        return conv::eval_fused(op, act, inputs, outputs, scratch);
    }
    if let Op::QConv { .. } = op {
        return quant::qconv(op, act, inputs, outputs, scratch);
    }
    eval(op, inputs, outputs, scratch)?;
    let y = outputs[0].as_mut_slice::<f32>().ok_or("a fused activation needs an f32 output")?;
    activation::apply(u, y);
    Ok(())
}

/// Runs `op` on the CPU.
pub fn eval(op: &Op, inputs: &[Option<&Tensor>], outputs: &mut [Tensor], scratch: &mut Vec<f32>) -> KResult {
    match op {
        Op::Unary(u) => elementwise::unary(u, req(inputs, 0)?, &mut outputs[0]),
        Op::Binary(b) => elementwise::binary(*b, req(inputs, 0)?, req(inputs, 1)?, &mut outputs[0]),
        Op::Sum => {
            let all: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
            elementwise::sum(&all, &mut outputs[0])
        }
        Op::Where => elementwise::where_(req(inputs, 0)?, req(inputs, 1)?, req(inputs, 2)?, &mut outputs[0]),
        Op::Clip => elementwise::clip_dynamic(req(inputs, 0)?, opt(inputs, 1), opt(inputs, 2), &mut outputs[0]),
        Op::Cast { to, saturate } => elementwise::cast_saturate(req(inputs, 0)?, *to, *saturate, &mut outputs[0]),
        Op::Gemm { alpha, beta, trans_a, trans_b } => linalg::gemm(
            req(inputs, 0)?,
            req(inputs, 1)?,
            opt(inputs, 2),
            *alpha,
            *beta,
            *trans_a,
            *trans_b,
            &mut outputs[0],
        ),
        Op::MatMul => linalg::matmul(req(inputs, 0)?, req(inputs, 1)?, &mut outputs[0]),
        Op::QConv { .. } => quant::qconv(op, None, inputs, outputs, scratch),
        Op::QLinear(q) => qlinear::eval(q, inputs, outputs, scratch),
        Op::QGemm { w, alpha, beta } => {
            quant::qgemm(w, req(inputs, 0)?, opt(inputs, 1), *alpha, *beta, &mut outputs[0], scratch)
        }
        Op::Conv { .. } | Op::ConvTranspose(_) => conv::eval(op, inputs, outputs, scratch),
        Op::MaxPool { .. } | Op::AveragePool { .. } | Op::GlobalAveragePool | Op::GlobalMaxPool => {
            pool::eval(op, inputs, outputs, scratch)
        }
        Op::BatchNorm { .. } | Op::LayerNorm { .. } | Op::Lrn { .. } | Op::Softmax { .. } | Op::LogSoftmax { .. } => {
            norm::eval(op, inputs, outputs, scratch)
        }
        Op::Resize(_) => resize::eval(op, inputs, outputs, scratch),
        Op::Reduce { .. } | Op::ArgMax { .. } | Op::ArgMin { .. } => reduce::eval(op, inputs, outputs, scratch),
        _ => shape_ops::eval(op, inputs, outputs, scratch),
    }
}
