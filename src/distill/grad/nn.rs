//! Gradients of the network layers: Conv and the pools (in conv.rs / pool.rs), BatchNorm with
//! frozen statistics, LayerNorm, Softmax and LogSoftmax.

use super::{conv, f32s, grad_or_zeros, pool, reduce_to_shape, GradResult};
use crate::backend::cpu::kernels::broadcast::{broadcast_strides, for_each_offsets};
use crate::ir::Op;
use crate::tensor::{norm_axis, Tensor};

pub fn supports(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv { .. }
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::MaxPool { .. }
            | Op::AveragePool { .. }
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
    )
}

pub fn vjp(
    op: &Op,
    inputs: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: &[Option<&Tensor>],
    need: &[bool],
) -> GradResult {
    let want = |i: usize| need.get(i) == Some(&true) && inputs.get(i).copied().flatten().is_some();
    let x = inputs.first().copied().flatten().ok_or("input X missing")?;
    let mut out = vec![None; inputs.len()];
    match op {
        Op::Conv { window, group } => return conv::conv(window, *group, inputs, outputs, grads, need),
        Op::BatchNorm { epsilon } => return batch_norm(inputs, outputs, grads, &want, *epsilon),
        Op::LayerNorm { axis, epsilon } => return layer_norm(inputs, outputs, grads, &want, *axis, *epsilon),
        _ if !want(0) => {}
        Op::Softmax { axis, legacy } => out[0] = Some(softmax(x, outputs[0], grads, *axis, *legacy, false)?),
        Op::LogSoftmax { axis, legacy } => out[0] = Some(softmax(x, outputs[0], grads, *axis, *legacy, true)?),
        Op::MaxPool { window, .. } => out[0] = Some(pool::pool(window, true, false, x, outputs[0], grads)?),
        Op::AveragePool { window, count_include_pad } => {
            out[0] = Some(pool::pool(window, false, *count_include_pad, x, outputs[0], grads)?)
        }
        Op::GlobalAveragePool => out[0] = Some(pool::global(false, x, outputs[0], grads)?),
        Op::GlobalMaxPool => out[0] = Some(pool::global(true, x, outputs[0], grads)?),
        _ => return Err(format!("{} is not a layer op", op.name())),
    }
    Ok(out)
}

/// Softmax: dx = y (g - sum(g y)); LogSoftmax: dx = g - exp(y) sum(g), over the softmax axis
/// (legacy: over all axes from `axis` on, as the opset < 13 2-D coercion).
fn softmax(
    x: &Tensor,
    y: &Tensor,
    grads: &[Option<&Tensor>],
    axis: i64,
    legacy: bool,
    log: bool,
) -> Result<Tensor, String> {
    let xs = x.shape();
    let ax = norm_axis(axis, xs.len()).ok_or_else(|| format!("axis {axis} is out of range for rank {}", xs.len()))?;
    let (outer, n, inner) = if legacy {
        (xs[..ax].iter().product::<usize>(), xs[ax..].iter().product::<usize>(), 1)
    } else {
        (xs[..ax].iter().product(), xs[ax], xs[ax + 1..].iter().product())
    };
    let g = grad_or_zeros(grads, &[y], 0);
    let (yv, gv) = (f32s(y, "Y")?, f32s(&g, "gradient")?);
    if gv.len() != yv.len() || yv.len() != x.len() {
        return Err(format!("gradient shape {:?} does not fit the output {:?}", g.shape(), y.shape()));
    }
    let mut dx = vec![0f32; yv.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let s: f64 = (0..n).map(|k| if log { gv[at(k)] as f64 } else { (gv[at(k)] * yv[at(k)]) as f64 }).sum();
            let s = s as f32;
            for k in 0..n {
                let j = at(k);
                dx[j] = if log { gv[j] - yv[j].exp() * s } else { yv[j] * (gv[j] - s) };
            }
        }
    }
    Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "softmax gradient shape".into())
}

