//! Elementwise kernels: unary functions, broadcast binary ops, Sum, Where, Cast, Clip.

use super::broadcast::{binary as bcast, broadcast_all, broadcast_strides, for_each_offsets};
use super::KResult;
use crate::ir::{Binary, Unary};
use crate::tensor::{DType, Data, Tensor, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
use half::{bf16, f16};

/// Scalar form of each unary function, shared with the fused epilogues of GEMM/conv.
#[inline]
pub fn unary_f32(u: &Unary, x: f32) -> f32 {
    match *u {
        Unary::Relu => x.max(0.0),
        Unary::LeakyRelu { alpha } => {
            if x < 0.0 {
                alpha * x
            } else {
                x
            }
        }
        Unary::Sigmoid => sigmoid(x),
        Unary::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
        // The spec's alpha = 1/6 as a multiply (a divide per element cost more than the conv
        // epilogue around it).
        Unary::HardSwish => x * (x * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0),
        Unary::Tanh => x.tanh(),
        Unary::Gelu { tanh: false } => 0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2)),
        Unary::Gelu { tanh: true } => {
            let c = (2.0 / std::f32::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Unary::Erf => erf(x),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Neg => -x,
        Unary::Abs => x.abs(),
        Unary::Reciprocal => 1.0 / x,
        Unary::Floor => x.floor(),
        Unary::Ceil => x.ceil(),
        Unary::Elu { alpha } => {
            if x < 0.0 {
                alpha * (x.exp() - 1.0)
            } else {
                x
            }
        }
        Unary::Softplus => {
            if x > 20.0 {
                x
            } else {
                x.exp().ln_1p()
            }
        }
        Unary::Clip { min, max } => x.max(min).min(max),
        Unary::Not => (x == 0.0) as u8 as f32,
    }
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// erf with ~1e-7 absolute error (f64 evaluation of the Abramowitz-Stegun 7.1.26 is too coarse
/// for 1e-4 relative parity near 0, so use the libm-quality series/continued form via f64).
#[inline]
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

fn erf_f64(x: f64) -> f64 {
    // W. J. Cody's rational approximations are overkill here; this uses erfc's continued
    // fraction for |x| > 2.5 and the Maclaurin series below, both accurate to ~1e-12.
    let ax = x.abs();
    let r = if ax < 2.5 {
        let mut sum = ax;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f)
    };
    r.copysign(x)
}

pub fn unary(u: &Unary, x: &Tensor, out: &mut Tensor) -> KResult {
    match (u, x.data()) {
        (_, Data::F32(v)) => super::activation::map(u, v, out.reuse_f32(x.shape())),
        (_, Data::F64(v)) => {
            let o = out.reuse::<f64>(x.shape());
            for (o, &x) in o.iter_mut().zip(v) {
                *o = unary_f64(u, x);
            }
        }
        (_, Data::F16(v)) => {
            let o = out.reuse::<f16>(x.shape());
            for (o, &x) in o.iter_mut().zip(v) {
                *o = f16::from_f32(unary_f32(u, x.to_f32()));
            }
        }
        (_, Data::BF16(v)) => {
            let o = out.reuse::<bf16>(x.shape());
            for (o, &x) in o.iter_mut().zip(v) {
                *o = bf16::from_f32(unary_f32(u, x.to_f32()));
            }
        }
        (Unary::Not, Data::Bool(v)) => {
            let o = out.reuse::<bool>(x.shape());
            for (o, &x) in o.iter_mut().zip(v) {
                *o = !x;
            }
        }
        (Unary::Neg | Unary::Abs | Unary::Relu | Unary::Clip { .. }, d) if !matches!(d, Data::Bool(_)) => {
            int_unary(u, x, out)?;
        }
        _ => return Err(format!("{u:?} does not take {} input", x.dtype())),
    }
    Ok(())
}

/// f64 forms where precision matters (double conformance cases); the rest go through f32.
fn unary_f64(u: &Unary, x: f64) -> f64 {
    match u {
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Neg => -x,
        Unary::Abs => x.abs(),
        Unary::Reciprocal => 1.0 / x,
        Unary::Tanh => x.tanh(),
        Unary::Relu => x.max(0.0),
        Unary::Erf => erf_f64(x),
        Unary::Floor => x.floor(),
        Unary::Ceil => x.ceil(),
        Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        _ => unary_f32(u, x as f32) as f64,
    }
}

fn int_unary(u: &Unary, x: &Tensor, out: &mut Tensor) -> KResult {
    macro_rules! go {
        ($t:ty, $v:expr) => {{
            let o = out.reuse::<$t>(x.shape());
            for (o, &x) in o.iter_mut().zip($v) {
                *o = match *u {
                    Unary::Neg => x.wrapping_neg(),
                    Unary::Abs => x.wrapping_abs(),
                    Unary::Relu => x.max(0),
                    Unary::Clip { min, max } => (x as f64).clamp(min as f64, max as f64) as $t,
                    _ => unreachable!(),
                };
            }
        }};
    }
    // Unsigned: Abs and Relu are the identity; ONNX defines no Neg on unsigned types.
    macro_rules! go_unsigned {
        ($t:ty, $v:expr) => {{
            if matches!(u, Unary::Neg) {
                return Err(format!("Neg does not take {} input", x.dtype()));
            }
            let o = out.reuse::<$t>(x.shape());
            for (o, &x) in o.iter_mut().zip($v) {
                *o = match *u {
                    Unary::Clip { min, max } => (x as f64).clamp(min as f64, max as f64) as $t,
                    _ => x,
                };
            }
        }};
    }
    match x.data() {
        Data::I64(v) => go!(i64, v),
        Data::I32(v) => go!(i32, v),
        Data::I8(v) => go!(i8, v),
        Data::I16(v) => go!(i16, v),
        Data::U8(v) => go_unsigned!(u8, v),
        Data::U16(v) => go_unsigned!(u16, v),
        Data::U32(v) => go_unsigned!(u32, v),
        Data::U64(v) => go_unsigned!(u64, v),
        _ => return Err(format!("{u:?} does not take {} input", x.dtype())),
    }
    Ok(())
}

macro_rules! arith {
    ($op:expr, $x:expr, $y:expr, float) => {
        match $op {
            Binary::Add => $x + $y,
            Binary::Sub => $x - $y,
            Binary::Mul => $x * $y,
            Binary::Div => $x / $y,
            Binary::Pow => $x.powf($y),
            Binary::Max => $x.max($y),
            Binary::Min => $x.min($y),
            Binary::PRelu => {
                if $x < 0.0 {
                    $x * $y
                } else {
                    $x
                }
            }
            _ => unreachable!(),
        }
    };
    ($op:expr, $x:expr, $y:expr, int) => {
        match $op {
            Binary::Add => $x.wrapping_add($y),
            Binary::Sub => $x.wrapping_sub($y),
            Binary::Mul => $x.wrapping_mul($y),
            Binary::Div => {
                if $y == 0 {
                    0
                } else {
                    $x.wrapping_div($y)
                }
            }
            Binary::Pow => ($x as f64).powf($y as f64) as _,
            Binary::Max => $x.max($y),
            Binary::Min => $x.min($y),
            Binary::PRelu => {
                if $x < 0 {
                    $x.wrapping_mul($y)
                } else {
                    $x
                }
            }
            _ => unreachable!(),
        }
    };
}

#[allow(unused_comparisons)] // PRelu's `x < 0` on u8
pub fn binary(op: Binary, a: &Tensor, b: &Tensor, out: &mut Tensor) -> KResult {
    let osh = broadcast_all(&[a.shape(), b.shape()])?;
    if op.is_predicate() {
        return predicate(op, a, b, &osh, out);
    }
    // Pow may mix types: the exponent follows the base.
    let cast_b;
    let b = if op == Binary::Pow && a.dtype() != b.dtype() {
        let mut t = Tensor::empty(a.dtype());
        cast(b, a.dtype(), &mut t)?;
        cast_b = t;
        &cast_b
    } else {
        b
    };
    macro_rules! go {
        ($t:ty, $x:expr, $y:expr, $kind:tt) => {{
            let o = out.reuse::<$t>(&osh);
            bcast($x, a.shape(), $y, b.shape(), o, &osh, |x: $t, y: $t| arith!(op, x, y, $kind));
        }};
    }
    match (a.data(), b.data()) {
        // f32 gets one loop per operator: with `op` matched per element the loops ran scalar
        // (MobileNetV3's squeeze-excitation Muls took 6% of the model at 1.7 ns an element).
        (Data::F32(x), Data::F32(y)) => {
            let o = out.reuse::<f32>(&osh);
            let (ash, bsh) = (a.shape(), b.shape());
            match op {
                Binary::Add => bcast(x, ash, y, bsh, o, &osh, |x: f32, y: f32| x + y),
                Binary::Sub => bcast(x, ash, y, bsh, o, &osh, |x: f32, y: f32| x - y),
                Binary::Mul => bcast(x, ash, y, bsh, o, &osh, |x: f32, y: f32| x * y),
                Binary::Div => bcast(x, ash, y, bsh, o, &osh, |x: f32, y: f32| x / y),
                _ => bcast(x, ash, y, bsh, o, &osh, |x: f32, y: f32| arith!(op, x, y, float)),
            }
        }
        (Data::F64(x), Data::F64(y)) => go!(f64, x, y, float),
        (Data::I64(x), Data::I64(y)) => go!(i64, x, y, int),
        (Data::I32(x), Data::I32(y)) => go!(i32, x, y, int),
        (Data::I8(x), Data::I8(y)) => go!(i8, x, y, int),
        (Data::U8(x), Data::U8(y)) => go!(u8, x, y, int),
        (Data::I16(x), Data::I16(y)) => go!(i16, x, y, int),
        (Data::U16(x), Data::U16(y)) => go!(u16, x, y, int),
        (Data::U32(x), Data::U32(y)) => go!(u32, x, y, int),
        (Data::U64(x), Data::U64(y)) => go!(u64, x, y, int),
        (Data::BF16(x), Data::BF16(y)) => {
            let o = out.reuse::<bf16>(&osh);
            bcast(x, a.shape(), y, b.shape(), o, &osh, |x: bf16, y: bf16| {
                bf16::from_f32(arith!(op, x.to_f32(), y.to_f32(), float))
            });
        }
        (Data::F16(x), Data::F16(y)) => {
            let o = out.reuse::<f16>(&osh);
            bcast(x, a.shape(), y, b.shape(), o, &osh, |x: f16, y: f16| {
                f16::from_f32(arith!(op, x.to_f32(), y.to_f32(), float))
            });
        }
        _ => return Err(format!("{op:?} of {} and {} is not supported", a.dtype(), b.dtype())),
    }
    Ok(())
}

fn predicate(op: Binary, a: &Tensor, b: &Tensor, osh: &[usize], out: &mut Tensor) -> KResult {
    if a.dtype() != b.dtype() {
        return Err(format!("{op:?} of {} and {}: types differ", a.dtype(), b.dtype()));
    }
    let o = out.reuse::<bool>(osh);
    macro_rules! cmp {
        ($x:expr, $y:expr) => {
            bcast($x, a.shape(), $y, b.shape(), o, osh, |x, y| match op {
                Binary::Equal => x == y,
                Binary::Less => x < y,
                Binary::Greater => x > y,
                _ => unreachable!(),
            })
        };
    }
    match (op, a.data(), b.data()) {
        (Binary::And | Binary::Or, Data::Bool(x), Data::Bool(y)) => {
            bcast(x, a.shape(), y, b.shape(), o, osh, |x, y| if op == Binary::And { x && y } else { x || y })
        }
        (Binary::And | Binary::Or, _, _) => return Err(format!("{op:?} needs bool inputs")),
        (_, Data::F32(x), Data::F32(y)) => cmp!(x, y),
        (_, Data::F64(x), Data::F64(y)) => cmp!(x, y),
        (_, Data::F16(x), Data::F16(y)) => cmp!(x, y),
        (_, Data::I64(x), Data::I64(y)) => cmp!(x, y),
        (_, Data::I32(x), Data::I32(y)) => cmp!(x, y),
        (_, Data::I8(x), Data::I8(y)) => cmp!(x, y),
        (_, Data::U8(x), Data::U8(y)) => cmp!(x, y),
        (_, Data::I16(x), Data::I16(y)) => cmp!(x, y),
        (_, Data::U16(x), Data::U16(y)) => cmp!(x, y),
        (_, Data::U32(x), Data::U32(y)) => cmp!(x, y),
        (_, Data::U64(x), Data::U64(y)) => cmp!(x, y),
        (_, Data::BF16(x), Data::BF16(y)) => cmp!(x, y),
        (_, Data::Bool(x), Data::Bool(y)) => cmp!(x, y),
        (_, Data::F8E4M3FN(_), _)
        | (_, Data::F8E4M3FNUZ(_), _)
        | (_, Data::F8E5M2(_), _)
        | (_, Data::F8E5M2FNUZ(_), _) => {
            return Err(format!("{op:?} does not take {}: float8 is storage for Cast only", a.dtype()))
        }
        _ => unreachable!("types checked equal"),
    }
    Ok(())
}

/// ONNX Sum: elementwise sum of all inputs, broadcast.
pub fn sum(inputs: &[&Tensor], out: &mut Tensor) -> KResult {
    let first = inputs.first().ok_or("Sum needs at least one input")?;
    if inputs.iter().any(|t| t.dtype() != first.dtype()) {
        return Err("Sum inputs must share one type".into());
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let osh = broadcast_all(&shapes)?;
    let Data::F32(_) = first.data() else {
        // Non-f32: fold pairwise through the generic binary kernel.
        let mut acc = (*first).clone();
        for t in &inputs[1..] {
            let mut next = Tensor::empty(first.dtype());
            binary(Binary::Add, &acc, t, &mut next)?;
            acc = next;
        }
        out.assign(&acc);
        return Ok(());
    };
    let o = out.reuse_f32(&osh);
    o.fill(0.0);
    for t in inputs {
        let x = t.as_slice::<f32>().expect("type checked");
        let s = broadcast_strides(t.shape(), &osh);
        for_each_offsets(&osh, [&s], |i, [j]| o[i] += x[j]);
    }
    Ok(())
}

/// ONNX Where: `cond ? x : y`, broadcast over all three.
pub fn where_(cond: &Tensor, x: &Tensor, y: &Tensor, out: &mut Tensor) -> KResult {
    let c = cond.as_slice::<bool>().ok_or("Where condition must be bool")?;
    if x.dtype() != y.dtype() {
        return Err(format!("Where branches have types {} and {}", x.dtype(), y.dtype()));
    }
    let osh = broadcast_all(&[cond.shape(), x.shape(), y.shape()])?;
    let (sc, sx, sy) =
        (broadcast_strides(cond.shape(), &osh), broadcast_strides(x.shape(), &osh), broadcast_strides(y.shape(), &osh));
    macro_rules! go {
        ($t:ty, $xv:expr, $yv:expr) => {{
            let o = out.reuse::<$t>(&osh);
            for_each_offsets(&osh, [&sc, &sx, &sy], |i, [ic, ix, iy]| o[i] = if c[ic] { $xv[ix] } else { $yv[iy] });
        }};
    }
    match (x.data(), y.data()) {
        (Data::F32(a), Data::F32(b)) => go!(f32, a, b),
        (Data::F64(a), Data::F64(b)) => go!(f64, a, b),
        (Data::F16(a), Data::F16(b)) => go!(f16, a, b),
        (Data::I64(a), Data::I64(b)) => go!(i64, a, b),
        (Data::I32(a), Data::I32(b)) => go!(i32, a, b),
        (Data::I8(a), Data::I8(b)) => go!(i8, a, b),
        (Data::U8(a), Data::U8(b)) => go!(u8, a, b),
        (Data::I16(a), Data::I16(b)) => go!(i16, a, b),
        (Data::U16(a), Data::U16(b)) => go!(u16, a, b),
        (Data::U32(a), Data::U32(b)) => go!(u32, a, b),
        (Data::U64(a), Data::U64(b)) => go!(u64, a, b),
        (Data::BF16(a), Data::BF16(b)) => go!(bf16, a, b),
        (Data::F8E4M3FN(a), Data::F8E4M3FN(b)) => go!(F8E4M3FN, a, b),
        (Data::F8E4M3FNUZ(a), Data::F8E4M3FNUZ(b)) => go!(F8E4M3FNUZ, a, b),
        (Data::F8E5M2(a), Data::F8E5M2(b)) => go!(F8E5M2, a, b),
        (Data::F8E5M2FNUZ(a), Data::F8E5M2FNUZ(b)) => go!(F8E5M2FNUZ, a, b),
        (Data::Bool(a), Data::Bool(b)) => go!(bool, a, b),
        _ => unreachable!("types checked equal"),
    }
    Ok(())
}

/// Clip with bounds given as (optional) tensors, for models whose bounds are not constant.
pub fn clip_dynamic(x: &Tensor, min: Option<&Tensor>, max: Option<&Tensor>, out: &mut Tensor) -> KResult {
    let scalar = |t: Option<&Tensor>, default: f64| -> Result<f64, String> {
        match t {
            None => Ok(default),
            Some(t) if t.len() == 1 => Ok(t.to_f64_vec()[0]),
            Some(t) => Err(format!("Clip bound must be a scalar, got shape {:?}", t.shape())),
        }
    };
    let lo = scalar(min, f64::NEG_INFINITY)?;
    let hi = scalar(max, f64::INFINITY)?;
    match x.data() {
        Data::F64(v) => {
            let o = out.reuse::<f64>(x.shape());
            for (o, &x) in o.iter_mut().zip(v) {
                *o = x.max(lo).min(hi);
            }
            Ok(())
        }
        _ => unary(&Unary::Clip { min: lo as f32, max: hi as f32 }, x, out),
    }
}

/// ONNX Cast between supported types (float->int truncates toward zero, as C does; int->int
/// wraps, as C does; integers go through i128 so 64-bit values stay exact). Out of range values
/// cast to float8 saturate.
pub fn cast(x: &Tensor, to: DType, out: &mut Tensor) -> KResult {
    cast_saturate(x, to, true, out)
}

/// [`cast`] with Cast's `saturate` attribute, which only matters for float8 targets: when false,
/// out of range values become infinity (E5M2) or NaN.
pub fn cast_saturate(x: &Tensor, to: DType, saturate: bool, out: &mut Tensor) -> KResult {
    if x.dtype() == to {
        out.assign(x);
        return Ok(());
    }
    let sh = x.shape();
    match x.data() {
        Data::F32(v) => store_f64(v.iter().map(|&x| x as f64), to, saturate, sh, out),
        Data::F64(v) => store_f64(v.iter().copied(), to, saturate, sh, out),
        Data::F16(v) => store_f64(v.iter().map(|x| x.to_f64()), to, saturate, sh, out),
        Data::BF16(v) => store_f64(v.iter().map(|x| x.to_f64()), to, saturate, sh, out),
        Data::F8E4M3FN(v) => store_f64(v.iter().map(|x| x.to_f64()), to, saturate, sh, out),
        Data::F8E4M3FNUZ(v) => store_f64(v.iter().map(|x| x.to_f64()), to, saturate, sh, out),
        Data::F8E5M2(v) => store_f64(v.iter().map(|x| x.to_f64()), to, saturate, sh, out),
        Data::F8E5M2FNUZ(v) => store_f64(v.iter().map(|x| x.to_f64()), to, saturate, sh, out),
        Data::I64(v) => store_int(v.iter().map(|&x| x as i128), to, saturate, sh, out),
        Data::I32(v) => store_int(v.iter().map(|&x| x as i128), to, saturate, sh, out),
        Data::I16(v) => store_int(v.iter().map(|&x| x as i128), to, saturate, sh, out),
        Data::I8(v) => store_int(v.iter().map(|&x| x as i128), to, saturate, sh, out),
        Data::U64(v) => store_int(v.iter().map(|&x| x as i128), to, saturate, sh, out),
        Data::U32(v) => store_int(v.iter().map(|&x| x as i128), to, saturate, sh, out),
        Data::U16(v) => store_int(v.iter().map(|&x| x as i128), to, saturate, sh, out),
        Data::U8(v) => store_int(v.iter().map(|&x| x as i128), to, saturate, sh, out),
        Data::Bool(v) => store_int(v.iter().map(|&x| x as i128), to, saturate, sh, out),
    }
    Ok(())
}

/// Writes float values as `to`: integers truncate toward zero (saturating at i128, NaN -> 0)
/// and then wrap.
fn store_f64(v: impl Iterator<Item = f64>, to: DType, saturate: bool, sh: &[usize], out: &mut Tensor) {
    macro_rules! put {
        ($t:ty, $f:expr) => {
            out.reuse::<$t>(sh).iter_mut().zip(v).for_each(|(o, x)| *o = $f(x))
        };
    }
    match to {
        DType::F32 => put!(f32, |x: f64| x as f32),
        DType::F64 => put!(f64, |x: f64| x),
        DType::F16 => put!(f16, f16::from_f64),
        DType::BF16 => put!(bf16, bf16::from_f64),
        DType::F8E4M3FN => put!(F8E4M3FN, |x: f64| F8E4M3FN::from_f64(x, saturate)),
        DType::F8E4M3FNUZ => put!(F8E4M3FNUZ, |x: f64| F8E4M3FNUZ::from_f64(x, saturate)),
        DType::F8E5M2 => put!(F8E5M2, |x: f64| F8E5M2::from_f64(x, saturate)),
        DType::F8E5M2FNUZ => put!(F8E5M2FNUZ, |x: f64| F8E5M2FNUZ::from_f64(x, saturate)),
        DType::I64 => put!(i64, |x: f64| x as i128 as i64),
        DType::I32 => put!(i32, |x: f64| x as i128 as i32),
        DType::I16 => put!(i16, |x: f64| x as i128 as i16),
        DType::I8 => put!(i8, |x: f64| x as i128 as i8),
        DType::U64 => put!(u64, |x: f64| x as i128 as u64),
        DType::U32 => put!(u32, |x: f64| x as i128 as u32),
        DType::U16 => put!(u16, |x: f64| x as i128 as u16),
        DType::U8 => put!(u8, |x: f64| x as i128 as u8),
        DType::Bool => put!(bool, |x: f64| x != 0.0),
    }
}

/// Writes integer values as `to`, wrapping into narrower integers.
fn store_int(v: impl Iterator<Item = i128>, to: DType, saturate: bool, sh: &[usize], out: &mut Tensor) {
    macro_rules! put {
        ($t:ty, $f:expr) => {
            out.reuse::<$t>(sh).iter_mut().zip(v).for_each(|(o, x)| *o = $f(x))
        };
    }
    match to {
        DType::F32 => put!(f32, |x: i128| x as f32),
        DType::F64 => put!(f64, |x: i128| x as f64),
        DType::F16 => put!(f16, |x: i128| f16::from_f64(x as f64)),
        DType::BF16 => put!(bf16, |x: i128| bf16::from_f64(x as f64)),
        DType::F8E4M3FN => put!(F8E4M3FN, |x: i128| F8E4M3FN::from_f64(x as f64, saturate)),
        DType::F8E4M3FNUZ => put!(F8E4M3FNUZ, |x: i128| F8E4M3FNUZ::from_f64(x as f64, saturate)),
        DType::F8E5M2 => put!(F8E5M2, |x: i128| F8E5M2::from_f64(x as f64, saturate)),
        DType::F8E5M2FNUZ => put!(F8E5M2FNUZ, |x: i128| F8E5M2FNUZ::from_f64(x as f64, saturate)),
        DType::I64 => put!(i64, |x: i128| x as i64),
        DType::I32 => put!(i32, |x: i128| x as i32),
        DType::I16 => put!(i16, |x: i128| x as i16),
        DType::I8 => put!(i8, |x: i128| x as i8),
        DType::U64 => put!(u64, |x: i128| x as u64),
        DType::U32 => put!(u32, |x: i128| x as u32),
        DType::U16 => put!(u16, |x: i128| x as u16),
        DType::U8 => put!(u8, |x: i128| x as u8),
        DType::Bool => put!(bool, |x: i128| x != 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v<T: crate::tensor::Element>(x: Vec<T>) -> Tensor {
        Tensor::from_vec(vec![x.len()], x).unwrap()
    }

    #[test]
    fn unsigned_arithmetic_wraps_and_divides_truncating() {
        let mut out = Tensor::placeholder();
        binary(Binary::Add, &v(vec![u16::MAX, 3]), &v(vec![1u16, 4]), &mut out).unwrap();
        assert_eq!(out.as_slice::<u16>().unwrap(), &[0, 7]);
        binary(Binary::Sub, &v(vec![0u32, 9]), &v(vec![1u32, 4]), &mut out).unwrap();
        assert_eq!(out.as_slice::<u32>().unwrap(), &[u32::MAX, 5]);
        binary(Binary::Div, &v(vec![7u64, u64::MAX]), &v(vec![2u64, 1]), &mut out).unwrap();
        assert_eq!(out.as_slice::<u64>().unwrap(), &[3, u64::MAX]);
        binary(Binary::Div, &v(vec![-7i16, 7]), &v(vec![2i16, -2]), &mut out).unwrap();
        assert_eq!(out.as_slice::<i16>().unwrap(), &[-3, -3]);
        binary(Binary::Less, &v(vec![1u64 << 63, 2]), &v(vec![(1u64 << 63) + 1, 1]), &mut out).unwrap();
        assert_eq!(out.as_slice::<bool>().unwrap(), &[true, false]);
    }

    #[test]
    fn cast_keeps_64_bit_integers_exact_and_wraps_narrowing() {
        let mut out = Tensor::placeholder();
        cast(&v(vec![u64::MAX, 1 << 60]), DType::I64, &mut out).unwrap();
        assert_eq!(out.as_slice::<i64>().unwrap(), &[-1, 1 << 60]);
        cast(&v(vec![-1i64, i64::MAX]), DType::U64, &mut out).unwrap();
        assert_eq!(out.as_slice::<u64>().unwrap(), &[u64::MAX, i64::MAX as u64]);
        cast(&v(vec![70000i32, -1]), DType::U16, &mut out).unwrap();
        assert_eq!(out.as_slice::<u16>().unwrap(), &[70000u32 as u16, u16::MAX]);
        cast(&v(vec![-2.7f32, 3.9]), DType::I16, &mut out).unwrap();
        assert_eq!(out.as_slice::<i16>().unwrap(), &[-2, 3]);
        cast(&v(vec![1.0f32, 3.140625]), DType::BF16, &mut out).unwrap();
        assert_eq!(out.as_slice::<bf16>().unwrap(), &[bf16::ONE, bf16::from_f32(3.140625)]);
        let b = out.clone();
        cast(&b, DType::U32, &mut out).unwrap();
        assert_eq!(out.as_slice::<u32>().unwrap(), &[1, 3]);
    }
}
