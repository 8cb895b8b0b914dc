//! Inference rules for shape and data-movement ops, reductions and ArgMax/ArgMin.
//!
//! Besides symbolic shapes these rules carry `shape_value`: the elements of small 1-D (or
//! scalar) integer values computed from shapes, so exporter subgraphs such as
//! Shape -> Gather -> Unsqueeze -> Concat -> Reshape give Reshape a symbolic target like [N, 32].
//! Negative entries of constants (Reshape's -1) have no `Dim` form and read as `Dim::Unknown`.

use super::{InFact, OutFact, RuleResult};
use crate::backend::cpu::kernels::{shape_ops, slice_pad};
use crate::ir::op::Op;
use crate::tensor::{DType, Dim};

/// Largest shape value tracked, in elements.
const MAX_SHAPE_VALUE: usize = 64;

type Dims = Vec<Dim>;

pub fn rule(op: &Op, inputs: &[Option<InFact>], n_out: usize) -> RuleResult {
    let inp = |i: usize| inputs.get(i).copied().flatten();
    let shape = |i: usize| inp(i).and_then(|f| f.shape);
    let dtype = |i: usize| inp(i).and_then(|f| f.dtype);
    let ints = |i: usize| inp(i).and_then(|f| f.int_values());
    let same = |s: Option<Dims>| vec![OutFact::new(dtype(0), s)];
    Ok(Some(match op {
        Op::Identity => {
            let mut f = OutFact::new(dtype(0), shape(0).map(<[Dim]>::to_vec));
            f.shape_value = inp(0).and_then(sv_of);
            vec![f]
        }
        Op::Dropout => {
            let s = shape(0).map(<[Dim]>::to_vec);
            let mut v = vec![OutFact::new(dtype(0), s.clone())];
            v.extend((1..n_out).map(|_| OutFact::new(Some(DType::Bool), s.clone())));
            v
        }
        Op::Flatten { axis } => match shape(0) {
            None => same(None),
            Some(d) => {
                let r = d.len() as i64;
                let a = if *axis < 0 { axis + r } else { *axis };
                if !(0..=r).contains(&a) {
                    return Err(format!("axis {axis} is out of range for rank {r}"));
                }
                let a = a as usize;
                same(Some(vec![product(&d[..a]), product(&d[a..])]))
            }
        },
        Op::Reshape { allowzero } => {
            let s = reshape_shape(shape(0), inp(1), *allowzero)?;
            let mut f = OutFact::new(dtype(0), s);
            f.shape_value = inp(0).and_then(|f| f.shape_value).map(<[Dim]>::to_vec);
            vec![f]
        }
        Op::Transpose { perm } => same(shape(0).map(|d| {
            if perm.is_empty() {
                d.iter().rev().cloned().collect()
            } else {
                perm.iter().map(|&p| d.get(p).cloned().unwrap_or(Dim::Unknown)).collect()
            }
        })),
        Op::Squeeze => {
            let s = match (shape(0), inp(1)) {
                (Some(d), None) => {
                    if d.iter().all(|x| x.known().is_some()) {
                        Some(d.iter().filter(|x| **x != Dim::Known(1)).cloned().collect())
                    } else {
                        None // a symbolic dim might be 1
                    }
                }
                (Some(d), Some(_)) => match ints(1) {
                    Some(axes) => {
                        let mut drop = vec![false; d.len()];
                        for a in axes {
                            let i = norm(a, d.len())?;
                            if let Some(v) = d[i].known().filter(|&v| v != 1) {
                                return Err(format!("cannot squeeze axis {a} of size {v}"));
                            }
                            drop[i] = true;
                        }
                        Some(d.iter().zip(&drop).filter(|(_, &x)| !x).map(|(d, _)| d.clone()).collect())
                    }
                    None => None,
                },
                _ => None,
            };
            let mut f = OutFact::new(dtype(0), s);
            f.shape_value = inp(0).and_then(|f| f.shape_value).map(<[Dim]>::to_vec);
            vec![f]
        }
        Op::Unsqueeze => {
            let s = match (shape(0), ints(1)) {
                (Some(d), Some(axes)) => {
                    let r = d.len() + axes.len();
                    let mut ones = vec![false; r];
                    for &a in &axes {
                        ones[norm(a, r)?] = true;
                    }
                    let mut it = d.iter();
                    Some(
                        ones.iter()
                            .map(|&o| if o { Dim::Known(1) } else { it.next().cloned().unwrap_or(Dim::Unknown) })
                            .collect(),
                    )
                }
                _ => None,
            };
            let mut f = OutFact::new(dtype(0), s);
            f.shape_value = inp(0).and_then(sv_of);
            vec![f]
        }
        Op::Concat { axis } => {
            let all: Vec<InFact> = inputs.iter().flatten().copied().collect();
            let mut f = OutFact::new(all.first().and_then(|f| f.dtype), concat_shape(&all, *axis)?);
            if all.iter().all(|f| f.rank() == Some(1)) {
                let parts: Option<Vec<Dims>> = all.iter().map(|f| sv_of(*f)).collect();
                f.shape_value = parts.map(|p| p.concat()).filter(|v| v.len() <= MAX_SHAPE_VALUE);
            }
            vec![f]
        }
        Op::Split { axis, outputs } => {
            let n = if *outputs == 0 { n_out } else { *outputs };
            let Some(d) = shape(0) else { return Ok(Some(vec![OutFact::new(dtype(0), None); n_out])) };
            let ax = norm(*axis, d.len())?;
            let sizes: Option<Vec<Dim>> = match (inp(1), ints(1), &d[ax]) {
                (Some(_), Some(s), _) => Some(s.iter().map(|&v| Dim::Known(v.max(0) as usize)).collect()),
                (Some(_), None, _) => None,
                (None, _, Dim::Known(k)) => {
                    Some(shape_ops::split_sizes(*k, None, n)?.into_iter().map(Dim::Known).collect())
                }
                (None, _, x) if n == 1 => Some(vec![x.clone()]),
                _ => None,
            };
            (0..n_out)
                .map(|k| {
                    let mut s = d.to_vec();
                    s[ax] = sizes.as_ref().and_then(|v| v.get(k).cloned()).unwrap_or(Dim::Unknown);
                    OutFact::new(dtype(0), Some(s))
                })
                .collect()
        }
        Op::Slice => return slice_rule(inputs),
        Op::Gather { axis } => {
            let s = match (shape(0), shape(1)) {
                (Some(d), Some(ish)) => {
                    let ax = norm(*axis, d.len())?;
                    Some([&d[..ax], ish, &d[ax + 1..]].concat())
                }
                _ => None,
            };
            let mut f = OutFact::new(dtype(0), s);
            if let (Some(sv), Some(idx), Some(r)) = (inp(0).and_then(sv_of), ints(1), shape(0).map(<[Dim]>::len)) {
                if r == 1 && shape(1).is_some_and(|s| s.len() <= 1) {
                    let n = sv.len() as i64;
                    f.shape_value = idx
                        .iter()
                        .map(|&i| {
                            let j = if i < 0 { i + n } else { i };
                            (0..n).contains(&j).then(|| sv[j as usize].clone())
                        })
                        .collect();
                }
            }
            vec![f]
        }
        Op::GatherElements { .. } => vec![OutFact::new(dtype(0), shape(1).map(<[Dim]>::to_vec))],
        Op::Pad { .. } => {
            let s = shape(0).map(|d| {
                let r = d.len();
                let axes: Option<Vec<usize>> = match inp(3) {
                    None => Some((0..r).collect()),
                    Some(_) => ints(3).and_then(|a| a.iter().map(|&v| crate::tensor::norm_axis(v, r)).collect()),
                };
                match (ints(1), axes) {
                    (Some(p), Some(axes)) if p.len() == 2 * axes.len() => {
                        let mut out = d.to_vec();
                        for (k, &a) in axes.iter().enumerate() {
                            out[a] = add(&d[a], p[k] + p[k + axes.len()]);
                        }
                        out
                    }
                    _ => vec![Dim::Unknown; r],
                }
            });
            same(s)
        }
        Op::Shape { start, end } => {
            let mut f = OutFact::new(Some(DType::I64), None);
            if let Some(d) = shape(0) {
                let (b, e) = shape_ops::shape_range(d.len(), *start, *end);
                f.shape = Some(vec![Dim::Known(e - b)]);
                f.shape_value = Some(d[b..e].to_vec()).filter(|v| v.len() <= MAX_SHAPE_VALUE);
            }
            vec![f]
        }
        Op::Size => {
            let mut f = OutFact::new(Some(DType::I64), Some(vec![]));
            f.shape_value = shape(0).map(|d| vec![product(d)]);
            vec![f]
        }
        Op::ConstantOfShape { value } => {
            vec![OutFact::new(Some(value.dtype()), target_dims(inp(0)))]
        }
        Op::Expand => {
            let s = match (shape(0), target_dims(inp(1))) {
                (Some(a), Some(b)) => Some(crate::tensor::broadcast_dims(a, &b)),
                _ => None,
            };
            same(s)
        }
        Op::Tile => {
            let s = shape(0).map(|d| match ints(1) {
                Some(r) if r.len() == d.len() => d
                    .iter()
                    .zip(&r)
                    .map(|(x, &r)| match (x, r) {
                        (_, 1) => x.clone(),
                        (_, 0) => Dim::Known(0),
                        (Dim::Known(v), r) => Dim::Known(v * r.max(0) as usize),
                        _ => Dim::Unknown,
                    })
                    .collect(),
                _ => vec![Dim::Unknown; d.len()],
            });
            same(s)
        }
        Op::Range => same(Some(vec![Dim::Unknown])),
        Op::Reduce { keepdims, noop_with_empty_axes, .. } => {
            let s = shape(0).and_then(|d| {
                let axes = match inp(1) {
                    None => Some(vec![]),
                    Some(_) => ints(1),
                };
                match axes {
                    Some(a) if a.is_empty() && *noop_with_empty_axes => Some(d.to_vec()),
                    Some(a) => {
                        let mut red = vec![a.is_empty(); d.len()];
                        for v in a {
                            red[norm(v, d.len()).ok()?] = true;
                        }
                        Some(reduced(d, &red, *keepdims))
                    }
                    None if *keepdims => Some(vec![Dim::Unknown; d.len()]),
                    None => None,
                }
            });
            same(s)
        }
        Op::ArgMax { axis, keepdims, .. } | Op::ArgMin { axis, keepdims, .. } => {
            let s = match shape(0) {
                Some(d) if !d.is_empty() => {
                    let mut red = vec![false; d.len()];
                    red[norm(*axis, d.len())?] = true;
                    Some(reduced(d, &red, *keepdims))
                }
                Some(_) => Some(vec![]),
                None => None,
            };
            vec![OutFact::new(Some(DType::I64), s)]
        }
        _ => return Ok(None),
    }))
}

