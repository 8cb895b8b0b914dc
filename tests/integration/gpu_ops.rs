//! The normalisation, reduction and data-movement kernels (norm.wgsl, reduce.wgsl, move.wgsl,
//! resize.wgsl) against the CPU f32 engine on random odd shapes, on lavapipe (Vulkan) and on
//! the GL backend. Each context without an adapter prints that it skipped.
//!
//! Tolerances: Transpose / Slice / Concat / Gather (constant or run-time i32 / i64 indices)
//! move values and must be bit-exact;
//! reductions rel 1e-4 + abs 1e-5 (f32 accumulation on the GPU, f64 on the CPU; LogSum/L2 etc.
//! inherit it); LayerNorm rel 1e-4 + abs 1e-5 (f32 two-pass statistics vs f64); BatchNorm rel
//! 1e-5 + abs 1e-6 (same folded a, b; one fused multiply-add); Resize rel 1e-5 + abs 1e-6
//! (same f32 tap weights, summed in one pass instead of one pass per axis).

use super::gpu::{close, ctx, one_node, quiet_mesa, random, rng, run_cpu, run_gpu, run_on, In};
use alembic::backend::wgpu::{device::Backends, Ctx, WgpuBackend};
use alembic::backend::{Backend, Support};
use alembic::ir::{AspectPolicy, CoordMode, NearestMode, Op, ReduceKind, ResizeAttrs, ResizeMode};
use alembic::Tensor;
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::{Arc, OnceLock};

/// The shared (Vulkan first) context and a GL one, each when present.
fn contexts(test: &str) -> Vec<(&'static str, Arc<Ctx>)> {
    static GL: OnceLock<Result<Arc<Ctx>, String>> = OnceLock::new();
    quiet_mesa();
    let mut v = Vec::new();
    if let Some(c) = ctx(test) {
        v.push(("default", c));
    }
    match GL.get_or_init(|| Ctx::new(Backends::GL).map(Arc::new).map_err(|e| e.to_string())) {
        Ok(c) => v.push(("gl", c.clone())),
        Err(e) => println!("SKIPPED {test} on GL: no wgpu adapter on the GL backend ({e})"),
    }
    v
}

/// Runs `op` over `ins` on every context and on the CPU, and compares.
fn check(test: &str, what: &str, op: Op, ins: impl Fn() -> Vec<In>, rank: usize, rtol: f32, atol: f32) {
    let (g, x) = one_node(op.clone(), ins(), rank);
    let want = run_cpu(g, &x);
    for (api, c) in contexts(test) {
        let (g, x) = one_node(op.clone(), ins(), rank);
        let got = run_gpu(&c, g, &x);
        close(&format!("{what} on {api}"), &got, &want, rtol, atol);
    }
}

/// (starts, ends, axes, steps) of a Slice.
type SliceCase = (&'static [i64], &'static [i64], Option<&'static [i64]>, Option<&'static [i64]>);
/// (axis, scale shape, bias shape) of a LayerNorm.
type NormCase = (i64, &'static [usize], Option<&'static [usize]>);

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

