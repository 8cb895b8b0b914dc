//! Conv: im2col + SGEMM. One image is one GEMM per group straight into Y (1x1 stride-1 unpadded
//! convs use the input itself as the patch matrix); a batch puts every image's patches side by
//! side for one wide GEMM per group. A conv whose weight the plan packed (those that need
//! patches) skips the patch matrix: its patches go from the padded image straight into the
//! register tile's panels, one GEMM per image (`patches_packed`). Grouped convs with one input
//! channel per group (depthwise) run the direct kernel of `depthwise.rs`. Bias and an optional
//! fused activation are applied in the output pass (the epilogue), not as separate passes over Y.
//! ConvTranspose lives in `conv_transpose.rs`.

use super::activation::bias_apply;
pub(super) use super::im2col::im2col;
use super::im2col::src;
use super::linalg::sgemm_then;
use super::microkernel::Isa;
use super::packed::{self, PackedCols, PackedRows};
use super::window::{resolve, via_f32, Geom};
use super::{direct, threads};
use super::{opt, req, KResult};
use crate::ir::{Op, Unary, Window};
use crate::tensor::Tensor;

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], outputs: &mut [Tensor], scratch: &mut Vec<f32>) -> KResult {
    eval_fused(op, None, inputs, outputs, scratch)
}

/// Conv with the activation `act` applied to its output in the epilogue (the CPU plan fuses an
/// activation that is the Conv's only reader this way).
pub fn eval_fused(
    op: &Op,
    act: Option<&Unary>,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    match op {
        Op::Conv { window, group } => {
            via_f32(inputs, outputs, scratch, &[], |i, o, s| conv(window, *group, act, None, i, &mut o[0], s))
        }
        Op::ConvTranspose(a) => via_f32(inputs, outputs, scratch, &[], |i, o, s| {
            super::conv_transpose::eval(a, i, &mut o[0], s)?;
            if let Some(u) = act {
                super::activation::apply(u, o[0].as_mut_slice::<f32>().ok_or("ConvTranspose output is f32")?);
            }
            Ok(())
        }),
        _ => Err(format!("{} is not a convolution", op.name())),
    }
}

/// Conv on f32 X with its weight packed at plan time (`packed`), activation `act` fused.
pub fn eval_packed(
    op: &Op,
    act: Option<&Unary>,
    packed: &PackedRows,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    match op {
        Op::Conv { window, group } => conv(window, *group, act, Some(packed), inputs, &mut outputs[0], scratch),
        _ => Err(format!("{} has no packed convolution", op.name())),
    }
}

/// A 1x1 ungrouped Conv on a one-position X (`[N,C,1..]`) with `W'` packed at plan time as
/// `C x M` columns: `Y[N,M] = X[N,C] W' + b`, activation `act` fused. Any other input (a
/// model whose spatial size varies at run time) runs the general path.
pub fn eval_pointwise_packed(
    op: &Op,
    act: Option<&Unary>,
    packed: &PackedCols,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    let Op::Conv { window, group } = op else {
        return Err(format!("{} has no packed pointwise convolution", op.name()));
    };
    let (x, wt) = (req(inputs, 0)?, req(inputs, 1)?);
    let (n, c, m, sp, ks) = check_xw(x, wt, *group, false)?;
    let g = resolve(window, sp, ks)?;
    let one_position = g.in_size() == 1 && g.out_size() == 1 && g.pad == [0; 3] && g.pad_end == [0; 3];
    let (Some(xv), true) = (x.as_slice::<f32>(), one_position && packed.k == c && packed.n == m && *group == 1) else {
        return eval_fused(op, act, inputs, outputs, scratch);
    };
    let b = bias(opt(inputs, 2), m)?;
    let mut oshape: crate::tensor::Dims = smallvec::smallvec![n, m];
    oshape.extend_from_slice(&g.out_dims);
    let y = outputs[0].reuse_f32(&oshape);
    if let Some(b) = b {
        for row in y.chunks_exact_mut(m) {
            row.copy_from_slice(b);
        }
    }
    packed::gemm_cols(Isa::detect(), xv, (c, 1), n, packed, y, 1.0, b.is_some());
    if let Some(u) = act {
        super::activation::apply(u, y);
    }
    Ok(())
}

/// (N, C, M, spatial dims of X, kernel dims of W).
pub type XwDims<'a> = (usize, usize, usize, &'a [usize], &'a [usize]);

