//! w8a8 GEMM and Conv ([`QData::W8a8`]): activations are quantized to int8 per row when the
//! kernel runs (symmetric, `scale = max|row| / 127`, or a calibrated static scale), multiplied
//! with the int8 weights in exact i32 arithmetic, and rescaled once per output:
//! `y[i, j] = sa[i] * sw[j] * sum_k qa[i, k] * qw[j, k]`.
//!
//! The dot products run four weight rows per activation row. On x86-64 with AVX2 (detected at
//! run time) they use `vpmaddubsw` (|a| as u8 times w with a's sign, pairs to i16) and
//! `vpmaddwd` (pairs to i32): 32 multiply-adds per instruction pair. Activations are in
//! [-128, 127] (QuantizeLinear's range; |a| = 128 is still exact as the u8 operand) and weights
//! in [-127, 127] (`w * sign(a)` must not overflow i8, so a weight of -128 never reaches
//! these kernels, see `quant::w8a8_compatible`), so the i16 pair sums (at most
//! 2 * 128 * 127 = 32512 < 32767) never saturate. Elsewhere
//! a plain widening loop that LLVM vectorizes (NEON `smull`/`sadalp` on phones).

use super::activation::InRegister;
use super::i8tile;
use super::window::{resolve, Geom};
use super::{opt, req, KResult};
use super::{qpatches, threads};
use crate::ir::Op;
use crate::quant::{QData, QWeight};
use crate::tensor::Tensor;

/// Largest int8 magnitude of the symmetric scales (`max|row| / 127`).
pub(super) const QMAX: f32 = 127.0;
/// Smallest quantized activation: -128, as QuantizeLinear saturates, so a static scale from a
/// QDQ file gives the values ONNX Runtime computes (a per-row scale never goes below -127).
pub(super) const QMIN: f32 = -128.0;

/// `v.round_ties_even().clamp(QMIN, QMAX) as i8` without a libm call per value (the baseline
/// x86-64 target has no SSE4.1 `roundps`, so `round_ties_even` is a call): after the clamp
/// (rounding is monotonic and the bounds are integers, so the order does not matter),
/// adding and subtracting 1.5 * 2^23 rounds to the nearest integer, ties to even. NaN stays
/// NaN and casts to 0, as before.
#[inline(always)]
pub(super) fn q8(v: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    ((v.clamp(QMIN, QMAX) + MAGIC) - MAGIC) as i8
}

/// Whether no value of `x` is below 0 (NaN quantizes to 0): the patches of such an input lie in
/// [0, 127] (`i8tile::Operands::BNonNeg`). Eight lanes at a time, so it vectorizes.
fn nonnegative(x: &[f32]) -> bool {
    let mut lo = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lo.iter_mut().zip(c) {
            *l = if v < *l { v } else { *l };
        }
    }
    lo.iter().chain(tail).all(|&v| v >= 0.0 || v.is_nan())
}

/// The int8 weight matrix `[n, k]`, its per-row scales and the static activation scale.
pub fn parts(w: &QWeight) -> Option<(&[i8], &[f32], Option<f32>)> {
    match &w.data {
        QData::W8a8 { q, scales, act_scale } => Some((q, scales, *act_scale)),
        _ => None,
    }
}

/// Quantizes `row` into `q` (round half to even, as ONNX and WGSL do) and returns its scale: `max|row| / 127` unless `fixed` is given
/// (then values outside `[-128, 127] * fixed` saturate). An all-zero row gets scale 0 and zeros.
pub fn quantize_row(row: &[f32], fixed: Option<f32>, q: &mut [i8]) -> f32 {
    let s = fixed.unwrap_or_else(|| row.iter().fold(0f32, |m, x| m.max(x.abs())) / QMAX);
    if !(s > 0.0 && s.is_finite()) {
        q.fill(0);
        return 0.0;
    }
    let inv = 1.0 / s;
    for (o, &x) in q.iter_mut().zip(row) {
        *o = q8(x * inv);
    }
    s
}

