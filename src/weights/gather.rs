//! Weight matrices gathered into one buffer a stack, on huge pages.
//!
//! A matrix quantized or converted at load is its own allocation, 4 KB
//! pages scattered over the heap; one mapped from a checkpoint (f32, f16
//! or bf16) lies in the page cache, which the kernel maps with 2 MB pages
//! only where it happens to hold the file in large folios (2 MB of the
//! synthetic tiny-nl2 checkpoint's 46 here). A pass streams every matrix of
//! a stack, so on 4 KB pages it walks the page tables a thousand times more
//! than it needs. On the Intel Xeon, gathered (kernels/BENCH.md): W1 int8
//! converted at load -14%, f32 W1 and W3 -11%, `--exact` W1 -13%, f16
//! converted at load W1 -23%. A quantized file's int8 matrices stay
//! mapped ([`gather`] says why).
//!
//! Only matrices smaller than a huge page are moved: a larger int8 one
//! owned is on huge pages of its own ([`AlignedBuf`]), and a large model's
//! load holds no second copy of those it maps. A file's pages are released
//! behind the copy (they come back from the file if touched), so the
//! matrices are resident once. The copy is what it costs: fresh memory,
//! about 0.6-1.5 ms a MB on these VMs, paid at load instead of per step.

use super::file::Backing;
use super::tensor::{F32Data, Half16, HalfData, Int8Data, MappedInt8};
use std::ops::Range;
use std::sync::Arc;
use t5edge_kernels::aligned::{AlignedBuf, ALIGN, HUGE_PAGE};

/// Places parts of `sizes` bytes one after another, each on a cache line:
/// their ranges and the bytes they take.
fn layout(sizes: impl Iterator<Item = usize>) -> (Vec<Range<usize>>, usize) {
    let mut at = 0;
    let ranges = sizes
        .map(|n| {
            let r = at..at + n;
            at = r.end.next_multiple_of(ALIGN);
            r
        })
        .collect();
    (ranges, at)
}

/// Whether `b` is a mapped file's (not a heap copy of one, which is on
/// huge pages already, nor a gathered buffer).
fn mapped_file(b: &Backing) -> bool {
    matches!(b, Backing::Mmap(_))
}

/// Moves every owned int8 matrix of `ws` (quantized at load) smaller than
/// a huge page into one buffer, in the order given (the order a pass reads
/// them), its data, scales, row sums and error norms each on a cache line.
/// The same values. A quantized file's matrices stay mapped: copied, a
/// tiny-nl2 decoder's ran W1 10% faster, but a fresh process paid 3-4 ms
/// more to start (fresh memory on these VMs), a tenth of the cold start
/// target (kernels/BENCH.md).
pub fn gather(ws: Vec<&mut Int8Data>) {
    let movable =
        |w: &Int8Data| matches!(w, Int8Data::Owned(_)) && w.view().data().len() < HUGE_PAGE;
    let mut ws: Vec<&mut Int8Data> = ws.into_iter().filter(|w| movable(w)).collect();
    if ws.len() < 2 {
        return;
    }
    let (ranges, bytes) = layout(ws.iter().flat_map(|w| parts(w).map(<[u8]>::len)));
    let mut buf = AlignedBuf::<u8>::zeroed(bytes);
    for (w, r) in ws.iter().zip(ranges.chunks_exact(4)) {
        for (src, r) in parts(w).into_iter().zip(r) {
            buf[r.clone()].copy_from_slice(src);
        }
    }
    let backing = Arc::new(Backing::Gathered(buf));
    for (w, r) in ws.iter_mut().zip(ranges.chunks_exact(4)) {
        let v = w.view();
        let m = MappedInt8 {
            backing: backing.clone(),
            n: v.n(),
            k: v.k(),
            group_size: v.group_size(),
            data: r[0].clone(),
            scales: r[1].clone(),
            row_sums: r[2].clone(),
            err_norms: r[3].clone(),
        };
        // The bytes are those of a matrix that passed the kernels' checks
        // when it was quantized; `view` re-checks the lengths on every use.
        **w = Int8Data::Mapped(Arc::new(m));
    }
}

