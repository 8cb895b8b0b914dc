//! Host tensors: a concrete shape and a typed, contiguous, row-major buffer.
//!
//! Buffers are plain `Vec`s so the CPU engine can reuse their allocation from run to run
//! ([`Tensor::reuse_f32`]); ndarray views are available for ops that like them. Constants
//! decoded from a memory-mapped model may instead borrow the map ([`Tensor::from_le_bytes`]):
//! typed slices read it in place, the first mutable access copies (copy-on-write).

use super::dtype::DType;
use super::float8::{F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
use super::shape::numel;
use super::shared::{view_le, Plain, SharedSlice};
use bytes::Bytes;
use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::sync::OnceLock;

/// Typed storage of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    BF16(Vec<bf16>),
    F8E4M3FN(Vec<F8E4M3FN>),
    F8E4M3FNUZ(Vec<F8E4M3FNUZ>),
    F8E5M2(Vec<F8E5M2>),
    F8E5M2FNUZ(Vec<F8E5M2FNUZ>),
    Bool(Vec<bool>),
}

/// A host tensor.
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Storage,
    written: Written,
}

/// How many elements at the start of the owned buffer's allocation hold values written earlier
/// (its length or more, never past its capacity). [`Tensor::reuse`] grows the buffer up to this
/// without writing it again: the CPU plan's arena hands one buffer to values of different sizes
/// in turn, and zero-filling the regrown part took 5% of MobileNetV3's run time. A new or cloned
/// buffer starts from 0 (its spare capacity was never written).
#[derive(Debug, Default)]
struct Written(usize);

impl Clone for Written {
    fn clone(&self) -> Written {
        Written(0)
    }
}

#[derive(Clone, Debug)]
enum Storage {
    Owned(Data),
    /// Little-endian `dtype` values in a shared buffer (e.g. the model file's map), viewable in
    /// place (checked when built: a [`Plain`] type, aligned). `decoded` caches the Vec copy made
    /// for callers that ask for [`Data`] ([`Tensor::data`]); typed slices never need it.
    Borrowed {
        dtype: DType,
        bytes: Bytes,
        decoded: OnceLock<Data>,
    },
}

/// Element types a [`Tensor`] can be built from and viewed as.
pub trait Element: Copy + Default + Send + Sync + 'static {
    const DTYPE: DType;
    fn wrap(v: Vec<Self>) -> Data;
    fn slice(d: &Data) -> Option<&[Self]>;
    fn slice_mut(d: &mut Data) -> Option<&mut Vec<Self>>;
    /// Little-endian bytes viewed in place as `[Self]`; `None` where that needs a copy.
    fn view_bytes(_b: &[u8]) -> Option<&[Self]> {
        None
    }
}

