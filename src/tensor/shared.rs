//! Typed slices that may borrow a shared byte buffer instead of owning a `Vec`.
//!
//! Initializers decoded from a memory-mapped ONNX file, and the packed quantized weights folded
//! from them, point into the map ([`bytes::Bytes`] keeps it alive): their pages stay clean,
//! shared file pages that the OS can drop and re-read, instead of private heap copies. Bytes are
//! viewed in place only when they are little-endian on a little-endian host and aligned for the
//! element type; anything else is copied once, as before.

use bytes::Bytes;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

/// Plain numeric element types that any little-endian bit pattern represents (no `bool`, whose
/// bytes must be 0 or 1, and no float8 wrappers): these may be viewed in place.
pub trait Plain: bytemuck::Pod {}
impl Plain for f32 {}
impl Plain for f64 {}
impl Plain for half::f16 {}
impl Plain for half::bf16 {}
impl Plain for i64 {}
impl Plain for i32 {}
impl Plain for i16 {}
impl Plain for i8 {}
impl Plain for u64 {}
impl Plain for u32 {}
impl Plain for u16 {}
impl Plain for u8 {}

/// `bytes` viewed as `[T]`, when that needs no copy: a little-endian host, a whole number of
/// elements and the start aligned for `T`.
pub fn view_le<T: Plain>(bytes: &[u8]) -> Option<&[T]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    bytemuck::try_cast_slice(bytes).ok()
}

/// A `[T]` held in a `Vec` or borrowed from shared little-endian bytes (checked viewable when
/// built). Derefs to `&[T]`; [`SharedSlice::to_mut`] copies a borrowed one first.
pub struct SharedSlice<T: Plain> {
    repr: Repr<T>,
}

enum Repr<T> {
    Owned(Vec<T>),
    Borrowed(Bytes, PhantomData<T>),
}

impl<T: Plain> SharedSlice<T> {
    /// Borrows `bytes` as `[T]`; `None` when they cannot be viewed in place (see [`view_le`]).
    pub fn borrow(bytes: Bytes) -> Option<Self> {
        view_le::<T>(&bytes)?;
        Some(SharedSlice { repr: Repr::Borrowed(bytes, PhantomData) })
    }

    /// Borrows `bytes` where possible, else decodes a copy of the little-endian values.
    pub fn borrow_or_copy(bytes: Bytes) -> Self {
        match view_le::<T>(&bytes) {
            Some(_) => SharedSlice { repr: Repr::Borrowed(bytes, PhantomData) },
            None => {
                let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
                let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
                dst.copy_from_slice(&bytes[..dst.len()]);
                if cfg!(target_endian = "big") {
                    let n = std::mem::size_of::<T>();
                    dst.chunks_exact_mut(n).for_each(|c| c.reverse());
                }
                SharedSlice::from(v)
            }
        }
    }

    /// Whether the values live in a shared buffer (e.g. the model file's map) rather than a Vec.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.repr, Repr::Borrowed(..))
    }

    /// The owned values, copying borrowed ones first (copy-on-write).
    pub fn to_mut(&mut self) -> &mut Vec<T> {
        if let Repr::Borrowed(b, _) = &self.repr {
            self.repr = Repr::Owned(view_le::<T>(b).expect("checked when built").to_vec());
        }
        match &mut self.repr {
            Repr::Owned(v) => v,
            Repr::Borrowed(..) => unreachable!("made owned above"),
        }
    }

    pub fn into_vec(self) -> Vec<T> {
        match self.repr {
            Repr::Owned(v) => v,
            Repr::Borrowed(b, _) => view_le::<T>(&b).expect("checked when built").to_vec(),
        }
    }
}

impl<T: Plain> Deref for SharedSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.repr {
            Repr::Owned(v) => v,
            Repr::Borrowed(b, _) => view_le(b).expect("checked when built"),
        }
    }
}

impl<T: Plain> From<Vec<T>> for SharedSlice<T> {
    fn from(v: Vec<T>) -> Self {
        SharedSlice { repr: Repr::Owned(v) }
    }
}

impl<T: Plain> Clone for SharedSlice<T> {
    /// Cheap for a borrowed slice (a reference count), a copy for an owned one.
    fn clone(&self) -> Self {
        let repr = match &self.repr {
            Repr::Owned(v) => Repr::Owned(v.clone()),
            Repr::Borrowed(b, _) => Repr::Borrowed(b.clone(), PhantomData),
        };
        SharedSlice { repr }
    }
}

impl<T: Plain + PartialEq> PartialEq for SharedSlice<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for SharedSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared buffer whose start is aligned to 8, so sub-slices at known offsets are (mis)aligned.
    fn aligned_bytes(n: usize) -> Bytes {
        struct Words(Vec<u64>);
        impl AsRef<[u8]> for Words {
            fn as_ref(&self) -> &[u8] {
                bytemuck::cast_slice(&self.0)
            }
        }
        let words = (1..=n.div_ceil(8) as u64).map(|i| i.wrapping_mul(0x0102_0304_0506_0708)).collect();
        Bytes::from_owner(Words(words)).slice(..n)
    }

    #[test]
    fn borrows_aligned_and_copies_unaligned() {
        let b = aligned_bytes(64);
        let range = b.as_ptr_range();
        let f = SharedSlice::<f32>::borrow(b.slice(4..20)).expect("4-aligned");
        assert!(f.is_borrowed() && range.contains(&(f.as_ptr() as *const u8)));
        assert_eq!(f.len(), 4);
        // Misaligned for f32: borrow refuses, borrow_or_copy decodes the same values.
        assert!(SharedSlice::<f32>::borrow(b.slice(1..17)).is_none());
        let c = SharedSlice::<f32>::borrow_or_copy(b.slice(1..17));
        assert!(!c.is_borrowed());
        let expect: Vec<f32> = b[1..17].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(&c[..], &expect[..]);
        // One-byte elements borrow at any offset.
        let i = SharedSlice::<i8>::borrow(b.slice(3..10)).expect("bytes are always aligned");
        assert_eq!(i.as_ptr() as *const u8, b[3..].as_ptr());
    }

    #[test]
    fn mutation_copies_and_leaves_the_source() {
        let b = aligned_bytes(16);
        let before = b.to_vec();
        let mut s = SharedSlice::<i8>::borrow(b.clone()).unwrap();
        s.to_mut()[0] = 42;
        assert!(!s.is_borrowed());
        assert_eq!(s[0], 42);
        assert_eq!(&b[..], &before[..]);
        assert_eq!(&s[1..], bytemuck::cast_slice::<u8, i8>(&before[1..]));
    }
}
