// Elementwise kernels over f32: `unary` (activation code in the uniform) and `binary` with
// numpy broadcasting (output shape and per-operand strides, 0 on broadcast axes, in the uniform).
// Prepended with act.wgsl.

struct Params {
    len: u32,
    op: u32,
    rank: u32,
    act: u32,
    fa: f32,
    fb: f32,
    _pad2: u32,
    _pad3: u32,
    shape0: vec4<u32>,
    shape1: vec4<u32>,
    as0: vec4<u32>,
    as1: vec4<u32>,
    bs0: vec4<u32>,
    bs1: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn pick(v0: vec4<u32>, v1: vec4<u32>, i: u32) -> u32 {
    if i < 4u {
        return v0[i];
    }
    return v1[i - 4u];
}

@compute @workgroup_size(256)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.len {
        return;
    }
    y[i] = activate(p.op, a[i], p.fa, p.fb);
}

fn apply(op: u32, x: f32, z: f32) -> f32 {
    switch op {
        case 0u: { return x + z; }
        case 1u: { return x - z; }
        case 2u: { return x * z; }
        case 3u: { return x / z; }
        case 4u: { return pow(x, z); }
        case 5u: { return max(x, z); }
        case 6u: { return min(x, z); }
        case 7u: { return select(x * z, x, x >= 0.0); }
        default: { return x; }
    }
}

@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.len {
        return;
    }
    var rem = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let du = u32(d);
        let extent = pick(p.shape0, p.shape1, du);
        let c = rem % extent;
        rem = rem / extent;
        ia += c * pick(p.as0, p.as1, du);
        ib += c * pick(p.bs0, p.bs1, du);
    }
    y[i] = activate(p.act, apply(p.op, a[ia], b[ib]), p.fa, p.fb);
}
