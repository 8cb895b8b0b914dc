//! What the bench times: one (backend, precision) prepared on a model with fixed inputs.
//!
//! Every engine plugs in through [`open`]: it loads and prepares the model (the bench times
//! this as "init", split into [`InitPhases`]) and returns a [`Target`], or says why the
//! combination is unsupported.

use crate::backend::cpu::NodeTime;
use crate::backend::{self, BackendKind, Executable};
use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::quant;
use crate::tensor::Tensor;
use crate::Model;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Numeric precision a combination runs at. `f16`, `int8` and `int4` are Alembic's weight-only
/// quantization (f32 activations); `w8a8` quantizes the activations of those layers to int8 per
/// row as well (integer GEMM/Conv).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F16,
    Int8,
    Int4,
    W8A8,
}

impl Precision {
    pub const ALL: [Precision; 5] = [Precision::F32, Precision::F16, Precision::Int8, Precision::Int4, Precision::W8A8];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
            Precision::W8A8 => "w8a8",
        }
    }

    /// Alembic's weight precision for this, if it has one.
    pub fn weights(self) -> Option<quant::Precision> {
        match self {
            Precision::F32 => Some(quant::Precision::F32),
            Precision::F16 => Some(quant::Precision::F16),
            Precision::Int8 => Some(quant::Precision::Int8),
            Precision::Int4 => Some(quant::Precision::Int4),
            Precision::W8A8 => Some(quant::Precision::W8a8),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Precision::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<&str> = Precision::ALL.iter().map(|p| p.name()).collect();
            format!("unknown precision '{s}' (known: {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Backend names `--backends` accepts.
pub const BACKENDS: [&str; 4] = ["cpu", "wgpu", "tract", "ort"];

/// Where the init time went, milliseconds (phases an engine does not separate are absent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InitPhases {
    /// Reading the file, import, shape inference and graph passes (Alembic), or the engine's load.
    pub load_ms: Option<f64>,
    /// Weight quantization (Alembic, precisions other than f32).
    pub quantize_ms: Option<f64>,
    /// Backend preparation: arena planning (cpu); kernel selection and constant upload (wgpu;
    /// its pipelines compile and buffers bind at the first inference).
    pub prepare_ms: Option<f64>,
}

/// A prepared combination holding its inputs.
pub trait Target {
    /// One inference; outputs are dropped (inside the timed region, for every backend alike).
    fn run(&mut self) -> Result<()>;
    /// One inference timed per node, where the backend can.
    fn profile(&mut self) -> Option<Result<Vec<NodeTime>>> {
        None
    }
    /// How [`Target::profile`] measures (`cpu-wall`, `gpu-timestamp-query`, `cpu-submit-wait`).
    fn profile_clock(&self) -> Option<&'static str> {
        None
    }
    /// Bytes of GPU buffers held (wgpu), read after the warm-up.
    fn gpu_bytes(&self) -> Option<u64> {
        None
    }
    /// One line about how the engine runs this combination (adapter, fallbacks, threads).
    fn detail(&self) -> Option<String> {
        None
    }
}

/// The result of preparing a combination.
pub enum Opened {
    Ready(Box<dyn Target>, InitPhases),
    Unsupported(String),
}

fn ms_since(t: Instant) -> Option<f64> {
    Some(t.elapsed().as_secs_f64() * 1e3)
}

/// Loads and prepares `model` on `backend` at `precision`, for running on `inputs`.
/// `threads`: intra-op threads asked for (engines that take it at load time use it).
pub fn open(
    backend: &str,
    precision: Precision,
    model: &Path,
    inputs: Vec<(String, Tensor)>,
    threads: Option<usize>,
) -> Result<Opened> {
    let unsupported = |why: &str| Ok(Opened::Unsupported(why.to_string()));
    match backend {
        "cpu" | "wgpu" => {
            let Some(wp) = precision.weights() else {
                return unsupported("no Alembic precision for this");
            };
            if backend == "wgpu" {
                // Opening the adapter is once per process, so it is not part of any init.
                #[cfg(feature = "wgpu")]
                if let Err(e) = backend::wgpu::Ctx::shared() {
                    return unsupported(&e.to_string());
                }
                #[cfg(not(feature = "wgpu"))]
                return unsupported("the wgpu backend is not built in (cargo feature 'wgpu')");
            }
            let mut ph = InitPhases::default();
            let t = Instant::now();
            let m = Model::load(model)?;
            ph.load_ms = ms_since(t);
            let t = Instant::now();
            let graph = match wp {
                quant::Precision::F32 => m.shared_graph(),
                p => Arc::new(quant::quantize_graph(m.graph(), p)),
            };
            if wp != quant::Precision::F32 {
                ph.quantize_ms = ms_since(t);
            }
            let quantized = graph.nodes.iter().filter(|n| matches!(n.op.name(), "QGemm" | "QConv")).count();
            let inputs = ordered(&graph, inputs)?;
            let t = Instant::now();
            let target: Box<dyn Target> = if backend == "cpu" {
                let exec = backend::backend(BackendKind::Cpu).prepare(graph.clone())?;
                ph.prepare_ms = ms_since(t);
                let detail = (wp != quant::Precision::F32).then(|| format!("{quantized} node(s) quantized to {wp}"));
                let detail = match (detail, threads) {
                    (d, None) => d,
                    (None, Some(t)) => Some(format!("{t} thread(s)")),
                    (Some(d), Some(t)) => Some(format!("{d}; {t} thread(s)")),
                };
                Box::new(AlembicTarget { exec, inputs, detail, threads, outputs: Vec::new() })
            } else {
                wgpu_target(graph, inputs, wp, quantized)?
            };
            if ph.prepare_ms.is_none() {
                ph.prepare_ms = ms_since(t);
            }
            Ok(Opened::Ready(target, ph))
        }
        "tract" => {
            if precision != Precision::F32 {
                return unsupported("tract runs the model as written (f32); Alembic's quantization is its own");
            }
            open_tract(model, inputs)
        }
        "ort" => open_ort(precision, model, inputs, threads),
        other => unsupported(&format!("unknown backend '{other}' (known: {})", BACKENDS.join(", "))),
    }
}

#[cfg(feature = "tract")]
fn open_tract(model: &Path, inputs: Vec<(String, Tensor)>) -> Result<Opened> {
    let t = Instant::now();
    let engine = crate::teacher::TractEngine::load(model)?;
    let ph = InitPhases { load_ms: ms_since(t), ..Default::default() };
    let detail = "tract 0.23, single-threaded; optimises per input shape at the first inference";
    Ok(Opened::Ready(Box::new(EngineTarget::new(inputs, detail.into(), engine)), ph))
}

#[cfg(not(feature = "tract"))]
fn open_tract(_: &Path, _: Vec<(String, Tensor)>) -> Result<Opened> {
    Ok(Opened::Unsupported(
        "tract: this build of alembic was built without the tract feature (cargo feature 'tract')".into(),
    ))
}

#[cfg(feature = "ort")]
fn open_ort(
    precision: Precision,
    model: &Path,
    inputs: Vec<(String, Tensor)>,
    threads: Option<usize>,
) -> Result<Opened> {
    if precision != Precision::F32 {
        return Ok(Opened::Unsupported("ONNX Runtime runs the model as written (f32)".into()));
    }
    if let Err(e) = crate::teacher::ort::available() {
        return Ok(Opened::Unsupported(e.to_string()));
    }
    let n = threads.unwrap_or(1);
    let t = Instant::now();
    let engine = crate::teacher::OrtEngine::load_with_threads(model, n)?;
    let ph = InitPhases { load_ms: ms_since(t), ..Default::default() };
    let detail = format!("onnxruntime, {n} intra-op thread(s), graph optimisation level 1");
    Ok(Opened::Ready(Box::new(EngineTarget::new(inputs, detail, engine)), ph))
}

#[cfg(not(feature = "ort"))]
fn open_ort(_: Precision, _: &Path, _: Vec<(String, Tensor)>, _: Option<usize>) -> Result<Opened> {
    Ok(Opened::Unsupported("ONNX Runtime is not built in (cargo feature 'ort')".into()))
}

/// Inputs in the graph's input order.
fn ordered(graph: &Graph, mut inputs: Vec<(String, Tensor)>) -> Result<Vec<Tensor>> {
    graph
        .inputs
        .iter()
        .map(|&v| {
            let name = &graph.value(v).name;
            let k = inputs.iter().position(|(n, _)| n == name).ok_or_else(|| Error::input(name, "missing"))?;
            Ok(inputs.swap_remove(k).1)
        })
        .collect()
}

/// Alembic's CPU engine on a prepared graph.
struct AlembicTarget {
    exec: Box<dyn Executable>,
    inputs: Vec<Tensor>,
    detail: Option<String>,
    /// The CPU kernels' thread limit for this combination.
    threads: Option<usize>,
    /// The last run's outputs; each run writes into them (`Executable::run_into`), as a
    /// serving loop would, so a steady-state CPU run allocates nothing.
    outputs: Vec<Tensor>,
}

/// Runs `f` with the CPU kernels capped at `threads` (none: the whole pool).
fn limited<R>(threads: Option<usize>, f: impl FnOnce() -> R) -> R {
    match threads {
        Some(t) => backend::cpu::kernels::threads::with_threads(t, f),
        None => f(),
    }
}

impl Target for AlembicTarget {
    fn run(&mut self) -> Result<()> {
        let refs: smallvec::SmallVec<[&Tensor; 8]> = self.inputs.iter().collect();
        let (exec, outputs) = (&self.exec, &mut self.outputs);
        let run = || {
            exec.run_into(&refs, &mut |k, t| {
                if k >= outputs.len() {
                    outputs.resize_with(k + 1, Tensor::placeholder);
                }
                outputs[k].assign(t)
            })
        };
        limited(self.threads, run)
    }

    fn profile(&mut self) -> Option<Result<Vec<NodeTime>>> {
        let refs: Vec<&Tensor> = self.inputs.iter().collect();
        Some(limited(self.threads, || self.exec.profile(&refs).map(|(_, times)| times)))
    }

    fn profile_clock(&self) -> Option<&'static str> {
        Some("cpu-wall")
    }

    fn detail(&self) -> Option<String> {
        self.detail.clone()
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_target(
    graph: Arc<Graph>,
    inputs: Vec<Tensor>,
    wp: quant::Precision,
    quantized: usize,
) -> Result<Box<dyn Target>> {
    let ctx = backend::wgpu::Ctx::shared()?;
    let plan = backend::wgpu::WgpuBackend::with_context(ctx.clone()).plan(graph)?;
    let fallback = plan.fallback_nodes();
    let mut detail = format!("{}", ctx.report);
    if !fallback.is_empty() {
        detail += &format!("; {} node(s) on the CPU: {}", fallback.len(), fallback.join(", "));
    }
    if wp != quant::Precision::F32 {
        detail += &format!("; {quantized} node(s) quantized to {wp}");
    }
    Ok(Box::new(WgpuTarget { plan, inputs, detail }))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_target(_: Arc<Graph>, _: Vec<Tensor>, _: quant::Precision, _: usize) -> Result<Box<dyn Target>> {
    Err(Error::Unavailable("the wgpu backend is not built in".into()))
}

#[cfg(feature = "wgpu")]
struct WgpuTarget {
    plan: backend::wgpu::WgpuPlan,
    inputs: Vec<Tensor>,
    detail: String,
}

#[cfg(feature = "wgpu")]
impl Target for WgpuTarget {
    fn run(&mut self) -> Result<()> {
        let refs: Vec<&Tensor> = self.inputs.iter().collect();
        self.plan.run(&refs).map(drop)
    }

    fn profile(&mut self) -> Option<Result<Vec<NodeTime>>> {
        let refs: Vec<&Tensor> = self.inputs.iter().collect();
        Some(self.plan.profile(&refs).map(|(_, times)| times))
    }

    fn profile_clock(&self) -> Option<&'static str> {
        Some(self.plan.clock().name())
    }

    fn gpu_bytes(&self) -> Option<u64> {
        Some(self.plan.gpu_bytes())
    }

    fn detail(&self) -> Option<String> {
        Some(self.detail.clone())
    }
}

/// Adapts a reference engine (`teacher::Engine`: tract, ONNX Runtime) to a [`Target`].
pub struct EngineTarget<E> {
    inputs: Vec<(String, Tensor)>,
    detail: String,
    engine: E,
}

impl<E: crate::teacher::Engine> EngineTarget<E> {
    pub fn new(inputs: Vec<(String, Tensor)>, detail: String, engine: E) -> Self {
        EngineTarget { inputs, detail, engine }
    }
}

impl<E: crate::teacher::Engine> Target for EngineTarget<E> {
    fn run(&mut self) -> Result<()> {
        let refs: Vec<(&str, &Tensor)> = self.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.engine.run(&refs).map(drop)
    }

    fn detail(&self) -> Option<String> {
        Some(self.detail.clone())
    }
}
