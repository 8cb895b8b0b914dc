//! Graph passes run after import: constant folding (incl. the shape subgraphs exporters emit),
//! removal of no-op nodes, BatchNormalization folded into the Conv/Gemm before it, QDQ int8 /
//! int4 / f16 weights folded into QGemm/QConv.

mod bn_fold;
mod fold;
mod qdq_fold;
mod qdq_fold_int4;
mod simplify;

pub use bn_fold::fold_batchnorm;
pub use fold::fold_constants;
pub use qdq_fold::fold_qdq;
pub use simplify::remove_identities;

use super::graph::Graph;
use super::infer::infer_graph;
use crate::error::Result;

/// Which passes [`optimize`] runs.
#[derive(Clone, Copy, Debug)]
pub struct PassOptions {
    /// Fold BatchNormalization into the preceding Conv/Gemm. Training that must export the
    /// original graph turns this off.
    pub fold_batchnorm: bool,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions { fold_batchnorm: true }
    }
}

/// Runs the standard pipeline to a fixed point (folding can expose more folding).
pub fn optimize(g: &mut Graph) -> Result<()> {
    optimize_with(g, PassOptions::default())
}

pub fn optimize_with(g: &mut Graph, opts: PassOptions) -> Result<()> {
    for _ in 0..8 {
        let before = g.nodes.len();
        // Before constant folding, which would expand QDQ weights to f32.
        fold_qdq(g);
        fold_constants(g)?;
        remove_identities(g);
        if opts.fold_batchnorm {
            fold_batchnorm(g);
        }
        g.prune_dead_nodes();
        infer_graph(g)?;
        if g.nodes.len() == before {
            break;
        }
    }
    Ok(())
}
