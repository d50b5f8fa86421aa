//! AVX2 f16-weight GEMV: 8 halves widened per F16C `vcvtph2ps`, four FMA chains.

use crate::f32::avx2::{hsum, tail_mask};
use crate::par::ColBlock;
use half::f16;
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX2, FMA and F16C (checked by dispatch); `a.len() == b.len()`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let k = a.len().min(b.len());
    let pa = a.as_ptr();
    let pb = b.as_ptr() as *const u16;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads below): unmasked loads read 8 elements at i with
    // i + 8 <= k; the tail goes through a zero-padded stack copy and `vmaskmovps`.
    unsafe {
        let wv = |p: *const u16| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        while i + 32 <= k {
            for (u, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * u;
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), wv(pb.add(o)), *acc);
            }
            i += 32;
        }
        while i + 8 <= k {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), wv(pb.add(i)), acc[0]);
            i += 8;
        }
        if i < k {
            let mut tail = [0u16; 8];
            for (t, v) in tail.iter_mut().zip(&b[i..k]) {
                *t = v.to_bits();
            }
            let xv = _mm256_maskload_ps(pa.add(i), tail_mask(k - i));
            acc[0] = _mm256_fmadd_ps(xv, wv(tail.as_ptr()), acc[0]);
        }
    }
    hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ))
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C (checked by dispatch).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv(x: &[f32], m: usize, k: usize, w: &[f16], out: &mut ColBlock<'_>) {
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            // SAFETY: same target features as this function.
            out.row(i)[jj] = unsafe { dot(&x[i * k..(i + 1) * k], wr) };
        }
    }
}
