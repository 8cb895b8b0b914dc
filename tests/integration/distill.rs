//! End-to-end refinement on the fixtures: KD from the teacher beats hard labels alone on the
//! held-out part of the shifted refinement split; sparse top-k KD lands near full KD; a killed
//! run resumes to identical weights; the exported ONNX reproduces the refined student.

use alembic::distill::{export_onnx, train, KdConfig, SoftTarget, Student, TrainConfig, TrainData, Trainable};
use alembic::eval::evaluate;
use alembic::tensor::npy::read_npy;
use alembic::{Model, Tensor};
use std::path::PathBuf;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn load(name: &str) -> Tensor {
    read_npy(&models().join(format!("data/{name}.npy"))).unwrap()
}

fn logits(model: &str, x: &Tensor) -> Vec<f32> {
    let s = Model::load(models().join(model)).unwrap().session(Default::default()).unwrap();
    s.run_refs(&[("input", x)]).unwrap().0[0].1.as_slice::<f32>().unwrap().to_vec()
}

fn top_k(t: &SoftTarget, k: usize) -> SoftTarget {
    let mut order: Vec<usize> = (0..t.probs.len()).collect();
    order.sort_by(|&a, &b| t.probs[b].total_cmp(&t.probs[a]));
    SoftTarget {
        indices: order[..k].iter().map(|&i| t.indices[i]).collect(),
        probs: order[..k].iter().map(|&i| t.probs[i]).collect(),
        tail: order[k..].iter().map(|&i| t.probs[i]).sum(),
    }
}

struct Setup {
    x: Tensor,
    labels: Vec<i64>,
    dense: Vec<Option<SoftTarget>>,
    test_x: Tensor,
    test_y: Vec<i64>,
}

fn setup(t: f32) -> Setup {
    let x = load("refine_x");
    let labels = load("refine_y").to_i64_vec().unwrap();
    let teacher = logits("teacher.onnx", &x);
    let dense = teacher.chunks(10).map(|r| Some(SoftTarget::from_logits(r, t))).collect();
    Setup { x, labels, dense, test_x: load("refine_test_x"), test_y: load("refine_test_y").to_i64_vec().unwrap() }
}

/// Accuracy on refine_test and on refine_test + heldout (449 samples: finer than 90's 1.1-point steps).
fn accuracies(s: &Student) -> (f64, f64) {
    let (tx, ty) = (load("refine_test_x"), load("refine_test_y").to_i64_vec().unwrap());
    let (hx, hy) = (load("heldout_x"), load("heldout_y").to_i64_vec().unwrap());
    let (a, b) = (accuracy(s, &tx, &ty), accuracy(s, &hx, &hy));
    (a, (a * ty.len() as f64 + b * hy.len() as f64) / (ty.len() + hy.len()) as f64)
}

fn refine(data: &TrainData, cfg: &TrainConfig) -> (Student, f64) {
    let mut s = Student::load(&models().join("student.onnx"), &Trainable::All).unwrap();
    train(&mut s, data, cfg, |_| {}).unwrap();
    let acc = accuracy(&s, &load("refine_test_x"), &load("refine_test_y").to_i64_vec().unwrap());
    (s, acc)
}

fn accuracy(s: &Student, x: &Tensor, y: &[i64]) -> f64 {
    let tape = s.forward(x).unwrap();
    let z = s.logits(&tape).unwrap().as_slice::<f32>().unwrap().to_vec();
    evaluate(&z, 10, Some(y), None).accuracy.unwrap() * 100.0
}

fn config(alpha: f32) -> TrainConfig {
    TrainConfig {
        kd: KdConfig { temperature: std::env::var("KD_T").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0), alpha },
        steps: std::env::var("KD_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        batch: 32,
        lr: std::env::var("KD_LR").ok().and_then(|v| v.parse().ok()).unwrap_or(3e-3),
        seed: 7,
        ..Default::default()
    }
}

