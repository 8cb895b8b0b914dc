//! MaxPool (with optional i64 Indices), AveragePool, GlobalAveragePool, GlobalMaxPool.

use super::window::{resolve, via_f32, Geom};
use super::{req, KResult};
use crate::ir::{Op, Window};
use crate::tensor::Tensor;

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], outputs: &mut [Tensor], scratch: &mut Vec<f32>) -> KResult {
    match op {
        Op::MaxPool { window, storage_order } => {
            via_f32(inputs, outputs, scratch, &[1], |i, o, _| pool(window, Kind::Max(*storage_order), req(i, 0)?, o))
        }
        Op::AveragePool { window, count_include_pad } => {
            via_f32(inputs, outputs, scratch, &[], |i, o, _| pool(window, Kind::Avg(*count_include_pad), req(i, 0)?, o))
        }
        Op::GlobalAveragePool => via_f32(inputs, outputs, scratch, &[], |i, o, _| global(req(i, 0)?, &mut o[0], false)),
        Op::GlobalMaxPool => via_f32(inputs, outputs, scratch, &[], |i, o, _| global(req(i, 0)?, &mut o[0], true)),
        _ => Err(format!("{} is not a pooling op", op.name())),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// Storage order of the indices: 0 row-major, 1 column-major.
    Max(usize),
    /// count_include_pad.
    Avg(bool),
}

fn pool(w: &Window, kind: Kind, x: &Tensor, outputs: &mut [Tensor]) -> KResult {
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(format!("input must have rank >= 3, has shape {xs:?}"));
    }
    if w.kernel.len() != xs.len() - 2 {
        return Err(format!("kernel_shape {:?} does not fit input {xs:?}", w.kernel));
    }
    if w.kernel.iter().any(|&k| k > 64) {
        return Err(format!("kernel_shape {:?}: windows wider than 64 are not supported", w.kernel));
    }
    let g = resolve(w, &xs[2..], &w.kernel)?;
    let xv = x.as_slice::<f32>().ok_or("X must be f32")?;
    let mut oshape = crate::tensor::Dims::from_slice(&xs[..2]);
    oshape.extend_from_slice(&g.out_dims);
    let planes = xs[0] * xs[1];
    let (isz, osz) = (g.in_size(), g.out_size());
    let (y, rest) = outputs.split_first_mut().ok_or("no output")?;
    let y = y.reuse_f32(&oshape);
    let mut idx = match (kind, rest.first_mut()) {
        (Kind::Max(_), Some(t)) => Some(t.reuse::<i64>(&oshape)),
        _ => None,
    };
    if matches!(kind, Kind::Max(_)) && idx.is_none() && inside_2d(&g) {
        for (xp, yp) in xv.chunks_exact(isz).zip(y.chunks_exact_mut(osz)) {
            max_plane_inside(&g, xp, yp);
        }
        return Ok(());
    }
    for p in 0..planes {
        let xp = &xv[p * isz..][..isz];
        let yp = &mut y[p * osz..][..osz];
        match kind {
            Kind::Max(order) => {
                let ip = idx.as_mut().map(|v| &mut v[p * osz..][..osz]);
                max_plane(&g, xp, yp, ip, p * isz, order);
            }
            Kind::Avg(include_pad) => avg_plane(&g, xp, yp, include_pad),
        }
    }
    Ok(())
}

/// Valid input indices along dim `d` of output `o`, plus the taps counted with padding.
#[inline]
fn taps(g: &Geom, d: usize, o: usize, buf: &mut [usize; 64]) -> (usize, usize) {
    let start = (o * g.stride[d]) as isize - g.pad[d] as isize;
    let padded_end = (g.input[d] + g.pad_end[d]) as isize;
    let (mut n, mut with_pad) = (0, 0);
    for k in 0..g.kernel[d] {
        let i = start + (k * g.dilation[d]) as isize;
        if i < padded_end {
            with_pad += 1;
        }
        if i >= 0 && (i as usize) < g.input[d] && n < buf.len() {
            buf[n] = i as usize;
            n += 1;
        }
    }
    (n, with_pad)
}

