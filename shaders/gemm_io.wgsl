// GEMM interface shared by gemm.wgsl and gemm_w8a8.wgsl (prepended to both): the uniform
// layout the plan fills and the bindings. m0..y_off, k0, k1, b0, c_off: the block and buffer
// windows of a split dispatch (see gemm.wgsl; gemm_w8a8.wgsl reads all but k0, k1 and b0: it
// is never split along K nor batched). act_scale: the
// static activation scale of a calibrated w8a8 weight (0 = per row). Four storage buffers, the
// downlevel / GLES 3.1 limit per stage: quantized weight rows carry their scales (quant.wgsl).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    trans_b: u32,
    alpha: f32,
    beta: f32,
    bias_sm: u32,
    bias_sn: u32,
    batch_a: u32,
    batch_b: u32,
    groups: u32,
    has_bias: u32,
    act: u32,
    fa: f32,
    fb: f32,
    act_scale: f32,
    m0: u32,
    m1: u32,
    n0: u32,
    n1: u32,
    a_off: u32,
    w_off: u32,
    y_off: u32,
    k0: u32,
    k1: u32,
    b0: u32,
    c_off: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
