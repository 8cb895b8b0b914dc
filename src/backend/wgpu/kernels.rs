//! Which IR nodes run on wgpu, their output shapes, and their uniforms / dispatch sizes.
//! Shapes reach the shaders only through uniforms, so one pipeline serves every shape.

pub mod layout;

use crate::ir::{AutoPad, Binary, Graph, Node, Op, ReduceKind, ResizeAttrs, Unary, Window};
use crate::quant::{QData, QWeight};
use crate::tensor::{broadcast_shapes, DType};
use std::sync::Arc;

/// A node's GPU form. Anything else falls back to the CPU engine.
#[derive(Clone, Debug)]
pub enum GpuOp {
    /// Reshape / Flatten / Squeeze / Unsqueeze / Identity: the output aliases the input buffer.
    Alias,
    Unary(Act),
    Binary {
        code: u32,
    },
    /// f32 Gemm (`transA` = 0) or 2-D MatMul: B is an activation or constant of f32.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_b: bool,
    },
    /// MatMul with batch dims on A (B 2-D, or B with the same batch).
    MatMul,
    QGemm {
        w: Arc<QWeight>,
        alpha: f32,
        beta: f32,
    },
    /// Conv; `q` holds the packed weight and its f32 shape for QConv (no weight input).
    Conv {
        window: Window,
        group: usize,
        q: Option<(Arc<QWeight>, Vec<usize>)>,
    },
    Pool {
        window: Window,
        max: bool,
        count_include_pad: bool,
    },
    GlobalPool {
        max: bool,
    },
    Softmax {
        axis: i64,
        legacy: bool,
        log: bool,
    },
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    /// Inference BatchNormalization; its constant parameters are folded on the host.
    BatchNorm {
        epsilon: f32,
    },
    /// Reduction over constant `axes` (empty = all).
    Reduce {
        kind: ReduceKind,
        keepdims: bool,
        axes: Vec<i64>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    /// Slice with constant starts / ends / axes / steps.
    Slice,
    Concat {
        axis: i64,
    },
    /// Gather with constant indices (`ishape` their shape).
    Gather {
        axis: i64,
        indices: Vec<i64>,
        ishape: Vec<usize>,
    },
    /// Gather with indices computed at run time (a graph input such as token ids, or a CPU
    /// node's output): i32 or i64 (`wide`) values read by the shader from their buffer.
    GatherRuntime {
        axis: i64,
        wide: bool,
    },
    /// Resize with constant roi / scales / sizes.
    Resize(ResizeAttrs),
}

/// Activation code (see shaders/act.wgsl) with its two parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Act {
    pub code: u32,
    pub fa: f32,
    pub fb: f32,
}

pub fn act_code(u: &Unary) -> Option<Act> {
    let a = |code| Some(Act { code, fa: 0.0, fb: 0.0 });
    match *u {
        Unary::Relu => a(1),
        Unary::LeakyRelu { alpha } => Some(Act { code: 2, fa: alpha, fb: 0.0 }),
        Unary::Sigmoid => a(3),
        Unary::HardSigmoid { alpha, beta } => Some(Act { code: 4, fa: alpha, fb: beta }),
        Unary::HardSwish => a(5),
        Unary::Tanh => a(6),
        Unary::Gelu { tanh: false } => a(7),
        Unary::Gelu { tanh: true } => a(8),
        Unary::Exp => a(9),
        Unary::Log => a(10),
        Unary::Sqrt => a(11),
        Unary::Neg => a(12),
        Unary::Abs => a(13),
        Unary::Reciprocal => a(14),
        Unary::Floor => a(15),
        Unary::Ceil => a(16),
        Unary::Elu { alpha } => Some(Act { code: 17, fa: alpha, fb: 0.0 }),
        Unary::Softplus => a(18),
        Unary::Clip { min, max } => Some(Act { code: 19, fa: min, fb: max }),
        Unary::Erf => a(20),
        Unary::Not => None,
    }
}

fn binary_code(b: Binary) -> Option<u32> {
    Some(match b {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
        Binary::Pow => 4,
        Binary::Max => 5,
        Binary::Min => 6,
        Binary::PRelu => 7,
        _ => return None,
    })
}

