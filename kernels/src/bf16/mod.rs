//! Linear layers with bf16 weights: `y[m, n] = x[m, k] · w[n, k]ᵀ` where `w` is
//! stored as bfloat16 (the upper half of an f32) and `x`, `y` are f32.
//!
//! Widening a bf16 is a 16-bit shift, exact, so every level widens in
//! registers (AVX2 `vpmovzxwd` + `vpslld`, the same at 512 bits, NEON
//! `ushll`) and runs the f32 arithmetic of the f16 path: the bytes streamed
//! per MAC are halved, the sums are those of [`crate::f32`]. Checkpoints are
//! stored in bf16, so a model can run from the mapped file with no widened
//! copy of the layer.
//!
//! At the `amx` level on a CPU with AMX-BF16, prefill-sized products of
//! whole tiles (from [`BF16_GEMM_MIN_M`] rows, [`amx_takes`]) run on the
//! tiles in the same f32 arithmetic: each activation is split exactly into
//! three bf16, so every product of a weight and an activation is exact and
//! only the f32 sums round, as in the widening kernels, in another order
//! (`amx::linear_split`; a T5-XXL encoder 3x faster on the Intel Xeon,
//! kernels/BENCH.md). Its rows are not those of the GEMV: at this level a
//! batch's bf16 prefill rows do not promise the bits they get alone
//! (decode steps take [`linear_invariant`], which never uses the tiles).
//!
//! An opt-in, where the CPU has AVX-512 BF16: [`linear_dot_with`] runs
//! prefill-sized products (from [`BF16_GEMM_MIN_M`] rows) at the AVX-512
//! levels with `vdpbf16ps`, which multiplies bf16 pairs and accumulates in
//! f32, twice the MACs per instruction of a widened FMA. It needs the
//! activations in bf16 too, so they are rounded to bf16 (nearest even)
//! first, as a framework running the model in bf16 does: its error budget
//! adds that rounding ([`avx512bf16`]'s docs, kernels/tests/linear_bf16.rs).
//! It is not the default: that rounding moves a model's outputs by about
//! 2^-9 relative (a 150-token encoder on a bf16 checkpoint: 3.6e-3 against
//! HF's fp32), so results would differ between CPUs that have the
//! instruction and CPUs that do not.

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod avx512bf16;
pub(crate) mod neon;
pub mod scalar;

use crate::dispatch::{active, Isa};
use crate::f32::FloatWeight;
use crate::par::ColBlock;
use half::bf16;

/// From this many activation rows on, bf16 weights take the prefill path
/// (the gemm crate on widened blocks at AVX2 and on aarch64, register blocks
/// at the AVX-512 levels): the threshold of f16 weights, whose widening
/// costs the same (kernels/BENCH.md).
pub const BF16_GEMM_MIN_M: usize = crate::f16::F16_GEMM_MIN_M;

/// `y = x · wᵀ` at the active ISA level ([`crate::dispatch::active`]):
/// `x` is `[m, k]` f32, `w` is `[n, k]` bf16 (out x in), `y` is `[m, n]` f32.
///
/// Panics if the shapes disagree.
pub fn linear(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    linear_with(active(), x, m, k, w, n, y)
}

/// `y = x · wᵀ` at a chosen ISA level, in f32 arithmetic: on the widened
/// weights, or on AMX-BF16 tiles with the activations split exactly where
/// [`amx_takes`]. Panics if the shapes disagree or the CPU cannot run
/// `isa`; `Isa::Neon` off aarch64 runs the NEON emulation.
pub fn linear_with(isa: Isa, x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if amx_takes(isa, m, k, n) {
        return amx::linear_split(x, m, k, w, n, y);
    }
    crate::f32::float_linear(isa, x, m, k, w, n, y, false)
}

/// Whether an `[m, k] x [n, k]` product at `isa` runs on AMX-BF16 tiles
/// ([`linear_with`] split, [`linear_dot_with`] rounded): the `amx` level on
/// a CPU with AMX-BF16, from [`BF16_GEMM_MIN_M`] rows, whole tiles
/// (`amx::fits`).
pub fn amx_takes(isa: Isa, m: usize, k: usize, n: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return m >= BF16_GEMM_MIN_M && isa == Isa::Amx && amx::available() && amx::fits(k, n);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, m, k, n);
        false
    }
}

/// [`linear`] where prefill may round the activations to bf16: from
/// [`BF16_GEMM_MIN_M`] rows, AMX-BF16 tiles at the `amx` level where the CPU
/// has them and the shape is whole tiles ([`amx`]), else at the AVX-512
/// levels on a CPU with AVX-512 BF16 `vdpbf16ps` (module docs); elsewhere
/// the same as [`linear`].
pub fn linear_dot(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    linear_dot_with(active(), x, m, k, w, n, y)
}

/// [`linear_dot`] at a chosen ISA level (panics as [`linear_with`]).
pub fn linear_dot_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[bf16],
    n: usize,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if amx_takes(isa, m, k, n) {
        return amx::linear(x, m, k, w, n, y);
    }
    #[cfg(target_arch = "x86_64")]
    if m >= BF16_GEMM_MIN_M && isa.has_avx512() && avx512bf16::available() {
        crate::f32::check_shapes(x.len(), m, k, w.len(), n, y.len());
        return avx512bf16::linear(x, m, k, w, n, y);
    }
    linear_with(isa, x, m, k, w, n, y)
}

/// [`linear`] with every row's bits those of the same row alone: always the
/// row-blocked GEMV with weights widened in registers (never the gemm
/// crate, nor `vdpbf16ps`), whose per-row arithmetic is
/// [`crate::f32::linear_invariant`]'s kind (see there).
pub fn linear_invariant(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    linear_invariant_with(active(), x, m, k, w, n, y)
}

/// [`linear_invariant`] at a chosen ISA level (panics as [`linear_with`]).
pub fn linear_invariant_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[bf16],
    n: usize,
    y: &mut [f32],
) {
    crate::f32::float_linear(isa, x, m, k, w, n, y, true)
}

impl FloatWeight for bf16 {
    const GEMM_MIN_M: usize = BF16_GEMM_MIN_M;
    fn gemm_weights(w: &[bf16]) -> crate::gemm::Weights<'_> {
        crate::gemm::Weights::Bf16(w)
    }
    fn gemv_chunk(isa: Isa, x: &[f32], m: usize, k: usize, w: &[bf16], out: &mut ColBlock<'_>) {
        gemv_chunk(isa, x, m, k, w, out)
    }
}

fn gemv_chunk(isa: Isa, x: &[f32], m: usize, k: usize, w: &[bf16], out: &mut ColBlock<'_>) {
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
