//! The activation side of the w8a8 conv tile ([`super::qgemm_i8::qconv_packed`]): the patch of
//! every output position quantized with that position's own scale (`max |patch| / 127`, or
//! the static scale), as [`super::qgemm_i8::qconv_w8a8`] does, and packed into the tile's
//! column panels (`NR` positions x 4 k per 64 bytes).
//!
//! Two sources:
//! - **a patch matrix** `[kdim, osz]` ([`from_matrix`]): a direct 1x1 conv reads X itself;
//! - **the image** ([`Volume`]): every other conv with unit column stride (strided ones still
//!   take an im2col matrix: their positions are not runs in the image). The input is copied once into a zero-padded
//!   volume, each position's scale is the max over its taps of the channel-wise `max |x|`
//!   plane, and the panels are read from the volume through offset tables (one per patch row,
//!   one per position), a vector load where 8 positions are one run. An f32 im2col matrix
//!   (9x the input for a 3x3) used to be written and read back: on the fixture teacher (3x3
//!   convs on 8x8 and 4x4 maps) writing it took 31% of the w8a8 time (perf).

use super::i8tile::{self, NR};
use super::qgemm_i8::{q8, QMAX, QMIN};
use super::threads;
use super::window::Geom;

/// Sets `inv` to the reciprocals of the scales `sa`, which hold `max |patch|` per position on
/// entry and the scale on return (`max / 127`, or `fixed`); a zero or non-finite scale becomes 0.
#[inline(always)]
fn finish_scales(fixed: Option<f32>, sa: &mut [f32], inv: &mut [f32]) {
    for (s, i) in sa.iter_mut().zip(inv.iter_mut()) {
        *s = fixed.unwrap_or(*s / QMAX);
        if !(*s > 0.0 && s.is_finite()) {
            *s = 0.0;
        }
        *i = if *s > 0.0 { 1.0 / *s } else { 0.0 };
    }
}

/// Per-position scales of the patch matrix `col` (`[kdim, osz]`, column maxima) into `sa` /
/// `inv` (`npan * NR` each, zero past `osz`), then the patches packed into `dst` (`npan` panels),
/// split by position panels over the pool: each task scales and packs its own positions.
#[allow(clippy::too_many_arguments)]
pub(super) fn from_matrix(
    isa: i8tile::Isa,
    col: &[f32],
    osz: usize,
    kdim: usize,
    fixed: Option<f32>,
    sa: &mut [f32],
    inv: &mut [f32],
    dst: &mut [i8],
) {
    let (npan, pbytes) = (osz.div_ceil(NR), i8tile::groups(kdim) * 64);
    assert!(sa.len() >= npan * NR && inv.len() >= npan * NR && dst.len() >= npan * pbytes);
    let tasks = threads::tasks(npan, kdim * NR);
    let (sp, ip, dp) = (threads::SharedPtr::new(sa), threads::SharedPtr::new(inv), threads::SharedPtr::new(dst));
    threads::for_each_task(tasks, |t, _| {
        let pans = threads::span(t, tasks, npan, 1);
        let (n, p0) = (pans.len(), pans.start);
        // SAFETY: inside the buffers (asserted above); tasks get disjoint panel ranges.
        let (sa, inv, dst) =
            unsafe { (sp.slice(p0 * NR, n * NR), ip.slice(p0 * NR, n * NR), dp.slice(p0 * pbytes, n * pbytes)) };
        matrix_panels(isa, col, osz, kdim, fixed, p0, sa, inv, dst);
    });
}

