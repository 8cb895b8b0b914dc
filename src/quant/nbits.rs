//! com.microsoft `MatMulNBits` (ONNX Runtime's 4-bit block-wise weights) onto Alembic's int4
//! scheme. `B[n, k_blocks, block_size / 2]` holds unsigned nibbles (element `2i` in the low
//! nibble of byte `i`), `w[n, k] = (nibble - zp) * scales[n * k_blocks + k / block_size]`
//! with `zp` = 8 unless zero points are given.
//!
//! Alembic's int4 is symmetric with groups of 32, so blocks that are a multiple of 32 map exactly
//! (each group of 32 takes its block's scale) when every zero point is 8; the scales are stored
//! as f16 (relative rounding <= 2^-11). Other block sizes and zero points are refused.

use super::scheme::{QData, QWeight, INT4_GROUP};
use half::f16;

/// The int4 weight of a MatMulNBits node: `b` (uint8 bytes), `scales` as f32, `zero_points`
/// as packed uint8 nibbles (two blocks per byte, low first; rows padded to whole bytes).
pub fn from_matmul_nbits(
    b: &[u8],
    scales: &[f32],
    zero_points: Option<&[u8]>,
    n: usize,
    k: usize,
    block_size: usize,
) -> Result<QWeight, String> {
    if block_size == 0 || !block_size.is_multiple_of(INT4_GROUP) {
        return Err(format!("block_size {block_size} is not a multiple of {INT4_GROUP} (Alembic's int4 group)"));
    }
    let kb = k.div_ceil(block_size);
    let blob = block_size / 2;
    if b.len() != n * kb * blob {
        return Err(format!("B has {} bytes, expected N * k_blocks * block_size / 2 = {}", b.len(), n * kb * blob));
    }
    if scales.len() != n * kb {
        return Err(format!("{} scales, expected N * k_blocks = {}", scales.len(), n * kb));
    }
    if let Some(z) = zero_points {
        let row = kb.div_ceil(2);
        if z.len() != n * row {
            return Err(format!("{} zero-point bytes, expected {}", z.len(), n * row));
        }
        for r in 0..n {
            for blk in 0..kb {
                let zp = (z[r * row + blk / 2] >> (4 * (blk % 2))) & 0xF;
                if zp != 8 {
                    return Err(format!("zero point {zp} (row {r}, block {blk}): only symmetric weights (8) fold"));
                }
            }
        }
    }
    let g = k.div_ceil(INT4_GROUP);
    let mut packed = vec![0u32; n * g * 4];
    let mut s16 = Vec::with_capacity(n * g);
    for r in 0..n {
        for gi in 0..g {
            s16.push(f16::from_f32(scales[r * kb + gi * INT4_GROUP / block_size]));
        }
        for j in 0..k {
            let byte = b[(r * kb + j / block_size) * blob + (j % block_size) / 2];
            let q = ((byte >> (4 * (j % 2))) & 0xF) as i32 - 8;
            packed[r * g * 4 + j / 8] |= ((q as u32) & 0xF) << (4 * (j % 8));
        }
    }
    Ok(QWeight { n, k, data: QData::Int4 { packed: packed.into(), scales: s16 } })
}
