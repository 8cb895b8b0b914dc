//! Weight-only quantized GEMM/GEMV (`Op::QGemm` with [`QData::Int8`], [`QData::Int4`] or
//! [`QData::F16`] weights): `y[r, j] = alpha * a[r, :] . W[j, :]`, reading `W[n, k]` in place,
//! row-major as stored (often memory-mapped from the model file), with no f32 copy of it.
//!
//! A tile is up to 4 activation rows by up to 8 weight rows (output columns): each 8-wide
//! chunk of a weight row is converted to f32 once and multiplied into every activation row of
//! the tile, with one vector accumulator per output reduced horizontally only at the end. The
//! int8 per-row scale is applied once per output; int4 group scales multiply the converted
//! chunk (one multiply per chunk, shared by the tile's rows). At batch 1 this streams the
//! weight once: 4x (int8) / 8x (int4) fewer bytes than an f32 GEMV.
//!
//! AVX2+FMA(+F16C for f16) intrinsics picked at run time, and a portable body of the same
//! shape that LLVM vectorizes for the baseline target. Each output is the same sequence of
//! operations whatever the tile's row count, so a row's result does not depend on the batch.

use super::microkernel::Isa;
use super::threads;
use super::KResult;
use crate::quant::{QData, QWeight, INT4_GROUP};
use half::f16;

/// Activation rows per tile.
const MR: usize = 4;

/// The weight as the kernel reads it.
#[derive(Clone, Copy)]
enum W<'a> {
    F16(&'a [f16]),
    Int8(&'a [i8], &'a [f32]),
    /// Packed words, group scales, groups per row.
    Int4(&'a [u32], &'a [f16], usize),
}

impl W<'_> {
    /// Weight (j, kk) as f32, without the int8 row scale (applied per output).
    #[inline]
    fn at(&self, k: usize, j: usize, kk: usize) -> f32 {
        match *self {
            W::F16(h) => h[j * k + kk].to_f32(),
            W::Int8(q, _) => q[j * k + kk] as f32,
            W::Int4(p, s, g) => {
                let word = p[j * g * 4 + kk / 8] >> (4 * (kk % 8));
                (((word & 0xF) as i32) << 28 >> 28) as f32 * s[j * g + kk / INT4_GROUP].to_f32()
            }
        }
    }

    /// Factor applied to output column `j` after the reduction.
    #[inline]
    fn row_scale(&self, j: usize) -> f32 {
        match *self {
            W::Int8(_, s) => s[j],
            _ => 1.0,
        }
    }
}

/// Whether [`qdense`] handles this weight (W8a8 goes to the integer kernel).
pub fn supports(w: &QWeight) -> bool {
    matches!(w.data, QData::F16(_) | QData::Int8 { .. } | QData::Int4 { .. })
}

/// The weight's data as the kernels read it, lengths checked.
fn weight_view(w: &QWeight) -> Result<W<'_>, String> {
    let (n, k) = (w.n, w.k);
    Ok(match &w.data {
        QData::F16(h) if h.len() >= n * k => W::F16(h),
        QData::Int8 { q, scales } if q.len() >= n * k && scales.len() >= n => W::Int8(q, scales),
        QData::Int4 { packed, scales } if packed.len() >= n * w.groups() * 4 && scales.len() >= n * w.groups() => {
            W::Int4(packed, scales, w.groups())
        }
        QData::W8a8 { .. } => return Err("qdense: w8a8 weights need the integer kernel".into()),
        _ => return Err(format!("QGemm {} weight data shorter than {n}x{k}", w.precision())),
    })
}

