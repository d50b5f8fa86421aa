//! The f32 product `linear_invariant` (the f32 encoder's and `--exact`
//! check's: the GEMV's bits at any row count) of M rows against N x K
//! weights, with the weights and the activations each 0, 16 or 48 bytes
//! past a cache line (48: where an HF-written safetensors file of these
//! shapes puts its tensors; 16: a `Vec<f32>` from glibc), best of 7 x 500
//! calls at the best level on THREADS threads.
//!
//! `cargo run --release -p t5edge-kernels --example f32_offset_probe -- M K N THREADS`
//! (the f32 encoder at W1's 26 ids: 26 256 1024 2)
use std::time::Instant;
use t5edge_kernels::{dispatch, f32 as lf32};

/// `len` values of `src` copied to start `offset` bytes past a line of `buf`.
fn placed<'a>(buf: &'a mut [f32], src: &[f32], offset: usize) -> &'a [f32] {
    let start = (64 - buf.as_ptr() as usize % 64) % 64 / 4 + offset / 4;
    buf[start..start + src.len()].copy_from_slice(src);
    &buf[start..start + src.len()]
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let [m, k, n, threads] = a[..] else {
        eprintln!("usage: f32_offset_probe M K N THREADS");
        std::process::exit(2);
    };
    t5edge_kernels::pool::set_global_threads(threads);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 104729 % 1000) as f32) / 1000.0 - 0.5)
        .collect();
    let isa = dispatch::best();
    let mut y = vec![0f32; m * n];
    let (mut xb, mut wb) = (vec![0f32; m * k + 32], vec![0f32; n * k + 32]);
    for (wo, xo) in [(0, 0), (48, 0), (0, 16), (48, 16), (0, 0), (48, 16)] {
        let xp = placed(&mut xb, &x, xo);
        let wp = placed(&mut wb, &w, wo);
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
