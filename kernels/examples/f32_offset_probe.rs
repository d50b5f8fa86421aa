//! The f32 product `linear_invariant` (the f32 encoder's and `--exact`
//! check's: the GEMV's bits at any row count) of M rows against N x K
//! weights, with the weights and the activations each 0, 16 or 48 bytes
//! past a cache line (48: where an HF-written safetensors file of these
//! shapes puts its tensors; 16: a `Vec<f32>` from glibc), best of 7 x 500
//! calls at the best level on THREADS threads.
//!
//! `cargo run --release -p t5edge-kernels --example f32_offset_probe -- M K N THREADS`
//! (the f32 encoder at W1's 26 ids: 26 256 1024 2)
mod common;

use std::time::Instant;
use t5edge_kernels::{dispatch, f32 as lf32};

fn main() {
    let [m, k, n, threads] = common::args("f32_offset_probe M K N THREADS");
    t5edge_kernels::pool::set_global_threads(threads);
    let (x, w) = (common::fill(m * k, 7919), common::fill(n * k, 104729));
    let isa = dispatch::best();
    let mut y = vec![0f32; m * n];
    let (mut xb, mut wb) = (vec![0f32; m * k + 32], vec![0f32; n * k + 32]);
    for (wo, xo) in [(0, 0), (48, 0), (0, 16), (48, 16), (0, 0), (48, 16)] {
        let xp = common::placed(&mut xb, &x, xo);
        let wp = common::placed(&mut wb, &w, wo);
        let mut best = f64::MAX;
        for _ in 0..7 {
            let t = Instant::now();
            for _ in 0..500 {
                lf32::linear_invariant_with(isa, xp, m, k, wp, n, &mut y);
            }
            best = best.min(t.elapsed().as_secs_f64() / 500.0);
        }
        println!(
            "{isa} m{m} k{k} n{n} t{threads}, weights {wo} / activations {xo} bytes past a line: {:.2} us, {:.1} G multiply-adds/s",
            best * 1e6,
            (m * k * n) as f64 / best / 1e9
        );
    }
}
