//! Execution plan of the wgpu engine.
//!
//! At prepare time: nodes become steps (GPU kernels, buffer aliases, or CPU fallbacks), an
//! activation that is the only reader of a GEMM/conv/binary output is fused into it, values
//! get buffer slots planned over their lifetimes (as in the CPU arena), and constants the GPU
//! reads are uploaded once. At the first run with given input shapes the plan is bound: slot
//! buffers sized, uniforms written, bind groups built; later runs with those shapes allocate
//! no GPU memory. A run uploads the inputs, records every dispatch into one command buffer and
//! submits once, then reads back the outputs; a CPU-fallback node splits the run at that node
//! (its inputs are read back, its outputs uploaded).

mod fuse;
mod gemm_split;
mod host;
mod layout;
mod profile;

pub use profile::ProfileClock;

use host::{elem_bytes, gpu_bytes, gpu_dtype};

use super::device::Ctx;
use super::kernels::{
    act_scale, classify, geometry, layout::reads_input, out_shape, pack_qweight, qweight_groups, Act, GpuOp,
};
use super::w8a8;
use crate::backend::cpu::kernels;
use crate::backend::cpu::kernels::broadcast::broadcast_strides;
use crate::backend::Executable;
use crate::error::{Error, Result};
use crate::ir::{Graph, ValueId};
use crate::tensor::{Shape, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
enum Kind {
    Gpu(GpuOp),
    Cpu,
    /// An activation fused into the step before it: nothing to run.
    Fused,
}

#[derive(Clone, Debug)]
struct Step {
    node: usize,
    kind: Kind,
    /// Output values (for a fused step, the activation's output).
    outputs: Vec<ValueId>,
    act: Act,
}

/// Where a GPU-resident value's buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Host,
    Const,
    Input(usize),
    Slot(usize),
}

/// A dispatch before its bind group: pipeline key, uniform words, buffers by binding index,
/// workgroup counts.
type Prepared<'a> = ((&'static str, &'static str, u32), Vec<u32>, Vec<(u32, &'a wgpu::Buffer)>, [u32; 3]);

struct Dispatch {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind: wgpu::BindGroup,
    groups: [u32; 3],
    /// A table made for this dispatch at bind time (gather indices, resize taps).
    _aux: Option<wgpu::Buffer>,
}

/// Buffers and bind groups for one set of input shapes.
struct Bound {
    key: Vec<Vec<usize>>,
    shapes: Vec<Option<Vec<usize>>>,
    slots: Vec<wgpu::Buffer>,
    inputs: Vec<Option<wgpu::Buffer>>,
    /// Dispatches of each step (none for CPU, alias and fused steps; several for Concat).
    dispatch: Vec<Vec<Dispatch>>,
    /// One map-readable buffer per value that is ever read back (outputs, fallback inputs).
    staging: HashMap<ValueId, wgpu::Buffer>,
    host: Vec<Option<Tensor>>,
    scratch: Vec<Vec<f32>>,
}

pub struct WgpuPlan {
    ctx: Arc<Ctx>,
    graph: Arc<Graph>,
    steps: Vec<Step>,
    root: Vec<ValueId>,
    loc: Vec<Loc>,
    n_slots: usize,
    consts: HashMap<ValueId, wgpu::Buffer>,
    /// Packed weights (rows followed by their scales) of QGemm / QConv steps, by step index:
    /// (W_MODE, buffer, static activation scale).
    qbufs: HashMap<usize, (u32, wgpu::Buffer, f32)>,
    /// Folded BatchNorm parameters (count per half, `[a..., b...]`), by step index.
    folded: HashMap<usize, (usize, wgpu::Buffer)>,
    dummy: wgpu::Buffer,
    bound: Mutex<Option<Bound>>,
}

/// Refuses a buffer past the adapter's `max_buffer_size` (128 MiB and up; 256 MiB downlevel)
/// with a message naming it, rather than leaving wgpu to fail on it.
fn fits_buffer(ctx: &Ctx, label: &str, bytes: usize) -> Result<u64> {
    let size = bytes.max(16).next_multiple_of(4) as u64;
    if size > ctx.limits.max_buffer_size {
        return Err(Error::Unavailable(format!(
            "wgpu: '{label}' needs a {size}-byte buffer, above the adapter's {}-byte max_buffer_size",
            ctx.limits.max_buffer_size
        )));
    }
    Ok(size)
}