fn norm(a: i64, rank: usize) -> Result<usize, String> {
    crate::tensor::norm_axis(a, rank).ok_or_else(|| format!("axis {a} is out of range for rank {rank}"))
}

/// Elements of a shape-like input: its shape value, or a small integer constant (negative
/// entries read as Unknown).
fn sv_of(f: InFact) -> Option<Dims> {
    if let Some(sv) = f.shape_value {
        return Some(sv.to_vec());
    }
    let c = f.constant?;
    if c.rank() > 1 || c.len() > MAX_SHAPE_VALUE {
        return None;
    }
    Some(c.to_i64_vec()?.iter().map(|&v| if v >= 0 { Dim::Known(v as usize) } else { Dim::Unknown }).collect())
}

/// Target shape given by a shape input (Expand, ConstantOfShape): its elements if known, else
/// as many Unknown dims as its length.
fn target_dims(f: Option<InFact>) -> Option<Dims> {
    let f = f?;
    sv_of(f).or_else(|| match f.shape {
        Some([Dim::Known(n)]) => Some(vec![Dim::Unknown; *n]),
        _ => None,
    })
}

/// Product of dims: known when all are, the one symbol when the rest multiply to 1.
fn product(d: &[Dim]) -> Dim {
    let known: usize = d.iter().filter_map(Dim::known).product();
    let other: Vec<&Dim> = d.iter().filter(|x| x.known().is_none()).collect();
    match other.as_slice() {
        _ if d.contains(&Dim::Known(0)) => Dim::Known(0),
        [] => Dim::Known(known),
        [s @ Dim::Sym(_)] if known == 1 => (*s).clone(),
        _ => Dim::Unknown,
    }
}

