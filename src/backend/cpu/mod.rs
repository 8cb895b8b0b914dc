//! The CPU engine: the f32 reference for every other backend, and the forward half of training.

mod fuse;
pub mod kernels;
mod plan;
mod prepack;

pub use plan::{CpuPlan, NodeTime, Slot};

use super::{Backend, BackendKind, Executable, Support};
use crate::error::Result;
use crate::ir::{Graph, Node};
use std::sync::Arc;

pub struct CpuBackend;

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn supports(&self, _graph: &Graph, _node: &Node) -> Support {
        // Every IR op has a CPU kernel: the importer only produces ops the reference runs.
        Support::Native
    }

    fn prepare(&self, graph: Arc<Graph>) -> Result<Box<dyn Executable>> {
        Ok(Box::new(CpuPlan::new(graph)))
    }
}
