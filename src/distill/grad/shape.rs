//! Gradients of the data-movement ops: the gradient moves back along the same index map as the
//! forward data (reshapes keep it, Transpose inverts the permutation, Slice/Pad/Gather scatter
//! it, Concat/Split cut and join it). Index-valued inputs (shape, axes, indices) get none.

use super::{f32s, grad_or_zeros, reduce_to_shape, GradResult};
use crate::backend::cpu::kernels::broadcast::for_each_offsets;
use crate::backend::cpu::kernels::slice_pad::{pad_source, slice_axis};
use crate::ir::{Op, PadMode};
use crate::tensor::{norm_axis, strides, Tensor};

pub fn supports(op: &Op) -> bool {
    match op {
        Op::Cast { to, .. } => to.is_float() && !to.is_float8(),
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Identity
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice
        | Op::Gather { .. }
        | Op::Pad { .. }
        | Op::Expand
        | Op::Tile
        | Op::GatherElements { .. }
        | Op::Dropout => true,
        // Integer outputs: no gradient flows back through them.
        Op::Shape { .. }
        | Op::Size
        | Op::ArgMax { .. }
        | Op::ArgMin { .. }
        | Op::ConstantOfShape { .. }
        | Op::Range => true,
        _ => false,
    }
}

pub fn vjp(
    op: &Op,
    inputs: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: &[Option<&Tensor>],
    need: &[bool],
) -> GradResult {
    let mut out = vec![None; inputs.len()];
    let wants = |i: usize| need.get(i) == Some(&true) && inputs.get(i).copied().flatten().is_some();
    if let Op::Concat { axis } = op {
        let g = grad_or_zeros(grads, outputs, 0);
        return concat(inputs, &g, *axis, &wants);
    }
    if let Op::Split { axis, .. } = op {
        if wants(0) {
            out[0] = Some(split(inputs[0].expect("checked"), outputs, grads, *axis)?);
        }
        return Ok(out);
    }
    if !wants(0)
        || matches!(
            op,
            Op::Shape { .. }
                | Op::Size
                | Op::ArgMax { .. }
                | Op::ArgMin { .. }
                | Op::ConstantOfShape { .. }
                | Op::Range
        )
    {
        return Ok(out);
    }
    let x = inputs[0].expect("checked");
    let g = grad_or_zeros(grads, outputs, 0);
    let gv = f32s(&g, "gradient")?;
    out[0] = Some(match op {
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Identity | Op::Dropout => {
            Tensor::from_vec(x.shape().to_vec(), gv.to_vec()).ok_or("gradient does not fit the input")?
        }
        Op::Cast { .. } => {
            if !x.dtype().is_float() || x.dtype().is_float8() {
                return Err(format!("Cast from {} has no gradient", x.dtype()));
            }
            Tensor::from_vec(x.shape().to_vec(), gv.to_vec()).ok_or("gradient does not fit the input")?
        }
        Op::Expand => reduce_to_shape(gv, g.shape(), x.shape()),
        Op::Transpose { perm } => transpose(x.shape(), perm, gv)?,
        Op::Slice => slice(inputs, x.shape(), &g)?,
        Op::Pad { mode } => pad(*mode, inputs, x.shape(), &g)?,
        Op::Gather { axis } => gather(x.shape(), inputs.get(1).copied().flatten(), *axis, &g)?,
        Op::GatherElements { axis } => gather_elements(x.shape(), inputs.get(1).copied().flatten(), *axis, gv)?,
        Op::Tile => tile(x.shape(), g.shape(), gv)?,
        _ => return Err(format!("{} is not a shape op", op.name())),
    });
    Ok(out)
}

fn ints(t: &Tensor, what: &str) -> Result<Vec<i64>, String> {
    t.to_i64_vec().ok_or_else(|| format!("{what} must be integers, is {}", t.dtype()))
}

fn axis_of(axis: i64, rank: usize) -> Result<usize, String> {
    norm_axis(axis, rank).ok_or_else(|| format!("axis {axis} is out of range for rank {rank}"))
}

/// Output dim i is input dim perm[i]: read the gradient in output order, write at the input
/// offsets seen through the permuted strides.
fn transpose(xs: &[usize], perm: &[usize], g: &[f32]) -> Result<Tensor, String> {
    let r = xs.len();
    let perm: Vec<usize> = if perm.is_empty() { (0..r).rev().collect() } else { perm.to_vec() };
    if perm.len() != r || perm.iter().any(|&p| p >= r) {
        return Err(format!("perm {perm:?} does not fit rank {r}"));
    }
    let s = strides(xs);
    let os: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
    let ps: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let mut dx = vec![0f32; g.len()];
    for_each_offsets(&os, [&ps], |i, [j]| dx[j] = g[i]);
    Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "transpose gradient shape".into())
}

