//! Parity of Alembic's CPU engine with tract and ONNX Runtime on a MobileNetV3-small-style CNN
//! (depthwise convs, HardSwish, squeeze-excitation, unfolded BatchNorm, residual Adds).
//!
//! tests/data/mobilenetv3_tiny.onnx is `scripts/make_mobilenet.py --width 0.125 --height 32
//! --image-width 64 --classes 10` (random weights, 190 KB): the benchmark model's graph at a
//! size that runs in milliseconds. Same tolerance as parity.rs: |a - r| <= 1e-4 * max(|r|, 1).

use alembic::teacher::{AlembicEngine, Engine, TractEngine};
use alembic::Tensor;
use std::path::PathBuf;

const TOL: f32 = 1e-4;

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mobilenetv3_tiny.onnx")
}

/// Deterministic inputs in [-1, 1) (an LCG: no dependency on rand's stream stability).
fn input(batch: usize) -> Tensor {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15 ^ batch as u64;
    let v: Vec<f32> = (0..batch * 3 * 32 * 64)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(vec![batch, 3, 32, 64], v).expect("shape matches")
}

fn logits(e: &dyn Engine, x: &Tensor) -> Vec<f32> {
    let outs = e.run(&[("input", x)]).unwrap_or_else(|err| panic!("{} on {:?}: {err}", e.name(), x.shape()));
    assert_eq!(outs[0].1.shape(), &[x.shape()[0], 10], "{}: logits shape", e.name());
    outs[0].1.as_slice::<f32>().expect("f32 logits").to_vec()
}

#[test]
fn mobilenet_parity() {
    let path = model();
    let alembic = AlembicEngine::load(&path).expect("alembic loads the MobileNetV3 fixture");
    #[cfg_attr(not(feature = "ort"), allow(unused_mut))]
    let mut refs: Vec<Box<dyn Engine>> = vec![Box::new(TractEngine::load(&path).expect("tract loads it"))];
    #[cfg(feature = "ort")]
    if let Some(ort) = super::common::ort_engine(&path, "the MobileNetV3 fixture") {
        refs.push(Box::new(ort));
    }
    for batch in [1, 3] {
        let x = input(batch);
        let a = logits(&alembic, &x);
        // Random weights still give non-trivial logits: a kernel that zeroed a branch would show.
        assert!(a.iter().any(|v| v.abs() > 1e-3), "alembic logits are all ~0");
        for r in &refs {
            let want = logits(r.as_ref(), &x);
            let d = a.iter().zip(&want).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max);
            println!("mobilenet batch {batch}: alembic vs {} max rel diff {d:.2e}", r.name());
            assert!(d <= TOL, "mobilenet batch {batch}: alembic vs {} max rel diff {d:e} > {TOL:e}", r.name());
        }
    }
}

/// w8a8 quantizes the activations of the dense products only: depthwise convs, the RGB stem and
/// 1x1 convs over fewer than 33 channels keep f32 activations with int8 weights
/// (`quant::w8a8_keeps_f32_activations`), every other conv and the Gemms run w8a8, and the
/// logits stay close to f32's.
#[test]
fn mobilenet_w8a8_keeps_depthwise_and_stem_weight_only() {
    use alembic::backend::cpu::CpuBackend;
    use alembic::backend::Backend;
    use alembic::ir::Op;
    use alembic::quant::{is_depthwise, quantize_graph, w8a8_keeps_f32_activations, Precision, QData};
    use std::sync::Arc;

    let model = alembic::Model::load(model()).expect("loads the MobileNetV3 fixture");
    let g = quantize_graph(model.graph(), Precision::W8a8);
    let (mut depthwise, mut stem, mut narrow, mut dense) = (0, 0, 0, 0);
    for node in &g.nodes {
        match &node.op {
            Op::QConv { group, wshape, w, .. } if w8a8_keeps_f32_activations(*group, wshape) => {
                assert!(matches!(w.data, QData::Int8 { .. }), "{}: should be int8 weight-only", node.name);
                if is_depthwise(*group, wshape) {
                    depthwise += 1;
                } else if wshape[2..].iter().all(|&k| k == 1) {
                    assert!(wshape[1] < alembic::quant::W8A8_MIN_REDUCTION, "{}: {wshape:?} is not short", node.name);
                    narrow += 1;
                } else {
                    // The only short conv with a window is the 3-channel 3x3 stem.
                    assert_eq!(&wshape[1..], &[3, 3, 3], "{}: only the stem has a short window", node.name);
                    stem += 1;
                }
            }
            Op::QConv { w, .. } | Op::QGemm { w, .. } => {
                assert!(matches!(w.data, QData::W8a8 { .. }), "{}: should be w8a8", node.name);
                dense += 1;
            }
            _ => {}
        }
    }
    assert!(
        depthwise > 0 && stem == 1 && dense > 0,
        "{depthwise} depthwise, {stem} stem, {narrow} narrow 1x1 and {dense} dense quantized nodes"
    );
    let x = input(3);
    let run = |g| CpuBackend.prepare(Arc::new(g)).unwrap().run(&[&x]).unwrap().remove(0);
    let (q, f) = (run(g), run(model.graph().clone()));
    let (q, f) = (q.as_slice::<f32>().unwrap(), f.as_slice::<f32>().unwrap());
    let peak = f.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = q.iter().zip(f).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("mobilenet w8a8 vs f32: max |diff| {worst:.3e} (max |logit| {peak:.3e}); {depthwise} depthwise int8, {dense} w8a8");
    assert!(worst <= 0.1 * peak, "w8a8 logits drift {worst} against a peak of {peak}");
}
