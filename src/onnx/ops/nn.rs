//! Convolutions, pooling, normalisations, softmax and resizing.

use crate::error::Result;
use crate::ir::{
    AspectPolicy, AutoPad, ConvTransposeAttrs, CoordMode, NearestMode, Op, ResizeAttrs, ResizeMode, Window,
};
use crate::onnx::node::NodeCtx;
use crate::onnx::registry::Registry;
use crate::tensor::Tensor;

pub fn register(r: &mut Registry) {
    r.insert("Conv", conv);
    r.insert("ConvTranspose", conv_transpose);
    r.insert("MaxPool", max_pool);
    r.insert("AveragePool", average_pool);
    r.insert("GlobalAveragePool", |c| {
        c.require_inputs(1)?;
        Ok(Op::GlobalAveragePool)
    });
    r.insert("GlobalMaxPool", |c| {
        c.require_inputs(1)?;
        Ok(Op::GlobalMaxPool)
    });
    r.insert("BatchNormalization", batch_norm);
    r.insert("LayerNormalization", layer_norm);
    r.insert("LRN", lrn);
    r.insert("Softmax", |c| softmax(c, false));
    r.insert("LogSoftmax", |c| softmax(c, true));
    r.insert("Resize", resize);
    r.insert("Upsample", upsample);
}

fn auto_pad(c: &NodeCtx) -> Result<AutoPad> {
    Ok(match c.string("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => return Err(c.err(format!("auto_pad='{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"))),
    })
}

/// Window attributes; absent strides/pads/dilations stay empty (= defaults for the rank).
pub(crate) fn window(c: &NodeCtx, kernel_required: bool) -> Result<Window> {
    let kernel = c.usizes("kernel_shape")?.unwrap_or_default();
    if kernel_required && kernel.is_empty() {
        return Err(c.err("missing attribute kernel_shape"));
    }
    let w = Window {
        strides: c.usizes("strides")?.unwrap_or_default(),
        pads: c.usizes("pads")?.unwrap_or_default(),
        dilations: c.usizes("dilations")?.unwrap_or_default(),
        auto_pad: auto_pad(c)?,
        ceil_mode: c.flag("ceil_mode", false),
        kernel,
    };
    let n = w.kernel.len();
    if n > 0 {
        for (v, len, what) in [(&w.strides, n, "strides"), (&w.dilations, n, "dilations"), (&w.pads, 2 * n, "pads")] {
            if !v.is_empty() && v.len() != len {
                return Err(c.err(format!("{what} has {} values, expected {len}", v.len())));
            }
        }
    }
    if w.strides.contains(&0) || w.dilations.contains(&0) || w.kernel.contains(&0) {
        return Err(c.err("kernel_shape, strides and dilations must be positive"));
    }
    Ok(w)
}

pub(crate) fn group(c: &NodeCtx) -> Result<usize> {
    match c.int("group", 1) {
        g if g >= 1 => Ok(g as usize),
        g => Err(c.err(format!("group {g} must be positive"))),
    }
}

fn conv(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(2)?;
    Ok(Op::Conv { window: window(c, false)?, group: group(c)? })
}

fn conv_transpose(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(2)?;
    Ok(Op::ConvTranspose(ConvTransposeAttrs {
        window: window(c, false)?,
        group: group(c)?,
        output_padding: c.usizes("output_padding")?.unwrap_or_default(),
        output_shape: c.usizes("output_shape")?.unwrap_or_default(),
    }))
}

fn max_pool(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    let storage_order = c.int("storage_order", 0);
    if !(0..=1).contains(&storage_order) {
        return Err(c.err(format!("storage_order {storage_order} is not 0 or 1")));
    }
    Ok(Op::MaxPool { window: window(c, true)?, storage_order: storage_order as usize })
}

fn average_pool(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    Ok(Op::AveragePool { window: window(c, true)?, count_include_pad: c.flag("count_include_pad", false) })
}

fn batch_norm(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(5)?;
    // Opset 14+ says training with an attribute; before, extra outputs asked for running stats.
    if c.flag("training_mode", false) || (c.opset < 14 && c.node.output.iter().skip(1).any(|o| !o.is_empty())) {
        return Err(c.err("training mode (batch statistics) is not supported, only inference"));
    }
    if c.opset < 6 && c.has("is_test") && !c.flag("is_test", false) {
        return Err(c.err("is_test=0 (training) is not supported, only inference"));
    }
    // `spatial = 0` (opset < 9) gives per-activation parameters; the kernel follows their shape.
    Ok(Op::BatchNorm { epsilon: c.float("epsilon", 1e-5) })
}

fn layer_norm(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(2)?;
    let stash = c.int("stash_type", 1);
    if stash != 1 {
        return Err(c.err(format!("stash_type {stash}: only 1 (float) is supported")));
    }
    Ok(Op::LayerNorm { axis: c.int("axis", -1), epsilon: c.float("epsilon", 1e-5) })
}

