//! `alembic quantize MODEL --precision f16|int8|int4|w8a8 [--calibrate DATA] --out FILE.onnx`:
//! standard QDQ ONNX (see docs/quantized-format.md) that ONNX Runtime, tract and Alembic all load.

use alembic::Precision;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model file (f32 weights).
    model: PathBuf,
    /// Precision: f16, int8 or int4 weights (int4: INT4 values with f16 scales per 32 along K,
    /// opset-21 blocked DequantizeLinear; the model's opset is raised to 21), or w8a8 (int8
    /// weights and activations; needs --calibrate, since dynamic per-row activation scales
    /// have no standard ONNX form).
    #[arg(long)]
    precision: String,
    /// Sample inputs (.npy, .npz or a folder) for static activation scales (w8a8 only): the
    /// f32 model runs on its first batches and each activation gets max|x| / 127.
    #[arg(long, value_name = "DATA")]
    calibrate: Option<PathBuf>,
    /// Output ONNX file (written atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let p: Precision = a.precision.parse().map_err(anyhow::Error::msg)?;
    let r = match &a.calibrate {
        Some(data) if p == Precision::W8a8 => alembic::quant::export_qdq_calibrated(&a.model, data, &a.out)?,
        Some(_) => anyhow::bail!("--calibrate picks activation scales, which only --precision w8a8 uses (not {p})"),
        None => alembic::quant::export_qdq(&a.model, p, &a.out)?,
    };
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let acts =
        if r.activations > 0 { format!(" and {} activations (static scales)", r.activations) } else { String::new() };
    let opset = r.opset_raised_from.map(|from| format!("; opset raised {from} -> 21")).unwrap_or_default();
    println!(
        "quantized {} weight tensors{acts} to {}: {} -> {} weight bytes; {} ({} bytes) -> {} ({} bytes){opset}",
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
