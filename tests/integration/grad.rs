//! Finite-difference checks of every vector-Jacobian product: with L = sum_k w_k . outputs[k]
//! for fixed random w, the analytic dL/dinput from `vjp(grads = w)` must match central
//! differences of the forward CPU kernel (f32 forward, f64 accumulation of L).

use alembic::backend::cpu::kernels::eval;
use alembic::distill::grad::vjp;
use alembic::ir::{AutoPad, Binary, Op, PadMode, Unary, Window};
use alembic::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EPS: f32 = 1e-2;
const RTOL: f64 = 2e-2;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform values in [lo, hi).
fn rand_t(r: &mut StdRng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), (0..n).map(|_| r.random_range(lo..hi)).collect::<Vec<f32>>()).unwrap()
}

/// Uniform values in [lo, hi) kept at least `margin` away from every kink.
fn away(r: &mut StdRng, shape: &[usize], lo: f32, hi: f32, kinks: &[f32], margin: f32) -> Tensor {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| loop {
            let x = r.random_range(lo..hi);
            if kinks.iter().all(|k| (x - k).abs() > margin) {
                break x;
            }
        })
        .collect::<Vec<f32>>();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

/// Distinct values spaced 0.1 apart in random order (no ties within a max window).
fn distinct(r: &mut StdRng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.1).collect();
    for i in (1..n).rev() {
        v.swap(i, r.random_range(0..=i));
    }
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

/// Values 0.2k + offset for random k in -10..10.
fn grid(r: &mut StdRng, shape: &[usize], offset: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(
        shape.to_vec(),
        (0..n).map(|_| r.random_range(-10..10) as f32 * 0.2 + offset).collect::<Vec<f32>>(),
    )
    .unwrap()
}

fn ints(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
}

fn i1(v: &[i64]) -> Option<Tensor> {
    Some(ints(&[v.len()], v))
}

fn forward(op: &Op, inputs: &[Option<Tensor>], n_out: usize) -> Vec<Tensor> {
    let refs: Vec<Option<&Tensor>> = inputs.iter().map(|t| t.as_ref()).collect();
    let mut outs: Vec<Tensor> = (0..n_out).map(|_| Tensor::empty(DType::F32)).collect();
    eval(op, &refs, &mut outs, &mut Vec::new()).unwrap_or_else(|e| panic!("{} forward: {e}", op.name()));
    outs
}

fn loss(outs: &[Tensor], w: &[Tensor]) -> f64 {
    w.iter().zip(outs).map(|(w, y)| w.to_f64_vec().iter().zip(y.to_f64_vec()).map(|(a, b)| a * b).sum::<f64>()).sum()
}

/// Checks the gradients of inputs `wrt` of `op`, weighting the first `n_grad` of its `n_out`
/// outputs.
fn check_n(op: &Op, inputs: Vec<Option<Tensor>>, wrt: &[usize], n_out: usize, n_grad: usize, seed: u64) {
    let mut r = rng(seed ^ 0x5eed);
    let outs = forward(op, &inputs, n_out);
    let w: Vec<Tensor> = outs[..n_grad].iter().map(|y| rand_t(&mut r, y.shape(), -1.0, 1.0)).collect();
    let refs: Vec<Option<&Tensor>> = inputs.iter().map(|t| t.as_ref()).collect();
    let orefs: Vec<&Tensor> = outs.iter().collect();
    let mut grefs: Vec<Option<&Tensor>> = w.iter().map(Some).collect();
    grefs.resize(n_out, None);
    let need: Vec<bool> = (0..inputs.len()).map(|i| wrt.contains(&i)).collect();
    let got = vjp(op, &refs, &orefs, &grefs, &need).unwrap_or_else(|e| panic!("{} vjp: {e}", op.name()));
    assert_eq!(got.len(), inputs.len(), "{}: one gradient slot per input", op.name());
    for &i in wrt {
        let x = inputs[i].as_ref().unwrap();
        let a = got[i].as_ref().unwrap_or_else(|| panic!("{}: no gradient for input {i}", op.name()));
        assert_eq!(a.shape(), x.shape(), "{}: gradient {i} shape", op.name());
        let a = a.to_f64_vec();
        let mut num = vec![0f64; x.len()];
        for (j, n) in num.iter_mut().enumerate() {
            let mut lr = [0f64; 2];
            for (s, l) in [EPS, -EPS].iter().zip(lr.iter_mut()) {
                let mut inp = inputs.clone();
                let t = inp[i].as_mut().unwrap();
                t.as_mut_slice::<f32>().unwrap()[j] += s;
                *l = loss(&forward(op, &inp, n_out)[..n_grad], &w);
            }
            *n = (lr[0] - lr[1]) / (2.0 * EPS as f64);
        }
        let scale = num.iter().fold(1f64, |m, v| m.max(v.abs()));
        let atol = 2e-3 * scale;
        for (j, (&an, &nu)) in a.iter().zip(&num).enumerate() {
            assert!(
                (an - nu).abs() <= atol + RTOL * nu.abs(),
                "{} {op:?}: d/d input {i} [{j}] of shape {:?}: analytic {an}, numeric {nu}",
                op.name(),
                x.shape()
            );
        }
    }
}