/// The GPU form of `node`, or `None` when it must run on the CPU.
pub fn classify(graph: &Graph, node: &Node) -> Option<GpuOp> {
    // Unknown types and ranks (inference had no rule) are taken optimistically; binding
    // checks the concrete shapes, and uploads check the element type.
    let f32v = |v: Option<usize>| v.is_some_and(|v| matches!(graph.value(v).dtype, Some(DType::F32) | None));
    let rank = |v: Option<usize>| -> Option<usize> {
        Some(v.and_then(|v| graph.value(v).shape.as_ref().map(|s| s.rank())).unwrap_or(usize::MAX))
    };
    let fits = |v: Option<usize>, r: usize| rank(v).is_some_and(|x| x == r || x == usize::MAX);
    let is_const = |v: Option<usize>| v.is_none_or(|v| graph.value(v).constant.is_some());
    if node.outputs.len() != 1 || !f32v(Some(node.outputs[0])) {
        return None;
    }
    let x = node.input(0);
    if !f32v(x) {
        return None;
    }
    Some(match &node.op {
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze | Op::Identity => {
            if !node.inputs.iter().skip(1).all(|&i| is_const(i)) {
                return None;
            }
            GpuOp::Alias
        }
        Op::Unary(u) => GpuOp::Unary(act_code(u)?),
        Op::Binary(b) if f32v(node.input(1)) => GpuOp::Binary { code: binary_code(*b)? },
        Op::Gemm { alpha, beta, trans_a: false, trans_b } if f32v(node.input(1)) => {
            if node.input(2).is_some() && !f32v(node.input(2)) {
                return None;
            }
            GpuOp::Gemm { alpha: *alpha, beta: *beta, trans_b: *trans_b }
        }
        Op::MatMul if f32v(node.input(1)) && rank(x)? >= 2 && rank(node.input(1))? >= 2 => GpuOp::MatMul,
        Op::QGemm { w, alpha, beta } => {
            if node.input(1).is_some() && !f32v(node.input(1)) {
                return None;
            }
            GpuOp::QGemm { w: w.clone(), alpha: *alpha, beta: *beta }
        }
        Op::Conv { window, group } if fits(x, 4) && fits(node.input(1), 4) => {
            if node.input(2).is_some() && !f32v(node.input(2)) {
                return None;
            }
            GpuOp::Conv { window: window.clone(), group: *group, q: None }
        }
        Op::QConv { window, group, w, wshape } if fits(x, 4) && wshape.len() == 4 => {
            if node.input(1).is_some() && !f32v(node.input(1)) {
                return None;
            }
            GpuOp::Conv { window: window.clone(), group: *group, q: Some((w.clone(), wshape.clone())) }
        }
        Op::MaxPool { window, .. } if fits(x, 4) && window.kernel.len() == 2 => {
            GpuOp::Pool { window: window.clone(), max: true, count_include_pad: false }
        }
        Op::AveragePool { window, count_include_pad } if fits(x, 4) && window.kernel.len() == 2 => {
            GpuOp::Pool { window: window.clone(), max: false, count_include_pad: *count_include_pad }
        }
        Op::GlobalAveragePool if rank(x)? >= 3 => GpuOp::GlobalPool { max: false },
        Op::GlobalMaxPool if rank(x)? >= 3 => GpuOp::GlobalPool { max: true },
        Op::Softmax { axis, legacy } => GpuOp::Softmax { axis: *axis, legacy: *legacy, log: false },
        Op::LogSoftmax { axis, legacy } => GpuOp::Softmax { axis: *axis, legacy: *legacy, log: true },
        _ => return layout::classify(graph, node),
    })
}

/// Resolved 2-D window geometry for one spatial input.
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    pub k: [usize; 2],
    pub s: [usize; 2],
    pub d: [usize; 2],
    pub pad_begin: [usize; 2],
    pub pad_end: [usize; 2],
    pub out: [usize; 2],
}

/// Output extents and padding of a 2-D window op (ONNX rules incl. auto_pad and ceil_mode).
pub fn geometry(w: &Window, k: [usize; 2], hw: [usize; 2], pool: bool) -> Result<Geom, String> {
    let get = |v: &[usize], i: usize, def: usize| v.get(i).copied().unwrap_or(def);
    let s = [get(&w.strides, 0, 1).max(1), get(&w.strides, 1, 1).max(1)];
    let d = [get(&w.dilations, 0, 1).max(1), get(&w.dilations, 1, 1).max(1)];
    let mut pb = [get(&w.pads, 0, 0), get(&w.pads, 1, 0)];
    let mut pe = [get(&w.pads, 2, 0), get(&w.pads, 3, 0)];
    let mut out = [0; 2];
    for i in 0..2 {
        let ext = d[i] * (k[i].max(1) - 1) + 1;
        match w.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                out[i] = hw[i].div_ceil(s[i]);
                let total = ((out[i].max(1) - 1) * s[i] + ext).saturating_sub(hw[i]);
                let small = total / 2;
                let (b, e) =
                    if w.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
                pb[i] = b;
                pe[i] = e;
            }
            AutoPad::Valid | AutoPad::NotSet => {
                if w.auto_pad == AutoPad::Valid {
                    pb[i] = 0;
                    pe[i] = 0;
                }
                let span = hw[i] + pb[i] + pe[i];
                if span < ext {
                    return Err(format!("window {ext} larger than padded input {span}"));
                }
                let num = span - ext;
                out[i] = if pool && w.ceil_mode { num.div_ceil(s[i]) + 1 } else { num / s[i] + 1 };
                // A ceil-mode window must start inside the input or its begin padding.
                if pool && w.ceil_mode && (out[i] - 1) * s[i] >= hw[i] + pb[i] {
                    out[i] -= 1;
                }
            }
        }
    }
    Ok(Geom { k, s, d, pad_begin: pb, pad_end: pe, out })
}

