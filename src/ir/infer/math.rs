//! Inference rules for elementwise ops, Gemm and MatMul.

use super::{broadcast, InFact, OutFact, RuleResult};
use crate::ir::op::Op;
use crate::tensor::{DType, Dim};

pub fn rule(op: &Op, inputs: &[Option<InFact>], _n_out: usize) -> RuleResult {
    let inp = |i: usize| inputs.get(i).copied().flatten();
    let shape = |i: usize| inp(i).and_then(|f| f.shape);
    let dtype = |i: usize| inp(i).and_then(|f| f.dtype);
    Ok(Some(match op {
        Op::Unary(_) | Op::Clip => vec![OutFact::new(dtype(0), shape(0).map(<[Dim]>::to_vec))],
        Op::Binary(b) => {
            if let (Some(a), Some(c)) = (shape(0), shape(1)) {
                check_broadcast(a, c)?;
            }
            let dt = if b.is_predicate() { Some(DType::Bool) } else { dtype(0) };
            vec![OutFact::new(dt, broadcast(shape(0), shape(1)))]
        }
        Op::Sum => {
            let mut s = shape(0).map(<[Dim]>::to_vec);
            for i in 1..inputs.len() {
                s = broadcast(s.as_deref(), shape(i));
            }
            vec![OutFact::new(dtype(0), s)]
        }
        Op::Where => {
            let s = broadcast(shape(0), shape(1));
            vec![OutFact::new(dtype(1), broadcast(s.as_deref(), shape(2)))]
        }
        Op::Cast { to, .. } => {
            let mut f = OutFact::new(Some(*to), shape(0).map(<[Dim]>::to_vec));
            if !to.is_float() {
                f.shape_value = inp(0).and_then(|i| i.shape_value).map(<[Dim]>::to_vec);
            }
            vec![f]
        }
        Op::Gemm { trans_a, trans_b, .. } => {
            let s = match (shape(0), shape(1)) {
                (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => {
                    let m = if *trans_a { &a[1] } else { &a[0] };
                    let n = if *trans_b { &b[0] } else { &b[1] };
                    let (ka, kb) = (if *trans_a { &a[0] } else { &a[1] }, if *trans_b { &b[1] } else { &b[0] });
                    if let (Dim::Known(x), Dim::Known(y)) = (ka, kb) {
                        if x != y {
                            return Err(format!("inner dimensions differ: {x} vs {y}"));
                        }
                    }
                    Some(vec![m.clone(), n.clone()])
                }
                (Some(a), _) if a.len() != 2 => return Err(format!("A must be 2-D, has rank {}", a.len())),
                _ => None,
            };
            vec![OutFact::new(dtype(0), s)]
        }
        Op::MatMul => vec![OutFact::new(dtype(0), matmul_shape(shape(0), shape(1))?)],
        _ => return Ok(None),
    }))
}

fn check_broadcast(a: &[Dim], b: &[Dim]) -> Result<(), String> {
    let r = a.len().max(b.len());
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r].known() } else { Some(1) };
        let db = if i + b.len() >= r { b[i + b.len() - r].known() } else { Some(1) };
        if let (Some(x), Some(y)) = (da, db) {
            if x != y && x != 1 && y != 1 {
                return Err(format!("shapes {a:?} and {b:?} do not broadcast"));
            }
        }
    }
    Ok(())
}

fn matmul_shape(a: Option<&[Dim]>, b: Option<&[Dim]>) -> Result<Option<Vec<Dim>>, String> {
    let (Some(a), Some(b)) = (a, b) else { return Ok(None) };
    if a.is_empty() || b.is_empty() {
        return Err("MatMul operands must have rank >= 1".into());
    }
    let a2: Vec<Dim> = if a.len() == 1 { vec![Dim::Known(1), a[0].clone()] } else { a.to_vec() };
    let b2: Vec<Dim> = if b.len() == 1 { vec![b[0].clone(), Dim::Known(1)] } else { b.to_vec() };
    if let (Some(x), Some(y)) = (a2[a2.len() - 1].known(), b2[b2.len() - 2].known()) {
        if x != y {
            return Err(format!("inner dimensions differ: {x} vs {y}"));
        }
    }
    let mut out = crate::tensor::broadcast_dims(&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Ok(Some(out))
}
