//! NEON f16-weight GEMV. Weights are widened 16 at a time into a stack buffer by
//! `half` (which uses `fcvtl` on aarch64 with the fp16 extension): Rust's
//! `vcvt_f32_f16` needs the unstable `f16` type. The arithmetic is the NEON f32 dot.

use crate::par::ColBlock;
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Widening in blocks of this many keeps the buffer in registers/L1.
const BLOCK: usize = 64;

pub(crate) fn dot(a: &[f32], b: &[f16]) -> f32 {
    let k = a.len().min(b.len());
    let mut buf = [0.0f32; BLOCK];
    let mut r = 0.0f32;
    let mut i = 0;
    while i < k {
        let e = (i + BLOCK).min(k);
        b[i..e].convert_to_f32_slice(&mut buf[..e - i]);
        // SAFETY: NEON is baseline on aarch64; elsewhere this is the emulation.
        r += unsafe { crate::f32::neon::dot(&a[i..e], &buf[..e - i]) };
        i = e;
    }
    r
}

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ`.
pub(crate) fn gemv(x: &[f32], m: usize, k: usize, w: &[f16], out: &mut ColBlock<'_>) {
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            out.row(i)[jj] = dot(&x[i * k..(i + 1) * k], wr);
        }
    }
}
