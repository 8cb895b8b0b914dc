//! The f32 GEMM register tile: up to `MR` rows by `NR` columns of `C = alpha * A B (+ C)`,
//! with B read from a packed `NR`-wide panel (k-major, `NR` contiguous floats per k) and A
//! broadcast one element per row and k from any strides (a packed weight panel, or the
//! activations in place). All accumulators stay in registers over the whole K: every output
//! is one sequential multiply-add chain over k starting from zero, whatever the tile's row
//! count, so a row's result does not depend on how many rows (batch) share the product.
//!
//! Compiled three times: AVX-512F intrinsics (one zmm accumulator per row and panel; callers
//! take two panels per tile for 12 of them), AVX2+FMA intrinsics (12 ymm accumulators for
//! 6x16), picked once at run time, and a portable body that LLVM vectorizes for the baseline
//! target (NEON on ARM). The two x86 bodies run the same fused multiply-add chains.

/// Rows of a full tile.
pub const MR: usize = 6;
/// Columns of a tile, the width of a packed B panel.
pub const NR: usize = 16;

/// Instruction set a tile runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// AVX-512F (with AVX2+FMA for everything but the tile).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The best the running CPU has (detected once).
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static ISA: OnceLock<Isa> = OnceLock::new();
            *ISA.get_or_init(|| {
                let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
                // `ALEMBIC_CPU_NO_AVX512=1` keeps the 256-bit bodies (to compare in one binary).
                let no512 = std::env::var("ALEMBIC_CPU_NO_AVX512").is_ok_and(|v| v.trim() == "1");
                if avx2 && std::arch::is_x86_feature_detected!("avx512f") && !no512 {
                    Isa::Avx512
                } else if avx2 {
                    Isa::Avx2Fma
                } else {
                    Isa::Portable
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Portable
    }

    /// Every body this CPU can run (for tests).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2Fma);
                if std::arch::is_x86_feature_detected!("avx512f") {
                    v.push(Isa::Avx512);
                }
            }
        }
        v
    }

    /// Column panels a tile of `rows >= 3` rows should take: two where a panel's row is one
    /// register (AVX-512: 6 x 2 zmm accumulators hide the FMA latency), else one.
    pub fn panels_for_rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 2,
            _ => 1,
        }
    }
}

/// Where a tile reads A: element (r, k) at `ptr[r * rs + k * ks]`.
#[derive(Clone, Copy)]
pub struct AView {
    pub ptr: *const f32,
    pub rs: usize,
    pub ks: usize,
}

/// Where a tile writes C: `ptr[r * ldc + j]` for `r < rows`, `j < cols`. When `accumulate`,
/// the tile adds to what is there (a prefilled `beta * C`).
#[derive(Clone, Copy)]
pub struct CView {
    pub ptr: *mut f32,
    pub ldc: usize,
    pub cols: usize,
    pub alpha: f32,
    pub accumulate: bool,
}

/// `C[r, j] = alpha * sum_k A(r, k) * B(k, j) (+ C[r, j])` for `rows <= MR` and `cols <= NR`,
/// B one packed panel (`B(k, j) = b[k * NR + j]`).
///
/// # Safety
/// `a` must be readable at (r, k) for r < rows, k < k; `b` must hold `k * NR` floats; `c` must
/// be writable (and readable when accumulating) at every (r, j) it names.
pub unsafe fn tile(isa: Isa, rows: usize, k: usize, a: AView, b: *const f32, c: CView) {
    tile_wide(isa, rows, 1, k, a, b, 0, c)
}

