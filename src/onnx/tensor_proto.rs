//! ONNX `TensorProto` <-> [`Tensor`], including external data (weights beside the model file).
//!
//! Raw data is a [`Bytes`] slice of the buffer the model was decoded from (the file's memory
//! map, see `import::read_model_proto`) or of the external data file's map; decoded tensors
//! borrow it where the values can be read in place ([`Tensor::from_le_bytes`]).

use crate::error::{Error, Result};
use crate::onnx::pb::TensorProto;
use crate::tensor::{onnx_type_name, DType, Data, Tensor, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
use bytes::Bytes;
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
    let n_bytes =
        n.checked_mul(dtype.size()).ok_or_else(|| Error::import(what, format!("dimensions {:?} overflow", t.dims)))?;

    let raw: Option<Bytes> = if t.data_location == Some(1) {
        Some(read_external(t, base_dir, what, n_bytes)?)
    } else if !t.raw_data.is_empty() || typed_len(t, dtype) == 0 {
        Some(t.raw_data.clone()) // a reference count, not a copy
    } else {
        None
    };

    match raw {
        Some(bytes) => {
            if bytes.len() != n_bytes {
                return Err(Error::import(
                    what,
                    format!("holds {} bytes, shape {:?} of {dtype} needs {n_bytes}", bytes.len(), shape),
                ));
            }
            Ok(Tensor::from_le_bytes(shape, dtype, bytes).expect("length checked"))
        }
        None => {
            let data = from_typed_fields(t, dtype);
            if data.len() != n {
                return Err(Error::import(what, format!("holds {} values, shape {:?} needs {n}", data.len(), shape)));
            }
            Ok(Tensor::new(shape, data).expect("length checked"))
        }
    }
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
        &t.raw_data[..]
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
    let raw_data = nibbles.chunks(2).map(|p| p[0] | p.get(1).map_or(0, |h| h << 4)).collect::<Vec<u8>>().into();
    Some(TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type,
        name: name.to_string(),
        raw_data,
        ..Default::default()
    })
}

/// Reads `location`/`offset`/`length` external data, memory-mapped, checked against the model dir.
/// The bytes stay mapped (borrowed by the tensor) for as long as something references them.
fn read_external(t: &TensorProto, base_dir: Option<&Path>, what: &str, expected: usize) -> Result<Bytes> {
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
    // SAFETY: the map is read-only and lives as long as the tensors borrowing it; the file must
    // not be modified while the model lives (as with ONNX Runtime's and tract's mapped loads):
    // truncating it would fault on access, overwriting it in place would change the weights.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
    let end = offset.checked_add(length).filter(|&e| e <= map.len()).ok_or_else(|| {
        Error::import(
            what,
            format!("external data {}+{} past the end of {} ({} bytes)", offset, length, path.display(), map.len()),
        )
    })?;
    Ok(Bytes::from_owner(map).slice(offset..end))
}