/// `y[r, j] = alpha * sum_kk a[r * k + kk] * W(j, kk) (+ y[r, j] when accumulate)` for the `m`
/// rows of `a` (`m x k`, row-major); `y` is `m x n`, row-major.
pub fn qdense(isa: Isa, w: &QWeight, a: &[f32], m: usize, alpha: f32, accumulate: bool, y: &mut [f32]) -> KResult {
    let (n, k) = (w.n, w.k);
    let wv = weight_view(w)?;
    if a.len() < m * k || y.len() < m * n {
        return Err(format!("QGemm operands shorter than {m}x{k}x{n}"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // The AVX2 bodies are compiled with F16C too (every AVX2 CPU has it; checked anyway).
    let isa = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 if !has_f16c() => Isa::Portable,
        _ => isa,
    };
    // Columns per task in multiples of 8 (the widest tile).
    let tasks = threads::tasks(n.div_ceil(8), m * k * 8);
    let out = threads::SharedPtr::new(y);
    threads::for_each_task(tasks, |t, _| {
        let mine = threads::span(t, tasks, n, 8);
        let (c0, c1) = (mine.start, mine.end);
        for r0 in (0..m).step_by(MR) {
            let rows = MR.min(m - r0);
            let wide = match rows {
                1 => 8,
                2 | 3 => 4,
                _ => 3,
            };
            let mut j = c0;
            while j < c1 {
                let cols = if j + wide <= c1 { wide } else { 1 };
                let t = Tile { a: a[r0 * k..].as_ptr(), k, j0: j, rows, cols, alpha, accumulate };
                // SAFETY: rows r0..r0+rows of a (m x k) and weight rows j..j+cols (< n) exist
                // (checked above); y's rows r0.. at columns j..j+cols are written by this
                // task alone (it owns columns c0..c1).
                unsafe { tile(isa, wv, t, out.get().add(r0 * n), n) };
                j += cols;
            }
        }
    });
    Ok(())
}

/// Writes the whole weight as f32 (`n x k`, row-major, int8 row scales applied) into `out`:
/// QConv's per-call dequantization, with the conversions of the AVX2 tile.
pub fn dequantize_into(isa: Isa, w: &QWeight, out: &mut [f32]) -> KResult {
    dequantize_rows_into(isa, w, 0..w.n, out)
}

/// Rows `rows` of `w` dequantized into `out` (`rows.len() x k`), as [`dequantize_into`].
pub fn dequantize_rows_into(isa: Isa, w: &QWeight, rows: std::ops::Range<usize>, out: &mut [f32]) -> KResult {
    let (n, k) = (w.n, w.k);
    if rows.end > n || out.len() < rows.len() * k {
        return Err(format!("dequantize: rows {rows:?} of {n}x{k} do not fit the output"));
    }
    let j0 = rows.start;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 if has_f16c() && supports(w) => {
            let wv = weight_view(w)?;
            for (j, row) in out.chunks_exact_mut(k.max(1)).take(rows.len()).enumerate() {
                // SAFETY: weight row j0 + j exists (weight_view checked the lengths, rows.end <=
                // n); row holds k.
                unsafe { dequantize_row_avx2(wv, k, j0 + j, row) };
            }
        }
        _ => {
            for (j, row) in out.chunks_exact_mut(k.max(1)).take(rows.len()).enumerate() {
                w.dequantize_row(j0 + j, row);
            }
        }
    }
    Ok(())
}

/// Row `j` of `w` (k values, scales applied) into `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_row_avx2(w: W, k: usize, j: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let o = out.as_mut_ptr();
    let k8 = k / 8;
    match w {
        W::Int8(q, s) => {
            let (base, scale) = (q.as_ptr().add(j * k), _mm256_set1_ps(s[j]));
            for i in 0..k8 {
                let v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(base.add(8 * i) as *const __m128i));
                _mm256_storeu_ps(o.add(8 * i), _mm256_mul_ps(_mm256_cvtepi32_ps(v), scale));
            }
        }
        W::F16(h) => {
            let base = h.as_ptr().add(j * k);
            for i in 0..k8 {
                _mm256_storeu_ps(o.add(8 * i), _mm256_cvtph_ps(_mm_loadu_si128(base.add(8 * i) as *const __m128i)));
            }
        }
        W::Int4(p, s, g) => {
            let shifts = _mm256_setr_epi32(28, 24, 20, 16, 12, 8, 4, 0);
            for i in 0..k8 {
                let h = _mm_cvtsi32_si128(s[j * g + i / 4].to_bits() as i32);
                let scale = _mm256_broadcastss_ps(_mm_cvtph_ps(h));
                let word = _mm256_set1_epi32(p[j * g * 4 + i] as i32);
                let q = _mm256_srai_epi32(_mm256_sllv_epi32(word, shifts), 28);
                _mm256_storeu_ps(o.add(8 * i), _mm256_mul_ps(_mm256_cvtepi32_ps(q), scale));
            }
        }
    }
    for (kk, d) in out.iter_mut().enumerate().take(k).skip(8 * k8) {
        *d = w.at(k, j, kk) * w.row_scale(j);
    }
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    use std::sync::OnceLock;
    static F16C: OnceLock<bool> = OnceLock::new();
    *F16C.get_or_init(|| std::arch::is_x86_feature_detected!("f16c"))
}

