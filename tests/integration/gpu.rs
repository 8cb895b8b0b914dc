//! The wgpu engine against the CPU f32 reference: every shader compiles, every kernel on random
//! (odd) shapes, the fixture models in f32 and quantized. Without an adapter each test prints
//! "SKIPPED <test>: no wgpu adapter" and returns.
//!
//! Tolerances (docs/quantized-format.md): f32 kernels rel 1e-4 (+ abs 1e-5); quantized GEMMs
//! are compared with the CPU QGemm on the same packed weights (same dequantized values, rel
//! 1e-4), and the quantization error itself is bounded against the f32 GEMM per precision.

use super::quant::{agreement, argmax_rows, heldout, logits, min_agreement, models};
use alembic::backend::cpu::CpuBackend;
use alembic::backend::wgpu::{validate_shaders, Ctx, WgpuBackend};
use alembic::backend::{Backend, BackendKind, Executable, Support};
use alembic::ir::{AutoPad, Binary, Graph, Node, Op, Unary, Value, Window};
use alembic::quant::{Precision, QWeight};
use alembic::tensor::npy::read_npy;
use alembic::{DType, Model, SessionOptions, Shape, Tensor};
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Once};

/// Mesa complains unless XDG_RUNTIME_DIR is a private directory.
pub(super) fn quiet_mesa() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let d = std::env::temp_dir().join("alembic-xdg-runtime");
        let _ = std::fs::create_dir_all(&d);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        }
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            std::env::set_var("XDG_RUNTIME_DIR", &d);
        }
    });
}

/// The shared context, or a printed skip.
pub(super) fn ctx(test: &str) -> Option<Arc<Ctx>> {
    quiet_mesa();
    match Ctx::shared() {
        Ok(c) => {
            static REPORT: Once = Once::new();
            REPORT.call_once(|| println!("wgpu adapter: {} (shader-f16: {})", c.report, c.report.shader_f16));
            Some(c)
        }
        Err(e) => {
            println!("SKIPPED {test}: no wgpu adapter ({e})");
            None
        }
    }
}

pub(super) fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub(super) fn random(r: &mut impl Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), (0..n).map(|_| r.random_range(lo..hi)).collect::<Vec<f32>>()).unwrap()
}

/// An input of a one-node test graph: a run-time input or a constant.
pub(super) enum In {
    Run(Tensor),
    Const(Tensor),
    Absent,
}

/// One node over the given inputs, one f32 output of rank `out_rank`.
pub(super) fn one_node(op: Op, ins: Vec<In>, out_rank: usize) -> (Graph, Vec<Tensor>) {
    let mut g = Graph { opset: 17, ..Default::default() };
    let mut run = Vec::new();
    let mut ids = Vec::new();
    for (i, x) in ins.into_iter().enumerate() {
        match x {
            In::Run(t) => {
                let mut v = Value::new(format!("in{i}"));
                v.dtype = Some(t.dtype());
                v.shape = Some(Shape::known(t.shape()));
                let id = g.add_value(v);
                g.inputs.push(id);
                run.push(t);
                ids.push(Some(id));
            }
            In::Const(t) => ids.push(Some(g.add_constant(format!("c{i}"), t))),
            In::Absent => ids.push(None),
        }
    }
    let mut out = Value::new("out");
    out.dtype = Some(DType::F32);
    out.shape = Some(Shape(vec![alembic::Dim::Unknown; out_rank]));
    let o = g.add_value(out);
    g.nodes.push(Node { name: "n".into(), op, inputs: ids, outputs: vec![o] });
    g.outputs.push(o);
    (g, run)
}

pub(super) fn run_on(exec: &dyn Executable, inputs: &[Tensor]) -> Tensor {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    exec.run(&refs).unwrap().remove(0)
}

