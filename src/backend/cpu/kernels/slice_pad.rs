//! Slice and Pad: both become per-axis offset maps for [`map_copy`].

use super::shape_ops::{axis, ints, map_copy_tensor, FILL};
use super::{opt, req, KResult};
use crate::ir::{Op, PadMode};
use crate::tensor::{strides, Tensor};

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], out: &mut Tensor) -> KResult {
    match op {
        Op::Slice => slice(inputs, out),
        Op::Pad { mode } => pad(*mode, inputs, out),
        _ => Err(format!("{} is not a slice/pad op", op.name())),
    }
}

/// Per-axis (start, step, count) of an ONNX Slice, with the spec's clamping.
pub fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> (i64, i64, usize) {
    let d = dim as i128;
    let (mut s, mut e) = (start as i128, end as i128);
    if s < 0 {
        s += d;
    }
    if e < 0 {
        e += d;
    }
    let step = step as i128;
    let n = if step > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        (e - s + step - 1).div_euclid(step)
    } else {
        s = s.clamp(0, (d - 1).max(0));
        e = e.clamp(-1, d - 1);
        (s - e + (-step) - 1).div_euclid(-step)
    };
    (s as i64, step as i64, n.max(0) as usize)
}

/// Resolved (axis, start, end, step) quadruples of Slice's inputs.
pub fn slice_params(
    rank: usize,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<(usize, i64, i64, i64)>, String> {
    if starts.len() != ends.len() {
        return Err(format!("starts {starts:?} and ends {ends:?} differ in length"));
    }
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(starts.len());
    for k in 0..starts.len() {
        let a = match axes {
            Some(ax) => axis(*ax.get(k).ok_or("axes is shorter than starts")?, rank)?,
            None if k < rank => k,
            None => return Err(format!("{} starts for rank {rank}", starts.len())),
        };
        if std::mem::replace(&mut seen[a], true) {
            return Err(format!("axis {a} repeats"));
        }
        let step = match steps {
            Some(s) => *s.get(k).ok_or("steps is shorter than starts")?,
            None => 1,
        };
        if step == 0 {
            return Err("step 0".into());
        }
        out.push((a, starts[k], ends[k], step));
    }
    Ok(out)
}

fn slice(inputs: &[Option<&Tensor>], out: &mut Tensor) -> KResult {
    let x = req(inputs, 0)?;
    let starts = ints(req(inputs, 1)?, "starts")?;
    let ends = ints(req(inputs, 2)?, "ends")?;
    let axes = opt(inputs, 3).map(|t| ints(t, "axes")).transpose()?;
    let steps = opt(inputs, 4).map(|t| ints(t, "steps")).transpose()?;
    let params = slice_params(x.rank(), &starts, &ends, axes.as_deref(), steps.as_deref())?;
    let s = strides(x.shape());
    let mut maps: Vec<Vec<usize>> = (0..x.rank()).map(|i| (0..x.shape()[i]).map(|k| k * s[i]).collect()).collect();
    for (a, st, en, step) in params {
        let (b, step, n) = slice_axis(x.shape()[a], st, en, step);
        maps[a] = (0..n as i64).map(|k| (b + k * step) as usize * s[a]).collect();
    }
    map_copy_tensor(x, &maps, None, out)
}

/// Source index along one axis for output index `k` of a padded axis, `None` = constant fill.
pub fn pad_source(mode: PadMode, k: i64, before: i64, d: i64) -> Option<i64> {
    let i = k - before;
    if (0..d).contains(&i) {
        return Some(i);
    }
    match mode {
        PadMode::Constant => None,
        PadMode::Edge => Some(i.clamp(0, d - 1)),
        PadMode::Wrap => Some(i.rem_euclid(d)),
        PadMode::Reflect => {
            if d == 1 {
                return Some(0);
            }
            let p = 2 * (d - 1);
            let m = i.rem_euclid(p);
            Some(if m < d { m } else { p - m })
        }
    }
}

fn pad(mode: PadMode, inputs: &[Option<&Tensor>], out: &mut Tensor) -> KResult {
    let x = req(inputs, 0)?;
    let r = x.rank();
    let pads = ints(req(inputs, 1)?, "pads")?;
    let value = opt(inputs, 2).filter(|t| !t.is_empty());
    let axes: Vec<usize> = match opt(inputs, 3) {
        Some(a) => ints(a, "axes")?.iter().map(|&v| axis(v, r)).collect::<Result<_, _>>()?,
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
    // A value of another type than x (e.g. f32 0 for int data) is cast.
    let cast;
    let value = match value {
        Some(v) if v.dtype() != x.dtype() => {
            let mut t = Tensor::empty(x.dtype());
            super::elementwise::cast(v, x.dtype(), &mut t)?;
            cast = t;
            Some(&cast)
        }
        v => v,
    };
    let s = strides(x.shape());
    let mut maps = Vec::with_capacity(r);
    for a in 0..r {
        let d = x.shape()[a] as i64;
        let n = d + before[a] + after[a];
        if n < 0 {
            return Err(format!("pads {pads:?} crop axis {a} of size {d} below zero"));
        }
        if d == 0 && n > 0 && mode != PadMode::Constant {
            return Err(format!("cannot {mode:?}-pad empty axis {a}"));
        }
        let m: Vec<usize> =
            (0..n).map(|k| pad_source(mode, k, before[a], d).map_or(FILL, |i| i as usize * s[a])).collect();
        maps.push(m);
    }
    map_copy_tensor(x, &maps, value, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_clamps() {
        assert_eq!(slice_axis(10, 0, i64::MAX, 1), (0, 1, 10));
        assert_eq!(slice_axis(10, -1, i64::MIN, -1), (9, -1, 10));
        assert_eq!(slice_axis(10, 20, 1000, 1).2, 0);
        assert_eq!(slice_axis(20, 0, 10, 3), (0, 3, 4));
    }

    #[test]
    fn pad_modes() {
        let src = |m| (0..7).map(|k| pad_source(m, k, 2, 3)).collect::<Vec<_>>();
        assert_eq!(src(PadMode::Reflect), [2, 1, 0, 1, 2, 1, 0].map(Some));
        assert_eq!(src(PadMode::Edge), [0, 0, 0, 1, 2, 2, 2].map(Some));
        assert_eq!(src(PadMode::Wrap), [1, 2, 0, 1, 2, 0, 1].map(Some));
        assert_eq!(src(PadMode::Constant)[0], None);
    }
}
