//! Direct convolution without im2col, 1-D and 2-D: depthwise convs (one input channel per
//! group) and convs with a short reduction (`cg * kernel` of at most `SHORT_K`, such as an RGB
//! stem), where building the patch matrix and packing it for a GEMM cost more than the
//! multiply-adds.
//!
//! Each input plane of a group is copied once into a zero-padded buffer split by column phase
//! (column `j * stride + p` goes to phase row `p`), so every kernel tap reads a contiguous run
//! whatever the stride and dilation. Outputs are produced 16 at a time in registers over all
//! taps and input planes, for up to 4 output channels at once (one input load feeds each),
//! the bias included, and stored once; the fused activation then runs over the finished plane.
//! The loop body is AVX2+FMA intrinsics (picked at run time) or portable code for the baseline
//! target. Blocks of output planes are independent, so they are split over the thread pool.

use super::activation;
use super::im2col::copy_short;
use super::threads;
use super::window::Geom;
use crate::ir::Unary;

/// Outputs accumulated in registers at a time (two AVX vectors).
const LANES: usize = 16;
/// Largest reduction (input channels per group x kernel size) a non-depthwise conv runs here
/// rather than as im2col + GEMM (MobileNetV3's 3-channel 3x3 stem has 27).
pub const SHORT_K: usize = 32;

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

/// Rows and columns of the padded input that the outputs of a 2-D conv read.
pub(super) fn padded_extent(g: &Geom) -> (usize, usize) {
    let rows = (g.out[1] - 1) * g.stride[1] + (g.kernel[1] - 1) * g.dilation[1] + 1;
    let cols = (g.out[2] - 1) * g.stride[2] + (g.kernel[2] - 1) * g.dilation[2] + 1;
    (rows, cols)
}

impl Layout {
    fn new(g: &Geom) -> Layout {
        let (rows, cols) = padded_extent(g);
        Layout { rows, len: cols.div_ceil(g.stride[2]) }
    }
    fn size(&self, g: &Geom) -> usize {
        self.rows * g.stride[2] * self.len
    }
}

/// Channel counts of a direct conv: `n` images, `group` groups of `cg` input and `mg` output
/// channels.
#[derive(Clone, Copy, Debug)]
pub struct Channels {
    pub n: usize,
    pub group: usize,
    pub cg: usize,
    pub mg: usize,
}

/// `y = act(conv(x, w) + b)`, W `[group * mg, cg, k...]`. `scratch` holds one group's padded
/// input planes per worker thread.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: Option<&Unary>,
    y: &mut [f32],
    ch: Channels,
    scratch: &mut Vec<f32>,
) {
    let Channels { n, group, cg, mg } = ch;
    if cg == 1 && mg == 1 && super::direct_c8::applies(g, group) {
        return super::direct_c8::conv(g, x, w, b, act, y, (n, group), scratch);
    }
    let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
    let (c, m) = (group * cg, group * mg);
    let lay = Layout::new(g);
    // LANES spare floats after each plane: a row's last, partial block of outputs still loads
    // whole vectors (lanes past the row read neighbouring or spare values and are dropped).
    let psz = lay.size(g) + LANES;
    // Output channels per block: they share the padded planes and each input load.
    let ocb = [4, 2, 1].into_iter().find(|b| mg % b == 0).unwrap_or(1);
    // A thread's buffer: the cg padded planes of one (image, group), then a tag naming it,
    // so consecutive blocks of the same group pad their input once.
    let wsz = cg * psz + 1;
    let tasks = threads::tasks(n * m / ocb, ocb * osz * ksz * cg);
    scratch.resize(wsz * threads::slots(tasks), 0.0);
    // The padding (and the spare tails) is zero for every plane: zero it here once. The tag
    // slot then reads 0, which names no group.
    scratch.fill(0.0);
    let run = |item: usize, yc: &mut [f32], buf: &mut [f32]| {
        let oc0 = item * ocb % m;
        let (img, grp) = (item * ocb / m, oc0 / mg);
        let tag = f32::from_bits((img * group + grp + 1) as u32);
        let (planes, tag_slot) = buf.split_at_mut(cg * psz);
        if tag_slot[0].to_bits() != tag.to_bits() {
            for (ci, plane) in planes.chunks_exact_mut(psz).enumerate() {
                pad_plane(g, lay, &x[(img * c + grp * cg + ci) * isz..][..isz], plane);
            }
            tag_slot[0] = tag;
        }
        let bias = |i: usize| b.map_or(0.0, |b| b[oc0 + i]);
        let wb = &w[oc0 * cg * ksz..][..ocb * cg * ksz];
        let k = Kernel { g, lay, cg, psz };
        match ocb {
            4 => k.run::<4>(planes, wb, [bias(0), bias(1), bias(2), bias(3)], act, yc),
            2 => k.run::<2>(planes, wb, [bias(0), bias(1)], act, yc),
            _ => k.run::<1>(planes, wb, [bias(0)], act, yc),
        }
    };
    debug_assert!((n * m * osz).is_multiple_of(ocb * osz));
    threads::for_each_chunk(y, ocb * osz, scratch, wsz, tasks, run);
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
            let (first_even, first_odd) = (p2 / 2, p2.div_ceil(2));
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

/// One block's geometry: `cg` padded planes `psz` apart in the buffer.
#[derive(Clone, Copy)]
struct Kernel<'a> {
    g: &'a Geom,
    lay: Layout,
    cg: usize,
    psz: usize,
}