/// Splits an f32 scratch buffer into `m` f32 scales and `bytes` of i8 storage, growing it.
fn split_scratch(scratch: &mut Vec<f32>, m: usize, bytes: usize) -> (&mut [f32], &mut [i8]) {
    scratch.resize(m + bytes.div_ceil(4), 0.0);
    let (s, rest) = scratch.split_at_mut(m);
    // SAFETY: i8 has alignment 1 and every bit pattern is valid for both f32 and i8; the
    // byte slice covers exactly the f32 elements of `rest` it was made from.
    let q = unsafe { std::slice::from_raw_parts_mut(rest.as_mut_ptr().cast::<i8>(), bytes) };
    (s, q)
}

/// `acc[i * ldc + j] (op)= sum_k a[i, k] * w[j, k]` as i32 through `emit(i, j, dot)`.
/// `a` is `[m, k]` int8 in [-128, 127], `w` is `[n, k]` int8 in [-127, 127], both row-major.
pub fn gemm_i8(m: usize, n: usize, k: usize, a: &[i8], w: &[i8], mut emit: impl FnMut(usize, usize, i32)) {
    assert!(a.len() >= m * k && w.len() >= n * k, "gemm_i8 operand lengths");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let mut d = [0i32; 4];
        let mut j = 0;
        while j + 4 <= n {
            let rows = [&w[j * k..][..k], &w[(j + 1) * k..][..k], &w[(j + 2) * k..][..k], &w[(j + 3) * k..][..k]];
            for i in 0..m {
                // SAFETY: AVX2 was detected above; slices are exactly k long.
                unsafe { avx2::dot4(&a[i * k..][..k], rows, &mut d) };
                for (r, &v) in d.iter().enumerate() {
                    emit(i, j + r, v);
                }
            }
            j += 4;
        }
        for jj in j..n {
            for i in 0..m {
                emit(i, jj, dot_portable(&a[i * k..][..k], &w[jj * k..][..k]));
            }
        }
        return;
    }
    for j in 0..n {
        let wr = &w[j * k..][..k];
        for i in 0..m {
            emit(i, j, dot_portable(&a[i * k..][..k], wr));
        }
    }
}

/// i8 x i8 -> i32 dot product written so LLVM vectorizes it (widen to i16, multiply-add pairs).
#[inline]
pub fn dot_portable(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] as i16 as i32 * y[l] as i16 as i32;
        }
    }
    acc.iter().sum::<i32>() + ta.iter().zip(tb).map(|(&x, &y)| x as i32 * y as i32).sum::<i32>()
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// w8a8 [`Op::QGemm`]: `out[.., n] = alpha * a[.., k] . w[n, k]^T + beta * c`, `out` already
/// holding `beta * c` when `accumulate` is set.
pub fn qgemm_w8a8(
    w: &QWeight,
    av: &[f32],
    m: usize,
    alpha: f32,
    accumulate: bool,
    o: &mut [f32],
    scratch: &mut Vec<f32>,
) -> KResult {
    let (qw, sw, fixed) = parts(w).ok_or("not a w8a8 weight")?;
    let (n, k) = (w.n, w.k);
    let (sa, qa) = split_scratch(scratch, m, m * k);
    for i in 0..m {
        sa[i] = quantize_row(&av[i * k..][..k], fixed, &mut qa[i * k..][..k]);
    }
    gemm_i8(m, n, k, qa, qw, |i, j, d| {
        let v = alpha * sa[i] * sw[j] * d as f32;
        let y = &mut o[i * n + j];
        *y = if accumulate { *y + v } else { v };
    });
    Ok(())
}

/// A w8a8 QConv's operands, checked against each other.
struct QConvArgs<'a> {
    g: Geom,
    xv: &'a [f32],
    bias: Option<&'a [f32]>,
    group: usize,
    /// Batch, input channels, output channels.
    nb: usize,
    c: usize,
    m: usize,
    /// Per group: input channels, output channels, patch length.
    cg: usize,
    mg: usize,
    kdim: usize,
    w: &'a QWeight,
}