fn max_plane(g: &Geom, x: &[f32], y: &mut [f32], mut idx: Option<&mut [i64]>, base: usize, order: usize) {
    let [o0, o1, o2] = g.out;
    let [_, i1, i2] = g.input;
    let (mut t0, mut t1, mut t2) = ([0; 64], [0; 64], [0; 64]);
    let nd = g.out_dims.len();
    let mut p = 0;
    for y0 in 0..o0 {
        let (n0, _) = taps(g, 0, y0, &mut t0);
        for y1 in 0..o1 {
            let (n1, _) = taps(g, 1, y1, &mut t1);
            for y2 in 0..o2 {
                let (n2, _) = taps(g, 2, y2, &mut t2);
                let (mut best, mut at) = (f32::NEG_INFINITY, None);
                for &a in &t0[..n0] {
                    for &b in &t1[..n1] {
                        for &c in &t2[..n2] {
                            let v = x[(a * i1 + b) * i2 + c];
                            if v > best || at.is_none() {
                                best = v;
                                at = Some((a, b, c));
                            }
                        }
                    }
                }
                y[p] = best;
                if let Some(ix) = idx.as_deref_mut() {
                    let (a, b, c) = at.unwrap_or((0, 0, 0));
                    let [s0, s1, s2] = g.input;
                    // Column-major numbers the spatial dims of the real rank fastest-first.
                    let off = if order == 1 {
                        match nd {
                            1 => c,
                            2 => b + c * s1,
                            _ => a + b * s0 + c * s0 * s1,
                        }
                    } else {
                        (a * s1 + b) * s2 + c
                    };
                    ix[p] = (base + off) as i64;
                }
                p += 1;
            }
        }
    }
}

/// A 1-D/2-D window with every tap of every output inside the input (no padding reached),
/// the common `MaxPool 2x2 stride 2` case.
fn inside_2d(g: &Geom) -> bool {
    g.kernel[0] == 1
        && g.out[0] == 1
        && g.input[0] == 1
        && (1..3).all(|d| {
            g.pad[d] == 0
                && g.out[d] > 0
                && (g.out[d] - 1) * g.stride[d] + (g.kernel[d] - 1) * g.dilation[d] < g.input[d]
        })
}

/// Max over windows known to lie inside the plane: direct indexing, no per-output tap lists.
/// Same tie and NaN rule as `max_plane` (first tap, then strictly greater values).
fn max_plane_inside(g: &Geom, x: &[f32], y: &mut [f32]) {
    let ([_, o1, o2], [_, k1, k2], [_, _, i2]) = (g.out, g.kernel, g.input);
    let ([_, s1, s2], [_, d1, d2]) = (g.stride, g.dilation);
    if (k1, k2, s1, s2, d1, d2) == (2, 2, 2, 2, 1, 1) {
        // The common 2x2 / stride 2 pool: two input rows per output row, a branch-free max of
        // four (half of the teacher's batch-8 MaxPool time went to the general loop's branches).
        for (oy, yrow) in y.chunks_exact_mut(o2).take(o1).enumerate() {
            let top = &x[2 * oy * i2..][..2 * o2];
            let bottom = &x[(2 * oy + 1) * i2..][..2 * o2];
            for ((out, t), b) in yrow.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                *out = later_max(later_max(later_max(t[0], t[1]), b[0]), b[1]);
            }
        }
        return;
    }
    for (oy, yrow) in y.chunks_exact_mut(o2).take(o1).enumerate() {
        for (ox, out) in yrow.iter_mut().enumerate() {
            let base = oy * s1 * i2 + ox * s2;
            let mut best = x[base];
            for a in 0..k1 {
                let line = &x[base + a * d1 * i2..];
                for b in 0..k2 {
                    let v = line[b * d2];
                    if v > best {
                        best = v;
                    }
                }
            }
            *out = best;
        }
    }
}

/// `best` unless `v` is strictly greater: the first tap wins ties and a NaN first tap stays
/// (the general loop's rule), as a select the compiler can vectorize.
#[inline(always)]
fn later_max(best: f32, v: f32) -> f32 {
    if v > best {
        v
    } else {
        best
    }
}

