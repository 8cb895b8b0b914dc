//! Constant folding: nodes whose inputs are all known at load time become constants.
//! This is what collapses the Shape -> Gather -> Unsqueeze -> Concat chains of exporters once
//! shapes are known, and what lets Reshape/Expand see their target shape as a constant.

use crate::backend::cpu::kernels;
use crate::error::{Error, Result};
use crate::ir::graph::Graph;
use crate::ir::op::{Op, Unary};
use crate::tensor::{DType, Shape, Tensor};
use std::sync::Arc;

/// Largest folded result kept, in elements: bigger ones (ConstantOfShape of an activation-sized
/// shape, say) stay run-time nodes rather than bloating the model in memory.
const MAX_FOLDED: usize = 1 << 20;

pub fn fold_constants(g: &mut Graph) -> Result<()> {
    let mut dead = vec![false; g.nodes.len()];
    #[allow(clippy::needless_range_loop)] // `g` is borrowed mutably inside
    for n in 0..g.nodes.len() {
        let node = &g.nodes[n];
        if let Some(t) = shape_constant(g, n) {
            let o = node.outputs[0];
            set_constant(g, o, t);
            dead[n] = true;
            continue;
        }
        let all_const = node.inputs.iter().flatten().all(|&i| g.values[i].constant.is_some());
        if !all_const || node.inputs.iter().flatten().next().is_none() && !matches!(node.op, Op::Range) {
            continue;
        }
        let ins: Vec<Option<&Tensor>> =
            node.inputs.iter().map(|i| i.map(|i| g.constant(i).expect("checked"))).collect();
        let mut outs: Vec<Tensor> = node.outputs.iter().map(|_| Tensor::placeholder()).collect();
        let mut scratch = Vec::new();
        if let Err(message) = kernels::eval(&node.op, &ins, &mut outs, &mut scratch) {
            // A constant subgraph that cannot run will not run later either: report it now.
            return Err(Error::Shape { node: node.name.clone(), op: node.op.name().to_string(), message });
        }
        if outs.iter().any(|t| t.len() > MAX_FOLDED) {
            continue;
        }
        let outputs = node.outputs.clone();
        for (o, t) in outputs.into_iter().zip(outs) {
            set_constant(g, o, t);
        }
        dead[n] = true;
    }
    let mut d = dead.into_iter();
    g.nodes.retain(|_| !d.next().unwrap_or(false));
    lower_constant_clips(g);
    Ok(())
}

fn set_constant(g: &mut Graph, v: usize, t: Tensor) {
    let val = &mut g.values[v];
    val.dtype = Some(t.dtype());
    val.shape = Some(Shape::known(t.shape()));
    val.shape_value = None;
    val.constant = Some(Arc::new(t));
}

/// Shape/Size of a value whose shape is fully known, or any integer value whose elements
/// inference resolved (a Gather of such a Shape, say).
fn shape_constant(g: &Graph, n: usize) -> Option<Tensor> {
    let node = &g.nodes[n];
    let out = &g.values[node.outputs[0]];
    if out.constant.is_some() || out.dtype != Some(DType::I64) {
        return None;
    }
    if let Op::Size = node.op {
        let s = g.values[node.input(0)?].shape.as_ref()?.as_known()?;
        return Some(Tensor::scalar(s.iter().product::<usize>() as i64));
    }
    let dims = out.shape_value.as_ref()?;
    let vals: Vec<i64> = dims.iter().map(|d| d.known().map(|v| v as i64)).collect::<Option<_>>()?;
    let shape = out.shape.as_ref()?.as_known()?;
    Tensor::from_vec(shape, vals).filter(|t| t.len() == dims.len())
}

/// Clip nodes whose bounds turned out constant become the unary form backends fuse.
fn lower_constant_clips(g: &mut Graph) {
    for n in 0..g.nodes.len() {
        if g.nodes[n].op != Op::Clip {
            continue;
        }
        let bound = |i: usize, default: f32| -> Option<f32> {
            match g.nodes[n].input(i) {
                None => Some(default),
                Some(v) => g.constant(v).filter(|t| t.len() == 1).map(|t| t.to_f64_vec()[0] as f32),
            }
        };
        let x_f32 = g.nodes[n].input(0).and_then(|v| g.values[v].dtype) == Some(DType::F32);
        if let (Some(min), Some(max), true) = (bound(1, f32::NEG_INFINITY), bound(2, f32::INFINITY), x_f32) {
            let node = &mut g.nodes[n];
            node.op = Op::Unary(Unary::Clip { min, max });
            node.inputs.truncate(1);
        }
    }
}
