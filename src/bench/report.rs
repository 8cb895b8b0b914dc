//! Rendering a [`Report`] as a terminal table or Markdown.

use super::{ComboResult, DeviceInfo, Report, Status};
use std::fmt::Write;

const HEADERS: [&str; 16] = [
    "combination",
    "status",
    "init ms",
    "first ms",
    "warm-up ms",
    "runs",
    "mean ms",
    "std ms",
    "min ms",
    "p50 ms",
    "p90 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "samples/s",
    "peak RSS MiB (+delta)",
];

fn f(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.1}"),
        Some(v) if v >= 1.0 => format!("{v:.3}"),
        Some(v) => format!("{v:.4}"),
        None => "-".into(),
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Whether any combination holds GPU buffers (then the table gets a column for them).
fn has_gpu(r: &Report) -> bool {
    r.results.iter().any(|c| c.gpu_buffer_bytes.is_some())
}

fn row(r: &ComboResult, gpu: bool) -> Vec<String> {
    let l = r.latency_ms.as_ref();
    let status = match r.status {
        Status::Ok => "ok",
        Status::Unsupported => "unsupported",
        Status::Error => "error",
    };
    let mut v = vec![
        r.id.clone(),
        status.into(),
        f(r.init_ms),
        f(r.first_inference_ms),
        f(r.warmup.as_ref().and_then(|w| w.mean_ms)),
        l.map(|l| l.count.to_string()).unwrap_or_else(|| "-".into()),
        f(l.map(|l| l.mean)),
        f(l.map(|l| l.std)),
        f(l.map(|l| l.min)),
        f(l.map(|l| l.p50)),
        f(l.map(|l| l.p90)),
        f(l.map(|l| l.p95)),
        f(l.map(|l| l.p99)),
        f(l.map(|l| l.max)),
        r.throughput_per_s.map(|t| format!("{t:.1}")).unwrap_or_else(|| "-".into()),
        r.memory
            .as_ref()
            .map(|m| format!("{:.1} (+{:.1})", mib(m.peak_rss_bytes), mib(m.peak_delta_bytes)))
            .unwrap_or_else(|| "-".into()),
    ];
    if gpu {
        v.push(r.gpu_buffer_bytes.map(|b| format!("{:.2}", mib(b))).unwrap_or_else(|| "-".into()));
    }
    v.push(r.ratio_to_baseline.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into()));
    v
}

fn headers(r: &Report) -> Vec<String> {
    let mut h: Vec<String> = HEADERS.iter().map(|s| s.to_string()).collect();
    if has_gpu(r) {
        h.push("GPU buffers MiB".into());
    }
    h.push(format!("p50 vs {}", r.settings.baseline));
    h
}

/// One-line description of the machine.
pub fn machine_line(d: &DeviceInfo) -> String {
    let mut s = d.cpu_model.clone().unwrap_or_else(|| "unknown CPU".into());
    let cores = match d.physical_cores {
        Some(p) => format!("{p} cores / {} threads", d.logical_cores),
        None => format!("{} threads", d.logical_cores),
    };
    let _ = write!(s, " ({}, {cores}", d.arch);
    if let Some(m) = d.memory_total_bytes {
        let _ = write!(s, ", {:.1} GiB", m as f64 / (1u64 << 30) as f64);
    }
    let _ = write!(s, "), {}", d.os);
    s
}

fn preamble(r: &Report) -> Vec<String> {
    let s = &r.settings;
    let inputs: Vec<String> = r
        .model
        .inputs
        .iter()
        .map(|i| format!("{} {}[{}]", i.name, i.dtype, i.shape.as_ref().map(|s| s.join(",")).unwrap_or("?".into())))
        .collect();
    let runs = match (s.runs, s.max_secs) {
        (Some(n), Some(t)) => format!("{n} runs or {t} s"),
        (Some(n), None) => format!("{n} runs"),
        (None, Some(t)) => format!("{t} s"),
        (None, None) => "-".into(),
    };
    let mut v = vec![
        format!(
            "model: {} ({:.1} KiB), inputs: {}",
            r.model.path,
            r.model.file_bytes as f64 / 1024.0,
            inputs.join(", ")
        ),
        format!("machine: {}", machine_line(&r.device)),
        format!(
            "settings: warm-up {}, measured {runs} per combination (interleaved), threads {}, {} inputs (seed {})",
            s.warmup,
            match (&s.thread_counts[..], s.threads) {
                (counts, _) if counts.len() > 1 => counts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
                (_, Some(t)) => t.to_string(),
                _ => "default".into(),
            },
            s.input_source,
            s.seed
        ),
    ];
    let software = r.device.gpu_adapter.as_ref().is_some_and(|g| g.device_type == "Cpu");
    if software && r.results.iter().any(|c| c.backend == "wgpu" && c.status == super::Status::Ok) {
        v.push(format!(
            "note: the wgpu adapter is a software rasteriser ({}); its wgpu timings are correctness checks, not GPU speed",
            r.device.gpu
        ));
    }
    if !r.peak_rss_reset {
        v.push(
            "note: the RSS high-water mark could not be reset between combinations; peaks include earlier ones".into(),
        );
    }
    v
}

