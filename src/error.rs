//! Errors. The library returns [`Error`]; the CLI wraps it in `anyhow` at the edge.
//! Every message is one line that names what is wrong and where.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The ONNX file is malformed or uses something Alembic rejects.
    #[error("{location}: {message}")]
    Import { location: String, message: String },
    /// The model uses an operator the importer has no mapping for.
    #[error("node '{node}': unsupported operator {domain}{op_type} (opset {opset})")]
    UnsupportedOp { op_type: String, domain: String, node: String, opset: i64 },
    /// Shapes or types do not fit together (at load time or for a run's inputs).
    #[error("node '{node}' ({op}): {message}")]
    Shape { node: String, op: String, message: String },
    /// Inputs given to a run are wrong: missing, unknown, mistyped, misshaped.
    #[error("input '{name}': {message}")]
    Input { name: String, message: String },
    /// A kernel failed at run time.
    #[error("node '{node}' ({op}): {message}")]
    Kernel { node: String, op: String, message: String },
    /// A tensor file (.npy, .pb) is unreadable or inconsistent.
    #[error("{path}: {message}")]
    TensorFile { path: PathBuf, message: String },
    /// An engine was asked for something it cannot provide (missing library, backend, feature).
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    pub fn import(location: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Import { location: location.into(), message: message.into() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    pub fn input(name: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Input { name: name.into(), message: message.into() }
    }
}