fn check(op: &Op, inputs: Vec<Option<Tensor>>, wrt: &[usize], seed: u64) {
    check_n(op, inputs, wrt, 1, 1, seed)
}

// ---------------------------------------------------------------- elementwise

fn check_binary(b: Binary, lo: f32, hi: f32, seed: u64) {
    let cases: [(&[usize], &[usize]); 5] =
        [(&[3, 4], &[3, 4]), (&[2, 3, 5], &[5]), (&[2, 1, 3], &[4, 1]), (&[3], &[2, 3, 1]), (&[2, 3], &[])];
    for (k, (sa, sb)) in cases.into_iter().enumerate() {
        let mut r = rng(seed + k as u64);
        let (a, bt) = match b {
            // Kinks where a = b: A on the grid 0.2k, B on the grid 0.2k + 0.1.
            Binary::Max | Binary::Min => (grid(&mut r, sa, 0.0), grid(&mut r, sb, 0.1)),
            Binary::PRelu => (away(&mut r, sa, lo, hi, &[0.0], 0.05), rand_t(&mut r, sb, 0.05, 0.5)),
            Binary::Div => (rand_t(&mut r, sa, lo, hi), away(&mut r, sb, -2.0, 2.0, &[0.0], 0.5)),
            _ => (rand_t(&mut r, sa, lo, hi), rand_t(&mut r, sb, lo, hi)),
        };
        check(&Op::Binary(b), vec![Some(a), Some(bt)], &[0, 1], seed);
    }
}

#[test]
fn grad_add_sub_mul_div() {
    check_binary(Binary::Add, -2.0, 2.0, 1);
    check_binary(Binary::Sub, -2.0, 2.0, 2);
    check_binary(Binary::Mul, -2.0, 2.0, 3);
    check_binary(Binary::Div, -2.0, 2.0, 4);
}

#[test]
fn grad_pow() {
    check_binary(Binary::Pow, 0.5, 2.0, 5);
}

#[test]
fn grad_max_min_prelu() {
    check_binary(Binary::Max, -2.0, 2.0, 6);
    check_binary(Binary::Min, -2.0, 2.0, 7);
    // PRelu's slope broadcasts onto X (per channel).
    let mut r = rng(8);
    let x = away(&mut r, &[2, 3, 4], -2.0, 2.0, &[0.0], 0.05);
    check(&Op::Binary(Binary::PRelu), vec![Some(x), Some(rand_t(&mut r, &[3, 1], 0.05, 0.5))], &[0, 1], 8);
    check_binary(Binary::PRelu, -2.0, 2.0, 9);
}

