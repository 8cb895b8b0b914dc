//! Reference and teacher engines: other runtimes (and Alembic itself) behind one [`Engine`]
//! trait.
//!
//! Today they are the references Alembic's CPU engine is checked against (tract always, ONNX
//! Runtime with the `ort` feature); the distillation pipeline runs a teacher through the same
//! trait to cache its soft labels, whichever runtime executes it.

pub mod tract;

#[cfg(feature = "ort")]
pub mod ort;

#[cfg(feature = "ort")]
pub use self::ort::OrtEngine;
pub use self::tract::TractEngine;

use crate::error::{Error, Result};
use crate::session::{Model, Session, SessionOptions};
use crate::tensor::Tensor;
use std::path::Path;

/// A loaded model that maps named input tensors to named output tensors.
///
/// Implementations are `Send + Sync` and may be run from several threads at once. Failures are
/// reported as [`Error`] (never a panic): [`Error::Unavailable`] when the engine cannot run the
/// model or is missing, [`Error::Import`] when it cannot load the file.
pub trait Engine: Send + Sync {
    /// Short name for reports ("alembic", "tract", "onnxruntime").
    fn name(&self) -> &str;
    /// Runs the model; every input must be given once, by name. Outputs come back in the order
    /// of [`Engine::output_names`].
    fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>>;
    /// Graph inputs that must be fed (initializers excluded), in model order.
    fn input_names(&self) -> Vec<String>;
    /// Graph outputs, in model order.
    fn output_names(&self) -> Vec<String>;
}

/// Alembic's own CPU engine behind the [`Engine`] trait, so callers can treat every runtime
/// alike.
pub struct AlembicEngine {
    model: Model,
    session: Session,
}

impl AlembicEngine {
    pub fn load(path: impl AsRef<Path>) -> Result<AlembicEngine> {
        AlembicEngine::from_model(Model::load(path)?)
    }

    pub fn from_model(model: Model) -> Result<AlembicEngine> {
        let session = model.session(SessionOptions::default())?;
        Ok(AlembicEngine { model, session })
    }
}

impl Engine for AlembicEngine {
    fn name(&self) -> &str {
        "alembic"
    }

    fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>> {
        Ok(self.session.run_refs(inputs)?.0)
    }

    fn input_names(&self) -> Vec<String> {
        self.model.inputs().into_iter().map(|i| i.name).collect()
    }

    fn output_names(&self) -> Vec<String> {
        self.model.outputs().into_iter().map(|o| o.name).collect()
    }
}

/// Orders named inputs by `expected` (the engine's input names): every expected input exactly
/// once, no unknown names.
pub(crate) fn order_inputs<'t>(expected: &[String], given: &[(&str, &'t Tensor)]) -> Result<Vec<&'t Tensor>> {
    for (i, (name, _)) in given.iter().enumerate() {
        if !expected.iter().any(|e| e == name) {
            return Err(Error::input(*name, format!("the model has no such input (inputs: {})", expected.join(", "))));
        }
        if given[..i].iter().any(|(n, _)| n == name) {
            return Err(Error::input(*name, "given twice"));
        }
    }
    expected
        .iter()
        .map(|e| given.iter().find(|(n, _)| n == e).map(|(_, t)| *t).ok_or_else(|| Error::input(e, "missing")))
        .collect()
}

/// Text of a caught panic payload, so a reference runtime's panic becomes an [`Error`].
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_inputs_checks_names() {
        let t = Tensor::scalar(1.0f32);
        let u = Tensor::scalar(2.0f32);
        let expected = vec!["a".to_string(), "b".to_string()];
        let got = order_inputs(&expected, &[("b", &u), ("a", &t)]).unwrap();
        assert_eq!(got[0], &t);
        assert_eq!(got[1], &u);
        assert!(order_inputs(&expected, &[("a", &t)]).is_err());
        assert!(order_inputs(&expected, &[("a", &t), ("b", &u), ("c", &u)]).is_err());
        assert!(order_inputs(&expected, &[("a", &t), ("a", &t), ("b", &u)]).is_err());
    }
}
