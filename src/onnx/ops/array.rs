//! Shape and data-movement ops, constants, reductions and ArgMax/ArgMin.
//!
//! Older opsets pass as attributes what newer ones pass as inputs (axes, pads, starts/ends,
//! split sizes, Reshape's shape); those become constant inputs so the IR op has one signature.

use crate::error::Result;
use crate::ir::{Op, PadMode, ReduceKind};
use crate::onnx::node::NodeCtx;
use crate::onnx::registry::Registry;
use crate::tensor::{DType, Tensor};

pub fn register(r: &mut Registry) {
    r.insert("Flatten", |c| {
        c.require_inputs(1)?;
        Ok(Op::Flatten { axis: c.int("axis", 1) })
    });
    r.insert("Reshape", reshape);
    r.insert("Transpose", transpose);
    r.insert("Squeeze", |c| axes_op(c, Op::Squeeze, false));
    r.insert("Unsqueeze", |c| axes_op(c, Op::Unsqueeze, true));
    r.insert("Concat", concat);
    r.insert("Split", split);
    r.insert("Slice", slice);
    r.insert("Gather", |c| {
        c.require_inputs(2)?;
        Ok(Op::Gather { axis: c.int("axis", 0) })
    });
    r.insert("GatherElements", |c| {
        c.require_inputs(2)?;
        Ok(Op::GatherElements { axis: c.int("axis", 0) })
    });
    r.insert("Pad", pad);
    r.insert("Shape", |c| {
        c.require_inputs(1)?;
        Ok(Op::Shape { start: c.int("start", 0), end: c.int_opt("end") })
    });
    r.insert("Size", |c| {
        c.require_inputs(1)?;
        Ok(Op::Size)
    });
    r.insert("Constant", constant);
    r.insert("ConstantOfShape", constant_of_shape);
    r.insert("Expand", |c| {
        c.require_inputs(2)?;
        Ok(Op::Expand)
    });
    r.insert("Tile", tile);
    r.insert("Range", |c| {
        c.require_inputs(3)?;
        Ok(Op::Range)
    });
    r.insert("Identity", |c| {
        c.require_inputs(1)?;
        Ok(Op::Identity)
    });
    r.insert("Dropout", dropout);

    macro_rules! reduce {
        ($name:literal, $kind:expr, $input_from:expr) => {
            r.insert($name, |c| reduce(c, $kind, $input_from));
        };
    }
    reduce!("ReduceSum", ReduceKind::Sum, 13);
    reduce!("ReduceMean", ReduceKind::Mean, 18);
    reduce!("ReduceMax", ReduceKind::Max, 18);
    reduce!("ReduceMin", ReduceKind::Min, 18);
    reduce!("ReduceProd", ReduceKind::Prod, 18);
    reduce!("ReduceL2", ReduceKind::L2, 18);
    reduce!("ReduceSumSquare", ReduceKind::SumSquare, 18);
    reduce!("ReduceLogSumExp", ReduceKind::LogSumExp, 18);
    r.insert("ArgMax", |c| {
        c.require_inputs(1)?;
        Ok(Op::ArgMax {
            axis: c.int("axis", 0),
            keepdims: c.flag("keepdims", true),
            select_last_index: c.flag("select_last_index", false),
        })
    });
    r.insert("ArgMin", |c| {
        c.require_inputs(1)?;
        Ok(Op::ArgMin {
            axis: c.int("axis", 0),
            keepdims: c.flag("keepdims", true),
            select_last_index: c.flag("select_last_index", false),
        })
    });
}

fn i64s(v: Vec<i64>) -> Tensor {
    let n = v.len();
    Tensor::from_vec(vec![n], v).expect("1-D length matches")
}

fn reshape(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    if c.opset < 5 {
        let shape = c.ints("shape").ok_or_else(|| c.err("missing attribute 'shape'"))?;
        c.inputs.truncate(1);
        c.set_const_input(1, i64s(shape), "shape");
    }
    c.require_inputs(2)?;
    Ok(Op::Reshape { allowzero: c.flag("allowzero", false) })
}

fn transpose(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    let perm = c.usizes("perm")?.unwrap_or_default();
    let mut seen = vec![false; perm.len()];
    if perm.iter().any(|&p| p >= perm.len() || std::mem::replace(&mut seen[p], true)) {
        return Err(c.err(format!("perm {perm:?} is not a permutation")));
    }
    Ok(Op::Transpose { perm })
}

/// Squeeze/Unsqueeze: `axes` attribute before opset 13, input from 13.
fn axes_op(c: &mut NodeCtx, op: Op, required: bool) -> Result<Op> {
    c.require_inputs(1)?;
    if c.opset < 13 {
        c.inputs.truncate(1);
        match c.ints("axes") {
            Some(a) => c.set_const_input(1, i64s(a), "axes"),
            None if required => return Err(c.err("missing attribute 'axes'")),
            None => {}
        }
    } else if required {
        c.require_inputs(2)?;
    }
    Ok(op)
}

fn concat(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    let axis = match c.int_opt("axis") {
        Some(a) => a,
        None if c.opset < 4 => 1,
        None => return Err(c.err("missing attribute 'axis'")),
    };
    Ok(Op::Concat { axis })
}

