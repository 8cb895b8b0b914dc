//! Values crossing between the GPU and the host: read-backs through the bound staging buffers
//! (one submit for the work recorded so far), host copies of values the GPU never held, and the
//! element types GPU buffers hold (f32, or Gather's run-time i32 / i64 indices as uploaded).

use super::{numel, Bound, Loc, WgpuPlan};
use crate::error::{Error, Result};
use crate::ir::{Graph, ValueId};
use crate::tensor::{DType, Tensor};

/// Bytes per element of a GPU-resident value: 8 for i64 (Gather's run-time indices), else 4.
pub(super) fn elem_bytes(g: &Graph, v: ValueId) -> usize {
    if g.values[v].dtype == Some(DType::I64) {
        8
    } else {
        4
    }
}

/// The element type a GPU buffer of `v` holds (f32, or i32 / i64 indices).
pub(super) fn gpu_dtype(g: &Graph, v: ValueId) -> DType {
    match g.values[v].dtype {
        Some(d @ (DType::I64 | DType::I32)) => d,
        _ => DType::F32,
    }
}

/// `t`'s bytes for a GPU buffer of element type `want`, or `None` when `t` is of another type.
pub(super) fn gpu_bytes(t: &Tensor, want: DType) -> Option<&[u8]> {
    match want {
        _ if t.dtype() != want => None,
        DType::I64 => t.as_slice::<i64>().map(bytemuck::cast_slice),
        DType::I32 => t.as_slice::<i32>().map(bytemuck::cast_slice),
        _ => t.as_slice::<f32>().map(bytemuck::cast_slice),
    }
}

impl WgpuPlan {
    /// Copies `vals` from the GPU into `b.host` (one submit, after `enc`'s work).
    pub(super) fn read_back(&self, b: &mut Bound, enc: wgpu::CommandEncoder, vals: &[ValueId]) -> Result<()> {
        let mut enc = enc;
        let mut jobs = Vec::new();
        for &v in vals {
            let n = b.shapes[v].as_ref().map_or(0, |s| numel(s));
            let src = self.buffer(b, v).ok_or_else(|| Error::Unavailable("value not on the GPU".into()))?;
            if n > 0 {
                enc.copy_buffer_to_buffer(src, 0, &b.staging[&v], 0, (n * 4) as u64);
            }
            jobs.push((v, n));
        }
        self.ctx.submit(enc.finish());
        for &(v, n) in &jobs {
            if n > 0 {
                b.staging[&v].slice(..(n * 4) as u64).map_async(wgpu::MapMode::Read, |_| {});
            }
        }
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Unavailable(format!("wgpu: waiting for the GPU: {e}")))?;
        for (v, n) in jobs {
            let shape = b.shapes[v].clone().unwrap_or_default();
            let mut t = b.host[v].take().unwrap_or_else(Tensor::placeholder);
            let dst = t.reuse_f32(&shape);
            if n > 0 {
                let st = &b.staging[&v];
                {
                    let view = st
                        .slice(..(n * 4) as u64)
                        .get_mapped_range()
                        .map_err(|e| Error::Unavailable(format!("wgpu: reading back: {e:?}")))?;
                    dst.copy_from_slice(bytemuck::cast_slice(&view));
                }
                st.unmap();
            }
            b.host[v] = Some(t);
        }
        Ok(())
    }

    /// The host copy of `v` after a run: read back, or (never on the GPU) its constant, graph
    /// input or CPU result, through aliases, in `v`'s shape.
    pub(super) fn host_value(&self, b: &Bound, inputs: &[&Tensor], v: ValueId) -> Tensor {
        let g = &*self.graph;
        let r = self.root[v];
        if self.loc[r] != Loc::Host || r == v {
            if let Some(t) = &b.host[v] {
                return t.clone();
            }
        }
        let mut t = if let Some(c) = g.values[r].constant.as_deref() {
            c.clone()
        } else if let Some(k) = g.inputs.iter().position(|&x| x == r) {
            inputs[k].clone()
        } else {
            b.host[r].clone().unwrap_or_else(|| Tensor::empty(DType::F32))
        };
        if let Some(sh) = &b.shapes[v] {
            t.set_shape(sh);
        }
        t
    }
}
