//! Compute kernels for t5edge: linear layers in f32, f16-storage and int8, a fused
//! attention kernel and the small row ops, each with a plain scalar twin and
//! runtime CPU dispatch.
//!
//! This crate knows nothing of T5 beyond what attention needs (a relative-position
//! bias and no score scaling). Every kernel takes plain slices in row-major order;
//! linear weights are `[n, k]` (out x in), as Hugging Face stores them, so
//! `y[m, n] = x[m, k] · w[n, k]ᵀ`.
//!
//! | module | what it computes |
//! |---|---|
//! | [`f32`](mod@f32) | `y = x · wᵀ` with f32 weights: GEMV kernels for decode, register blocks or the gemm crate for prefill |
//! | [`f16`](mod@f16) | the same with f16 weights widened in registers (f32 arithmetic) |
//! | [`bf16`](mod@bf16) | the same with bf16 weights (a 16-bit shift widens them; `vdpbf16ps` for prefill where the CPU has AVX-512 BF16) |
//! | [`int8`] | int8 weights with per-row (or per-group) scales, activations quantised per token, exact i32 dot products |
//! | [`attention`] | fused online-softmax attention with relative-position bias, key mask and causal offset |
//! | [`ops`] | RMSNorm, activations, gated products, residual adds, argmax, top-k |
//! | [`dispatch`] | CPU feature detection and the ISA level ([`Isa`]), `T5EDGE_ISA` |
//! | [`pool`] | who runs parallel regions: a persistent spin pool or rayon, `T5EDGE_POOL` |
//! | [`reference`](mod@reference) | f64 twins of the kernels, the oracle of the tests |
//!
//! ```
//! use t5edge_kernels::{f32, Isa};
//! // y[1, 2] = x[1, 3] · w[2, 3]ᵀ
//! let (x, w) = ([1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 0.5, 0.5, 0.5]);
//! let mut y = [0.0; 2];
//! f32::linear(&x, 1, 3, &w, 2, &mut y); // at the active level
//! assert_eq!(y, [1.0, 3.0]);
//! f32::linear_with(Isa::Scalar, &x, 1, 3, &w, 2, &mut y); // at a chosen level
//! assert_eq!(y, [1.0, 3.0]);
//! ```
//!
//! # Levels and dispatch
//! The levels ([`Isa`]), lowest first:
//!
//! * `scalar`: plain Rust, no explicit SIMD; the twin every other path is
//!   checked against, and what runs where nothing better is detected.
//! * `avx2`: AVX2 + FMA + F16C (x86-64-v3).
//! * `avx512`: AVX-512 F/BW/VL on top of those.
//! * `avx512vnni`: AVX-512 with VNNI (`vpdpbusd`) for the int8 dot products.
//! * `neon`: AArch64 NEON, with `sdot` where the CPU has dotprod. Off aarch64
//!   it exists only as a plain-Rust emulation of the intrinsics, so the NEON
//!   logic runs in the x86 tests (`kernels/NEON.md` says what has not run on
//!   real ARM hardware).
//!
//! The CPU is detected once ([`dispatch::features`]); [`dispatch::active`] is
//! the level kernels run at: the best one the CPU has ([`dispatch::best`]), or
//! the one `T5EDGE_ISA=scalar|avx2|avx512|avx512vnni|amx|neon` names. A forced
//! level the CPU lacks is refused ([`dispatch::requested`] reports it), never
//! silently downgraded, so a test or benchmark that names a path runs it.
//! Every kernel has `fn op(..)`, which runs at [`dispatch::active`], and
//! `fn op_with(isa, ..)`. A level the CPU lacks panics there (it would be
//! undefined behaviour), except `Isa::Neon` off aarch64, which runs the
//! emulation.
//!
//! # Configuration
//! This crate reads no environment variable. The application sets the level
//! ([`dispatch::force`]), the thread pool ([`pool::set_backend`],
//! [`pool::configure_spin`], [`pool::set_global_threads`]) and the threading
//! threshold ([`par::set_min_macs`]); t5edge does it from `T5EDGE_*`
//! variables in its `runtime` module.
//!
//! # Determinism
//! Threading (rayon or the persistent spin pool, see [`pool`]; above ~1M
//! multiply-adds) splits outputs into chunks fixed by the shape; each output is
//! computed by one task in a fixed order, so results are bit-identical for any
//! thread count and either pool backend.
//!
//! Across levels, only the int8 products are bit-identical (exact integer dot
//! products, the same f32 epilogue in the same order). f32 and f16-weight
//! products and attention sum in a different order at each level (vector
//! width, accumulator count, blocking; the softmax's exp is a vectorised
//! polynomial at the SIMD levels), so their results differ between levels in
//! the last bits, each within the budget below. A model built on them gives
//! logits that differ between levels in the last bits too, and argmax at small
//! margins can differ.
//!
//! # Accuracy (what `tests/` checks against the f64 [`reference`](mod@reference))
//! These are the error budgets the proptests hold every level to:
//!
//! * f32, f16 and bf16-weight linear: `|y - y_ref| <= gamma_(k+2) · sum|x_i||w_i|`,
//!   `gamma_n = n u / (1 - n u)`, `u = 2^-24` (f16 and bf16 weights widen exactly; against
//!   the original f32 weights add `2^-11 |w_i|` per term for the f16 rounding,
//!   `2^-8 |w_i|` for bf16's). bf16 prefill with `vdpbf16ps` (AVX-512 BF16
//!   CPUs) rounds the activations to bf16 too: `2^-8 · sum|x_i w_i|` more,
//!   plus `2^-125 (sum|x_i| + sum|w_i| + k)` for its flushed denormals
//!   ([`bf16::avx512bf16`]).
//! * int8: `sum_i (|x_i| s_w/2 + |w_i| s_x/2 + s_x s_w/4)` from the half-step
//!   rounding of both operands, plus `(groups + 4) u` of the magnitude for the
//!   f32 epilogue; and bit-identical to the scalar twin at every level.
//! * attention: a convex combination of values, within
//!   `(e^(2P) - 1 + (2 tk + d + 16) u) · max|v|`, `P` the score error.
//! * row ops (`ops`, pulp backends): RMSNorm, residual adds, ReLU and argmax
//!   are bit-identical to their scalar twins at every level; GELU (tanh) within
//!   `8 u |x|`, SiLU within `4 u |x|`, exact GELU within `(0.75e-7 + 8 u) |x|`
//!   of the f64 reference (`tests/ops.rs`).

#![warn(missing_docs)]

pub mod aligned;
pub mod attention;
pub mod bf16;
pub mod dispatch;
pub mod f16;
pub mod f32;
mod gemm;
pub mod int8;
pub(crate) mod neon_intrinsics;
pub mod ops;
pub mod par;
pub mod pool;
pub mod reference;
pub mod screen;
#[cfg(target_arch = "x86_64")]
pub mod tiles;

pub use dispatch::Isa;
pub use par::for_chunks_mut;
