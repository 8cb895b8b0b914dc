//! Streaming sample sources: `.npy`, `.npz`, folders of them, and image folders.
//!
//! A [`DataSource`] holds N samples along axis 0 and hands them out in batches without loading the
//! whole data set: `.npy` files (and stored `.npz` members) are memory-mapped, images are decoded
//! per batch. Optional integer labels come from the `.npz` member `y`, from class subfolders of an
//! image folder, or from a separate `.npy` given in [`DataOptions::labels`].
//!
//! Digests identify a data set by content: [`DataSource::digest`] is the sha256 of a small prefix
//! (type and shape) followed by every sample's bytes in order, exactly as they are fed to a model
//! (after type conversion and image preprocessing, little-endian). The same samples stored as one
//! `.npy`, a folder of `.npy` or an `.npz` give the same digest.

mod images;
mod npy;

pub use images::{ColorMode, ImageOptions, Layout};
pub use npy::{NpyArray, NpyType};

use crate::tensor::{numel, DType, Tensor};
use crate::{Error, Result};
use half::f16;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// How to open a data set.
#[derive(Clone, Debug, Default)]
pub struct DataOptions {
    /// Labels from a separate `.npy` of integers (i64/i32/u8/i8), one per sample; overrides
    /// labels found in the data itself.
    pub labels: Option<PathBuf>,
    /// Keep the arrays' element type instead of converting to f32.
    pub keep_dtype: bool,
    /// Preprocessing of image folders.
    pub image: ImageOptions,
}

/// One batch of samples `start..start + x.shape()[0]`.
#[derive(Clone, Debug)]
pub struct Batch {
    pub x: Tensor,
    pub y: Option<Vec<i64>>,
    pub start: usize,
}

enum Kind {
    Arrays { parts: Vec<NpyArray>, ends: Vec<usize> },
    Images { files: Vec<PathBuf>, opts: ImageOptions },
}

/// A data set read in a stream.
pub struct DataSource {
    path: PathBuf,
    kind: Kind,
    len: usize,
    sample_shape: Vec<usize>,
    dtype: DType,
    labels: Option<Vec<i64>>,
    classes: Vec<String>,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::TensorFile { path: path.to_path_buf(), message: message.into() }
}

fn ext_is(p: &Path, e: &str) -> bool {
    p.extension().and_then(|x| x.to_str()).is_some_and(|x| x.eq_ignore_ascii_case(e))
}