impl Kernel<'_> {
    /// `B` output planes (`y`, one after another) from the padded planes and their weights
    /// `w [B, cg, k1, k2]`, then the activation over them.
    fn run<const B: usize>(&self, buf: &[f32], w: &[f32], bias: [f32; B], act: Option<&Unary>, y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(taps) = tap_starts(self.g, self.lay) {
            if super::microkernel::Isa::detect() == super::microkernel::Isa::Avx512 {
                // SAFETY: that ISA is only detected with AVX-512F, AVX2 and FMA.
                unsafe { self.avx512::<B>(&taps, buf, w, bias, y) };
                return self.activate::<B>(act, y);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe { self.avx2::<B>(&taps, buf, w, bias, y) };
                return self.activate::<B>(act, y);
            }
        }
        let ksz = self.cg * self.g.kernel[1] * self.g.kernel[2];
        let osz = self.g.out[1] * self.g.out[2];
        for (i, yc) in y.chunks_exact_mut(osz).take(B).enumerate() {
            self.portable(buf, &w[i * ksz..][..ksz], bias[i], yc);
        }
        self.activate::<B>(act, y);
    }

    /// Once per plane (still in cache): per 16-output block the dispatch cost as much as the
    /// activation on MobileNetV3's small planes.
    fn activate<const B: usize>(&self, act: Option<&Unary>, y: &mut [f32]) {
        if let Some(u) = act {
            activation::apply(u, &mut y[..B * self.g.out[1] * self.g.out[2]]);
        }
    }

    /// What a SIMD body walks for `B` output planes, and the padded-buffer step between output
    /// rows. Checks the bounds the bodies rely on: every load lies in the cg padded planes, each
    /// with its LANES spare floats (`conv`), and every store in the B output planes.
    #[cfg(target_arch = "x86_64")]
    fn rows<'t, const B: usize>(&self, taps: &'t [usize; 64], buf: &[f32], w: &[f32], y: &[f32]) -> (Rows<'t>, usize) {
        let (g, lay, cg, psz) = (self.g, self.lay, self.cg, self.psz);
        let (k1, k2) = (g.kernel[1], g.kernel[2]);
        let wsz = cg * k1 * k2;
        assert!(
            buf.len() >= cg * psz
                && psz >= lay.size(g) + LANES
                && w.len() >= B * wsz
                && y.len() >= B * g.out[1] * g.out[2]
        );
        let rows = Rows { taps, k1, k2, cg, psz, a_step: g.dilation[1] * g.stride[2] * lay.len, wsz };
        (rows, g.stride[1] * g.stride[2] * lay.len)
    }

    /// The AVX2 body: explicit vectors, because from array code the compiler kept the 16
    /// accumulators in pieces of xmm registers with shuffles between them.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const B: usize>(&self, taps: &[usize; 64], buf: &[f32], w: &[f32], bias: [f32; B], y: &mut [f32]) {
        use std::arch::x86_64::*;
        let (rows, row_step) = self.rows::<B>(taps, buf, w, y);
        let (o1, o2) = (self.g.out[1], self.g.out[2]);
        let (bp, wp, yp) = (buf.as_ptr(), w.as_ptr(), y.as_mut_ptr());
        for oy in 0..o1 {
            let mut x0 = 0;
            while x0 < o2 {
                let left = o2 - x0;
                // A last block of at most 8 (MobileNetV3's 7-wide planes): one vector.
                let row0 = bp.add(oy * row_step + x0);
                let (acc, width) = if left <= LANES / 2 {
                    (block_avx2::<B, 1>(&rows, row0, wp, bias), left)
                } else {
                    (block_avx2::<B, 2>(&rows, row0, wp, bias), LANES.min(left))
                };
                for (bi, accb) in acc.iter().enumerate() {
                    let dst = yp.add(bi * o1 * o2 + oy * o2 + x0);
                    if width == LANES {
                        _mm256_storeu_ps(dst, accb[0]);
                        _mm256_storeu_ps(dst.add(8), accb[1]);
                    } else if width > 8 {
                        _mm256_storeu_ps(dst, accb[0]);
                        _mm256_maskstore_ps(dst.add(8), first_lanes(width - 8), accb[1]);
                    } else {
                        // Masked: a copy of the variable tail was a memcpy call per row (5% of
                        // MobileNetV3, whose 7-wide planes end every row in one).
                        _mm256_maskstore_ps(dst, first_lanes(width), accb[0]);
                    }
                }
                x0 += width;
            }
        }
    }
}

