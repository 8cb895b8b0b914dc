//! Data-movement kernels: reshapes, transpose, concat/split, expand/tile, shape queries,
//! constants and ranges. Slice/Pad live in `slice_pad`, Gather* in `gather`.
//!
//! Every kernel is generic over the element type: [`typed!`] binds the typed slice of a tensor,
//! and most layout changes go through [`map_copy`], which writes `out[i0,i1,..] =
//! x[map0[i0] + map1[i1] + ..]` (each map holding element offsets along one output axis).

use super::{gather, opt, req, slice_pad, KResult};
use crate::ir::Op;
use crate::tensor::{numel, strides, DType, Data, Tensor};
use half::f16;

/// Runs `$body` with `$v` bound to the typed slice of tensor `$t` and `$T` to its element type.
macro_rules! typed {
    ($t:expr, $v:ident, $T:ident => $body:expr) => {
        match $t.data() {
            $crate::tensor::Data::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::tensor::Data::F16($v) => {
                #[allow(dead_code)]
                type $T = half::f16;
                $body
            }
            $crate::tensor::Data::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            $crate::tensor::Data::I64($v) => {
                #[allow(dead_code)]
                type $T = i64;
                $body
            }
            $crate::tensor::Data::I32($v) => {
                #[allow(dead_code)]
                type $T = i32;
                $body
            }
            $crate::tensor::Data::I8($v) => {
                #[allow(dead_code)]
                type $T = i8;
                $body
            }
            $crate::tensor::Data::U8($v) => {
                #[allow(dead_code)]
                type $T = u8;
                $body
            }
            $crate::tensor::Data::I16($v) => {
                #[allow(dead_code)]
                type $T = i16;
                $body
            }
            $crate::tensor::Data::U16($v) => {
                #[allow(dead_code)]
                type $T = u16;
                $body
            }
            $crate::tensor::Data::U32($v) => {
                #[allow(dead_code)]
                type $T = u32;
                $body
            }
            $crate::tensor::Data::U64($v) => {
                #[allow(dead_code)]
                type $T = u64;
                $body
            }
            $crate::tensor::Data::BF16($v) => {
                #[allow(dead_code)]
                type $T = half::bf16;
                $body
            }
            $crate::tensor::Data::F8E4M3FN($v) => {
                #[allow(dead_code)]
                type $T = $crate::tensor::F8E4M3FN;
                $body
            }
            $crate::tensor::Data::F8E4M3FNUZ($v) => {
                #[allow(dead_code)]
                type $T = $crate::tensor::F8E4M3FNUZ;
                $body
            }
            $crate::tensor::Data::F8E5M2($v) => {
                #[allow(dead_code)]
                type $T = $crate::tensor::F8E5M2;
                $body
            }
            $crate::tensor::Data::F8E5M2FNUZ($v) => {
                #[allow(dead_code)]
                type $T = $crate::tensor::F8E5M2FNUZ;
                $body
            }
            $crate::tensor::Data::Bool($v) => {
                #[allow(dead_code)]
                type $T = bool;
                $body
            }
        }
    };
}
pub(crate) use typed;

/// Marks an output position that takes the fill value (constant padding) in a [`map_copy`] map.
pub const FILL: usize = usize::MAX;