/// Checks X/W ranks and channel counts.
pub fn check_xw<'a>(x: &'a Tensor, w: &'a Tensor, group: usize, transposed: bool) -> Result<XwDims<'a>, String> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!("X {xs:?} and W {ws:?} must have the same rank >= 3"));
    }
    if group == 0 {
        return Err("group must be positive".into());
    }
    let (n, c) = (xs[0], xs[1]);
    if c % group != 0 {
        return Err(format!("{c} input channels are not divisible by group {group}"));
    }
    let m = if transposed {
        if ws[0] != c {
            return Err(format!("W {ws:?} must have {c} input channels first"));
        }
        ws[1] * group
    } else {
        if ws[1] * group != c || ws[0] % group != 0 {
            return Err(format!("W {ws:?} does not fit {c} input channels in {group} groups"));
        }
        ws[0]
    };
    Ok((n, c, m, &xs[2..], &ws[2..]))
}

/// Bias of `m` channels, or None.
pub fn bias(b: Option<&Tensor>, m: usize) -> Result<Option<&[f32]>, String> {
    match b {
        None => Ok(None),
        Some(b) => {
            let v = b.as_slice::<f32>().ok_or("bias must have the type of X")?;
            if v.len() != m {
                return Err(format!("bias has {} values for {m} output channels", v.len()));
            }
            Ok(Some(v))
        }
    }
}

/// Output positions from which a batched 1x1 conv runs one GEMM per image (see [`conv`]).
const PER_IMAGE_POSITIONS: usize = 256;