impl DataSource {
    /// Opens a `.npy`, a `.npz`, a folder of `.npy`/`.npz` (sorted by name, concatenated) or a
    /// folder of images (directly, or one subfolder per class).
    pub fn open(path: &Path, opts: &DataOptions) -> Result<DataSource> {
        let mut src = if path.is_dir() {
            if images::dir_has_images(path)? {
                DataSource::open_images(path, &opts.image)?
            } else {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| Error::io(path, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && (ext_is(p, "npy") || ext_is(p, "npz")))
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(bad(path, "folder holds no .npy, .npz or image files"));
                }
                DataSource::open_arrays(path, &files, opts)?
            }
        } else if ext_is(path, "npy") || ext_is(path, "npz") {
            DataSource::open_arrays(path, &[path.to_path_buf()], opts)?
        } else if ext_is(path, "png") || ext_is(path, "jpg") || ext_is(path, "jpeg") {
            return Err(bad(path, "give the folder that holds the images, not one image"));
        } else if !path.exists() {
            return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder")));
        } else {
            return Err(bad(
                path,
                "unknown data format (expected .npy, .npz, or a folder of them or of PNG/JPEG images)",
            ));
        };
        if let Some(lp) = &opts.labels {
            let arr = NpyArray::open(lp)?;
            let labels = arr.to_i64()?;
            if labels.len() != src.len {
                return Err(bad(lp, format!("{} labels for {} samples", labels.len(), src.len)));
            }
            src.labels = Some(labels);
        }
        Ok(src)
    }

    fn open_arrays(path: &Path, files: &[PathBuf], opts: &DataOptions) -> Result<DataSource> {
        let (mut parts, mut ends, mut ys) = (vec![], vec![], vec![]);
        let mut total = 0usize;
        for f in files {
            let (x, y) = if ext_is(f, "npz") { npy::open_npz(f)? } else { (NpyArray::open(f)?, None) };
            if x.shape.is_empty() {
                return Err(bad(f, "array is a scalar; samples must lie along axis 0"));
            }
            if let Some(first) = parts.first() {
                let first: &NpyArray = first;
                if first.sample_shape() != x.sample_shape() || first.dtype != x.dtype {
                    return Err(bad(
                        f,
                        format!(
                            "samples are {:?} {:?}, but {} has {:?} {:?}",
                            x.dtype,
                            x.sample_shape(),
                            first.path.display(),
                            first.dtype,
                            first.sample_shape()
                        ),
                    ));
                }
            }
            if let Some(y) = &y {
                if y.len() != x.len() {
                    return Err(bad(f, format!("member y has {} labels for {} samples", y.len(), x.len())));
                }
            }
            ys.push(y);
            total += x.len();
            ends.push(total);
            parts.push(x);
        }
        // Labels from the files only when every file has them.
        let labels = if ys.iter().all(Option::is_some) {
            let mut v = Vec::with_capacity(total);
            for y in ys.iter().flatten() {
                v.extend(y.to_i64()?);
            }
            Some(v)
        } else {
            None
        };
        let first = &parts[0];
        let dtype = if opts.keep_dtype { first.dtype.dtype() } else { DType::F32 };
        Ok(DataSource {
            path: path.to_path_buf(),
            sample_shape: first.sample_shape().to_vec(),
            dtype,
            len: total,
            labels,
            classes: vec![],
            kind: Kind::Arrays { parts, ends },
        })
    }

    fn open_images(path: &Path, o: &ImageOptions) -> Result<DataSource> {
        images::check_options(o)?;
        let images::ImageList { files, labels, classes } = images::list_images(path)?;
        if files.is_empty() {
            return Err(bad(path, "folder holds no PNG/JPEG images"));
        }
        let mut opts = o.clone();
        if opts.height == 0 || opts.width == 0 {
            let (h, w) = images::image_size(&files[0])?;
            opts.height = if opts.height == 0 { h } else { opts.height };
            opts.width = if opts.width == 0 { w } else { opts.width };
        }
        Ok(DataSource {
            path: path.to_path_buf(),
            len: files.len(),
            sample_shape: images::sample_shape(&opts),
            dtype: DType::F32,
            labels,
            classes,
            kind: Kind::Images { files, opts },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shape of one sample (the batch shape without its first axis).
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    /// Element type of the batches.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes of one sample as fed to a model.
    pub fn sample_bytes(&self) -> usize {
        numel(&self.sample_shape) * self.dtype.size()
    }

    pub fn labels(&self) -> Option<&[i64]> {
        self.labels.as_deref()
    }

    /// Class names of an image folder with class subfolders (label i is `classes()[i]`).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Samples `start..end` as one tensor `[end - start, sample_shape..]`.
    pub fn read(&self, start: usize, end: usize) -> Result<Tensor> {
        let end = end.min(self.len);
        let start = start.min(end);
        let mut shape = vec![end - start];
        shape.extend_from_slice(&self.sample_shape);
        match &self.kind {
            Kind::Images { files, opts } => {
                let mut v = Vec::with_capacity(numel(&shape));
                for f in &files[start..end] {
                    images::load_image(f, opts, &mut v)?;
                }
                Tensor::from_vec(shape, v).ok_or_else(|| bad(&self.path, "image batch size mismatch"))
            }
            Kind::Arrays { parts, ends } => {
                let mut bytes = Vec::with_capacity((end - start) * parts[0].row_bytes());
                let mut pos = start;
                let mut pi = ends.partition_point(|&e| e <= pos);
                while pos < end {
                    let p0 = if pi == 0 { 0 } else { ends[pi - 1] };
                    let stop = end.min(ends[pi]);
                    bytes.extend_from_slice(parts[pi].rows(pos - p0, stop - p0));
                    pos = stop;
                    pi += 1;
                }
                let t = decode(parts[0].dtype, &bytes, self.dtype == DType::F32, shape);
                t.ok_or_else(|| bad(&self.path, "batch size mismatch"))
            }
        }
    }

    /// Batches of `batch` samples from 0 (the last may be shorter).
    pub fn batches(&self, batch: usize) -> Batches<'_> {
        self.batches_from(0, batch)
    }

    /// Batches of `batch` samples starting at sample `start`.
    pub fn batches_from(&self, start: usize, batch: usize) -> Batches<'_> {
        Batches { src: self, pos: start.min(self.len), batch: batch.max(1) }
    }

    /// The data set's digest: sha256 over a prefix (element type, sample shape, count) and then
    /// every sample's bytes in order. Reads the whole data set once, in batches.
    pub fn digest(&self, batch: usize) -> Result<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(b"alembic-data-v1\0");
        h.update(self.dtype.to_string().as_bytes());
        h.update((self.sample_shape.len() as u64).to_le_bytes());
        for &d in &self.sample_shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update((self.len as u64).to_le_bytes());
        let mut buf = Vec::new();
        for b in self.batches(batch) {
            tensor_le_bytes(&b?.x, &mut buf);
            h.update(&buf);
        }
        Ok(h.finalize().into())
    }

    /// sha256 of the labels (count, then i64 little-endian), or all zeros when there are none.
    pub fn labels_digest(&self) -> [u8; 32] {
        match &self.labels {
            None => [0; 32],
            Some(l) => {
                let mut h = Sha256::new();
                h.update(b"alembic-labels-v1\0");
                h.update((l.len() as u64).to_le_bytes());
                for v in l {
                    h.update(v.to_le_bytes());
                }
                h.finalize().into()
            }
        }
    }
}