/// `out[i0,..,ik] = x[maps[0][i0] + .. + maps[k][ik]]`, or `fill` where any map entry is
/// [`FILL`]. The output shape is the map lengths; a rank-0 output copies `x[0]`.
pub fn map_copy<T: Copy>(x: &[T], maps: &[Vec<usize>], fill: T, out: &mut [T]) {
    fn rec<T: Copy>(x: &[T], maps: &[Vec<usize>], base: usize, fill: T, out: &mut [T], pos: &mut usize) {
        let (first, rest) = (&maps[0], &maps[1..]);
        if rest.is_empty() {
            let o = &mut out[*pos..*pos + first.len()];
            if base == FILL {
                o.fill(fill);
            } else {
                for (o, &m) in o.iter_mut().zip(first) {
                    *o = if m == FILL { fill } else { x[base + m] };
                }
            }
            *pos += first.len();
            return;
        }
        for &m in first {
            let b = if base == FILL || m == FILL { FILL } else { base + m };
            rec(x, rest, b, fill, out, pos);
        }
    }
    if maps.is_empty() {
        if let (Some(o), Some(&v)) = (out.first_mut(), x.first()) {
            *o = v;
        }
        return;
    }
    if maps.iter().any(|m| m.is_empty()) {
        return;
    }
    let mut pos = 0;
    rec(x, maps, 0, fill, out, &mut pos);
}

/// [`map_copy`] on any tensor type, writing `out` with shape = the map lengths. `fill` (a
/// one-element tensor of the same type, or zero/false when absent) feeds [`FILL`] positions.
pub fn map_copy_tensor(x: &Tensor, maps: &[Vec<usize>], fill: Option<&Tensor>, out: &mut Tensor) -> KResult {
    let shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    if let Some(f) = fill {
        if f.dtype() != x.dtype() {
            return Err(format!("fill value is {}, data is {}", f.dtype(), x.dtype()));
        }
    }
    typed!(x, v, T => {
        let fv: T = fill.and_then(|f| f.as_slice::<T>()).and_then(|s| s.first().copied()).unwrap_or_default();
        let o = out.reuse::<T>(&shape);
        map_copy(v, maps, fv, o);
    });
    Ok(())
}

/// Integer contents of a shape-like input (i64 or i32).
pub fn ints(t: &Tensor, what: &str) -> Result<Vec<i64>, String> {
    match t.data() {
        Data::I64(v) => Ok(v.clone()),
        Data::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
        _ => Err(format!("{what} must be int64 or int32, got {}", t.dtype())),
    }
}

