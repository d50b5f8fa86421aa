//! Buffers whose first element sits on a 64-byte cache-line boundary.
//!
//! The packed int8 layout is read in 64-byte pieces: an AMX tile row, a
//! 512-bit load, a k-block run of 16 outputs. A `Vec<i8>` starts wherever
//! the allocator puts it (16 bytes past a line on glibc), so every such
//! piece spans two lines. On the Intel Xeon the AMX tile loop ran 2.5x
//! slower from L1 and L2 that way (`amx_tile_probe`, kernels/BENCH.md). The
//! weights, the quantised activations and the tile sums live here instead.
//!
//! A buffer that fills most of a 2 MB huge page or more ([`TAIL_FILL`]) is
//! its own anonymous map instead, started on a 2 MB boundary and advised
//! for transparent huge pages ([`HUGE_PAGE`]). A decode step streams the LM
//! head's screen (4 MB) and the decoder's weights through the TLB every
//! step; on 4 KB pages that is a thousand page walks a step, and on the
//! Intel Xeon W1 ran 5-11% slower than with huge pages (kernels/BENCH.md).
//! A page only partly filled is advised only when nearly full, so the
//! tail costs little memory a 4 KB page would not.

use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// The alignment every buffer here has.
pub const ALIGN: usize = 64;

/// A growable run of `len` plain values (`i8`, `i16`, `i32`, `f32`, ...)
/// starting on a 64-byte boundary.
///
/// The bytes are a `Vec<u8>` of up to 63 bytes more, used from its first
/// line boundary (from most of a [`HUGE_PAGE`] up on Linux, a map, see the
/// module docs): allocated zeroed (`calloc`), so a large buffer's pages are
/// mapped only as they are first written, as a `vec![0; n]`'s are. A
/// `Vec` of 64-byte-aligned lines would be zeroed eagerly (the allocator
/// has no zeroed form above 16-byte alignment): every page at once, which
/// put the LM head's 4 MB screen in W1's peak memory beside the int8 head
/// it is built from.
pub struct AlignedBuf<T> {
    raw: Raw,
    /// Where the first line boundary of `raw` is (the first huge page
    /// boundary for a map).
    off: usize,
    len: usize,
    _t: PhantomData<T>,
}

/// The size of a transparent huge page on the machines we run on (x86-64
/// and aarch64 with 4 KB base pages): buffers that fill [`TAIL_FILL`] of
/// one or more are maps that can use them.
pub const HUGE_PAGE: usize = 2 << 20;

/// How much of its last huge page a buffer must fill for that page to be
/// advised: a whole page is resident once touched, so at most an eighth of
/// one (256 KB) is memory a 4 KB page would not have taken. The LM head's
/// screen of a 32k vocabulary is 3.92 MB: two huge pages, the second 96%
/// filled.
pub const TAIL_FILL: f64 = 0.875;

/// The bytes behind an [`AlignedBuf`]: an allocator's zeroed `Vec`, or (on
/// Linux, for buffers that fill at least one huge page to [`TAIL_FILL`]) an
/// anonymous map, zero until written.
enum Raw {
    Heap(Vec<u8>),
    #[cfg(target_os = "linux")]
    Map(memmap2::MmapMut),
}

impl Raw {
    /// At least `bytes` zero bytes and the offset of the first line
    /// boundary in them (a huge page boundary for a map, its huge pages
    /// advised when `advise`).
    fn zeroed(bytes: usize, advise: bool) -> (Raw, usize) {
        #[cfg(target_os = "linux")]
        if bytes as f64 >= TAIL_FILL * HUGE_PAGE as f64 {
            if let Some(r) = Raw::huge(bytes, advise) {
                return r;
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = advise;
        let raw = vec![0u8; bytes + ALIGN - 1];
        let off = raw.as_ptr().align_offset(ALIGN);
        (Raw::Heap(raw), off)
    }

    /// A map of `bytes` from a huge page boundary, its huge pages advised
    /// when `advise` ([`huge_span`]); `None` if the system refuses the map
    /// (the heap serves). A refused advice (THP off) leaves 4 KB pages,
    /// which work the same.
    #[cfg(target_os = "linux")]
    fn huge(bytes: usize, advise: bool) -> Option<(Raw, usize)> {
        // Room to start on a boundary and still hold every page advised.
        let map = memmap2::MmapMut::map_anon(bytes.div_ceil(HUGE_PAGE).checked_add(1)? * HUGE_PAGE)
            .ok()?;
        let off = map.as_ptr().align_offset(HUGE_PAGE);
        if advise {
            let _ = map.advise_range(memmap2::Advice::HugePage, off, huge_span(bytes));
        }
        Some((Raw::Map(map), off))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Raw::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Raw::Map(m) => m,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Raw::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Raw::Map(m) => m,
        }
    }
}

/// The bytes from a huge page boundary that a buffer of `bytes` puts on
/// huge pages: its whole pages, and the last one if it fills [`TAIL_FILL`]
/// of it.
#[cfg(target_os = "linux")]
fn huge_span(bytes: usize) -> usize {
    let (pages, tail) = (bytes / HUGE_PAGE, bytes % HUGE_PAGE);
    let last = tail as f64 >= TAIL_FILL * HUGE_PAGE as f64;
    (pages + last as usize) * HUGE_PAGE
}

impl<T: Pod> AlignedBuf<T> {
    /// An empty buffer (no allocation).
    pub const fn new() -> Self {
        AlignedBuf {
            raw: Raw::Heap(Vec::new()),
            off: 0,
            len: 0,
            _t: PhantomData,
        }
    }