pub(super) fn run_gpu(ctx: &Arc<Ctx>, g: Graph, inputs: &[Tensor]) -> Tensor {
    let g = Arc::new(g);
    let b = WgpuBackend::with_context(ctx.clone());
    for n in &g.nodes {
        assert_eq!(b.supports(&g, n), Support::Native, "{} should run natively on wgpu", n.op.name());
    }
    let plan = b.plan(g).unwrap();
    // Twice: the second run reuses the bound buffers.
    let first = run_on(&plan, inputs);
    let second = run_on(&plan, inputs);
    assert_eq!(first, second, "repeated runs differ");
    second
}

pub(super) fn run_cpu(g: Graph, inputs: &[Tensor]) -> Tensor {
    run_on(&*CpuBackend.prepare(Arc::new(g)).unwrap(), inputs)
}

pub(super) fn close(what: &str, got: &Tensor, want: &Tensor, rtol: f32, atol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (a, b) = (got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let ok = (x - y).abs() <= atol + rtol * y.abs() || (x.is_nan() && y.is_nan());
        assert!(ok, "{what}: element {i}: {x} vs {y}");
    }
}

#[test]
fn shaders_validate_with_naga() {
    validate_shaders().unwrap();
}

#[test]
fn shaders_compile_on_adapter() {
    let Some(c) = ctx("shaders_compile_on_adapter") else { return };
    let keys: &[(&'static str, &'static str, u32)] = &[
        ("elementwise", "unary", 0),
        ("elementwise", "binary", 0),
        ("gemm", "main", 0),
        ("gemm", "main", 1),
        ("gemm", "main", 2),
        ("gemm", "main", 3),
        ("conv2d", "main", 0),
        ("conv2d", "main", 1),
        ("conv2d", "main", 2),
        ("conv2d", "main", 3),
        ("pool", "pool2d", 0),
        ("pool", "global_pool", 0),
        ("softmax", "main", 0),
        ("norm", "layer_norm", 0),
        ("norm", "batch_norm", 0),
        ("reduce", "main", 0),
        ("move", "copy", 0),
        ("move", "gather", 0),
        ("resize", "main", 0),
    ];
    for &k in keys {
        c.pipeline(k).unwrap_or_else(|e| panic!("{k:?}: {e}"));
    }
    assert!(c.pipeline_count() >= keys.len());
}

#[test]
fn gemm_matches_cpu_on_odd_shapes() {
    let Some(c) = ctx("gemm_matches_cpu_on_odd_shapes") else { return };
    let mut r = rng(1);
    for &(m, k, n) in &[(1, 1, 1), (5, 17, 33), (37, 70, 19), (16, 16, 16), (3, 100, 1)] {
        for trans_b in [false, true] {
            for (bias, b_const) in [(true, true), (false, false)] {
                let a = random(&mut r, &[m, k], -1.0, 1.0);
                let b = random(&mut r, &if trans_b { [n, k] } else { [k, n] }, -1.0, 1.0);
                let cb = random(&mut r, &[n], -1.0, 1.0);
                let op = Op::Gemm { alpha: 0.7, beta: 1.3, trans_a: false, trans_b };
                let mk = || {
                    let bi = if b_const { In::Const(b.clone()) } else { In::Run(b.clone()) };
                    let ci = if bias { In::Const(cb.clone()) } else { In::Absent };
                    one_node(op.clone(), vec![In::Run(a.clone()), bi, ci], 2)
                };
                let (g, ins) = mk();
                let got = run_gpu(&c, g, &ins);
                let (g, ins) = mk();
                close(&format!("gemm {m}x{k}x{n} tb={trans_b}"), &got, &run_cpu(g, &ins), 1e-4, 1e-5);
            }
        }
    }
    // Batched MatMul: B shared, and B batched alike.
    for bsh in [vec![7, 9], vec![2, 3, 7, 9]] {
        let a = random(&mut r, &[2, 3, 5, 7], -1.0, 1.0);
        let b = random(&mut r, &bsh, -1.0, 1.0);
        let (g, ins) = one_node(Op::MatMul, vec![In::Run(a.clone()), In::Run(b.clone())], 4);
        let got = run_gpu(&c, g, &ins);
        let (g, ins) = one_node(Op::MatMul, vec![In::Run(a), In::Run(b)], 4);
        close(&format!("matmul x {bsh:?}"), &got, &run_cpu(g, &ins), 1e-4, 1e-5);
    }
}

