//! `.npy` arrays read in place: a small parser for the documented header, then row slices of a
//! memory map (or of an in-memory buffer for compressed `.npz` members). Nothing is loaded whole.

use crate::tensor::DType;
use crate::{Error, Result};
use memmap2::Mmap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an array's bytes live.
#[derive(Clone)]
enum Backing {
    Map(Arc<Mmap>),
    Owned(Arc<Vec<u8>>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// Element types a `.npy` file may hold here (little-endian or byte-sized only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyType {
    F32,
    F64,
    F16,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl NpyType {
    fn parse(descr: &str) -> Option<NpyType> {
        Some(match descr {
            "<f4" => NpyType::F32,
            "<f8" => NpyType::F64,
            "<f2" => NpyType::F16,
            "<i8" => NpyType::I64,
            "<i4" => NpyType::I32,
            "|i1" | "<i1" => NpyType::I8,
            "|u1" | "<u1" => NpyType::U8,
            "|b1" => NpyType::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        self.dtype().size()
    }

    /// The tensor type holding these elements as-is.
    pub fn dtype(self) -> DType {
        match self {
            NpyType::F32 => DType::F32,
            NpyType::F64 => DType::F64,
            NpyType::F16 => DType::F16,
            NpyType::I64 => DType::I64,
            NpyType::I32 => DType::I32,
            NpyType::I8 => DType::I8,
            NpyType::U8 => DType::U8,
            NpyType::Bool => DType::Bool,
        }
    }
}

/// One array: its element type, shape and the bytes of its data section.
#[derive(Clone)]
pub struct NpyArray {
    pub path: PathBuf,
    pub dtype: NpyType,
    pub shape: Vec<usize>,
    backing: Backing,
    offset: usize,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::TensorFile { path: path.to_path_buf(), message: message.into() }
}

impl NpyArray {
    /// Memory-maps a `.npy` file.
    pub fn open(path: &Path) -> Result<NpyArray> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file changed underneath us shows up as wrong data (the
        // dataset digest catches it), never as memory unsafety beyond what every mmap reader accepts.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        NpyArray::from_backing(path, Backing::Map(Arc::new(map)), 0)
    }

    /// An array inside a memory-mapped container at `offset` (stored `.npz` member).
    pub fn open_at(path: &Path, map: Arc<Mmap>, offset: usize) -> Result<NpyArray> {
        NpyArray::from_backing(path, Backing::Map(map), offset)
    }

    /// An array from bytes already in memory (compressed `.npz` member).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<NpyArray> {
        NpyArray::from_backing(path, Backing::Owned(Arc::new(bytes)), 0)
    }

    fn from_backing(path: &Path, backing: Backing, start: usize) -> Result<NpyArray> {
        let all = backing.bytes();
        let b = all.get(start..).ok_or_else(|| bad(path, "npy member starts past the end"))?;
        if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
            return Err(bad(path, "not a .npy array (bad magic)"));
        }
        let (hlen, hstart) = match b[6] {
            1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
            2 | 3 => {
                if b.len() < 12 {
                    return Err(bad(path, "truncated .npy header"));
                }
                (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
            }
            v => return Err(bad(path, format!(".npy format version {v} is not supported"))),
        };
        let header = b.get(hstart..hstart + hlen).ok_or_else(|| bad(path, "truncated .npy header"))?;
        let header = std::str::from_utf8(header).map_err(|_| bad(path, ".npy header is not text"))?;
        let descr = dict_value(header, "descr").ok_or_else(|| bad(path, ".npy header has no 'descr'"))?;
        let descr = quoted(descr).ok_or_else(|| bad(path, ".npy header 'descr' is not a type string"))?;
        let dtype = NpyType::parse(descr).ok_or_else(|| {
            bad(path, format!(".npy element type '{descr}' is not supported (little-endian f2/f4/f8/i1/i4/i8/u1/b1)"))
        })?;
        if dict_value(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
            return Err(bad(path, "Fortran-ordered .npy arrays are not supported (save with C order)"));
        }
        let shape_s = dict_value(header, "shape").ok_or_else(|| bad(path, ".npy header has no 'shape'"))?;
        let inner = shape_s.trim().trim_start_matches('(');
        let inner = &inner[..inner.find(')').ok_or_else(|| bad(path, "bad .npy shape"))?];
        let shape = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| bad(path, format!("bad .npy dimension '{s}'"))))
            .collect::<Result<Vec<_>>>()?;
        let offset = start + hstart + hlen;
        let need = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(path, "shape overflows"))?;
        if all.len() < offset + need {
            return Err(bad(
                path,
                format!("truncated .npy data: {} bytes expected, {} present", need, all.len() - offset.min(all.len())),
            ));
        }
        Ok(NpyArray { path: path.to_path_buf(), dtype, shape, backing, offset })
    }