/// Inference-form BatchNorm, y = (x - mean) a + B with a = scale / sqrt(var + eps): the
/// statistics are constants of the step, but get gradients too when asked.
fn batch_norm(
    inputs: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: &[Option<&Tensor>],
    want: &dyn Fn(usize) -> bool,
    eps: f32,
) -> GradResult {
    let x = inputs[0].expect("checked");
    let xs = x.shape();
    let xv = f32s(x, "X")?;
    let mut p = Vec::with_capacity(4);
    for i in 1..5 {
        p.push(f32s(
            inputs.get(i).copied().flatten().ok_or("BatchNorm needs scale, B, mean and var")?,
            "BatchNorm parameters",
        )?);
    }
    let (n, c) = (xs.first().copied().unwrap_or(1), xs.get(1).copied().unwrap_or(1));
    let sp: usize = xs.iter().skip(2).product();
    let per = p[0].len();
    if per != c && per != c * sp || p.iter().any(|v| v.len() != per) {
        return Err(format!("parameters of {per} values do not fit X {xs:?}"));
    }
    let g = grad_or_zeros(grads, outputs, 0);
    let gv = f32s(&g, "gradient")?;
    if gv.len() != xv.len() {
        return Err(format!("gradient shape {:?} does not fit X {xs:?}", g.shape()));
    }
    let block = if per == c { sp } else { 1 };
    let inv: Vec<f32> = p[3].iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut dx = want(0).then(|| vec![0f32; xv.len()]);
    // Per parameter position: sum g and sum g (x - mean).
    let (mut sg, mut sgx) = (vec![0f64; per], vec![0f64; per]);
    for img in 0..n {
        for j in 0..per {
            let at = img * c * sp + j * block;
            let a = p[0][j] * inv[j];
            for k in at..at + block {
                sg[j] += gv[k] as f64;
                sgx[j] += (gv[k] * (xv[k] - p[2][j])) as f64;
                if let Some(dx) = dx.as_mut() {
                    dx[k] = gv[k] * a;
                }
            }
        }
    }
    let shaped = |i: usize, v: Vec<f32>| Tensor::from_vec(inputs[i].expect("checked").shape().to_vec(), v);
    let mut out = vec![None; inputs.len()];
    out[0] = dx.and_then(|v| Tensor::from_vec(xs.to_vec(), v));
    if want(1) {
        out[1] = shaped(1, (0..per).map(|j| (sgx[j] as f32) * inv[j]).collect());
    }
    if want(2) {
        out[2] = shaped(2, sg.iter().map(|&s| s as f32).collect());
    }
    if want(3) {
        out[3] = shaped(3, (0..per).map(|j| -(sg[j] as f32) * p[0][j] * inv[j]).collect());
    }
    if want(4) {
        out[4] = shaped(4, (0..per).map(|j| -0.5 * (sgx[j] as f32) * p[0][j] * inv[j].powi(3)).collect());
    }
    Ok(out)
}

/// LayerNorm over axes `axis..`: with xhat = (x - mu) r, r = 1/sqrt(var + eps), y = xhat s + B:
/// dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = g s. Mean/InvStdDev outputs
/// are treated as having no gradient.
fn layer_norm(
    inputs: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: &[Option<&Tensor>],
    want: &dyn Fn(usize) -> bool,
    axis: i64,
    eps: f32,
) -> GradResult {
    let x = inputs[0].expect("checked");
    let xs = x.shape();
    let ax = norm_axis(axis, xs.len()).ok_or_else(|| format!("axis {axis} is out of range for rank {}", xs.len()))?;
    let xv = f32s(x, "X")?;
    let rows: usize = xs[..ax].iter().product();
    let inner: usize = xs[ax..].iter().product();
    let norm_shape = &xs[ax..];
    // Scale and bias expanded onto the normalised shape.
    let expand = |t: &Tensor| -> Result<Vec<f32>, String> {
        let v = f32s(t, "scale and B")?;
        if crate::tensor::broadcast_shapes(t.shape(), norm_shape).as_deref() != Some(norm_shape) {
            return Err(format!("{:?} does not broadcast to the normalised shape {norm_shape:?}", t.shape()));
        }
        let s = broadcast_strides(t.shape(), norm_shape);
        let mut e = vec![0f32; inner];
        for_each_offsets(norm_shape, [&s], |i, [j]| e[i] = v[j]);
        Ok(e)
    };
    let scale = expand(inputs.get(1).copied().flatten().ok_or("LayerNorm scale missing")?)?;
    let g = grad_or_zeros(grads, outputs, 0);
    let gv = f32s(&g, "gradient")?;
    if gv.len() != xv.len() {
        return Err(format!("gradient shape {:?} does not fit X {xs:?}", g.shape()));
    }
    let mut dx = want(0).then(|| vec![0f32; xv.len()]);
    let (mut ds, mut db) = (vec![0f32; inner], vec![0f32; inner]);
    let mut xhat = vec![0f32; inner];
    let mut dxhat = vec![0f32; inner];
    for r in 0..rows {
        let xr = &xv[r * inner..][..inner];
        let gr = &gv[r * inner..][..inner];
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        let (mut m1, mut m2) = (0f64, 0f64);
        for k in 0..inner {
            xhat[k] = ((xr[k] as f64 - mean) * rstd) as f32;
            dxhat[k] = gr[k] * scale[k];
            ds[k] += gr[k] * xhat[k];
            db[k] += gr[k];
            m1 += dxhat[k] as f64;
            m2 += (dxhat[k] * xhat[k]) as f64;
        }
        if let Some(dx) = dx.as_mut() {
            let (m1, m2) = ((m1 / inner as f64) as f32, (m2 / inner as f64) as f32);
            for k in 0..inner {
                dx[r * inner + k] = rstd as f32 * (dxhat[k] - m1 - xhat[k] * m2);
            }
        }
    }
    let mut out = vec![None; inputs.len()];
    out[0] = dx.and_then(|v| Tensor::from_vec(xs.to_vec(), v));
    if want(1) {
        out[1] = Some(reduce_to_shape(&ds, norm_shape, inputs[1].expect("checked").shape()));
    }
    if want(2) {
        out[2] = Some(reduce_to_shape(&db, norm_shape, inputs[2].expect("checked").shape()));
    }
    Ok(out)
}
