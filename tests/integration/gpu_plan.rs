//! Plan-level properties of the wgpu engine: the fixture models run with zero CPU-fallback
//! nodes in every precision; a steady-state run creates no buffer and submits once; the on-disk
//! pipeline cache is written, found by a second context and survives a corrupt file.

use super::gpu::{close, ctx, quiet_mesa, run_on};
use super::quant::models;
use alembic::backend::wgpu::{device::Backends, Ctx, CtxOptions, WgpuBackend};
use alembic::quant::{quantize_graph, Precision};
use alembic::{Model, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

const PRECISIONS: [Precision; 4] = [Precision::F32, Precision::F16, Precision::Int8, Precision::Int4];

fn input(n: usize) -> Tensor {
    let v: Vec<f32> = (0..n * 64).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    Tensor::from_vec(vec![n, 1, 8, 8], v).unwrap()
}

#[test]
fn fixture_plans_have_no_cpu_fallback_in_any_precision() {
    let Some(c) = ctx("fixture_plans_have_no_cpu_fallback_in_any_precision") else { return };
    let b = WgpuBackend::with_context(c);
    for name in ["teacher", "student"] {
        let model = Model::load(models().join(format!("{name}.onnx"))).unwrap();
        for p in PRECISIONS {
            let plan = b.plan(Arc::new(quantize_graph(model.graph(), p))).unwrap();
            assert_eq!(plan.fallback_nodes(), Vec::<String>::new(), "{name} {p}: nodes on the CPU");
            // And it runs: logits of the right shape.
            let y = run_on(&plan, &[input(3)]);
            assert_eq!(y.shape(), [3, 10], "{name} {p}");
        }
    }
}

#[test]
fn steady_state_runs_allocate_nothing_and_submit_once() {
    quiet_mesa();
    // A context of its own, so other tests' plans do not move its counters.
    let c = match Ctx::new(Backends::all()) {
        Ok(c) => Arc::new(c),
        Err(e) => return println!("SKIPPED steady_state_runs_allocate_nothing_and_submit_once: no wgpu adapter ({e})"),
    };
    let model = Model::load(models().join("teacher.onnx")).unwrap();
    let plan = WgpuBackend::with_context(c.clone()).plan(Arc::new(model.graph().clone())).unwrap();
    let x = input(2);
    let first = run_on(&plan, std::slice::from_ref(&x));
    let (buffers, submits) = c.counts();
    assert!(buffers > 0 && submits == 1, "warm-up: {buffers} buffers, {submits} submits");
    for k in 1..=3u64 {
        let again = run_on(&plan, std::slice::from_ref(&x));
        assert_eq!(again, first);
        assert_eq!(c.counts(), (buffers, submits + k), "run {k} after warm-up");
    }
    // A new batch size binds again (new buffers), then is steady again.
    run_on(&plan, &[input(5)]);
    let (b2, s2) = c.counts();
    assert!(b2 > buffers);
    run_on(&plan, &[input(5)]);
    assert_eq!(c.counts(), (b2, s2 + 1));
}

fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("alembic-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn pipeline_cache_is_written_reused_and_survives_corruption() {
    quiet_mesa();
    let dir = fresh_dir("pipeline-cache");
    let opts = CtxOptions { cache_dir: Some(dir.clone()), ..Default::default() };
    let open = || Ctx::with_options(Backends::VULKAN, opts.clone()).map(Arc::new);
    let c1 = match open() {
        Ok(c) => c,
        Err(e) => {
            return println!(
                "SKIPPED pipeline_cache_is_written_reused_and_survives_corruption: no Vulkan adapter ({e})"
            )
        }
    };
    let Some((path, 0)) = c1.report.pipeline_cache.clone() else {
        return println!(
            "SKIPPED pipeline_cache_is_written_reused_and_survives_corruption: {} has no PIPELINE_CACHE ({:?})",
            c1.report, c1.report.pipeline_cache
        );
    };
    assert!(path.starts_with(&dir), "{path:?} outside {dir:?}");
    let model = Model::load(models().join("teacher.onnx")).unwrap();
    let g = Arc::new(model.graph().clone());
    let x = input(2);
    let run =
        |c: &Arc<Ctx>| run_on(&WgpuBackend::with_context(c.clone()).plan(g.clone()).unwrap(), std::slice::from_ref(&x));
    let want = run(&c1);
    let written = std::fs::read(&path).expect("cache file written after the first bind");
    assert!(!written.is_empty());
    // A second context finds the file and creates its pipelines with it.
    let c2 = open().unwrap();
    assert_eq!(c2.report.pipeline_cache, Some((path.clone(), written.len())));
    close("teacher with a loaded cache", &run(&c2), &want, 0.0, 0.0);
    println!(
        "pipeline cache {} bytes; pipelines created in {:.2?} cold, {:.2?} with the cache",
        written.len(),
        c1.compile_time(),
        c2.compile_time()
    );
    // Garbage in the file: ignored (fallback), results unchanged, the file rewritten valid.
    std::fs::write(&path, b"not a pipeline cache, just garbage bytes").unwrap();
    let c3 = open().unwrap();
    close("teacher with a corrupt cache", &run(&c3), &want, 0.0, 0.0);
    let rewritten = std::fs::read(&path).unwrap();
    assert!(rewritten.len() > 64 && !rewritten.starts_with(b"not a pipeline"), "cache not rewritten");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gemms_past_the_binding_limit_are_split() {
    quiet_mesa();
    for api in [Backends::all(), Backends::GL] {
        // A 4 KiB binding limit: every operand below is several bindings long.
        let opts = CtxOptions { max_storage_binding: Some(4096), ..Default::default() };
        match Ctx::with_options(api, opts) {
            Ok(c) => split_gemms_on(Arc::new(c)),
            Err(e) => println!("SKIPPED gemms_past_the_binding_limit_are_split on {api:?}: no wgpu adapter ({e})"),
        }
    }
}

/// `g` (one node, one output) followed by a Relu.
fn with_relu((mut g, x): (alembic::ir::Graph, Vec<Tensor>)) -> (alembic::ir::Graph, Vec<Tensor>) {
    use alembic::ir::{Node, Op, Unary, Value};
    let mid = g.outputs.pop().unwrap();
    let out = g.add_value(Value::new("relu_out"));
    g.nodes.push(Node { name: "relu".into(), op: Op::Unary(Unary::Relu), inputs: vec![Some(mid)], outputs: vec![out] });
    g.outputs.push(out);
    (g, x)
}

fn split_gemms_on(c: Arc<Ctx>) {
    use super::gpu::{one_node, random, rng, run_cpu, run_gpu, In};
    use alembic::ir::{Op, Unary};
    use alembic::quant::QWeight;
    println!("split GEMMs on {}", c.report);
    let mut r = rng(21);
    for &(m, k, n) in &[(37, 70, 300), (1, 1000, 33), (5, 9, 900)] {
        let a = random(&mut r, &[m, k], -1.0, 1.0);
        let w = random(&mut r, &[n, k], -1.0, 1.0);
        let bias = random(&mut r, &[n], -1.0, 1.0);
        let gemm = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true };
        let ins = || vec![In::Run(a.clone()), In::Const(w.clone()), In::Const(bias.clone())];
        let (g, x) = one_node(gemm.clone(), ins(), 2);
        let want = run_cpu(g, &x);
        let (g, x) = one_node(gemm, ins(), 2);
        close(&format!("f32 gemm {m}x{k}x{n} split"), &run_gpu(&c, g, &x), &want, 1e-4, 1e-5);
        for p in [Precision::F16, Precision::Int8, Precision::Int4, Precision::W8a8] {
            let q = Arc::new(QWeight::quantize(w.as_slice::<f32>().unwrap(), n, k, p).unwrap());
            let op = Op::QGemm { w: q, alpha: 1.0, beta: 1.0 };
            let ins = || vec![In::Run(a.clone()), In::Const(bias.clone())];
            let (g, x) = one_node(op.clone(), ins(), 2);
            let want = run_cpu(g, &x);
            let (g, x) = one_node(op, ins(), 2);
            let what = format!("{p} gemm {m}x{k}x{n} split");
            if p == Precision::W8a8 {
                super::quant_gpu::compare(&what, &run_gpu(&c, g, &x), &want);
            } else {
                close(&what, &run_gpu(&c, g, &x), &want, 1e-4, 1e-5);
            }
        }
    }
    // f32 [K, N] weights (Gemm without transB, MatMul): split along K, partial sums added in Y;
    // along N too when one row of B is longer than a binding (n = 1500); with a fused Relu
    // (applied once, after the last K block) and a bias (added once, with the first).
    for &(m, k, n) in &[(5, 70, 300), (1, 1000, 33), (2, 9, 700), (2, 5, 1500)] {
        let t0 = std::time::Instant::now();
        let a = random(&mut r, &[m, k], -1.0, 1.0);
        let w = random(&mut r, &[k, n], -1.0, 1.0);
        // n = 1500: the bias itself passes the limit (bound as windows too).
        let bias = random(&mut r, &[n], -1.0, 1.0);
        let gemm = Op::Gemm { alpha: 0.5, beta: 1.5, trans_a: false, trans_b: false };
        let ins = || vec![In::Run(a.clone()), In::Const(w.clone()), In::Const(bias.clone())];
        let (g, x) = one_node(gemm.clone(), ins(), 2);
        let want = run_cpu(g, &x);
        let (g, x) = one_node(gemm.clone(), ins(), 2);
        close(&format!("f32 [K, N] gemm {m}x{k}x{n} split"), &run_gpu(&c, g, &x), &want, 1e-4, 1e-5);
        let ins = || vec![In::Run(a.clone()), In::Const(w.clone())];
        let (g, x) = one_node(Op::MatMul, ins(), 2);
        let want = run_cpu(g, &x);
        let (g, x) = one_node(Op::MatMul, ins(), 2);
        close(&format!("f32 [K, N] matmul {m}x{k}x{n} split"), &run_gpu(&c, g, &x), &want, 1e-4, 1e-5);
        let (g, x) = with_relu(one_node(gemm, ins(), 2));
        let want = run_cpu(g.clone(), &x);
        assert!(want.as_slice::<f32>().unwrap().contains(&0.0), "the Relu clips something");
        close(&format!("f32 [K, N] gemm + relu {m}x{k}x{n} split"), &run_gpu(&c, g, &x), &want, 1e-4, 1e-5);
        println!("[K, N] {m}x{k}x{n}: {:.2?}", t0.elapsed());
    }
    // A full [M, N] C (44 KiB, computed at run time), and a [M, 1] one, each split with Y.
    let (m, k, n) = (37, 70, 300);
    let a = random(&mut r, &[m, k], -1.0, 1.0);
    let w = random(&mut r, &[n, k], -1.0, 1.0);
    for cshape in [[m, n], [m, 1]] {
        let cm = random(&mut r, &cshape, -1.0, 1.0);
        let gemm = Op::Gemm { alpha: 1.0, beta: 0.5, trans_a: false, trans_b: true };
        let ins = || vec![In::Run(a.clone()), In::Const(w.clone()), In::Run(cm.clone())];
        let (g, x) = one_node(gemm.clone(), ins(), 2);
        let want = run_cpu(g, &x);
        let (g, x) = one_node(gemm, ins(), 2);
        close(&format!("gemm {m}x{k}x{n} with C {cshape:?} split"), &run_gpu(&c, g, &x), &want, 1e-4, 1e-5);
    }
    // Batched MatMul: blocks of whole batches (B batched like A, computed or constant).
    for &(bt, m, k, n) in &[(7, 9, 20, 13), (4, 17, 20, 3)] {
        assert!(4 * bt * m * k > 4096, "A must pass the 4 KiB binding");
        let a = random(&mut r, &[bt, m, k], -1.0, 1.0);
        let w = random(&mut r, &[bt, k, n], -1.0, 1.0);
        for b_const in [false, true] {
            let ins = || vec![In::Run(a.clone()), if b_const { In::Const(w.clone()) } else { In::Run(w.clone()) }];
            let (g, x) = one_node(Op::MatMul, ins(), 3);
            let want = run_cpu(g, &x);
            let (g, x) = one_node(Op::MatMul, ins(), 3);
            close(&format!("batched matmul {bt}x{m}x{k}x{n} split"), &run_gpu(&c, g, &x), &want, 1e-4, 1e-5);
        }
    }
    // Other kernels do not split: a clear refusal, not a wrong answer.
    let (g, x) = one_node(Op::Unary(Unary::Relu), vec![In::Run(random(&mut r, &[2000], -1.0, 1.0))], 1);
    let plan = WgpuBackend::with_context(c.clone()).plan(Arc::new(g)).unwrap();
    let e = alembic::backend::Executable::run(&plan, &[&x[0]]).unwrap_err().to_string();
    assert!(e.contains("storage binding limit"), "{e}");
}

#[test]
fn buffers_past_max_buffer_size_are_refused_by_name() {
    use super::gpu::{one_node, random, rng, In};
    use alembic::ir::{Op, Unary};
    quiet_mesa();
    // A 64 KiB buffer limit (phones: 256 MiB and up); bindings stay at the adapter's.
    let opts = CtxOptions { max_buffer_size: Some(64 << 10), ..Default::default() };
    let c = match Ctx::with_options(Backends::all(), opts) {
        Ok(c) => Arc::new(c),
        Err(e) => return println!("SKIPPED buffers_past_max_buffer_size_are_refused_by_name: no wgpu adapter ({e})"),
    };
    let mut r = rng(5);
    let b = WgpuBackend::with_context(c.clone());
    // A 100 KiB constant weight: refused when the plan uploads it, naming the constant.
    let gemm = Op::Gemm { alpha: 1.0, beta: 0.0, trans_a: false, trans_b: true };
    let ins = vec![In::Run(random(&mut r, &[2, 100], -1.0, 1.0)), In::Const(random(&mut r, &[256, 100], -1.0, 1.0))];
    let (g, _) = one_node(gemm, ins, 2);
    let e = b.plan(Arc::new(g)).err().expect("a 100 KiB weight under a 64 KiB buffer limit").to_string();
    assert!(e.contains("'c1'") && e.contains("max_buffer_size"), "{e}");
    // An 80 KiB input: refused when the plan binds it, naming the input.
    let (g, x) = one_node(Op::Unary(Unary::Relu), vec![In::Run(random(&mut r, &[20000], -1.0, 1.0))], 1);
    let plan = b.plan(Arc::new(g)).unwrap();
    let e = alembic::backend::Executable::run(&plan, &[&x[0]]).unwrap_err().to_string();
    assert!(e.contains("'in0'") && e.contains("max_buffer_size"), "{e}");
    // Below the limit, the same plan runs.
    let small = random(&mut r, &[1000], -1.0, 1.0);
    assert_eq!(run_on(&plan, std::slice::from_ref(&small)).shape(), [1000]);
}
