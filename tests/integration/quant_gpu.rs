//! w8a8 on wgpu: the GEMM and Conv shaders (both `dot4` variants: WGSL `dot4I8Packed` and the
//! hand-unpacked fallback) against the CPU w8a8 kernels on odd shapes, on Vulkan (lavapipe here)
//! and GL; and the fixtures' top-1 agreement with f32 in w8a8 on wgpu. Without an adapter each
//! test prints that it skipped.

use super::quant::{agreement, argmax_rows, heldout, logits, min_agreement, models};
use alembic::backend::cpu::CpuBackend;
use alembic::backend::wgpu::device::Backends;
use alembic::backend::wgpu::{w8a8, Ctx, WgpuBackend};
use alembic::backend::{Backend, BackendKind, Support};
use alembic::ir::{Graph, Node, Op, Value, Window};
use alembic::quant::{Precision, QData, QWeight};
use alembic::{DType, Model, SessionOptions, Shape, Tensor};
use std::sync::Arc;

/// Mesa wants a private XDG_RUNTIME_DIR (scripts/test.sh sets one; this covers plain cargo).
fn quiet_mesa() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        println!("note: XDG_RUNTIME_DIR unset; Mesa may print a warning");
    }
}

fn vals(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// One QGemm / QConv node with a run-time input `x` and an optional constant bias.
fn graph(op: Op, x: &Tensor, bias: Option<Tensor>, out_rank: usize) -> Graph {
    let mut g = Graph { opset: 17, ..Default::default() };
    let mut v = Value::new("x");
    v.dtype = Some(DType::F32);
    v.shape = Some(Shape::known(x.shape()));
    let xi = g.add_value(v);
    g.inputs.push(xi);
    let b = bias.map(|b| g.add_constant("b", b));
    let mut out = Value::new("y");
    out.dtype = Some(DType::F32);
    out.shape = Some(Shape(vec![alembic::Dim::Unknown; out_rank]));
    let o = g.add_value(out);
    g.nodes.push(Node { name: "n".into(), op, inputs: vec![Some(xi), b], outputs: vec![o] });
    g.outputs.push(o);
    g
}

/// Contexts to test: (label, context) for Vulkan and GL, each with the adapter's `dot4`
/// choice and with the unpacked fallback forced.
fn contexts(test: &str) -> Vec<(String, Arc<Ctx>)> {
    quiet_mesa();
    let mut out = Vec::new();
    for (api, b) in [("vulkan", Backends::VULKAN), ("gl", Backends::GL)] {
        for force_unpacked in [false, true] {
            match Ctx::new(b) {
                Ok(mut c) => {
                    if force_unpacked {
                        c.report.features.retain(|f| f != w8a8::PACKED_DOT);
                    }
                    let fam = w8a8::family(&c.report, false);
                    out.push((format!("{api} {} ({fam})", c.report.name), Arc::new(c)));
                }
                Err(e) => {
                    println!("SKIPPED {test} on {api}: no wgpu adapter ({e})");
                    break;
                }
            }
        }
    }
    out
}

fn run(exec: &dyn alembic::backend::Executable, x: &Tensor) -> Tensor {
    exec.run(&[x]).unwrap().remove(0)
}

/// GPU vs CPU w8a8 outputs. Both quantize the same activations with the same rule (round half
/// to even), but the GPU's `1 / scale` may differ in the last bit, which can move a value
/// sitting on a rounding boundary by one step: each such flip changes an output by at most
/// `scale_a * max|w|` (<= 1/127 for inputs and weights in [-1, 1]). So: every element within
/// two flips, and at least 95% of them equal to rel 1e-4 (no flip at all).
pub(super) fn compare(what: &str, gpu: &Tensor, cpu: &Tensor) {
    assert_eq!(gpu.shape(), cpu.shape(), "{what}: shape");
    let (a, b) = (gpu.as_slice::<f32>().unwrap(), cpu.as_slice::<f32>().unwrap());
    let (mut exact, mut worst) = (0, 0f32);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        worst = worst.max(d);
        assert!(d <= 1e-4 * (1.0 + y.abs()) + 2.0 / 127.0, "{what}: element {i}: gpu {x} vs cpu {y}");
        exact += usize::from(d <= 1e-4 * (1.0 + y.abs()));
    }
    let frac = exact as f64 / a.len() as f64;
    println!("{what}: {:.1}% equal to rel 1e-4, max |diff| {worst:e}", frac * 100.0);
    assert!(frac >= 0.95, "{what}: only {:.1}% of outputs match the CPU", frac * 100.0);
}

