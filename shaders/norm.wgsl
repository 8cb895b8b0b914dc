// Normalisations over f32.
//   `layer_norm`: x viewed as [rows, len] (len = product of the normalised axes), one
//     invocation per row; two passes (mean, then variance of the centred values) like the CPU
//     kernel; scale / bias cover a trailing part of the normalised shape (index j % s_len).
//   `batch_norm`: y = x * a[ch] + b[ch], with a = scale / sqrt(var + eps), b = B - mean * a
//     folded on the host into `ab` = [a..., b...]; ch is the channel (per = C) or the channel
//     and spatial position (per = C * spatial, old opsets' spatial = 0).

struct Params {
    rows: u32,
    len: u32,
    s_len: u32,
    b_len: u32,
    eps: f32,
    has_bias: u32,
    // batch_norm: spatial size and parameters per image
    sp: u32,
    per: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn layer_norm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 256u;
    if r >= p.rows {
        return;
    }
    let base = r * p.len;
    var s = 0.0;
    for (var j = 0u; j < p.len; j++) {
        s += x[base + j];
    }
    let mean = s / f32(p.len);
    var v = 0.0;
    for (var j = 0u; j < p.len; j++) {
        let d = x[base + j] - mean;
        v += d * d;
    }
    let inv = 1.0 / sqrt(v / f32(p.len) + p.eps);
    for (var j = 0u; j < p.len; j++) {
        var o = (x[base + j] - mean) * inv * scale[j % p.s_len];
        if p.has_bias == 1u {
            o += bias[j % p.b_len];
        }
        y[base + j] = o;
    }
}

// `scale` holds [a..., b...] (2 * per values); `bias` is unused.
@compute @workgroup_size(256)
fn batch_norm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.len {
        return;
    }
    // per = C: sp = spatial size; per = C * spatial: the host passes sp = 1.
    let ch = (i / p.sp) % p.per;
    y[i] = x[i] * scale[ch] + scale[p.per + ch];
}
