// Conv2d interface shared by conv2d.wgsl and conv2d_w8a8.wgsl (prepended to both): the
// uniform layout the plan fills and the bindings: four storage buffers (the downlevel / GLES
// 3.1 limit per stage); quantized weight rows carry their scales (quant.wgsl). act_scale: the
// static activation scale of a calibrated w8a8 weight (0 = per patch).

struct Params {
    n: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
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
    group: u32,
    has_bias: u32,
    act: u32,
    fa: f32,
    fb: f32,
    groups: u32,
    act_scale: f32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Output element `i` (< n * c_out * oh * ow) as (x, y, channel, batch) of the NCHW output.
fn out_pos(i: u32) -> vec4<u32> {
    return vec4<u32>(i % p.ow, (i / p.ow) % p.oh, (i / (p.ow * p.oh)) % p.c_out, i / (p.ow * p.oh * p.c_out));
}
