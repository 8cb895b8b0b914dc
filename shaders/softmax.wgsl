// Softmax / LogSoftmax along one axis: the tensor is viewed as [outer, len, inner]; one
// invocation per (outer, inner) row, max-subtracted for stability.

struct Params {
    outer: u32,
    len: u32,
    inner: u32,
    log: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 256u;
    if r >= p.outer * p.inner {
        return;
    }
    let o = r / p.inner;
    let inn = r % p.inner;
    let base = o * p.len * p.inner + inn;
    var m = -3.4028235e38;
    for (var j = 0u; j < p.len; j++) {
        m = max(m, x[base + j * p.inner]);
    }
    var s = 0.0;
    for (var j = 0u; j < p.len; j++) {
        s += exp(x[base + j * p.inner] - m);
    }
    let ls = log(s);
    for (var j = 0u; j < p.len; j++) {
        let v = x[base + j * p.inner] - m;
        y[base + j * p.inner] = select(exp(v) / s, v - ls, p.log == 1u);
    }
}