/// [`tile`] over `panels` adjacent packed panels of B (panel q at `b + q * panel_stride`,
/// columns `q * NR..` of C; `cols <= panels * NR`). Few rows with several panels keep enough
/// independent accumulators to hide the FMA latency (batch-1 GEMV); each output is still the
/// same multiply-add chain as in [`tile`]. Supported: 1 panel with 1..=MR rows, 2 panels with
/// any row count, 4 panels with 1 row.
///
/// # Safety
/// As [`tile`], for every panel.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_wide(isa: Isa, rows: usize, panels: usize, k: usize, a: AView, b: *const f32, ps: usize, c: CView) {
    macro_rules! shapes {
        ($f:ident) => {
            match (rows, panels) {
                (6, 1) => $f::<6, 1>(k, a, b, ps, c),
                (5, 1) => $f::<5, 1>(k, a, b, ps, c),
                (4, 1) => $f::<4, 1>(k, a, b, ps, c),
                (3, 1) => $f::<3, 1>(k, a, b, ps, c),
                (2, 1) => $f::<2, 1>(k, a, b, ps, c),
                (1, 1) => $f::<1, 1>(k, a, b, ps, c),
                (6, 2) => $f::<6, 2>(k, a, b, ps, c),
                (5, 2) => $f::<5, 2>(k, a, b, ps, c),
                (4, 2) => $f::<4, 2>(k, a, b, ps, c),
                (3, 2) => $f::<3, 2>(k, a, b, ps, c),
                (2, 2) => $f::<2, 2>(k, a, b, ps, c),
                (1, 2) => $f::<1, 2>(k, a, b, ps, c),
                (1, 4) => $f::<1, 4>(k, a, b, ps, c),
                _ => panic!("no {rows}-row {panels}-panel tile"),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => shapes!(tile_avx2),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => shapes!(tile_avx512),
        Isa::Portable => shapes!(tile_portable),
    }
}

/// Portable body: fixed-size accumulators that LLVM keeps in vector registers.
#[inline(always)]
unsafe fn tile_portable<const R: usize, const P: usize>(k: usize, a: AView, b: *const f32, ps: usize, c: CView) {
    let mut acc = [[[0f32; NR]; P]; R];
    for kk in 0..k {
        for (q, bq) in (0..P).map(|q| (q, &*(b.add(q * ps + kk * NR) as *const [f32; NR]))) {
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = *a.ptr.add(r * a.rs + kk * a.ks);
                for (s, &bv) in accr[q].iter_mut().zip(bq) {
                    *s += av * bv;
                }
            }
        }
    }
    store(&acc, c);
}

