//! Weight quantization schemes: pure pack/unpack functions over a weight matrix `W[n, k]`
//! (n = output channels, k = reduction), row-major. See docs/quantized-format.md.

use crate::tensor::SharedSlice;
use half::f16;

/// Values per int4 group along K (one f16 scale each).
pub const INT4_GROUP: usize = 32;

/// Numeric precision of a session's weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Unchanged f32 weights.
    #[default]
    F32,
    /// f16 weights, f32 accumulation.
    F16,
    /// int8 symmetric, one f32 scale per output channel.
    Int8,
    /// int4 symmetric, groups of 32 along K with an f16 scale, eight values per u32.
    Int4,
    /// int8 weights as [`Precision::Int8`] times int8 activations quantized per row (symmetric,
    /// scale = max|row| / 127, computed every run), i32 accumulation.
    W8a8,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "f16" | "fp16" => Ok(Precision::F16),
            "int8" | "i8" => Ok(Precision::Int8),
            "int4" | "i4" => Ok(Precision::Int4),
            "w8a8" => Ok(Precision::W8a8),
            other => Err(format!("unknown precision '{other}' (available: f32, f16, int8, int4, w8a8)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
            Precision::W8a8 => "w8a8",
        })
    }
}

/// Packed storage of one quantized weight matrix. The weight values are [`SharedSlice`]s: owned,
/// or borrowed from the memory-mapped model file when its layout is this one (QDQ import), so
/// loading copies nothing; kernels read them as slices (`&q[..]`).
#[derive(Clone, Debug, PartialEq)]
pub enum QData {
    /// `n * k` halves, row-major.
    F16(SharedSlice<f16>),
    /// `n * k` values, row-major; `w = q * scales[row]`.
    Int8 { q: SharedSlice<i8>, scales: Vec<f32> },
    /// Each row holds `groups = ceil(k / 32)` groups of four u32 words; value `j` of a group
    /// sits in word `j / 8`, bits `4 * (j % 8)..`, two's-complement in [-8, 7] (-8 unused).
    /// Padding past `k` is zero. `w = q * scales[row * groups + j / 32]`.
    Int4 { packed: SharedSlice<u32>, scales: Vec<f16> },
    /// Weights as [`QData::Int8`]; activations are quantized to int8 when the kernel runs:
    /// per row with a scale computed from that row (`act_scale` None), or with one static
    /// per-tensor scale picked by calibration.
    W8a8 { q: SharedSlice<i8>, scales: Vec<f32>, act_scale: Option<f32> },
}

/// A quantized `[n, k]` weight matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct QWeight {
    pub n: usize,
    pub k: usize,
    pub data: QData,
}

impl QWeight {
    /// Quantizes `w[n, k]` (row-major) to `p`; `None` for [`Precision::F32`].
    pub fn quantize(w: &[f32], n: usize, k: usize, p: Precision) -> Option<QWeight> {
        assert_eq!(w.len(), n * k, "weight length");
        let data = match p {
            Precision::F32 => return None,
            Precision::F16 => QData::F16(w.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>().into()),
            Precision::Int8 => {
                let (q, scales) = quantize_int8(w, n, k);
                QData::Int8 { q: q.into(), scales }
            }
            Precision::Int4 => {
                let (packed, scales) = quantize_int4(w, n, k);
                QData::Int4 { packed: packed.into(), scales }
            }
            Precision::W8a8 => {
                let (q, scales) = quantize_int8(w, n, k);
                QData::W8a8 { q: q.into(), scales, act_scale: None }
            }
        };
        Some(QWeight { n, k, data })
    }

    pub fn precision(&self) -> Precision {
        match self.data {
            QData::F16(_) => Precision::F16,
            QData::Int8 { .. } => Precision::Int8,
            QData::Int4 { .. } => Precision::Int4,
            QData::W8a8 { .. } => Precision::W8a8,
        }
    }

    /// Int4 groups per row.
    pub fn groups(&self) -> usize {
        self.k.div_ceil(INT4_GROUP)
    }

    /// Writes row `r` (k values) as f32 into `out`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let k = self.k;
        match &self.data {
            QData::F16(h) => {
                for (o, x) in out[..k].iter_mut().zip(&h[r * k..(r + 1) * k]) {
                    *o = x.to_f32();
                }
            }
            QData::Int8 { q, scales } | QData::W8a8 { q, scales, .. } => {
                let s = scales[r];
                for (o, &x) in out[..k].iter_mut().zip(&q[r * k..(r + 1) * k]) {
                    *o = x as f32 * s;
                }
            }
            QData::Int4 { packed, scales } => {
                let g = self.groups();
                let words = &packed[r * g * 4..(r + 1) * g * 4];
                for gi in 0..g {
                    let s = scales[r * g + gi].to_f32();
                    let end = ((gi + 1) * INT4_GROUP).min(k);
                    for j in gi * INT4_GROUP..end {
                        let w = words[j / 8] >> (4 * (j % 8));
                        out[j] = nibble(w) as f32 * s;
                    }
                }
            }
        }
    }

    /// The whole matrix as f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.n * self.k];
        for r in 0..self.n {
            self.dequantize_row(r, &mut out[r * self.k..(r + 1) * self.k]);
        }
        out
    }

    /// Bytes of packed storage (weights + scales).
    pub fn byte_size(&self) -> usize {
        match &self.data {
            QData::F16(h) => h.len() * 2,
            QData::Int8 { q, scales } | QData::W8a8 { q, scales, .. } => q.len() + scales.len() * 4,
            QData::Int4 { packed, scales } => packed.len() * 4 + scales.len() * 2,
        }
    }
}

