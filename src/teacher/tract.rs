//! tract (pure-Rust ONNX runtime) as a reference engine.
//!
//! tract optimises a model for fixed input facts, and symbolic dims (a batch `N`) do not always
//! survive its optimiser, so the imported model is kept as loaded and concretised per distinct
//! set of input types and shapes; the optimised plans are cached by that key.

use super::{order_inputs, panic_message, Engine};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoTValue, TValue, TVec,
    Tensor as TractTensor, TypedRunnableModel,
};

type Key = Vec<(DType, Vec<usize>)>;

/// A model loaded by tract.
pub struct TractEngine {
    model: InferenceModel,
    inputs: Vec<String>,
    outputs: Vec<String>,
    plans: Mutex<HashMap<Key, Arc<TypedRunnableModel>>>,
}

impl TractEngine {
    /// Loads an ONNX file (external data resolved beside it). Fails with [`Error::Import`] when
    /// tract cannot parse it; unsupported operators may only show at the first run.
    pub fn load(path: impl AsRef<Path>) -> Result<TractEngine> {
        let path = path.as_ref();
        let loaded = catch_unwind(|| tract_onnx::onnx().model_for_path(path).map_err(|e| format!("{e:#}")))
            .unwrap_or_else(|p| Err(format!("tract panicked: {}", panic_message(&*p))));
        let model =
            loaded.map_err(|m| Error::import(path.display().to_string(), format!("tract: {}", one_line(&m))))?;
        let names = |outlets: &[tract_onnx::prelude::OutletId], label: bool| -> Vec<String> {
            outlets
                .iter()
                .map(|o| {
                    let l = if label { model.outlet_label(*o) } else { None };
                    l.unwrap_or(model.node(o.node).name.as_str()).to_string()
                })
                .collect()
        };
        let inputs = names(model.input_outlets().unwrap_or(&[]), false);
        let outputs = names(model.output_outlets().unwrap_or(&[]), true);
        Ok(TractEngine { model, inputs, outputs, plans: Mutex::new(HashMap::new()) })
    }

    /// The optimised plan for these inputs, built on first use.
    fn plan(&self, inputs: &[&Tensor]) -> Result<Arc<TypedRunnableModel>> {
        let key: Key = inputs.iter().map(|t| (t.dtype(), t.shape().to_vec())).collect();
        if let Some(p) = self.plans.lock().map_err(|_| unavailable("plan cache poisoned"))?.get(&key) {
            return Ok(p.clone());
        }
        let mut model = self.model.clone();
        let built = catch_unwind(AssertUnwindSafe(|| -> std::result::Result<_, String> {
            for (i, (dt, shape)) in key.iter().enumerate() {
                let fact = InferenceFact::dt_shape(datum_type(*dt), shape.iter().copied());
                model.set_input_fact(i, fact).map_err(|e| format!("{e:#}"))?;
            }
            let typed = model.into_optimized().map_err(|e| format!("{e:#}"))?;
            tract_onnx::prelude::IntoRunnable::into_runnable(typed).map_err(|e| format!("{e:#}"))
        }))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))));
        let plan = built.map_err(|m| unavailable(&format!("cannot optimise the model: {m}")))?;
        self.plans.lock().map_err(|_| unavailable("plan cache poisoned"))?.insert(key, plan.clone());
        Ok(plan)
    }
}

impl Engine for TractEngine {
    fn name(&self) -> &str {
        "tract"
    }

    fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let ordered = order_inputs(&self.inputs, inputs)?;
        let plan = self.plan(&ordered)?;
        let values: TVec<TValue> =
            ordered.iter().map(|t| to_tract(t).map(|t| t.into_tvalue())).collect::<Result<_>>()?;
        let outs = catch_unwind(AssertUnwindSafe(|| plan.run(values).map_err(|e| format!("{e:#}"))))
            .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))))
            .map_err(|m| unavailable(&format!("run failed: {m}")))?;
        if outs.len() != self.outputs.len() {
            return Err(unavailable(&format!("{} outputs, the model declares {}", outs.len(), self.outputs.len())));
        }
        self.outputs.iter().zip(outs.iter()).map(|(n, t)| Ok((n.clone(), from_tract(t)?))).collect()
    }

    fn input_names(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output_names(&self) -> Vec<String> {
        self.outputs.clone()
    }
}

fn unavailable(m: &str) -> Error {
    Error::Unavailable(format!("tract: {}", one_line(m)))
}

/// tract's error chains span lines; reports want one.
fn one_line(m: &str) -> String {
    m.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn datum_type(dt: DType) -> DatumType {
    match dt {
        DType::F32 => DatumType::F32,
        DType::F16 => DatumType::F16,
        DType::F64 => DatumType::F64,
        DType::I64 => DatumType::I64,
        DType::I32 => DatumType::I32,
        DType::I8 => DatumType::I8,
        DType::U8 => DatumType::U8,
        DType::Bool => DatumType::Bool,
    }
}

/// Copies an Alembic tensor into a tract tensor.
pub fn to_tract(t: &Tensor) -> Result<TractTensor> {
    let shape = t.shape();
    let r = crate::dispatch_data!(t.data(), v => TractTensor::from_shape(shape, v));
    r.map_err(|e| unavailable(&format!("cannot build a tensor of shape {shape:?}: {e}")))
}

/// Copies a tract tensor into an Alembic tensor (shape-typed `TDim` values become i64).
pub fn from_tract(t: &TractTensor) -> Result<Tensor> {
    fn copy<T: tract_onnx::prelude::Datum + crate::tensor::Element>(t: &TractTensor) -> Result<Tensor> {
        let view = t.to_plain_array_view::<T>().map_err(|e| unavailable(&format!("{e}")))?;
        Tensor::from_vec(t.shape().to_vec(), view.iter().copied().collect())
            .ok_or_else(|| unavailable("output length does not match its shape"))
    }
    match t.datum_type() {
        DatumType::F32 => copy::<f32>(t),
        DatumType::F16 => copy::<half::f16>(t),
        DatumType::F64 => copy::<f64>(t),
        DatumType::I64 => copy::<i64>(t),
        DatumType::I32 => copy::<i32>(t),
        DatumType::I8 => copy::<i8>(t),
        DatumType::U8 => copy::<u8>(t),
        DatumType::Bool => copy::<bool>(t),
        DatumType::TDim => {
            let c = t.cast_to::<i64>().map_err(|e| unavailable(&format!("{e}")))?;
            copy::<i64>(&c)
        }
        other => Err(unavailable(&format!("output type {other:?} has no Alembic equivalent"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_tract() {
        let cases = vec![
            Tensor::from_vec(vec![2, 3], vec![1.5f32, -2.0, 0.0, 3.25, 4.0, 5.0]).unwrap(),
            Tensor::from_vec(vec![3], vec![1i64, -2, 3]).unwrap(),
            Tensor::from_vec(vec![2], vec![true, false]).unwrap(),
            Tensor::from_vec(vec![1, 2], vec![half::f16::from_f32(0.5), half::f16::from_f32(-1.0)]).unwrap(),
            Tensor::from_vec(vec![0, 4], Vec::<u8>::new()).unwrap(),
            Tensor::scalar(7i8),
            Tensor::scalar(2.5f64),
            Tensor::scalar(-9i32),
        ];
        for t in cases {
            let back = from_tract(&to_tract(&t).unwrap()).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn missing_file_is_an_import_error() {
        let e = TractEngine::load("/nonexistent/model.onnx").err().unwrap();
        assert!(matches!(e, Error::Import { .. }), "{e}");
    }
}
