//! Tensors on the host: element types, shapes with symbolic dimensions, typed buffers.

mod dtype;
mod float8;
pub mod npy;
mod shape;
pub mod shared;
#[allow(clippy::module_inception)]
mod tensor;

pub use dtype::{onnx_type_name, DType};
pub use float8::{F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
pub use shape::{broadcast_dims, broadcast_shapes, norm_axis, numel, strides, Bindings, Dim, Dims, Shape};
pub use shared::SharedSlice;
pub use tensor::{Data, Element, Tensor};
