//! Building a cache: data source + teacher(s) + writer, resuming an unfinished file.

use super::format::{cache_err, encode_record, CacheHeader};
use super::writer::CacheWriter;
use crate::data::{record_digest, tensor_le_bytes, DataSource};
use crate::tensor::{Data, Tensor};
use crate::{Error, Result};
use std::path::Path;
use std::time::Instant;

/// A teacher as the builder sees it: a batch of inputs in, `[B, classes]` logits out (any float
/// type, any shape `[B, ...]` whose trailing dimensions multiply to the class count).
pub type TeacherFn<'a> = dyn FnMut(&Tensor) -> Result<Tensor> + 'a;

/// Settings of a build. They all go into the header, so a resumed build must repeat them.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Logits kept per sample; 0 or >= the class count keeps them all.
    pub top_k: usize,
    /// Cache temperature T (> 0).
    pub temperature: f32,
    /// Samples per teacher call.
    pub batch: usize,
    /// Name of the teacher output being cached (recorded in the header).
    pub output: String,
    /// sha256 of each teacher's ONNX file, one per teacher closure, in the same order.
    pub teacher_digests: Vec<[u8; 32]>,
    /// Records per CRC chunk.
    pub chunk_records: u32,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            top_k: 0,
            temperature: 1.0,
            batch: 64,
            output: "logits".into(),
            teacher_digests: vec![],
            chunk_records: 256,
        }
    }
}

/// What a build did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildReport {
    pub samples: u64,
    /// Records found in the file before this run.
    pub resumed_from: u64,
    /// Records this run computed and wrote.
    pub computed: u64,
    pub already_complete: bool,
    /// Torn-tail bytes cut off before resuming.
    pub truncated_bytes: u64,
    pub classes: u32,
    pub k: u32,
    pub record_size: usize,
    pub file_bytes: u64,
    /// Seconds spent hashing the data set before writing.
    pub digest_secs: f64,
    /// Seconds inside the teacher closures.
    pub teacher_secs: f64,
    pub total_secs: f64,
}

fn to_f32(t: Tensor) -> Result<Vec<f32>> {
    Ok(match t.into_data() {
        Data::F32(v) => v,
        Data::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        Data::F64(v) => v.iter().map(|&x| x as f32).collect(),
        d => {
            return Err(Error::Unavailable(format!("teacher output is {}, expected floating-point logits", d.dtype())))
        }
    })
}

/// Runs every teacher on a batch and returns the `[B * classes]` logits to cache: the teacher's
/// own for one, else T * log of the members' probabilities at T averaged.
fn run_teachers(teachers: &mut [&mut TeacherFn], x: &Tensor, t: f32, secs: &mut f64) -> Result<(Vec<f32>, usize)> {
    let b = x.shape().first().copied().unwrap_or(1);
    let mut outs = Vec::with_capacity(teachers.len());
    for (m, teach) in teachers.iter_mut().enumerate() {
        let t0 = Instant::now();
        let y = teach(x)?;
        *secs += t0.elapsed().as_secs_f64();
        if y.shape().first() != Some(&b) || b == 0 || y.len() % b != 0 || y.is_empty() {
            return Err(Error::Unavailable(format!("teacher {m} returned shape {:?} for a batch of {b}", y.shape())));
        }
        outs.push(to_f32(y)?);
    }
    let classes = outs[0].len() / b;
    if outs.iter().any(|o| o.len() != classes * b) {
        return Err(Error::Unavailable("ensemble members disagree on the class count".into()));
    }
    if let Some(p) = outs.iter().flatten().position(|v| v.is_nan() || *v == f32::INFINITY) {
        return Err(Error::Unavailable(format!(
            "teacher output for sample {} of the batch is NaN or +inf",
            (p % (classes * b)) / classes
        )));
    }
    if outs.len() == 1 {
        return Ok((outs.pop().unwrap_or_default(), classes));
    }
    let (td, n) = (t as f64, outs.len() as f64);
    let mut avg = vec![0f32; classes * b];
    let mut acc = vec![0f64; classes];
    for s in 0..b {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for o in &outs {
            let z = &o[s * classes..(s + 1) * classes];
            let l = super::format::lse(z.iter().map(|&v| v as f64 / td));
            for (a, &v) in acc.iter_mut().zip(z) {
                *a += (v as f64 / td - l).exp() / n;
            }
        }
        for (o, &a) in avg[s * classes..(s + 1) * classes].iter_mut().zip(&acc) {
            *o = (td * a.ln()) as f32;
        }
    }
    Ok((avg, classes))
}

