//! Reductions (ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp) and ArgMax/ArgMin.
//!
//! Every element type is accumulated in f64 (exact for the small ints and f32 data models use),
//! then converted back; bool Max/Min work as any/all through the 0/1 encoding.

use super::broadcast::for_each_offsets;
use super::shape_ops::{axis, ints};
use super::{opt, req, KResult};
use crate::ir::{Op, ReduceKind};
use crate::tensor::{numel, strides, Data, Element, Tensor};
use half::{bf16, f16};

/// Element types as f64 and back (saturating `as` casts for the integers).
trait Num: Element {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    )*};
}
num!(f32, f64, i64, i32, i16, i8, u64, u32, u16, u8);

impl Num for bf16 {
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
}

impl Num for f16 {
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
}

macro_rules! num_float8 {
    ($($t:ident),*) => {$(
        impl Num for crate::tensor::$t {
            fn to_f64(self) -> f64 {
                crate::tensor::$t::to_f64(self)
            }
            fn from_f64(v: f64) -> Self {
                crate::tensor::$t::from_f64(v, true)
            }
        }
    )*};
}
num_float8!(F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ);

impl Num for bool {
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
}

/// Runs `$f::<T>($v, ..)` on the typed data of `$x`.
macro_rules! with_num {
    ($x:expr, $v:ident => $body:expr) => {
        match $x.data() {
            Data::F32($v) => $body,
            Data::F16($v) => $body,
            Data::F64($v) => $body,
            Data::I64($v) => $body,
            Data::I32($v) => $body,
            Data::I8($v) => $body,
            Data::U8($v) => $body,
            Data::I16($v) => $body,
            Data::U16($v) => $body,
            Data::U32($v) => $body,
            Data::U64($v) => $body,
            Data::BF16($v) => $body,
            Data::F8E4M3FN($v) => $body,
            Data::F8E4M3FNUZ($v) => $body,
            Data::F8E5M2($v) => $body,
            Data::F8E5M2FNUZ($v) => $body,
            Data::Bool($v) => $body,
        }
    };
}

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], outputs: &mut [Tensor], _scratch: &mut Vec<f32>) -> KResult {
    let x = req(inputs, 0)?;
    let out = outputs.first_mut().ok_or("no output")?;
    match op {
        Op::Reduce { kind, keepdims, noop_with_empty_axes } => {
            let axes = opt(inputs, 1).map(|t| ints(t, "axes")).transpose()?.unwrap_or_default();
            if axes.is_empty() && *noop_with_empty_axes {
                out.assign(x);
                return Ok(());
            }
            let mut red = vec![axes.is_empty(); x.rank()];
            for a in axes {
                red[axis(a, x.rank())?] = true;
            }
            with_num!(x, v => reduce(v, x.shape(), &red, *keepdims, *kind, out))
        }
        Op::ArgMax { axis: a, keepdims, select_last_index } => {
            with_num!(x, v => arg(v, x.shape(), *a, *keepdims, *select_last_index, true, out))
        }
        Op::ArgMin { axis: a, keepdims, select_last_index } => {
            with_num!(x, v => arg(v, x.shape(), *a, *keepdims, *select_last_index, false, out))
        }
        _ => Err(format!("{} is not a reduction", op.name())),
    }
}

/// Output shape of a reduction over the axes flagged in `red`.
pub fn reduced_shape(shape: &[usize], red: &[bool], keepdims: bool) -> Vec<usize> {
    shape
        .iter()
        .zip(red)
        .filter_map(|(&d, &r)| {
            if !r {
                Some(d)
            } else if keepdims {
                Some(1)
            } else {
                None
            }
        })
        .collect()
}

