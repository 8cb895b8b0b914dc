//! Weights packed once when the CPU plan is built: the constant weight of a Conv (not
//! depthwise) or of a Gemm/MatMul is laid out in the register-tile panels of
//! `kernels::packed`, kept by the plan's step (shared, not copied, by concurrent runs), and
//! the graph's own constant is left as it is for the other engines and for training. The int8
//! weight of a w8a8 QGemm / QConv (not depthwise) is packed likewise for `kernels::i8tile`.

use super::kernels::packed::{PackedCols, PackedRows};
use super::kernels::{i8tile, qdense, qgemm_i8};
use crate::ir::{Graph, Node, Op};
use crate::tensor::Tensor;
use std::sync::Arc;

/// A step's pre-packed weight.
#[derive(Debug)]
pub enum Packed {
    /// Conv weight `[M, C/group, k...]` as `group` matrices `M/group x (C/group * k...)`.
    Conv(PackedRows),
    /// Gemm's B' (after `transB`) or MatMul's 2-D B, `K x N`; or a 1x1 Conv's W' on a
    /// one-position input (`pointwise_on_one_position`).
    Dense(PackedCols),
    /// A w8a8 QGemm's int8 weight `[N, K]` as the B panels of `kernels::i8tile`; or a w8a8 1x1
    /// QConv's on a one-position input.
    QDense(i8tile::PackedCols),
    /// A small weight-only QGemm's weight (at most [`DEQUANTIZED_MAX`] values) dequantized once
    /// into f32 B panels, run as a Gemm.
    DequantizedDense(PackedCols),
    /// A w8a8 QConv's int8 weight (not depthwise) as `group` row-panel matrices of `i8tile`.
    QConv(i8tile::PackedRows),
    /// A small weight-only QConv (depthwise, or at most [`DEQUANTIZED_MAX`] weights) as the f32
    /// Conv it stands for, its weight dequantized once here instead of on every run (and
    /// packed, where the f32 Conv's would be).
    Dequantized { conv: Box<Op>, weight: Tensor, packed: Option<PackedRows> },
}

/// Largest weight-only QConv or QGemm (weights) dequantized at load besides depthwise convs:
/// 16K values, 64 KiB of f32, next to activations that are larger. On MobileNetV3-224 under
/// w8a8 the depthwise convs (f32 activations, int8 weights) took 1.1-1.2x their f32 time when
/// each run dequantized the weight into a per-thread buffer first; the fixture student's int8
/// 64->32 layer at batch 8 took 2.15 us on the weight-only kernel vs 0.72 us as an f32 Gemm.
pub const DEQUANTIZED_MAX: usize = 1 << 14;

/// The f32 constant behind input `i` of `node`, if any.
fn constant<'a>(g: &'a Graph, node: &Node, i: usize) -> Option<&'a Tensor> {
    let t = g.values[node.input(i)?].constant.as_deref()?;
    t.as_slice::<f32>().map(|_| t)
}

/// Which Conv weights are packed (`ALEMBIC_CPU_PACKED_CONV`: `1` every non-depthwise conv,
/// `0` none, unset: those the direct kernel does not take, [`packs_conv`]).
fn packed_conv_setting() -> Option<bool> {
    static ON: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    *ON.get_or_init(|| match std::env::var("ALEMBIC_CPU_PACKED_CONV").as_deref().map(str::trim) {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    })
}

/// Whether a non-depthwise Conv weight of `cg` input channels per group and `taps` kernel taps
/// is packed. By default every one the direct kernel does not take (`cg * taps >
/// direct::SHORT_K`, or 1x1): their patches then go straight into the tile's panels
/// (`conv::patches_packed`), or X is packed as it is for a 1x1. On Zen 3 the fixture teacher's
/// 3x3 convs ran 1.4x faster end to end that way than as im2col + matrixmultiply
/// (docs/performance.md), and MobileNetV3's 1x1 convs about as fast; matrixmultiply also
/// allocates its packing buffers on every call, and a steady-state run allocates nothing.
fn packs_conv(cg: usize, taps: usize) -> bool {
    packed_conv_setting().unwrap_or(taps == 1 || cg * taps > super::kernels::direct::SHORT_K)
}

