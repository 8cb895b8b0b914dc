//! `alembic bench MODEL [--backends cpu,tract,ort] [--batch 1,8] [--runs N | --max-secs S] ...`

use alembic::bench::{self, inputs, report, Config, Precision};
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model file.
    model: PathBuf,
    /// Backends to compare, comma-separated: cpu, wgpu, tract, ort.
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    backends: Vec<String>,
    /// Precisions, comma-separated: f32, f16, int8, int4, w8a8 (unsupported ones are reported as such).
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    precision: Vec<Precision>,
    /// Batch sizes for the inputs' first dimension, comma-separated (default: 1, or --input-shape).
    #[arg(long, value_delimiter = ',')]
    batch: Option<Vec<usize>>,
    /// Warm-up runs per combination, after the first inference.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Measured runs per combination (default 100 unless --max-secs is given).
    #[arg(long)]
    runs: Option<usize>,
    /// Time budget for the measured runs of all combinations together, seconds.
    #[arg(long)]
    max_secs: Option<f64>,
    /// Intra-op thread counts, comma-separated (e.g. 1,2): each is a set of combinations,
    /// interleaved with the others. Alembic's CPU pool is sized to the largest (at most 4).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// NAME=1x3x48x192: an input's shape, or SYMBOL=N to bind a symbolic dimension.
    #[arg(long = "input-shape", value_parser = inputs::parse_shape_spec)]
    input_shape: Vec<(String, Vec<usize>)>,
    /// NAME=FILE (.npy or .pb) instead of random data; FILE alone when the model has one input.
    #[arg(long = "input", short = 'i')]
    input: Vec<String>,
    /// Write the report as JSON (docs/bench-schema.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also print the report as Markdown.
    #[arg(long)]
    markdown: bool,
    /// Write an SVG plot of the latency distributions.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Time each node on the backends that can (alembic cpu).
    #[arg(long)]
    profile: bool,
    /// Print the CPU model, features, cores, memory, OS and GPU.
    #[arg(long)]
    device_info: bool,
    /// BACKEND:PRECISION the ratio column compares against (default: the first).
    #[arg(long)]
    baseline: Option<String>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    if a.threads.contains(&0) {
        bail!("--threads must be at least 1");
    }
    if let Some(t) = a.threads.iter().max() {
        // Sizes the CPU engine's pool, built on first use, which has not happened yet.
        std::env::set_var("MATMUL_NUM_THREADS", t.to_string());
    }
    let mut threads = a.threads.clone();
    threads.dedup();
    if a.runs == Some(0) {
        bail!("--runs must be at least 1");
    }
    if a.max_secs.is_some_and(|s| s.is_nan() || s <= 0.0) {
        bail!("--max-secs must be positive");
    }
    let decls = inputs::model_inputs(&a.model)?;
    let mut files = Vec::new();
    for spec in &a.input {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) => (n.to_string(), PathBuf::from(f)),
            None if decls.len() == 1 => (decls[0].name.clone(), PathBuf::from(spec)),
            None => bail!("--input {spec}: the model has {} inputs, write NAME=FILE", decls.len()),
        };
        files.push((name.clone(), crate::run::read_tensor(&file).with_context(|| format!("--input {name}"))?));
    }
    let mut backends: Vec<String> = Vec::new();
    for b in &a.backends {
        let b = b.trim().to_ascii_lowercase();
        if !bench::targets::BACKENDS.contains(&b.as_str()) {
            bail!("--backends: unknown backend '{b}' (known: {})", bench::targets::BACKENDS.join(", "));
        }
        if !backends.contains(&b) {
            backends.push(b);
        }
    }
    let mut precisions = a.precision.clone();
    precisions.dedup();
    let cfg = Config {
        model: a.model.clone(),
        backends,
        precisions,
        batches: a.batch.clone(),
        warmup: a.warmup,
        runs: a.runs,
        max_secs: a.max_secs,
        threads,
        inputs: inputs::InputOptions { shapes: a.input_shape.clone(), files, seed: a.seed },
        profile: a.profile,
        baseline: a.baseline.clone(),
        probe_gpu: a.device_info,
    };

    let bar = if a.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(1000);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {percent:>3}% {elapsed_precise} {msg}") {
            b.set_style(style);
        }
        b
    };
    let result = bench::run(&cfg, &mut |p| {
        bar.set_position((p.fraction.clamp(0.0, 1.0) * 1000.0) as u64);
        bar.set_message(p.message);
    });
    bar.finish_and_clear();
    let rep = result?;

    if a.device_info {
        print!("{}", device_text(&rep.device));
        println!();
    }
    print!("{}", report::render_text(&rep));
    if a.markdown {
        println!();
        print!("{}", report::render_markdown(&rep));
    }
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&rep).context("serialising the report")?;
        alembic::tensor::npy::write_atomic(path, (json + "\n").as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &a.plot {
        bench::plot::write_svg(&rep, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn device_text(d: &bench::DeviceInfo) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    let mut s = format!(
        "device:\n  cpu:      {}\n  arch:     {}\n  cores:    {} physical, {} logical\n  features: {}\n  memory:   {}\n  os:       {}\n  gpu:      {}\n",
        opt(d.cpu_model.clone()),
        d.arch,
        opt(d.physical_cores.map(|c| c.to_string())),
        d.logical_cores,
        if d.cpu_features.is_empty() { "none detected".into() } else { d.cpu_features.join(" ") },
        opt(d.memory_total_bytes.map(|m| format!("{:.1} GiB", m as f64 / (1u64 << 30) as f64))),
        d.os,
        d.gpu
    );
    if let Some(g) = &d.gpu_adapter {
        let feats = if g.features.is_empty() { "none of interest".to_string() } else { g.features.join(" ") };
        s += &format!("    type:     {} via {}\n", g.device_type, g.backend);
        s += &format!("    driver:   {} {}\n", g.driver, g.driver_info);
        s += &format!("    features: {feats}\n");
        s += &format!("    subgroup: {}..{}\n", g.subgroup_min_size, g.subgroup_max_size);
        let limits: Vec<String> = g.limits.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s += &format!("    limits:   {}\n", limits.join(", "));
    }
    s
}
