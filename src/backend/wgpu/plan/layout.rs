//! Dispatches of the normalisation, reduction and data-movement kernels (classified in
//! kernels/layout.rs): uniforms from the bound shapes; host-side tables (Gather's indices,
//! Resize's taps) built and uploaded once per bound shape; BatchNorm's constant parameters
//! folded once per plan.

use super::{kerr, numel, storage_init, Bound, Kind, Step, WgpuPlan};
use crate::backend::cpu::kernels::resize;
use crate::backend::wgpu::device::{Ctx, PipelineKey};
use crate::backend::wgpu::kernels::layout::{perm_of, reduced_axes, resize_plan, slice_plan, MAX_RANK};
use crate::backend::wgpu::kernels::GpuOp;
use crate::error::Result;
use crate::ir::{Graph, ReduceKind, ResizeAttrs, ValueId};
use crate::tensor::{strides, Tensor};
use std::collections::HashMap;

/// One dispatch before its bind group; `aux` is a buffer made for it (kept with the dispatch).
pub(super) struct Job<'a> {
    pub key: PipelineKey,
    pub params: Vec<u32>,
    pub bufs: Vec<(u32, &'a wgpu::Buffer)>,
    pub aux: Option<(u32, wgpu::Buffer)>,
    /// (binding, byte offset, byte size) of buffers bound as a window (split GEMMs).
    pub windows: Vec<(u32, u64, u64)>,
    pub groups: [u32; 3],
}

/// Workgroups for `n` invocations of 256, folded into y past the 65535 limit on x.
pub(super) fn grid(n: usize) -> [u32; 3] {
    let groups = n.div_ceil(256).max(1) as u32;
    let x = groups.min(65535);
    [x, groups.div_ceil(x), 1]
}

/// `v` padded to the eight words of a `array<vec4<u32>, 2>` uniform field.
fn words8(v: impl IntoIterator<Item = u32>, fill: u32) -> [u32; 8] {
    let mut o = [fill; 8];
    for (d, x) in o.iter_mut().zip(v) {
        *d = x;
    }
    o
}

/// BatchNorm steps' folded parameters `[a..., b...]` (a = scale / sqrt(var + eps),
/// b = B - mean * a), with the count per half, by step index.
pub(super) fn fold_batch_norms(ctx: &Ctx, g: &Graph, steps: &[Step]) -> Result<HashMap<usize, (usize, wgpu::Buffer)>> {
    let mut out = HashMap::new();
    for (si, s) in steps.iter().enumerate() {
        let Kind::Gpu(GpuOp::BatchNorm { epsilon }) = s.kind else { continue };
        let node = &g.nodes[s.node];
        let p: Vec<&[f32]> = (1..5)
            .map(|i| node.input(i).and_then(|v| g.constant(v)).and_then(|t| t.as_slice::<f32>()))
            .collect::<Option<_>>()
            .ok_or_else(|| kerr(g, s.node, "BatchNorm parameters must be f32 constants on wgpu"))?;
        let per = p[0].len();
        if p.iter().any(|v| v.len() != per) {
            return Err(kerr(g, s.node, "BatchNorm parameters differ in length"));
        }
        let a: Vec<f32> = (0..per).map(|i| p[0][i] / (p[3][i] + epsilon).sqrt()).collect();
        let b: Vec<f32> = (0..per).map(|i| p[1][i] - p[2][i] * a[i]).collect();
        let ab: Vec<f32> = a.into_iter().chain(b).collect();
        out.insert(si, (per, storage_init(ctx, "batchnorm", bytemuck::cast_slice(&ab))?));
    }
    Ok(out)
}

fn reduce_code(k: ReduceKind) -> u32 {
    match k {
        ReduceKind::Sum => 0,
        ReduceKind::Mean => 1,
        ReduceKind::Max => 2,
        ReduceKind::Min => 3,
        ReduceKind::Prod => 4,
        ReduceKind::L2 => 5,
        ReduceKind::SumSquare => 6,
        ReduceKind::LogSumExp => 7,
        ReduceKind::L1 => 8,
        ReduceKind::LogSum => 9,
    }
}

/// A strided-copy dispatch of move.wgsl over `shape`.
fn copy_job<'a>(
    shape: &[usize],
    x_base: i64,
    xs: &[i64],
    y_base: usize,
    ys: &[usize],
    x: &'a wgpu::Buffer,
    y: &'a wgpu::Buffer,
) -> Job<'a> {
    let len = numel(shape);
    let mut p = vec![len as u32, shape.len() as u32, x_base as i32 as u32, y_base as u32];
    p.extend(words8(shape.iter().map(|&d| d as u32), 1));
    p.extend(words8(xs.iter().map(|&s| s as i32 as u32), 0));
    p.extend(words8(ys.iter().map(|&s| s as u32), 0));
    Job {
        key: ("move", "copy", 0),
        params: p,
        bufs: vec![(1, x), (2, y)],
        aux: None,
        windows: vec![],
        groups: grid(len),
    }
}

