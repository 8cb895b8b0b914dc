//! Quantized-weight GEMM ([`Op::QGemm`](crate::ir::Op::QGemm)) and convolution: bias, shape
//! checks and dispatch. Weight-only int8/int4/f16 products run on `qdense.rs`, which reads the
//! packed weight in place; w8a8 on the integer kernels of `qgemm_i8.rs`.

use super::KResult;
use crate::quant::QWeight;
use crate::tensor::Tensor;

/// `out[.., n] = alpha * a[.., k] . w[n, k] + beta * c` (c broadcast to `[m, n]`).
pub fn qgemm(
    w: &QWeight,
    a: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    out: &mut Tensor,
    scratch: &mut Vec<f32>,
) -> KResult {
    let (av, m, o, accumulate) = prologue(a, c, beta, (w.n, w.k), out)?;
    if super::qgemm_i8::parts(w).is_some() {
        return super::qgemm_i8::qgemm_w8a8(w, av, m, alpha, accumulate, o, scratch);
    }
    super::qdense::qdense(super::microkernel::Isa::detect(), w, av, m, alpha, accumulate, o)
}

/// [`qgemm`] of a small weight-only QGemm whose weight the plan dequantized once into the f32
/// panels `p` (`K x N`): the packed f32 GEMM, as a Gemm runs.
pub fn qgemm_dequantized(
    p: &super::packed::PackedCols,
    a: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    out: &mut Tensor,
) -> KResult {
    let (av, m, o, accumulate) = prologue(a, c, beta, (p.n, p.k), out)?;
    let isa = super::microkernel::Isa::detect();
    super::packed::gemm_cols(isa, av, (p.k, 1), m, p, o, alpha, accumulate);
    Ok(())
}

/// A's values, its rows, the output, and whether the product adds to it.
type Prologue<'a> = (&'a [f32], usize, &'a mut [f32], bool);

/// QGemm's checks and output: A's values and rows, the output `[.., n]` holding `beta * C`
/// first when C is given (then the product accumulates on top).
fn prologue<'a>(
    a: &'a Tensor,
    c: Option<&Tensor>,
    beta: f32,
    (n, k): (usize, usize),
    out: &'a mut Tensor,
) -> Result<Prologue<'a>, String> {
    let av = a.as_slice::<f32>().ok_or_else(|| format!("QGemm needs f32 activations, got {}", a.dtype()))?;
    let ash = a.shape();
    if ash.last() != Some(&k) {
        return Err(format!("QGemm input {ash:?} does not end with K = {k}"));
    }
    let m = av.len() / k.max(1);
    let mut osh = crate::tensor::Dims::from_slice(&ash[..ash.len() - 1]);
    osh.push(n);
    let o = out.reuse_f32(&osh);
    let accumulate = super::linalg::fill_bias("QGemm", o, c, beta, m, n)? != 0.0;
    Ok((av, m, o, accumulate))
}

thread_local! {
    /// QConv's dequantized weight: one buffer per thread, as large as the largest QConv weight
    /// run on it, instead of an f32 copy kept by every node.
    static QCONV_WEIGHT: std::cell::Cell<Tensor> = std::cell::Cell::new(Tensor::placeholder());
    /// The same weight in the f32 tile's row panels (and one panel's staging rows), for the
    /// convs the plan packs in f32.
    static QCONV_PACKED: std::cell::Cell<Option<(super::packed::PackedRows, Vec<f32>)>> = const { std::cell::Cell::new(None) };
}