fn avg_plane(g: &Geom, x: &[f32], y: &mut [f32], include_pad: bool) {
    let [o0, o1, o2] = g.out;
    let [_, i1, i2] = g.input;
    let (mut t0, mut t1, mut t2) = ([0; 64], [0; 64], [0; 64]);
    let mut p = 0;
    for y0 in 0..o0 {
        let (n0, w0) = taps(g, 0, y0, &mut t0);
        for y1 in 0..o1 {
            let (n1, w1) = taps(g, 1, y1, &mut t1);
            for y2 in 0..o2 {
                let (n2, w2) = taps(g, 2, y2, &mut t2);
                let mut acc = 0.0;
                for &a in &t0[..n0] {
                    for &b in &t1[..n1] {
                        for &c in &t2[..n2] {
                            acc += x[(a * i1 + b) * i2 + c];
                        }
                    }
                }
                let count = if include_pad { w0 * w1 * w2 } else { n0 * n1 * n2 };
                y[p] = if count == 0 { 0.0 } else { acc / count as f32 };
                p += 1;
            }
        }
    }
}

fn global(x: &Tensor, out: &mut Tensor, max: bool) -> KResult {
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(format!("input must have rank >= 2, has shape {xs:?}"));
    }
    let xv = x.as_slice::<f32>().ok_or("X must be f32")?;
    let mut oshape = crate::tensor::Dims::from_slice(xs);
    oshape[2..].fill(1);
    let sp: usize = xs[2..].iter().product();
    let y = out.reuse_f32(&oshape);
    for (p, v) in y.iter_mut().enumerate() {
        let plane = &xv[p * sp..][..sp];
        *v = if max {
            lanes(plane, f32::NEG_INFINITY, f32::max)
        } else {
            lanes(plane, 0.0, |a, b| a + b) / sp.max(1) as f32
        };
    }
    Ok(())
}

/// Folds `v` with `f` in 16 independent lanes, then the lanes and the tail together. One
/// running value is a chain of dependent adds (4 cycles each): MobileNetV3's squeeze-excitation
/// pools took 4% of its time that way. The lanes vectorize; the order of a sum differs from a
/// sequential one by rounding only.
#[inline(always)]
fn lanes(v: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let chunks = v.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = f(*a, x);
        }
    }
    acc.into_iter().chain(tail.iter().copied()).fold(init, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::AutoPad;

    /// The 2x2 / stride-2 fast path agrees with the general tap loop, ties and NaNs included.
    #[test]
    fn max_2x2_matches_general() {
        let w = Window {
            kernel: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![0; 4],
            dilations: vec![],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        for (h, wd) in [(8, 8), (5, 7), (2, 2), (9, 4)] {
            let g = resolve(&w, &[h, wd], &[2, 2]).unwrap();
            assert!(inside_2d(&g));
            let x: Vec<f32> = (0..h * wd)
                .map(|i| match i % 11 {
                    3 => f32::NAN,
                    7 => 1.0,
                    _ => ((i * 37) % 13) as f32 - 6.0,
                })
                .collect();
            let (mut fast, mut general) = (vec![0.0; g.out_size()], vec![0.0; g.out_size()]);
            max_plane_inside(&g, &x, &mut fast);
            max_plane(&g, &x, &mut general, None, 0, 0);
            for (a, b) in fast.iter().zip(&general) {
                assert!(a == b || (a.is_nan() && b.is_nan()), "{h}x{wd}: {a} vs {b}");
            }
        }
    }

    /// Global pools over planes around the 16-lane width agree with a sequential fold (max
    /// exactly, NaN ignored as `f32::max` does; the mean within rounding).
    #[test]
    fn global_pools_match_sequential() {
        for sp in [1, 7, 16, 17, 49, 3136] {
            let mut x: Vec<f32> = (0..2 * sp).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
            x[sp / 2] = f32::NAN;
            let xt = Tensor::from_vec(vec![1, 2, sp, 1], x.clone()).unwrap();
            for max in [false, true] {
                let mut out = Tensor::placeholder();
                global(&xt, &mut out, max).unwrap();
                assert_eq!(out.shape(), &[1, 2, 1, 1]);
                for (p, &got) in out.as_slice::<f32>().unwrap().iter().enumerate() {
                    let plane = &x[p * sp..][..sp];
                    if max {
                        assert_eq!(got, plane.iter().copied().fold(f32::NEG_INFINITY, f32::max), "max of {sp}");
                    } else if p == 0 {
                        assert!(got.is_nan(), "a NaN reaches the mean of {sp}");
                    } else {
                        let want = plane.iter().map(|&v| v as f64).sum::<f64>() / sp as f64;
                        assert!((got as f64 - want).abs() < 1e-5, "mean of {sp}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