#[test]
fn grad_sum() {
    let mut r = rng(10);
    let ins = vec![
        Some(rand_t(&mut r, &[2, 3, 4], -1.0, 1.0)),
        Some(rand_t(&mut r, &[4], -1.0, 1.0)),
        Some(rand_t(&mut r, &[3, 1], -1.0, 1.0)),
    ];
    check(&Op::Sum, ins, &[0, 1, 2], 10);
}

#[test]
fn grad_where() {
    let mut r = rng(11);
    let c: Vec<bool> = (0..12).map(|_| r.random_bool(0.5)).collect();
    let cond = Tensor::from_vec(vec![3, 4], c).unwrap();
    let ins = vec![Some(cond), Some(rand_t(&mut r, &[2, 3, 4], -1.0, 1.0)), Some(rand_t(&mut r, &[4], -1.0, 1.0))];
    check(&Op::Where, ins, &[1, 2], 11);
}

fn check_unary(u: Unary, lo: f32, hi: f32, kinks: &[f32], seed: u64) {
    for (k, shape) in [&[7][..], &[2, 3, 5]].into_iter().enumerate() {
        let mut r = rng(seed * 10 + k as u64);
        let x = away(&mut r, shape, lo, hi, kinks, 0.05);
        check(&Op::Unary(u.clone()), vec![Some(x)], &[0], seed);
    }
}

#[test]
fn grad_activations() {
    check_unary(Unary::Relu, -2.0, 2.0, &[0.0], 20);
    check_unary(Unary::LeakyRelu { alpha: 0.1 }, -2.0, 2.0, &[0.0], 21);
    check_unary(Unary::Sigmoid, -4.0, 4.0, &[], 22);
    check_unary(Unary::HardSigmoid { alpha: 0.2, beta: 0.5 }, -4.0, 4.0, &[-2.5, 2.5], 23);
    check_unary(Unary::HardSwish, -4.0, 4.0, &[-3.0, 3.0], 24);
    check_unary(Unary::Tanh, -3.0, 3.0, &[], 25);
    check_unary(Unary::Gelu { tanh: false }, -3.0, 3.0, &[], 26);
    check_unary(Unary::Gelu { tanh: true }, -3.0, 3.0, &[], 27);
    check_unary(Unary::Elu { alpha: 0.7 }, -2.0, 2.0, &[0.0], 28);
    check_unary(Unary::Softplus, -4.0, 4.0, &[], 29);
}

#[test]
fn grad_clip() {
    check_unary(Unary::Clip { min: -0.5, max: 0.8 }, -2.0, 2.0, &[-0.5, 0.8], 30);
    let mut r = rng(31);
    let x = away(&mut r, &[3, 5], -2.0, 2.0, &[-1.0, 0.5], 0.05);
    let lo = Tensor::scalar(-1.0f32);
    let hi = Tensor::scalar(0.5f32);
    check(&Op::Clip, vec![Some(x.clone()), Some(lo), Some(hi)], &[0], 31);
    check(&Op::Clip, vec![Some(x), None, Some(Tensor::scalar(0.5f32))], &[0], 32);
}

#[test]
fn grad_math() {
    check_unary(Unary::Erf, -2.0, 2.0, &[], 40);
    check_unary(Unary::Exp, -2.0, 2.0, &[], 41);
    check_unary(Unary::Log, 0.5, 3.0, &[], 42);
    check_unary(Unary::Sqrt, 0.5, 3.0, &[], 43);
    check_unary(Unary::Neg, -2.0, 2.0, &[], 44);
    check_unary(Unary::Abs, -2.0, 2.0, &[0.0], 45);
    check_unary(Unary::Reciprocal, 0.5, 3.0, &[], 46);
}

// ---------------------------------------------------------------- layers

fn window(strides: &[usize], pads: &[usize], dilations: &[usize]) -> Window {
    Window {
        kernel: vec![],
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: dilations.to_vec(),
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    }
}

