//! Append-only, resumable writer of `.kdc` files.
//!
//! Records are buffered and written a whole chunk (records + CRC32) at a time; `sync` fsyncs.
//! The last, partial chunk and the footer are written by `finish` only, so an unfinished file is
//! always header + full chunks + possibly a torn tail, which `open_or_resume` cuts off.

use super::format::{cache_err, CacheHeader, FOOTER_LEN, FOOTER_MAGIC};
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where an opened cache stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeState {
    /// Records already in the file; the next one to write.
    pub next: u64,
    /// The file was already finished (footer present).
    pub complete: bool,
    /// Bytes of torn tail that were cut off.
    pub truncated_bytes: u64,
}

/// Writer of one cache file.
pub struct CacheWriter {
    path: PathBuf,
    file: File,
    header: CacheHeader,
    /// Records in the file (full chunks only until `finish`).
    written: u64,
    buf: Vec<u8>,
    buffered: u64,
    /// CRC32 over the chunk CRCs so far (the footer's file checksum).
    crcs: crc32fast::Hasher,
    dirty: bool,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

impl CacheWriter {
    /// Creates `path`, or reopens it to continue a build with the same header. An existing file
    /// made for another teacher, data set or settings is an error and is left untouched; a torn
    /// tail (partial chunk, bad CRC, partial footer) of an unfinished file is cut back to the last
    /// good chunk.
    pub fn open_or_resume(path: &Path, header: CacheHeader) -> Result<(CacheWriter, ResumeState)> {
        let want = header.encode();
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let mut head = vec![0u8; (len as usize).min(want.len())];
        file.read_exact(&mut head).map_err(io(path))?;
        let mut w = CacheWriter {
            path: path.to_path_buf(),
            file,
            header,
            written: 0,
            buf: Vec::new(),
            buffered: 0,
            crcs: crc32fast::Hasher::new(),
            dirty: false,
        };
        // Empty, or a header torn while being written: start over.
        if (len as usize) < want.len() && want.starts_with(&head) {
            w.file.set_len(0).map_err(io(path))?;
            w.file.seek(SeekFrom::Start(0)).map_err(io(path))?;
            w.file.write_all(&want).map_err(io(path))?;
            w.file.sync_all().map_err(io(path))?;
            sync_dir(path);
            w.crcs.update(&want[want.len() - 4..]);
            return Ok((w, ResumeState { next: 0, complete: false, truncated_bytes: 0 }));
        }
        let mut all = Vec::new();
        w.file.seek(SeekFrom::Start(0)).map_err(io(path))?;
        // The header check needs the file's own header, whatever its length.
        let mut first = vec![0u8; (len as usize).min(want.len().max(1 << 16))];
        w.file.read_exact(&mut first).map_err(io(path))?;
        let found = CacheHeader::decode(&first, path)?;
        if let Some(why) = w.header.mismatch(&found) {
            return Err(cache_err(path, why));
        }
        let h = &w.header;
        w.crcs.update(&want[want.len() - 4..]);
        let complete_len = h.file_len();
        let claims_complete = len == complete_len;
        let mut pos = h.header_len() as u64;
        let mut c = 0u64;
        w.file.seek(SeekFrom::Start(pos)).map_err(io(path))?;
        while c < h.chunks() {
            let size = h.chunk_len(c) * h.record_size() as u64 + 4;
            if pos + size > len {
                break;
            }
            all.resize(size as usize, 0);
            w.file.read_exact(&mut all).map_err(io(path))?;
            let (body, crc) = all.split_at(all.len() - 4);
            if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
                if claims_complete {
                    return Err(cache_err(path, format!("corrupt chunk {c} at byte {pos} (CRC mismatch); the file is complete, so it is left untouched: delete it to rebuild")));
                }
                break;
            }
            w.crcs.update(crc);
            w.written += h.chunk_len(c);
            pos += size;
            c += 1;
        }
        let mut complete = false;
        if w.written == h.samples && len == pos + FOOTER_LEN as u64 {
            let mut f = [0u8; FOOTER_LEN];
            w.file.read_exact(&mut f).map_err(io(path))?;
            complete = f == w.footer();
        }
        let cut = if complete { 0 } else { len - pos };
        if cut > 0 {
            w.file.set_len(pos).map_err(io(path))?;
            w.file.sync_all().map_err(io(path))?;
        }
        w.file.seek(SeekFrom::Start(pos)).map_err(io(path))?;
        let next = w.written;
        Ok((w, ResumeState { next, complete, truncated_bytes: cut }))
    }

    pub fn header(&self) -> &CacheHeader {
        &self.header
    }

    /// Records written or buffered so far.
    pub fn len(&self) -> u64 {
        self.written + self.buffered
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one encoded record (`record_size` bytes); full chunks go to the file at once.
    pub fn push(&mut self, record: &[u8]) -> Result<()> {
        let h = &self.header;
        if record.len() != h.record_size() {
            return Err(cache_err(
                &self.path,
                format!("record of {} bytes, expected {}", record.len(), h.record_size()),
            ));
        }
        if self.len() >= h.samples {
            return Err(cache_err(&self.path, format!("more records than the {} the header announces", h.samples)));
        }
        self.buf.extend_from_slice(record);
        self.buffered += 1;
        if self.buffered == h.chunk_records as u64 {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        let crc = crc32fast::hash(&self.buf).to_le_bytes();
        self.buf.extend_from_slice(&crc);
        self.file.write_all(&self.buf).map_err(io(&self.path))?;
        self.crcs.update(&crc);
        self.written += self.buffered;
        self.buffered = 0;
        self.buf.clear();
        self.dirty = true;
        Ok(())
    }

    /// Makes every full chunk written so far durable (fsync).
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.file.sync_data().map_err(io(&self.path))?;
            self.dirty = false;
        }
        Ok(())
    }

    fn footer(&self) -> [u8; FOOTER_LEN] {
        footer_for(self.header.samples, self.crcs.clone().finalize())
    }

    /// Writes the last partial chunk and the footer and syncs; all records must be in.
    pub fn finish(mut self) -> Result<u64> {
        if self.len() != self.header.samples {
            return Err(cache_err(
                &self.path,
                format!("finish after {} of {} records", self.len(), self.header.samples),
            ));
        }
        if self.buffered > 0 {
            self.flush_chunk()?;
        }
        let f = self.footer();
        self.file.write_all(&f).map_err(io(&self.path))?;
        self.file.sync_all().map_err(io(&self.path))?;
        Ok(self.header.file_len())
    }
}

/// The footer a complete file with these chunk CRCs ends with (used by the reader).
pub(crate) fn footer_for(samples: u64, crc_of_crcs: u32) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[0..8].copy_from_slice(FOOTER_MAGIC);
    f[8..16].copy_from_slice(&samples.to_le_bytes());
    f[16..20].copy_from_slice(&crc_of_crcs.to_le_bytes());
    let c = crc32fast::hash(&f[..20]);
    f[20..24].copy_from_slice(&c.to_le_bytes());
    f
}

/// fsyncs the folder holding a new file so its directory entry survives power loss.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