/// Resolves a possibly negative axis against `rank`, with a one-line error.
pub fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], outputs: &mut [Tensor], _scratch: &mut Vec<f32>) -> KResult {
    let out = outputs.first_mut().ok_or("no output")?;
    match op {
        Op::Identity => {
            out.assign(req(inputs, 0)?);
            Ok(())
        }
        Op::Dropout => {
            let x = req(inputs, 0)?;
            let training = opt(inputs, 2).and_then(|t| t.to_f64_vec().first().copied()).is_some_and(|v| v != 0.0);
            let ratio = opt(inputs, 1).and_then(|t| t.to_f64_vec().first().copied()).unwrap_or(0.5);
            if training && ratio != 0.0 {
                return Err("training_mode=true is not supported (inference only)".into());
            }
            outputs[0].assign(x);
            for o in outputs.iter_mut().skip(1) {
                o.reuse::<bool>(x.shape()).fill(true);
            }
            Ok(())
        }
        Op::Flatten { axis: a } => {
            let x = req(inputs, 0)?;
            let r = x.rank() as i64;
            let a = if *a < 0 { a + r } else { *a };
            if !(0..=r).contains(&a) {
                return Err(format!("axis {a} is out of range for rank {r}"));
            }
            let a = a as usize;
            reshaped(x, &[numel(&x.shape()[..a]), numel(&x.shape()[a..])], out)
        }
        Op::Reshape { allowzero } => {
            let x = req(inputs, 0)?;
            let shape = reshape_target(x.shape(), &ints(req(inputs, 1)?, "shape")?, *allowzero)?;
            reshaped(x, &shape, out)
        }
        Op::Squeeze => {
            let x = req(inputs, 0)?;
            let shape = match opt(inputs, 1) {
                None => x.shape().iter().copied().filter(|&d| d != 1).collect(),
                Some(a) => {
                    let mut drop = vec![false; x.rank()];
                    for v in ints(a, "axes")? {
                        let i = axis(v, x.rank())?;
                        if x.shape()[i] != 1 {
                            return Err(format!("cannot squeeze axis {v} of size {}", x.shape()[i]));
                        }
                        drop[i] = true;
                    }
                    x.shape().iter().zip(&drop).filter(|(_, &d)| !d).map(|(&s, _)| s).collect::<Vec<_>>()
                }
            };
            reshaped(x, &shape, out)
        }
        Op::Unsqueeze => {
            let x = req(inputs, 0)?;
            let axes = ints(req(inputs, 1)?, "axes")?;
            let shape = unsqueeze_shape(x.shape(), &axes)?;
            reshaped(x, &shape, out)
        }
        Op::Transpose { perm } => {
            let x = req(inputs, 0)?;
            let r = x.rank();
            let perm: Vec<usize> = if perm.is_empty() { (0..r).rev().collect() } else { perm.clone() };
            let mut seen = vec![false; r];
            if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
                return Err(format!("perm {perm:?} is not a permutation of rank {r}"));
            }
            let s = strides(x.shape());
            let maps: Vec<Vec<usize>> = perm.iter().map(|&p| (0..x.shape()[p]).map(|k| k * s[p]).collect()).collect();
            map_copy_tensor(x, &maps, None, out)
        }
        Op::Concat { axis: a } => {
            let all: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
            concat(&all, *a, out)
        }
        Op::Split { axis: a, outputs: n } => split(req(inputs, 0)?, opt(inputs, 1), *a, *n, outputs),
        Op::Expand => {
            let x = req(inputs, 0)?;
            let target = ints(req(inputs, 1)?, "shape")?;
            if target.iter().any(|&d| d < 0) {
                return Err(format!("shape {target:?} has negative entries"));
            }
            let target: Vec<usize> = target.iter().map(|&d| d as usize).collect();
            let osh = crate::tensor::broadcast_shapes(x.shape(), &target)
                .ok_or_else(|| format!("shape {:?} does not broadcast to {target:?}", x.shape()))?;
            let s = strides(x.shape());
            let off = osh.len() - x.rank();
            let maps: Vec<Vec<usize>> = (0..osh.len())
                .map(|i| {
                    let keep = i >= off && x.shape()[i - off] != 1;
                    (0..osh[i]).map(|k| if keep { k * s[i - off] } else { 0 }).collect()
                })
                .collect();
            map_copy_tensor(x, &maps, None, out)
        }
        Op::Tile => {
            let x = req(inputs, 0)?;
            let reps = ints(req(inputs, 1)?, "repeats")?;
            if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
                return Err(format!("repeats {reps:?} do not fit rank {}", x.rank()));
            }
            let s = strides(x.shape());
            let maps: Vec<Vec<usize>> = (0..x.rank())
                .map(|i| {
                    let d = x.shape()[i];
                    (0..d * reps[i] as usize).map(|k| (k % d) * s[i]).collect()
                })
                .collect();
            map_copy_tensor(x, &maps, None, out)
        }
        Op::Shape { start, end } => {
            let x = req(inputs, 0)?;
            let (b, e) = shape_range(x.rank(), *start, *end);
            let o = out.reuse::<i64>(&[e - b]);
            for (o, &d) in o.iter_mut().zip(&x.shape()[b..e]) {
                *o = d as i64;
            }
            Ok(())
        }
        Op::Size => {
            let x = req(inputs, 0)?;
            out.reuse::<i64>(&[])[0] = x.len() as i64;
            Ok(())
        }
        Op::ConstantOfShape { value } => {
            let shape = ints(req(inputs, 0)?, "shape")?;
            if shape.iter().any(|&d| d < 0) {
                return Err(format!("shape {shape:?} has negative entries"));
            }
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            typed!(value, v, T => {
                let fill = *v.first().ok_or("value is empty")?;
                out.reuse::<T>(&shape).fill(fill);
            });
            Ok(())
        }
        Op::Range => range(req(inputs, 0)?, req(inputs, 1)?, req(inputs, 2)?, out),
        Op::Slice | Op::Pad { .. } => slice_pad::eval(op, inputs, out),
        Op::Gather { .. } | Op::GatherElements { .. } => gather::eval(op, inputs, out),
        _ => Err(format!("{} has no CPU kernel", op.name())),
    }
}