/// [`from_matrix`] for the panels from `pan0` on (`sa`, `inv` and `dst` start there); compiled
/// for AVX2 too (the baseline target vectorizes only 4 wide).
#[allow(clippy::too_many_arguments)]
fn matrix_panels(
    isa: i8tile::Isa,
    col: &[f32],
    osz: usize,
    kdim: usize,
    fixed: Option<f32>,
    pan0: usize,
    sa: &mut [f32],
    inv: &mut [f32],
    dst: &mut [i8],
) {
    #[inline(always)]
    fn scales(col: &[f32], osz: usize, fixed: Option<f32>, pan0: usize, sa: &mut [f32], inv: &mut [f32]) {
        sa.fill(0.0);
        for row in col.chunks_exact(osz) {
            for (s, &v) in sa.iter_mut().zip(&row[(pan0 * NR).min(osz)..]) {
                *s = s.max(v.abs());
            }
        }
        finish_scales(fixed, sa, inv);
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2(
        col: &[f32],
        osz: usize,
        kdim: usize,
        fixed: Option<f32>,
        pan0: usize,
        sa: &mut [f32],
        inv: &mut [f32],
        dst: &mut [i8],
    ) {
        scales(col, osz, fixed, pan0, sa, inv);
        pack_matrix_avx2(col, osz, kdim, pan0, inv, dst)
    }
    #[cfg(target_arch = "x86_64")]
    if isa == i8tile::Isa::Avx512Vnni {
        // SAFETY: that body is only picked when AVX-512F and AVX2 were detected.
        return unsafe { matrix_panels_avx512(col, osz, kdim, fixed, pan0, sa, inv, dst) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa != i8tile::Isa::Portable {
        // SAFETY: the AVX2 and VNNI bodies are only picked when AVX2 was detected.
        return unsafe { avx2(col, osz, kdim, fixed, pan0, sa, inv, dst) };
    }
    let _ = isa;
    scales(col, osz, fixed, pan0, sa, inv);
    for (i, panel) in dst.chunks_exact_mut(i8tile::groups(kdim) * 64).enumerate() {
        matrix_panel(col, osz, kdim, &inv[i * NR..][..NR], pan0 + i, panel);
    }
}

/// Panel `pan` of the patch matrix `col` quantized with `inv[j]` for its position j: byte
/// `(g * 64) + 4 * j + u` is patch element (4g + u, pan * NR + j), zero past `kdim` and `osz`.
#[inline(always)]
fn matrix_panel(col: &[f32], osz: usize, kdim: usize, inv: &[f32], pan: usize, panel: &mut [i8]) {
    let (p0, cols) = (pan * NR, NR.min(osz - pan * NR));
    i8tile::pack_panel(panel, kdim, cols, |r, j| q8(col[r * osz + p0 + j] * inv[j]));
}

/// `q8(v * inv)` for 8 lanes, shifted into byte `u` of each 32-bit lane: NaN masked to 0,
/// clamped, then `vcvtps2dq` rounds half to even (the default MXCSR mode), the same values as
/// [`q8`] (LLVM scalarizes its saturating casts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quantize8(
    v: std::arch::x86_64::__m256,
    inv: std::arch::x86_64::__m256,
    u: usize,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let v = _mm256_mul_ps(v, inv);
    let v = _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
    let q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(QMIN)), _mm256_set1_ps(QMAX)));
    _mm256_sllv_epi32(_mm256_and_si256(q, _mm256_set1_epi32(0xff)), _mm256_set1_epi32(8 * u as i32))
}

/// [`matrix_panel`] for the panels from `pan0` on, with AVX2 intrinsics for whole panels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_matrix_avx2(col: &[f32], osz: usize, kdim: usize, pan0: usize, inv: &[f32], dst: &mut [i8]) {
    use std::arch::x86_64::*;
    for (i, panel) in dst.chunks_exact_mut(i8tile::groups(kdim) * 64).enumerate() {
        let (pan, inv) = (pan0 + i, &inv[i * NR..][..NR]);
        let p0 = pan * NR;
        if p0 + NR > osz {
            matrix_panel(col, osz, kdim, inv, pan, panel);
            continue;
        }
        for (gi, grp) in panel.chunks_exact_mut(64).enumerate() {
            for h in 0..2 {
                let iv = _mm256_loadu_ps(inv[8 * h..][..8].as_ptr());
                let mut word = _mm256_setzero_si256();
                for u in 0..4.min(kdim - 4 * gi) {
                    let src = &col[(4 * gi + u) * osz + p0 + 8 * h..][..8];
                    word = _mm256_or_si256(word, quantize8(_mm256_loadu_ps(src.as_ptr()), iv, u));
                }
                _mm256_storeu_si256(grp[32 * h..][..32].as_mut_ptr().cast(), word);
            }
        }
    }
}

