//! On-device distillation: reverse-mode gradients over the IR, Hinton and sparse top-k losses,
//! optimizers, the trainer with budgets and checkpoints, and ONNX export of the refined student.

pub mod checkpoint;
pub mod export;
pub mod grad;
pub mod lora;
pub mod loss;
pub mod optim;
pub mod student;
pub mod targets;
pub mod trainer;

pub use export::export_onnx;
pub use loss::{KdConfig, SoftTarget};
pub use student::{Student, Trainable};
pub use targets::{check_cache_fits, soft_targets};
pub use trainer::{train, StepInfo, TrainConfig, TrainData, TrainReport};