impl<'a> QConvArgs<'a> {
    fn check(op: &'a Op, inputs: &[Option<&'a Tensor>]) -> Result<QConvArgs<'a>, String> {
        let Op::QConv { window, group, w, wshape } = op else { return Err("not a QConv".into()) };
        let x = req(inputs, 0)?;
        let xv = x.as_slice::<f32>().ok_or_else(|| format!("QConv needs f32 input, got {}", x.dtype()))?;
        let xs = x.shape();
        let group = *group;
        if xs.len() != wshape.len()
            || xs.len() < 3
            || group == 0
            || xs[1] != wshape[1] * group
            || wshape[0] % group != 0
        {
            return Err(format!("QConv of {xs:?} with weight {wshape:?} (group {group}) is inconsistent"));
        }
        let g = resolve(window, &xs[2..], &wshape[2..])?;
        let (nb, c, m) = (xs[0], xs[1], wshape[0]);
        let (cg, mg, kdim) = (c / group, m / group, w.k);
        if kdim != cg * g.kernel_size() || w.n != m {
            return Err(format!("QConv weight [{}, {}] does not fit {wshape:?}", w.n, w.k));
        }
        let bias = match opt(inputs, 1) {
            Some(b) => Some(b.as_slice::<f32>().filter(|v| v.len() == m).ok_or("QConv bias must be f32 [c_out]")?),
            None => None,
        };
        Ok(QConvArgs { g, xv, bias, group, nb, c, m, cg, mg, kdim, w })
    }
}

/// w8a8 [`Op::QConv`]: each output position's input patch (`c_in/group * prod(kernel)`
/// values) is one activation row, quantized with its own scale; the weight rows are the
/// output channels. Any rank the CPU Conv supports (1-3 spatial dims), groups included.
pub fn qconv_w8a8(op: &Op, inputs: &[Option<&Tensor>], outputs: &mut [Tensor], scratch: &mut Vec<f32>) -> KResult {
    let QConvArgs { g, xv, bias, group, nb, c, m, cg, mg, kdim, w } = QConvArgs::check(op, inputs)?;
    let (qw, sw, fixed) = parts(w).ok_or("not a w8a8 weight")?;
    let mut oshape: crate::tensor::Dims = smallvec::smallvec![nb, m];
    oshape.extend_from_slice(&g.out_dims);
    let y = outputs[0].reuse_f32(&oshape);
    let (isz, osz) = (g.in_size(), g.out_size());
    // Scratch: the f32 patch matrix [kdim, osz] (im2col), per-position scales, then the int8
    // patches [osz, kdim] (one activation row per output position).
    let (head, qa) = split_scratch(scratch, kdim * osz + osz, osz * kdim);
    let (col, sa) = head.split_at_mut(kdim * osz);
    for img in 0..nb {
        for grp in 0..group {
            let xg = &xv[(img * c + grp * cg) * isz..][..cg * isz];
            super::conv::im2col(&g, xg, cg, col, osz);
            // Column maxima (vectorizes along the row), then quantize while transposing.
            sa.fill(0.0);
            for row in col.chunks_exact(osz) {
                for (m, &v) in sa.iter_mut().zip(row) {
                    *m = m.max(v.abs());
                }
            }
            for (p, s) in sa.iter_mut().enumerate() {
                *s = fixed.unwrap_or(*s / QMAX);
                if !(*s > 0.0 && s.is_finite()) {
                    *s = 0.0;
                }
                let inv = if *s > 0.0 { 1.0 / *s } else { 0.0 };
                for (r, q) in qa[p * kdim..][..kdim].iter_mut().enumerate() {
                    *q = q8(col[r * osz + p] * inv);
                }
            }
            let yg = &mut y[(img * m + grp * mg) * osz..][..mg * osz];
            gemm_i8(osz, mg, kdim, qa, &qw[grp * mg * kdim..][..mg * kdim], |p, j, d| {
                let ch = grp * mg + j;
                yg[j * osz + p] = sa[p] * sw[ch] * d as f32 + bias.map_or(0.0, |b| b[ch]);
            });
        }
    }
    Ok(())
}

