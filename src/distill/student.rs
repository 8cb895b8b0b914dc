//! A student prepared for training: its graph with the trainable initializers lifted out of the
//! constants (so folding never bakes them in), and a tape that runs forward keeping every value
//! and backward through the vector-Jacobian products of `grad`.
//!
//! Training is a decorator over the inference engine: the same CPU kernels run the forward
//! pass; nothing in the inference path knows about gradients.

use super::grad::{has_vjp, vjp};
use super::lora::{self, Adapter};
use crate::backend::cpu::kernels;
use crate::error::{Error, Result};
use crate::ir::passes::{optimize_with, PassOptions};
use crate::ir::{infer::infer_graph, Graph, Op, ValueId};
use crate::onnx;
use crate::onnx::pb::ModelProto;
use crate::tensor::{DType, Tensor};
use std::path::Path;

/// Which parameters train.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Trainable {
    #[default]
    All,
    /// The parameters of the last N layers (nodes holding weights: Gemm, MatMul, Conv, norms).
    LastLayers(usize),
    /// Initializers named here, or all parameters of nodes named here.
    Named(Vec<String>),
    /// Low-rank adapters `W + (alpha/rank)·B·A` on the weights of the Gemm / MatMul / Conv
    /// layers named in `targets` (all of them when empty); the base weights stay frozen.
    Lora { rank: usize, alpha: f32, targets: Vec<String> },
}

impl std::str::FromStr for Trainable {
    type Err = String;
    /// `all`, `last:N`, `lora:R`, `lora:R:layer1,layer2`, or comma-separated layer /
    /// initializer names. LoRA's alpha is 2R (scale 2).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(Trainable::All);
        }
        if let Some(rest) = s.strip_prefix("lora:") {
            let (r, names) = rest.split_once(':').unwrap_or((rest, ""));
            let rank = match r.trim().parse::<usize>() {
                Ok(k) if k > 0 => k,
                _ => return Err(format!("'{s}': lora:R[:layers] needs a positive rank")),
            };
            let targets: Vec<String> = if names.trim().is_empty() {
                Vec::new()
            } else {
                names.split(',').map(|n| n.trim().to_string()).collect()
            };
            if targets.iter().any(String::is_empty) {
                return Err(format!("'{s}': expected lora:R or lora:R:layer1,layer2"));
            }
            return Ok(Trainable::Lora { rank, alpha: 2.0 * rank as f32, targets });
        }
        if let Some(n) = s.strip_prefix("last:") {
            return match n.trim().parse::<usize>() {
                Ok(k) if k > 0 => Ok(Trainable::LastLayers(k)),
                _ => Err(format!("'{s}': last:N needs a positive layer count")),
            };
        }
        let names: Vec<String> = s.split(',').map(|n| n.trim().to_string()).collect();
        if names.iter().any(String::is_empty) {
            return Err(format!("'{s}': expected all, last:N or comma-separated layer names"));
        }
        Ok(Trainable::Named(names))
    }
}

/// A trainable parameter: an initializer of the original model.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub value: ValueId,
    pub tensor: Tensor,
}

pub struct Student {
    pub proto: ModelProto,
    pub graph: Graph,
    /// The trained parameters: initializers, or with LoRA each adapter's `A` and `B` (named
    /// `<weight>.lora_A` / `.lora_B`, their `value` the adapted weight's).
    pub params: Vec<Param>,
    /// LoRA adapters (empty unless [`Trainable::Lora`]).
    pub adapters: Vec<Adapter>,
    /// Per value: does the loss gradient flow into a parameter through it.
    requires_grad: Vec<bool>,
}

