//! int4 QDQ export (`alembic quantize --precision int4`): INT4 values, f16 scales per 32 along
//! K and an opset-21 blocked DequantizeLinear (+ Cast, + Reshape for Conv), folded back onto
//! the int4 kernels on load; ONNX Runtime runs the same file.

use super::quant::{agreement, argmax_rows, heldout, logits, max_abs_diff, models, qdq_dir};
use alembic::ir::Op;
use alembic::onnx::pb;
use alembic::onnx::tensor_proto::{encode, encode_4bit};
use alembic::quant::{QData, QdqReport};
use alembic::{Model, Precision, SessionOptions, Tensor};
use prost::Message;

/// Max |ORT - Alembic| on an int4 file, relative to the largest |logit|. ORT dequantizes into
/// f16 (the scales' type), so each weight is rounded to f16 (relative 2^-11) where Alembic's
/// kernels compute `q * scale` in f32; measured 1.6e-4 (student) and 4.6e-4 (teacher).
const INT4_ORT_TOLERANCE: f32 = 2e-3;

/// Every quantized node of `m` holds int4 weights; returns how many.
fn int4_nodes(m: &Model) -> usize {
    let g = m.graph();
    assert!(!g.nodes.iter().any(|n| n.op.name() == "DequantizeLinear"), "DequantizeLinear left in the graph");
    g.nodes
        .iter()
        .filter(|n| match &n.op {
            Op::QGemm { w, .. } | Op::QConv { w, .. } => {
                assert!(matches!(w.data, QData::Int4 { .. }), "{}: not int4", n.op.name());
                true
            }
            _ => false,
        })
        .count()
}

#[test]
fn qdq_int4_export_folds_onto_int4_kernels_and_matches_ort() {
    let dir = qdq_dir("int4");
    let x = heldout();
    for name in ["student", "teacher"] {
        let src = models().join(format!("{name}.onnx"));
        let out = dir.join(format!("{name}.int4.onnx"));
        let out8 = dir.join(format!("{name}.int8.onnx"));
        let r = alembic::quant::export_qdq(&src, Precision::Int4, &out).unwrap();
        alembic::quant::export_qdq(&src, Precision::Int8, &out8).unwrap();
        let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
        let ratio = r.f32_bytes as f64 / r.quantized_bytes as f64;
        println!(
            "{name} int4 QDQ: {} weights, {} -> {} weight bytes ({ratio:.2}x); file f32 {} / int8 {} / int4 {} bytes",
            r.weights,
            r.f32_bytes,
            r.quantized_bytes,
            size(&src),
            size(&out8),
            size(&out)
        );
        // 4.5 bits per weight at most (values + f16 scale per 32), plus ragged-block padding.
        assert!(ratio > 6.5, "{name}: weights only {ratio:.2}x smaller");
        assert!(size(&out) < size(&out8), "{name}: int4 file not smaller than int8");

        let f32_model = Model::load(&src).unwrap();
        let q = Model::load(&out).unwrap();
        assert_eq!(int4_nodes(&q), r.weights, "{name}: every int4 weight folds into QGemm/QConv");
        let got = logits(&q, SessionOptions::default(), &x).unwrap();
        // Folding loses nothing: the same file with its blocks split in two (not foldable, so
        // run by the generic DequantizeLinear kernel: q * scale in f32) computes the same.
        let generic = Model::load(unfoldable_twin(&out)).unwrap();
        assert_eq!(alembic::quant::quantized_stats(generic.graph()).0, 0, "{name}: twin folded");
        let d = max_abs_diff(&got, &logits(&generic, SessionOptions::default(), &x).unwrap());
        println!("{name} int4 QDQ folded vs generic DequantizeLinear: max |diff| {d:e}");
        assert!(d <= 1e-5, "{name}: folded int4 vs generic dequantization differ by {d}");
        let mem = logits(&f32_model, SessionOptions::default().precision(Precision::Int4), &x).unwrap();
        let d = max_abs_diff(&got, &mem);
        println!("{name} int4 QDQ vs in-memory int4: max |diff| {d:e}");
        // The teacher's BatchNormalization stays a node in the file but is folded into the conv
        // before in-memory quantization, which changes the group scales and so some q values.
        if name == "student" {
            assert!(d <= 1e-5, "{name}: int4 QDQ vs in-memory int4 differ by {d}");
        }
        let reference = argmax_rows(&logits(&f32_model, SessionOptions::default(), &x).unwrap());
        let agree = agreement(&reference, &argmax_rows(&got));
        println!("{name} int4 QDQ top-1 agreement with f32: {:.2}%", agree * 100.0);
        assert!(agree >= 0.97, "{name}: agreement {agree}");

        #[cfg(feature = "ort")]
        if let Some(ort) = super::common::ort_engine(&out, "the int4 QDQ file") {
            use alembic::teacher::Engine;
            let o = ort.run(&[("input", &x)]).unwrap();
            let d = max_abs_diff(&o[0].1, &got);
            let scale = got.as_slice::<f32>().unwrap().iter().fold(0f32, |m, v| m.max(v.abs()));
            println!("{name} int4 QDQ: onnxruntime vs alembic max |diff| {d:e} (max |logit| {scale})");
            assert!(d <= INT4_ORT_TOLERANCE * scale, "{name}: onnxruntime differs by {d}");
        }
    }
}

