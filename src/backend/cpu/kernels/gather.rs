//! Gather and GatherElements (negative indices count from the end).

use super::shape_ops::{axis, ints, typed};
use super::{req, KResult};
use crate::ir::Op;
use crate::tensor::{numel, strides, Tensor};

pub fn eval(op: &Op, inputs: &[Option<&Tensor>], out: &mut Tensor) -> KResult {
    let x = req(inputs, 0)?;
    let idx_t = req(inputs, 1)?;
    let idx = ints(idx_t, "indices")?;
    match op {
        Op::Gather { axis: a } => {
            let ax = axis(*a, x.rank())?;
            let d = x.shape()[ax];
            let idx = normalize(&idx, d)?;
            let mut osh = x.shape()[..ax].to_vec();
            osh.extend_from_slice(idx_t.shape());
            osh.extend_from_slice(&x.shape()[ax + 1..]);
            let outer = numel(&x.shape()[..ax]);
            let inner = numel(&x.shape()[ax + 1..]);
            typed!(x, v, T => {
                let o = out.reuse::<T>(&osh);
                let mut pos = 0;
                for b in 0..outer {
                    for &i in &idx {
                        let src = (b * d + i) * inner;
                        o[pos..pos + inner].copy_from_slice(&v[src..src + inner]);
                        pos += inner;
                    }
                }
            });
            Ok(())
        }
        Op::GatherElements { axis: a } => {
            let ax = axis(*a, x.rank())?;
            if idx_t.rank() != x.rank() {
                return Err(format!("indices rank {} differs from data rank {}", idx_t.rank(), x.rank()));
            }
            let ish = idx_t.shape();
            for i in 0..x.rank() {
                if i != ax && ish[i] > x.shape()[i] {
                    return Err(format!("indices shape {ish:?} exceeds data shape {:?}", x.shape()));
                }
            }
            let d = x.shape()[ax];
            let idx = normalize(&idx, d)?;
            let xs = strides(x.shape());
            typed!(x, v, T => {
                let o = out.reuse::<T>(ish);
                // Odometer over the index shape, tracking the data offset without the gathered axis.
                let mut pos = vec![0usize; ish.len()];
                for (k, o) in o.iter_mut().enumerate() {
                    let mut off = idx[k] * xs[ax];
                    for (i, &p) in pos.iter().enumerate() {
                        if i != ax {
                            off += p * xs[i];
                        }
                    }
                    *o = v[off];
                    for i in (0..ish.len()).rev() {
                        pos[i] += 1;
                        if pos[i] < ish[i] {
                            break;
                        }
                        pos[i] = 0;
                    }
                }
            });
            Ok(())
        }
        _ => Err(format!("{} is not a gather op", op.name())),
    }
}

fn normalize(idx: &[i64], d: usize) -> Result<Vec<usize>, String> {
    idx.iter()
        .map(|&i| {
            let j = if i < 0 { i + d as i64 } else { i };
            if (0..d as i64).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!("index {i} is out of range for dimension {d}"))
            }
        })
        .collect()
}