fn storage_init(ctx: &Ctx, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
    fits_buffer(ctx, label, bytes.len())?;
    let mut v = bytes.to_vec();
    v.resize(v.len().max(16).next_multiple_of(4), 0);
    Ok(ctx.buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: &v,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    }))
}

fn storage(ctx: &Ctx, label: &str, bytes: usize) -> Result<wgpu::Buffer> {
    Ok(ctx.buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: fits_buffer(ctx, label, bytes)?,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    }))
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

fn kerr(graph: &Graph, node: usize, message: impl Into<String>) -> Error {
    let n = &graph.nodes[node];
    Error::Kernel { node: n.name.clone(), op: n.op.name().to_string(), message: message.into() }
}

impl WgpuPlan {
    pub fn new(ctx: Arc<Ctx>, graph: Arc<Graph>) -> Result<WgpuPlan> {
        let g = &*graph;
        let nv = g.values.len();
        let mut steps: Vec<Step> = g
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| Step {
                node: n,
                kind: classify(g, node).map_or(Kind::Cpu, Kind::Gpu),
                outputs: node.outputs.clone(),
                act: Act::default(),
            })
            .collect();
        fuse::fuse_activations(g, &mut steps);

        // Alias roots, and which values the GPU touches.
        let mut root: Vec<ValueId> = (0..nv).collect();
        let mut on_gpu = vec![false; nv];
        for s in &steps {
            let node = &g.nodes[s.node];
            match &s.kind {
                Kind::Gpu(GpuOp::Alias) => root[s.outputs[0]] = root[node.inputs[0].expect("classified")],
                Kind::Gpu(op) => {
                    let read = node.inputs.iter().enumerate().filter(|(k, _)| reads_input(op, *k));
                    for (_, &i) in read.filter_map(|(k, i)| i.as_ref().map(|i| (k, i))) {
                        on_gpu[root[i]] = true;
                    }
                    for &o in &s.outputs {
                        on_gpu[root[o]] = true;
                    }
                }
                Kind::Cpu | Kind::Fused => {}
            }
        }
        let mut loc = vec![Loc::Host; nv];
        for v in 0..nv {
            if on_gpu[v] && g.values[v].constant.is_some() {
                loc[v] = Loc::Const;
            }
        }
        for (i, &v) in g.inputs.iter().enumerate() {
            if on_gpu[v] {
                loc[v] = Loc::Input(i);
            }
        }
        // Lifetimes over steps, by root; graph outputs live to the end.
        let mut last = vec![None; nv];
        for (si, s) in steps.iter().enumerate() {
            for &i in g.nodes[s.node].inputs.iter().flatten() {
                last[root[i]] = Some(si);
            }
        }
        for &o in &g.outputs {
            last[root[o]] = Some(usize::MAX);
        }
        let mut free: Vec<usize> = Vec::new();
        let mut n_slots = 0;
        for (si, s) in steps.iter().enumerate() {
            if matches!(s.kind, Kind::Gpu(GpuOp::Alias) | Kind::Fused) {
                continue;
            }
            for &o in &s.outputs {
                let r = root[o];
                if on_gpu[r] && loc[r] == Loc::Host {
                    loc[r] = Loc::Slot(free.pop().unwrap_or_else(|| {
                        n_slots += 1;
                        n_slots - 1
                    }));
                }
            }
            let mut released = Vec::new();
            let reads = g.nodes[s.node].inputs.iter().flatten().map(|&i| root[i]);
            for r in reads.chain(s.outputs.iter().map(|&o| root[o])) {
                if (last[r] == Some(si) || last[r].is_none()) && !released.contains(&r) {
                    released.push(r);
                    if let Loc::Slot(k) = loc[r] {
                        free.push(k);
                    }
                }
            }
        }