/// Why combinations did not run, and how the others ran, one line per backend:precision and
/// message (batches grouped).
fn notes(r: &Report) -> Vec<String> {
    let mut groups: Vec<(String, &str, Vec<String>)> = Vec::new();
    for c in &r.results {
        let Some(m) = c.message.as_deref().or(c.engine_detail.as_deref()) else { continue };
        let key = format!("{}:{}", c.backend, c.precision);
        match groups.iter_mut().find(|g| g.0 == key && g.1 == m) {
            Some(g) => g.2.push(format!("b{}", c.batch)),
            None => groups.push((key, m, vec![format!("b{}", c.batch)])),
        }
    }
    groups.into_iter().map(|(k, m, b)| format!("{k} ({}): {m}", b.join(", "))).collect()
}

/// Right-aligned, space-separated table for a terminal.
pub fn text_table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i == 0 {
                let _ = write!(s, "{c}{}", " ".repeat(pad));
            } else {
                let _ = write!(s, "  {}{c}", " ".repeat(pad));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = line(headers);
    s += &(w.iter().map(|&n| "-".repeat(n)).collect::<Vec<_>>().join("  ") + "\n");
    for r in rows {
        s += &line(r);
    }
    s
}

/// Markdown pipe table (first column left-aligned, the rest right-aligned).
pub fn markdown_table(headers: &[String], rows: &[Vec<String>]) -> String {
    let esc = |c: &String| c.replace('|', "\\|");
    let mut s = format!("| {} |\n", headers.iter().map(esc).collect::<Vec<_>>().join(" | "));
    s += &format!("|{}\n", (0..headers.len()).map(|i| if i == 0 { " --- |" } else { " ---: |" }).collect::<String>());
    for r in rows {
        s += &format!("| {} |\n", r.iter().map(esc).collect::<Vec<_>>().join(" | "));
    }
    s
}

fn profile_rows(c: &ComboResult, limit: usize) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let p = c.profile.as_ref()?;
    let h = ["node", "op", "mean ms", "share %"].map(String::from).to_vec();
    let mut rows: Vec<Vec<String>> = p
        .iter()
        .take(limit)
        .map(|n| vec![n.node.clone(), n.op.clone(), f(Some(n.mean_ms)), format!("{:.1}", n.share * 100.0)])
        .collect();
    if p.len() > limit {
        let rest: f64 = p[limit..].iter().map(|n| n.share).sum();
        rows.push(vec![
            format!("({} more)", p.len() - limit),
            String::new(),
            String::new(),
            format!("{:.1}", rest * 100.0),
        ]);
    }
    Some((h, rows))
}

/// Per-op totals of a profile ("Conv 73.1% (3 nodes), ..."), largest first.
pub fn by_op(c: &ComboResult) -> Option<String> {
    let ops = c.profile_by_op.as_ref()?;
    let parts: Vec<String> = ops
        .iter()
        .map(|o| format!("{} {:.1}% ({} node{})", o.op, o.share * 100.0, o.nodes, if o.nodes == 1 { "" } else { "s" }))
        .collect();
    Some(parts.join(", "))
}

/// Rows shown of each per-node profile (the JSON has them all).
const PROFILE_ROWS: usize = 25;

/// The terminal report: preamble, results table, notes, profiles.
pub fn render_text(r: &Report) -> String {
    let mut s = preamble(r).join("\n") + "\n\n";
    let rows: Vec<Vec<String>> = r.results.iter().map(|c| row(c, has_gpu(r))).collect();
    s += &text_table(&headers(r), &rows);
    for n in notes(r) {
        s += &format!("  {n}\n");
    }
    for c in &r.results {
        if let Some((h, rows)) = profile_rows(c, PROFILE_ROWS) {
            s += &format!(
                "\nper-node profile, {} ({} runs, {}):\n",
                c.id,
                c.profile.as_ref().map_or(0, |p| p.first().map_or(0, |n| n.runs)),
                c.profile_clock.as_deref().unwrap_or("wall time per node")
            );
            s += &text_table(&h, &rows);
            s += &format!("by op: {}\n", by_op(c).unwrap_or_default());
        }
    }
    s
}

/// The Markdown report: the same content as [`render_text`].
pub fn render_markdown(r: &Report) -> String {
    let mut s = preamble(r).iter().map(|l| format!("- {l}\n")).collect::<String>() + "\n";
    let rows: Vec<Vec<String>> = r.results.iter().map(|c| row(c, has_gpu(r))).collect();
    s += &markdown_table(&headers(r), &rows);
    let n = notes(r);
    if !n.is_empty() {
        s += "\n";
        for n in n {
            s += &format!("- {n}\n");
        }
    }
    for c in &r.results {
        if let Some((h, rows)) = profile_rows(c, PROFILE_ROWS) {
            s += &format!(
                "\nPer-node profile, `{}` ({}):\n\n",
                c.id,
                c.profile_clock.as_deref().unwrap_or("wall time per node")
            );
            s += &markdown_table(&h, &rows);
            s += &format!("\nBy op: {}\n", by_op(c).unwrap_or_default());
        }
    }
    s
}
