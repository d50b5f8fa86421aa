//! Int8 matrices gathered into one buffer a stack, on huge pages.
//!
//! A matrix quantized at load is its own allocation, 4 KB pages scattered
//! over the heap; one mapped from a `t5edge quantize` file lies in the
//! file's page cache, which the kernel maps with 2 MB pages only where it
//! happens to hold the file in large folios (about half of a fresh tiny-nl2
//! file here, none of a file it read long ago). A decode step streams every
//! decoder matrix, so it walks the page tables a thousand times a step more
//! than it needs: on the Intel Xeon, W1 int8 converted at load ran ~8%
//! slower than from a quantized directory, and that ~6% slower than with
//! both gathered (kernels/BENCH.md). Gathered into one [`AlignedBuf`]
//! (on huge pages from about 2 MB up) and viewed as a file's matrices are,
//! they run as fast wherever they came from.
//!
//! A file's pages are released behind the copy (they come back from the
//! file if touched), so a quantized model's resident memory holds the
//! matrices once.

use super::file::Backing;
use super::tensor::{Int8Data, MappedInt8};
use std::ops::Range;
use std::sync::Arc;
use t5edge_kernels::aligned::{AlignedBuf, ALIGN, HUGE_PAGE};

/// Moves every matrix of `ws` smaller than a huge page into one buffer, in
/// the order given (the order a forward pass reads them), each part on a
/// cache line: the owned ones, and with `files` those mapped from a file
/// too. Larger ones are left where they are: on huge pages of their own if
/// owned ([`AlignedBuf`]), and a large model's load holds no second copy of
/// them. The same values.
pub fn gather(ws: Vec<&mut Int8Data>, files: bool) {
    let small = |w: &Int8Data| {
        let movable = match w {
            Int8Data::Owned(_) => true,
            Int8Data::Mapped(m) => files && matches!(*m.backing, Backing::Mmap(_)),
        };
        movable && w.view().data().len() < HUGE_PAGE
    };
    let mut ws: Vec<&mut Int8Data> = ws.into_iter().filter(|w| small(w)).collect();
    if ws.len() < 2 {
        return;
    }
    // Each matrix's data, scales, row sums and error norms: their ranges.
    let mut at = 0;
    let mut place = |bytes: usize| -> Range<usize> {
        let r = at..at + bytes;
        at = (r.end).next_multiple_of(ALIGN);
        r
    };
    let layout: Vec<[Range<usize>; 4]> = ws
        .iter()
        .map(|w| {
            let v = w.view();
            [
                place(v.data().len()),
                place(v.scales().len() * 4),
                place(v.row_sums().len() * 4),
                place(v.err_norms().len() * 4),
            ]
        })
        .collect();
    // Filled on small pages while a file's are released behind each copy,
    // then moved onto huge ones: a huge page resident whole from its first
    // write would hold both copies for a while.
    let mut buf = AlignedBuf::<u8>::zeroed_small_pages(at);
    for (w, [d, s, r, e]) in ws.iter().zip(&layout) {
        let v = w.view();
        buf[d.clone()].copy_from_slice(v.data_bytes());
        put(
            &mut buf[s.clone()],
            v.scales().iter().map(|x| x.to_ne_bytes()),
        );
        put(
            &mut buf[r.clone()],
            v.row_sums().iter().map(|x| x.to_ne_bytes()),
        );
        put(
            &mut buf[e.clone()],
            v.err_norms().iter().map(|x| x.to_ne_bytes()),
        );
        if let Int8Data::Mapped(m) = &**w {
            for part in [&m.data, &m.scales, &m.row_sums, &m.err_norms] {
                m.backing.release(part.clone());
            }
        }
    }
    buf.collapse();
    let backing = Arc::new(Backing::Gathered(buf));
    for (w, [d, s, r, e]) in ws.iter_mut().zip(layout) {
        let v = w.view();
        let m = MappedInt8 {
            backing: backing.clone(),
            n: v.n(),
            k: v.k(),
            group_size: v.group_size(),
            data: d,
            scales: s,
            row_sums: r,
            err_norms: e,
        };
        // The bytes are those of a matrix that passed the kernels' checks
        // (when quantized, or scanned at load); `view` re-checks the
        // lengths on every use.
        **w = Int8Data::Mapped(Arc::new(m));
    }
}

/// Writes 4-byte values into `dst`, one after another.
fn put(dst: &mut [u8], vals: impl Iterator<Item = [u8; 4]>) {
    for (d, v) in dst.chunks_exact_mut(4).zip(vals) {
        d.copy_from_slice(&v);
    }
}