/// Copies `x` into `out` under a new shape with the same element count.
fn reshaped(x: &Tensor, shape: &[usize], out: &mut Tensor) -> KResult {
    if numel(shape) != x.len() {
        return Err(format!("cannot reshape {:?} ({} elements) to {shape:?}", x.shape(), x.len()));
    }
    out.assign(x);
    out.set_shape(shape);
    Ok(())
}

/// ONNX Reshape's target: 0 copies the input dim (unless `allowzero`), one -1 is inferred.
pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        out.push(match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                1
            }
            0 if !allowzero => *input.get(i).ok_or_else(|| format!("shape {spec:?}: 0 at {i} has no input dim"))?,
            s if s >= 0 => s as usize,
            _ => return Err(format!("shape {spec:?} has an invalid entry {s}")),
        });
    }
    let total = numel(input);
    if let Some(i) = infer {
        let rest = numel(&out);
        if rest == 0 || !total.is_multiple_of(rest) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = total / rest;
    }
    if numel(&out) != total {
        return Err(format!("cannot reshape {input:?} ({total} elements) to {spec:?}"));
    }
    Ok(out)
}

/// Unsqueeze: axes index the output rank, may be negative, must be distinct.
pub fn unsqueeze_shape(input: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let r = input.len() + axes.len();
    let mut ones = vec![false; r];
    for &a in axes {
        let i = axis(a, r)?;
        if std::mem::replace(&mut ones[i], true) {
            return Err(format!("axis {a} repeats in {axes:?}"));
        }
    }
    let mut it = input.iter();
    Ok(ones.iter().map(|&one| if one { 1 } else { it.next().copied().unwrap_or(1) }).collect())
}

/// Shape's `start`/`end`, clamped to `0..=rank` (opset 15).
pub fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let r = rank as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let b = clamp(start);
    let e = clamp(end.unwrap_or(r));
    (b, e.max(b))
}

fn concat(all: &[&Tensor], a: i64, out: &mut Tensor) -> KResult {
    let first = all.first().ok_or("Concat needs at least one input")?;
    let r = first.rank();
    let ax = axis(a, r)?;
    let mut osh = first.shape().to_vec();
    osh[ax] = 0;
    for t in all {
        if t.dtype() != first.dtype() || t.rank() != r {
            return Err(format!(
                "inputs {:?} ({}) and {:?} ({}) differ",
                first.shape(),
                first.dtype(),
                t.shape(),
                t.dtype()
            ));
        }
        for i in 0..r {
            if i != ax && t.shape()[i] != first.shape()[i] {
                return Err(format!("shapes {:?} and {:?} differ off axis {ax}", first.shape(), t.shape()));
            }
        }
        osh[ax] += t.shape()[ax];
    }
    let outer = numel(&osh[..ax]);
    let inner = numel(&osh[ax + 1..]);
    typed!(first, _v, T => {
        let srcs: Vec<&[T]> = all.iter().map(|t| t.as_slice::<T>().unwrap_or(&[])).collect();
        let o = out.reuse::<T>(&osh);
        let mut pos = 0;
        for b in 0..outer {
            for (t, s) in all.iter().zip(&srcs) {
                let n = t.shape()[ax] * inner;
                o[pos..pos + n].copy_from_slice(&s[b * n..(b + 1) * n]);
                pos += n;
            }
        }
    });
    Ok(())
}

