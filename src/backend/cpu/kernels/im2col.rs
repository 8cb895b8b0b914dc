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

    /// Both paths give the same patches, padding, strides and dilations included, and write
    /// nothing outside their rows.
    #[test]
    fn short_rows_match_spans() {
        type Case = (&'static [usize], &'static [usize], usize, usize, usize);
        let cases: [Case; 7] = [
            (&[8, 8], &[3, 3], 1, 1, 1),
            (&[4, 4], &[3, 3], 1, 1, 1),
            (&[5, 7], &[3, 2], 2, 2, 1),
            (&[6, 9], &[3, 3], 1, 2, 2),
            (&[3, 3], &[5, 5], 2, 1, 1),
            (&[11], &[4], 1, 3, 1),
            (&[3, 4, 5], &[2, 3, 3], 1, 1, 1),
        ];
        for (dims, kernel, pad, stride, dil) in cases {
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
            let x: Vec<f32> = (0..cg * g.in_size()).map(|i| i as f32 + 1.0).collect();
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
