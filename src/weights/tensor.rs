//! Typed weight data: a zero-copy view into a mapped file when the bytes are
//! aligned and already the type the kernels want, an owned copy otherwise.

use super::file::Backing;
use half::{bf16, f16};
use std::sync::Arc;
use t5edge_kernels::int8::Int8View;

/// f32 values, mapped or owned.
#[derive(Clone)]
pub enum F32Data {
    Mapped {
        backing: Arc<Backing>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<f32>>),
}

impl F32Data {
    /// A zero-copy view if `bytes[start..]` is 4-byte aligned; `None` otherwise.
    pub fn mapped(backing: &Arc<Backing>, start: usize, len: usize) -> Option<F32Data> {
        let bytes = backing
            .bytes()
            .get(start..start.checked_add(len.checked_mul(4)?)?)?;
        (bytes.as_ptr() as usize)
            .is_multiple_of(std::mem::align_of::<f32>())
            .then(|| F32Data::Mapped {
                backing: backing.clone(),
                start,
                len,
            })
    }

    pub fn as_slice(&self) -> &[f32] {
        match self {
            F32Data::Mapped {
                backing,
                start,
                len,
            } => {
                let bytes = &backing.bytes()[*start..*start + *len * 4];
                // SAFETY: `mapped` checked the range and 4-byte alignment of this
                // exact slice at construction, and the backing is immutable; every
                // bit pattern is a valid f32.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, *len) }
            }
            F32Data::Owned(v) => v,
        }
    }

    /// Whether this is a view of a file's bytes (not of a gathered copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self, F32Data::Mapped { backing, .. } if backing.is_file())
    }
}

impl From<Vec<f32>> for F32Data {
    fn from(v: Vec<f32>) -> Self {
        F32Data::Owned(Arc::new(v))
    }
}

/// A 16-bit float type the kernels read in place: IEEE half or bfloat16.
/// Both are `#[repr(transparent)]` over `u16` and every bit pattern is a
/// value, which is what lets a mapped byte range be viewed as a slice of them
/// (sealed: no other type may claim that).
pub trait Half16: sealed::Sealed + Copy + Send + Sync + 'static {
    fn from_le_bytes(b: [u8; 2]) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

impl Half16 for f16 {
    fn from_le_bytes(b: [u8; 2]) -> Self {
        f16::from_le_bytes(b)
    }
}

impl Half16 for bf16 {
    fn from_le_bytes(b: [u8; 2]) -> Self {
        bf16::from_le_bytes(b)
    }
}

/// 16-bit float values (f16 or bf16), mapped or owned.
#[derive(Clone)]
pub enum HalfData<T: Half16> {
    Mapped {
        backing: Arc<Backing>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<T>>),
}

/// IEEE half-precision weights.
pub type F16Data = HalfData<f16>;
/// bfloat16 weights.
pub type Bf16Data = HalfData<bf16>;

impl<T: Half16> HalfData<T> {
    /// A zero-copy view if `bytes[start..]` is 2-byte aligned; `None` otherwise.
    pub fn mapped(backing: &Arc<Backing>, start: usize, len: usize) -> Option<HalfData<T>> {
        let bytes = backing
            .bytes()
            .get(start..start.checked_add(len.checked_mul(2)?)?)?;
        (bytes.as_ptr() as usize)
            .is_multiple_of(std::mem::align_of::<T>())
            .then(|| HalfData::Mapped {
                backing: backing.clone(),
                start,
                len,
            })
    }