#[test]
fn quantized_gemm_matches_cpu_kernels() {
    let Some(c) = ctx("quantized_gemm_matches_cpu_kernels") else { return };
    let mut r = rng(2);
    for &(m, k, n) in &[(1, 70, 19), (9, 33, 40), (4, 64, 10), (2, 7, 3)] {
        let a = random(&mut r, &[m, k], -1.0, 1.0);
        let w = random(&mut r, &[n, k], -1.0, 1.0);
        let bias = random(&mut r, &[n], -1.0, 1.0);
        let exact = {
            let op = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true };
            let (g, ins) = one_node(op, vec![In::Run(a.clone()), In::Const(w.clone()), In::Const(bias.clone())], 2);
            run_cpu(g, &ins)
        };
        for p in [Precision::F16, Precision::Int8, Precision::Int4] {
            let q = Arc::new(QWeight::quantize(w.as_slice::<f32>().unwrap(), n, k, p).unwrap());
            let mk = || {
                let op = Op::QGemm { w: q.clone(), alpha: 1.0, beta: 1.0 };
                one_node(op, vec![In::Run(a.clone()), In::Const(bias.clone())], 2)
            };
            let (g, ins) = mk();
            let got = run_gpu(&c, g, &ins);
            let (g, ins) = mk();
            let cpu = run_cpu(g, &ins);
            close(&format!("qgemm {p} {m}x{k}x{n}"), &got, &cpu, 1e-4, 1e-5);
            // Quantization error vs f32: |x|_1 * (max weight error), per precision.
            let step = match p {
                Precision::F16 => 1e-3,
                Precision::Int8 => 1.0 / 254.0,
                _ => 1.0 / 14.0 * 1.01,
            };
            close(&format!("qgemm {p} vs f32"), &got, &exact, 0.0, k as f32 * step);
        }
    }
}

#[test]
fn elementwise_matches_cpu() {
    let Some(c) = ctx("elementwise_matches_cpu") else { return };
    let mut r = rng(3);
    let unary = [
        Unary::Relu,
        Unary::LeakyRelu { alpha: 0.1 },
        Unary::Sigmoid,
        Unary::HardSigmoid { alpha: 0.2, beta: 0.5 },
        Unary::HardSwish,
        Unary::Tanh,
        Unary::Gelu { tanh: false },
        Unary::Gelu { tanh: true },
        Unary::Exp,
        Unary::Neg,
        Unary::Abs,
        Unary::Floor,
        Unary::Ceil,
        Unary::Elu { alpha: 1.0 },
        Unary::Softplus,
        Unary::Clip { min: -0.5, max: 0.7 },
        Unary::Erf,
        Unary::Sqrt,
        Unary::Log,
        Unary::Reciprocal,
    ];
    for u in unary {
        let positive = matches!(u, Unary::Sqrt | Unary::Log | Unary::Reciprocal);
        let x = if positive { random(&mut r, &[3, 5, 7], 0.1, 3.0) } else { random(&mut r, &[3, 5, 7], -3.0, 3.0) };
        let (g, ins) = one_node(Op::Unary(u.clone()), vec![In::Run(x.clone())], 3);
        let got = run_gpu(&c, g, &ins);
        let (g, ins) = one_node(Op::Unary(u.clone()), vec![In::Run(x)], 3);
        close(&format!("{u:?}"), &got, &run_cpu(g, &ins), 1e-4, 1e-5);
    }
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 4], &[4]),
        (&[2, 1, 4], &[3, 1]),
        (&[5], &[5]),
        (&[1], &[2, 3]),
        (&[2, 3, 1, 5, 1, 2], &[3, 4, 1, 1, 2]),
    ];
    for b in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Pow, Binary::Max, Binary::Min, Binary::PRelu]
    {
        for (sa, sb) in shapes {
            let lo = if b == Binary::Pow { 0.1 } else { -2.0 };
            let x = random(&mut r, sa, lo, 2.0);
            let y = if b == Binary::Div { random(&mut r, sb, 0.5, 2.0) } else { random(&mut r, sb, -2.0, 2.0) };
            let rank = sa.len().max(sb.len());
            let (g, ins) = one_node(Op::Binary(b), vec![In::Run(x.clone()), In::Const(y.clone())], rank);
            let got = run_gpu(&c, g, &ins);
            let (g, ins) = one_node(Op::Binary(b), vec![In::Run(x), In::Const(y)], rank);
            close(&format!("{b:?} {sa:?} {sb:?}"), &got, &run_cpu(g, &ins), 1e-4, 1e-5);
        }
    }
}

