// w8a8 GEMM: y[b, m, n] = act(alpha * sa[m] * sw[n] * sum_k qa[m, k] * qw[n, k] + beta * bias).
// Activations are quantized here, per row (symmetric, sa = max|row| / 127, round half to
// even, clamp to [-128, 127] as QuantizeLinear) unless p.act_scale holds a static calibrated
// scale (> 0). Weights: int8 [n, k], each row `groups` = ceil(k / 4) u32 words of four bytes
// (zero padded) followed by the row's f32 weight scale. Integer accumulation (i32) through
// dot4 (prepended: dot4_packed.wgsl or dot4_unpacked.wgsl, chosen at pipeline creation),
// tiles of 16 rows x 16 columns x 64 k staged in workgroup memory. Prepended with act.wgsl.
// Uniforms and bindings are gemm.wgsl's (gemm_io.wgsl), so the plan fills both the same way;
// a GEMM past the storage binding limit is split into blocks of rows and columns as there
// (m0..n1, windows at a_off / w_off / y_off; never along K).

// Params and bindings: gemm_io.wgsl.

var<workgroup> ta: array<array<u32, 16>, 16>;
var<workgroup> tb: array<array<u32, 16>, 16>;
var<workgroup> red: array<array<f32, 16>, 16>;

fn q8(v: f32, inv: f32) -> u32 {
    return u32(i32(clamp(round(v * inv), -128.0, 127.0))) & 0xFFu;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = p.m0 + wg.y * 16u + lid.y;
    let col = p.n0 + wg.x * 16u + lid.x;
    let abase = wg.z * p.batch_a - p.a_off;
    // Row maxima: the 16 threads of a tile row stride along its k values.
    var mx = 0.0;
    if row < p.m1 {
        for (var kk = lid.x; kk < p.k; kk += 16u) {
            mx = max(mx, abs(a[abase + row * p.k + kk]));
        }
    }
    red[lid.y][lid.x] = mx;
    workgroupBarrier();
    var amax = 0.0;
    for (var i = 0u; i < 16u; i++) {
        amax = max(amax, red[lid.y][i]);
    }
    let fixed = p.act_scale;
    let sa = select(amax / 127.0, fixed, fixed > 0.0);
    let inv = select(0.0, 1.0 / sa, sa > 0.0);
    var acc = 0i;
    let tiles = (p.groups + 15u) / 16u;
    for (var t = 0u; t < tiles; t++) {
        // A: thread (word lid.x, row lid.y) packs four quantized values.
        let k0 = (t * 16u + lid.x) * 4u;
        var packed = 0u;
        if row < p.m1 {
            for (var e = 0u; e < 4u; e++) {
                if k0 + e < p.k {
                    packed |= q8(a[abase + row * p.k + k0 + e], inv) << (8u * e);
                }
            }
        }
        ta[lid.y][lid.x] = packed;
        // W: thread (word lid.x, column wg.x * 16 + lid.y).
        let wc = p.n0 + wg.x * 16u + lid.y;
        let word = t * 16u + lid.x;
        var wv = 0u;
        if wc < p.n1 && word < p.groups {
            wv = w[wc * (p.groups + 1u) + word - p.w_off];
        }
        tb[lid.y][lid.x] = wv;
        workgroupBarrier();
        for (var i = 0u; i < 16u; i++) {
            acc += dot4(ta[lid.y][i], tb[lid.x][i]);
        }
        workgroupBarrier();
    }
    if row < p.m1 && col < p.n1 {
        var v = p.alpha * sa * bitcast<f32>(w[col * (p.groups + 1u) + p.groups - p.w_off]) * f32(acc);
        if p.has_bias == 1u {
            v += p.beta * bias[row * p.bias_sm + col * p.bias_sn - p.c_off];
        }
        y[wg.z * p.m * p.n + row * p.n + col - p.y_off] = activate(p.act, v, p.fa, p.fb);
    }
}
