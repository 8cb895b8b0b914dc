//! Alembic's graph IR: typed values with symbolic shapes, an op enum, inference and passes.

pub mod graph;
pub mod infer;
pub mod op;
pub mod passes;

pub use graph::{Graph, Node, Value, ValueId};
pub use op::{
    AspectPolicy, AutoPad, Binary, ConvTransposeAttrs, CoordMode, NearestMode, Op, PadMode, QLinear, ReduceKind,
    ResizeAttrs, ResizeMode, Unary, Window,
};
