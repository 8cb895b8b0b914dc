//! Gradients of Gemm and MatMul (through the same strided sgemm as the forward pass).

use super::{f32s, grad_or_zeros, reduce_to_shape, GradResult};
use crate::backend::cpu::kernels::linalg::sgemm;
use crate::ir::Op;
use crate::tensor::Tensor;

pub fn supports(op: &Op) -> bool {
    matches!(op, Op::Gemm { .. } | Op::MatMul)
}

pub fn vjp(
    op: &Op,
    inputs: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: &[Option<&Tensor>],
    need: &[bool],
) -> GradResult {
    let g = grad_or_zeros(grads, outputs, 0);
    match op {
        Op::Gemm { alpha, beta, trans_a, trans_b } => gemm(inputs, &g, *alpha, *beta, *trans_a, *trans_b, need),
        Op::MatMul => matmul(inputs, &g, need),
        _ => unreachable!(),
    }
}

/// Y = alpha * A' B' + beta * C, A' = op(A) (M x K), B' = op(B) (K x N), G = dL/dY (M x N).
/// dA' = alpha G B'^T, dB' = alpha A'^T G, dC = beta * G summed to C's shape.
fn gemm(
    inputs: &[Option<&Tensor>],
    g: &Tensor,
    alpha: f32,
    beta: f32,
    ta: bool,
    tb: bool,
    need: &[bool],
) -> GradResult {
    let a = inputs[0].ok_or("Gemm A missing")?;
    let b = inputs[1].ok_or("Gemm B missing")?;
    let (av, bv, gv) = (f32s(a, "Gemm A")?, f32s(b, "Gemm B")?, f32s(g, "gradient")?);
    let (m, n) = (g.shape()[0], g.shape()[1]);
    let k = if ta { a.shape()[0] } else { a.shape()[1] };
    let (acols, bcols) = (a.shape()[1] as isize, b.shape()[1] as isize);
    let mut out = vec![None; inputs.len()];
    if need.first() == Some(&true) {
        // dA stored in A's own layout: if ta, dA = alpha B' G^T (K x M), else alpha G B'^T (M x K).
        let mut da = vec![0f32; a.len()];
        // B'^T element (n_, k_) = B'[k_, n_]; B'[k_, n_] = tb ? B[n_, k_] : B[k_, n_].
        let bt = if tb { (bcols, 1) } else { (1, bcols) }; // strides of B'^T as (row=n, col=k)
        if ta {
            // dA (K x M) = alpha * B' (K x N) * G^T (N x M)
            let bp = if tb { (1, bcols) } else { (bcols, 1) };
            sgemm(k, n, m, alpha, bv, bp, gv, (1, n as isize), 0.0, &mut da, m as isize);
        } else {
            sgemm(m, n, k, alpha, gv, (n as isize, 1), bv, bt, 0.0, &mut da, k as isize);
        }
        out[0] = Some(Tensor::from_vec(a.shape().to_vec(), da).ok_or("dA shape")?);
    }
    if need.get(1) == Some(&true) {
        let mut db = vec![0f32; b.len()];
        // A'^T (K x M): A'[m_, k_] = ta ? A[k_, m_] : A[m_, k_].
        let at = if ta { (acols, 1) } else { (1, acols) };
        if tb {
            // dB (N x K) = alpha * G^T (N x M) * A' (M x K)
            let ap = if ta { (1, acols) } else { (acols, 1) };
            sgemm(n, m, k, alpha, gv, (1, n as isize), av, ap, 0.0, &mut db, k as isize);
        } else {
            sgemm(k, m, n, alpha, av, at, gv, (n as isize, 1), 0.0, &mut db, n as isize);
        }
        out[1] = Some(Tensor::from_vec(b.shape().to_vec(), db).ok_or("dB shape")?);
    }
    if need.get(2) == Some(&true) {
        if let Some(c) = inputs.get(2).copied().flatten() {
            let scaled: Vec<f32> = gv.iter().map(|x| x * beta).collect();
            out[2] = Some(reduce_to_shape(&scaled, &[m, n], c.shape()));
        }
    }
    Ok(out)
}

/// Batched numpy matmul; operands of rank >= 2 (1-D operands are rare in students: rejected).
fn matmul(inputs: &[Option<&Tensor>], g: &Tensor, need: &[bool]) -> GradResult {
    let a = inputs[0].ok_or("MatMul A missing")?;
    let b = inputs[1].ok_or("MatMul B missing")?;
    if a.rank() < 2 || b.rank() < 2 {
        return Err("MatMul gradient needs operands of rank >= 2".into());
    }
    let (av, bv, gv) = (f32s(a, "MatMul A")?, f32s(b, "MatMul B")?, f32s(g, "gradient")?);
    let (m, k) = (a.shape()[a.rank() - 2], a.shape()[a.rank() - 1]);
    let n = b.shape()[b.rank() - 1];
    let batch = &g.shape()[..g.rank() - 2];
    let nb: usize = batch.iter().product();
    // Broadcast A and B to the full batch, compute per-batch grads, then sum back.
    let expand = |t: &Tensor, rows: usize, cols: usize| -> Vec<f32> {
        let mut full_shape = batch.to_vec();
        full_shape.extend([rows, cols]);
        let s = crate::backend::cpu::kernels::broadcast::broadcast_strides(t.shape(), &full_shape);
        let src = t.as_slice::<f32>().expect("checked f32");
        let mut v = vec![0f32; nb * rows * cols];
        crate::backend::cpu::kernels::broadcast::for_each_offsets(&full_shape, [&s], |i, [j]| v[i] = src[j]);
        v
    };
    let (afull, bfull) = (expand(a, m, k), expand(b, k, n));
    let _ = (av, bv);
    let mut out = vec![None; inputs.len()];
    let full = |rows: usize, cols: usize| {
        let mut s = batch.to_vec();
        s.extend([rows, cols]);
        s
    };
    if need.first() == Some(&true) {
        let mut da = vec![0f32; nb * m * k];
        for i in 0..nb {
            // dA = G B^T
            sgemm(
                m,
                n,
                k,
                1.0,
                &gv[i * m * n..],
                (n as isize, 1),
                &bfull[i * k * n..],
                (1, n as isize),
                0.0,
                &mut da[i * m * k..],
                k as isize,
            );
        }
        out[0] = Some(reduce_to_shape(&da, &full(m, k), a.shape()));
    }
    if need.get(1) == Some(&true) {
        let mut db = vec![0f32; nb * k * n];
        for i in 0..nb {
            // dB = A^T G
            sgemm(
                k,
                m,
                n,
                1.0,
                &afull[i * m * k..],
                (1, k as isize),
                &gv[i * m * n..],
                (n as isize, 1),
                0.0,
                &mut db[i * k * n..],
                n as isize,
            );
        }
        out[1] = Some(reduce_to_shape(&db, &full(k, n), b.shape()));
    }
    Ok(out)
}
