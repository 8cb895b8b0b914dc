//! Resize (nearest, n-linear, n-cubic, with antialias): separable, one 1-D pass per resized
//! axis. Each pass maps every output index to a few weighted input taps, computed in f64 like
//! the ONNX reference (`onnx/reference/ops/op_resize.py`).

use super::window::via_f32;
use super::{opt, req, KResult};
use crate::ir::{AspectPolicy, CoordMode, NearestMode, Op, ResizeAttrs, ResizeMode};
use crate::tensor::Tensor;

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], outputs: &mut [Tensor], scratch: &mut Vec<f32>) -> KResult {
    match op {
        Op::Resize(a) => via_f32(inputs, outputs, scratch, &[], |i, o, s| resize(a, i, &mut o[0], s)),
        _ => Err(format!("{} is not Resize", op.name())),
    }
}

/// Output shape and per-axis scale factors for input shape `xs`.
pub fn plan(
    a: &ResizeAttrs,
    xs: &[usize],
    scales: Option<&[f32]>,
    sizes: Option<&[i64]>,
) -> Result<(Vec<usize>, Vec<f64>, Vec<usize>), String> {
    let r = xs.len();
    let axes: Vec<usize> = match &a.axes {
        None => (0..r).collect(),
        Some(v) => v
            .iter()
            .map(|&ax| crate::tensor::norm_axis(ax, r).ok_or_else(|| format!("axis {ax} is out of range for rank {r}")))
            .collect::<Result<_, _>>()?,
    };
    let mut out = xs.to_vec();
    let mut scale = vec![1.0f64; r];
    match (scales, sizes) {
        (_, Some(sz)) => {
            if sz.len() != axes.len() {
                return Err(format!("sizes has {} values for {} axes", sz.len(), axes.len()));
            }
            for (&ax, &s) in axes.iter().zip(sz) {
                if s < 0 {
                    return Err(format!("negative size {s}"));
                }
                out[ax] = s as usize;
                scale[ax] = s as f64 / xs[ax] as f64;
            }
            if a.aspect != AspectPolicy::Stretch {
                let it = axes.iter().map(|&ax| scale[ax]);
                let s = if a.aspect == AspectPolicy::NotLarger {
                    it.fold(f64::INFINITY, f64::min)
                } else {
                    it.fold(f64::NEG_INFINITY, f64::max)
                };
                for &ax in &axes {
                    scale[ax] = s;
                    out[ax] = (s * xs[ax] as f64 + 0.5) as usize;
                }
            }
        }
        (Some(sc), None) => {
            if sc.len() != axes.len() {
                return Err(format!("scales has {} values for {} axes", sc.len(), axes.len()));
            }
            for (&ax, &s) in axes.iter().zip(sc) {
                if s <= 0.0 || !s.is_finite() {
                    return Err(format!("scale {s} must be positive"));
                }
                scale[ax] = s as f64;
                out[ax] = (s as f64 * xs[ax] as f64) as usize;
            }
        }
        (None, None) => return Err("one of scales and sizes is required".into()),
    }
    Ok((out, scale, axes))
}

/// Taps of one axis: `ranges[j]` indexes `taps` for output `j`; `None` = extrapolation value.
struct AxisTaps {
    taps: Vec<(usize, f32)>,
    ranges: Vec<Option<(usize, usize)>>,
}

