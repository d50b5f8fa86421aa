//! Linear layers with f16 weights: `y[m, n] = x[m, k] · w[n, k]ᵀ` where `w` is
//! stored as IEEE half precision and `x`, `y` are f32.
//!
//! Weights are widened in registers (F16C `vcvtph2ps`, AVX-512 `vcvtph2ps zmm`),
//! which is exact, and every product and sum is f32: halving the bytes streamed
//! per MAC is the whole point, the arithmetic stays that of the f32 path. The
//! GEMV / gemm split and the determinism guarantees are those of [`crate::f32`].

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
// AVX-512: the float GEMV of `crate::f32::avx512`, generic over the
// weight format (`Wide`), widens f16 in registers.
pub(crate) mod neon;
pub mod scalar;

use crate::dispatch::{active, Isa};
use crate::f32::FloatWeight;
use crate::par::ColBlock;
use half::f16;

/// From this many activation rows on, f16 weights go to the gemm crate, at
/// the levels without a prefill kernel of ours (NEON). Below it the
/// row-blocked GEMV wins: gemm needs the weights widened to f32 in memory
/// first (a whole layer per call, which a decode step of a batch cannot
/// amortise), and its per-thread packing buffers cost every worker several MB
/// of resident memory. Measured in kernels/BENCH.md. Our AVX2 and AVX-512
/// prefill kernels read f16 as stored and take over from
/// [`crate::f32::GEMM_MIN_M`] rows, as for f32.
pub const F16_GEMM_MIN_M: usize = 32;

/// `y = x · wᵀ` at the active ISA level ([`crate::dispatch::active`]):
/// `x` is `[m, k]` f32, `w` is `[n, k]` f16 (out x in), `y` is `[m, n]` f32.
///
/// Panics if the shapes disagree.
pub fn linear(x: &[f32], m: usize, k: usize, w: &[f16], n: usize, y: &mut [f32]) {
    linear_with(active(), x, m, k, w, n, y)
}

/// `y = x · wᵀ` at a chosen ISA level. Panics if the shapes disagree or the CPU
/// cannot run `isa`; `Isa::Neon` off aarch64 runs the NEON emulation.
pub fn linear_with(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f16], n: usize, y: &mut [f32]) {
    crate::f32::float_linear(isa, x, m, k, w, n, y, false)
}

/// [`linear`] with every row's bits those of the same row alone: always the
/// row-blocked GEMV, whose per-row arithmetic is [`crate::f32::linear_invariant`]'s
/// kind (see there).
pub fn linear_invariant(x: &[f32], m: usize, k: usize, w: &[f16], n: usize, y: &mut [f32]) {
    linear_invariant_with(active(), x, m, k, w, n, y)
}

/// [`linear_invariant`] at a chosen ISA level (panics as [`linear_with`]).
pub fn linear_invariant_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f16],
    n: usize,
    y: &mut [f32],
) {
    crate::f32::float_linear(isa, x, m, k, w, n, y, true)
}

impl FloatWeight for f16 {
    const GEMM_MIN_M: usize = F16_GEMM_MIN_M;
    fn gemm_weights(w: &[f16]) -> crate::gemm::Weights<'_> {
        crate::gemm::Weights::F16(w)
    }
    fn gemv_chunk(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f16], out: &mut ColBlock<'_>) {
        gemv_chunk(isa, x, m, k, w, out)
    }
}

fn gemv_chunk(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f16], out: &mut ColBlock<'_>) {
    match isa {
        // SAFETY: `check_isa` verified the CPU has AVX2 + FMA + F16C.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::gemv(x, m, k, w, out) },
        // SAFETY: `check_isa` verified the CPU has AVX-512 F/BW/VL (+ AVX2/FMA/F16C).
        #[cfg(target_arch = "x86_64")]
        _ if isa.has_avx512() => unsafe { crate::f32::avx512::gemv(x, m, k, w, out) },
        Isa::Neon => neon::gemv(x, m, k, w, out),
        _ => scalar::gemv(x, m, k, w, out),
    }
}
