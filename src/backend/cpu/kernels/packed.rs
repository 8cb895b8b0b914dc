//! GEMM over weights packed once at plan time, on the register tile of `microkernel.rs`.
//!
//! Two layouts, after which side of the product the constant weight is on:
//! - [`PackedRows`]: Conv's `Y[M,N] = W[M,K] x Patches[K,N]`. W is cut into `MR`-row panels
//!   stored k-major (the tile broadcasts one weight per row and k); the patches are packed per
//!   call into `NR`-column panels, a block of columns at a time sized to stay in L2.
//! - [`PackedCols`]: Gemm/MatMul's `Y[M,N] = A[M,K] x B[K,N]` with B constant. B is cut into
//!   `NR`-column panels stored k-major; A (the activations) is read in place. At batch 1 the
//!   product streams the packed weight once, contiguously (a GEMV).
//!
//! matrixmultiply re-packs both operands on every call, which dominates small products; here
//! only the activations side is touched per call, and only for Conv.

use super::microkernel::{tile_wide, AView, CView, Isa, MR, NR};
use super::threads;

/// Floats of packed patches per block (128 KiB: the block stays in L2 while every row panel of
/// the weight passes over it).
const B_BLOCK_FLOATS: usize = 1 << 15;

/// A weight `W[M,K]` per group, in `MR`-row panels: element (r, k) of panel p of group g at
/// `data[(g * panels + p) * MR * K + k * MR + r]`; rows past M are zero.
#[derive(Debug, Default)]
pub struct PackedRows {
    pub groups: usize,
    pub m: usize,
    pub k: usize,
    data: Vec<f32>,
}

impl PackedRows {
    /// Packs `groups` row-major `m x k` matrices stored one after another in `w`.
    pub fn pack(w: &[f32], groups: usize, m: usize, k: usize) -> PackedRows {
        let mut p = PackedRows { groups, m, k, data: Vec::new() };
        p.repack(w, groups, m, k);
        p
    }

    /// Packs `w` as [`PackedRows::pack`] does, reusing this buffer (no allocation once it is
    /// large enough).
    pub fn repack(&mut self, w: &[f32], groups: usize, m: usize, k: usize) {
        self.repack_with(groups, m, k, &mut Vec::new(), |r, rows| {
            let n = rows.len();
            rows.copy_from_slice(&w[r * k..][..n]);
            Ok(())
        })
        .expect("copying rows cannot fail");
    }

    /// Packs a weight whose rows come from `rows(r0, dst)` (rows `r0..` of all `groups * m`,
    /// row-major, as many as `dst` holds), one panel of `MR` rows at a time through `tmp`:
    /// a weight-only QConv dequantizes straight into the panels on every run, reading each
    /// quantized row once and keeping the staging rows in L1.
    pub fn repack_with(
        &mut self,
        groups: usize,
        m: usize,
        k: usize,
        tmp: &mut Vec<f32>,
        mut rows: impl FnMut(usize, &mut [f32]) -> Result<(), String>,
    ) -> Result<(), String> {
        let panels = m.div_ceil(MR);
        (self.groups, self.m, self.k) = (groups, m, k);
        self.data.clear();
        self.data.resize(groups * panels * MR * k, 0.0);
        tmp.resize(MR * k, 0.0);
        for g in 0..groups {
            for p in 0..panels {
                let count = MR.min(m - p * MR);
                rows(g * m + p * MR, &mut tmp[..count * k])?;
                let dst = &mut self.data[(g * panels + p) * MR * k..][..MR * k];
                interleave(&tmp[..count * k], count, k, dst);
            }
        }
        Ok(())
    }

    fn panel(&self, g: usize, p: usize) -> &[f32] {
        let panels = self.m.div_ceil(MR);
        &self.data[(g * panels + p) * MR * self.k..][..MR * self.k]
    }
}

