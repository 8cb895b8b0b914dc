//! ONNX quantization operators ([`QLinear`]): QuantizeLinear / DequantizeLinear (per tensor,
//! per axis, blocked), DynamicQuantizeLinear, MatMulInteger, QLinearMatMul, ConvInteger and
//! QLinearConv.
//!
//! Integer matmuls are exact (i32 operands, f64 accumulation). The convolutions and the
//! QLinear* ops dequantize to f32 and run the f32 kernels, then requantize (round half to even,
//! saturate) as the ONNX reference does; ConvInteger is exact while partial sums stay below
//! 2^24 in magnitude (f32 integers).

use super::{opt, req, KResult};
use crate::ir::{Op, QLinear, Window};
use crate::tensor::{norm_axis, DType, Tensor};

pub fn eval(q: &QLinear, inputs: &[Option<&Tensor>], outputs: &mut [Tensor], scratch: &mut Vec<f32>) -> KResult {
    match q {
        QLinear::Dequantize { axis, block_size } => {
            let (x, s) = (req(inputs, 0)?, req(inputs, 1)?);
            let y = dequantize(x, s, opt(inputs, 2), *axis, *block_size)?;
            match s.dtype() {
                DType::F16 => {
                    let o = outputs[0].reuse::<half::f16>(x.shape());
                    for (o, v) in o.iter_mut().zip(y) {
                        *o = half::f16::from_f32(v);
                    }
                }
                _ => outputs[0].reuse_f32(x.shape()).copy_from_slice(&y),
            }
            Ok(())
        }
        QLinear::Quantize { axis, block_size, out } => {
            let x = req(inputs, 0)?;
            let xv: Vec<f32> = x.to_f64_vec().iter().map(|&v| v as f32).collect();
            quantize(&xv, x.shape(), req(inputs, 1)?, opt(inputs, 2), *axis, *block_size, *out, &mut outputs[0])
        }
        QLinear::DynamicQuantize => dynamic_quantize(req(inputs, 0)?, outputs),
        QLinear::MatMulInteger => {
            let (a, b) = (req(inputs, 0)?, req(inputs, 1)?);
            let ai = shifted_i32(a, opt(inputs, 2), a.rank().max(2) - 2, a.rank() == 1)?;
            let bi = shifted_i32(b, opt(inputs, 3), b.rank().max(1) - 1, false)?;
            super::linalg::matmul(&ai, &bi, &mut outputs[0])
        }
        QLinear::QLinearMatMul => {
            let (a, b) = (req(inputs, 0)?, req(inputs, 3)?);
            let af = dequantize(a, req(inputs, 1)?, opt(inputs, 2), a.rank() as i64 - 2, 0)?;
            let bf = dequantize(b, req(inputs, 4)?, opt(inputs, 5), b.rank() as i64 - 1, 0)?;
            let af = Tensor::from_vec(a.shape().to_vec(), af).ok_or("a shape")?;
            let bf = Tensor::from_vec(b.shape().to_vec(), bf).ok_or("b shape")?;
            let mut y = Tensor::placeholder();
            super::linalg::matmul(&af, &bf, &mut y)?;
            let yz = req(inputs, 7)?;
            let yv = y.as_slice::<f32>().ok_or("f32 product")?;
            quantize(yv, y.shape(), req(inputs, 6)?, Some(yz), y.rank() as i64 - 1, 0, yz.dtype(), &mut outputs[0])
        }
        QLinear::ConvInteger { window, group } => {
            let (x, w) = (req(inputs, 0)?, req(inputs, 1)?);
            let xf = shifted_f32(x, opt(inputs, 2), 1)?;
            let wf = shifted_f32(w, opt(inputs, 3), 0)?;
            let mut y = Tensor::placeholder();
            conv_f32(window, *group, &xf, &wf, None, &mut y, scratch)?;
            let yv = y.as_slice::<f32>().ok_or("f32 conv")?;
            let o = outputs[0].reuse::<i32>(y.shape());
            for (o, &v) in o.iter_mut().zip(yv) {
                *o = v.round() as i32;
            }
            Ok(())
        }
        QLinear::QLinearConv { window, group } => {
            let (x, xs, w, ws) = (req(inputs, 0)?, req(inputs, 1)?, req(inputs, 3)?, req(inputs, 4)?);
            let xf = Tensor::from_vec(x.shape().to_vec(), dequantize(x, xs, opt(inputs, 2), 1, 0)?).ok_or("x")?;
            let wf = Tensor::from_vec(w.shape().to_vec(), dequantize(w, ws, opt(inputs, 5), 0, 0)?).ok_or("w")?;
            let bias = match opt(inputs, 8) {
                None => None,
                Some(b) => {
                    // B (i32) is quantized with scale x_scale * w_scale[m], zero point 0.
                    let xs = xs.to_f64_vec().first().copied().ok_or("empty x_scale")? as f32;
                    let wsv = ws.to_f64_vec();
                    let bv = b.to_f64_vec();
                    let f: Vec<f32> = bv
                        .iter()
                        .enumerate()
                        .map(|(m, &v)| v as f32 * xs * wsv[if wsv.len() == 1 { 0 } else { m % wsv.len() }] as f32)
                        .collect();
                    Some(Tensor::from_vec(vec![f.len()], f).ok_or("bias")?)
                }
            };
            let mut y = Tensor::placeholder();
            conv_f32(window, *group, &xf, &wf, bias.as_ref(), &mut y, scratch)?;
            let yz = req(inputs, 7)?;
            let yv = y.as_slice::<f32>().ok_or("f32 conv")?;
            quantize(yv, y.shape(), req(inputs, 6)?, Some(yz), 1, 0, yz.dtype(), &mut outputs[0])
        }
    }
}