impl Kernel<'_> {
    /// [`Self::avx2`] with 512-bit vectors: 32 outputs of a row per block (16 for a row's
    /// last 16 or fewer), so each tap's loads and weight broadcasts feed twice the FMAs. The
    /// same FMAs in the same order per output, so the same floats. On MobileNetV3-224 at batch
    /// 8 this kernel (RGB stem, 112- and 56-wide depthwise convs) was 12% of the w8a8 time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512<const B: usize>(&self, taps: &[usize; 64], buf: &[f32], w: &[f32], bias: [f32; B], y: &mut [f32]) {
        use std::arch::x86_64::*;
        // A 32-wide block is only taken with more than 16 outputs left in the row, so it reads
        // no further past the row than a 16-wide one: `rows`' bounds hold.
        let (rows, row_step) = self.rows::<B>(taps, buf, w, y);
        let (o1, o2) = (self.g.out[1], self.g.out[2]);
        let (bp, wp, yp) = (buf.as_ptr(), w.as_ptr(), y.as_mut_ptr());
        for oy in 0..o1 {
            let mut x0 = 0;
            while x0 < o2 {
                let left = o2 - x0;
                let row0 = bp.add(oy * row_step + x0);
                let (acc, width) = if left <= LANES {
                    (block_avx512::<B, 1>(&rows, row0, wp, bias), left)
                } else {
                    (block_avx512::<B, 2>(&rows, row0, wp, bias), (2 * LANES).min(left))
                };
                for (bi, accb) in acc.iter().enumerate() {
                    let dst = yp.add(bi * o1 * o2 + oy * o2 + x0);
                    for (v, &a) in accb.iter().enumerate() {
                        let n = width.saturating_sub(v * LANES).min(LANES);
                        if n == LANES {
                            _mm512_storeu_ps(dst.add(v * LANES), a);
                        } else if n > 0 {
                            _mm512_mask_storeu_ps(dst.add(v * LANES), ((1u32 << n) - 1) as __mmask16, a);
                        }
                    }
                }
                x0 += width;
            }
        }
    }
}

/// [`block_avx2`] on `V` 512-bit vectors (16 outputs each) per plane.
///
/// # Safety
/// AVX-512F; every tap of every plane readable `V * 16` floats on; `w` holds `B * wsz`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_avx512<const B: usize, const V: usize>(
    r: &Rows,
    row0: *const f32,
    w: *const f32,
    bias: [f32; B],
) -> [[std::arch::x86_64::__m512; 2]; B] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; B];
    for (accb, &bv) in acc.iter_mut().zip(&bias) {
        *accb = [_mm512_set1_ps(bv); 2];
    }
    for ci in 0..r.cg {
        for a in 0..r.k1 {
            let row = row0.add(ci * r.psz + a * r.a_step);
            let wr = w.add((ci * r.k1 + a) * r.k2);
            for (cc, &t) in r.taps.iter().enumerate().take(r.k2) {
                let x_lo = _mm512_loadu_ps(row.add(t));
                let x_hi = if V == 2 { _mm512_loadu_ps(row.add(t + LANES)) } else { x_lo };
                for (bi, accb) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*wr.add(bi * r.wsz + cc));
                    accb[0] = _mm512_fmadd_ps(wv, x_lo, accb[0]);
                    if V == 2 {
                        accb[1] = _mm512_fmadd_ps(wv, x_hi, accb[1]);
                    }
                }
            }
        }
    }
    acc
}