#[test]
fn transpose_slice_concat_gather_are_exact() {
    let t = "transpose_slice_concat_gather_are_exact";
    let mut r = rng(11);
    let x = random(&mut r, &[2, 3, 5, 7], -1.0, 1.0);
    let mut perms: Vec<Vec<usize>> = vec![vec![], vec![0, 2, 3, 1], vec![3, 1, 0, 2]];
    let mut p: Vec<usize> = (0..4).collect();
    p.shuffle(&mut r);
    perms.push(p);
    for perm in perms {
        let op = Op::Transpose { perm: perm.clone() };
        check(t, &format!("transpose {perm:?}"), op, || vec![In::Run(x.clone())], 4, 0.0, 0.0);
    }
    // (starts, ends, axes, steps): negative steps, clamping, negative axes, omitted axes.
    let slices: [SliceCase; 5] = [
        (&[0, 1], &[2, 3], None, None),
        (&[-1], &[-100], Some(&[3]), Some(&[-2])),
        (&[1, 4, 0], &[100, 0, 2], Some(&[-3, 2, 0]), Some(&[1, -1, 1])),
        (&[0], &[7], Some(&[-1]), Some(&[3])),
        (&[2], &[2], Some(&[2]), None),
    ];
    for (s, e, a, st) in slices {
        let ins = || {
            let opt = |v: Option<&[i64]>| v.map_or(In::Absent, |v| In::Const(i64s(v)));
            vec![In::Run(x.clone()), In::Const(i64s(s)), In::Const(i64s(e)), opt(a), opt(st)]
        };
        check(t, &format!("slice {s:?} {e:?} {a:?} {st:?}"), Op::Slice, ins, 4, 0.0, 0.0);
    }
    let parts = [
        random(&mut r, &[2, 3, 5], -1.0, 1.0),
        random(&mut r, &[2, 1, 5], -1.0, 1.0),
        random(&mut r, &[2, 4, 5], -1.0, 1.0),
    ];
    for axis in [1, -2] {
        let ins = || vec![In::Run(parts[0].clone()), In::Const(parts[1].clone()), In::Run(parts[2].clone())];
        check(t, &format!("concat axis {axis}"), Op::Concat { axis }, ins, 3, 0.0, 0.0);
    }
    let y = random(&mut r, &[4, 5, 3], -1.0, 1.0);
    let ins2 = || vec![In::Run(y.clone()), In::Run(y.clone())];
    check(t, "concat axis 0 of one input twice", Op::Concat { axis: 0 }, ins2, 3, 0.0, 0.0);
    // Gather: negative indices, 2-D indices, a scalar index (drops the axis).
    let idx2 = Tensor::from_vec(vec![2, 3], vec![0i64, -1, 2, 4, -5, 1]).unwrap();
    let cases = [(0, i64s(&[3, -1, 0, 3])), (1, idx2), (2, Tensor::scalar(-2i64))];
    for (axis, idx) in cases {
        let rank = 3 + idx.rank() - 1;
        let op = Op::Gather { axis };
        let ins = || vec![In::Run(y.clone()), In::Const(idx.clone())];
        check(t, &format!("gather axis {axis} {:?}", idx.shape()), op, ins, rank, 0.0, 0.0);
    }
}

#[test]
fn reductions_match_cpu() {
    let t = "reductions_match_cpu";
    let mut r = rng(12);
    let kinds = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L2,
        ReduceKind::SumSquare,
        ReduceKind::LogSumExp,
        ReduceKind::L1,
        ReduceKind::LogSum,
    ];
    let x = random(&mut r, &[3, 5, 7, 2], 0.5, 1.5);
    let axes: [&[i64]; 5] = [&[], &[1], &[0, 2], &[-1], &[3, 0, 1]];
    for kind in kinds {
        for ax in axes {
            for keepdims in [true, false] {
                let op = Op::Reduce { kind, keepdims, noop_with_empty_axes: false };
                let rank = if keepdims {
                    4
                } else if ax.is_empty() {
                    0
                } else {
                    4 - ax.len()
                };
                let ins = || {
                    let a = if ax.is_empty() { In::Absent } else { In::Const(i64s(ax)) };
                    vec![In::Run(x.clone()), a]
                };
                check(t, &format!("{kind:?} axes {ax:?} keepdims {keepdims}"), op, ins, rank, 1e-4, 1e-5);
            }
        }
    }
    // noop_with_empty_axes: the input unchanged (an alias, no kernel).
    let op = Op::Reduce { kind: ReduceKind::Sum, keepdims: true, noop_with_empty_axes: true };
    check(t, "noop reduce", op, || vec![In::Run(x.clone())], 4, 0.0, 0.0);
}