/// A gather dispatch of move.wgsl over `x` along axis `a` with `n_idx` indices (i64 when
/// `wide`); the caller binds the indices at binding 3.
fn gather_job<'a>(
    x: &[usize],
    a: usize,
    n_idx: usize,
    wide: bool,
    x_buf: &'a wgpu::Buffer,
    y: &'a wgpu::Buffer,
) -> Job<'a> {
    let len = numel(&x[..a]) * n_idx * numel(&x[a + 1..]);
    let mut p = vec![len as u32, u32::from(wide), 0, 0];
    p.extend(words8([numel(&x[..a]) as u32, x[a] as u32, n_idx as u32, numel(&x[a + 1..]) as u32], 0));
    p.resize(28, 0);
    Job {
        key: ("move", "gather", 0),
        params: p,
        bufs: vec![(1, x_buf), (2, y)],
        aux: None,
        windows: vec![],
        groups: grid(len),
    }
}

/// The dispatches of a layout-module op, or `None` for the other ops.
pub(super) fn jobs<'a>(
    plan: &'a WgpuPlan,
    b: &'a Bound,
    si: usize,
    op: &GpuOp,
    x_buf: &'a wgpu::Buffer,
    y: &'a wgpu::Buffer,
) -> Result<Option<Vec<Job<'a>>>> {
    let g = &*plan.graph;
    let s = &plan.steps[si];
    let node = &g.nodes[s.node];
    let err = |m: String| kerr(g, s.node, m);
    let sh = |v: Option<ValueId>| v.and_then(|v| b.shapes[v].clone());
    let x = sh(node.input(0)).ok_or_else(|| err("input shape unknown".into()))?;
    let out = sh(Some(s.outputs[0])).ok_or_else(|| err("output shape unknown".into()))?;
    let len = numel(&out);
    if len > u32::MAX as usize / 2 || numel(&x) > u32::MAX as usize / 2 {
        return Err(err("tensor too large for one dispatch".into()));
    }
    let xstr: Vec<i64> = strides(&x).iter().map(|&v| v as i64).collect();
    let jobs = match op {
        GpuOp::Transpose { perm } => {
            let p = perm_of(perm, x.len()).map_err(err)?;
            let xs: Vec<i64> = p.iter().map(|&a| xstr[a]).collect();
            vec![copy_job(&out, 0, &xs, 0, &strides(&out), x_buf, y)]
        }
        GpuOp::Slice => {
            let sp = slice_plan(g, node, &x).map_err(err)?;
            let base: i64 = sp.iter().zip(&xstr).map(|(a, st)| a.0 * st).sum();
            let xs: Vec<i64> = sp.iter().zip(&xstr).map(|(a, st)| a.1 * st).collect();
            vec![copy_job(&out, base, &xs, 0, &strides(&out), x_buf, y)]
        }
        GpuOp::Concat { axis } => {
            let a = crate::tensor::norm_axis(*axis, x.len()).ok_or_else(|| err("axis out of range".into()))?;
            let ys = strides(&out);
            let mut off = 0;
            let mut v = Vec::new();
            for (k, i) in node.inputs.iter().enumerate() {
                let s_k = sh(*i).ok_or_else(|| err(format!("input {k} shape unknown")))?;
                let buf = i.and_then(|i| plan.buffer(b, i)).ok_or_else(|| err(format!("input {k} has no buffer")))?;
                let xs: Vec<i64> = strides(&s_k).iter().map(|&v| v as i64).collect();
                if numel(&s_k) > 0 {
                    v.push(copy_job(&s_k, 0, &xs, off * ys[a], &ys, buf, y));
                }
                off += s_k[a];
            }
            v
        }
        GpuOp::Gather { axis, indices, .. } => {
            let a = crate::tensor::norm_axis(*axis, x.len()).ok_or_else(|| err("axis out of range".into()))?;
            let d = x[a] as i64;
            let idx: Vec<u32> = indices
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + d } else { i };
                    (0..d)
                        .contains(&j)
                        .then_some(j as u32)
                        .ok_or_else(|| err(format!("index {i} out of range [-{d}, {d})")))
                })
                .collect::<Result<_>>()?;
            let ib = storage_init(&plan.ctx, "gather-indices", bytemuck::cast_slice(&idx))?;
            let mut job = gather_job(&x, a, idx.len(), false, x_buf, y);
            job.aux = Some((3, ib));
            vec![job]
        }
        GpuOp::GatherRuntime { axis, wide } => {
            let a = crate::tensor::norm_axis(*axis, x.len()).ok_or_else(|| err("axis out of range".into()))?;
            let iv = node.input(1);
            let n_idx = sh(iv).map(|s| numel(&s)).ok_or_else(|| err("indices shape unknown".into()))?;
            let ib = iv.and_then(|v| plan.buffer(b, v)).ok_or_else(|| err("indices have no buffer".into()))?;
            let mut job = gather_job(&x, a, n_idx, *wide, x_buf, y);
            job.bufs.push((3, ib));
            vec![job]
        }
        GpuOp::Reduce { kind, axes, .. } => {
            let red = reduced_axes(axes, x.len()).map_err(err)?;
            let pick = |r: bool| -> (Vec<u32>, Vec<u32>) {
                (0..x.len()).filter(|&d| red[d] == r).map(|d| (x[d] as u32, xstr[d] as u32)).unzip()
            };
            let ((ks, kst), (rs, rst)) = (pick(false), pick(true));
            let n_red: usize = rs.iter().map(|&d| d as usize).product();
            let mut p = vec![len as u32, reduce_code(*kind), n_red as u32, ks.len() as u32, rs.len() as u32, 0, 0, 0];
            for (v, fill) in [(ks, 1), (kst, 0), (rs, 1), (rst, 0)] {
                p.extend(words8(v, fill));
            }
            vec![Job {
                key: ("reduce", "main", 0),
                params: p,
                bufs: vec![(1, x_buf), (2, y)],
                aux: None,
                windows: vec![],
                groups: grid(len),
            }]
        }
        GpuOp::LayerNorm { axis, epsilon } => {
            let a = crate::tensor::norm_axis(*axis, x.len()).ok_or_else(|| err("axis out of range".into()))?;
            let norm = &x[a..];
            // Scale and bias: a trailing part of the normalised shape (leading 1s dropped).
            let fit = |i: usize| -> Result<Option<(usize, &'a wgpu::Buffer)>> {
                let Some(v) = node.input(i) else { return Ok(None) };
                let s = sh(Some(v)).ok_or_else(|| err(format!("input {i} shape unknown")))?;
                let t: Vec<usize> = s.iter().copied().skip_while(|&d| d == 1).collect();
                if t.len() > norm.len() || norm[norm.len() - t.len()..] != t[..] {
                    return Err(err(format!("{s:?} is not a trailing part of the normalised shape {norm:?} (wgpu)")));
                }
                let buf = plan.buffer(b, v).ok_or_else(|| err(format!("input {i} has no buffer")))?;
                Ok(Some((numel(&t), buf)))
            };
            let scale = fit(1)?.ok_or_else(|| err("scale is missing".into()))?;
            let bias = fit(2)?;
            let rows = numel(&x[..a]);
            let p = vec![
                rows as u32,
                numel(norm) as u32,
                scale.0 as u32,
                bias.map_or(1, |b| b.0) as u32,
                epsilon.to_bits(),
                bias.is_some() as u32,
                0,
                0,
            ];
            let bufs = vec![(1, x_buf), (2, scale.1), (3, bias.map_or(&plan.dummy, |b| b.1)), (4, y)];
            vec![Job {
                key: ("norm", "layer_norm", 0),
                params: p,
                bufs,
                aux: None,
                windows: vec![],
                groups: grid(rows),
            }]
        }
        GpuOp::BatchNorm { .. } => {
            let (per, ab) = &plan.folded[&si];
            let c = x.get(1).copied().unwrap_or(1);
            let sp = numel(x.get(2..).unwrap_or(&[]));
            let sp_param = if *per == c {
                sp
            } else if *per == c * sp {
                1
            } else {
                return Err(err(format!("parameters of {per} values do not fit X {x:?}")));
            };
            let p = vec![0, len as u32, 0, 0, 0, 0, sp_param.max(1) as u32, (*per).max(1) as u32];
            vec![Job {
                key: ("norm", "batch_norm", 0),
                params: p,
                bufs: vec![(1, x_buf), (2, ab), (4, y)],
                aux: None,
                windows: vec![],
                groups: grid(len),
            }]
        }
        GpuOp::Resize(attrs) => {
            let (oshape, scale, axes) = resize_plan(g, node, attrs, &x).map_err(err)?;
            let roi = node.input(1).and_then(|v| g.constant(v)).filter(|t| !t.is_empty()).map(|t| t.to_f64_vec());
            let scales_given = node.input(2).and_then(|v| g.constant(v)).is_some_and(|t| !t.is_empty());
            let mut table: Vec<u32> = Vec::new();
            let mut off = [u32::MAX; MAX_RANK];
            for (k, &ax) in axes.iter().enumerate() {
                let roi_ax = roi.as_ref().map(|v| {
                    let pos = if attrs.axes.is_some() { k } else { ax };
                    let n = v.len() / 2;
                    (v.get(pos).copied().unwrap_or(0.0), v.get(n + pos).copied().unwrap_or(1.0))
                });
                let w = probe_taps(attrs, x[ax], oshape[ax], scales_given.then_some(scale[ax]), roi_ax).map_err(err)?;
                if let Some(words) = axis_table(&w, x[ax], oshape[ax], table.len()) {
                    off[ax] = table.len() as u32;
                    table.extend(words);
                }
            }
            let mut p = vec![len as u32, x.len() as u32, attrs.extrapolation_value.to_bits(), 0];
            p.extend(words8(oshape.iter().map(|&d| d as u32), 1));
            p.extend(words8(xstr.iter().map(|&d| d as u32), 0));
            p.extend(off);
            let tb = storage_init(&plan.ctx, "resize-taps", bytemuck::cast_slice(&table))?;
            vec![Job {
                key: ("resize", "main", 0),
                params: p,
                bufs: vec![(1, x_buf), (2, y)],
                aux: Some((3, tb)),
                windows: vec![],
                groups: grid(len),
            }]
        }
        _ => return Ok(None),
    };
    Ok(Some(jobs))
}

