//! tract (pure-Rust ONNX runtime) as a reference engine.
//!
//! tract optimises a model for fixed input facts, and symbolic dims (a batch `N`) do not always
//! survive its optimiser, so the imported model is kept as loaded and concretised per distinct
//! set of input types and shapes; the optimised plans are cached by that key. tract also wants
//! some operands constant (Pad's pads, ConstantOfShape's shape, ...), which ONNX test graphs feed
//! as inputs: when a plan cannot be built, small inputs (at most [`BAKE_MAX_ELEMENTS`]) are baked
//! into it as constants, and such plans are cached by those inputs' values too.

use super::{order_inputs, panic_message, Engine};
use crate::error::{Error, Result};
use crate::tensor::{DType, Data, Tensor};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoTValue, OutletId, TValue, TVec,
    Tensor as TractTensor, TypedRunnableModel,
};

/// Inputs with at most this many elements may be baked into a plan as constants.
pub const BAKE_MAX_ELEMENTS: usize = 64;

type Key = Vec<(DType, Vec<usize>)>;

/// An optimised model and which of the engine's inputs it still takes (the rest are baked in).
struct Plan {
    runnable: Arc<TypedRunnableModel>,
    fed: Vec<usize>,
}

enum Cached {
    Plan(Arc<Plan>),
    /// Inputs of this type/shape need the small ones baked in; plans are keyed by their values.
    Baked,
}

/// A model loaded by tract.
pub struct TractEngine {
    model: InferenceModel,
    inputs: Vec<String>,
    outputs: Vec<String>,
    plans: Mutex<HashMap<Key, Cached>>,
    baked: Mutex<HashMap<String, Arc<Plan>>>,
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
        let names = |outlets: &[OutletId], label: bool| -> Vec<String> {
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
        Ok(TractEngine { model, inputs, outputs, plans: Mutex::new(HashMap::new()), baked: Mutex::new(HashMap::new()) })
    }

    /// The optimised plan for these inputs, built on first use.
    fn plan(&self, inputs: &[&Tensor]) -> Result<Arc<Plan>> {
        let key: Key = inputs.iter().map(|t| (t.dtype(), t.shape().to_vec())).collect();
        let poisoned = || unavailable("plan cache poisoned");
        match self.plans.lock().map_err(|_| poisoned())?.get(&key) {
            Some(Cached::Plan(p)) => return Ok(p.clone()),
            Some(Cached::Baked) => return self.baked_plan(inputs),
            None => {}
        }
        match self.build(inputs, &vec![false; inputs.len()]) {
            Ok(plan) => {
                let plan = Arc::new(plan);
                self.plans.lock().map_err(|_| poisoned())?.insert(key, Cached::Plan(plan.clone()));
                Ok(plan)
            }
            Err(first) => {
                if !inputs.iter().any(|t| t.len() <= BAKE_MAX_ELEMENTS) {
                    return Err(unavailable(&format!("cannot optimise the model: {first}")));
                }
                let plan =
                    self.baked_plan(inputs).map_err(|_| unavailable(&format!("cannot optimise the model: {first}")))?;
                self.plans.lock().map_err(|_| poisoned())?.insert(key, Cached::Baked);
                Ok(plan)
            }
        }
    }

    fn baked_plan(&self, inputs: &[&Tensor]) -> Result<Arc<Plan>> {
        let bake: Vec<bool> = inputs.iter().map(|t| t.len() <= BAKE_MAX_ELEMENTS).collect();
        let key = inputs
            .iter()
            .zip(&bake)
            .map(|(t, &b)| if b { format!("{t:?}") } else { format!("{}{:?}", t.dtype(), t.shape()) })
            .collect::<Vec<_>>()
            .join(";");
        if let Some(p) = self.baked.lock().map_err(|_| unavailable("plan cache poisoned"))?.get(&key) {
            return Ok(p.clone());
        }
        let plan =
            Arc::new(self.build(inputs, &bake).map_err(|m| unavailable(&format!("cannot optimise the model: {m}")))?);
        self.baked.lock().map_err(|_| unavailable("plan cache poisoned"))?.insert(key, plan.clone());
        Ok(plan)
    }