fn split(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    let n_out = c.node.output.len();
    if n_out == 0 {
        return Err(c.err("has no outputs"));
    }
    if c.opset < 13 {
        // Opset 1 also accepted the sizes as input 1; an attribute wins when given.
        if let Some(s) = c.ints("split") {
            c.inputs.truncate(1);
            c.set_const_input(1, i64s(s), "split");
        } else if c.opset >= 2 {
            c.inputs.truncate(1);
        }
    }
    if c.input(1).is_none() {
        if let Some(n) = c.int_opt("num_outputs") {
            if n as usize != n_out {
                return Err(c.err(format!("num_outputs={n} but the node has {n_out} outputs")));
            }
        }
    } else if let Some(s) = c.const_input(1) {
        if s.len() != n_out {
            return Err(c.err(format!("{} split sizes for {n_out} outputs", s.len())));
        }
    }
    Ok(Op::Split { axis: c.int("axis", 0), outputs: n_out })
}

fn slice(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    if c.opset < 10 {
        let starts = c.ints("starts").ok_or_else(|| c.err("missing attribute 'starts'"))?;
        let ends = c.ints("ends").ok_or_else(|| c.err("missing attribute 'ends'"))?;
        if starts.len() != ends.len() {
            return Err(c.err("starts and ends differ in length"));
        }
        let axes = c.ints("axes");
        c.inputs.truncate(1);
        c.set_const_input(1, i64s(starts), "starts");
        c.set_const_input(2, i64s(ends), "ends");
        if let Some(a) = axes {
            c.set_const_input(3, i64s(a), "axes");
        }
    }
    c.require_inputs(3)?;
    Ok(Op::Slice)
}

fn pad(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    let mode = match c.string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => return Err(c.err(format!("mode='{other}' is not one of constant, reflect, edge, wrap"))),
    };
    if c.opset < 11 {
        let pads = c.ints("pads").or_else(|| c.ints("paddings")).ok_or_else(|| c.err("missing attribute 'pads'"))?;
        let value = c.float("value", 0.0);
        c.inputs.truncate(1);
        c.set_const_input(1, i64s(pads), "pads");
        c.set_const_input(2, Tensor::scalar(value), "value");
    }
    c.require_inputs(2)?;
    Ok(Op::Pad { mode })
}

fn constant(c: &mut NodeCtx) -> Result<Op> {
    let t = if let Some(t) = c.tensor("value")? {
        t
    } else if c.has("sparse_value") {
        return Err(c.err("sparse_value constants are not supported"));
    } else if let Some(v) = c.float_opt("value_float") {
        Tensor::scalar(v)
    } else if let Some(v) = c.floats("value_floats") {
        Tensor::from_vec(vec![v.len()], v).expect("1-D length matches")
    } else if let Some(v) = c.int_opt("value_int") {
        Tensor::scalar(v)
    } else if let Some(v) = c.ints("value_ints") {
        i64s(v)
    } else if c.has("value_string") || c.has("value_strings") {
        return Err(c.err("string constants are not supported"));
    } else {
        return Err(c.err("has no value attribute"));
    };
    c.inputs.clear();
    c.set_const_input(0, t, "value");
    Ok(Op::Identity)
}

fn constant_of_shape(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    let value = match c.tensor("value")? {
        Some(t) if t.len() == 1 => {
            let mut v = t;
            v.set_shape(&[1]);
            v
        }
        Some(t) => return Err(c.err(format!("value has {} elements, expected 1", t.len()))),
        None => Tensor::from_vec(vec![1], vec![0f32]).expect("one element"),
    };
    Ok(Op::ConstantOfShape { value })
}

fn tile(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(2)?;
    if c.opset < 6 {
        // Tile-1: inputs (input, tiles, axis), both scalars: repeat one axis `tiles` times.
        let (Some(tiles), Some(axis)) = (c.const_input(1), c.const_input(2)) else {
            return Err(c.err("Tile-1 needs constant 'tiles' and 'axis' inputs"));
        };
        let (tiles, axis) = (tiles.to_f64_vec(), axis.to_f64_vec());
        let rank = c.input(0).and_then(|v| c.graph.value(v).shape.as_ref()).map(|s| s.rank());
        let (Some(&t), Some(&a), Some(rank)) = (tiles.first(), axis.first(), rank) else {
            return Err(c.err("Tile-1 needs scalar tiles/axis and an input of known rank"));
        };
        let a = crate::tensor::norm_axis(a as i64, rank).ok_or_else(|| c.err(format!("axis {a} is out of range")))?;
        let mut reps = vec![1i64; rank];
        reps[a] = t as i64;
        c.inputs.truncate(1);
        c.set_const_input(1, i64s(reps), "repeats");
    }
    Ok(Op::Tile)
}

fn dropout(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    if let Some(t) = c.input(2) {
        match c.graph.constant(t) {
            Some(m) if m.to_f64_vec().first().is_some_and(|&v| v != 0.0) => {
                return Err(c.err("training_mode=true is not supported (inference only)"));
            }
            _ => {}
        }
    }
    c.inputs.truncate(1);
    let mask_used = c.node.output.get(1).is_some_and(|n| !n.is_empty());
    Ok(if mask_used { Op::Dropout } else { Op::Identity })
}

/// Reductions: `axes` attribute before `input_from`, input from then on.
fn reduce(c: &mut NodeCtx, kind: ReduceKind, input_from: i64) -> Result<Op> {
    c.require_inputs(1)?;
    if c.opset < input_from {
        c.inputs.truncate(1);
        if let Some(a) = c.ints("axes") {
            c.set_const_input(1, i64s(a), "axes");
        }
    }
    if let Some(a) = c.input(1) {
        if let Some(dt) = c.graph.value(a).dtype {
            if dt != DType::I64 {
                return Err(c.err(format!("axes must be int64, got {dt}")));
            }
        }
    }
    Ok(Op::Reduce {
        kind,
        keepdims: c.flag("keepdims", true),
        noop_with_empty_axes: c.flag("noop_with_empty_axes", false),
    })
}
