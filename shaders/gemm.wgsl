// Tiled GEMM: y[b, m, n] = act(alpha * sum_k a[b, m, k] * W(k, n) + beta * bias[m, n]).
// The weight format is the override constant W_MODE (one pipeline per format, every shape):
//   0: f32, w = B[k, n] (or B[n, k] when trans_b), batch stride batch_b
//   1: f16, w[n, k] as pairs of halves per u32
//   2: int8, w[n, k] as four bytes per u32, scales[n] as f32 bits
//   3: int4, per row `groups` groups of four u32 (eight nibbles each), f16 scale per group
// Accumulation is f32. Tiles of 16x16 staged in workgroup memory; edges padded with zeros.
// Prepended with act.wgsl.

override W_MODE: u32 = 0u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    trans_b: u32,
    alpha: f32,
    beta: f32,
    bias_sm: u32,
    bias_sn: u32,
    batch_a: u32,
    batch_b: u32,
    groups: u32,
    has_bias: u32,
    act: u32,
    fa: f32,
    fb: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const TILE: u32 = 16u;
var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

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

fn load_w(batch: u32, kk: u32, col: u32) -> f32 {
    switch W_MODE {
        case 1u: {
            let i = col * p.k + kk;
            return half_at(w[i / 2u], i % 2u);
        }
        case 2u: {
            let i = col * p.k + kk;
            let byte = (w[i / 4u] >> (8u * (i % 4u))) & 0xFFu;
            let q = (i32(byte) << 24u) >> 24u;
            return f32(q) * bitcast<f32>(scales[col]);
        }
        case 3u: {
            let word = w[col * p.groups * 4u + kk / 8u];
            let nib = (word >> (4u * (kk % 8u))) & 0xFu;
            let q = (i32(nib) << 28u) >> 28u;
            let si = col * p.groups + kk / 32u;
            return f32(q) * half_at(scales[si / 2u], si % 2u);
        }
        default: {
            let base = batch * p.batch_b;
            if p.trans_b == 1u {
                return bitcast<f32>(w[base + col * p.k + kk]);
            }
            return bitcast<f32>(w[base + kk * p.n + col]);
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.y * TILE + lid.y;
    let col = wg.x * TILE + lid.x;
    let batch = wg.z;
    let abase = batch * p.batch_a;
    var acc = 0.0;
    let tiles = (p.k + TILE - 1u) / TILE;
    for (var t = 0u; t < tiles; t++) {
        let ka = t * TILE + lid.x;
        var va = 0.0;
        if row < p.m && ka < p.k {
            va = a[abase + row * p.k + ka];
        }
        ta[lid.y][lid.x] = va;
        let kb = t * TILE + lid.y;
        var vb = 0.0;
        if col < p.n && kb < p.k {
            vb = load_w(batch, kb, col);
        }
        tb[lid.y][lid.x] = vb;
        workgroupBarrier();
        for (var i = 0u; i < TILE; i++) {
            acc += ta[lid.y][i] * tb[i][lid.x];
        }
        workgroupBarrier();
    }
    if row < p.m && col < p.n {
        var v = p.alpha * acc;
        if p.has_bias == 1u {
            v += p.beta * bias[row * p.bias_sm + col * p.bias_sn];
        }
        y[batch * p.m * p.n + row * p.n + col] = activate(p.act, v, p.fa, p.fb);
    }
}