/// [`matrix_panels`] on 16 lanes: the column maxima, then whole panels packed one k group
/// (16 positions x 4 bytes) per 512-bit store. The same scales and bytes: `maxps` keeps the
/// running maximum where |x| is NaN (as `f32::max` does), and [`quantize8`]'s steps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn matrix_panels_avx512(
    col: &[f32],
    osz: usize,
    kdim: usize,
    fixed: Option<f32>,
    pan0: usize,
    sa: &mut [f32],
    inv: &mut [f32],
    dst: &mut [i8],
) {
    use std::arch::x86_64::*;
    let p0 = (pan0 * NR).min(osz);
    // Positions of these panels inside the output; `sa` holds whole panels (a multiple of 16).
    let n = sa.len().min(osz - p0);
    sa.fill(0.0);
    for row in col.chunks_exact(osz) {
        for j in (0..n).step_by(16) {
            let lanes = ((1u32 << (n - j).min(16)) - 1) as __mmask16;
            let v = _mm512_maskz_loadu_ps(lanes, row.as_ptr().add(p0 + j));
            let at = sa.as_mut_ptr().add(j);
            _mm512_storeu_ps(at, _mm512_max_ps(_mm512_abs_ps(v), _mm512_loadu_ps(at)));
        }
    }
    finish_scales(fixed, sa, inv);
    let (lo, hi) = (_mm512_set1_ps(QMIN), _mm512_set1_ps(QMAX));
    for (i, panel) in dst.chunks_exact_mut(i8tile::groups(kdim) * 64).enumerate() {
        let (pan, inv) = (pan0 + i, &inv[i * NR..][..NR]);
        let q0 = pan * NR;
        if q0 + NR > osz {
            matrix_panel(col, osz, kdim, inv, pan, panel);
            continue;
        }
        let iv = _mm512_loadu_ps(inv.as_ptr());
        for (gi, grp) in panel.chunks_exact_mut(64).enumerate() {
            let mut word = _mm512_setzero_si512();
            for u in 0..4.min(kdim - 4 * gi) {
                let v = _mm512_mul_ps(_mm512_loadu_ps(col[(4 * gi + u) * osz + q0..][..NR].as_ptr()), iv);
                let v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v);
                let q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
                let byte = _mm512_and_si512(q, _mm512_set1_epi32(0xff));
                word = _mm512_or_si512(word, _mm512_sllv_epi32(byte, _mm512_set1_epi32(8 * u as i32)));
            }
            _mm512_storeu_si512(grp.as_mut_ptr().cast(), word);
        }
    }
}

/// How 8 positions of a panel lie in the padded volume.
const RUN8: i32 = 0;
/// Two runs of 4 (4-wide output rows).
const RUN4X2: i32 = 1;
/// Anything else (runs broken by a row end or by row strides, positions past the output): an
/// AVX2 gather.
const SCATTERED: i32 = 2;

/// The patches of one conv read straight from its image: the geometry's padded volume, offset
/// tables and the scratch sizes they need. Built once per run, used for every image and group.
pub(super) struct Volume {
    /// Elements of one channel's padded volume.
    size: usize,
    ext: [usize; 3],
    pad: [usize; 3],
    input: [usize; 3],
    /// Taps per channel.
    ksz: usize,
    osz: usize,
}

/// What [`Volume::fill`] reads: the input channels, their count, the offset tables and the
/// static scale.
#[derive(Clone, Copy)]
struct Fill<'a> {
    x: &'a [f32],
    cg: usize,
    rows: &'a [i32],
    cols: &'a [i32],
    fixed: Option<f32>,
}

/// Where [`Volume`] keeps its data: carve these from the node's scratch.
pub(super) struct VolumeScratch<'a> {
    /// `cg` padded channels, the `max |x|` plane, then its maximum over the kernel window.
    pub f: &'a mut [f32],
    /// Row offsets (`kdim`), position offsets (`npan * NR`), then one layout tag per 8 positions.
    pub i: &'a mut [i32],
}

impl Volume {
    pub(super) fn new(g: &Geom) -> Volume {
        let ext = super::im2col::padded_ext(g);
        Volume { size: ext.iter().product(), ext, pad: g.pad, input: g.input, ksz: g.kernel_size(), osz: g.out_size() }
    }

    /// Whether `cg` padded channels can be addressed by the i32 offset tables.
    pub(super) fn fits(&self, cg: usize) -> bool {
        (cg + 1).checked_mul(self.size).is_some_and(|n| n <= i32::MAX as usize)
    }

    /// f32 and i32 scratch elements for `cg` channels.
    pub(super) fn scratch_len(&self, cg: usize) -> (usize, usize) {
        let npan = self.osz.div_ceil(NR);
        ((cg + 2) * self.size, cg * self.ksz + npan * NR + 2 * npan)
    }