/// Conv on f32 X (input 0) by window `w` in `group`s with activation `act` fused, on the
/// weight packed at plan time (`packed`) or on input 1.
pub fn conv(
    w: &Window,
    group: usize,
    act: Option<&Unary>,
    packed: Option<&PackedRows>,
    inputs: &[Option<&Tensor>],
    out: &mut Tensor,
    scratch: &mut Vec<f32>,
) -> KResult {
    let (x, wt) = (req(inputs, 0)?, req(inputs, 1)?);
    let (n, c, m, sp, ks) = check_xw(x, wt, group, false)?;
    if !w.kernel.is_empty() && w.kernel != ks {
        return Err(format!("kernel_shape {:?} differs from the weight's {ks:?}", w.kernel));
    }
    let g = resolve(w, sp, ks)?;
    let b = bias(opt(inputs, 2), m)?;
    let xv = x.as_slice::<f32>().ok_or("X must be f32")?;
    let wv = wt.as_slice::<f32>().ok_or("W must have the type of X")?;
    let mut oshape: crate::tensor::Dims = smallvec::smallvec![n, m];
    oshape.extend_from_slice(&g.out_dims);
    let y = out.reuse_f32(&oshape);
    let (cg, mg) = (c / group, m / group);
    let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
    if osz == 0 || n == 0 || m == 0 {
        return Ok(());
    }
    let bias_of = |ch: usize| b.map_or(0.0, |b| b[ch]);
    if cg == 1 && group > 1 {
        if direct::supports(&g) {
            direct::conv(&g, xv, wv, b, act, y, direct::Channels { n, group, cg, mg }, scratch);
        } else {
            for (i, plane) in y.chunks_mut(osz).enumerate() {
                plane.fill(bias_of(i % m));
            }
            depthwise_3d(&g, xv, wv, y, n, c, mg);
            if let Some(u) = act {
                super::activation::apply(u, y);
            }
        }
        return Ok(());
    }
    if ksz > 1 && cg * ksz <= direct::SHORT_K && direct::supports(&g) {
        // A short reduction (an RGB stem): im2col and packing would cost more than the
        // multiply-adds (MobileNetV3-224's 3x3 stem: 0.59 -> 0.33 ms at batch 1). Not 1x1
        // convs, which need no im2col: matrixmultiply ran MobileNetV3's 16- and 24-channel ones
        // 1.5x faster.
        direct::conv(&g, xv, wv, b, act, y, direct::Channels { n, group, cg, mg }, scratch);
        return Ok(());
    }
    let pointwise = g.kernel == [1; 3] && g.stride == [1; 3] && g.pad == [0; 3] && g.pad_end == [0; 3];
    let kdim = cg * ksz;
    // A weight packed at plan time for exactly this shape, else matrixmultiply. Products
    // narrower than one column panel run on the tile too (a last stage's 2x6 map): the
    // squeeze-excitation 1x1 convs on a pooled [C,1,1], where it would compute 16 columns for
    // one, have their own GEMV packing (`prepack::pointwise_on_one_position`).
    let packed = packed.filter(|p| p.groups == group && p.m == mg && p.k == kdim);
    let isa = Isa::detect();
    if let (Some(p), false) = (packed, pointwise) {
        patches_packed(&g, isa, p, (n, c, m, group), act, b, xv, y, scratch);
        return Ok(());
    }
    if n == 1 {
        // One image: the GEMM writes straight into Y, then bias and activation in place.
        let col_len = if pointwise { 0 } else { kdim * osz };
        let pack_len = packed.map_or(0, |_| packed::rows_scratch_len(kdim, osz));
        scratch.resize(col_len + pack_len, 0.0);
        let (colbuf, packbuf) = scratch.split_at_mut(col_len);
        for grp in 0..group {
            let xg = &xv[grp * cg * isz..][..cg * isz];
            let col: &[f32] = if pointwise {
                xg
            } else {
                // A channel's rows at a time over the pool (a copy costs about a multiply-add).
                let tasks = threads::tasks(cg, ksz * osz);
                threads::for_each_chunk(colbuf, ksz * osz, &mut [], 0, tasks, |ch, rows, _| {
                    im2col(&g, &xg[ch * isz..][..isz], 1, rows, osz)
                });
                &*colbuf
            };
            let yg = &mut y[grp * mg * osz..][..mg * osz];
            let epilogue = |r: usize, row: &mut [f32]| bias_apply(act, bias_of(grp * mg + r), row);
            match packed {
                Some(p) => {
                    packed::gemm_rows(isa, p, grp, col, osz, yg, packbuf, &|r, _, row: &mut [f32]| epilogue(r, row))
                }
                None => gemm_rows(mg, kdim, osz, &wv[grp * mg * kdim..][..mg * kdim], col, yg, epilogue),
            }
        }
        return Ok(());
    }
    // A batch: runs of images over the pool.
    let tasks = threads::tasks(n, m * kdim * osz);
    if pointwise && osz >= PER_IMAGE_POSITIONS {
        // A 1x1 conv on a wide map: its GEMM per image is wide already, so each image's X is the
        // patch matrix and Y is written in place, as at batch 1. Side by side, the copy in and
        // the scatter out cost more than the products of a short reduction (MobileNetV3-224 at
        // batch 8: its 16- and 24-channel 1x1 convs took 2.2x eight times their batch-1 time).
        let wg = |grp: usize| &wv[grp * mg * kdim..][..mg * kdim];
        let pack_len = packed.map_or(0, |_| packed::rows_scratch_len(kdim, osz));
        scratch.resize(pack_len * threads::slots(tasks), 0.0);
        threads::for_each_chunk(&mut y[..n * m * osz], m * osz, scratch, pack_len, tasks, |img, yimg, buf| {
            for grp in 0..group {
                let xg = &xv[(img * c + grp * cg) * isz..][..cg * isz];
                let yg = &mut yimg[grp * mg * osz..][..mg * osz];
                match packed {
                    Some(p) => packed::gemm_rows(isa, p, grp, xg, osz, yg, buf, &|r, _, row: &mut [f32]| {
                        bias_apply(act, bias_of(grp * mg + r), row)
                    }),
                    None => {
                        gemm_rows(mg, kdim, osz, wg(grp), xg, yg, |r, row| bias_apply(act, bias_of(grp * mg + r), row))
                    }
                }
            }
        });
        return Ok(());
    }
    // Otherwise a run puts its images' patches side by side (kdim x images*osz), one wide GEMM
    // per group instead of one per image, then a scatter back to NCHW with bias and activation.
    let cols = threads::per_run(n, tasks) * osz;
    let pack_len = packed.map_or(0, |_| packed::rows_scratch_len(kdim, cols));
    let slot = kdim * cols + mg * cols + pack_len;
    scratch.resize(slot * threads::slots(tasks), 0.0);
    threads::for_each_run(&mut y[..n * m * osz], m * osz, scratch, slot, tasks, |img0, yrun, buf| {
        let imgs = yrun.len() / (m * osz);
        let cols = imgs * osz;
        let (col, rest) = buf.split_at_mut(kdim * cols);
        let (tmp, packbuf) = rest.split_at_mut(mg * cols);
        for grp in 0..group {
            for i in 0..imgs {
                let xg = &xv[((img0 + i) * c + grp * cg) * isz..][..cg * isz];
                let dst = &mut col[i * osz..];
                if pointwise {
                    for (r, src) in xg.chunks_exact(isz).enumerate() {
                        dst[r * cols..][..osz].copy_from_slice(src);
                    }
                } else {
                    im2col(&g, xg, cg, dst, cols);
                }
            }
            let tmp = &mut tmp[..mg * cols];
            match packed {
                Some(p) => packed::gemm_rows(isa, p, grp, col, cols, tmp, packbuf, &|_, _, _: &mut [f32]| {}),
                None => gemm_rows(mg, kdim, cols, &wv[grp * mg * kdim..][..mg * kdim], col, tmp, |_, _| {}),
            }
            for (mo, row) in tmp.chunks_exact(cols).enumerate() {
                let ch = grp * mg + mo;
                for (i, src) in row.chunks_exact(osz).enumerate() {
                    let dst = &mut yrun[(i * m + ch) * osz..][..osz];
                    dst.copy_from_slice(src);
                    bias_apply(act, bias_of(ch), dst);
                }
            }
        }
    });
    Ok(())
}