/// The dense [n_out, n_in] weights of a 1-D resize along one axis, computed by the CPU kernel
/// on an identity matrix (row j = the taps of output j; NaN rows = extrapolation).
fn probe_taps(
    a: &ResizeAttrs,
    n_in: usize,
    n_out: usize,
    scale: Option<f64>,
    roi: Option<(f64, f64)>,
) -> Result<Vec<f32>, String> {
    if n_in.saturating_mul(n_out) > 1 << 24 {
        return Err(format!("resizing an axis of {n_in} to {n_out} is too large for the wgpu tap table"));
    }
    let mut attrs = a.clone();
    attrs.axes = Some(vec![0]);
    attrs.aspect = crate::ir::AspectPolicy::Stretch;
    attrs.extrapolation_value = f32::NAN;
    let mut eye = vec![0f32; n_in * n_in];
    (0..n_in).for_each(|i| eye[i * n_in + i] = 1.0);
    let x = Tensor::from_vec(vec![n_in, n_in], eye).ok_or("probe tensor")?;
    let roi_t = roi.map(|(s, e)| Tensor::from_vec(vec![2], vec![s as f32, e as f32]).expect("two values"));
    let (scales, sizes) = match scale {
        Some(s) => (Some(Tensor::from_vec(vec![1], vec![s as f32]).expect("one value")), None),
        None => (None, Some(Tensor::from_vec(vec![1], vec![n_out as i64]).expect("one value"))),
    };
    let ins = [Some(&x), roi_t.as_ref(), scales.as_ref(), sizes.as_ref()];
    let mut outs = [Tensor::placeholder()];
    resize::eval(&crate::ir::Op::Resize(attrs), &ins, &mut outs, &mut Vec::new())?;
    if outs[0].shape() != [n_out, n_in] {
        return Err(format!("resize probe gave {:?}, expected [{n_out}, {n_in}]", outs[0].shape()));
    }
    Ok(outs[0].as_slice::<f32>().ok_or("probe output")?.to_vec())
}

