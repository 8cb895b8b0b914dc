//! Which normalisation, reduction and data-movement nodes run on wgpu (norm.wgsl, reduce.wgsl,
//! move.wgsl, resize.wgsl) and their output shapes. Arguments that ONNX passes as tensors
//! (axes, starts, scales, sizes) must be constants: they are resolved on the host and reach the
//! shaders as uniforms or small tables, never as shader text. Gather's indices may also be
//! computed at run time (i32 / i64): the shader reads them from their buffer.

use super::GpuOp;
use crate::backend::cpu::kernels::{reduce, resize, shape_ops, slice_pad};
use crate::ir::{AspectPolicy, Graph, Node, Op};
use crate::tensor::{norm_axis, DType, Tensor};

/// Highest rank the index-decoding shaders take (two vec4s of extents in the uniform).
pub const MAX_RANK: usize = 8;

fn konst<'g>(graph: &'g Graph, node: &Node, i: usize) -> Option<&'g Tensor> {
    node.input(i).and_then(|v| graph.constant(v))
}

/// An optional tensor input that is absent, empty, or a constant.
fn const_or_absent(graph: &Graph, node: &Node, i: usize) -> bool {
    node.input(i).is_none_or(|v| graph.constant(v).is_some())
}

fn ints(t: Option<&Tensor>, what: &str) -> Result<Option<Vec<i64>>, String> {
    t.filter(|t| !t.is_empty()).map(|t| shape_ops::ints(t, what)).transpose()
}

/// The GPU form of the ops this module covers, or `None` (CPU fallback).
pub fn classify(graph: &Graph, node: &Node) -> Option<GpuOp> {
    let f32v = |i: usize| node.input(i).is_some_and(|v| matches!(graph.value(v).dtype, Some(DType::F32) | None));
    let f32c = |i: usize| konst(graph, node, i).is_some_and(|t| t.dtype() == DType::F32);
    Some(match &node.op {
        Op::LayerNorm { axis, epsilon } if f32v(1) && (node.input(2).is_none() || f32v(2)) => {
            if !(1..3).all(|i| trailing_param(graph, node, i, *axis)) {
                return None;
            }
            GpuOp::LayerNorm { axis: *axis, epsilon: *epsilon }
        }
        Op::BatchNorm { epsilon } if (1..5).all(f32c) => GpuOp::BatchNorm { epsilon: *epsilon },
        Op::Reduce { kind, keepdims, noop_with_empty_axes } if const_or_absent(graph, node, 1) => {
            let axes = ints(konst(graph, node, 1), "axes").ok()?.unwrap_or_default();
            if axes.is_empty() && *noop_with_empty_axes {
                return Some(GpuOp::Alias);
            }
            GpuOp::Reduce { kind: *kind, keepdims: *keepdims, axes }
        }
        Op::Transpose { perm } => GpuOp::Transpose { perm: perm.clone() },
        Op::Slice if (1..5).all(|i| const_or_absent(graph, node, i)) && node.input(1).is_some() => GpuOp::Slice,
        Op::Concat { axis } if !node.inputs.is_empty() && (0..node.inputs.len()).all(f32v) => {
            GpuOp::Concat { axis: *axis }
        }
        Op::Gather { axis } if konst(graph, node, 1).is_some() => {
            let idx = ints(konst(graph, node, 1), "indices").ok()??;
            GpuOp::Gather { axis: *axis, indices: idx, ishape: konst(graph, node, 1)?.shape().to_vec() }
        }
        Op::Gather { axis } => {
            // Run-time indices of a known integer type (the buffer holds them as uploaded).
            let wide = match node.input(1).and_then(|v| graph.value(v).dtype) {
                Some(DType::I64) => true,
                Some(DType::I32) => false,
                _ => return None,
            };
            GpuOp::GatherRuntime { axis: *axis, wide }
        }
        Op::Resize(a) if (1..4).all(|i| const_or_absent(graph, node, i)) => {
            let sizes = konst(graph, node, 3).is_some_and(|t| !t.is_empty());
            // A non-stretching aspect policy derives one scale for several axes; the tap tables
            // are probed per axis, so those stay on the CPU.
            if sizes && a.aspect != AspectPolicy::Stretch {
                return None;
            }
            GpuOp::Resize(a.clone())
        }
        _ => return None,
    })
}

/// Whether LayerNorm's scale (i = 1) or bias (i = 2) can be indexed `j % len` over the
/// normalised axes (a trailing part of their shape, leading 1s aside), as far as shapes are
/// known at load time; other broadcasts stay on the CPU.
fn trailing_param(graph: &Graph, node: &Node, i: usize, axis: i64) -> bool {
    let Some(p) = node.input(i).and_then(|v| graph.value(v).shape.clone()) else { return true };
    let Some(x) = node.input(0).and_then(|v| graph.value(v).shape.clone()) else { return true };
    let Some(a) = norm_axis(axis, x.rank()) else { return false };
    let p: Vec<_> = p.0.iter().skip_while(|d| d.known() == Some(1)).collect();
    let norm = &x.0[a..];
    p.len() <= norm.len()
        && p.iter().zip(&norm[norm.len() - p.len()..]).all(|(q, d)| match (q.known(), d.known()) {
            (Some(q), Some(d)) => q == d,
            _ => true,
        })
}

