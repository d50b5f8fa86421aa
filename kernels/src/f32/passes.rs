//! The order both x86 float prefill kernels (`avx512.rs`, `avx2.rs`) run a
//! column chunk in: whole rows while the activations stay in the L2, else
//! passes of rows and, past [`STEP_K`] inputs, steps of inputs with each
//! block's FMA chains kept between steps. Every output is the same chain
//! over its row either way, so the bits do not depend on the order.
//!
//! Why (kernels/BENCH.md): taking a block's weight rows outside and every
//! activation row inside, an XXL product (`k` = 10240) streamed both from
//! past the L2, 67 against 126 G multiply-adds/s at `k` = 1024 (AVX-512);
//! in passes, a block's weight rows stay in the L1 while the pass's rows
//! go over them and the pass's rows in the L2 while the chunk's blocks do.

use crate::aligned::AlignedBuf;
use crate::par::ColBlock;
use std::cell::Cell;
use std::ops::Range;

/// Activations (`m x k` f32) up to which a product runs whole rows: they
/// stay in the L2 while every weight block passes over them.
const WHOLE_X_BYTES: usize = 1 << 20;

/// Past [`WHOLE_X_BYTES`], inputs a step of a pass.
pub(crate) const STEP_K: usize = 1024;

/// A prefill kernel's register blocks, as the driver runs them. The ISA's
/// functions carry its target features, or are inlined into a caller that
/// does.
pub(crate) trait Blocks<W> {
    /// Activation rows of a full block.
    const BR: usize;
    /// Weight rows (outputs) of a block.
    const BC: usize;
    /// Rows a pass, a multiple of `BR`: a chunk's weights are read once a
    /// pass, the pass's rows once a weight block.
    const PASS_ROWS: usize;
    /// f32 lanes of a chain's vector: a full block's chains between steps
    /// take `BR * BC * LANES` floats ([`slot_len`]).
    const LANES: usize;

    /// One step of the block of rows `i..i + nr` (`1 <= nr <= BR`) and
    /// weight rows `c..c + BC` over inputs `ts`: its chains from `slot`
    /// (from zero at the first step), back to `slot`, or reduced into `out`
    /// at the last step (`ts.end == k`). A whole row is the one step `0..k`,
    /// which touches no slot.
    ///
    /// # Safety
    /// The CPU runs the kernel's level; those rows of `x` and `w` exist;
    /// `slot` holds at least [`slot_len`] floats unless `ts` is `0..k`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn step(
        x: &[f32],
        i: usize,
        nr: usize,
        k: usize,
        w: &[W],
        c: usize,
        ts: Range<usize>,
        slot: &mut [f32],
        out: &mut ColBlock<'_>,
    );

    /// [`stepped`] for this kernel, out of line with its target features:
    /// inlined into the kernel's entry point, it left the small products'
    /// loops there ~3% slower (AVX2, kernels/BENCH.md).
    ///
    /// # Safety
    /// As [`run`].
    unsafe fn stepped_rows(
        x: &[f32],
        rows: Range<usize>,
        k: usize,
        w: &[W],
        cb: usize,
        out: &mut ColBlock<'_>,
    );
}

/// Floats a full block's chains take between steps.
const fn slot_len<W, B: Blocks<W>>() -> usize {
    B::BR * B::BC * B::LANES
}

thread_local! {
    /// A pass's unfinished chains between steps, [`slot_len`] floats per weight
    /// block and row block, on cache lines; kept, as large as the largest
    /// pass the thread ran.
    static CHAINS: Cell<AlignedBuf<f32>> = const { Cell::new(AlignedBuf::new()) };
}

/// All `m` rows against weight rows `0..cb` (`cb` a multiple of `BC`) into
/// `out`, in the order the module docs give.
///
/// # Safety
/// The CPU runs `B`'s level (the caller carries its target features);
/// `x` holds `m * k` values and `w` at least `cb * k`.
#[inline(always)]
pub(crate) unsafe fn run<W, B: Blocks<W>>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    cb: usize,
    out: &mut ColBlock<'_>,
) {
    const { assert!(B::PASS_ROWS.is_multiple_of(B::BR)) };
    if m * k * 4 <= WHOLE_X_BYTES {
        // SAFETY: forwarded contract.
        return unsafe { whole::<W, B>(x, 0..m, k, w, cb, out) };
    }
    for r0 in (0..m).step_by(B::PASS_ROWS) {
        let rows = r0..(r0 + B::PASS_ROWS).min(m);
        // SAFETY: forwarded contract, rows r0.. < m.
        unsafe {
            if k <= STEP_K {
                whole::<W, B>(x, rows, k, w, cb, out)
            } else {
                B::stepped_rows(x, rows, k, w, cb, out)
            }
        }
    }
}

/// Rows `rows` (from a multiple of `BR`): weight blocks outside, row blocks
/// inside (a block's weight rows stay in the L1), the last `len % BR` rows
/// in a block of their own height.
///
/// # Safety
/// As [`run`], for those rows.
#[inline(always)]
unsafe fn whole<W, B: Blocks<W>>(
    x: &[f32],
    rows: Range<usize>,
    k: usize,
    w: &[W],
    cb: usize,
    out: &mut ColBlock<'_>,
) {
    // Full blocks with a constant height (their `step` calls fold to the
    // one arm: deciding the height per block made small products ~3%
    // slower at AVX2), then the rest; each the one step over the whole row.
    let full = rows.start + (rows.end - rows.start) / B::BR * B::BR;
    for c in (0..cb).step_by(B::BC) {
        for i in (rows.start..full).step_by(B::BR) {
            // SAFETY: the contract; rows i..i + BR <= rows.end; all of k.
            unsafe { B::step(x, i, B::BR, k, w, c, 0..k, &mut [], out) };
        }
        if full < rows.end {
            // SAFETY: the contract; rows full..rows.end; all of k.
            unsafe { B::step(x, full, rows.end - full, k, w, c, 0..k, &mut [], out) };
        }
    }
}

/// Rows `rows` in steps of [`STEP_K`] inputs: every block of the pass takes
/// one step before any takes the next, its chains kept in [`CHAINS`] in
/// between. What `Blocks::stepped_rows` runs.
///
/// # Safety
/// As [`run`], for those rows.
#[inline(always)]
pub(crate) unsafe fn stepped<W, B: Blocks<W>>(
    x: &[f32],
    rows: Range<usize>,
    k: usize,
    w: &[W],
    cb: usize,
    out: &mut ColBlock<'_>,
) {
    let blocks = (rows.end - rows.start).div_ceil(B::BR);
    // Taken out of the cell, not borrowed in a closure: a closure is a
    // function of its own, compiled without the caller's target features,
    // and its intrinsics then became calls (50x slower).
    let mut buf = CHAINS.take();
    let slot_len = slot_len::<W, B>();
    let need = (cb / B::BC) * blocks * slot_len;
    if buf.len() < need {
        buf.resize_zeroed(need);
    }
    for t0 in (0..k).step_by(STEP_K) {
        let ts = t0..(t0 + STEP_K).min(k);
        for (g, c) in (0..cb).step_by(B::BC).enumerate() {
            for (b, i) in rows.clone().step_by(B::BR).enumerate() {
                let slot = &mut buf[(g * blocks + b) * slot_len..][..slot_len];
                let nr = (rows.end - i).min(B::BR);
                // SAFETY: the contract; rows i..i + nr <= rows.end, the
                // slot holds a full block's floats.
                unsafe { B::step(x, i, nr, k, w, c, ts.clone(), slot, out) };
            }
        }
    }
    CHAINS.set(buf);
}