/// Range table and taps of one axis (see resize.wgsl), placed at word `base`; `None` when the
/// axis maps every output to the same input with weight 1.
fn axis_table(w: &[f32], n_in: usize, n_out: usize, base: usize) -> Option<Vec<u32>> {
    let rows: Vec<&[f32]> = w.chunks(n_in.max(1)).collect();
    let identity = n_in == n_out
        && rows
            .iter()
            .enumerate()
            .all(|(j, r)| r.iter().enumerate().all(|(i, &v)| v == if i == j { 1.0 } else { 0.0 }));
    if identity {
        return None;
    }
    let mut ranges = Vec::with_capacity(2 * n_out);
    let mut taps: Vec<u32> = Vec::new();
    let taps_at = base + 2 * n_out;
    for r in rows.iter().take(n_out) {
        if r.iter().any(|v| v.is_nan()) {
            ranges.extend([0, u32::MAX]);
            continue;
        }
        let first = taps.len();
        for (i, &v) in r.iter().enumerate().filter(|(_, &v)| v != 0.0) {
            taps.extend([i as u32, v.to_bits()]);
        }
        if taps.len() == first {
            taps.extend([0, 0f32.to_bits()]); // all weights zero: one null tap
        }
        ranges.extend([(taps_at + first) as u32, ((taps.len() - first) / 2) as u32]);
    }
    ranges.extend(taps);
    Some(ranges)
}