/// `d + delta` (padding), symbolic only when delta is 0.
fn add(d: &Dim, delta: i64) -> Dim {
    match d {
        _ if delta == 0 => d.clone(),
        Dim::Known(v) => Dim::Known((*v as i64 + delta).max(0) as usize),
        _ => Dim::Unknown,
    }
}

fn reduced(d: &[Dim], red: &[bool], keepdims: bool) -> Dims {
    d.iter()
        .zip(red)
        .filter_map(|(x, &r)| {
            if !r {
                Some(x.clone())
            } else if keepdims {
                Some(Dim::Known(1))
            } else {
                None
            }
        })
        .collect()
}

/// One entry of a Reshape target.
enum Entry {
    Dim(Dim),
    /// -1, or an element whose value is not known (it can only be what makes the count match).
    Infer,
    /// 0 without allowzero: the input's dim at this position.
    Copy,
}

fn reshape_shape(input: Option<&[Dim]>, target: Option<InFact>, allowzero: bool) -> Result<Option<Dims>, String> {
    let Some(t) = target else { return Ok(None) };
    let entries: Vec<Entry> = if let Some(c) = t.constant {
        let Some(v) = c.to_i64_vec() else { return Ok(None) };
        v.iter()
            .map(|&x| match x {
                -1 => Ok(Entry::Infer),
                0 if !allowzero => Ok(Entry::Copy),
                x if x >= 0 => Ok(Entry::Dim(Dim::Known(x as usize))),
                x => Err(format!("shape entry {x} is invalid")),
            })
            .collect::<Result<_, _>>()?
    } else if let Some(sv) = t.shape_value {
        sv.iter()
            .map(|x| match x {
                Dim::Known(0) if !allowzero => Entry::Copy,
                Dim::Unknown => Entry::Infer,
                d => Entry::Dim(d.clone()),
            })
            .collect()
    } else {
        return Ok(match t.shape {
            Some([Dim::Known(n)]) => Some(vec![Dim::Unknown; *n]),
            _ => None,
        });
    };
    let mut out: Dims = Vec::with_capacity(entries.len());
    let mut infer = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        out.push(match e {
            Entry::Dim(d) => d.clone(),
            Entry::Copy => match input {
                Some(s) => s.get(i).cloned().ok_or_else(|| format!("shape entry 0 at {i} has no input dim"))?,
                None => Dim::Unknown,
            },
            Entry::Infer => {
                infer.push(i);
                Dim::Unknown
            }
        });
    }
    if let (Some(input), [i]) = (input, infer.as_slice()) {
        let others: Dims = out.iter().enumerate().filter(|(k, _)| k != i).map(|(_, d)| d.clone()).collect();
        out[*i] = divide(input, &others)?;
    } else if let (Some(input), true) = (input, infer.is_empty()) {
        let (a, b) = (product(input), product(&out));
        if let (Some(x), Some(y)) = (a.known(), b.known()) {
            if x != y {
                return Err(format!("cannot reshape {} elements to {} elements", x, y));
            }
        }
    }
    Ok(Some(out))
}

