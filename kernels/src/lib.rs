//! Compute kernels for t5edge: linear layers in f32, f16-storage and int8, a fused
//! attention kernel and the small row ops, each with a plain scalar twin and
//! runtime CPU dispatch.
//!
//! This crate knows nothing of T5 beyond what attention needs (a relative-position
//! bias and no score scaling). Every kernel takes plain slices in row-major order;
//! linear weights are `[n, k]` (out x in), as Hugging Face stores them, so
//! `y[m, n] = x[m, k] · w[n, k]ᵀ`.
//!
//! # Levels and dispatch
//! Every kernel has `fn op(..)` (runs at [`dispatch::active`]) and
//! `fn op_with(isa, ..)`. A level the CPU lacks panics (it would be undefined
//! behaviour), except `Isa::Neon` off aarch64, which runs the plain-Rust NEON
//! emulation so the NEON logic is tested on x86 (see `kernels/NEON.md`).
//!
//! # Determinism
//! Threading (rayon or the persistent spin pool, see [`pool`]; above ~1M
//! multiply-adds) splits outputs into chunks fixed by the shape; each output is computed by one task in a fixed order, so results
//! are bit-identical for any thread count. int8 results are moreover
//! bit-identical across all levels (exact integer dot products, same f32
//! epilogue); f32/f16 results differ between levels in the last bits.
//!
//! # Accuracy (what `tests/` checks against the f64 `reference`)
//! * f32 and f16-weight linear: `|y - y_ref| <= gamma_(k+2) · sum|x_i||w_i|`,
//!   `gamma_n = n u / (1 - n u)`, `u = 2^-24` (f16 weights widen exactly; against
//!   the original f32 weights add `2^-11 |w_i|` per term for the f16 rounding).
//! * int8: `sum_i (|x_i| s_w/2 + |w_i| s_x/2 + s_x s_w/4)` from the half-step
//!   rounding of both operands, plus `(groups + 4) u` of the magnitude for the
//!   f32 epilogue.
//! * attention: a convex combination of values, within
//!   `(e^(2P) - 1 + (2 tk + d + 16) u) · max|v|`, `P` the score error.
//! * row ops (`ops`, pulp backends): RMSNorm, residual adds, ReLU and argmax
//!   are bit-identical to their scalar twins at every level; GELU (tanh) within
//!   `8 u |x|`, SiLU within `4 u |x|`, exact GELU within `(0.75e-7 + 8 u) |x|`
//!   of the f64 reference (`tests/ops.rs`).

pub mod attention;
pub mod dispatch;
pub mod f16;
pub mod f32;
mod gemm;
pub mod int8;
pub(crate) mod neon_intrinsics;
pub mod ops;
mod par;
pub mod pool;
pub mod reference;

pub use dispatch::Isa;
pub use par::for_chunks_mut;
