// Quantized weight decoding shared by gemm.wgsl and conv2d.wgsl (prepended to them).
// W_MODE (override constant, one pipeline per format): 0 f32 bits, 1 f16 pairs, 2 int8
// quads with f32 scales per row, 3 int4 (groups of 32 along K, f16 scales). The including
// shader declares `w: array<u32>` and `scales: array<u32>`. Layouts: docs/quantized-format.md.

override W_MODE: u32 = 0u;

// First word of the bound windows of `w` and `scales` (gemm.wgsl sets them when a weight is
// split over several bindings; 0 otherwise).
var<private> w_base: u32 = 0u;
var<private> s_base: u32 = 0u;

// f16 bits to f32 by hand: unpack2x16float needs a capability some GL devices lack.
fn f16_bits(h: u32) -> f32 {
    let e = (h >> 10u) & 0x1Fu;
    let m = h & 0x3FFu;
    var v: f32;
    if e == 0u {
        v = f32(m) * 5.9604644775390625e-8;
    } else if e == 31u {
        v = bitcast<f32>(0x7F800000u | (m << 13u));
    } else {
        v = bitcast<f32>(((e + 112u) << 23u) | (m << 13u));
    }
    return select(v, -v, (h & 0x8000u) != 0u);
}

fn half_at(word: u32, which: u32) -> f32 {
    return f16_bits(select(word & 0xFFFFu, word >> 16u, which == 1u));
}

// Element (row, kk) of a packed [rows, k] weight matrix; `groups` = ceil(k / 32).
fn qweight(row: u32, kk: u32, k: u32, groups: u32) -> f32 {
    switch W_MODE {
        case 1u: {
            let i = row * k + kk;
            return half_at(w[i / 2u - w_base], i % 2u);
        }
        case 2u: {
            let i = row * k + kk;
            let byte = (w[i / 4u - w_base] >> (8u * (i % 4u))) & 0xFFu;
            let q = (i32(byte) << 24u) >> 24u;
            return f32(q) * bitcast<f32>(scales[row - s_base]);
        }
        case 3u: {
            let word = w[row * groups * 4u + kk / 8u - w_base];
            let nib = (word >> (4u * (kk % 8u))) & 0xFu;
            let q = (i32(nib) << 28u) >> 28u;
            let si = row * groups + kk / 32u;
            return f32(q) * half_at(scales[si / 2u - s_base], si % 2u);
        }
        default: {
            return bitcast<f32>(w[row * k + kk - w_base]);
        }
    }
}