/// Whether the GPU kernel reads input `k` of a node classified as `op` (the others are
/// resolved on the host and need no GPU buffer).
pub fn reads_input(op: &GpuOp, k: usize) -> bool {
    match op {
        GpuOp::BatchNorm { .. }
        | GpuOp::Reduce { .. }
        | GpuOp::Slice
        | GpuOp::Gather { .. }
        | GpuOp::Resize(_)
        | GpuOp::Transpose { .. } => k == 0,
        GpuOp::GatherRuntime { .. } => k <= 1,
        _ => true,
    }
}

fn rank_ok(s: &[usize]) -> Result<(), String> {
    if s.len() > MAX_RANK {
        return Err(format!("rank {} above {MAX_RANK} on wgpu", s.len()));
    }
    Ok(())
}

/// Resolved Transpose permutation (empty = reversed axes).
pub fn perm_of(perm: &[usize], rank: usize) -> Result<Vec<usize>, String> {
    let p: Vec<usize> = if perm.is_empty() { (0..rank).rev().collect() } else { perm.to_vec() };
    let mut seen = vec![false; rank];
    if p.len() != rank || p.iter().any(|&a| a >= rank || std::mem::replace(&mut seen[a], true)) {
        return Err(format!("perm {perm:?} is not a permutation of rank {rank}"));
    }
    Ok(p)
}

/// Per axis (first index, step, count) of a Slice over `xs`, from its constant inputs.
pub fn slice_plan(graph: &Graph, node: &Node, xs: &[usize]) -> Result<Vec<(i64, i64, usize)>, String> {
    let starts = ints(konst(graph, node, 1), "starts")?.unwrap_or_default();
    let ends = ints(konst(graph, node, 2), "ends")?.unwrap_or_default();
    let axes = ints(konst(graph, node, 3), "axes")?;
    let steps = ints(konst(graph, node, 4), "steps")?;
    let mut out: Vec<(i64, i64, usize)> = xs.iter().map(|&d| (0, 1, d)).collect();
    for (a, s, e, step) in slice_pad::slice_params(xs.len(), &starts, &ends, axes.as_deref(), steps.as_deref())? {
        out[a] = slice_pad::slice_axis(xs[a], s, e, step);
    }
    Ok(out)
}

/// Reduced-axis flags of a reduction over `rank` axes (no axes = all).
pub fn reduced_axes(axes: &[i64], rank: usize) -> Result<Vec<bool>, String> {
    let mut red = vec![axes.is_empty(); rank];
    for &a in axes {
        red[shape_ops::axis(a, rank)?] = true;
    }
    Ok(red)
}

/// Resize's output shape, per-axis scales and resized axes, from its constant inputs.
pub fn resize_plan(
    graph: &Graph,
    node: &Node,
    a: &crate::ir::ResizeAttrs,
    xs: &[usize],
) -> Result<resize::Plan, String> {
    let scales: Option<Vec<f32>> =
        konst(graph, node, 2).filter(|t| !t.is_empty()).map(|t| t.to_f64_vec().iter().map(|&v| v as f32).collect());
    let sizes = ints(konst(graph, node, 3), "sizes")?;
    resize::plan(a, xs, scales.as_deref(), sizes.as_deref())
}

/// Gather's output: `x` with axis `axis` replaced by the indices' shape.
fn gather_shape(x: &[usize], axis: i64, ishape: &[usize]) -> Result<Vec<usize>, String> {
    let a = shape_ops::axis(axis, x.len())?;
    let mut o = x[..a].to_vec();
    o.extend_from_slice(ishape);
    o.extend_from_slice(&x[a + 1..]);
    Ok(o)
}

/// Output shape of the ops this module covers.
pub fn out_shape(op: &GpuOp, node: &Node, graph: &Graph, ins: &[Option<Vec<usize>>]) -> Result<Vec<usize>, String> {
    let x = ins.first().cloned().flatten().ok_or("input 0 is missing")?;
    rank_ok(&x)?;
    Ok(match op {
        GpuOp::LayerNorm { axis, .. } => {
            norm_axis(*axis, x.len()).ok_or_else(|| format!("axis {axis} is out of range for rank {}", x.len()))?;
            x
        }
        GpuOp::BatchNorm { .. } => x,
        GpuOp::Reduce { keepdims, axes, .. } => reduce::reduced_shape(&x, &reduced_axes(axes, x.len())?, *keepdims),
        GpuOp::Transpose { perm } => perm_of(perm, x.len())?.iter().map(|&a| x[a]).collect(),
        GpuOp::Slice => slice_plan(graph, node, &x)?.iter().map(|s| s.2).collect(),
        GpuOp::Concat { axis } => {
            let a = shape_ops::axis(*axis, x.len())?;
            let mut o = x.clone();
            o[a] = 0;
            for (k, s) in ins.iter().enumerate() {
                let s = s.as_ref().ok_or_else(|| format!("input {k} is missing"))?;
                if s.len() != x.len() || s.iter().zip(&x).enumerate().any(|(i, (p, q))| i != a && p != q) {
                    return Err(format!("Concat input {k} of shape {s:?} does not fit {x:?} on axis {a}"));
                }
                o[a] += s[a];
            }
            o
        }
        GpuOp::Gather { axis, ishape, .. } => gather_shape(&x, *axis, ishape)?,
        GpuOp::GatherRuntime { axis, .. } => {
            let ishape = ins.get(1).cloned().flatten().ok_or("indices shape unknown")?;
            gather_shape(&x, *axis, &ishape)?
        }
        GpuOp::Resize(a) => resize_plan(graph, node, a, &x)?.0,
        _ => return Err("not a layout op".into()),
    })
}
