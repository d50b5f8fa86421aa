//! Splitting a layer's outputs across threads without changing a single bit.
//!
//! Every output value is computed by exactly one task, and the chunking depends
//! only on the problem shape (never on the number of threads), so a result is
//! bit-identical whether rayon runs it on 1 thread or 64.

use rayon::prelude::*;

/// Below this many multiply-adds a call stays on the calling thread. Waking a
/// worker costs microseconds when it is idle and far more when the core is busy
/// (measured: a 1024x256 GEMV took 63 us split over 2 loaded cores against
/// 10-16 us on one), so only calls of ~1M MACs and up (the LM head, big FFNs,
/// prefill) are split.
pub(crate) const PAR_MIN_MACS: usize = 1 << 20;

/// Whether an `m x k x n` product is worth spreading over threads.
pub(crate) fn worth_parallel(m: usize, k: usize, n: usize) -> bool {
    m.saturating_mul(k).saturating_mul(n) >= PAR_MIN_MACS && rayon::current_num_threads() > 1
}

/// Runs `f(j0, j1, out)` for fixed chunks `[j0, j1)` of `chunk` output columns,
/// where `out` is a chunk-local `[m, j1 - j0]` row-major buffer that is then
/// copied into the `[m, n]` output `y`. With `load_y`, `out` starts as that
/// block of `y` (for kernels that accumulate into y); otherwise its contents
/// are unspecified and `f` must overwrite them.
pub(crate) fn for_col_chunks<F>(
    y: &mut [f32],
    m: usize,
    n: usize,
    chunk: usize,
    parallel: bool,
    load_y: bool,
    f: F,
) where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    assert!(chunk > 0 && y.len() == m * n);
    if m == 0 || n == 0 {
        return;
    }
    if m == 1 {
        // One row: the chunk-local buffer *is* a slice of y, no copy needed.
        let run = |(c, out): (usize, &mut [f32])| {
            let j0 = c * chunk;
            f(j0, j0 + out.len(), out)
        };
        if parallel {
            y.par_chunks_mut(chunk).enumerate().for_each(run);
        } else {
            y.chunks_mut(chunk).enumerate().for_each(run);
        }
        return;
    }
    let chunks = n.div_ceil(chunk);
    let y_ptr = SharedOut(y.as_mut_ptr());
    let compute = |c: usize| {
        let j0 = c * chunk;
        let j1 = (j0 + chunk).min(n);
        let cw = j1 - j0;
        // A buffer reused across calls on this thread (taken out, so a call
        // nested through work stealing grows its own instead of panicking):
        // no allocation, memset or fresh pages per chunk.
        let mut buf = CHUNK_OUT.take();
        if buf.len() < m * cw {
            buf.resize(m * cw, 0.0);
        }
        let out = &mut buf[..m * cw];
        let y = y_ptr.get();
        if load_y {
            for i in 0..m {
                // SAFETY: columns [j0, j1) of row i are inside y (j1 <= n,
                // i < m, y.len() == m * n) and only this task touches them.
                let src = unsafe { std::slice::from_raw_parts(y.add(i * n + j0), cw) };
                out[i * cw..(i + 1) * cw].copy_from_slice(src);
            }
        }
        f(j0, j1, out);
        for i in 0..m {
            // SAFETY: as above; the chunks' column ranges are disjoint, so no
            // two tasks write the same element and nobody else reads y meanwhile
            // (the caller's &mut y is held until every task has finished).
            let dst = unsafe { std::slice::from_raw_parts_mut(y.add(i * n + j0), cw) };
            dst.copy_from_slice(&out[i * cw..(i + 1) * cw]);
        }
        CHUNK_OUT.set(buf);
    };
    if parallel {
        (0..chunks).into_par_iter().for_each(compute);
    } else {
        (0..chunks).for_each(compute);
    }
}

/// `y`'s base pointer, shared by tasks that write disjoint column ranges.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

impl SharedOut {
    /// Through a method, so closures capture the whole (Sync) wrapper rather
    /// than the raw pointer field.
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: the pointer is only dereferenced in for_col_chunks, on disjoint
// element ranges of a buffer that outlives every task (see the SAFETY notes
// there).
unsafe impl Send for SharedOut {}
// SAFETY: as for Send.
unsafe impl Sync for SharedOut {}

thread_local! {
    /// Per-thread chunk output buffer of [`for_col_chunks`].
    static CHUNK_OUT: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}
