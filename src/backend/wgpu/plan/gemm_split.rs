//! GEMM / GEMV over tensors larger than the adapter's `max_storage_buffer_binding_size`: the
//! output is cut into blocks of rows (A and Y) and columns (the weight's rows), and an f32
//! [K, N] weight into blocks of K (partial sums accumulated in Y), one dispatch each, every one
//! binding only a window of each buffer (aligned down to `min_storage_buffer_offset_alignment`;
//! the shader subtracts the window's start, see gemm.wgsl). Buffers themselves may exceed the
//! binding limit up to `max_buffer_size`. A batched MatMul is cut into blocks of batches.

use super::layout::Job;
use super::{Kind, WgpuPlan};
use crate::backend::wgpu::kernels::GpuOp;
use crate::backend::wgpu::w8a8;
use crate::error::{Error, Result};
use crate::ir::ValueId;

/// Whether every GPU step that touches `v` (through aliases) is a GEMM, which can split it.
pub(super) fn only_gemms_touch(plan: &WgpuPlan, v: ValueId) -> bool {
    let r = plan.root[v];
    plan.steps.iter().all(|s| {
        let node = &plan.graph.nodes[s.node];
        match &s.kind {
            // A, B, C or Y: all bound as windows when split. Aliases bind nothing; CPU steps copy.
            Kind::Gpu(GpuOp::Gemm { .. } | GpuOp::MatMul | GpuOp::QGemm { .. } | GpuOp::Alias) => true,
            Kind::Cpu | Kind::Fused => true,
            Kind::Gpu(_) => !node.inputs.iter().flatten().chain(&s.outputs).any(|&x| plan.root[x] == r),
        }
    })
}

fn refuse(what: &str, limit: u64) -> Error {
    Error::Unavailable(format!("wgpu: cannot split {what} under the adapter's {limit}-byte storage binding limit"))
}

/// Words [start, end) of the weight rows [n0, n1) per weight format; int8, int4 and w8a8 rows
/// end with their own scales (quant.wgsl), so the window holds those too.
fn weight_words(mode: u32, k: u64, groups: u64, n0: u64, n1: u64) -> (u64, u64) {
    let rows = |per: u64| (n0 * per, n1 * per);
    match mode {
        1 => (n0 * k / 2, (n1 * k).div_ceil(2)),
        2 => rows(k.div_ceil(4) + 1),
        3 => rows(groups * 4 + groups.div_ceil(2)),
        // w8a8: `groups` words of four int8 per row, then one f32 scale.
        w8a8::MODE => rows(groups + 1),
        _ => rows(k),
    }
}

