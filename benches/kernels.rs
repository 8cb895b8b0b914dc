//! Criterion micro-benchmarks: the CPU GEMM at a few shapes, the CPU Conv at the teacher's layer
//! shapes, quantized GEMM/GEMV (int8 weight-only, w8a8, w8a8 tiled) and w8a8 Conv against f32, depthwise and Conv+HardSwish
//! at MobileNetV3-small's shapes, the bench's latency statistics, and the fixtures end to end at
//! batch 1 in f32, int8 and w8a8. Run with `cargo bench --bench kernels` (release profile); for
//! model-level numbers across backends use `alembic bench`.

use alembic::backend::cpu::kernels::linalg::sgemm;
use alembic::backend::cpu::kernels::{i8tile, qgemm_i8};
use alembic::ir::{AutoPad, Op, Unary, Window};
use alembic::quant::Precision;
use alembic::{Model, SessionOptions, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("sgemm");
    // Square sizes plus the shapes of small-model layers (batch 1 and 8 against a 64x128 weight).
    for &(m, k, n) in &[(64, 64, 64), (128, 128, 128), (256, 256, 256), (1, 64, 128), (8, 64, 128), (1, 512, 512)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(format!("{m}x{k}x{n}")), &(m, k, n), |bch, &(m, k, n)| {
            bch.iter(|| {
                sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    black_box(&a),
                    (k as isize, 1),
                    black_box(&b),
                    (n as isize, 1),
                    0.0,
                    &mut out,
                    n as isize,
                );
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// The GEMM on weights packed at plan time (`kernels::packed`) against matrixmultiply on the
/// same operands. `conv`: `W[M,K] x Patches[K,N]` at the teacher's conv shapes and two
/// MobileNet 1x1 convs (the patches are packed per call, as the engine does). `dense`:
/// `A[M,K] x W^T` (ONNX Gemm with transB) at batch 1 and 8, the teacher's and MobileNet's
/// classifiers and the student's layers.
fn packed_gemm(c: &mut Criterion) {
    use alembic::backend::cpu::kernels::microkernel::Isa;
    use alembic::backend::cpu::kernels::packed::{gemm_cols, gemm_rows, rows_scratch_len, PackedCols, PackedRows};
    let isa = Isa::detect();
    let mut g = c.benchmark_group("packed_gemm");
    for &(m, k, n) in &[(16, 9, 64), (32, 144, 64), (32, 288, 16), (72, 16, 3136), (576, 96, 49)] {
        let (w, b) = (values(m * k, 0.05), values(k * n, 0.1));
        let packed = PackedRows::pack(&w, 1, m, k);
        let mut y = vec![0f32; m * n];
        let mut scratch = vec![0f32; rows_scratch_len(k, n)];
        let id = format!("conv_{m}x{k}x{n}");
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(BenchmarkId::new("packed", &id), |bch| {
            bch.iter(|| {
                gemm_rows(isa, &packed, 0, black_box(&b), n, &mut y, &mut scratch, &|_, _, _: &mut [f32]| {});
                black_box(&y);
            })
        });
        g.bench_function(BenchmarkId::new("matrixmultiply", &id), |bch| {
            bch.iter(|| {
                sgemm(m, k, n, 1.0, &w, (k as isize, 1), black_box(&b), (n as isize, 1), 0.0, &mut y, n as isize);
                black_box(&y);
            })
        });
    }
    for &(m, k, n) in &[(1, 32, 10), (1, 64, 128), (8, 64, 128), (1, 576, 1024), (1, 1024, 1000), (8, 1024, 1000)] {
        let (a, w) = (values(m * k, 0.1), values(n * k, 0.05));
        let packed = PackedCols::pack(&w, k, n, (1, k));
        let mut y = vec![0f32; m * n];
        let id = format!("dense_{m}x{k}x{n}");
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(BenchmarkId::new("packed", &id), |bch| {
            bch.iter(|| {
                gemm_cols(isa, black_box(&a), (k, 1), m, &packed, &mut y, 1.0, false);
                black_box(&y);
            })
        });
        g.bench_function(BenchmarkId::new("matrixmultiply", &id), |bch| {
            bch.iter(|| {
                sgemm(m, k, n, 1.0, black_box(&a), (k as isize, 1), &w, (1, k as isize), 0.0, &mut y, n as isize);
                black_box(&y);
            })
        });
    }
    g.finish();
}

/// The teacher fixture's 3x3 pad-1 convs (conv1 1->16 and conv2 16->32 on 8x8, conv3 32->32 on
/// 4x4) at batch 1 and 8, through the CPU kernel dispatch as the engine calls it.
fn conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv3x3");
    let window = Window {
        kernel: vec![],
        strides: vec![1, 1],
        pads: vec![1; 4],
        dilations: vec![],
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    };
    let op = Op::Conv { window, group: 1 };
    for &(n, ci, co, hw) in
        &[(1, 1, 16, 8), (1, 16, 32, 8), (1, 32, 32, 4), (8, 1, 16, 8), (8, 16, 32, 8), (8, 32, 32, 4)]
    {
        let x = Tensor::from_vec(
            vec![n, ci, hw, hw],
            (0..n * ci * hw * hw).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<f32>>(),
        )
        .unwrap();
        let w =
            Tensor::from_vec(vec![co, ci, 3, 3], (0..co * ci * 9).map(|i| (i % 5) as f32 * 0.1).collect::<Vec<f32>>())
                .unwrap();
        let b = Tensor::from_vec(vec![co], vec![0.5f32; co]).unwrap();
        let mut out = vec![Tensor::empty(alembic::DType::F32)];
        let mut scratch = Vec::new();
        g.throughput(Throughput::Elements((2 * n * co * ci * 9 * hw * hw) as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("n{n}_c{ci}_m{co}_{hw}x{hw}")), |bch| {
            bch.iter(|| {
                alembic::backend::cpu::kernels::eval(&op, &[Some(&x), Some(&w), Some(&b)], &mut out, &mut scratch)
                    .unwrap();
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// Quantized GEMM/GEMV (`Op::QGemm` on the CPU) against f32 sgemm at the same shapes: int8 /
/// int4 weight-only (qdense: the packed weight read in place) and w8a8 (int8 activations,
/// integer dot products). 1x1024x1000 is a MobileNet classifier (a memory-bound GEMV). Throughput is 2mnk FLOP per iteration (criterion's elem/s = FLOP/s).
fn qgemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("qgemm");
    for &(m, k, n) in &[(1, 512, 512), (1, 1024, 1024), (1, 1024, 1000), (8, 64, 128), (64, 256, 256), (256, 256, 256)]
    {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let at = Tensor::from_vec(vec![m, k], a.clone()).unwrap();
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let mut out = vec![0.0f32; m * n];
        g.bench_function(BenchmarkId::new("f32", format!("{m}x{k}x{n}")), |bch| {
            bch.iter(|| {
                let (a, w) = (black_box(&a), black_box(&w));
                sgemm(m, k, n, 1.0, a, (k as isize, 1), w, (1, k as isize), 0.0, &mut out, n as isize);
                black_box(&out);
            })
        });
        for p in [Precision::Int8, Precision::Int4, Precision::W8a8] {
            let q = alembic::quant::QWeight::quantize(&w, n, k, p).unwrap();
            let mut o = Tensor::empty(alembic::DType::F32);
            let mut scratch = Vec::new();
            g.bench_function(BenchmarkId::new(p.to_string(), format!("{m}x{k}x{n}")), |bch| {
                bch.iter(|| {
                    alembic::backend::cpu::kernels::quant::qgemm(
                        &q,
                        black_box(&at),
                        None,
                        1.0,
                        0.0,
                        &mut o,
                        &mut scratch,
                    )
                    .unwrap();
                    black_box(&o);
                })
            });
        }
        // w8a8 on the register-tiled int8 kernel, weight packed once (as the CPU plan does).
        let q = alembic::quant::QWeight::quantize(&w, n, k, Precision::W8a8).unwrap();
        let p = i8tile::PackedCols::pack(qgemm_i8::parts(&q).unwrap().0, n, k);
        let (mut o, mut scratch) = (Tensor::empty(alembic::DType::F32), Vec::new());
        g.bench_function(BenchmarkId::new("w8a8-tiled", format!("{m}x{k}x{n}")), |bch| {
            bch.iter(|| {
                qgemm_i8::qgemm_packed(&q, &p, black_box(&at), None, 1.0, 0.0, &mut o, &mut scratch).unwrap();
                black_box(&o);
            })
        });
    }
    g.finish();
}

/// w8a8 QConv at MobileNetV3-style shapes (1x1 expand/project and a 3x3 stem, batch 1):
/// im2col + per-output dot products (`quant::qconv`) against the register-tiled kernel on a
/// weight packed once, and the f32 Conv for reference. Throughput is 2 * MACs.
fn qconv(c: &mut Criterion) {
    let mut g = c.benchmark_group("qconv");
    // The last two: the fixture teacher's conv2 and conv3 (patches read from the padded image).
    let shapes = [
        (16, 64, 56, 1, 1),
        (72, 24, 28, 1, 1),
        (40, 240, 28, 1, 1),
        (576, 96, 7, 1, 1),
        (3, 16, 112, 3, 2),
        (24, 48, 24, 3, 1),
        (16, 32, 8, 3, 1),
        (32, 32, 4, 3, 1),
    ];
    for &(ci, co, hw, k, s) in &shapes {
        let x = filled(vec![1, ci, hw, hw], 0.05);
        let kdim = ci * k * k;
        let wf = values(co * kdim, 0.01);
        let window = square_window(k, s);
        let q = alembic::quant::QWeight::quantize(&wf, co, kdim, Precision::W8a8).unwrap();
        let p = i8tile::PackedRows::pack(qgemm_i8::parts(&q).unwrap().0, 1, co, kdim);
        let op = Op::QConv { window: window.clone(), group: 1, w: std::sync::Arc::new(q), wshape: vec![co, ci, k, k] };
        let wt = filled(vec![co, ci, k, k], 0.01);
        let f32_op = Op::Conv { window, group: 1 };
        let b = filled(vec![co], 0.1);
        let ohw = (hw + 2 * (k / 2) - k) / s + 1;
        g.throughput(Throughput::Elements((2 * co * kdim * ohw * ohw) as u64));
        let id = format!("c{ci}_m{co}_{hw}x{hw}_k{k}s{s}");
        let (mut out, mut scratch) = (vec![Tensor::empty(alembic::DType::F32)], Vec::new());
        g.bench_function(BenchmarkId::new("f32", &id), |bch| {
            bch.iter(|| {
                alembic::backend::cpu::kernels::eval(&f32_op, &[Some(&x), Some(&wt), Some(&b)], &mut out, &mut scratch)
                    .unwrap();
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("w8a8", &id), |bch| {
            bch.iter(|| {
                alembic::backend::cpu::kernels::eval(&op, &[Some(&x), Some(&b)], &mut out, &mut scratch).unwrap();
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("w8a8-tiled", &id), |bch| {
            bch.iter(|| {
                qgemm_i8::qconv_packed(&op, None, &p, &[Some(&x), Some(&b)], &mut out, &mut scratch).unwrap();
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// Summary statistics of 10 000 samples (what `alembic bench` computes per combination).
fn stats(c: &mut Criterion) {
    let x: Vec<f64> = (0..10_000u64).map(|i| ((i * 7919) % 10_007) as f64 * 1e-3).collect();
    c.bench_function("bench_summary_10k", |b| b.iter(|| black_box(alembic::bench::Summary::of(black_box(&x)))));
}

fn models(c: &mut Criterion) {
    let mut g = c.benchmark_group("model_batch1");
    for (name, p) in [
        ("student", Precision::F32),
        ("teacher", Precision::F32),
        ("student", Precision::Int8),
        ("teacher", Precision::Int8),
        ("student", Precision::W8a8),
        ("teacher", Precision::W8a8),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("models/{name}.onnx"));
        let name = format!("{name}_{p}");
        // A model whose ops the CPU engine lacks in this build is skipped, not a failure.
        let Ok(session) = Model::load(&path).and_then(|m| m.session(SessionOptions::default().precision(p))) else {
            eprintln!("skipping {name}: not loadable on the cpu backend");
            continue;
        };
        let x = Tensor::from_vec(vec![1, 1, 8, 8], (0..64).map(|i| i as f32 / 64.0).collect::<Vec<f32>>()).unwrap();
        if session.run_refs(&[("input", &x)]).is_err() {
            eprintln!("skipping {name}: does not run on the cpu backend");
            continue;
        }
        g.bench_function(&name, |b| b.iter(|| black_box(session.run_refs(&[("input", &x)]).unwrap())));
    }
    g.finish();
}

fn values(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| ((i % 13) as f32 - 6.0) * scale).collect()
}

fn filled(shape: Vec<usize>, scale: f32) -> Tensor {
    let n = shape.iter().product::<usize>();
    Tensor::from_vec(shape, values(n, scale)).unwrap()
}

fn square_window(k: usize, stride: usize) -> Window {
    Window::square(stride, k / 2, 1)
}

/// Depthwise convs at MobileNetV3-small's layer shapes (224x224 input, batch 1) with bias and
/// the fused HardSwish: the plane kernel of `direct.rs` for the 56-wide outputs, the
/// 8-channel kernel of `direct_c8.rs` for the rest (AVX2+FMA).
fn depthwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("depthwise");
    let shapes = [(16, 112, 3, 2), (72, 56, 3, 2), (88, 28, 3, 1), (96, 28, 5, 2), (240, 14, 5, 1), (576, 7, 5, 1)];
    for &(ch, hw, k, stride) in &shapes {
        let op = Op::Conv { window: square_window(k, stride), group: ch };
        let (x, w, b) = (filled(vec![1, ch, hw, hw], 0.1), filled(vec![ch, 1, k, k], 0.05), filled(vec![ch], 0.01));
        let mut out = vec![Tensor::empty(alembic::DType::F32)];
        let mut scratch = Vec::new();
        let ohw = hw.div_ceil(stride);
        g.throughput(Throughput::Elements((2 * ch * k * k * ohw * ohw) as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("c{ch}_{hw}x{hw}_k{k}_s{stride}")), |bch| {
            bch.iter(|| {
                alembic::backend::cpu::kernels::eval_fused(
                    &op,
                    Some(&Unary::HardSwish),
                    &[Some(&x), Some(&w), Some(&b)],
                    &mut out,
                    &mut scratch,
                )
                .unwrap();
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// Convs with a short reduction (input channels x kernel <= 32) on the direct kernel of
/// `direct.rs` instead of im2col + GEMM: MobileNetV3's RGB stem (3x3 stride 2 on 224x224) and
/// the fixture teacher's 1-channel first conv, bias and HardSwish fused.
fn short_conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("short_conv");
    for &(n, ci, co, hw, stride) in &[(1, 3, 16, 224, 2), (1, 1, 16, 8, 1), (8, 1, 16, 8, 1)] {
        let op = Op::Conv { window: square_window(3, stride), group: 1 };
        let x = filled(vec![n, ci, hw, hw], 0.1);
        let (w, b) = (filled(vec![co, ci, 3, 3], 0.05), filled(vec![co], 0.01));
        let ins = [Some(&x), Some(&w), Some(&b)];
        let mut out = vec![Tensor::empty(alembic::DType::F32)];
        let mut scratch = Vec::new();
        let ohw = hw.div_ceil(stride);
        g.throughput(Throughput::Elements((2 * n * ci * co * 9 * ohw * ohw) as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("n{n}_c{ci}_m{co}_{hw}x{hw}_s{stride}")), |bch| {
            bch.iter(|| {
                alembic::backend::cpu::kernels::eval_fused(&op, Some(&Unary::HardSwish), &ins, &mut out, &mut scratch)
                    .unwrap();
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// Conv + bias + HardSwish as one fused kernel call against the same conv followed by the
/// standalone activation (what the CPU plan ran before fusing): 1x1 and 3x3 convs at
/// MobileNet-like shapes, batch 1.
fn fused_conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv_hardswish");
    for &(ci, co, hw, k) in &[(16, 72, 56, 1), (96, 576, 7, 1), (3, 16, 112, 3), (16, 32, 8, 3)] {
        let op = Op::Conv { window: square_window(k, 1), group: 1 };
        let x = filled(vec![1, ci, hw, hw], 0.1);
        let (w, b) = (filled(vec![co, ci, k, k], 0.05), filled(vec![co], 0.01));
        let ins = [Some(&x), Some(&w), Some(&b)];
        let mut out = vec![Tensor::empty(alembic::DType::F32)];
        let mut act = Tensor::empty(alembic::DType::F32);
        let mut scratch = Vec::new();
        let id = format!("c{ci}_m{co}_{hw}x{hw}_k{k}");
        g.throughput(Throughput::Elements((2 * ci * co * k * k * hw * hw) as u64));
        g.bench_function(BenchmarkId::new("fused", &id), |bch| {
            bch.iter(|| {
                alembic::backend::cpu::kernels::eval_fused(&op, Some(&Unary::HardSwish), &ins, &mut out, &mut scratch)
                    .unwrap();
                black_box(&out);
            })
        });
        let hs = Op::Unary(Unary::HardSwish);
        g.bench_function(BenchmarkId::new("separate", &id), |bch| {
            bch.iter(|| {
                alembic::backend::cpu::kernels::eval(&op, &ins, &mut out, &mut scratch).unwrap();
                alembic::backend::cpu::kernels::eval(
                    &hs,
                    &[Some(&out[0])],
                    std::slice::from_mut(&mut act),
                    &mut scratch,
                )
                .unwrap();
                black_box(&act);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gemm, packed_gemm, conv, qgemm, qconv, depthwise, short_conv, fused_conv, stats, models);
criterion_main!(benches);
