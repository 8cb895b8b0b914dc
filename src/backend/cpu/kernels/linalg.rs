//! Gemm and MatMul over `matrixmultiply`'s packed GEMM (strided, so transposes cost nothing).

use super::broadcast::broadcast_strides;
use super::microkernel::Isa;
use super::packed::{self, PackedCols};
use super::threads;
use super::KResult;
use crate::tensor::{broadcast_shapes, Data, Tensor};

/// `c[m,n] = alpha * sum_k a[m,k] b[k,n] + beta * c[m,n]`, row/col strides in elements.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    sa: (isize, isize),
    b: &[f32],
    sb: (isize, isize),
    beta: f32,
    c: &mut [f32],
    rsc: isize,
) {
    sgemm_then(m, k, n, alpha, a, sa, b, sb, beta, c, rsc, &|_, _, _| {});
}

/// [`sgemm`], then `epilogue(row, first_col, part)` on each stretch of a row of C as soon as it
/// is final (still in cache). Products worth splitting are cut over the engine's pool: by
/// columns when C is wider than tall (each task packs A again: `m*k` against `m*k*cols` of
/// work), else by rows (each packs B again).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_then(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    (rsa, csa): (isize, isize),
    b: &[f32],
    (rsb, csb): (isize, isize),
    beta: f32,
    c: &mut [f32],
    rsc: isize,
    epilogue: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
) {
    if m == 0 || n == 0 {
        return;
    }
    let rows = |c: &mut [f32]| {
        for r in 0..m {
            epilogue(r, 0, &mut c[r * rsc as usize..][..n]);
        }
    };
    if k == 0 {
        for r in 0..m {
            c[r * rsc as usize..][..n].iter_mut().for_each(|v| *v *= beta);
        }
        return rows(c);
    }
    // Rows and columns in blocks of 16 (matrixmultiply's widest register tile).
    let by_cols = n >= m;
    let (items, cost) = if by_cols { (n.div_ceil(16), 16 * m * k) } else { (m.div_ceil(16), 16 * k * n) };
    let tasks = threads::tasks(items, cost);
    let cp = threads::SharedPtr::new(c);
    threads::for_each_task(tasks, |t, _| {
        let part = threads::span(t, tasks, if by_cols { n } else { m }, 16);
        let (r0, j0) = if by_cols { (0, part.start) } else { (part.start, 0) };
        let (mr, nc) = if by_cols { (m, part.len()) } else { (part.len(), n) };
        if mr == 0 || nc == 0 {
            return;
        }
        // SAFETY: callers pass slices holding the full strided extents; this task reads rows
        // r0..r0+mr of A and columns j0..j0+nc of B, and alone writes that block of C.
        unsafe {
            let cblock = cp.get().offset(r0 as isize * rsc + j0 as isize);
            matrixmultiply::sgemm(
                mr,
                k,
                nc,
                alpha,
                a.as_ptr().offset(r0 as isize * rsa),
                rsa,
                csa,
                b.as_ptr().offset(j0 as isize * csb),
                rsb,
                csb,
                beta,
                cblock,
                rsc,
                1,
            );
            for r in 0..mr {
                epilogue(r0 + r, j0, std::slice::from_raw_parts_mut(cblock.offset(r as isize * rsc), nc));
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn dgemm(m: usize, k: usize, n: usize, a: &[f64], sa: (isize, isize), b: &[f64], sb: (isize, isize), c: &mut [f64]) {
    if m == 0 || n == 0 || k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    // SAFETY: as in sgemm.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            sa.0,
            sa.1,
            b.as_ptr(),
            sb.0,
            sb.1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// ONNX Gemm: `alpha * A' B' + beta * C` with A' = A or A^T (M x K), B' (K x N), C broadcast.
#[allow(clippy::too_many_arguments)] // ONNX Gemm's own attribute set
pub fn gemm(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    ta: bool,
    tb: bool,
    out: &mut Tensor,
) -> KResult {
    if a.rank() != 2 || b.rank() != 2 {
        return Err(format!("Gemm needs 2-D A and B, got {:?} and {:?}", a.shape(), b.shape()));
    }
    let (m, k) = if ta { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
    let (kb, n) = if tb { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
    if k != kb {
        return Err(format!("Gemm inner dimensions differ: A' is {m}x{k}, B' is {kb}x{n}"));
    }
    let stride = |t: &Tensor, trans: bool| {
        let cols = t.shape()[1] as isize;
        if trans {
            (1, cols)
        } else {
            (cols, 1)
        }
    };
    match (a.data(), b.data()) {
        (Data::F32(av), Data::F32(bv)) => {
            let o = out.reuse_f32(&[m, n]);
            let beta_eff = fill_bias("Gemm", o, c, beta, m, n)?;
            sgemm(m, k, n, alpha, av, stride(a, ta), bv, stride(b, tb), beta_eff, o, n as isize);
            Ok(())
        }
        (Data::F64(av), Data::F64(bv)) => {
            let o = out.reuse::<f64>(&[m, n]);
            dgemm(m, k, n, av, stride(a, ta), bv, stride(b, tb), o);
            if alpha != 1.0 {
                o.iter_mut().for_each(|v| *v *= alpha as f64);
            }
            if let Some(c) = c.filter(|_| beta != 0.0) {
                let cv = c.to_f64_vec();
                let s = broadcast_strides(c.shape(), &[m, n]);
                for i in 0..m {
                    for j in 0..n {
                        o[i * n + j] += beta as f64 * cv[i * s[0] + j * s[1]];
                    }
                }
            }
            Ok(())
        }
        _ => Err(format!("Gemm of {} and {} is not supported", a.dtype(), b.dtype())),
    }
}

/// ONNX Gemm with B constant and packed at plan time (`trans_b` resolved by the packing).
pub fn gemm_packed(
    a: &Tensor,
    b: &PackedCols,
    c: Option<&Tensor>,
    (alpha, beta): (f32, f32),
    ta: bool,
    out: &mut Tensor,
) -> KResult {
    let av = a.as_slice::<f32>().ok_or_else(|| format!("Gemm A must be f32 like B, got {}", a.dtype()))?;
    if a.rank() != 2 {
        return Err(format!("Gemm needs 2-D A, got {:?}", a.shape()));
    }
    let (m, k) = if ta { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
    if k != b.k {
        return Err(format!("Gemm inner dimensions differ: A' is {m}x{k}, B' is {}x{}", b.k, b.n));
    }
    let n = b.n;
    let o = out.reuse_f32(&[m, n]);
    let accumulate = fill_bias("Gemm", o, c, beta, m, n)? != 0.0;
    let strides = if ta { (1, m) } else { (k, 1) };
    packed::gemm_cols(Isa::detect(), av, strides, m, b, o, alpha, accumulate);
    Ok(())
}

/// MatMul of f32 A (any rank, rows flattened) by a constant 2-D B packed at plan time.
pub fn matmul_packed(a: &Tensor, b: &PackedCols, out: &mut Tensor) -> KResult {
    let av = a.as_slice::<f32>().ok_or_else(|| format!("MatMul A must be f32 like B, got {}", a.dtype()))?;
    let ash = a.shape();
    if ash.last() != Some(&b.k) {
        return Err(format!("MatMul inner dimensions differ: {ash:?} x [{}, {}]", b.k, b.n));
    }
    let m = av.len() / b.k.max(1);
    let mut osh = ash[..ash.len() - 1].to_vec();
    osh.push(b.n);
    let o = out.reuse_f32(&osh);
    packed::gemm_cols(Isa::detect(), av, (b.k, 1), m, b, o, 1.0, false);
    Ok(())
}

/// Writes `beta * C` broadcast into `o` (`m x n`); returns the beta sgemm should apply (1 when
/// C was written, 0 when there is none). `op` names the node kind in errors.
pub(super) fn fill_bias(
    op: &str,
    o: &mut [f32],
    c: Option<&Tensor>,
    beta: f32,
    m: usize,
    n: usize,
) -> Result<f32, String> {
    let Some(c) = c.filter(|_| beta != 0.0) else { return Ok(0.0) };
    let cv = c.as_slice::<f32>().ok_or_else(|| format!("{op} C must be f32 like A"))?;
    // C's (row, column) strides; a bias row and a full C skip the general broadcast (it is a
    // measurable part of a microsecond-long Gemm).
    let s = match c.shape() {
        [k] | [1, k] if *k == n && n > 1 => [0, 1],
        [r, k] if (*r, *k) == (m, n) && n > 1 => [n, 1],
        cs => {
            if broadcast_shapes(cs, &[m, n]).as_deref() != Some(&[m, n][..]) {
                return Err(format!("{op} C of shape {cs:?} does not broadcast to [{m}, {n}]"));
            }
            let s = broadcast_strides(cs, &[m, n]);
            [s[0], s[1]]
        }
    };
    if n == 0 {
        return Ok(1.0);
    }
    for (i, row) in o[..m * n].chunks_exact_mut(n).enumerate() {
        if s[1] == 1 {
            // A bias row (or a full C): contiguous, so the copy vectorizes.
            for (y, &v) in row.iter_mut().zip(&cv[i * s[0]..][..n]) {
                *y = beta * v;
            }
        } else {
            for (j, y) in row.iter_mut().enumerate() {
                *y = beta * cv[i * s[0] + j * s[1]];
            }
        }
    }
    Ok(1.0)
}

/// numpy matmul: 1-D operands promoted, leading (batch) dimensions broadcast.
pub fn matmul(a: &Tensor, b: &Tensor, out: &mut Tensor) -> KResult {
    let (ash, bsh) = (a.shape(), b.shape());
    if ash.is_empty() || bsh.is_empty() {
        return Err("MatMul operands must have rank >= 1".into());
    }
    let a2: Vec<usize> = if ash.len() == 1 { vec![1, ash[0]] } else { ash.to_vec() };
    let b2: Vec<usize> = if bsh.len() == 1 { vec![bsh[0], 1] } else { bsh.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(format!("MatMul inner dimensions differ: {ash:?} x {bsh:?}"));
    }
    let (abatch, bbatch) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch = broadcast_shapes(abatch, bbatch)
        .ok_or_else(|| format!("MatMul batch dimensions of {ash:?} and {bsh:?} do not broadcast"))?;
    let mut osh = batch.clone();
    if ash.len() > 1 {
        osh.push(m);
    }
    if bsh.len() > 1 {
        osh.push(n);
    }
    let nb: usize = batch.iter().product();
    let sa = broadcast_strides(abatch, &batch);
    let sb = broadcast_strides(bbatch, &batch);
    let offsets = |bi: usize, s: &[usize], mat: usize| -> usize {
        let mut rem = bi;
        let mut off = 0;
        for ax in (0..batch.len()).rev() {
            off += (rem % batch[ax]) * s[ax];
            rem /= batch[ax];
        }
        off * mat
    };
    match (a.data(), b.data()) {
        (Data::F32(av), Data::F32(bv)) => {
            let o = out.reuse_f32(&osh);
            for bi in 0..nb {
                let (oa, ob) = (offsets(bi, &sa, m * k), offsets(bi, &sb, k * n));
                let oc = bi * m * n;
                sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    &av[oa..],
                    (k as isize, 1),
                    &bv[ob..],
                    (n as isize, 1),
                    0.0,
                    &mut o[oc..oc + m * n],
                    n as isize,
                );
            }
        }
        (Data::F64(av), Data::F64(bv)) => {
            let o = out.reuse::<f64>(&osh);
            for bi in 0..nb {
                let (oa, ob) = (offsets(bi, &sa, m * k), offsets(bi, &sb, k * n));
                let oc = bi * m * n;
                dgemm(m, k, n, &av[oa..], (k as isize, 1), &bv[ob..], (n as isize, 1), &mut o[oc..oc + m * n]);
            }
        }
        (Data::I64(_) | Data::I32(_), _) if a.dtype() == b.dtype() => {
            let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
            let mut acc = vec![0f64; nb * m * n];
            for bi in 0..nb {
                let (oa, ob) = (offsets(bi, &sa, m * k), offsets(bi, &sb, k * n));
                for i in 0..m {
                    for kk in 0..k {
                        let x = av[oa + i * k + kk];
                        for j in 0..n {
                            acc[bi * m * n + i * n + j] += x * bv[ob + kk * n + j];
                        }
                    }
                }
            }
            let t = Tensor::from_vec(osh.to_vec(), acc).expect("shape matches");
            super::elementwise::cast(&t, a.dtype(), out)?;
        }
        _ => return Err(format!("MatMul of {} and {} is not supported", a.dtype(), b.dtype())),
    }
    Ok(())
}
