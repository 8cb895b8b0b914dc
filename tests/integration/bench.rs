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

/// Checks `v` against the JSON Schema subset docs/bench-schema.json uses: type, const, enum,
/// required, properties, items, $ref to #/$defs, oneOf, minimum, maximum. Returns every violation.
fn validate(schema: &Value, root_schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local $ref");
        validate(&root_schema["$defs"][name], root_schema, v, at, errs);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type in schema"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_u64() || v.is_i64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            other => panic!("type {other} not handled"),
        });
        if !ok {
            errs.push(format!("{at}: {v} is not {types:?}"));
            return;
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errs.push(format!("{at}: {v} != const {c}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let (Some(min), Some(x)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            errs.push(format!("{at}: {x} < minimum {min}"));
        }
    }
    if let (Some(max), Some(x)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64()) {
        if x > max {
            errs.push(format!("{at}: {x} > maximum {max}"));
        }
    }
    if let Some(alts) = schema.get("oneOf").and_then(Value::as_array) {
        let passing = alts
            .iter()
            .filter(|a| {
                let mut e = Vec::new();
                validate(a, root_schema, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if passing != 1 {
            errs.push(format!("{at}: matches {passing} of oneOf"));
        }
    }
    if let Some(obj) = v.as_object() {
        for k in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let k = k.as_str().expect("required names");
            if !obj.contains_key(k) {
                errs.push(format!("{at}: missing required '{k}'"));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, s) in props {
                if let Some(x) = obj.get(k) {
                    validate(s, root_schema, x, &format!("{at}.{k}"), errs);
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(items, root_schema, x, &format!("{at}[{i}]"), errs);
        }
    }
}

fn assert_valid(json: &Value) {
    let s = schema();
    let mut errs = Vec::new();
    validate(&s, &s, json, "$", &mut errs);
    assert!(errs.is_empty(), "report does not follow docs/bench-schema.json:\n{}", errs.join("\n"));
}

/// A small MLP (Gemm, Relu, Gemm) with a symbolic batch, written as ONNX by hand-built protobuf.
fn mlp_model(dir: &Path) -> PathBuf {
    use tract_onnx::pb::*;
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
    let ok: Vec<_> = rep.results.iter().filter(|r| r.status == Status::Ok).collect();
    assert_eq!(ok.len(), 2, "cpu:f32 at batch 1 and 3");
    for r in &ok {
        assert_eq!(r.samples_ms.len(), 5);
        assert_eq!(r.ratio_to_baseline, Some(1.0));
        assert_eq!(r.input_shapes[0].shape, vec![r.batch, 16]);
        let p = r.profile.as_ref().expect("cpu profiles");
        assert_eq!(p.len(), 3);
        assert!((p.iter().map(|n| n.share).sum::<f64>() - 1.0).abs() < 1e-6);
    }
    assert!(rep.results.iter().filter(|r| r.status == Status::Unsupported).all(|r| r.message.is_some()));
    let json = serde_json::to_value(&rep).unwrap();
    assert_valid(&json);
    // The validator does catch a broken report.
    let mut broken = json.clone();
    broken["results"][0]["status"] = "fine".into();
    broken.as_object_mut().unwrap().remove("device");
    let s = schema();
    let mut errs = Vec::new();
    validate(&s, &s, &broken, "$", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}");
    let md = bench::report::render_markdown(&rep);
    assert!(md.contains("| cpu:f32:b3 | ok |"), "{md}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn student_fixture_bench_follows_schema() {
    let model = root().join("models/student.onnx");
    let mut cfg = Config::new(&model);
    cfg.warmup = 1;
    cfg.runs = Some(3);
    cfg.batches = Some(vec![1, 4]);
    cfg.profile = true;
    let rep = bench::run(&cfg, &mut |_| {}).unwrap();
    assert_valid(&serde_json::to_value(&rep).unwrap());
    for r in &rep.results {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert_eq!(r.input_shapes[0].shape, vec![r.batch, 1, 8, 8]);
        assert!(r.profile.as_ref().is_some_and(|p| p.iter().any(|n| n.op == "Gemm")));
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
