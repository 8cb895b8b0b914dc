//! Direct depthwise convolution (one input channel per group), 1-D and 2-D, without im2col.
//!
//! Each input plane is copied once into a zero-padded buffer split by column phase (column
//! `j * stride + p` goes to phase row `p`), so every kernel tap reads a contiguous run whatever
//! the stride and dilation. Outputs are produced 16 at a time in registers over all taps, the
//! bias included, and stored once; the fused activation then runs over the finished plane.
//! The loop body is compiled twice, for AVX2+FMA (picked at run time) and for the baseline
//! target.
//! Planes are independent, so they are split over the CPU thread pool.

use super::activation;
use super::im2col::copy_short;
use super::threads;
use super::window::Geom;
use crate::ir::Unary;

/// Outputs accumulated in registers at a time (two AVX vectors).
const LANES: usize = 16;

/// Whether the direct kernel handles `g`: no third spatial dim (1-D and 2-D convs).
pub fn supports(g: &Geom) -> bool {
    g.kernel[0] == 1 && g.input[0] == 1 && g.out[0] == 1 && g.pad[0] == 0
}

/// Padded, phase-split layout of one input plane.
#[derive(Clone, Copy)]
struct Layout {
    /// Padded rows needed by the outputs.
    rows: usize,
    /// Length of one phase row.
    len: usize,
}

impl Layout {
    fn new(g: &Geom) -> Layout {
        let rows = (g.out[1] - 1) * g.stride[1] + (g.kernel[1] - 1) * g.dilation[1] + 1;
        let cols = (g.out[2] - 1) * g.stride[2] + (g.kernel[2] - 1) * g.dilation[2] + 1;
        Layout { rows, len: cols.div_ceil(g.stride[2]) }
    }
    fn size(&self, g: &Geom) -> usize {
        self.rows * g.stride[2] * self.len
    }
}

/// `y = act(conv(x, w) + b)` for `n` images of `c` channels, `mg` outputs per channel.
/// `scratch` holds one padded plane per worker thread.
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: Option<&Unary>,
    y: &mut [f32],
    (n, c, mg): (usize, usize, usize),
    scratch: &mut Vec<f32>,
) {
    let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
    let m = c * mg;
    let lay = Layout::new(g);
    // LANES spare floats after the plane: a row's last, partial block of outputs still loads
    // whole vectors (lanes past the row read neighbouring or spare values and are dropped).
    let psz = lay.size(g) + LANES;
    let planes = n * m;
    let workers = threads::workers(planes, osz * ksz);
    scratch.resize(psz * workers, 0.0);
    // The padding (and the spare tail) is zero for every plane: zero it here once.
    scratch[..psz * workers].fill(0.0);
    let run = |plane: usize, yc: &mut [f32], buf: &mut [f32]| {
        let (img, oc) = (plane / m, plane % m);
        let xc = &x[(img * c + oc / mg) * isz..][..isz];
        let wc = &w[oc * ksz..][..ksz];
        pad_plane(g, lay, xc, buf);
        plane_kernel(g, lay, buf, wc, b.map_or(0.0, |b| b[oc]), act, yc);
    };
    threads::for_each_chunk(y, osz, scratch, psz, workers, run);
}

