//! Weight quantization on the CPU engine: the fixture student's top-1 agreement with f32 on
//! the held-out split, per precision.

use alembic::tensor::npy::read_npy;
use alembic::{Model, Precision, SessionOptions, Tensor};
use std::path::PathBuf;

pub fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

pub fn heldout() -> Tensor {
    read_npy(&models().join("data/heldout_x.npy")).expect("heldout_x.npy")
}

/// Row-wise argmax of `[n, c]` logits.
pub fn argmax_rows(t: &Tensor) -> Vec<usize> {
    let c = t.shape()[1];
    t.as_slice::<f32>()
        .expect("f32 logits")
        .chunks(c)
        .map(|r| r.iter().enumerate().fold(0, |b, (i, &v)| if v > r[b] { i } else { b }))
        .collect()
}

/// Fraction of equal entries.
pub fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// Top-1 agreement of `model` at `p` on `opts`' backend against f32 logits `reference`.
pub fn logits(model: &Model, opts: SessionOptions, x: &Tensor) -> alembic::Result<Tensor> {
    let s = model.session(opts)?;
    let out = s.run(vec![("input", x.clone())])?;
    Ok(out.0[0].1.clone())
}

/// Minimum agreement per precision (the targets; f16 is near-exact).
pub fn min_agreement(p: Precision) -> f64 {
    match p {
        Precision::F32 => 1.0,
        Precision::F16 => 0.995,
        Precision::Int8 | Precision::W8a8 => 0.99,
        Precision::Int4 => 0.97,
    }
}

#[test]
fn student_cpu_quantized_agreement() {
    let model = Model::load(models().join("student.onnx")).unwrap();
    let x = heldout();
    let reference = argmax_rows(&logits(&model, SessionOptions::default(), &x).unwrap());
    for p in [Precision::F16, Precision::Int8, Precision::Int4, Precision::W8a8] {
        let s = model.session(SessionOptions::default().precision(p)).unwrap();
        let (nq, bytes) = alembic::quant::quantized_stats(s.graph());
        assert!(nq >= 2, "{p}: expected the student's Gemms quantized, got {nq}");
        let got = argmax_rows(&logits(&model, SessionOptions::default().precision(p), &x).unwrap());
        let agree = agreement(&reference, &got);
        println!(
            "cpu {p}: top-1 agreement with f32 {:.2}% on {} held-out samples ({nq} QGemm, {bytes} weight bytes)",
            agree * 100.0,
            got.len()
        );
        assert!(agree >= min_agreement(p), "cpu {p}: agreement {agree} < {}", min_agreement(p));
    }
}

#[test]
fn teacher_cpu_quantized_agreement() {
    // Needs the Conv/MaxPool importer and CPU kernels (other work in progress): skip until then.
    let model = match Model::load(models().join("teacher.onnx")) {
        Ok(m) => m,
        Err(e) => {
            println!("SKIPPED teacher_cpu_quantized_agreement: the importer cannot read the teacher ({e})");
            return;
        }
    };
    let x = heldout();
    let reference = match logits(&model, SessionOptions::default(), &x) {
        Ok(t) => argmax_rows(&t),
        Err(e) => {
            println!("SKIPPED teacher_cpu_quantized_agreement: the CPU engine cannot run the teacher ({e})");
            return;
        }
    };
    for p in [Precision::F16, Precision::Int8, Precision::Int4, Precision::W8a8] {
        let got = argmax_rows(&logits(&model, SessionOptions::default().precision(p), &x).unwrap());
        let agree = agreement(&reference, &got);
        println!("cpu teacher {p}: top-1 agreement with f32 {:.2}%", agree * 100.0);
        assert!(agree >= min_agreement(p), "cpu teacher {p}: agreement {agree} < {}", min_agreement(p));
    }
}

