//! Tests of the w8a8 kernels: exact integer references, both code paths, the tiled path
//! bit-identical to the dot-product path.

use super::*;
use crate::quant::Precision;

fn vals(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn integer_gemm_is_exact_for_every_tail() {
    // k covers 32-wide blocks plus every tail length class; n not a multiple of 4.
    for (m, n, k) in [(3, 7, 1), (2, 5, 31), (4, 9, 32), (1, 6, 77), (5, 4, 144)] {
        let a: Vec<i8> = vals(m * k, 1).iter().map(|v| (v * 127.0) as i8).collect();
        let w: Vec<i8> = vals(n * k, 2).iter().map(|v| (v * 127.0) as i8).collect();
        let mut got = vec![0i32; m * n];
        gemm_i8(m, n, k, &a, &w, |i, j, d| got[i * n + j] = d);
        for i in 0..m {
            for j in 0..n {
                let e: i32 = (0..k).map(|t| a[i * k + t] as i32 * w[j * k + t] as i32).sum();
                assert_eq!(got[i * n + j], e, "{m}x{n}x{k} at {i},{j}");
                assert_eq!(dot_portable(&a[i * k..][..k], &w[j * k..][..k]), e);
            }
        }
    }
    // Extremes: 127 * 127 everywhere and alternating signs never saturate.
    let a = vec![127i8; 64];
    let w: Vec<i8> = (0..256).map(|i| if i % 3 == 0 { -127 } else { 127 }).collect();
    let mut got = [0i32; 4];
    gemm_i8(1, 4, 64, &a, &w, |_, j, d| got[j] = d);
    for (j, &g) in got.iter().enumerate() {
        assert_eq!(g, (0..64).map(|t| 127 * w[j * 64 + t] as i32).sum::<i32>());
    }
    // -128 activations (a static scale saturating, as QuantizeLinear) with +-127 weights:
    // pair sums reach 2 * 128 * 127 = 32512, still below i16's 32767.
    let a: Vec<i8> = (0..70).map(|i| if i % 5 == 4 { 127 } else { -128 }).collect();
    let w: Vec<i8> = (0..280).map(|i| if i % 7 == 0 { 127 } else { -127 }).collect();
    let mut got = [0i32; 4];
    gemm_i8(1, 4, 70, &a, &w, |_, j, d| got[j] = d);
    for (j, &g) in got.iter().enumerate() {
        let e: i32 = (0..70).map(|t| a[t] as i32 * w[j * 70 + t] as i32).sum();
        assert_eq!((g, dot_portable(&a, &w[j * 70..][..70])), (e, e), "row {j}");
    }
}

#[test]
fn fast_rounding_matches_round_ties_even() {
    let mut xs = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e30, -1e30, 0.49999997, -0.5, 2.5, -2.5];
    xs.extend((-2600..=2600).map(|i| i as f32 * 0.05));
    xs.extend((-300..=300).map(|i| i as f32 + 0.5));
    for x in xs {
        let want = x.round_ties_even().clamp(QMIN, QMAX) as i8;
        assert_eq!(q8(x), want, "{x}");
    }
}

#[test]
fn static_scale_saturates_like_quantize_linear() {
    // QuantizeLinear(int8): round half to even, saturate to [-128, 127].
    let mut q = [0i8; 6];
    let s = quantize_row(&[-1000.0, -128.4, -127.6, 126.5, 127.5, 1000.0], Some(1.0), &mut q);
    assert_eq!((s, q), (1.0, [-128, -128, -128, 126, 127, 127]));
    // A per-row scale stays symmetric: the row's extreme maps to -127.
    let s = quantize_row(&[-2.0, 1.0], None, &mut q[..2]);
    assert_eq!((s, &q[..2]), (2.0 / 127.0, &[-127i8, 64][..]));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_row_quantizers_match_the_scalar_one() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        println!("skipped: no AVX2 on this CPU");
        return;
    }
    // Lengths around the 8-lane step; ties (x.5 after scaling), NaN, zeros, saturation.
    let mut rows: Vec<(Vec<f32>, Option<f32>)> = Vec::new();
    for len in [0, 1, 7, 8, 9, 15, 16, 17, 23, 33, 64, 70] {
        rows.push((vals(len, len as u32 + 1), None));
        rows.push((vals(len, len as u32 + 2).iter().map(|v| v * 300.0).collect(), Some(1.0)));
    }
    rows.push((vec![0.0; 12], None));
    rows.push((vec![f32::NAN, 1.0, -2.0, 0.5, 1.5, -0.5, 2.5, 3.5, f32::NAN, -1.5], Some(1.0)));
    rows.push((vec![1.0, f32::NAN, -127.0, 63.5, 64.5, -63.5, 0.0, 5.0, 6.0, 7.0, 8.0], None));
    for (row, fixed) in &rows {
        let (mut want, mut got) = (vec![0i8; row.len()], vec![0i8; row.len()]);
        let s = quantize_row(row, *fixed, &mut want);
        // SAFETY: AVX2 was detected above.
        let (t, sum) = unsafe { avx2::quantize_row(row, *fixed, &mut got) };
        assert_eq!((s.to_bits(), &want), (t.to_bits(), &got), "row {row:?}, fixed {fixed:?}");
        assert_eq!(sum, want.iter().map(|&v| v as i32).sum::<i32>());
        if std::arch::is_x86_feature_detected!("avx512f") {
            let mut got = vec![0i8; row.len()];
            // SAFETY: AVX-512F was detected.
            let (t, sum) = unsafe { avx512::quantize_row(row, *fixed, &mut got) };
            assert_eq!((s.to_bits(), &want), (t.to_bits(), &got), "avx512: row {row:?}, fixed {fixed:?}");
            assert_eq!(sum, want.iter().map(|&v| v as i32).sum::<i32>(), "avx512 sum");
        } else {
            println!("AVX-512 row quantizer skipped: no AVX-512F on this CPU");
        }
    }
}

