// 2-D pooling over NCHW: `pool2d` (max or average windows, padding, dilation) and
// `global_pool` (average or max over H*W), one invocation per output element.

struct Params {
    nc: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    dh: u32,
    dw: u32,
    // 0 = max, 1 = average
    mode: u32,
    count_include_pad: u32,
    // padded extent (h + pad begin + pad end), for count_include_pad
    hp: u32,
    wp: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn pool2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.nc * p.oh * p.ow {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let plane = i / (p.ow * p.oh);
    let base = plane * p.h * p.w;
    var best = -3.4028235e38;
    var sum = 0.0;
    var count = 0u;
    var padded = 0u;
    for (var ky = 0u; ky < p.kh; ky++) {
        let py = oy * p.sh + ky * p.dh;
        let iy = i32(py) - i32(p.ph);
        for (var kx = 0u; kx < p.kw; kx++) {
            let px = ox * p.sw + kx * p.dw;
            let ix = i32(px) - i32(p.pw);
            if py < p.hp && px < p.wp {
                padded += 1u;
            }
            if iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w) {
                continue;
            }
            let v = x[base + u32(iy) * p.w + u32(ix)];
            best = max(best, v);
            sum += v;
            count += 1u;
        }
    }
    if p.mode == 0u {
        y[i] = best;
    } else {
        let d = select(count, padded, p.count_include_pad == 1u);
        y[i] = sum / f32(max(d, 1u));
    }
}

@compute @workgroup_size(256)
fn global_pool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.nc {
        return;
    }
    let hw = p.h * p.w;
    let base = i * hw;
    var best = -3.4028235e38;
    var sum = 0.0;
    for (var j = 0u; j < hw; j++) {
        let v = x[base + j];
        best = max(best, v);
        sum += v;
    }
    y[i] = select(sum / f32(max(hw, 1u)), best, p.mode == 0u);
}