        // Upload the constants the GPU reads, and packed quantized weights.
        let mut consts = HashMap::new();
        for (v, _) in loc.iter().enumerate().filter(|(_, l)| **l == Loc::Const) {
            {
                let t = g.values[v].constant.as_deref().expect("constant");
                let f = t.as_slice::<f32>().ok_or_else(|| Error::Unavailable("non-f32 constant on wgpu".into()))?;
                consts.insert(v, storage_init(&ctx, &g.values[v].name, bytemuck::cast_slice(f))?);
            }
        }
        let mut qbufs = HashMap::new();
        for (si, s) in steps.iter().enumerate() {
            let q = match &s.kind {
                Kind::Gpu(GpuOp::QGemm { w, .. }) => Some(w),
                Kind::Gpu(GpuOp::Conv { q: Some((w, _)), .. }) => Some(w),
                _ => None,
            };
            if let Some(w) = q {
                let (mode, words) = pack_qweight(w);
                let wb = storage_init(&ctx, &g.nodes[s.node].name, bytemuck::cast_slice(&words))?;
                qbufs.insert(si, (mode, wb, act_scale(w)));
            }
        }
        let folded = layout::fold_batch_norms(&ctx, g, &steps)?;
        let dummy = storage(&ctx, "dummy", 16)?;
        Ok(WgpuPlan { ctx, graph, steps, root, loc, n_slots, consts, qbufs, folded, dummy, bound: Mutex::new(None) })
    }

    /// Nodes that run on the CPU in this plan.
    pub fn fallback_nodes(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| matches!(s.kind, Kind::Cpu))
            .map(|s| self.graph.nodes[s.node].name.clone())
            .collect()
    }

    /// Number of GPU buffers planned for intermediate values (against the value count).
    pub fn slot_count(&self) -> usize {
        self.n_slots
    }

    fn buffer<'a>(&'a self, b: &'a Bound, v: ValueId) -> Option<&'a wgpu::Buffer> {
        let r = self.root[v];
        match self.loc[r] {
            Loc::Host => None,
            Loc::Const => self.consts.get(&r),
            Loc::Input(i) => b.inputs[i].as_ref(),
            Loc::Slot(s) => b.slots.get(s),
        }
    }

    /// Concrete shapes of every value, then buffers and bind groups.
    fn bind(&self, inputs: &[&Tensor]) -> Result<Bound> {
        let g = &*self.graph;
        let mut shapes: Vec<Option<Vec<usize>>> = vec![None; g.values.len()];
        for (v, val) in g.values.iter().enumerate() {
            if let Some(c) = &val.constant {
                shapes[v] = Some(c.shape().to_vec());
            }
        }
        for (k, &v) in g.inputs.iter().enumerate() {
            shapes[v] = Some(inputs[k].shape().to_vec());
        }
        let mut scratch_graph: Option<Graph> = None;
        for s in &self.steps {
            let node = &g.nodes[s.node];
            let ins: Vec<Option<Vec<usize>>> = node.inputs.iter().map(|i| i.and_then(|i| shapes[i].clone())).collect();
            match &s.kind {
                Kind::Gpu(op) => {
                    let sh = out_shape(op, node, g, &ins).map_err(|m| kerr(g, s.node, m))?;
                    shapes[s.outputs[0]] = Some(sh);
                }
                Kind::Fused => {}
                Kind::Cpu => {
                    // Shape inference on a copy of the graph holding the concrete shapes so far.
                    let sg = scratch_graph.get_or_insert_with(|| g.clone());
                    for (v, sh) in shapes.iter().enumerate() {
                        if let Some(sh) = sh {
                            sg.values[v].shape = Some(Shape::known(sh));
                        }
                    }
                    let facts = crate::ir::infer::infer_node(sg, node)?;
                    for (k, &o) in node.outputs.iter().enumerate() {
                        let known =
                            facts.get(k).and_then(|f| f.shape.as_ref()).and_then(|d| Shape(d.clone()).as_known());
                        shapes[o] = known;
                    }
                }
            }
            for &o in &s.outputs {
                if shapes[o].is_none() && self.loc[self.root[o]] != Loc::Host {
                    return Err(kerr(g, s.node, "output shape unknown at bind time"));
                }
            }
        }
        // Slot sizes: the largest value each slot holds.
        let mut slot_bytes = vec![0usize; self.n_slots];
        for (v, sh) in shapes.iter().enumerate() {
            if let (Loc::Slot(k), Some(sh)) = (self.loc[self.root[v]], sh) {
                slot_bytes[k] = slot_bytes[k].max(numel(sh) * elem_bytes(g, v));
            }
        }
        // Past the adapter's binding limit, only GEMMs split their work (gemm_split); refuse
        // other kernels clearly.
        let limit = self.ctx.limits.max_storage_buffer_binding_size as usize;
        let big = |v: usize| shapes[v].as_ref().is_some_and(|s| numel(s) * elem_bytes(g, v) > limit);
        if let Some(v) = (0..g.values.len())
            .find(|&v| self.loc[self.root[v]] != Loc::Host && big(v) && !gemm_split::only_gemms_touch(self, v))
        {
            return Err(Error::Unavailable(format!(
                "wgpu: value '{}' ({:?}) exceeds the adapter's {limit}-byte storage binding limit",
                g.values[v].name, shapes[v]
            )));
        }
        for v in (0..g.values.len()).filter(|&v| self.loc[self.root[v]] != Loc::Host) {
            let n = shapes[v].as_ref().map_or(0, |s| numel(s));
            fits_buffer(&self.ctx, &g.values[v].name, n * elem_bytes(g, v))?;
        }
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let slots: Vec<wgpu::Buffer> =
            slot_bytes.iter().map(|&b| storage(&self.ctx, "slot", b)).collect::<Result<_>>()?;
        let input_bufs: Vec<Option<wgpu::Buffer>> = g
            .inputs
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                matches!(self.loc[v], Loc::Input(_))
                    .then(|| storage(&self.ctx, &g.values[v].name, inputs[k].len() * elem_bytes(g, v)))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let mut b = Bound {
            key: inputs.iter().map(|t| t.shape().to_vec()).collect(),
            shapes,
            slots,
            inputs: input_bufs,
            dispatch: Vec::new(),
            staging: HashMap::new(),
            host: vec![None; g.values.len()],
            scratch: vec![Vec::new(); self.steps.len()],
        };
        let mut dispatch = Vec::with_capacity(self.steps.len());
        for si in 0..self.steps.len() {
            dispatch.push(self.make_dispatch(&b, si)?);
        }
        b.dispatch = dispatch;
        // New pipelines go to the on-disk cache now; an unwritable cache dir must not stop a run.
        let _ = self.ctx.save_pipeline_cache();
        // Staging for everything that may be read back: graph outputs and fallback inputs.
        let mut wanted: Vec<ValueId> = g.outputs.clone();
        for s in self.steps.iter().filter(|s| matches!(s.kind, Kind::Cpu)) {
            wanted.extend(g.nodes[s.node].inputs.iter().flatten());
        }
        for v in wanted {
            if self.loc[self.root[v]] == Loc::Host || b.staging.contains_key(&v) {
                continue;
            }
            let n = b.shapes[v].as_ref().map_or(0, |s| numel(s));
            let buf = self.ctx.buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: (n * 4).max(16) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            b.staging.insert(v, buf);
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Unavailable(format!(
                "wgpu: binding the plan: {}",
                super::device::one_line(&e.to_string())
            )));
        }
        Ok(b)
    }

    fn make_dispatch(&self, b: &Bound, si: usize) -> Result<Vec<Dispatch>> {
        let g = &*self.graph;
        let s = &self.steps[si];
        let Kind::Gpu(op) = &s.kind else { return Ok(vec![]) };
        if matches!(op, GpuOp::Alias) {
            return Ok(vec![]);
        }
        let node = &g.nodes[s.node];
        let sh = |v: Option<ValueId>| v.and_then(|v| b.shapes[v].clone());
        let buf = |v: Option<ValueId>| v.and_then(|v| self.buffer(b, v));
        let x = sh(node.input(0)).ok_or_else(|| kerr(g, s.node, "input shape unknown"))?;
        let out = sh(Some(s.outputs[0])).ok_or_else(|| kerr(g, s.node, "output shape unknown"))?;
        let y = buf(Some(s.outputs[0])).ok_or_else(|| kerr(g, s.node, "output has no buffer"))?;
        let a_buf = buf(node.input(0)).ok_or_else(|| kerr(g, s.node, "input has no buffer"))?;
        if let Some(jobs) = layout::jobs(self, b, si, op, a_buf, y)? {
            return jobs.into_iter().map(|j| self.finish(&node.name, j)).collect();
        }
        let act = s.act;
        let fb = |f: f32| f.to_bits();
        let len = numel(&out);
        let too_big = || kerr(g, s.node, "tensor too large for one dispatch");
        let u32c = |v: usize| u32::try_from(v).map_err(|_| too_big());
        let grid = layout::grid;
        // (pipeline key, uniform words, bound buffers by binding index, workgroups)
        let (key, params, bufs, groups): Prepared<'_> = match op {
            GpuOp::Alias => unreachable!(),
            GpuOp::Unary(a) => {
                let mut p = vec![u32c(len)?, a.code, 0, 0, fb(a.fa), fb(a.fb), 0, 0];
                p.resize(32, 0); // the uniform struct is shared with `binary`
                (("elementwise", "unary", 0), p, vec![(1, a_buf), (3, y)], grid(len))
            }
            GpuOp::Binary { code } => {
                let bsh = sh(node.input(1)).ok_or_else(|| kerr(g, s.node, "input 1 shape unknown"))?;
                let b_buf = buf(node.input(1)).ok_or_else(|| kerr(g, s.node, "input 1 has no buffer"))?;
                let (sa, sb) = (broadcast_strides(&x, &out), broadcast_strides(&bsh, &out));
                let mut p = vec![u32c(len)?, *code, out.len() as u32, act.code, fb(act.fa), fb(act.fb), 0, 0];
                for (k, arr) in [&out[..], &sa[..], &sb[..]].into_iter().enumerate() {
                    for i in 0..8 {
                        p.push(u32c(arr.get(i).copied().unwrap_or(if k == 0 { 1 } else { 0 }))?);
                    }
                }
                (("elementwise", "binary", 0), p, vec![(1, a_buf), (2, b_buf), (3, y)], grid(len))
            }
            GpuOp::Gemm { .. } | GpuOp::MatMul | GpuOp::QGemm { .. } => {
                let k = *x.last().unwrap_or(&0);
                let n = *out.last().unwrap_or(&0);
                let (mut m, mut batch, mut batch_a, mut batch_b) = (numel(&x) / k.max(1), 1, 0, 0);
                let (alpha, beta, trans_b, mode, groups_k, a_scale) = match op {
                    GpuOp::Gemm { alpha, beta, trans_b } => (*alpha, *beta, *trans_b, 0, 0, 0.0),
                    GpuOp::QGemm { w, alpha, beta } => {
                        let q = &self.qbufs[&si];
                        (*alpha, *beta, true, q.0, qweight_groups(w), q.2)
                    }
                    _ => (1.0, 0.0, false, 0, 0, 0.0),
                };
                if let GpuOp::MatMul = op {
                    let bsh = sh(node.input(1)).unwrap_or_default();
                    if bsh.len() > 2 {
                        m = x[x.len() - 2];
                        batch = numel(&x[..x.len() - 2]);
                        batch_a = m * k;
                        batch_b = k * n;
                    }
                }
                let (w_buf, bias_in) = match op {
                    GpuOp::QGemm { .. } => (&self.qbufs[&si].1, node.input(1)),
                    _ => {
                        let w = buf(node.input(1)).ok_or_else(|| kerr(g, s.node, "B has no buffer"))?;
                        (w, if matches!(op, GpuOp::Gemm { .. }) { node.input(2) } else { None })
                    }
                };
                let bias = bias_in.filter(|_| beta != 0.0);
                let (mut bsm, mut bsn) = (0, 0);
                if let Some(c) = bias {
                    let cs = sh(Some(c)).ok_or_else(|| kerr(g, s.node, "C shape unknown"))?;
                    if crate::tensor::broadcast_shapes(&cs, &[m, n]).as_deref() != Some(&[m, n][..]) {
                        return Err(kerr(g, s.node, format!("C of shape {cs:?} does not broadcast to [{m}, {n}]")));
                    }
                    let st = broadcast_strides(&cs, &[m, n]);
                    (bsm, bsn) = (st[0], st[1]);
                }
                let bias_buf = match bias {
                    Some(c) => buf(Some(c)).ok_or_else(|| kerr(g, s.node, "C has no buffer"))?,
                    None => &self.dummy,
                };
                let p = vec![
                    u32c(m)?,
                    u32c(n)?,
                    u32c(k)?,
                    trans_b as u32,
                    fb(alpha),
                    fb(beta),
                    u32c(bsm)?,
                    u32c(bsn)?,
                    u32c(batch_a)?,
                    u32c(batch_b)?,
                    u32c(groups_k)?,
                    bias.is_some() as u32,
                    act.code,
                    fb(act.fa),
                    fb(act.fb),
                    fb(a_scale),
                    // the whole output and K, unsplit (see gemm_split)
                    0,
                    u32c(m)?,
                    0,
                    u32c(n)?,
                    0,
                    0,
                    0,
                    0,
                    u32c(k)?,
                    0,
                    0,
                ];
                let wg = [u32c(n.div_ceil(16))?, u32c(m.div_ceil(16))?, u32c(batch)?];
                if wg.iter().any(|&d| d > 65535) {
                    return Err(too_big());
                }
                let bufs = vec![(1, a_buf), (2, w_buf), (3, bias_buf), (4, y)];
                let family = if mode == w8a8::MODE { w8a8::family(&self.ctx.report, false) } else { "gemm" };
                let job = layout::Job {
                    key: (family, "main", mode),
                    params: p,
                    bufs,
                    aux: None,
                    windows: vec![],
                    groups: wg,
                };
                return gemm_split::split(self, job)?.into_iter().map(|j| self.finish(&node.name, j)).collect();
            }
            GpuOp::Conv { window, group, q } => {
                let (w, w_buf, mode, groups_k, a_scale, bias_in) = match q {
                    Some((qw, ws)) => {
                        let qb = &self.qbufs[&si];
                        (ws.clone(), &qb.1, qb.0, qweight_groups(qw), qb.2, node.input(1))
                    }
                    None => {
                        let w = sh(node.input(1)).ok_or_else(|| kerr(g, s.node, "weight shape unknown"))?;
                        let wb = buf(node.input(1)).ok_or_else(|| kerr(g, s.node, "weight has no buffer"))?;
                        (w, wb, 0, 0, 0.0, node.input(2))
                    }
                };
                let geo = geometry(window, [w[2], w[3]], [x[2], x[3]], false).map_err(|m| kerr(g, s.node, m))?;
                let bias_buf = buf(bias_in);
                let p = [
                    x[0],
                    x[1],
                    x[2],
                    x[3],
                    w[0],
                    geo.out[0],
                    geo.out[1],
                    w[2],
                    w[3],
                    geo.s[0],
                    geo.s[1],
                    geo.pad_begin[0],
                    geo.pad_begin[1],
                    geo.d[0],
                    geo.d[1],
                    *group,
                ]
                .iter()
                .map(|&v| u32c(v))
                .chain([Ok(bias_buf.is_some() as u32), Ok(act.code), Ok(fb(act.fa)), Ok(fb(act.fb))])
                .chain([u32c(groups_k), Ok(fb(a_scale)), Ok(0), Ok(0)])
                .collect::<Result<Vec<u32>>>()?;
                let bufs = vec![(1, a_buf), (2, w_buf), (3, bias_buf.unwrap_or(&self.dummy)), (4, y)];
                let family = if mode == w8a8::MODE { w8a8::family(&self.ctx.report, true) } else { "conv2d" };
                ((family, "main", mode), p, bufs, grid(len))
            }
            GpuOp::Pool { window, max, count_include_pad } => {
                let geo = geometry(window, [window.kernel[0], window.kernel[1]], [x[2], x[3]], true)
                    .map_err(|m| kerr(g, s.node, m))?;
                let p = [
                    x[0] * x[1],
                    x[2],
                    x[3],
                    geo.out[0],
                    geo.out[1],
                    geo.k[0],
                    geo.k[1],
                    geo.s[0],
                    geo.s[1],
                    geo.pad_begin[0],
                    geo.pad_begin[1],
                    geo.d[0],
                    geo.d[1],
                    usize::from(!*max),
                    usize::from(*count_include_pad),
                    x[2] + geo.pad_begin[0] + geo.pad_end[0],
                    x[3] + geo.pad_begin[1] + geo.pad_end[1],
                    0,
                    0,
                    0,
                ]
                .iter()
                .map(|&v| u32c(v))
                .collect::<Result<Vec<u32>>>()?;
                (("pool", "pool2d", 0), p, vec![(1, a_buf), (2, y)], grid(len))
            }
            GpuOp::GlobalPool { max } => {
                let nc = x[0] * x[1];
                let hw = numel(&x[2..]);
                let mut p = vec![u32c(nc)?, u32c(hw)?, 1];
                p.resize(13, 0);
                p.push(u32::from(!*max));
                p.resize(20, 0);
                (("pool", "global_pool", 0), p, vec![(1, a_buf), (2, y)], grid(nc))
            }
            GpuOp::Softmax { axis, legacy, log } => {
                let r = x.len();
                let a = crate::tensor::norm_axis(*axis, r).ok_or_else(|| kerr(g, s.node, "axis out of range"))?;
                let outer = numel(&x[..a]);
                let (l, inner) = if *legacy { (numel(&x[a..]), 1) } else { (x[a], numel(&x[a + 1..])) };
                let p = vec![u32c(outer)?, u32c(l)?, u32c(inner)?, *log as u32];
                (("softmax", "main", 0), p, vec![(1, a_buf), (2, y)], grid(outer * inner))
            }
            _ => unreachable!("layout ops returned above"),
        };
        let job = layout::Job { key, params, bufs, aux: None, windows: vec![], groups };
        Ok(vec![self.finish(&node.name, job)?])
    }

    /// Compiles (or finds) the job's pipeline and builds its uniform and bind group.
    fn finish(&self, label: &str, job: layout::Job<'_>) -> Result<Dispatch> {
        let layout::Job { key, params, bufs, aux, windows, groups } = job;
        let pipeline = self.ctx.pipeline(key)?;
        let mut words = params;
        words.resize(words.len().next_multiple_of(4), 0);
        let uniform = self.ctx.buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&words),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        // Whole buffers up to the binding limit (a slot may be larger than the value it holds
        // when a split GEMM used it), or the job's windows.
        let limit = self.ctx.limits.max_storage_buffer_binding_size;
        entries.extend(bufs.iter().map(|&(i, bf)| {
            let (offset, size) = windows
                .iter()
                .find(|w| w.0 == i)
                .map_or((0, bf.size().min(limit)), |w| (w.1, w.2.min(bf.size() - w.1)));
            let size = std::num::NonZeroU64::new(size);
            wgpu::BindGroupEntry {
                binding: i,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: bf, offset, size }),
            }
        }));
        if let Some((i, bf)) = &aux {
            entries.push(wgpu::BindGroupEntry { binding: *i, resource: bf.as_entire_binding() });
        }
        let bind = self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Ok(Dispatch { pipeline, bind, groups, _aux: aux.map(|a| a.1) })
    }

    /// One run; `prof` (profiling) times every step and gives each dispatch its own pass.
    fn exec(&self, b: &mut Bound, inputs: &[&Tensor], mut prof: Option<&mut profile::Prof>) -> Result<Vec<Tensor>> {
        let g = &*self.graph;
        let dev = &self.ctx.device;
        for (k, t) in inputs.iter().enumerate() {
            if let Some(buf) = &b.inputs[k] {
                let want = gpu_dtype(g, g.inputs[k]);
                let bytes = gpu_bytes(t, want).ok_or_else(|| {
                    Error::input(&g.value(g.inputs[k]).name, format!("must be {want}, got {}", t.dtype()))
                })?;
                if !bytes.is_empty() {
                    self.ctx.queue.write_buffer(buf, 0, bytes);
                }
            }
        }
        let mut fresh = vec![false; g.values.len()];
        let mut enc = dev.create_command_encoder(&Default::default());
        let mut si = 0;
        while si < self.steps.len() {
            if let Kind::Cpu = self.steps[si].kind {
                let t0 = std::time::Instant::now();
                let node = &g.nodes[self.steps[si].node];
                let need: Vec<ValueId> = node
                    .inputs
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|&v| !fresh[v] && self.loc[self.root[v]] != Loc::Host)
                    .filter(|&v| g.values[v].constant.is_none() && !g.inputs.contains(&v))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                // Host-side aliases (a reshape of a CPU result or of an input) get their view.
                for &v in node.inputs.iter().flatten() {
                    if self.root[v] != v && self.loc[self.root[v]] == Loc::Host {
                        b.host[v] = Some(self.host_value(b, inputs, v));
                    }
                }
                let done = std::mem::replace(&mut enc, dev.create_command_encoder(&Default::default()));
                self.read_back(b, done, &need)?;
                need.iter().for_each(|&v| fresh[v] = true);
                let mut outs: Vec<Tensor> =
                    node.outputs.iter().map(|&o| b.host[o].take().unwrap_or_else(Tensor::placeholder)).collect();
                let ins: Vec<Option<&Tensor>> = node
                    .inputs
                    .iter()
                    .map(|i| {
                        i.map(|v| {
                            if let Some(c) = g.values[v].constant.as_deref() {
                                c
                            } else if let Some(k) = g.inputs.iter().position(|&x| x == v) {
                                inputs[k]
                            } else {
                                b.host[v].as_ref().expect("read back above")
                            }
                        })
                    })
                    .collect();
                let r = kernels::eval(&node.op, &ins, &mut outs, &mut b.scratch[si]);
                drop(ins);
                r.map_err(|m| kerr(g, self.steps[si].node, m))?;
                for (k, &o) in node.outputs.iter().enumerate() {
                    let t = std::mem::replace(&mut outs[k], Tensor::placeholder());
                    if let Some(buf) = self.buffer(b, o) {
                        let want = gpu_dtype(g, o);
                        let bytes = gpu_bytes(&t, want).ok_or_else(|| {
                            kerr(g, self.steps[si].node, format!("output {k} is {}, the GPU expects {want}", t.dtype()))
                        })?;
                        if !bytes.is_empty() {
                            self.ctx.queue.write_buffer(buf, 0, bytes);
                        }
                    }
                    fresh[o] = true;
                    b.host[o] = Some(t);
                }
                if let Some(p) = prof.as_deref_mut() {
                    p.cpu_step(si, t0.elapsed());
                }
                si += 1;
                continue;
            }
            if let Some(p) = prof.as_deref_mut() {
                enc = p.gpu_steps(self, b, enc, &mut si)?;
                continue;
            }
            // A run of GPU steps: one compute pass.
            let mut pass = enc.begin_compute_pass(&Default::default());
            while si < self.steps.len() && !matches!(self.steps[si].kind, Kind::Cpu) {
                for d in &b.dispatch[si] {
                    pass.set_pipeline(&d.pipeline);
                    pass.set_bind_group(0, &d.bind, &[]);
                    pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                }
                si += 1;
            }
        }
        let need: Vec<ValueId> = g
            .outputs
            .iter()
            .copied()
            .filter(|&v| !fresh[v] && self.loc[self.root[v]] != Loc::Host)
            .filter(|&v| g.values[v].constant.is_none() && !g.inputs.contains(&v))
            .collect();
        self.read_back(b, enc, &need)?;
        if let Some(e) = self.ctx.take_uncaptured() {
            return Err(Error::Unavailable(format!("wgpu: {e}")));
        }
        Ok(g.outputs.iter().map(|&o| self.host_value(b, inputs, o)).collect())
    }
}

impl Executable for WgpuPlan {
    fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let mut guard = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        let same = guard
            .as_ref()
            .is_some_and(|b| b.key.len() == inputs.len() && b.key.iter().zip(inputs).all(|(k, t)| k == t.shape()));
        if !same {
            *guard = None;
            *guard = Some(self.bind(inputs)?);
        }
        let b = guard.as_mut().expect("bound");
        self.exec(b, inputs, None)
    }

    fn profile(&self, inputs: &[&Tensor]) -> Result<(Vec<Tensor>, Vec<crate::backend::cpu::NodeTime>)> {
        self.profile_run(inputs)
    }
}