#[test]
fn w8a8_gemm_close_to_f32() {
    let (m, n, k) = (5, 11, 70);
    let (a, wf) = (vals(m * k, 3), vals(n * k, 4));
    let w = QWeight::quantize(&wf, n, k, Precision::W8a8).unwrap();
    let mut o = vec![0.0; m * n];
    qgemm_w8a8(&w, &a, m, 1.0, false, &mut o, &mut Vec::new()).unwrap();
    for i in 0..m {
        for j in 0..n {
            let e: f32 = (0..k).map(|t| a[i * k + t] * wf[j * k + t]).sum();
            // Two half-steps of 1/254 relative to the row maxima, summed over k terms.
            let bound = k as f32 * 2.0 / 254.0 * 1.01;
            assert!((o[i * n + j] - e).abs() <= bound * 0.25, "{i},{j}: {} vs {e}", o[i * n + j]);
        }
    }
}

#[test]
fn w8a8_conv_matches_f32_conv_on_dequantized_weights() {
    use crate::ir::{AutoPad, Window};
    // Odd sizes, padding, stride 2, dilation, two groups, batch 2.
    let (nb, c, m, h, wd, kh, kw, group) = (2, 4, 6, 7, 5, 3, 2, 2);
    let window = Window {
        kernel: vec![],
        strides: vec![2, 1],
        pads: vec![1, 0, 1, 1],
        dilations: vec![1, 2],
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    };
    let wshape = vec![m, c / group, kh, kw];
    let k = c / group * kh * kw;
    let wf = vals(m * k, 5);
    let q = QWeight::quantize(&wf, m, k, Precision::W8a8).unwrap();
    let x = Tensor::from_vec(vec![nb, c, h, wd], vals(nb * c * h * wd, 6)).unwrap();
    let b = Tensor::from_vec(vec![m], vals(m, 7)).unwrap();
    let op = Op::QConv { window: window.clone(), group, w: std::sync::Arc::new(q.clone()), wshape: wshape.clone() };
    let mut got = vec![Tensor::placeholder()];
    super::super::eval(&op, &[Some(&x), Some(&b)], &mut got, &mut Vec::new()).unwrap();
    let wt = Tensor::from_vec(wshape, q.dequantize()).unwrap();
    let mut want = vec![Tensor::placeholder()];
    let conv = Op::Conv { window, group };
    super::super::eval(&conv, &[Some(&x), Some(&wt), Some(&b)], &mut want, &mut Vec::new()).unwrap();
    assert_eq!(got[0].shape(), want[0].shape());
    let (g, e) = (got[0].as_slice::<f32>().unwrap(), want[0].as_slice::<f32>().unwrap());
    // Inputs in [-1, 1]: half a step of 1/127 per tap, times |w| <= 1, over k taps.
    let bound = k as f32 / 254.0;
    let worst = g.iter().zip(e).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(worst <= bound, "max |diff| {worst} > {bound}");
    assert!(worst > 0.0, "activations were not quantized");
}

/// A w8a8 weight with a static activation scale (activations saturate to -128 / 127).
fn with_static_scale(q: &QWeight, s: f32) -> QWeight {
    let QData::W8a8 { q: v, scales, .. } = &q.data else { unreachable!() };
    QWeight { n: q.n, k: q.k, data: QData::W8a8 { q: v.clone(), scales: scales.clone(), act_scale: Some(s) } }
}

