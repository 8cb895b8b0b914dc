//! Gradients of the reductions: each input element gets its output's gradient times the
//! partial derivative of the reduction (1, 1/count, 2x, x/y, exp(x - y), product of the
//! others; Max/Min route it to the first element equal to the result).

use super::{f32s, grad_or_zeros, GradResult};
use crate::backend::cpu::kernels::broadcast::for_each_offsets;
use crate::ir::{Op, ReduceKind};
use crate::tensor::{norm_axis, strides, Tensor};

pub fn supports(op: &Op) -> bool {
    matches!(op, Op::Reduce { .. })
}

pub fn vjp(
    op: &Op,
    inputs: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: &[Option<&Tensor>],
    need: &[bool],
) -> GradResult {
    let Op::Reduce { kind, noop_with_empty_axes, .. } = op else {
        return Err(format!("{} is not a reduction", op.name()));
    };
    let mut out = vec![None; inputs.len()];
    let Some(x) = inputs.first().copied().flatten().filter(|_| need.first() == Some(&true)) else {
        return Ok(out);
    };
    let g = grad_or_zeros(grads, outputs, 0);
    let (xv, yv, gv) = (f32s(x, "X")?, f32s(outputs[0], "Y")?, f32s(&g, "gradient")?);
    let xs = x.shape();
    let axes = match inputs.get(1).copied().flatten() {
        Some(t) => t.to_i64_vec().ok_or("axes must be integers")?,
        None => Vec::new(),
    };
    if axes.is_empty() && *noop_with_empty_axes {
        out[0] = Some(Tensor::from_vec(xs.to_vec(), gv.to_vec()).ok_or("gradient does not fit X")?);
        return Ok(out);
    }
    let mut red = vec![axes.is_empty(); xs.len()];
    for a in axes {
        red[norm_axis(a, xs.len()).ok_or_else(|| format!("axis {a} is out of range for rank {}", xs.len()))?] = true;
    }
    // Output offset of each input element: strides of the kept shape, 0 along reduced axes.
    let kept: Vec<usize> = xs.iter().zip(&red).map(|(&d, &r)| if r { 1 } else { d }).collect();
    let ostr: Vec<usize> = strides(&kept).iter().zip(&red).map(|(&s, &r)| if r { 0 } else { s }).collect();
    let n_out: usize = kept.iter().product();
    if gv.len() != n_out || yv.len() != n_out {
        return Err(format!("gradient shape {:?} does not fit the reduction of {xs:?}", g.shape()));
    }
    let count = xv.len().checked_div(n_out).unwrap_or(0);
    let mut dx = vec![0f32; xv.len()];
    match kind {
        ReduceKind::Sum => for_each_offsets(xs, [&ostr], |i, [o]| dx[i] = gv[o]),
        ReduceKind::Mean => for_each_offsets(xs, [&ostr], |i, [o]| dx[i] = gv[o] / count as f32),
        ReduceKind::SumSquare => for_each_offsets(xs, [&ostr], |i, [o]| dx[i] = 2.0 * xv[i] * gv[o]),
        ReduceKind::L2 => {
            for_each_offsets(xs, [&ostr], |i, [o]| dx[i] = if yv[o] > 0.0 { gv[o] * xv[i] / yv[o] } else { 0.0 })
        }
        ReduceKind::LogSumExp => for_each_offsets(xs, [&ostr], |i, [o]| dx[i] = gv[o] * (xv[i] - yv[o]).exp()),
        ReduceKind::L1 => {
            for_each_offsets(xs, [&ostr], |i, [o]| dx[i] = gv[o] * xv[i].signum() * (xv[i] != 0.0) as u8 as f32)
        }
        // y = ln(sum x): dy/dx = 1 / sum x = exp(-y)
        ReduceKind::LogSum => for_each_offsets(xs, [&ostr], |i, [o]| dx[i] = gv[o] * (-yv[o]).exp()),
        ReduceKind::Max | ReduceKind::Min => {
            let mut taken = vec![false; n_out];
            for_each_offsets(xs, [&ostr], |i, [o]| {
                if !taken[o] && xv[i] == yv[o] {
                    taken[o] = true;
                    dx[i] = gv[o];
                }
            });
        }
        ReduceKind::Prod => {
            // Product of the nonzero elements and the zero count per output: exact with zeros.
            let (mut pnz, mut zeros) = (vec![1f64; n_out], vec![0usize; n_out]);
            for_each_offsets(xs, [&ostr], |i, [o]| {
                if xv[i] == 0.0 {
                    zeros[o] += 1;
                } else {
                    pnz[o] *= xv[i] as f64;
                }
            });
            for_each_offsets(xs, [&ostr], |i, [o]| {
                let others = match (zeros[o], xv[i] == 0.0) {
                    (0, _) => pnz[o] / xv[i] as f64,
                    (1, true) => pnz[o],
                    _ => 0.0,
                };
                dx[i] = gv[o] * others as f32;
            });
        }
    }
    out[0] = Some(Tensor::from_vec(xs.to_vec(), dx).ok_or("gradient shape")?);
    Ok(out)
}
