//! Splitting a layer's outputs across threads without changing a single bit.
//!
//! Every output value is computed by exactly one task, and the chunking depends
//! only on the problem shape (never on the number of threads or on the
//! backend, see `pool`), so a result is bit-identical whether it runs on 1
//! thread or 64.

use crate::pool;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many multiply-adds a call stays on the calling thread. Waking a
/// rayon worker costs microseconds when it is idle and far more when the core
/// is busy (measured: a 1024x256 GEMV took 63 us split over 2 loaded cores
/// against 10-16 us on one), so with rayon only ~1M MACs and up paid. The spin
/// pool's workers are already awake, and since GEMV tasks are sized by the
/// output count (`gemv_cols`: a handful per call instead of one per 64
/// columns) splitting pays from 128K: a decode step's 1024x256 projections
/// now run on both cores. 7 alternating rounds on the AVX2 EPYC (kernels/
/// BENCH.md): W1 int8 6.75 -> 6.16 ms, W1 f32 32.8 -> 29.1 ms; with a busy
/// loop on each core no worse (21.2 -> 18.2 ms, noisy).
pub const PAR_MIN_MACS: usize = 1 << 17;

/// Whether an `m x k x n` product is worth spreading over threads.
pub(crate) fn worth_parallel(m: usize, k: usize, n: usize) -> bool {
    worth_parallel_macs(m.saturating_mul(k).saturating_mul(n))
}

/// Whether a region of `macs` multiply-adds is worth spreading over threads.
pub(crate) fn worth_parallel_macs(macs: usize) -> bool {
    macs >= par_min_macs() && pool::current_threads() > 1
}

static MIN_MACS: AtomicUsize = AtomicUsize::new(PAR_MIN_MACS);

/// Sets the threshold (e.g. from `T5EDGE_PAR_MIN_MACS`, to measure another
/// without rebuilding): from `macs` multiply-adds on, a call may be split
/// across threads. Where the split falls never changes a result bit.
pub fn set_min_macs(macs: usize) {
    MIN_MACS.store(macs, Ordering::Relaxed);
}

/// [`PAR_MIN_MACS`], or what [`set_min_macs`] set.
fn par_min_macs() -> usize {
    MIN_MACS.load(Ordering::Relaxed)
}

/// Output columns per task of a GEMV-shaped product over `n` columns: about
/// [`GEMV_TASKS`] tasks (enough for the pool's dynamic claiming to balance a
/// loaded machine), from 64 to 1024 columns, a multiple of `align`. It depends
/// on `n` alone, never on the thread count; the kernels that use it compute
/// each output column the same way whatever chunk holds it.
pub(crate) fn gemv_cols(n: usize, align: usize) -> usize {
    (n / GEMV_TASKS).clamp(64, 1024).div_ceil(align) * align
}

/// Tasks [`gemv_cols`] aims at. With 64-column tasks an LM head (32128
/// columns) was 502 tasks a step, and claiming and setting up a task about a
/// tenth of a W1 int8 step (`perf`: `int8::chunk`).
pub(crate) const GEMV_TASKS: usize = 32;

/// A pointer tasks share to write disjoint parts of one `&mut [T]`.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T = f32>(pub *mut T);
// SAFETY: every user derives only disjoint regions from it per task (argued at
// each use), and the slice it came from is mutably borrowed for the whole
// parallel region, so no other access can race with the tasks' writes.
unsafe impl<T> Sync for SyncPtr<T> {}
// SAFETY: as for Sync.
unsafe impl<T> Send for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// Through a method, so closures capture the whole (Sync) wrapper rather
    /// than its raw-pointer field.
    #[inline]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// One task's `[rows, width]` block of a row-major `[m, stride]` output
/// from row `i0`: row `i` is `y[(i0 + i) * stride + j0..][..width]`, written
/// in place.
pub(crate) struct ColBlock<'a> {
    /// `&y[i0 * stride + j0]`.
    ptr: *mut f32,
    rows: usize,
    width: usize,
    stride: usize,
    _y: PhantomData<&'a mut [f32]>,
}