/// Writes finished accumulators (scalar: only edge tiles and the portable path get here).
#[inline(always)]
unsafe fn store<const R: usize, const P: usize>(acc: &[[[f32; NR]; P]; R], c: CView) {
    for (r, accr) in acc.iter().enumerate() {
        let dst = c.ptr.add(r * c.ldc);
        for (j, &v) in accr.iter().flatten().enumerate().take(c.cols) {
            let v = c.alpha * v;
            *dst.add(j) = if c.accumulate { v + *dst.add(j) } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_avx2<const R: usize, const P: usize>(k: usize, a: AView, b: *const f32, ps: usize, c: CView) {
    use std::arch::x86_64::*;
    let mut acc = [[[_mm256_setzero_ps(); 2]; P]; R];
    let (mut ap, mut bp) = (a.ptr, b);
    for _ in 0..k {
        for q in 0..P {
            let b0 = _mm256_loadu_ps(bp.add(q * ps));
            let b1 = _mm256_loadu_ps(bp.add(q * ps + 8));
            for r in 0..R {
                let av = _mm256_broadcast_ss(&*ap.add(r * a.rs));
                acc[r][q][0] = _mm256_fmadd_ps(av, b0, acc[r][q][0]);
                acc[r][q][1] = _mm256_fmadd_ps(av, b1, acc[r][q][1]);
            }
        }
        ap = ap.add(a.ks);
        bp = bp.add(NR);
    }
    // Indexed loops, not iterators over the accumulator array: iterating it (`flatten`) made
    // LLVM keep the array in memory and store every accumulator on every k step (2x slower on
    // Zen 3, which has one 256-bit store port).
    let alpha = _mm256_set1_ps(c.alpha);
    for r in 0..R {
        for q in 0..P {
            acc[r][q][0] = _mm256_mul_ps(alpha, acc[r][q][0]);
            acc[r][q][1] = _mm256_mul_ps(alpha, acc[r][q][1]);
        }
    }
    if c.cols == P * NR {
        for r in 0..R {
            let dst = c.ptr.add(r * c.ldc);
            for q in 0..P {
                for h in 0..2 {
                    let at = dst.add(q * NR + 8 * h);
                    let mut v = acc[r][q][h];
                    if c.accumulate {
                        v = _mm256_add_ps(v, _mm256_loadu_ps(at));
                    }
                    _mm256_storeu_ps(at, v);
                }
            }
        }
    } else {
        let mut spill = [[[0f32; NR]; P]; R];
        for r in 0..R {
            for q in 0..P {
                _mm256_storeu_ps(spill[r][q].as_mut_ptr(), acc[r][q][0]);
                _mm256_storeu_ps(spill[r][q].as_mut_ptr().add(8), acc[r][q][1]);
            }
        }
        let c1 = CView { alpha: 1.0, ..c };
        store(&spill, c1);
    }
}

/// [`tile_avx2`] 512 bits wide: a panel's row of 16 floats is one register. Plain loops, no
/// closures (a closure does not inherit the target features; its intrinsics become calls).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_avx512<const R: usize, const P: usize>(k: usize, a: AView, b: *const f32, ps: usize, c: CView) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    let (mut ap, mut bp) = (a.ptr, b);
    for _ in 0..k {
        let mut bq = [_mm512_setzero_ps(); P];
        for (q, v) in bq.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(bp.add(q * ps));
        }
        for (r, accr) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*ap.add(r * a.rs));
            for (s, &bv) in accr.iter_mut().zip(&bq) {
                *s = _mm512_fmadd_ps(av, bv, *s);
            }
        }
        ap = ap.add(a.ks);
        bp = bp.add(NR);
    }
    let alpha = _mm512_set1_ps(c.alpha);
    for (r, accr) in acc.iter().enumerate() {
        let dst = c.ptr.add(r * c.ldc);
        for (q, &v) in accr.iter().enumerate() {
            let lanes = c.cols.saturating_sub(q * NR).min(NR);
            if lanes == 0 {
                continue;
            }
            let mask: __mmask16 = if lanes == NR { 0xffff } else { (1u16 << lanes) - 1 };
            let at = dst.add(q * NR);
            let mut v = _mm512_mul_ps(alpha, v);
            if c.accumulate {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, at));
            }
            _mm512_mask_storeu_ps(at, mask, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile shape, full and partial column counts, against a naive loop, on both paths.
    #[test]
    fn tiles_match_naive() {
        let k = 13;
        let (lda, ps) = (k + 3, k * NR + 5);
        let a: Vec<f32> = (0..MR * lda).map(|i| ((i * 37) % 23) as f32 * 0.125 - 1.0).collect();
        let b: Vec<f32> = (0..4 * ps).map(|i| ((i * 11) % 19) as f32 * 0.25 - 2.0).collect();
        let isas = Isa::available();
        let shapes = (1..=MR).flat_map(|r| [(r, 1), (r, 2)]).chain([(1, 4)]);
        for (isa, (rows, panels)) in isas.iter().flat_map(|&i| shapes.clone().map(move |s| (i, s))) {
            for cols in [1, 7, 8, 9, NR, NR + 3, panels * NR].into_iter().filter(|&c| c <= panels * NR) {
                for (alpha, accumulate) in [(1.0, false), (0.5, true)] {
                    let ldc = 4 * NR + 2;
                    let mut c: Vec<f32> = (0..MR * ldc).map(|i| i as f32).collect();
                    let before = c.clone();
                    let view = AView { ptr: a.as_ptr(), rs: lda, ks: 1 };
                    let cv = CView { ptr: c.as_mut_ptr(), ldc, cols, alpha, accumulate };
                    // SAFETY: a, b and c hold every element the tile names.
                    unsafe { tile_wide(isa, rows, panels, k, view, b.as_ptr(), ps, cv) };
                    for r in 0..MR {
                        for j in 0..ldc {
                            let got = c[r * ldc + j];
                            if r >= rows || j >= cols {
                                assert_eq!(got, before[r * ldc + j], "{isa:?} wrote outside the tile");
                                continue;
                            }
                            let bv = |kk: usize| b[(j / NR) * ps + kk * NR + j % NR];
                            let dot: f32 = (0..k).map(|kk| a[r * lda + kk] * bv(kk)).sum();
                            let want = alpha * dot + if accumulate { before[r * ldc + j] } else { 0.0 };
                            let at = format!("{isa:?} {rows}x{panels} cols {cols} ({r},{j})");
                            assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{at}");
                        }
                    }
                }
            }
        }
    }
}
