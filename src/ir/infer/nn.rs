//! Inference rules for convolutions, pooling, normalisations, softmax and Resize: batch and
//! channel dims flow symbolically, spatial dims are computed where they are known.

use super::{InFact, OutFact, RuleResult};
use crate::backend::cpu::kernels::{conv_transpose, resize, window};
use crate::ir::op::{AspectPolicy, Op, Window};
use crate::tensor::{norm_axis, DType, Dim};

pub fn rule(op: &Op, inputs: &[Option<InFact>], n_out: usize) -> RuleResult {
    let inp = |i: usize| inputs.get(i).copied().flatten();
    let shape = |i: usize| inp(i).and_then(|f| f.shape);
    let dtype = inp(0).and_then(|f| f.dtype);
    let same = || OutFact::new(dtype, shape(0).map(<[Dim]>::to_vec));
    let mut facts = match op {
        Op::Conv { window, .. } => {
            let s = match (shape(0), shape(1)) {
                (Some(x), Some(w)) => {
                    check_rank(x, w)?;
                    let ks: Option<Vec<usize>> = w[2..].iter().map(Dim::known).collect();
                    let mut out = vec![x[0].clone(), w[0].clone()];
                    out.extend(spatial(window, &x[2..], ks.as_deref())?);
                    Some(out)
                }
                (Some(x), None) if !x.is_empty() => {
                    Some(std::iter::once(x[0].clone()).chain(vec![Dim::Unknown; x.len() - 1]).collect())
                }
                _ => None,
            };
            vec![OutFact::new(dtype, s)]
        }
        Op::ConvTranspose(a) => {
            let s = match (shape(0), shape(1)) {
                (Some(x), Some(w)) => {
                    check_rank(x, w)?;
                    let m = w[1].known().map_or(Dim::Unknown, |v| Dim::Known(v * a.group));
                    let mut out = vec![x[0].clone(), m];
                    let sp: Option<Vec<usize>> = x[2..].iter().map(Dim::known).collect();
                    let ks: Option<Vec<usize>> = w[2..].iter().map(Dim::known).collect();
                    match (sp, ks) {
                        (Some(sp), Some(ks)) => {
                            let (o, _) = conv_transpose::geometry(a, &sp, &ks)?;
                            out.extend(o.into_iter().map(Dim::Known));
                        }
                        _ => out.extend(vec![Dim::Unknown; x.len() - 2]),
                    }
                    Some(out)
                }
                _ => None,
            };
            vec![OutFact::new(dtype, s)]
        }
        Op::MaxPool { window, .. } | Op::AveragePool { window, .. } => {
            let s = match shape(0) {
                Some(x) if x.len() < 3 => return Err(format!("input must have rank >= 3, has {}", x.len())),
                Some(x) => {
                    let mut out = x[..2].to_vec();
                    out.extend(spatial(window, &x[2..], Some(&window.kernel))?);
                    Some(out)
                }
                None => None,
            };
            let mut v = vec![OutFact::new(dtype, s.clone())];
            if n_out > 1 {
                v.push(OutFact::new(Some(DType::I64), s));
            }
            v
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let s = shape(0)
                .map(|x| x.iter().enumerate().map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) }).collect());
            vec![OutFact::new(dtype, s)]
        }
        Op::BatchNorm { .. } | Op::Lrn { .. } | Op::Softmax { .. } | Op::LogSoftmax { .. } => vec![same()],
        Op::LayerNorm { axis, .. } => {
            let stats = match shape(0) {
                Some(x) => {
                    let ax = norm_axis(*axis, x.len())
                        .ok_or_else(|| format!("axis {axis} is out of range for rank {}", x.len()))?;
                    Some(
                        x.iter()
                            .enumerate()
                            .map(|(i, d)| if i < ax { d.clone() } else { Dim::Known(1) })
                            .collect::<Vec<_>>(),
                    )
                }
                None => None,
            };
            let mut v = vec![same()];
            for _ in 1..n_out.min(3) {
                v.push(OutFact::new(Some(DType::F32), stats.clone()));
            }
            v
        }
        Op::Resize(a) => {
            let s = shape(0).map(|x| resize_shape(a, x, inp(2), inp(3)));
            vec![OutFact::new(dtype, s)]
        }
        _ => return Ok(None),
    };
    facts.resize(n_out, OutFact::default());
    Ok(Some(facts))
}

fn check_rank(x: &[Dim], w: &[Dim]) -> Result<(), String> {
    if x.len() < 3 || x.len() != w.len() {
        return Err(format!("X of rank {} and W of rank {} must have the same rank >= 3", x.len(), w.len()));
    }
    Ok(())
}

