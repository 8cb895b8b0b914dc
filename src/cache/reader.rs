//! Memory-mapped reader and full-file verification of `.kdc` caches.

use super::format::{cache_err, decode_record, CacheHeader, SoftLabel, FOOTER_LEN, FOOTER_MAGIC};
use super::writer::footer_for;
use crate::{Error, Result};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A finished cache, mapped read-only. Opening parses only the header and checks the length
/// and footer; records are decoded on access.
pub struct CacheReader {
    path: PathBuf,
    map: Mmap,
    header: CacheHeader,
}

fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map; a file rewritten underneath shows up as CRC or footer errors.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Checks the length and footer framing of a mapped cache.
fn check_frame(path: &Path, b: &[u8], h: &CacheHeader) -> Result<()> {
    let want = h.file_len();
    let got = b.len() as u64;
    if got < want {
        let full = (got.saturating_sub(h.header_len() as u64)) / (h.chunk_records as u64 * h.record_size() as u64 + 4);
        let have = (full * h.chunk_records as u64).min(h.samples);
        return Err(cache_err(
            path,
            format!("truncated or unfinished cache: {got} of {want} bytes, {have} of {} records in whole chunks (run the build again to resume)", h.samples),
        ));
    }
    if got > want {
        return Err(cache_err(
            path,
            format!("cache has {} trailing bytes after the footer at byte {}", got - want, want - FOOTER_LEN as u64),
        ));
    }
    let f = &b[b.len() - FOOTER_LEN..];
    let at = want - FOOTER_LEN as u64;
    if &f[..8] != FOOTER_MAGIC || crc32fast::hash(&f[..20]) != u32::from_le_bytes([f[20], f[21], f[22], f[23]]) {
        return Err(cache_err(path, format!("corrupt or missing footer at byte {at}")));
    }
    if u64::from_le_bytes(f[8..16].try_into().unwrap_or_default()) != h.samples {
        return Err(cache_err(path, format!("footer at byte {at} counts other records than the header")));
    }
    Ok(())
}

impl CacheReader {
    pub fn open(path: &Path) -> Result<CacheReader> {
        let map = map(path)?;
        let header = CacheHeader::decode(&map, path)?;
        check_frame(path, &map, &header)?;
        Ok(CacheReader { path: path.to_path_buf(), map, header })
    }

    /// Opens a cache and checks it was built by these teachers from this data set.
    pub fn open_for(path: &Path, teachers: &[[u8; 32]], data_digest: &[u8; 32]) -> Result<CacheReader> {
        let r = CacheReader::open(path)?;
        if r.header.teachers != teachers {
            let mut want = r.header.clone();
            want.teachers = teachers.to_vec();
            return Err(cache_err(path, want.mismatch(&r.header).unwrap_or_default()));
        }
        if &r.header.data_digest != data_digest {
            let mut want = r.header.clone();
            want.data_digest = *data_digest;
            return Err(cache_err(path, want.mismatch(&r.header).unwrap_or_default()));
        }
        Ok(r)
    }

    pub fn header(&self) -> &CacheHeader {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.header.samples as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raw bytes of record `i`.
    pub fn record_bytes(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len() {
            return None;
        }
        let o = self.header.record_offset(i as u64) as usize;
        self.map.get(o..o + self.header.record_size())
    }

    /// Record `i`; `None` past the end.
    pub fn record(&self, i: usize) -> Option<SoftLabel> {
        self.record_bytes(i).map(|b| decode_record(&self.header, b))
    }

    /// Probabilities of sample `i` at temperature `t` over all classes.
    pub fn probs(&self, i: usize, t: f32) -> Option<Vec<f32>> {
        self.record(i).map(|r| r.probs(t))
    }
}

/// What `verify` found in a sound file.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyReport {
    pub header: CacheHeader,
    pub records: u64,
    pub chunks: u64,
    pub file_bytes: u64,
    pub bytes_per_record: usize,
}

/// Checks a cache end to end: header CRC, length, every chunk CRC, the footer and its checksum
/// over all chunk CRCs. The first problem is the error, naming the chunk and byte offset.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    let b = map(path)?;
    let h = CacheHeader::decode(&b, path)?;
    let want = h.file_len();
    // Chunks first, so a truncated file reports how far it is sound.
    let mut crcs = crc32fast::Hasher::new();
    crcs.update(&b[h.header_len() - 4..h.header_len()]);
    for c in 0..h.chunks() {
        let off = h.chunk_offset(c) as usize;
        let size = h.chunk_len(c) as usize * h.record_size() + 4;
        let Some(chunk) = b.get(off..off + size) else {
            check_frame(path, &b, &h)?;
            return Err(cache_err(path, format!("truncated cache: chunk {c} at byte {off} is incomplete")));
        };
        let (body, crc) = chunk.split_at(size - 4);
        if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(cache_err(
                path,
                format!("corrupt chunk {c} at byte {off} (CRC mismatch over {} bytes)", size - 4),
            ));
        }
        crcs.update(crc);
    }
    check_frame(path, &b, &h)?;
    let footer = &b[b.len() - FOOTER_LEN..];
    if footer != footer_for(h.samples, crcs.finalize()) {
        return Err(cache_err(
            path,
            format!("footer at byte {} does not match the chunk CRCs", want - FOOTER_LEN as u64),
        ));
    }
    Ok(VerifyReport {
        records: h.samples,
        chunks: h.chunks(),
        file_bytes: want,
        bytes_per_record: h.record_size(),
        header: h,
    })
}