#[test]
fn layer_and_batch_norm_match_cpu() {
    let t = "layer_and_batch_norm_match_cpu";
    let mut r = rng(13);
    let x = random(&mut r, &[3, 7, 5], -2.0, 3.0);
    // (axis, scale shape, bias shape)
    let cases: [NormCase; 4] =
        [(-1, &[5], Some(&[5])), (1, &[7, 5], Some(&[5])), (1, &[1, 5], None), (0, &[3, 7, 5], Some(&[7, 5]))];
    for (axis, ss, bs) in cases {
        let scale = random(&mut r, ss, 0.5, 1.5);
        let bias = bs.map(|b| random(&mut r, b, -1.0, 1.0));
        let op = Op::LayerNorm { axis, epsilon: 1e-5 };
        let ins = || vec![In::Run(x.clone()), In::Const(scale.clone()), bias.clone().map_or(In::Absent, In::Const)];
        check(t, &format!("layernorm axis {axis} {ss:?} {bs:?}"), op, ins, 3, 1e-4, 1e-5);
    }
    // A scale broadcast along the normalised axes (not a trailing part): CPU fallback, same result.
    let scale = random(&mut r, &[7, 1], 0.5, 1.5);
    let mk =
        || one_node(Op::LayerNorm { axis: 1, epsilon: 1e-5 }, vec![In::Run(x.clone()), In::Const(scale.clone())], 3);
    let (g, ins) = mk();
    let want = run_cpu(g, &ins);
    for (api, c) in contexts(t) {
        let (g, ins) = mk();
        let b = WgpuBackend::with_context(c);
        assert_eq!(b.supports(&g, &g.nodes[0]), Support::Fallback("cpu".into()));
        let plan = b.plan(Arc::new(g)).unwrap();
        close(&format!("layernorm [7, 1] scale on {api}"), &run_on(&plan, &ins), &want, 0.0, 0.0);
    }
    let x = random(&mut r, &[2, 3, 5, 7], -2.0, 2.0);
    let p = |r: &mut rand::rngs::StdRng, lo, hi| random(r, &[3], lo, hi);
    let (s, b, m, v) = (p(&mut r, 0.5, 1.5), p(&mut r, -1.0, 1.0), p(&mut r, -0.5, 0.5), p(&mut r, 0.2, 2.0));
    let ins = || {
        vec![In::Run(x.clone()), In::Const(s.clone()), In::Const(b.clone()), In::Const(m.clone()), In::Const(v.clone())]
    };
    check(t, "batchnorm", Op::BatchNorm { epsilon: 1e-5 }, ins, 4, 1e-5, 1e-6);
}

fn resize_attrs(mode: ResizeMode, coord: CoordMode, nearest: NearestMode) -> ResizeAttrs {
    ResizeAttrs {
        mode,
        coord,
        nearest,
        extrapolation_value: -7.5,
        exclude_outside: false,
        axes: None,
        aspect: AspectPolicy::Stretch,
        antialias: false,
        cubic_coeff_a: -0.75,
    }
}

