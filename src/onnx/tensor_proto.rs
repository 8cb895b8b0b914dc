//! ONNX `TensorProto` <-> [`Tensor`], including external data (weights beside the model file).

use crate::error::{Error, Result};
use crate::onnx::pb::TensorProto;
use crate::tensor::{onnx_type_name, DType, Data, Tensor, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
use half::{bf16, f16};
use std::path::Path;

/// Decodes a TensorProto. `base_dir` resolves external data; `what` names it in errors.
pub fn decode(t: &TensorProto, base_dir: Option<&Path>, what: &str) -> Result<Tensor> {
    if matches!(t.data_type, INT4 | UINT4) {
        return decode_4bit(t, base_dir, what);
    }
    let dtype = DType::from_onnx(t.data_type)
        .ok_or_else(|| Error::import(what, format!("tensor type {} is not supported", onnx_type_name(t.data_type))))?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(Error::import(what, format!("negative dimension {d} in {:?}", t.dims)));
        }
        shape.push(d as usize);
    }
    let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let n = n.ok_or_else(|| Error::import(what, format!("dimensions {:?} overflow", t.dims)))?;

    let external;
    let raw: Option<&[u8]> = if t.data_location == Some(1) {
        external = read_external(t, base_dir, what, n * dtype.size())?;
        Some(&external)
    } else if !t.raw_data.is_empty() || typed_len(t, dtype) == 0 {
        Some(&t.raw_data)
    } else {
        None
    };

    let data = match raw {
        Some(bytes) => {
            if bytes.len() != n * dtype.size() {
                return Err(Error::import(
                    what,
                    format!("holds {} bytes, shape {:?} of {dtype} needs {}", bytes.len(), shape, n * dtype.size()),
                ));
            }
            from_le_bytes(dtype, bytes)
        }
        None => from_typed_fields(t, dtype),
    };
    if data.len() != n {
        return Err(Error::import(what, format!("holds {} values, shape {:?} needs {n}", data.len(), shape)));
    }
    Ok(Tensor::new(shape, data).expect("length checked"))
}

fn typed_len(t: &TensorProto, dtype: DType) -> usize {
    match dtype {
        DType::F32 => t.float_data.len(),
        DType::F64 => t.double_data.len(),
        DType::I64 => t.int64_data.len(),
        DType::U32 | DType::U64 => t.uint64_data.len(),
        DType::F16
        | DType::BF16
        | DType::I32
        | DType::I16
        | DType::U16
        | DType::I8
        | DType::U8
        | DType::Bool
        | DType::F8E4M3FN
        | DType::F8E4M3FNUZ
        | DType::F8E5M2
        | DType::F8E5M2FNUZ => t.int32_data.len(),
    }
}

fn from_typed_fields(t: &TensorProto, dtype: DType) -> Data {
    match dtype {
        DType::F32 => Data::F32(t.float_data.clone()),
        DType::F64 => Data::F64(t.double_data.clone()),
        DType::I64 => Data::I64(t.int64_data.clone()),
        DType::I32 => Data::I32(t.int32_data.clone()),
        DType::I8 => Data::I8(t.int32_data.iter().map(|&v| v as i8).collect()),
        DType::U8 => Data::U8(t.int32_data.iter().map(|&v| v as u8).collect()),
        DType::I16 => Data::I16(t.int32_data.iter().map(|&v| v as i16).collect()),
        DType::U16 => Data::U16(t.int32_data.iter().map(|&v| v as u16).collect()),
        DType::U32 => Data::U32(t.uint64_data.iter().map(|&v| v as u32).collect()),
        DType::U64 => Data::U64(t.uint64_data.clone()),
        DType::Bool => Data::Bool(t.int32_data.iter().map(|&v| v != 0).collect()),
        DType::F16 => Data::F16(t.int32_data.iter().map(|&v| f16::from_bits(v as u16)).collect()),
        DType::BF16 => Data::BF16(t.int32_data.iter().map(|&v| bf16::from_bits(v as u16)).collect()),
        DType::F8E4M3FN => Data::F8E4M3FN(t.int32_data.iter().map(|&v| F8E4M3FN(v as u8)).collect()),
        DType::F8E4M3FNUZ => Data::F8E4M3FNUZ(t.int32_data.iter().map(|&v| F8E4M3FNUZ(v as u8)).collect()),
        DType::F8E5M2 => Data::F8E5M2(t.int32_data.iter().map(|&v| F8E5M2(v as u8)).collect()),
        DType::F8E5M2FNUZ => Data::F8E5M2FNUZ(t.int32_data.iter().map(|&v| F8E5M2FNUZ(v as u8)).collect()),
    }
}

