//! What an op parser sees of an ONNX node: attributes with defaults, inputs, the opset, and a
//! way to add constant inputs (older opsets pass as attributes what newer ones pass as inputs).

use super::tensor_proto;
use crate::error::{Error, Result};
use crate::ir::{Graph, ValueId};
use crate::onnx::pb::{AttributeProto, NodeProto};
use crate::tensor::Tensor;

pub struct NodeCtx<'a> {
    pub node: &'a NodeProto,
    /// Version of the node's domain in the model's opset imports.
    pub opset: i64,
    pub graph: &'a mut Graph,
    /// Resolved inputs, `None` for omitted optional ones. Parsers may extend or rewrite it.
    pub inputs: Vec<Option<ValueId>>,
}

impl<'a> NodeCtx<'a> {
    /// "node 'conv1' (Conv)" — the location prefix of every import error.
    pub fn location(&self) -> String {
        format!("node '{}' ({})", self.node.name, self.node.op_type)
    }

    pub fn err(&self, message: impl Into<String>) -> Error {
        Error::import(self.location(), message)
    }

    fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn int_opt(&self, name: &str) -> Option<i64> {
        self.attr(name).map(|a| a.i)
    }

    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.int_opt(name).unwrap_or(default)
    }

    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map(|a| a.f).unwrap_or(default)
    }

    pub fn float_opt(&self, name: &str) -> Option<f32> {
        self.attr(name).map(|a| a.f)
    }

    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.attr(name).map(|a| a.floats.clone())
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        match self.attr(name) {
            None => Ok(default.to_string()),
            Some(a) => String::from_utf8(a.s.clone()).map_err(|_| self.err(format!("attribute {name} is not UTF-8"))),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        match self.attr(name).and_then(|a| a.t.as_ref()) {
            None => Ok(None),
            Some(t) => tensor_proto::decode(t, None, &format!("{} attribute {name}", self.location())).map(Some),
        }
    }

    /// Non-negative integers (kernel sizes, strides), rejecting negative values.
    pub fn usizes(&self, name: &str) -> Result<Option<Vec<usize>>> {
        match self.ints(name) {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(|&x| usize::try_from(x).map_err(|_| self.err(format!("attribute {name} has negative value {x}"))))
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    /// Boolean attribute stored as an int.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        self.int_opt(name).map(|v| v != 0).unwrap_or(default)
    }

    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    /// Constant contents of input `i`, if it is present and constant.
    pub fn const_input(&self, i: usize) -> Option<&Tensor> {
        self.input(i).and_then(|v| self.graph.constant(v))
    }

    /// Requires at least `n` present inputs.
    pub fn require_inputs(&self, n: usize) -> Result<()> {
        for i in 0..n {
            if self.input(i).is_none() {
                return Err(self.err(format!("needs at least {n} inputs, input {i} is missing")));
            }
        }
        Ok(())
    }

    /// Puts a constant at input position `i` (padding with omitted inputs), for attribute forms
    /// of older opsets.
    pub fn set_const_input(&mut self, i: usize, t: Tensor, what: &str) {
        let name = format!("{}::{what}", self.node.name);
        let id = self.graph.add_constant(name, t);
        if self.inputs.len() <= i {
            self.inputs.resize(i + 1, None);
        }
        self.inputs[i] = Some(id);
    }
}