/// Sign-extends the low nibble.
#[inline]
fn nibble(w: u32) -> i32 {
    (((w & 0xF) as i32) << 28) >> 28
}

/// Symmetric int8 per row: scale = max|w| / 127, q = round(w / scale) in [-127, 127].
pub fn quantize_int8(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n);
    for r in 0..n {
        let row = &w[r * k..(r + 1) * k];
        let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        let s = if amax > 0.0 && amax.is_finite() { amax / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(row.iter().map(|&x| (x / s).round().clamp(-127.0, 127.0) as i8));
    }
    (q, scales)
}

/// Symmetric int4 per group of 32 along K: scale = max|w| / 7 stored as f16, q in [-7, 7].
pub fn quantize_int4(w: &[f32], n: usize, k: usize) -> (Vec<u32>, Vec<f16>) {
    let g = k.div_ceil(INT4_GROUP);
    let mut packed = vec![0u32; n * g * 4];
    let mut scales = Vec::with_capacity(n * g);
    for r in 0..n {
        let row = &w[r * k..(r + 1) * k];
        for gi in 0..g {
            let chunk = &row[gi * INT4_GROUP..((gi + 1) * INT4_GROUP).min(k)];
            let amax = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
            // Round the scale to f16 first so quantization uses the scale the kernels will see.
            let s16 = f16::from_f32(if amax > 0.0 && amax.is_finite() { amax / 7.0 } else { 1.0 });
            let s = if s16.to_f32() > 0.0 { s16.to_f32() } else { 1.0 };
            scales.push(if s16.to_f32() > 0.0 { s16 } else { f16::ONE });
            for (j, &x) in chunk.iter().enumerate() {
                let q = (x / s).round().clamp(-7.0, 7.0) as i32;
                let jj = gi * INT4_GROUP + j;
                packed[r * g * 4 + jj / 8] |= ((q as u32) & 0xF) << (4 * (jj % 8));
            }
        }
    }
    (packed, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(n: usize, k: usize) -> Vec<f32> {
        // Deterministic pseudo-random values in [-1, 1] with an outlier per row.
        let mut s = 12345u32;
        (0..n * k)
            .map(|i| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                let v = (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
                if i % k == 3 {
                    v * 4.0
                } else {
                    v
                }
            })
            .collect()
    }

    fn max_err_per_row(w: &[f32], d: &[f32], k: usize, bound: impl Fn(&[f32], usize) -> f32) {
        for (r, (row, drow)) in w.chunks(k).zip(d.chunks(k)).enumerate() {
            for (j, (&a, &b)) in row.iter().zip(drow).enumerate() {
                let b_ = bound(row, j);
                assert!((a - b).abs() <= b_ * 1.0001 + 1e-7, "row {r} col {j}: {a} vs {b} (bound {b_})");
            }
        }
    }

    #[test]
    fn int8_round_trip_within_half_step() {
        let (n, k) = (7, 45);
        let w = weights(n, k);
        let q = QWeight::quantize(&w, n, k, Precision::Int8).unwrap();
        let d = q.dequantize();
        // |w - deq| <= scale / 2 = max|row| / 254.
        max_err_per_row(&w, &d, k, |row, _| row.iter().fold(0f32, |m, x| m.max(x.abs())) / 254.0);
        assert_eq!(q.byte_size(), n * k + n * 4);
    }

    #[test]
    fn int4_round_trip_within_half_step_of_group() {
        for (n, k) in [(3, 32), (5, 70), (2, 5)] {
            let w = weights(n, k);
            let q = QWeight::quantize(&w, n, k, Precision::Int4).unwrap();
            let d = q.dequantize();
            // Half a step of the group's f16 scale (amax/7, rounded to f16: rel. error 2^-11).
            max_err_per_row(&w, &d, k, |row, j| {
                let g = j / INT4_GROUP;
                let chunk = &row[g * INT4_GROUP..((g + 1) * INT4_GROUP).min(k)];
                let amax = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
                amax / 7.0 * (0.5 + 7.0 * 2f32.powi(-11))
            });
            assert_eq!(q.groups(), k.div_ceil(32));
        }
    }

    #[test]
    fn int4_packing_layout() {
        // Row of 9 values: -7..=1 ; word 0 holds values 0..8, word 1 value 8.
        let w: Vec<f32> = (0..9).map(|i| i as f32 - 7.0).collect();
        let q = QWeight::quantize(&w, 1, 9, Precision::Int4).unwrap();
        let QData::Int4 { packed, scales } = &q.data else { panic!() };
        assert_eq!(scales[0].to_f32(), 1.0);
        assert_eq!(packed.len(), 4);
        assert_eq!(packed[0] & 0xF, 0x9); // -7 as a nibble
        assert_eq!(packed[1], 1);
        assert_eq!(q.dequantize(), w);
    }

    #[test]
    fn f16_round_trip_and_zero_rows() {
        let w = vec![0.0, 0.0, 1.5, -2.25, 1e-3, 3.0];
        let q = QWeight::quantize(&w, 2, 3, Precision::F16).unwrap();
        let d = q.dequantize();
        for (a, b) in w.iter().zip(&d) {
            assert!((a - b).abs() <= a.abs() * 1e-3);
        }
        for p in [Precision::Int8, Precision::Int4] {
            let q = QWeight::quantize(&[0.0; 6], 2, 3, p).unwrap();
            assert_eq!(q.dequantize(), vec![0.0; 6]);
        }
        assert!(QWeight::quantize(&w, 2, 3, Precision::F32).is_none());
    }

    #[test]
    fn precision_parses() {
        assert_eq!("INT4".parse::<Precision>(), Ok(Precision::Int4));
        assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
        assert!("int3".parse::<Precision>().is_err());
    }
}
