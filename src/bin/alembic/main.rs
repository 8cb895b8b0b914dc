//! The `alembic` command-line tool.

mod bench;
mod cache;
mod demo;
mod distill;
mod eval;
mod inspect;
mod quantize;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "alembic", version, about = "On-device inference and knowledge distillation for ONNX models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's inputs, outputs, ops, parameters and where each node runs.
    Inspect(inspect::Args),
    /// Run a model on .npy / .pb inputs and write one .npy per output.
    Run(run::Args),
    /// Time a model across backends, precisions and batch sizes (table, JSON, Markdown, SVG).
    Bench(bench::Args),
    /// Cache a teacher's soft labels over a data set (.kdc, resumable), or --verify a cache.
    Cache(cache::Args),
    /// Run the whole pipeline on the bundled fixtures and report what it did.
    Demo(demo::Args),
    /// Refine a student against a teacher's cached soft labels and write it as ONNX.
    Distill(distill::Args),
    /// Accuracy, teacher agreement, KL to the teacher and calibration of a classifier.
    Eval(eval::Args),
    /// Write a model with f16 or int8 weights as standard QDQ ONNX (loads in ONNX Runtime too).
    Quantize(quantize::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A panic is a bug, but it still must end as one line and a non-zero exit, not a trace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned());
        let loc = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error{loc}: {}", msg.unwrap_or_else(|| "panic".into()));
    }));
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Inspect(a) => inspect::main(a),
        Command::Run(a) => run::main(a),
        Command::Demo(a) => demo::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Cache(a) => cache::main(a),
        Command::Distill(a) => distill::main(a),
        Command::Eval(a) => eval::main(a),
        Command::Quantize(a) => quantize::main(a),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::from(2),
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}