/// product(num) / product(den) with symbols cancelled; Unknown when it cannot tell.
fn divide(num: &[Dim], den: &[Dim]) -> Result<Dim, String> {
    if num.contains(&Dim::Unknown) || den.contains(&Dim::Unknown) {
        return Ok(Dim::Unknown);
    }
    let mut syms: Vec<&Dim> = num.iter().filter(|d| matches!(d, Dim::Sym(_))).collect();
    for d in den.iter().filter(|d| matches!(d, Dim::Sym(_))) {
        match syms.iter().position(|s| *s == d) {
            Some(p) => {
                syms.remove(p);
            }
            None => return Ok(Dim::Unknown),
        }
    }
    let n: usize = num.iter().filter_map(Dim::known).product();
    let m: usize = den.iter().filter_map(Dim::known).product();
    if m == 0 {
        return Ok(Dim::Unknown);
    }
    match syms.as_slice() {
        [] if n.is_multiple_of(m) => Ok(Dim::Known(n / m)),
        [] => Err(format!("cannot infer -1: {n} elements do not divide by {m}")),
        [s] if n == m => Ok((*s).clone()),
        _ => Ok(Dim::Unknown),
    }
}

fn concat_shape(all: &[InFact], axis: i64) -> Result<Option<Dims>, String> {
    let shapes: Option<Vec<&[Dim]>> = all.iter().map(|f| f.shape).collect();
    let Some(shapes) = shapes else {
        // Rank (and off-axis dims) from any known input; the axis dim is unknown.
        return Ok(all.iter().find_map(|f| f.shape).map(|s| {
            let mut s = s.to_vec();
            if let Ok(a) = norm(axis, s.len()) {
                s[a] = Dim::Unknown;
            }
            s
        }));
    };
    let Some(first) = shapes.first() else { return Ok(None) };
    let r = first.len();
    let ax = norm(axis, r)?;
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let col: Vec<&Dim> = shapes.iter().map(|s| s.get(i).unwrap_or(&Dim::Unknown)).collect();
        if shapes.iter().any(|s| s.len() != r) {
            return Err("inputs differ in rank".into());
        }
        out.push(if i == ax {
            let nonzero: Vec<&&Dim> = col.iter().filter(|d| ***d != Dim::Known(0)).collect();
            if col.iter().all(|d| d.known().is_some()) {
                Dim::Known(col.iter().filter_map(|d| d.known()).sum())
            } else if nonzero.len() == 1 {
                (**nonzero[0]).clone()
            } else {
                Dim::Unknown
            }
        } else {
            col.iter()
                .find(|d| d.known().is_some())
                .or_else(|| col.iter().find(|d| matches!(d, Dim::Sym(_))))
                .map_or(Dim::Unknown, |d| (*d).clone())
        });
    }
    Ok(Some(out))
}

