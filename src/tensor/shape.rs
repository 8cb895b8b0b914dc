//! Shapes whose dimensions may be symbolic (`N`, `height`) and are bound at run time.

use std::fmt;

/// A concrete shape built on the run path (a kernel's output shape): inline up to rank 6, so
/// steady-state runs allocate nothing for it.
pub type Dims = smallvec::SmallVec<[usize; 6]>;

/// Symbols bound by one run's inputs (name, value): a model has a handful, kept inline so
/// checking a run's inputs allocates nothing.
pub type Bindings<'s> = smallvec::SmallVec<[(&'s str, usize); 4]>;

/// One dimension of a declared or inferred shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A dimension known at load time.
    Known(usize),
    /// A named dimension (ONNX `dim_param`), bound to a value by the inputs of each run.
    Sym(String),
    /// A dimension nothing is known about until run time (data-dependent, or unnamed in the file).
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(v) => write!(f, "{v}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A shape with possibly symbolic dimensions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn known(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// All dimensions as numbers, if every one is known.
    pub fn as_known(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::known).collect()
    }

    /// Checks a concrete shape against this one, binding symbols in `bindings`.
    /// Returns a description of the first mismatch.
    pub fn bind<'s>(&'s self, actual: &[usize], bindings: &mut Bindings<'s>) -> Result<(), String> {
        if actual.len() != self.rank() {
            return Err(format!("rank {} given, rank {} expected ({self})", actual.len(), self.rank()));
        }
        for (axis, (want, &got)) in self.0.iter().zip(actual).enumerate() {
            match want {
                Dim::Known(w) if *w != got => {
                    return Err(format!("dimension {axis} is {got}, expected {w} (shape {self})"));
                }
                Dim::Sym(name) => {
                    if let Some(&(_, prev)) = bindings.iter().find(|(n, _)| n == name) {
                        if prev != got {
                            return Err(format!(
                                "dimension {axis} is {got}, but symbol {name} is already bound to {prev}"
                            ));
                        }
                    } else {
                        bindings.push((name, got));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Number of elements of a concrete shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a concrete shape, in elements.
pub fn strides(shape: &[usize]) -> Dims {
    let mut s: Dims = smallvec::smallvec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// ONNX (numpy) multidirectional broadcasting of two concrete shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Dims> {
    let rank = a.len().max(b.len());
    let mut out: Dims = smallvec::smallvec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// Broadcasting of symbolic shapes, for load-time inference. Unknown where it cannot tell.
pub fn broadcast_dims(a: &[Dim], b: &[Dim]) -> Vec<Dim> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank { a[i + a.len() - rank].clone() } else { Dim::Known(1) };
            let db = if i + b.len() >= rank { b[i + b.len() - rank].clone() } else { Dim::Known(1) };
            match (&da, &db) {
                (Dim::Known(1), _) => db,
                (_, Dim::Known(1)) => da,
                _ if da == db => da,
                (Dim::Known(_), _) => da,
                (_, Dim::Known(_)) => db,
                _ => Dim::Unknown,
            }
        })
        .collect()
}

/// Resolves a possibly negative axis against a rank.
pub fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r.max(1)).contains(&a).then_some(a as usize)
}
