//! Reference and teacher engines: other runtimes (and Alembic itself) behind one [`Engine`]
//! trait.
//!
//! Today they are the references Alembic's CPU engine is checked against (tract with the
//! `tract` feature, on by default; ONNX Runtime with the `ort` feature); the distillation pipeline runs a teacher through the same
//! trait to cache its soft labels, whichever runtime executes it: [`Teacher::open`] loads a
//! model file on an [`EngineKind`] chosen by name and runs it batch by batch.

#[cfg(feature = "tract")]
pub mod tract;

#[cfg(feature = "ort")]
pub mod ort;

#[cfg(feature = "ort")]
pub use self::ort::OrtEngine;
#[cfg(feature = "tract")]
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

/// Which runtime runs a model loaded by file ([`load_engine`], [`Teacher::open`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// tract: pure Rust, so the default (needs the `tract` feature, on by default).
    #[default]
    Tract,
    /// ONNX Runtime: needs the `ort` feature and a loadable `ORT_DYLIB_PATH`.
    Ort,
    /// Alembic's own CPU engine.
    Alembic,
}

impl EngineKind {
    pub const NAMES: [&'static str; 3] = ["tract", "ort", "alembic"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tract" => Ok(EngineKind::Tract),
            "ort" | "onnxruntime" => Ok(EngineKind::Ort),
            "alembic" | "cpu" => Ok(EngineKind::Alembic),
            _ => Err(format!("unknown engine '{s}' (known: {})", Self::NAMES.join(", "))),
        }
    }
}

/// The error for tract in a build without it.
pub const NO_TRACT: &str =
    "engine tract: this build of alembic was built without the tract feature (rebuild with --features tract)";

/// Loads `path` on the engine `kind`. Asking for tract or ONNX Runtime in a build without the
/// `tract` / `ort` feature, or where ONNX Runtime cannot be loaded, is [`Error::Unavailable`]
/// saying which.
pub fn load_engine(kind: EngineKind, path: &Path) -> Result<Box<dyn Engine>> {
    Ok(match kind {
        #[cfg(feature = "tract")]
        EngineKind::Tract => Box::new(TractEngine::load(path)?),
        #[cfg(not(feature = "tract"))]
        EngineKind::Tract => return Err(Error::Unavailable(NO_TRACT.into())),
        EngineKind::Alembic => Box::new(AlembicEngine::load(path)?),
        #[cfg(feature = "ort")]
        EngineKind::Ort => {
            ort::available()?;
            Box::new(OrtEngine::load(path)?)
        }
        #[cfg(not(feature = "ort"))]
        EngineKind::Ort => {
            return Err(Error::Unavailable(
                "engine ort: this build of alembic has no ONNX Runtime support (rebuild with --features ort)".into(),
            ))
        }
    })
}

/// A single-input model as a function of a batch, the shape the soft-label cache wants
/// ([`crate::cache::TeacherFn`]): `|x| teacher.run(x)`.
pub struct Teacher {
    engine: Box<dyn Engine>,
    input: String,
    output: String,
    index: usize,
}

impl Teacher {
    /// Loads `path` on `kind` and picks `output` (None: the model's first output).
    pub fn open(kind: EngineKind, path: &Path, output: Option<&str>) -> Result<Teacher> {
        Teacher::from_engine(load_engine(kind, path)?, &path.display().to_string(), output)
    }

    /// Wraps a loaded engine; `label` names the model in errors.
    pub fn from_engine(engine: Box<dyn Engine>, label: &str, output: Option<&str>) -> Result<Teacher> {
        let (inputs, outputs) = (engine.input_names(), engine.output_names());
        let [input] = &inputs[..] else {
            return Err(Error::import(
                label,
                format!("a teacher takes exactly one input, this model has {} ({})", inputs.len(), inputs.join(", ")),
            ));
        };
        let index = match output {
            None if !outputs.is_empty() => 0,
            None => return Err(Error::import(label, "the model has no outputs")),
            Some(o) => outputs.iter().position(|n| n == o).ok_or_else(|| {
                Error::import(label, format!("no output named '{o}' (outputs: {})", outputs.join(", ")))
            })?,
        };
        Ok(Teacher { input: input.clone(), output: outputs[index].clone(), index, engine })
    }

    pub fn engine(&self) -> &dyn Engine {
        &*self.engine
    }

    /// Name of the output [`Teacher::run`] returns.
    pub fn output(&self) -> &str {
        &self.output
    }

    /// Runs a batch `[B, ...]` and returns the chosen output.
    pub fn run(&self, x: &Tensor) -> Result<Tensor> {
        let mut outs = self.engine.run(&[(self.input.as_str(), x)])?;
        if self.index >= outs.len() {
            return Err(Error::Unavailable(format!("{}: output '{}' missing", self.engine.name(), self.output)));
        }
        Ok(outs.swap_remove(self.index).1)
    }
}

/// Orders named inputs by `expected` (the engine's input names): every expected input exactly
/// once, no unknown names.
#[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
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
#[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
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

    #[cfg(not(feature = "tract"))]
    #[test]
    fn tract_without_the_feature_is_a_one_line_error() {
        let e = load_engine(EngineKind::Tract, Path::new("models/teacher.onnx")).err().expect("no tract engine");
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        let m = e.to_string();
        assert!(m.contains("without the tract feature") && !m.contains('\n'), "{m}");
    }
}
