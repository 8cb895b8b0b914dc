//! Training checkpoints: parameters, optimizer state and step, CRC-protected, written
//! atomically (temp file, fsync, rename) so a killed run always finds the last whole one.
//!
//! Layout (little-endian): magic `ALBCKPT1`, step u64, optimizer t u64, count u32, then per
//! parameter: name (u32 length + UTF-8), values (u64 count + f32s), moment m, moment v (same
//! form); finally a CRC32 of everything before it.

use super::optim::Optimizer;
use super::student::Student;
use crate::error::{Error, Result};
use crate::tensor::npy::write_atomic;
use std::path::Path;

const MAGIC: &[u8; 8] = b"ALBCKPT1";

/// A parameter's name, values and the optimizer's two moment buffers.
pub type ParamState = (String, Vec<f32>, Vec<f32>, Vec<f32>);

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    pub opt_t: u64,
    pub params: Vec<ParamState>,
}

impl Checkpoint {
    pub fn capture(s: &Student, opt: &Optimizer, step: u64) -> Checkpoint {
        let params = s
            .params
            .iter()
            .enumerate()
            .map(|(k, p)| {
                (p.name.clone(), p.tensor.as_slice::<f32>().unwrap_or(&[]).to_vec(), opt.m[k].clone(), opt.v[k].clone())
            })
            .collect();
        Checkpoint { step, opt_t: opt.t, params }
    }

    pub fn restore(&self, s: &mut Student, opt: &mut Optimizer) -> Result<()> {
        if self.params.len() != s.params.len() {
            return Err(Error::input(
                "checkpoint",
                format!("holds {} parameters, the student trains {}", self.params.len(), s.params.len()),
            ));
        }
        for (k, (p, (name, w, m, v))) in s.params.iter_mut().zip(&self.params).enumerate() {
            let dst = p.tensor.as_mut_slice::<f32>().ok_or_else(|| Error::input(&p.name, "parameter is not f32"))?;
            if &p.name != name || dst.len() != w.len() || opt.m[k].len() != m.len() || opt.v[k].len() != v.len() {
                return Err(Error::input(
                    "checkpoint",
                    format!(
                        "parameter {k} is '{name}' ({} values), the student has '{}' ({})",
                        w.len(),
                        p.name,
                        dst.len()
                    ),
                ));
            }
            dst.copy_from_slice(w);
            opt.m[k].clone_from(m);
            opt.v[k].clone_from(v);
        }
        opt.t = self.opt_t;
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.step.to_le_bytes());
        b.extend_from_slice(&self.opt_t.to_le_bytes());
        b.extend_from_slice(&(self.params.len() as u32).to_le_bytes());
        for (name, w, m, v) in &self.params {
            b.extend_from_slice(&(name.len() as u32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            for arr in [w, m, v] {
                b.extend_from_slice(&(arr.len() as u64).to_le_bytes());
                arr.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
            }
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8], what: &Path) -> Result<Checkpoint> {
        let bad = |m: &str| Error::TensorFile { path: what.to_path_buf(), message: format!("checkpoint {m}") };
        if b.len() < 32 || &b[..8] != MAGIC {
            return Err(bad("has no ALBCKPT1 header (not a checkpoint, or truncated)"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("fails its CRC (corrupt or truncated)"));
        }
        let mut r = Reader { b: body, pos: 8 };
        let step = r.u64().ok_or_else(|| bad("truncated"))?;
        let opt_t = r.u64().ok_or_else(|| bad("truncated"))?;
        let count = r.u32().ok_or_else(|| bad("truncated"))?;
        let mut params = Vec::new();
        for _ in 0..count {
            let len = r.u32().ok_or_else(|| bad("truncated"))? as usize;
            let name = String::from_utf8(r.take(len).ok_or_else(|| bad("truncated"))?.to_vec())
                .map_err(|_| bad("has a non-UTF-8 name"))?;
            let mut arrs = Vec::new();
            for _ in 0..3 {
                let n = r.u64().ok_or_else(|| bad("truncated"))? as usize;
                let raw = r.take(n.checked_mul(4).ok_or_else(|| bad("is corrupt"))?).ok_or_else(|| bad("truncated"))?;
                arrs.push(
                    raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect::<Vec<f32>>(),
                );
            }
            let v = arrs.pop().expect("3");
            let m = arrs.pop().expect("3");
            let w = arrs.pop().expect("3");
            params.push((name, w, m, v));
        }
        Ok(Checkpoint { step, opt_t, params })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes())
    }

    pub fn read(path: &Path) -> Result<Checkpoint> {
        let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Checkpoint::from_bytes(&b, path)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| u64::from_le_bytes(s.try_into().expect("8")))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes(s.try_into().expect("4")))
    }
}