impl ColBlock<'_> {
    /// Rows in the block.
    #[inline]
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Row `i` of the block. Borrowing `self` mutably means one block never
    /// hands out two live rows, so the slices it gives are never aliased.
    #[inline]
    pub(crate) fn row(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows);
        // SAFETY: `for_blocks` built the block with j0 + width <= stride and
        // (i0 + rows) * stride <= y.len(), so the row lies inside y; no other
        // task's block covers these elements (blocks are disjoint) and this
        // block hands out one row at a time (see above).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.stride), self.width) }
    }

    /// The window of rows `[i, i + rows)` and columns `[o, o + cols)` as a
    /// pointer to its first element and the row stride, for a kernel that
    /// writes a register block straight into it. The window lies inside the
    /// block (asserted), so such writes stay inside this task's part of y.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub(crate) fn window(
        &mut self,
        i: usize,
        o: usize,
        rows: usize,
        cols: usize,
    ) -> (*mut f32, usize) {
        assert!(i + rows <= self.rows && o + cols <= self.width);
        // SAFETY: inside the block by the assert; see `row`.
        (unsafe { self.ptr.add(i * self.stride + o) }, self.stride)
    }
}

/// Runs `f(j0, j1, out)` for fixed chunks `[j0, j1)` of `chunk` output columns,
/// where `out` is the `[m, j1 - j0]` block of the `[m, n]` output `y`, written
/// in place (so it starts out holding y's values, for kernels that accumulate).
/// No allocation and no copy, whatever `m`.
pub(crate) fn for_col_chunks<F>(
    y: &mut [f32],
    m: usize,
    n: usize,
    chunk: usize,
    parallel: bool,
    f: F,
) where
    F: Fn(usize, usize, &mut ColBlock<'_>) + Sync,
{
    for_blocks(y, m, n, m.max(1), chunk, parallel, |_, j0, j1, out| {
        f(j0, j1, out)
    });
}

/// Outputs [`for_col_chunks_many`] takes at once (Q, K and V are three).
pub(crate) const MANY_MAX: usize = 4;

/// [`for_col_chunks`] over several outputs in one parallel region: `ys[i]`
/// is `[m, ns[i]]`, cut in chunks of `cols[i]` columns; `f(i, j0, j1, out)`.
/// One region instead of one per output saves a hand-off to the pool and a
/// wait for its slowest task per output (an attention layer's Q, K and V).
/// At most [`MANY_MAX`] outputs; allocates nothing (a decode step may call it).
pub(crate) fn for_col_chunks_many<F>(
    ys: &mut [&mut [f32]],
    m: usize,
    ns: &[usize],
    cols: &[usize],
    parallel: bool,
    f: F,
) where
    F: Fn(usize, usize, usize, &mut ColBlock<'_>) + Sync,
{
    let k = ys.len();
    assert!(k <= MANY_MAX && ns.len() == k && cols.len() == k);
    for ((y, &n), &c) in ys.iter().zip(ns).zip(cols) {
        assert!(c > 0 && y.len() == m * n);
    }
    if m == 0 {
        return;
    }
    let mut bases = [SyncPtr(std::ptr::null_mut::<f32>()); MANY_MAX];
    // first[i]: the first task of output i; first[k]: the task count.
    let mut first = [0usize; MANY_MAX + 1];
    for (i, y) in ys.iter_mut().enumerate() {
        bases[i] = SyncPtr(y.as_mut_ptr());
        first[i + 1] = first[i] + ns[i].div_ceil(cols[i]);
    }
    pool::for_each(first[k], parallel, |t| {
        let i = first[1..=k].partition_point(|&f| f <= t);
        let (n, c) = (ns[i], cols[i]);
        let j0 = (t - first[i]) * c;
        let j1 = (j0 + c).min(n);
        let mut block = ColBlock {
            // SAFETY: j0 < n, so the offset stays inside ys[i]. Task t owns
            // columns [j0, j1) of every row of output i, disjoint from every
            // other task's, and `ys` stays mutably borrowed until all tasks
            // are done.
            ptr: unsafe { bases[i].get().add(j0) },
            rows: m,
            width: j1 - j0,
            stride: n,
            _y: PhantomData,
        };
        f(i, j0, j1, &mut block)
    });
}

/// Runs `f(i0, j0, j1, out)` over the `[rows, cols]` blocks of the `[m, n]`
/// output `y` (the last ones in a row or column of blocks smaller): `out` is
/// rows `[i0, i0 + out.rows())` by columns `[j0, j1)`, written in place. Tasks
/// go column block by column block, rows fastest.
pub(crate) fn for_blocks<F>(
    y: &mut [f32],
    m: usize,
    n: usize,
    rows: usize,
    cols: usize,
    parallel: bool,
    f: F,
) where
    F: Fn(usize, usize, usize, &mut ColBlock<'_>) + Sync,
{
    assert!(rows > 0 && cols > 0 && y.len() == m * n);
    if m == 0 || n == 0 {
        return;
    }
    let base = SyncPtr(y.as_mut_ptr());
    let row_blocks = m.div_ceil(rows);
    pool::for_each(n.div_ceil(cols) * row_blocks, parallel, |t| {
        let (i0, j0) = ((t % row_blocks) * rows, (t / row_blocks) * cols);
        let j1 = (j0 + cols).min(n);
        let mut block = ColBlock {
            // SAFETY: i0 < m and j0 < n, so the offset stays inside y. Task t
            // owns rows [i0, i0 + rows) of columns [j0, j1), disjoint from
            // every other task's, and `y` stays mutably borrowed until all
            // tasks are done.
            ptr: unsafe { base.get().add(i0 * n + j0) },
            rows: rows.min(m - i0),
            width: j1 - j0,
            stride: n,
            _y: PhantomData,
        };
        f(i0, j0, j1, &mut block)
    });
}

/// A row-major buffer of `m` rows whose disjoint row ranges parallel tasks
/// write ([`for_row_ranges`]), when one task fills rows of several buffers
/// at once (activations, their scales, their halves).
pub(crate) struct RowParts<'a, T> {
    ptr: SyncPtr<T>,
    width: usize,
    rows: usize,
    _buf: PhantomData<&'a mut [T]>,
}

impl<'a, T> RowParts<'a, T> {
    /// `buf` as `m` rows (`m > 0`, `buf.len()` a multiple of `m`).
    pub(crate) fn new(buf: &'a mut [T], m: usize) -> Self {
        assert!(m > 0 && buf.len().is_multiple_of(m), "row parts shape");
        RowParts {
            ptr: SyncPtr(buf.as_mut_ptr()),
            width: buf.len() / m,
            rows: m,
            _buf: PhantomData,
        }
    }

    /// Rows `[i0, i1)`.
    ///
    /// # Safety
    /// No other slice taken from this buffer and still in use may overlap
    /// these rows (each task takes its own range, once).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn rows(&self, i0: usize, i1: usize) -> &'a mut [T] {
        assert!(i0 <= i1 && i1 <= self.rows, "row parts range");
        // SAFETY: the rows lie inside the buffer (asserted), which stays
        // mutably borrowed for 'a; the caller guarantees no overlap.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.0.add(i0 * self.width), (i1 - i0) * self.width)
        }
    }
}

