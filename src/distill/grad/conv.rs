//! Conv gradients (1-D to 3-D, groups incl. depthwise) by im2col and GEMM. The window geometry
//! is the forward kernels' own (`kernels::window`: defaults, auto_pad, ceil_mode, embedded in
//! 3-D), so forward and backward cannot disagree; the tap tables are shared with the pools.

use super::{f32s, grad_or_zeros, GradResult};
use crate::backend::cpu::kernels::linalg::sgemm;
pub use crate::backend::cpu::kernels::window::{resolve, Geom};
use crate::ir::Window;
use crate::tensor::Tensor;

/// The gradients' view of the forward kernels' window geometry: which input each tap reads.
pub trait Taps {
    fn taps(&self, d: usize, o: usize) -> (Vec<Option<usize>>, usize);
    fn table(&self) -> Vec<Option<usize>>;
}

impl Taps for Geom {
    /// Input positions along dim `d` read by output `o` (None where the tap is padding), and
    /// the number of taps inside the padded extent (AveragePool's count_include_pad divisor).
    fn taps(&self, d: usize, o: usize) -> (Vec<Option<usize>>, usize) {
        let start = (o * self.stride[d]) as isize - self.pad[d] as isize;
        let padded_end = (self.input[d] + self.pad_end[d]) as isize;
        let mut with_pad = 0;
        let taps = (0..self.kernel[d])
            .map(|k| {
                let i = start + (k * self.dilation[d]) as isize;
                if i < padded_end {
                    with_pad += 1;
                }
                (i >= 0 && (i as usize) < self.input[d]).then_some(i as usize)
            })
            .collect();
        (taps, with_pad)
    }

    /// For every (kernel position, output position) pair, the input spatial offset it reads:
    /// the im2col index table, shared by every channel.
    fn table(&self) -> Vec<Option<usize>> {
        let (ks, p) = (self.kernel.iter().product::<usize>(), self.out_size());
        let mut t = vec![None; ks * p];
        let taps: Vec<Vec<(Vec<Option<usize>>, usize)>> =
            (0..3).map(|d| (0..self.out[d]).map(|o| self.taps(d, o)).collect()).collect();
        let [_, i1, i2] = self.input;
        let [k0, k1, k2] = self.kernel;
        let [o0, o1, o2] = self.out;
        for a in 0..k0 {
            for b in 0..k1 {
                for c in 0..k2 {
                    let kk = (a * k1 + b) * k2 + c;
                    for y0 in 0..o0 {
                        for y1 in 0..o1 {
                            for y2 in 0..o2 {
                                let pos = (y0 * o1 + y1) * o2 + y2;
                                if let (Some(u), Some(v), Some(w)) =
                                    (taps[0][y0].0[a], taps[1][y1].0[b], taps[2][y2].0[c])
                                {
                                    t[kk * p + pos] = Some((u * i1 + v) * i2 + w);
                                }
                            }
                        }
                    }
                }
            }
        }
        t
    }
}

/// Y[n, g*Mg + m] = W_g[m, :] . cols(X[n, group g]) (+ B); per image and group:
/// dW_g += dY cols^T, dcols = W_g^T dY (scattered back to dX by col2im), dB = sum dY.
pub fn conv(
    w: &Window,
    group: usize,
    inputs: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: &[Option<&Tensor>],
    need: &[bool],
) -> GradResult {
    let x = inputs.first().copied().flatten().ok_or("Conv X missing")?;
    let wt = inputs.get(1).copied().flatten().ok_or("Conv W missing")?;
    let (xs, ws) = (x.shape(), wt.shape());
    if xs.len() < 3 || ws.len() != xs.len() || group == 0 {
        return Err(format!("Conv of X {xs:?} and W {ws:?} in {group} groups is not supported"));
    }
    let g = resolve(w, &xs[2..], &ws[2..])?;
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    if c % group != 0 || m % group != 0 || ws[1] * group != c {
        return Err(format!("X {xs:?} and W {ws:?} do not fit {group} groups"));
    }
    let dy = grad_or_zeros(grads, outputs, 0);
    let (xv, wv, dyv) = (f32s(x, "X")?, f32s(wt, "W")?, f32s(&dy, "gradient")?);
    let (cg, mg) = (c / group, m / group);
    let ks: usize = ws[2..].iter().product();
    let (kk, p, isz) = (cg * ks, g.out_size(), g.in_size());
    if dyv.len() != n * m * p {
        return Err(format!("gradient shape {:?} does not fit the Conv output", dy.shape()));
    }
    let want = |i: usize| need.get(i) == Some(&true) && inputs.get(i).copied().flatten().is_some();
    let table = g.table();
    let mut dx = want(0).then(|| vec![0f32; xv.len()]);
    let mut dw = want(1).then(|| vec![0f32; wv.len()]);
    let mut cols = vec![0f32; kk * p];
    for img in 0..n {
        for gi in 0..group {
            let dyg = &dyv[(img * m + gi * mg) * p..][..mg * p];
            let xg = &xv[(img * c + gi * cg) * isz..][..cg * isz];
            if let Some(dw) = dw.as_mut() {
                for ch in 0..cg {
                    let plane = &xg[ch * isz..][..isz];
                    for (dst, src) in cols[ch * ks * p..][..ks * p].iter_mut().zip(&table) {
                        *dst = src.map_or(0.0, |o| plane[o]);
                    }
                }
                let dwg = &mut dw[gi * mg * kk..][..mg * kk];
                sgemm(mg, p, kk, 1.0, dyg, (p as isize, 1), &cols, (1, p as isize), 1.0, dwg, kk as isize);
            }
            if let Some(dx) = dx.as_mut() {
                let wg = &wv[gi * mg * kk..][..mg * kk];
                sgemm(kk, mg, p, 1.0, wg, (1, kk as isize), dyg, (p as isize, 1), 0.0, &mut cols, p as isize);
                let dxg = &mut dx[(img * c + gi * cg) * isz..][..cg * isz];
                for ch in 0..cg {
                    let plane = &mut dxg[ch * isz..][..isz];
                    for (src, t) in cols[ch * ks * p..][..ks * p].iter().zip(&table) {
                        if let Some(o) = t {
                            plane[*o] += src;
                        }
                    }
                }
            }
        }
    }
    let mut out = vec![None; inputs.len()];
    out[0] = dx.and_then(|v| Tensor::from_vec(xs.to_vec(), v));
    if let Some(dw) = dw {
        out[1] = Tensor::from_vec(ws.to_vec(), dw);
    }
    if want(2) {
        let mut db = vec![0f32; m];
        for img in 0..n {
            for (ch, d) in db.iter_mut().enumerate() {
                *d += dyv[(img * m + ch) * p..][..p].iter().sum::<f32>();
            }
        }
        out[2] = Tensor::from_vec(vec![m], db);
    }
    Ok(out)
}
