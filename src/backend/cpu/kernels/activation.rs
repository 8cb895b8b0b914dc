//! Activations over f32 slices, with the function chosen once per call rather than per element
//! so the loops vectorize. Shared by the standalone Unary f32 path and the fused epilogues of
//! Conv/Gemm (an activation that is the only reader of their output runs inside them).

use super::elementwise::unary_f32;
use crate::ir::Unary;

/// Expands `$each!(closure)` for the activation `$u`; the common ones get their own closure
/// (same formulas as `unary_f32`, so fused and standalone results are bit-identical).
macro_rules! dispatch {
    ($u:expr, $each:ident) => {
        match *$u {
            Unary::Relu => $each!(|x: f32| x.max(0.0)),
            Unary::Clip { min, max } => $each!(|x: f32| x.max(min).min(max)),
            Unary::HardSwish => $each!(|x: f32| x * (x * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0)),
            Unary::HardSigmoid { alpha, beta } => $each!(|x: f32| (alpha * x + beta).clamp(0.0, 1.0)),
            Unary::LeakyRelu { alpha } => $each!(|x: f32| if x < 0.0 { alpha * x } else { x }),
            ref u => $each!(|x: f32| unary_f32(u, x)),
        }
    };
}

/// Runs `$body` compiled for AVX2 where the CPU has it (8 lanes instead of SSE2's 4; picked at
/// run time), else for the baseline target.
macro_rules! multiversion {
    ($name:ident ($($arg:ident: $t:ty),*) $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $name($($arg: $t),*) $body
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                return unsafe { $name($($arg),*) };
            }
        }
        fn portable($($arg: $t),*) $body
        portable($($arg),*)
    }};
}

/// `v[i] = u(v[i])`.
pub fn apply(u: &Unary, v: &mut [f32]) {
    multiversion!(avx2(u: &Unary, v: &mut [f32]) {
        macro_rules! each {
            ($f:expr) => {{
                let f = $f;
                for x in v.iter_mut() {
                    *x = f(*x);
                }
            }};
        }
        dispatch!(u, each)
    })
}

/// `out[i] = u(x[i])`.
pub fn map(u: &Unary, x: &[f32], out: &mut [f32]) {
    multiversion!(avx2(u: &Unary, x: &[f32], out: &mut [f32]) {
        macro_rules! each {
            ($f:expr) => {{
                let f = $f;
                for (o, &x) in out.iter_mut().zip(x) {
                    *o = f(x);
                }
            }};
        }
        dispatch!(u, each)
    })
}

/// `v[i] = u(v[i] + bias)`, the conv/GEMM epilogue for one output channel.
pub fn bias_apply(u: Option<&Unary>, bias: f32, v: &mut [f32]) {
    multiversion!(avx2(u: Option<&Unary>, bias: f32, v: &mut [f32]) {
        match u {
            None if bias != 0.0 => v.iter_mut().for_each(|x| *x += bias),
            None => {}
            Some(u) => {
                macro_rules! each {
                    ($f:expr) => {{
                        let f = $f;
                        for x in v.iter_mut() {
                            *x = f(*x + bias);
                        }
                    }};
                }
                dispatch!(u, each)
            }
        }
    })
}

/// Activations a Conv/Gemm may absorb: pure elementwise functions of one f32.
pub fn fusable(u: &Unary) -> bool {
    !matches!(u, Unary::Not)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scalar_form() {
        let xs: Vec<f32> = (-40..40).map(|i| i as f32 * 0.25).collect();
        for u in [
            Unary::Relu,
            Unary::HardSwish,
            Unary::HardSigmoid { alpha: 0.2, beta: 0.5 },
            Unary::Clip { min: 0.0, max: 6.0 },
            Unary::LeakyRelu { alpha: 0.1 },
            Unary::Sigmoid,
        ] {
            let mut out = vec![0.0; xs.len()];
            map(&u, &xs, &mut out);
            let mut inplace = xs.clone();
            apply(&u, &mut inplace);
            let mut biased: Vec<f32> = xs.iter().map(|x| x - 1.5).collect();
            bias_apply(Some(&u), 1.5, &mut biased);
            for (i, &x) in xs.iter().enumerate() {
                assert_eq!(out[i], unary_f32(&u, x), "{u:?}({x})");
                assert_eq!(inplace[i], out[i], "{u:?}({x}) in place");
                assert_eq!(biased[i], out[i], "{u:?}({x}) with bias");
            }
        }
    }
}
