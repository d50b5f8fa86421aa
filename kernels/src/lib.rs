//! Compute kernels for t5edge: linear layers in f32, f16-storage and int8, a fused
//! attention kernel and the small row ops, each with a plain scalar twin and
//! runtime CPU dispatch.
//!
//! This crate knows nothing of T5 beyond what attention needs (a relative-position
//! bias and no score scaling). Every kernel takes plain slices in row-major order;
//! linear weights are `[n, k]` (out x in), as Hugging Face stores them, so
//! `y[m, n] = x[m, k] · w[n, k]ᵀ`.

pub mod attention;
pub mod dispatch;
pub mod f16;
pub mod f32;
mod gemm;
pub mod int8;
pub(crate) mod neon_intrinsics;
pub mod ops;
mod par;
pub mod reference;

pub use dispatch::Isa;
