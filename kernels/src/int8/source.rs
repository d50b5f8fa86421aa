//! The float weights a matrix is quantized from, read a row at a time.
//!
//! A half-precision checkpoint converted to int8 at load (`--dtype int8` on
//! a bf16 T5-XXL) was widened to a whole f32 copy of each matrix first: 4
//! bytes a weight on fresh pages the kernel zeroes, 19 GB over the XXL
//! encoder, for a quantizer that reads one row at a time anyway. A
//! [`Source`] hands the quantizer each row, borrowed (f32) or widened into
//! the task's own row buffer (f16, bf16: exact, so the same values).

use half::{bf16, f16};

/// Row-major `n x k` float weights as a quantizer reads them.
pub trait Source: Sync {
    /// How many values there are (`n * k`).
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values `j * k .. (j + 1) * k`: borrowed, or widened into `buf`.
    fn row<'a>(&'a self, j: usize, k: usize, buf: &'a mut Vec<f32>) -> &'a [f32];
    /// Value `i` as f32 (for an error naming it).
    fn at(&self, i: usize) -> f32;
}

impl Source for [f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn row<'a>(&'a self, j: usize, k: usize, _: &'a mut Vec<f32>) -> &'a [f32] {
        &self[j * k..(j + 1) * k]
    }
    fn at(&self, i: usize) -> f32 {
        self[i]
    }
}

/// f16 and bf16 rows, widened into the caller's buffer (exact).
macro_rules! widened {
    ($($t:ty),*) => {$(
        impl Source for [$t] {
            fn len(&self) -> usize {
                <[$t]>::len(self)
            }
            fn row<'a>(&'a self, j: usize, k: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
                buf.clear();
                buf.extend(self[j * k..(j + 1) * k].iter().map(|v| v.to_f32()));
                buf
            }
            fn at(&self, i: usize) -> f32 {
                self[i].to_f32()
            }
        }
    )*};
}
widened!(f16, bf16);

/// Reads as the slice it holds: a `Vec` (so `&vec` works where a
/// `&[f32]` did), or a slice reference (sized, so it can be a `&dyn
/// Source`).
macro_rules! as_slice {
    ($($t:ty),*) => {$(
        impl<E: Sync> Source for $t
        where
            [E]: Source,
        {
            fn len(&self) -> usize {
                Source::len(&self[..])
            }
            fn row<'a>(&'a self, j: usize, k: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
                self[..].row(j, k, buf)
            }
            fn at(&self, i: usize) -> f32 {
                self[..].at(i)
            }
        }
    )*};
}
as_slice!(Vec<E>, &[E]);