/// Copies one input plane into the interior of the phase-split buffer. The padding around it
/// is zeroed once per call (`depthwise`): its positions are the same for every plane, and on
/// MobileNetV3's 7x7 planes the per-row fills were a libc call per two floats.
fn pad_plane(g: &Geom, lay: Layout, x: &[f32], buf: &mut [f32]) {
    let (s2, (ih, iw)) = (g.stride[2], (g.input[1], g.input[2]));
    let (p1, p2) = (g.pad[1], g.pad[2]);
    for (i, line) in x.chunks_exact(iw).take(ih).enumerate() {
        let r = i + p1;
        if r >= lay.rows {
            break;
        }
        let rowbuf = &mut buf[r * s2 * lay.len..][..s2 * lay.len];
        if s2 == 1 {
            // Columns p2..p2 + iw hold the line (clipped to what the outputs read).
            let n = iw.min(lay.len.saturating_sub(p2));
            if n > 0 {
                copy_short(&mut rowbuf[p2..p2 + n], line);
            }
        } else if s2 == 2 {
            // Input column 2t + u lands in phase (u + p2) % 2 at position t + (u + p2) / 2: a
            // de-interleave of even and odd columns (vectorized; `step_by` ran scalar).
            let ph_even = p2 % 2;
            let (first_even, first_odd) = (p2 / 2, (p2 + 1) / 2);
            let n_even = iw.div_ceil(2).min(lay.len.saturating_sub(first_even));
            let n_odd = (iw / 2).min(lay.len.saturating_sub(first_odd));
            let pairs = n_even.min(n_odd);
            let (lo, hi) = rowbuf.split_at_mut(lay.len);
            let (even, odd) = if ph_even == 0 { (lo, hi) } else { (hi, lo) };
            let (even, odd) = (&mut even[first_even..][..n_even], &mut odd[first_odd..][..n_odd]);
            for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(line.chunks_exact(2)).take(pairs) {
                *e = pair[0];
                *o = pair[1];
            }
            if n_even > pairs {
                even[pairs] = line[2 * pairs];
            }
            debug_assert!(n_odd <= pairs && n_even <= pairs + 1);
        } else {
            for (ci, &v) in line.iter().enumerate() {
                let pc = ci + p2;
                if pc / s2 < lay.len {
                    rowbuf[(pc % s2) * lay.len + pc / s2] = v;
                }
            }
        }
    }
}

fn plane_kernel(g: &Geom, lay: Layout, buf: &[f32], w: &[f32], bias: f32, act: Option<&Unary>, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { plane_avx2(g, lay, buf, w, bias, act, y) };
        return;
    }
    plane_body::<false>(g, lay, buf, w, bias, act, y);
}

/// Start of each horizontal tap's run within a padded row (phase row and offset), for kernels
/// up to 64 wide; `None` past that.
fn tap_starts(g: &Geom, lay: Layout) -> Option<[usize; 64]> {
    let mut taps = [0usize; 64];
    let (k2, s2, d2) = (g.kernel[2], g.stride[2], g.dilation[2]);
    for (cc, t) in taps.iter_mut().enumerate().take(k2) {
        let off = cc * d2;
        *t = (off % s2) * lay.len + off / s2;
    }
    (k2 <= taps.len()).then_some(taps)
}