/// Runs `f(i0, i1)` over the ranges of `rows` rows (the last shorter) that
/// make up `0..m`, in parallel when asked.
pub(crate) fn for_row_ranges<F>(m: usize, rows: usize, parallel: bool, f: F)
where
    F: Fn(usize, usize) + Sync,
{
    assert!(rows > 0);
    pool::for_each(m.div_ceil(rows), parallel, |t| {
        let i0 = t * rows;
        f(i0, (i0 + rows).min(m))
    });
}

/// Runs `f(i0, parts)` over the blocks of `rows` rows (the last shorter)
/// that make up `0..m`, where `parts[b]` is the block's rows of `bufs[b]`
/// (each buffer `[m, width_b]`, row-major): one task fills the same rows of
/// several buffers (an encoder layer's residual stream and its next Q, K
/// and V). In parallel when asked; the blocks depend on `m` and `rows` only.
pub fn for_row_blocks<const N: usize, F>(
    bufs: [&mut [f32]; N],
    m: usize,
    rows: usize,
    parallel: bool,
    f: F,
) where
    F: Fn(usize, [&mut [f32]; N]) + Sync,
{
    if m == 0 {
        return;
    }
    let parts: [RowParts<'_, f32>; N] = bufs.map(|b| RowParts::new(b, m));
    for_row_ranges(m, rows, parallel, |i0, i1| {
        // SAFETY: for_row_ranges hands each task its own range of rows, and
        // each task takes that range once from each buffer.
        f(
            i0,
            std::array::from_fn(|b| unsafe { parts[b].rows(i0, i1) }),
        )
    });
}

/// Runs `f(c, part)` over the consecutive `len`-long parts of `out`, in
/// parallel when asked (on the backend [`crate::pool`] selects): the threaded
/// twin of `out.chunks_mut(len).enumerate()`.
pub fn for_chunks_mut<F>(out: &mut [f32], len: usize, parallel: bool, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    assert!(len > 0);
    let total = out.len();
    let base = SyncPtr(out.as_mut_ptr());
    pool::for_each(total.div_ceil(len), parallel, |c| {
        let a = c * len;
        let b = (a + len).min(total);
        // SAFETY: [a, b) lies inside `out` (a < total), parts of different c
        // are disjoint, and `out` stays mutably borrowed until all tasks finish.
        f(c, unsafe {
            std::slice::from_raw_parts_mut(base.get().add(a), b - a)
        })
    });
}
