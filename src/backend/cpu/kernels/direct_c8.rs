//! Depthwise 2-D convs on small planes with 8 channels in the vector lanes (a channel-blocked,
//! "NCHW8c" tile of the input made per call).
//!
//! On MobileNetV3's 14x14 and 7x7 maps the plane-at-a-time kernel of [`super::direct`] keeps
//! a 16-wide vector per output row (7 of 16 lanes used on a 7-wide row) and pays its per-plane
//! setup (padding copy, tap offsets, activation pass) for 49 outputs: its 5x5 layers ran at
//! ~10% of the FMA peak. Here a block of 8 channels is transposed once into a zero-padded
//! `[rows, cols, 8]` buffer; every output position is then one vector of 8 channels, and 8
//! consecutive positions (across row ends) are accumulated together, one weight vector per tap
//! feeding all 8. Stride and dilation are only address arithmetic. The 8 x 8 result is
//! transposed back in registers, the bias and the common activations applied there, and
//! stored as 8 runs of the output planes.
//!
//! Taken when the CPU has AVX2+FMA, the conv is depthwise with one output per channel, the
//! channels come in whole blocks of 8 and the output rows are short ([`applies`]).

use super::activation::{self, InRegister};
#[cfg(target_arch = "x86_64")]
use super::direct::first_lanes;
use super::threads;
use super::window::Geom;
use crate::ir::Unary;

/// Channels per block (the lanes of an AVX vector).
const C: usize = 8;
/// Widest output row taken here. MobileNetV3-224's 28-wide 3x3 layer ran 0.115 -> 0.074 ms
/// here; its 56-wide one measured no faster (the plane kernel's 16 lanes are full there).
const MAX_OUT_WIDTH: usize = 32;

/// Whether this kernel runs a depthwise conv with `channels` channels (one output each) of
/// geometry `g` on this CPU.
pub fn applies(g: &Geom, channels: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        channels.is_multiple_of(C)
            && g.out[2] <= MAX_OUT_WIDTH
            && super::direct::supports(g)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, channels);
        false
    }
}

/// Padded buffer geometry: the input rows and columns the outputs read.
#[derive(Clone, Copy)]
struct Padded {
    rows: usize,
    cols: usize,
}

impl Padded {
    fn new(g: &Geom) -> Padded {
        let (rows, cols) = super::direct::padded_extent(g);
        Padded { rows, cols }
    }
}

/// `y = act(depthwise_conv(x, w) + b)` for `n` images of `channels` channels, W `[channels, 1,
/// k1, k2]`. `scratch` holds, per worker, the padded 8-channel tile and the block's weights.
/// Call only where [`applies`] holds.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: Option<&Unary>,
    y: &mut [f32],
    (n, channels): (usize, usize),
    scratch: &mut Vec<f32>,
) {
    assert!(applies(g, channels), "direct_c8::conv on a conv it does not take");
    let (isz, osz, ksz) = (g.in_size(), g.out_size(), g.kernel_size());
    assert!(x.len() >= n * channels * isz && w.len() >= channels * ksz && y.len() >= n * channels * osz);
    let pad = Padded::new(g);
    let tile = pad.rows * pad.cols * C;
    // A thread's buffer: the padded tile, the block's weights [taps, 8], its bias [8].
    let wsz = tile + ksz * C + C;
    let tasks = threads::tasks(n * channels / C, C * osz * ksz);
    scratch.resize(wsz * threads::slots(tasks), 0.0);
    // The border is the same zero for every block: written once here, never overwritten.
    scratch.fill(0.0);
    let fused = activation::InRegister::of(act);
    let run = |item: usize, yb: &mut [f32], buf: &mut [f32]| {
        let (img, c0) = (item * C / channels, item * C % channels);
        let (tile_buf, rest) = buf.split_at_mut(tile);
        let (wt, bias) = rest.split_at_mut(ksz * C);
        for (l, bv) in bias.iter_mut().enumerate() {
            *bv = b.map_or(0.0, |b| b[c0 + l]);
        }
        for (t, wrow) in wt.chunks_exact_mut(C).enumerate() {
            for (l, v) in wrow.iter_mut().enumerate() {
                *v = w[(c0 + l) * ksz + t];
            }
        }
        let xb = &x[(img * channels + c0) * isz..][..C * isz];
        // SAFETY: `applies` checked AVX2 and FMA; the slices have the sizes named above.
        unsafe {
            pack_avx2(g, pad, xb, tile_buf);
            block_avx2(g, pad, tile_buf, wt, bias, fused.unwrap_or(InRegister::Identity), yb);
        }
        if let (Some(u), None) = (act, fused) {
            activation::apply(u, yb);
        }
    };
    threads::for_each_chunk(&mut y[..n * channels * osz], C * osz, scratch, wsz, tasks, run);
}

