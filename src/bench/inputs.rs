//! Bench inputs: the model's declared inputs, bound to concrete shapes per batch size, filled
//! with seeded random data of the declared type or read from files.

use crate::error::{Error, Result};
use crate::onnx::pb;
use crate::tensor::{numel, DType, Dim, Shape, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A graph input as the ONNX file declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    pub name: String,
    pub dtype: DType,
    /// `None` when the file declares no shape.
    pub shape: Option<Shape>,
}

/// The graph inputs that are not initializers, read from the file alone (so inputs can be made
/// for backends even when Alembic's importer rejects the model).
pub fn model_inputs(path: &Path) -> Result<Vec<InputDecl>> {
    let proto = crate::onnx::read_model_proto(path)?;
    let what = path.display().to_string();
    let g = proto.graph.as_ref().ok_or_else(|| Error::import(&what, "no graph"))?;
    let mut out = Vec::new();
    for vi in g.input.iter().filter(|vi| !g.initializer.iter().any(|i| i.name == vi.name)) {
        let Some(pb::type_proto::Value::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(Error::import(&what, format!("input '{}' is not a tensor", vi.name)));
        };
        let dtype = DType::from_onnx(tt.elem_type).ok_or_else(|| {
            Error::import(&what, format!("input '{}' has element type code {}, not supported", vi.name, tt.elem_type))
        })?;
        let shape = tt.shape.as_ref().map(|s| {
            Shape(
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                            Dim::Known(*v as usize)
                        }
                        Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                            Dim::Sym(p.clone())
                        }
                        _ => Dim::Unknown,
                    })
                    .collect(),
            )
        });
        out.push(InputDecl { name: vi.name.clone(), dtype, shape });
    }
    Ok(out)
}

/// How to build the inputs: `--input-shape` and `--input` options.
#[derive(Clone, Debug, Default)]
pub struct InputOptions {
    /// Full shapes by input name, or a single value by symbol name (`N=8`, `height=48`).
    pub shapes: Vec<(String, Vec<usize>)>,
    /// Tensors read from files, by input name.
    pub files: Vec<(String, Tensor)>,
    pub seed: u64,
}

/// Parses `NAME=1x3x48x192` (also `NAME=1,3,48,192`).
pub fn parse_shape_spec(spec: &str) -> std::result::Result<(String, Vec<usize>), String> {
    let (name, dims) = spec.split_once('=').ok_or_else(|| format!("'{spec}': expected NAME=1x3x48x192"))?;
    let dims: std::result::Result<Vec<usize>, _> =
        dims.split(['x', 'X', ',']).filter(|d| !d.trim().is_empty()).map(|d| d.trim().parse::<usize>()).collect();
    let dims = dims.map_err(|_| format!("'{spec}': dimensions must be non-negative integers"))?;
    Ok((name.to_string(), dims))
}

