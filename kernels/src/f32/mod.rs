//! f32 linear layers: `y[m, n] = x[m, k] · w[n, k]ᵀ`.
//!
//! Batch-1 decode is a GEMV over weight rows (each output is one dot product of
//! a contiguous weight row with x), which streams memory; for `m >= GEMM_MIN_M`
//! (prefill) the AVX-512 levels run 4x4 register blocks (`avx512::gemm`) and
//! AVX2 3x3 (`avx2::gemm`), both shared with f16 and bf16 weights
//! (`prefill_chunk`); NEON hands the product to the gemm crate. At the AVX-512
//! levels the GEMV is those same blocks (one chain an output), so there the
//! two paths are one; AVX2, NEON and scalar have GEMV kernels of their own
//! (four chains a dot product).
//!
//! Determinism: every output is computed by one task with a summation order
//! fixed by (ISA, k) on the GEMV and block paths and by (ISA, m, n, k) on the gemm path, so
//! results are bit-identical for any thread count and pool backend. Below the
//! AVX-512 levels the two paths round differently, so with [`linear`] a row's
//! bits can depend on how many rows share the call; [`linear_invariant`]
//! always takes the GEMV path, where they cannot (kernels/tests/batch_invariance.rs).
//! The order differs between ISA levels (vector width, accumulators, blocking),
//! so results differ between levels in the last bits, within the budget the
//! crate docs state; only the int8 kernels are bit-identical across levels.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod neon;
#[cfg(target_arch = "x86_64")]
mod passes;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
use crate::aligned::{self, AlignedBuf};
use crate::dispatch::{active, Isa};
use crate::par::{self, ColBlock};

/// From this many activation rows on, SIMD levels take the prefill path
/// instead of the GEMV kernels, for every float format: 4x4 register blocks
/// at the AVX-512 levels, 3x3 at AVX2; on aarch64 the gemm crate, from the
/// format's own threshold (`FloatWeight::GEMM_MIN_M`). The scalar level and
/// the NEON emulation always run the GEMV.
pub const GEMM_MIN_M: usize = 8;

/// Weight rows per prefill task (64 rows x k floats stays in L2 for d_model-sized
/// k). Fixed: a prefill kernel's ragged edge columns fall at chunk boundaries,
/// so the chunk may depend on nothing but this constant. (The GEMV takes
/// [`par::gemv_cols`].)
pub(crate) const GEMV_CHUNK: usize = 64;

/// `y = x · wᵀ` at the active ISA level ([`crate::dispatch::active`]):
/// `x` is `[m, k]`, `w` is `[n, k]` (out x in), `y` is `[m, n]`, all row-major.
///
/// Panics if the shapes disagree.
pub fn linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    linear_with(active(), x, m, k, w, n, y)
}

/// `y = x · wᵀ` at a chosen ISA level.
///
/// Panics if the shapes disagree or the CPU cannot run `isa`. `Isa::Neon` off
/// aarch64 runs the plain-Rust emulation of the NEON kernel (for tests).
pub fn linear_with(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    float_linear(isa, x, m, k, w, n, y, false)
}

/// [`linear`] with every row's bits those of the same row alone (`m = 1`),
/// whatever the other rows and their number: always the GEMV kernels, whose
/// summation order depends only on (ISA, k) (at the AVX-512 levels the
/// prefill blocks, the same bits as [`linear`]). What a decode step of a batch
/// that requests join and leave runs, so that a request's answer does not
/// depend on what shares its batch.
pub fn linear_invariant(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    linear_invariant_with(active(), x, m, k, w, n, y)
}

/// [`linear_invariant`] at a chosen ISA level (panics as [`linear_with`]).
pub fn linear_invariant_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    y: &mut [f32],
) {
    float_linear(isa, x, m, k, w, n, y, true)
}

/// A kernel computing one column chunk: `(x, m, k, w_chunk, out)`.
pub(crate) type ChunkFn<W> = fn(&[f32], usize, usize, &[W], &mut ColBlock<'_>);

/// What our own prefill kernels need of a weight format: widening 16 (AVX-512)
/// and 8 (AVX2) weights at a time in registers. Every float format has both.
#[cfg(target_arch = "x86_64")]
pub(crate) trait Prefill: avx512::Wide + avx2::Wide8 {}
#[cfg(target_arch = "x86_64")]
impl<W: avx512::Wide + avx2::Wide8> Prefill for W {}
#[cfg(not(target_arch = "x86_64"))]
pub(crate) trait Prefill {}
#[cfg(not(target_arch = "x86_64"))]
impl<W> Prefill for W {}

/// Our own prefill kernel at `isa` for any float format, used instead of the
/// gemm crate from [`GEMM_MIN_M`] rows: 4 x 4 register blocks on
/// AVX-512, 3 x 3 on AVX2, both over the weights as stored (kernels/BENCH.md
/// has each beside the gemm crate). `None` leaves prefill to gemm.
fn prefill_chunk<W: Prefill>(isa: Isa) -> Option<ChunkFn<W>> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        _ if isa.has_avx512() => Some(|x, m, k, w, out| {
            // SAFETY: handed out only at the AVX-512 levels, which `check_isa`
            // verified the CPU has (with AVX2/FMA/F16C).
            unsafe { avx512::gemm(x, m, k, w, out) }
        }),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(|x, m, k, w, out| {
            // SAFETY: handed out only at the AVX2 level, which `check_isa`
            // verified the CPU has (with FMA/F16C).
            unsafe { avx2::gemm(x, m, k, w, out) }
        }),
        _ => None,
    }
}