fn reduce<T: Num>(
    v: &[T],
    shape: &[usize],
    red: &[bool],
    keepdims: bool,
    kind: ReduceKind,
    out: &mut Tensor,
) -> KResult {
    let kept: Vec<usize> = shape.iter().zip(red).map(|(&d, &r)| if r { 1 } else { d }).collect();
    let ks = strides(&kept);
    let ostr: Vec<usize> = ks.iter().zip(red).map(|(&s, &r)| if r { 0 } else { s }).collect();
    let n_out = numel(&kept);
    let count = numel(shape).checked_div(n_out).unwrap_or(0);
    let init = match kind {
        ReduceKind::Prod => 1.0,
        ReduceKind::Max | ReduceKind::LogSumExp => f64::NEG_INFINITY,
        ReduceKind::Min => f64::INFINITY,
        _ => 0.0,
    };
    let mut acc = vec![init; n_out];
    match kind {
        ReduceKind::Sum | ReduceKind::Mean | ReduceKind::LogSum => {
            for_each_offsets(shape, [&ostr], |i, [o]| acc[o] += v[i].to_f64())
        }
        ReduceKind::L1 => for_each_offsets(shape, [&ostr], |i, [o]| acc[o] += v[i].to_f64().abs()),
        ReduceKind::Prod => for_each_offsets(shape, [&ostr], |i, [o]| acc[o] *= v[i].to_f64()),
        ReduceKind::Max => for_each_offsets(shape, [&ostr], |i, [o]| acc[o] = acc[o].max(v[i].to_f64())),
        ReduceKind::Min => for_each_offsets(shape, [&ostr], |i, [o]| acc[o] = acc[o].min(v[i].to_f64())),
        ReduceKind::L2 | ReduceKind::SumSquare => for_each_offsets(shape, [&ostr], |i, [o]| {
            let x = v[i].to_f64();
            acc[o] += x * x
        }),
        ReduceKind::LogSumExp => {
            // Shift by the max so large inputs do not overflow.
            for_each_offsets(shape, [&ostr], |i, [o]| acc[o] = acc[o].max(v[i].to_f64()));
            let mut sum = vec![0.0; n_out];
            for_each_offsets(shape, [&ostr], |i, [o]| {
                if acc[o].is_finite() {
                    sum[o] += (v[i].to_f64() - acc[o]).exp()
                }
            });
            for (a, s) in acc.iter_mut().zip(&sum) {
                if a.is_finite() {
                    *a += s.ln();
                }
            }
        }
    }
    match kind {
        ReduceKind::Mean => acc.iter_mut().for_each(|a| *a /= count as f64),
        ReduceKind::L2 => acc.iter_mut().for_each(|a| *a = a.sqrt()),
        ReduceKind::LogSum => acc.iter_mut().for_each(|a| *a = a.ln()),
        _ => {}
    }
    let o = out.reuse::<T>(&reduced_shape(shape, red, keepdims));
    for (o, &a) in o.iter_mut().zip(&acc) {
        *o = T::from_f64(a);
    }
    Ok(())
}

fn arg<T: Num>(v: &[T], shape: &[usize], a: i64, keepdims: bool, last: bool, max: bool, out: &mut Tensor) -> KResult {
    let ax = axis(a, shape.len().max(1))?;
    if shape.is_empty() {
        out.reuse::<i64>(&[])[0] = 0;
        return Ok(());
    }
    let d = shape[ax];
    let outer = numel(&shape[..ax]);
    let inner = numel(&shape[ax + 1..]);
    let mut red = vec![false; shape.len()];
    red[ax] = true;
    let osh = reduced_shape(shape, &red, keepdims);
    if d == 0 && numel(&osh) > 0 {
        return Err(format!("cannot take the arg{} of an empty axis", if max { "max" } else { "min" }));
    }
    let o = out.reuse::<i64>(&osh);
    for b in 0..outer {
        for i in 0..inner {
            let at = |k: usize| v[(b * d + k) * inner + i].to_f64();
            let (mut best, mut bi) = (at(0), 0);
            for k in 1..d {
                let x = at(k);
                let better = if max { x > best || (last && x == best) } else { x < best || (last && x == best) };
                if better {
                    best = x;
                    bi = k;
                }
            }
            o[b * inner + i] = bi as i64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: Op, x: Tensor, axes: Option<Vec<i64>>) -> Tensor {
        let a = axes.map(|v| Tensor::from_vec(vec![v.len()], v).unwrap());
        let mut outs = vec![Tensor::placeholder()];
        eval(&op, &[Some(&x), a.as_ref()], &mut outs, &mut Vec::new()).unwrap();
        outs.pop().unwrap()
    }

    #[test]
    fn sum_and_lse() {
        let x = Tensor::from_vec(vec![2, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let op = |kind| Op::Reduce { kind, keepdims: false, noop_with_empty_axes: false };
        let s = run(op(ReduceKind::Sum), x.clone(), Some(vec![-1]));
        assert_eq!(s.shape(), &[2]);
        assert_eq!(s.as_slice::<f32>().unwrap(), &[6., 15.]);
        let l = run(op(ReduceKind::LogSumExp), x.clone(), None);
        let want = (1..=6).map(|v| (v as f64).exp()).sum::<f64>().ln() as f32;
        assert!((l.as_slice::<f32>().unwrap()[0] - want).abs() < 1e-5);
    }

    #[test]
    fn argmax_last() {
        let x = Tensor::from_vec(vec![2, 2], vec![2f32, 2., 3., 1.]).unwrap();
        let o = run(Op::ArgMax { axis: 1, keepdims: true, select_last_index: true }, x, None);
        assert_eq!(o.shape(), &[2, 1]);
        assert_eq!(o.as_slice::<i64>().unwrap(), &[1, 0]);
    }
}
