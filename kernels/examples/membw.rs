//! A STREAM-like read-bandwidth probe: how fast one or more cores can stream a
//! working set of each size, from L1 out to DRAM.
//!
//! The decode step of a small T5 is bound by reading weights (the tied LM head
//! alone is 8.2 MB in int8, 33 MB in f32 for t5-efficient-tiny-nl2), so the
//! floor of a step is `bytes read / bandwidth at that working set`. This probe
//! measures that bandwidth on the machine at hand so the engine's figures can
//! be stated as a fraction of it (kernels/BENCH.md).
//!
//! ```sh
//! cargo run --release -p t5edge-kernels --example membw            # 1 and 2 threads
//! cargo run --release -p t5edge-kernels --example membw -- 1 2 4   # thread counts
//! ```
//!
//! Each thread reads its own contiguous part of the working set, the same part
//! every pass (a fixed assignment, as a pinned row block of a weight matrix
//! would be), summing 64-bit words so the loads cannot be elided. Passes repeat
//! until ~0.2 s have gone by; the best of three such runs is reported.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Sums `words` eight lanes at a time (the compiler vectorizes this loop to
/// the baseline's 128-bit loads, or 256-bit under [`sum_avx2`]).
#[inline(always)]
fn sum_body(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = words.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &w) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(w);
        }
    }
    let mut s = tail.iter().fold(0u64, |s, &w| s.wrapping_add(w));
    for a in acc {
        s = s.wrapping_add(a);
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2(words: &[u64]) -> u64 {
    sum_body(words)
}

fn sum(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just checked to support AVX2, the only feature
        // `sum_avx2` is compiled for.
        return unsafe { sum_avx2(words) };
    }
    sum_body(words)
}

/// GB/s for `threads` threads each streaming its own part of `buf`.
fn measure(buf: &[u64], threads: usize) -> f64 {
    let part = buf.len().div_ceil(threads);
    let parts: Vec<&[u64]> = buf.chunks(part).collect();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let budget = Duration::from_millis(200);
        let bytes = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .map(|p| {
                    s.spawn(move || {
                        sum(p); // warm: bring the part into this core's caches
                        let t0 = Instant::now();
                        let mut passes = 0usize;
                        while t0.elapsed() < budget {
                            black_box(sum(black_box(p)));
                            passes += 1;
                        }
                        (passes * std::mem::size_of_val(*p), t0.elapsed())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("probe thread"))
                .collect::<Vec<_>>()
        });
        // Each thread's own rate, summed: the threads run concurrently, so
        // this is the aggregate rate while all of them stream.
        let gbs: f64 = bytes
            .iter()
            .map(|&(b, t)| b as f64 / t.as_secs_f64() / 1e9)
            .sum();
        best = best.max(gbs);
    }
    best
}

fn main() {
    let threads: Vec<usize> = {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .map(|a| match a.parse() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!("membw: {a:?} is not a thread count (a whole number >= 1)");
                    std::process::exit(2);
                }
            })
            .collect();
        if args.is_empty() {
            vec![1, 2]
        } else {
            args
        }
    };
    let sizes_kb = [
        32, 128, 512, 1024, 2048, 3072, 4096, 6144, 8192, 16384, 32768, 40960, 65536, 524288,
    ];
    print!("| working set |");
    for t in &threads {
        print!(" {t} thread{} (GB/s) |", if *t == 1 { "" } else { "s" });
    }
    println!();
    println!("|---|{}", "---|".repeat(threads.len()));
    for kb in sizes_kb {
        // Distinct non-zero words, so no page is shared zero memory.
        let buf: Vec<u64> = (0..kb * 1024 / 8).map(|i| i as u64 | 1).collect();
        let label = if kb >= 1024 {
            format!("{} MB", kb / 1024)
        } else {
            format!("{kb} KB")
        };
        print!("| {label} |");
        for &t in &threads {
            print!(" {:.1} |", measure(&buf, t));
        }
        println!();
    }
}