/// [`Op::QConv`](crate::ir::Op::QConv): dequantizes the weight (vectorized,
/// [`dequantize_into`](super::qdense::dequantize_into)) into a per-thread buffer and runs the
/// f32 conv kernel, with the fused activation `act`, on the node's scratch (its im2col buffer
/// then carries over run to run instead of being allocated per call).
pub fn qconv(
    op: &crate::ir::Op,
    act: Option<&crate::ir::Unary>,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    let crate::ir::Op::QConv { window, group, w, wshape } = op else { return Err("not a QConv".into()) };
    if super::qgemm_i8::parts(w).is_some() {
        super::qgemm_i8::qconv_w8a8(op, inputs, outputs, scratch)?;
        if let Some(u) = act {
            super::activation::apply(u, outputs[0].as_mut_slice::<f32>().ok_or("QConv output is f32")?);
        }
        return Ok(());
    }
    if let Some(r) = one_position(op, act, inputs, outputs) {
        return r;
    }
    // Where the f32 conv would run on a weight packed at plan time, this one runs on the
    // weight packed now, in a per-thread buffer: the same kernel as f32 (patches straight into
    // panels) and no matrixmultiply, which allocates its packing buffers on every call.
    let packs = crate::backend::cpu::prepack::packed_conv_dims(wshape, *group);
    let isa = super::microkernel::Isa::detect();
    let mut wt = QCONV_WEIGHT.replace(Tensor::placeholder());
    if let Some((mg, k)) = packs {
        // Dequantized straight into the panels: no f32 copy of W in row order. The conv reads
        // only the weight input's shape then (a packed weight for this shape is all it uses on
        // a non-depthwise conv the plan packs), so `wt` is sized, not written.
        wt.reuse_f32(wshape);
        let mut staged = QCONV_PACKED.take().unwrap_or_default();
        let (p, tmp) = (&mut staged.0, &mut staged.1);
        let r = p
            .repack_with(*group, mg, k, tmp, |r0, dst| {
                super::qdense::dequantize_rows_into(isa, w, r0..r0 + dst.len() / k, dst)
            })
            .and_then(|()| {
                // The weight input only gives the conv its shape: the panels hold the values.
                let ins = [inputs.first().copied().flatten(), Some(&wt), inputs.get(1).copied().flatten()];
                super::window::via_f32(&ins, outputs, scratch, &[], |i, o, s| {
                    super::conv::conv(window, *group, act, Some(&*p), i, &mut o[0], s)
                })
            });
        QCONV_PACKED.set(Some(staged));
        QCONV_WEIGHT.set(wt);
        return r;
    }
    let r = (|| {
        let wv = wt.reuse_f32(wshape);
        if wv.len() != w.n * w.k {
            return Err("QConv weight shape does not match its data".to_string());
        }
        super::qdense::dequantize_into(isa, w, wv)?;
        let ins = [inputs.first().copied().flatten(), Some(&wt), inputs.get(1).copied().flatten()];
        // The activation fused by the plan runs in the conv's output pass.
        super::window::via_f32(&ins, outputs, scratch, &[], |i, o, s| {
            super::conv::conv(window, *group, act, None, i, &mut o[0], s)
        })
    })();
    QCONV_WEIGHT.set(wt);
    r
}

