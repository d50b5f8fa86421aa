//! Int8 matrices quantized at load, gathered into one buffer.
//!
//! A matrix quantized at load is its own allocation, 4 KB pages scattered
//! over the heap; the same matrices mapped from a `t5edge quantize` file sit
//! one after another, and the kernel maps much of such a file with 2 MB
//! pages. A decode step streams every decoder matrix, so on the scattered
//! copies it walks the page tables a thousand times a step more: on the
//! Intel Xeon, W1 int8 converted at load ran ~8% slower than from a
//! quantized directory, and `--exact`'s draft with it (kernels/BENCH.md).
//! Gathered into one [`AlignedBuf`] (on huge pages from 2 MB up) and viewed
//! as a quantized file's matrices are, they run as a file's do.

use super::file::Backing;
use super::tensor::{Int8Data, MappedInt8};
use std::ops::Range;
use std::sync::Arc;
use t5edge_kernels::aligned::{AlignedBuf, ALIGN, HUGE_PAGE};

/// Moves every owned matrix of `ws` smaller than a huge page into one
/// buffer, in the order given (the order a forward pass reads them), each
/// part on a cache line; larger ones are on huge pages of their own already
/// ([`AlignedBuf`]), and leaving them where they are keeps a large model's
/// load from holding two copies. The same values, viewed in place.
pub fn gather(ws: Vec<&mut Int8Data>) {
    let small = |w: &Int8Data| match w {
        Int8Data::Owned(p) => p.view().data().len() < HUGE_PAGE,
        Int8Data::Mapped(_) => false,
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
    let mut buf = AlignedBuf::<u8>::zeroed(at);
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
    }
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
        // The bytes are the owned matrix's, which passed the kernels' checks
        // when it was quantized; `view` re-checks the lengths on every use.
        **w = Int8Data::Mapped(Arc::new(m));
    }
}

/// Writes 4-byte values into `dst`, one after another.
fn put(dst: &mut [u8], vals: impl Iterator<Item = [u8; 4]>) {
    for (d, v) in dst.chunks_exact_mut(4).zip(vals) {
        d.copy_from_slice(&v);
    }
}