/// A conv with patches (taps, stride or padding) on its weight packed at plan time: each
/// image's patches go from a zero-padded copy of the image straight into the tile's column
/// panels (`im2col::pack_patches`, no patch matrix), and one GEMM per image and group writes Y
/// in place, bias and activation in its epilogue; a batch splits by images over the pool.
/// Against im2col + matrixmultiply, which packs both operands again on every call, the fixture
/// teacher at batch 1 on Zen 3 went from 0.64-0.67x tract's time to 0.47-0.50x.
#[allow(clippy::too_many_arguments)]
fn patches_packed(
    g: &Geom,
    isa: Isa,
    p: &PackedRows,
    (n, c, m, group): (usize, usize, usize, usize),
    act: Option<&Unary>,
    b: Option<&[f32]>,
    xv: &[f32],
    y: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (cg, mg, isz, osz) = (c / group, m / group, g.in_size(), g.out_size());
    let pad_len = super::im2col::padded_len(g, cg);
    let slot = pad_len + packed::rows_scratch_len(p.k, osz);
    let tasks = threads::tasks(n, m * p.k * osz);
    scratch.resize(slot * threads::slots(tasks), 0.0);
    threads::for_each_chunk(&mut y[..n * m * osz], m * osz, scratch, slot, tasks, |img, yimg, buf| {
        let (padded, panels) = buf.split_at_mut(pad_len);
        for grp in 0..group {
            super::im2col::pad_image(g, &xv[(img * c + grp * cg) * isz..][..cg * isz], cg, padded);
            let padded = &*padded;
            let pack = |j0, cols, dst: &mut [f32]| super::im2col::pack_patches(g, padded, cg, j0, cols, dst);
            let epilogue = |r: usize, _, row: &mut [f32]| bias_apply(act, b.map_or(0.0, |b| b[grp * mg + r]), row);
            let yg = &mut yimg[grp * mg * osz..][..mg * osz];
            packed::gemm_rows_with(isa, p, grp, osz, yg, panels, &pack, &epilogue);
        }
    });
}

/// `y = w (m x k) * col (k x n)`, all row-major and packed, then `epilogue(row, y_row_part)` on
/// every stretch of an output row while it is still in cache (split over the pool by
/// `sgemm_then`).
fn gemm_rows(
    m: usize,
    k: usize,
    n: usize,
    w: &[f32],
    col: &[f32],
    y: &mut [f32],
    epilogue: impl Fn(usize, &mut [f32]) + Sync,
) {
    let (ki, ni) = (k as isize, n as isize);
    sgemm_then(m, k, n, 1.0, w, (ki, 1), col, (ni, 1), 0.0, &mut y[..m * n], ni, &|r, _, part| epilogue(r, part));
}

