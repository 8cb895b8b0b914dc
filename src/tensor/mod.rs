//! Tensors on the host: element types, shapes with symbolic dimensions, typed buffers.

mod dtype;
pub mod npy;
mod shape;
#[allow(clippy::module_inception)]
mod tensor;

pub use dtype::{onnx_type_name, DType};
pub use shape::{broadcast_dims, broadcast_shapes, norm_axis, numel, strides, Dim, Shape};
pub use tensor::{Data, Element, Tensor};