/// A float weight format the GEMV / prefill split below can run: f32, or
/// f16 and bf16 widened in registers.
pub(crate) trait FloatWeight: Sized + Sync + Prefill {
    /// From this many activation rows on, levels without a prefill kernel of
    /// ours hand the product to the gemm crate (ours take over from
    /// [`GEMM_MIN_M`] rows for every format).
    const GEMM_MIN_M: usize;
    fn gemm_weights(w: &[Self]) -> crate::gemm::Weights<'_>;
    fn gemv_chunk(isa: Isa, x: &[f32], m: usize, k: usize, w: &[Self], out: &mut ColBlock<'_>);
}

impl FloatWeight for f32 {
    const GEMM_MIN_M: usize = GEMM_MIN_M;
    fn gemm_weights(w: &[f32]) -> crate::gemm::Weights<'_> {
        crate::gemm::Weights::F32(w)
    }
    fn gemv_chunk(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f32], out: &mut ColBlock<'_>) {
        gemv_chunk(isa, x, m, k, w, out)
    }
}

#[cfg(target_arch = "x86_64")]
/// From this many activation rows on, AVX-512 products copy activations
/// that are off a cache line onto one (below it the copy is not repaid:
/// a one-row GEMV is bound by its weights).
const ALIGN_MIN_M: usize = 4;

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Each thread's activations on cache lines ([`float_linear`]): as
    /// large as the largest `m x k` it has multiplied (kept, so a model's
    /// products allocate it once).
    static ALIGNED_X: std::cell::Cell<AlignedBuf<f32>> =
        const { std::cell::Cell::new(AlignedBuf::new()) };
}

/// The one driver of both float formats: shape and ISA checks, the gemm path
/// for prefill-sized `m` unless `invariant`, else GEMV chunks of rows
/// (threaded when it pays).
#[allow(clippy::too_many_arguments)]
pub(crate) fn float_linear<W: FloatWeight>(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    y: &mut [f32],
    invariant: bool,
) {
    check_shapes(x.len(), m, k, w.len(), n, y.len());
    check_isa(isa);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx512()
        && m >= ALIGN_MIN_M
        && k.is_multiple_of(16)
        && !aligned::is_aligned(x.as_ptr())
    {
        // The AVX-512 blocks read every activation row in 64-byte pieces,
        // and off a cache line each piece spans two: where `x` does not
        // start on one (a `Vec` starts 16 bytes past), the rows go onto
        // lines first (f32 prefill 1.2-1.5x, kernels/BENCH.md). Taken out
        // of the thread's cell, not borrowed, so a nested product would
        // only allocate its own.
        let mut buf = ALIGNED_X.take();
        if buf.len() < x.len() {
            buf.resize_zeroed(x.len());
        }
        buf[..x.len()].copy_from_slice(x);
        float_linear(isa, &buf[..x.len()], m, k, w, n, y, invariant);
        ALIGNED_X.set(buf);
        return;
    }
    let parallel = par::worth_parallel(m, k, n);
    if !invariant && m >= GEMM_MIN_M {
        // Our prefill kernels read every format as stored, so the format's
        // own threshold (set for the gemm crate, which widens f16 and bf16
        // weights into a copy first) does not apply to them.
        if let Some(f) = prefill_chunk::<W>(isa) {
            par::for_col_chunks(y, m, n, GEMV_CHUNK, parallel, |j0, j1, out| {
                f(x, m, k, &w[j0 * k..j1 * k], out)
            });
            return;
        }
    }
    if m >= W::GEMM_MIN_M && !invariant && crate::gemm::native(isa) {
        crate::gemm::run(x, m, k, W::gemm_weights(w), n, y);
        return;
    }
    par::for_col_chunks(y, m, n, par::gemv_cols(n, 1), parallel, |j0, j1, out| {
        W::gemv_chunk(isa, x, m, k, &w[j0 * k..j1 * k], out)
    });
}

fn gemv_chunk(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f32], out: &mut ColBlock<'_>) {
    match isa {
        // SAFETY: `check_isa` verified the CPU has AVX2 + FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::gemv(x, m, k, w, out) },
        // SAFETY: `check_isa` verified the CPU has AVX-512 F/BW/VL (+ AVX2/FMA).
        #[cfg(target_arch = "x86_64")]
        _ if isa.has_avx512() => unsafe { avx512::gemv(x, m, k, w, out) },
        Isa::Neon => neon::gemv(x, m, k, w, out),
        _ => scalar::gemv(x, m, k, w, out),
    }
}

/// Refuses a level this CPU cannot run: calling its kernels would be undefined
/// behaviour. NEON off aarch64 is the safe plain-Rust emulation.
pub(crate) fn check_isa(isa: Isa) {
    let emulated_neon = isa == Isa::Neon && !cfg!(target_arch = "aarch64");
    assert!(
        isa.supported() || emulated_neon,
        "kernels: ISA level {isa} is not supported by this CPU"
    );
}

pub(crate) fn check_shapes(xl: usize, m: usize, k: usize, wl: usize, n: usize, yl: usize) {
    assert!(
        m.checked_mul(k) == Some(xl),
        "linear: x has {xl} values, expected {m}x{k}"
    );
    assert!(
        n.checked_mul(k) == Some(wl),
        "linear: w has {wl} values, expected {n}x{k}"
    );
    assert!(
        m.checked_mul(n) == Some(yl),
        "linear: y has {yl} values, expected {m}x{n}"
    );
}
