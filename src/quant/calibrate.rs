//! Static activation scales for w8a8 QDQ export (`alembic quantize --calibrate DATA`): the f32
//! model runs on the CPU engine over a few batches of sample inputs, with the activation input
//! of every Gemm/MatMul/Conv exposed as an extra graph output, and each gets the symmetric int8
//! scale `max |x| / 127` over everything seen (the same rule as ONNX Runtime's MinMax
//! calibrator in symmetric mode).

use crate::data::{DataOptions, DataSource};
use crate::error::{Error, Result};
use crate::onnx::pb::{ModelProto, ValueInfoProto};
use crate::tensor::Dim;
use crate::{Model, SessionOptions};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// Samples per calibration batch, and the most batches read.
pub const CALIBRATION_BATCH: usize = 32;
pub const CALIBRATION_BATCHES: usize = 8;

/// `max |x|` of each named activation over the first batches of `data`, run through `proto`.
pub fn activation_ranges(proto: &ModelProto, wanted: &[String], data: &Path) -> Result<HashMap<String, f32>> {
    let what = format!("calibration data {}", data.display());
    let src = DataSource::open(data, &DataOptions::default())?;
    if src.is_empty() {
        return Err(Error::input(&what, "no samples"));
    }
    let mut p = proto.clone();
    let g = p.graph.as_mut().ok_or_else(|| Error::import("model", "no graph"))?;
    let known: Vec<String> = g.output.iter().map(|o| o.name.clone()).collect();
    for w in wanted.iter().filter(|w| !known.contains(w)) {
        g.output.push(ValueInfoProto { name: w.clone(), ..Default::default() });
    }
    let model = Model::from_bytes(&p.encode_to_vec())?;
    let inputs = model.inputs();
    let [input] = inputs.as_slice() else {
        return Err(Error::input(&what, format!("calibration needs a model with one input, not {}", inputs.len())));
    };
    if let Some(shape) = &input.shape {
        let want: Vec<Option<usize>> =
            shape.0.iter().skip(1).map(|d| if let Dim::Known(n) = d { Some(*n) } else { None }).collect();
        let got = src.sample_shape();
        let fits = want.len() == got.len() && want.iter().zip(got).all(|(w, g)| w.is_none_or(|w| w == *g));
        if !fits {
            return Err(Error::input(
                &what,
                format!("samples of shape {got:?} do not fit model input '{}' {:?}", input.name, shape.0),
            ));
        }
    }
    let session = model.session(SessionOptions::default())?;
    let mut ranges: HashMap<String, f32> = HashMap::new();
    for batch in src.batches(CALIBRATION_BATCH).take(CALIBRATION_BATCHES) {
        let x = batch?.x;
        let out = session.run(vec![(input.name.as_str(), x)]).map_err(|e| Error::input(&what, e.to_string()))?;
        for (name, t) in &out.0 {
            if !wanted.contains(name) {
                continue;
            }
            let Some(v) = t.as_slice::<f32>() else { continue };
            let m = v.iter().fold(0f32, |m, x| if x.is_finite() { m.max(x.abs()) } else { m });
            let e = ranges.entry(name.clone()).or_insert(0.0);
            *e = e.max(m);
        }
    }
    Ok(ranges)
}

/// Symmetric int8 scale for a calibrated range (1 for an all-zero activation, which any scale
/// represents exactly).
pub fn act_scale(max_abs: f32) -> f32 {
    if max_abs > 0.0 {
        max_abs / 127.0
    } else {
        1.0
    }
}
