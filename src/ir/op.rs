//! The operator set of Alembic's IR: one enum, attributes resolved at import.
//!
//! Tensor-valued arguments that ONNX passes as inputs (Reshape's shape, Slice's starts, Pad's
//! pads, ...) stay node inputs; the importer turns attribute forms of older opsets into constant
//! inputs so every backend sees one signature per op.

use crate::tensor::DType;

/// Elementwise functions of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Unary {
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Tanh,
    /// `approximate = "tanh"` selects the tanh formulation.
    Gelu {
        tanh: bool,
    },
    Erf,
    Exp,
    Log,
    Sqrt,
    Neg,
    Abs,
    Reciprocal,
    Floor,
    Ceil,
    Elu {
        alpha: f32,
    },
    Softplus,
    /// Clip with bounds known at import (attributes, or constant inputs).
    Clip {
        min: f32,
        max: f32,
    },
    Not,
}

/// Elementwise functions of two broadcast tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// PRelu: `x < 0 ? x * slope : x`, slope broadcast to x.
    PRelu,
    Equal,
    Less,
    Greater,
    And,
    Or,
}

impl Binary {
    /// Comparisons and logic produce booleans.
    pub fn is_predicate(self) -> bool {
        matches!(self, Binary::Equal | Binary::Less | Binary::Greater | Binary::And | Binary::Or)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Window geometry shared by Conv, ConvTranspose and the pools; spatial dims only.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Kernel extent; empty for Conv when it comes from the weight shape.
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    /// ONNX layout: all begins, then all ends.
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

impl Window {
    /// A 2-D conv window with the same stride, padding (every side) and dilation on both axes,
    /// the kernel taken from the weight.
    pub fn square(stride: usize, pad: usize, dilation: usize) -> Window {
        Window {
            kernel: vec![],
            strides: vec![stride; 2],
            pads: vec![pad; 4],
            dilations: vec![dilation; 2],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConvTransposeAttrs {
    pub window: Window,
    pub group: usize,
    pub output_padding: Vec<usize>,
    pub output_shape: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L2,
    SumSquare,
    LogSumExp,
    L1,
    LogSum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord: CoordMode,
    pub nearest: NearestMode,
    pub extrapolation_value: f32,
    pub exclude_outside: bool,
    pub axes: Option<Vec<i64>>,
    pub aspect: AspectPolicy,
    pub antialias: bool,
    /// Keys cubic coefficient `A` (ONNX `cubic_coeff_a`), used by `ResizeMode::Cubic`.
    pub cubic_coeff_a: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// ONNX quantization operators (imported from models quantized by other tools); inputs follow
/// ONNX. Kernels: backend/cpu/kernels/qlinear.rs.
#[derive(Clone, Debug, PartialEq)]
pub enum QLinear {
    /// Inputs x, y_scale, optional y_zero_point; `out` is the zero point's type (u8 default).
    /// `block_size` 0 = per tensor / per axis.
    Quantize { axis: i64, block_size: usize, out: DType },
    /// Inputs x, x_scale, optional x_zero_point; output has the scale's type.
    Dequantize { axis: i64, block_size: usize },
    /// Input x (f32); outputs y (u8), y_scale, y_zero_point.
    DynamicQuantize,
    /// Inputs A, B, optional a_zero_point, b_zero_point; i32 output.
    MatMulInteger,
    /// Inputs a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp.
    QLinearMatMul,
    /// Inputs x, w, optional x_zero_point, w_zero_point; i32 output.
    ConvInteger { window: Window, group: usize },
    /// Inputs x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, optional B (i32).
    QLinearConv { window: Window, group: usize },
}

/// One IR operator. Inputs follow the ONNX order of the newest opset the importer maps.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Unary(Unary),
    Binary(Binary),
    /// Variadic elementwise sum (ONNX Sum) with broadcasting.
    Sum,
    /// `cond ? x : y`, broadcast.
    Where,
    /// Clip whose bounds are inputs (x, optional min, optional max) that were not constant at
    /// import; constant bounds become [`Unary::Clip`].
    Clip,
    Cast {
        to: DType,
        /// Float8 targets only: out of range values clamp to the largest finite (true, the
        /// default) or become infinity/NaN.
        saturate: bool,
    },
    /// `alpha * A' B' + beta * C`; inputs A, B, optional C.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// numpy matmul with batch broadcasting.
    MatMul,
    /// `alpha * A W^T + beta * C` with a packed quantized weight `W[n, k]` (see
    /// [`crate::quant`]); inputs A (`[.., k]`, f32), optional C (broadcast to the output
    /// `[.., n]`). Made by [`crate::quant::quantize_graph`] from Gemm/MatMul.
    QGemm {
        w: std::sync::Arc<crate::quant::QWeight>,
        alpha: f32,
        beta: f32,
    },
    /// Conv with a packed quantized weight (`W[c_out, c_in / group * prod(kernel)]`, see
    /// [`crate::quant`]) whose f32 shape was `wshape`; inputs X, optional B. Made by
    /// [`crate::quant::quantize_graph`] from Conv.
    QConv {
        window: Window,
        group: usize,
        w: std::sync::Arc<crate::quant::QWeight>,
        wshape: Vec<usize>,
    },
    /// Inputs X, W, optional B. `kernel` in the window is empty (taken from W).
    Conv {
        window: Window,
        group: usize,
    },
    ConvTranspose(ConvTransposeAttrs),
    /// Inputs X, scale, B, mean, var (inference form).
    BatchNorm {
        epsilon: f32,
    },
    /// Inputs X, scale, optional B; normalises over axes `axis..rank`.
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    /// `legacy`: opset < 13 semantics (coerce to 2-D at `axis`).
    Softmax {
        axis: i64,
        legacy: bool,
    },
    LogSoftmax {
        axis: i64,
        legacy: bool,
    },
    MaxPool {
        window: Window,
        storage_order: usize,
    },
    AveragePool {
        window: Window,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    GlobalMaxPool,
    /// Inputs data, optional axes. `noop_with_empty_axes` as ONNX.
    Reduce {
        kind: ReduceKind,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    ArgMax {
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    ArgMin {
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    Flatten {
        axis: i64,
    },
    /// Inputs data, shape.
    Reshape {
        allowzero: bool,
    },
    /// Empty `perm` reverses the axes.
    Transpose {
        perm: Vec<usize>,
    },
    /// Inputs data, optional axes.
    Squeeze,
    /// Inputs data, axes.
    Unsqueeze,
    Concat {
        axis: i64,
    },
    /// Inputs data, optional split sizes; `outputs` equal parts when sizes are absent.
    Split {
        axis: i64,
        outputs: usize,
    },
    /// Inputs data, starts, ends, optional axes, optional steps.
    Slice,
    Gather {
        axis: i64,
    },
    GatherElements {
        axis: i64,
    },
    /// Inputs data, pads, optional constant value, optional axes.
    Pad {
        mode: PadMode,
    },
    /// Inputs X, optional roi, optional scales, optional sizes.
    Resize(ResizeAttrs),
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Size,
    /// Input shape; output filled with `value` (a one-element tensor).
    ConstantOfShape {
        value: crate::tensor::Tensor,
    },
    /// Inputs data, shape.
    Expand,
    /// Inputs data, repeats.
    Tile,
    /// Inputs start, limit, delta.
    Range,
    Identity,
    /// Inference-mode Dropout kept as a node when its mask output is used or its training_mode
    /// is not constant. Inputs data, optional ratio, optional training_mode; output 0 copies
    /// the data, output 1 (mask) is all true. Training mode with a nonzero ratio is a run error.
    Dropout,
    QLinear(QLinear),
}

impl Op {
    /// Short name for reports and errors (the ONNX op type where there is one).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary(u) => match u {
                Unary::Relu => "Relu",
                Unary::LeakyRelu { .. } => "LeakyRelu",
                Unary::Sigmoid => "Sigmoid",
                Unary::HardSigmoid { .. } => "HardSigmoid",
                Unary::HardSwish => "HardSwish",
                Unary::Tanh => "Tanh",
                Unary::Gelu { .. } => "Gelu",
                Unary::Erf => "Erf",
                Unary::Exp => "Exp",
                Unary::Log => "Log",
                Unary::Sqrt => "Sqrt",
                Unary::Neg => "Neg",
                Unary::Abs => "Abs",
                Unary::Reciprocal => "Reciprocal",
                Unary::Floor => "Floor",
                Unary::Ceil => "Ceil",
                Unary::Elu { .. } => "Elu",
                Unary::Softplus => "Softplus",
                Unary::Clip { .. } => "Clip",
                Unary::Not => "Not",
            },
            Op::Binary(b) => match b {
                Binary::Add => "Add",
                Binary::Sub => "Sub",
                Binary::Mul => "Mul",
                Binary::Div => "Div",
                Binary::Pow => "Pow",
                Binary::Max => "Max",
                Binary::Min => "Min",
                Binary::PRelu => "PRelu",
                Binary::Equal => "Equal",
                Binary::Less => "Less",
                Binary::Greater => "Greater",
                Binary::And => "And",
                Binary::Or => "Or",
            },
            Op::Sum => "Sum",
            Op::Where => "Where",
            Op::Clip => "Clip",
            Op::Cast { .. } => "Cast",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::QGemm { .. } => "QGemm",
            Op::Conv { .. } => "Conv",
            Op::QConv { .. } => "QConv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::Lrn { .. } => "LRN",
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::MaxPool { .. } => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Reduce { kind, .. } => match kind {
                ReduceKind::Sum => "ReduceSum",
                ReduceKind::Mean => "ReduceMean",
                ReduceKind::Max => "ReduceMax",
                ReduceKind::Min => "ReduceMin",
                ReduceKind::Prod => "ReduceProd",
                ReduceKind::L2 => "ReduceL2",
                ReduceKind::SumSquare => "ReduceSumSquare",
                ReduceKind::LogSumExp => "ReduceLogSumExp",
                ReduceKind::L1 => "ReduceL1",
                ReduceKind::LogSum => "ReduceLogSum",
            },
            Op::ArgMax { .. } => "ArgMax",
            Op::ArgMin { .. } => "ArgMin",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Squeeze => "Squeeze",
            Op::Unsqueeze => "Unsqueeze",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Slice => "Slice",
            Op::Gather { .. } => "Gather",
            Op::GatherElements { .. } => "GatherElements",
            Op::Pad { .. } => "Pad",
            Op::Resize(_) => "Resize",
            Op::Shape { .. } => "Shape",
            Op::Size => "Size",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Expand => "Expand",
            Op::Tile => "Tile",
            Op::Range => "Range",
            Op::Identity => "Identity",
            Op::Dropout => "Dropout",
            Op::QLinear(q) => match q {
                QLinear::Quantize { .. } => "QuantizeLinear",
                QLinear::Dequantize { .. } => "DequantizeLinear",
                QLinear::DynamicQuantize => "DynamicQuantizeLinear",
                QLinear::MatMulInteger => "MatMulInteger",
                QLinear::QLinearMatMul => "QLinearMatMul",
                QLinear::ConvInteger { .. } => "ConvInteger",
                QLinear::QLinearConv { .. } => "QLinearConv",
            },
        }
    }
}
