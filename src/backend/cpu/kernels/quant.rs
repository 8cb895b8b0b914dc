//! Quantized-weight GEMM ([`Op::QGemm`](crate::ir::Op::QGemm)): weights stay packed; blocks of
//! output channels are dequantized into `scratch` (f32) and multiplied with sgemm, so the
//! f32 copy alive at any time is one block, not the whole matrix.

use super::broadcast::broadcast_strides;
use super::linalg::sgemm;
use super::KResult;
use crate::quant::QWeight;
use crate::tensor::{broadcast_shapes, Tensor};

/// Output channels dequantized per block.
const BLOCK_N: usize = 64;

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
    let av = a.as_slice::<f32>().ok_or_else(|| format!("QGemm needs f32 activations, got {}", a.dtype()))?;
    let (n, k) = (w.n, w.k);
    let ash = a.shape();
    if ash.last() != Some(&k) {
        return Err(format!("QGemm input {ash:?} does not end with K = {k}"));
    }
    let m = av.len() / k.max(1);
    let mut osh = ash[..ash.len() - 1].to_vec();
    osh.push(n);
    let o = out.reuse_f32(&osh);
    // Bias first (beta * C), then accumulate the product on top (sgemm beta = 1).
    let acc_beta = match c.filter(|_| beta != 0.0) {
        Some(c) => {
            let cv = c.as_slice::<f32>().ok_or("QGemm C must be f32")?;
            if broadcast_shapes(c.shape(), &[m, n]).as_deref() != Some(&[m, n][..]) {
                return Err(format!("QGemm C of shape {:?} does not broadcast to [{m}, {n}]", c.shape()));
            }
            let s = broadcast_strides(c.shape(), &[m, n]);
            for i in 0..m {
                for j in 0..n {
                    o[i * n + j] = beta * cv[i * s[0] + j * s[1]];
                }
            }
            1.0
        }
        None => 0.0,
    };
    if super::qgemm_i8::parts(w).is_some() {
        return super::qgemm_i8::qgemm_w8a8(w, av, m, alpha, acc_beta != 0.0, o, scratch);
    }
    let bn = BLOCK_N.min(n.max(1));
    scratch.resize(bn * k, 0.0);
    let mut j0 = 0;
    while j0 < n {
        let nb = bn.min(n - j0);
        for r in 0..nb {
            w.dequantize_row(j0 + r, &mut scratch[r * k..(r + 1) * k]);
        }
        // A[m,k] x Wblock^T[k,nb] into columns j0..j0+nb of the output.
        sgemm(m, k, nb, alpha, av, (k as isize, 1), scratch, (1, k as isize), acc_beta, &mut o[j0..], n as isize);
        j0 += nb;
    }
    Ok(())
}

/// [`Op::QConv`](crate::ir::Op::QConv): dequantizes the weight into a tensor (the node's
/// scratch allocation) and runs the f32 conv kernel. Memory saving is for storage only: the f32
/// weight exists while the node runs; the conv kernel's own temporaries are allocated per call.
pub fn qconv(
    op: &crate::ir::Op,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    let crate::ir::Op::QConv { window, group, w, wshape } = op else { return Err("not a QConv".into()) };
    if super::qgemm_i8::parts(w).is_some() {
        return super::qgemm_i8::qconv_w8a8(op, inputs, outputs, scratch);
    }
    let mut buf = std::mem::take(scratch);
    buf.resize(w.n * w.k, 0.0);
    for r in 0..w.n {
        w.dequantize_row(r, &mut buf[r * w.k..(r + 1) * w.k]);
    }
    let wt = Tensor::from_vec(wshape.clone(), buf).ok_or("QConv weight shape does not match its data")?;
    let conv = crate::ir::Op::Conv { window: window.clone(), group: *group };
    let ins = [inputs.first().copied().flatten(), Some(&wt), inputs.get(1).copied().flatten()];
    let mut conv_scratch = Vec::new();
    let r = super::eval(&conv, &ins, outputs, &mut conv_scratch);
    if let crate::tensor::Data::F32(v) = wt.into_data() {
        *scratch = v;
    }
    r
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
}
