//! The `alembic` binary: success paths and one-line errors on bad input.

use alembic::onnx::tensor_proto::encode;
use alembic::tensor::npy::{read_npy, write_npy};
use alembic::Tensor;
use prost::Message;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch directory per test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("alembic-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the CLI; returns (success, stdout, stderr).
fn alembic(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_alembic")).args(args).output().expect("spawn alembic");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Asserts a failure with exactly one line on stderr, starting with "error:", containing `needle`.
fn assert_one_line_error(args: &[&str], needle: &str) {
    let (ok, _, err) = alembic(args);
    assert!(!ok, "expected failure for {args:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn first_rows(t: &Tensor, n: usize) -> Tensor {
    let a = t.to_array::<f32>().unwrap();
    Tensor::from_array(a.slice_axis(ndarray::Axis(0), (0..n).into()).to_owned())
}

#[test]
fn run_writes_outputs_matching_the_numpy_reference() {
    let dir = scratch("run");
    let x = read_npy(&root().join("models/data/heldout_x.npy")).unwrap();
    let x32 = first_rows(&x, 32);
    let input = dir.join("x.npy");
    write_npy(&input, &x32).unwrap();
    let model = root().join("models/student.onnx");
    let spec = format!("input={}", input.display());
    let (ok, out, err) =
        alembic(&["run", model.to_str().unwrap(), "--input", &spec, "--output-dir", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("logits"), "{out}");
    let got = read_npy(&dir.join("logits.npy")).unwrap().to_array::<f32>().unwrap();
    let want = read_npy(&root().join("models/expected/student_heldout_logits.npy")).unwrap().to_array::<f32>().unwrap();
    assert_eq!(got.shape(), want.shape());
    for (a, b) in got.iter().zip(want.iter()) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn run_reads_tensorproto_inputs() {
    let dir = scratch("pb");
    let x = first_rows(&read_npy(&root().join("models/data/heldout_x.npy")).unwrap(), 3);
    let pb = dir.join("input_0.pb");
    std::fs::write(&pb, encode(&x, "input").encode_to_vec()).unwrap();
    let model = root().join("models/teacher.onnx");
    let (ok, _, err) =
        alembic(&["run", model.to_str().unwrap(), "-i", pb.to_str().unwrap(), "-o", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(read_npy(&dir.join("logits.npy")).unwrap().shape(), &[3, 10]);
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let dir = scratch("bad");
    let student = root().join("models/student.onnx");
    let s = student.to_str().unwrap();
    let out = dir.to_str().unwrap();

    // wrong shape, wrong dtype, unknown name, missing file, truncated npy
    let bad_shape = dir.join("bad_shape.npy");
    write_npy(&bad_shape, &Tensor::zeros(alembic::DType::F32, &[2, 1, 7, 8])).unwrap();
    assert_one_line_error(
        &["run", s, "--input", &format!("input={}", bad_shape.display()), "-o", out],
        "dimension 2 is 7, expected 8",
    );
    let bad_type = dir.join("bad_type.npy");
    write_npy(&bad_type, &Tensor::zeros(alembic::DType::I64, &[2, 1, 8, 8])).unwrap();
    assert_one_line_error(
        &["run", s, "--input", &format!("input={}", bad_type.display()), "-o", out],
        "element type i64 given, f32 expected",
    );
    let bad_rank = dir.join("bad_rank.npy");
    write_npy(&bad_rank, &Tensor::zeros(alembic::DType::F32, &[2, 64])).unwrap();
    assert_one_line_error(
        &["run", s, "--input", &format!("input={}", bad_rank.display()), "-o", out],
        "rank 2 given, rank 4 expected",
    );
    assert_one_line_error(
        &["run", s, "--input", &format!("pixels={}", bad_shape.display()), "-o", out],
        "no such input",
    );
    assert_one_line_error(&["run", s, "--input", "input=/nonexistent/x.npy", "-o", out], "/nonexistent/x.npy");
    let truncated = dir.join("truncated.npy");
    let good = std::fs::read(&bad_shape).unwrap();
    std::fs::write(&truncated, &good[..good.len() - 17]).unwrap();
    assert_one_line_error(
        &["run", s, "--input", &format!("input={}", truncated.display()), "-o", out],
        "truncated.npy",
    );
}

#[test]
fn malformed_models_give_one_line_errors() {
    let dir = scratch("models");
    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf \xff\xfe\x00\x01 at all").unwrap();
    assert_one_line_error(&["inspect", garbage.to_str().unwrap()], "garbage.onnx");
    let bytes = std::fs::read(root().join("models/teacher.onnx")).unwrap();
    for cut in [10, bytes.len() / 3, bytes.len() - 5] {
        let truncated = dir.join(format!("truncated{cut}.onnx"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        assert_one_line_error(
            &["run", truncated.to_str().unwrap(), "-i", "x.npy", "-o", dir.to_str().unwrap()],
            "truncated",
        );
    }
    assert_one_line_error(&["inspect", "/nonexistent/model.onnx"], "/nonexistent/model.onnx");
}

#[test]
fn unsupported_op_names_op_node_and_opset() {
    use alembic::onnx::pb;
    let dir = scratch("unsupported");
    let vi = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor { elem_type: 1, shape: None })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(pb::GraphProto {
            node: vec![pb::NodeProto {
                input: vec!["x".into()],
                output: vec!["y".into()],
                name: "mystery_node".into(),
                op_type: "FrobnicateTensor".into(),
                ..Default::default()
            }],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join("unsupported.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    assert_one_line_error(
        &["inspect", path.to_str().unwrap()],
        "node 'mystery_node': unsupported operator FrobnicateTensor (opset 17)",
    );
}

#[test]
fn inspect_reports_io_ops_and_parameters() {
    let (ok, out, err) = alembic(&["inspect", root().join("models/teacher.onnx").to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("input    input  f32 [N,1,8,8]"), "{out}");
    assert!(out.contains("output   logits  f32 [N,10]"), "{out}");
    assert!(out.contains("Conv 3"), "{out}");
    // BatchNormalization folded into the convolutions, Dropout removed.
    assert!(!out.contains("BatchNormalization"), "{out}");
    assert!(!out.contains("Dropout") && !out.contains("Identity"), "{out}");
    assert!(out.contains("params"), "{out}");
}

/// The README's main command: the whole pipeline runs, and refinement helps on the shifted data.
#[test]
fn demo_runs_the_whole_pipeline() {
    let dir = scratch("demo");
    let (ok, out, err) = alembic(&["demo", "--out", dir.to_str().unwrap(), "--steps", "400"]);
    assert!(ok, "{err}\n{out}");
    for needle in
        ["-- 2. cache", "-- 3. refine", "-- 4. quantize", "refined    cpu      int8", "refined    cpu      w8a8"]
    {
        assert!(out.contains(needle), "'{needle}' missing from:\n{out}");
    }
    assert!(dir.join("refine.kdc").exists() && dir.join("student-refined.onnx").exists());
    let gain: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Refinement from the teacher's cached top-5 soft labels alone: "))
        .and_then(|l| l.split(" points").next())
        .and_then(|v| v.trim_start_matches('+').parse().ok())
        .unwrap_or_else(|| panic!("no gain line in:\n{out}"));
    assert!(gain > 5.0, "refinement gained only {gain} points:\n{out}");
}
