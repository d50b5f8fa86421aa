//! Typed weight data: a zero-copy view into a mapped file when the bytes are
//! aligned and already the type the kernels want, an owned copy otherwise.

use super::file::Backing;
use half::f16;
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

    pub fn is_mapped(&self) -> bool {
        matches!(self, F32Data::Mapped { .. })
    }
}

impl From<Vec<f32>> for F32Data {
    fn from(v: Vec<f32>) -> Self {
        F32Data::Owned(Arc::new(v))
    }
}

/// f16 values, mapped or owned.
#[derive(Clone)]
pub enum F16Data {
    Mapped {
        backing: Arc<Backing>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<f16>>),
}

impl F16Data {
    pub fn mapped(backing: &Arc<Backing>, start: usize, len: usize) -> Option<F16Data> {
        let bytes = backing
            .bytes()
            .get(start..start.checked_add(len.checked_mul(2)?)?)?;
        (bytes.as_ptr() as usize)
            .is_multiple_of(std::mem::align_of::<f16>())
            .then(|| F16Data::Mapped {
                backing: backing.clone(),
                start,
                len,
            })
    }

    pub fn as_slice(&self) -> &[f16] {
        match self {
            F16Data::Mapped {
                backing,
                start,
                len,
            } => {
                let bytes = &backing.bytes()[*start..*start + *len * 2];
                // SAFETY: range and 2-byte alignment checked in `mapped`; the
                // backing is immutable; every bit pattern is a valid f16.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f16, *len) }
            }
            F16Data::Owned(v) => v,
        }
    }
}

impl From<Vec<f16>> for F16Data {
    fn from(v: Vec<f16>) -> Self {
        F16Data::Owned(Arc::new(v))
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
