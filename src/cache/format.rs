//! The `.kdc` byte layout: header, records, chunk CRCs, footer. See docs/cache-format.md.

use crate::data::hex;
use crate::{Error, Result};
use half::f16;
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"ALEMBKDC";
pub const FOOTER_MAGIC: &[u8; 8] = b"KDCFOOT\0";
pub const VERSION: u32 = 1;
/// Bytes before the teacher digests.
pub const FIXED_HEADER: usize = 120;
/// Fixed fields of a record before its values.
pub const RECORD_FIXED: usize = 28;
pub const FOOTER_LEN: usize = 24;
/// Value type code of f16 values.
pub const VALUES_F16: u8 = 1;

/// Everything the header says. Two builds with equal headers produce equal files.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheHeader {
    /// Samples the finished file holds.
    pub samples: u64,
    pub classes: u32,
    /// Values kept per sample (= classes for full logits).
    pub k: u32,
    pub temperature: f32,
    /// Records per CRC chunk.
    pub chunk_records: u32,
    /// sha256 of each teacher's ONNX file, in ensemble order (one for a single teacher).
    pub teachers: Vec<[u8; 32]>,
    /// Name of the teacher output that was cached.
    pub output: String,
    pub data_digest: [u8; 32],
    /// sha256 of the labels, zeros when the data set has none.
    pub labels_digest: [u8; 32],
    pub has_labels: bool,
}

pub(crate) fn cache_err(path: &Path, message: impl Into<String>) -> Error {
    Error::TensorFile { path: path.to_path_buf(), message: message.into() }
}

fn short(d: &[u8; 32]) -> String {
    hex(&d[..6])
}

impl CacheHeader {
    /// Bytes per stored class index: 0 for full logits (class order), else 2 or 4.
    pub fn index_width(&self) -> usize {
        if self.k >= self.classes {
            0
        } else if self.classes <= 65536 {
            2
        } else {
            4
        }
    }

    /// Whether records hold every class (no indices, no tail).
    pub fn is_full(&self) -> bool {
        self.k >= self.classes
    }

    pub fn record_size(&self) -> usize {
        RECORD_FIXED + self.k as usize * (2 + self.index_width())
    }

    /// Dropped classes per sample.
    pub fn tail_count(&self) -> u32 {
        self.classes - self.k.min(self.classes)
    }

    /// Header length: fixed part, digests, name, zero padding, CRC32; a multiple of 8.
    pub fn header_len(&self) -> usize {
        let raw = FIXED_HEADER + 32 * self.teachers.len() + self.output.len() + 4;
        raw.div_ceil(8) * 8
    }

    pub fn chunks(&self) -> u64 {
        self.samples.div_ceil(self.chunk_records.max(1) as u64)
    }

    /// Byte length of the finished file.
    pub fn file_len(&self) -> u64 {
        self.header_len() as u64 + self.samples * self.record_size() as u64 + 4 * self.chunks() + FOOTER_LEN as u64
    }

    /// Byte offset of chunk `c` (all chunks before it are full).
    pub fn chunk_offset(&self, c: u64) -> u64 {
        self.header_len() as u64 + c * (self.chunk_records as u64 * self.record_size() as u64 + 4)
    }

    /// Byte offset of record `i`.
    pub fn record_offset(&self, i: u64) -> u64 {
        let c = i / self.chunk_records as u64;
        self.chunk_offset(c) + (i % self.chunk_records as u64) * self.record_size() as u64
    }

    /// Records in chunk `c`.
    pub fn chunk_len(&self, c: u64) -> u64 {
        let start = c * self.chunk_records as u64;
        (self.samples - start.min(self.samples)).min(self.chunk_records as u64)
    }