#[test]
fn w8a8_gemm_and_conv_match_cpu_on_every_api_and_dot4_variant() {
    let ctxs = contexts("w8a8_gemm_and_conv_match_cpu_on_every_api_and_dot4_variant");
    for (label, c) in &ctxs {
        let backend = WgpuBackend::with_context(c.clone());
        // GEMM: rows and columns not multiples of the 16x16 tile, k not a multiple of 4 or 64.
        for (i, &(m, k, n)) in [(1, 70, 19), (9, 33, 40), (17, 5, 3), (4, 130, 21), (2, 64, 10)].iter().enumerate() {
            let x = Tensor::from_vec(vec![m, k], vals(m * k, i as u32)).unwrap();
            let w = Arc::new(QWeight::quantize(&vals(n * k, 100 + i as u32), n, k, Precision::W8a8).unwrap());
            let bias = Tensor::from_vec(vec![n], vals(n, 200 + i as u32)).unwrap();
            let g = || graph(Op::QGemm { w: w.clone(), alpha: 0.5, beta: 1.5 }, &x, Some(bias.clone()), 2);
            let gg = Arc::new(g());
            assert_eq!(backend.supports(&gg, &gg.nodes[0]), Support::Native);
            let plan = backend.plan(gg).unwrap();
            let gpu = run(&plan, &x);
            let cpu = run(&*CpuBackend.prepare(Arc::new(g())).unwrap(), &x);
            compare(&format!("{label}: w8a8 gemm {m}x{k}x{n}"), &gpu, &cpu);
        }
        // Conv: padding, stride, dilation, groups, batch > 1, odd spatial sizes, no bias.
        let cases = [
            (1, 3, 7, 9, 5, 3, 1, 1, 1, 1, true),
            (2, 4, 8, 8, 4, 3, 2, 1, 1, 2, true),
            (1, 6, 5, 7, 4, 1, 1, 0, 1, 1, false),
            (1, 2, 10, 11, 3, 3, 2, 2, 2, 1, true),
        ];
        for (i, &(nb, ch, h, wd, oc, ks, s, p, d, group, has_bias)) in cases.iter().enumerate() {
            let x = Tensor::from_vec(vec![nb, ch, h, wd], vals(nb * ch * h * wd, 300 + i as u32)).unwrap();
            let kdim = ch / group * ks * ks;
            let q = Arc::new(QWeight::quantize(&vals(oc * kdim, 400 + i as u32), oc, kdim, Precision::W8a8).unwrap());
            let window = Window::square(s, p, d);
            let bias = has_bias.then(|| Tensor::from_vec(vec![oc], vals(oc, 500 + i as u32)).unwrap());
            let op = Op::QConv { window, group, w: q, wshape: vec![oc, ch / group, ks, ks] };
            let g = || graph(op.clone(), &x, bias.clone(), 4);
            let gpu = run(&backend.plan(Arc::new(g())).unwrap(), &x);
            let cpu = run(&*CpuBackend.prepare(Arc::new(g())).unwrap(), &x);
            compare(&format!("{label}: w8a8 conv case {i}"), &gpu, &cpu);
        }
        println!("{label}: w8a8 GEMM and Conv match the CPU kernels");
    }
}