fn check_conv(xs: &[usize], ws: &[usize], w: Window, group: usize, bias: bool, seed: u64) {
    let mut r = rng(seed);
    let x = rand_t(&mut r, xs, -1.0, 1.0);
    let wt = rand_t(&mut r, ws, -1.0, 1.0);
    let b = bias.then(|| rand_t(&mut r, &[ws[0]], -1.0, 1.0));
    let wrt: &[usize] = if bias { &[0, 1, 2] } else { &[0, 1] };
    check(&Op::Conv { window: w, group }, vec![Some(x), Some(wt), b], wrt, seed);
}

#[test]
fn grad_conv2d() {
    check_conv(&[2, 3, 5, 6], &[4, 3, 3, 3], window(&[], &[], &[]), 1, true, 50);
    check_conv(&[1, 2, 7, 6], &[3, 2, 3, 2], window(&[2, 2], &[1, 0, 1, 1], &[]), 1, true, 51);
    check_conv(&[1, 2, 7, 7], &[2, 2, 3, 3], window(&[1, 2], &[2, 2, 2, 2], &[2, 2]), 1, false, 52);
    let mut same = window(&[2, 2], &[], &[]);
    same.auto_pad = AutoPad::SameUpper;
    check_conv(&[1, 2, 5, 4], &[3, 2, 3, 3], same, 1, true, 53);
}

#[test]
fn grad_conv_groups() {
    // 4 channels in 2 groups, 6 filters.
    check_conv(&[2, 4, 5, 5], &[6, 2, 3, 3], window(&[1, 1], &[1, 1, 1, 1], &[]), 2, true, 54);
    // Depthwise with a channel multiplier of 2, stride 2.
    check_conv(&[1, 3, 6, 5], &[6, 1, 3, 3], window(&[2, 2], &[1, 1, 1, 1], &[]), 3, true, 55);
    // Plain depthwise.
    check_conv(&[2, 3, 5, 5], &[3, 1, 3, 3], window(&[1, 1], &[1, 1, 1, 1], &[]), 3, false, 56);
}

#[test]
fn grad_conv1d() {
    check_conv(&[2, 3, 9], &[4, 3, 3], window(&[2], &[1, 1], &[]), 1, true, 57);
    check_conv(&[1, 4, 11], &[4, 2, 2], window(&[1], &[0, 2], &[3]), 2, true, 58);
}

#[test]
fn grad_batch_norm() {
    let mut r = rng(60);
    let ins = vec![
        Some(rand_t(&mut r, &[2, 3, 4, 3], -2.0, 2.0)),
        Some(rand_t(&mut r, &[3], 0.5, 1.5)),
        Some(rand_t(&mut r, &[3], -1.0, 1.0)),
        Some(rand_t(&mut r, &[3], -0.5, 0.5)),
        Some(rand_t(&mut r, &[3], 0.5, 2.0)),
    ];
    check(&Op::BatchNorm { epsilon: 1e-5 }, ins, &[0, 1, 2, 3, 4], 60);
}

#[test]
fn grad_layer_norm() {
    let mut r = rng(61);
    let op = Op::LayerNorm { axis: -1, epsilon: 1e-5 };
    let ins = vec![
        Some(rand_t(&mut r, &[3, 7], -2.0, 2.0)),
        Some(rand_t(&mut r, &[7], 0.5, 1.5)),
        Some(rand_t(&mut r, &[7], -1.0, 1.0)),
    ];
    check(&op, ins, &[0, 1, 2], 61);
    // Normalising over two axes, scale broadcast along one of them, no bias.
    let op = Op::LayerNorm { axis: 1, epsilon: 1e-5 };
    let ins = vec![Some(rand_t(&mut r, &[2, 3, 4], -2.0, 2.0)), Some(rand_t(&mut r, &[1, 4], 0.5, 1.5)), None];
    check(&op, ins, &[0, 1], 62);
}

#[test]
fn grad_softmax() {
    let mut r = rng(63);
    for (axis, legacy) in [(-1, false), (1, false), (0, false), (1, true)] {
        for log in [false, true] {
            let x = rand_t(&mut r, &[2, 3, 4], -2.0, 2.0);
            let op = if log { Op::LogSoftmax { axis, legacy } } else { Op::Softmax { axis, legacy } };
            check(&op, vec![Some(x)], &[0], 63);
        }
    }
}