    /// Fills the offset tables and zeroes the padded channels (their borders stay 0 from here:
    /// [`Volume::pack`] only writes the interior).
    pub(super) fn prepare(&self, g: &Geom, cg: usize, s: &mut VolumeScratch) {
        let [_, e1, e2] = self.ext;
        let kdim = cg * self.ksz;
        let (rows, rest) = s.i.split_at_mut(kdim);
        let (cols, tags) = rest.split_at_mut(self.osz.div_ceil(NR) * NR);
        let mut r = 0;
        for ch in 0..cg {
            for a in 0..g.kernel[0] {
                for b in 0..g.kernel[1] {
                    for c in 0..g.kernel[2] {
                        let off = ((a * g.dilation[0]) * e1 + b * g.dilation[1]) * e2 + c * g.dilation[2];
                        rows[r] = (ch * self.size + off) as i32;
                        r += 1;
                    }
                }
            }
        }
        let [o0, o1, o2] = g.out;
        let mut p = 0;
        for y0 in 0..o0 {
            for y1 in 0..o1 {
                for y2 in 0..o2 {
                    cols[p] = (((y0 * g.stride[0]) * e1 + y1 * g.stride[1]) * e2 + y2 * g.stride[2]) as i32;
                    p += 1;
                }
            }
        }
        cols[p..].fill(0);
        // Positions first..first + len are one run in the volume.
        let run = |first: usize, len: usize| {
            first + len <= self.osz && cols[first..first + len].windows(2).all(|w| w[1] == w[0] + 1)
        };
        for (h, tag) in tags.iter_mut().enumerate() {
            *tag = if run(8 * h, 8) {
                RUN8
            } else if run(8 * h, 4) && run(8 * h + 4, 4) {
                RUN4X2
            } else {
                SCATTERED
            };
        }
        s.f[..cg * self.size].fill(0.0);
    }

    /// Copies channels `x` (`cg` input planes) into the padded volume, sets the per-position
    /// scales `sa` / `inv` (`npan * NR`, zero past the output) and packs the quantized patches
    /// into `dst`, bit-identical to [`from_matrix`] on the im2col matrix of `x`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pack(
        &self,
        isa: i8tile::Isa,
        x: &[f32],
        cg: usize,
        fixed: Option<f32>,
        s: &mut VolumeScratch,
        sa: &mut [f32],
        inv: &mut [f32],
        dst: &mut [i8],
    ) {
        let kdim = cg * self.ksz;
        let (rows, rest) = s.i.split_at(kdim);
        let (cols, tags) = rest.split_at(self.osz.div_ceil(NR) * NR);
        let fill = Fill { x, cg, rows, cols, fixed };
        #[cfg(target_arch = "x86_64")]
        if isa != i8tile::Isa::Portable {
            // SAFETY: AVX2 was detected (the only way to a non-portable body).
            unsafe { self.fill_avx2(&fill, s.f, sa, inv) };
        } else {
            self.fill(&fill, s.f, sa, inv);
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.fill(&fill, s.f, sa, inv);
        let vol = &s.f[..cg * self.size];
        #[cfg(target_arch = "x86_64")]
        if isa != i8tile::Isa::Portable {
            // SAFETY: AVX2 was detected (the only way to a non-portable body); every offset
            // rows[r] + cols[p] lies inside `vol` (built by `prepare` for this geometry).
            return unsafe { pack_volume_avx2(vol, rows, cols, tags, inv, dst) };
        }
        let _ = (isa, tags);
        for (pan, panel) in dst.chunks_exact_mut(i8tile::groups(kdim) * 64).enumerate() {
            let p0 = pan * NR;
            let cols = &cols[p0..][..NR];
            i8tile::pack_panel(panel, kdim, NR, |r, j| q8(vol[(rows[r] + cols[j]) as usize] * inv[p0 + j]));
        }
    }

    /// [`Volume::fill`] compiled for AVX2: its maxima run 8 lanes wide (about 10% of the
    /// fixture teacher's w8a8 time ran on 4-lane SSE before).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2(&self, fill: &Fill, f: &mut [f32], sa: &mut [f32], inv: &mut [f32]) {
        // SAFETY: this function's own target features.
        self.fill_with(fill, f, sa, inv, |dst, src, abs| unsafe { max_into_avx2(dst, src, abs) })
    }

    /// [`Volume::fill_with`] on portable code.
    fn fill(&self, fill: &Fill, f: &mut [f32], sa: &mut [f32], inv: &mut [f32]) {
        self.fill_with(fill, f, sa, inv, |dst, src, abs| {
            for (m, &v) in dst.iter_mut().zip(src) {
                *m = m.max(if abs { v.abs() } else { v });
            }
        })
    }

    /// Copies the channels into the padded volume (the front of `f`) and sets the per-position
    /// scales `sa` / `inv` (`npan * NR`, zero past the output). `max_into(dst, src, abs)` sets
    /// `dst = max(dst, src or |src|)` elementwise, skipping NaN sources (as `f32::max` does).
    #[inline(always)]
    fn fill_with(
        &self,
        fill: &Fill,
        f: &mut [f32],
        sa: &mut [f32],
        inv: &mut [f32],
        max_into: impl Fn(&mut [f32], &[f32], bool),
    ) {
        let Fill { x, cg, rows, cols, fixed } = *fill;
        let (vol, rest) = f.split_at_mut(cg * self.size);
        let (plane, window) = rest.split_at_mut(self.size);
        let isz = self.input.iter().product::<usize>();
        plane.fill(0.0);
        for (ch, xc) in x.chunks_exact(isz).take(cg).enumerate() {
            let chan = &mut vol[ch * self.size..][..self.size];
            super::im2col::copy_into_padded(xc, self.input, self.pad, self.ext, chan);
            max_into(plane, chan, true);
        }
        // A position's patch max is the max of the channel maxima over its taps (the padding
        // contributes the zeros the patch matrix holds): the plane's max over the kernel
        // window, taken for every plane offset at once (whole-plane vector maxima; per position
        // and tap it was a scalar loop, ~15% of the fixture teacher's w8a8 time), then read at
        // each position. The values are >= 0 and not NaN, so the order of the maxima is moot.
        let taps = &rows[..self.ksz];
        let span = self.size - taps.iter().map(|&t| t as usize).max().unwrap_or(0);
        let window = &mut window[..span];
        window.fill(0.0);
        for &t in taps {
            max_into(window, &plane[t as usize..][..span], false);
        }
        sa.fill(0.0);
        for (s, &c) in sa.iter_mut().zip(cols).take(self.osz) {
            *s = window[c as usize];
        }
        finish_scales(fixed, &mut sa[..self.osz], &mut inv[..self.osz]);
        inv[self.osz..].fill(0.0);
    }
}

