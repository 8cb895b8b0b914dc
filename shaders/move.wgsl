// Data movement over f32 tensors of rank <= 8, one invocation per element copied:
//   `copy`:   y[y_base + sum c_d * ys_d] = x[x_base + sum c_d * xs_d] over `shape`, with signed
//             input strides. Transpose (permuted strides), Slice (start offset, step * stride,
//             negative steps included) and Concat (one dispatch per input into its slab of y).
//   `gather`: y viewed as [outer, n_idx, inner] reads x[(o * d + idx[j]) * inner + i]. The
//             indices are i32, or i64 as two words (low first) when `rank` is 1: a constant
//             table normalised on the host, or a run-time tensor (token ids) as uploaded.
//             Negative indices count from the end; an index outside [-d, d) gives 0 (the CPU
//             engine refuses it; a shader cannot fail).

struct Params {
    len: u32,
    rank: u32,
    x_base: i32,
    y_base: u32,
    shape: array<vec4<u32>, 2>,
    xs: array<vec4<i32>, 2>,
    ys: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> idx: array<u32>;

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.len {
        return;
    }
    var rem = i;
    var xi = p.x_base;
    var yi = p.y_base;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let extent = p.shape[q][r];
        let c = rem % extent;
        rem = rem / extent;
        xi += i32(c) * p.xs[q][r];
        yi += c * p.ys[q][r];
    }
    y[yi] = x[u32(xi)];
}

// Gather reuses the uniform: shape[0] = (outer, d, n_idx, inner), rank = 1 for i64 indices.
@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.len {
        return;
    }
    let d = p.shape[0][1];
    let n_idx = p.shape[0][2];
    let inner = p.shape[0][3];
    let e = i % inner;
    let j = (i / inner) % n_idx;
    let o = i / (inner * n_idx);
    var k: i32;
    var fits = true;
    if p.rank == 1u {
        k = bitcast<i32>(idx[2u * j]);
        // An i64 within i32 range: the high word is the low word's sign extension.
        fits = idx[2u * j + 1u] == select(0u, 0xFFFFFFFFu, k < 0);
    } else {
        k = bitcast<i32>(idx[j]);
    }
    k = select(k, k + i32(d), k < 0);
    if fits && k >= 0 && k < i32(d) {
        y[i] = x[(o * d + u32(k)) * inner + e];
    } else {
        y[i] = 0.0;
    }
}