/// Concat: each input takes its slab of the gradient along `axis`.
fn concat(inputs: &[Option<&Tensor>], g: &Tensor, axis: i64, wants: &dyn Fn(usize) -> bool) -> GradResult {
    let gs = g.shape();
    let ax = axis_of(axis, gs.len())?;
    let gv = f32s(g, "gradient")?;
    let outer: usize = gs[..ax].iter().product();
    let inner: usize = gs[ax + 1..].iter().product();
    let row = gs[ax] * inner;
    let mut out = vec![None; inputs.len()];
    let mut at = 0;
    for (i, t) in inputs.iter().enumerate() {
        let Some(t) = t else { continue };
        let w = t.shape().get(ax).copied().unwrap_or(0) * inner;
        if wants(i) {
            let mut d = Vec::with_capacity(outer * w);
            for o in 0..outer {
                d.extend_from_slice(&gv[o * row + at..o * row + at + w]);
            }
            out[i] = Some(Tensor::from_vec(t.shape().to_vec(), d).ok_or("concat gradient shape")?);
        }
        at += w;
    }
    Ok(out)
}

/// Split: the input gradient joins the outputs' gradients (zeros where none flows back).
fn split(x: &Tensor, outputs: &[&Tensor], grads: &[Option<&Tensor>], axis: i64) -> Result<Tensor, String> {
    let xs = x.shape();
    let ax = axis_of(axis, xs.len())?;
    let outer: usize = xs[..ax].iter().product();
    let inner: usize = xs[ax + 1..].iter().product();
    let row = xs[ax] * inner;
    let mut dx = vec![0f32; x.len()];
    let mut at = 0;
    for (k, o) in outputs.iter().enumerate() {
        let w = o.shape().get(ax).copied().unwrap_or(0) * inner;
        if let Some(g) = grads.get(k).copied().flatten() {
            let gv = f32s(g, "gradient")?;
            for r in 0..outer {
                dx[r * row + at..r * row + at + w].copy_from_slice(&gv[r * w..(r + 1) * w]);
            }
        }
        at += w;
    }
    Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "split gradient shape".into())
}

/// Adds `g` (shape = the lengths of `maps`) into a zero tensor of shape `xs`, where output index
/// k along axis a reads input offset `maps[a][k]` (None: a padding value, no gradient).
fn scatter(xs: &[usize], maps: &[Vec<Option<usize>>], g: &[f32]) -> Result<Tensor, String> {
    let mut dx = vec![0f32; xs.iter().product()];
    let gshape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    if gshape.iter().product::<usize>() != g.len() {
        return Err(format!("gradient of {} values does not fit shape {gshape:?}", g.len()));
    }
    if g.is_empty() {
        return Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "gradient shape".into());
    }
    let r = gshape.len();
    let mut idx = vec![0usize; r];
    for &gval in g {
        let mut off = Some(0usize);
        for a in 0..r {
            off = match (off, maps[a][idx[a]]) {
                (Some(o), Some(m)) => Some(o + m),
                _ => None,
            };
        }
        if let Some(o) = off {
            dx[o] += gval;
        }
        for a in (0..r).rev() {
            idx[a] += 1;
            if idx[a] < gshape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "gradient shape".into())
}

fn slice(inputs: &[Option<&Tensor>], xs: &[usize], g: &Tensor) -> Result<Tensor, String> {
    let arg = |i: usize, what: &str| inputs.get(i).copied().flatten().map(|t| ints(t, what)).transpose();
    let starts = arg(1, "starts")?.ok_or("Slice starts missing")?;
    let ends = arg(2, "ends")?.ok_or("Slice ends missing")?;
    let axes = arg(3, "axes")?;
    let steps = arg(4, "steps")?;
    if starts.len() != ends.len() {
        return Err(format!("starts {starts:?} and ends {ends:?} differ in length"));
    }
    let s = strides(xs);
    let mut maps: Vec<Vec<Option<usize>>> =
        xs.iter().zip(&s).map(|(&d, &st)| (0..d).map(|k| Some(k * st)).collect()).collect();
    for k in 0..starts.len() {
        let a = match &axes {
            Some(ax) => axis_of(*ax.get(k).ok_or("axes is shorter than starts")?, xs.len())?,
            None => k,
        };
        let step = steps.as_ref().map_or(Some(1), |v| v.get(k).copied()).ok_or("steps is shorter than starts")?;
        if step == 0 || a >= xs.len() {
            return Err(format!("bad Slice step {step} or axis {a}"));
        }
        let (b, step, n) = slice_axis(xs[a], starts[k], ends[k], step);
        maps[a] = (0..n as i64).map(|i| Some((b + i * step) as usize * s[a])).collect();
    }
    scatter(xs, &maps, f32s(g, "gradient")?)
}