/// Rows per group and reduction length of a conv weight `wshape` (`[M, C/group, k...]`) the
/// f32 conv runs packed ([`packs_conv`]); `None` for depthwise convs (their own direct kernel),
/// odd or empty shapes (the general path), and the convs the direct kernel takes.
pub(crate) fn packed_conv_dims(wshape: &[usize], group: usize) -> Option<(usize, usize)> {
    let (&m, &cg) = (wshape.first()?, wshape.get(1)?);
    let taps = wshape.get(2..).filter(|k| !k.is_empty())?.iter().product::<usize>();
    let depthwise = cg == 1 && group > 1;
    let fits = group > 0 && m % group == 0 && !depthwise && m * cg * taps > 0;
    (fits && packs_conv(cg, taps)).then_some((m / group, cg * taps))
}

/// The packed weight for `node`, when it has a constant one the packed kernels take.
pub fn prepack(g: &Graph, node: &Node) -> Option<Arc<Packed>> {
    let packed = match &node.op {
        Op::Conv { group, .. } => {
            let w = constant(g, node, 1)?;
            if let Some(p) = pointwise_on_one_position(g, node, w, *group) {
                return Some(Arc::new(p));
            }
            let (mg, k) = packed_conv_dims(w.shape(), *group)?;
            Packed::Conv(PackedRows::pack(w.as_slice::<f32>()?, *group, mg, k))
        }
        Op::Gemm { trans_b, .. } => {
            let b = constant(g, node, 1)?;
            let &[r, c] = b.shape() else { return None };
            let (k, n, strides) = if *trans_b { (c, r, (1, c)) } else { (r, c, (c, 1)) };
            dense(b, k, n, strides)?
        }
        Op::MatMul => {
            let b = constant(g, node, 1)?;
            let &[k, n] = b.shape() else { return None };
            dense(b, k, n, (n, 1))?
        }
        Op::QGemm { w, .. } if qgemm_i8::parts(w).is_none() => {
            if w.n * w.k > DEQUANTIZED_MAX || w.n == 0 || w.k == 0 || !qdense::supports(w) {
                return None;
            }
            let mut v = vec![0.0f32; w.n * w.k];
            qdense::dequantize_into(crate::backend::cpu::kernels::microkernel::Isa::detect(), w, &mut v).ok()?;
            // B(k, j) = w[j, k]: the weight's rows are B's columns.
            Packed::DequantizedDense(PackedCols::pack(&v, w.k, w.n, (1, w.k)))
        }
        Op::QGemm { w, .. } => {
            let q = w8a8_weight(w)?;
            Packed::QDense(i8tile::PackedCols::pack(q, w.n, w.k))
        }
        Op::QConv { window, group, w, wshape } if qgemm_i8::parts(w).is_none() => {
            let small = crate::quant::is_depthwise(*group, wshape) || w.n * w.k <= DEQUANTIZED_MAX;
            if !small || pointwise_one_position(g, node, wshape, *group) || !qdense::supports(w) {
                return None;
            }
            let mut v = vec![0.0f32; w.n * w.k];
            qdense::dequantize_into(crate::backend::cpu::kernels::microkernel::Isa::detect(), w, &mut v).ok()?;
            let packed = packed_conv_dims(wshape, *group).map(|(mg, k)| PackedRows::pack(&v, *group, mg, k));
            let weight = Tensor::from_vec(wshape.clone(), v)?;
            Packed::Dequantized { conv: Box::new(Op::Conv { window: window.clone(), group: *group }), weight, packed }
        }
        Op::QConv { group, w, wshape, .. } => {
            let q = w8a8_weight(w)?;
            let group = *group;
            // Depthwise stays on its own path (one weight row per group).
            if group == 0 || w.n % group != 0 || (wshape.get(1) == Some(&1) && group > 1) {
                return None;
            }
            if pointwise_one_position(g, node, wshape, group) {
                // One activation row times W': the GEMV tile, as for a QGemm.
                return Some(Arc::new(Packed::QDense(i8tile::PackedCols::pack(q, w.n, w.k))));
            }
            Packed::QConv(i8tile::PackedRows::pack(q, group, w.n / group, w.k))
        }
        _ => return None,
    };
    Some(Arc::new(packed))
}