    /// Samples along axis 0 (a 0-d array counts as one sample).
    pub fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sample_shape(&self) -> &[usize] {
        self.shape.get(1..).unwrap_or(&[])
    }

    /// Bytes of one sample.
    pub fn row_bytes(&self) -> usize {
        self.sample_shape().iter().product::<usize>() * self.dtype.size()
    }

    /// Raw little-endian bytes of samples `start..end`.
    pub fn rows(&self, start: usize, end: usize) -> &[u8] {
        let r = self.row_bytes();
        &self.backing.bytes()[self.offset + start * r..self.offset + end * r]
    }

    /// All values as i64 (label arrays).
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        let b = self.rows(0, self.len());
        Ok(match self.dtype {
            NpyType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
            NpyType::I32 => {
                b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64).collect()
            }
            NpyType::U8 => b.iter().map(|&v| v as i64).collect(),
            NpyType::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            t => return Err(bad(&self.path, format!("labels must be integers (i64/i32/u8/i8), found {t:?}"))),
        })
    }
}

/// The contents of the quoted string `s` starts with.
fn quoted(s: &str) -> Option<&str> {
    let q = s.chars().next().filter(|&c| c == '\'' || c == '"')?;
    let rest = &s[1..];
    Some(&rest[..rest.find(q)?])
}

/// The text after `'key':` in a numpy header dict, up to the end of the dict.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    for q in ['\'', '"'] {
        let pat = format!("{q}{key}{q}");
        if let Some(p) = header.find(&pat) {
            let rest = &header[p + pat.len()..];
            let rest = rest.trim_start().strip_prefix(':')?;
            return Some(rest.trim_start());
        }
    }
    None
}

/// Opens the arrays of a `.npz`: `(x, y)` where x is member `x` (or the first array) and y is
/// member `y` when there is one. Stored members are memory-mapped in place; compressed ones are
/// inflated into memory (use `.npy` files for data larger than memory).
pub fn open_npz(path: &Path) -> Result<(NpyArray, Option<NpyArray>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map, see NpyArray::open.
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&map[..]))
        .map_err(|e| bad(path, format!("not a valid .npz: {e}")))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    // ZIP order is numpy's save order: "the first array" is the first member that is not `y`.
    let arrays: Vec<&String> = names.iter().filter(|n| n.ends_with(".npy")).collect();
    let pick_x =
        arrays.iter().find(|n| n.as_str() == "x.npy").or_else(|| arrays.iter().find(|n| n.as_str() != "y.npy"));
    let x_name = pick_x.map(|s| s.to_string()).ok_or_else(|| bad(path, ".npz holds no arrays"))?;
    let has_y = names.iter().any(|n| n == "y.npy");
    let mut member = |name: &str| -> Result<NpyArray> {
        let mut f = zip.by_name(name).map_err(|e| bad(path, format!("{name}: {e}")))?;
        if f.compression() == zip::CompressionMethod::Stored {
            let start = f.data_start() as usize;
            drop(f);
            NpyArray::open_at(path, map.clone(), start)
        } else {
            let mut v = Vec::with_capacity(f.size() as usize);
            f.read_to_end(&mut v).map_err(|e| bad(path, format!("{name}: {e}")))?;
            NpyArray::from_bytes(path, v)
        }
    };
    let x = member(&x_name)?;
    let y = if has_y { Some(member("y.npy")?) } else { None };
    Ok((x, y))
}
