//! Weight matrices gathered into one buffer a stack, on huge pages.
//!
//! A matrix quantized or converted at load on its own is its own
//! allocation, 4 KB pages scattered over the heap; one mapped from a
//! checkpoint (f32, f16 or bf16) lies in the page cache, which the kernel
//! maps with 2 MB pages only where it happens to hold the file in large
//! folios (2 MB of the synthetic tiny-nl2 checkpoint's 46 here). A pass
//! streams every matrix of a stack, so on 4 KB pages it walks the page
//! tables a thousand times more than it needs. On the Intel Xeon, gathered
//! (kernels/BENCH.md): W1 int8 converted at load -14%, f32 W1 and W3 -11%,
//! `--exact` W1 -13%, f16 converted at load W1 -23%. Int8 matrices
//! quantized at load go straight into their stack's buffer
//! ([`Int8Arena`]); float ones are moved there ([`gather_floats`]); a
//! quantized file's int8 matrices stay mapped (model/gather.rs says why).
//!
//! Only matrices smaller than a huge page: a larger int8 one owned is on
//! huge pages of its own ([`AlignedBuf`]), and a large model's load holds
//! no second copy of those it maps. A file's pages are released behind a
//! float copy (they come back from the file if touched), so the matrices
//! are resident once. Fresh memory is what it costs, about 0.6-1.5 ms a MB
//! on these VMs, paid at load instead of per step.

use super::file::Backing;
use super::tensor::{F32Data, Half16, HalfData, Int8Data, MappedInt8};
use std::ops::Range;
use std::sync::Arc;
use t5edge_kernels::aligned::{AlignedBuf, ALIGN, HUGE_PAGE};
use t5edge_kernels::int8::{part_lens, Int8PartsMut};

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

/// Int8 matrices quantized at load straight into one buffer, in the order
/// given (the order a pass reads them), data, scales, row sums and error
/// norms each on a cache line: each small matrix is written once, where
/// quantizing it into memory of its own and copying it over (as this
/// module did until 2026-12-01) zeroed fresh pages twice and held both at
/// the peak (large int8: 1,039 -> 845 MB, kernels/BENCH.md).
pub struct Int8Arena {
    buf: AlignedBuf<u8>,
    shapes: Vec<(usize, usize, usize)>,
    /// Four a matrix: its parts' byte ranges.
    ranges: Vec<Range<usize>>,
}

impl Int8Arena {
    /// Room for matrices of `shapes` (`n`, `k`, group size), zeroed.
    pub fn new(shapes: Vec<(usize, usize, usize)>) -> Int8Arena {
        let (ranges, bytes) = layout(shapes.iter().flat_map(|&(n, k, g)| {
            let [d, s, r, e] = part_lens(n, k, g);
            [d, 4 * s, 4 * r, 4 * e]
        }));
        Int8Arena {
            buf: AlignedBuf::zeroed(bytes),
            shapes,
            ranges,
        }
    }

    /// Matrix `i`'s parts, to quantize into
    /// ([`t5edge_kernels::int8::PackedInt8::quantize_into`]).
    pub fn parts_mut(&mut self, i: usize) -> Int8PartsMut<'_> {
        let r = &self.ranges[4 * i..4 * i + 4];
        let region = &mut self.buf[r[0].start..r[3].end];
        let (d, rest) = region.split_at_mut(r[1].start - r[0].start);
        let (s, rest) = rest.split_at_mut(r[2].start - r[1].start);
        let (rs, e) = rest.split_at_mut(r[3].start - r[2].start);
        // Each part starts on a cache line of a buffer that does (`layout`),
        // so the casts find their types' alignment.
        Int8PartsMut {
            data: bytemuck::cast_slice_mut(&mut d[..r[0].len()]),
            scales: bytemuck::cast_slice_mut(&mut s[..r[1].len()]),
            row_sums: bytemuck::cast_slice_mut(&mut rs[..r[2].len()]),
            err_norms: bytemuck::cast_slice_mut(e),
        }
    }

    /// The matrices, as views of the buffer, in the order given.
    pub fn finish(self) -> Vec<Int8Data> {
        let Int8Arena {
            buf,
            shapes,
            ranges,
        } = self;
        let backing = Arc::new(Backing::Gathered(buf));
        shapes
            .into_iter()
            .zip(ranges.chunks_exact(4))
            .map(|((n, k, group_size), r)| {
                // The bytes are what `quantize_into` wrote, which checks
                // the shapes; `view` re-checks the lengths on every use.
                Int8Data::Mapped(Arc::new(MappedInt8 {
                    backing: backing.clone(),
                    n,
                    k,
                    group_size,
                    data: r[0].clone(),
                    scales: r[1].clone(),
                    row_sums: r[2].clone(),
                    err_norms: r[3].clone(),
                }))
            })
            .collect()
    }
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