/// A 1x1, ungrouped Conv whose input is known to have one spatial position (squeeze-excitation
/// convs on a pooled `[N,C,1,1]`, a classifier head as a conv) is the product `X[N,C] W'`: its
/// weight `[M,C,1..]` packed as `B = W'` runs as a matrix-vector product on the packed panels
/// instead of matrixmultiply re-packing all of W per call (MobileNetV3's 576x1024 head conv:
/// 0.46 ms, the second costliest node of the model).
fn pointwise_on_one_position(g: &Graph, node: &Node, w: &Tensor, group: usize) -> Option<Packed> {
    let ws = w.shape();
    if !pointwise_one_position(g, node, ws, group) {
        return None;
    }
    let (m, c) = (ws[0], ws[1]);
    dense(w, c, m, (1, c))
}

/// Whether a conv with weight shape `ws` is 1x1, ungrouped, on an input known to have one
/// spatial position.
fn pointwise_one_position(g: &Graph, node: &Node, ws: &[usize], group: usize) -> bool {
    let Some(x) = node.input(0).and_then(|i| g.values[i].shape.as_ref()) else { return false };
    let one_position = x.rank() == ws.len() && x.0[2..].iter().all(|d| d.known() == Some(1));
    group == 1 && ws.len() >= 3 && ws[2..].iter().all(|&k| k == 1) && one_position
}

/// `ALEMBIC_CPU_W8A8_TILED=0` keeps w8a8 QGemm/QConv on the per-output dot products of
/// `qgemm_i8` (to compare the two in one binary).
fn w8a8_tiled_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("ALEMBIC_CPU_W8A8_TILED").map_or(true, |v| v.trim() != "0"))
}

/// The int8 values of a w8a8 weight the tiled kernel takes: K within the exact i32 range and
/// no -128 (the AVX2 sign trick negates weights).
fn w8a8_weight(w: &crate::quant::QWeight) -> Option<&[i8]> {
    let (q, _, _) = qgemm_i8::parts(w)?;
    (w8a8_tiled_enabled() && w.k > 0 && w.n > 0 && w.k <= i8tile::MAX_K && !q.contains(&i8::MIN)).then_some(q)
}

fn dense(b: &Tensor, k: usize, n: usize, strides: (usize, usize)) -> Option<Packed> {
    (k > 0 && n > 0).then(|| Packed::Dense(PackedCols::pack(b.as_slice::<f32>().expect("f32 constant"), k, n, strides)))
}