/// Output spatial dims; Unknown where the input dim or the kernel is unknown.
fn spatial(w: &Window, x: &[Dim], kernel: Option<&[usize]>) -> Result<Vec<Dim>, String> {
    let n = x.len();
    let Some(k) = kernel.filter(|k| k.len() == n) else { return Ok(vec![Dim::Unknown; n]) };
    let get = |v: &[usize], i: usize, d: usize| v.get(i).copied().unwrap_or(d);
    x.iter()
        .enumerate()
        .map(|(i, d)| match d.known() {
            Some(v) => {
                let (pb, pe) = (get(&w.pads, i, 0), get(&w.pads, n + i, 0));
                let (o, _, _) = window::out_dim(
                    w.auto_pad,
                    v,
                    k[i],
                    get(&w.strides, i, 1),
                    get(&w.dilations, i, 1),
                    pb,
                    pe,
                    w.ceil_mode,
                )?;
                Ok(Dim::Known(o))
            }
            None => Ok(Dim::Unknown),
        })
        .collect()
}

/// Resize's output: untouched axes keep their (possibly symbolic) dims.
fn resize_shape(a: &crate::ir::ResizeAttrs, x: &[Dim], scales: Option<InFact>, sizes: Option<InFact>) -> Vec<Dim> {
    let unknown = vec![Dim::Unknown; x.len()];
    let r = x.len();
    let axes: Option<Vec<usize>> = match &a.axes {
        None => Some((0..r).collect()),
        Some(v) => v.iter().map(|&ax| norm_axis(ax, r)).collect(),
    };
    let Some(axes) = axes else { return unknown };
    // Symbolic sizes (e.g. from Shape) with the stretch policy are used as they are.
    if let Some(sz) = sizes.and_then(|f| f.shape_value) {
        if a.aspect == AspectPolicy::Stretch && sz.len() == axes.len() {
            let mut out = x.to_vec();
            for (&ax, d) in axes.iter().zip(sz) {
                out[ax] = d.clone();
            }
            return out;
        }
    }
    let sizes_v = sizes.and_then(|f| f.int_values()).filter(|v| !v.is_empty());
    let scales_v: Option<Vec<f32>> = scales
        .and_then(|f| f.constant)
        .filter(|t| !t.is_empty())
        .map(|t| t.to_f64_vec().iter().map(|&v| v as f32).collect());
    let mut out = x.to_vec();
    if a.aspect == AspectPolicy::Stretch {
        // Each axis on its own: a unit scale keeps even a symbolic dim.
        for (k, &ax) in axes.iter().enumerate() {
            out[ax] = match (&sizes_v, &scales_v) {
                (Some(sz), _) => sz.get(k).map_or(Dim::Unknown, |&v| Dim::Known(v.max(0) as usize)),
                (None, Some(sc)) => match (sc.get(k), x[ax].known()) {
                    (Some(&1.0), _) => x[ax].clone(),
                    (Some(&s), Some(v)) => Dim::Known((s as f64 * v as f64) as usize),
                    _ => Dim::Unknown,
                },
                _ => Dim::Unknown,
            };
        }
        return out;
    }
    let known: Option<Vec<usize>> = axes.iter().map(|&ax| x[ax].known()).collect();
    let Some(known) = known else { return unknown };
    let mut xs_known: Vec<usize> = vec![1; r];
    for (&ax, &v) in axes.iter().zip(&known) {
        xs_known[ax] = v;
    }
    match resize::plan(a, &xs_known, scales_v.as_deref(), sizes_v.as_deref()) {
        Ok((o, _, _)) => {
            for &ax in &axes {
                out[ax] = Dim::Known(o[ax]);
            }
            out
        }
        Err(_) => unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::AutoPad;

    fn fact(shape: &[Dim]) -> InFact<'_> {
        InFact { dtype: Some(DType::F32), shape: Some(shape), constant: None, shape_value: None }
    }

    #[test]
    fn conv_keeps_symbolic_batch() {
        let x = [Dim::Sym("N".into()), Dim::Known(3), Dim::Known(224), Dim::Known(224)];
        let w = [Dim::Known(16), Dim::Known(3), Dim::Known(3), Dim::Known(3)];
        let window = Window {
            kernel: vec![],
            strides: vec![2, 2],
            pads: vec![1; 4],
            dilations: vec![],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        let op = Op::Conv { window: window.clone(), group: 1 };
        let r = rule(&op, &[Some(fact(&x)), Some(fact(&w))], 1).unwrap().unwrap();
        let want = [Dim::Sym("N".into()), Dim::Known(16), Dim::Known(112), Dim::Known(112)];
        assert_eq!(r[0].shape.as_deref(), Some(&want[..]));
        let op = Op::MaxPool { window: Window { kernel: vec![3, 3], ..window }, storage_order: 0 };
        let r = rule(&op, &[Some(fact(&x))], 2).unwrap().unwrap();
        let want = [Dim::Sym("N".into()), Dim::Known(3), Dim::Known(112), Dim::Known(112)];
        assert_eq!(r[0].shape.as_deref(), Some(&want[..]));
        assert_eq!(r[1].dtype, Some(DType::I64));
    }
}