/// Builds (or resumes, or confirms) the cache `out` of `src` under `teachers`.
///
/// The data set is hashed first (one streaming pass) so the header, written before any record,
/// names it. A file left by an interrupted build with the same header is continued from its last
/// whole chunk; teacher batches stay aligned to multiples of `batch` from sample 0, so a resumed
/// build feeds every sample in the same batch as an uninterrupted one and writes the same bytes.
/// `progress(done, total)` is called after every batch.
pub fn build_cache(
    src: &DataSource,
    teachers: &mut [&mut TeacherFn],
    opts: &BuildOptions,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BuildReport> {
    let t_start = Instant::now();
    if teachers.is_empty() || teachers.len() != opts.teacher_digests.len() {
        return Err(Error::Unavailable(format!(
            "{} teachers given with {} digests",
            teachers.len(),
            opts.teacher_digests.len()
        )));
    }
    if !(opts.temperature > 0.0 && opts.temperature.is_finite()) {
        return Err(Error::Unavailable(format!("temperature must be positive, got {}", opts.temperature)));
    }
    if src.is_empty() {
        return Err(cache_err(src.path(), "data set is empty"));
    }
    let batch = opts.batch.max(1);
    let total = src.len() as u64;
    let data_digest = src.digest(batch)?;
    let digest_secs = t_start.elapsed().as_secs_f64();
    let mut header = CacheHeader {
        samples: total,
        classes: 0,
        k: 0,
        temperature: opts.temperature,
        chunk_records: opts.chunk_records.max(1),
        teachers: opts.teacher_digests.clone(),
        output: opts.output.clone(),
        data_digest,
        labels_digest: src.labels_digest(),
        has_labels: src.labels().is_some(),
    };
    let set_classes = |h: &mut CacheHeader, c: u32| {
        h.classes = c;
        h.k = if opts.top_k == 0 { c } else { (opts.top_k as u32).min(c) };
    };
    let mut report = BuildReport { samples: total, digest_secs, ..Default::default() };
    // The class count comes from an existing file's header, or from the first batch.
    let mut first = None;
    let existing = read_head(out).filter(|b| b.len() >= 8).map(|b| CacheHeader::decode(&b, out));
    match existing {
        Some(Ok(found)) => set_classes(&mut header, found.classes),
        Some(Err(e)) if out.metadata().map(|m| m.len()).unwrap_or(0) >= header.header_len() as u64 => return Err(e),
        _ => {
            let b0 = src.batches(batch).next().ok_or_else(|| cache_err(src.path(), "data set is empty"))??;
            let (z, c) = run_teachers(teachers, &b0.x, opts.temperature, &mut report.teacher_secs)?;
            set_classes(&mut header, c as u32);
            first = Some((b0, z));
        }
    }
    let (mut w, state) = CacheWriter::open_or_resume(out, header.clone())?;
    report.resumed_from = state.next;
    report.truncated_bytes = state.truncated_bytes;
    report.classes = header.classes;
    report.k = header.k;
    report.record_size = header.record_size();
    report.file_bytes = header.file_len();
    progress(state.next, total);
    if state.complete {
        report.already_complete = true;
        report.total_secs = t_start.elapsed().as_secs_f64();
        return Ok(report);
    }
    let classes = header.classes as usize;
    let start = state.next as usize / batch * batch;
    let first = first.filter(|(b, _)| b.start == start);
    let skip_first = first.is_some();
    let mut rec = vec![0u8; header.record_size()];
    let (mut idx, mut xb) = (Vec::new(), Vec::new());
    let row = src.sample_bytes();
    let rest = src.batches_from(start + if skip_first { batch } else { 0 }, batch).map(|b| b.map(|b| (b, None)));
    for item in first.map(|(b, z)| Ok((b, Some(z)))).into_iter().chain(rest) {
        let (b, z) = item?;
        let z = match z {
            Some(z) => z,
            None => {
                let (z, c) = run_teachers(teachers, &b.x, opts.temperature, &mut report.teacher_secs)?;
                if c != classes {
                    return Err(cache_err(out, format!("teacher returned {c} classes, the cache holds {classes}")));
                }
                z
            }
        };
        tensor_le_bytes(&b.x, &mut xb);
        let n = b.x.shape()[0];
        for s in 0..n {
            let i = b.start + s;
            if (i as u64) < w.len() {
                continue; // already in the file: recomputed only to keep batches aligned
            }
            let label = b.y.as_ref().map_or(-1, |y| y[s]);
            let digest = record_digest(&xb[s * row..(s + 1) * row]);
            encode_record(&header, &z[s * classes..(s + 1) * classes], label, digest, &mut idx, &mut rec);
            w.push(&rec)?;
            report.computed += 1;
        }
        w.sync()?;
        progress(w.len(), total);
    }
    w.finish()?;
    report.total_secs = t_start.elapsed().as_secs_f64();
    Ok(report)
}

/// The first 64 KiB of a file (where a header lives), None when it cannot be read.
fn read_head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    std::fs::File::open(path).ok()?.take(1 << 16).read_to_end(&mut v).ok()?;
    Some(v)
}