fn pool_window(kernel: &[usize], strides: &[usize], pads: &[usize], dil: &[usize], ceil: bool) -> Window {
    Window { kernel: kernel.to_vec(), ceil_mode: ceil, ..window(strides, pads, dil) }
}

#[test]
fn grad_max_pool() {
    let mut r = rng(64);
    let cases = [
        (vec![2, 2, 6, 6], pool_window(&[2, 2], &[2, 2], &[], &[], false)),
        (vec![1, 2, 7, 5], pool_window(&[3, 3], &[2, 1], &[1, 1, 1, 1], &[], true)),
        (vec![1, 1, 7, 7], pool_window(&[2, 2], &[1, 1], &[], &[2, 2], false)),
        (vec![2, 2, 9], pool_window(&[3], &[2], &[1, 1], &[], false)),
    ];
    for (xs, w) in cases {
        let x = distinct(&mut r, &xs);
        check(&Op::MaxPool { window: w.clone(), storage_order: 0 }, vec![Some(x.clone())], &[0], 64);
        // With the Indices output present (no gradient through it).
        check_n(&Op::MaxPool { window: w, storage_order: 0 }, vec![Some(x)], &[0], 2, 1, 65);
    }
}

#[test]
fn grad_average_pool() {
    let mut r = rng(66);
    let cases = [
        (vec![2, 2, 6, 6], pool_window(&[2, 2], &[2, 2], &[], &[], false)),
        (vec![1, 2, 7, 5], pool_window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[], true)),
        (vec![1, 2, 5, 5], pool_window(&[3, 2], &[1, 2], &[1, 0, 0, 1], &[], false)),
        (vec![2, 3, 8], pool_window(&[3], &[2], &[1, 1], &[], false)),
    ];
    for (xs, w) in cases {
        for include in [false, true] {
            let x = rand_t(&mut r, &xs, -1.0, 1.0);
            check(&Op::AveragePool { window: w.clone(), count_include_pad: include }, vec![Some(x)], &[0], 66);
        }
    }
}

#[test]
fn grad_global_pools() {
    let mut r = rng(67);
    check(&Op::GlobalAveragePool, vec![Some(rand_t(&mut r, &[2, 3, 4, 5], -1.0, 1.0))], &[0], 67);
    check(&Op::GlobalMaxPool, vec![Some(distinct(&mut r, &[2, 3, 4, 5]))], &[0], 68);
    check(&Op::GlobalAveragePool, vec![Some(rand_t(&mut r, &[2, 3, 7], -1.0, 1.0))], &[0], 69);
}

// ---------------------------------------------------------------- shape ops

#[test]
fn grad_reshapes() {
    let mut r = rng(70);
    let x = || Some(rand_t(&mut rng(70), &[2, 3, 4], -1.0, 1.0));
    check(&Op::Flatten { axis: 2 }, vec![x()], &[0], 70);
    check(&Op::Reshape { allowzero: false }, vec![x(), i1(&[4, -1])], &[0], 71);
    check(&Op::Identity, vec![x()], &[0], 72);
    check(&Op::Unsqueeze, vec![x(), i1(&[0, 3])], &[0], 73);
    check(&Op::Squeeze, vec![Some(rand_t(&mut r, &[2, 1, 3, 1], -1.0, 1.0)), i1(&[1])], &[0], 74);
    check(&Op::Squeeze, vec![Some(rand_t(&mut r, &[2, 1, 3, 1], -1.0, 1.0)), None], &[0], 75);
    check(&Op::Cast { to: DType::F32, saturate: true }, vec![x()], &[0], 76);
    check(&Op::Cast { to: DType::F64, saturate: true }, vec![x()], &[0], 77);
}

