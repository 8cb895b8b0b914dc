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

/// An activation a kernel applies to its results in registers, before the one store (the
/// ones MobileNet-style models fuse into their convs). Same formulas as [`apply`], so the
/// results are bit-identical to running it as a pass afterwards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InRegister {
    Identity,
    Relu,
    Clip { min: f32, max: f32 },
    HardSwish,
    HardSigmoid { alpha: f32, beta: f32 },
}

impl InRegister {
    /// The in-register form of `u` (`Identity` for none); `None` when `u` must run as a pass.
    pub fn of(u: Option<&Unary>) -> Option<InRegister> {
        Some(match u {
            None => InRegister::Identity,
            Some(Unary::Relu) => InRegister::Relu,
            Some(&Unary::Clip { min, max }) => InRegister::Clip { min, max },
            Some(Unary::HardSwish) => InRegister::HardSwish,
            Some(&Unary::HardSigmoid { alpha, beta }) => InRegister::HardSigmoid { alpha, beta },
            Some(_) => return None,
        })
    }

    #[inline(always)]
    pub fn scalar(self, x: f32) -> f32 {
        match self {
            InRegister::Identity => x,
            InRegister::Relu => x.max(0.0),
            InRegister::Clip { min, max } => x.max(min).min(max),
            InRegister::HardSwish => x * (x * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0),
            InRegister::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
        }
    }

    /// [`Self::scalar`] on 8 lanes. `maxps`/`minps` return their second operand when either
    /// is NaN: the operand orders below give `f32::max`/`min`'s NaN results for Relu and Clip
    /// and keep NaN through `clamp` as Rust does.
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2(self, x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let clamp01 = |t| _mm256_min_ps(_mm256_set1_ps(1.0), _mm256_max_ps(_mm256_setzero_ps(), t));
        match self {
            InRegister::Identity => x,
            InRegister::Relu => _mm256_max_ps(x, _mm256_setzero_ps()),
            InRegister::Clip { min, max } => _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(min)), _mm256_set1_ps(max)),
            InRegister::HardSwish => {
                let t = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.0 / 6.0)), _mm256_set1_ps(0.5));
                _mm256_mul_ps(x, clamp01(t))
            }
            InRegister::HardSigmoid { alpha, beta } => {
                clamp01(_mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(alpha), x), _mm256_set1_ps(beta)))
            }
        }
    }

    /// [`Self::avx2`] on 16 lanes: the same operations in the same order (so the same bits).
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(self, x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let clamp01 = |t| _mm512_min_ps(_mm512_set1_ps(1.0), _mm512_max_ps(_mm512_setzero_ps(), t));
        match self {
            InRegister::Identity => x,
            InRegister::Relu => _mm512_max_ps(x, _mm512_setzero_ps()),
            InRegister::Clip { min, max } => _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(min)), _mm512_set1_ps(max)),
            InRegister::HardSwish => {
                let t = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.0 / 6.0)), _mm512_set1_ps(0.5));
                _mm512_mul_ps(x, clamp01(t))
            }
            InRegister::HardSigmoid { alpha, beta } => {
                clamp01(_mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(alpha), x), _mm512_set1_ps(beta)))
            }
        }
    }
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
            let reg = InRegister::of(Some(&u));
            for (i, &x) in xs.iter().enumerate() {
                assert_eq!(out[i], unary_f32(&u, x), "{u:?}({x})");
                if let Some(r) = reg {
                    assert_eq!(r.scalar(x).to_bits(), out[i].to_bits(), "{u:?}({x}) in register");
                }
                assert_eq!(inplace[i], out[i], "{u:?}({x}) in place");
                assert_eq!(biased[i], out[i], "{u:?}({x}) with bias");
            }
        }
    }

    /// The 8-lane form gives the scalar form's values, NaN, infinities and zeros included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn in_register_lanes_match_scalar() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        let mut xs: Vec<f32> = (-30..30).map(|i| i as f32 * 0.37).collect();
        xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 3.0, -3.0, 1e30]);
        xs.resize(xs.len().div_ceil(8) * 8, 0.5);
        for r in [
            InRegister::Identity,
            InRegister::Relu,
            InRegister::Clip { min: -1.0, max: 6.0 },
            InRegister::HardSwish,
            InRegister::HardSigmoid { alpha: 0.2, beta: 0.5 },
        ] {
            for chunk in xs.chunks_exact(8) {
                let mut got = [0f32; 8];
                // SAFETY: AVX2 checked above; 8 floats in and out.
                unsafe { _mm256_storeu_ps(got.as_mut_ptr(), r.avx2(_mm256_loadu_ps(chunk.as_ptr()))) };
                for (&g, &x) in got.iter().zip(chunk) {
                    let e = r.scalar(x);
                    // == : the sign of `f32::max(-0.0, 0.0)` is unspecified (the scalar form gives
                    // -0.0 in debug builds).
                    assert!(g == e || (g.is_nan() && e.is_nan()), "{r:?}({x}): {g} vs {e}");
                }
            }
        }
    }
}
