//! The public entry points: [`Model`] (an imported, optimised graph) and [`Session`] (a model
//! prepared on a backend, runnable from many threads).

use crate::backend::{self, BackendKind, Executable, Support};
use crate::error::{Error, Result};
use crate::ir::{self, Graph};
use crate::onnx;
use crate::quant::{self, Precision};
use crate::tensor::{DType, Shape, Tensor};
use std::path::Path;
use std::sync::Arc;

/// Name, element type and (possibly symbolic) shape of a model input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Option<DType>,
    pub shape: Option<Shape>,
}

/// An imported model: the optimised IR graph.
#[derive(Clone, Debug)]
pub struct Model {
    graph: Arc<Graph>,
}

impl Model {
    /// Loads an ONNX file (external data is resolved beside it), then runs shape inference,
    /// constant folding and graph simplification.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let proto = onnx::read_model_proto(path)?;
        let graph = onnx::import_model(&proto, path.parent(), &path.display().to_string())?;
        Model::from_graph(graph)
    }

    /// Loads an ONNX model from bytes (no external data).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        let proto = onnx::decode_model_proto(bytes, "model bytes")?;
        let graph = onnx::import_model(&proto, None, "model bytes")?;
        Model::from_graph(graph)
    }

    /// Optimises an IR graph and wraps it.
    pub fn from_graph(mut graph: Graph) -> Result<Model> {
        ir::infer::infer_graph(&mut graph)?;
        ir::passes::optimize(&mut graph)?;
        Ok(Model { graph: Arc::new(graph) })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph, shared (for preparing a backend directly, as `alembic bench` does).
    pub fn shared_graph(&self) -> Arc<Graph> {
        self.graph.clone()
    }

    pub fn inputs(&self) -> Vec<TensorInfo> {
        self.graph.inputs.iter().map(|&v| self.info(v)).collect()
    }

    pub fn outputs(&self) -> Vec<TensorInfo> {
        self.graph.outputs.iter().map(|&v| self.info(v)).collect()
    }

    fn info(&self, v: usize) -> TensorInfo {
        let val = self.graph.value(v);
        TensorInfo { name: val.name.clone(), dtype: val.dtype, shape: val.shape.clone() }
    }

    /// How a backend would run each node, in graph order.
    pub fn support(&self, kind: BackendKind) -> Vec<Support> {
        let b = backend::backend(kind);
        self.graph.nodes.iter().map(|n| b.supports(&self.graph, n)).collect()
    }

    /// How a backend would run each node of the graph quantized to `precision`, in order.
    pub fn support_at(&self, kind: BackendKind, precision: Precision) -> Vec<(String, &'static str, Support)> {
        let g = self.graph_at(precision);
        let b = backend::backend(kind);
        g.nodes.iter().map(|n| (n.name.clone(), n.op.name(), b.supports(&g, n))).collect()
    }

    /// The graph with weights quantized to `precision` (shared, not copied, for f32).
    fn graph_at(&self, precision: Precision) -> Arc<Graph> {
        match precision {
            Precision::F32 => self.graph.clone(),
            p => Arc::new(quant::quantize_graph(&self.graph, p)),
        }
    }

    /// Prepares the model for running.
    pub fn session(&self, options: SessionOptions) -> Result<Session> {
        let graph = self.graph_at(options.precision);
        let exec = backend::backend(options.backend).prepare(graph.clone())?;
        Ok(Session { graph, exec, backend: options.backend, precision: options.precision, threads: options.threads })
    }
}

/// How to build a [`Session`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SessionOptions {
    pub backend: BackendKind,
    /// Weight precision: Gemm/MatMul weights are quantized before the backend sees the graph.
    pub precision: Precision,
    /// Intra-op threads of the CPU kernels a run may use, the calling thread included (None:
    /// the whole pool, sized once per process from MATMUL_NUM_THREADS or the cores, at most 4).
    pub threads: Option<usize>,
}

impl SessionOptions {
    pub fn backend(mut self, kind: BackendKind) -> Self {
        self.backend = kind;
        self
    }

    pub fn precision(mut self, p: Precision) -> Self {
        self.precision = p;
        self
    }

    /// Caps the CPU kernels of this session's runs at `n` threads (1: run on the caller only).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.max(1));
        self
    }
}

/// A model prepared on a backend. `Send + Sync`: call [`Session::run`] from any thread.
pub struct Session {
    graph: Arc<Graph>,
    exec: Box<dyn Executable>,
    backend: BackendKind,
    precision: Precision,
    threads: Option<usize>,
}