pub(crate) fn from_le_bytes(dtype: DType, b: &[u8]) -> Data {
    macro_rules! chunks {
        ($t:ty, $n:expr) => {
            b.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().unwrap())).collect()
        };
    }
    match dtype {
        DType::F32 => Data::F32(chunks!(f32, 4)),
        DType::F64 => Data::F64(chunks!(f64, 8)),
        DType::I64 => Data::I64(chunks!(i64, 8)),
        DType::I32 => Data::I32(chunks!(i32, 4)),
        DType::I16 => Data::I16(chunks!(i16, 2)),
        DType::U16 => Data::U16(chunks!(u16, 2)),
        DType::U32 => Data::U32(chunks!(u32, 4)),
        DType::U64 => Data::U64(chunks!(u64, 8)),
        DType::F16 => Data::F16(b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
        DType::BF16 => Data::BF16(b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect()),
        DType::I8 => Data::I8(b.iter().map(|&v| v as i8).collect()),
        DType::U8 => Data::U8(b.to_vec()),
        DType::F8E4M3FN => Data::F8E4M3FN(b.iter().map(|&v| F8E4M3FN(v)).collect()),
        DType::F8E4M3FNUZ => Data::F8E4M3FNUZ(b.iter().map(|&v| F8E4M3FNUZ(v)).collect()),
        DType::F8E5M2 => Data::F8E5M2(b.iter().map(|&v| F8E5M2(v)).collect()),
        DType::F8E5M2FNUZ => Data::F8E5M2FNUZ(b.iter().map(|&v| F8E5M2FNUZ(v)).collect()),
        DType::Bool => Data::Bool(b.iter().map(|&v| v != 0).collect()),
    }
}

/// ONNX `TensorProto.DataType` codes of the packed 4-bit integers.
pub const UINT4: i32 = 21;
pub const INT4: i32 = 22;

/// INT4 / UINT4: two values per byte, element `2i` in the low nibble of byte `i` (raw data,
/// external data, or one packed byte per `int32_data` entry, as onnx.helper writes them); an
/// odd count leaves the last high nibble as padding. Unpacked to one value per element, INT4
/// as sign-extended i8 in [-8, 7] and UINT4 as u8 in [0, 15], so every kernel reads them as the
/// 8-bit types; the quantization passes recover the 4-bit packing where they fold.
fn decode_4bit(t: &TensorProto, base_dir: Option<&Path>, what: &str) -> Result<Tensor> {
    let signed = t.data_type == INT4;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(Error::import(what, format!("negative dimension {d} in {:?}", t.dims)));
        }
        shape.push(d as usize);
    }
    let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let n = n.ok_or_else(|| Error::import(what, format!("dimensions {:?} overflow", t.dims)))?;
    let bytes_needed = n.div_ceil(2);
    let typed: Vec<u8>;
    let external;
    let bytes: &[u8] = if t.data_location == Some(1) {
        external = read_external(t, base_dir, what, bytes_needed)?;
        &external
    } else if !t.raw_data.is_empty() || t.int32_data.is_empty() {
        &t.raw_data
    } else {
        typed = t.int32_data.iter().map(|&v| v as u8).collect();
        &typed
    };
    let name = onnx_type_name(t.data_type);
    if bytes.len() != bytes_needed {
        return Err(Error::import(
            what,
            format!(
                "{name} holds {} bytes, shape {shape:?} ({n} values, two per byte) needs {bytes_needed}",
                bytes.len()
            ),
        ));
    }
    let nibble = |i: usize| (bytes[i / 2] >> (4 * (i % 2))) & 0xF;
    let data = if signed {
        Data::I8((0..n).map(|i| ((nibble(i) << 4) as i8) >> 4).collect())
    } else {
        Data::U8((0..n).map(nibble).collect())
    };
    Ok(Tensor::new(shape, data).expect("length checked"))
}