/// Runs a plan step: on its packed weight when it has one and X is f32, else as
/// [`kernels::eval_fused`](super::kernels::eval_fused) does.
pub fn eval(
    op: &Op,
    act: Option<&crate::ir::Unary>,
    packed: Option<&Packed>,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> super::kernels::KResult {
    use super::kernels::{activation, conv, linalg, opt, req};
    let x_f32 = req(inputs, 0)?.as_slice::<f32>().is_some();
    let dense = match (packed, op) {
        (Some(Packed::Conv(p)), Op::Conv { .. }) if x_f32 => {
            return conv::eval_packed(op, act, p, inputs, outputs, scratch);
        }
        (Some(Packed::Dense(p)), Op::Conv { .. }) if x_f32 => {
            return conv::eval_pointwise_packed(op, act, p, inputs, outputs, scratch);
        }
        (Some(Packed::Dense(p)), Op::Gemm { alpha, beta, trans_a, .. }) if x_f32 => {
            linalg::gemm_packed(req(inputs, 0)?, p, opt(inputs, 2), (*alpha, *beta), *trans_a, &mut outputs[0])
        }
        (Some(Packed::Dense(p)), Op::MatMul) if x_f32 => linalg::matmul_packed(req(inputs, 0)?, p, &mut outputs[0]),
        (Some(Packed::QConv(p)), Op::QConv { .. }) if x_f32 => {
            return qgemm_i8::qconv_packed(op, act, p, inputs, outputs, scratch);
        }
        (Some(Packed::Dequantized { conv, weight, packed }), Op::QConv { .. }) if x_f32 => {
            let ins = [inputs.first().copied().flatten(), Some(weight), inputs.get(1).copied().flatten()];
            return match packed {
                Some(p) => conv::eval_packed(conv, act, p, &ins, outputs, scratch),
                None => conv::eval_fused(conv, act, &ins, outputs, scratch),
            };
        }
        (Some(Packed::QDense(p)), Op::QConv { .. }) if x_f32 => {
            return qgemm_i8::qconv_one_position(op, act, p, inputs, outputs, scratch);
        }
        (Some(Packed::DequantizedDense(p)), Op::QGemm { alpha, beta, .. }) if x_f32 => {
            super::kernels::quant::qgemm_dequantized(p, req(inputs, 0)?, opt(inputs, 1), *alpha, *beta, &mut outputs[0])
        }
        (Some(Packed::QDense(p)), Op::QGemm { w, alpha, beta }) if x_f32 => {
            qgemm_i8::qgemm_packed(w, p, req(inputs, 0)?, opt(inputs, 1), *alpha, *beta, &mut outputs[0], scratch)
        }
        _ => return super::kernels::eval_fused(op, act, inputs, outputs, scratch),
    };
    dense?;
    if let Some(u) = act {
        activation::apply(u, outputs[0].as_mut_slice::<f32>().ok_or("a fused activation needs an f32 output")?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuPlan;
    use crate::backend::Executable;
    use crate::ir::{Unary, Value};
    use crate::tensor::DType;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 + seed * 11) % 29) as f32 / 14.0 - 1.0).collect()
    }

    /// Gemm (transB, alpha, beta, C) + fused Relu, then MatMul, both on packed weights through
    /// the plan, against the unpacked kernels node by node.
    #[test]
    fn plan_runs_packed_weights_like_the_plain_kernels() {
        let (m, k, n, n2) = (3, 5, 4, 6);
        let mut g = Graph::default();
        let mut xv = Value::new("x");
        xv.dtype = Some(DType::F32);
        let x = g.add_value(xv);
        let w = g.add_constant("w", Tensor::from_vec(vec![n, k], values(n * k, 1)).unwrap());
        let c = g.add_constant("c", Tensor::from_vec(vec![n], values(n, 2)).unwrap());
        let b2 = g.add_constant("b2", Tensor::from_vec(vec![n, n2], values(n * n2, 3)).unwrap());
        let mut f32_value = |name: &str| {
            let mut v = Value::new(name);
            v.dtype = Some(DType::F32);
            g.add_value(v)
        };
        let (y1, y2, y3) = (f32_value("y1"), f32_value("y2"), f32_value("y3"));
        let gemm = Op::Gemm { alpha: 0.5, beta: 2.0, trans_a: false, trans_b: true };
        let node = |name: &str, op: Op, inputs: Vec<Option<usize>>, out: usize| Node {
            name: name.into(),
            op,
            inputs,
            outputs: vec![out],
        };
        g.nodes = vec![
            node("gemm", gemm, vec![Some(x), Some(w), Some(c)], y1),
            node("relu", Op::Unary(Unary::Relu), vec![Some(y1)], y2),
            node("matmul", Op::MatMul, vec![Some(y2), Some(b2)], y3),
        ];
        g.inputs = vec![x];
        g.outputs = vec![y3];
        assert!(matches!(prepack(&g, &g.nodes[0]).as_deref(), Some(Packed::Dense(p)) if p.k == k && p.n == n));
        assert!(matches!(prepack(&g, &g.nodes[2]).as_deref(), Some(Packed::Dense(p)) if p.k == n && p.n == n2));
        let plan = CpuPlan::new(Arc::new(g.clone()));
        let xt = Tensor::from_vec(vec![m, k], values(m * k, 4)).unwrap();
        let got = plan.run(&[&xt]).unwrap().remove(0);
        let mut want = xt;
        for nd in &g.nodes {
            let ins: Vec<Option<&Tensor>> =
                nd.inputs.iter().map(|i| i.map(|v| g.constant(v).unwrap_or(&want))).collect();
            let mut out = vec![Tensor::empty(DType::F32)];
            crate::backend::cpu::kernels::eval(&nd.op, &ins, &mut out, &mut Vec::new()).unwrap();
            want = out.remove(0);
        }
        assert_eq!(got.shape(), &[m, n2]);
        for (a, b) in got.as_slice::<f32>().unwrap().iter().zip(want.as_slice::<f32>().unwrap()) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    /// A 1x1 Conv on a one-position input (squeeze-excitation) runs on W' packed as columns,
    /// bias and fused Relu included, like the plain kernel; the same conv on a larger input is
    /// packed as conv rows instead (unless conv packing is turned off).
    #[test]
    fn one_position_pointwise_conv_runs_packed() {
        let (n, c, m) = (3, 37, 21);
        let build = |hw: usize| one_position_graph(c, m, hw);
        let g = build(1);
        assert!(matches!(prepack(&g, &g.nodes[0]).as_deref(), Some(Packed::Dense(p)) if p.k == c && p.n == m));
        let wider = prepack(&build(2), &build(2).nodes[0]);
        match packed_conv_setting() {
            Some(false) => assert!(wider.is_none()),
            _ => assert!(matches!(wider.as_deref(), Some(Packed::Conv(p)) if p.k == c && p.m == m)),
        }
        let xt = Tensor::from_vec(vec![n, c, 1, 1], values(n * c, 7)).unwrap();
        let got = CpuPlan::new(Arc::new(g.clone())).run(&[&xt]).unwrap().remove(0);
        let ins: Vec<Option<&Tensor>> =
            g.nodes[0].inputs.iter().map(|i| i.map(|v| g.constant(v).unwrap_or(&xt))).collect();
        let mut out = vec![Tensor::empty(DType::F32)];
        crate::backend::cpu::kernels::eval(&g.nodes[0].op, &ins, &mut out, &mut Vec::new()).unwrap();
        assert_eq!(got.shape(), &[n, m, 1, 1]);
        let want = out[0].as_slice::<f32>().unwrap();
        for (a, b) in got.as_slice::<f32>().unwrap().iter().zip(want) {
            let b = b.max(0.0);
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    /// The w8a8 form of the same conv runs on the QGemm GEMV tile (4-panel and 1-panel tiles,
    /// a partial panel, batch 1 and 3) with exactly the plain w8a8 kernel's floats.
    #[test]
    fn one_position_w8a8_conv_runs_on_the_gemv_tile() {
        use crate::quant::{quantize_graph, Precision};
        let (c, m) = (37, 70);
        let g = quantize_graph(&one_position_graph(c, m, 1), Precision::W8a8);
        assert!(matches!(prepack(&g, &g.nodes[0]).as_deref(), Some(Packed::QDense(p)) if p.k == c && p.n == m));
        let plan = CpuPlan::new(Arc::new(g.clone()));
        for n in [1, 3] {
            let xt = Tensor::from_vec(vec![n, c, 1, 1], values(n * c, 8)).unwrap();
            let got = plan.run(&[&xt]).unwrap().remove(0);
            let ins: Vec<Option<&Tensor>> =
                g.nodes[0].inputs.iter().map(|i| i.map(|v| g.constant(v).unwrap_or(&xt))).collect();
            let mut out = vec![Tensor::empty(DType::F32)];
            crate::backend::cpu::kernels::eval(&g.nodes[0].op, &ins, &mut out, &mut Vec::new()).unwrap();
            assert_eq!(got.shape(), &[n, m, 1, 1]);
            let want: Vec<f32> = out[0].as_slice::<f32>().unwrap().iter().map(|v| v.max(0.0)).collect();
            assert_eq!(got.as_slice::<f32>().unwrap(), &want[..], "batch {n}");
        }
    }

    /// x `[N, c, hw, hw]` -> 1x1 Conv (`m` outputs, bias) -> Relu.
    fn one_position_graph(c: usize, m: usize, hw: usize) -> Graph {
        use crate::ir::Window;
        use crate::tensor::{Dim, Shape};
        {
            let mut g = Graph::default();
            let mut xv = Value::new("x");
            xv.dtype = Some(DType::F32);
            xv.shape = Some(Shape(vec![Dim::Sym("N".into()), Dim::Known(c), Dim::Known(hw), Dim::Known(hw)]));
            let x = g.add_value(xv);
            let w = g.add_constant("w", Tensor::from_vec(vec![m, c, 1, 1], values(m * c, 5)).unwrap());
            let b = g.add_constant("b", Tensor::from_vec(vec![m], values(m, 6)).unwrap());
            let mut yv = Value::new("y");
            yv.dtype = Some(DType::F32);
            let y = g.add_value(yv);
            let mut zv = Value::new("z");
            zv.dtype = Some(DType::F32);
            let z = g.add_value(zv);
            let window = Window::square(1, 0, 1);
            let conv = Node {
                name: "conv".into(),
                op: Op::Conv { window, group: 1 },
                inputs: vec![Some(x), Some(w), Some(b)],
                outputs: vec![y],
            };
            let relu =
                Node { name: "relu".into(), op: Op::Unary(Unary::Relu), inputs: vec![Some(y)], outputs: vec![z] };
            g.nodes = vec![conv, relu];
            g.inputs = vec![x];
            g.outputs = vec![z];
            g
        }
    }
}
