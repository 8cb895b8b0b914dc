//! BatchNormalization (inference), LayerNormalization, LRN, Softmax and LogSoftmax.

use super::broadcast::broadcast_strides;
use super::window::via_f32;
use super::{opt, req, KResult};
use crate::ir::Op;
use crate::tensor::{norm_axis, Tensor};

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], outputs: &mut [Tensor], scratch: &mut Vec<f32>) -> KResult {
    match *op {
        Op::BatchNorm { epsilon } => {
            via_f32(inputs, outputs, scratch, &[], |i, o, _| batch_norm(i, &mut o[0], epsilon))
        }
        Op::LayerNorm { axis, epsilon } => {
            via_f32(inputs, outputs, scratch, &[1, 2], |i, o, s| layer_norm(i, o, axis, epsilon, s))
        }
        Op::Lrn { size, alpha, beta, bias } => {
            via_f32(inputs, outputs, scratch, &[], |i, o, _| lrn(req(i, 0)?, &mut o[0], size, alpha, beta, bias))
        }
        Op::Softmax { axis, legacy } => {
            via_f32(inputs, outputs, scratch, &[], |i, o, _| softmax(req(i, 0)?, &mut o[0], axis, legacy, false))
        }
        Op::LogSoftmax { axis, legacy } => {
            via_f32(inputs, outputs, scratch, &[], |i, o, _| softmax(req(i, 0)?, &mut o[0], axis, legacy, true))
        }
        _ => Err(format!("{} is not a normalisation op", op.name())),
    }
}

fn f32s<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], String> {
    t.as_slice::<f32>().ok_or_else(|| format!("{what} must have the type of X, is {}", t.dtype()))
}

/// Inference-mode BatchNormalization. Parameters hold one value per channel, or (old opsets'
/// `spatial = 0`) one per channel and spatial position.
fn batch_norm(inputs: &[Option<&Tensor>], out: &mut Tensor, eps: f32) -> KResult {
    let x = req(inputs, 0)?;
    let xs = x.shape();
    let xv = f32s(x, "X")?;
    let c = xs.get(1).copied().unwrap_or(1);
    let n = xs.first().copied().unwrap_or(1);
    let sp: usize = xs.iter().skip(2).product();
    let p: Vec<&[f32]> = (1..5).map(|i| f32s(req(inputs, i)?, "scale, B, mean and var")).collect::<Result<_, _>>()?;
    let per = p[0].len();
    if per != c && per != c * sp || p.iter().any(|v| v.len() != per) {
        return Err(format!("parameters of {per} values do not fit X {xs:?}"));
    }
    let y = out.reuse_f32(xs);
    // Fold into y = x * a + b per parameter position.
    let (a, b): (Vec<f32>, Vec<f32>) = (0..per)
        .map(|i| {
            let a = p[0][i] / (p[3][i] + eps).sqrt();
            (a, p[1][i] - p[2][i] * a)
        })
        .unzip();
    let block = if per == c { sp } else { 1 };
    for img in 0..n {
        let base = img * c * sp;
        for (j, (yc, xc)) in
            y[base..base + c * sp].chunks_mut(block).zip(xv[base..base + c * sp].chunks(block)).enumerate()
        {
            let (aj, bj) = (a[j], b[j]);
            for (yv, &xv) in yc.iter_mut().zip(xc) {
                *yv = xv * aj + bj;
            }
        }
    }
    Ok(())
}

