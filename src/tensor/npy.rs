//! `.npy` files <-> [`Tensor`] (through `ndarray-npy`), written atomically.

use super::{Data, Tensor};
use crate::error::{Error, Result};
use half::f16;
use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};
use std::io::Write;
use std::path::Path;

/// Reads a `.npy` file of any supported element type.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let err = |m: String| Error::TensorFile { path: path.to_path_buf(), message: m };
    macro_rules! attempt {
        ($t:ty) => {
            match ArrayD::<$t>::read_npy(bytes.as_slice()) {
                Ok(a) => return Ok(Tensor::from_array(a)),
                Err(ReadNpyError::WrongDescriptor(_)) => {}
                Err(e) => return Err(err(format!("not a readable .npy file: {e}"))),
            }
        };
    }
    attempt!(f32);
    attempt!(f64);
    attempt!(i64);
    attempt!(i32);
    attempt!(i8);
    attempt!(u8);
    attempt!(i16);
    attempt!(u32);
    attempt!(u64);
    attempt!(bool);
    match ArrayD::<u16>::read_npy(bytes.as_slice()) {
        // numpy float16 and uint16 share a width; ndarray-npy knows only uint16, so a float16
        // file arrives here as a descriptor error too. Decode '<f2' by hand from the header.
        Err(ReadNpyError::WrongDescriptor(d)) if format!("{d:?}").contains("f2") => {
            read_f16(&bytes).ok_or_else(|| err("malformed float16 .npy".into()))
        }
        Ok(a) => Ok(Tensor::from_array(a)),
        Err(e) => Err(err(format!("unsupported element type ({e})"))),
    }
}

fn read_f16(bytes: &[u8]) -> Option<Tensor> {
    // Header: magic(6) ver(2) len(2 or 4) dict; we only need shape and data offset.
    let major = *bytes.get(6)?;
    let (hlen, start) = if major == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize, 12)
    };
    let header = std::str::from_utf8(bytes.get(start..start + hlen)?).ok()?;
    if header.contains("'fortran_order': True") || !header.contains("<f2") {
        return None;
    }
    let shape_str = header.split("'shape': (").nth(1)?.split(')').next()?;
    let shape: Vec<usize> =
        shape_str.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().ok()).collect::<Option<_>>()?;
    let data = bytes.get(start + hlen..)?;
    let n: usize = shape.iter().product();
    let v: Vec<f16> = data.chunks_exact(2).take(n).map(|c| f16::from_le_bytes([c[0], c[1]])).collect();
    Tensor::from_vec(shape, v)
}

/// Writes a tensor as `.npy` (temp file, fsync, rename: a crash leaves the old file or the new).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let mut buf = Vec::new();
    let shape = t.shape().to_vec();
    macro_rules! put {
        ($v:expr) => {
            ndarray::ArrayViewD::from_shape(shape.clone(), $v.as_slice()).expect("tensor invariant").write_npy(&mut buf)
        };
    }
    let r = match t.data() {
        Data::F32(v) => put!(v),
        Data::F64(v) => put!(v),
        Data::I64(v) => put!(v),
        Data::I32(v) => put!(v),
        Data::I8(v) => put!(v),
        Data::U8(v) => put!(v),
        Data::I16(v) => put!(v),
        Data::U16(v) => put!(v),
        Data::U32(v) => put!(v),
        Data::U64(v) => put!(v),
        Data::Bool(v) => put!(v),
        Data::F16(v) => {
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            put!(f)
        }
        // numpy has no bfloat16 or float8: written widened to float32, as float16 is.
        Data::BF16(v) => {
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            put!(f)
        }
        Data::F8E4M3FN(v) => {
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            put!(f)
        }
        Data::F8E4M3FNUZ(v) => {
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            put!(f)
        }
        Data::F8E5M2(v) => {
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            put!(f)
        }
        Data::F8E5M2FNUZ(v) => {
            let f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            put!(f)
        }
    };
    r.map_err(|e| Error::TensorFile { path: path.to_path_buf(), message: e.to_string() })?;
    write_atomic(path, &buf)
}

/// Atomic file replacement: write beside the target, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
