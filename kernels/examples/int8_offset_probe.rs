//! The int8 product of M rows against one N x K matrix whose packed data
//! starts 0, 16 or 40 bytes past a cache line (0: `PackedInt8` and the
//! files `quantize` writes now; 16: a `Vec<i8>` from glibc; 40: the files
//! written before), at the best level on THREADS threads, best of 7 x 2,000
//! calls, twice over. Read with kernels/BENCH.md ("Operands on cache lines").
//!
//! `cargo run --release -p t5edge-kernels --example int8_offset_probe -- M K N THREADS`
//! (a decode step's `wi`: 1 256 1024 1; W3's: 128 256 1024 2)
mod common;

use std::time::Instant;
use t5edge_kernels::{dispatch, int8};

fn main() {
    let [m, k, n, threads] = common::args("int8_offset_probe M K N THREADS");
    t5edge_kernels::pool::set_global_threads(threads);
    let (x, w) = (common::fill(m * k, 7919), common::fill(n * k, 104729));
    let p = int8::PackedInt8::quantize(&w, n, k, 0).expect("quantize");
    let v = p.view();
    let isa = dispatch::best();
    let mut y = vec![0f32; m * n];
    for offset in [0usize, 16, 40, 0, 16, 40] {
        let mut buf = vec![0i8; v.data().len() + 128];
        let placed = common::placed(&mut buf, v.data(), offset);
        let wv =
            int8::Int8View::from_parts(n, k, 0, placed, v.scales(), v.row_sums(), v.err_norms())
                .expect("the same parts");
        let mut best = f64::MAX;
        for _ in 0..7 {
            let t = Instant::now();
            for _ in 0..2000 {
                int8::linear_with(isa, &x, m, k, &wv, &mut y);
            }
            best = best.min(t.elapsed().as_secs_f64() / 2000.0);
        }
        println!(
            "{isa} m{m} k{k} n{n} t{threads}, data {offset} bytes past a line: {:.2} us",
            best * 1e6
        );
    }
}
