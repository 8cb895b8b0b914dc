//! Latency benchmarking of a model across backends, precisions and batch sizes (`alembic bench`).
//!
//! [`run`] prepares every combination one after another (timing init, the first inference and
//! the warm-up, and measuring resident memory), then times the measured runs interleaved
//! round-robin over all combinations, so slow drifts of the machine (thermal throttling, other
//! load) hit every combination alike and their ratios hold. The [`Report`] serialises to the
//! JSON described by `docs/bench-schema.json` and renders as a terminal or Markdown table.

pub mod inputs;
#[cfg(feature = "plot")]
pub mod plot;
pub mod report;
mod runner;
pub mod stats;
pub mod system;
pub mod targets;

pub use runner::{by_op, run};
pub use stats::Summary;
pub use system::{DeviceInfo, GpuAdapter};
pub use targets::{InitPhases, Opened, Precision, Target};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Version of the JSON report layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// What to bench.
#[derive(Clone, Debug)]
pub struct Config {
    pub model: PathBuf,
    pub backends: Vec<String>,
    pub precisions: Vec<Precision>,
    /// Batch sizes for the first dimension of every input whose first dimension is not fixed;
    /// `None`: the shapes `--input-shape` or the defaults give.
    pub batches: Option<Vec<usize>>,
    /// Warm-up runs per combination (after the first inference, not measured).
    pub warmup: usize,
    /// Measured runs per combination. With `max_secs` too, whichever ends first.
    pub runs: Option<usize>,
    /// Time budget of the measured phase, all combinations together.
    pub max_secs: Option<f64>,
    /// Intra-op thread counts to bench, each a set of combinations (empty: each engine's
    /// default). The CPU engine's shared pool is sized by the caller before engines start
    /// (MATMUL_NUM_THREADS); each combination then uses at most its count.
    pub threads: Vec<usize>,
    pub inputs: inputs::InputOptions,
    /// Per-node profiling of the backends that have it.
    pub profile: bool,
    /// `BACKEND:PRECISION` the ratios are relative to (per batch); default: the first combination.
    pub baseline: Option<String>,
    /// Open the wgpu adapter for the device report even when `wgpu` is not benched.
    pub probe_gpu: bool,
}

impl Config {
    pub fn new(model: impl Into<PathBuf>) -> Config {
        Config {
            model: model.into(),
            backends: vec!["cpu".into()],
            precisions: vec![Precision::F32],
            batches: None,
            warmup: 10,
            runs: None,
            max_secs: None,
            threads: Vec::new(),
            inputs: Default::default(),
            profile: false,
            baseline: None,
            probe_gpu: false,
        }
    }
}

/// Progress while a bench runs: the fraction done and what is happening.
#[derive(Clone, Debug)]
pub struct Progress {
    pub fraction: f64,
    pub message: String,
}

/// A whole bench run (the JSON document).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: Tool,
    /// Seconds since the Unix epoch when the bench started.
    pub started_unix_s: u64,
    pub model: ModelInfo,
    pub settings: Settings,
    pub device: DeviceInfo,
    /// Whether the resident-memory high-water mark could be reset before each combination. If
    /// not, a peak includes everything the process did before it.
    pub peak_rss_reset: bool,
    pub results: Vec<ComboResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub path: String,
    /// Size of the model file on disk (external data files not included).
    pub file_bytes: u64,
    pub inputs: Vec<InputInfo>,
}

/// A declared input: element type and dims (numbers or symbol names, `?` for unknown).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub backends: Vec<String>,
    pub precisions: Vec<String>,
    pub batches: Vec<usize>,
    pub warmup: usize,
    pub runs: Option<usize>,
    pub max_secs: Option<f64>,
    /// The most threads any combination used; null: each engine's default.
    pub threads: Option<usize>,
    /// Every thread count benched (combinations carry theirs in `threads`).
    #[serde(default)]
    pub thread_counts: Vec<usize>,
    pub seed: u64,
    /// `BACKEND:PRECISION` of the baseline.
    pub baseline: String,
    /// `random` or `files` (then `input_files` names them).
    pub input_source: String,
    /// Measured runs are interleaved round-robin across combinations (always true).
    pub interleaved: bool,
}

/// Whether a combination ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// The backend cannot do this combination (no such precision, fixed batch, not built in).
    Unsupported,
    /// It should have run but failed; `message` says why.
    Error,
}

/// One (backend, precision, batch, threads) combination.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ComboResult {
    /// `backend:precision:bBATCH`, then `:tTHREADS` when several thread counts were benched.
    pub id: String,
    pub backend: String,
    pub precision: String,
    pub batch: usize,
    /// Intra-op threads asked for; null: the engine's default.
    #[serde(default)]
    pub threads: Option<usize>,
    pub status: Status,
    pub message: Option<String>,
    pub input_shapes: Vec<NamedShape>,
    /// Loading and preparing the model (file read, import, optimisation, quantization, planning).
    pub init_ms: Option<f64>,
    /// The parts of `init_ms` the engine separates.
    #[serde(default)]
    pub init_phases: Option<InitPhases>,
    pub first_inference_ms: Option<f64>,
    pub warmup: Option<Warmup>,
    /// Statistics of the measured runs, milliseconds.
    pub latency_ms: Option<Summary>,
    /// Samples per second: batch / mean latency.
    pub throughput_per_s: Option<f64>,
    pub memory: Option<Memory>,
    /// GPU buffers held after the warm-up (wgpu: weights, activation slots, staging).
    #[serde(default)]
    pub gpu_buffer_bytes: Option<u64>,
    /// How the engine runs this combination (adapter and CPU fallbacks, quantized nodes, threads).
    #[serde(default)]
    pub engine_detail: Option<String>,
    /// This p50 over the baseline's p50 at the same batch and threads (> 1: slower).
    pub ratio_to_baseline: Option<f64>,
    /// Every measured latency in run order, milliseconds.
    pub samples_ms: Vec<f64>,
    /// Per-node times, largest total first (with `--profile`, on backends that have it).
    pub profile: Option<Vec<NodeProfile>>,
    /// The profile summed per op type, largest total first.
    #[serde(default)]
    pub profile_by_op: Option<Vec<OpProfile>>,
    /// How the profile was timed: `cpu-wall` (a timer around each node), `gpu-timestamp-query`
    /// (GPU timestamps around each dispatch), `cpu-submit-wait` (each dispatch submitted and
    /// waited for alone).
    #[serde(default)]
    pub profile_clock: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedShape {
    pub name: String,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Warmup {
    pub runs: usize,
    pub mean_ms: Option<f64>,
}

/// Resident memory around preparing a combination (Linux; absent elsewhere).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Memory {
    /// Resident set before loading the model.
    pub rss_before_bytes: u64,
    /// High-water mark after init, first inference and warm-up.
    pub peak_rss_bytes: u64,
    /// `peak_rss_bytes - rss_before_bytes`: what this combination added at its peak.
    pub peak_delta_bytes: u64,
}

/// One node's share of the profiled runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeProfile {
    pub node: String,
    pub op: String,
    pub runs: usize,
    pub total_ms: f64,
    pub mean_ms: f64,
    /// Fraction of the summed node time (0..1).
    pub share: f64,
}

/// One op type's share of the profiled runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpProfile {
    pub op: String,
    pub nodes: usize,
    /// Summed over its nodes and the profiled runs.
    pub total_ms: f64,
    /// Per run, summed over its nodes.
    pub mean_ms: f64,
    /// Fraction of the summed node time (0..1).
    pub share: f64,
}
