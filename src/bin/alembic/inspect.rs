//! `alembic inspect MODEL`

use alembic::backend::{BackendKind, Support};
use alembic::Model;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model file.
    model: PathBuf,
    /// Also list every node with its output shape and backend support.
    #[arg(long, default_value_t = true)]
    nodes: bool,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    print!("{}", report(&a.model, a.nodes)?);
    Ok(())
}

/// The inspect report as text (shared with `demo`).
pub fn report(path: &std::path::Path, nodes: bool) -> anyhow::Result<String> {
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
    if nodes {
        let support = model.support(BackendKind::Cpu);
        writeln!(s, "\n{:<24} {:<20} {:<20} cpu", "node", "op", "output")?;
        for (n, sup) in g.nodes.iter().zip(support) {
            let out = &g.values[n.outputs[0]];
            let shape = out.shape.as_ref().map(|s| s.to_string()).unwrap_or("?".into());
            let sup = match sup {
                Support::Native => "native".to_string(),
                Support::Fallback(e) => format!("fallback to {e}"),
                Support::Unsupported(why) => format!("unsupported: {why}"),
            };
            writeln!(s, "{:<24} {:<20} {:<20} {sup}", n.name, n.op.name(), shape)?;
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