/// A batched MatMul (A [b, m, k], B [b, k, n]) as blocks of whole batches, each binding a
/// window of A, B and Y; one batch must fit a binding.
fn split_batches(job: Job<'_>, limit: u64, align: u64, (b, m, k, n): (u64, u64, u64, u64)) -> Result<Vec<Job<'_>>> {
    let usable = (limit - align) / 4 * 4;
    let per = 4 * (m * k).max(k * n).max(m * n);
    if per > usable {
        return Err(refuse(&format!("one batch of a batched GEMM of {b}x{m}x{k}x{n}"), limit));
    }
    let bc = usable / per;
    let window = |start: u64, end: u64| -> (u64, u64, u64) {
        let off = start * 4 / align * align;
        (off, (end * 4 - off).max(4), off / 4)
    };
    let mut jobs = Vec::new();
    for b0 in (0..b).step_by(bc as usize) {
        let b1 = (b0 + bc).min(b);
        let (a, w, y) =
            (window(b0 * m * k, b1 * m * k), window(b0 * k * n, b1 * k * n), window(b0 * m * n, b1 * m * n));
        let mut params = job.params.clone();
        params[20..23].copy_from_slice(&[a.2, w.2, y.2].map(|v| v as u32));
        params[25] = b0 as u32;
        let groups = [job.groups[0], job.groups[1], (b1 - b0) as u32];
        let windows = vec![(1, a.0, a.1), (2, w.0, w.1), (4, y.0, y.1)];
        jobs.push(Job { key: job.key, params, bufs: job.bufs.clone(), aux: None, windows, groups });
    }
    Ok(jobs)
}

/// The GEMM `job` as one dispatch when everything fits the binding limit, else as blocks.
pub(super) fn split<'a>(plan: &WgpuPlan, job: Job<'a>) -> Result<Vec<Job<'a>>> {
    let limit = plan.ctx.limits.max_storage_buffer_binding_size;
    let align = u64::from(plan.ctx.limits.min_storage_buffer_offset_alignment).max(4);
    let p = &job.params;
    let (m, n, k, trans_b, groups) = (p[0] as u64, p[1] as u64, p[2] as u64, p[3] != 0, p[10] as u64);
    let mode = job.key.2;
    let batch = job.groups[2];
    let w_all = weight_words(mode, k, groups, 0, n);
    let fits_a = 4 * m * k <= limit && 4 * m * n <= limit;
    let fits_w = 4 * (w_all.1 - w_all.0) <= limit;
    // A [K, N] f32 B (Gemm without transB, MatMul): a column block of it spans nearly every
    // row, so it is split along K (partial sums added up in y) and, for rows longer than a
    // binding, along N.
    let kn = mode == 0 && !trans_b;
    let b = u64::from(batch);
    if batch > 1 {
        if 4 * b * m * k.max(n) <= limit && 4 * b * k * n <= limit {
            return Ok(vec![job]);
        }
        return split_batches(job, limit, align, (b, m, k, n));
    }
    let bias = job.bufs.iter().find(|b| b.0 == 3).map_or(0, |b| b.1.size());
    if fits_a && fits_w {
        return Ok(vec![job]);
    }
    // A bias past the limit is a C of nearly [M, N] (it broadcasts to Y, so Y is split too):
    // each block binds the window its rows and columns read.
    let (bsm, bsn) = (p[6] as u64, p[7] as u64);
    let split_bias = bias > limit;
    let usable = (limit - align) / 4 * 4;
    // Words a window may span, less one of slack for a word shared with the next row.
    let words = usable / 4 - 1;
    if !fits_a && k > words {
        return Err(refuse(&format!("a GEMM row of K = {k}"), limit));
    }
    let (nc, kc) = if fits_w {
        (n, k)
    } else if kn {
        // Rows [k0, k1) x columns [n0, n1) of B span (k1 - k0 - 1) * n + (n1 - n0) words.
        if n <= words {
            (n, (words / n).min(k))
        } else {
            (words, 1)
        }
    } else {
        // Bytes per weight row (scales included), plus one word of slack for shared words.
        let w1 = weight_words(mode, k, groups, 0, 1);
        (usable / (4 * (w1.1 - w1.0) + 4), k)
    };
    // Blocks of A are whole rows; a block of Y, rows [m0, m1) x columns [n0, n1), spans
    // (m1 - m0 - 1) * n + (n1 - n0) words.
    let nc = if fits_a { nc } else { nc.min(words) };
    let mc = if fits_a { m } else { (words / k.max(1)).min((words - nc) / n.max(1) + 1) };
    if mc == 0 || nc == 0 || kc == 0 {
        return Err(refuse(&format!("a GEMM of {m}x{k}x{n}"), limit));
    }
    // (binding, first word, end word) -> (offset in bytes, size in bytes, first word bound).
    let window = |start: u64, end: u64| -> (u64, u64, u64) {
        let off = start * 4 / align * align;
        (off, (end * 4 - off).max(4), off / 4)
    };
    let mut jobs = Vec::new();
    for m0 in (0..m).step_by(mc as usize) {
        let m1 = (m0 + mc).min(m);
        for n0 in (0..n).step_by(nc as usize) {
            let n1 = (n0 + nc).min(n);
            // In order: each K block adds to the partial sums of the one before.
            for k0 in (0..k.max(1)).step_by(kc as usize) {
                let k1 = (k0 + kc).min(k);
                let a = if fits_a { (0, 4 * m * k, 0) } else { window(m0 * k, m1 * k) };
                let y = if fits_a { (0, 4 * m * n, 0) } else { window(m0 * n + n0, (m1 - 1) * n + n1) };
                let w = match (fits_w, kn) {
                    (true, _) => (0, 0, 0),
                    (false, true) => window(k0 * n + n0, (k1 - 1) * n + n1),
                    (false, false) => {
                        let ww = weight_words(mode, k, groups, n0, n1);
                        window(ww.0, ww.1)
                    }
                };
                let mut params = job.params.clone();
                params[16..25].copy_from_slice(&[m0, m1, n0, n1, a.2, w.2, y.2, k0, k1].map(|v| v as u32));
                let mut windows = vec![(1, a.0, a.1), (4, y.0, y.1)];
                if !fits_w {
                    windows.push((2, w.0, w.1));
                }
                if split_bias {
                    let c = window(m0 * bsm + n0 * bsn, (m1 - 1) * bsm + (n1 - 1) * bsn + 1);
                    params[26] = c.2 as u32;
                    windows.push((3, c.0, c.1));
                }
                if windows.iter().any(|w| w.2 > limit) {
                    return Err(refuse(&format!("a GEMM block of {m}x{k}x{n}"), limit));
                }
                jobs.push(Job {
                    key: job.key,
                    params,
                    bufs: job.bufs.clone(),
                    aux: None,
                    windows,
                    groups: [(n1 - n0).div_ceil(16) as u32, (m1 - m0).div_ceil(16) as u32, 1],
                });
            }
        }
    }
    Ok(jobs)
}
