//! `alembic quantize MODEL --precision f16|int8 --out FILE.onnx`: standard QDQ ONNX (see
//! docs/quantized-format.md) that ONNX Runtime, tract and Alembic all load.

use alembic::Precision;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model file (f32 weights).
    model: PathBuf,
    /// Weight precision: f16 or int8 (parsed here so a bad value is a one-line error). For w8a8,
    /// write int8 and run it with `--precision w8a8`: the activation scales are per row and
    /// per run, which no standard ONNX operator expresses.
    #[arg(long)]
    precision: String,
    /// Output ONNX file (written atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let p: Precision = a.precision.parse().map_err(anyhow::Error::msg)?;
    let r = alembic::quant::export_qdq(&a.model, p, &a.out)?;
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "quantized {} weight tensors to {}: {} -> {} weight bytes; {} ({} bytes) -> {} ({} bytes)",
        r.weights,
        p,
        r.f32_bytes,
        r.quantized_bytes,
        a.model.display(),
        size(&a.model),
        a.out.display(),
        size(&a.out)
    );
    Ok(())
}