#[test]
fn kd_from_teacher_beats_hard_labels_and_top_k_matches_full() {
    let s = setup(config(1.0).kd.temperature);
    let n = s.labels.len();
    let before =
        accuracy(&Student::load(&models().join("student.onnx"), &Trainable::All).unwrap(), &s.test_x, &s.test_y);

    // The device knows the label of only every 10th sample; the teacher labelled everything.
    let few: Vec<Option<i64>> = (0..n).map(|i| (i % 10 == 0).then_some(s.labels[i])).collect();
    let few_idx: Vec<usize> = (0..n).filter(|i| i % 10 == 0).collect();
    let hx = alembic::distill::trainer::gather_rows(&s.x, &few_idx).unwrap();
    let hy: Vec<Option<i64>> = few_idx.iter().map(|&i| Some(s.labels[i])).collect();
    let none: Vec<Option<SoftTarget>> = vec![None; few_idx.len()];
    let (_, hard) = refine(&TrainData { x: &hx, targets: &none, labels: &hy }, &config(0.0));

    let (_, kd) = refine(&TrainData { x: &s.x, targets: &s.dense, labels: &few }, &config(0.7));
    let no_labels = vec![None; n];
    let (full_student, kd_only) = refine(&TrainData { x: &s.x, targets: &s.dense, labels: &no_labels }, &config(1.0));
    let sparse: Vec<Option<SoftTarget>> = s.dense.iter().map(|t| t.as_ref().map(|t| top_k(t, 5))).collect();
    let (top5_student, kd_top5) = refine(&TrainData { x: &s.x, targets: &sparse, labels: &no_labels }, &config(1.0));

    let (full_wide, top5_wide) = (accuracies(&full_student).1, accuracies(&top5_student).1);
    println!("refine_test accuracy (n={}): before {before:.1}%  hard labels (10% labelled) {hard:.1}%  KD+10% labels {kd:.1}%  KD only (full) {kd_only:.1}%  KD only (top-5 of 10) {kd_top5:.1}%; on refine_test+heldout: full {full_wide:.2}%  top-5 {top5_wide:.2}%", s.test_y.len());
    assert!(kd > hard, "KD {kd:.1}% should beat hard labels {hard:.1}%");
    assert!(kd_only > hard, "KD-only {kd_only:.1}% should beat hard labels {hard:.1}%");
    assert!(kd > before + 10.0, "refinement should close much of the gap: {before:.1}% -> {kd:.1}%");
    // Within 0.5 points on 449 samples, plus one sample's worth of rounding (0.22 points).
    assert!((top5_wide - full_wide).abs() <= 0.5 + 0.23, "top-5 {top5_wide:.2}% vs full {full_wide:.2}%");
}

#[test]
fn killed_run_resumes_to_identical_weights_and_export_round_trips() {
    let s = setup(config(1.0).kd.temperature);
    let labels = vec![None; s.labels.len()];
    let data = TrainData { x: &s.x, targets: &s.dense, labels: &labels };
    let dir = std::env::temp_dir().join(format!("alembic-distill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("ckpt.bin");
    let _ = std::fs::remove_file(&ck);
    let cfg = TrainConfig { steps: 60, checkpoint: Some(ck.clone()), checkpoint_every: 10, ..config(1.0) };

    let mut straight = Student::load(&models().join("student.onnx"), &Trainable::All).unwrap();
    train(&mut straight, &data, &TrainConfig { checkpoint: None, ..cfg.clone() }, |_| {}).unwrap();

    // "Kill" at step 37: the callback panics; the last checkpoint is step 30.
    let mut victim = Student::load(&models().join("student.onnx"), &Trainable::All).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&mut victim, &data, &cfg, |i| assert!(i.step < 37, "simulated kill")).unwrap();
    }));
    assert!(r.is_err());
    let mut resumed = Student::load(&models().join("student.onnx"), &Trainable::All).unwrap();
    let report = train(&mut resumed, &data, &cfg, |_| {}).unwrap();
    assert_eq!(report.resumed_from, Some(30));
    for (a, b) in straight.params.iter().zip(&resumed.params) {
        assert_eq!(a.tensor, b.tensor, "parameter {} differs after resume", a.name);
    }

    let out = dir.join("refined.onnx");
    export_onnx(&resumed, &out).unwrap();
    let reloaded = logits(out.to_str().unwrap(), &s.test_x);
    let tape = resumed.forward(&s.test_x).unwrap();
    let direct = resumed.logits(&tape).unwrap().as_slice::<f32>().unwrap().to_vec();
    for (a, b) in reloaded.iter().zip(&direct) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
}

