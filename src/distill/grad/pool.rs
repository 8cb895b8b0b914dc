//! Pool gradients: MaxPool routes each output's gradient to its window's arg-max (recomputed
//! from the input with the forward kernel's tie rule: the first maximum), AveragePool spreads it
//! over the window with the forward divisor, the global pools over the whole plane.

use super::conv::{resolve, Taps};
use super::{f32s, grad_or_zeros};
use crate::ir::Window;
use crate::tensor::Tensor;

/// Gradient of X for MaxPool (`max`) or AveragePool (count_include_pad = `include_pad`).
pub fn pool(
    w: &Window,
    max: bool,
    include_pad: bool,
    x: &Tensor,
    y: &Tensor,
    grads: &[Option<&Tensor>],
) -> Result<Tensor, String> {
    let xs = x.shape();
    if xs.len() < 3 || w.kernel.len() != xs.len() - 2 {
        return Err(format!("kernel_shape {:?} does not fit input {xs:?}", w.kernel));
    }
    let g = resolve(w, &xs[2..], &w.kernel)?;
    let xv = f32s(x, "X")?;
    let dy = grad_or_zeros(grads, &[y], 0);
    let dyv = f32s(&dy, "gradient")?;
    let (isz, osz) = (g.in_size(), g.out_size());
    let planes = xs[0] * xs[1];
    if dyv.len() != planes * osz {
        return Err(format!("gradient shape {:?} does not fit the pool output", dy.shape()));
    }
    let taps: Vec<Vec<(Vec<Option<usize>>, usize)>> =
        (0..3).map(|d| (0..g.out[d]).map(|o| g.taps(d, o)).collect()).collect();
    let [_, i1, i2] = g.input;
    let [o0, o1, o2] = g.out;
    let mut dx = vec![0f32; xv.len()];
    let mut win = Vec::new();
    for pl in 0..planes {
        let xp = &xv[pl * isz..][..isz];
        let dxp = &mut dx[pl * isz..][..isz];
        let dyp = &dyv[pl * osz..][..osz];
        let mut pos = 0;
        for y0 in 0..o0 {
            for y1 in 0..o1 {
                for y2 in 0..o2 {
                    let ((t0, w0), (t1, w1), (t2, w2)) = (&taps[0][y0], &taps[1][y1], &taps[2][y2]);
                    win.clear();
                    for a in t0.iter().flatten() {
                        for b in t1.iter().flatten() {
                            for c in t2.iter().flatten() {
                                win.push((a * i1 + b) * i2 + c);
                            }
                        }
                    }
                    let gy = dyp[pos];
                    pos += 1;
                    if max {
                        let mut best: Option<usize> = None;
                        for &o in &win {
                            if best.is_none_or(|b| xp[o] > xp[b]) {
                                best = Some(o);
                            }
                        }
                        if let Some(b) = best {
                            dxp[b] += gy;
                        }
                    } else {
                        let count = if include_pad { w0 * w1 * w2 } else { win.len() };
                        if count > 0 {
                            let share = gy / count as f32;
                            for &o in &win {
                                dxp[o] += share;
                            }
                        }
                    }
                }
            }
        }
    }
    Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "pool gradient shape".into())
}

/// GlobalAveragePool / GlobalMaxPool over all spatial positions of each plane.
pub fn global(max: bool, x: &Tensor, y: &Tensor, grads: &[Option<&Tensor>]) -> Result<Tensor, String> {
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(format!("input must have rank >= 2, has shape {xs:?}"));
    }
    let xv = f32s(x, "X")?;
    let dy = grad_or_zeros(grads, &[y], 0);
    let dyv = f32s(&dy, "gradient")?;
    let sp: usize = xs[2..].iter().product();
    if dyv.len() * sp != xv.len() {
        return Err(format!("gradient shape {:?} does not fit the pool output", dy.shape()));
    }
    let mut dx = vec![0f32; xv.len()];
    for (pl, &gy) in dyv.iter().enumerate() {
        let xp = &xv[pl * sp..][..sp];
        let dxp = &mut dx[pl * sp..][..sp];
        if max {
            let mut best: Option<usize> = None;
            for (o, &v) in xp.iter().enumerate() {
                if best.is_none_or(|b| v > xp[b]) {
                    best = Some(o);
                }
            }
            if let Some(b) = best {
                dxp[b] += gy;
            }
        } else {
            let share = gy / sp.max(1) as f32;
            dxp.iter_mut().for_each(|d| *d = share);
        }
    }
    Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "pool gradient shape".into())
}
