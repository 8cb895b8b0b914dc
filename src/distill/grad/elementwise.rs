//! Gradients of the elementwise ops: broadcast binaries, Sum, Where, Clip and the unary
//! activations. Derivatives are taken from the forward input or output, whichever is cheaper.

use super::{f32s, grad_or_zeros, reduce_to_shape, GradResult};
use crate::backend::cpu::kernels::broadcast::{broadcast_strides, for_each_offsets};
use crate::backend::cpu::kernels::elementwise::{erf, sigmoid};
use crate::ir::{Binary, Op, Unary};
use crate::tensor::Tensor;

pub fn supports(op: &Op) -> bool {
    match op {
        Op::Unary(u) => !matches!(u, Unary::Floor | Unary::Ceil | Unary::Not),
        Op::Binary(b) => !b.is_predicate(),
        Op::Sum | Op::Where | Op::Clip => true,
        _ => false,
    }
}

pub fn vjp(
    op: &Op,
    inputs: &[Option<&Tensor>],
    outputs: &[&Tensor],
    grads: &[Option<&Tensor>],
    need: &[bool],
) -> GradResult {
    let g = grad_or_zeros(grads, outputs, 0);
    let gv = f32s(&g, "gradient")?;
    let mut out = vec![None; inputs.len()];
    let wants = |i: usize| need.get(i) == Some(&true) && inputs.get(i).copied().flatten().is_some();
    match op {
        Op::Unary(u) => {
            if wants(0) {
                let x = f32s(inputs[0].ok_or("input missing")?, "X")?;
                let y = f32s(outputs[0], "Y")?;
                let dx: Vec<f32> = x.iter().zip(y).zip(gv).map(|((&x, &y), &g)| g * unary_deriv(u, x, y)).collect();
                out[0] = Some(Tensor::from_vec(g.shape().to_vec(), dx).ok_or("gradient shape")?);
            }
        }
        Op::Clip => {
            if wants(0) {
                let bound = |i: usize, d: f32| -> Result<f32, String> {
                    match inputs.get(i).copied().flatten() {
                        Some(t) if t.len() == 1 => Ok(t.to_f64_vec()[0] as f32),
                        Some(t) => Err(format!("Clip bound must be a scalar, got shape {:?}", t.shape())),
                        None => Ok(d),
                    }
                };
                let u = Unary::Clip { min: bound(1, f32::NEG_INFINITY)?, max: bound(2, f32::INFINITY)? };
                let x = f32s(inputs[0].ok_or("input missing")?, "X")?;
                let dx: Vec<f32> = x.iter().zip(gv).map(|(&x, &g)| g * unary_deriv(&u, x, 0.0)).collect();
                out[0] = Some(Tensor::from_vec(g.shape().to_vec(), dx).ok_or("gradient shape")?);
            }
        }
        Op::Binary(b) => {
            let a = inputs[0].ok_or("input A missing")?;
            let bt = inputs[1].ok_or("input B missing")?;
            let (da, db) = binary(*b, a, bt, outputs[0], &g, wants(0), wants(1))?;
            out[0] = da;
            out[1] = db;
        }
        Op::Sum => {
            for (i, t) in inputs.iter().enumerate() {
                if let (true, Some(t)) = (wants(i), t) {
                    out[i] = Some(reduce_to_shape(gv, g.shape(), t.shape()));
                }
            }
        }
        Op::Where => {
            let c = inputs[0].ok_or("condition missing")?;
            let cv = c.as_slice::<bool>().ok_or("Where condition must be bool")?;
            let sc = broadcast_strides(c.shape(), g.shape());
            for (i, pick) in [(1usize, true), (2, false)] {
                if !wants(i) {
                    continue;
                }
                let mut full = vec![0f32; gv.len()];
                for_each_offsets(g.shape(), [&sc], |o, [j]| {
                    if cv[j] == pick {
                        full[o] = gv[o];
                    }
                });
                out[i] = Some(reduce_to_shape(&full, g.shape(), inputs[i].expect("checked").shape()));
            }
        }
        _ => return Err(format!("{} is not elementwise", op.name())),
    }
    Ok(out)
}