#[test]
fn resize_matches_cpu() {
    let t = "resize_matches_cpu";
    let mut r = rng(14);
    let x = random(&mut r, &[1, 3, 5, 7], -1.0, 1.0);
    let coords = [
        CoordMode::HalfPixel,
        CoordMode::AlignCorners,
        CoordMode::Asymmetric,
        CoordMode::PytorchHalfPixel,
        CoordMode::HalfPixelSymmetric,
    ];
    let f32s = |v: &[f32]| Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap();
    for mode in [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic] {
        for coord in coords {
            let nearest = [NearestMode::RoundPreferFloor, NearestMode::Floor, NearestMode::Ceil][r.random_range(0..3)];
            let a = resize_attrs(mode, coord, nearest);
            // Up by scales, down by sizes.
            let by_scales = || vec![In::Run(x.clone()), In::Absent, In::Const(f32s(&[1.0, 1.0, 2.0, 1.5])), In::Absent];
            check(t, &format!("{mode:?} {coord:?} {nearest:?} up"), Op::Resize(a.clone()), by_scales, 4, 1e-5, 1e-6);
            let by_sizes = || vec![In::Run(x.clone()), In::Absent, In::Absent, In::Const(i64s(&[1, 3, 3, 4]))];
            check(t, &format!("{mode:?} {coord:?} {nearest:?} down"), Op::Resize(a.clone()), by_sizes, 4, 1e-5, 1e-6);
        }
    }
    // Antialiased linear downscale on two axes named by `axes`.
    let mut a = resize_attrs(ResizeMode::Linear, CoordMode::HalfPixel, NearestMode::Floor);
    a.antialias = true;
    a.axes = Some(vec![3, 2]);
    let ins = || vec![In::Run(x.clone()), In::Absent, In::Absent, In::Const(i64s(&[3, 2]))];
    check(t, "antialias linear", Op::Resize(a), ins, 4, 1e-5, 1e-6);
    // tf_crop_and_resize: outputs outside the crop take the extrapolation value.
    let a = resize_attrs(ResizeMode::Linear, CoordMode::TfCropAndResize, NearestMode::Floor);
    let roi = f32s(&[0.0, 0.0, -0.2, 0.1, 1.0, 1.0, 0.9, 1.3]);
    let ins = || vec![In::Run(x.clone()), In::Const(roi.clone()), In::Const(f32s(&[1.0, 1.0, 1.4, 1.2])), In::Absent];
    check(t, "tf_crop_and_resize", Op::Resize(a), ins, 4, 1e-5, 1e-6);
}