#[test]
fn quantize_graph_leaves_f32_and_unsupported_alone() {
    let model = Model::load(models().join("student.onnx")).unwrap();
    let g = alembic::quant::quantize_graph(model.graph(), Precision::F32);
    assert_eq!(g.nodes.len(), model.graph().nodes.len());
    assert_eq!(alembic::quant::quantized_stats(&g).0, 0);
    // Quantized sessions keep the model's inputs and outputs.
    let s = model.session(SessionOptions::default().precision(Precision::Int4)).unwrap();
    assert_eq!(s.precision(), Precision::Int4);
    assert_eq!(s.graph().inputs.len(), model.graph().inputs.len());
}

// ---------------------------------------------------------------------------------------------
// QDQ ONNX export (`alembic quantize`) and import (DequantizeLinear folded into QGemm/QConv).

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

pub fn qdq_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("alembic-qdq-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Int8 QDQ export of each fixture: ~4x smaller weights, folded back into QGemm/QConv on load,
/// equal to the in-memory int8 session, top-1 within 1 point of f32, and ONNX Runtime agrees.
#[test]
fn qdq_int8_export_matches_in_memory_int8() {
    let dir = qdq_dir("int8");
    let x = heldout();
    for name in ["student", "teacher"] {
        let src = models().join(format!("{name}.onnx"));
        let out = dir.join(format!("{name}.int8.onnx"));
        let r = alembic::quant::export_qdq(&src, Precision::Int8, &out).unwrap();
        let ratio = r.f32_bytes as f64 / r.quantized_bytes as f64;
        let (fs, qs) = (std::fs::metadata(&src).unwrap().len(), std::fs::metadata(&out).unwrap().len());
        println!(
            "{name} int8 QDQ: {} weights, {} -> {} weight bytes ({ratio:.2}x); file {fs} -> {qs} bytes",
            r.weights, r.f32_bytes, r.quantized_bytes
        );
        assert!(ratio > 3.5, "{name}: weights only {ratio:.2}x smaller");

        let f32_model = Model::load(&src).unwrap();
        let qdq = Model::load(&out).unwrap();
        let (nq, _) = alembic::quant::quantized_stats(qdq.graph());
        assert_eq!(nq, r.weights, "{name}: every QDQ weight folds into QGemm/QConv");
        assert!(!qdq.graph().nodes.iter().any(|n| n.op.name() == "DequantizeLinear"), "{name}: DQ left");

        let got = logits(&qdq, SessionOptions::default(), &x).unwrap();
        let mem = logits(&f32_model, SessionOptions::default().precision(Precision::Int8), &x).unwrap();
        let d = max_abs_diff(&got, &mem);
        println!("{name} int8 QDQ vs in-memory int8: max |diff| {d:e}");
        assert!(d <= 1e-5, "{name}: QDQ vs in-memory int8 differ by {d}");

        let reference = argmax_rows(&logits(&f32_model, SessionOptions::default(), &x).unwrap());
        let agree = agreement(&reference, &argmax_rows(&got));
        println!("{name} int8 QDQ top-1 agreement with f32: {:.2}%", agree * 100.0);
        assert!(agree >= 0.99, "{name}: agreement {agree}");

        // The int8 file loaded at w8a8 runs the same weights on the w8a8 kernels, as the f32
        // model quantized to w8a8 in memory. Exact for the student; the teacher's in-memory
        // weights differ by the BatchNorm fold (~1e-6, see above). Its first conv (1 channel,
        // 3x3: a short reduction, `quant::w8a8_keeps_f32_activations`) keeps f32 activations,
        // so that difference reaches the second conv's activation quantization and can move a
        // few values across a rounding boundary (measured: 1.2e-2 of logits up to ~5.6); the
        // predictions agree.
        let w8 = logits(&qdq, SessionOptions::default().precision(Precision::W8a8), &x).unwrap();
        let mem8 = logits(&f32_model, SessionOptions::default().precision(Precision::W8a8), &x).unwrap();
        let d8 = max_abs_diff(&w8, &mem8);
        let agree8 = agreement(&argmax_rows(&mem8), &argmax_rows(&w8));
        println!("{name} int8 QDQ at w8a8 vs in-memory w8a8: max |diff| {d8:e}, top-1 agreement {agree8}");
        let tol = if name == "student" { 1e-5 } else { 3e-2 };
        assert!(d8 <= tol, "{name}: int8 QDQ at w8a8 vs in-memory w8a8 differ by {d8}");
        assert!(agree8 >= 0.995, "{name}: int8 QDQ at w8a8 vs in-memory w8a8 top-1 agreement {agree8}");
        assert!(max_abs_diff(&w8, &got) > 0.0, "{name}: w8a8 did not quantize the activations");

        #[cfg(feature = "ort")]
        if let Some(ort) = super::common::ort_engine(&out, "the int8 QDQ file") {
            use alembic::teacher::Engine;
            let o = ort.run(&[("input", &x)]).unwrap();
            let d = max_abs_diff(&o[0].1, &got);
            println!("{name} int8 QDQ: onnxruntime vs alembic max |diff| {d:e}");
            assert!(d <= 1e-3, "{name}: onnxruntime differs by {d}");
        }
    }
}

#[test]
fn qdq_f16_export_folds_to_f16_weights() {
    let dir = qdq_dir("f16");
    let src = models().join("student.onnx");
    let out = dir.join("student.f16.onnx");
    let r = alembic::quant::export_qdq(&src, Precision::F16, &out).unwrap();
    assert_eq!(r.quantized_bytes * 2, r.f32_bytes);
    let qdq = Model::load(&out).unwrap();
    assert_eq!(alembic::quant::quantized_stats(qdq.graph()).0, 2);
    let x = heldout();
    let got = logits(&qdq, SessionOptions::default(), &x).unwrap();
    let mem = logits(&Model::load(&src).unwrap(), SessionOptions::default().precision(Precision::F16), &x).unwrap();
    assert!(max_abs_diff(&got, &mem) <= 1e-5);
}

#[test]
fn quantize_cli_writes_qdq_and_rejects_bad_precision() {
    let dir = qdq_dir("cli");
    let out = dir.join("s.onnx");
    let run = |p: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_alembic"))
            .args(["quantize", models().join("student.onnx").to_str().unwrap(), "--precision", p, "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let ok = run("int8");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("quantized 2 weight tensors to int8"));
    assert!(out.exists());
    let int4 = run("int4");
    assert!(int4.status.success(), "{}", String::from_utf8_lossy(&int4.stderr));
    let said = String::from_utf8_lossy(&int4.stdout);
    assert!(said.contains("quantized 2 weight tensors to int4") && said.contains("opset raised 17 -> 21"), "{said}");
    for bad in ["int3", "w8a8"] {
        let o = run(bad);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
}

/// `DequantizeLinear(int8 W, scale[, zp]) -> MatMul`: zero point 0 folds into QGemm; a non-zero
/// zero point stays on the generic kernel; both compute `X . ((W - zp) * scale)`.
#[test]
fn qdq_fold_only_symmetric_weights() {
    use alembic::onnx::pb;
    use alembic::onnx::tensor_proto::encode;
    use prost::Message;
    let vi = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor { elem_type: 1, shape: None })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let wq: Vec<i8> = (0..12).map(|i| (i * 37 % 255 - 127) as i8).collect();
    let x: Vec<f32> = (0..6).map(|i| i as f32 * 0.25 - 0.5).collect();
    for zp in [0i8, 3] {
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(pb::GraphProto {
                node: vec![
                    pb::NodeProto {
                        input: vec!["wq".into(), "s".into(), "zp".into()],
                        output: vec!["w".into()],
                        op_type: "DequantizeLinear".into(),
                        ..Default::default()
                    },
                    pb::NodeProto {
                        input: vec!["x".into(), "w".into()],
                        output: vec!["y".into()],
                        op_type: "MatMul".into(),
                        ..Default::default()
                    },
                ],
                initializer: vec![
                    encode(&Tensor::from_vec(vec![3, 4], wq.clone()).unwrap(), "wq"),
                    encode(&Tensor::scalar(0.05f32), "s"),
                    encode(&Tensor::scalar(zp), "zp"),
                ],
                input: vec![vi("x")],
                output: vec![vi("y")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = Model::from_bytes(&model.encode_to_vec()).unwrap();
        let (nq, _) = alembic::quant::quantized_stats(m.graph());
        assert_eq!(nq, usize::from(zp == 0), "zp {zp}");
        let s = m.session(SessionOptions::default()).unwrap();
        let y = s.run(vec![("x", Tensor::from_vec(vec![2, 3], x.clone()).unwrap())]).unwrap().0[0].1.clone();
        let y = y.as_slice::<f32>().unwrap();
        for i in 0..2 {
            for j in 0..4 {
                let e: f32 = (0..3).map(|k| x[i * 3 + k] * (wq[k * 4 + j] as f32 - zp as f32) * 0.05).sum();
                assert!((y[i * 4 + j] - e).abs() < 1e-5, "zp {zp} [{i},{j}]: {} vs {e}", y[i * 4 + j]);
            }
        }
    }
}

/// Static w8a8 QDQ `DequantizeLinear(QuantizeLinear(x, s, 0), s, 0) -> MatMul(DQ(int8 W))`:
/// activations far below the calibrated range saturate to -128 as QuantizeLinear does. With
/// weights in [-127, 127] the pair folds into a w8a8 node; a weight of -128 (possible in files
/// from other tools) would overflow the AVX2 kernel's sign trick, so that weight keeps the int8
/// kernel and the Q/DQ pair runs as written. Both compute the operators' definition.
#[test]
fn qdq_static_activations_saturate_like_quantize_linear() {
    use alembic::ir::Op;
    use alembic::onnx::pb;
    use alembic::onnx::tensor_proto::encode;
    use alembic::quant::QData;
    use prost::Message;
    let vi = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor { elem_type: 1, shape: None })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = |op: &str, input: &[&str], out: &str| pb::NodeProto {
        input: input.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        op_type: op.into(),
        ..Default::default()
    };
    let (k, n, s) = (6usize, 4usize, 0.01f32);
    // -2.0 is -200 steps (saturates to -128), 1.5 is 150 (127); the rest in range.
    let x: Vec<f32> = vec![-2.0, 1.5, -1.275, 0.3, -0.005, 0.015, 0.5, -1.0, 0.7, -3.0, 0.2, 0.0];
    for w_min in [-127i8, -128] {
        let wq: Vec<i8> = (0..k * n).map(|i| if i == 5 { w_min } else { ((i * 23) % 120) as i8 - 60 }).collect();
        let ws: Vec<f32> = (0..n).map(|j| 0.02 + 0.01 * j as f32).collect();
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(pb::GraphProto {
                node: vec![
                    node("QuantizeLinear", &["x", "s", "zp"], "xq"),
                    node("DequantizeLinear", &["xq", "s", "zp"], "xd"),
                    pb::NodeProto {
                        attribute: vec![pb::AttributeProto {
                            name: "axis".into(),
                            r#type: 2,
                            i: 1,
                            ..Default::default()
                        }],
                        ..node("DequantizeLinear", &["wq", "ws"], "w")
                    },
                    node("MatMul", &["xd", "w"], "y"),
                ],
                initializer: vec![
                    encode(&Tensor::from_vec(vec![k, n], wq.clone()).unwrap(), "wq"),
                    encode(&Tensor::from_vec(vec![n], ws.clone()).unwrap(), "ws"),
                    encode(&Tensor::scalar(s), "s"),
                    encode(&Tensor::scalar(0i8), "zp"),
                ],
                input: vec![vi("x")],
                output: vec![vi("y")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = Model::from_bytes(&model.encode_to_vec()).unwrap();
        let kinds: Vec<&str> = m
            .graph()
            .nodes
            .iter()
            .filter_map(|nd| match &nd.op {
                Op::QGemm { w, .. } => Some(match w.data {
                    QData::W8a8 { act_scale: Some(_), .. } => "w8a8",
                    QData::Int8 { .. } => "int8",
                    _ => "other",
                }),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, [if w_min == -127 { "w8a8" } else { "int8" }], "weight min {w_min}");
        for p in [Precision::F32, Precision::W8a8] {
            let sess = m.session(SessionOptions::default().precision(p)).unwrap();
            let y = sess.run(vec![("x", Tensor::from_vec(vec![2, k], x.clone()).unwrap())]).unwrap().0[0].1.clone();
            let y = y.as_slice::<f32>().unwrap();
            for i in 0..2 {
                for j in 0..n {
                    let e: f32 = (0..k)
                        .map(|t| {
                            let q = (x[i * k + t] / s).round_ties_even().clamp(-128.0, 127.0);
                            q * s * wq[t * n + j] as f32 * ws[j]
                        })
                        .sum();
                    let got = y[i * n + j];
                    assert!((got - e).abs() <= 1e-5 * (1.0 + e.abs()), "w_min {w_min} {p} [{i},{j}]: {got} vs {e}");
                }
            }
        }
    }
}

/// A one-node com.microsoft MatMulNBits model: A `[m, k]` -> Y `[m, n]`.
fn matmul_nbits_model(
    b: &[u8],
    scales: &[f32],
    zp: Option<&[u8]>,
    bias: Option<&[f32]>,
    nk: (usize, usize),
    block: i64,
) -> Vec<u8> {
    use alembic::onnx::pb;
    use alembic::onnx::tensor_proto::encode;
    use prost::Message;
    let (n, k) = nk;
    let vi = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor { elem_type: 1, shape: None })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let int = |name: &str, i: i64| pb::AttributeProto { name: name.into(), r#type: 2, i, ..Default::default() };
    let kb = k.div_ceil(block as usize);
    let mut init = vec![
        encode(&Tensor::from_vec(vec![n, kb, block as usize / 2], b.to_vec()).unwrap(), "B"),
        encode(&Tensor::from_vec(vec![n * kb], scales.to_vec()).unwrap(), "scales"),
    ];
    let mut inputs = vec!["x".to_string(), "B".into(), "scales".into()];
    if let Some(z) = zp {
        init.push(encode(&Tensor::from_vec(vec![z.len()], z.to_vec()).unwrap(), "zp"));
        inputs.push("zp".into());
    }
    if let Some(bv) = bias {
        init.push(encode(&Tensor::from_vec(vec![n], bv.to_vec()).unwrap(), "bias"));
        inputs.resize(5, String::new());
        inputs.push("bias".into());
    }
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![
            pb::OperatorSetIdProto { domain: String::new(), version: 17 },
            pb::OperatorSetIdProto { domain: "com.microsoft".into(), version: 1 },
        ],
        graph: Some(pb::GraphProto {
            node: vec![pb::NodeProto {
                input: inputs,
                output: vec!["y".into()],
                op_type: "MatMulNBits".into(),
                domain: "com.microsoft".into(),
                attribute: vec![int("K", k as i64), int("N", n as i64), int("bits", 4), int("block_size", block)],
                ..Default::default()
            }],
            initializer: init,
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// MatMulNBits imports onto the int4 QGemm: outputs match the operator's definition computed
/// here from the raw bytes (`(nibble - 8) * scale`; Alembic keeps the scales as f16, hence the
/// relative 2^-11 per term) and ONNX Runtime; unsupported forms are one-line errors.
#[test]
fn matmul_nbits_imports_onto_int4() {
    let mut seed = 7u32;
    let mut next = || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        seed >> 8
    };
    for (m, n, k, block, with_bias) in
        [(3usize, 5usize, 70usize, 32usize, true), (2, 3, 64, 64, false), (1, 4, 100, 128, true)]
    {
        let kb = k.div_ceil(block);
        let b: Vec<u8> = (0..n * kb * block / 2).map(|_| (next() & 0xFF) as u8).collect();
        let scales: Vec<f32> = (0..n * kb).map(|_| (next() % 1000) as f32 / 20000.0 + 0.001).collect();
        let bias: Vec<f32> = (0..n).map(|_| (next() % 200) as f32 / 100.0 - 1.0).collect();
        let x: Vec<f32> = (0..m * k).map(|_| (next() % 2000) as f32 / 1000.0 - 1.0).collect();
        let zp = vec![0x88u8; n * kb.div_ceil(2)];
        let bytes = matmul_nbits_model(&b, &scales, Some(&zp), with_bias.then_some(&bias[..]), (n, k), block as i64);
        let model = Model::from_bytes(&bytes).unwrap();
        assert_eq!(alembic::quant::quantized_stats(model.graph()).0, 1, "MatMulNBits becomes one QGemm");
        let xt = Tensor::from_vec(vec![m, k], x.clone()).unwrap();
        let got =
            model.session(SessionOptions::default()).unwrap().run(vec![("x", xt.clone())]).unwrap().0[0].1.clone();
        assert_eq!(got.shape(), &[m, n]);
        let g = got.as_slice::<f32>().unwrap();
        for i in 0..m {
            for j in 0..n {
                let (mut e, mut mag) = (if with_bias { bias[j] as f64 } else { 0.0 }, 0.0f64);
                for t in 0..k {
                    let byte = b[(j * kb + t / block) * (block / 2) + (t % block) / 2];
                    let q = ((byte >> (4 * (t % 2))) & 0xF) as f64 - 8.0;
                    let term = x[i * k + t] as f64 * q * scales[j * kb + t / block] as f64;
                    e += term;
                    mag += term.abs();
                }
                let d = (g[i * n + j] as f64 - e).abs();
                assert!(d <= mag * 2f64.powi(-11) + 1e-5, "block {block} [{i},{j}]: {} vs {e}", g[i * n + j]);
            }
        }
        #[cfg(feature = "ort")]
        {
            let path = qdq_dir("nbits").join(format!("nbits_{block}.onnx"));
            std::fs::write(&path, &bytes).unwrap();
            if let Some(ort) = super::common::ort_engine(&path, "MatMulNBits") {
                use alembic::teacher::Engine;
                let o = ort.run(&[("x", &xt)]).unwrap();
                let d = max_abs_diff(&o[0].1, &got);
                println!("MatMulNBits block {block}: onnxruntime vs alembic max |diff| {d:e}");
                assert!(d <= 2e-3, "block {block}: onnxruntime differs by {d}");
            }
        }
    }
    // Asymmetric zero points and block sizes below Alembic's group are refused in one line.
    let (n, k) = (2, 32);
    let b = vec![0x11u8; n * 16];
    for (zp, block, what) in [(Some(vec![0x33u8; 2]), 32, "zero point 3"), (None, 16, "block_size 16")] {
        let kb = k / block;
        let bb = &b[..n * kb * block / 2];
        let bytes = matmul_nbits_model(bb, &vec![0.1; n * kb], zp.as_deref(), None, (n, k), block as i64);
        let Err(e) = Model::from_bytes(&bytes) else { panic!("{what}: accepted") };
        let e = e.to_string();
        assert!(e.contains(what) && !e.contains('\n'), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Static w8a8 QDQ (`alembic quantize --precision w8a8 --calibrate DATA`).

/// Calibrated on the training split, the w8a8 QDQ file folds back into w8a8 nodes with static
/// activation scales (no Q/DQ left), keeps top-1 within 1% of f32 on the held-out split, and
/// ONNX Runtime computes the same logits from it.
#[test]
fn qdq_w8a8_calibrated_export_folds_and_matches_ort() {
    use alembic::ir::Op;
    use alembic::quant::QData;
    let dir = qdq_dir("w8a8");
    let x = heldout();
    let calib = models().join("data/train_x.npy");
    for name in ["student", "teacher"] {
        let src = models().join(format!("{name}.onnx"));
        let out = dir.join(format!("{name}.w8a8.onnx"));
        let r = alembic::quant::export_qdq_calibrated(&src, &calib, &out).unwrap();
        println!("{name} w8a8 QDQ: {} weights, {} static activation scales", r.weights, r.activations);
        assert!(r.activations >= 1 && r.activations <= r.weights, "{name}: {r:?}");

        let qdq = Model::load(&out).unwrap();
        let g = qdq.graph();
        assert!(
            !g.nodes.iter().any(|n| matches!(n.op.name(), "QuantizeLinear" | "DequantizeLinear")),
            "{name}: Q/DQ left in the graph"
        );
        let statics = g
            .nodes
            .iter()
            .filter(|n| match &n.op {
                Op::QGemm { w, .. } | Op::QConv { w, .. } => {
                    matches!(w.data, QData::W8a8 { act_scale: Some(s), .. } if s > 0.0)
                }
                _ => false,
            })
            .count();
        assert_eq!(statics, r.weights, "{name}: every quantized node runs w8a8 with a static scale");

        let got = logits(&qdq, SessionOptions::default(), &x).unwrap();
        let reference = argmax_rows(&logits(&Model::load(&src).unwrap(), SessionOptions::default(), &x).unwrap());
        let agree = agreement(&reference, &argmax_rows(&got));
        println!(
            "{name} static w8a8 QDQ top-1 agreement with f32: {:.2}% on {} held-out samples",
            agree * 100.0,
            reference.len()
        );
        assert!(agree >= 0.99, "{name}: agreement {agree}");

        #[cfg(feature = "ort")]
        if let Some(ort) = super::common::ort_engine(&out, "the w8a8 QDQ file") {
            use alembic::teacher::Engine;
            let o = ort.run(&[("input", &x)]).unwrap();
            let d = max_abs_diff(&o[0].1, &got);
            let scale = got.as_slice::<f32>().unwrap().iter().fold(0f32, |m, v| m.max(v.abs()));
            println!("{name} w8a8 QDQ: onnxruntime vs alembic max |diff| {d:e} (max |logit| {scale})");
            assert!(d <= W8A8_ORT_TOLERANCE * scale, "{name}: onnxruntime differs by {d}");
        }
    }
}

/// Max |ORT - Alembic| on the static w8a8 file, relative to the largest |logit|. ORT (with the
/// Level1 optimizations OrtEngine uses) fuses the Q/DQ pairs and Gemm into its own int8 QGemm,
/// which differs from the QDQ reference semantics by 4.1e-2 on the student; ORT with graph
/// optimizations disabled and Alembic agree to 3.8e-6 (docs/quantized-format.md).
const W8A8_ORT_TOLERANCE: f32 = 1e-2;

#[test]
fn quantize_cli_calibrate_errors_are_one_line() {
    let dir = qdq_dir("calib-cli");
    let out = dir.join("s.onnx");
    let run = |p: &str, data: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_alembic"))
            .args(["quantize", models().join("student.onnx").to_str().unwrap(), "--precision", p, "--out"])
            .arg(&out)
            .arg("--calibrate")
            .arg(data)
            .output()
            .unwrap()
    };
    let ok = run("w8a8", &models().join("data/train_x.npy"));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("activations (static scales) to w8a8"));
    // A missing path, labels instead of samples (wrong shape), calibration for int8.
    let missing = dir.join("nope.npy");
    let cases = [
        ("w8a8", missing.clone(), "nope.npy"),
        ("w8a8", models().join("data/heldout_y.npy"), "shape"),
        ("int8", models().join("data/train_x.npy"), "w8a8"),
    ];
    for (p, data, needle) in cases {
        let o = run(p, &data);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{p} {}", data.display());
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
    }
}