/// Largest |a - e| relative to the array's scale: elementwise `|a - e| <= rtol * max(|e|, max|e|/10)`,
/// so near-zero entries of a gradient are judged against its magnitude, not their own.
fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())) / 10.0;
    for (i, (a, e)) in got.iter().zip(want).enumerate() {
        assert!((a - e).abs() <= rtol * e.abs().max(scale), "{what}[{i}]: {a} vs numpy {e}");
    }
}

#[test]
fn reference_step_matches_numpy() {
    use alembic::distill::loss::kd_loss;
    use alembic::distill::optim::{Optimizer, OptimizerKind};
    use ndarray::ArrayD;
    let mut npz =
        ndarray_npy::NpzReader::new(std::fs::File::open(models().join("expected/kd_step.npz")).unwrap()).unwrap();
    let mut f32s = |k: &str| -> ArrayD<f32> { npz.by_name(k).unwrap_or_else(|e| panic!("{k}: {e}")) };
    let (x, teacher, want_z, want_dz) = (f32s("x"), f32s("teacher_logits"), f32s("logits"), f32s("dlogits"));
    let mut npz =
        ndarray_npy::NpzReader::new(std::fs::File::open(models().join("expected/kd_step.npz")).unwrap()).unwrap();
    let y: ArrayD<i64> = npz.by_name("y").unwrap();
    let scalar = |npz: &mut ndarray_npy::NpzReader<std::fs::File>, k: &str| -> f64 {
        npz.by_name::<ndarray::OwnedRepr<f64>, ndarray::IxDyn>(k).unwrap().iter().copied().next().unwrap()
    };
    let (t, alpha, lr) = (scalar(&mut npz, "temperature"), scalar(&mut npz, "alpha"), scalar(&mut npz, "lr"));
    let want_loss = scalar(&mut npz, "loss");

    let mut s = Student::load(&models().join("student.onnx"), &Trainable::All).unwrap();
    let tape = s.forward(&Tensor::from_array(x)).unwrap();
    let z = s.logits(&tape).unwrap().clone();
    assert_close("logits", z.as_slice::<f32>().unwrap(), want_z.as_slice().unwrap(), 1e-4);
    let targets: Vec<SoftTarget> =
        teacher.as_slice().unwrap().chunks(10).map(|r| SoftTarget::from_logits(r, t as f32)).collect();
    let tg: Vec<Option<&SoftTarget>> = targets.iter().map(Some).collect();
    let labels: Vec<Option<i64>> = y.iter().map(|&v| Some(v)).collect();
    let cfg = KdConfig { temperature: t as f32, alpha: alpha as f32 };
    let out = kd_loss(z.as_slice::<f32>().unwrap(), 10, &tg, &labels, cfg).unwrap();
    assert!(((out.loss as f64 - want_loss) / want_loss).abs() < 1e-4, "loss {} vs numpy {want_loss}", out.loss);
    assert_close("dloss/dlogits", &out.grad, want_dz.as_slice().unwrap(), 1e-4);

    let grads = s.backward(&tape, Tensor::from_vec(z.shape().to_vec(), out.grad.clone()).unwrap()).unwrap();
    assert_eq!(grads.len(), 4, "fc1.W, fc1.B, fc2.W, fc2.B");
    for (p, g) in s.params.iter().zip(&grads) {
        let want: ArrayD<f32> = npz.by_name(&format!("grad_{}", p.name.replace('.', "_"))).unwrap();
        assert_close(&format!("grad {}", p.name), g, want.as_slice().unwrap(), 1e-4);
    }
    // One SGD step (momentum 0.9: the first step is w - lr * g).
    let sizes: Vec<usize> = s.params.iter().map(|p| p.tensor.len()).collect();
    let mut opt = Optimizer::new(OptimizerKind::Sgd { momentum: 0.9 }, 0.0, &sizes);
    let mut ps: Vec<&mut [f32]> = s.params.iter_mut().map(|p| p.tensor.as_mut_slice::<f32>().unwrap()).collect();
    opt.step(&mut ps, &grads, lr as f32);
    for p in &s.params {
        let want: ArrayD<f32> = npz.by_name(&format!("sgd_{}", p.name.replace('.', "_"))).unwrap();
        assert_close(&format!("sgd {}", p.name), p.tensor.as_slice::<f32>().unwrap(), want.as_slice().unwrap(), 1e-5);
    }
    println!("reference step: loss {} (numpy {want_loss}), gradients of 4 parameters within 1e-4", out.loss);
}