/// `count <= MR` rows of `k` (`rows`, row-major) into one k-major panel `dst` (`k x MR`); the
/// lanes of missing rows are left as they are (zero from the caller).
fn interleave(rows: &[f32], count: usize, k: usize, dst: &mut [f32]) {
    let mut k0 = 0;
    #[cfg(target_arch = "x86_64")]
    if count == MR && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected; the slices hold MR * k floats each.
        k0 = unsafe { interleave_full_avx2(rows, k, dst) };
    }
    for kk in k0..k {
        for (rr, v) in dst[kk * MR..][..count].iter_mut().enumerate() {
            *v = rows[rr * k + kk];
        }
    }
}

/// [`interleave`] of a full panel, 8 k at a time by 8x8 transposes (rows 6 and 7 are zero):
/// a weight-only QConv packs its dequantized weight on every run, and one float moved per
/// load and store took longer than the products on a 2x6 map. Returns the k done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn interleave_full_avx2(rows: &[f32], k: usize, dst: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    const { assert!(MR == 6) };
    assert!(rows.len() >= MR * k && dst.len() >= MR * k);
    let mut kk = 0;
    // Each column is stored as 8 lanes at kk * MR, the 2 spare lanes overwritten by the next
    // column's store: stop while a full 8-lane store still fits.
    while kk + 8 <= k && (kk + 7) * MR + 8 <= dst.len() {
        // SAFETY: kk + 8 <= k: 8 floats of each of the 6 rows; the stores end at
        // (kk + 7) * MR + 8 <= dst.len().
        unsafe {
            let r = |i: usize| _mm256_loadu_ps(rows.as_ptr().add(i * k + kk));
            let z = _mm256_setzero_ps();
            let (t0, t1) = (_mm256_unpacklo_ps(r(0), r(1)), _mm256_unpackhi_ps(r(0), r(1)));
            let (t2, t3) = (_mm256_unpacklo_ps(r(2), r(3)), _mm256_unpackhi_ps(r(2), r(3)));
            let (t4, t5) = (_mm256_unpacklo_ps(r(4), r(5)), _mm256_unpackhi_ps(r(4), r(5)));
            let (t6, t7) = (_mm256_unpacklo_ps(z, z), _mm256_unpackhi_ps(z, z));
            let (u0, u1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
            let (u2, u3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
            let (u4, u5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
            let (u6, u7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
            let cols = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (j, c) in cols.into_iter().enumerate() {
                _mm256_storeu_ps(dst.as_mut_ptr().add((kk + j) * MR), c);
            }
        }
        kk += 8;
    }
    kk
}

/// A constant `B[K,N]` in `NR`-column panels: element (k, j) of panel p at
/// `data[p * K * NR + k * NR + j]`; columns past N are zero.
#[derive(Debug)]
pub struct PackedCols {
    pub k: usize,
    pub n: usize,
    data: Vec<f32>,
}

impl PackedCols {
    /// Packs `B` whose element (k, j) is `b[k * rs + j * cs]` (a transposed B is `rs = 1`).
    pub fn pack(b: &[f32], k: usize, n: usize, (rs, cs): (usize, usize)) -> PackedCols {
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for (p, panel) in data.chunks_exact_mut(k * NR).enumerate() {
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (jj, d) in row.iter_mut().enumerate().take(n.saturating_sub(p * NR)) {
                    *d = b[kk * rs + (p * NR + jj) * cs];
                }
            }
        }
        PackedCols { k, n, data }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..][..self.k * NR]
    }
}

/// Columns of one block of packed patches.
fn block_cols(k: usize) -> usize {
    ((B_BLOCK_FLOATS / k.max(1)) / NR).max(1) * NR
}

/// Floats of `scratch` [`gemm_rows`] needs for `k x n` patches.
pub fn rows_scratch_len(k: usize, n: usize) -> usize {
    threads::count() * k * block_cols(k).min(n.div_ceil(NR) * NR)
}

/// `y[r, j] = sum_k W_g(r, k) * b[k * n + j]` for group `g` of `w` (`y` is `m x n`, row-major),
/// then `epilogue(row, first_col, y_row_part)` over each finished stretch of a row while it is
/// in cache. `scratch` holds [`rows_scratch_len`] floats.
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows(
    isa: Isa,
    w: &PackedRows,
    g: usize,
    b: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [f32],
    epilogue: &(impl Fn(usize, usize, &mut [f32]) + Sync),
) {
    let k = w.k;
    assert!(b.len() >= k * n, "gemm_rows: B shorter than {k}x{n}");
    gemm_rows_with(isa, w, g, n, y, scratch, &|j0, cols, dst: &mut [f32]| pack_cols(b, n, k, j0, cols, dst), epilogue)
}

/// [`gemm_rows`] with B's columns packed by `pack(j0, cols, dst)`: columns `j0..j0 + cols` of
/// the `k x n` B as `NR`-wide panels, k-major, zero past `cols` (what [`pack_cols`] makes of a
/// row-major B; a conv packs its patches straight from the image instead).
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows_with(
    isa: Isa,
    w: &PackedRows,
    g: usize,
    n: usize,
    y: &mut [f32],
    scratch: &mut [f32],
    pack: &(impl Fn(usize, usize, &mut [f32]) + Sync),
    epilogue: &(impl Fn(usize, usize, &mut [f32]) + Sync),
) {
    let (m, k) = (w.m, w.k);
    if m == 0 || n == 0 {
        return;
    }
    assert!(y.len() >= m * n, "gemm_rows: Y shorter than {m}x{n}");
    let tasks = threads::tasks(n.div_ceil(NR), m * k * NR);
    let nc = block_cols(k).min(n.div_ceil(tasks).div_ceil(NR) * NR);
    let out = threads::SharedPtr::new(y);
    assert!(scratch.len() >= threads::slots(tasks) * k * nc, "gemm_rows: scratch shorter than its slots");
    let scratch = threads::SharedPtr::new(scratch);
    threads::for_each_task(tasks, |t, slot| {
        let cols = threads::span(t, tasks, n, NR);
        let (c0, c1) = (cols.start, cols.end);
        // SAFETY: a slot belongs to one thread, which runs one task at a time; `scratch` holds
        // a slot of `k * nc` floats per thread (`rows_scratch_len`).
        let panels = unsafe { scratch.slice(slot * k * nc, k * nc) };
        let mut j0 = c0;
        while j0 < c1 {
            let cols = nc.min(c1 - j0);
            let bp = cols.div_ceil(NR);
            pack(j0, cols, &mut panels[..bp * k * NR]);
            for p in 0..m.div_ceil(MR) {
                let (r0, rows) = (p * MR, MR.min(m - p * MR));
                let a = AView { ptr: w.panel(g, p).as_ptr(), rs: 1, ks: MR };
                // A last panel of 1-2 rows takes two column panels per tile (enough accumulators
                // to hide the FMA latency; the same sums), as every panel does on AVX-512.
                let step = if rows <= 2 { 2 } else { isa.panels_for_rows() };
                let mut q = 0;
                while q < bp {
                    let pw = if q + step <= bp { step } else { 1 };
                    let jq = j0 + q * NR;
                    // SAFETY: rows r0.. and columns jq.. lie inside y (m x n), and this task
                    // alone writes columns c0..c1; the panels hold k x NR floats each, k * NR
                    // apart.
                    unsafe {
                        let c = CView {
                            ptr: out.get().add(r0 * n + jq),
                            ldc: n,
                            cols: (pw * NR).min(j0 + cols - jq),
                            alpha: 1.0,
                            accumulate: false,
                        };
                        tile_wide(isa, rows, pw, k, a, panels[q * k * NR..].as_ptr(), k * NR, c);
                    }
                    q += pw;
                }
                for r in r0..r0 + rows {
                    // SAFETY: as above; the tiles writing this stretch have finished.
                    let part = unsafe { std::slice::from_raw_parts_mut(out.get().add(r * n + j0), cols) };
                    epilogue(r, j0, part);
                }
            }
            j0 += cols;
        }
    });
}

/// Packs columns `j0..j0 + cols` of row-major `b` (`k x ld`) into `NR`-wide panels, zero-padded.
fn pack_cols(b: &[f32], ld: usize, k: usize, j0: usize, cols: usize, dst: &mut [f32]) {
    for (q, panel) in dst.chunks_exact_mut(k * NR).enumerate() {
        let (c0, w) = (j0 + q * NR, NR.min(cols - q * NR));
        for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
            row[..w].copy_from_slice(&b[kk * ld + c0..][..w]);
            row[w..].fill(0.0);
        }
    }
}