/// The tiled QGemm gives exactly the per-output dot-product path's floats, on every body:
/// m = 1 (4-panel GEMV tile) and m past one row tile, k tails, n past whole panels, C, and
/// a static scale that saturates.
#[test]
fn tiled_qgemm_is_bit_identical() {
    for (m, n, k) in [(1, 70, 37), (1, 5, 1), (2, 17, 7), (7, 33, 64), (13, 16, 130)] {
        let (a, wf) = (vals(m * k, 8), vals(n * k, 9));
        let q = QWeight::quantize(&wf, n, k, Precision::W8a8).unwrap();
        let p = i8tile::PackedCols::pack(parts(&q).unwrap().0, n, k);
        let at = Tensor::from_vec(vec![m, k], a.clone()).unwrap();
        let ct = Tensor::from_vec(vec![n], vals(n, 10)).unwrap();
        for (w, c) in [(q.clone(), None), (with_static_scale(&q, 0.004), Some(&ct))] {
            let mut want = vec![0.0; m * n];
            if let Some(c) = c {
                want.iter_mut().enumerate().for_each(|(i, y)| *y = 2.0 * c.as_slice::<f32>().unwrap()[i % n]);
            }
            qgemm_w8a8(&w, &a, m, 0.5, c.is_some(), &mut want, &mut Vec::new()).unwrap();
            for isa in i8tile::Isa::available() {
                let mut out = Tensor::placeholder();
                qgemm_packed_on(isa, &w, &p, &at, c, 0.5, 2.0, &mut out, &mut Vec::new()).unwrap();
                assert_eq!(out.shape(), &[m, n]);
                assert_eq!(out.as_slice::<f32>().unwrap(), &want[..], "{isa:?} {m}x{n}x{k}");
            }
        }
    }
}

/// The tiled QConv gives exactly [`qconv_w8a8`]'s floats: 3x3 padded strided dilated, two
/// groups, batch 2, batches split by images, a direct 1x1, positions past whole panels, a single position (the narrow
/// fallback), each layout of positions in the padded image, signed and non-negative inputs, a
/// NaN input, a static scale, fused activations.
#[test]
fn tiled_qconv_is_bit_identical() {
    use crate::ir::{Unary, Window};
    let win = Window::square;
    // (batch, c_in, c_out, h, w, kernel, stride, pad, dilation, group)
    for (nb, c, m, h, wd, kk, s, pd, d, group) in [
        (2, 4, 14, 9, 7, 3, 2, 1, 1, 2),
        (1, 3, 7, 11, 5, 3, 1, 1, 2, 1),
        (2, 13, 9, 5, 6, 1, 1, 0, 1, 1),
        (1, 6, 5, 1, 1, 1, 1, 0, 1, 1),
        // Read from the padded image: 8-wide rows (runs of 8), 4-wide rows (two runs of 4),
        // rows wider than a panel, 5-wide rows (gathers); a strided 1x1 (im2col).
        (1, 16, 8, 8, 8, 3, 1, 1, 1, 1),
        (2, 8, 6, 4, 4, 3, 1, 1, 1, 1),
        (1, 3, 5, 3, 20, 3, 1, 1, 1, 1),
        (1, 4, 6, 5, 5, 3, 1, 1, 1, 1),
        (1, 5, 4, 7, 9, 1, 2, 0, 1, 1),
        // Batches with enough work to split by images over the pool (on 2+ cores).
        (4, 32, 48, 16, 16, 3, 1, 1, 1, 1),
        (3, 64, 40, 12, 12, 1, 1, 0, 1, 1),
    ] {
        let window = win(s, pd, d);
        let wshape = vec![m, c / group, kk, kk];
        let k = c / group * kk * kk;
        let q = QWeight::quantize(&vals(m * k, 11), m, k, Precision::W8a8).unwrap();
        let p = i8tile::PackedRows::pack(parts(&q).unwrap().0, group, m / group, k);
        let b = Tensor::from_vec(vec![m], vals(m, 13)).unwrap();
        // A signed input, and a non-negative one (a ReLU's output: the AVX2 tile skips its sign
        // steps on those patches).
        for nonneg in [false, true] {
            let mut xv = vals(nb * c * h * wd, 12);
            if nonneg {
                xv.iter_mut().for_each(|v| *v = v.abs());
            }
            // Non-finite inputs: NaN is skipped by the scale's max and packs as 0, as im2col's does.
            xv[1] = f32::NAN;
            let x = Tensor::from_vec(vec![nb, c, h, wd], xv).unwrap();
            for (w, bias, act) in [
                (q.clone(), Some(&b), None),
                (with_static_scale(&q, 0.005), None, Some(Unary::Relu)),
                // In the tile's registers, and as a pass after it.
                (q.clone(), Some(&b), Some(Unary::HardSwish)),
                (q.clone(), Some(&b), Some(Unary::Sigmoid)),
            ] {
                let op = Op::QConv { window: window.clone(), group, w: std::sync::Arc::new(w), wshape: wshape.clone() };
                let ins = [Some(&x), bias];
                let mut want = vec![Tensor::placeholder()];
                qconv_w8a8(&op, &ins, &mut want, &mut Vec::new()).unwrap();
                if let Some(u) = &act {
                    crate::backend::cpu::kernels::activation::apply(u, want[0].as_mut_slice::<f32>().unwrap());
                }
                for isa in i8tile::Isa::available() {
                    let mut got = vec![Tensor::placeholder()];
                    qconv_packed_on(isa, &op, act.as_ref(), &p, &ins, &mut got, &mut Vec::new()).unwrap();
                    assert_eq!(got[0].shape(), want[0].shape());
                    let (g, e) = (got[0].as_slice::<f32>().unwrap(), want[0].as_slice::<f32>().unwrap());
                    assert_eq!(g, e, "{isa:?} conv {kk}x{kk} c {c} m {m} group {group} nonneg {nonneg}");
                }
            }
        }
    }
}