/// A store mask of the first `n <= 8` lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn first_lanes(n: usize) -> std::arch::x86_64::__m256i {
    const ONES_THEN_ZEROS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    debug_assert!(n <= 8);
    std::arch::x86_64::_mm256_loadu_si256(ONES_THEN_ZEROS.as_ptr().add(8 - n).cast())
}

/// What [`block_avx2`] walks: the taps of a row, `cg` planes `psz` apart, rows `a_step` apart,
/// weights `wsz` apart per output plane.
struct Rows<'a> {
    taps: &'a [usize; 64],
    k1: usize,
    k2: usize,
    cg: usize,
    psz: usize,
    a_step: usize,
    wsz: usize,
}

/// `V` vectors of outputs for each of `B` planes, from `row0` (the block's first input in the
/// first plane): every input load feeds all B planes.
///
/// # Safety
/// AVX2 and FMA; every tap of every plane readable `V * 8` floats on; `w` holds `B * wsz`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const B: usize, const V: usize>(
    r: &Rows,
    row0: *const f32,
    w: *const f32,
    bias: [f32; B],
) -> [[std::arch::x86_64::__m256; 2]; B] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; B];
    for (accb, &bv) in acc.iter_mut().zip(&bias) {
        *accb = [_mm256_set1_ps(bv); 2];
    }
    for ci in 0..r.cg {
        for a in 0..r.k1 {
            let row = row0.add(ci * r.psz + a * r.a_step);
            let wr = w.add((ci * r.k1 + a) * r.k2);
            for (cc, &t) in r.taps.iter().enumerate().take(r.k2) {
                let x_lo = _mm256_loadu_ps(row.add(t));
                let x_hi = if V == 2 { _mm256_loadu_ps(row.add(t + 8)) } else { x_lo };
                for (bi, accb) in acc.iter_mut().enumerate() {
                    let wv = _mm256_broadcast_ss(&*wr.add(bi * r.wsz + cc));
                    accb[0] = _mm256_fmadd_ps(wv, x_lo, accb[0]);
                    if V == 2 {
                        accb[1] = _mm256_fmadd_ps(wv, x_hi, accb[1]);
                    }
                }
            }
        }
    }
    acc
}