/// An int8 matrix's data, scales, row sums and error norms, as bytes.
fn parts(w: &Int8Data) -> [&[u8]; 4] {
    let v = w.view();
    [
        v.data_bytes(),
        bytemuck::cast_slice(v.scales()),
        bytemuck::cast_slice(v.row_sums()),
        bytemuck::cast_slice(v.err_norms()),
    ]
}

/// A float matrix as [`gather_floats`] sees it: f32 or 16-bit, mapped
/// from a file or owned (converted at load, or copied off a misaligned
/// offset).
pub trait FloatWeights: Sized {
    /// Its values as bytes.
    fn value_bytes(&self) -> &[u8];
    /// The file it is mapped from and where, if it is a mapped file's.
    fn in_file(&self) -> Option<(&Arc<Backing>, Range<usize>)>;
    /// Owned by the engine (not a view of a file or a gathered buffer).
    fn owned(&self) -> bool;
    /// The view of `range` of a gathered buffer.
    fn view_of(backing: Arc<Backing>, range: Range<usize>) -> Self;
}

impl FloatWeights for F32Data {
    fn value_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.as_slice())
    }
    fn in_file(&self) -> Option<(&Arc<Backing>, Range<usize>)> {
        match self {
            F32Data::Mapped {
                backing,
                start,
                len,
            } if mapped_file(backing) => Some((backing, *start..start + len * 4)),
            _ => None,
        }
    }
    fn owned(&self) -> bool {
        matches!(self, F32Data::Owned(_))
    }
    fn view_of(backing: Arc<Backing>, range: Range<usize>) -> Self {
        F32Data::Mapped {
            backing,
            start: range.start,
            len: range.len() / 4,
        }
    }
}

impl<T: Half16 + bytemuck::Pod> FloatWeights for HalfData<T> {
    fn value_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.as_slice())
    }
    fn in_file(&self) -> Option<(&Arc<Backing>, Range<usize>)> {
        match self {
            HalfData::Mapped {
                backing,
                start,
                len,
            } if mapped_file(backing) => Some((backing, *start..start + len * 2)),
            _ => None,
        }
    }
    fn owned(&self) -> bool {
        matches!(self, HalfData::Owned(_))
    }
    fn view_of(backing: Arc<Backing>, range: Range<usize>) -> Self {
        HalfData::Mapped {
            backing,
            start: range.start,
            len: range.len() / 2,
        }
    }
}

/// Moves every float matrix of `ws` smaller than a huge page (mapped from
/// a file, or owned) into one buffer, in the order given, each on a cache
/// line (aligned for its type as a view requires), the file's pages
/// released behind the copy. The buffer is on huge pages from its first
/// write: its copy took half the time it took filled on small pages and
/// collapsed, and a float model's peak memory, the whole checkpoint
/// mapped, is no target.
pub fn gather_floats<W: FloatWeights>(ws: Vec<&mut W>) {
    let movable = |w: &W| (w.owned() || w.in_file().is_some()) && w.value_bytes().len() < HUGE_PAGE;
    let mut ws: Vec<&mut W> = ws.into_iter().filter(|w| movable(w)).collect();
    if ws.len() < 2 {
        return;
    }
    let (ranges, bytes) = layout(ws.iter().map(|w| w.value_bytes().len()));
    let mut buf = AlignedBuf::<u8>::zeroed(bytes);
    for (w, r) in ws.iter().zip(&ranges) {
        buf[r.clone()].copy_from_slice(w.value_bytes());
        if let Some((backing, src)) = w.in_file() {
            backing.release(src);
        }
    }
    let backing = Arc::new(Backing::Gathered(buf));
    for (w, r) in ws.iter_mut().zip(ranges) {
        **w = W::view_of(backing.clone(), r);
    }
}