fn lrn(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    let size = c.int_opt("size").ok_or_else(|| c.err("missing attribute size"))?;
    if size < 1 {
        return Err(c.err(format!("size {size} must be positive")));
    }
    Ok(Op::Lrn {
        size: size as usize,
        alpha: c.float("alpha", 1e-4),
        beta: c.float("beta", 0.75),
        bias: c.float("bias", 1.0),
    })
}

fn softmax(c: &mut NodeCtx, log: bool) -> Result<Op> {
    c.require_inputs(1)?;
    let legacy = c.opset < 13;
    let axis = c.int("axis", if legacy { 1 } else { -1 });
    Ok(if log { Op::LogSoftmax { axis, legacy } } else { Op::Softmax { axis, legacy } })
}

fn mode(c: &NodeCtx) -> Result<ResizeMode> {
    Ok(match c.string("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        "cubic" | "bicubic" => ResizeMode::Cubic,
        other => return Err(c.err(format!("mode='{other}' is not one of nearest, linear, cubic"))),
    })
}

/// Attributes of opset-10 Resize and Upsample: asymmetric coordinates, floor rounding.
fn legacy_resize(c: &NodeCtx) -> Result<ResizeAttrs> {
    Ok(ResizeAttrs {
        mode: mode(c)?,
        coord: CoordMode::Asymmetric,
        nearest: NearestMode::Floor,
        extrapolation_value: 0.0,
        exclude_outside: false,
        axes: None,
        aspect: AspectPolicy::Stretch,
        antialias: false,
        cubic_coeff_a: -0.75,
    })
}

fn resize(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    if c.opset < 11 {
        // Resize-10: inputs X, scales -> X, (roi), scales.
        let scales = c.input(1).ok_or_else(|| c.err("needs the scales input"))?;
        c.inputs = vec![c.input(0), None, Some(scales)];
        return Ok(Op::Resize(legacy_resize(c)?));
    }
    let coord = match c.string("coordinate_transformation_mode", "half_pixel")?.as_str() {
        "half_pixel" => CoordMode::HalfPixel,
        "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "align_corners" => CoordMode::AlignCorners,
        "asymmetric" => CoordMode::Asymmetric,
        "tf_crop_and_resize" => CoordMode::TfCropAndResize,
        other => return Err(c.err(format!("coordinate_transformation_mode='{other}' is not supported"))),
    };
    let nearest = match c.string("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => return Err(c.err(format!("nearest_mode='{other}' is not one of the four ONNX modes"))),
    };
    let aspect = match c.string("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => AspectPolicy::Stretch,
        "not_larger" => AspectPolicy::NotLarger,
        "not_smaller" => AspectPolicy::NotSmaller,
        other => {
            return Err(
                c.err(format!("keep_aspect_ratio_policy='{other}' is not one of stretch, not_larger, not_smaller"))
            )
        }
    };
    let mode = mode(c)?;
    let antialias = c.flag("antialias", false);
    if antialias && mode == ResizeMode::Nearest {
        return Err(c.err("antialias is not defined for mode nearest"));
    }
    let scales_given = c.input(2).is_some() && c.const_input(2).is_none_or(|t| !t.is_empty());
    let sizes_given = c.input(3).is_some() && c.const_input(3).is_none_or(|t| !t.is_empty());
    if !scales_given && !sizes_given {
        return Err(c.err("needs one of the scales and sizes inputs"));
    }
    if scales_given && sizes_given && c.const_input(2).is_some() && c.const_input(3).is_some() {
        return Err(c.err("scales and sizes are both given; only one is allowed"));
    }
    Ok(Op::Resize(ResizeAttrs {
        mode,
        coord,
        nearest,
        extrapolation_value: c.float("extrapolation_value", 0.0),
        exclude_outside: c.flag("exclude_outside", false),
        axes: c.ints("axes"),
        aspect,
        antialias,
        cubic_coeff_a: c.float("cubic_coeff_a", -0.75),
    }))
}

/// Upsample (opsets 7-9; deprecated in 10) as an opset-10 style Resize.
fn upsample(c: &mut NodeCtx) -> Result<Op> {
    c.require_inputs(1)?;
    let attrs = legacy_resize(c)?;
    if attrs.mode == ResizeMode::Cubic {
        return Err(c.err("mode cubic is not defined for Upsample"));
    }
    if c.opset < 9 {
        let scales = c.floats("scales").ok_or_else(|| c.err("missing attribute scales"))?;
        let n = scales.len();
        let t = Tensor::from_vec(vec![n], scales).ok_or_else(|| c.err("bad scales"))?;
        c.inputs.truncate(1);
        c.set_const_input(2, t, "scales");
    } else {
        let scales = c.input(1).ok_or_else(|| c.err("needs the scales input"))?;
        c.inputs = vec![c.input(0), None, Some(scales)];
    }
    Ok(Op::Resize(attrs))
}
