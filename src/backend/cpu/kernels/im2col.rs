//! im2col: the patch matrix of a convolution, rows (channel, tap) by columns (output position).
//!
//! Two ways to fill it, picked by the output row width:
//! - **spans** (wide rows): per tap and output row, the in-bounds stretch is one copy (a
//!   memcpy at stride 1) and the padding on either side one fill.
//! - **short rows** (under [`SHORT_ROW`] outputs): each channel is first copied into a
//!   zero-padded plane, so every (tap, output row) is one unconditional run, copied with inline
//!   vector moves. On small images (the fixture teacher's 8x8 and 4x4 planes, a 3x3 kernel)
//!   spans are 1 to 8 floats long and the memcpy/memset calls per span cost more than the
//!   data: there the span path took over half of the teacher's batch-8 time (perf); a table of
//!   source offsets per (tap, position), tried first, still cost 40% (a scalar gather).

use super::microkernel::NR;
use super::window::Geom;
use std::cell::RefCell;

/// Output rows narrower than this take the short-row path.
pub const SHORT_ROW: usize = 16;

thread_local! {
    /// The zero-padded input plane of the short-row path, kept per thread so steady-state runs
    /// do not allocate.
    static PLANE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows (channel, tap) by columns (output position) of the input patches of `cg` channels;
/// row `r` starts at `col[r * ld]`, so several images can fill side by side.
pub fn im2col(g: &Geom, x: &[f32], cg: usize, col: &mut [f32], ld: usize) {
    if g.out[2] < SHORT_ROW {
        short_rows(g, x, cg, col, ld)
    } else {
        spans(g, x, cg, col, ld)
    }
}

/// Input index of output `o` and tap `k` along one dim, or None in the padding.
#[inline]
pub fn src(o: usize, k: usize, g: &Geom, d: usize) -> Option<usize> {
    let i = (o * g.stride[d] + k * g.dilation[d]) as isize - g.pad[d] as isize;
    (i >= 0 && (i as usize) < g.input[d]).then_some(i as usize)
}

/// Outputs `lo..hi` along dim `d` whose tap `k` falls inside the input, and the input index of `lo`.
fn valid(k: usize, g: &Geom, d: usize) -> (usize, usize, usize) {
    let (s, off, pad, len) = (g.stride[d], k * g.dilation[d], g.pad[d], g.input[d]);
    let lo = if off >= pad { 0 } else { (pad - off).div_ceil(s) };
    let hi = if len + pad <= off { 0 } else { (len + pad - off).div_ceil(s) };
    let (lo, hi) = (lo.min(g.out[d]), hi.min(g.out[d]));
    let hi = hi.max(lo);
    (lo, hi, (lo * s + off).saturating_sub(pad))
}

/// The span path (see the module doc).
pub fn spans(g: &Geom, x: &[f32], cg: usize, col: &mut [f32], ld: usize) {
    let [o0, o1, o2] = g.out;
    let [k0, k1, k2] = g.kernel;
    let [_, i1, i2] = g.input;
    let s2 = g.stride[2];
    let isz = g.in_size();
    let osz = g.out_size();
    let mut row = 0;
    for ch in 0..cg {
        let xc = &x[ch * isz..][..isz];
        for a in 0..k0 {
            for b in 0..k1 {
                for cc in 0..k2 {
                    let dst = &mut col[row * ld..][..osz];
                    row += 1;
                    let (lo, hi, first) = valid(cc, g, 2);
                    let mut p = 0;
                    for y0 in 0..o0 {
                        let Some(i0) = src(y0, a, g, 0) else {
                            dst[p..p + o1 * o2].fill(0.0);
                            p += o1 * o2;
                            continue;
                        };
                        for y1 in 0..o1 {
                            let d = &mut dst[p..p + o2];
                            p += o2;
                            let Some(i1v) = src(y1, b, g, 1) else {
                                d.fill(0.0);
                                continue;
                            };
                            let line = &xc[(i0 * i1 + i1v) * i2..][..i2];
                            d[..lo].fill(0.0);
                            d[hi..].fill(0.0);
                            if hi == lo {
                                continue;
                            } else if s2 == 1 {
                                d[lo..hi].copy_from_slice(&line[first..first + hi - lo]);
                            } else {
                                for (k, v) in d[lo..hi].iter_mut().enumerate() {
                                    *v = line[first + k * s2];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Extent per dim of the zero-padded input that covers every tap of every output (conv output
/// sizes keep the last tap inside begin pad + input + end pad; the max() is for geometries that
/// do not): the input sits at offset `g.pad`.
pub fn padded_ext(g: &Geom) -> [usize; 3] {
    std::array::from_fn(|d| {
        (g.pad[d] + g.input[d]).max((g.out[d] - 1) * g.stride[d] + (g.kernel[d] - 1) * g.dilation[d] + 1)
    })
}

/// Copies one channel `xc` (extent `input`) into the interior of its zero-padded plane (extent
/// `ext`, the input at offset `pad`); the border is left as it is.
pub fn copy_into_padded(xc: &[f32], input: [usize; 3], pad: [usize; 3], ext: [usize; 3], plane: &mut [f32]) {
    let [_, e1, e2] = ext;
    for (r, line) in xc.chunks_exact(input[2]).enumerate() {
        let (i0, i1) = (r / input[1], r % input[1]);
        let at = ((i0 + pad[0]) * e1 + i1 + pad[1]) * e2 + pad[2];
        copy_short(&mut plane[at..at + line.len()], line);
    }
}

/// The short-row path (see the module doc).
pub fn short_rows(g: &Geom, x: &[f32], cg: usize, col: &mut [f32], ld: usize) {
    let [o0, o1, o2] = g.out;
    let [k0, k1, k2] = g.kernel;
    let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
    let ext = padded_ext(g);
    let [_, e1, e2] = ext;
    let [s0, s1, s2] = g.stride;
    let [d0, d1, d2] = g.dilation;
    PLANE.with_borrow_mut(|plane| {
        plane.clear();
        // Zeroed once: each channel overwrites the same interior, the border stays 0.
        plane.resize(ext.iter().product(), 0.0);
        for ch in 0..cg {
            copy_into_padded(&x[ch * isz..][..isz], g.input, g.pad, ext, plane);
            let mut row = ch * ksz;
            for a in 0..k0 {
                for b in 0..k1 {
                    for cc in 0..k2 {
                        let dst = &mut col[row * ld..][..osz];
                        row += 1;
                        let mut runs = dst.chunks_exact_mut(o2);
                        for y0 in 0..o0 {
                            for y1 in 0..o1 {
                                let Some(d) = runs.next() else { return };
                                let at = ((y0 * s0 + a * d0) * e1 + y1 * s1 + b * d1) * e2 + cc * d2;
                                if s2 == 1 {
                                    copy_short(d, &plane[at..at + o2]);
                                } else {
                                    for (k, v) in d.iter_mut().enumerate() {
                                        *v = plane[at + k * s2];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    debug_assert_eq!(o0 * o1 * o2, osz);
}

/// Floats of the zero-padded copy of `cg` channels that [`pad_image`] writes.
pub fn padded_len(g: &Geom, cg: usize) -> usize {
    cg * padded_ext(g).iter().product::<usize>()
}

/// Copies `cg` channels of one image into `dst` as zero-padded planes of [`padded_ext`] each.
pub fn pad_image(g: &Geom, x: &[f32], cg: usize, dst: &mut [f32]) {
    let ext = padded_ext(g);
    let (psz, isz) = (ext.iter().product::<usize>(), g.in_size());
    dst[..cg * psz].fill(0.0);
    for (xc, plane) in x.chunks_exact(isz).zip(dst.chunks_exact_mut(psz)).take(cg) {
        copy_into_padded(xc, g.input, g.pad, ext, plane);
    }
}

/// Patch columns (output positions) `j0..j0 + cols` of one image, read from its [`pad_image`]
/// copy, straight into the register tile's `NR`-wide panels: element (row r, column jj) of
/// panel q at `dst[q * k * NR + r * NR + jj]`, rows (channel, tap) as in [`im2col`], zero past
/// `cols`. A panel's positions fall in runs along output rows; per row of the panel, a run is
/// one unconditional copy from the padded plane (a vector move at unit stride). This replaces
/// im2col followed by a copy into panels, which took ~40% of the fixture teacher's batch-1
/// time once its tile was fast.
pub fn pack_patches(g: &Geom, padded: &[f32], cg: usize, j0: usize, cols: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above).
        return unsafe { pack_patches_avx(g, padded, cg, j0, cols, dst) };
    }
    pack_patches_body(g, padded, cg, j0, cols, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn pack_patches_avx(g: &Geom, padded: &[f32], cg: usize, j0: usize, cols: usize, dst: &mut [f32]) {
    pack_patches_body(g, padded, cg, j0, cols, dst)
}

/// A run of one panel row: `len` outputs from column `col` of the panel, read from `base` on
/// in the padded image (plus the row's tap offset).
#[derive(Clone, Copy, Default)]
struct Run {
    col: usize,
    base: usize,
    len: usize,
}

#[inline(always)]
fn pack_patches_body(g: &Geom, padded: &[f32], cg: usize, j0: usize, cols: usize, dst: &mut [f32]) {
    let k = cg * g.kernel_size();
    let [_, o1, o2] = g.out;
    let [k0, k1, k2] = g.kernel;
    let ext = padded_ext(g);
    let [_, e1, e2] = ext;
    let psz = ext.iter().product::<usize>();
    let [s0, s1, s2] = g.stride;
    let [d0, d1, d2] = g.dilation;
    // The largest tap offset of a row: every read below stays under it plus a run's extent.
    let last_tap = (cg - 1) * psz + ((k0 - 1) * d0 * e1 + (k1 - 1) * d1) * e2 + (k2 - 1) * d2;
    for (q, panel) in dst.chunks_exact_mut(k * NR).take(cols.div_ceil(NR)).enumerate() {
        let c0 = j0 + q * NR;
        let end = c0 + NR.min(j0 + cols - c0);
        if end - c0 < NR {
            for row in panel.chunks_exact_mut(NR) {
                row[end - c0..].fill(0.0);
            }
        }
        let (mut runs, mut nruns, mut pos) = ([Run::default(); NR], 0, c0);
        while pos < end {
            let (y2, rest) = (pos % o2, pos / o2);
            let (y1, y0) = (rest % o1, rest / o1);
            let len = (o2 - y2).min(end - pos);
            let base = (y0 * s0 * e1 + y1 * s1) * e2 + y2 * s2;
            assert!(last_tap + base + (len - 1) * s2 < padded.len(), "pack_patches: padded image too short");
            runs[nruns] = Run { col: pos - c0, base, len };
            nruns += 1;
            pos += len;
        }
        let taps = Taps { cg, kernel: g.kernel, dilation: g.dilation, psz, e1, e2 };
        for r in &runs[..nruns] {
            // SAFETY: every tap offset is at most `last_tap`, so the reads stay inside `padded`
            // (asserted per run above); the writes stay inside the panel's rows (`r.col + r.len
            // <= NR`, k rows).
            unsafe {
                let (src, dst) = (padded.as_ptr().add(r.base), panel.as_mut_ptr().add(r.col));
                // A run length fixed at compile time makes each row one move (the common
                // widths of small maps); loops over rows per run keep it out of the inner loop.
                match (s2, r.len) {
                    (1, 8) => taps.copy::<8>(src, dst, 8, 1),
                    (1, 4) => taps.copy::<4>(src, dst, 4, 1),
                    (1, 16) => taps.copy::<16>(src, dst, 16, 1),
                    _ => taps.copy::<0>(src, dst, r.len, s2),
                }
            }
        }
    }
}

/// The tap offsets of a padded image, row by row of the patch matrix (channel, tap).
struct Taps {
    cg: usize,
    kernel: [usize; 3],
    dilation: [usize; 3],
    psz: usize,
    e1: usize,
    e2: usize,
}

impl Taps {
    /// For every row (channel, tap) of the patch matrix: `len` floats, `stride` apart, from
    /// `src` plus the row's tap offset, to `dst` plus the row times `NR`. `N` > 0 fixes `len`
    /// (unit stride) at compile time.
    ///
    /// # Safety
    /// Every read and write named must be in bounds.
    #[inline(always)]
    unsafe fn copy<const N: usize>(&self, src: *const f32, dst: *mut f32, len: usize, stride: usize) {
        let [k0, k1, k2] = self.kernel;
        let [d0, d1, d2] = self.dilation;
        let mut row = dst;
        for ch in 0..self.cg {
            for a in 0..k0 {
                for b in 0..k1 {
                    let line = src.add(ch * self.psz + (a * d0 * self.e1 + b * d1) * self.e2);
                    for cc in 0..k2 {
                        let s = line.add(cc * d2);
                        if N > 0 {
                            std::ptr::copy_nonoverlapping(s, row, N);
                        } else if stride == 1 {
                            copy_run(row, s, len);
                        } else {
                            for t in 0..len {
                                *row.add(t) = *s.add(t * stride);
                            }
                        }
                        row = row.add(NR);
                    }
                }
            }
        }
    }
}

/// Copies `n <= NR` floats with fixed-size moves (overlapping at the end), no memcpy call.
///
/// # Safety
/// `s` must be readable and `d` writable for `n` floats.
#[inline(always)]
unsafe fn copy_run(d: *mut f32, s: *const f32, n: usize) {
    use std::ptr::copy_nonoverlapping as copy;
    if n >= 8 {
        copy(s, d, 8);
        copy(s.add(n - 8), d.add(n - 8), 8);
    } else if n >= 4 {
        copy(s, d, 4);
        copy(s.add(n - 4), d.add(n - 4), 4);
    } else {
        for t in 0..n {
            *d.add(t) = *s.add(t);
        }
    }
}

/// `d.copy_from_slice(s)` for the short runs of this path, inline: fixed-size (vector) moves
/// that overlap at the end instead of a memcpy call per run.
#[inline(always)]
pub(super) fn copy_short(d: &mut [f32], s: &[f32]) {
    let n = d.len();
    assert!(s.len() >= n);
    let (dp, sp) = (d.as_mut_ptr(), s.as_ptr());
    // SAFETY: every copy below lies within the first n floats of both slices (n checked above;
    // the 8- and 4-float copies start at most n - 8 / n - 4).
    unsafe {
        if n >= 8 {
            let mut i = 0;
            while i + 8 < n {
                std::ptr::copy_nonoverlapping(sp.add(i), dp.add(i), 8);
                i += 8;
            }
            std::ptr::copy_nonoverlapping(sp.add(n - 8), dp.add(n - 8), 8);
        } else if n >= 4 {
            std::ptr::copy_nonoverlapping(sp, dp, 4);
            std::ptr::copy_nonoverlapping(sp.add(n - 4), dp.add(n - 4), 4);
        } else {
            for k in 0..n {
                *dp.add(k) = *sp.add(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{AutoPad, Window};

    /// (input dims, kernel, pad, stride, dilation): 2-D with padding, strides and dilations,
    /// 8- and 4-wide rows (the teacher's), 1-D and 3-D.
    type Case = (&'static [usize], &'static [usize], usize, usize, usize);
    const CASES: [Case; 8] = [
        (&[8, 8], &[3, 3], 1, 1, 1),
        (&[4, 4], &[3, 3], 1, 1, 1),
        (&[5, 7], &[3, 2], 2, 2, 1),
        (&[6, 9], &[3, 3], 1, 2, 2),
        (&[3, 3], &[5, 5], 2, 1, 1),
        (&[11], &[4], 1, 3, 1),
        (&[19], &[4], 1, 1, 2),
        (&[3, 4, 5], &[2, 3, 3], 1, 1, 1),
    ];

    /// A case's geometry, and an input of 3 channels (distinct values).
    fn case(dims: &[usize], kernel: &[usize], pad: usize, stride: usize, dil: usize) -> (Geom, usize, Vec<f32>) {
        let r = dims.len();
        let w = Window {
            kernel: kernel.to_vec(),
            strides: vec![stride; r],
            pads: vec![pad; 2 * r],
            dilations: vec![dil; r],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        let g = super::super::window::resolve(&w, dims, kernel).unwrap();
        let cg = 3;
        let x = (0..cg * g.in_size()).map(|i| i as f32 + 1.0).collect();
        (g, cg, x)
    }

    /// Patches packed straight into panels equal im2col's matrix cut into panels, for every
    /// column block (panels straddling output rows, a partial last panel).
    #[test]
    fn packed_patches_match_im2col() {
        for (dims, kernel, pad, stride, dil) in CASES {
            let (g, cg, x) = case(dims, kernel, pad, stride, dil);
            let (k, osz) = (cg * g.kernel_size(), g.out_size());
            let mut col = vec![0.0; k * osz];
            spans(&g, &x, cg, &mut col, osz);
            let mut padded = vec![f32::NAN; padded_len(&g, cg)];
            pad_image(&g, &x, cg, &mut padded);
            for (j0, cols) in [(0, osz), (NR.min(osz), osz - NR.min(osz)), (osz / 3, osz - osz / 3)] {
                let panels = cols.div_ceil(NR);
                let mut got = vec![f32::NAN; panels * k * NR];
                pack_patches(&g, &padded, cg, j0, cols, &mut got);
                for q in 0..panels {
                    for row in 0..k {
                        for jj in 0..NR {
                            let j = j0 + q * NR + jj;
                            let want = if j < j0 + cols { col[row * osz + j] } else { 0.0 };
                            let at = format!(
                                "{dims:?} k{kernel:?} s{stride} d{dil} cols {j0}+{cols} panel {q} ({row},{jj})"
                            );
                            assert_eq!(got[q * k * NR + row * NR + jj], want, "{at}");
                        }
                    }
                }
            }
        }
    }

    /// Both paths give the same patches, padding, strides and dilations included, and write
    /// nothing outside their rows.
    #[test]
    fn short_rows_match_spans() {
        for (dims, kernel, pad, stride, dil) in CASES {
            let (g, cg, x) = case(dims, kernel, pad, stride, dil);
            let (rows, osz) = (cg * g.kernel_size(), g.out_size());
            let ld = osz + 5;
            let mut a = vec![-7.0; rows * ld];
            let mut b = a.clone();
            spans(&g, &x, cg, &mut a, ld);
            short_rows(&g, &x, cg, &mut b, ld);
            assert_eq!(a, b, "{dims:?} k{kernel:?} p{pad} s{stride} d{dil}");
            assert!(a.chunks(ld).all(|row| row[osz..].iter().all(|&v| v == -7.0)));
            assert!(a.contains(&0.0), "padding zeros for {dims:?}");
        }
    }
}
