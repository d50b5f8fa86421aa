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
    let y_in: &[f32] = y;
    let compute = |c: usize| {
        let j0 = c * chunk;
        let j1 = (j0 + chunk).min(n);
        let cw = j1 - j0;
        let mut out = vec![0.0f32; m * cw];
        if load_y {
            for i in 0..m {
                out[i * cw..(i + 1) * cw].copy_from_slice(&y_in[i * n + j0..i * n + j1]);
            }
        }
        f(j0, j1, &mut out);
        out
    };
    let parts: Vec<Vec<f32>> = if parallel {
        (0..chunks).into_par_iter().map(compute).collect()
    } else {
        (0..chunks).map(compute).collect()
    };
    for (c, out) in parts.iter().enumerate() {
        let j0 = c * chunk;
        let cw = out.len() / m;
        for i in 0..m {
            y[i * n + j0..i * n + j0 + cw].copy_from_slice(&out[i * cw..(i + 1) * cw]);
        }
    }
}
