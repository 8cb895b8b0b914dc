//! Inference rules (being written).

use super::{InFact, RuleResult};
use crate::ir::op::Op;

pub fn rule(_op: &Op, _inputs: &[Option<InFact>], _n_out: usize) -> RuleResult {
    Ok(None)
}
