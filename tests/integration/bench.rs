//! `alembic bench`: statistics on known samples, the JSON report against docs/bench-schema.json,
//! and short end-to-end runs through the library and the CLI.

use alembic::bench::{self, stats, Config, Status};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema() -> Value {
    let text = std::fs::read_to_string(root().join("docs/bench-schema.json")).expect("docs/bench-schema.json");
    serde_json::from_str(&text).expect("schema is JSON")
}

/// Every violation of docs/bench-schema.json in `v`, found by the `jsonschema` crate (a full
/// draft 2020-12 validator).
fn violations(v: &Value) -> Vec<String> {
    let s = schema();
    let validator = jsonschema::draft202012::new(&s).expect("docs/bench-schema.json compiles");
    validator.iter_errors(v).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

fn assert_valid(json: &Value) {
    let errs = violations(json);
    assert!(errs.is_empty(), "report does not follow docs/bench-schema.json:\n{}", errs.join("\n"));
}

#[test]
fn bench_schema_is_valid_draft_2020_12() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    if let Err(e) = jsonschema::meta::validate(&s) {
        panic!("docs/bench-schema.json is not a valid JSON Schema: {e}");
    }
}

/// A small MLP (Gemm, Relu, Gemm) with a symbolic batch, written as ONNX by hand-built protobuf.
fn mlp_model(dir: &Path) -> PathBuf {
    use alembic::onnx::pb::*;
    let dim = |d: tensor_shape_proto::dimension::Value| tensor_shape_proto::Dimension {
        value: Some(d),
        ..Default::default()
    };
    let vi = |name: &str, n: i64| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        dim(tensor_shape_proto::dimension::Value::DimParam("N".into())),
                        dim(tensor_shape_proto::dimension::Value::DimValue(n)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let init = |name: &str, dims: Vec<i64>| {
        let n: i64 = dims.iter().product();
        TensorProto {
            name: name.into(),
            dims,
            data_type: 1,
            float_data: (0..n).map(|i| ((i * 37 % 19) as f32 - 9.0) * 0.01).collect(),
            ..Default::default()
        }
    };
    let node = |name: &str, op: &str, ins: &[&str], out: &str| NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(GraphProto {
            name: "mlp".into(),
            node: vec![
                node("fc1", "Gemm", &["x", "w1", "b1"], "h"),
                node("relu", "Relu", &["h"], "hr"),
                node("fc2", "Gemm", &["hr", "w2", "b2"], "y"),
            ],
            initializer: vec![
                init("w1", vec![16, 32]),
                init("b1", vec![32]),
                init("w2", vec![32, 4]),
                init("b2", vec![4]),
            ],
            input: vec![vi("x", 16)],
            output: vec![vi("y", 4)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join("mlp.onnx");
    std::fs::write(&path, prost::Message::encode_to_vec(&model)).unwrap();
    path
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("alembic-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn statistics_on_known_samples() {
    // numpy.percentile(range(1, 101), [50, 90, 95, 99]) -> 50.5, 90.1, 95.05, 99.01
    let x: Vec<f64> = (1..=100).map(f64::from).collect();
    let s = stats::Summary::of(&x).unwrap();
    for (got, want) in [(s.p50, 50.5), (s.p90, 90.1), (s.p95, 95.05), (s.p99, 99.01), (s.mean, 50.5)] {
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
    // numpy.std(range(1, 101), ddof=1)
    assert!((s.std - 29.011491975882016).abs() < 1e-9);
    assert_eq!((s.count, s.min, s.max), (100, 1.0, 100.0));
    // Two samples: percentiles interpolate between them.
    assert!((stats::percentile(&[10.0, 20.0], 25.0) - 12.5).abs() < 1e-12);
}

#[test]
fn bench_report_follows_schema() {
    let dir = temp_dir("lib");
    let model = mlp_model(&dir);
    let mut cfg = Config::new(&model);
    cfg.backends = vec!["cpu".into(), "wgpu".into()];
    cfg.precisions = vec![bench::Precision::F32, bench::Precision::Int8];
    cfg.batches = Some(vec![1, 3]);
    cfg.warmup = 2;
    cfg.runs = Some(5);
    cfg.profile = true;
    let mut calls = 0;
    let rep = bench::run(&cfg, &mut |_| calls += 1).unwrap();
    assert!(calls > 0);
    assert_eq!(rep.results.len(), 8);
    let cpu: Vec<_> = rep.results.iter().filter(|r| r.backend == "cpu").collect();
    assert_eq!(cpu.len(), 4);
    for r in &cpu {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert_eq!(r.samples_ms.len(), 5);
        assert_eq!(r.input_shapes[0].shape, vec![r.batch, 16]);
        let p = r.profile.as_ref().expect("cpu profiles");
        // The CPU plan runs the Relu in fc1's output pass (Gemm in f32, QGemm in int8) and says so.
        let mut names: Vec<&str> = p.iter().map(|n| n.node.as_str()).collect();
        names.sort();
        assert_eq!(names, ["fc1+relu", "fc2"], "{}", r.precision);
        assert!((p.iter().map(|n| n.share).sum::<f64>() - 1.0).abs() < 1e-6);
        assert_eq!(r.profile_clock.as_deref(), Some("cpu-wall"));
        let ops = r.profile_by_op.as_ref().unwrap();
        assert_eq!(ops[0].nodes + ops.get(1).map_or(0, |o| o.nodes), p.len(), "{ops:?}");
        let phases = r.init_phases.as_ref().unwrap();
        assert!(phases.load_ms.is_some() && phases.prepare_ms.is_some());
        assert_eq!(phases.quantize_ms.is_some(), r.precision == "int8");
        assert!(r.gpu_buffer_bytes.is_none());
    }
    assert_eq!(cpu[0].ratio_to_baseline, Some(1.0));
    let int8 = cpu.iter().find(|r| r.precision == "int8").unwrap();
    assert_eq!(int8.engine_detail.as_deref(), Some("2 node(s) quantized to int8"));
    // wgpu runs where an adapter exists (lavapipe in CI: correctness only), else says why not.
    for r in rep.results.iter().filter(|r| r.backend == "wgpu") {
        match r.status {
            Status::Ok => {
                assert!(r.gpu_buffer_bytes.is_some_and(|b| b > 0), "{r:?}");
                assert!(r.profile.as_ref().is_some_and(|p| !p.is_empty()), "{r:?}");
                let clock = r.profile_clock.as_deref().unwrap();
                assert!(["gpu-timestamp-query", "cpu-submit-wait"].contains(&clock), "{clock}");
                assert!(rep.device.gpu_adapter.is_some());
            }
            _ => assert!(r.message.is_some(), "{r:?}"),
        }
    }
    let json = serde_json::to_value(&rep).unwrap();
    assert_valid(&json);
    // The validator does catch a broken report.
    let mut broken = json.clone();
    broken["results"][0]["status"] = "fine".into();
    broken.as_object_mut().unwrap().remove("device");
    broken["results"][0]["latency_ms"]["p50"] = "fast".into();
    let errs = violations(&broken);
    assert_eq!(errs.len(), 3, "{errs:?}");
    let md = bench::report::render_markdown(&rep);
    assert!(md.contains("| cpu:f32:b3 | ok |"), "{md}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn thread_counts_are_combinations_of_their_own() {
    let dir = temp_dir("threads");
    let model = mlp_model(&dir);
    let mut cfg = Config::new(&model);
    cfg.precisions = vec![bench::Precision::F32, bench::Precision::Int8];
    cfg.batches = Some(vec![2]);
    cfg.threads = vec![1, 2];
    cfg.warmup = 1;
    cfg.runs = Some(3);
    let rep = bench::run(&cfg, &mut |_| {}).unwrap();
    let ids: Vec<&str> = rep.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["cpu:f32:b2:t1", "cpu:int8:b2:t1", "cpu:f32:b2:t2", "cpu:int8:b2:t2"]);
    for r in &rep.results {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(r.engine_detail.as_deref().is_some_and(|d| d.ends_with(&format!("{} thread(s)", r.threads.unwrap()))));
    }
    // Each thread count has its own baseline.
    assert_eq!(rep.results[0].ratio_to_baseline, Some(1.0));
    assert_eq!(rep.results[2].ratio_to_baseline, Some(1.0));
    assert_eq!((rep.settings.threads, &rep.settings.thread_counts[..]), (Some(2), &[1, 2][..]));
    assert_valid(&serde_json::to_value(&rep).unwrap());
    cfg.threads = vec![0];
    assert!(bench::run(&cfg, &mut |_| {}).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fixture_benches_follow_schema() {
    use bench::Precision::*;
    for (name, op) in [("student", "Gemm"), ("teacher", "Conv")] {
        let model = root().join(format!("models/{name}.onnx"));
        let mut cfg = Config::new(&model);
        cfg.backends = vec!["cpu".into(), "tract".into(), "ort".into()];
        cfg.precisions = vec![F32, F16, Int8, Int4, W8A8];
        cfg.warmup = 1;
        cfg.runs = Some(3);
        cfg.batches = Some(vec![1, 4]);
        cfg.profile = true;
        let rep = bench::run(&cfg, &mut |_| {}).unwrap();
        assert_valid(&serde_json::to_value(&rep).unwrap());
        assert_eq!(rep.results.len(), 30);
        for r in &rep.results {
            assert_eq!(r.input_shapes[0].shape, vec![r.batch, 1, 8, 8]);
            let expect_ok = match (r.backend.as_str(), r.precision.as_str()) {
                ("cpu", _) => true,
                ("tract", p) => p == "f32",
                // ONNX Runtime only where ORT_DYLIB_PATH is set (scripts/test.sh sets it).
                ("ort", p) => p == "f32" && std::env::var_os("ORT_DYLIB_PATH").is_some(),
                _ => unreachable!(),
            };
            if !expect_ok {
                assert_ne!(r.status, Status::Error, "{r:?}");
                assert!(r.message.is_some());
                continue;
            }
            assert_eq!(r.status, Status::Ok, "{name} {}: {:?}", r.id, r.message);
            assert_eq!(r.samples_ms.len(), 3);
            assert!(r.ratio_to_baseline.is_some_and(|x| x > 0.0));
            if r.backend == "cpu" {
                let by_op = r.profile_by_op.as_ref().expect("cpu profiles");
                let want = if r.precision == "f32" { op.to_string() } else { format!("Q{op}") };
                assert!(by_op.iter().any(|o| o.op == want), "{}: {by_op:?}", r.id);
            }
        }
    }
}

#[test]
fn cli_bench_runs_end_to_end() {
    let dir = temp_dir("cli");
    let model = mlp_model(&dir);
    let json = dir.join("out.json");
    let svg = dir.join("out.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alembic"))
        .arg("bench")
        .arg(&model)
        .args(["--backends", "cpu,tract", "--batch", "1,2", "--warmup", "1", "--runs", "5", "--quiet"])
        .args(["--markdown", "--profile", "--device-info", "--input-shape", "N=2"])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cpu:f32:b2"), "{stdout}");
    assert!(stdout.contains("p50 vs cpu:f32"), "{stdout}");
    assert!(stdout.contains("per-node profile"), "{stdout}");
    assert!(stdout.contains("device:"), "{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_valid(&v);
    assert_eq!(v["results"][0]["latency_ms"]["count"], 5);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("cpu:f32:b1"), "{}", &svg[..svg.len().min(300)]);
    // Bad arguments fail with one line.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_alembic"))
        .arg("bench")
        .arg(&model)
        .args(["--baseline", "ort:f32", "--quiet"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: "));
    let _ = std::fs::remove_dir_all(dir);
}
