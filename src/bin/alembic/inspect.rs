//! `alembic inspect MODEL`

use alembic::backend::{BackendKind, Support};
use alembic::{Model, Precision};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model file.
    model: PathBuf,
    /// Also list every node with its output shape and backend support.
    #[arg(long, default_value_t = true)]
    nodes: bool,
    /// Engines whose node placement to show (comma-separated; default every built-in one).
    #[arg(long, value_delimiter = ',')]
    backend: Vec<BackendKind>,
    /// Weight precisions to show placement for, per engine (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    precision: Vec<Precision>,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let mut backends = a.backend;
    if backends.is_empty() {
        backends.push(BackendKind::Cpu);
        #[cfg(feature = "wgpu")]
        backends.push(BackendKind::Wgpu);
    }
    let columns: Vec<(BackendKind, Precision)> =
        backends.iter().flat_map(|&b| a.precision.iter().map(move |&p| (b, p))).collect();
    print!("{}", report_with(&a.model, a.nodes.then_some(&columns[..]))?);
    Ok(())
}

/// The inspect report as text (shared with `demo`); `nodes` adds the CPU placement per node.
pub fn report(path: &std::path::Path, nodes: bool) -> anyhow::Result<String> {
    report_with(path, nodes.then_some(&[(BackendKind::Cpu, Precision::F32)][..]))
}

/// The report with one placement column per (engine, precision) in `columns`: `native`, or the
/// engine a node falls back to (`-> cpu`), or why it cannot run.
pub fn report_with(path: &std::path::Path, columns: Option<&[(BackendKind, Precision)]>) -> anyhow::Result<String> {
    use std::fmt::Write;
    let proto = alembic::onnx::read_model_proto(path)?;
    let model = Model::load(path)?;
    let g = model.graph();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut s = String::new();
    let file_nodes = proto.graph.as_ref().map(|g| g.node.len()).unwrap_or(0);
    writeln!(
        s,
        "model    {} ({}, opset {}, producer '{}')",
        path.display(),
        bytes(size as usize),
        g.opset,
        proto.producer_name
    )?;
    for (title, infos) in [("input ", model.inputs()), ("output", model.outputs())] {
        for i in infos {
            let dt = i.dtype.map(|d| d.to_string()).unwrap_or("?".into());
            let sh = i.shape.map(|s| s.to_string()).unwrap_or("[?]".into());
            writeln!(s, "{title}   {}  {dt} {sh}", i.name)?;
        }
    }
    let (count, pbytes) = g.parameter_stats();
    writeln!(s, "params   {count} ({})", bytes(pbytes))?;
    writeln!(s, "nodes    {} after optimisation ({} in the file)", g.nodes.len(), file_nodes)?;
    let hist: Vec<String> = g.op_histogram().iter().map(|(op, n)| format!("{op} {n}")).collect();
    writeln!(s, "ops      {}", hist.join(", "))?;
    if let Some(columns) = columns {
        // Quantization rewrites nodes in place (same order and names), so rows line up.
        let support: Vec<Vec<(String, &str, Support)>> = columns.iter().map(|&(b, p)| model.support_at(b, p)).collect();
        let mut head = format!("\n{:<24} {:<20} {:<20}", "node", "op", "output");
        for (b, p) in columns {
            head += &format!(" {:<14}", format!("{b} {p}"));
        }
        writeln!(s, "{}", head.trim_end())?;
        let mut fallbacks = vec![0usize; columns.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            let out = &g.values[n.outputs[0]];
            let shape = out.shape.as_ref().map(|s| s.to_string()).unwrap_or("?".into());
            let mut line = format!("{:<24} {:<20} {:<20}", n.name, n.op.name(), shape);
            for (c, col) in support.iter().enumerate() {
                let cell = match col.get(i).map(|r| &r.2) {
                    Some(Support::Native) => "native".to_string(),
                    Some(Support::Fallback(e)) => {
                        fallbacks[c] += 1;
                        format!("-> {e}")
                    }
                    Some(Support::Unsupported(why)) => format!("unsupported: {why}"),
                    None => "?".into(),
                };
                line += &format!(" {cell:<14}");
            }
            writeln!(s, "{}", line.trim_end())?;
        }
        for ((b, p), n) in columns.iter().zip(fallbacks) {
            writeln!(s, "{b} {p}: {n} node(s) fall back")?;
        }
    }
    Ok(s)
}

pub fn bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}