fn slice_rule(inputs: &[Option<InFact>]) -> RuleResult {
    let inp = |i: usize| inputs.get(i).copied().flatten();
    let Some(x) = inp(0) else { return Ok(None) };
    let mut f = OutFact::new(x.dtype, None);
    let Some(d) = x.shape else { return Ok(Some(vec![f])) };
    let known = |i: usize| -> Option<Option<Vec<i64>>> {
        match inp(i) {
            None => Some(None),
            Some(v) => v.int_values().map(Some),
        }
    };
    let params = match (inp(1).and_then(|v| v.int_values()), inp(2).and_then(|v| v.int_values()), known(3), known(4)) {
        (Some(s), Some(e), Some(a), Some(st)) => {
            Some(slice_pad::slice_params(d.len(), &s, &e, a.as_deref(), st.as_deref())?)
        }
        _ => None,
    };
    let Some(params) = params else {
        // Which axes are sliced is known only with constant axes.
        let mut s = d.to_vec();
        match inp(3).and_then(|v| v.int_values()) {
            Some(axes) => {
                for a in axes {
                    s[norm(a, d.len())?] = Dim::Unknown;
                }
            }
            None => s.iter_mut().for_each(|x| *x = Dim::Unknown),
        }
        f.shape = Some(s);
        return Ok(Some(vec![f]));
    };
    let mut s = d.to_vec();
    for &(a, start, end, step) in &params {
        s[a] = match &d[a] {
            Dim::Known(n) => Dim::Known(slice_pad::slice_axis(*n, start, end, step).2),
            // A full slice keeps a symbolic dim.
            other if start == 0 && step == 1 && end >= i32::MAX as i64 => other.clone(),
            _ => Dim::Unknown,
        };
    }
    f.shape = Some(s);
    if let (Some(sv), 1) = (sv_of(x), d.len()) {
        if let Some(&(_, start, end, step)) = params.first() {
            let (b, step, n) = slice_pad::slice_axis(sv.len(), start, end, step);
            f.shape_value = Some((0..n as i64).map(|k| sv[(b + k * step) as usize].clone()).collect());
        } else {
            f.shape_value = Some(sv);
        }
    }
    Ok(Some(vec![f]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn sym(s: &str) -> Dim {
        Dim::Sym(s.into())
    }
    fn fact<'a>(shape: &'a [Dim], sv: Option<&'a [Dim]>, c: Option<&'a Tensor>) -> InFact<'a> {
        InFact {
            dtype: Some(if sv.is_some() || c.is_some() { DType::I64 } else { DType::F32 }),
            shape: Some(shape),
            constant: c,
            shape_value: sv,
        }
    }

    #[test]
    fn shape_gather_concat_reshape() {
        let x = [sym("N"), Dim::Known(32), Dim::Known(1), Dim::Known(1)];
        let sh = rule(&Op::Shape { start: 0, end: None }, &[Some(fact(&x, None, None))], 1).unwrap().unwrap();
        let sv = sh[0].shape_value.clone().unwrap();
        let s4 = [Dim::Known(4)];
        let zero = Tensor::scalar(0i64);
        let g =
            rule(&Op::Gather { axis: 0 }, &[Some(fact(&s4, Some(&sv), None)), Some(fact(&[], None, Some(&zero)))], 1)
                .unwrap()
                .unwrap();
        assert_eq!(g[0].shape_value, Some(vec![sym("N")]));
        let gsv = g[0].shape_value.clone().unwrap();
        let axes = Tensor::from_vec(vec![1], vec![0i64]).unwrap();
        let u = rule(
            &Op::Unsqueeze,
            &[Some(fact(&[], Some(&gsv), None)), Some(fact(&[Dim::Known(1)], None, Some(&axes)))],
            1,
        )
        .unwrap()
        .unwrap();
        let usv = u[0].shape_value.clone().unwrap();
        let m1 = Tensor::from_vec(vec![1], vec![-1i64]).unwrap();
        let one = [Dim::Known(1)];
        let c =
            rule(&Op::Concat { axis: 0 }, &[Some(fact(&one, Some(&usv), None)), Some(fact(&one, None, Some(&m1)))], 1)
                .unwrap()
                .unwrap();
        let csv = c[0].shape_value.clone().unwrap();
        assert_eq!(csv, vec![sym("N"), Dim::Unknown]);
        let two = [Dim::Known(2)];
        let r = rule(
            &Op::Reshape { allowzero: false },
            &[Some(fact(&x, None, None)), Some(fact(&two, Some(&csv), None))],
            1,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r[0].shape, Some(vec![sym("N"), Dim::Known(32)]));
    }

    #[test]
    fn flatten_and_reduce_symbolic() {
        let x = [sym("N"), Dim::Known(3), Dim::Known(4)];
        let f = rule(&Op::Flatten { axis: 1 }, &[Some(fact(&x, None, None))], 1).unwrap().unwrap();
        assert_eq!(f[0].shape, Some(vec![sym("N"), Dim::Known(12)]));
        let axes = Tensor::from_vec(vec![1], vec![-1i64]).unwrap();
        let op = Op::Reduce { kind: crate::ir::ReduceKind::Mean, keepdims: false, noop_with_empty_axes: false };
        let r = rule(&op, &[Some(fact(&x, None, None)), Some(fact(&[Dim::Known(1)], None, Some(&axes)))], 1)
            .unwrap()
            .unwrap();
        assert_eq!(r[0].shape, Some(vec![sym("N"), Dim::Known(3)]));
    }

    /// The exporter pattern end to end through `infer_graph`, including the kernel fallback.
    #[test]
    fn graph_shape_subgraph() {
        use crate::ir::{Graph, Node, Value};
        use crate::tensor::Shape;
        let mut g = Graph::default();
        let mut xv = Value::new("x");
        xv.dtype = Some(DType::F32);
        xv.shape = Some(Shape(vec![sym("N"), Dim::Known(8), Dim::Known(2), Dim::Known(2)]));
        let x = g.add_value(xv);
        g.inputs.push(x);
        let zero = g.add_constant("zero", Tensor::scalar(0i64));
        let axes = g.add_constant("axes", Tensor::from_vec(vec![1], vec![0i64]).unwrap());
        let m1 = g.add_constant("m1", Tensor::from_vec(vec![1], vec![-1i64]).unwrap());
        let node = |g: &mut Graph, op: Op, inputs: Vec<usize>| {
            let o = g.add_value(Value::new(format!("v{}", g.values.len())));
            g.nodes.push(Node {
                name: op.name().into(),
                op,
                inputs: inputs.into_iter().map(Some).collect(),
                outputs: vec![o],
            });
            o
        };
        let s = node(&mut g, Op::Shape { start: 0, end: None }, vec![x]);
        let n = node(&mut g, Op::Gather { axis: 0 }, vec![s, zero]);
        let u = node(&mut g, Op::Unsqueeze, vec![n, axes]);
        let c = node(&mut g, Op::Concat { axis: 0 }, vec![u, m1]);
        let r = node(&mut g, Op::Reshape { allowzero: false }, vec![x, c]);
        let t = node(&mut g, Op::Transpose { perm: vec![1, 0] }, vec![r]);
        g.outputs.push(t);
        super::super::infer_graph(&mut g).unwrap();
        assert_eq!(g.values[r].shape, Some(Shape(vec![sym("N"), Dim::Known(32)])));
        assert_eq!(g.values[t].shape, Some(Shape(vec![Dim::Known(32), sym("N")])));
        assert_eq!(g.values[c].shape_value, Some(vec![sym("N"), Dim::Unknown]));
    }
}