/// Ops whose constant inputs count as a layer's parameters.
fn is_layer(op: &Op) -> bool {
    matches!(
        op,
        Op::Gemm { .. }
            | Op::MatMul
            | Op::Conv { .. }
            | Op::ConvTranspose(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
    )
}

impl Student {
    pub fn load(path: &Path, trainable: &Trainable) -> Result<Student> {
        let proto = onnx::read_model_proto(path)?;
        let mut graph = onnx::import_model(&proto, path.parent(), &path.display().to_string())?;
        infer_graph(&mut graph)?;
        if let Trainable::Lora { rank, alpha, targets } = trainable {
            return Self::load_lora(proto, graph, *rank, *alpha, targets);
        }
        // Candidate parameters: f32 initializers of layer nodes (of any node for Named
        // selections), in graph order.
        let mut layers: Vec<(String, Vec<ValueId>)> = Vec::new();
        for n in &graph.nodes {
            let ps: Vec<ValueId> = n
                .inputs
                .iter()
                .flatten()
                .copied()
                .filter(|&v| graph.values[v].constant.as_ref().is_some_and(|t| t.dtype() == DType::F32))
                .collect();
            if !ps.is_empty() && (is_layer(&n.op) || matches!(trainable, Trainable::Named(_))) {
                layers.push((n.name.clone(), ps));
            }
        }
        // BatchNormalization statistics (inputs 3 and 4) are not trained.
        let stats: Vec<ValueId> = graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm { .. }))
            .flat_map(|n| [n.input(3), n.input(4)])
            .flatten()
            .collect();
        let chosen: Vec<ValueId> = match trainable {
            Trainable::All => layers.iter().flat_map(|l| l.1.clone()).collect(),
            Trainable::LastLayers(k) => layers.iter().rev().take(*k).flat_map(|l| l.1.clone()).collect(),
            Trainable::Named(names) => {
                let mut v = Vec::new();
                for name in names {
                    let by_node = layers.iter().find(|l| &l.0 == name).map(|l| l.1.clone());
                    let by_value =
                        graph.find_value(name).filter(|&id| graph.values[id].constant.is_some()).map(|id| vec![id]);
                    v.extend(
                        by_node
                            .or(by_value)
                            .ok_or_else(|| Error::input(name, "no layer or initializer of this name"))?,
                    );
                }
                v
            }
            Trainable::Lora { .. } => unreachable!("handled by load_lora"),
        };
        let mut params: Vec<Param> = Vec::new();
        for v in chosen {
            if stats.contains(&v) || params.iter().any(|p| p.value == v) {
                continue;
            }
            let val = &mut graph.values[v];
            let tensor = (*val.constant.take().expect("chosen among constants")).clone();
            params.push(Param { name: val.name.clone(), value: v, tensor });
        }
        if params.is_empty() {
            return Err(Error::input("trainable", "selects no f32 parameter"));
        }
        optimize_with(&mut graph, PassOptions { fold_batchnorm: false })?;
        // Value ids may have been renumbered by compaction: find the params again by name.
        for p in &mut params {
            p.value =
                graph.find_value(&p.name).ok_or_else(|| Error::input(&p.name, "parameter not used by the graph"))?;
        }
        let mut s = Student { proto, graph, params, adapters: Vec::new(), requires_grad: Vec::new() };
        s.check_differentiable()?;
        Ok(s)
    }

    /// LoRA: lifts the chosen weights out of the constants (frozen, kept in their adapters) and
    /// makes each adapter's `A` and `B` the parameters.
    fn load_lora(proto: ModelProto, mut graph: Graph, rank: usize, alpha: f32, targets: &[String]) -> Result<Student> {
        if rank == 0 {
            return Err(Error::input("lora", "rank must be positive"));
        }
        let mut params = Vec::new();
        let mut adapters = Vec::new();
        for (layer, w, out, inp, out_in) in lora::select(&graph, targets)? {
            let val = &mut graph.values[w];
            let base = (*val.constant.take().expect("selected among constants")).clone();
            let weight = val.name.clone();
            let (a, b) = (params.len(), params.len() + 1);
            let at = Tensor::from_vec(vec![rank, inp], lora::init_a(&weight, rank, inp)).expect("rank x in");
            let bt = Tensor::zeros(DType::F32, &[out, rank]);
            params.push(Param { name: format!("{weight}.lora_A"), value: w, tensor: at });
            params.push(Param { name: format!("{weight}.lora_B"), value: w, tensor: bt });
            let scale = alpha / rank as f32;
            adapters.push(Adapter { layer, weight, value: w, base, rank, scale, out, inp, out_in, a, b });
        }
        optimize_with(&mut graph, PassOptions { fold_batchnorm: false })?;
        for ad in &mut adapters {
            ad.value = graph
                .find_value(&ad.weight)
                .ok_or_else(|| Error::input(&ad.weight, "adapted weight not used by the graph"))?;
            params[ad.a].value = ad.value;
            params[ad.b].value = ad.value;
        }
        let mut s = Student { proto, graph, params, adapters, requires_grad: Vec::new() };
        s.check_differentiable()?;
        Ok(s)
    }

    /// Parameters of the model as it now computes: each adapted weight merged (`W + s·B·A`),
    /// or the trained initializers themselves. (name, tensor) pairs for export.
    pub fn merged_weights(&self) -> Vec<(String, Tensor)> {
        if self.adapters.is_empty() {
            return self.params.iter().map(|p| (p.name.clone(), p.tensor.clone())).collect();
        }
        self.adapters.iter().map(|ad| (ad.weight.clone(), self.effective(ad))).collect()
    }

    fn effective(&self, ad: &Adapter) -> Tensor {
        let f = |k: usize| self.params[k].tensor.as_slice::<f32>().expect("f32 adapter");
        ad.effective(f(ad.a), f(ad.b))
    }

    /// Marks values downstream of parameters and fails on a node there without a gradient.
    fn check_differentiable(&mut self) -> Result<()> {
        let g = &self.graph;
        let mut rg = vec![false; g.values.len()];
        for p in &self.params {
            rg[p.value] = true;
        }
        for n in &g.nodes {
            if n.inputs.iter().flatten().any(|&i| rg[i]) {
                if !has_vjp(&n.op) {
                    return Err(Error::Shape {
                        node: n.name.clone(),
                        op: n.op.name().into(),
                        message: "has no gradient, and lies after a trainable parameter (freeze the layers before it, or choose other layers)".into(),
                    });
                }
                for &o in &n.outputs {
                    rg[o] = true;
                }
            }
        }
        self.requires_grad = rg;
        Ok(())
    }

    pub fn param_count(&self) -> usize {
        self.params.iter().map(|p| p.tensor.len()).sum()
    }

    /// Forward pass keeping every value. Returns the tape (indexed by value id).
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let g = &self.graph;
        let input = *g.inputs.first().ok_or_else(|| Error::input("student", "has no input"))?;
        let mut tape: Vec<Option<Tensor>> = vec![None; g.values.len()];
        tape[input] = Some(x.clone());
        if self.adapters.is_empty() {
            for p in &self.params {
                tape[p.value] = Some(p.tensor.clone());
            }
        }
        for ad in &self.adapters {
            tape[ad.value] = Some(self.effective(ad));
        }
        let mut scratch = Vec::new();
        for node in &g.nodes {
            let ins: Vec<Option<&Tensor>> =
                node.inputs.iter().map(|i| i.and_then(|v| g.constant(v).or(tape[v].as_ref()))).collect();
            let mut outs: Vec<Tensor> = node.outputs.iter().map(|_| Tensor::placeholder()).collect();
            kernels::eval(&node.op, &ins, &mut outs, &mut scratch).map_err(|message| Error::Kernel {
                node: node.name.clone(),
                op: node.op.name().into(),
                message,
            })?;
            for (&o, t) in node.outputs.iter().zip(outs) {
                tape[o] = Some(t);
            }
        }
        Ok(tape)
    }

    /// The first graph output from a tape.
    pub fn logits<'t>(&self, tape: &'t [Option<Tensor>]) -> Result<&'t Tensor> {
        tape[self.graph.outputs[0]].as_ref().ok_or_else(|| Error::input("student", "output not computed"))
    }

    /// Backward pass from d loss / d output 0; returns one gradient per parameter.
    pub fn backward(&self, tape: &[Option<Tensor>], d_out: Tensor) -> Result<Vec<Vec<f32>>> {
        let g = &self.graph;
        let mut grads: Vec<Option<Tensor>> = vec![None; g.values.len()];
        grads[g.outputs[0]] = Some(d_out);
        for node in g.nodes.iter().rev() {
            if node.outputs.iter().all(|&o| grads[o].is_none()) {
                continue;
            }
            let need: Vec<bool> = node.inputs.iter().map(|i| i.is_some_and(|v| self.requires_grad[v])).collect();
            if !need.iter().any(|&b| b) {
                continue;
            }
            let ins: Vec<Option<&Tensor>> =
                node.inputs.iter().map(|i| i.and_then(|v| g.constant(v).or(tape[v].as_ref()))).collect();
            let outs: Vec<&Tensor> = node.outputs.iter().map(|&o| tape[o].as_ref().expect("forward ran")).collect();
            let gout: Vec<Option<&Tensor>> = node.outputs.iter().map(|&o| grads[o].as_ref()).collect();
            let gin = vjp(&node.op, &ins, &outs, &gout, &need).map_err(|message| Error::Kernel {
                node: node.name.clone(),
                op: format!("{} backward", node.op.name()),
                message,
            })?;
            for (i, gi) in node.inputs.iter().zip(gin) {
                let (Some(v), Some(gi)) = (i, gi) else { continue };
                if !self.requires_grad[*v] {
                    continue;
                }
                match &mut grads[*v] {
                    Some(acc) => {
                        let a = acc.as_mut_slice::<f32>().ok_or("gradient type").map_err(|m| Error::Kernel {
                            node: node.name.clone(),
                            op: "backward".into(),
                            message: m.into(),
                        })?;
                        for (x, y) in a.iter_mut().zip(gi.as_slice::<f32>().unwrap_or(&[])) {
                            *x += y;
                        }
                    }
                    slot => *slot = Some(gi),
                }
            }
        }
        let grad_of = |v: ValueId| grads[v].as_ref().and_then(|t| t.as_slice::<f32>());
        if !self.adapters.is_empty() {
            let mut out: Vec<Vec<f32>> = self.params.iter().map(|p| vec![0.0; p.tensor.len()]).collect();
            for ad in &self.adapters {
                if let Some(g) = grad_of(ad.value) {
                    let f = |k: usize| self.params[k].tensor.as_slice::<f32>().expect("f32 adapter");
                    let (da, db) = ad.grads(g, f(ad.a), f(ad.b));
                    out[ad.a] = da;
                    out[ad.b] = db;
                }
            }
            return Ok(out);
        }
        Ok(self
            .params
            .iter()
            .map(|p| grad_of(p.value).map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0; p.tensor.len()]))
            .collect())
    }

    /// Bytes the trained parameters' frozen companions take during training: with LoRA, the
    /// base weights and the `dL/dW_eff` buffers backward fills for them (0 otherwise: the
    /// trained weights are counted as parameters).
    pub fn frozen_bytes(&self) -> usize {
        self.adapters.iter().map(|ad| 2 * ad.base.byte_size()).sum()
    }

    /// Bytes the tape holds for one forward pass of `x` (activations kept for backward).
    pub fn tape_bytes(tape: &[Option<Tensor>]) -> usize {
        tape.iter().flatten().map(Tensor::byte_size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Trainable;

    #[test]
    fn trainable_specs_parse() {
        assert_eq!("all".parse(), Ok(Trainable::All));
        assert_eq!("last:2".parse(), Ok(Trainable::LastLayers(2)));
        assert_eq!("fc1, fc2.W".parse(), Ok(Trainable::Named(vec!["fc1".into(), "fc2.W".into()])));
        assert_eq!("lora:4".parse(), Ok(Trainable::Lora { rank: 4, alpha: 8.0, targets: vec![] }));
        assert_eq!(
            "lora:2:fc1, fc2".parse(),
            Ok(Trainable::Lora { rank: 2, alpha: 4.0, targets: vec!["fc1".into(), "fc2".into()] })
        );
        for bad in ["last:0", "last:x", "fc1,,fc2", "", "lora:0", "lora:x", "lora:2:fc1,,fc2"] {
            assert!(bad.parse::<Trainable>().is_err(), "{bad:?} should not parse");
        }
    }
}
