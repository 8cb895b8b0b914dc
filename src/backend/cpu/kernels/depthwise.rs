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
    let run = |plane: usize, yc: &mut [f32], buf: &mut [f32]| {
        let (img, oc) = (plane / m, plane % m);
        let xc = &x[(img * c + oc / mg) * isz..][..isz];
        let wc = &w[oc * ksz..][..ksz];
        pad_plane(g, lay, xc, buf);
        plane_kernel(g, lay, buf, wc, b.map_or(0.0, |b| b[oc]), act, yc);
    };
    threads::for_each_chunk(y, osz, scratch, psz, workers, run);
}

/// Copies one input plane into the zero-padded, phase-split buffer.
fn pad_plane(g: &Geom, lay: Layout, x: &[f32], buf: &mut [f32]) {
    let (s2, (ih, iw)) = (g.stride[2], (g.input[1], g.input[2]));
    let (p1, p2) = (g.pad[1], g.pad[2]);
    for r in 0..lay.rows {
        let src = r.checked_sub(p1).filter(|&i| i < ih).map(|i| &x[i * iw..][..iw]);
        for ph in 0..s2 {
            let dst = &mut buf[(r * s2 + ph) * lay.len..][..lay.len];
            let Some(line) = src else {
                dst.fill(0.0);
                continue;
            };
            if s2 == 1 {
                // Columns p2..p2+iw hold the line; the rest is padding.
                let lo = p2.min(lay.len);
                let hi = (p2 + iw).min(lay.len);
                dst[..lo].fill(0.0);
                dst[lo..hi].copy_from_slice(&line[..hi - lo]);
                dst[hi..].fill(0.0);
            } else {
                // Phase ph holds padded columns j * s2 + ph; those in p2..p2 + iw are input
                // columns (j * s2 + ph - p2), the rest padding.
                let lo = p2.saturating_sub(ph).div_ceil(s2).min(lay.len);
                let hi = (p2 + iw).saturating_sub(ph).div_ceil(s2).clamp(lo, lay.len);
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if hi > lo {
                    let src = line[lo * s2 + ph - p2..].iter().step_by(s2);
                    for (d, &v) in dst[lo..hi].iter_mut().zip(src) {
                        *d = v;
                    }
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(g: &Geom, lay: Layout, buf: &[f32], w: &[f32], bias: f32, act: Option<&Unary>, y: &mut [f32]) {
    plane_body::<true>(g, lay, buf, w, bias, act, y);
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
    // Start of each tap's run within its padded row: phase row and offset.
    let mut taps = [0usize; 64];
    let simple = k2 <= taps.len();
    if simple {
        for (cc, t) in taps.iter_mut().enumerate().take(k2) {
            let off = cc * d2;
            *t = (off % s2) * lay.len + off / s2;
        }
    }
    for oy in 0..o1 {
        let yrow = &mut y[oy * o2..][..o2];
        let mut x0 = 0;
        while x0 < o2 {
            let width = LANES.min(o2 - x0);
            let mut acc = [bias; LANES];
            for a in 0..k1 {
                let row = &buf[(oy * s1 + a * d1) * s2 * lay.len..];
                let wr = &w[a * k2..][..k2];
                for (cc, &wv) in wr.iter().enumerate() {
                    let start = if simple {
                        taps[cc]
                    } else {
                        let off = cc * d2;
                        (off % s2) * lay.len + off / s2
                    };
                    // Whole vectors even for the last, partial block (see `depthwise`): on
                    // MobileNetV3's 7- and 14-wide planes every block is partial, and a
                    // variable-width loop there ran scalar.
                    let src: &[f32; LANES] = row[start + x0..][..LANES].try_into().expect("LANES long");
                    for i in 0..LANES {
                        acc[i] = if FMA { wv.mul_add(src[i], acc[i]) } else { acc[i] + wv * src[i] };
                    }
                }
            }
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
