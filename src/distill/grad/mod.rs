//! Vector-Jacobian products: for each op, the gradients of its inputs from the gradients of
//! its outputs. f32 only; the forward values come from the tape (the CPU engine's results).
//!
//! Contract: `vjp(op, inputs, outputs, grads, need)` returns one entry per input, `Some` where
//! `need[i]` and the input is differentiable. `grads[k]` is `None` when output k has no
//! gradient flowing back (then treat it as zeros). Broadcast inputs get their gradient summed
//! back to their own shape ([`reduce_to_shape`]).

mod elementwise;
mod linalg;
mod nn;
mod shape;

use crate::ir::Op;
use crate::tensor::Tensor;

pub type GradResult = Result<Vec<Option<Tensor>>, String>;

/// Whether backpropagation through `op` is implemented.
pub fn has_vjp(op: &Op) -> bool {
    linalg::supports(op) || elementwise::supports(op) || nn::supports(op) || shape::supports(op)
}

pub fn vjp(
    op: &Op,
    inputs: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: &[Option<&Tensor>],
    need: &[bool],
) -> GradResult {
    if linalg::supports(op) {
        linalg::vjp(op, inputs, outputs, grads, need)
    } else if elementwise::supports(op) {
        elementwise::vjp(op, inputs, outputs, grads, need)
    } else if nn::supports(op) {
        nn::vjp(op, inputs, outputs, grads, need)
    } else if shape::supports(op) {
        shape::vjp(op, inputs, outputs, grads, need)
    } else {
        Err(format!("{} has no gradient", op.name()))
    }
}

/// f32 contents of a tensor, or an error naming the role.
pub fn f32s<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], String> {
    t.as_slice::<f32>().ok_or_else(|| format!("{what} must be f32 for training, is {}", t.dtype()))
}

/// Sums a gradient of the broadcast output shape back to an input's shape.
pub fn reduce_to_shape(g: &[f32], gshape: &[usize], target: &[usize]) -> Tensor {
    if gshape == target {
        return Tensor::from_vec(target.to_vec(), g.to_vec()).expect("same shape");
    }
    let n: usize = target.iter().product();
    let mut out = vec![0f32; n];
    let s = crate::backend::cpu::kernels::broadcast::broadcast_strides(target, gshape);
    crate::backend::cpu::kernels::broadcast::for_each_offsets(gshape, [&s], |i, [j]| out[j] += g[i]);
    Tensor::from_vec(target.to_vec(), out).expect("numel of target")
}

/// The gradient of output `k`, or zeros shaped like the output.
pub fn grad_or_zeros(grads: &[Option<&Tensor>], outputs: &[&Tensor], k: usize) -> Tensor {
    match grads.get(k).copied().flatten() {
        Some(g) => g.clone(),
        None => Tensor::zeros(crate::tensor::DType::F32, outputs[k].shape()),
    }
}
