//! Building a cache straight from files (teacher ONNX files + a data set path): what
//! `alembic cache`, the demo and language bindings call, so none of them wires engines,
//! digests and data sources together itself.

use super::build::{build_cache, BuildOptions, BuildReport, TeacherFn};
use crate::data::{sha256_file, DataOptions, DataSource};
use crate::teacher::{EngineKind, Teacher};
use crate::{Error, Result};
use std::path::PathBuf;

/// Everything a cache build from files needs besides the output path.
#[derive(Clone, Debug)]
pub struct FileBuild {
    /// Teacher ONNX files; several make an ensemble (probabilities at T averaged).
    pub teachers: Vec<PathBuf>,
    /// Runtime the teachers run on.
    pub engine: EngineKind,
    /// Teacher output to cache; None: each teacher's first output.
    pub output: Option<String>,
    /// `.npy`, `.npz`, a folder of them, or an image folder ([`DataSource::open`]).
    pub data: PathBuf,
    pub data_options: DataOptions,
    /// Logits kept per sample; 0 keeps them all.
    pub top_k: usize,
    pub temperature: f32,
    /// Samples per teacher call.
    pub batch: usize,
    /// Records per CRC chunk.
    pub chunk_records: u32,
}

impl Default for FileBuild {
    fn default() -> Self {
        let o = BuildOptions::default();
        FileBuild {
            teachers: vec![],
            engine: EngineKind::default(),
            output: None,
            data: PathBuf::new(),
            data_options: DataOptions::default(),
            top_k: o.top_k,
            temperature: o.temperature,
            batch: o.batch,
            chunk_records: o.chunk_records,
        }
    }
}

/// Builds, resumes or confirms the cache `out`: hashes each teacher file (the digests go into
/// the header, so a file started with another teacher or data set is refused untouched), loads
/// the teachers on `spec.engine` and runs [`build_cache`]. `progress(done, total)` as there.
///
/// ```no_run
/// use alembic::cache::{build_from_files, FileBuild};
/// let spec = FileBuild {
///     teachers: vec!["models/teacher.onnx".into()],
///     data: "models/data/refine_x.npy".into(),
///     top_k: 5,
///     temperature: 4.0,
///     ..Default::default()
/// };
/// let report = build_from_files(&spec, "refine.kdc".as_ref(), &mut |_, _| {})?;
/// println!("{} samples, {} computed", report.samples, report.computed);
/// # Ok::<(), alembic::Error>(())
/// ```
pub fn build_from_files(
    spec: &FileBuild,
    out: &std::path::Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BuildReport> {
    if spec.teachers.is_empty() {
        return Err(Error::Unavailable("no teacher given".into()));
    }
    let src = DataSource::open(&spec.data, &spec.data_options)?;
    let digests = spec.teachers.iter().map(|p| sha256_file(p)).collect::<Result<Vec<_>>>()?;
    let teachers = spec
        .teachers
        .iter()
        .map(|p| Teacher::open(spec.engine, p, spec.output.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let opts = BuildOptions {
        top_k: spec.top_k,
        temperature: spec.temperature,
        batch: spec.batch,
        output: teachers[0].output().to_string(),
        teacher_digests: digests,
        chunk_records: spec.chunk_records,
    };
    let mut calls: Vec<Box<TeacherFn>> =
        teachers.iter().map(|t| Box::new(move |x: &crate::Tensor| t.run(x)) as Box<TeacherFn>).collect();
    let mut refs: Vec<&mut TeacherFn> = calls.iter_mut().map(|c| &mut **c).collect();
    build_cache(&src, &mut refs, &opts, out, progress)
}