/// A copy of the int4 file at `path` whose blocks of 32 are written as blocks of 16 with f32
/// scales (each scale on both halves of its block): the same values, but no longer Alembic's int4 layout.
fn unfoldable_twin(path: &std::path::Path) -> std::path::PathBuf {
    let mut proto = pb::ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let mut scales = Vec::new();
    for n in g.node.iter_mut().filter(|n| n.op_type == "DequantizeLinear") {
        let axis = n.attribute.iter().find(|a| a.name == "axis").unwrap().i as usize;
        n.attribute.iter_mut().find(|a| a.name == "block_size").unwrap().i = 16;
        scales.push((n.input[0].clone(), n.input[1].clone(), axis));
    }
    for (qname, name, axis) in scales {
        let k = g.initializer.iter().find(|t| t.name == qname).unwrap().dims[axis] as usize;
        let t = g.initializer.iter_mut().find(|t| t.name == name).unwrap();
        let s = alembic::onnx::tensor_proto::decode(t, None, &name).unwrap();
        let (shape, h) = (s.shape().to_vec(), s.as_slice::<half::f16>().unwrap());
        let mut out = shape.clone();
        out[axis] = k.div_ceil(16);
        let v: Vec<f32> = (0..out[0] * out[1])
            .map(|i| {
                let (r, c) = (i / out[1], i % out[1]);
                let (r, c) = if axis == 0 { (r / 2, c) } else { (r, c / 2) };
                h[r * shape[1] + c].to_f32()
            })
            .collect();
        *t = encode(&Tensor::from_vec(out, v).unwrap(), &name);
    }
    let twin = path.with_extension("blocks16.onnx");
    std::fs::write(&twin, proto.encode_to_vec()).unwrap();
    twin
}

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    let dim = |d: i64| pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
        ..Default::default()
    };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto { dim: dims.iter().map(|&d| dim(d)).collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `y = X[2, k] . W[k, n]` (+ an optional extra node on y) at `opset`.
fn matmul_model(w: &[f32], k: usize, n: usize, opset: i64, extra: Option<pb::NodeProto>) -> pb::ModelProto {
    let mm = pb::NodeProto {
        input: vec!["x".into(), "w".into()],
        output: vec!["y".into()],
        op_type: "MatMul".into(),
        ..Default::default()
    };
    let out = if extra.is_some() { "z" } else { "y" };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: opset }],
        graph: Some(pb::GraphProto {
            node: std::iter::once(mm).chain(extra).collect(),
            initializer: vec![encode(&Tensor::from_vec(vec![k, n], w.to_vec()).unwrap(), "w")],
            input: vec![value_info("x", &[2, k as i64])],
            output: vec![value_info(out, &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// MatMul B is `[k, n]`: blocks along axis 0, scales `[ceil(k / 32), n]`; k = 70 leaves a
/// ragged last block of 6. The file folds onto int4 and equals the in-memory int4 session.
#[test]
fn qdq_int4_matmul_ragged_k_blocks_along_axis_0() {
    let dir = qdq_dir("int4-matmul");
    let (k, n) = (70, 5);
    let src = dir.join("mm.onnx");
    let out = dir.join("mm.int4.onnx");
    std::fs::write(&src, matmul_model(&pseudo_random(k * n, 3), k, n, 17, None).encode_to_vec()).unwrap();
    let r: QdqReport = alembic::quant::export_qdq(&src, Precision::Int4, &out).unwrap();
    assert_eq!((r.weights, r.opset_raised_from), (1, Some(17)));
    let proto = pb::ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    assert_eq!(proto.opset_import[0].version, 21, "opset raised for INT4 / blocked DequantizeLinear");
    assert!(proto.ir_version >= 10);
    let g = proto.graph.as_ref().unwrap();
    let scale = g.initializer.iter().find(|t| t.name == "w_scale").unwrap();
    assert_eq!((scale.dims.as_slice(), scale.data_type), (&[3i64, 5][..], 10), "f16 scales [ceil(70/32), n]");
    let q = Model::load(&out).unwrap();
    assert_eq!(int4_nodes(&q), 1);
    let x = Tensor::from_vec(vec![2, k], pseudo_random(2 * k, 9)).unwrap();
    let run = |m: &Model, p: Precision| {
        m.session(SessionOptions::default().precision(p)).unwrap().run(vec![("x", x.clone())]).unwrap().0[0].1.clone()
    };
    let got = run(&q, Precision::F32);
    let mem = run(&Model::load(&src).unwrap(), Precision::Int4);
    assert!(max_abs_diff(&got, &mem) <= 1e-6, "{:e}", max_abs_diff(&got, &mem));
    #[cfg(feature = "ort")]
    if let Some(ort) = super::common::ort_engine(&out, "the int4 MatMul file") {
        use alembic::teacher::Engine;
        let o = ort.run(&[("x", &x)]).unwrap();
        let d = max_abs_diff(&o[0].1, &got);
        println!("int4 MatMul k=70: onnxruntime vs alembic max |diff| {d:e}");
        assert!(d <= 1e-3, "onnxruntime differs by {d}");
    }
}

/// Raising the opset to 21 must not reinterpret other ops: an opset-17 ReduceMean (axes as an
/// attribute, an input from 18 on) is refused in one line, naming the op.
#[test]
fn qdq_int4_refuses_ops_that_change_meaning_at_opset_21() {
    let dir = qdq_dir("int4-opset");
    let axes = pb::AttributeProto { name: "axes".into(), r#type: 7, ints: vec![1], ..Default::default() };
    let reduce = pb::NodeProto {
        input: vec!["y".into()],
        output: vec!["z".into()],
        op_type: "ReduceMean".into(),
        attribute: vec![axes],
        ..Default::default()
    };
    let src = dir.join("reduce.onnx");
    std::fs::write(&src, matmul_model(&pseudo_random(40, 1), 8, 5, 17, Some(reduce)).encode_to_vec()).unwrap();
    let e = alembic::quant::export_qdq(&src, Precision::Int4, &dir.join("o.onnx")).unwrap_err().to_string();
    assert!(e.contains("ReduceMean") && e.contains("opset 18") && !e.contains('\n'), "{e}");
    // int8 needs no opset change and still exports.
    alembic::quant::export_qdq(&src, Precision::Int8, &dir.join("o8.onnx")).unwrap();
}

/// `y = X[2, k] . DequantizeLinear(q [k, n], scales, axis 0, block)`, through `Cast(to FLOAT)`
/// when the scales are f16 (the form Alembic writes) and directly when they are f32 (the form
/// ONNX Runtime's 4-bit QDQ quantizer writes).
fn blocked_dq_matmul(q: pb::TensorProto, scales: Tensor, block: i64, k: usize) -> Vec<u8> {
    let int = |name: &str, i: i64| pb::AttributeProto { name: name.into(), r#type: 2, i, ..Default::default() };
    let node = |op: &str, input: &[&str], out: &str, attribute: Vec<pb::AttributeProto>| pb::NodeProto {
        input: input.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        op_type: op.into(),
        attribute,
        ..Default::default()
    };
    let cast = scales.dtype() == alembic::DType::F16;
    let dq_out = if cast { "wh" } else { "w" };
    let mut nodes =
        vec![node("DequantizeLinear", &["wq", "ws"], dq_out, vec![int("axis", 0), int("block_size", block)])];
    if cast {
        nodes.push(node("Cast", &["wh"], "w", vec![int("to", 1)]));
    }
    nodes.push(node("MatMul", &["x", "w"], "y", vec![]));
    pb::ModelProto {
        ir_version: 10,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 21 }],
        graph: Some(pb::GraphProto {
            node: nodes,
            initializer: vec![q, encode(&scales, "ws")],
            input: vec![value_info("x", &[2, k as i64])],
            output: vec![value_info("y", &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// ONNX Runtime's form: f32 scales, no Cast, the full INT4 range [-8, 7]. It folds onto int4
/// (scales kept as f16: exact here, as they are multiples of 2^-10) and computes the operator's
/// definition. Blocked INT8 beyond [-8, 7] does not fit int4 and runs on the generic kernel,
/// with the same definition.
#[test]
fn qdq_blocked_f32_scales_int4_folds_int8_runs_generic() {
    let (k, n) = (45usize, 3usize);
    for int4 in [true, false] {
        let qv: Vec<i8> = (0..k * n)
            .map(|i| if int4 { (i * 7 % 16) as i8 - 8 } else { ((i * 37 % 201) as i32 - 100) as i8 })
            .collect();
        assert!(!int4 || qv.contains(&-8));
        let blocks = k.div_ceil(32);
        let sv: Vec<f32> = (0..blocks * n).map(|i| (i + 3) as f32 / 1024.0).collect();
        let values = Tensor::from_vec(vec![k, n], qv.clone()).unwrap();
        let q = if int4 { encode_4bit(&values, "wq").unwrap() } else { encode(&values, "wq") };
        let bytes = blocked_dq_matmul(q, Tensor::from_vec(vec![blocks, n], sv.clone()).unwrap(), 32, k);
        let m = Model::from_bytes(&bytes).unwrap();
        assert_eq!(alembic::quant::quantized_stats(m.graph()).0, usize::from(int4), "int4 {int4}");
        if int4 {
            assert_eq!(int4_nodes(&m), 1);
        }
        check_blocked_matmul(&m, &qv, &sv, k, n);
    }
}

fn check_blocked_matmul(m: &Model, qv: &[i8], sv: &[f32], k: usize, n: usize) {
    let x = pseudo_random(2 * k, 11);
    let y = m
        .session(SessionOptions::default())
        .unwrap()
        .run(vec![("x", Tensor::from_vec(vec![2, k], x.clone()).unwrap())])
        .unwrap()
        .0[0]
        .1
        .clone();
    let y = y.as_slice::<f32>().unwrap();
    for i in 0..2 {
        for j in 0..n {
            let e: f32 = (0..k).map(|t| x[i * k + t] * qv[t * n + j] as f32 * sv[(t / 32) * n + j]).sum();
            assert!((y[i * n + j] - e).abs() <= 1e-5 * (1.0 + e.abs()), "[{i},{j}]: {} vs {e}", y[i * n + j]);
        }
    }
}

/// Hand-built blocked DequantizeLinear files: a wrong scale shape or a short INT4 buffer is a
/// one-line error naming the tensor or node; a block of 64 (a multiple of Alembic's 32) folds.
#[test]
fn qdq_int4_bad_blocked_inputs_are_one_line_errors() {
    let (k, n) = (70usize, 4usize);
    let qv: Vec<i8> = (0..k * n).map(|i| (i % 15) as i8 - 7).collect();
    let f16_scales = |rows: usize| {
        Tensor::from_vec(vec![rows, n], (0..rows * n).map(|i| half::f16::from_f32(0.01 * (i + 1) as f32)).collect())
            .unwrap()
    };
    let model =
        |q: pb::TensorProto, scale_rows: usize, block: i64| blocked_dq_matmul(q, f16_scales(scale_rows), block, k);
    let good = encode_4bit(&Tensor::from_vec(vec![k, n], qv.clone()).unwrap(), "wq").unwrap();
    // Block 64: two blocks along k; folds onto int4 (each group of 32 takes its block's scale).
    let m = Model::from_bytes(&model(good.clone(), 2, 64)).unwrap();
    assert_eq!(int4_nodes(&m), 1);
    // Scales for blocks of 32 are [3, n]; [2, n] does not fit: not folded, and the generic
    // kernel reports it in one line.
    let err = match Model::from_bytes(&model(good, 2, 32)) {
        Err(e) => e.to_string(),
        Ok(m) => {
            let x = Tensor::from_vec(vec![2, k], vec![0.5f32; 2 * k]).unwrap();
            m.session(SessionOptions::default()).and_then(|s| s.run(vec![("x", x)])).unwrap_err().to_string()
        }
    };
    assert!(err.contains("scales for blocks of 32") && !err.contains('\n'), "{err}");
    // 280 INT4 values need 140 bytes (odd counts: the unit test in onnx::tensor_proto).
    let short = pb::TensorProto {
        dims: vec![k as i64, n as i64],
        data_type: 22,
        raw_data: vec![0; 100].into(),
        name: "wq".into(),
        ..Default::default()
    };
    let e = Model::from_bytes(&model(short, 3, 32)).unwrap_err().to_string();
    assert!(e.contains("wq") && e.contains("INT4 holds 100 bytes") && !e.contains('\n'), "{e}");
}

/// MobileNetV3-tiny (depthwise, pointwise and strided convs, squeeze-excitation, a Gemm): every
/// weight folds onto int4 (the Conv ones through the Reshape), folding loses nothing against
/// the generic DequantizeLinear kernel, and ONNX Runtime agrees.
#[test]
fn qdq_int4_mobilenet_convs_fold_and_match_ort() {
    let dir = qdq_dir("int4-mobilenet");
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mobilenetv3_tiny.onnx");
    let out = dir.join("mobilenet.int4.onnx");
    let r = alembic::quant::export_qdq(&src, Precision::Int4, &out).unwrap();
    let (fs, qs) = (std::fs::metadata(&src).unwrap().len(), std::fs::metadata(&out).unwrap().len());
    println!(
        "mobilenet int4 QDQ: {} weights, {} -> {} weight bytes; file {fs} -> {qs} bytes",
        r.weights, r.f32_bytes, r.quantized_bytes
    );
    let q = Model::load(&out).unwrap();
    assert_eq!(int4_nodes(&q), r.weights, "every int4 weight folds");
    let x = Tensor::from_vec(vec![2, 3, 32, 64], pseudo_random(2 * 3 * 32 * 64, 5)).unwrap();
    let got = logits(&q, SessionOptions::default(), &x).unwrap();
    let generic = logits(&Model::load(unfoldable_twin(&out)).unwrap(), SessionOptions::default(), &x).unwrap();
    let scale = got.as_slice::<f32>().unwrap().iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = max_abs_diff(&got, &generic);
    println!("mobilenet int4 QDQ folded vs generic DequantizeLinear: max |diff| {d:e} (max |logit| {scale})");
    assert!(d <= 1e-5 * scale.max(1.0), "folded vs generic differ by {d}");
    #[cfg(feature = "ort")]
    if let Some(ort) = super::common::ort_engine(&out, "the int4 MobileNet file") {
        use alembic::teacher::Engine;
        let o = ort.run(&[("input", &x)]).unwrap();
        let d = max_abs_diff(&o[0].1, &got);
        println!("mobilenet int4 QDQ: onnxruntime vs alembic max |diff| {d:e} (max |logit| {scale})");
        assert!(d <= INT4_ORT_TOLERANCE * scale, "onnxruntime differs by {d}");
    }
}

/// The int4 files run on wgpu with no CPU fallback (their folded QGemm/QConv take the int4
/// shaders) and match the CPU engine on the same file.
#[cfg(feature = "wgpu")]
#[test]
fn qdq_int4_files_run_on_wgpu_with_no_fallback() {
    use alembic::backend::{BackendKind, Support};
    if let Err(e) = alembic::backend::wgpu::Ctx::shared() {
        println!("SKIPPED qdq_int4_files_run_on_wgpu_with_no_fallback: no wgpu adapter ({e})");
        return;
    }
    let dir = qdq_dir("int4-wgpu");
    let x = heldout();
    for name in ["student", "teacher"] {
        let out = dir.join(format!("{name}.int4.onnx"));
        alembic::quant::export_qdq(&models().join(format!("{name}.onnx")), Precision::Int4, &out).unwrap();
        let q = Model::load(&out).unwrap();
        let support = q.support_at(BackendKind::Wgpu, Precision::F32);
        let fallback: Vec<_> = support.iter().filter(|(_, _, s)| *s != Support::Native).collect();
        assert!(fallback.is_empty(), "{name}: CPU-fallback nodes on wgpu: {fallback:?}");
        let gpu = logits(&q, SessionOptions::default().backend(BackendKind::Wgpu), &x).unwrap();
        let cpu = logits(&q, SessionOptions::default(), &x).unwrap();
        let (g, c) = (gpu.as_slice::<f32>().unwrap(), cpu.as_slice::<f32>().unwrap());
        let worst = g.iter().zip(c).map(|(a, e)| (a - e).abs() / (1.0 + e.abs())).fold(0f32, f32::max);
        println!("{name} int4 QDQ on wgpu vs cpu: max |diff| / (1 + |e|) {worst:e}");
        assert!(worst <= 1e-4, "{name}: wgpu vs cpu {worst}");
    }
}