/// Quantizes the rows of `av` (`[m, k]`) as [`quantize_row`] does into 4-byte groups (`kg` per
/// row, zero padded) and returns nothing; `sa` gets the scales, `asum` the integer row sums.
fn quantize_rows_grouped(av: &[f32], k: usize, fixed: Option<f32>, sa: &mut [f32], asum: &mut [i32], qa: &mut [i8]) {
    let kp = 4 * i8tile::groups(k);
    #[cfg(target_arch = "x86_64")]
    let (avx512, avx2) = (
        super::microkernel::Isa::detect() == super::microkernel::Isa::Avx512,
        std::arch::is_x86_feature_detected!("avx2"),
    );
    for (i, ((s, sum), q)) in sa.iter_mut().zip(asum.iter_mut()).zip(qa.chunks_exact_mut(kp)).enumerate() {
        let row = &av[i * k..][..k];
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: AVX-512F was detected; q holds kp >= k bytes.
            (*s, *sum) = unsafe { avx512::quantize_row(row, fixed, &mut q[..k]) };
            q[k..].fill(0);
            continue;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: AVX2 was detected; q holds kp >= k bytes.
            (*s, *sum) = unsafe { avx2::quantize_row(row, fixed, &mut q[..k]) };
            q[k..].fill(0);
            continue;
        }
        *s = quantize_row(row, fixed, &mut q[..k]);
        q[k..].fill(0);
        *sum = q[..k].iter().map(|&v| v as i32).sum();
    }
}

/// Carves an f32 scratch buffer into `nf` f32, `ni` i32 and `nb` bytes (4-aligned), growing it.
fn carve(scratch: &mut Vec<f32>, nf: usize, ni: usize, nb: usize) -> (&mut [f32], &mut [i32], &mut [i8]) {
    scratch.resize(nf + ni + nb.div_ceil(4), 0.0);
    let (f, rest) = scratch.split_at_mut(nf);
    let (i, b) = rest.split_at_mut(ni);
    // SAFETY: f32, i32 and i8 share every bit pattern; i32 has f32's alignment and i8 alignment
    // 1; each new slice covers exactly the f32 elements it was made from.
    unsafe {
        (
            f,
            std::slice::from_raw_parts_mut(i.as_mut_ptr().cast::<i32>(), ni),
            std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<i8>(), nb),
        )
    }
}

/// w8a8 [`Op::QGemm`] on the register-tiled kernel, the weight packed at plan time (`p`):
/// results bit-identical to [`qgemm_w8a8`] (same quantization, same exact integer sums, same
/// f32 rescaling order). `out` holds `beta * c` first when C is given.
#[allow(clippy::too_many_arguments)]
pub fn qgemm_packed(
    w: &QWeight,
    p: &i8tile::PackedCols,
    a: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    out: &mut Tensor,
    scratch: &mut Vec<f32>,
) -> KResult {
    qgemm_packed_on(i8tile::Isa::detect(), w, p, a, c, alpha, beta, out, scratch)
}

/// [`qgemm_packed`] on a given kernel body (tests run every body the CPU has).
#[allow(clippy::too_many_arguments)]
fn qgemm_packed_on(
    isa: i8tile::Isa,
    w: &QWeight,
    p: &i8tile::PackedCols,
    a: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    out: &mut Tensor,
    scratch: &mut Vec<f32>,
) -> KResult {
    let (_, sw, fixed) = parts(w).ok_or("not a w8a8 weight")?;
    let av = a.as_slice::<f32>().ok_or_else(|| format!("QGemm needs f32 activations, got {}", a.dtype()))?;
    let (n, k) = (w.n, w.k);
    let ash = a.shape();
    if ash.last() != Some(&k) || p.n != n || p.k != k || k == 0 {
        return Err(format!("QGemm input {ash:?} does not end with K = {k}"));
    }
    let m = av.len() / k;
    let mut osh = crate::tensor::Dims::from_slice(&ash[..ash.len() - 1]);
    osh.push(n);
    let o = out.reuse_f32(&osh);
    let accumulate = super::linalg::fill_bias("QGemm", o, c, beta, m, n)? != 0.0;
    rows_times_columns(isa, av, m, fixed, p, scratch, |i, j0, sa, sums| {
        let (y, swj) = (&mut o[i * n + j0..][..sums.len()], &sw[j0..][..sums.len()]);
        rescale_row(y, swj, sums, alpha * sa, accumulate);
    });
    Ok(())
}