fn window(k: usize, s: usize, p: usize, d: usize, ceil: bool, kernel: bool) -> Window {
    Window {
        kernel: if kernel { vec![k, k] } else { vec![] },
        strides: vec![s, s],
        pads: vec![p, p, p, p],
        dilations: vec![d, d],
        auto_pad: AutoPad::NotSet,
        ceil_mode: ceil,
    }
}

/// Naive NCHW conv reference (independent of the CPU engine's kernels).
#[allow(clippy::too_many_arguments)]
fn conv_ref(x: &Tensor, w: &Tensor, b: Option<&Tensor>, s: usize, p: usize, d: usize, group: usize) -> Tensor {
    let (xs, ws) = (x.shape(), w.shape());
    let (n, c, h, wd, oc, kh, kw) = (xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3]);
    let oh = (h + 2 * p - d * (kh - 1) - 1) / s + 1;
    let ow = (wd + 2 * p - d * (kw - 1) - 1) / s + 1;
    let (xv, wv) = (x.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
    let (cg, og) = (c / group, oc / group);
    let mut out = vec![0f32; n * oc * oh * ow];
    for bi in 0..n {
        for o in 0..oc {
            let gi = o / og;
            for y in 0..oh {
                for xx in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b.as_slice::<f32>().unwrap()[o]);
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (y * s + ky * d) as isize - p as isize;
                                let ix = (xx * s + kx * d) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((bi * c + gi * cg + ci) * h + iy as usize) * wd + ix as usize;
                                acc += xv[xi] * wv[((o * cg + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                    out[((bi * oc + o) * oh + y) * ow + xx] = acc;
                }
            }
        }
    }
    Tensor::from_vec(vec![n, oc, oh, ow], out).unwrap()
}

#[test]
fn conv2d_matches_reference() {
    let Some(c) = ctx("conv2d_matches_reference") else { return };
    let mut r = rng(4);
    // (n, c, h, w, oc, k, stride, pad, dilation, group, bias)
    let cases = [
        (1, 3, 7, 9, 5, 3, 1, 1, 1, 1, true),
        (2, 4, 8, 8, 4, 3, 2, 1, 1, 4, true),
        (1, 6, 9, 7, 4, 1, 1, 0, 1, 2, false),
        (1, 2, 10, 11, 3, 3, 2, 2, 2, 1, true),
        (3, 1, 8, 8, 8, 3, 1, 1, 1, 1, true),
    ];
    for (n, ch, h, w, oc, k, s, p, d, group, bias) in cases {
        let x = random(&mut r, &[n, ch, h, w], -1.0, 1.0);
        let wt = random(&mut r, &[oc, ch / group, k, k], -1.0, 1.0);
        let b = random(&mut r, &[oc], -1.0, 1.0);
        let op = Op::Conv { window: window(k, s, p, d, false, false), group };
        let bi = if bias { In::Const(b.clone()) } else { In::Absent };
        let (g, ins) = one_node(op, vec![In::Run(x.clone()), In::Const(wt.clone()), bi], 4);
        let got = run_gpu(&c, g, &ins);
        let want = conv_ref(&x, &wt, bias.then_some(&b), s, p, d, group);
        close(&format!("conv {:?}", (n, ch, h, w, oc, k, s, p, d, group)), &got, &want, 1e-4, 1e-5);
        // Quantized weights: the reference uses the same dequantized weights.
        for prec in [Precision::F16, Precision::Int8, Precision::Int4] {
            let rows = oc;
            let cols = wt.len() / oc;
            let q = QWeight::quantize(wt.as_slice::<f32>().unwrap(), rows, cols, prec).unwrap();
            let deq = Tensor::from_vec(wt.shape().to_vec(), q.dequantize()).unwrap();
            let op = Op::QConv {
                window: window(k, s, p, d, false, false),
                group,
                w: Arc::new(q),
                wshape: wt.shape().to_vec(),
            };
            let bi = if bias { In::Const(b.clone()) } else { In::Absent };
            let (g, ins) = one_node(op, vec![In::Run(x.clone()), bi], 4);
            let got = run_gpu(&c, g, &ins);
            let want = conv_ref(&x, &deq, bias.then_some(&b), s, p, d, group);
            close(&format!("qconv {prec} {:?}", (n, ch, h, w, oc, k)), &got, &want, 1e-4, 1e-5);
        }
    }
}

/// Naive pooling reference: (max, or average with count_include_pad), ceil mode.
fn pool_ref(x: &Tensor, k: usize, s: usize, p: usize, max: bool, cip: bool, ceil: bool) -> Tensor {
    let xs = x.shape();
    let (nc, h, w) = (xs[0] * xs[1], xs[2], xs[3]);
    let size = |len: usize| {
        let num = len + 2 * p - k;
        let mut o = if ceil { num.div_ceil(s) + 1 } else { num / s + 1 };
        if ceil && (o - 1) * s >= len + p {
            o -= 1;
        }
        o
    };
    let (oh, ow) = (size(h), size(w));
    let xv = x.as_slice::<f32>().unwrap();
    let mut out = Vec::new();
    for pl in 0..nc {
        for y in 0..oh {
            for xx in 0..ow {
                let (mut best, mut sum, mut cnt, mut padded) = (f32::MIN, 0.0, 0, 0);
                for ky in 0..k {
                    for kx in 0..k {
                        let (py, px) = (y * s + ky, xx * s + kx);
                        if py < h + 2 * p && px < w + 2 * p {
                            padded += 1;
                        }
                        let (iy, ix) = (py as isize - p as isize, px as isize - p as isize);
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = xv[(pl * h + iy as usize) * w + ix as usize];
                        best = best.max(v);
                        sum += v;
                        cnt += 1;
                    }
                }
                out.push(if max { best } else { sum / (if cip { padded } else { cnt }) as f32 });
            }
        }
    }
    Tensor::from_vec(vec![xs[0], xs[1], oh, ow], out).unwrap()
}

#[test]
fn pooling_and_softmax_match_reference() {
    let Some(c) = ctx("pooling_and_softmax_match_reference") else { return };
    let mut r = rng(5);
    // (shape, k, s, p, max, count_include_pad, ceil)
    let cases = [
        ([2, 3, 8, 8], 2, 2, 0, true, false, false),
        ([1, 2, 7, 9], 3, 2, 1, false, false, false),
        ([1, 2, 7, 9], 3, 2, 1, false, true, false),
        ([1, 3, 7, 8], 3, 2, 0, true, false, true),
        ([2, 1, 5, 5], 2, 1, 0, false, false, false),
    ];
    for (sh, k, s, p, max, cip, ceil) in cases {
        let x = random(&mut r, &sh, -1.0, 1.0);
        let w = window(k, s, p, 1, ceil, true);
        let op = if max {
            Op::MaxPool { window: w, storage_order: 0 }
        } else {
            Op::AveragePool { window: w, count_include_pad: cip }
        };
        let (g, ins) = one_node(op, vec![In::Run(x.clone())], 4);
        let got = run_gpu(&c, g, &ins);
        close(
            &format!("pool {sh:?} k{k} s{s} p{p} max={max} cip={cip} ceil={ceil}"),
            &got,
            &pool_ref(&x, k, s, p, max, cip, ceil),
            1e-4,
            1e-5,
        );
    }
    for max in [false, true] {
        let x = random(&mut r, &[2, 5, 3, 7], -1.0, 1.0);
        let op = if max { Op::GlobalMaxPool } else { Op::GlobalAveragePool };
        let (g, ins) = one_node(op, vec![In::Run(x.clone())], 4);
        let got = run_gpu(&c, g, &ins);
        let xv = x.as_slice::<f32>().unwrap();
        let want: Vec<f32> = xv
            .chunks(21)
            .map(|p| if max { p.iter().copied().fold(f32::MIN, f32::max) } else { p.iter().sum::<f32>() / 21.0 })
            .collect();
        close("global pool", &got, &Tensor::from_vec(vec![2, 5, 1, 1], want).unwrap(), 1e-4, 1e-5);
    }
    for (sh, axis, log) in [(vec![3usize, 17], -1i64, false), (vec![2, 5, 3], 1, false), (vec![2, 5, 3], 1, true)] {
        let x = random(&mut r, &sh, -4.0, 4.0);
        let op = if log { Op::LogSoftmax { axis, legacy: false } } else { Op::Softmax { axis, legacy: false } };
        let (g, ins) = one_node(op, vec![In::Run(x.clone())], sh.len());
        let got = run_gpu(&c, g, &ins);
        // Reference over [outer, len, inner].
        let a = if axis < 0 { sh.len() - 1 } else { axis as usize };
        let (outer, len, inner): (usize, usize, usize) =
            (sh[..a].iter().product(), sh[a], sh[a + 1..].iter().product());
        let xv = x.as_slice::<f32>().unwrap();
        let mut want = vec![0f32; xv.len()];
        for o in 0..outer {
            for i in 0..inner {
                let idx = |j: usize| (o * len + j) * inner + i;
                let m = (0..len).map(|j| xv[idx(j)]).fold(f32::MIN, f32::max);
                let s: f32 = (0..len).map(|j| (xv[idx(j)] - m).exp()).sum();
                for j in 0..len {
                    let v = xv[idx(j)] - m;
                    want[idx(j)] = if log { v - s.ln() } else { v.exp() / s };
                }
            }
        }
        close(&format!("softmax {sh:?} log={log}"), &got, &Tensor::from_vec(sh.clone(), want).unwrap(), 1e-4, 1e-5);
    }
}

/// Loads a fixture; a model the importer cannot read yet (an operator without a parser) is a
/// printed skip for that model, any other error a failure.
fn load_fixture(test: &str, name: &str) -> Option<Model> {
    match Model::load(models().join(format!("{name}.onnx"))) {
        Ok(m) => Some(m),
        Err(e @ alembic::Error::UnsupportedOp { .. }) => {
            println!("SKIPPED {test} for {name}: the importer cannot read it ({e})");
            None
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

fn fallback_count(model: &Model, p: Precision) -> usize {
    model.support_at(BackendKind::Wgpu, p).iter().filter(|(_, _, s)| *s != Support::Native).count()
}

#[test]
fn fixtures_f32_match_cpu_with_no_fallback() {
    let Some(_) = ctx("fixtures_f32_match_cpu_with_no_fallback") else { return };
    let x = heldout();
    for name in ["student", "teacher"] {
        let Some(model) = load_fixture("fixtures_f32_match_cpu_with_no_fallback", name) else { continue };
        assert_eq!(fallback_count(&model, Precision::F32), 0, "{name}: CPU-fallback nodes on wgpu");
        let t0 = std::time::Instant::now();
        let gpu = logits(&model, SessionOptions::default().backend(BackendKind::Wgpu), &x).unwrap();
        println!("{name}: wgpu f32 on {} samples in {:.2?}", x.shape()[0], t0.elapsed());
        match logits(&model, SessionOptions::default(), &x) {
            Ok(cpu) => close(&format!("{name} wgpu vs cpu"), &gpu, &cpu, 1e-4, 1e-4),
            Err(e) => println!("{name}: CPU reference unavailable ({e}); checking the stored numpy logits"),
        }
        // The generator's numpy logits for heldout_x[:32].
        let want = read_npy(&models().join(format!("expected/{name}_heldout_logits.npy"))).unwrap();
        let got32 = Tensor::from_vec(vec![32, 10], gpu.as_slice::<f32>().unwrap()[..320].to_vec()).unwrap();
        close(&format!("{name} wgpu vs numpy"), &got32, &want, 1e-4, 1e-4);
    }
}

#[test]
fn fixtures_quantized_agreement_on_wgpu() {
    let Some(_) = ctx("fixtures_quantized_agreement_on_wgpu") else { return };
    let x = heldout();
    for name in ["student", "teacher"] {
        let Some(model) = load_fixture("fixtures_quantized_agreement_on_wgpu", name) else { continue };
        let reference = argmax_rows(&logits(&model, SessionOptions::default().backend(BackendKind::Wgpu), &x).unwrap());
        for p in [Precision::F16, Precision::Int8, Precision::Int4] {
            assert_eq!(fallback_count(&model, p), 0, "{name} {p}: CPU-fallback nodes on wgpu");
            let opts = SessionOptions::default().backend(BackendKind::Wgpu).precision(p);
            let got = argmax_rows(&logits(&model, opts, &x).unwrap());
            let agree = agreement(&reference, &got);
            println!(
                "wgpu {name} {p}: top-1 agreement with f32 {:.2}% on {} held-out samples",
                agree * 100.0,
                got.len()
            );
            assert!(agree >= min_agreement(p), "wgpu {name} {p}: agreement {agree} < {}", min_agreement(p));
        }
    }
}

#[test]
fn gl_backend_runs_the_student() {
    quiet_mesa();
    let c = match Ctx::new(wgpu_gl()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            println!("SKIPPED gl_backend_runs_the_student: no wgpu adapter on the GL backend ({e})");
            return;
        }
    };
    println!("GL adapter: {}", c.report);
    let model = Model::load(models().join("student.onnx")).unwrap();
    let x = heldout();
    let b = WgpuBackend::with_context(c);
    let want = read_npy(&models().join("expected/student_heldout_logits.npy")).unwrap();
    let x32 = Tensor::from_vec(vec![32, 1, 8, 8], x.as_slice::<f32>().unwrap()[..32 * 64].to_vec()).unwrap();
    for p in [Precision::F32, Precision::Int8] {
        let g = Arc::new(alembic::quant::quantize_graph(model.graph(), p));
        let plan = b.plan(g).unwrap();
        let got = run_on(&plan, std::slice::from_ref(&x32));
        if p == Precision::F32 {
            close("student on GL", &got, &want, 1e-4, 1e-4);
        } else {
            assert!(agreement(&argmax_rows(&got), &argmax_rows(&want)) >= 0.9, "int8 on GL disagrees");
        }
    }
}

fn wgpu_gl() -> alembic::backend::wgpu::device::Backends {
    alembic::backend::wgpu::device::Backends::GL
}

#[test]
fn missing_adapter_is_an_error_not_a_panic() {
    quiet_mesa();
    // No Metal on Linux (and no DX12 elsewhere than Windows): a clear Unavailable error.
    #[cfg(target_os = "linux")]
    {
        let e = Ctx::new(alembic::backend::wgpu::device::Backends::METAL).err().expect("no Metal adapter on Linux");
        assert!(matches!(e, alembic::Error::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("no wgpu adapter"), "{e}");
    }
    assert!(alembic::backend::wgpu::device::parse_backends("cuda").is_err());
}

#[test]
fn cpu_fallback_mid_graph_matches_cpu() {
    let Some(c) = ctx("cpu_fallback_mid_graph_matches_cpu") else { return };
    // x -> Relu (gpu) -> Sum(a, a) (cpu fallback: no variadic Sum kernel) -> Add const (gpu) -> Softmax (gpu)
    let mut r = rng(6);
    let x = random(&mut r, &[3, 5], -1.0, 1.0);
    let k = random(&mut r, &[5], -1.0, 1.0);
    let mk = || {
        let mut g = Graph { opset: 17, ..Default::default() };
        let val = |g: &mut Graph, name: &str, shape: &[usize]| {
            let mut v = Value::new(name);
            v.dtype = Some(DType::F32);
            v.shape = Some(Shape::known(shape));
            g.add_value(v)
        };
        let xi = val(&mut g, "x", &[3, 5]);
        let a = val(&mut g, "a", &[3, 5]);
        let t = val(&mut g, "t", &[3, 5]);
        let s = val(&mut g, "s", &[3, 5]);
        let y = val(&mut g, "y", &[3, 5]);
        let kc = g.add_constant("k", k.clone());
        g.inputs.push(xi);
        let node = |name: &str, op: Op, i: Vec<Option<usize>>, o: usize| Node {
            name: name.into(),
            op,
            inputs: i,
            outputs: vec![o],
        };
        g.nodes.push(node("relu", Op::Unary(Unary::Relu), vec![Some(xi)], a));
        g.nodes.push(node("sum", Op::Sum, vec![Some(a), Some(a)], t));
        g.nodes.push(node("add", Op::Binary(Binary::Add), vec![Some(t), Some(kc)], s));
        g.nodes.push(node("sm", Op::Softmax { axis: -1, legacy: false }, vec![Some(s)], y));
        g.outputs.push(y);
        g
    };
    let g = mk();
    let b = WgpuBackend::with_context(c.clone());
    let support: Vec<Support> = g.nodes.iter().map(|n| b.supports(&g, n)).collect();
    assert_eq!(support[1], Support::Fallback("cpu".into()));
    assert_eq!(support.iter().filter(|s| **s == Support::Native).count(), 3);
    let plan = b.plan(Arc::new(g)).unwrap();
    assert_eq!(plan.fallback_nodes(), vec!["sum".to_string()]);
    let got = run_on(&plan, std::slice::from_ref(&x));
    let again = run_on(&plan, std::slice::from_ref(&x));
    assert_eq!(got, again);
    // Reference: the same math on the host (the CPU Softmax kernel may not exist yet).
    let xv = x.as_slice::<f32>().unwrap();
    let kv = k.as_slice::<f32>().unwrap();
    let mut want = vec![0f32; 15];
    for i in 0..3 {
        let row: Vec<f32> = (0..5).map(|j| 2.0 * xv[i * 5 + j].max(0.0) + kv[j]).collect();
        let m = row.iter().copied().fold(f32::MIN, f32::max);
        let s: f32 = row.iter().map(|v| (v - m).exp()).sum();
        for j in 0..5 {
            want[i * 5 + j] = (row[j] - m).exp() / s;
        }
    }
    close("fallback graph", &got, &Tensor::from_vec(vec![3, 5], want).unwrap(), 1e-4, 1e-6);
}