    pub fn encode(&self) -> Vec<u8> {
        let len = self.header_len();
        let mut b = vec![0u8; len];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(len as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.samples.to_le_bytes());
        b[24..28].copy_from_slice(&self.classes.to_le_bytes());
        b[28..32].copy_from_slice(&self.k.to_le_bytes());
        b[32..36].copy_from_slice(&self.temperature.to_le_bytes());
        b[36..40].copy_from_slice(&(self.record_size() as u32).to_le_bytes());
        b[40..44].copy_from_slice(&self.chunk_records.to_le_bytes());
        b[44] = self.index_width() as u8;
        b[45] = VALUES_F16;
        b[46..48].copy_from_slice(&(self.teachers.len() as u16).to_le_bytes());
        b[48..50].copy_from_slice(&(self.output.len() as u16).to_le_bytes());
        b[50..52].copy_from_slice(&(self.has_labels as u16).to_le_bytes());
        b[56..88].copy_from_slice(&self.data_digest);
        b[88..120].copy_from_slice(&self.labels_digest);
        let mut p = FIXED_HEADER;
        for t in &self.teachers {
            b[p..p + 32].copy_from_slice(t);
            p += 32;
        }
        b[p..p + self.output.len()].copy_from_slice(self.output.as_bytes());
        let crc = crc32fast::hash(&b[..len - 4]);
        b[len - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header at the start of `b`.
    pub fn decode(b: &[u8], path: &Path) -> Result<CacheHeader> {
        if b.len() < 8 || &b[..8] != MAGIC {
            return Err(cache_err(path, "not an alembic soft-label cache (bad magic)"));
        }
        if b.len() < FIXED_HEADER {
            return Err(cache_err(path, format!("truncated cache: {} bytes, shorter than the header", b.len())));
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let version = u32_at(8);
        if version != VERSION {
            return Err(cache_err(
                path,
                format!("cache format version {version} is not supported (this build reads version {VERSION})"),
            ));
        }
        let len = u32_at(12) as usize;
        if len < FIXED_HEADER + 4 || len > b.len() {
            return Err(cache_err(path, format!("truncated cache: header of {len} bytes, file has {}", b.len())));
        }
        let crc = u32_at(len - 4);
        if crc32fast::hash(&b[..len - 4]) != crc {
            return Err(cache_err(path, "corrupt cache header (CRC mismatch at byte 0)"));
        }
        let mut d = [[0u8; 32]; 2];
        d[0].copy_from_slice(&b[56..88]);
        d[1].copy_from_slice(&b[88..120]);
        let members = u16_at(46) as usize;
        let name_len = u16_at(48) as usize;
        let end = FIXED_HEADER + 32 * members + name_len;
        if end + 4 > len {
            return Err(cache_err(path, "corrupt cache header (fields overrun the header)"));
        }
        let teachers = (0..members)
            .map(|m| {
                let mut t = [0u8; 32];
                t.copy_from_slice(&b[FIXED_HEADER + 32 * m..FIXED_HEADER + 32 * m + 32]);
                t
            })
            .collect();
        let output = std::str::from_utf8(&b[end - name_len..end])
            .map_err(|_| cache_err(path, "corrupt cache header (output name is not UTF-8)"))?
            .to_string();
        let h = CacheHeader {
            samples: u64::from_le_bytes(b[16..24].try_into().unwrap_or_default()),
            classes: u32_at(24),
            k: u32_at(28),
            temperature: f32::from_le_bytes(b[32..36].try_into().unwrap_or_default()),
            chunk_records: u32_at(40),
            teachers,
            output,
            data_digest: d[0],
            labels_digest: d[1],
            has_labels: u16_at(50) & 1 == 1,
        };
        let ok = h.classes > 0
            && h.k > 0
            && h.k <= h.classes
            && h.chunk_records > 0
            && h.temperature > 0.0
            && b[45] == VALUES_F16
            && b[44] as usize == h.index_width()
            && u32_at(36) as usize == h.record_size()
            && h.header_len() == len;
        if !ok {
            return Err(cache_err(path, "corrupt cache header (inconsistent fields)"));
        }
        Ok(h)
    }

    /// Why an existing file's header does not fit this build, or None when it does.
    pub fn mismatch(&self, file: &CacheHeader) -> Option<String> {
        if file.teachers != self.teachers {
            let f: Vec<String> = file.teachers.iter().map(short).collect();
            let s: Vec<String> = self.teachers.iter().map(short).collect();
            return Some(format!(
                "cache was built by another teacher (sha256 {} in the file, {} given)",
                f.join("+"),
                s.join("+")
            ));
        }
        if file.data_digest != self.data_digest || file.samples != self.samples {
            return Some(format!(
                "cache was built from another data set (digest {} with {} samples in the file, {} with {} given)",
                short(&file.data_digest),
                file.samples,
                short(&self.data_digest),
                self.samples
            ));
        }
        if file.labels_digest != self.labels_digest {
            return Some("cache was built with other labels for this data set".into());
        }
        let diff = |what: &str, a: String, b: String| {
            Some(format!("cache was built with {what} {a}, this build asks for {b}"))
        };
        if file.output != self.output {
            return diff("teacher output", format!("'{}'", file.output), format!("'{}'", self.output));
        }
        if file.classes != self.classes {
            return diff("class count", file.classes.to_string(), self.classes.to_string());
        }
        if file.k != self.k {
            return diff("top-k", file.k.to_string(), self.k.to_string());
        }
        if file.temperature.to_bits() != self.temperature.to_bits() {
            return diff("temperature", file.temperature.to_string(), self.temperature.to_string());
        }
        if file.chunk_records != self.chunk_records {
            return diff("chunk size", file.chunk_records.to_string(), self.chunk_records.to_string());
        }
        (file != self).then(|| "cache header differs from this build's".into())
    }
}

/// Writes one record for raw logits `z` (one sample, `classes` values) into `out`
/// (`record_size` bytes). `idx` is scratch.
pub fn encode_record(h: &CacheHeader, z: &[f32], label: i64, digest: [u8; 8], idx: &mut Vec<u32>, out: &mut [u8]) {
    let t = h.temperature as f64;
    let k = h.k as usize;
    let lse_t = lse(z.iter().map(|&v| v as f64 / t));
    let (tail_t, tail_1) = if h.is_full() {
        (f64::NEG_INFINITY, f64::NEG_INFINITY)
    } else {
        idx.clear();
        idx.extend(0..z.len() as u32);
        // Larger logit first, lower class index on ties: a total order, so the file is deterministic.
        let cmp = |a: &u32, b: &u32| z[*b as usize].total_cmp(&z[*a as usize]).then(a.cmp(b));
        idx.select_nth_unstable_by(k - 1, cmp);
        idx[..k].sort_unstable_by(cmp);
        let tail = &idx[k..];
        (lse(tail.iter().map(|&j| z[j as usize] as f64 / t)), lse(tail.iter().map(|&j| z[j as usize] as f64)))
    };
    out[0..8].copy_from_slice(&label.to_le_bytes());
    out[8..16].copy_from_slice(&digest);
    out[16..20].copy_from_slice(&(lse_t as f32).to_le_bytes());
    out[20..24].copy_from_slice(&(tail_t as f32).to_le_bytes());
    out[24..28].copy_from_slice(&(tail_1 as f32).to_le_bytes());
    // Values are the logits shifted by T*lse_t, i.e. T*log p_T: 0 for a certain class, so f16
    // keeps its relative precision where the probability mass is.
    let shift = t * lse_t;
    let (vals, rest) = out[RECORD_FIXED..].split_at_mut(2 * k);
    let class_of = |i: usize| if h.is_full() { i } else { idx[i] as usize };
    for (i, v) in vals.chunks_exact_mut(2).enumerate() {
        let x = f16::from_f64(z[class_of(i)] as f64 - shift);
        v.copy_from_slice(&x.to_le_bytes());
    }
    match h.index_width() {
        2 => rest.chunks_exact_mut(2).zip(&idx[..k]).for_each(|(o, &j)| o.copy_from_slice(&(j as u16).to_le_bytes())),
        4 => rest.chunks_exact_mut(4).zip(&idx[..k]).for_each(|(o, &j)| o.copy_from_slice(&j.to_le_bytes())),
        _ => {}
    }
}

/// log(sum(exp(x))), -inf for an empty set.
pub fn lse(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// One cached sample.
#[derive(Clone, Debug, PartialEq)]
pub struct SoftLabel {
    /// Class of each value (best first); `0..classes` for full logits.
    pub indices: Vec<u32>,
    /// Logits of those classes (f32 from the stored f16, shifted back by `T * lse`).
    pub logits: Vec<f32>,
    /// log-sum-exp of all logits / T (cache temperature).
    pub lse: f32,
    /// log-sum-exp of the dropped classes' logits / T; -inf when none are dropped.
    pub tail_lse_t: f32,
    /// log-sum-exp of the dropped classes' logits at T = 1; -inf when none are dropped.
    pub tail_lse: f32,
    pub tail_count: u32,
    /// Hard label, -1 when the data set has none.
    pub label: i64,
    /// First 8 bytes of the sha256 of the input sample.
    pub digest: [u8; 8],
    pub temperature: f32,
    pub classes: u32,
}

/// Decodes record bytes.
pub fn decode_record(h: &CacheHeader, b: &[u8]) -> SoftLabel {
    let f32_at = |o: usize| f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let k = h.k as usize;
    let lse_t = f32_at(16);
    let shift = h.temperature as f64 * lse_t as f64;
    let vals = &b[RECORD_FIXED..RECORD_FIXED + 2 * k];
    let logits = vals.chunks_exact(2).map(|c| (f16::from_le_bytes([c[0], c[1]]).to_f64() + shift) as f32).collect();
    let ib = &b[RECORD_FIXED + 2 * k..];
    let indices = match h.index_width() {
        2 => ib.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect(),
        4 => ib.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        _ => (0..k as u32).collect(),
    };
    let mut digest = [0u8; 8];
    digest.copy_from_slice(&b[8..16]);
    SoftLabel {
        indices,
        logits,
        lse: lse_t,
        tail_lse_t: f32_at(20),
        tail_lse: f32_at(24),
        tail_count: h.tail_count(),
        label: i64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
        digest,
        temperature: h.temperature,
        classes: h.classes,
    }
}

impl SoftLabel {
    /// log-sum-exp of the dropped classes' logits / `t`: exact at the cache temperature and at
    /// T = 1; in between and beyond, the tail is modelled as `m` equal logits `u` fitted to those
    /// two exact values (the uniform tail when the cache temperature is 1).
    pub fn tail_lse_at(&self, t: f32) -> f64 {
        let n = self.tail_count as f64;
        if self.tail_count == 0 || self.tail_lse == f32::NEG_INFINITY {
            return f64::NEG_INFINITY;
        }
        let (t, tc) = (t as f64, self.temperature as f64);
        let (l1, lt) = (self.tail_lse as f64, self.tail_lse_t as f64);
        if t == tc {
            return lt;
        }
        if t == 1.0 {
            return l1;
        }
        let (log_m, u) = if (tc - 1.0).abs() < 1e-6 {
            (n.ln(), l1 - n.ln())
        } else {
            let u = (l1 - lt) / (1.0 - 1.0 / tc);
            ((l1 - u).clamp(0.0, n.ln()), u)
        };
        log_m + u / t
    }

    /// Probabilities of `indices` at temperature `t` and the dropped classes' total mass.
    pub fn probs_top(&self, t: f32) -> (Vec<f32>, f32) {
        let tf = t as f64;
        let a = lse(self.logits.iter().map(|&z| z as f64 / tf));
        let tail = self.tail_lse_at(t);
        let z = if tail == f64::NEG_INFINITY { a } else { a.max(tail) + (-(a - tail).abs()).exp().ln_1p() };
        let top = self.logits.iter().map(|&l| (l as f64 / tf - z).exp() as f32).collect();
        (top, (tail - z).exp() as f32)
    }

    /// Dense probabilities over all classes at temperature `t`; the dropped classes share the
    /// tail mass equally (which of them held it is not stored).
    pub fn probs(&self, t: f32) -> Vec<f32> {
        let (top, tail) = self.probs_top(t);
        let fill = if self.tail_count > 0 { tail / self.tail_count as f32 } else { 0.0 };
        let mut p = vec![fill; self.classes as usize];
        for (&i, &v) in self.indices.iter().zip(&top) {
            p[i as usize] = v;
        }
        p
    }
}