/// Concrete inputs for one batch size, or `Ok(Err(reason))` when the model cannot take that
/// batch (a fixed first dimension). `batch: None` keeps the shapes `--input-shape` or the
/// defaults give. Returns the inputs and the batch they hold (first dimension of the first input).
#[allow(clippy::type_complexity)]
pub fn make_inputs(
    decls: &[InputDecl],
    opts: &InputOptions,
    batch: Option<usize>,
) -> Result<std::result::Result<(Vec<(String, Tensor)>, usize), String>> {
    for (name, _) in &opts.files {
        if !decls.iter().any(|d| &d.name == name) {
            return Err(unknown_input(name, decls));
        }
    }
    // Symbol bindings given by name.
    let mut symbols: HashMap<&str, usize> = HashMap::new();
    for (name, dims) in &opts.shapes {
        if !decls.iter().any(|d| &d.name == name) {
            let is_symbol =
                decls.iter().any(|d| d.shape.as_ref().is_some_and(|s| s.0.contains(&Dim::Sym(name.clone()))));
            if !is_symbol || dims.len() != 1 {
                return Err(unknown_input(name, decls));
            }
            symbols.insert(name, dims[0]);
        }
    }
    let mut out = Vec::new();
    for (k, d) in decls.iter().enumerate() {
        let declared = d.shape.as_ref();
        let sweep = batch.filter(|_| declared.is_none_or(|s| s.rank() > 0));
        if let (Some(b), Some(Dim::Known(fixed))) = (sweep, declared.and_then(|s| s.0.first())) {
            if *fixed != b {
                return Ok(Err(format!("input '{}' has a fixed batch dimension of {fixed}", d.name)));
            }
        }
        let tensor = if let Some((_, t)) = opts.files.iter().find(|(n, _)| n == &d.name) {
            if t.dtype() != d.dtype {
                return Err(Error::input(&d.name, format!("file holds {}, the model takes {}", t.dtype(), d.dtype)));
            }
            match sweep {
                Some(b) if t.rank() > 0 && t.shape()[0] != b => repeat_rows(t, b)
                    .ok_or_else(|| Error::input(&d.name, "cannot repeat an empty file tensor to fill the batch"))?,
                _ => t.clone(),
            }
        } else {
            let mut shape = match opts.shapes.iter().find(|(n, _)| n == &d.name) {
                Some((_, dims)) => {
                    if let Some(s) = declared {
                        if s.rank() != dims.len() {
                            return Err(Error::input(
                                &d.name,
                                format!("--input-shape gives rank {}, the model declares {s}", dims.len()),
                            ));
                        }
                        if let Some(axis) = s.0.iter().zip(dims).position(|(d, &g)| d.known().is_some_and(|k| k != g)) {
                            return Err(Error::input(
                                &d.name,
                                format!(
                                    "--input-shape gives {} for dimension {axis}, the model declares {s}",
                                    dims[axis]
                                ),
                            ));
                        }
                    }
                    dims.clone()
                }
                None => match declared {
                    Some(s) => {
                        s.0.iter()
                            .map(|dim| match dim {
                                Dim::Known(v) => *v,
                                Dim::Sym(name) => symbols.get(name.as_str()).copied().unwrap_or(1),
                                Dim::Unknown => 1,
                            })
                            .collect()
                    }
                    None => return Err(Error::input(&d.name, "the model declares no shape: give --input-shape")),
                },
            };
            if let (Some(b), Some(first)) = (sweep, shape.first_mut()) {
                *first = b;
            }
            random_tensor(d.dtype, &shape, opts.seed.wrapping_add(k as u64))
        };
        out.push((d.name.clone(), tensor));
    }
    let held = out.first().and_then(|(_, t)| t.shape().first().copied()).unwrap_or(1);
    Ok(Ok((out, batch.unwrap_or(held))))
}

fn unknown_input(name: &str, decls: &[InputDecl]) -> Error {
    let names: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
    Error::input(name, format!("the model has no such input or dimension symbol (inputs: {})", names.join(", ")))
}

/// Rows of `t` (along axis 0) repeated cyclically to `n` rows.
fn repeat_rows(t: &Tensor, n: usize) -> Option<Tensor> {
    let rows = t.shape()[0];
    if rows == 0 {
        return None;
    }
    let row = t.len() / rows;
    let mut shape = t.shape().to_vec();
    shape[0] = n;
    macro_rules! rep {
        ($v:expr) => {{
            let v: Vec<_> = (0..n).flat_map(|r| $v[(r % rows) * row..(r % rows + 1) * row].iter().copied()).collect();
            Tensor::from_vec(shape, v)
        }};
    }
    crate::dispatch_data!(t.data(), v => rep!(v))
}

