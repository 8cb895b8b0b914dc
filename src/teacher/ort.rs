//! ONNX Runtime as a reference/teacher engine (feature `ort`).
//!
//! The shared library is loaded at run time from `ORT_DYLIB_PATH` (scripts/setup.sh records
//! the one shipped in the onnxruntime wheel), once per process. Sessions run single-threaded
//! with basic graph optimisations only, so results are deterministic and close to the graph as
//! written.

use super::{order_inputs, panic_message, Engine};
use crate::error::{Error, Result};
use crate::tensor::{DType, Data, Tensor};
use ::ort::session::builder::GraphOptimizationLevel;
use ::ort::session::Session;
use ::ort::value::{DynValue, PrimitiveTensorElementType, TensorElementType, ValueType};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The process-wide ONNX Runtime environment, or why there is none.
fn environment() -> Result<&'static ::ort::environment::Environment> {
    static ENV: OnceLock<std::result::Result<::ort::environment::Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let path = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| "ORT_DYLIB_PATH is not set (scripts/setup.sh writes .venv/ort_dylib_path)".to_string())?;
        if !Path::new(&path).exists() {
            return Err(format!("ORT_DYLIB_PATH={} does not exist", Path::new(&path).display()));
        }
        catch_unwind(|| {
            ::ort::init_from(&path).map_err(|e| e.to_string())?.with_name("alembic").build().map_err(|e| e.to_string())
        })
        .unwrap_or_else(|p| Err(format!("loading panicked: {}", panic_message(&*p))))
    });
    env.as_ref().map_err(|m| Error::Unavailable(format!("ONNX Runtime not available: {m}")))
}

/// Whether ONNX Runtime can be loaded in this process (`ORT_DYLIB_PATH` set and usable).
pub fn available() -> Result<()> {
    environment().map(|_| ())
}

/// A model loaded by ONNX Runtime.
pub struct OrtEngine {
    // `Session::run` takes `&mut self`.
    session: Mutex<Session>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl OrtEngine {
    /// Loads an ONNX file with single-threaded intra- and inter-op execution.
    pub fn load(path: impl AsRef<Path>) -> Result<OrtEngine> {
        OrtEngine::load_with_threads(path, 1)
    }

    /// As [`OrtEngine::load`] with `threads` intra-op threads (results may then vary in the last
    /// bits between runs).
    pub fn load_with_threads(path: impl AsRef<Path>, threads: usize) -> Result<OrtEngine> {
        let path = path.as_ref();
        let env = environment()?;
        let built = catch_unwind(AssertUnwindSafe(|| -> std::result::Result<Session, String> {
            Session::builder(env)
                .map_err(|e| e.to_string())?
                .with_intra_threads(threads.max(1))
                .map_err(|e| e.to_string())?
                .with_inter_threads(1)
                .map_err(|e| e.to_string())?
                .with_optimization_level(GraphOptimizationLevel::Level1)
                .map_err(|e| e.to_string())?
                .commit_from_file(path)
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))));
        let session =
            built.map_err(|m| Error::import(path.display().to_string(), format!("onnxruntime: {}", one_line(&m))))?;
        let inputs = session.inputs().iter().map(|o| o.name().to_string()).collect();
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        Ok(OrtEngine { session: Mutex::new(session), inputs, outputs })
    }
}

impl Engine for OrtEngine {
    fn name(&self) -> &str {
        "onnxruntime"
    }

    fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let ordered = order_inputs(&self.inputs, inputs)?;
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(ordered.len());
        for (name, t) in self.inputs.iter().zip(ordered) {
            values.push((name.clone(), to_ort(t)?));
        }
        let mut session = self.session.lock().map_err(|_| unavailable("session lock poisoned"))?;
        let result = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<(String, Tensor)>> {
            let outs = session.run(values).map_err(|e| unavailable(&format!("run failed: {e}")))?;
            self.outputs
                .iter()
                .map(|n| {
                    let v = outs.get(n.as_str()).ok_or_else(|| unavailable(&format!("output '{n}' missing")))?;
                    Ok((n.clone(), from_ort(v)?))
                })
                .collect()
        }));
        result.unwrap_or_else(|p| Err(unavailable(&format!("run panicked: {}", panic_message(&*p)))))
    }

    fn input_names(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output_names(&self) -> Vec<String> {
        self.outputs.clone()
    }
}

