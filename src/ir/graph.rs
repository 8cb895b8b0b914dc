//! The graph: values (typed, shaped, maybe constant) and nodes in topological order.

use super::op::Op;
use crate::tensor::{DType, Dim, Shape, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// A tensor flowing through the graph.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// Element type; `None` until shape inference has seen the producer.
    pub dtype: Option<DType>,
    /// Shape; `None` when even the rank is unknown at load time.
    pub shape: Option<Shape>,
    /// Constant contents (initializers and folded results).
    pub constant: Option<Arc<Tensor>>,
    /// For small 1-D integer values computed from shapes (Shape→Gather→Concat chains), their
    /// elements as dimensions, which may be symbolic. Lets Reshape/Expand infer symbolic shapes.
    pub shape_value: Option<Vec<Dim>>,
}

impl Value {
    pub fn new(name: impl Into<String>) -> Value {
        Value { name: name.into(), dtype: None, shape: None, constant: None, shape_value: None }
    }
}

/// One operator application.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// `None` marks an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

impl Node {
    /// The i-th input if present.
    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }
}

/// A model's computation graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub values: Vec<Value>,
    /// Topologically ordered.
    pub nodes: Vec<Node>,
    /// Run-time inputs (initializers are not listed here).
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Opset of the default ONNX domain the model was imported from.
    pub opset: i64,
}

impl Graph {
    pub fn add_value(&mut self, v: Value) -> ValueId {
        self.values.push(v);
        self.values.len() - 1
    }

    pub fn add_constant(&mut self, name: impl Into<String>, t: Tensor) -> ValueId {
        let mut v = Value::new(name);
        v.dtype = Some(t.dtype());
        v.shape = Some(Shape::known(t.shape()));
        v.constant = Some(Arc::new(t));
        self.add_value(v)
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id]
    }

    pub fn constant(&self, id: ValueId) -> Option<&Tensor> {
        self.values[id].constant.as_deref()
    }

    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// For each value, the nodes reading it (graph outputs not counted).
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.values.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            for i in node.inputs.iter().flatten() {
                if !c[*i].contains(&n) {
                    c[*i].push(n);
                }
            }
        }
        c
    }

    /// Which node produces each value.
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            for &o in &node.outputs {
                p[o] = Some(n);
            }
        }
        p
    }

    /// Replaces every use of `from` by `to` (node inputs and graph outputs).
    pub fn replace_uses(&mut self, from: ValueId, to: ValueId) {
        for node in &mut self.nodes {
            for i in node.inputs.iter_mut().flatten() {
                if *i == from {
                    *i = to;
                }
            }
        }
        for o in &mut self.outputs {
            if *o == from {
                *o = to;
            }
        }
    }

    /// Drops values nothing refers to and renumbers the rest.
    pub fn compact(&mut self) {
        let mut used = vec![false; self.values.len()];
        for &i in self.inputs.iter().chain(&self.outputs) {
            used[i] = true;
        }
        for n in &self.nodes {
            for &i in n.inputs.iter().flatten().chain(&n.outputs) {
                used[i] = true;
            }
        }
        let mut remap = vec![usize::MAX; self.values.len()];
        let mut kept = Vec::with_capacity(self.values.len());
        for (i, v) in std::mem::take(&mut self.values).into_iter().enumerate() {
            if used[i] {
                remap[i] = kept.len();
                kept.push(v);
            }
        }
        self.values = kept;
        for n in &mut self.nodes {
            for i in n.inputs.iter_mut().flatten() {
                *i = remap[*i];
            }
            for o in &mut n.outputs {
                *o = remap[*o];
            }
        }
        for i in self.inputs.iter_mut().chain(self.outputs.iter_mut()) {
            *i = remap[*i];
        }
    }

    /// Removes nodes whose outputs nobody needs.
    pub fn prune_dead_nodes(&mut self) {
        let mut needed = vec![false; self.values.len()];
        for &o in &self.outputs {
            needed[o] = true;
        }
        let mut keep = vec![false; self.nodes.len()];
        for (n, node) in self.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|&o| needed[o]) {
                keep[n] = true;
                for &i in node.inputs.iter().flatten() {
                    needed[i] = true;
                }
            }
        }
        let mut k = keep.into_iter();
        self.nodes.retain(|_| k.next().unwrap_or(false));
        self.compact();
    }

    /// Op histogram, most frequent first.
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut h: HashMap<&'static str, usize> = HashMap::new();
        for n in &self.nodes {
            *h.entry(n.op.name()).or_default() += 1;
        }
        let mut v: Vec<_> = h.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    /// Constants read by nodes: (count of elements, bytes).
    pub fn parameter_stats(&self) -> (usize, usize) {
        let mut seen = vec![false; self.values.len()];
        let (mut count, mut bytes) = (0, 0);
        for n in &self.nodes {
            for &i in n.inputs.iter().flatten() {
                if let (Some(t), false) = (self.constant(i), seen[i]) {
                    seen[i] = true;
                    count += t.len();
                    bytes += t.byte_size();
                }
            }
        }
        (count, bytes)
    }
}