/// Split sizes: given, or `n` parts of ceil(d / n) with a smaller last part (opset 18).
pub fn split_sizes(d: usize, sizes: Option<&[i64]>, n: usize) -> Result<Vec<usize>, String> {
    match sizes {
        Some(s) => {
            if s.iter().any(|&v| v < 0) || s.iter().sum::<i64>() != d as i64 {
                return Err(format!("split {s:?} does not sum to dimension {d}"));
            }
            Ok(s.iter().map(|&v| v as usize).collect())
        }
        None => {
            if n == 0 {
                return Err("split into 0 outputs".into());
            }
            let part = d.div_ceil(n);
            Ok((0..n).map(|i| part.min(d.saturating_sub(i * part))).collect())
        }
    }
}

fn split(x: &Tensor, sizes: Option<&Tensor>, a: i64, n: usize, outputs: &mut [Tensor]) -> KResult {
    let ax = axis(a, x.rank())?;
    let given = sizes.map(|t| ints(t, "split")).transpose()?;
    let n = if n == 0 { outputs.len() } else { n };
    let parts = split_sizes(x.shape()[ax], given.as_deref(), n)?;
    if parts.len() != outputs.len() {
        return Err(format!("{} split sizes for {} outputs", parts.len(), outputs.len()));
    }
    let outer = numel(&x.shape()[..ax]);
    let inner = numel(&x.shape()[ax + 1..]);
    let row = x.shape()[ax] * inner;
    typed!(x, v, T => {
        let mut off = 0;
        for (o, &p) in outputs.iter_mut().zip(&parts) {
            let mut sh = x.shape().to_vec();
            sh[ax] = p;
            let dst = o.reuse::<T>(&sh);
            let n = p * inner;
            for b in 0..outer {
                dst[b * n..(b + 1) * n].copy_from_slice(&v[b * row + off..b * row + off + n]);
            }
            off += n;
        }
    });
    Ok(())
}

