//! `alembic demo`: the whole pipeline on the bundled fixtures (digits teacher and student):
//! inspect → run → cache the teacher's soft labels → refine the student against them →
//! quantize → evaluate before and after, on the CPU and (when an adapter exists) on wgpu.

use alembic::cache::{build_from_files, CacheReader, FileBuild};
use alembic::data::{DataOptions, DataSource};
use alembic::distill::{
    check_cache_fits, export_onnx, soft_targets, train, KdConfig, Student, TrainConfig, TrainData, Trainable,
};
use alembic::eval::{evaluate, predict, Metrics};
use alembic::{BackendKind, Model, Precision, SessionOptions};
use anyhow::{ensure, Context};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Directory holding teacher.onnx, student.onnx and data/ (default: ./models, else the
    /// source tree's models/).
    #[arg(long)]
    models: Option<PathBuf>,
    /// Where the cache, checkpoint and refined student are written.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Refinement steps (batch 32).
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Teacher logits kept per sample in the cache (of 10 classes).
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Distillation temperature.
    #[arg(long, default_value_t = 2.0)]
    temperature: f32,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let dir = a.models.clone().unwrap_or_else(default_models_dir);
    ensure!(dir.join("teacher.onnx").exists(), "{}: no teacher.onnx here (pass --models DIR)", dir.display());
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let (teacher, student) = (dir.join("teacher.onnx"), dir.join("student.onnx"));
    let data = |name: &str| dir.join(format!("data/{name}.npy"));
    println!("== Alembic demo on {}\n", dir.display());

    println!("-- 1. import and inspect");
    for path in [&teacher, &student] {
        print!("{}", super::inspect::report(path, false)?);
        println!();
    }

    println!("-- 2. cache the teacher's soft labels on the refinement split (the user's own data)");
    let cache_path = a.out.join("refine.kdc");
    let _ = std::fs::remove_file(&cache_path); // the demo shows a fresh build; `alembic cache` resumes
    let spec = FileBuild {
        teachers: vec![teacher.clone()],
        data: data("refine_x"),
        top_k: a.top_k,
        temperature: a.temperature,
        ..Default::default()
    };
    let r = build_from_files(&spec, &cache_path, &mut |_, _| {})?;
    println!(
        "{} samples, top-{} of {} classes at T={}: {} bytes per sample ({} for full f32 logits), {:.0} ms, file {}\n",
        r.samples,
        r.k,
        r.classes,
        a.temperature,
        r.record_size,
        4 * r.classes,
        r.total_secs * 1e3,
        cache_path.display()
    );

    println!("-- 3. refine the student against the cache (no hard labels: the teacher labelled everything)");
    let cache = CacheReader::open(&cache_path)?;
    let src = DataSource::open(&data("refine_x"), &DataOptions::default())?;
    check_cache_fits(&cache, &src)?;
    let targets = soft_targets(&cache, a.temperature)?;
    let x = alembic::tensor::npy::read_npy(&data("refine_x"))?;
    let labels = vec![None; targets.len()];
    let mut s = Student::load(&student, &Trainable::All)?;
    let cfg = TrainConfig {
        kd: KdConfig { temperature: a.temperature, alpha: 1.0 },
        steps: a.steps,
        batch: 32,
        seed: 7,
        ..Default::default()
    };
    let report = train(&mut s, &TrainData { x: &x, targets: &targets, labels: &labels }, &cfg, |_| {})?;
    let refined = a.out.join("student-refined.onnx");
    export_onnx(&s, &refined)?;
    println!(
        "{} steps, final loss {:.4}, {:.2} s ({:.0} steps/s), peak training memory {:.1} KiB; wrote {}\n",
        report.steps_done,
        report.final_loss,
        report.elapsed.as_secs_f64(),
        report.steps_done as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.peak_bytes as f64 / 1024.0,
        refined.display()
    );

    println!("-- 4. quantize and evaluate: refine_test (n=90, shifted) and heldout (n=359, unshifted)");
    let splits = ["refine_test", "heldout"];
    let mut teacher_logits = Vec::new();
    for split in splits {
        let src = split_source(&dir, split)?;
        let session = Model::load(&teacher)?.session(SessionOptions::default())?;
        teacher_logits.push(predict(&session, &src, 256)?.0);
    }
    println!(
        "{:<10} {:<8} {:<6} | {:>9} {:>9} {:>10} {:>9} {:>7} | {:>9}",
        "student", "backend", "prec", "acc shift", "acc held", "agree shift", "KL shift", "ECE", "ms/sample"
    );
    let combos = combinations();
    let mut shift_acc = std::collections::HashMap::new();
    for (label, path) in [("before", &student), ("refined", &refined)] {
        for &(backend, precision) in &combos {
            let opts = SessionOptions::default().backend(backend).precision(precision);
            let session = Model::load(path)?.session(opts)?;
            let mut m: Vec<Metrics> = Vec::new();
            let t0 = Instant::now();
            let mut n = 0;
            for (split, tl) in splits.iter().zip(&teacher_logits) {
                let src = split_source(&dir, split)?;
                let y = src.labels().map(<[i64]>::to_vec);
                let (z, classes) = predict(&session, &src, 256)?;
                n += z.len() / classes.max(1);
                m.push(evaluate(&z, classes, y.as_deref(), Some(tl)));
            }
            shift_acc.insert((label, backend, precision), (m[0].accuracy, m[1].accuracy));
            let ms = t0.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64;
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v));
            println!(
                "{label:<10} {:<8} {:<6} | {:>9} {:>9} {:>10} {:>9.3} {:>7.3} | {ms:>9.4}",
                format!("{backend:?}").to_lowercase(),
                format!("{precision:?}").to_lowercase(),
                pct(m[0].accuracy),
                pct(m[1].accuracy),
                pct(m[0].teacher_agreement),
                m[0].kl_to_teacher.unwrap_or(f64::NAN),
                m[0].ece.unwrap_or(f64::NAN),
            );
        }
    }
    let acc = |l, p| shift_acc.get(&(l, BackendKind::Cpu, p)).copied().unwrap_or((None, None));
    let pts = |v: Option<f64>| 100.0 * v.unwrap_or(f64::NAN);
    let ((b_shift, b_held), (r_shift, r_held)) = (acc("before", Precision::F32), acc("refined", Precision::F32));
    println!(
        "\nRefinement from the teacher's cached top-{} soft labels alone: {:+.1} points on the shifted data,",
        a.top_k,
        pts(r_shift) - pts(b_shift)
    );
    println!("{:+.1} points on the unshifted held-out data it never saw during refinement.", pts(r_held) - pts(b_held));
    for p in [Precision::F16, Precision::Int8, Precision::Int4, Precision::W8a8] {
        let (q_shift, _) = acc("refined", p);
        println!("refined {p:?} on the CPU vs f32: {:+.1} points on the shifted data", pts(q_shift) - pts(r_shift));
    }
    println!("Timings above are one batch in this build; `alembic bench` measures latency properly.");
    Ok(())
}

/// Every precision on the CPU, and on wgpu when this build has it and an adapter answers.
fn combinations() -> Vec<(BackendKind, Precision)> {
    const ALL: [Precision; 5] = [Precision::F32, Precision::F16, Precision::Int8, Precision::Int4, Precision::W8a8];
    let mut v: Vec<(BackendKind, Precision)> = ALL.map(|p| (BackendKind::Cpu, p)).to_vec();
    #[cfg(feature = "wgpu")]
    match alembic::backend::wgpu::Ctx::shared() {
        Ok(ctx) => {
            println!("(wgpu adapter: {})", ctx.report);
            v.extend(ALL.map(|p| (BackendKind::Wgpu, p)));
        }
        Err(e) => println!("(wgpu skipped: {e})"),
    }
    v
}

fn split_source(dir: &Path, split: &str) -> anyhow::Result<DataSource> {
    let opts = DataOptions { labels: Some(dir.join(format!("data/{split}_y.npy"))), ..Default::default() };
    Ok(DataSource::open(&dir.join(format!("data/{split}_x.npy")), &opts)?)
}

fn default_models_dir() -> PathBuf {
    let local = PathBuf::from("models");
    if local.join("teacher.onnx").exists() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
    }
}
