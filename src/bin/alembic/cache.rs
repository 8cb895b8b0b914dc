//! `alembic cache --teacher T.onnx --data DATA --out LABELS.kdc [...]` and
//! `alembic cache --verify FILE`.

use alembic::cache::{build_from_files, verify, BuildReport, FileBuild};
use alembic::data::{hex, DataOptions};
use alembic::teacher::EngineKind;
use anyhow::{anyhow, bail};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Teacher ONNX file; repeat for an ensemble (members' probabilities at T are averaged).
    #[arg(long = "teacher", value_name = "ONNX", required_unless_present = "verify")]
    teachers: Vec<PathBuf>,
    /// Data set: .npy, .npz, a folder of them, or an image folder.
    #[arg(long, required_unless_present = "verify")]
    data: Option<PathBuf>,
    /// Integer labels (.npy), one per sample, stored with each record.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Cache to write; running the same command again resumes an interrupted build.
    #[arg(long, value_name = "KDC", required_unless_present = "verify")]
    out: Option<PathBuf>,
    /// Logits kept per sample (f16 with their class indices); 0 keeps them all.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Cache temperature T: the kept classes and the dropped tail's mass are exact at T and 1.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Teacher output to cache (default: the first).
    #[arg(long)]
    output: Option<String>,
    /// Samples per teacher call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Runtime for the teachers: tract (pure Rust), ort (ONNX Runtime, feature `ort` and
    /// ORT_DYLIB_PATH) or alembic.
    #[arg(long, default_value = "tract")]
    engine: EngineKind,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Check a cache end to end (header, every chunk's CRC, footer) and print what it holds.
    #[arg(long, value_name = "KDC", conflicts_with_all = ["teachers", "data", "labels", "out", "output"])]
    verify: Option<PathBuf>,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    if let Some(file) = &a.verify {
        return print_verify(file);
    }
    let (Some(data), Some(out)) = (a.data, a.out) else { bail!("--data and --out are required") };
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if !(a.temperature > 0.0 && a.temperature.is_finite()) {
        bail!("--temperature must be positive, got {}", a.temperature);
    }
    let spec = FileBuild {
        teachers: a.teachers,
        engine: a.engine,
        output: a.output,
        data,
        data_options: DataOptions { labels: a.labels, ..Default::default() },
        top_k: a.top_k,
        temperature: a.temperature,
        batch: a.batch,
        ..Default::default()
    };
    let bar = progress_bar(a.quiet);
    bar.set_message("loading teachers, hashing the data set");
    let mut first = true;
    let t0 = Instant::now();
    let result = build_from_files(&spec, &out, &mut |done, total| {
        if first {
            // A resumed build starts part-way: the rate must not count the records on disk.
            first = false;
            bar.set_length(total);
            bar.set_position(done);
            bar.reset_eta();
            bar.set_message("");
        } else {
            bar.set_position(done);
        }
    });
    bar.finish_and_clear();
    // Library errors already name the file they are about; `to_string` keeps their io cause
    // from being printed twice by the one-line chain. Name the cache when nothing else is named.
    let rep = result.map_err(|e| {
        let m = e.to_string();
        if m.contains(&out.display().to_string()) {
            anyhow!(m)
        } else {
            anyhow!("{}: {m}", out.display())
        }
    })?;
    println!("{}", summary(&out, &rep, t0.elapsed().as_secs_f64()));
    Ok(())
}

fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(0);
    let tpl = "{bar:30} {pos}/{len} samples  {per_sec}  ETA {eta}  {msg}";
    if let Ok(style) = indicatif::ProgressStyle::with_template(tpl) {
        b.set_style(style);
    }
    b
}

/// The one-line result: what was done, the size, and the time beyond the teacher's own.
fn summary(out: &Path, r: &BuildReport, wall: f64) -> String {
    let what = if r.already_complete {
        "already complete, nothing computed".to_string()
    } else {
        format!("resumed from {}, computed {}", r.resumed_from, r.computed)
    };
    let mut s = format!(
        "{}: {} samples ({what}), {} classes, k {}, {} B/sample, {} bytes; {:.2} s",
        out.display(),
        r.samples,
        r.classes,
        r.k,
        r.record_size,
        r.file_bytes,
        wall
    );
    if r.teacher_secs > 0.0 {
        s += &format!(
            " (build {:.2} s of which teacher {:.2} s: overhead {:.0}%)",
            r.total_secs,
            r.teacher_secs,
            100.0 * (r.total_secs - r.teacher_secs) / r.teacher_secs
        );
    }
    s
}

fn print_verify(file: &Path) -> anyhow::Result<()> {
    let v = verify(file).map_err(|e| anyhow!(e.to_string()))?;
    let h = &v.header;
    let kind = if h.k >= h.classes { "full logits".to_string() } else { format!("top-{} of {}", h.k, h.classes) };
    println!("file         {} ({} bytes)", file.display(), v.file_bytes);
    println!("records      {} in {} chunks of up to {}", v.records, v.chunks, h.chunk_records);
    println!("classes      {}", h.classes);
    println!("k            {} ({kind}, f16), {} bytes/record", h.k, v.bytes_per_record);
    println!("temperature  {}", h.temperature);
    println!("output       {}", h.output);
    for (i, t) in h.teachers.iter().enumerate() {
        println!("teacher {i:<4} sha256 {}", hex(t));
    }
    println!("data         sha256 {}", hex(&h.data_digest));
    println!("labels       {}", if h.has_labels { format!("sha256 {}", hex(&h.labels_digest)) } else { "none".into() });
    println!("OK");
    Ok(())
}