fn unavailable(m: &str) -> Error {
    Error::Unavailable(format!("onnxruntime: {}", one_line(m)))
}

fn one_line(m: &str) -> String {
    m.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Copies an Alembic tensor into an ONNX Runtime value.
pub fn to_ort(t: &Tensor) -> Result<DynValue> {
    let shape = t.shape().to_vec();
    macro_rules! build {
        ($v:expr) => {
            ::ort::value::Tensor::from_array((shape.clone(), $v.clone())).map(|x| x.into_dyn())
        };
    }
    let v = match t.data() {
        Data::F32(v) => build!(v),
        Data::F16(v) => build!(v),
        Data::F64(v) => build!(v),
        Data::BF16(v) => build!(v),
        Data::I64(v) => build!(v),
        Data::I32(v) => build!(v),
        Data::I16(v) => build!(v),
        Data::I8(v) => build!(v),
        Data::U64(v) => build!(v),
        Data::U32(v) => build!(v),
        Data::U16(v) => build!(v),
        Data::U8(v) => build!(v),
        Data::Bool(v) => build!(v),
        Data::F8E4M3FN(_) | Data::F8E4M3FNUZ(_) | Data::F8E5M2(_) | Data::F8E5M2FNUZ(_) => {
            return Err(unavailable(&format!("{} tensors are not passed to onnxruntime", t.dtype())))
        }
    };
    v.map_err(|e| unavailable(&format!("cannot build a tensor of shape {shape:?}: {e}")))
}

/// Copies an ONNX Runtime tensor value into an Alembic tensor.
pub fn from_ort(v: &DynValue) -> Result<Tensor> {
    fn copy<T: PrimitiveTensorElementType + crate::tensor::Element>(v: &DynValue) -> Result<Tensor> {
        let (shape, data) = v.try_extract_tensor::<T>().map_err(|e| unavailable(&e.to_string()))?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        Tensor::from_vec(shape, data.to_vec()).ok_or_else(|| unavailable("output length does not match its shape"))
    }
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(unavailable(&format!("output is a {other:?}, not a tensor"))),
    };
    match dtype_of(ty) {
        Some(DType::F32) => copy::<f32>(v),
        Some(DType::F16) => copy::<half::f16>(v),
        Some(DType::F64) => copy::<f64>(v),
        Some(DType::I64) => copy::<i64>(v),
        Some(DType::I32) => copy::<i32>(v),
        Some(DType::I8) => copy::<i8>(v),
        Some(DType::U8) => copy::<u8>(v),
        Some(DType::I16) => copy::<i16>(v),
        Some(DType::U16) => copy::<u16>(v),
        Some(DType::U32) => copy::<u32>(v),
        Some(DType::U64) => copy::<u64>(v),
        Some(DType::BF16) => copy::<half::bf16>(v),
        Some(DType::Bool) => copy::<bool>(v),
        Some(DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ) | None => {
            Err(unavailable(&format!("output type {ty:?} has no Alembic equivalent")))
        }
    }
}

fn dtype_of(ty: TensorElementType) -> Option<DType> {
    Some(match ty {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Int16 => DType::I16,
        TensorElementType::Uint16 => DType::U16,
        TensorElementType::Uint32 => DType::U32,
        TensorElementType::Uint64 => DType::U64,
        TensorElementType::Bfloat16 => DType::BF16,
        TensorElementType::Bool => DType::Bool,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_unavailable_not_a_panic() {
        // Whatever the environment, either ORT loads or the error says why.
        match available() {
            Ok(()) => {
                let t = Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
                assert_eq!(from_ort(&to_ort(&t).unwrap()).unwrap(), t);
                let b = Tensor::from_vec(vec![3], vec![true, false, true]).unwrap();
                assert_eq!(from_ort(&to_ort(&b).unwrap()).unwrap(), b);
            }
            Err(e) => assert!(e.to_string().starts_with("ONNX Runtime not available"), "{e}"),
        }
    }
}
