//! Host tensors: a concrete shape and a typed, contiguous, row-major buffer.
//!
//! Buffers are plain `Vec`s so the CPU engine can reuse their allocation from run to run
//! ([`Tensor::reuse_f32`]); ndarray views are available for ops that like them.

use super::dtype::DType;
use super::float8::{F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
use super::shape::numel;
use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

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
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

/// Element types a [`Tensor`] can be built from and viewed as.
pub trait Element: Copy + Default + Send + Sync + 'static {
    const DTYPE: DType;
    fn wrap(v: Vec<Self>) -> Data;
    fn slice(d: &Data) -> Option<&[Self]>;
    fn slice_mut(d: &mut Data) -> Option<&mut Vec<Self>>;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
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
element!(f32, F32);
element!(f16, F16);
element!(f64, F64);
element!(i64, I64);
element!(i32, I32);
element!(i8, I8);
element!(u8, U8);
element!(i16, I16);
element!(u16, U16);
element!(u32, U32);
element!(u64, U64);
element!(bf16, BF16);
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

impl Data {
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
        (numel(&shape) == data.len()).then_some(Tensor { shape, data })
    }

    pub fn from_vec<T: Element>(shape: Vec<usize>, v: Vec<T>) -> Option<Tensor> {
        Tensor::new(shape, T::wrap(v))
    }

    /// A scalar (rank 0) tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor { shape: vec![], data: T::wrap(vec![v]) }
    }

    pub fn from_array<T: Element>(a: ArrayD<T>) -> Tensor {
        let shape = a.shape().to_vec();
        let v = if a.is_standard_layout() { a.into_raw_vec_and_offset().0 } else { a.iter().copied().collect() };
        Tensor { shape, data: T::wrap(v) }
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
        Tensor { shape: shape.to_vec(), data }
    }

    /// An empty tensor (shape `[0]`) of a type.
    pub fn empty(dtype: DType) -> Tensor {
        Tensor { shape: vec![0], data: Data::empty(dtype) }
    }

    /// A placeholder that allocates nothing: engine slots before their first write and values
    /// moved out temporarily. Its shape and data are both empty; never read it as a value.
    pub fn placeholder() -> Tensor {
        Tensor { shape: Vec::new(), data: Data::F32(Vec::new()) }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    pub fn into_data(self) -> Data {
        self.data
    }

    /// Bytes held by the buffer.
    pub fn byte_size(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// Typed slice, `None` if the tensor holds another type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::slice(&self.data)
    }

    pub fn as_mut_slice<T: Element>(&mut self) -> Option<&mut [T]> {
        T::slice_mut(&mut self.data).map(|v| v.as_mut_slice())
    }

    /// ndarray view, `None` if the tensor holds another type.
    pub fn view<T: Element>(&self) -> Option<ArrayViewD<'_, T>> {
        let s = T::slice(&self.data)?;
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
        if T::slice_mut(&mut self.data).is_none() {
            self.data = T::wrap(Vec::new());
        }
        let v = T::slice_mut(&mut self.data).expect("just set");
        v.resize(n, T::default());
        self.shape.clear();
        self.shape.extend_from_slice(shape);
        v.as_mut_slice()
    }

    /// f32 specialisation of [`Tensor::reuse`], the common case.
    pub fn reuse_f32(&mut self, shape: &[usize]) -> &mut [f32] {
        self.reuse::<f32>(shape)
    }

    /// Copies another tensor's contents into this one, reusing this allocation where possible.
    pub fn assign(&mut self, src: &Tensor) {
        macro_rules! copy {
            ($t:ty, $s:expr) => {{
                let dst = self.reuse::<$t>(&src.shape);
                dst.copy_from_slice($s);
            }};
        }
        match &src.data {
            Data::F32(s) => copy!(f32, s),
            Data::F16(s) => copy!(f16, s),
            Data::F64(s) => copy!(f64, s),
            Data::I64(s) => copy!(i64, s),
            Data::I32(s) => copy!(i32, s),
            Data::I8(s) => copy!(i8, s),
            Data::U8(s) => copy!(u8, s),
            Data::I16(s) => copy!(i16, s),
            Data::U16(s) => copy!(u16, s),
            Data::U32(s) => copy!(u32, s),
            Data::U64(s) => copy!(u64, s),
            Data::BF16(s) => copy!(bf16, s),
            Data::F8E4M3FN(s) => copy!(F8E4M3FN, s),
            Data::F8E4M3FNUZ(s) => copy!(F8E4M3FNUZ, s),
            Data::F8E5M2(s) => copy!(F8E5M2, s),
            Data::F8E5M2FNUZ(s) => copy!(F8E5M2FNUZ, s),
            Data::Bool(s) => copy!(bool, s),
        }
    }

    /// Values of an integer tensor widened to i64 (shape arguments such as Reshape's `shape`).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match &self.data {
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
        match &self.data {
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
