//! The AMX tile loop's parts alone, on one core: nanoseconds per 2 x 2 step
//! (four `tdpbssd`, 64 Ki multiply-adds) with the weight tiles streamed
//! from a buffer of WEIGHT_KIB (16: L1, 256-1024: L2, 4096+: L3 and beyond)
//! starting OFFSET bytes past a cache line (0, or 16 as a `Vec<i8>` from
//! glibc starts). Modes: `products` (the four products, no loads), `weights`
//! (the two weight tile loads alone), `step` (the kernel's step: two
//! activation and two weight tiles, four products). Read against
//! kernels/BENCH.md ("Operands on cache lines").
//!
//! `cargo run --release -p t5edge-kernels --example amx_tile_probe -- WEIGHT_KIB MODE [OFFSET]`

#[cfg(target_arch = "x86_64")]
mod probe {
    use std::arch::asm;
    use std::time::Instant;

    /// Activation rows `kp` bytes apart, as W3's large layers have them.
    const KP: usize = 1024;

    /// `buf[start..start + len]` where `start` puts the slice `offset` bytes
    /// past a cache line.
    fn placed(buf: &[i8], len: usize, offset: usize) -> &[i8] {
        let start = (64 - buf.as_ptr() as usize % 64) % 64 + offset;
        &buf[start..start + len]
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let kib: usize = args.first().and_then(|v| v.parse().ok()).unwrap_or(256);
        let mode = args.get(1).map(String::as_str).unwrap_or("step");
        let offset: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);
        if t5edge_kernels::dispatch::best() != t5edge_kernels::dispatch::Isa::Amx {
            println!("this CPU (or its kernel) does not grant AMX tiles");
            return;
        }
        let (abuf, wbuf) = (vec![1i8; 32 * KP + 128], vec![1i8; kib * 1024 + 128]);
        let (a, w) = (
            placed(&abuf, 32 * KP, offset),
            placed(&wbuf, kib * 1024, offset),
        );
        let steps = 1_000_000usize;
        // SAFETY: best() is Amx: the CPU has AMX-TILE/INT8 and the kernel
        // granted this process the tile state; released below.
        unsafe { t5edge_kernels::tiles::configure() };
        let t = Instant::now();
        let mut off = 0usize;
        for s in 0..steps {
            let b0 = w[off..].as_ptr();
            let b1 = w[off + 1024..].as_ptr();
            off = if off + 4096 > w.len() { 0 } else { off + 2048 };
            // Two activation tiles: rows KP apart, stepping through 16 k-steps.
            let a0 = a[(s % 16) * 64..].as_ptr();
            let a1 = a[16 * KP + (s % 16) * 64..].as_ptr();
            // SAFETY: tiles configured above. Every load reads 16 rows of 64
            // bytes: weights at b0/b1 with stride 64 (1 KiB each, inside `w`
            // as off + 2048 <= w.len()), activations at a0/a1 with stride KP
            // (rows 0..16 of each half of `a`, 64 bytes at column
            // (s % 16) * 64 < KP).
            unsafe {
                match mode {
                    "products" => asm!(
                        "tdpbssd tmm0, tmm4, tmm6",
                        "tdpbssd tmm1, tmm4, tmm7",
                        "tdpbssd tmm2, tmm5, tmm6",
                        "tdpbssd tmm3, tmm5, tmm7",
                        options(nostack, nomem)
                    ),
                    "weights" => asm!(
                        "tileloadd tmm6, [{b0} + {ws}*1]",
                        "tileloadd tmm7, [{b1} + {ws}*1]",
                        b0 = in(reg) b0, b1 = in(reg) b1, ws = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    _ => asm!(
                        "tileloadd tmm4, [{a0} + {ks}*1]",
                        "tileloadd tmm6, [{b0} + {ws}*1]",
                        "tdpbssd tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {ws}*1]",
                        "tdpbssd tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {ks}*1]",
                        "tdpbssd tmm2, tmm5, tmm6",
                        "tdpbssd tmm3, tmm5, tmm7",
                        a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                        ks = in(reg) KP, ws = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                }
            }
        }
        let ns = t.elapsed().as_secs_f64() / steps as f64 * 1e9;
        // SAFETY: releases the tile state configured above.
        unsafe { t5edge_kernels::tiles::release() };
        println!(
            "weights {kib} KiB, {offset} bytes past a line, {mode}: {ns:.1} ns a step ({:.2} T multiply-adds/s)",
            4.0 * 16384.0 / ns / 1e3
        );
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    probe::main();
}
