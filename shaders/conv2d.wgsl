// Direct 2-D convolution, NCHW, one invocation per output element; groups (depthwise
// included), any stride / padding / dilation; fused bias and activation.
// Weight layout [c_out, c_in / group, kh, kw], f32 or quantized as a [c_out, c_in / group * kh * kw]
// matrix (W_MODE). Prepended with act.wgsl, quant.wgsl and conv2d_io.wgsl (Params, bindings).

// Params and bindings: conv2d_io.wgsl.

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
    let cin_g = p.c_in / p.group;
    let cout_g = p.c_out / p.group;
    let g = oc / cout_g;
    let kk = cin_g * p.kh * p.kw;
    var acc = 0.0;
    if p.has_bias == 1u {
        acc = bias[oc];
    }
    for (var ci = 0u; ci < cin_g; ci++) {
        let c = g * cin_g + ci;
        let xbase = (b * p.c_in + c) * p.h * p.w;
        let kbase = ci * p.kh * p.kw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
            if iy < 0 || iy >= i32(p.h) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
                if ix < 0 || ix >= i32(p.w) {
                    continue;
                }
                acc += x[xbase + u32(iy) * p.w + u32(ix)] * qweight(oc, kbase + ky * p.kw + kx, kk, p.groups);
            }
        }
    }
    y[i] = activate(p.act, acc, p.fa, p.fb);
}
