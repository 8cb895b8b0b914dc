//! On-device distillation: reverse-mode gradients over the IR, losses, optimizers, trainer.

pub mod grad;
