//! ONNX backend node conformance: the cases generated from the `onnx` package by
//! scripts/onnx_node_cases.py (ALEMBIC_ONNX_NODE_CASES points at them).
//!
//! `ALEMBIC_CASE_FILTER=substring` runs only matching cases and prints every result.

use crate::common::compare;
use alembic::onnx::tensor_proto::read_pb_file;
use alembic::{Model, Tensor};
use std::path::{Path, PathBuf};

pub struct CaseResult {
    pub name: String,
    pub ops: String,
    pub outcome: Result<(), String>,
}

fn cases_dir() -> Option<PathBuf> {
    std::env::var_os("ALEMBIC_ONNX_NODE_CASES").map(PathBuf::from).filter(|p| p.join("manifest.tsv").exists())
}

/// Runs one case directory: every test_data_set_* against the model.
pub fn run_case(dir: &Path) -> Result<(), String> {
    let model = Model::load(dir.join("model.onnx")).map_err(|e| format!("load: {e}"))?;
    let session = model.session(Default::default()).map_err(|e| format!("session: {e}"))?;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_")))
        .collect();
    sets.sort();
    let model_inputs = model.inputs();
    for set in sets {
        let read_all = |prefix: &str| -> Result<Vec<Tensor>, String> {
            let mut v = Vec::new();
            for i in 0.. {
                let p = set.join(format!("{prefix}_{i}.pb"));
                if !p.exists() {
                    break;
                }
                v.push(read_pb_file(&p).map_err(|e| e.to_string())?.1);
            }
            Ok(v)
        };
        let inputs = read_all("input")?;
        let expected = read_all("output")?;
        // Inputs map by position onto the graph inputs that are not initializers.
        let named: Vec<(&str, &Tensor)> = model_inputs.iter().map(|i| i.name.as_str()).zip(inputs.iter()).collect();
        let out = session.run_refs(&named).map_err(|e| format!("run: {e}"))?;
        if out.0.len() != expected.len() {
            return Err(format!("{} outputs, expected {}", out.0.len(), expected.len()));
        }
        for ((name, a), e) in out.iter().zip(&expected) {
            compare(a, e, 1e-3, 1e-5).map_err(|m| format!("output '{name}': {m}"))?;
        }
    }
    Ok(())
}

/// Every case of the manifest whose status is ok, run (optionally filtered).
pub fn run_all(filter: Option<&str>) -> Option<Vec<CaseResult>> {
    let dir = cases_dir()?;
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).ok()?;
    let mut results = Vec::new();
    for line in manifest.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 6 || cols[5] != "ok" {
            continue;
        }
        if filter.is_some_and(|f| !cols[0].contains(f)) {
            continue;
        }
        let case = dir.join(cols[0]);
        let outcome = std::panic::catch_unwind(|| run_case(&case)).unwrap_or_else(|_| Err("PANIC".into()));
        results.push(CaseResult { name: cols[0].to_string(), ops: cols[1].to_string(), outcome });
    }
    Some(results)
}

#[test]
fn filtered_cases_report() {
    let Ok(filter) = std::env::var("ALEMBIC_CASE_FILTER") else {
        println!("conformance: ALEMBIC_CASE_FILTER not set, nothing to report");
        return;
    };
    let Some(results) = run_all(Some(&filter)) else {
        println!("SKIPPED conformance: ALEMBIC_ONNX_NODE_CASES not set (run scripts/test.sh)");
        return;
    };
    let pass = results.iter().filter(|r| r.outcome.is_ok()).count();
    for r in &results {
        match &r.outcome {
            Ok(()) => println!("PASS {} [{}]", r.name, r.ops),
            Err(e) => println!("FAIL {} [{}]: {e}", r.name, r.ops),
        }
    }
    println!("{pass} of {} cases matching '{filter}' pass", results.len());
}
