//! Weight matrices gathered into one buffer a stack, on huge pages.
//!
//! A matrix quantized at load is its own allocation, 4 KB pages scattered
//! over the heap; one mapped from a file lies in the file's page cache,
//! which the kernel maps with 2 MB pages only where it happens to hold the
//! file in large folios (about half of a fresh tiny-nl2 quantized file
//! here, none of a checkpoint it read long ago). A pass streams every matrix
//! of a stack, so on 4 KB pages it walks the page tables a thousand times
//! more than it needs. On the Intel Xeon, gathered (kernels/BENCH.md):
//! W1 int8 converted at load -14%, from a quantized directory -10%; f32 W1
//! and W3 -11%; `--exact` W1 -7% for its f32 stacks.
//!
//! Only matrices smaller than a huge page are moved: a larger one owned is
//! on huge pages of its own ([`AlignedBuf`]), and a large model's load holds
//! no second copy of those it maps. A file's pages are released behind the
//! copy (they come back from the file if touched), so the matrices are
//! resident once. The copy is what it costs: fresh memory, about 0.6 ms a
//! MB on these VMs, paid at load instead of per step.

use super::file::Backing;
use super::tensor::{F32Data, Int8Data, MappedInt8};
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

/// Moves every int8 matrix of `ws` smaller than a huge page into one
/// buffer, in the order given (the order a pass reads them), its data,
/// scales, row sums and error norms each on a cache line: the owned ones,
/// and with `files` those mapped from a file too. The same values.
pub fn gather(ws: Vec<&mut Int8Data>, files: bool) {
    let movable = |w: &Int8Data| {
        let ok = match w {
            Int8Data::Owned(_) => true,
            Int8Data::Mapped(m) => files && mapped_file(&m.backing),
        };
        ok && w.view().data().len() < HUGE_PAGE
    };
    let mut ws: Vec<&mut Int8Data> = ws.into_iter().filter(|w| movable(w)).collect();
    if ws.len() < 2 {
        return;
    }
    let (ranges, bytes) = layout(ws.iter().flat_map(|w| parts(w).map(<[u8]>::len)));
    // Filled on small pages while a file's are released behind each copy,
    // then moved onto huge ones: a huge page resident whole from its first
    // write would hold both copies for a while (W1's peak memory is a
    // target; this keeps it level).
    let mut buf = AlignedBuf::<u8>::zeroed_small_pages(bytes);
    for (w, r) in ws.iter().zip(ranges.chunks_exact(4)) {
        for (src, r) in parts(w).into_iter().zip(r) {
            buf[r.clone()].copy_from_slice(src);
        }
        if let Int8Data::Mapped(m) = &**w {
            for part in [&m.data, &m.scales, &m.row_sums, &m.err_norms] {
                m.backing.release(part.clone());
            }
        }
    }
    buf.collapse();
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
        // (when quantized, or scanned at load); `view` re-checks the
        // lengths on every use.
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

/// Moves every f32 matrix of `ws` that is mapped from a file and smaller
/// than a huge page into one buffer, in the order given, each on a cache
/// line. The buffer is on huge pages from its first write: its copy took
/// half the time it took filled on small pages and collapsed, and an f32
/// model's peak memory, the whole checkpoint mapped, is no target.
pub fn gather_f32(ws: Vec<&mut F32Data>) {
    let file_part = |w: &F32Data| match w {
        F32Data::Mapped {
            backing,
            start,
            len,
        } if mapped_file(backing) && len * 4 < HUGE_PAGE => Some(*start..start + len * 4),
        _ => None,
    };
    let mut ws: Vec<(&mut F32Data, Range<usize>)> = ws
        .into_iter()
        .filter_map(|w| file_part(w).map(|r| (w, r)))
        .collect();
    if ws.len() < 2 {
        return;
    }
    let (ranges, bytes) = layout(ws.iter().map(|(_, src)| src.len()));
    let mut buf = AlignedBuf::<u8>::zeroed(bytes);
    for ((w, src), r) in ws.iter().zip(&ranges) {
        if let F32Data::Mapped { backing, .. } = &**w {
            buf[r.clone()].copy_from_slice(&backing.bytes()[src.clone()]);
            backing.release(src.clone());
        }
    }
    let backing = Arc::new(Backing::Gathered(buf));
    for ((w, _), r) in ws.iter_mut().zip(ranges) {
        // On a cache line, so aligned for f32 as `F32Data::mapped` requires.
        **w = F32Data::Mapped {
            backing: backing.clone(),
            start: r.start,
            len: r.len() / 4,
        };
    }
}
