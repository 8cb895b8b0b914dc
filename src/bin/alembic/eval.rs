//! `alembic eval MODEL --data DATA [--labels L.npy] [--cache LABELS.kdc | --teacher T.onnx] [--before S.onnx]`

use alembic::cache::CacheReader;
use alembic::data::{DataOptions, DataSource};
use alembic::distill::targets::{cache_labels, check_cache_fits, teacher_log_probs};
use alembic::eval::{evaluate, predict, Metrics};
use alembic::Model;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// ONNX classifier to evaluate.
    model: PathBuf,
    /// Evaluation inputs (.npy, .npz or folder).
    #[arg(long)]
    data: PathBuf,
    /// Hard labels (.npy of integers); default: the data's own, else the cache's.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Teacher distribution from this soft-label cache of the same data (reconstructed at T = 1).
    #[arg(long, conflicts_with = "teacher")]
    cache: Option<PathBuf>,
    /// Teacher distribution by running this ONNX teacher on the data.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Also evaluate this model (e.g. the student before refinement) and print both side by side.
    #[arg(long)]
    before: Option<PathBuf>,
    /// Samples per inference batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let data = DataSource::open(&a.data, &DataOptions { labels: a.labels.clone(), ..Default::default() })?;
    if data.is_empty() {
        bail!("{}: no samples", a.data.display());
    }
    let cache = a.cache.as_deref().map(CacheReader::open).transpose()?;
    if let Some(c) = &cache {
        check_cache_fits(c, &data)?;
    }
    let labels: Option<Vec<i64>> = match (data.labels(), &cache) {
        (Some(l), _) => Some(l.to_vec()),
        (None, Some(c)) => cache_labels(c).map(|l| l.into_iter().map(|y| y.unwrap_or(-1)).collect()),
        (None, None) => None,
    };
    let teacher: Option<Vec<f32>> = match (&cache, &a.teacher) {
        (Some(c), _) => Some(teacher_log_probs(c)),
        (None, Some(t)) => Some(logits(t, &data, a.batch).context("teacher")?.0),
        (None, None) => None,
    };
    let (z, classes) = logits(&a.model, &data, a.batch)?;
    let check = |what: &str, len: usize| {
        if len != z.len() {
            bail!("{what} gives {} values for {} samples of {classes} classes", len, data.len());
        }
        Ok(())
    };
    if let Some(t) = &teacher {
        check("the teacher", t.len())?;
    }
    let after = evaluate(&z, classes, labels.as_deref(), teacher.as_deref());
    let before = match &a.before {
        Some(p) => {
            let (zb, _) = logits(p, &data, a.batch).with_context(|| format!("--before {}", p.display()))?;
            check(&format!("--before {}", p.display()), zb.len())?;
            Some(evaluate(&zb, classes, labels.as_deref(), teacher.as_deref()))
        }
        None => None,
    };
    let source = match (&a.cache, &a.teacher) {
        (Some(c), _) => format!(", teacher from cache {}", c.display()),
        (None, Some(t)) => format!(", teacher {}", t.display()),
        _ => String::new(),
    };
    println!("{}: {} samples, {classes} classes{source}", a.data.display(), data.len());
    print!("{}", table(&a.model, a.before.as_deref(), &after, before.as_ref()));
    Ok(())
}

fn logits(model: &Path, data: &DataSource, batch: usize) -> anyhow::Result<(Vec<f32>, usize)> {
    let session = Model::load(model)?.session(Default::default())?;
    predict(&session, data, batch).with_context(|| model.display().to_string())
}

/// Rows of metrics, one column per model (before first when given).
fn table(model: &Path, before_path: Option<&Path>, after: &Metrics, before: Option<&Metrics>) -> String {
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v));
    let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
    type Row = (&'static str, fn(&Metrics) -> Option<f64>, bool);
    let rows: [Row; 4] = [
        ("accuracy", |m| m.accuracy, true),
        ("teacher agreement", |m| m.teacher_agreement, true),
        ("KL to teacher (nats)", |m| m.kl_to_teacher, false),
        ("ECE (15 bins)", |m| m.ece, false),
    ];
    let cell = |m: &Metrics, f: fn(&Metrics) -> Option<f64>, p: bool| if p { pct(f(m)) } else { num(f(m)) };
    let name = |p: &Path| p.file_name().map_or(p.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut s = String::new();
    match (before, before_path) {
        (Some(b), Some(bp)) => {
            s += &format!("{:<22}{:>14}{:>14}{:>12}\n", "", name(bp), name(model), "change");
            for (label, f, p) in rows {
                let delta = match (f(b), f(after)) {
                    (Some(x), Some(y)) if p => format!("{:+.2}", 100.0 * (y - x)),
                    (Some(x), Some(y)) => format!("{:+.4}", y - x),
                    _ => "-".into(),
                };
                s += &format!("{label:<22}{:>14}{:>14}{delta:>12}\n", cell(b, f, p), cell(after, f, p));
            }
        }
        _ => {
            for (label, f, p) in rows {
                s += &format!("{label:<22}{:>14}\n", cell(after, f, p));
            }
        }
    }
    s
}