/// `dst = max(dst, src)` (of `|src|` when `abs`), 8 lanes at a time; a NaN in `src` leaves
/// `dst` (never NaN: it starts at 0) as it was. Written with intrinsics: LLVM turned the
/// plain loop's select into masked stores, slow on Zen 3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_into_avx2(dst: &mut [f32], src: &[f32], abs: bool) {
    use std::arch::x86_64::*;
    let n = dst.len().min(src.len());
    let mask = _mm256_castsi256_ps(_mm256_set1_epi32(if abs { 0x7fff_ffff } else { -1 }));
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, inside both slices.
        unsafe {
            let v = _mm256_and_ps(_mm256_loadu_ps(src.as_ptr().add(i)), mask);
            let d = dst.as_mut_ptr().add(i);
            // maxps returns its second operand when either is NaN: the kept maximum.
            _mm256_storeu_ps(d, _mm256_max_ps(v, _mm256_loadu_ps(d)));
        }
        i += 8;
    }
    for (m, &v) in dst[i..n].iter_mut().zip(&src[i..n]) {
        *m = m.max(if abs { v.abs() } else { v });
    }
}

/// [`Volume::pack`]'s panels with AVX2: per 8 positions one load (a run of 8), two (runs of
/// 4) or a gather, then [`quantize8`]. Positions past the output have `inv` 0 and pack as 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_volume_avx2(vol: &[f32], rows: &[i32], cols: &[i32], tags: &[i32], inv: &[f32], dst: &mut [i8]) {
    use std::arch::x86_64::*;
    let kdim = rows.len();
    for (pan, panel) in dst.chunks_exact_mut(i8tile::groups(kdim) * 64).enumerate() {
        for h in 0..2 {
            let c = &cols[pan * NR + 8 * h..][..8];
            let idx = _mm256_loadu_si256(c.as_ptr().cast());
            let iv = _mm256_loadu_ps(inv[pan * NR + 8 * h..][..8].as_ptr());
            let tag = tags[2 * pan + h];
            for (gi, grp) in panel.chunks_exact_mut(64).enumerate() {
                let mut word = _mm256_setzero_si256();
                for u in 0..4.min(kdim - 4 * gi) {
                    let row = vol.as_ptr().add(rows[4 * gi + u] as usize);
                    let v = match tag {
                        RUN8 => _mm256_loadu_ps(row.add(c[0] as usize)),
                        RUN4X2 => {
                            _mm256_set_m128(_mm_loadu_ps(row.add(c[4] as usize)), _mm_loadu_ps(row.add(c[0] as usize)))
                        }
                        _ => _mm256_i32gather_ps::<4>(row, idx),
                    };
                    word = _mm256_or_si256(word, quantize8(v, iv, u));
                }
                _mm256_storeu_si256(grp[32 * h..][..32].as_mut_ptr().cast(), word);
            }
        }
    }
}
