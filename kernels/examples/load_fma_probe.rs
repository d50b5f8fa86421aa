//! What a 512-bit load costs the FMAs beside it: one thread runs 16
//! independent f32 FMA chains with no load, one load per four FMAs, one
//! per two (the float prefill block's mix: 4 weight and 4 activation
//! vectors a step) and one per FMA, every operand in L1, and prints the FMA
//! instructions issued per second. Where a load costs as much as an FMA,
//! a block's speed follows FMAs plus loads, whatever its shape
//! (kernels/BENCH.md, docs/MACHINES.md).
//!
//! `cargo run --release -p t5edge-kernels --example load_fma_probe`

#[cfg(target_arch = "x86_64")]
mod probe {
    use std::arch::x86_64::*;
    use std::time::Instant;

    /// Elements a row: 1 KB, so four rows of each operand stay in L1.
    const K: usize = 256;

    /// `iters` passes over four weight rows `w` and four activation rows
    /// `x` (each `K` floats), `loads` 512-bit loads per 16 FMAs (0, 4, 8 or
    /// 16). Returns a checksum so that nothing is optimised away.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA; `w` and `x` hold `16 * K`
    /// floats.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn run(x: &[f32], w: &[f32], iters: usize, loads: usize) -> f32 {
        assert!(x.len() >= 16 * K && w.len() >= 16 * K);
        let mut acc = [_mm512_setzero_ps(); 16];
        let (px, pw) = (x.as_ptr(), w.as_ptr());
        let c = _mm512_set1_ps(0.999);
        // SAFETY (all loads): row r < 16 at t + 16 <= K lies inside the
        // slices checked above.
        unsafe {
            for _ in 0..iters {
                let mut t = 0;
                while t + 16 <= K {
                    match loads {
                        16 => {
                            for (r, a) in acc.iter_mut().enumerate() {
                                *a = _mm512_fmadd_ps(_mm512_loadu_ps(px.add(r * K + t)), c, *a);
                            }
                        }
                        8 => {
                            let wv: [__m512; 4] =
                                std::array::from_fn(|j| _mm512_loadu_ps(pw.add(j * K + t)));
                            for r in 0..4 {
                                let xv = _mm512_loadu_ps(px.add(r * K + t));
                                for (j, &wj) in wv.iter().enumerate() {
                                    acc[4 * r + j] = _mm512_fmadd_ps(xv, wj, acc[4 * r + j]);
                                }
                            }
                        }
                        4 => {
                            let wv: [__m512; 4] =
                                std::array::from_fn(|j| _mm512_loadu_ps(pw.add(j * K + t)));
                            for r in 0..4 {
                                for j in 0..4 {
                                    let a = &mut acc[4 * r + j];
                                    *a = _mm512_fmadd_ps(wv[(j + r) % 4], wv[j], *a);
                                }
                            }
                        }
                        _ => {
                            for a in acc.iter_mut() {
                                *a = _mm512_fmadd_ps(c, *a, c);
                            }
                        }
                    }
                    t += 16;
                }
            }
            let mut s = _mm512_setzero_ps();
            for a in acc {
                s = _mm512_add_ps(s, a);
            }
            _mm512_reduce_add_ps(s)
        }
    }

    pub fn main() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma")) {
            println!("no AVX-512: nothing to measure");
            return;
        }
        let x = vec![0.001f32; 16 * K];
        let w = vec![0.002f32; 16 * K];
        let iters = 200_000;
        for loads in [0usize, 4, 8, 16] {
            let mut best = f64::MAX;
            let mut sum = 0.0;
            for _ in 0..3 {
                let t = Instant::now();
                // SAFETY: AVX-512 F and FMA detected above; both slices
                // hold 16 * K floats.
                sum += unsafe { run(&x, &w, iters, loads) };
                best = best.min(t.elapsed().as_secs_f64());
            }
            let fmas = (iters * K) as f64; // 16 FMAs per 16 elements
            println!(
                "{loads:2} loads per 16 FMAs: {:.2} G FMA instructions/s ({:.1} G multiply-adds/s; checksum {sum:.3e})",
                fmas / best / 1e9,
                fmas * 16.0 / best / 1e9
            );
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    probe::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("x86-64 only");
}
