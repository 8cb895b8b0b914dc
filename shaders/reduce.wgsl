// Reductions over any set of axes (ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSum/
// LogSumExp), one invocation per output element. The output index runs over the kept axes
// (`kshape`, input strides `kstride`); the reduced axes (`rshape`, `rstride`) are walked as one
// flat counter of `n_red` positions. keepdims does not change the layout (kept axes of size 1).
// f32 accumulation (the CPU reference accumulates in f64).

struct Params {
    len: u32,
    kind: u32,
    n_red: u32,
    rank_k: u32,
    rank_r: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
    kshape: array<vec4<u32>, 2>,
    kstride: array<vec4<u32>, 2>,
    rshape: array<vec4<u32>, 2>,
    rstride: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// Input offset of reduced position `t`.
fn red_offset(t: u32) -> u32 {
    var rem = t;
    var off = 0u;
    for (var d = i32(p.rank_r) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let extent = p.rshape[q][r];
        off += (rem % extent) * p.rstride[q][r];
        rem = rem / extent;
    }
    return off;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.len {
        return;
    }
    var rem = i;
    var base = 0u;
    for (var d = i32(p.rank_k) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let extent = p.kshape[q][r];
        base += (rem % extent) * p.kstride[q][r];
        rem = rem / extent;
    }
    // kinds: 0 sum, 1 mean, 2 max, 3 min, 4 prod, 5 l2, 6 sum_square, 7 log_sum_exp, 8 l1, 9 log_sum
    var acc = 0.0;
    switch p.kind {
        case 2u: { acc = -3.4028235e38; }
        case 3u: { acc = 3.4028235e38; }
        case 4u: { acc = 1.0; }
        default: {}
    }
    var m = -3.4028235e38;
    if p.kind == 7u {
        for (var t = 0u; t < p.n_red; t++) {
            m = max(m, x[base + red_offset(t)]);
        }
    }
    for (var t = 0u; t < p.n_red; t++) {
        let v = x[base + red_offset(t)];
        switch p.kind {
            case 2u: { acc = max(acc, v); }
            case 3u: { acc = min(acc, v); }
            case 4u: { acc *= v; }
            case 5u, 6u: { acc += v * v; }
            case 7u: { acc += exp(v - m); }
            case 8u: { acc += abs(v); }
            default: { acc += v; }
        }
    }
    switch p.kind {
        case 1u: { acc = acc / f32(max(p.n_red, 1u)); }
        case 5u: { acc = sqrt(acc); }
        case 7u: { acc = m + log(acc); }
        case 9u: { acc = log(acc); }
        default: {}
    }
    y[i] = acc;
}
