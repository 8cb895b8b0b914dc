//! w8a8 kernels on wgpu: int8 weights times activations quantized per row inside the shader
//! (shaders/gemm_w8a8.wgsl, shaders/conv2d_w8a8.wgsl), i32 accumulation through `dot4`.
//!
//! `dot4` comes in two variants, picked when the pipeline is created: WGSL's `dot4I8Packed`
//! where the implementation offers the `packed_4x8_integer_dot_product` language extension
//! (naga then emits SPIR-V `OpSDot` on devices with integer dot products, its own unpacking
//! elsewhere), and a hand-unpacked one for implementations without it.

use super::device::{part, AdapterReport};
use crate::quant::{QData, QWeight};

/// The language extension's name in [`AdapterReport::features`].
pub const PACKED_DOT: &str = "wgsl:packed_4x8_integer_dot_product";

/// Kernel bodies and `dot4` variants, `include_str!`'d.
pub const SOURCES: &[(&str, &str)] = &[
    ("gemm_w8a8", include_str!("../../../shaders/gemm_w8a8.wgsl")),
    ("conv2d_w8a8", include_str!("../../../shaders/conv2d_w8a8.wgsl")),
    ("dot4_packed", include_str!("../../../shaders/dot4_packed.wgsl")),
    ("dot4_unpacked", include_str!("../../../shaders/dot4_unpacked.wgsl")),
];

/// Every compiled w8a8 family: kernel x dot4 variant.
pub const FAMILIES: &[&str] = &["gemm_w8a8", "gemm_w8a8_unpacked", "conv2d_w8a8", "conv2d_w8a8_unpacked"];

/// Weight mode of w8a8 weights in the plan's packed-weight table (gemm.wgsl uses 0..=3).
pub const MODE: u32 = 4;

/// The family to run for a GEMM (`conv` false) or Conv on an adapter.
pub fn family(report: &AdapterReport, conv: bool) -> &'static str {
    let packed = report.features.iter().any(|f| f == PACKED_DOT);
    match (conv, packed) {
        (false, true) => "gemm_w8a8",
        (false, false) => "gemm_w8a8_unpacked",
        (true, true) => "conv2d_w8a8",
        (true, false) => "conv2d_w8a8_unpacked",
    }
}

/// Full source of a w8a8 family: act.wgsl, the dot4 variant, the kernel.
pub fn source(family: &str) -> Option<String> {
    let get = |n: &str| SOURCES.iter().find(|(k, _)| *k == n).map(|(_, s)| *s);
    let (body, dot) = match family.strip_suffix("_unpacked") {
        Some(base) => (get(base)?, get("dot4_unpacked")?),
        None if FAMILIES.contains(&family) => (get(family)?, get("dot4_packed")?),
        None => return None,
    };
    let io = if family.starts_with("gemm") { "gemm_io" } else { "conv2d_io" };
    Some(format!("{}\n{dot}\n{}\n{body}", part("act")?, part(io)?))
}

/// Words per packed weight row (the shaders' `groups` uniform).
pub fn row_words(w: &QWeight) -> usize {
    w.k.div_ceil(4)
}

/// Packs a w8a8 weight: rows of `ceil(k / 4)` u32 words (four int8 lanes each, zero padded),
/// each followed by the row's f32 scale. The static activation scale goes in the uniform
/// (`act_scale`, see [`super::kernels::act_scale`]).
pub fn pack(w: &QWeight) -> Option<Vec<u32>> {
    let QData::W8a8 { q, scales, .. } = &w.data else { return None };
    let kw = row_words(w);
    let mut words = vec![0u32; w.n * (kw + 1)];
    for (r, row) in q.chunks(w.k.max(1)).enumerate().take(w.n) {
        for (j, &b) in row.iter().enumerate() {
            words[r * (kw + 1) + j / 4] |= (b as u8 as u32) << (8 * (j % 4));
        }
        words[r * (kw + 1) + kw] = scales[r].to_bits();
    }
    Some(words)
}
