//! The `.kdc` soft-label cache: a teacher's distribution per sample, compact and crash-safe.
//!
//! Per sample a record keeps the top-k logits as f16 (or all of them), the log-sum-exp at the
//! cache temperature, the log-sum-exp of the dropped tail at that temperature and at T = 1, the
//! hard label and a digest of the input. Records are grouped in CRC32-checked chunks; the file is
//! append-only, so a build killed at any point resumes to a byte-identical result. The layout is
//! specified in docs/cache-format.md.
//!
//! [`build_from_files`] does the whole build from a teacher file and a data path (the CLI's
//! `alembic cache`); [`build_cache`] takes any teacher closures.
//!
//! ```no_run
//! use alembic::cache::{build_cache, BuildOptions, CacheReader};
//! use alembic::data::{sha256_file, DataOptions, DataSource};
//! use std::path::Path;
//!
//! let src = DataSource::open(Path::new("models/data/refine_x.npy"), &DataOptions::default())?;
//! let teacher = alembic::Model::load("models/teacher.onnx")?.session(Default::default())?;
//! let mut run = |x: &alembic::Tensor| -> alembic::Result<alembic::Tensor> {
//!     let out = teacher.run_refs(&[("input", x)])?;
//!     Ok(out.get("logits").cloned().unwrap())
//! };
//! let opts = BuildOptions {
//!     top_k: 5,
//!     temperature: 4.0,
//!     teacher_digests: vec![sha256_file(Path::new("models/teacher.onnx"))?],
//!     ..Default::default()
//! };
//! build_cache(&src, &mut [&mut run], &opts, Path::new("refine.kdc"), &mut |_, _| {})?;
//! let cache = CacheReader::open(Path::new("refine.kdc"))?;
//! let p = cache.probs(0, 4.0).unwrap();
//! # Ok::<(), alembic::Error>(())
//! ```

mod build;
mod files;
mod format;
mod reader;
mod writer;

pub use build::{build_cache, BuildOptions, BuildReport, TeacherFn};
pub use files::{build_from_files, FileBuild};
pub use format::{decode_record, encode_record, CacheHeader, SoftLabel, VERSION};
pub use reader::{verify, CacheReader, VerifyReport};
pub use writer::{CacheWriter, ResumeState};
