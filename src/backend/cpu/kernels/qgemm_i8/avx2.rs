//! AVX2 bodies of the w8a8 QGemm kernels: the per-row activation quantizer and the 4-row dot
//! products of [`super::gemm_i8`].

use std::arch::x86_64::*;

/// [`super::quantize_row`] 8 lanes at a time, also returning the row's integer sum: the same
/// scale and values (the maximum skips NaN as `f32::max` does; NaN quantizes to 0; clamped,
/// then `vcvtps2dq` rounds half to even like [`super::q8`]). The scalar row quantizer was
/// 38% of the fixture student's w8a8 time at batch 8.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_row(row: &[f32], fixed: Option<f32>, q: &mut [i8]) -> (f32, i32) {
    use super::{q8, QMAX, QMIN};
    let (n, n8) = (row.len().min(q.len()), row.len().min(q.len()) / 8 * 8);
    let s = fixed.unwrap_or_else(|| {
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut m = _mm256_setzero_ps();
        for i in (0..n8).step_by(8) {
            // SAFETY: i + 8 <= n8 <= row.len(). maxps keeps its second operand (the running
            // maximum, never NaN) when the first is NaN.
            m = _mm256_max_ps(_mm256_and_ps(unsafe { _mm256_loadu_ps(row.as_ptr().add(i)) }, abs), m);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
        lanes.iter().chain(&row[n8..n]).fold(0f32, |m, x| m.max(x.abs())) / QMAX
    });
    if !(s > 0.0 && s.is_finite()) {
        q.fill(0);
        return (0.0, 0);
    }
    let inv = 1.0 / s;
    let (vinv, lo, hi) = (_mm256_set1_ps(inv), _mm256_set1_ps(QMIN), _mm256_set1_ps(QMAX));
    // The low byte of each 32-bit lane, gathered into the low 4 bytes of each 128-bit half.
    let bytes = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1,
    );
    let mut sum = _mm256_setzero_si256();
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= n8 <= the lengths of row and q.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(i)), vinv);
            let v = _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
            let x = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
            sum = _mm256_add_epi32(sum, x);
            let b = _mm256_shuffle_epi8(x, bytes);
            let packed = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
            _mm_storel_epi64(q.as_mut_ptr().add(i).cast(), packed);
        }
    }
    let mut lanes = [0i32; 8];
    // SAFETY: 8 i32.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sum) };
    let mut total: i32 = lanes.iter().sum();
    for (o, &x) in q[n8..n].iter_mut().zip(&row[n8..n]) {
        *o = q8(x * inv);
        total += *o as i32;
    }
    (s, total)
}

/// Four dot products of `a` with `w[0..4]` (each as long as `a`) into `out`.
#[target_feature(enable = "avx2")]
pub unsafe fn dot4(a: &[i8], w: [&[i8]; 4], out: &mut [i32; 4]) {
    let k = a.len();
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut p = 0;
    while p + 32 <= k {
        let va = _mm256_loadu_si256(a.as_ptr().add(p).cast());
        let abs_a = _mm256_sign_epi8(va, va);
        for r in 0..4 {
            let vw = _mm256_loadu_si256(w[r].as_ptr().add(p).cast());
            // |a| (u8) * (w * sign a) (i8) = a * w, pairs summed to i16, then to i32.
            let prod = _mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(vw, va));
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(prod, ones));
        }
        p += 32;
    }
    if p < k {
        // Tail (k % 32 values): zero-padded copies, one more full-width step.
        let mut ta = [0i8; 32];
        ta[..k - p].copy_from_slice(&a[p..]);
        let va = _mm256_loadu_si256(ta.as_ptr().cast());
        let abs_a = _mm256_sign_epi8(va, va);
        for r in 0..4 {
            let mut tw = [0i8; 32];
            tw[..k - p].copy_from_slice(&w[r][p..]);
            let vw = _mm256_loadu_si256(tw.as_ptr().cast());
            let prod = _mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(vw, va));
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(prod, ones));
        }
    }
    let s01 = _mm256_hadd_epi32(acc[0], acc[1]);
    let s23 = _mm256_hadd_epi32(acc[2], acc[3]);
    let s = _mm256_hadd_epi32(s01, s23);
    let v = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    _mm_storeu_si128(out.as_mut_ptr().cast(), v);
}