/// Normalises over axes `axis..`; optional outputs Mean and InvStdDev (shape of X with the
/// normalised axes set to 1).
fn layer_norm(
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    axis: i64,
    eps: f32,
    scratch: &mut Vec<f32>,
) -> KResult {
    let x = req(inputs, 0)?;
    let xs = x.shape();
    let ax = norm_axis(axis, xs.len()).ok_or_else(|| format!("axis {axis} is out of range for rank {}", xs.len()))?;
    let xv = f32s(x, "X")?;
    let outer: usize = xs[..ax].iter().product();
    let inner: usize = xs[ax..].iter().product();
    // Scale and bias broadcast onto the normalised shape, expanded once into scratch.
    let expand = |t: &Tensor, dst: &mut [f32]| -> KResult {
        let v = f32s(t, "scale and B")?;
        if crate::tensor::broadcast_shapes(t.shape(), &xs[ax..]).as_deref() != Some(&xs[ax..]) {
            return Err(format!("{:?} does not broadcast to the normalised shape {:?}", t.shape(), &xs[ax..]));
        }
        if v.len() == inner {
            dst.copy_from_slice(v);
            return Ok(());
        }
        let st = broadcast_strides(t.shape(), &xs[ax..]);
        let dims = &xs[ax..];
        for (i, d) in dst.iter_mut().enumerate() {
            let (mut rem, mut off) = (i, 0);
            for k in (0..dims.len()).rev() {
                off += (rem % dims[k]) * st[k];
                rem /= dims[k];
            }
            *d = v[off];
        }
        Ok(())
    };
    scratch.resize(2 * inner, 0.0);
    let (sc, bi) = scratch.split_at_mut(inner);
    expand(req(inputs, 1)?, sc)?;
    match opt(inputs, 2) {
        Some(b) => expand(b, bi)?,
        None => bi.fill(0.0),
    }
    let mut sshape = xs.to_vec();
    sshape[ax..].fill(1);
    let (y, rest) = outputs.split_first_mut().ok_or("no output")?;
    let y = y.reuse_f32(xs);
    let mut stats: Vec<&mut [f32]> = rest.iter_mut().take(2).map(|t| t.reuse_f32(&sshape)).collect();
    for o in 0..outer {
        let row = &xv[o * inner..][..inner];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / inner.max(1) as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner.max(1) as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        let yr = &mut y[o * inner..][..inner];
        for i in 0..inner {
            yr[i] = ((row[i] as f64 - mean) * inv) as f32 * sc[i] + bi[i];
        }
        if let Some(m) = stats.get_mut(0) {
            m[o] = mean as f32;
        }
        if let Some(s) = stats.get_mut(1) {
            s[o] = inv as f32;
        }
    }
    Ok(())
}

/// Cross-channel LRN: `x / (bias + alpha/size * sum of squares over the channel window)^beta`.
fn lrn(x: &Tensor, out: &mut Tensor, size: usize, alpha: f32, beta: f32, bias: f32) -> KResult {
    let xs = x.shape();
    if xs.len() < 2 || size == 0 {
        return Err(format!("LRN needs rank >= 2 and size > 0, got {xs:?} and {size}"));
    }
    let xv = f32s(x, "X")?;
    let (n, c) = (xs[0], xs[1]);
    let sp: usize = xs[2..].iter().product();
    let (lo, hi) = ((size - 1) / 2, (size - 1).div_ceil(2));
    let y = out.reuse_f32(xs);
    for img in 0..n {
        for ch in 0..c {
            let (first, last) = (ch.saturating_sub(lo), (ch + hi).min(c - 1));
            for s in 0..sp {
                let mut sq = 0.0;
                for k in first..=last {
                    let v = xv[(img * c + k) * sp + s];
                    sq += v * v;
                }
                let i = (img * c + ch) * sp + s;
                y[i] = xv[i] / (bias + alpha / size as f32 * sq).powf(beta);
            }
        }
    }
    Ok(())
}

/// Softmax/LogSoftmax along `axis`; `legacy` flattens to 2-D at `axis` (opset < 13).
fn softmax(x: &Tensor, out: &mut Tensor, axis: i64, legacy: bool, log: bool) -> KResult {
    let xs = x.shape();
    let xv = f32s(x, "X")?;
    let ax = norm_axis(axis, xs.len()).ok_or_else(|| format!("axis {axis} is out of range for rank {}", xs.len()))?;
    let outer: usize = xs[..ax].iter().product();
    let (dim, inner) = if legacy || xs.is_empty() {
        (xs[ax.min(xs.len())..].iter().product::<usize>(), 1)
    } else {
        (xs[ax], xs[ax + 1..].iter().product())
    };
    let y = out.reuse_f32(xs);
    if dim == 0 {
        return Ok(());
    }
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * dim + k) * inner + i;
            let max = (0..dim).map(|k| xv[at(k)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for k in 0..dim {
                let e = (xv[at(k)] - max).exp();
                y[at(k)] = e;
                sum += e;
            }
            if log {
                let l = sum.ln();
                for k in 0..dim {
                    y[at(k)] = xv[at(k)] - max - l;
                }
            } else {
                for k in 0..dim {
                    y[at(k)] /= sum;
                }
            }
        }
    }
    Ok(())
}