    /// Concretises the model for these inputs (baking in those marked) and optimises it.
    fn build(&self, inputs: &[&Tensor], bake: &[bool]) -> std::result::Result<Plan, String> {
        let mut model = self.model.clone();
        let built = catch_unwind(AssertUnwindSafe(|| -> std::result::Result<Plan, String> {
            let err = |e: tract_onnx::prelude::TractError| one_line(&format!("{e:#}"));
            let outlets: Vec<OutletId> = model.input_outlets().map_err(err)?.to_vec();
            let mut fed = Vec::new();
            for (i, t) in inputs.iter().enumerate() {
                if bake[i] {
                    let value = Arc::new(to_tract(t).map_err(|e| e.to_string())?);
                    let konst = tract_onnx::tract_hir::ops::konst::Const::new(value.clone()).map_err(err)?;
                    model.node_mut(outlets[i].node).op = Box::new(konst);
                    model.set_outlet_fact(outlets[i], InferenceFact::from((*value).clone())).map_err(err)?;
                } else {
                    let fact = InferenceFact::dt_shape(datum_type(t.dtype())?, t.shape().iter().copied());
                    model.set_input_fact(i, fact).map_err(err)?;
                    fed.push(i);
                }
            }
            let kept: Vec<OutletId> = fed.iter().map(|&i| outlets[i]).collect();
            model.set_input_outlets(&kept).map_err(err)?;
            let typed = model.into_optimized().map_err(err)?;
            let runnable = tract_onnx::prelude::IntoRunnable::into_runnable(typed).map_err(err)?;
            Ok(Plan { runnable, fed })
        }));
        built.unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))))
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
            plan.fed.iter().map(|&i| to_tract(ordered[i]).map(|t| t.into_tvalue())).collect::<Result<_>>()?;
        let outs = catch_unwind(AssertUnwindSafe(|| plan.runnable.run(values).map_err(|e| format!("{e:#}"))))
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

/// tract has no bfloat16; models fed one are not runnable on it.
fn datum_type(dt: DType) -> std::result::Result<DatumType, String> {
    Ok(match dt {
        DType::F32 => DatumType::F32,
        DType::F16 => DatumType::F16,
        DType::F64 => DatumType::F64,
        DType::I64 => DatumType::I64,
        DType::I32 => DatumType::I32,
        DType::I8 => DatumType::I8,
        DType::U8 => DatumType::U8,
        DType::I16 => DatumType::I16,
        DType::U16 => DatumType::U16,
        DType::U32 => DatumType::U32,
        DType::U64 => DatumType::U64,
        DType::Bool => DatumType::Bool,
        DType::BF16 => return Err("tract has no bfloat16 tensors".into()),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => {
            return Err("tract has no float8 tensors".into())
        }
    })
}

/// Copies an Alembic tensor into a tract tensor.
pub fn to_tract(t: &Tensor) -> Result<TractTensor> {
    let shape = t.shape();
    if t.dtype() == DType::BF16 || t.dtype().is_float8() {
        return Err(unavailable(&format!("tract has no {} tensors", t.dtype())));
    }
    let r = match t.data() {
        Data::F32(v) => TractTensor::from_shape(shape, v),
        Data::F16(v) => TractTensor::from_shape(shape, v),
        Data::F64(v) => TractTensor::from_shape(shape, v),
        Data::I64(v) => TractTensor::from_shape(shape, v),
        Data::I32(v) => TractTensor::from_shape(shape, v),
        Data::I16(v) => TractTensor::from_shape(shape, v),
        Data::I8(v) => TractTensor::from_shape(shape, v),
        Data::U64(v) => TractTensor::from_shape(shape, v),
        Data::U32(v) => TractTensor::from_shape(shape, v),
        Data::U16(v) => TractTensor::from_shape(shape, v),
        Data::U8(v) => TractTensor::from_shape(shape, v),
        Data::Bool(v) => TractTensor::from_shape(shape, v),
        Data::BF16(_) | Data::F8E4M3FN(_) | Data::F8E4M3FNUZ(_) | Data::F8E5M2(_) | Data::F8E5M2FNUZ(_) => {
            unreachable!("rejected above")
        }
    };
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
        DatumType::I16 => copy::<i16>(t),
        DatumType::U16 => copy::<u16>(t),
        DatumType::U32 => copy::<u32>(t),
        DatumType::U64 => copy::<u64>(t),
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