/// `y[j] = (a * s[j]) * d[j]`, added to `y[j]` when `accumulate`: the QGemm rescale of one
/// row's exact sums (`a = alpha * sa`, so the products round as [`qgemm_w8a8`]'s). Compiled
/// for AVX-512 and AVX2 too: at the baseline target it ran 4 lanes wide and took 18% of the
/// fixture student's w8a8 time.
fn rescale_row(y: &mut [f32], s: &[f32], d: &[i32], a: f32, accumulate: bool) {
    #[inline(always)]
    fn body(y: &mut [f32], s: &[f32], d: &[i32], a: f32, accumulate: bool) {
        for ((y, &s), &d) in y.iter_mut().zip(s).zip(d) {
            let v = a * s * d as f32;
            *y = if accumulate { *y + v } else { v };
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(y: &mut [f32], s: &[f32], d: &[i32], a: f32, accumulate: bool) {
            body(y, s, d, a, accumulate)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(y: &mut [f32], s: &[f32], d: &[i32], a: f32, accumulate: bool) {
            body(y, s, d, a, accumulate)
        }
        if super::microkernel::Isa::detect() == super::microkernel::Isa::Avx512 {
            // SAFETY: AVX-512F was detected.
            return unsafe { avx512(y, s, d, a, accumulate) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected.
            return unsafe { avx2(y, s, d, a, accumulate) };
        }
    }
    body(y, s, d, a, accumulate)
}

/// The int8 tile's product of the `m` rows of `av` (`[m, p.k]`, quantized per row as
/// [`quantize_row`] does, or with the static scale `fixed`) with the packed weight columns `p`:
/// `emit(i, j0, sa_i, sums)` gets row i's scale and its exact sums for columns `j0..`.
#[allow(clippy::too_many_arguments)]
fn rows_times_columns(
    isa: i8tile::Isa,
    av: &[f32],
    m: usize,
    fixed: Option<f32>,
    p: &i8tile::PackedCols,
    scratch: &mut Vec<f32>,
    mut emit: impl FnMut(usize, usize, f32, &[i32]),
) {
    let (n, k) = (p.n, p.k);
    let kg = i8tile::groups(k);
    let (sa, asum, qa) = carve(scratch, m, m, m * kg * 4);
    quantize_rows_grouped(av, k, fixed, sa, asum, qa);
    let qa: &[i32] = bytemuck_i32(qa);
    let (npan, ps) = (n.div_ceil(i8tile::NR), p.panel_stride());
    let mut acc = [[0i32; 4 * i8tile::NR]; i8tile::MR];
    // Weight panels outermost: each streams from memory once and stays in L1 for every row block.
    let mut pan = 0;
    while pan < npan {
        let wide = if m == 1 && pan + 4 <= npan { 4 } else { 1 };
        let j0 = pan * i8tile::NR;
        let cols = (wide * i8tile::NR).min(n - j0);
        for i0 in (0..m).step_by(i8tile::MR) {
            let rows = i8tile::MR.min(m - i0);
            let view = i8tile::AView { ptr: qa[i0 * kg..].as_ptr(), rs: kg, gs: 1 };
            // SAFETY: rows x kg groups of qa from row i0; `wide` panels of kg * 64 bytes from `pan`.
            unsafe {
                i8tile::tile(isa, i8tile::Operands::NegB, rows, wide, kg, view, p.panel(pan), ps, &asum[i0..], &mut acc)
            };
            for (r, accr) in acc.iter().enumerate().take(rows) {
                emit(i0 + r, j0, sa[i0 + r], &accr[..cols]);
            }
        }
        pan += wide;
    }
}

/// w8a8 1x1 [`Op::QConv`] on a one-position input (squeeze-excitation convs, a head conv),
/// the weight packed as QGemm's columns (`p`): each image's C values are one activation row
/// on the GEMV tile. Same quantization and rescaling as [`qconv_w8a8`], so the same floats;
/// about 3x faster on MobileNetV3's SE convs, whose one position left 15 of the 16 columns of
/// [`qconv_packed`]'s tile idle.
pub fn qconv_one_position(
    op: &Op,
    act: Option<&crate::ir::Unary>,
    p: &i8tile::PackedCols,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    let QConvArgs { g, xv, bias, group, nb, c, m, kdim, w, .. } = QConvArgs::check(op, inputs)?;
    let (_, sw, fixed) = parts(w).ok_or("not a w8a8 weight")?;
    if group != 1 || g.in_size() != 1 || g.out_size() != 1 || kdim != c || p.n != m || p.k != kdim || kdim == 0 {
        return Err(format!("QConv with weight [{m}, {kdim}] is not a 1x1 conv on one position"));
    }
    let mut oshape: crate::tensor::Dims = smallvec::smallvec![nb, m];
    oshape.extend_from_slice(&g.out_dims);
    let y = outputs[0].reuse_f32(&oshape);
    let act = act.map(|u| InRegister::of(Some(u)).ok_or(u)).transpose();
    rows_times_columns(i8tile::Isa::detect(), xv, nb, fixed, p, scratch, |i, j0, sa, sums| {
        for (jj, (d, &v)) in y[i * m + j0..][..sums.len()].iter_mut().zip(sums).enumerate() {
            let j = j0 + jj;
            let v = sa * sw[j] * v as f32 + bias.map_or(0.0, |b| b[j]);
            *d = match act {
                Ok(Some(r)) => r.scalar(v),
                _ => v,
            };
        }
    });
    if let Err(u) = act {
        super::activation::apply(u, y);
    }
    Ok(())
}

/// The i32 groups of a 4-aligned byte buffer made by [`carve`].
fn bytemuck_i32(b: &[i8]) -> &[i32] {
    debug_assert!((b.as_ptr() as usize).is_multiple_of(4) && b.len().is_multiple_of(4));
    // SAFETY: `carve` hands out bytes from f32 storage (4-aligned); every bit pattern is an i32.
    unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<i32>(), b.len() / 4) }
}

/// Output positions below which [`qconv_packed`] runs [`qconv_w8a8`] instead.
const NARROW: usize = 4;

/// w8a8 [`Op::QConv`] (not depthwise) on the register-tiled kernel with the weight packed at
/// plan time (`p`, output channels as the tile's rows) and the activation `act` fused. Per
/// image and group the patches are quantized once, one scale per output position as
/// [`qconv_w8a8`] does (same values, bit-identical outputs), straight into the kernel's packed
/// column panels ([`qpatches`]: from X itself for 1x1 stride-1 unpadded convs, from a padded
/// copy of X for the rest with unit column stride, from an f32 im2col matrix otherwise).
pub fn qconv_packed(
    op: &Op,
    act: Option<&crate::ir::Unary>,
    p: &i8tile::PackedRows,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    let isa = i8tile::Isa::detect();
    #[cfg(target_arch = "x86_64")]
    if isa != i8tile::Isa::Portable {
        // SAFETY: both x86 tile bodies are picked only on CPUs with AVX2.
        return unsafe { qconv_packed_avx2(isa, op, act, p, inputs, outputs, scratch) };
    }
    qconv_packed_on(isa, op, act, p, inputs, outputs, scratch)
}

/// [`qconv_packed_on`] compiled for AVX2: its dequantizing epilogue ran 4 wide (SSE2) and took
/// 9% of MobileNetV3's w8a8 time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qconv_packed_avx2(
    isa: i8tile::Isa,
    op: &Op,
    act: Option<&crate::ir::Unary>,
    p: &i8tile::PackedRows,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    qconv_packed_on(isa, op, act, p, inputs, outputs, scratch)
}

