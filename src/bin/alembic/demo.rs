//! `alembic demo`: the whole pipeline on the bundled fixtures (digits teacher and student).

use alembic::tensor::npy::read_npy;
use alembic::{Model, Session, Tensor};
use anyhow::{ensure, Context};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Directory holding teacher.onnx, student.onnx and data/ (default: ./models, else the
    /// source tree's models/).
    #[arg(long)]
    models: Option<PathBuf>,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let dir = a.models.unwrap_or_else(default_models_dir);
    ensure!(dir.join("teacher.onnx").exists(), "{}: no teacher.onnx here (pass --models DIR)", dir.display());
    println!("== Alembic demo on {}\n", dir.display());

    println!("-- 1. import and inspect");
    for name in ["teacher", "student"] {
        print!("{}", super::inspect::report(&dir.join(format!("{name}.onnx")), false)?);
        println!();
    }

    println!("-- 2. run on the CPU reference engine");
    let teacher = load(&dir.join("teacher.onnx"))?;
    let student = load(&dir.join("student.onnx"))?;
    for split in ["heldout", "refine_test"] {
        let x = read_npy(&dir.join(format!("data/{split}_x.npy")))?;
        let y = read_npy(&dir.join(format!("data/{split}_y.npy")))?;
        let labels = y.to_i64_vec().context("labels must be integers")?;
        let (t_pred, t_ms) = predict(&teacher, &x)?;
        let (s_pred, s_ms) = predict(&student, &x)?;
        let acc = |p: &[usize]| {
            100.0 * p.iter().zip(&labels).filter(|(a, b)| **a as i64 == **b).count() as f64 / labels.len() as f64
        };
        let agree = 100.0 * t_pred.iter().zip(&s_pred).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64;
        println!(
            "{split:<12} n={:<4} teacher {:5.1}% ({t_ms:.2} ms)   student {:5.1}% ({s_ms:.2} ms)   student-teacher agreement {agree:5.1}%",
            labels.len(),
            acc(&t_pred),
            acc(&s_pred)
        );
    }
    println!("\nrefine_test is the user's own data under a shift the student never saw: the gap to the");
    println!("teacher is what on-device distillation against the teacher's cached soft labels closes.");
    Ok(())
}

fn default_models_dir() -> PathBuf {
    let local = PathBuf::from("models");
    if local.join("teacher.onnx").exists() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
    }
}

fn load(path: &Path) -> anyhow::Result<Session> {
    Ok(Model::load(path)?.session(Default::default())?)
}

/// Arg-max class per sample over the whole split in one batch, and the wall time.
fn predict(s: &Session, x: &Tensor) -> anyhow::Result<(Vec<usize>, f64)> {
    let t0 = Instant::now();
    let out = s.run_refs(&[("input", x)])?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let logits = out.0[0].1.to_array::<f32>().context("f32 logits")?;
    let classes = *logits.shape().last().unwrap_or(&1);
    let flat = logits.as_slice().context("contiguous logits")?;
    let pred = flat
        .chunks(classes)
        .map(|r| r.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0)
        .collect();
    Ok((pred, ms))
}
