//! Folds inference-mode BatchNormalization into the Conv or Gemm that feeds it:
//! `s = scale / sqrt(var + eps)`, weights scaled per output channel by `s`,
//! bias `(b - mean) * s + beta`. One node and one pass over the activations fewer.

use crate::ir::graph::Graph;
use crate::ir::op::Op;
use crate::tensor::Tensor;

pub fn fold_batchnorm(g: &mut Graph) {
    let consumers = g.consumers();
    let producers = g.producers();
    let mut dead = vec![false; g.nodes.len()];
    for n in 0..g.nodes.len() {
        let Op::BatchNorm { epsilon } = g.nodes[n].op else { continue };
        let Some(x) = g.nodes[n].input(0) else { continue };
        let Some(p) = producers[x] else { continue };
        if dead[p] || consumers[x].len() != 1 || g.outputs.contains(&x) {
            continue;
        }
        let params: Option<Vec<Vec<f32>>> = (1..5)
            .map(|i| {
                g.nodes[n].input(i).and_then(|v| g.constant(v)).and_then(|t| t.as_slice::<f32>()).map(<[f32]>::to_vec)
            })
            .collect();
        let Some(params) = params else { continue };
        let (scale, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        let s: Vec<f32> = scale.iter().zip(var).map(|(&sc, &v)| sc / (v + epsilon).sqrt()).collect();
        let folded = match &g.nodes[p].op {
            Op::Conv { .. } => fold_into(g, p, &s, beta, mean, Layout::OutFirst),
            Op::Gemm { trans_b, .. } => {
                let layout = if *trans_b { Layout::OutFirst } else { Layout::OutLast };
                // The new bias already carries Gemm's beta, so beta becomes 1.
                fold_into(g, p, &s, beta, mean, layout).inspect(|_| {
                    if let Op::Gemm { beta, .. } = &mut g.nodes[p].op {
                        *beta = 1.0;
                    }
                })
            }
            _ => None,
        };
        if folded.is_some() {
            let y = g.nodes[n].outputs[0];
            for o in &mut g.nodes[p].outputs {
                if *o == x {
                    *o = y;
                }
            }
            dead[n] = true;
        }
    }
    let mut d = dead.into_iter();
    g.nodes.retain(|_| !d.next().unwrap_or(false));
}

#[derive(Clone, Copy)]
enum Layout {
    /// Output channel is the first axis of the weight (Conv W[M,..], Gemm B^T[N,K]).
    OutFirst,
    /// Output channel is the last axis (Gemm B[K,N]).
    OutLast,
}

/// Rewrites weight (input 1) and bias (input 2) of node `p`. None when the shapes do not fit.
fn fold_into(g: &mut Graph, p: usize, s: &[f32], beta: &[f32], mean: &[f32], layout: Layout) -> Option<()> {
    let c = s.len();
    let w = g.nodes[p].input(1).and_then(|v| g.constant(v))?;
    let wv = w.as_slice::<f32>()?;
    let out_ch = match layout {
        Layout::OutFirst => *w.shape().first()?,
        Layout::OutLast => *w.shape().last()?,
    };
    if out_ch != c || beta.len() != c || mean.len() != c {
        return None;
    }
    // Existing bias must be a per-channel vector (or absent); Gemm's beta scales it.
    let gemm_beta = match g.nodes[p].op {
        Op::Gemm { beta, .. } => beta,
        _ => 1.0,
    };
    let bias: Vec<f32> = match g.nodes[p].input(2) {
        None => vec![0.0; c],
        Some(v) => {
            let t = g.constant(v)?;
            if t.len() != c || t.shape().iter().filter(|&&d| d != 1).count() > 1 {
                return None;
            }
            t.as_slice::<f32>()?.iter().map(|b| b * gemm_beta).collect()
        }
    };
    let inner = wv.len() / c;
    let mut nw = wv.to_vec();
    match layout {
        Layout::OutFirst => nw.chunks_mut(inner).zip(s).for_each(|(row, &k)| row.iter_mut().for_each(|x| *x *= k)),
        Layout::OutLast => nw.chunks_mut(c).for_each(|row| row.iter_mut().zip(s).for_each(|(x, &k)| *x *= k)),
    }
    let nb: Vec<f32> = (0..c).map(|i| (bias[i] - mean[i]) * s[i] + beta[i]).collect();
    let wshape = w.shape().to_vec();
    let wname = format!("{}::bn_folded_weight", g.nodes[p].name);
    let bname = format!("{}::bn_folded_bias", g.nodes[p].name);
    let wid = g.add_constant(wname, Tensor::from_vec(wshape, nw)?);
    let bid = g.add_constant(bname, Tensor::from_vec(vec![c], nb)?);
    let node = &mut g.nodes[p];
    node.inputs[1] = Some(wid);
    if node.inputs.len() < 3 {
        node.inputs.resize(3, None);
    }
    node.inputs[2] = Some(bid);
    Some(())
}