/// Output shape of a GPU node from its input shapes (`None` = omitted input).
pub fn out_shape(op: &GpuOp, node: &Node, graph: &Graph, ins: &[Option<Vec<usize>>]) -> Result<Vec<usize>, String> {
    let x = ins.first().cloned().flatten().ok_or("input 0 is missing")?;
    let get = |i: usize| ins.get(i).cloned().flatten();
    Ok(match op {
        GpuOp::Alias => alias_shape(&node.op, graph, node, &x)?,
        GpuOp::Unary(_) => x,
        GpuOp::Binary { .. } => {
            let y = get(1).ok_or("input 1 is missing")?;
            if x.len() > 8 || y.len() > 8 {
                return Err("rank above 8 on wgpu".into());
            }
            broadcast_shapes(&x, &y).ok_or_else(|| format!("shapes {x:?} and {y:?} do not broadcast"))?.to_vec()
        }
        GpuOp::Gemm { trans_b, .. } => {
            let b = get(1).ok_or("input 1 is missing")?;
            if x.len() != 2 || b.len() != 2 {
                return Err(format!("Gemm needs 2-D A and B, got {x:?} and {b:?}"));
            }
            let (kb, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if kb != x[1] {
                return Err(format!("Gemm inner dimensions differ: {x:?} x {b:?}"));
            }
            vec![x[0], n]
        }
        GpuOp::MatMul => {
            let b = get(1).ok_or("input 1 is missing")?;
            let (r, rb) = (x.len(), b.len());
            if r < 2 || rb < 2 {
                return Err(format!("MatMul of {x:?} and {b:?} is not supported on wgpu"));
            }
            if x[r - 1] != b[rb - 2] || (rb > 2 && b[..rb - 2] != x[..r - 2]) {
                return Err(format!("MatMul of {x:?} and {b:?} is not supported on wgpu"));
            }
            let mut o = x[..r - 1].to_vec();
            o.push(b[rb - 1]);
            o
        }
        GpuOp::QGemm { w, .. } => {
            if x.last() != Some(&w.k) {
                return Err(format!("QGemm input {x:?} does not end with K = {}", w.k));
            }
            let mut o = x[..x.len() - 1].to_vec();
            o.push(w.n);
            o
        }
        GpuOp::Conv { window, group, q } => {
            let w = match q {
                Some((_, ws)) => ws.clone(),
                None => get(1).ok_or("input 1 is missing")?,
            };
            if x.len() != 4 || w.len() != 4 || *group == 0 || x[1] != w[1] * group || w[0] % group != 0 {
                return Err(format!("Conv of {x:?} with weight {w:?} (group {group}) is inconsistent"));
            }
            let g = geometry(window, [w[2], w[3]], [x[2], x[3]], false)?;
            vec![x[0], w[0], g.out[0], g.out[1]]
        }
        GpuOp::Pool { window, .. } => {
            if x.len() != 4 {
                return Err(format!("pooling of {x:?} is not supported on wgpu"));
            }
            let g = geometry(window, [window.kernel[0], window.kernel[1]], [x[2], x[3]], true)?;
            vec![x[0], x[1], g.out[0], g.out[1]]
        }
        GpuOp::GlobalPool { .. } => {
            if x.len() < 3 {
                return Err(format!("global pooling of {x:?}"));
            }
            let mut o = x[..2].to_vec();
            o.extend(std::iter::repeat_n(1, x.len() - 2));
            o
        }
        GpuOp::Softmax { .. } => x,
        _ => return layout::out_shape(op, node, graph, ins),
    })
}

fn alias_shape(op: &Op, graph: &Graph, node: &Node, x: &[usize]) -> Result<Vec<usize>, String> {
    let konst = |i: usize| node.input(i).and_then(|v| graph.constant(v)).and_then(|t| t.to_i64_vec());
    let total: usize = x.iter().product();
    let axes = |v: Vec<i64>, r: usize| -> Result<Vec<usize>, String> {
        v.iter()
            .map(|&a| crate::tensor::norm_axis(a, r).ok_or_else(|| format!("axis {a} out of range for rank {r}")))
            .collect()
    };
    Ok(match op {
        // Identity, and a reduction over no axes with noop_with_empty_axes.
        Op::Identity | Op::Reduce { .. } => x.to_vec(),
        Op::Flatten { axis } => {
            let a = crate::tensor::norm_axis(*axis, x.len() + 1).ok_or("Flatten axis out of range")?;
            let outer: usize = x[..a.min(x.len())].iter().product();
            vec![outer, total / outer.max(1)]
        }
        Op::Reshape { allowzero } => {
            let spec = konst(1).ok_or("Reshape shape must be constant on wgpu")?;
            let mut o = Vec::with_capacity(spec.len());
            let mut infer = None;
            for (i, &d) in spec.iter().enumerate() {
                match d {
                    -1 => {
                        infer = Some(i);
                        o.push(1);
                    }
                    0 if !allowzero => o.push(*x.get(i).ok_or("Reshape 0 past the input rank")?),
                    d if d >= 0 => o.push(d as usize),
                    _ => return Err(format!("bad Reshape dim {d}")),
                }
            }
            if let Some(i) = infer {
                let rest: usize = o.iter().product();
                if rest == 0 || !total.is_multiple_of(rest) {
                    return Err(format!("cannot reshape {x:?} to {spec:?}"));
                }
                o[i] = total / rest;
            }
            o
        }
        Op::Squeeze => match konst(1) {
            Some(a) => {
                let a = axes(a, x.len())?;
                x.iter().enumerate().filter(|(i, _)| !a.contains(i)).map(|(_, &d)| d).collect()
            }
            None => x.iter().copied().filter(|&d| d != 1).collect(),
        },
        Op::Unsqueeze => {
            let r = x.len() + konst(1).ok_or("Unsqueeze axes must be constant")?.len();
            let a = axes(konst(1).unwrap_or_default(), r)?;
            let mut it = x.iter();
            (0..r)
                .map(|i| if a.contains(&i) { Ok(1) } else { it.next().copied().ok_or("bad axes".to_string()) })
                .collect::<Result<_, _>>()?
        }
        _ => return Err(format!("{} is not an alias op", op.name())),
    })
}

/// Packs a quantized weight into u32 words for quant.wgsl / the w8a8 shaders, with its W_MODE.
/// int8, int4 and w8a8 rows are followed by their own scales (see quant.wgsl), so the kernels
/// bind one weight buffer and a window of whole rows holds its scales when a GEMM is split.
pub fn pack_qweight(w: &QWeight) -> (u32, Vec<u32>) {
    fn pairs(h: &[half::f16]) -> Vec<u32> {
        h.chunks(2).map(|c| c[0].to_bits() as u32 | (c.get(1).map_or(0, |x| x.to_bits()) as u32) << 16).collect()
    }
    match &w.data {
        QData::F16(h) => (1, pairs(h)),
        QData::Int8 { q, scales } => {
            let kw = w.k.div_ceil(4);
            let mut words = vec![0u32; w.n * (kw + 1)];
            for (r, row) in q.chunks(w.k.max(1)).enumerate().take(w.n) {
                let out = &mut words[r * (kw + 1)..(r + 1) * (kw + 1)];
                for (j, &b) in row.iter().enumerate() {
                    out[j / 4] |= (b as u8 as u32) << (8 * (j % 4));
                }
                out[kw] = scales[r].to_bits();
            }
            (2, words)
        }
        QData::Int4 { packed, scales } => {
            let g = w.groups();
            let mut words = Vec::with_capacity(w.n * (4 * g + g.div_ceil(2)));
            for r in 0..w.n {
                words.extend_from_slice(&packed[r * g * 4..(r + 1) * g * 4]);
                words.extend(pairs(&scales[r * g..(r + 1) * g]));
            }
            (3, words)
        }
        QData::W8a8 { .. } => (super::w8a8::MODE, super::w8a8::pack(w).expect("w8a8 weight")),
    }
}

/// The static activation scale a w8a8 weight carries (the shaders' `act_scale`; 0 = per row).
pub fn act_scale(w: &QWeight) -> f32 {
    match w.data {
        QData::W8a8 { act_scale, .. } => act_scale.unwrap_or(0.0),
        _ => 0.0,
    }
}

/// The `groups` uniform of a packed weight: int4 groups per row, or w8a8 words per row.
pub fn qweight_groups(w: &QWeight) -> usize {
    match w.data {
        QData::W8a8 { .. } => super::w8a8::row_words(w),
        _ => w.groups(),
    }
}