/// A weight-only 1x1, ungrouped QConv on a one-position input (`[N,C,1..]`: squeeze-excitation
/// convs, a conv classifier head) is the product `X[N,C] W'`: run on the quantized weight in
/// place ([`qdense`](super::qdense::qdense)) instead of dequantizing all of W per call, which
/// made MobileNetV3's int8 576x1024 head conv slower than its f32 GEMV. `None`: not this case.
fn one_position(
    op: &crate::ir::Op,
    act: Option<&crate::ir::Unary>,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
) -> Option<KResult> {
    let crate::ir::Op::QConv { window, group: 1, w, wshape } = op else { return None };
    let x = inputs.first().copied().flatten()?;
    let (xs, xv) = (x.shape(), x.as_slice::<f32>()?);
    let pointwise = wshape.len() == xs.len() && wshape.len() > 2 && wshape[2..].iter().all(|&k| k == 1);
    let unpadded = window.pads.iter().all(|&p| p == 0) && window.auto_pad == crate::ir::AutoPad::NotSet;
    if !pointwise || !unpadded || !xs[2..].iter().all(|&d| d == 1) || xs[1] != w.k || !super::qdense::supports(w) {
        return None;
    }
    let (n, m) = (xs[0], w.n);
    let bias = match inputs.get(1).copied().flatten().map(|b| b.as_slice::<f32>()) {
        None => None,
        Some(Some(b)) if b.len() == m => Some(b),
        Some(_) => return Some(Err(format!("QConv bias must be {m} f32 values"))),
    };
    let mut oshape: crate::tensor::Dims = smallvec::smallvec![n, m];
    oshape.extend(std::iter::repeat_n(1, xs.len() - 2));
    let y = outputs[0].reuse_f32(&oshape);
    if let Some(b) = bias {
        y.chunks_exact_mut(m).for_each(|row| row.copy_from_slice(b));
    }
    let r = super::qdense::qdense(super::microkernel::Isa::detect(), w, xv, n, 1.0, bias.is_some(), y);
    if let (Ok(()), Some(u)) = (&r, act) {
        super::activation::apply(u, y);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::Precision;

    #[test]
    fn matches_dequantized_reference() {
        let (m, n, k) = (3, 70, 37);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.1).collect();
        for p in [Precision::F16, Precision::Int8, Precision::Int4, Precision::W8a8] {
            let q = QWeight::quantize(&w, n, k, p).unwrap();
            let d = q.dequantize();
            let a = Tensor::from_vec(vec![m, k], x.clone()).unwrap();
            let c = Tensor::from_vec(vec![n], bias.clone()).unwrap();
            let mut out = Tensor::placeholder();
            let mut scratch = Vec::new();
            qgemm(&q, &a, Some(&c), 0.5, 2.0, &mut out, &mut scratch).unwrap();
            let o = out.as_slice::<f32>().unwrap();
            assert_eq!(out.shape(), &[m, n]);
            for i in 0..m {
                for j in 0..n {
                    let e: f32 = 0.5 * (0..k).map(|kk| x[i * k + kk] * d[j * k + kk]).sum::<f32>() + 2.0 * bias[j];
                    // w8a8 also rounds the activations: at most half a step (max|row| / 254) each.
                    let tol = match p {
                        Precision::W8a8 => {
                            let amax = x[i * k..][..k].iter().fold(0f32, |m, v| m.max(v.abs()));
                            0.5 * (0..k).map(|kk| d[j * k + kk].abs()).sum::<f32>() * amax / 254.0 + 1e-4
                        }
                        _ => 1e-4 * (1.0 + e.abs()),
                    };
                    assert!((o[i * n + j] - e).abs() <= tol, "{p} {i},{j}: {} vs {e}", o[i * n + j]);
                }
            }
        }
    }

    /// A weight-only 1x1 QConv on one-position input (the in-place GEMV path) equals the f32
    /// conv on the dequantized weight, bias and fused HardSwish included.
    #[test]
    fn one_position_qconv_matches_dequantized_conv() {
        use crate::ir::{Op, Unary, Window};
        let (nb, c, m) = (3, 45, 29);
        let wf: Vec<f32> = (0..m * c).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let x = Tensor::from_vec(vec![nb, c, 1, 1], (0..nb * c).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect())
            .unwrap();
        let b = Tensor::from_vec(vec![m], (0..m).map(|j| j as f32 * 0.1 - 1.0).collect()).unwrap();
        let window = Window::square(1, 0, 1);
        for p in [Precision::F16, Precision::Int8, Precision::Int4] {
            let q = std::sync::Arc::new(QWeight::quantize(&wf, m, c, p).unwrap());
            let op = Op::QConv { window: window.clone(), group: 1, w: q.clone(), wshape: vec![m, c, 1, 1] };
            let mut got = vec![Tensor::placeholder()];
            qconv(&op, Some(&Unary::HardSwish), &[Some(&x), Some(&b)], &mut got, &mut Vec::new()).unwrap();
            let wt = Tensor::from_vec(vec![m, c, 1, 1], q.dequantize()).unwrap();
            let conv = Op::Conv { window: window.clone(), group: 1 };
            let mut want = vec![Tensor::placeholder()];
            let ins = [Some(&x), Some(&wt), Some(&b)];
            super::super::conv::eval_fused(&conv, Some(&Unary::HardSwish), &ins, &mut want, &mut Vec::new()).unwrap();
            assert_eq!(got[0].shape(), &[nb, m, 1, 1]);
            for (a, e) in got[0].as_slice::<f32>().unwrap().iter().zip(want[0].as_slice::<f32>().unwrap()) {
                assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{p}: {a} vs {e}");
            }
        }
    }

    /// QGemm -> Relu -> QConv -> Relu through the CPU plan: both activations fuse into their
    /// producers (2 steps) and the result equals the unfused kernels run node by node.
    #[test]
    fn plan_fuses_activations_into_qgemm_and_qconv() {
        use crate::backend::cpu::CpuPlan;
        use crate::backend::Executable;
        use crate::ir::{AutoPad, Graph, Node, Op, Unary, Value, Window};
        use crate::tensor::DType;
        use std::sync::Arc;
        let (m, k, n) = (2, 37, 18); // QGemm out [2, 18] = QConv in [1, 2, 3, 6]
        let vals = |len: usize, seed: usize| -> Vec<f32> {
            (0..len).map(|i| ((i * 7919 + seed * 31) % 97) as f32 / 48.0 - 1.0).collect()
        };
        for p in [Precision::Int8, Precision::Int4, Precision::F16] {
            let mut g = Graph::default();
            let mut v = |name: &str| {
                let mut v = Value::new(name);
                v.dtype = Some(DType::F32);
                g.add_value(v)
            };
            let (x, y1, y2, r, y3, y4) = (v("x"), v("y1"), v("y2"), v("r"), v("y3"), v("y4"));
            let shape = g.add_constant("shape", Tensor::from_vec(vec![4], vec![1i64, 2, 3, 6]).unwrap());
            let qg = QWeight::quantize(&vals(n * k, 1), n, k, p).unwrap();
            let qc = QWeight::quantize(&vals(4 * 2 * 9, 2), 4, 2 * 9, p).unwrap();
            let window = Window {
                kernel: vec![3, 3],
                strides: vec![1, 1],
                pads: vec![1, 1, 1, 1],
                dilations: vec![1, 1],
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
            };
            let node = |name: &str, op: Op, inputs: Vec<Option<usize>>, out: usize| Node {
                name: name.into(),
                op,
                inputs,
                outputs: vec![out],
            };
            g.nodes = vec![
                node("qgemm", Op::QGemm { w: Arc::new(qg), alpha: 1.0, beta: 0.0 }, vec![Some(x)], y1),
                node("relu1", Op::Unary(Unary::Relu), vec![Some(y1)], y2),
                node("reshape", Op::Reshape { allowzero: false }, vec![Some(y2), Some(shape)], r),
                node(
                    "qconv",
                    Op::QConv { window, group: 1, w: Arc::new(qc), wshape: vec![4, 2, 3, 3] },
                    vec![Some(r)],
                    y3,
                ),
                node("relu2", Op::Unary(Unary::Relu), vec![Some(y3)], y4),
            ];
            g.inputs = vec![x];
            g.outputs = vec![y4];
            let plan = CpuPlan::new(Arc::new(g.clone()));
            assert_eq!(plan.step_count(), 3, "{p}: both activations fused");
            let xt = Tensor::from_vec(vec![m, k], vals(m * k, 3)).unwrap();
            let got = plan.run(&[&xt]).unwrap().remove(0);
            let mut want = xt;
            for nd in &g.nodes {
                let ins: Vec<Option<&Tensor>> =
                    nd.inputs.iter().map(|i| i.map(|v| g.constant(v).unwrap_or(&want))).collect();
                let mut out = vec![Tensor::empty(DType::F32)];
                super::super::eval(&nd.op, &ins, &mut out, &mut Vec::new()).unwrap();
                want = out.remove(0);
            }
            assert_eq!(got.shape(), &[1, 4, 3, 6]);
            assert!(want.as_slice::<f32>().unwrap().contains(&0.0), "relu clipped something");
            for (a, b) in got.as_slice::<f32>().unwrap().iter().zip(want.as_slice::<f32>().unwrap()) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{p}: {a} vs {b}");
            }
        }
    }
}
