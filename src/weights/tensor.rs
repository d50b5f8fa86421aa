//! Typed weight data: a zero-copy view into a mapped file when the bytes are
//! aligned and already the type the kernels want, an owned copy otherwise.

use super::file::Backing;
use half::f16;
use std::sync::Arc;

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
        (bytes.as_ptr() as usize % std::mem::align_of::<f32>() == 0).then(|| F32Data::Mapped {
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
        (bytes.as_ptr() as usize % std::mem::align_of::<f16>() == 0).then(|| F16Data::Mapped {
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
