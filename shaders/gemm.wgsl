// Tiled GEMM: y[b, m, n] = act(alpha * sum_k a[b, m, k] * W(k, n) + beta * bias[m, n]).
// The weight format is the override constant W_MODE (one pipeline per format, every shape):
//   0: f32, w = B[k, n] (or B[n, k] when trans_b), batch stride batch_b
//   1: f16, w[n, k] as pairs of halves per u32
//   2: int8, rows of w[n, k] as four bytes per u32, then the row's f32 scale
//   3: int4, per row `groups` groups of four u32 (eight nibbles each), then f16 scales
// Accumulation is f32. Tiles of 16x16 staged in workgroup memory; edges padded with zeros.
// Prepended with act.wgsl, quant.wgsl (W_MODE, qweight) and gemm_io.wgsl (Params, bindings).
// A dispatch covers rows [m0, m1) and columns [n0, n1) of Y: tensors larger than the storage
// binding limit are split over several dispatches, each binding a window of a, w and y
// that starts `*_off` elements (words) into the buffer; indices stay global. An f32 [K, N]
// weight too large for one binding is split along K instead: a dispatch sums k in [k0, k1)
// and adds to the partial sums the dispatch before it wrote to y (k0 > 0); the bias goes in
// with the first block, the activation with the last (k1 = k). A batched MatMul is split into
// blocks of whole batches starting at batch b0.

// Params and bindings: gemm_io.wgsl.

const TILE: u32 = 16u;
var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

fn load_w(batch: u32, kk: u32, col: u32) -> f32 {
    if W_MODE != 0u {
        return qweight(col, kk, p.k, p.groups);
    }
    let base = batch * p.batch_b - p.w_off;
    if p.trans_b == 1u {
        return bitcast<f32>(w[base + col * p.k + kk]);
    }
    return bitcast<f32>(w[base + kk * p.n + col]);
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = p.m0 + wg.y * TILE + lid.y;
    let col = p.n0 + wg.x * TILE + lid.x;
    let batch = p.b0 + wg.z;
    let abase = batch * p.batch_a - p.a_off;
    w_base = p.w_off;
    var acc = 0.0;
    let tiles = (p.k1 - p.k0 + TILE - 1u) / TILE;
    for (var t = 0u; t < tiles; t++) {
        let ka = p.k0 + t * TILE + lid.x;
        var va = 0.0;
        if row < p.m1 && ka < p.k1 {
            va = a[abase + row * p.k + ka];
        }
        ta[lid.y][lid.x] = va;
        let kb = p.k0 + t * TILE + lid.y;
        var vb = 0.0;
        if col < p.n1 && kb < p.k1 {
            vb = load_w(batch, kb, col);
        }
        tb[lid.y][lid.x] = vb;
        workgroupBarrier();
        for (var i = 0u; i < TILE; i++) {
            acc += ta[lid.y][i] * tb[i][lid.x];
        }
        workgroupBarrier();
    }
    if row < p.m1 && col < p.n1 {
        let yi = batch * p.m * p.n + row * p.n + col - p.y_off;
        var v = p.alpha * acc;
        if p.k0 > 0u {
            v += y[yi];
        } else if p.has_bias == 1u {
            v += p.beta * bias[row * p.bias_sm + col * p.bias_sn - p.c_off];
        }
        if p.k1 == p.k {
            v = activate(p.act, v, p.fa, p.fb);
        }
        y[yi] = v;
    }
}