/// Runs the CLI; returns (success, stdout, stderr).
fn alembic_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alembic")).args(args).output().expect("spawn alembic");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn assert_cli_one_line_error(args: &[&str], needle: &str) {
    let (ok, _, err) = alembic_cli(args);
    assert!(!ok, "expected failure for {args:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "'{needle}' not in: {err}");
}

/// A top-5 cache of the fixture teacher on refine_x at T = 2, built with the library.
fn build_refine_cache(out: &std::path::Path) {
    use alembic::cache::{build_cache, BuildOptions};
    use alembic::data::{sha256_file, DataOptions, DataSource};
    let opts = DataOptions { labels: Some(models().join("data/refine_y.npy")), ..Default::default() };
    let src = DataSource::open(&models().join("data/refine_x.npy"), &opts).unwrap();
    let teacher = Model::load(models().join("teacher.onnx")).unwrap().session(Default::default()).unwrap();
    let mut run = |x: &Tensor| -> alembic::Result<Tensor> {
        Ok(teacher.run_refs(&[("input", x)])?.get("logits").cloned().unwrap())
    };
    let opts = BuildOptions {
        top_k: 5,
        temperature: 2.0,
        teacher_digests: vec![sha256_file(&models().join("teacher.onnx")).unwrap()],
        ..Default::default()
    };
    build_cache(&src, &mut [&mut run], &opts, out, &mut |_, _| {}).unwrap();
}

