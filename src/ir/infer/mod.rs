//! Load-time type and shape inference with symbolic dimensions.
//!
//! Each op family has symbolic rules (`math`, `nn`, `array`). Where a family has no rule for a
//! node, or its rule cannot tell, and every input shape is known, the node's CPU kernel is run
//! on zero-filled inputs of those shapes: the kernel is the definition, so inference and
//! execution can never disagree.

mod array;
mod math;
mod nn;
mod quant;

use super::graph::{Graph, Node};
use super::op::Op;
use crate::backend::cpu::kernels;
use crate::error::{Error, Result};
use crate::tensor::{numel, DType, Dim, Shape, Tensor};

/// What inference knows of one input of a node.
#[derive(Clone, Copy, Debug)]
pub struct InFact<'a> {
    pub dtype: Option<DType>,
    pub shape: Option<&'a [Dim]>,
    pub constant: Option<&'a Tensor>,
    /// Elements of a small 1-D integer value derived from shapes, possibly symbolic.
    pub shape_value: Option<&'a [Dim]>,
}

impl InFact<'_> {
    pub fn rank(&self) -> Option<usize> {
        self.shape.map(|s| s.len())
    }

    /// Integer contents known at load time: constant values, or fully known shape values.
    pub fn int_values(&self) -> Option<Vec<i64>> {
        if let Some(c) = self.constant {
            return c.to_i64_vec();
        }
        self.shape_value?.iter().map(|d| d.known().map(|v| v as i64)).collect()
    }
}

/// What a rule concludes about one output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutFact {
    pub dtype: Option<DType>,
    pub shape: Option<Vec<Dim>>,
    pub shape_value: Option<Vec<Dim>>,
}

impl OutFact {
    pub fn new(dtype: Option<DType>, shape: Option<Vec<Dim>>) -> OutFact {
        OutFact { dtype, shape, shape_value: None }
    }
}

/// A rule's answer: `Ok(None)` = no rule for this op (use the kernel fallback).
pub type RuleResult = std::result::Result<Option<Vec<OutFact>>, String>;

fn rule(op: &Op, inputs: &[Option<InFact>], n_out: usize) -> RuleResult {
    if let Some(r) = math::rule(op, inputs, n_out)? {
        return Ok(Some(r));
    }
    if let Some(r) = nn::rule(op, inputs, n_out)? {
        return Ok(Some(r));
    }
    if let Some(r) = quant::rule(op, inputs, n_out)? {
        return Ok(Some(r));
    }
    array::rule(op, inputs, n_out)
}

/// Largest input, in elements, the kernel fallback is willing to materialise.
const FALLBACK_LIMIT: usize = 1 << 22;

/// Runs the node's kernel on zeros (or the constants) to learn output types and shapes.
fn fallback(op: &Op, inputs: &[Option<InFact>], n_out: usize) -> Option<Vec<OutFact>> {
    let mut owned = Vec::with_capacity(inputs.len());
    let mut total = 0;
    for f in inputs {
        let Some(f) = f else {
            owned.push(None);
            continue;
        };
        if let Some(c) = f.constant {
            owned.push(Some(c.clone()));
            continue;
        }
        if f.shape_value.is_some() && f.int_values().is_none() {
            return None; // a symbolic shape argument: zeros would mislead
        }
        let dims: Vec<usize> = f.shape?.iter().map(Dim::known).collect::<Option<_>>()?;
        total += numel(&dims);
        if total > FALLBACK_LIMIT {
            return None;
        }
        let t = match f.int_values() {
            Some(v) => Tensor::from_vec(dims, v)?,
            None => Tensor::zeros(f.dtype?, &dims),
        };
        owned.push(Some(t));
    }
    let refs: Vec<Option<&Tensor>> = owned.iter().map(|t| t.as_ref()).collect();
    let mut outs: Vec<Tensor> = (0..n_out).map(|_| Tensor::empty(DType::F32)).collect();
    let mut scratch = Vec::new();
    kernels::eval(op, &refs, &mut outs, &mut scratch).ok()?;
    Some(outs.iter().map(|t| OutFact::new(Some(t.dtype()), Some(Shape::known(t.shape()).0))).collect())
}

/// Infers dtypes and shapes for every node output, in order. Declared shapes are kept where
/// inference cannot tell; contradictions between a rule and the inputs are load errors.
pub fn infer_graph(graph: &mut Graph) -> Result<()> {
    for n in 0..graph.nodes.len() {
        let facts = infer_node(graph, &graph.nodes[n])?;
        let node = &graph.nodes[n];
        for (k, &o) in node.outputs.iter().enumerate() {
            let Some(f) = facts.get(k) else { continue };
            let v = &mut graph.values[o];
            if f.dtype.is_some() {
                v.dtype = f.dtype;
            }
            if let Some(s) = &f.shape {
                v.shape = Some(Shape(merge_dims(s, v.shape.as_ref())));
            }
            v.shape_value = f.shape_value.clone();
        }
    }
    Ok(())
}

/// Prefers inferred dims, but keeps a declared name or value where inference says Unknown.
fn merge_dims(inferred: &[Dim], declared: Option<&Shape>) -> Vec<Dim> {
    match declared {
        Some(d) if d.rank() == inferred.len() => {
            inferred.iter().zip(&d.0).map(|(i, d)| if *i == Dim::Unknown { d.clone() } else { i.clone() }).collect()
        }
        _ => inferred.to_vec(),
    }
}

/// Inference for one node against the current graph facts.
pub fn infer_node(graph: &Graph, node: &Node) -> Result<Vec<OutFact>> {
    let inputs: Vec<Option<InFact>> = node
        .inputs
        .iter()
        .map(|i| {
            i.map(|i| {
                let v = graph.value(i);
                InFact {
                    dtype: v.dtype,
                    shape: v.shape.as_ref().map(|s| s.0.as_slice()),
                    constant: v.constant.as_deref(),
                    shape_value: v.shape_value.as_deref(),
                }
            })
        })
        .collect();
    let n_out = node.outputs.len();
    let shape_err = |message: String| Error::Shape { node: node.name.clone(), op: node.op.name().to_string(), message };
    let ruled = rule(&node.op, &inputs, n_out).map_err(shape_err)?;
    let complete = |r: &Vec<OutFact>| {
        r.iter().all(|f| f.dtype.is_some() && f.shape.as_ref().is_some_and(|s| s.iter().all(|d| *d != Dim::Unknown)))
    };
    match ruled {
        Some(r) if complete(&r) => Ok(r),
        other => Ok(fallback(&node.op, &inputs, n_out).or(other).unwrap_or_else(|| vec![OutFact::default(); n_out])),
    }
}

/// Shared helper: symbolic broadcasting of optional shapes.
pub fn broadcast(a: Option<&[Dim]>, b: Option<&[Dim]>) -> Option<Vec<Dim>> {
    Some(crate::tensor::broadcast_dims(a?, b?))
}
