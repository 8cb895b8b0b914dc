//! Op parsers, one file per family, each registering its op types.

pub mod array;
pub mod math;
pub mod nn;
pub mod quant;
