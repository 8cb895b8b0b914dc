//! Low-rank adapters (LoRA) over the student's Gemm, MatMul and Conv weights.
//!
//! The base weight `W` stays frozen; the layer runs with `W_eff = W + s·B·A` (in `W`'s own
//! layout), `A [R, in]` small and seeded, `B [out, R]` zero so the first forward is the base
//! model exactly, `s = alpha / R`. Only `A` and `B` are trainable parameters (so the optimizer
//! keeps moments for them alone). Gradients reuse the layers' own VJPs: the tape feeds
//! `W_eff` as the weight value, backward yields `G = dL/dW_eff` there (Gemm's `transB` and
//! `alpha`, MatMul batching and Conv all handled by their VJPs), and the chain rule through
//! `W_eff = W + s·B·A` gives `dB = s·G·Aᵀ`, `dA = s·Bᵀ·G` (with `G` seen as `[out, in]`).
//! Export merges `W + s·B·A` into the initializer: the same graph, no adapter nodes.
//!
//! Nothing here touches the inference path: the engine's kernels see an ordinary weight.

use crate::backend::cpu::kernels::linalg::sgemm;
use crate::error::{Error, Result};
use crate::ir::{Graph, Op, ValueId};
use crate::tensor::{DType, Tensor};

/// One adapted weight.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// The node the weight feeds.
    pub layer: String,
    /// The initializer it adapts (the frozen base).
    pub weight: String,
    /// The weight's value in the student graph (fed `W_eff` by the tape).
    pub value: ValueId,
    /// The frozen base weight.
    pub base: Tensor,
    pub rank: usize,
    /// `alpha / rank`.
    pub scale: f32,
    /// Output features (rows of `W` seen as `[out, in]`).
    pub out: usize,
    /// Input features (columns of `W` seen as `[out, in]`; `in/group · kh · kw` for Conv).
    pub inp: usize,
    /// `W` is stored `[out, in]` (Gemm with transB, Conv) rather than `[in, out]` (Gemm
    /// without transB, MatMul's second operand).
    pub out_in: bool,
    /// Indices of `A` and `B` among the student's parameters.
    pub a: usize,
    pub b: usize,
}

/// A layer LoRA can adapt: (node name, weight value, out, in, out_in).
pub type Site = (String, ValueId, usize, usize, bool);

/// Where a node's constant f32 weight sits and how it is laid out, if LoRA can adapt it.
fn site(g: &Graph, n: &crate::ir::Node) -> Option<Site> {
    let w = n.input(1)?;
    let t = g.values[w].constant.as_ref().filter(|t| t.dtype() == DType::F32)?;
    let s = t.shape();
    let (out, inp, out_in) = match &n.op {
        Op::Gemm { trans_b, .. } if s.len() == 2 => {
            if *trans_b {
                (s[0], s[1], true)
            } else {
                (s[1], s[0], false)
            }
        }
        Op::MatMul if s.len() == 2 => (s[1], s[0], false),
        Op::Conv { .. } if s.len() >= 3 => (s[0], s[1..].iter().product(), true),
        _ => return None,
    };
    Some((n.name.clone(), w, out, inp, out_in))
}

/// The layers to adapt: every Gemm / MatMul / Conv with a constant f32 weight, or those named
/// (by node or by weight initializer).
pub fn select(g: &Graph, targets: &[String]) -> Result<Vec<Site>> {
    let all: Vec<Site> = g.nodes.iter().filter_map(|n| site(g, n)).collect();
    if targets.is_empty() {
        if all.is_empty() {
            return Err(Error::input("lora", "the student has no Gemm, MatMul or Conv with an f32 weight"));
        }
        return Ok(all);
    }
    let mut chosen: Vec<Site> = Vec::new();
    for name in targets {
        let hit = all.iter().find(|s| &s.0 == name || &g.values[s.1].name == name).ok_or_else(|| {
            Error::input(name, "no Gemm, MatMul or Conv layer (or its f32 weight) of this name for LoRA")
        })?;
        if !chosen.iter().any(|c| c.1 == hit.1) {
            chosen.push(hit.clone());
        }
    }
    Ok(chosen)
}

/// splitmix64 over a string: a stable per-weight seed.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0x10A_5EED_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3))
}