/// The AVX2 plane: explicit vectors, because from the array code of `plane_body` the compiler
/// kept the 16 accumulators in pieces of xmm registers with shuffles between them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(g: &Geom, lay: Layout, buf: &[f32], w: &[f32], bias: f32, act: Option<&Unary>, y: &mut [f32]) {
    use std::arch::x86_64::*;
    let Some(taps) = tap_starts(g, lay) else {
        return plane_body::<true>(g, lay, buf, w, bias, act, y);
    };
    let (o1, o2) = (g.out[1], g.out[2]);
    let (k1, k2) = (g.kernel[1], g.kernel[2]);
    let (s1, s2, d1) = (g.stride[1], g.stride[2], g.dilation[1]);
    // Every load below lies in the padded plane plus its LANES spare floats (`depthwise`), and
    // every store in the o1 x o2 output plane.
    assert!(buf.len() >= lay.size(g) + LANES && w.len() >= k1 * k2 && y.len() >= o1 * o2);
    let (bp, wp, yp) = (buf.as_ptr(), w.as_ptr(), y.as_mut_ptr());
    for oy in 0..o1 {
        let row0 = bp.add(oy * s1 * s2 * lay.len);
        let yrow = yp.add(oy * o2);
        let mut x0 = 0;
        while x0 < o2 {
            let left = o2 - x0;
            if left <= LANES / 2 {
                // A last block of at most 8 (MobileNetV3's 7-wide planes): one vector.
                let mut a0 = _mm256_set1_ps(bias);
                for a in 0..k1 {
                    let row = row0.add(a * d1 * s2 * lay.len + x0);
                    for (cc, &t) in taps.iter().enumerate().take(k2) {
                        let wv = _mm256_set1_ps(*wp.add(a * k2 + cc));
                        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(row.add(t)), a0);
                    }
                }
                let mut out = [0f32; LANES / 2];
                _mm256_storeu_ps(out.as_mut_ptr(), a0);
                std::ptr::copy_nonoverlapping(out.as_ptr(), yrow.add(x0), left);
                break;
            }
            let (mut a0, mut a1) = (_mm256_set1_ps(bias), _mm256_set1_ps(bias));
            for a in 0..k1 {
                let row = row0.add(a * d1 * s2 * lay.len + x0);
                for (cc, &t) in taps.iter().enumerate().take(k2) {
                    let wv = _mm256_set1_ps(*wp.add(a * k2 + cc));
                    a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(row.add(t)), a0);
                    a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(row.add(t + 8)), a1);
                }
            }
            if left >= LANES {
                _mm256_storeu_ps(yrow.add(x0), a0);
                _mm256_storeu_ps(yrow.add(x0 + 8), a1);
            } else {
                let mut out = [0f32; LANES];
                _mm256_storeu_ps(out.as_mut_ptr(), a0);
                _mm256_storeu_ps(out.as_mut_ptr().add(8), a1);
                std::ptr::copy_nonoverlapping(out.as_ptr(), yrow.add(x0), left);
            }
            x0 += LANES.min(left);
        }
    }
    if let Some(u) = act {
        activation::apply(u, &mut y[..o1 * o2]);
    }
}

/// One output plane. `FMA` selects fused multiply-add (only where the CPU has it: without
/// hardware FMA, `mul_add` is a slow library call).
#[inline(always)]
fn plane_body<const FMA: bool>(
    g: &Geom,
    lay: Layout,
    buf: &[f32],
    w: &[f32],
    bias: f32,
    act: Option<&Unary>,
    y: &mut [f32],
) {
    let (o1, o2) = (g.out[1], g.out[2]);
    let (k1, k2) = (g.kernel[1], g.kernel[2]);
    let (s1, s2, d1, d2) = (g.stride[1], g.stride[2], g.dilation[1], g.dilation[2]);
    let taps = tap_starts(g, lay);
    let tap = |cc: usize| match &taps {
        Some(t) => t[cc],
        None => ((cc * d2) % s2) * lay.len + cc * d2 / s2,
    };
    for oy in 0..o1 {
        let yrow = &mut y[oy * o2..][..o2];
        let rows = |a: usize| &buf[(oy * s1 + a * d1) * s2 * lay.len..];
        let mut x0 = 0;
        while x0 < o2 {
            // 16 outputs a block; a last block of at most 8 (MobileNetV3's 7-wide planes) as
            // 8, so half the lanes are not computed for nothing.
            let left = o2 - x0;
            if left <= LANES / 2 {
                let acc = block::<FMA, { LANES / 2 }>(k1, k2, &rows, w, &tap, x0, bias);
                yrow[x0..].copy_from_slice(&acc[..left]);
                break;
            }
            let acc = block::<FMA, LANES>(k1, k2, &rows, w, &tap, x0, bias);
            let width = LANES.min(left);
            yrow[x0..x0 + width].copy_from_slice(&acc[..width]);
            x0 += width;
        }
    }
    // Once per plane (still in cache): per 16-output block the dispatch cost as much as the
    // activation on MobileNetV3's small planes.
    if let Some(u) = act {
        activation::apply(u, &mut y[..o1 * o2]);
    }
}