/// [`qconv_packed`] on a given kernel body.
#[inline(always)]
fn qconv_packed_on(
    isa: i8tile::Isa,
    op: &Op,
    act: Option<&crate::ir::Unary>,
    p: &i8tile::PackedRows,
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
) -> KResult {
    use i8tile::{MR, NR};
    let QConvArgs { g, xv, bias, group, nb, c, m, cg, mg, kdim, w } = QConvArgs::check(op, inputs)?;
    let (_, sw, fixed) = parts(w).ok_or("not a w8a8 weight")?;
    if p.m != mg || p.k != kdim || p.groups != group || kdim == 0 {
        return Err(format!("QConv packed weight [{}, {}] does not fit [{m}, {kdim}]", p.m, p.k));
    }
    let mut oshape: crate::tensor::Dims = smallvec::smallvec![nb, m];
    oshape.extend_from_slice(&g.out_dims);
    let y = outputs[0].reuse_f32(&oshape);
    let (isz, osz) = (g.in_size(), g.out_size());
    if osz < NARROW {
        // A few positions (SE 1x1 convs on pooled input) would leave most of each 16-column
        // tile idle: the per-output dot products are the same values, faster there.
        qconv_w8a8(op, inputs, outputs, scratch)?;
        if let Some(u) = act {
            super::activation::apply(u, outputs[0].as_mut_slice::<f32>().ok_or("QConv output is f32")?);
        }
        return Ok(());
    }
    let direct = g.kernel_size() == 1 && g.stride == [1; 3] && g.pad == [0; 3] && g.pad_end == [0; 3];
    let (kg, npan) = (i8tile::groups(kdim), osz.div_ceil(NR));
    // Patches come from X itself (direct 1x1), from its padded copy (unit column stride: runs
    // of positions are runs in the copy), or from an f32 im2col matrix (column strides, where
    // the copy would need a gather per 8 positions: ~10% slower on a 3x3 stride-2 conv).
    let volume = Some(qpatches::Volume::new(&g)).filter(|v| !direct && g.stride[2] == 1 && v.fits(cg));
    let ncol = if direct || volume.is_some() { 0 } else { kdim * osz };
    let (vf, vi) = volume.as_ref().map_or((0, 0), |v| v.scratch_len(cg));
    // Scratch per thread slot: the padded copy and its tables or the im2col matrix, per-position
    // scales and inverses, then the packed int8 patches. A batch is split by images over the
    // pool (each image's own splits then run serially): at batch 8 on mobilenet48x192's small
    // maps the per-image splits were too small to wake the second thread.
    let img_tasks = if nb > 1 { threads::tasks(nb, m * kdim * osz) } else { 1 };
    let slots = if img_tasks > 1 { threads::slots(img_tasks) } else { 1 };
    let (nf, nbytes) = (vf + ncol + 2 * npan * NR, (npan * kg * 64).next_multiple_of(4));
    let (f, vi_all, packed) = carve(scratch, nf * slots, vi * slots, nbytes * slots);
    let (fp, ip, bp) = (threads::SharedPtr::new(f), threads::SharedPtr::new(vi_all), threads::SharedPtr::new(packed));
    let yp = threads::SharedPtr::new(y);
    // Rescale, bias and the common activations run in the tile's registers; others after.
    let fused = InRegister::of(act);
    #[cfg(target_arch = "x86_64")]
    let sign_trick = isa == i8tile::Isa::Avx2;
    #[cfg(not(target_arch = "x86_64"))]
    let sign_trick = false;
    const NO_BIAS: [f32; MR] = [0.0; MR];
    // Images `imgs` on scratch slot `slot`.
    let run = |imgs: std::ops::Range<usize>, slot: usize| {
        // SAFETY: slot `slot` of each scratch region belongs to this call alone (one per thread
        // slot, and a thread runs one task at a time).
        let (f, vi, packed) =
            unsafe { (fp.slice(slot * nf, nf), ip.slice(slot * vi, vi), bp.slice(slot * nbytes, nbytes)) };
        let (vf, f) = f.split_at_mut(vf);
        let (col, f) = f.split_at_mut(ncol);
        let (sa, inv) = f.split_at_mut(npan * NR);
        let mut vs = qpatches::VolumeScratch { f: vf, i: vi };
        if let Some(v) = &volume {
            v.prepare(&g, cg, &mut vs);
        }
        for img in imgs {
            for grp in 0..group {
                let xg = &xv[(img * c + grp * cg) * isz..][..cg * isz];
                match &volume {
                    Some(v) => v.pack(isa, xg, cg, fixed, &mut vs, sa, inv, packed),
                    None if direct => qpatches::from_matrix(isa, xg, osz, kdim, fixed, sa, inv, packed),
                    None => {
                        super::conv::im2col(&g, xg, cg, col, osz);
                        qpatches::from_matrix(isa, col, osz, kdim, fixed, sa, inv, packed)
                    }
                }
                // Patches of a non-negative input (a ReLU's output) skip the AVX2 sign steps.
                let ops =
                    if sign_trick && nonnegative(xg) { i8tile::Operands::BNonNeg } else { i8tile::Operands::NegA };
                // SAFETY: group grp of image img's output rows; images are split between tasks.
                let yg = threads::SharedPtr::new(unsafe { yp.slice((img * m + grp * mg) * osz, mg * osz) });
                let (sa, packed) = (&*sa, &*packed);
                // Units of `step` position panels over the pool (the patches are packed once, above).
                let step = isa.conv_panels();
                let units = npan.div_ceil(step);
                let tasks = threads::tasks(units, mg * kdim * NR * step);
                threads::for_each_task(tasks, |t, _| {
                    for unit in threads::span(t, tasks, units, 1) {
                        let pan = unit * step;
                        let panels = step.min(npan - pan);
                        let (p0, cols) = (pan * NR, (panels * NR).min(osz - pan * NR));
                        let bp = packed[pan * kg * 64..].as_ptr();
                        let col_scale = &sa[p0..][..panels * NR];
                        for cp in 0..mg.div_ceil(MR) {
                            let (rows, ch0) = (MR.min(mg - cp * MR), grp * mg + cp * MR);
                            let (view, sums) = p.panel(grp, cp);
                            let out = i8tile::Dequant {
                                col_scale,
                                row_scale: &sw[ch0..][..rows],
                                row_bias: bias.map_or(&NO_BIAS[..rows], |b| &b[ch0..][..rows]),
                                act: fused.unwrap_or(InRegister::Identity),
                                // SAFETY: inside yg (mg x osz): row cp * MR, column p0.
                                dst: unsafe { yg.get().add(cp * MR * osz + p0) },
                                ld: osz,
                                cols,
                            };
                            // SAFETY: packed weight panel of MR x kg groups; `panels` patch panels
                            // of kg * 64 bytes each, back to back; the tile writes `rows` output
                            // rows of `cols` positions inside yg, in this task's panels only.
                            unsafe { i8tile::tile_f32(isa, ops, rows, panels, kg, view, bp, kg * 64, sums, &out) };
                        }
                    }
                });
            }
        }
    };
    if img_tasks > 1 {
        threads::for_each_task(img_tasks, |t, slot| run(threads::span(t, img_tasks, nb, 1), slot));
    } else {
        run(0..nb, 0);
    }
    let y = outputs[0].as_mut_slice::<f32>().ok_or("QConv output is f32")?;
    if let (Some(u), None) = (act, fused) {
        super::activation::apply(u, y);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
