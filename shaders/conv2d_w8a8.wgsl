// w8a8 direct 2-D convolution, NCHW, one invocation per output element. The input patch under
// the window (c_in / group * kh * kw values, zero in the padding) is one activation row: it is
// quantized with its own symmetric scale (max|patch| / 127), or the static calibrated scale
// p.act_scale when > 0, and multiplied four lanes at a time with the int8 weight row through
// dot4 (prepended: packed or unpacked variant). Weights as in gemm_w8a8.wgsl: [c_out, kdim]
// rows padded to `groups` = ceil(kdim / 4) words, each followed by its f32 scale. Bindings
// and uniforms are conv2d.wgsl's (conv2d_io.wgsl). Prepended with act.wgsl.

// Params and bindings: conv2d_io.wgsl.

// Patch value t (channel-major, then ky, kx) of output (b, g, oy, ox); 0 in the padding.
fn patch_at(b: u32, g: u32, oy: u32, ox: u32, t: u32) -> f32 {
    let khw = p.kh * p.kw;
    let ci = t / khw;
    let ky = (t % khw) / p.kw;
    let kx = t % p.kw;
    let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
    let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
    if iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w) {
        return 0.0;
    }
    let c = g * (p.c_in / p.group) + ci;
    return x[((b * p.c_in + c) * p.h + u32(iy)) * p.w + u32(ix)];
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.n * p.c_out * p.oh * p.ow {
        return;
    }
    let o = out_pos(i);
    let ox = o.x;
    let oy = o.y;
    let oc = o.z;
    let b = o.w;
    let g = oc / (p.c_out / p.group);
    let kk = p.c_in / p.group * p.kh * p.kw;
    var amax = 0.0;
    for (var t = 0u; t < kk; t++) {
        amax = max(amax, abs(patch_at(b, g, oy, ox, t)));
    }
    let fixed = p.act_scale;
    let sa = select(amax / 127.0, fixed, fixed > 0.0);
    let inv = select(0.0, 1.0 / sa, sa > 0.0);
    var acc = 0i;
    for (var word = 0u; word < p.groups; word++) {
        var packed = 0u;
        for (var e = 0u; e < 4u; e++) {
            let t = word * 4u + e;
            if t < kk {
                let q = i32(clamp(round(patch_at(b, g, oy, ox, t) * inv), -128.0, 127.0));
                packed |= (u32(q) & 0xFFu) << (8u * e);
            }
        }
        acc += dot4(packed, w[oc * (p.groups + 1u) + word]);
    }
    var v = sa * bitcast<f32>(w[oc * (p.groups + 1u) + p.groups]) * f32(acc);
    if p.has_bias == 1u {
        v += bias[oc];
    }
    y[i] = activate(p.act, v, p.fa, p.fb);
}