    /// `len` zero values.
    pub fn zeroed(len: usize) -> Self {
        Self::on(Raw::zeroed(len * std::mem::size_of::<T>(), true), len)
    }

    fn on((raw, off): (Raw, usize), len: usize) -> Self {
        AlignedBuf {
            raw,
            off,
            len,
            _t: PhantomData,
        }
    }

    /// `len` zero values whose pages come 4 KB at a time, however large
    /// the buffer: for one filled while another is released behind it (the
    /// LM head's screen beside the head it is built from), where a huge
    /// page, resident whole from its first write, would raise the peak.
    /// [`AlignedBuf::collapse`] moves it onto huge pages once filled.
    pub fn zeroed_small_pages(len: usize) -> Self {
        Self::on(Raw::zeroed(len * std::mem::size_of::<T>(), false), len)
    }

    /// Moves a [`AlignedBuf::zeroed_small_pages`] buffer onto huge pages
    /// now, as [`AlignedBuf::zeroed`] would have put it (Linux's
    /// `MADV_COLLAPSE`, a copy of its pages; nothing where the system
    /// refuses or the buffer is on the heap).
    pub fn collapse(&self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if let Raw::Map(m) = &self.raw {
            let span = huge_span(self.len * std::mem::size_of::<T>());
            if span > 0 {
                // SAFETY: the range is inside the map (`huge` made room for
                // every page of the span past `off`); MADV_COLLAPSE only
                // changes which physical pages back it, keeping every byte,
                // so no slice of the buffer can observe it.
                unsafe {
                    libc::madvise(
                        m.as_ptr().add(self.off) as *mut libc::c_void,
                        span,
                        libc::MADV_COLLAPSE,
                    )
                };
            }
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
        if self.off + len * size <= self.raw.bytes().len() {
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
        let bytes = &self.raw.bytes()[self.off..self.off + self.len * std::mem::size_of::<T>()];
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
        bytemuck::cast_slice_mut(&mut self.raw.bytes_mut()[self.off..end])
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

    /// A buffer of about a huge page or more starts on a huge page boundary
    /// (so its whole pages can be huge ones), zero, and keeps its values
    /// across resizes as a small one does, from the heap into a map.
    #[cfg(target_os = "linux")]
    #[test]
    fn large_buffers_start_on_a_huge_page() {
        let small = (TAIL_FILL * HUGE_PAGE as f64) as usize / 4 - 1024;
        let mut b = AlignedBuf::<f32>::zeroed(small);
        assert!(is_aligned(b.as_ptr()));
        b[small - 1] = 3.0;
        b.resize_zeroed(HUGE_PAGE / 4 + 5);
        assert!((b.as_ptr() as usize).is_multiple_of(HUGE_PAGE));
        assert_eq!(b[small - 1], 3.0);
        assert!(b[..small - 1].iter().chain(&b[small..]).all(|&v| v == 0.0));
        let big = AlignedBuf::<u8>::zeroed(3 * HUGE_PAGE + 1);
        assert!((big.as_ptr() as usize).is_multiple_of(HUGE_PAGE));
        assert!(big.iter().all(|&v| v == 0) && big.len() == 3 * HUGE_PAGE + 1);
        assert_eq!(big.clone(), big);
    }

    /// A buffer filled on small pages keeps every value when moved onto
    /// huge ones.
    #[test]
    fn collapsing_onto_huge_pages_keeps_the_values() {
        let n = HUGE_PAGE / 2 + 12345;
        let mut b = AlignedBuf::<u32>::zeroed_small_pages(n);
        assert!(is_aligned(b.as_ptr()) && b.iter().all(|&v| v == 0));
        for (i, v) in b.iter_mut().enumerate() {
            *v = (i as u32).wrapping_mul(2654435761);
        }
        b.collapse();
        assert!(b
            .iter()
            .enumerate()
            .all(|(i, &v)| v == (i as u32).wrapping_mul(2654435761)));
        // A heap buffer has nothing to collapse.
        let small = AlignedBuf::<u8>::zeroed_small_pages(100);
        small.collapse();
        assert_eq!(small.len(), 100);
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
