//! The machine's arithmetic ceiling, for reading the benchmark figures against:
//! back-to-back independent `vpdpbusd` (int8 dot products, 64 multiply-adds
//! each) and `vfmadd` (f32, 16 each) on 512-bit registers where the CPU has
//! AVX-512 VNNI, and on every AVX2 CPU `vfmadd` on 256-bit registers (8
//! each: the float prefill kernels' instruction), `vpmaddwd` + `vpaddd`
//! (16 each: the exact i16 form of the AVX2 int8 kernels) and `vpmaddubsw` +
//! `vpaddw` (32 each: the int4 screen's form), one loop per thread, no
//! memory traffic.
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

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: u64) -> f64 {
        // c·a + b converges to 1: no overflow to infinity, whatever `iters`.
        let a = _mm256_set1_ps(0.9999);
        let b = _mm256_set1_ps(0.0001);
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm256_fmadd_ps(*c, a, b);
            }
        }
        let mut out = [0f32; 8];
        let s = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &c| _mm256_add_ps(s, c));
        _mm256_storeu_ps(out.as_mut_ptr(), s);
        out.iter().map(|&v| v as f64).sum()
    }

    /// `CHAINS` independent chains of `c = step(c)` from `init`, `iters`
    /// times, summed as i32 lanes into a checksum (only the rate is read).
    #[inline(always)]
    unsafe fn int_chains(iters: u64, init: __m256i, step: impl Fn(__m256i) -> __m256i) -> f64 {
        let mut acc = [init; CHAINS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = step(*c);
            }
        }
        let mut out = [0i32; 8];
        // SAFETY: AVX2, the callers' target feature; a 32-byte store into
        // an array of 8 i32.
        unsafe {
            let s = acc
                .iter()
                .fold(_mm256_setzero_si256(), |s, &c| _mm256_add_epi32(s, c));
            _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, s);
        }
        out.iter().map(|&v| v as f64).sum()
    }

    /// The exact i16 form of the int8 kernels: each multiply takes the
    /// previous sum as an operand so the loop cannot be hoisted; its add is
    /// the accumulation an exact kernel needs.
    #[target_feature(enable = "avx2")]
    pub unsafe fn madd256(iters: u64) -> f64 {
        let a = _mm256_set1_epi16(3);
        // SAFETY: AVX2 is enabled for this function.
        unsafe {
            int_chains(iters, _mm256_set1_epi32(1), |c| {
                _mm256_add_epi32(c, _mm256_madd_epi16(c, a))
            })
        }
    }

    /// The int4 screen's form: u8 x s8 pair sums into 16-bit lanes, then a
    /// 16-bit add (the sums saturate and wrap freely).
    #[target_feature(enable = "avx2")]
    pub unsafe fn maddubs256(iters: u64) -> f64 {
        let a = _mm256_set1_epi8(3);
        // SAFETY: AVX2 is enabled for this function.
        unsafe {
            int_chains(iters, _mm256_set1_epi16(1), |c| {
                _mm256_add_epi16(c, _mm256_maddubs_epi16(c, a))
            })
        }
    }

    /// Runs `f(iters)` on `threads` threads and prints its rate.
    fn probe(name: &str, threads: usize, macs_per_instr: f64, f: unsafe fn(u64) -> f64) {
        let iters = 20_000_000u64;
        let t = std::time::Instant::now();
        let hs: Vec<_> = (0..threads)
            // SAFETY: main calls probe only with a kernel whose features it
            // detected.
            .map(|_| std::thread::spawn(move || unsafe { f(iters) }))
            .collect();
        let sink: f64 = hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum();
        let s = t.elapsed().as_secs_f64();
        let instrs = (iters * CHAINS as u64 * threads as u64) as f64;
        println!(
            "{name}: {threads} threads, {:.1} G instructions/s, {:.1} GMAC/s (checksum {sink:.3e})",
            instrs / s / 1e9,
            instrs * macs_per_instr / s / 1e9
        );
    }

    pub fn main() {
        let threads: usize = std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(2);
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            for t in [1, threads] {
                probe("f32 vfmadd ymm", t, 8.0, fma256);
                probe("i16 vpmaddwd+vpaddd ymm", t, 16.0, madd256);
                probe("u8s8 vpmaddubsw+vpaddw ymm", t, 32.0, maddubs256);
            }
        }
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")) {
            println!("this CPU has no AVX-512 VNNI");
            return;
        }
        // SAFETY (both wrappers): AVX-512 F/BW/VNNI and FMA were detected above.
        probe("int8 vpdpbusd zmm", threads, 64.0, |i| unsafe {
            vnni(i) as f64
        });
        probe("f32 vfmadd zmm", threads, 16.0, |i| unsafe { fma(i) });
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    peak::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("x86-64 only");
}
