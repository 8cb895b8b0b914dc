//! (being written)

use super::KResult;
use crate::ir::Op;
use crate::tensor::Tensor;

pub fn eval(op: &Op, _inputs: &[Option<&Tensor>], _outputs: &mut [Tensor], _scratch: &mut Vec<f32>) -> KResult {
    Err(format!("{} has no CPU kernel yet", op.name()))
}