macro_rules! element {
    ($t:ty, $variant:ident, plain) => {
        element!($t, $variant, fn view_bytes(b: &[u8]) -> Option<&[Self]> {
            view_le(b)
        });
    };
    ($t:ty, $variant:ident $(, $view:item)?) => {
        impl Element for $t {
            $($view)?
            const DTYPE: DType = DType::$variant;
            fn wrap(v: Vec<Self>) -> Data {
                Data::$variant(v)
            }
            fn slice(d: &Data) -> Option<&[Self]> {
                match d {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(d: &mut Data) -> Option<&mut Vec<Self>> {
                match d {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
element!(f32, F32, plain);
element!(f16, F16, plain);
element!(f64, F64, plain);
element!(i64, I64, plain);
element!(i32, I32, plain);
element!(i8, I8, plain);
element!(u8, U8, plain);
element!(i16, I16, plain);
element!(u16, U16, plain);
element!(u32, U32, plain);
element!(u64, U64, plain);
element!(bf16, BF16, plain);
element!(F8E4M3FN, F8E4M3FN);
element!(F8E4M3FNUZ, F8E4M3FNUZ);
element!(F8E5M2, F8E5M2);
element!(F8E5M2FNUZ, F8E5M2FNUZ);
element!(bool, Bool);

/// Applies `$body` with `$v` bound to the typed Vec of whatever variant `$data` is.
#[macro_export]
macro_rules! dispatch_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::Data::F32($v) => $body,
            $crate::tensor::Data::F16($v) => $body,
            $crate::tensor::Data::F64($v) => $body,
            $crate::tensor::Data::I64($v) => $body,
            $crate::tensor::Data::I32($v) => $body,
            $crate::tensor::Data::I8($v) => $body,
            $crate::tensor::Data::U8($v) => $body,
            $crate::tensor::Data::I16($v) => $body,
            $crate::tensor::Data::U16($v) => $body,
            $crate::tensor::Data::U32($v) => $body,
            $crate::tensor::Data::U64($v) => $body,
            $crate::tensor::Data::BF16($v) => $body,
            $crate::tensor::Data::F8E4M3FN($v) => $body,
            $crate::tensor::Data::F8E4M3FNUZ($v) => $body,
            $crate::tensor::Data::F8E5M2($v) => $body,
            $crate::tensor::Data::F8E5M2FNUZ($v) => $body,
            $crate::tensor::Data::Bool($v) => $body,
        }
    };
}

/// Applies `$body` with the type alias `$t` bound to the element type of `$dtype`.
macro_rules! with_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F16 => {
                type $t = f16;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
            DType::I64 => {
                type $t = i64;
                $body
            }
            DType::I32 => {
                type $t = i32;
                $body
            }
            DType::I8 => {
                type $t = i8;
                $body
            }
            DType::U8 => {
                type $t = u8;
                $body
            }
            DType::I16 => {
                type $t = i16;
                $body
            }
            DType::U16 => {
                type $t = u16;
                $body
            }
            DType::U32 => {
                type $t = u32;
                $body
            }
            DType::U64 => {
                type $t = u64;
                $body
            }
            DType::BF16 => {
                type $t = bf16;
                $body
            }
            DType::F8E4M3FN => {
                type $t = F8E4M3FN;
                $body
            }
            DType::F8E4M3FNUZ => {
                type $t = F8E4M3FNUZ;
                $body
            }
            DType::F8E5M2 => {
                type $t = F8E5M2;
                $body
            }
            DType::F8E5M2FNUZ => {
                type $t = F8E5M2FNUZ;
                $body
            }
            DType::Bool => {
                type $t = bool;
                $body
            }
        }
    };
}

impl Data {
    /// Decodes little-endian bytes (ONNX raw data) into a typed Vec; `b.len()` must be a
    /// multiple of the element size.
    pub fn from_le_bytes(dtype: DType, b: &[u8]) -> Data {
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

    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::F64(_) => DType::F64,
            Data::I64(_) => DType::I64,
            Data::I32(_) => DType::I32,
            Data::I8(_) => DType::I8,
            Data::U8(_) => DType::U8,
            Data::I16(_) => DType::I16,
            Data::U16(_) => DType::U16,
            Data::U32(_) => DType::U32,
            Data::U64(_) => DType::U64,
            Data::BF16(_) => DType::BF16,
            Data::F8E4M3FN(_) => DType::F8E4M3FN,
            Data::F8E4M3FNUZ(_) => DType::F8E4M3FNUZ,
            Data::F8E5M2(_) => DType::F8E5M2,
            Data::F8E5M2FNUZ(_) => DType::F8E5M2FNUZ,
            Data::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        dispatch_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty buffer of the given type.
    pub fn empty(dtype: DType) -> Data {
        match dtype {
            DType::F32 => Data::F32(Vec::new()),
            DType::F16 => Data::F16(Vec::new()),
            DType::F64 => Data::F64(Vec::new()),
            DType::I64 => Data::I64(Vec::new()),
            DType::I32 => Data::I32(Vec::new()),
            DType::I8 => Data::I8(Vec::new()),
            DType::U8 => Data::U8(Vec::new()),
            DType::I16 => Data::I16(Vec::new()),
            DType::U16 => Data::U16(Vec::new()),
            DType::U32 => Data::U32(Vec::new()),
            DType::U64 => Data::U64(Vec::new()),
            DType::BF16 => Data::BF16(Vec::new()),
            DType::F8E4M3FN => Data::F8E4M3FN(Vec::new()),
            DType::F8E4M3FNUZ => Data::F8E4M3FNUZ(Vec::new()),
            DType::F8E5M2 => Data::F8E5M2(Vec::new()),
            DType::F8E5M2FNUZ => Data::F8E5M2FNUZ(Vec::new()),
            DType::Bool => Data::Bool(Vec::new()),
        }
    }
}

impl Tensor {
    /// Builds a tensor; `None` when the buffer length does not match the shape.
    pub fn new(shape: Vec<usize>, data: Data) -> Option<Tensor> {
        (numel(&shape) == data.len()).then_some(Tensor { shape, data: Storage::Owned(data), written: Written(0) })
    }

    pub fn from_vec<T: Element>(shape: Vec<usize>, v: Vec<T>) -> Option<Tensor> {
        Tensor::new(shape, T::wrap(v))
    }

    /// A scalar (rank 0) tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor { shape: vec![], data: Storage::Owned(T::wrap(vec![v])), written: Written(0) }
    }

    pub fn from_array<T: Element>(a: ArrayD<T>) -> Tensor {
        let shape = a.shape().to_vec();
        let v = if a.is_standard_layout() { a.into_raw_vec_and_offset().0 } else { a.iter().copied().collect() };
        Tensor { shape, data: Storage::Owned(T::wrap(v)), written: Written(0) }
    }

    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let n = numel(shape);
        let data = match dtype {
            DType::F32 => Data::F32(vec![0.0; n]),
            DType::F16 => Data::F16(vec![f16::ZERO; n]),
            DType::F64 => Data::F64(vec![0.0; n]),
            DType::I64 => Data::I64(vec![0; n]),
            DType::I32 => Data::I32(vec![0; n]),
            DType::I8 => Data::I8(vec![0; n]),
            DType::U8 => Data::U8(vec![0; n]),
            DType::I16 => Data::I16(vec![0; n]),
            DType::U16 => Data::U16(vec![0; n]),
            DType::U32 => Data::U32(vec![0; n]),
            DType::U64 => Data::U64(vec![0; n]),
            DType::BF16 => Data::BF16(vec![bf16::ZERO; n]),
            DType::F8E4M3FN => Data::F8E4M3FN(vec![F8E4M3FN(0); n]),
            DType::F8E4M3FNUZ => Data::F8E4M3FNUZ(vec![F8E4M3FNUZ(0); n]),
            DType::F8E5M2 => Data::F8E5M2(vec![F8E5M2(0); n]),
            DType::F8E5M2FNUZ => Data::F8E5M2FNUZ(vec![F8E5M2FNUZ(0); n]),
            DType::Bool => Data::Bool(vec![false; n]),
        };
        Tensor { shape: shape.to_vec(), data: Storage::Owned(data), written: Written(0) }
    }

    /// An empty tensor (shape `[0]`) of a type.
    pub fn empty(dtype: DType) -> Tensor {
        Tensor { shape: vec![0], data: Storage::Owned(Data::empty(dtype)), written: Written(0) }
    }

    /// A placeholder that allocates nothing: engine slots before their first write and values
    /// moved out temporarily. Its shape and data are both empty; never read it as a value.
    pub fn placeholder() -> Tensor {
        Tensor { shape: Vec::new(), data: Storage::Owned(Data::F32(Vec::new())), written: Written(0) }
    }

    /// A tensor of little-endian `dtype` values (ONNX raw data) that borrows `bytes` when they
    /// can be read in place (little-endian host, plain numeric type, start aligned for it) and
    /// decodes a copy otherwise. `None` when the length does not match the shape.
    pub fn from_le_bytes(shape: Vec<usize>, dtype: DType, bytes: Bytes) -> Option<Tensor> {
        if numel(&shape).checked_mul(dtype.size()) != Some(bytes.len()) {
            return None;
        }
        let viewable = with_dtype!(dtype, T => T::view_bytes(&bytes).is_some());
        let data = if viewable {
            Storage::Borrowed { dtype, bytes, decoded: OnceLock::new() }
        } else {
            Storage::Owned(Data::from_le_bytes(dtype, &bytes))
        };
        Some(Tensor { shape, data, written: Written(0) })
    }

    /// Whether the values are borrowed from a shared buffer (the model file's map) rather than
    /// owned. Mutable access turns a borrowed tensor into an owned copy.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.data, Storage::Borrowed { .. })
    }

    /// The values as a [`SharedSlice`]: borrowing the same buffer when this tensor borrows one
    /// (no copy), else a copy. `None` if the tensor holds another type.
    pub fn to_shared<T: Element + Plain>(&self) -> Option<SharedSlice<T>> {
        match &self.data {
            Storage::Borrowed { dtype, bytes, .. } if *dtype == T::DTYPE => SharedSlice::borrow(bytes.clone()),
            _ => Some(SharedSlice::from(self.as_slice::<T>()?.to_vec())),
        }
    }

    /// The owned buffer, copying borrowed values first.
    fn owned_mut(&mut self) -> &mut Data {
        if let Storage::Borrowed { dtype, bytes, decoded } = &mut self.data {
            let d = decoded.take().unwrap_or_else(|| Data::from_le_bytes(*dtype, bytes));
            self.data = Storage::Owned(d);
            self.written = Written(0);
        }
        match &mut self.data {
            Storage::Owned(d) => d,
            Storage::Borrowed { .. } => unreachable!("made owned above"),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Storage::Owned(d) => d.len(),
            Storage::Borrowed { dtype, bytes, .. } => bytes.len() / dtype.size(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match &self.data {
            Storage::Owned(d) => d.dtype(),
            Storage::Borrowed { dtype, .. } => *dtype,
        }
    }

    /// The typed buffer. A borrowed tensor decodes (and caches) a copy here: prefer
    /// [`Tensor::as_slice`], which reads borrowed values in place.
    pub fn data(&self) -> &Data {
        match &self.data {
            Storage::Owned(d) => d,
            Storage::Borrowed { dtype, bytes, decoded } => decoded.get_or_init(|| Data::from_le_bytes(*dtype, bytes)),
        }
    }

    pub fn into_data(mut self) -> Data {
        std::mem::replace(self.owned_mut(), Data::F32(Vec::new()))
    }

    /// Bytes held by the buffer.
    pub fn byte_size(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// Typed slice, `None` if the tensor holds another type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        match &self.data {
            Storage::Owned(d) => T::slice(d),
            Storage::Borrowed { dtype, bytes, .. } if *dtype == T::DTYPE => T::view_bytes(bytes),
            Storage::Borrowed { .. } => None,
        }
    }

    /// Mutable typed slice; a borrowed tensor is copied first (the shared buffer is never written).
    pub fn as_mut_slice<T: Element>(&mut self) -> Option<&mut [T]> {
        if self.dtype() != T::DTYPE {
            return None;
        }
        T::slice_mut(self.owned_mut()).map(|v| v.as_mut_slice())
    }

    /// ndarray view, `None` if the tensor holds another type.
    pub fn view<T: Element>(&self) -> Option<ArrayViewD<'_, T>> {
        let s = self.as_slice::<T>()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), s).ok()
    }

    pub fn to_array<T: Element>(&self) -> Option<ArrayD<T>> {
        self.view::<T>().map(|v| v.to_owned())
    }

    /// Changes the shape without touching data; `false` if the element count differs.
    pub fn set_shape(&mut self, shape: &[usize]) -> bool {
        if numel(shape) != self.len() {
            return false;
        }
        self.shape.clear();
        self.shape.extend_from_slice(shape);
        true
    }

    /// Turns this tensor into a `T` buffer of `shape`, reusing the allocation when the type
    /// matches, and returns it for writing. Contents are unspecified (stale or zero).
    pub fn reuse<T: Element>(&mut self, shape: &[usize]) -> &mut [T] {
        let n = numel(shape);
        if self.is_borrowed() || self.dtype() != T::DTYPE {
            self.data = Storage::Owned(T::wrap(Vec::new())); // contents are not kept: no copy
            self.written = Written(0);
        }
        self.shape.clear();
        self.shape.extend_from_slice(shape);
        let Storage::Owned(data) = &mut self.data else { unreachable!("made owned above") };
        let v = T::slice_mut(data).expect("just set");
        let written = self.written.0.max(v.len());
        if n <= written {
            // SAFETY: `written <= capacity`, and elements below it were written earlier in this
            // same allocation (`written` resets whenever the buffer is replaced, and `resize`
            // below records a reallocation); `T: Copy` has no drop that ended them at truncation.
            unsafe { v.set_len(n) };
            self.written = Written(written);
        } else {
            let before = v.as_ptr();
            v.resize(n, T::default());
            self.written = Written(if v.as_ptr() == before { written.max(n) } else { n });
        }
        v.as_mut_slice()
    }

    /// f32 specialisation of [`Tensor::reuse`], the common case.
    pub fn reuse_f32(&mut self, shape: &[usize]) -> &mut [f32] {
        self.reuse::<f32>(shape)
    }

    /// Copies another tensor's contents into this one, reusing this allocation where possible.
    pub fn assign(&mut self, src: &Tensor) {
        with_dtype!(src.dtype(), T => {
            let s = src.as_slice::<T>().expect("a tensor's own dtype");
            self.reuse::<T>(&src.shape).copy_from_slice(s);
        })
    }

    /// Values of an integer tensor widened to i64 (shape arguments such as Reshape's `shape`).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match self.data() {
            Data::I64(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I16(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U16(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U64(v) => v.iter().map(|&x| i64::try_from(x).ok()).collect::<Option<_>>()?,
            Data::F32(_)
            | Data::F16(_)
            | Data::F64(_)
            | Data::BF16(_)
            | Data::F8E4M3FN(_)
            | Data::F8E4M3FNUZ(_)
            | Data::F8E5M2(_)
            | Data::F8E5M2FNUZ(_)
            | Data::Bool(_) => return None,
        })
    }

    /// Values widened to f64, for any dtype (comparisons, scalar attributes given as tensors).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self.data() {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            Data::F64(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I8(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I16(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U16(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::BF16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            Data::F8E4M3FN(v) => v.iter().map(|&x| x.to_f64()).collect(),
            Data::F8E4M3FNUZ(v) => v.iter().map(|&x| x.to_f64()).collect(),
            Data::F8E5M2(v) => v.iter().map(|&x| x.to_f64()).collect(),
            Data::F8E5M2FNUZ(v) => v.iter().map(|&x| x.to_f64()).collect(),
            Data::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }
}