impl Kernel<'_> {
    /// One output plane, portable: `L` outputs at a time in fixed-size arrays LLVM vectorizes.
    fn portable(&self, buf: &[f32], w: &[f32], bias: f32, y: &mut [f32]) {
        let (g, lay) = (self.g, self.lay);
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
            let mut x0 = 0;
            while x0 < o2 {
                let width = LANES.min(o2 - x0);
                let mut acc = [bias; LANES];
                for ci in 0..self.cg {
                    for a in 0..k1 {
                        let row = &buf[ci * self.psz + (oy * s1 + a * d1) * s2 * lay.len..];
                        for (cc, &wv) in w[(ci * k1 + a) * k2..][..k2].iter().enumerate() {
                            // Whole vectors even for a row's last, partial block (see `conv`).
                            let src: &[f32; LANES] = row[tap(cc) + x0..][..LANES].try_into().expect("LANES long");
                            for i in 0..LANES {
                                acc[i] += wv * src[i];
                            }
                        }
                    }
                }
                yrow[x0..x0 + width].copy_from_slice(&acc[..width]);
                x0 += width;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::kernels::window::resolve;
    use crate::ir::Window;

    /// Direct definition of a grouped 2-D conv on `h x wd` planes, square kernel `k`.
    fn naive(x: &[f32], ch: Channels, (h, wd): (usize, usize), w: &[f32], k: usize, g: &Geom) -> Vec<f32> {
        let Channels { n, group, cg, mg } = ch;
        let (c, m) = (group * cg, group * mg);
        let (oh, ow) = (g.out[1], g.out[2]);
        let mut y = vec![0.0; n * m * oh * ow];
        for img in 0..n {
            for oc in 0..m {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0;
                        for ci in 0..cg {
                            let xc = (img * c + oc / mg * cg + ci) * h * wd;
                            for a in 0..k {
                                for b in 0..k {
                                    let iy = (oy * g.stride[1] + a * g.dilation[1]) as isize - g.pad[1] as isize;
                                    let ix = (ox * g.stride[2] + b * g.dilation[2]) as isize - g.pad[2] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    acc += x[xc + iy as usize * wd + ix as usize] * w[((oc * cg + ci) * k + a) * k + b];
                                }
                            }
                        }
                        y[((img * m + oc) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_naive() {
        // (k, stride, pad, dilation, group, cg, mg, h, w): depthwise (cg 1) and short-reduction
        // convs (4, 2 and 1 output planes per block), odd and even sizes, widths around LANES.
        let cases = [
            (3, 1, 1, 1, 3, 1, 1, 7, 20),
            (3, 2, 1, 1, 3, 1, 1, 9, 33),
            (5, 1, 2, 1, 3, 1, 1, 6, 16),
            (5, 2, 2, 1, 3, 1, 2, 11, 40),
            (3, 1, 2, 2, 3, 1, 1, 8, 17),
            (3, 3, 0, 1, 3, 1, 1, 10, 50),
            (1, 1, 0, 1, 3, 1, 3, 4, 5),
            (5, 1, 2, 1, 3, 1, 1, 7, 7),
            (5, 2, 2, 1, 3, 1, 1, 14, 14),
            (3, 2, 1, 1, 3, 1, 1, 3, 3),
            (3, 1, 1, 1, 3, 1, 1, 5, 24),
            (3, 2, 0, 1, 3, 1, 1, 8, 15),
            (3, 2, 1, 1, 2, 1, 1, 112, 112),
            (3, 2, 1, 1, 1, 3, 16, 23, 37),
            (3, 1, 1, 1, 2, 2, 6, 9, 9),
            (3, 1, 1, 1, 1, 1, 5, 8, 8),
            (1, 1, 0, 1, 1, 4, 4, 3, 19),
            // Depthwise in blocks of 8 channels on short rows (`direct_c8`): MobileNetV3's
            // 7x7 and 14x14 5x5 layers, stride 2 with an odd and an even input, dilation,
            // stride 3 without padding, a 1-wide map, an 8-position multiple.
            (5, 1, 2, 1, 16, 1, 1, 7, 7),
            (5, 2, 2, 1, 8, 1, 1, 14, 14),
            (3, 2, 1, 1, 8, 1, 1, 5, 13),
            (3, 2, 1, 1, 24, 1, 1, 4, 12),
            (3, 1, 2, 2, 8, 1, 1, 6, 9),
            (3, 3, 0, 1, 8, 1, 1, 10, 11),
            (3, 1, 1, 1, 8, 1, 1, 5, 1),
            (3, 1, 1, 1, 8, 1, 1, 4, 4),
        ];
        let mut blocked = 0;
        for &(k, s, p, d, group, cg, mg, h, wd) in &cases {
            let ch = Channels { n: 2, group, cg, mg };
            let (c, m) = (group * cg, group * mg);
            let g = resolve(&Window::square(s, p, d), &[h, wd], &[k, k]).unwrap();
            blocked += usize::from(cg == 1 && mg == 1 && super::super::direct_c8::applies(&g, group));
            let x: Vec<f32> = (0..ch.n * c * h * wd).map(|i| ((i * 7 % 13) as f32) - 6.0).collect();
            let w: Vec<f32> = (0..m * cg * k * k).map(|i| ((i * 5 % 11) as f32) * 0.1 - 0.5).collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.5 - 1.0).collect();
            let want = naive(&x, ch, (h, wd), &w, k, &g);
            let osz = g.out_size();
            for act in [None, Some(Unary::HardSwish)] {
                let mut y = vec![f32::NAN; want.len()];
                conv(&g, &x, &w, Some(&bias), act.as_ref(), &mut y, ch, &mut Vec::new());
                for (i, (&got, &r)) in y.iter().zip(&want).enumerate() {
                    let r = r + bias[(i / osz) % m];
                    let r = act.as_ref().map_or(r, |u| crate::backend::cpu::kernels::elementwise::unary_f32(u, r));
                    let tol = 1e-4 * (1.0 + r.abs());
                    assert!((got - r).abs() < tol, "{got} vs {r} at {i}: k{k} s{s} p{p} d{d} {ch:?} {h}x{wd} {act:?}");
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            assert_eq!(blocked, 8, "the 8-channel cases ran on direct_c8");
        } else {
            eprintln!("direct_c8 cases ran on the plane kernel: no AVX2+FMA");
        }
    }
}