/// Iterator over batches of a [`DataSource`].
pub struct Batches<'a> {
    src: &'a DataSource,
    pos: usize,
    batch: usize,
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.pos >= self.src.len {
            return None;
        }
        let start = self.pos;
        let end = (start + self.batch).min(self.src.len);
        self.pos = end;
        let y = self.src.labels.as_ref().map(|l| l[start..end].to_vec());
        Some(self.src.read(start, end).map(|x| Batch { x, y, start }))
    }
}

/// Tensor from little-endian bytes of a `.npy` type, converted to f32 when `to_f32`.
fn decode(t: NpyType, b: &[u8], to_f32: bool, shape: Vec<usize>) -> Option<Tensor> {
    macro_rules! le {
        ($ty:ty, $n:expr) => {
            b.chunks_exact($n).map(|c| <$ty>::from_le_bytes(c.try_into().unwrap_or([0; $n])))
        };
    }
    if to_f32 {
        let v: Vec<f32> = match t {
            NpyType::F32 => le!(f32, 4).collect(),
            NpyType::F64 => le!(f64, 8).map(|x| x as f32).collect(),
            NpyType::F16 => le!(u16, 2).map(|x| f16::from_bits(x).to_f32()).collect(),
            NpyType::I64 => le!(i64, 8).map(|x| x as f32).collect(),
            NpyType::I32 => le!(i32, 4).map(|x| x as f32).collect(),
            NpyType::I8 => b.iter().map(|&x| x as i8 as f32).collect(),
            NpyType::U8 | NpyType::Bool => b.iter().map(|&x| x as f32).collect(),
        };
        return Tensor::from_vec(shape, v);
    }
    match t {
        NpyType::F32 => Tensor::from_vec(shape, le!(f32, 4).collect::<Vec<_>>()),
        NpyType::F64 => Tensor::from_vec(shape, le!(f64, 8).collect::<Vec<_>>()),
        NpyType::F16 => Tensor::from_vec(shape, le!(u16, 2).map(f16::from_bits).collect::<Vec<_>>()),
        NpyType::I64 => Tensor::from_vec(shape, le!(i64, 8).collect::<Vec<_>>()),
        NpyType::I32 => Tensor::from_vec(shape, le!(i32, 4).collect::<Vec<_>>()),
        NpyType::I8 => Tensor::from_vec(shape, b.iter().map(|&x| x as i8).collect::<Vec<_>>()),
        NpyType::U8 => Tensor::from_vec(shape, b.to_vec()),
        NpyType::Bool => Tensor::from_vec(shape, b.iter().map(|&x| x != 0).collect::<Vec<_>>()),
    }
}

/// A tensor's elements as little-endian bytes (bool as one byte 0/1), written into `out`.
pub fn tensor_le_bytes(t: &Tensor, out: &mut Vec<u8>) {
    use crate::tensor::Data;
    out.clear();
    macro_rules! put {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match t.data() {
        Data::F32(v) => put!(v),
        Data::F16(v) => put!(v),
        Data::F64(v) => put!(v),
        Data::I64(v) => put!(v),
        Data::I32(v) => put!(v),
        Data::I8(v) => put!(v),
        Data::I16(v) => put!(v),
        Data::U16(v) => put!(v),
        Data::U32(v) => put!(v),
        Data::U64(v) => put!(v),
        Data::BF16(v) => put!(v),
        Data::U8(v) => out.extend_from_slice(v),
        Data::F8E4M3FN(v) => out.extend(v.iter().map(|x| x.0)),
        Data::F8E4M3FNUZ(v) => out.extend(v.iter().map(|x| x.0)),
        Data::F8E5M2(v) => out.extend(v.iter().map(|x| x.0)),
        Data::F8E5M2FNUZ(v) => out.extend(v.iter().map(|x| x.0)),
        Data::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
    }
}

/// First 8 bytes of the sha256 of one sample's bytes: the per-record input digest of a cache.
pub fn record_digest(bytes: &[u8]) -> [u8; 8] {
    let h: [u8; 32] = Sha256::digest(bytes).into();
    let mut d = [0u8; 8];
    d.copy_from_slice(&h[..8]);
    d
}

/// sha256 of a file (a teacher's ONNX file), read in a stream.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Lower-case hex of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