/// One tile: activation rows at `a + r * k`, weight rows `j0..j0 + cols`.
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    k: usize,
    j0: usize,
    rows: usize,
    cols: usize,
    alpha: f32,
    accumulate: bool,
}

/// Computes tile `t` into `y[r * ldy + t.j0 + c]`.
///
/// # Safety
/// `t.a` readable for `t.rows * t.k` floats; weight rows `t.j0..t.j0 + t.cols` exist; `y`
/// writable at every (r, j0 + c) of the tile.
unsafe fn tile(isa: Isa, w: W, t: Tile, y: *mut f32, ldy: usize) {
    macro_rules! shapes {
        ($f:ident) => {
            match (t.rows, t.cols) {
                (1, 8) => finish(w, t, &$f::<1, 8>(w, t), y, ldy),
                (2, 4) => finish(w, t, &$f::<2, 4>(w, t), y, ldy),
                (3, 4) => finish(w, t, &$f::<3, 4>(w, t), y, ldy),
                (4, 3) => finish(w, t, &$f::<4, 3>(w, t), y, ldy),
                (1, 1) => finish(w, t, &$f::<1, 1>(w, t), y, ldy),
                (2, 1) => finish(w, t, &$f::<2, 1>(w, t), y, ldy),
                (3, 1) => finish(w, t, &$f::<3, 1>(w, t), y, ldy),
                (4, 1) => finish(w, t, &$f::<4, 1>(w, t), y, ldy),
                _ => unreachable!("no {}x{} qdense tile", t.rows, t.cols),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 => shapes!(dots_avx2),
        Isa::Portable => shapes!(dots_portable),
    }
}

/// Adds the k tail (past the last whole 8-chunk) to the tile's sums, scales and stores them.
unsafe fn finish<const R: usize, const C: usize>(w: W, t: Tile, sums: &[[f32; C]; R], y: *mut f32, ldy: usize) {
    let k = t.k;
    for (r, row) in sums.iter().enumerate() {
        let a = std::slice::from_raw_parts(t.a.add(r * k), k);
        for (c, &s) in row.iter().enumerate() {
            let j = t.j0 + c;
            let mut s = s;
            for (kk, &av) in a.iter().enumerate().skip(k / 8 * 8) {
                s += av * w.at(k, j, kk);
            }
            let v = t.alpha * w.row_scale(j) * s;
            let dst = y.add(r * ldy + j);
            *dst = if t.accumulate { v + *dst } else { v };
        }
    }
}

/// Portable body: `[f32; 8]` chunks and accumulators that LLVM keeps in vector registers.
#[inline(always)]
unsafe fn dots_portable<const R: usize, const C: usize>(w: W, t: Tile) -> [[f32; C]; R] {
    let k = t.k;
    let mut acc = [[[0f32; 8]; C]; R];
    for i in 0..k / 8 {
        for c in 0..C {
            let j = t.j0 + c;
            let mut wf = [0f32; 8];
            match w {
                W::F16(h) => {
                    for (d, s) in wf.iter_mut().zip(&h[j * k + 8 * i..][..8]) {
                        *d = s.to_f32();
                    }
                }
                W::Int8(q, _) => {
                    for (d, &s) in wf.iter_mut().zip(&q[j * k + 8 * i..][..8]) {
                        *d = s as f32;
                    }
                }
                W::Int4(p, s, g) => {
                    let word = p[j * g * 4 + i];
                    let scale = s[j * g + i / 4].to_f32();
                    for (l, d) in wf.iter_mut().enumerate() {
                        *d = ((word << (28 - 4 * l)) as i32 >> 28) as f32 * scale;
                    }
                }
            }
            for (r, accr) in acc.iter_mut().enumerate() {
                let a = &*(t.a.add(r * k + 8 * i) as *const [f32; 8]);
                for ((s, &av), &wv) in accr[c].iter_mut().zip(a).zip(&wf) {
                    *s += av * wv;
                }
            }
        }
    }
    acc.map(|row| row.map(|v| v.iter().sum()))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_avx2<const R: usize, const C: usize>(w: W, t: Tile) -> [[f32; C]; R] {
    use std::arch::x86_64::*;
    let k = t.k;
    let k8 = k / 8;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    // One FMA per activation row and weight chunk; the chunk is converted once.
    macro_rules! step {
        ($c:expr, $i:expr, $wf:expr) => {{
            let wf = $wf;
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm256_loadu_ps(t.a.add(r * k + 8 * $i));
                accr[$c] = _mm256_fmadd_ps(av, wf, accr[$c]);
            }
        }};
    }
    match w {
        W::Int8(q, _) => {
            let base = q.as_ptr().add(t.j0 * k);
            for i in 0..k8 {
                for c in 0..C {
                    let v = _mm_loadl_epi64(base.add(c * k + 8 * i) as *const __m128i);
                    step!(c, i, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)));
                }
            }
        }
        W::F16(h) => {
            let base = h.as_ptr().add(t.j0 * k);
            for i in 0..k8 {
                for c in 0..C {
                    let v = _mm_loadu_si128(base.add(c * k + 8 * i) as *const __m128i);
                    step!(c, i, _mm256_cvtph_ps(v));
                }
            }
        }
        W::Int4(p, s, g) => {
            // Lane l holds nibble l: shift it to the top, then arithmetic-shift it back down.
            let shifts = _mm256_setr_epi32(28, 24, 20, 16, 12, 8, 4, 0);
            let (words, scales) = (p.as_ptr().add(t.j0 * g * 4), s.as_ptr().add(t.j0 * g));
            for gi in 0..k8.div_ceil(4) {
                let mut sc = [_mm256_setzero_ps(); C];
                for (c, v) in sc.iter_mut().enumerate() {
                    let h = _mm_cvtsi32_si128((*scales.add(c * g + gi)).to_bits() as i32);
                    *v = _mm256_broadcastss_ps(_mm_cvtph_ps(h));
                }
                for i in gi * 4..(gi * 4 + 4).min(k8) {
                    for (c, &scale) in sc.iter().enumerate() {
                        let word = _mm256_set1_epi32(*words.add(c * g * 4 + i) as i32);
                        let q = _mm256_srai_epi32(_mm256_sllv_epi32(word, shifts), 28);
                        step!(c, i, _mm256_mul_ps(_mm256_cvtepi32_ps(q), scale));
                    }
                }
            }
        }
    }
    let mut out = [[0f32; C]; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, &v) in o.iter_mut().zip(a) {
            *o = hsum(v);
        }
    }
    out
}