/// Encodes an i8 tensor with values in [-8, 7] as INT4, or a u8 tensor with values in [0, 15]
/// as UINT4 (packed two per byte, low nibble first, raw data); `None` for other types or
/// values out of range.
pub fn encode_4bit(t: &Tensor, name: &str) -> Option<TensorProto> {
    let (data_type, nibbles): (i32, Vec<u8>) = match t.data() {
        Data::I8(v) if v.iter().all(|x| (-8..=7).contains(x)) => (INT4, v.iter().map(|&x| x as u8 & 0xF).collect()),
        Data::U8(v) if v.iter().all(|&x| x <= 15) => (UINT4, v.clone()),
        _ => return None,
    };
    let raw_data = nibbles.chunks(2).map(|p| p[0] | p.get(1).map_or(0, |h| h << 4)).collect();
    Some(TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type,
        name: name.to_string(),
        raw_data,
        ..Default::default()
    })
}

/// Reads `location`/`offset`/`length` external data, memory-mapped, checked against the model dir.
fn read_external(t: &TensorProto, base_dir: Option<&Path>, what: &str, expected: usize) -> Result<Vec<u8>> {
    let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.as_str());
    let location = get("location").ok_or_else(|| Error::import(what, "external data without a location"))?;
    let parse = |k: &str| -> Result<Option<usize>> {
        get(k)
            .map(|v| {
                v.parse::<usize>().map_err(|_| Error::import(what, format!("external data {k} '{v}' is not a number")))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?.unwrap_or(expected);
    let rel = Path::new(location);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Error::import(what, format!("external data location '{location}' escapes the model directory")));
    }
    let dir = base_dir.ok_or_else(|| Error::import(what, "external data needs the model's directory"))?;
    let path = dir.join(rel);
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    // SAFETY: the map is read once into a Vec right away; a concurrent truncation would fault,
    // which is the documented hazard of mapping files and no worse than a torn read.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
    let end = offset.checked_add(length).filter(|&e| e <= map.len()).ok_or_else(|| {
        Error::import(
            what,
            format!("external data {}+{} past the end of {} ({} bytes)", offset, length, path.display(), map.len()),
        )
    })?;
    Ok(map[offset..end].to_vec())
}

/// Encodes a tensor as a TensorProto with raw little-endian data.
pub fn encode(t: &Tensor, name: &str) -> TensorProto {
    let raw_data = to_le_bytes(t.data());
    TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: t.dtype().onnx_code(),
        name: name.to_string(),
        raw_data,
        ..Default::default()
    }
}

fn to_le_bytes(d: &Data) -> Vec<u8> {
    match d {
        Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::U64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I8(v) => v.iter().map(|&x| x as u8).collect(),
        Data::U8(v) => v.clone(),
        Data::F8E4M3FN(v) => v.iter().map(|x| x.0).collect(),
        Data::F8E4M3FNUZ(v) => v.iter().map(|x| x.0).collect(),
        Data::F8E5M2(v) => v.iter().map(|x| x.0).collect(),
        Data::F8E5M2FNUZ(v) => v.iter().map(|x| x.0).collect(),
        Data::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    }
}