/// One input channel per group, any rank (3-D depthwise convs, which the direct kernel of
/// `depthwise.rs` does not cover): each output channel is a direct correlation of one plane.
fn depthwise_3d(g: &Geom, x: &[f32], w: &[f32], y: &mut [f32], n: usize, c: usize, mg: usize) {
    let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
    let m = c * mg;
    let [o0, o1, o2] = g.out;
    let [k0, k1, k2] = g.kernel;
    let [_, i1, i2] = g.input;
    for img in 0..n {
        for oc in 0..m {
            let xc = &x[(img * c + oc / mg) * isz..][..isz];
            let wc = &w[oc * ksz..][..ksz];
            let yc = &mut y[(img * m + oc) * osz..][..osz];
            let mut p = 0;
            for y0 in 0..o0 {
                for y1 in 0..o1 {
                    for y2 in 0..o2 {
                        let mut acc = 0.0;
                        for a in 0..k0 {
                            let Some(s0) = src(y0, a, g, 0) else { continue };
                            for b in 0..k1 {
                                let Some(s1) = src(y1, b, g, 1) else { continue };
                                let line = &xc[(s0 * i1 + s1) * i2..][..i2];
                                let wl = &wc[(a * k1 + b) * k2..][..k2];
                                for (cc, &wv) in wl.iter().enumerate() {
                                    if let Some(s2) = src(y2, cc, g, 2) {
                                        acc += wv * line[s2];
                                    }
                                }
                            }
                        }
                        yc[p] += acc;
                        p += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::AutoPad;

    fn win(pads: Vec<usize>, strides: Vec<usize>) -> Window {
        Window { kernel: vec![], strides, pads, dilations: vec![], auto_pad: AutoPad::NotSet, ceil_mode: false }
    }

    /// Naive reference conv for 2-D.
    fn naive(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], group: usize, pad: usize, s: usize) -> Vec<f32> {
        let [n, c, h, wd] = xs;
        let [m, cg, kh, kw] = ws;
        let oh = (h + 2 * pad - kh) / s + 1;
        let ow = (wd + 2 * pad - kw) / s + 1;
        let mg = m / group;
        let mut y = vec![0.0; n * m * oh * ow];
        for img in 0..n {
            for oc in 0..m {
                let grp = oc / mg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0;
                        for ic in 0..cg {
                            let ch = grp * cg + ic;
                            for a in 0..kh {
                                for b in 0..kw {
                                    let iy = (oy * s + a) as isize - pad as isize;
                                    let ix = (ox * s + b) as isize - pad as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    acc += x[((img * c + ch) * h + iy as usize) * wd + ix as usize]
                                        * w[((oc * cg + ic) * kh + a) * kw + b];
                                }
                            }
                        }
                        y[((img * m + oc) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_naive() {
        let cases = [
            (4, 6, 1, 3, 1, 1),
            (4, 6, 2, 3, 0, 2),
            (4, 8, 4, 3, 1, 1),
            (3, 5, 1, 1, 0, 1),
            (4, 4, 4, 2, 1, 2),
            (1, 4, 1, 3, 1, 1),
            (3, 5, 1, 3, 2, 2),
            (2, 3, 1, 5, 1, 3),
            (4, 6, 2, 1, 0, 1),
        ];
        // 1x1 convs also on a 16x17 map: at batch > 1 they run one GEMM per image.
        let maps = |k: usize, pad: usize, s: usize| {
            if k == 1 && pad == 0 && s == 1 {
                vec![(5, 6), (16, 17)]
            } else {
                vec![(5, 6)]
            }
        };
        let all = (1..4).flat_map(|n| {
            cases.iter().flat_map(move |&cs| maps(cs.3, cs.4, cs.5).into_iter().map(move |hw| (n, cs, hw)))
        });
        for (n, (c, m, group, k, pad, s), (h, w)) in all {
            let xs = [n, c, h, w];
            let ws = [m, c / group, k, k];
            let x: Vec<f32> = (0..xs.iter().product()).map(|i| ((i * 7 % 13) as f32) - 6.0).collect();
            let w: Vec<f32> = (0..ws.iter().product()).map(|i| ((i * 5 % 11) as f32) * 0.1 - 0.5).collect();
            let xt = Tensor::from_vec(xs.to_vec(), x.clone()).unwrap();
            let wt = Tensor::from_vec(ws.to_vec(), w.clone()).unwrap();
            let op = Op::Conv { window: win(vec![pad; 4], vec![s, s]), group };
            let mut out = vec![Tensor::empty(crate::tensor::DType::F32)];
            eval(&op, &[Some(&xt), Some(&wt)], &mut out, &mut Vec::new()).unwrap();
            let want = naive(&x, xs, &w, ws, group, pad, s);
            // The same conv on the weight packed as the plan packs it (depthwise ones aside),
            // with a bias and a fused ReLU.
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 0.5).collect();
            let bt = Tensor::from_vec(vec![m], bias.clone()).unwrap();
            let mut fused = vec![Tensor::empty(crate::tensor::DType::F32)];
            let cg = c / group;
            if cg > 1 || group == 1 {
                let p = PackedRows::pack(&w, group, m / group, cg * k * k);
                let ins = [Some(&xt), Some(&wt), Some(&bt)];
                eval_packed(&op, Some(&Unary::Relu), &p, &ins, &mut fused, &mut Vec::new()).unwrap();
            }
            let got = out[0].as_slice::<f32>().unwrap();
            assert_eq!(got.len(), want.len());
            let osz = want.len() / (n * m);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-4, "{a} vs {b} for n{n} c{c} m{m} g{group} k{k} p{pad} s{s}");
                if let Some(f) = fused[0].as_slice::<f32>().filter(|f| !f.is_empty()) {
                    let e = (b + bias[(i / osz) % m]).max(0.0);
                    assert!(
                        (f[i] - e).abs() < 1e-4,
                        "packed {} vs {e} for n{n} c{c} m{m} g{group} k{k} p{pad} s{s}",
                        f[i]
                    );
                }
            }
        }
    }
}
