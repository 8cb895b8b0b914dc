//! Activation fusion local to the CPU plan: an elementwise activation that is the only reader
//! of a Conv/Gemm/MatMul/Add output runs inside that node's kernel (its output pass), so the
//! intermediate tensor is never written and the activation node disappears from the plan.
//! The graph itself is untouched (the wgpu plan and the distillation tape see the original).

use super::kernels::activation::fusable;
use super::prepack::Packed;
use crate::ir::{Binary, Graph, Op, Unary, ValueId};
use crate::tensor::DType;
use std::sync::Arc;

/// One unit of work of the CPU plan: a graph node, the values it writes (for a fused step, the
/// activation's output), and the activation to apply in its epilogue.
#[derive(Clone, Debug)]
pub struct Step {
    pub node: usize,
    /// The name a profile shows: the node's, or `producer+activation` for a fused step.
    pub name: String,
    pub outputs: Vec<ValueId>,
    pub act: Option<Unary>,
    /// The node's constant weight, packed for the CPU kernels (set by the plan).
    pub packed: Option<Arc<Packed>>,
}

/// Producers whose output pass can take an activation.
fn can_absorb(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv { .. }
            | Op::ConvTranspose(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::QGemm { .. }
            | Op::QConv { .. }
            | Op::Binary(Binary::Add)
    )
}

/// The graph's nodes as steps, activations fused into their producers where allowed.
pub fn steps(g: &Graph) -> Vec<Step> {
    let consumers = g.consumers();
    let f32_value = |v: ValueId| g.values[v].dtype == Some(DType::F32);
    let mut absorbed = vec![false; g.nodes.len()];
    let mut steps = Vec::with_capacity(g.nodes.len());
    for (n, node) in g.nodes.iter().enumerate() {
        if absorbed[n] {
            continue;
        }
        let mut step =
            Step { node: n, name: node.name.clone(), outputs: node.outputs.clone(), act: None, packed: None };
        if let ([o], true) = (&node.outputs[..], can_absorb(&node.op)) {
            let o = *o;
            let sole = match &consumers[o][..] {
                [c] if !g.outputs.contains(&o) => Some(*c),
                _ => None,
            };
            if let Some(c) = sole {
                let cn = &g.nodes[c];
                if let (Op::Unary(u), [co]) = (&cn.op, &cn.outputs[..]) {
                    if fusable(u) && cn.input(0) == Some(o) && f32_value(o) && f32_value(*co) {
                        step.outputs = vec![*co];
                        step.act = Some(u.clone());
                        step.name = format!("{}+{}", node.name, cn.name);
                        absorbed[c] = true;
                    }
                }
            }
        }
        steps.push(step);
    }
    steps
}
