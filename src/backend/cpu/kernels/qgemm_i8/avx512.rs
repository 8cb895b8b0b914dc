//! AVX-512 body of the w8a8 QGemm per-row activation quantizer.

use std::arch::x86_64::*;

/// [`super::avx2::quantize_row`] 16 lanes at a time, the tail masked (no scalar loop): the
/// same scale bits, bytes and sum. The rows of a small QGemm (the fixture student's 64 and
/// 32) are one to four steps.
#[target_feature(enable = "avx512f")]
pub unsafe fn quantize_row(row: &[f32], fixed: Option<f32>, q: &mut [i8]) -> (f32, i32) {
    use super::{QMAX, QMIN};
    let n = row.len().min(q.len());
    // Lanes of the 16 from i that lie inside the row.
    let lanes = |i: usize| -> __mmask16 { ((1u32 << (n - i).min(16)) - 1) as __mmask16 };
    let s = fixed.unwrap_or_else(|| {
        let mut m = _mm512_setzero_ps();
        for i in (0..n).step_by(16) {
            // SAFETY: masked lanes are not read. maxps keeps its second operand (the
            // running maximum, never NaN) when the first is NaN, as f32::max skips NaN.
            let x = unsafe { _mm512_maskz_loadu_ps(lanes(i), row.as_ptr().add(i)) };
            m = _mm512_max_ps(_mm512_abs_ps(x), m);
        }
        _mm512_reduce_max_ps(m) / QMAX
    });
    if !(s > 0.0 && s.is_finite()) {
        q.fill(0);
        return (0.0, 0);
    }
    let inv = 1.0 / s;
    let (vinv, lo, hi) = (_mm512_set1_ps(inv), _mm512_set1_ps(QMIN), _mm512_set1_ps(QMAX));
    let mut sum = _mm512_setzero_si512();
    for i in (0..n).step_by(16) {
        let k = lanes(i);
        // SAFETY: masked lanes are neither read nor written; i < n <= both lengths.
        unsafe {
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row.as_ptr().add(i)), vinv);
            // NaN -> 0, clamp, round half to even (vcvtps2dq), then one byte per lane.
            let v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v);
            let x = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
            sum = _mm512_add_epi32(sum, x);
            _mm512_mask_cvtepi32_storeu_epi8(q.as_mut_ptr().add(i).cast(), k, x);
        }
    }
    (s, _mm512_reduce_add_epi32(sum))
}