#[test]
fn cli_distill_writes_a_student_that_eval_reads() {
    let dir = crate::cli::scratch("distill-cli");
    let cache = dir.join("refine.kdc");
    build_refine_cache(&cache);
    let m = |p: &str| models().join(p).to_str().unwrap().to_string();
    let (student, refine_x, refine_y) = (m("student.onnx"), m("data/refine_x.npy"), m("data/refine_y.npy"));
    let out = dir.join("refined.onnx");
    let (c, o) = (cache.to_str().unwrap(), out.to_str().unwrap());
    let args = ["distill", "--student", &student, "--cache", c, "--data", &refine_x, "--out", o];
    let extra = ["--steps", "40", "--batch", "16", "--quiet", "--quantize", "int8"];
    let (ok, stdout, err) = alembic_cli(&[&args[..], &extra[..]].concat());
    assert!(ok, "{err}");
    assert!(stdout.contains("40/40 steps") && stdout.contains("peak training memory"), "{stdout}");
    assert!(err.is_empty(), "--quiet and not a terminal: no progress on stderr, got {err}");
    // --quantize int8: a QDQ copy, smaller, whose outputs stay close to the refined f32 student
    let q = dir.join("refined.int8.onnx");
    assert!(std::fs::metadata(&q).unwrap().len() < std::fs::metadata(&out).unwrap().len() / 2, "{stdout}");
    let x = load("refine_test_x");
    let run = |p: &std::path::Path| {
        let s = alembic::Model::load(p).unwrap().session(Default::default()).unwrap();
        s.run_refs(&[("input", &x)]).unwrap().0[0].1.as_slice::<f32>().unwrap().to_vec()
    };
    let (zf, zq) = (run(&out), run(&q));
    let worst = zf.iter().zip(&zq).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 0.1, "int8 QDQ student differs from f32 by {worst}");

    // eval against the cache's teacher distribution, with a before/after table
    let (ok, table, err) =
        alembic_cli(&["eval", o, "--data", &refine_x, "--labels", &refine_y, "--cache", c, "--before", &student]);
    assert!(ok, "{err}");
    for row in ["accuracy", "teacher agreement", "KL to teacher", "ECE", "student.onnx", "refined.onnx"] {
        assert!(table.contains(row), "'{row}' missing:\n{table}");
    }
    // and against the teacher itself on the held-out refinement split
    let (ok, table, err) = alembic_cli(&[
        "eval",
        o,
        "--data",
        &m("data/refine_test_x.npy"),
        "--labels",
        &m("data/refine_test_y.npy"),
        "--teacher",
        &m("teacher.onnx"),
    ]);
    assert!(ok, "{err}");
    assert!(table.contains("teacher agreement") && table.contains('%'), "{table}");
    println!("{table}");
}

#[test]
fn cli_distill_bad_inputs_give_one_line_errors() {
    let dir = crate::cli::scratch("distill-bad");
    let cache = dir.join("refine.kdc");
    build_refine_cache(&cache);
    let m = |p: &str| models().join(p).to_str().unwrap().to_string();
    let (student, refine_x) = (m("student.onnx"), m("data/refine_x.npy"));
    let out = dir.join("never.onnx");
    let (c, o) = (cache.to_str().unwrap(), out.to_str().unwrap());
    let run = |student: &str, data: &str, extra: &[&str], needle: &str| {
        let args = ["distill", "--student", student, "--cache", c, "--data", data, "--out", o, "--steps", "2"];
        assert_cli_one_line_error(&[&args[..], extra].concat(), needle);
    };
    // 90 rows against a cache of 270 records
    run(&student, &m("data/refine_test_x.npy"), &[], "cache holds 270 records but the data");
    // same row count, one value changed: the data digest differs
    let mut x = load("refine_x");
    x.as_mut_slice::<f32>().unwrap()[5] += 0.5;
    let edited = dir.join("edited_x.npy");
    alembic::tensor::npy::write_npy(&edited, &x).unwrap();
    run(&student, edited.to_str().unwrap(), &[], "cache was built from other data");
    run("/nonexistent/student.onnx", &refine_x, &[], "/nonexistent/student.onnx");
    run(&student, "/nonexistent/x.npy", &[], "/nonexistent/x.npy");
    run(&student, &refine_x, &["--train", "last:zero"], "--train");
    run(&student, &refine_x, &["--train", "fc1,no_such_layer"], "no_such_layer");
    run(&student, &refine_x, &["--max-memory", "lots"], "--max-memory");
    run(&student, &refine_x, &["--max-memory", "1KB"], "--max-memory");
    assert!(!out.exists(), "a failed run must not leave an output");
    assert_cli_one_line_error(
        &["eval", &student, "--data", &m("data/refine_test_x.npy"), "--cache", c],
        "cache holds 270 records",
    );
}

// ---- LoRA: low-rank adapters on the Gemm weights, merged on export ----

fn lora(rank: usize) -> Trainable {
    Trainable::Lora { rank, alpha: 2.0 * rank as f32, targets: vec![] }
}

