//! ConvTranspose: one SGEMM per (image, group) producing W^T X columns, scattered (col2im) into
//! the output.

use super::conv::{bias, check_xw};
use super::linalg::sgemm;
use super::window::embed3;
use super::{opt, req, KResult};
use crate::ir::{AutoPad, ConvTransposeAttrs};
use crate::tensor::Tensor;

/// Output spatial dims and begin pads (possibly negative, as ONNX's formulas allow).
pub fn geometry(a: &ConvTransposeAttrs, input: &[usize], kernel: &[usize]) -> Result<(Vec<usize>, Vec<isize>), String> {
    let n = input.len();
    let w = &a.window;
    let get = |v: &[usize], len: usize, d: usize, what: &str| -> Result<Vec<usize>, String> {
        match v.len() {
            0 => Ok(vec![d; len]),
            l if l == len => Ok(v.to_vec()),
            l => Err(format!("{what} has {l} values for {n} spatial dims")),
        }
    };
    let s = get(&w.strides, n, 1, "strides")?;
    let d = get(&w.dilations, n, 1, "dilations")?;
    let pads = get(&w.pads, 2 * n, 0, "pads")?;
    let op = get(&a.output_padding, n, 0, "output_padding")?;
    let given: Option<&[usize]> = match a.output_shape.len() {
        0 => None,
        l if l == n => Some(&a.output_shape),
        l if l == n + 2 => Some(&a.output_shape[2..]),
        l => return Err(format!("output_shape has {l} values for {n} spatial dims")),
    };
    let (mut out, mut pb) = (vec![0; n], vec![0isize; n]);
    for i in 0..n {
        if s[i] == 0 || d[i] == 0 {
            return Err("strides and dilations must be positive".into());
        }
        if input[i] == 0 {
            return Err("empty spatial input".into());
        }
        let full = (s[i] * (input[i] - 1) + op[i] + (kernel[i].max(1) - 1) * d[i] + 1) as isize;
        let same = matches!(w.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
        let o = match given {
            Some(g) => g[i] as isize,
            None if same => (input[i] * s[i]) as isize,
            None if w.auto_pad == AutoPad::Valid => full,
            None => full - (pads[i] + pads[n + i]) as isize,
        };
        if o < 0 {
            return Err(format!("negative output extent {o}"));
        }
        out[i] = o as usize;
        pb[i] = if same {
            let total = full - o;
            if w.auto_pad == AutoPad::SameUpper {
                total.div_euclid(2)
            } else {
                total - total.div_euclid(2)
            }
        } else if w.auto_pad == AutoPad::Valid {
            0
        } else {
            pads[i] as isize
        };
    }
    Ok((out, pb))
}

pub fn eval(a: &ConvTransposeAttrs, inputs: &[Option<&Tensor>], out: &mut Tensor, scratch: &mut Vec<f32>) -> KResult {
    let (x, wt) = (req(inputs, 0)?, req(inputs, 1)?);
    let group = a.group;
    let (n, c, m, sp, ks) = check_xw(x, wt, group, true)?;
    if sp.is_empty() || sp.len() > 3 {
        return Err(format!("{} spatial dims: 1 to 3 are supported", sp.len()));
    }
    let (odims, pb) = geometry(a, sp, ks)?;
    let b = bias(opt(inputs, 2), m)?;
    let xv = x.as_slice::<f32>().ok_or("X must be f32")?;
    let wv = wt.as_slice::<f32>().ok_or("W must have the type of X")?;
    let mut oshape: crate::tensor::Dims = smallvec::smallvec![n, m];
    oshape.extend_from_slice(&odims);
    let y = out.reuse_f32(&oshape);
    let (cg, mg) = (c / group, m / group);
    let isz: usize = sp.iter().product();
    let osz: usize = odims.iter().product();
    let ksz: usize = ks.iter().product();
    for (i, plane) in y.chunks_mut(osz.max(1)).enumerate() {
        plane.fill(b.map_or(0.0, |b| b[i % m]));
    }
    if osz == 0 || n == 0 || m == 0 {
        return Ok(());
    }
    let nd = sp.len();
    let w = &a.window;
    let strides = if w.strides.is_empty() { vec![1; nd] } else { w.strides.clone() };
    let dil = if w.dilations.is_empty() { vec![1; nd] } else { w.dilations.clone() };
    let (i3, k3, o3) = (embed3(sp, 1), embed3(ks, 1), embed3(&odims, 1));
    let (s3, d3) = (embed3(&strides, 1), embed3(&dil, 1));
    let mut p3 = [0isize; 3];
    p3[3 - nd..].copy_from_slice(&pb);
    // Output index along dim `d` of input index `i`, tap `k`.
    let dst = |i: usize, k: usize, d: usize| -> Option<usize> {
        let o = (i * s3[d] + k * d3[d]) as isize - p3[d];
        (o >= 0 && (o as usize) < o3[d]).then_some(o as usize)
    };
    let rows = mg * ksz;
    scratch.resize(rows * isz, 0.0);
    for img in 0..n {
        for grp in 0..group {
            let xg = &xv[(img * c + grp * cg) * isz..][..cg * isz];
            let wg = &wv[grp * cg * rows..][..cg * rows];
            let col = &mut scratch[..rows * isz];
            // col[r, p] = sum_c W[c, r] X[c, p]
            sgemm(rows, cg, isz, 1.0, wg, (1, rows as isize), xg, (isz as isize, 1), 0.0, col, isz as isize);
            for oc in 0..mg {
                let yc = &mut y[(img * m + grp * mg + oc) * osz..][..osz];
                for ka in 0..k3[0] {
                    for kb in 0..k3[1] {
                        for kc in 0..k3[2] {
                            let r = oc * ksz + (ka * k3[1] + kb) * k3[2] + kc;
                            let src = &col[r * isz..][..isz];
                            let mut p = 0;
                            for a0 in 0..i3[0] {
                                let Some(y0) = dst(a0, ka, 0) else {
                                    p += i3[1] * i3[2];
                                    continue;
                                };
                                for a1 in 0..i3[1] {
                                    let Some(y1) = dst(a1, kb, 1) else {
                                        p += i3[2];
                                        continue;
                                    };
                                    let line = &mut yc[(y0 * o3[1] + y1) * o3[2]..][..o3[2]];
                                    for a2 in 0..i3[2] {
                                        if let Some(y2) = dst(a2, kc, 2) {
                                            line[y2] += src[p];
                                        }
                                        p += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