impl PartialEq for Tensor {
    /// Same shape, dtype and values (compared in place: borrowed tensors are not decoded).
    fn eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape
            && self.dtype() == other.dtype()
            && with_dtype!(self.dtype(), T => self.as_slice::<T>() == other.as_slice::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer shrunk and regrown within what it held before keeps its allocation and is not
    /// written again (the stale values show); a clone, or growth past that, starts from zeros.
    #[test]
    fn reuse_regrows_without_rewriting() {
        let mut t = Tensor::placeholder();
        t.reuse_f32(&[2, 4]).iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 + 1.0);
        let ptr = t.as_slice::<f32>().unwrap().as_ptr();
        assert_eq!(t.reuse_f32(&[3]), &[1.0, 2.0, 3.0]);
        let cloned = t.clone();
        assert_eq!(t.reuse_f32(&[8]), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(t.as_slice::<f32>().unwrap().as_ptr(), ptr);
        assert_eq!(t.shape(), &[8]);
        let mut c = cloned;
        assert_eq!(c.reuse_f32(&[5]), &[1.0, 2.0, 3.0, 0.0, 0.0]);
        assert_eq!(t.reuse_f32(&[1, 10])[8..], [0.0, 0.0]);
        // Another dtype replaces the buffer.
        assert_eq!(t.reuse::<i64>(&[4]), &[0, 0, 0, 0]);
    }
}