fn range(start: &Tensor, limit: &Tensor, delta: &Tensor, out: &mut Tensor) -> KResult {
    if start.len() != 1 || limit.len() != 1 || delta.len() != 1 {
        return Err("start, limit and delta must be scalars".into());
    }
    if start.dtype() != limit.dtype() || start.dtype() != delta.dtype() {
        return Err(format!("start, limit, delta types differ: {} {} {}", start.dtype(), limit.dtype(), delta.dtype()));
    }
    macro_rules! int_range {
        ($t:ty) => {{
            let (s, l, d) = (start.to_f64_vec()[0] as i64, limit.to_f64_vec()[0] as i64, delta.to_f64_vec()[0] as i64);
            if d == 0 {
                return Err("delta is 0".into());
            }
            let n = if d > 0 { (l - s + d - 1).div_euclid(d) } else { (s - l - d - 1).div_euclid(-d) }.max(0) as usize;
            for (i, o) in out.reuse::<$t>(&[n]).iter_mut().enumerate() {
                *o = (s + i as i64 * d) as $t;
            }
        }};
    }
    match start.dtype() {
        DType::I64 => {
            // Exact for the full i64 range.
            let (s, l, d) = (
                start.as_slice::<i64>().unwrap_or(&[0])[0],
                limit.as_slice::<i64>().unwrap_or(&[0])[0],
                delta.as_slice::<i64>().unwrap_or(&[1])[0],
            );
            if d == 0 {
                return Err("delta is 0".into());
            }
            let span = l as i128 - s as i128;
            let n = ((span + d as i128 - d.signum() as i128) / d as i128).max(0) as usize;
            for (i, o) in out.reuse::<i64>(&[n]).iter_mut().enumerate() {
                *o = s.wrapping_add((i as i64).wrapping_mul(d));
            }
        }
        DType::I32 => int_range!(i32),
        DType::I8 => int_range!(i8),
        DType::U8 => int_range!(u8),
        DType::I16 => int_range!(i16),
        DType::U16 => int_range!(u16),
        DType::U32 => int_range!(u32),
        DType::U64 => int_range!(u64),
        DType::Bool => return Err("Range does not take bool".into()),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => {
            return Err(format!("Range does not take {}", start.dtype()))
        }
        dt => {
            let (s, l, d) = (start.to_f64_vec()[0], limit.to_f64_vec()[0], delta.to_f64_vec()[0]);
            if d == 0.0 || !d.is_finite() {
                return Err(format!("delta {d} is invalid"));
            }
            let n = ((l - s) / d).ceil().max(0.0);
            if !n.is_finite() || n > (1u64 << 40) as f64 {
                return Err(format!("range of {n} elements is too large"));
            }
            let n = n as usize;
            match dt {
                DType::F32 => {
                    // Accumulate in f32 like the reference (start + i * delta).
                    let (s, d) = (s as f32, d as f32);
                    for (i, o) in out.reuse::<f32>(&[n]).iter_mut().enumerate() {
                        *o = s + i as f32 * d;
                    }
                }
                DType::F16 => {
                    for (i, o) in out.reuse::<f16>(&[n]).iter_mut().enumerate() {
                        *o = f16::from_f64(s + i as f64 * d);
                    }
                }
                DType::BF16 => {
                    for (i, o) in out.reuse::<half::bf16>(&[n]).iter_mut().enumerate() {
                        *o = half::bf16::from_f64(s + i as f64 * d);
                    }
                }
                _ => {
                    for (i, o) in out.reuse::<f64>(&[n]).iter_mut().enumerate() {
                        *o = s + i as f64 * d;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
    fn i(v: Vec<i64>) -> Tensor {
        Tensor::from_vec(vec![v.len()], v).unwrap()
    }

    fn run(op: Op, inputs: &[Option<&Tensor>], n: usize) -> Vec<Tensor> {
        let mut outs: Vec<Tensor> = (0..n).map(|_| Tensor::placeholder()).collect();
        eval(&op, inputs, &mut outs, &mut Vec::new()).unwrap();
        outs
    }

    #[test]
    fn reshape_rules() {
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
        assert_eq!(reshape_target(&[0, 3], &[3, 0], true).unwrap(), vec![3, 0]);
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
    }

    #[test]
    fn transpose_and_tile() {
        let x = t(&[2, 3], vec![0., 1., 2., 3., 4., 5.]);
        let o = run(Op::Transpose { perm: vec![] }, &[Some(&x)], 1);
        assert_eq!(o[0].shape(), &[3, 2]);
        assert_eq!(o[0].as_slice::<f32>().unwrap(), &[0., 3., 1., 4., 2., 5.]);
        let r = i(vec![1, 2]);
        let o = run(Op::Tile, &[Some(&x), Some(&r)], 1);
        assert_eq!(o[0].as_slice::<f32>().unwrap(), &[0., 1., 2., 0., 1., 2., 3., 4., 5., 3., 4., 5.]);
    }

    #[test]
    fn split_uneven() {
        assert_eq!(split_sizes(7, None, 3).unwrap(), vec![3, 3, 1]);
        let x = t(&[5], vec![0., 1., 2., 3., 4.]);
        let o = run(Op::Split { axis: 0, outputs: 2 }, &[Some(&x)], 2);
        assert_eq!(o[1].as_slice::<f32>().unwrap(), &[3., 4.]);
    }

    #[test]
    fn range_counts() {
        let o = run(
            Op::Range,
            &[Some(&Tensor::scalar(10i32)), Some(&Tensor::scalar(6i32)), Some(&Tensor::scalar(-3i32))],
            1,
        );
        assert_eq!(o[0].as_slice::<i32>().unwrap(), &[10, 7]);
        let o =
            run(Op::Range, &[Some(&Tensor::scalar(1i64)), Some(&Tensor::scalar(1i64)), Some(&Tensor::scalar(2i64))], 1);
        assert_eq!(o[0].len(), 0);
    }
}
