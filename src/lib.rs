//! # Alembic
//!
//! On-device inference and knowledge distillation for ONNX models: import a model into a typed
//! graph IR, run it on the CPU reference engine (and, as they land, quantized GPU kernels),
//! cache a teacher's soft labels and refine a student against them.
//!
//! ```no_run
//! use alembic::{Model, Tensor};
//! use ndarray::ArrayD;
//!
//! let model = Model::load("models/student.onnx")?;
//! let session = model.session(Default::default())?;
//! let x = ArrayD::<f32>::zeros(vec![4, 1, 8, 8]);
//! let outputs = session.run(vec![("input", Tensor::from_array(x))])?;
//! let logits = outputs.get("logits").unwrap().to_array::<f32>().unwrap();
//! assert_eq!(logits.shape(), &[4, 10]);
//! # Ok::<(), alembic::Error>(())
//! ```

pub mod backend;
pub mod bench;
pub mod cache;
pub mod data;
pub mod distill;
pub mod error;
pub mod eval;
#[cfg(feature = "ffi")]
pub mod ffi;
pub mod ir;
pub mod onnx;
pub mod quant;
mod session;
pub mod teacher;
pub mod tensor;

pub use backend::BackendKind;
pub use error::{Error, Result};
pub use quant::Precision;
pub use session::{Model, Outputs, Session, SessionOptions, TensorInfo};
pub use tensor::{DType, Dim, Shape, Tensor};