/// `A [rank, inp]`: uniform in ±1/√inp (Kaiming-uniform with a = √5, as in the LoRA paper's
/// code), seeded by the weight's name so a run is reproducible.
pub fn init_a(weight: &str, rank: usize, inp: usize) -> Vec<f32> {
    let mut s = seed_of(weight);
    let bound = 1.0 / (inp.max(1) as f32).sqrt();
    (0..rank * inp)
        .map(|_| {
            let u = (super::trainer::splitmix(&mut s) >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            (2.0 * u - 1.0) * bound
        })
        .collect()
}

impl Adapter {
    /// Strides of an `[out, in]` view of a tensor in `W`'s layout.
    fn oi_strides(&self) -> (isize, isize) {
        if self.out_in {
            (self.inp as isize, 1)
        } else {
            (1, self.out as isize)
        }
    }

    /// `W + s·B·A` in `W`'s layout and shape.
    pub fn effective(&self, a: &[f32], b: &[f32]) -> Tensor {
        let mut w = self.base.as_slice::<f32>().expect("f32 base").to_vec();
        let (r, o, i) = (self.rank, self.out, self.inp);
        if self.out_in {
            // W[o, i] += s · B[o, r] A[r, i]
            sgemm(o, r, i, self.scale, b, (r as isize, 1), a, (i as isize, 1), 1.0, &mut w, i as isize);
        } else {
            // W[i, o] += s · Aᵀ[i, r] Bᵀ[r, o]
            sgemm(i, r, o, self.scale, a, (1, i as isize), b, (1, r as isize), 1.0, &mut w, o as isize);
        }
        Tensor::from_vec(self.base.shape().to_vec(), w).expect("base shape")
    }

    /// `(dA, dB)` from `G = dL/dW_eff` (in `W`'s layout).
    pub fn grads(&self, g: &[f32], a: &[f32], b: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (r, o, i) = (self.rank, self.out, self.inp);
        let gs = self.oi_strides();
        let mut da = vec![0f32; r * i];
        let mut db = vec![0f32; o * r];
        // dB [o, r] = s · G[o, i] Aᵀ[i, r]
        sgemm(o, i, r, self.scale, g, gs, a, (1, i as isize), 0.0, &mut db, r as isize);
        // dA [r, i] = s · Bᵀ[r, o] G[o, i]
        sgemm(r, o, i, self.scale, b, (1, r as isize), g, gs, 0.0, &mut da, i as isize);
        (da, db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(out_in: bool) -> Adapter {
        let (o, i, r) = (3, 4, 2);
        let base: Vec<f32> = (0..o * i).map(|k| k as f32 * 0.1).collect();
        let shape = if out_in { vec![o, i] } else { vec![i, o] };
        Adapter {
            layer: "l".into(),
            weight: "w".into(),
            value: 0,
            base: Tensor::from_vec(shape, base).unwrap(),
            rank: r,
            scale: 0.5,
            out: o,
            inp: i,
            out_in,
            a: 0,
            b: 1,
        }
    }

    #[test]
    fn effective_weight_is_base_plus_scaled_ba_in_either_layout() {
        let a: Vec<f32> = (0..8).map(|k| k as f32 - 3.0).collect();
        let b: Vec<f32> = (0..6).map(|k| 0.5 * k as f32 + 1.0).collect();
        for out_in in [true, false] {
            let ad = adapter(out_in);
            let w = ad.effective(&a, &b);
            let (w, base) = (w.as_slice::<f32>().unwrap(), ad.base.as_slice::<f32>().unwrap());
            for o in 0..3 {
                for i in 0..4 {
                    let d: f32 = (0..2).map(|r| b[o * 2 + r] * a[r * 4 + i]).sum::<f32>() * 0.5;
                    let k = if out_in { o * 4 + i } else { i * 3 + o };
                    assert!((w[k] - base[k] - d).abs() < 1e-5, "out_in={out_in} ({o},{i})");
                }
            }
        }
    }

    #[test]
    fn fresh_b_leaves_the_base_weight_bit_for_bit() {
        let ad = adapter(true);
        let a = init_a("w", 2, 4);
        assert!(a.iter().all(|v| v.abs() <= 0.5) && a.iter().any(|&v| v != 0.0));
        assert_eq!(a, init_a("w", 2, 4), "seeded");
        assert_eq!(ad.effective(&a, &[0.0; 6]), ad.base);
    }
}