/// Reads a serialized TensorProto file (`.pb`, as in ONNX test data sets).
pub fn read_pb_file(path: &Path) -> Result<(String, Tensor)> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let t = TensorProto::decode(bytes.as_slice()).map_err(|e| Error::TensorFile {
        path: path.to_path_buf(),
        message: format!("not a serialized ONNX TensorProto: {e}"),
    })?;
    let tensor = decode(&t, path.parent(), &path.display().to_string())
        .map_err(|e| Error::TensorFile { path: path.to_path_buf(), message: e.to_string() })?;
    Ok((t.name.clone(), tensor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_and_uint4_round_trip_packed_low_nibble_first() {
        // Odd count: the last byte's high nibble is padding.
        let i4 = Tensor::from_vec(vec![5], vec![-8i8, 7, -1, 0, 3]).unwrap();
        let p = encode_4bit(&i4, "w").unwrap();
        assert_eq!(p.data_type, INT4);
        assert_eq!(p.raw_data, vec![0x78, 0x0F, 0x03]);
        assert_eq!(decode(&p, None, "w").unwrap(), i4);
        let u4 = Tensor::from_vec(vec![3, 1], vec![15u8, 0, 9]).unwrap();
        let p = encode_4bit(&u4, "u").unwrap();
        assert_eq!((p.data_type, p.raw_data.as_slice()), (UINT4, &[0x0Fu8, 0x09][..]));
        assert_eq!(decode(&p, None, "u").unwrap(), u4);
        // Out of range values or other types have no 4-bit form.
        assert!(encode_4bit(&Tensor::from_vec(vec![1], vec![8i8]).unwrap(), "x").is_none());
        assert!(encode_4bit(&Tensor::from_vec(vec![1], vec![16u8]).unwrap(), "x").is_none());
        assert!(encode_4bit(&Tensor::scalar(1f32), "x").is_none());
        // onnx.helper stores one packed byte per int32_data entry.
        let typed = TensorProto { dims: vec![3], data_type: INT4, int32_data: vec![0x9F, 0x01], ..Default::default() };
        assert_eq!(decode(&typed, None, "t").unwrap().as_slice::<i8>().unwrap(), &[-1, -7, 1]);
        // Five values need three bytes: two is a one-line error naming the tensor.
        let short = TensorProto { dims: vec![5], data_type: INT4, raw_data: vec![0, 0], ..Default::default() };
        let e = decode(&short, None, "initializer w").unwrap_err().to_string();
        assert!(e.contains("initializer w") && e.contains("INT4 holds 2 bytes") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn new_integer_and_bf16_types_round_trip_and_read_typed_fields() {
        let ts = [
            Tensor::from_vec(vec![2], vec![-3i16, i16::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![7u16, u16::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![7u32, u32::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![7u64, u64::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![bf16::from_f32(-1.5), bf16::MAX]).unwrap(),
        ];
        for t in ts {
            assert_eq!(decode(&encode(&t, "x"), None, "x").unwrap(), t);
        }
        // Typed fields: 16-bit values and bf16 bits in int32_data, uint32/uint64 in uint64_data.
        let typed = |data_type: i32, int32_data: Vec<i32>, uint64_data: Vec<u64>| TensorProto {
            dims: vec![2],
            data_type,
            int32_data,
            uint64_data,
            ..Default::default()
        };
        let u64s = decode(&typed(13, vec![], vec![1, u64::MAX]), None, "x").unwrap();
        assert_eq!(u64s.as_slice::<u64>().unwrap(), &[1, u64::MAX]);
        let u32s = decode(&typed(12, vec![], vec![1, 4_000_000_000]), None, "x").unwrap();
        assert_eq!(u32s.as_slice::<u32>().unwrap(), &[1, 4_000_000_000]);
        let i16s = decode(&typed(5, vec![-2, 300], vec![]), None, "x").unwrap();
        assert_eq!(i16s.as_slice::<i16>().unwrap(), &[-2, 300]);
        let u16s = decode(&typed(4, vec![65535, 1], vec![]), None, "x").unwrap();
        assert_eq!(u16s.as_slice::<u16>().unwrap(), &[65535, 1]);
        let bf = decode(&typed(16, vec![0x3f80, 0xc000], vec![]), None, "x").unwrap();
        assert_eq!(bf.as_slice::<bf16>().unwrap(), &[bf16::ONE, bf16::from_f32(-2.0)]);
    }
}