#[test]
fn grad_transpose() {
    let mut r = rng(78);
    check(&Op::Transpose { perm: vec![2, 0, 1] }, vec![Some(rand_t(&mut r, &[2, 3, 4], -1.0, 1.0))], &[0], 78);
    check(&Op::Transpose { perm: vec![] }, vec![Some(rand_t(&mut r, &[3, 5], -1.0, 1.0))], &[0], 79);
    check(&Op::Transpose { perm: vec![0, 2, 3, 1] }, vec![Some(rand_t(&mut r, &[2, 3, 1, 2], -1.0, 1.0))], &[0], 80);
}

#[test]
fn grad_concat_split() {
    let mut r = rng(81);
    let ins = vec![
        Some(rand_t(&mut r, &[2, 1, 3], -1.0, 1.0)),
        Some(rand_t(&mut r, &[2, 3, 3], -1.0, 1.0)),
        Some(rand_t(&mut r, &[2, 2, 3], -1.0, 1.0)),
    ];
    check(&Op::Concat { axis: 1 }, ins, &[0, 1, 2], 81);
    let ins = vec![Some(rand_t(&mut r, &[3, 2], -1.0, 1.0)), Some(rand_t(&mut r, &[3, 1], -1.0, 1.0))];
    check(&Op::Concat { axis: -1 }, ins, &[0, 1], 82);
    let x = rand_t(&mut r, &[2, 6, 3], -1.0, 1.0);
    check_n(&Op::Split { axis: 1, outputs: 3 }, vec![Some(x.clone()), i1(&[1, 3, 2])], &[0], 3, 3, 83);
    check_n(&Op::Split { axis: -1, outputs: 3 }, vec![Some(x.clone()), None], &[0], 3, 3, 84);
    // Only the first output carries a gradient.
    check_n(&Op::Split { axis: 0, outputs: 2 }, vec![Some(x), None], &[0], 2, 1, 85);
}

#[test]
fn grad_slice() {
    let mut r = rng(86);
    let x = || Some(rand_t(&mut rng(86), &[4, 5, 6], -1.0, 1.0));
    check(&Op::Slice, vec![x(), i1(&[1, 0]), i1(&[3, -1]), None, None], &[0], 86);
    check(&Op::Slice, vec![x(), i1(&[-1, 1]), i1(&[i64::MIN, 6]), i1(&[2, 0]), i1(&[-2, 2])], &[0], 87);
    check(&Op::Slice, vec![x(), i1(&[0]), i1(&[100]), i1(&[-2]), i1(&[3])], &[0], 88);
    let _ = &mut r;
}

#[test]
fn grad_gather() {
    let mut r = rng(89);
    // Embedding lookup with repeated and negative ids.
    let table = rand_t(&mut r, &[5, 3], -1.0, 1.0);
    let ids = ints(&[2, 3], &[0, 4, 2, 2, -1, 0]);
    check(&Op::Gather { axis: 0 }, vec![Some(table), Some(ids)], &[0], 89);
    let x = rand_t(&mut r, &[2, 4, 3], -1.0, 1.0);
    check(&Op::Gather { axis: 1 }, vec![Some(x.clone()), Some(ints(&[3], &[3, 1, 3]))], &[0], 90);
    check(&Op::Gather { axis: -1 }, vec![Some(x), Some(Tensor::scalar(1i64))], &[0], 91);
}

#[test]
fn grad_pad() {
    let mut r = rng(92);
    let x = rand_t(&mut r, &[2, 3, 4], -1.0, 1.0);
    let value = Some(Tensor::scalar(0.5f32));
    check(
        &Op::Pad { mode: PadMode::Constant },
        vec![Some(x.clone()), i1(&[0, 1, 2, 1, 0, 1]), value.clone(), None],
        &[0],
        92,
    );
    // Negative pads crop; axes select a subset.
    check(
        &Op::Pad { mode: PadMode::Constant },
        vec![Some(x.clone()), i1(&[-1, 2, 1, -2]), None, i1(&[1, -1])],
        &[0],
        93,
    );
    for mode in [PadMode::Reflect, PadMode::Edge, PadMode::Wrap] {
        check(&Op::Pad { mode }, vec![Some(x.clone()), i1(&[0, 2, 1, 0, 1, 3]), None, None], &[0], 94);
    }
}

