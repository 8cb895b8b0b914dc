//! (being written)

use super::GradResult;
use crate::ir::Op;
use crate::tensor::Tensor;

pub fn supports(_op: &Op) -> bool {
    false
}

pub fn vjp(
    op: &Op,
    _inputs: &[Option<&Tensor>],
    _outputs: &[&Tensor],
    _grads: &[Option<&Tensor>],
    _need: &[bool],
) -> GradResult {
    Err(format!("{} has no gradient yet", op.name()))
}