/// One adaptable layer: `gemm` (x [3, 5], alpha 0.7, W [5, 4], C [4]), `gemm_t` (the same with
/// transB, W [4, 5]), `matmul` (x [3, 5] W [5, 4]) or `conv` (x [2, 3, 5, 5], W [4, 3, 3, 3],
/// bias [4]); returns the model and the shapes of x and y.
fn small_layer(dir: &std::path::Path, kind: &str) -> (PathBuf, Vec<usize>, Vec<usize>) {
    use alembic::onnx::pb;
    use alembic::onnx::tensor_proto::encode;
    use prost::Message;
    let vi = |name: &str, dims: &[usize]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let attr = |name: &str, f: Option<f32>, i: Option<i64>| pb::AttributeProto {
        name: name.into(),
        r#type: if f.is_some() { 1 } else { 2 },
        f: f.unwrap_or(0.0),
        i: i.unwrap_or(0),
        ..Default::default()
    };
    let values =
        |n: usize, m: usize| -> Vec<f32> { (0..n).map(|k| ((k * 7 % m) as f32 - m as f32 / 2.0) * 0.1).collect() };
    let (op, wshape, bias, attrs, xs, ys) = match kind {
        "gemm" => ("Gemm", vec![5, 4], true, vec![attr("alpha", Some(0.7), None)], vec![3, 5], vec![3, 4]),
        "gemm_t" => (
            "Gemm",
            vec![4, 5],
            true,
            vec![attr("alpha", Some(0.7), None), attr("transB", None, Some(1))],
            vec![3, 5],
            vec![3, 4],
        ),
        "matmul" => ("MatMul", vec![5, 4], false, vec![], vec![3, 5], vec![3, 4]),
        "conv" => ("Conv", vec![4, 3, 3, 3], true, vec![], vec![2, 3, 5, 5], vec![2, 4, 3, 3]),
        _ => unreachable!(),
    };
    let wn: usize = wshape.iter().product();
    let mut inputs = vec!["x".to_string(), "W".to_string()];
    let mut initializer = vec![encode(&Tensor::from_vec(wshape, values(wn, 11)).unwrap(), "W")];
    if bias {
        inputs.push("C".into());
        initializer.push(encode(&Tensor::from_vec(vec![4], vec![0.1f32, -0.2, 0.3, 0.05]).unwrap(), "C"));
    }
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(pb::GraphProto {
            node: vec![pb::NodeProto {
                input: inputs,
                output: vec!["y".into()],
                name: "layer".into(),
                op_type: op.into(),
                attribute: attrs,
                ..Default::default()
            }],
            initializer,
            input: vec![vi("x", &xs)],
            output: vec![vi("y", &ys)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join(format!("{kind}.onnx"));
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    (path, xs, ys)
}

#[test]
fn lora_gradients_match_finite_differences() {
    let dir = crate::cli::scratch("lora-fd");
    for kind in ["gemm", "gemm_t", "matmul", "conv"] {
        let (path, xs, ys) = small_layer(&dir, kind);
        let (nx, ny) = (xs.iter().product::<usize>(), ys.iter().product::<usize>());
        let x = Tensor::from_vec(xs, (0..nx).map(|k| ((k * 5 % 13) as f32 - 6.0) * 0.2).collect()).unwrap();
        let r: Vec<f32> = (0..ny).map(|k| ((k * 3 % 7) as f32 - 3.0) * 0.3).collect();
        let spec = Trainable::Lora { rank: 2, alpha: 3.0, targets: vec!["layer".into()] };
        let mut s = Student::load(&path, &spec).unwrap();
        assert_eq!(s.params.len(), 2, "A and B only");
        // B is zero when fresh (then dA = 0): give it values so both gradients are exercised.
        let b = s.params[1].tensor.as_mut_slice::<f32>().unwrap();
        b.iter_mut().enumerate().for_each(|(k, v)| *v = ((k * 5 % 9) as f32 - 4.0) * 0.15);
        // L = sum(y * r): dL/dy = r.
        let loss = |s: &Student| -> f64 {
            let tape = s.forward(&x).unwrap();
            let y = s.logits(&tape).unwrap().as_slice::<f32>().unwrap();
            y.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let tape = s.forward(&x).unwrap();
        let grads = s.backward(&tape, Tensor::from_vec(ys, r.clone()).unwrap()).unwrap();
        for (k, name) in [(0, "dA"), (1, "dB")] {
            let mut fd = Vec::new();
            for i in 0..s.params[k].tensor.len() {
                let eps = 1e-2f32;
                let orig = s.params[k].tensor.as_slice::<f32>().unwrap()[i];
                s.params[k].tensor.as_mut_slice::<f32>().unwrap()[i] = orig + eps;
                let up = loss(&s);
                s.params[k].tensor.as_mut_slice::<f32>().unwrap()[i] = orig - eps;
                let down = loss(&s);
                s.params[k].tensor.as_mut_slice::<f32>().unwrap()[i] = orig;
                fd.push(((up - down) / (2.0 * eps as f64)) as f32);
            }
            assert!(fd.iter().any(|v| v.abs() > 1e-2), "{kind} {name} should not vanish");
            assert_close(&format!("{kind} {name}"), &grads[k], &fd, 2e-3);
        }
    }
}

#[test]
fn lora_fresh_adapters_leave_the_student_unchanged() {
    let x = load("refine_test_x");
    let base = Student::load(&models().join("student.onnx"), &Trainable::All).unwrap();
    let adapted = Student::load(&models().join("student.onnx"), &lora(4)).unwrap();
    assert_eq!(adapted.adapters.len(), 2, "fc1 and fc2");
    let (tb, ta) = (base.forward(&x).unwrap(), adapted.forward(&x).unwrap());
    assert_eq!(base.logits(&tb).unwrap(), adapted.logits(&ta).unwrap(), "B = 0: the base model exactly");
    // and the engine agrees with both
    let engine = logits("student.onnx", &x);
    for (a, b) in engine.iter().zip(adapted.logits(&ta).unwrap().as_slice::<f32>().unwrap()) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn lora_refinement_improves_the_student_and_exports_merged() {
    let s = setup(config(1.0).kd.temperature);
    let no_labels = vec![None; s.labels.len()];
    let data = TrainData { x: &s.x, targets: &s.dense, labels: &no_labels };
    let before =
        accuracy(&Student::load(&models().join("student.onnx"), &Trainable::All).unwrap(), &s.test_x, &s.test_y);
    let cfg = config(1.0);
    let mut full = Student::load(&models().join("student.onnx"), &Trainable::All).unwrap();
    let full_rep = train(&mut full, &data, &cfg, |_| {}).unwrap();
    let full_acc = accuracy(&full, &s.test_x, &s.test_y);
    let mut st = Student::load(&models().join("student.onnx"), &lora(4)).unwrap();
    let rep = train(&mut st, &data, &cfg, |_| {}).unwrap();
    let acc = accuracy(&st, &s.test_x, &s.test_y);
    println!(
        "refine_test accuracy (n={}): before {before:.1}%  LoRA r=4 {acc:.1}% ({} trainable params, peak training memory {} B)  full {full_acc:.1}% ({} params, peak {} B)",
        s.test_y.len(),
        st.param_count(),
        rep.peak_bytes,
        full.param_count(),
        full_rep.peak_bytes
    );
    assert!(acc > before + 5.0, "LoRA should improve the student: {before:.1}% -> {acc:.1}%");
    assert!(st.param_count() < full.param_count() / 4, "{} vs {}", st.param_count(), full.param_count());
    assert!(rep.peak_bytes < full_rep.peak_bytes, "{} vs {}", rep.peak_bytes, full_rep.peak_bytes);

    let dir = crate::cli::scratch("lora-export");
    let out = dir.join("lora.onnx");
    export_onnx(&st, &out).unwrap();
    let reloaded = logits(out.to_str().unwrap(), &s.test_x);
    let tape = st.forward(&s.test_x).unwrap();
    let direct = st.logits(&tape).unwrap().as_slice::<f32>().unwrap().to_vec();
    for (a, b) in reloaded.iter().zip(&direct) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
    // The same graph: same nodes and initializer names, no adapter tensors.
    let proto = alembic::onnx::read_model_proto(&out).unwrap();
    let orig = alembic::onnx::read_model_proto(&models().join("student.onnx")).unwrap();
    let names = |p: &alembic::onnx::pb::ModelProto| -> Vec<String> {
        let g = p.graph.as_ref().unwrap();
        g.node.iter().map(|n| n.op_type.clone()).chain(g.initializer.iter().map(|i| i.name.clone())).collect()
    };
    assert_eq!(names(&proto), names(&orig));
}

#[test]
fn lora_killed_run_resumes_to_identical_adapters() {
    let s = setup(config(1.0).kd.temperature);
    let labels = vec![None; s.labels.len()];
    let data = TrainData { x: &s.x, targets: &s.dense, labels: &labels };
    let dir = crate::cli::scratch("lora-resume");
    let ck = dir.join("ckpt.bin");
    let _ = std::fs::remove_file(&ck);
    let cfg = TrainConfig { steps: 40, checkpoint: Some(ck.clone()), checkpoint_every: 10, ..config(1.0) };
    let mut straight = Student::load(&models().join("student.onnx"), &lora(4)).unwrap();
    train(&mut straight, &data, &TrainConfig { checkpoint: None, ..cfg.clone() }, |_| {}).unwrap();
    let mut victim = Student::load(&models().join("student.onnx"), &lora(4)).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&mut victim, &data, &cfg, |i| assert!(i.step < 25, "simulated kill")).unwrap();
    }));
    assert!(r.is_err());
    // a full-parameter student cannot take the adapters' checkpoint
    let mut other = Student::load(&models().join("student.onnx"), &Trainable::All).unwrap();
    assert!(train(&mut other, &data, &cfg, |_| {}).is_err());
    let mut resumed = Student::load(&models().join("student.onnx"), &lora(4)).unwrap();
    let report = train(&mut resumed, &data, &cfg, |_| {}).unwrap();
    assert_eq!(report.resumed_from, Some(20));
    for (a, b) in straight.params.iter().zip(&resumed.params) {
        assert!(a.name.contains(".lora_"), "{}", a.name);
        assert_eq!(a.tensor, b.tensor, "{} differs after resume", a.name);
    }
}

#[test]
fn cli_distill_trains_lora_adapters() {
    let dir = crate::cli::scratch("distill-lora");
    let cache = dir.join("refine.kdc");
    build_refine_cache(&cache);
    let m = |p: &str| models().join(p).to_str().unwrap().to_string();
    let (student, refine_x) = (m("student.onnx"), m("data/refine_x.npy"));
    let out = dir.join("lora.onnx");
    let (c, o) = (cache.to_str().unwrap(), out.to_str().unwrap());
    let args = ["distill", "--student", &student, "--cache", c, "--data", &refine_x, "--out", o];
    let (ok, stdout, err) = alembic_cli(&[&args[..], &["--steps", "30", "--train", "lora:4", "--quiet"]].concat());
    assert!(ok, "{err}");
    // fc1: A 4x64 + B 32x4; fc2: A 4x32 + B 10x4
    assert!(stdout.contains("30/30 steps") && stdout.contains("552 params trained"), "{stdout}");
    assert!(stdout.contains("LoRA rank 4"), "{stdout}");
    let (ok, table, err) = alembic_cli(&["eval", o, "--data", &m("data/refine_test_x.npy")]);
    assert!(ok, "{err}{table}");
    let run = |extra: &[&str], needle: &str| {
        assert_cli_one_line_error(&[&args[..], &["--steps", "2"], extra].concat(), needle);
    };
    run(&["--train", "lora:0"], "--train");
    run(&["--train", "lora:4:no_such_layer"], "no_such_layer");
}
