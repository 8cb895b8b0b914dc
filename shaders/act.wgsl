// Activation functions shared by the elementwise, GEMM and conv kernels (prepended to them).
// Codes match `backend::wgpu::kernels::act_code`; `fa`, `fb` carry the parameters.

fn erf_approx(x: f32) -> f32 {
    // Abramowitz & Stegun 7.1.26, |error| < 1.5e-7.
    let s = sign(x);
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
    return s * y;
}

fn tanh_safe(x: f32) -> f32 {
    // Some drivers compute tanh through exp and overflow for large |x|.
    return tanh(clamp(x, -15.0, 15.0));
}

fn activate(code: u32, x: f32, fa: f32, fb: f32) -> f32 {
    switch code {
        case 0u: { return x; }
        case 1u: { return max(x, 0.0); }
        case 2u: { return select(x * fa, x, x >= 0.0); }
        case 3u: { return 1.0 / (1.0 + exp(-x)); }
        case 4u: { return clamp(fa * x + fb, 0.0, 1.0); }
        case 5u: { return x * clamp(x / 6.0 + 0.5, 0.0, 1.0); }
        case 6u: { return tanh_safe(x); }
        case 7u: { return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752)); }
        case 8u: { return 0.5 * x * (1.0 + tanh_safe(0.79788456080286536 * (x + 0.044715 * x * x * x))); }
        case 9u: { return exp(x); }
        case 10u: { return log(x); }
        case 11u: { return sqrt(x); }
        case 12u: { return -x; }
        case 13u: { return abs(x); }
        case 14u: { return 1.0 / x; }
        case 15u: { return floor(x); }
        case 16u: { return ceil(x); }
        case 17u: { return select(fa * (exp(x) - 1.0), x, x >= 0.0); }
        case 18u: { return select(log(1.0 + exp(x)), x, x > 20.0); }
        case 19u: { return min(max(x, fa), fb); }
        case 20u: { return erf_approx(x); }
        default: { return x; }
    }
}
