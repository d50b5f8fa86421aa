//! NEON f32 GEMV (real on aarch64, emulated elsewhere; see `neon_intrinsics`).

use crate::neon_intrinsics::*;
use crate::par::ColBlock;

/// Four 4-lane FMA chains, then 4-wide steps, then a scalar tail.
///
/// # Safety
/// On aarch64 the CPU must have NEON (always true there). `a.len() == b.len()`.
#[inline]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let k = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    // SAFETY (loads): each reads [i, i + 4) with i + 4 <= k.
    unsafe {
        while i + 16 <= k {
            for (u, a) in acc.iter_mut().enumerate() {
                *a = vfmaq_f32(
                    *a,
                    vld1q_f32(pa.add(i + 4 * u)),
                    vld1q_f32(pb.add(i + 4 * u)),
                );
            }
            i += 16;
        }
        while i + 4 <= k {
            acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            i += 4;
        }
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut r = vaddvq_f32(s);
    for t in i..k {
        r = a[t].mul_add(b[t], r);
    }
    r
}

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ`.
pub(crate) fn gemv(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut ColBlock<'_>) {
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            // SAFETY: NEON is baseline on aarch64; elsewhere this is the emulation.
            out.row(i)[jj] = unsafe { dot(&x[i * k..(i + 1) * k], wr) };
        }
    }
}
