//! `alembic distill --student S.onnx --cache LABELS.kdc --data DATA --out S2.onnx [...]`

use alembic::cache::CacheReader;
use alembic::data::{DataOptions, DataSource};
use alembic::distill::optim::OptimizerKind;
use alembic::distill::targets::{cache_labels, check_cache_fits, soft_targets};
use alembic::distill::{export_onnx, train, KdConfig, Student, TrainConfig, TrainData, Trainable};
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Student ONNX model to refine.
    #[arg(long)]
    student: PathBuf,
    /// Soft-label cache (.kdc) built from the teacher on the same data.
    #[arg(long)]
    cache: PathBuf,
    /// Training inputs (.npy, .npz or folder), in the order the cache was built from.
    #[arg(long)]
    data: PathBuf,
    /// Hard labels (.npy of integers); default: the data's own, else the cache's.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Where to write the refined student (atomically).
    #[arg(long)]
    out: PathBuf,
    /// Also write the refined student quantized (f16, int8 or int4 weights, QDQ ONNX) next to --out,
    /// as OUT_STEM.PRECISION.onnx, ready for the wgpu and quantized CPU paths.
    #[arg(long)]
    quantize: Option<alembic::Precision>,
    /// Distillation temperature (default: the cache's, where the top-k tail is exact).
    #[arg(long)]
    temperature: Option<f32>,
    /// Weight of the distillation term; 1 - alpha goes to the hard-label cross-entropy.
    #[arg(long, default_value_t = 0.7)]
    alpha: f32,
    /// Optimizer steps.
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Passes over the data (instead of --steps).
    #[arg(long)]
    epochs: Option<u64>,
    /// Samples per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// adamw or sgd (momentum 0.9).
    #[arg(long, default_value = "adamw")]
    optimizer: String,
    /// Linear warm-up steps before the cosine decay.
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 5.0)]
    clip: f32,
    /// Seed of the sample order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Parameters to train: all, last:N (last N layers), comma-separated layer/initializer names,
    /// or lora:R[:layers] (rank-R adapters on Gemm/MatMul/Conv weights, merged on export).
    #[arg(long, default_value = "all")]
    train: String,
    /// Training-state budget, e.g. 64MB or 512KiB (smaller micro-batches with gradient accumulation).
    #[arg(long)]
    max_memory: Option<String>,
    /// Wall-time budget, e.g. 30s, 5m, 500ms (stops early, checkpointing first).
    #[arg(long)]
    max_time: Option<String>,
    /// Checkpoint file: resumed from when it exists, written every --checkpoint-every steps.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[arg(long, default_value_t = 50, requires = "checkpoint")]
    checkpoint_every: u64,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    // Parsed here rather than by clap so a bad value is one line, like every other error.
    let trainable: Trainable = a.train.parse().map_err(|e| anyhow::anyhow!("--train {e}"))?;
    let optimizer: OptimizerKind = a.optimizer.parse().map_err(|e| anyhow::anyhow!("--optimizer: {e}"))?;
    let max_memory =
        a.max_memory.as_deref().map(parse_bytes).transpose().map_err(|e| anyhow::anyhow!("--max-memory {e}"))?;
    let max_time =
        a.max_time.as_deref().map(parse_duration).transpose().map_err(|e| anyhow::anyhow!("--max-time {e}"))?;
    if !(0.0..=1.0).contains(&a.alpha) {
        bail!("--alpha must lie in 0..1, got {}", a.alpha);
    }
    if a.batch == 0 || a.steps == Some(0) || a.epochs == Some(0) {
        bail!("--batch, --steps and --epochs must be at least 1");
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        bail!("--lr must be positive, got {}", a.lr);
    }
    let cache = CacheReader::open(&a.cache)?;
    let data = DataSource::open(&a.data, &DataOptions { labels: a.labels.clone(), ..Default::default() })?;
    check_cache_fits(&cache, &data)?;
    let t = a.temperature.unwrap_or(cache.header().temperature);
    let targets = soft_targets(&cache, t)?;
    let labels: Vec<Option<i64>> = match data.labels() {
        Some(l) => l.iter().map(|&y| (y >= 0).then_some(y)).collect(),
        None => cache_labels(&cache).unwrap_or_else(|| vec![None; data.len()]),
    };
    let x = data.read(0, data.len())?;
    let mut student =
        Student::load(&a.student, &trainable).with_context(|| format!("student {}", a.student.display()))?;
    let steps = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * data.len().div_ceil(a.batch.min(data.len())) as u64,
        (None, None) => 300,
    };
    let cfg = TrainConfig {
        kd: KdConfig { temperature: t, alpha: a.alpha },
        optimizer,
        lr: a.lr,
        min_lr: a.lr * 0.01,
        warmup_steps: a.warmup.min(steps / 2),
        steps,
        batch: a.batch,
        clip_norm: a.clip,
        seed: a.seed,
        max_time,
        max_memory,
        checkpoint: a.checkpoint.clone(),
        checkpoint_every: a.checkpoint_every,
        ..Default::default()
    };

    let bar = if a.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(steps);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}") {
            b.set_style(style);
        }
        b
    };
    let t0 = Instant::now();
    let mut first_step = None;
    let result = train(&mut student, &TrainData { x: &x, targets: &targets, labels: &labels }, &cfg, |s| {
        let first = *first_step.get_or_insert(s.step - 1);
        let rate = (s.step - first) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(s.step);
        bar.set_message(format!("loss {:.4}  {rate:.1} steps/s", s.loss));
    });
    bar.finish_and_clear();
    let rep = result?;
    export_onnx(&student, &a.out)?;

    let labelled = labels.iter().filter(|l| l.is_some()).count();
    let resumed = rep.resumed_from.map(|s| format!(", resumed from step {s}")).unwrap_or_default();
    let stopped = if rep.stopped_by_time { " (stopped by --max-time)" } else { "" };
    let adapters = match student.adapters.first() {
        Some(ad) => format!(" (LoRA rank {} on {} layers)", ad.rank, student.adapters.len()),
        None => String::new(),
    };
    let micro = if rep.accumulation > 1 {
        format!(", micro-batch {} x {}", rep.micro_batch, rep.accumulation)
    } else {
        String::new()
    };
    println!(
        "distilled {} -> {}: {}/{steps} steps{stopped}, final loss {:.4}, {:.1}s, peak training memory {}{micro}{resumed}; {} params trained{adapters}, T={t}, {labelled}/{} labelled",
        a.student.display(),
        a.out.display(),
        rep.steps_done,
        rep.final_loss,
        rep.elapsed.as_secs_f64(),
        human_bytes(rep.peak_bytes),
        student.param_count(),
        data.len(),
    );
    if let Some(p) = a.quantize {
        let q = a.out.with_extension(format!("{p}.onnx"));
        let r = alembic::quant::export_qdq(&a.out, p, &q)?;
        println!(
            "quantized {} -> {}: {} weights, {} -> {} bytes",
            a.out.display(),
            q.display(),
            r.weights,
            r.f32_bytes,
            r.quantized_bytes
        );
    }
    Ok(())
}

/// `65536`, `64KB`, `64KiB`, `1.5MB`, `2GiB` (KB = 1000, KiB = 1024).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("'{s}': expected a size such as 64MB or 512KiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("'{s}': unknown unit '{u}' (B, KB, KiB, MB, MiB, GB, GiB)")),
    };
    Ok((v * mult) as usize)
}

/// `30s`, `500ms`, `5m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("'{s}': expected a duration such as 30s or 5m"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => return Err(format!("'{s}': unknown unit '{u}' (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("'{s}': {e}"))
}

fn human_bytes(b: usize) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64MB"), Ok(64_000_000));
        assert_eq!(parse_bytes("2KiB"), Ok(2048));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
