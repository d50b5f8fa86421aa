//! The machine's arithmetic ceiling, for reading the benchmark figures against:
//! back-to-back independent `vpdpbusd` (int8 dot products, 64 multiply-adds
//! each) and `vfmadd` (f32, 16 each) on 512-bit registers, one loop per
//! thread, no memory traffic.
//!
//! `cargo run --release -p t5edge-kernels --example isa_peak -- [threads]`

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    /// Independent accumulator chains: enough to cover the instructions'
    /// latency on every current core.
    const CHAINS: usize = 12;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn vnni(iters: u64) -> i64 {
        let a = _mm512_set1_epi32(0x0102_0304);
        let b = _mm512_set1_epi32(0x0506_0708);
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm512_dpbusd_epi32(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_epi32(c) as i64).sum()
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn fma(iters: u64) -> f64 {
        let a = _mm512_set1_ps(1.0001);
        let b = _mm512_set1_ps(0.9999);
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm512_fmadd_ps(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm512_reduce_add_ps(c) as f64).sum()
    }

    pub fn main() {
        let threads: usize = std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(2);
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")) {
            println!("this CPU has no AVX-512 VNNI");
            return;
        }
        let iters = 20_000_000u64;
        for (name, macs_per_instr) in [("int8 vpdpbusd", 64.0), ("f32 vfmadd", 16.0)] {
            let t = std::time::Instant::now();
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::spawn(move || {
                        // SAFETY: AVX-512 F/BW/VNNI and FMA were detected above.
                        unsafe {
                            if macs_per_instr == 64.0 {
                                vnni(iters) as f64
                            } else {
                                fma(iters)
                            }
                        }
                    })
                })
                .collect();
            let sink: f64 = hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum();
            let s = t.elapsed().as_secs_f64();
            let instrs = (iters * CHAINS as u64 * threads as u64) as f64;
            println!(
                "{name}: {threads} threads, {:.1} G instructions/s, {:.0} GMAC/s (checksum {sink:.3e})",
                instrs / s / 1e9,
                instrs * macs_per_instr / s / 1e9
            );
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    peak::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("x86-64 only");
}
