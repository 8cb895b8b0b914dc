//! Activation fusion: an activation whose input is the only use of a GEMM/conv/binary output
//! runs inside that kernel (the `act` uniform), and its own step does nothing.

use super::{Kind, Step};
use crate::backend::wgpu::kernels::GpuOp;
use crate::ir::Graph;
use std::collections::HashMap;

/// Fuses an activation into the GEMM/conv/binary step producing its only input, when that
/// intermediate has no other reader and is not a graph output.
pub(super) fn fuse_activations(g: &Graph, steps: &mut [Step]) {
    let consumers = g.consumers();
    let by_node: HashMap<usize, usize> = steps.iter().enumerate().map(|(i, s)| (s.node, i)).collect();
    for si in 0..steps.len() {
        let fusable = matches!(
            steps[si].kind,
            Kind::Gpu(
                GpuOp::Gemm { .. } | GpuOp::MatMul | GpuOp::QGemm { .. } | GpuOp::Conv { .. } | GpuOp::Binary { .. }
            )
        );
        if !fusable || steps[si].outputs.len() != 1 || steps[si].act.code != 0 {
            continue;
        }
        let o = steps[si].outputs[0];
        if g.outputs.contains(&o) || consumers[o].len() != 1 {
            continue;
        }
        let ci = by_node[&consumers[o][0]];
        let Kind::Gpu(GpuOp::Unary(a)) = steps[ci].kind else { continue };
        if g.nodes[steps[ci].node].input(0) != Some(o) {
            continue;
        }
        steps[si].act = a;
        steps[si].outputs = steps[ci].outputs.clone();
        steps[ci].kind = Kind::Fused;
        steps[ci].outputs = vec![];
    }
}
