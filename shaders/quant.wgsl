// Quantized weight decoding shared by gemm.wgsl and conv2d.wgsl (prepended to them).
// W_MODE (override constant, one pipeline per format): 0 f32 bits, 1 f16 pairs, 2 int8
// quads with f32 scales per row, 3 int4 (groups of 32 along K, f16 scales). The including
// shader declares `w: array<u32>`. int8 and int4 rows carry their own scales after their
// weights (one buffer instead of two keeps every kernel within the 4 storage buffers per
// stage of downlevel / GLES 3.1 devices, and a window of whole rows holds their scales).
// Layouts: docs/quantized-format.md ("On the GPU").

override W_MODE: u32 = 0u;

// First word of the bound window of `w` (gemm.wgsl sets it when a weight is split over
// several bindings; 0 otherwise).
var<private> w_base: u32 = 0u;

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
            // Row: ceil(k / 4) words of four bytes, then the f32 scale.
            let kw = (k + 3u) / 4u;
            let base = row * (kw + 1u) - w_base;
            let byte = (w[base + kk / 4u] >> (8u * (kk % 4u))) & 0xFFu;
            let q = (i32(byte) << 24u) >> 24u;
            return f32(q) * bitcast<f32>(w[base + kw]);
        }
        case 3u: {
            // Row: `groups` groups of four words, then ceil(groups / 2) words of f16 scales.
            let base = row * (groups * 4u + (groups + 1u) / 2u) - w_base;
            let word = w[base + kk / 8u];
            let nib = (word >> (4u * (kk % 8u))) & 0xFu;
            let q = (i32(nib) << 28u) >> 28u;
            let gi = kk / 32u;
            return f32(q) * half_at(w[base + groups * 4u + gi / 2u], gi % 2u);
        }
        default: {
            return bitcast<f32>(w[row * k + kk - w_base]);
        }
    }
}