/// Sum of the 8 lanes (every output of the AVX2 path goes through it the same way).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::Precision;

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 131) % 101) as f32 / 50.0 - 1.0).collect()
    }

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable, Isa::detect()];
        v.dedup();
        v
    }

    /// Odd n and k (k below 8, not a multiple of 32, 8 or 4), m = 1, 2, 5, 8, alpha and
    /// accumulation, every precision, both code paths, against the dequantized f32 weight.
    #[test]
    fn matches_dequantized_reference() {
        let shapes = [(1, 1), (3, 7), (13, 37), (9, 70), (33, 45), (8, 96), (17, 131), (301, 1000)];
        for isa in isas() {
            for p in [Precision::F16, Precision::Int8, Precision::Int4] {
                for &(n, k) in &shapes {
                    let q = QWeight::quantize(&data(n * k, 1), n, k, p).unwrap();
                    let d = q.dequantize();
                    // The biggest shape only at batch 1: it is there for the threaded split.
                    let ms: &[usize] = if n * k > 100_000 { &[1, 2] } else { &[1, 2, 5, 8] };
                    for &m in ms {
                        let a = data(m * k, 2);
                        for (alpha, accumulate) in [(1.0, false), (0.5, true)] {
                            let init = data(m * n, 3);
                            let mut y = init.clone();
                            qdense(isa, &q, &a, m, alpha, accumulate, &mut y).unwrap();
                            for r in 0..m {
                                for j in 0..n {
                                    let dot: f32 = (0..k).map(|kk| a[r * k + kk] * d[j * k + kk]).sum();
                                    let l1: f32 = (0..k).map(|kk| (a[r * k + kk] * d[j * k + kk]).abs()).sum();
                                    let want = alpha * dot + if accumulate { init[r * n + j] } else { 0.0 };
                                    let got = y[r * n + j];
                                    let at = format!("{isa:?} {p} m{m} n{n} k{k} ({r},{j}): {got} vs {want}");
                                    assert!((got - want).abs() <= 1e-5 * (1.0 + l1), "{at}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// A row's result is bit-identical whether it is computed alone or in a batch.
    #[test]
    fn row_result_independent_of_batch() {
        let (m, n, k) = (7, 19, 77);
        let a = data(m * k, 4);
        for isa in isas() {
            for p in [Precision::F16, Precision::Int8, Precision::Int4] {
                let q = QWeight::quantize(&data(n * k, 5), n, k, p).unwrap();
                let mut all = vec![0f32; m * n];
                qdense(isa, &q, &a, m, 1.0, false, &mut all).unwrap();
                for r in 0..m {
                    let mut one = vec![0f32; n];
                    qdense(isa, &q, &a[r * k..], 1, 1.0, false, &mut one).unwrap();
                    assert_eq!(one, all[r * n..][..n], "{isa:?} {p} row {r}");
                }
            }
        }
    }

    /// The vectorized dequantization equals `QWeight::dequantize` exactly.
    #[test]
    fn dequantize_into_matches() {
        for isa in isas() {
            for p in [Precision::F16, Precision::Int8, Precision::Int4, Precision::W8a8] {
                for &(n, k) in &[(1, 1), (3, 7), (5, 37), (4, 96), (2, 131)] {
                    let q = QWeight::quantize(&data(n * k, 6), n, k, p).unwrap();
                    let mut out = vec![f32::NAN; n * k];
                    dequantize_into(isa, &q, &mut out).unwrap();
                    assert_eq!(out, q.dequantize(), "{isa:?} {p} {n}x{k}");
                }
            }
        }
    }

    #[test]
    fn rejects_short_operands_and_w8a8() {
        let q = QWeight::quantize(&data(6, 1), 2, 3, Precision::Int8).unwrap();
        assert!(qdense(Isa::Portable, &q, &[0.0; 5], 2, 1.0, false, &mut [0.0; 4]).is_err());
        assert!(qdense(Isa::Portable, &q, &[0.0; 6], 2, 1.0, false, &mut [0.0; 3]).is_err());
        let w8 = QWeight::quantize(&data(6, 1), 2, 3, Precision::W8a8).unwrap();
        assert!(!supports(&w8) && supports(&q));
        assert!(qdense(Isa::Portable, &w8, &[0.0; 6], 2, 1.0, false, &mut [0.0; 4]).is_err());
    }
}