fn conv_f32(
    window: &Window,
    group: usize,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out: &mut Tensor,
    scratch: &mut Vec<f32>,
) -> KResult {
    let op = Op::Conv { window: window.clone(), group };
    super::conv::eval(&op, &[Some(x), Some(w), b], std::slice::from_mut(out), scratch)
}

/// For each element of a tensor of `shape`, the index of its scale / zero point: per tensor
/// (`len` 1), per `axis` (`block` 0, `len` = the axis' extent), or blocked along `axis`
/// (`block` > 0; scale of `shape` with the axis extent `ceil(extent / block)`).
pub fn param_index(shape: &[usize], len: usize, axis: i64, block: usize) -> Result<Vec<usize>, String> {
    let n: usize = shape.iter().product();
    if len == 1 && block == 0 {
        return Ok(vec![0; n]);
    }
    let ax = norm_axis(axis, shape.len()).ok_or_else(|| format!("axis {axis} out of range for {shape:?}"))?;
    let (d, inner) = (shape[ax], shape[ax + 1..].iter().product::<usize>());
    if block == 0 {
        if len != d {
            return Err(format!("{len} scales for axis {ax} of {shape:?}"));
        }
        return Ok((0..n).map(|i| (i / inner) % d).collect());
    }
    let nb = d.div_ceil(block);
    if len != n / d.max(1) * nb {
        return Err(format!("{len} scales for blocks of {block} along axis {ax} of {shape:?}"));
    }
    Ok((0..n)
        .map(|i| {
            let (o, a, r) = (i / (d * inner), (i / inner) % d, i % inner);
            (o * nb + a / block) * inner + r
        })
        .collect())
}

/// `(x - zp) * scale` as f32.
pub fn dequantize(x: &Tensor, s: &Tensor, zp: Option<&Tensor>, axis: i64, block: usize) -> Result<Vec<f32>, String> {
    if !s.dtype().is_float() {
        return Err(format!("scale must be a float, got {}", s.dtype()));
    }
    let idx = param_index(x.shape(), s.len(), axis, block)?;
    let sv = s.to_f64_vec();
    let zv = zero_points(zp, s.len())?;
    let xv = x.to_f64_vec();
    Ok(xv.iter().zip(&idx).map(|(&v, &i)| (v - zv[i]) as f32 * sv[i] as f32).collect())
}

fn zero_points(zp: Option<&Tensor>, len: usize) -> Result<Vec<f64>, String> {
    match zp {
        None => Ok(vec![0.0; len]),
        Some(z) if z.len() == len => Ok(z.to_f64_vec()),
        Some(z) => Err(format!("{} zero points for {len} scales", z.len())),
    }
}