/// `y[r, j] = alpha * sum_k A(r, k) * B(k, j) (+ y[r, j] when accumulate)` for the `m` rows of
/// A, element (r, k) at `a[r * rs + k * ks]`; `y` is `m x n`, row-major.
#[allow(clippy::too_many_arguments)]
pub fn gemm_cols(
    isa: Isa,
    a: &[f32],
    (rs, ks): (usize, usize),
    m: usize,
    b: &PackedCols,
    y: &mut [f32],
    alpha: f32,
    accumulate: bool,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        y.len() >= m * n && (k == 0 || a.len() > (m - 1) * rs + (k - 1) * ks),
        "gemm_cols: operands shorter than {m}x{k}x{n}"
    );
    let panels = n.div_ceil(NR);
    let tasks = threads::tasks(panels, m * k * NR);
    let out = threads::SharedPtr::new(y);
    // Fewer than 3 rows: several panels per tile, for enough independent accumulators.
    let wide = match m {
        1 => 4,
        2 => 2,
        _ => isa.panels_for_rows(),
    };
    threads::for_each_task(tasks, |t, _| {
        let mine = threads::span(t, tasks, panels, 1);
        let (p0, p1) = (mine.start, mine.end);
        let mut p = p0;
        while p < p1 {
            let pw = if p + wide <= p1 { wide } else { 1 };
            let bp = b.panel(p).as_ptr();
            let cols = (pw * NR).min(n - p * NR);
            for r0 in (0..m).step_by(MR) {
                let av = AView { ptr: a[r0 * rs..].as_ptr(), rs, ks };
                // SAFETY: rows r0.. and columns p*NR.. lie inside y, written by this task
                // alone (it owns panels p0..p1); A holds rows r0..r0+MR over k (asserted
                // above); panels p..p+pw follow each other k*NR floats apart.
                unsafe {
                    let c = CView { ptr: out.get().add(r0 * n + p * NR), ldc: n, cols, alpha, accumulate };
                    tile_wide(isa, MR.min(m - r0), pw, k, av, bp, k * NR, c);
                }
            }
            p += pw;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 31) % 97) as f32 / 48.0 - 1.0).collect()
    }

    #[test]
    fn repack_with_matches_pack() {
        // Panels of 6 rows and a last partial one; k past, at and under a multiple of 8.
        for (groups, m, k) in [(1, 13, 19), (2, 6, 24), (1, 12, 8), (1, 7, 5), (3, 1, 17)] {
            let w = data(groups * m * k, m + k);
            // The layout, element by element (rows past m stay zero).
            let panels = m.div_ceil(MR);
            let mut want = vec![0f32; groups * panels * MR * k];
            for g in 0..groups {
                for r in 0..m {
                    for kk in 0..k {
                        want[(g * panels + r / MR) * MR * k + kk * MR + r % MR] = w[(g * m + r) * k + kk];
                    }
                }
            }
            assert_eq!(PackedRows::pack(&w, groups, m, k).data, want);
            // Stale contents are overwritten.
            let mut got = PackedRows { data: vec![9.0; 3], ..Default::default() };
            got.repack_with(groups, m, k, &mut Vec::new(), |r0, dst| {
                dst.copy_from_slice(&w[r0 * k..][..dst.len()]);
                Ok(())
            })
            .unwrap();
            assert_eq!((got.groups, got.m, got.k), (groups, m, k));
            assert_eq!(got.data, want, "groups {groups}, m {m}, k {k}");
        }
    }

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable, Isa::detect()];
        v.dedup();
        v
    }

    fn close(got: f32, want: f32) -> bool {
        (got - want).abs() <= 1e-4 * (1.0 + want.abs())
    }

    /// Odd sizes (not multiples of the tile, K=1, M=1, N=1), with a row epilogue (bias+ReLU).
    #[test]
    fn rows_match_naive() {
        for isa in isas() {
            for &(m, k, n) in
                &[(1, 1, 1), (1, 5, 1), (6, 1, 16), (7, 9, 17), (13, 31, 5), (32, 144, 64), (12, 300, 130)]
            {
                let groups = 2;
                let w = data(groups * m * k, 1);
                let b = data(k * n, 2);
                let packed = PackedRows::pack(&w, groups, m, k);
                let mut scratch = vec![0f32; rows_scratch_len(k, n)];
                for g in 0..groups {
                    let mut y = vec![f32::NAN; m * n];
                    let bias = |r: usize| r as f32 * 0.1 - 0.3;
                    gemm_rows(isa, &packed, g, &b, n, &mut y, &mut scratch, &|r, _, part: &mut [f32]| {
                        part.iter_mut().for_each(|v| *v = (*v + bias(r)).max(0.0))
                    });
                    for r in 0..m {
                        for j in 0..n {
                            let dot: f32 = (0..k).map(|kk| w[(g * m + r) * k + kk] * b[kk * n + j]).sum();
                            let want = (dot + bias(r)).max(0.0);
                            assert!(close(y[r * n + j], want), "{isa:?} {m}x{k}x{n} g{g} ({r},{j}): {}", y[r * n + j]);
                        }
                    }
                }
            }
        }
    }

    /// Plain and transposed B, alpha, accumulation onto a prefilled C, odd sizes.
    #[test]
    fn cols_match_naive() {
        for isa in isas() {
            for &(m, k, n) in &[(1, 1, 1), (1, 64, 10), (2, 3, 33), (7, 17, 16), (8, 128, 64), (1, 1024, 100)] {
                for trans_b in [false, true] {
                    let a = data(m * k, 3);
                    let b = data(k * n, 4);
                    let strides = if trans_b { (1, k) } else { (n, 1) };
                    let packed = PackedCols::pack(&b, k, n, strides);
                    let bv = |kk: usize, j: usize| b[kk * strides.0 + j * strides.1];
                    for (alpha, accumulate) in [(1.0, false), (0.5, true)] {
                        let init = data(m * n, 5);
                        let mut y = init.clone();
                        gemm_cols(isa, &a, (k, 1), m, &packed, &mut y, alpha, accumulate);
                        for r in 0..m {
                            for j in 0..n {
                                let dot: f32 = (0..k).map(|kk| a[r * k + kk] * bv(kk, j)).sum();
                                let want = alpha * dot + if accumulate { init[r * n + j] } else { 0.0 };
                                assert!(close(y[r * n + j], want), "{isa:?} {m}x{k}x{n} tb={trans_b} ({r},{j})");
                            }
                        }
                    }
                }
            }
        }
    }

    /// A row's result is bit-identical whether it is computed alone or among other rows.
    #[test]
    fn row_result_independent_of_batch() {
        // 100 columns: 7 panels, so 1- and 2-row products also run their multi-panel tiles.
        let (m, k, n) = (9, 77, 100);
        let a = data(m * k, 6);
        let packed = PackedCols::pack(&data(k * n, 7), k, n, (n, 1));
        let mut all = vec![0f32; m * n];
        gemm_cols(Isa::detect(), &a, (k, 1), m, &packed, &mut all, 1.0, false);
        for rows in [1, 2] {
            for r in 0..=m - rows {
                let mut some = vec![0f32; rows * n];
                gemm_cols(Isa::detect(), &a[r * k..], (k, 1), rows, &packed, &mut some, 1.0, false);
                assert_eq!(some, all[r * n..][..rows * n], "rows {r}..{}", r + rows);
            }
        }
    }
}
