//! Execution backends. Each one says which nodes it can run (a capability query) and prepares
//! an executable plan for a graph; `Session` picks one by [`BackendKind`].

pub mod cpu;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use crate::error::Result;
use crate::ir::{Graph, Node};
use crate::tensor::Tensor;
use std::sync::Arc;

/// Which engine runs a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BackendKind {
    /// The CPU reference engine (f32, every op).
    #[default]
    Cpu,
    /// WGSL compute kernels on wgpu (feature `wgpu`), CPU fallback per node.
    #[cfg(feature = "wgpu")]
    Wgpu,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(BackendKind::Cpu),
            #[cfg(feature = "wgpu")]
            "wgpu" | "gpu" => Ok(BackendKind::Wgpu),
            #[cfg(not(feature = "wgpu"))]
            "wgpu" | "gpu" => Err("backend 'wgpu' is not built in (enable the cargo feature 'wgpu')".into()),
            #[cfg(feature = "wgpu")]
            other => Err(format!("unknown backend '{other}' (available: cpu, wgpu)")),
            #[cfg(not(feature = "wgpu"))]
            other => Err(format!("unknown backend '{other}' (available: cpu)")),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => "wgpu",
        })
    }
}

/// A backend's answer for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    Native,
    /// Runs, but on another engine (named), e.g. a GPU node falling back to the CPU.
    Fallback(String),
    Unsupported(String),
}

pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// Whether (and how) this backend runs `node` of `graph`.
    fn supports(&self, graph: &Graph, node: &Node) -> Support;
    /// Plans the graph for execution.
    fn prepare(&self, graph: Arc<Graph>) -> Result<Box<dyn Executable>>;
}

/// A prepared graph. `run` may be called from several threads at once.
pub trait Executable: Send + Sync {
    /// Runs with inputs in the order of `Graph::inputs` (already validated), returning the
    /// graph outputs in order.
    fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>>;

    /// As `run`, handing each graph output (index, tensor) to `sink` instead of returning it,
    /// so a caller can copy it into a buffer it keeps. The CPU plan hands out its own arena
    /// buffers: with a sink that reuses its buffers, a steady-state run allocates nothing.
    fn run_into(&self, inputs: &[&Tensor], sink: &mut dyn FnMut(usize, &Tensor)) -> Result<()> {
        for (k, t) in self.run(inputs)?.iter().enumerate() {
            sink(k, t);
        }
        Ok(())
    }

    /// As `run`, also timing each node (name, op, wall time) in execution order. Backends
    /// without per-node timing keep this default.
    fn profile(&self, _inputs: &[&Tensor]) -> Result<(Vec<Tensor>, Vec<cpu::NodeTime>)> {
        Err(crate::Error::Unavailable("this backend has no per-node profiling".into()))
    }
}

/// The backend object for a kind.
pub fn backend(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::Cpu => Box::new(cpu::CpuBackend),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Box::new(wgpu::WgpuBackend::new()),
    }
}
