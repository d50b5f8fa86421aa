//! f32 linear layers: `y[m, n] = x[m, k] · w[n, k]ᵀ`.
//!
//! Batch-1 decode is a GEMV over weight rows (each output is one dot product of
//! a contiguous weight row with x), which streams memory and wants its own
//! kernel; prefill and batched decode go to the gemm crate.

pub mod scalar;

use crate::dispatch::{active, Isa};

/// `y = x · wᵀ` at the active ISA level.
pub fn linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    linear_with(active(), x, m, k, w, n, y)
}

/// `y = x · wᵀ` at a chosen ISA level.
pub fn linear_with(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    check_shapes(x.len(), m, k, w.len(), n, y.len());
    match isa {
        _ => scalar::linear(x, m, k, w, n, y),
    }
}

pub(crate) fn check_shapes(xl: usize, m: usize, k: usize, wl: usize, n: usize, yl: usize) {
    assert!(xl == m * k, "linear: x has {xl} values, expected {m}x{k}");
    assert!(wl == n * k, "linear: w has {wl} values, expected {n}x{k}");
    assert!(yl == m * n, "linear: y has {yl} values, expected {m}x{n}");
}
