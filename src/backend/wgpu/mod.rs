//! The wgpu engine: WGSL compute kernels (shaders/*.wgsl) on Vulkan, Metal, DX12 or GL.
//!
//! f32 activations throughout; weights in f32, or f16 / int8 / int4 after
//! [`crate::quant::quantize_graph`] (dequantized in the GEMM shader, f32 accumulation). Nodes
//! without a kernel run on the CPU engine (`Support::Fallback("cpu")`). The adapter is chosen
//! once per process (see [`device::Ctx::shared`]); `ALEMBIC_WGPU_BACKEND=vulkan|gl|metal|dx12`
//! forces an API, `ALEMBIC_WGPU_LIMITS=downlevel` a phone's limits (`Limits::downlevel_defaults`).

pub mod device;
pub mod disk_cache;
pub mod kernels;
mod plan;
pub mod w8a8;

pub use device::{validate_shaders, AdapterReport, Ctx, CtxOptions};
pub use plan::{ProfileClock, WgpuPlan};

use super::{Backend, BackendKind, Executable, Support};
use crate::error::Result;
use crate::ir::{Graph, Node};
use std::sync::Arc;

/// The wgpu backend; opens the shared device at `prepare` unless given a context.
#[derive(Default)]
pub struct WgpuBackend {
    ctx: Option<Arc<Ctx>>,
}

impl WgpuBackend {
    pub fn new() -> WgpuBackend {
        WgpuBackend { ctx: None }
    }

    /// A backend on a specific device (e.g. one opened with [`Ctx::new`] for the GL API).
    pub fn with_context(ctx: Arc<Ctx>) -> WgpuBackend {
        WgpuBackend { ctx: Some(ctx) }
    }

    /// Prepares `graph` and returns the concrete plan (fallback report, slot count).
    pub fn plan(&self, graph: Arc<Graph>) -> Result<WgpuPlan> {
        let ctx = match &self.ctx {
            Some(c) => c.clone(),
            None => Ctx::shared()?,
        };
        WgpuPlan::new(ctx, graph)
    }
}

impl Backend for WgpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Wgpu
    }

    fn supports(&self, graph: &Graph, node: &Node) -> Support {
        match kernels::classify(graph, node) {
            Some(_) => Support::Native,
            None => Support::Fallback("cpu".into()),
        }
    }

    fn prepare(&self, graph: Arc<Graph>) -> Result<Box<dyn Executable>> {
        Ok(Box::new(self.plan(graph)?))
    }
}