/// Named outputs of a run, in the model's output order.
#[derive(Clone, Debug, Default)]
pub struct Outputs(pub Vec<(String, Tensor)>);

/// A run's inputs in the graph's order (inline up to 8).
type Ordered<'t> = smallvec::SmallVec<[&'t Tensor; 8]>;

impl Outputs {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.0.iter().map(|(n, t)| (n.as_str(), t))
    }
}

impl Session {
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The graph the session runs (after quantization).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs with named inputs. Every model input must be given exactly once, with the declared
    /// element type and a shape matching the declared one (symbolic dims bind consistently).
    pub fn run<'a>(&self, inputs: impl IntoIterator<Item = (&'a str, Tensor)>) -> Result<Outputs> {
        let given: Vec<(&str, Tensor)> = inputs.into_iter().collect();
        let refs: Vec<(&str, &Tensor)> = given.iter().map(|(n, t)| (*n, t)).collect();
        self.run_refs(&refs)
    }

    /// As [`Session::run`], borrowing the inputs.
    pub fn run_refs(&self, inputs: &[(&str, &Tensor)]) -> Result<Outputs> {
        let ordered = self.check_inputs(inputs)?;
        let outs = self.limited(|| self.exec.run(&ordered))?;
        Ok(Outputs(self.output_names().zip(outs).collect()))
    }

    /// As [`Session::run_refs`], writing the outputs into `outputs` and reusing its buffers
    /// (pass `Outputs::default()` the first time). For a serving loop: on the CPU backend,
    /// once a run with the same input shapes has filled `outputs`, a run allocates nothing.
    /// On an error `outputs` keeps the previous run's values.
    pub fn run_into(&self, inputs: &[(&str, &Tensor)], outputs: &mut Outputs) -> Result<()> {
        let ordered = self.check_inputs(inputs)?;
        let fits = outputs.0.len() == self.graph.outputs.len()
            && outputs.0.iter().zip(&self.graph.outputs).all(|((n, _), &o)| *n == self.graph.value(o).name);
        if !fits {
            outputs.0 = self.output_names().map(|n| (n, Tensor::placeholder())).collect();
        }
        self.limited(|| self.exec.run_into(&ordered, &mut |k, t| outputs.0[k].1.assign(t)))
    }

    fn output_names(&self) -> impl Iterator<Item = String> + '_ {
        self.graph.outputs.iter().map(|&o| self.graph.value(o).name.clone())
    }

    /// As [`Session::run_refs`], also returning each node's wall time (node, op, duration) in
    /// execution order. `Error::Unavailable` on backends without per-node timing.
    pub fn profile(&self, inputs: &[(&str, &Tensor)]) -> Result<(Outputs, Vec<crate::backend::cpu::NodeTime>)> {
        let ordered = self.check_inputs(inputs)?;
        let (outs, times) = self.limited(|| self.exec.profile(&ordered))?;
        Ok((Outputs(self.output_names().zip(outs).collect()), times))
    }

    fn limited<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.threads {
            Some(n) => crate::backend::cpu::kernels::threads::with_threads(n, f),
            None => f(),
        }
    }

    /// The inputs in the graph's order, checked. Inline for up to 8 inputs and symbols bound
    /// in a small inline list, so a steady-state `run_into` allocates nothing here.
    fn check_inputs<'t>(&self, inputs: &[(&str, &'t Tensor)]) -> Result<Ordered<'t>> {
        let g = &*self.graph;
        for (i, (name, _)) in inputs.iter().enumerate() {
            if !g.inputs.iter().any(|&v| g.value(v).name == *name) {
                let expected: Vec<&str> = g.inputs.iter().map(|&v| g.value(v).name.as_str()).collect();
                return Err(Error::input(
                    *name,
                    format!("the model has no such input (inputs: {})", expected.join(", ")),
                ));
            }
            if inputs[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::input(*name, "given twice"));
            }
        }
        let mut bindings = crate::tensor::Bindings::new();
        let mut ordered = Ordered::new();
        for &v in &g.inputs {
            let val = g.value(v);
            let t = inputs
                .iter()
                .find(|(n, _)| *n == val.name)
                .map(|(_, t)| *t)
                .ok_or_else(|| Error::input(&val.name, "missing"))?;
            if let Some(dt) = val.dtype {
                if dt != t.dtype() {
                    return Err(Error::input(&val.name, format!("element type {} given, {dt} expected", t.dtype())));
                }
            }
            if let Some(shape) = &val.shape {
                shape.bind(t.shape(), &mut bindings).map_err(|m| Error::input(&val.name, m))?;
            }
            ordered.push(t);
        }
        Ok(ordered)
    }
}