/// Transposes the 8 input planes `x` (`[8, ih, iw]`) into the interior of the padded tile
/// `[rows, cols, 8]`, 8 columns at a time (masked loads for a row's tail).
///
/// # Safety
/// AVX2; `x` holds 8 planes, `buf` a whole tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_avx2(g: &Geom, pad: Padded, x: &[f32], buf: &mut [f32]) {
    use std::arch::x86_64::*;
    let (ih, iw, isz) = (g.input[1], g.input[2], g.input[1] * g.input[2]);
    let (p1, p2) = (g.pad[1], g.pad[2]);
    let ncols = iw.min(pad.cols.saturating_sub(p2));
    assert!(x.len() >= C * isz && buf.len() >= pad.rows * pad.cols * C);
    for iy in 0..ih.min(pad.rows.saturating_sub(p1)) {
        let dst_row = buf.as_mut_ptr().add(((iy + p1) * pad.cols + p2) * C);
        let mut ix = 0;
        while ix < ncols {
            let width = (ncols - ix).min(C);
            let mask = first_lanes(width);
            let src = x.as_ptr().add(iy * iw + ix);
            let mut v = [_mm256_setzero_ps(); C];
            for (l, vl) in v.iter_mut().enumerate() {
                *vl = _mm256_maskload_ps(src.add(l * isz), mask);
            }
            transpose8(&mut v);
            // All 8 tested, not `take(width)`: LLVM turned that loop into a memcpy call.
            for (j, v) in v.iter().enumerate() {
                if j < width {
                    _mm256_storeu_ps(dst_row.add((ix + j) * C), *v);
                }
            }
            ix += width;
        }
    }
}

/// The outputs of one 8-channel block into its 8 output planes `y` (`[8, oh, ow]`): 8 output
/// positions at a time, each an 8-channel vector summed over the taps, then bias, activation,
/// a transpose to 8 position-vectors (one per channel) and masked stores.
///
/// # Safety
/// AVX2 and FMA; `buf` is the packed tile, `wt` `[taps, 8]`, `bias` 8 long, `y` 8 planes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(g: &Geom, pad: Padded, buf: &[f32], wt: &[f32], bias: &[f32], act: InRegister, y: &mut [f32]) {
    use std::arch::x86_64::*;
    let (ow, osz) = (g.out[2], g.out_size());
    let (k1, k2) = (g.kernel[1], g.kernel[2]);
    let (s1, s2, d1, d2) = (g.stride[1], g.stride[2], g.dilation[1], g.dilation[2]);
    assert!(wt.len() >= k1 * k2 * C && bias.len() >= C && y.len() >= C * osz && buf.len() >= pad.rows * pad.cols * C);
    let (bp, wp, yp) = (buf.as_ptr(), wt.as_ptr(), y.as_mut_ptr());
    let bv = _mm256_loadu_ps(bias.as_ptr());
    // Output row and column of position q0 (stepped, not divided: a division per position
    // cost as much as a 3x3 conv's multiply-adds).
    let (mut oy, mut ox) = (0, 0);
    let mut q0 = 0;
    while q0 < osz {
        let width = (osz - q0).min(C);
        // Tile offset (in floats) of each position's first tap; a short last group repeats
        // its last position (computed, not stored).
        let mut base = [0usize; C];
        let (mut ry, mut rx) = (oy, ox);
        for (j, bj) in base.iter_mut().enumerate() {
            *bj = (ry * s1 * pad.cols + rx * s2) * C;
            if j + 1 < width {
                rx += 1;
                if rx == ow {
                    (ry, rx) = (ry + 1, 0);
                }
            }
        }
        (oy, ox) = if rx + 1 == ow { (ry + 1, 0) } else { (ry, rx + 1) };
        let mut acc = [bv; C];
        for a in 0..k1 {
            for bb in 0..k2 {
                let t = a * k2 + bb;
                let off = (a * d1 * pad.cols + bb * d2) * C;
                let wv = _mm256_loadu_ps(wp.add(t * C));
                for (accj, &bj) in acc.iter_mut().zip(&base) {
                    *accj = _mm256_fmadd_ps(_mm256_loadu_ps(bp.add(bj + off)), wv, *accj);
                }
            }
        }
        for v in acc.iter_mut() {
            *v = act.avx2(*v);
        }
        transpose8(&mut acc);
        let mask = first_lanes(width);
        for (l, v) in acc.iter().enumerate() {
            let dst = yp.add(l * osz + q0);
            if width == C {
                _mm256_storeu_ps(dst, *v);
            } else {
                _mm256_maskstore_ps(dst, mask, *v);
            }
        }
        q0 += width;
    }
}

/// Transposes 8 x 8 floats in place: lane `j` of `r[l]` becomes lane `l` of `r[j]`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(r: &mut [std::arch::x86_64::__m256; 8]) {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    r[0] = _mm256_permute2f128_ps::<0x20>(u0, u4);
    r[1] = _mm256_permute2f128_ps::<0x20>(u1, u5);
    r[2] = _mm256_permute2f128_ps::<0x20>(u2, u6);
    r[3] = _mm256_permute2f128_ps::<0x20>(u3, u7);
    r[4] = _mm256_permute2f128_ps::<0x31>(u0, u4);
    r[5] = _mm256_permute2f128_ps::<0x31>(u1, u5);
    r[6] = _mm256_permute2f128_ps::<0x31>(u2, u6);
    r[7] = _mm256_permute2f128_ps::<0x31>(u3, u7);
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_avx2(_: &Geom, _: Padded, _: &[f32], _: &mut [f32]) {
    unreachable!("direct_c8 runs only on x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx2(_: &Geom, _: Padded, _: &[f32], _: &[f32], _: &[f32], _: InRegister, _: &mut [f32]) {
    unreachable!("direct_c8 runs only on x86-64")
}
