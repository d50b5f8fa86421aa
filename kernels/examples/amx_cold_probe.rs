//! `int8::linear` of M rows against P different N x K weight matrices in
//! turn, at the best level on THREADS threads, best of 5: with P = 1 the
//! weights stay in cache when small, with P large they stream from L3 or
//! memory as a large model's layers do. Per product: microseconds,
//! multiply-adds a second, weight bytes a second.
//!
//! `cargo run --release -p t5edge-kernels --example amx_cold_probe -- M K N P THREADS`
//! (large W3's `wi` on one by-rows task: 64 1024 4096 64 1)
mod common;

use std::time::Instant;
use t5edge_kernels::{dispatch, int8};

fn main() {
    let [m, k, n, p, threads] = common::args("amx_cold_probe M K N P THREADS");
    t5edge_kernels::pool::set_global_threads(threads);
    let x = common::fill(m * k, 7919);
    let ws: Vec<int8::PackedInt8> = (0..p)
        .map(|s| {
            let w: Vec<f32> = (0..n * k)
                .map(|i| (((i + s) * 104729 % 1000) as f32) / 1000.0 - 0.5)
                .collect();
            int8::PackedInt8::quantize(&w, n, k, 0).expect("quantize")
        })
        .collect();
    let mut y = vec![0f32; m * n];
    let isa = dispatch::best();
    let reps = (400 / p).max(2);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            for w in &ws {
                int8::linear_with(isa, &x, m, k, &w.view(), &mut y);
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / (reps * p) as f64);
    }
    println!(
        "{isa} m{m} k{k} n{n} p{p} t{threads}: {:.1} us a product, {:.0} G multiply-adds/s, weights {:.1} GB/s",
        best * 1e6,
        (m * k * n) as f64 / best / 1e9,
        (n * k) as f64 / best / 1e9
    );
}