/// `saturate(round_half_even(x / scale) + zp)` into `out` of type `dt` (i8 or u8).
#[allow(clippy::too_many_arguments)]
pub fn quantize(
    x: &[f32],
    shape: &[usize],
    s: &Tensor,
    zp: Option<&Tensor>,
    axis: i64,
    block: usize,
    dt: DType,
    out: &mut Tensor,
) -> KResult {
    let idx = param_index(shape, s.len(), axis, block)?;
    let sv: Vec<f32> = s.to_f64_vec().iter().map(|&v| v as f32).collect();
    let zv = zero_points(zp, s.len())?;
    let q = x.iter().zip(&idx).map(|(&v, &i)| (v / sv[i]).round_ties_even() as f64 + zv[i]);
    match dt {
        DType::U8 => {
            for (o, v) in out.reuse::<u8>(shape).iter_mut().zip(q) {
                *o = v.clamp(0.0, 255.0) as u8;
            }
        }
        DType::I8 => {
            for (o, v) in out.reuse::<i8>(shape).iter_mut().zip(q) {
                *o = v.clamp(-128.0, 127.0) as i8;
            }
        }
        other => return Err(format!("quantizing to {other} is not supported (int8, uint8)")),
    }
    Ok(())
}

fn dynamic_quantize(x: &Tensor, outputs: &mut [Tensor]) -> KResult {
    let xv = x.as_slice::<f32>().ok_or_else(|| format!("DynamicQuantizeLinear needs f32, got {}", x.dtype()))?;
    let lo = xv.iter().fold(0f32, |m, &v| m.min(v));
    let hi = xv.iter().fold(0f32, |m, &v| m.max(v));
    let scale = (hi - lo) / 255.0;
    let zp = if scale > 0.0 { (-lo / scale).round_ties_even().clamp(0.0, 255.0) } else { 0.0 };
    let o = outputs[0].reuse::<u8>(x.shape());
    for (o, &v) in o.iter_mut().zip(xv) {
        *o = if scale > 0.0 { ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8 } else { 0 };
    }
    if outputs.len() > 1 {
        outputs[1].reuse_f32(&[])[0] = scale;
    }
    if outputs.len() > 2 {
        outputs[2].reuse::<u8>(&[])[0] = zp as u8;
    }
    Ok(())
}

/// `x - zp` as i32; `zp` per tensor or per index along `axis` (for MatMulInteger, A's rows and
/// B's columns). `vector` marks a 1-D A, whose zero point is a scalar.
fn shifted_i32(x: &Tensor, zp: Option<&Tensor>, axis: usize, vector: bool) -> Result<Tensor, String> {
    if !matches!(x.dtype(), DType::I8 | DType::U8) {
        return Err(format!("integer matmul operands must be int8 or uint8, got {}", x.dtype()));
    }
    let len = zp.map_or(1, |z| z.len());
    let idx = if vector { vec![0; x.len()] } else { param_index(x.shape(), len, axis as i64, 0)? };
    let zv = zero_points(zp, len)?;
    let v: Vec<i32> = x.to_f64_vec().iter().zip(&idx).map(|(&v, &i)| (v - zv[i]) as i32).collect();
    Tensor::from_vec(x.shape().to_vec(), v).ok_or_else(|| "shape".to_string())
}

/// `x - zp` as f32 (zero point per tensor or along `axis`).
fn shifted_f32(x: &Tensor, zp: Option<&Tensor>, axis: i64) -> Result<Tensor, String> {
    let len = zp.map_or(1, |z| z.len());
    let idx = param_index(x.shape(), len, axis, 0)?;
    let zv = zero_points(zp, len)?;
    let v: Vec<f32> = x.to_f64_vec().iter().zip(&idx).map(|(&v, &i)| (v - zv[i]) as f32).collect();
    Tensor::from_vec(x.shape().to_vec(), v).ok_or_else(|| "shape".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_and_axis_indices() {
        // [2, 4] blocked by 2 along axis 1: scales [2, 2].
        assert_eq!(param_index(&[2, 4], 4, 1, 2).unwrap(), vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(param_index(&[2, 3], 3, 1, 0).unwrap(), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(param_index(&[2, 3], 2, 0, 0).unwrap(), vec![0, 0, 0, 1, 1, 1]);
        assert!(param_index(&[2, 3], 2, 1, 0).is_err());
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let s = Tensor::scalar(2f32);
        let z = Tensor::scalar(128u8);
        let mut out = Tensor::placeholder();
        quantize(&[1.0, 3.0, 5.0, 1000.0, -1000.0], &[5], &s, Some(&z), 1, 0, DType::U8, &mut out).unwrap();
        assert_eq!(out.as_slice::<u8>().unwrap(), &[128, 130, 130, 255, 0]);
    }
}