#[test]
fn grad_expand() {
    let mut r = rng(95);
    check(&Op::Expand, vec![Some(rand_t(&mut r, &[3, 1], -1.0, 1.0)), i1(&[2, 3, 4])], &[0], 95);
    check(&Op::Expand, vec![Some(rand_t(&mut r, &[1, 4], -1.0, 1.0)), i1(&[3, 1])], &[0], 96);
}

#[test]
fn grad_errors_are_messages() {
    let x = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
    let y = x.clone();
    let e = vjp(&Op::Unary(Unary::Relu), &[Some(&x)], &[&y], &[None], &[true]).unwrap_err();
    assert!(e.contains("f32"), "{e}");
    let e = vjp(&Op::Lrn { size: 3, alpha: 1e-4, beta: 0.75, bias: 1.0 }, &[Some(&x)], &[&y], &[None], &[true])
        .unwrap_err();
    assert!(e.contains("no gradient"), "{e}");
}

#[test]
fn grad_piecewise_constant_ops_pass_none() {
    let x = Tensor::from_vec(vec![3], vec![0.5f32, 1.5, -2.5]).unwrap();
    let b = Tensor::from_vec(vec![3], vec![true, false, true]).unwrap();
    let s = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
    for (op, y) in [
        (Op::Unary(Unary::Floor), &x),
        (Op::Binary(Binary::Less), &b),
        (Op::Shape { start: 0, end: None }, &s),
        (Op::ArgMax { axis: 0, keepdims: true, select_last_index: false }, &s),
    ] {
        let n = if matches!(op, Op::Binary(_)) { 2 } else { 1 };
        let ins = vec![Some(&x); n];
        let got = vjp(&op, &ins, &[y], &[None], &vec![true; n]).unwrap();
        assert!(got.iter().all(|g| g.is_none()), "{op:?}");
    }
}

#[test]
fn grad_reduce() {
    use alembic::ir::ReduceKind::*;
    let mut r = rng(100);
    for kind in [Sum, Mean, Max, Min, Prod, L2, SumSquare, LogSumExp] {
        for (shape, axes, keepdims) in
            [(&[3, 4][..], Some(&[1i64][..]), true), (&[2, 3, 4], Some(&[0, -1]), false), (&[2, 3], None, false)]
        {
            let x = match kind {
                Max | Min => distinct(&mut r, shape),
                Prod => away(&mut r, shape, 0.5, 1.5, &[], 0.0),
                _ => rand_t(&mut r, shape, -1.0, 1.0),
            };
            let op = Op::Reduce { kind, keepdims, noop_with_empty_axes: false };
            check(&op, vec![Some(x), axes.map(|a| ints(&[a.len()], a))], &[0], 100);
        }
    }
    let op = Op::Reduce { kind: Sum, keepdims: true, noop_with_empty_axes: true };
    check(&op, vec![Some(rand_t(&mut r, &[2, 3], -1.0, 1.0)), None], &[0], 101);
}

#[test]
fn grad_tile_gather_elements_dropout() {
    let mut r = rng(102);
    check(&Op::Tile, vec![Some(rand_t(&mut r, &[2, 3], -1.0, 1.0)), i1(&[2, 3])], &[0], 102);
    let idx = ints(&[2, 2, 3], &[0, 3, 1, 2, 2, 0, -1, 1, 1, 0, 3, 3]);
    check(&Op::GatherElements { axis: 1 }, vec![Some(rand_t(&mut r, &[2, 4, 3], -1.0, 1.0)), Some(idx)], &[0], 103);
    check_n(&Op::Dropout, vec![Some(rand_t(&mut r, &[2, 3], -1.0, 1.0))], &[0], 2, 1, 104);
}