/// dy/dx of a unary function at `x`, where `y` is the forward output.
fn unary_deriv(u: &Unary, x: f32, y: f32) -> f32 {
    use std::f32::consts::{PI, SQRT_2};
    match *u {
        Unary::Relu => (x > 0.0) as u8 as f32,
        Unary::LeakyRelu { alpha } => {
            if x < 0.0 {
                alpha
            } else {
                1.0
            }
        }
        Unary::Sigmoid => y * (1.0 - y),
        Unary::HardSigmoid { alpha, beta } => {
            let t = alpha * x + beta;
            if t > 0.0 && t < 1.0 {
                alpha
            } else {
                0.0
            }
        }
        Unary::HardSwish => {
            if x <= -3.0 {
                0.0
            } else if x >= 3.0 {
                1.0
            } else {
                x / 3.0 + 0.5
            }
        }
        Unary::Tanh => 1.0 - y * y,
        Unary::Gelu { tanh: false } => {
            let cdf = 0.5 * (1.0 + erf(x / SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
            cdf + x * pdf
        }
        Unary::Gelu { tanh: true } => {
            let c = (2.0 / PI).sqrt();
            let t = (c * (x + 0.044715 * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)
        }
        Unary::Erf => 2.0 / PI.sqrt() * (-x * x).exp(),
        Unary::Exp => y,
        Unary::Log => 1.0 / x,
        Unary::Sqrt => 0.5 / y,
        Unary::Neg => -1.0,
        Unary::Abs => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        Unary::Reciprocal => -y * y,
        Unary::Elu { alpha } => {
            if x < 0.0 {
                y + alpha
            } else {
                1.0
            }
        }
        Unary::Softplus => sigmoid(x),
        // The gradient passes where the input lies within the bounds (as PyTorch's clamp).
        Unary::Clip { min, max } => (x >= min && x <= max) as u8 as f32,
        Unary::Floor | Unary::Ceil | Unary::Not => 0.0,
    }
}

type Pair = (Option<Tensor>, Option<Tensor>);

/// Partial derivatives (d out/d a, d out/d b) at one element.
#[inline]
fn partials(op: Binary, a: f32, b: f32, y: f32) -> (f32, f32) {
    match op {
        Binary::Add => (1.0, 1.0),
        Binary::Sub => (1.0, -1.0),
        Binary::Mul => (b, a),
        Binary::Div => (1.0 / b, -y / b),
        // d/db a^b = a^b ln a, defined for a > 0 only (0 elsewhere, as PyTorch for a = 0).
        Binary::Pow => {
            let da = if b == 0.0 { 0.0 } else { b * a.powf(b - 1.0) };
            (da, if a > 0.0 { y * a.ln() } else { 0.0 })
        }
        // Ties route the gradient to A.
        Binary::Max => {
            if a >= b {
                (1.0, 0.0)
            } else {
                (0.0, 1.0)
            }
        }
        Binary::Min => {
            if a <= b {
                (1.0, 0.0)
            } else {
                (0.0, 1.0)
            }
        }
        Binary::PRelu => {
            if a < 0.0 {
                (b, a)
            } else {
                (1.0, 0.0)
            }
        }
        _ => (0.0, 0.0),
    }
}

fn binary(op: Binary, a: &Tensor, b: &Tensor, y: &Tensor, g: &Tensor, wa: bool, wb: bool) -> Result<Pair, String> {
    if !wa && !wb {
        return Ok((None, None));
    }
    let (av, bv, yv, gv) = (f32s(a, "A")?, f32s(b, "B")?, f32s(y, "Y")?, f32s(g, "gradient")?);
    let osh = g.shape();
    let n = gv.len();
    // Gradients at the broadcast shape, summed back to each operand's shape afterwards.
    let (mut fa, mut fb) = (vec![0f32; if wa { n } else { 0 }], vec![0f32; if wb { n } else { 0 }]);
    let (sa, sb) = (broadcast_strides(a.shape(), osh), broadcast_strides(b.shape(), osh));
    for_each_offsets(osh, [&sa, &sb], |i, [ia, ib]| {
        let (pa, pb) = partials(op, av[ia], bv[ib], yv[i]);
        if wa {
            fa[i] = gv[i] * pa;
        }
        if wb {
            fb[i] = gv[i] * pb;
        }
    });
    Ok((wa.then(|| reduce_to_shape(&fa, osh, a.shape())), wb.then(|| reduce_to_shape(&fb, osh, b.shape()))))
}