/// Every mode: the gradient of each output position goes to the input element it copied.
fn pad(mode: PadMode, inputs: &[Option<&Tensor>], xs: &[usize], g: &Tensor) -> Result<Tensor, String> {
    let r = xs.len();
    let pads = ints(inputs.get(1).copied().flatten().ok_or("Pad pads missing")?, "pads")?;
    let axes: Vec<usize> = match inputs.get(3).copied().flatten() {
        Some(a) => ints(a, "axes")?.iter().map(|&v| axis_of(v, r)).collect::<Result<_, _>>()?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!("{} pads for {} axes", pads.len(), axes.len()));
    }
    let mut before = vec![0i64; r];
    let mut after = vec![0i64; r];
    for (k, &a) in axes.iter().enumerate() {
        before[a] = pads[k];
        after[a] = pads[k + axes.len()];
    }
    let s = strides(xs);
    let maps: Vec<Vec<Option<usize>>> = (0..r)
        .map(|a| {
            let d = xs[a] as i64;
            let n = (d + before[a] + after[a]).max(0);
            (0..n).map(|k| pad_source(mode, k, before[a], d).map(|i| i as usize * s[a])).collect()
        })
        .collect();
    scatter(xs, &maps, f32s(g, "gradient")?)
}

/// Gather: out[o, k, i] = data[o, idx[k], i]; the data gradient adds up repeated indices.
fn gather(xs: &[usize], indices: Option<&Tensor>, axis: i64, g: &Tensor) -> Result<Tensor, String> {
    let ax = axis_of(axis, xs.len())?;
    let idx = ints(indices.ok_or("Gather indices missing")?, "indices")?;
    let gv = f32s(g, "gradient")?;
    let outer: usize = xs[..ax].iter().product();
    let inner: usize = xs[ax + 1..].iter().product();
    let d = xs[ax];
    if gv.len() != outer * idx.len() * inner {
        return Err(format!("gradient shape {:?} does not fit Gather of {xs:?}", g.shape()));
    }
    let mut dx = vec![0f32; xs.iter().product()];
    for o in 0..outer {
        for (k, &i) in idx.iter().enumerate() {
            let j = if i < 0 { i + d as i64 } else { i };
            if j < 0 || j >= d as i64 {
                return Err(format!("index {i} is out of range for axis of size {d}"));
            }
            let src = &gv[(o * idx.len() + k) * inner..][..inner];
            let dst = &mut dx[(o * d + j as usize) * inner..][..inner];
            for (a, b) in dst.iter_mut().zip(src) {
                *a += b;
            }
        }
    }
    Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "gather gradient shape".into())
}

/// GatherElements: out[i] = data[i with coordinate `axis` replaced by indices[i]].
fn gather_elements(xs: &[usize], indices: Option<&Tensor>, axis: i64, g: &[f32]) -> Result<Tensor, String> {
    let ax = axis_of(axis, xs.len())?;
    let it = indices.ok_or("GatherElements indices missing")?;
    let idx = ints(it, "indices")?;
    let ish = it.shape();
    if ish.len() != xs.len() || g.len() != idx.len() {
        return Err(format!("indices {ish:?} do not fit data {xs:?}"));
    }
    let s = strides(xs);
    let mut base = s.clone();
    base[ax] = 0;
    let d = xs[ax] as i64;
    let mut dx = vec![0f32; xs.iter().product()];
    let mut bad = None;
    for_each_offsets(ish, [&base], |i, [o]| {
        let k = if idx[i] < 0 { idx[i] + d } else { idx[i] };
        if (0..d).contains(&k) {
            dx[o + k as usize * s[ax]] += g[i];
        } else {
            bad = Some(idx[i]);
        }
    });
    if let Some(b) = bad {
        return Err(format!("index {b} is out of range for axis of size {d}"));
    }
    Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "gather gradient shape".into())
}

/// Tile: view the output as [r0, d0, r1, d1, ...] and sum over the repeat axes.
fn tile(xs: &[usize], gs: &[usize], g: &[f32]) -> Result<Tensor, String> {
    if gs.len() != xs.len() || gs.iter().zip(xs).any(|(&o, &d)| d == 0 || o % d != 0) {
        return Err(format!("Tile output {gs:?} is not a tiling of {xs:?}"));
    }
    let s = strides(xs);
    let mut shape = Vec::with_capacity(2 * xs.len());
    let mut st = Vec::with_capacity(2 * xs.len());
    for a in 0..xs.len() {
        shape.extend([gs[a] / xs[a], xs[a]]);
        st.extend([0, s[a]]);
    }
    let mut dx = vec![0f32; xs.iter().product()];
    for_each_offsets(&shape, [&st], |i, [j]| dx[j] += g[i]);
    Tensor::from_vec(xs.to_vec(), dx).ok_or_else(|| "tile gradient shape".into())
}
