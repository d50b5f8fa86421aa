//! Buffers whose first element sits on a 64-byte cache-line boundary.
//!
//! The packed int8 layout is read in 64-byte pieces: an AMX tile row, a
//! 512-bit load, a k-block run of 16 outputs. A `Vec<i8>` starts wherever
//! the allocator puts it (16 bytes past a line on glibc), so every such
//! piece spans two lines. On the Intel Xeon the AMX tile loop ran 2.5x
//! slower from L1 and L2 that way (`amx_tile_probe`, kernels/BENCH.md). The
//! weights, the quantised activations and the tile sums live here instead.

use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// The alignment every buffer here has.
pub const ALIGN: usize = 64;

/// A growable run of `len` plain values (`i8`, `i16`, `i32`, `f32`, ...)
/// starting on a 64-byte boundary.
///
/// The bytes are a `Vec<u8>` of up to 63 bytes more, used from its first
/// line boundary: allocated zeroed (`calloc`), so a large buffer's pages are
/// mapped only as they are first written, as a `vec![0; n]`'s are. A
/// `Vec` of 64-byte-aligned lines would be zeroed eagerly (the allocator
/// has no zeroed form above 16-byte alignment): every page at once, which
/// put the LM head's 4 MB screen in W1's peak memory beside the int8 head
/// it is built from.
pub struct AlignedBuf<T> {
    raw: Vec<u8>,
    /// Where the first line boundary of `raw` is.
    off: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> AlignedBuf<T> {
    /// An empty buffer (no allocation).
    pub const fn new() -> Self {
        AlignedBuf {
            raw: Vec::new(),
            off: 0,
            len: 0,
            _t: PhantomData,
        }
    }

    /// `len` zero values.
    pub fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        let raw = vec![0u8; bytes + ALIGN - 1];
        let off = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            raw,
            off,
            len,
            _t: PhantomData,
        }
    }

    /// A copy of `v`.
    pub fn from_slice(v: &[T]) -> Self {
        let mut b = Self::zeroed(v.len());
        b.copy_from_slice(v);
        b
    }

    /// Sets the length to `len`: values kept up to the shorter of the two
    /// lengths, new ones zero.
    pub fn resize_zeroed(&mut self, len: usize) {
        if len <= self.len {
            // Keep the bytes past `len` zero, for a later growth in place.
            self.as_mut_slice()[len..].fill(T::zeroed());
            self.len = len;
            return;
        }
        let size = std::mem::size_of::<T>();
        if self.off + len * size <= self.raw.len() {
            self.len = len;
            return;
        }
        let mut grown = Self::zeroed(len);
        grown[..self.len].copy_from_slice(self.as_slice());
        *self = grown;
    }

    /// The `len` values.
    pub fn as_slice(&self) -> &[T] {
        if self.len == 0 {
            // An unallocated buffer's pointer is on no boundary.
            return &[];
        }
        let bytes = &self.raw[self.off..self.off + self.len * std::mem::size_of::<T>()];
        // Never panics: `off` puts the bytes on a line boundary, enough
        // for any plain type.
        bytemuck::cast_slice(bytes)
    }

    /// The `len` values, writable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        if self.len == 0 {
            return &mut [];
        }
        let end = self.off + self.len * std::mem::size_of::<T>();
        bytemuck::cast_slice_mut(&mut self.raw[self.off..end])
    }
}

impl<T: Pod> Default for AlignedBuf<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Pod> Deref for AlignedBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> DerefMut for AlignedBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T: Pod> Clone for AlignedBuf<T> {
    fn clone(&self) -> Self {
        Self::from_slice(self.as_slice())
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for AlignedBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl<T: Pod + PartialEq> PartialEq for AlignedBuf<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// Whether `p` sits on a 64-byte boundary.
pub fn is_aligned<T>(p: *const T) -> bool {
    (p as usize).is_multiple_of(ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_line_and_keeps_values_across_resizes() {
        let mut b = AlignedBuf::<i8>::from_slice(&[1, -2, 3]);
        assert!(is_aligned(b.as_ptr()));
        assert_eq!(&b[..], &[1, -2, 3]);
        b.resize_zeroed(200);
        assert!(is_aligned(b.as_ptr()));
        assert_eq!(&b[..3], &[1, -2, 3]);
        assert!(b[3..].iter().all(|&v| v == 0));
        b[150] = 7;
        b.resize_zeroed(100);
        b.resize_zeroed(200);
        // Shrinking zeroes what it drops, so growing back finds zeros.
        assert!(b[100..].iter().all(|&v| v == 0));
        let f = AlignedBuf::<f32>::zeroed(17);
        assert!(is_aligned(f.as_ptr()) && f.len() == 17);
        assert_eq!(AlignedBuf::<i16>::new().len(), 0);
        assert_eq!(b.clone(), b);
    }

    /// Packed weights start on a line whatever their size (a `Vec<i8>` of
    /// the allocator's would start 16 bytes past one on glibc).
    #[test]
    fn packed_int8_weights_start_on_a_line() {
        use crate::int8::PackedInt8;
        for (n, k) in [(16, 64), (48, 64), (17, 100), (64, 256), (5, 8)] {
            let w: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 - 6.0).collect();
            let p = PackedInt8::quantize(&w, n, k, 0).unwrap();
            assert!(is_aligned(p.view().data().as_ptr()), "{n}x{k}");
        }
    }
}
