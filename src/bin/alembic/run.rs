//! `alembic run MODEL --input NAME=FILE ... --output-dir DIR`

use alembic::onnx::tensor_proto::read_pb_file;
use alembic::tensor::npy::{read_npy, write_npy};
use alembic::{BackendKind, Model, Precision, SessionOptions, Tensor};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model file.
    model: PathBuf,
    /// NAME=FILE (.npy or ONNX TensorProto .pb); FILE alone when the model has one input.
    #[arg(long = "input", short = 'i', required = true)]
    inputs: Vec<String>,
    /// Directory for the outputs, one NAME.npy per model output.
    #[arg(long, short = 'o')]
    output_dir: PathBuf,
    /// Engine to run on.
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
    /// Precision: f32, f16, int8 (per-channel weights), int4 (groups of 32) or w8a8 (int8
    /// weights and int8 activations with per-row scales).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let model = Model::load(&a.model)?;
    let names: Vec<String> = model.inputs().into_iter().map(|i| i.name).collect();
    let mut given: Vec<(String, Tensor)> = Vec::new();
    for spec in &a.inputs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) => (n.to_string(), PathBuf::from(f)),
            None if names.len() == 1 => (names[0].clone(), PathBuf::from(spec)),
            None => {
                bail!("--input {spec}: the model has {} inputs ({}), write NAME=FILE", names.len(), names.join(", "))
            }
        };
        let t = read_tensor(&file).with_context(|| format!("--input {name}"))?;
        given.push((name, t));
    }
    #[allow(unused_mut)]
    let mut backend = a.backend;
    #[cfg(feature = "wgpu")]
    if backend == BackendKind::Wgpu {
        match alembic::backend::wgpu::Ctx::shared() {
            Ok(ctx) => {
                let fallback = model
                    .support_at(backend, a.precision)
                    .into_iter()
                    .filter(|(_, _, s)| *s != alembic::backend::Support::Native)
                    .count();
                eprintln!("wgpu adapter: {}; {fallback} node(s) fall back to the CPU", ctx.report);
            }
            Err(e) => {
                eprintln!("warning: {e}; running on the CPU instead");
                backend = BackendKind::Cpu;
            }
        }
    }
    let session = model.session(SessionOptions::default().backend(backend).precision(a.precision))?;
    let outputs = session.run(given.iter().map(|(n, t)| (n.as_str(), t.clone())))?;
    std::fs::create_dir_all(&a.output_dir).with_context(|| format!("creating {}", a.output_dir.display()))?;
    for (name, t) in outputs.iter() {
        let file = a.output_dir.join(format!("{}.npy", sanitize(name)));
        write_npy(&file, t)?;
        println!("{name}: {} {:?} -> {}", t.dtype(), t.shape(), file.display());
    }
    Ok(())
}

/// Reads `.npy` or `.pb` by extension.
pub fn read_tensor(path: &Path) -> anyhow::Result<Tensor> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(read_npy(path)?),
        Some("pb") => Ok(read_pb_file(path)?.1),
        _ => bail!("{}: unknown input format (expected .npy or .pb)", path.display()),
    }
}

/// Output names may hold characters a file name cannot.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}