fn keys(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

fn axis_taps(a: &ResizeAttrs, n_in: usize, n_out: usize, scale: f64, roi: (f64, f64)) -> AxisTaps {
    let mut t = AxisTaps { taps: Vec::new(), ranges: Vec::with_capacity(n_out) };
    let inw = n_in as f64;
    let outw = scale * inw;
    let mut coeffs: Vec<(isize, f64)> = Vec::new();
    for j in 0..n_out {
        let x = j as f64;
        let xo = match a.coord {
            CoordMode::AlignCorners => {
                if outw == 1.0 {
                    0.0
                } else {
                    x * (inw - 1.0) / (outw - 1.0)
                }
            }
            CoordMode::Asymmetric => x / scale,
            CoordMode::TfCropAndResize => {
                let v = if outw == 1.0 {
                    (roi.1 - roi.0) * (inw - 1.0) / 2.0
                } else {
                    x * (roi.1 - roi.0) * (inw - 1.0) / (outw - 1.0)
                } + roi.0 * (inw - 1.0);
                if v < 0.0 || v > inw - 1.0 {
                    t.ranges.push(None);
                    continue;
                }
                v
            }
            CoordMode::PytorchHalfPixel => {
                if outw == 1.0 {
                    -0.5
                } else {
                    (x + 0.5) / scale - 0.5
                }
            }
            CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
            CoordMode::HalfPixelSymmetric => {
                let adjustment = n_out as f64 / outw;
                let offset = inw / 2.0 * (1.0 - adjustment);
                offset + (x + 0.5) / scale - 0.5
            }
        };
        let base = xo.floor();
        let ratio = xo - base;
        let base = base as isize;
        coeffs.clear();
        match a.mode {
            ResizeMode::Nearest => {
                let up = match a.nearest {
                    _ if ratio == 0.0 => false,
                    NearestMode::RoundPreferFloor => ratio > 0.5,
                    NearestMode::RoundPreferCeil => ratio >= 0.5,
                    NearestMode::Floor => false,
                    NearestMode::Ceil => true,
                };
                coeffs.push((base + up as isize, 1.0));
            }
            ResizeMode::Linear => {
                let s = if a.antialias { scale.min(1.0) } else { 1.0 };
                let start = (-1.0 / s).floor() as isize + 1;
                for off in start..(2 - start) {
                    let w = (1.0 - ((off as f64 - ratio) * s).abs()).clamp(0.0, 1.0);
                    coeffs.push((base + off, w));
                }
            }
            ResizeMode::Cubic => {
                let s = if a.antialias { scale.min(1.0) } else { 1.0 };
                let start = (-2.0 / s).floor() as isize + 1;
                for off in start..(2 - start) {
                    coeffs.push((base + off, keys(s * (off as f64 - ratio), a.cubic_coeff_a as f64)));
                }
            }
        }
        let mut sum: f64 = coeffs.iter().map(|c| c.1).sum();
        if a.exclude_outside {
            for c in coeffs.iter_mut() {
                if c.0 < 0 || c.0 >= n_in as isize {
                    c.1 = 0.0;
                }
            }
            sum = coeffs.iter().map(|c| c.1).sum();
        }
        let norm = if a.antialias || a.exclude_outside { sum } else { 1.0 };
        let first = t.taps.len();
        for &(i, w) in &coeffs {
            if w != 0.0 {
                t.taps.push((i.clamp(0, n_in as isize - 1) as usize, (w / norm) as f32));
            }
        }
        t.ranges.push(Some((first, t.taps.len())));
    }
    t
}

/// One pass along an axis: `src` is [outer, n_in, inner], `dst` is [outer, n_out, inner].
fn pass(t: &AxisTaps, src: &[f32], dst: &mut [f32], outer: usize, n_in: usize, inner: usize, extrap: f32) {
    let n_out = t.ranges.len();
    for o in 0..outer {
        let s = &src[o * n_in * inner..][..n_in * inner];
        for (j, r) in t.ranges.iter().enumerate() {
            let d = &mut dst[(o * n_out + j) * inner..][..inner];
            let Some((b, e)) = *r else {
                d.fill(extrap);
                continue;
            };
            d.fill(0.0);
            for &(i, w) in &t.taps[b..e] {
                for (dv, &sv) in d.iter_mut().zip(&s[i * inner..][..inner]) {
                    *dv += w * sv;
                }
            }
        }
    }
}

fn resize(a: &ResizeAttrs, inputs: &[Option<&Tensor>], out: &mut Tensor, scratch: &mut Vec<f32>) -> KResult {
    let x = req(inputs, 0)?;
    let xs = x.shape();
    let xv = x.as_slice::<f32>().ok_or("X must be f32")?;
    let nonempty = |i: usize| opt(inputs, i).filter(|t| !t.is_empty());
    let scales: Option<Vec<f32>> = nonempty(2).map(|t| t.to_f64_vec().iter().map(|&v| v as f32).collect());
    let sizes: Option<Vec<i64>> = match nonempty(3) {
        Some(t) => Some(t.to_i64_vec().ok_or("sizes must be int64")?),
        None => None,
    };
    let (oshape, scale, axes) = plan(a, xs, scales.as_deref(), sizes.as_deref())?;
    let roi = nonempty(1).map(|t| t.to_f64_vec());
    let r = xs.len();
    let roi_of = |ax: usize| -> Result<(f64, f64), String> {
        let Some(v) = &roi else { return Ok((0.0, 1.0)) };
        let n = v.len() / 2;
        let k = if a.axes.is_some() { axes.iter().position(|&d| d == ax) } else { Some(ax) };
        match k {
            Some(k) if v.len() % 2 == 0 && k < n && n == if a.axes.is_some() { axes.len() } else { r } => {
                Ok((v[k], v[n + k]))
            }
            _ => Err(format!("roi has {} values for {} axes", v.len(), axes.len())),
        }
    };
    // Build the passes; identity axes are skipped.
    let mut passes = Vec::new();
    for &ax in &axes {
        let roi_ax = if a.coord == CoordMode::TfCropAndResize { roi_of(ax)? } else { (0.0, 1.0) };
        let t = axis_taps(a, xs[ax], oshape[ax], scale[ax], roi_ax);
        let identity = oshape[ax] == xs[ax]
            && t.ranges.iter().enumerate().all(|(j, r)| r.is_some_and(|(b, e)| e == b + 1 && t.taps[b] == (j, 1.0)));
        if !identity {
            passes.push((ax, t));
        }
    }
    let y = out.reuse_f32(&oshape);
    if passes.is_empty() {
        y.copy_from_slice(xv);
        return Ok(());
    }
    if xs.contains(&0) || oshape.contains(&0) {
        return Err(format!("cannot resize {xs:?} to {oshape:?}"));
    }
    // Intermediate shapes: axes resized one after another.
    let mut shape = xs.to_vec();
    let mut max_mid = 0;
    for (ax, _) in &passes[..passes.len() - 1] {
        shape[*ax] = oshape[*ax];
        max_mid = max_mid.max(shape.iter().product::<usize>());
    }
    scratch.resize(2 * max_mid, 0.0);
    let (buf_a, buf_b) = scratch.split_at_mut(max_mid);
    let mut shape = xs.to_vec();
    let last = passes.len() - 1;
    for (k, (ax, t)) in passes.iter().enumerate() {
        let outer: usize = shape[..*ax].iter().product();
        let inner: usize = shape[ax + 1..].iter().product();
        let n_in = shape[*ax];
        let n_out = oshape[*ax];
        let len_in = outer * n_in * inner;
        let len_out = outer * n_out * inner;
        let ex = a.extrapolation_value;
        // Ping-pong: even passes write buf_a, odd ones buf_b, the last one the output.
        match (k == last, k % 2) {
            (true, _) => {
                let src = if k == 0 {
                    xv
                } else if k % 2 == 1 {
                    &buf_a[..len_in]
                } else {
                    &buf_b[..len_in]
                };
                pass(t, src, y, outer, n_in, inner, ex)
            }
            (false, 0) => {
                let src = if k == 0 { xv } else { &buf_b[..len_in] };
                pass(t, src, &mut buf_a[..len_out], outer, n_in, inner, ex)
            }
            _ => pass(t, &buf_a[..len_in], &mut buf_b[..len_out], outer, n_in, inner, ex),
        }
        shape[*ax] = n_out;
    }
    Ok(())
}
