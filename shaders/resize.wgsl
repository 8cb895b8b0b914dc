// Resize (every mode the CPU kernel has: nearest, linear, cubic, antialias, all coordinate
// transforms), one invocation per output element, driven by a tap table the host derives per
// bound shape from the CPU kernel itself (so both engines use the same f32 weights):
//   for a resized axis d, table[off_d + 2 * j] = (first tap word, tap count) of output index j
//   (count 0xFFFFFFFF = extrapolation value), each tap two words (input index, f32 weight bits).
// Axes with off_d = 0xFFFFFFFF are not resized. The separable passes of the CPU kernel become
// one weighted sum over the product of the per-axis taps.

struct Params {
    len: u32,
    rank: u32,
    extrapolation: f32,
    _p0: u32,
    oshape: array<vec4<u32>, 2>,
    xstride: array<vec4<u32>, 2>,
    off: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;

const NONE: u32 = 0xFFFFFFFFu;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.len {
        return;
    }
    // Per axis: first tap word and count (0 = not resized, `first` is then the coordinate).
    var first: array<u32, 8>;
    var count: array<u32, 8>;
    var rem = i;
    var total = 1u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let extent = p.oshape[q][r];
        let c = rem % extent;
        rem = rem / extent;
        let o = p.off[q][r];
        if o == NONE {
            first[d] = c;
            count[d] = 0u;
        } else {
            let n = table[o + 2u * c + 1u];
            if n == NONE {
                y[i] = p.extrapolation;
                return;
            }
            first[d] = table[o + 2u * c];
            count[d] = n;
            total *= n;
        }
    }
    var acc = 0.0;
    for (var t = 0u; t < total; t++) {
        var rt = t;
        var xi = 0u;
        var w = 1.0;
        for (var d = i32(p.rank) - 1; d >= 0; d--) {
            let stride = p.xstride[u32(d) / 4u][u32(d) % 4u];
            if count[d] == 0u {
                xi += first[d] * stride;
            } else {
                let tap = first[d] + 2u * (rt % count[d]);
                rt = rt / count[d];
                xi += table[tap] * stride;
                w *= bitcast<f32>(table[tap + 1u]);
            }
        }
        acc += w * x[xi];
    }
    y[i] = acc;
}