/// i32 indices for a run-time Gather.
fn i32s(shape: &[usize], v: &[i32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
}

#[test]
fn gather_with_runtime_indices_is_exact() {
    let t = "gather_with_runtime_indices_is_exact";
    let mut r = rng(12);
    let x = random(&mut r, &[3, 7, 5], -1.0, 1.0);
    // (axis, indices): i64 and i32, negative, 2-D, scalar (drops the axis), repeated.
    let idx2 = Tensor::from_vec(vec![2, 3], vec![0i64, -1, 2, 4, -5, 1]).unwrap();
    let cases = [
        (0, i64s(&[2, -1, 0, 2, -3])),
        (1, idx2),
        (-1, Tensor::scalar(-2i64)),
        (2, i32s(&[4], &[4, -5, 0, 3])),
        (-2, i32s(&[2, 2], &[6, -7, 3, 3])),
        (1, i32s(&[], &[-1])),
    ];
    for (axis, idx) in cases {
        let rank = 3 + idx.rank() - 1;
        let what = format!("gather axis {axis} of run-time {} indices {:?}", idx.dtype(), idx.shape());
        check(t, &what, Op::Gather { axis }, || vec![In::Const(x.clone()), In::Run(idx.clone())], rank, 0.0, 0.0);
        // The data computed at run time too.
        check(t, &what, Op::Gather { axis }, || vec![In::Run(x.clone()), In::Run(idx.clone())], rank, 0.0, 0.0);
    }
    for (api, c) in contexts(t) {
        runtime_gather_plan_checks(api, &c, &x);
    }
}

/// Indices produced by a CPU node reach the GPU Gather; new index values (same shape) reuse the
/// bound buffers; indices outside [-d, d) give 0 (an i64 past i32 too, not its low word).
fn runtime_gather_plan_checks(api: &str, c: &Arc<Ctx>, x: &Tensor) {
    use alembic::ir::{Graph, Node, Value};
    use alembic::{DType, Shape};
    let mut g = Graph { opset: 17, ..Default::default() };
    let data = g.add_constant("data", x.clone());
    let mut ids = Value::new("ids");
    ids.dtype = Some(DType::I64);
    ids.shape = Some(Shape::known(&[4]));
    let ids = g.add_value(ids);
    g.inputs.push(ids);
    let mut copied = Value::new("ids_copy");
    copied.dtype = Some(DType::I64);
    let copied = g.add_value(copied);
    let out = g.add_value(Value::new("out"));
    g.nodes.push(Node { name: "copy".into(), op: Op::Identity, inputs: vec![Some(ids)], outputs: vec![copied] });
    g.nodes.push(Node {
        name: "gather".into(),
        op: Op::Gather { axis: 1 },
        inputs: vec![Some(data), Some(copied)],
        outputs: vec![out],
    });
    g.outputs.push(out);
    let g = Arc::new(g);
    let b = WgpuBackend::with_context(c.clone());
    assert_eq!(b.supports(&g, &g.nodes[1]), Support::Native, "{api}: run-time Gather on the CPU");
    let plan = b.plan(g.clone()).unwrap();
    assert_eq!(plan.fallback_nodes(), vec!["copy".to_string()], "{api}");
    let cpu = alembic::backend::cpu::CpuBackend.prepare(g).unwrap();
    let mut counts = None;
    for ids in [[3i64, -1, 0, 6], [-7, 2, 2, 5]] {
        let ids = Tensor::from_vec(vec![4], ids.to_vec()).unwrap();
        let got = run_on(&plan, std::slice::from_ref(&ids));
        close(
            &format!("{api}: gather of CPU-made ids {ids:?}"),
            &got,
            &run_on(&*cpu, std::slice::from_ref(&ids)),
            0.0,
            0.0,
        );
        let now = c.counts().0;
        assert_eq!(*counts.get_or_insert(now), now, "{api}: new index values created buffers");
    }
    // Out of range: 7 and -8 (d = 7), and 2^32 + 1 (low word 1): zeros, the rest gathered.
    let bad = Tensor::from_vec(vec![4], vec![7i64, -8, (1 << 32) + 1, 1]).unwrap();
    let got = run_on(&plan, &[bad]);
    let (v, xs) = (got.as_slice::<f32>().unwrap(), x.as_slice::<f32>().unwrap());
    for (o, row) in v.chunks(4 * 5).enumerate() {
        assert!(row[..15].iter().all(|&e| e == 0.0), "{api}: out-of-range indices not zero: {row:?}");
        assert_eq!(row[15..], xs[o * 35 + 5..o * 35 + 10], "{api}: index 1 after out-of-range ones");
    }
}

#[test]
fn onnx_gather_cases_run_on_wgpu_with_runtime_indices() {
    use alembic::backend::BackendKind;
    use alembic::onnx::tensor_proto::read_pb_file;
    use alembic::quant::Precision;
    use alembic::{Model, SessionOptions};
    let t = "onnx_gather_cases_run_on_wgpu_with_runtime_indices";
    let Some(dir) = std::env::var_os("ALEMBIC_ONNX_NODE_CASES").map(std::path::PathBuf::from) else {
        return println!("SKIPPED {t}: ALEMBIC_ONNX_NODE_CASES unset (scripts/test.sh sets it)");
    };
    if ctx(t).is_none() {
        return;
    }
    // The ONNX backend's Gather cases: data and int64 indices are both graph inputs.
    for case in ["test_gather_0", "test_gather_1", "test_gather_2d_indices", "test_gather_negative_indices"] {
        let case_dir = dir.join(case);
        let model = Model::load(case_dir.join("model.onnx")).unwrap_or_else(|e| panic!("{case}: {e}"));
        let support = model.support_at(BackendKind::Wgpu, Precision::F32);
        assert!(support.iter().all(|(_, _, s)| *s == Support::Native), "{case}: {support:?}");
        let session = model.session(SessionOptions::default().backend(BackendKind::Wgpu)).unwrap();
        let set = case_dir.join("test_data_set_0");
        let read = |f: &str| read_pb_file(&set.join(f)).unwrap_or_else(|e| panic!("{case}/{f}: {e}")).1;
        let (data, idx, want) = (read("input_0.pb"), read("input_1.pb"), read("output_0.pb"));
        assert_eq!(idx.dtype(), alembic::DType::I64, "{case}");
        let names: Vec<String> = model.inputs().iter().map(|i| i.name.clone()).collect();
        let out = session.run_refs(&[(names[0].as_str(), &data), (names[1].as_str(), &idx)]).unwrap();
        close(&format!("{case} on wgpu"), &out.0[0].1, &want, 0.0, 0.0);
    }
}