/// SplitMix64: a tiny seeded generator, so inputs are reproducible without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// Seeded random data of a type: floats uniform in [-1, 1); integers in [0, 4) so they are
/// valid indices for small axes; u8/i8 over their whole range; bools fair.
pub fn random_tensor(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n = numel(shape);
    let mut r = SplitMix(seed);
    let s = shape.to_vec();
    let t = match dtype {
        DType::F32 => Tensor::from_vec(s, (0..n).map(|_| r.unit() as f32).collect::<Vec<_>>()),
        DType::F64 => Tensor::from_vec(s, (0..n).map(|_| r.unit()).collect::<Vec<_>>()),
        DType::F16 => Tensor::from_vec(s, (0..n).map(|_| half::f16::from_f64(r.unit())).collect::<Vec<_>>()),
        DType::I64 => Tensor::from_vec(s, (0..n).map(|_| (r.next() % 4) as i64).collect::<Vec<_>>()),
        DType::I32 => Tensor::from_vec(s, (0..n).map(|_| (r.next() % 4) as i32).collect::<Vec<_>>()),
        DType::I8 => Tensor::from_vec(s, (0..n).map(|_| r.next() as i8).collect::<Vec<_>>()),
        DType::U8 => Tensor::from_vec(s, (0..n).map(|_| r.next() as u8).collect::<Vec<_>>()),
        DType::BF16 => Tensor::from_vec(s, (0..n).map(|_| half::bf16::from_f64(r.unit())).collect::<Vec<_>>()),
        DType::F8E4M3FN => {
            Tensor::from_vec(s, (0..n).map(|_| crate::tensor::F8E4M3FN::from_f64(r.unit(), true)).collect::<Vec<_>>())
        }
        DType::F8E4M3FNUZ => {
            Tensor::from_vec(s, (0..n).map(|_| crate::tensor::F8E4M3FNUZ::from_f64(r.unit(), true)).collect::<Vec<_>>())
        }
        DType::F8E5M2 => {
            Tensor::from_vec(s, (0..n).map(|_| crate::tensor::F8E5M2::from_f64(r.unit(), true)).collect::<Vec<_>>())
        }
        DType::F8E5M2FNUZ => {
            Tensor::from_vec(s, (0..n).map(|_| crate::tensor::F8E5M2FNUZ::from_f64(r.unit(), true)).collect::<Vec<_>>())
        }
        DType::I16 => Tensor::from_vec(s, (0..n).map(|_| (r.next() % 4) as i16).collect::<Vec<_>>()),
        DType::U16 => Tensor::from_vec(s, (0..n).map(|_| (r.next() % 4) as u16).collect::<Vec<_>>()),
        DType::U32 => Tensor::from_vec(s, (0..n).map(|_| (r.next() % 4) as u32).collect::<Vec<_>>()),
        DType::U64 => Tensor::from_vec(s, (0..n).map(|_| r.next() % 4).collect::<Vec<_>>()),
        DType::Bool => Tensor::from_vec(s, (0..n).map(|_| r.next() & 1 == 1).collect::<Vec<_>>()),
    };
    t.expect("length matches shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, dims: Vec<Dim>) -> InputDecl {
        InputDecl { name: name.into(), dtype: DType::F32, shape: Some(Shape(dims)) }
    }

    #[test]
    fn binds_batch_and_symbols() {
        let d = [decl("x", vec![Dim::Sym("N".into()), Dim::Known(3), Dim::Sym("h".into())])];
        let opts = InputOptions { shapes: vec![("h".into(), vec![5])], ..Default::default() };
        let (ins, b) = make_inputs(&d, &opts, Some(8)).unwrap().unwrap();
        assert_eq!((ins[0].1.shape(), b), (&[8, 3, 5][..], 8));
        let (ins, b) = make_inputs(&d, &Default::default(), None).unwrap().unwrap();
        assert_eq!((ins[0].1.shape(), b), (&[1, 3, 1][..], 1));
    }

    #[test]
    fn fixed_batch_is_unsupported_not_an_error() {
        let d = [decl("x", vec![Dim::Known(1), Dim::Known(4)])];
        assert!(make_inputs(&d, &Default::default(), Some(8)).unwrap().is_err());
        assert!(make_inputs(&d, &Default::default(), Some(1)).unwrap().is_ok());
    }

    #[test]
    fn seeded_and_repeated() {
        let a = random_tensor(DType::F32, &[2, 3], 7);
        assert_eq!(a, random_tensor(DType::F32, &[2, 3], 7));
        assert_ne!(a, random_tensor(DType::F32, &[2, 3], 8));
        let r = repeat_rows(&a, 5).unwrap();
        assert_eq!(r.shape(), &[5, 3]);
        assert_eq!(r.as_slice::<f32>().unwrap()[6..9], a.as_slice::<f32>().unwrap()[0..3]);
    }

    #[test]
    fn rejects_shapes_against_fixed_dims() {
        let d = [decl("x", vec![Dim::Sym("N".into()), Dim::Known(3)])];
        let bad = InputOptions { shapes: vec![("x".into(), vec![2, 4])], ..Default::default() };
        assert!(make_inputs(&d, &bad, None).is_err());
        let good = InputOptions { shapes: vec![("x".into(), vec![2, 3])], ..Default::default() };
        assert_eq!(make_inputs(&d, &good, None).unwrap().unwrap().1, 2);
    }

    #[test]
    fn parses_shapes() {
        assert_eq!(parse_shape_spec("x=1x3x48x192").unwrap(), ("x".into(), vec![1, 3, 48, 192]));
        assert!(parse_shape_spec("x=1xa").is_err());
    }
}