    /// The view of [`HalfData::mapped`], or a copy of the little-endian bytes
    /// when they are misaligned in the file (safetensors aligns nothing: a
    /// writer that puts an odd-sized tensor first shifts every later one).
    pub fn mapped_or_copied(backing: &Arc<Backing>, start: usize, bytes: &[u8]) -> HalfData<T> {
        Self::mapped(backing, start, bytes.len() / 2).unwrap_or_else(|| {
            HalfData::Owned(Arc::new(
                bytes
                    .chunks_exact(2)
                    .map(|c| T::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ))
        })
    }

    pub fn as_slice(&self) -> &[T] {
        match self {
            HalfData::Mapped {
                backing,
                start,
                len,
            } => {
                let bytes = &backing.bytes()[*start..*start + *len * 2];
                // SAFETY: range and 2-byte alignment checked in `mapped`; the
                // backing is immutable; `T` is f16 or bf16 (`Half16`), a
                // transparent u16 for which every bit pattern is a value.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, *len) }
            }
            HalfData::Owned(v) => v,
        }
    }

    /// Whether this is a view of a file's bytes (not of a gathered copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self, HalfData::Mapped { backing, .. } if backing.is_file())
    }
}

impl<T: Half16> From<Vec<T>> for HalfData<T> {
    fn from(v: Vec<T>) -> Self {
        HalfData::Owned(Arc::new(v))
    }
}

/// A packed int8 matrix: quantized at load (owned) or mapped from a file that
/// `t5edge quantize` wrote in the kernels' layout.
#[derive(Clone)]
pub enum Int8Data {
    Owned(Arc<t5edge_kernels::int8::PackedInt8>),
    Mapped(Arc<MappedInt8>),
}

/// The byte ranges of a mapped int8 matrix's parts, validated once at load.
pub struct MappedInt8 {
    pub backing: Arc<Backing>,
    pub n: usize,
    pub k: usize,
    pub group_size: usize,
    pub data: std::ops::Range<usize>,
    pub scales: std::ops::Range<usize>,
    pub row_sums: std::ops::Range<usize>,
    pub err_norms: std::ops::Range<usize>,
}

/// Data, scales, row sums and error norms of an int8 matrix, as bytes.
type Int8Bytes<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);

impl MappedInt8 {
    fn bytes(&self) -> Option<Int8Bytes<'_>> {
        let b = self.backing.bytes();
        Some((
            b.get(self.data.clone())?,
            b.get(self.scales.clone())?,
            b.get(self.row_sums.clone())?,
            b.get(self.err_norms.clone())?,
        ))
    }

    /// Has the kernels validate the parts fully (every byte scanned: -128
    /// values, padding, row sums against the data) and returns the matrix.
    pub fn validate(self) -> Result<MappedInt8, String> {
        let (d, s, r, e) = self
            .bytes()
            .ok_or("int8 parts are out of range or misaligned")?;
        Int8View::from_bytes(self.n, self.k, self.group_size, d, s, r, e)?;
        Ok(self)
    }
}

/// W8A16 weights (`kernels::int8::Activations::Int16`): the int8 matrix of
/// `w` with each column divided by its input scale, and those scales
/// (`PackedInt8::quantize_a16`); the product multiplies the activations by
/// them instead.
#[derive(Clone)]
pub struct W8A16Data {
    pub w: Int8Data,
    /// `[k]` powers of two.
    pub in_scales: F32Data,
}

impl W8A16Data {
    /// Row `j` of the original weights as the product sees them: the int8
    /// row dequantized, times the input scales.
    pub fn dequantize_row_into(&self, j: usize, out: &mut [f32]) {
        self.w.view().dequantize_row_into(j, out);
        for (o, &t) in out.iter_mut().zip(self.in_scales.as_slice()) {
            *o *= t;
        }
    }
}

impl Int8Data {
    pub fn view(&self) -> Int8View<'_> {
        match self {
            Int8Data::Owned(p) => p.view(),
            Int8Data::Mapped(m) => {
                // `validate` ran at construction on these same immutable bytes.
                let (d, s, r, e) = m.bytes().expect("int8 parts validated at load");
                Int8View::from_validated_bytes(m.n, m.k, m.group_size, d, s, r, e)
                    .expect("int8 parts validated at load")
            }
        }
    }
}
