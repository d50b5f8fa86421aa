//! AVX-512 f32 GEMV: four independent 16-lane FMA chains per dot product, so the
//! loop is bound by loads rather than FMA latency, and a masked load for the tail
//! instead of a scalar loop.

use crate::par::ColBlock;
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX-512F (checked by dispatch); `a.len() == b.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let k = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut a0 = _mm512_setzero_ps();
    let mut a1 = _mm512_setzero_ps();
    let mut a2 = _mm512_setzero_ps();
    let mut a3 = _mm512_setzero_ps();
    let mut i = 0;
    // SAFETY (all loads below): every unmasked load reads [i, i + 16) with
    // i + 16 <= k, and the masked tail load touches only lanes < k - i; masked-off
    // lanes are not accessed, so nothing outside either slice is read.
    unsafe {
        while i + 64 <= k {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), a0);
            a1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                a1,
            );
            a2 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 32)),
                _mm512_loadu_ps(pb.add(i + 32)),
                a2,
            );
            a3 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 48)),
                _mm512_loadu_ps(pb.add(i + 48)),
                a3,
            );
            i += 64;
        }
        while i + 16 <= k {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), a0);
            i += 16;
        }
        if i < k {
            let mask: __mmask16 = ((1u32 << (k - i)) - 1) as u16;
            a0 = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(mask, pa.add(i)),
                _mm512_maskz_loadu_ps(mask, pb.add(i)),
                a0,
            );
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)))
}

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ`; each weight row is read from memory once
/// and reused from L1 for every activation row.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL (checked by dispatch).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn gemv(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut ColBlock<'_>) {
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            // SAFETY: same target features as this function.
            out.row(i)[jj] = unsafe { dot(&x[i * k..(i + 1) * k], wr) };
        }
    }
}