/// A static activation scale (calibrated QDQ) saturates like QuantizeLinear: inputs beyond
/// the scale's range become -128 or 127, on the CPU (checked against that definition) and on
/// every API and `dot4` variant (checked against the CPU).
#[test]
fn w8a8_static_scale_saturates_like_quantize_linear() {
    let (m, k, n, s) = (3, 37, 5, 1.0f32 / 200.0);
    let x = Tensor::from_vec(vec![m, k], vals(m * k, 7)).unwrap();
    let xv = x.as_slice::<f32>().unwrap();
    assert!(xv.iter().any(|v| (v / s).round_ties_even() < -128.0), "some inputs must saturate at -128");
    let QData::W8a8 { q, scales, .. } = QWeight::quantize(&vals(n * k, 8), n, k, Precision::W8a8).unwrap().data else {
        unreachable!("w8a8 weights")
    };
    let want: Vec<f32> = (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            let qa = |t: usize| (xv[i * k + t] * (1.0 / s)).round_ties_even().clamp(-128.0, 127.0) as i32;
            s * scales[j] * (0..k).map(|t| qa(t) * q[j * k + t] as i32).sum::<i32>() as f32
        })
        .collect();
    let data = QData::W8a8 { q, scales, act_scale: Some(s) };
    let w = Arc::new(QWeight { n, k, data });
    let g = || graph(Op::QGemm { w: w.clone(), alpha: 1.0, beta: 0.0 }, &x, None, 2);
    let cpu = run(&*CpuBackend.prepare(Arc::new(g())).unwrap(), &x);
    for (i, (&c, &e)) in cpu.as_slice::<f32>().unwrap().iter().zip(&want).enumerate() {
        assert!((c - e).abs() <= 1e-5 * (1.0 + e.abs()), "cpu element {i}: {c} vs {e}");
    }
    // The conv shader quantizes its patches the same way: 2 images, 3 channels, 3x3 kernel.
    let xc = Tensor::from_vec(vec![2, 3, 6, 5], vals(2 * 3 * 6 * 5, 9)).unwrap();
    let QData::W8a8 { q, scales, .. } = QWeight::quantize(&vals(4 * 27, 10), 4, 27, Precision::W8a8).unwrap().data
    else {
        unreachable!("w8a8 weights")
    };
    let wc = Arc::new(QWeight { n: 4, k: 27, data: QData::W8a8 { q, scales, act_scale: Some(s) } });
    let window = Window::square(1, 1, 1);
    let gc =
        || graph(Op::QConv { window: window.clone(), group: 1, w: wc.clone(), wshape: vec![4, 3, 3, 3] }, &xc, None, 4);
    let cpu_conv = run(&*CpuBackend.prepare(Arc::new(gc())).unwrap(), &xc);
    for (label, c) in &contexts("w8a8_static_scale_saturates_like_quantize_linear") {
        let backend = WgpuBackend::with_context(c.clone());
        compare(&format!("{label}: static-scale w8a8 gemm"), &run(&backend.plan(Arc::new(g())).unwrap(), &x), &cpu);
        let gpu_conv = run(&backend.plan(Arc::new(gc())).unwrap(), &xc);
        compare(&format!("{label}: static-scale w8a8 conv"), &gpu_conv, &cpu_conv);
    }
}

#[test]
fn fixtures_w8a8_agreement_on_wgpu() {
    quiet_mesa();
    let c = match Ctx::shared() {
        Ok(c) => c,
        Err(e) => {
            println!("SKIPPED fixtures_w8a8_agreement_on_wgpu: no wgpu adapter ({e})");
            return;
        }
    };
    println!("wgpu adapter: {} ({})", c.report, w8a8::family(&c.report, false));
    let x = heldout();
    for name in ["student", "teacher"] {
        let model = Model::load(models().join(format!("{name}.onnx"))).unwrap();
        let reference = argmax_rows(&logits(&model, SessionOptions::default(), &x).unwrap());
        let p = Precision::W8a8;
        let fallback = model.support_at(BackendKind::Wgpu, p).iter().filter(|(_, _, s)| *s != Support::Native).count();
        assert_eq!(fallback, 0, "{name} {p}: CPU-fallback nodes on wgpu");
        let opts = SessionOptions::default().backend(BackendKind::Wgpu).precision(p);
        let got = argmax_rows(&logits(&model, opts, &x).unwrap());
        let agree = agreement(&reference, &got);
        println!("wgpu {name} {p}: top-1 agreement with f32 {:.2}% on {} held-out samples", agree * 100.0, got.len());
        assert!(agree >= min_agreement(p), "wgpu {name} {p}: agreement {agree} < {}", min_agreement(p));
    }
}
