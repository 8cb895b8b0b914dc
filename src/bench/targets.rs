//! What the bench times: one (backend, precision) prepared on a model with fixed inputs.
//!
//! Every engine plugs in through [`open`]: it loads and prepares the model (the bench times
//! this as "init") and returns a [`Target`], or says why the combination is unsupported.

use crate::backend::cpu::NodeTime;
use crate::error::Result;
use crate::tensor::Tensor;
use crate::{BackendKind, Model, SessionOptions};
use std::path::Path;

/// Numeric precision a combination runs at. Only `F32` exists on any backend so far; the others
/// are accepted so one command line keeps working as quantized kernels land.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F16,
    Int8,
    Int4,
    W8A8,
}

impl Precision {
    pub const ALL: [Precision; 5] = [Precision::F32, Precision::F16, Precision::Int8, Precision::Int4, Precision::W8A8];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
            Precision::W8A8 => "w8a8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Precision::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<&str> = Precision::ALL.iter().map(|p| p.name()).collect();
            format!("unknown precision '{s}' (known: {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Backend names `--backends` accepts.
pub const BACKENDS: [&str; 4] = ["cpu", "wgpu", "tract", "ort"];

/// A prepared combination holding its inputs.
pub trait Target {
    /// One inference; outputs are dropped (inside the timed region, for every backend alike).
    fn run(&mut self) -> Result<()>;
    /// One inference timed per node, where the backend can.
    fn profile(&mut self) -> Option<Result<Vec<NodeTime>>> {
        None
    }
}

/// The result of preparing a combination.
pub enum Opened {
    Ready(Box<dyn Target>),
    Unsupported(String),
}

/// Loads and prepares `model` on `backend` at `precision`, for running on `inputs`.
/// `threads`: intra-op threads asked for (engines that take it at load time use it).
pub fn open(
    backend: &str,
    precision: Precision,
    model: &Path,
    inputs: Vec<(String, Tensor)>,
    threads: Option<usize>,
) -> Result<Opened> {
    let unsupported = |why: &str| Ok(Opened::Unsupported(why.to_string()));
    let _ = threads;
    match (backend, precision) {
        ("cpu", Precision::F32) => {
            let m = Model::load(model)?;
            let session = m.session(SessionOptions::default().backend(BackendKind::Cpu))?;
            Ok(Opened::Ready(Box::new(CpuTarget { session, inputs })))
        }
        ("cpu", p) => unsupported(&format!("the cpu backend has no {p} kernels yet")),
        ("wgpu", _) => unsupported("no wgpu backend in this build"),
        // The reference engines of src/teacher plug in here (see docs/bench.md, "Engines").
        ("tract", _) | ("ort", _) => unsupported(&format!("the {backend} engine is not wired into this build")),
        (other, _) => unsupported(&format!("unknown backend '{other}' (known: {})", BACKENDS.join(", "))),
    }
}

struct CpuTarget {
    session: crate::Session,
    inputs: Vec<(String, Tensor)>,
}

impl Target for CpuTarget {
    fn run(&mut self) -> Result<()> {
        let refs: Vec<(&str, &Tensor)> = self.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.session.run_refs(&refs).map(drop)
    }

    fn profile(&mut self) -> Option<Result<Vec<NodeTime>>> {
        let refs: Vec<(&str, &Tensor)> = self.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        Some(self.session.profile(&refs).map(|(_, times)| times))
    }
}

/// Adapts any engine that runs named inputs (the reference engines' `run`) to a [`Target`].
pub struct EngineTarget<F> {
    inputs: Vec<(String, Tensor)>,
    run: F,
}

impl<F: FnMut(&[(&str, &Tensor)]) -> Result<()>> EngineTarget<F> {
    pub fn new(inputs: Vec<(String, Tensor)>, run: F) -> Self {
        EngineTarget { inputs, run }
    }
}

impl<F: FnMut(&[(&str, &Tensor)]) -> Result<()>> Target for EngineTarget<F> {
    fn run(&mut self) -> Result<()> {
        let refs: Vec<(&str, &Tensor)> = self.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        (self.run)(&refs)
    }
}