/// `L` outputs from `x0` on, in registers over all taps, the bias included. Whole `L`-float
/// loads even for a row's last, partial block (see `depthwise`): a variable-width loop there
/// ran scalar.
#[inline(always)]
fn block<'a, const FMA: bool, const L: usize>(
    k1: usize,
    k2: usize,
    rows: &impl Fn(usize) -> &'a [f32],
    w: &[f32],
    tap: &impl Fn(usize) -> usize,
    x0: usize,
    bias: f32,
) -> [f32; L] {
    let mut acc = [bias; L];
    for a in 0..k1 {
        let row = rows(a);
        for (cc, &wv) in w[a * k2..][..k2].iter().enumerate() {
            let src: &[f32; L] = row[tap(cc) + x0..][..L].try_into().expect("L long");
            for i in 0..L {
                acc[i] = if FMA { wv.mul_add(src[i], acc[i]) } else { acc[i] + wv * src[i] };
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::kernels::window::resolve;
    use crate::ir::{AutoPad, Window};

    /// Direct definition of a depthwise 2-D conv (channel multiplier `mg`).
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        (n, c, h, wd): (usize, usize, usize, usize),
        w: &[f32],
        mg: usize,
        k: usize,
        g: &Geom,
    ) -> Vec<f32> {
        let (oh, ow) = (g.out[1], g.out[2]);
        let mut y = vec![0.0; n * c * mg * oh * ow];
        for img in 0..n {
            for oc in 0..c * mg {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0;
                        for a in 0..k {
                            for b in 0..k {
                                let iy = (oy * g.stride[1] + a * g.dilation[1]) as isize - g.pad[1] as isize;
                                let ix = (ox * g.stride[2] + b * g.dilation[2]) as isize - g.pad[2] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                acc += x[((img * c + oc / mg) * h + iy as usize) * wd + ix as usize]
                                    * w[(oc * k + a) * k + b];
                            }
                        }
                        y[((img * c * mg + oc) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_naive() {
        // (k, stride, pad, dilation, mg, h, w): odd and even sizes, widths around LANES.
        let cases = [
            (3, 1, 1, 1, 1, 7, 20),
            (3, 2, 1, 1, 1, 9, 33),
            (5, 1, 2, 1, 1, 6, 16),
            (5, 2, 2, 1, 2, 11, 40),
            (3, 1, 2, 2, 1, 8, 17),
            (3, 3, 0, 1, 1, 10, 50),
            (1, 1, 0, 1, 3, 4, 5),
            (5, 1, 2, 1, 1, 7, 7),
            (5, 2, 2, 1, 1, 14, 14),
            (3, 2, 1, 1, 1, 3, 3),
            (3, 1, 1, 1, 1, 5, 24),
            (3, 2, 0, 1, 1, 8, 15),
            (3, 2, 1, 1, 1, 112, 112),
        ];
        for &(k, s, p, d, mg, h, wd) in &cases {
            let (n, c) = (2, 3);
            let win = Window {
                kernel: vec![],
                strides: vec![s, s],
                pads: vec![p; 4],
                dilations: vec![d, d],
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
            };
            let g = resolve(&win, &[h, wd], &[k, k]).unwrap();
            let x: Vec<f32> = (0..n * c * h * wd).map(|i| ((i * 7 % 13) as f32) - 6.0).collect();
            let w: Vec<f32> = (0..c * mg * k * k).map(|i| ((i * 5 % 11) as f32) * 0.1 - 0.5).collect();
            let bias: Vec<f32> = (0..c * mg).map(|i| i as f32 * 0.5 - 1.0).collect();
            let want = naive(&x, (n, c, h, wd), &w, mg, k, &g);
            let osz = g.out_size();
            for act in [None, Some(Unary::HardSwish)] {
                let mut y = vec![f32::NAN; want.len()];
                depthwise(&g, &x, &w, Some(&bias), act.as_ref(), &mut y, (n, c, mg), &mut Vec::new());
                for (i, (&got, &r)) in y.iter().zip(&want).enumerate() {
                    let r = r + bias[(i / osz) % (c * mg)];
                    let r = act.as_ref().map_or(r, |u| crate::backend::cpu::kernels::elementwise::unary_f32(u, r));
                    assert!((got - r).abs() < 1e-4, "{got} vs {r} at {i}: k{k} s{s} p{p} d{d} mg{mg} {h}x{wd} {act:?}");
                }
            }
        }
    }
}