/// Encodes a tensor as a TensorProto with raw little-endian data.
pub fn encode(t: &Tensor, name: &str) -> TensorProto {
    let raw_data = to_le_bytes(t.data()).into();
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
    use prost::Message;

    /// `t` encoded into a buffer that starts 8-aligned (as a page-aligned file map does), and
    /// the offset of its raw data in it; the name's length moves that offset.
    fn encoded(t: &Tensor, name: &str) -> (Bytes, usize) {
        struct Words(Vec<u64>);
        impl AsRef<[u8]> for Words {
            fn as_ref(&self) -> &[u8] {
                bytemuck::cast_slice(&self.0)
            }
        }
        let proto = encode(t, name).encode_to_vec();
        let mut words = vec![0u64; proto.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..proto.len()].copy_from_slice(&proto);
        let buf = Bytes::from_owner(Words(words)).slice(..proto.len());
        let raw = t.byte_size();
        let at = proto.len() - raw; // raw_data (tag 9) is the last field written
        assert_eq!(&buf[at..], &to_le_bytes(t.data())[..]);
        (buf, at)
    }

    /// Decodes `t` through a TensorProto sliced out of a shared buffer whose raw data starts at
    /// an offset `== 0` (`aligned`) or `!= 0` modulo `align`; returns (source, decoded).
    fn decode_at(t: &Tensor, align: usize, aligned: bool) -> (Bytes, Tensor) {
        let (buf, _) = (0..8)
            .map(|len| encoded(t, &"n".repeat(len)))
            .find(|(buf, at)| (buf.as_ptr() as usize + at).is_multiple_of(align) == aligned)
            .expect("some name length gives each alignment");
        let proto = TensorProto::decode(buf.clone()).unwrap();
        (buf, decode(&proto, None, "x").unwrap())
    }

    #[test]
    fn decoded_raw_data_borrows_the_source_buffer() {
        let f = Tensor::from_vec(vec![2, 3], vec![1.5f32, -2.0, 3.25, 0.0, 7.0, -1e-3]).unwrap();
        let i = Tensor::from_vec(vec![5], vec![-127i8, -1, 0, 1, 127]).unwrap();
        for (t, align) in [(&f, 4), (&i, 1)] {
            let (src, got) = decode_at(t, align, true);
            assert!(got.is_borrowed(), "{:?} should borrow", t.dtype());
            let p = match t.dtype() {
                DType::F32 => got.as_slice::<f32>().unwrap().as_ptr() as *const u8,
                _ => got.as_slice::<i8>().unwrap().as_ptr() as *const u8,
            };
            assert!(src.as_ptr_range().contains(&p), "slice should point into the source buffer");
            assert_eq!(&got, t);
            assert_eq!(got.data(), t.data(), "the Data view decodes the same values");
        }
    }

    #[test]
    fn unaligned_raw_data_is_copied_with_the_same_values() {
        let f = Tensor::from_vec(vec![3], vec![1.5f32, f32::MIN_POSITIVE, -3.0]).unwrap();
        let (src, got) = decode_at(&f, 4, false);
        assert!(!got.is_borrowed());
        assert!(!src.as_ptr_range().contains(&(got.as_slice::<f32>().unwrap().as_ptr() as *const u8)));
        assert_eq!(got, f);
    }

    #[test]
    fn mutating_a_borrowed_tensor_copies_and_leaves_the_source() {
        let t = Tensor::from_vec(vec![4], vec![1i8, 2, 3, 4]).unwrap();
        let (src, mut got) = decode_at(&t, 1, true);
        let before = src.to_vec();
        let alias = got.clone(); // a clone shares the buffer
        got.as_mut_slice::<i8>().unwrap()[0] = 99;
        assert!(!got.is_borrowed() && alias.is_borrowed());
        assert_eq!(got.as_slice::<i8>().unwrap(), &[99, 2, 3, 4]);
        assert_eq!(alias, t);
        assert_eq!(&src[..], &before[..], "the source buffer is never written");
        let mut reused = alias.clone();
        reused.reuse::<i8>(&[2]).copy_from_slice(&[5, 6]);
        assert_eq!(reused.as_slice::<i8>().unwrap(), &[5, 6]);
        assert_eq!(&src[..], &before[..]);
        // Copies out of a borrowed tensor read it in place.
        let mut dst = Tensor::placeholder();
        dst.assign(&alias);
        assert_eq!(dst, t);
        assert_eq!(alias.clone().into_data(), t.clone().into_data());
        assert_eq!(alias.to_i64_vec(), Some(vec![1, 2, 3, 4]));
    }

    #[test]
    fn int4_and_uint4_round_trip_packed_low_nibble_first() {
        // Odd count: the last byte's high nibble is padding.
        let i4 = Tensor::from_vec(vec![5], vec![-8i8, 7, -1, 0, 3]).unwrap();
        let p = encode_4bit(&i4, "w").unwrap();
        assert_eq!(p.data_type, INT4);
        assert_eq!(&p.raw_data[..], &[0x78u8, 0x0F, 0x03][..]);
        assert_eq!(decode(&p, None, "w").unwrap(), i4);
        let u4 = Tensor::from_vec(vec![3, 1], vec![15u8, 0, 9]).unwrap();
        let p = encode_4bit(&u4, "u").unwrap();
        assert_eq!((p.data_type, &p.raw_data[..]), (UINT4, &[0x0Fu8, 0x09][..]));
        assert_eq!(decode(&p, None, "u").unwrap(), u4);
        // Out of range values or other types have no 4-bit form.
        assert!(encode_4bit(&Tensor::from_vec(vec![1], vec![8i8]).unwrap(), "x").is_none());
        assert!(encode_4bit(&Tensor::from_vec(vec![1], vec![16u8]).unwrap(), "x").is_none());
        assert!(encode_4bit(&Tensor::scalar(1f32), "x").is_none());
        // onnx.helper stores one packed byte per int32_data entry.
        let typed = TensorProto { dims: vec![3], data_type: INT4, int32_data: vec![0x9F, 0x01], ..Default::default() };
        assert_eq!(decode(&typed, None, "t").unwrap().as_slice::<i8>().unwrap(), &[-1, -7, 1]);
        // Five values need three bytes: two is a one-line error naming the tensor.
        let short = TensorProto { dims: vec![5], data_type: INT4, raw_data: vec![0, 0].into(), ..Default::default() };
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
