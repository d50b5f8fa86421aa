//! AVX-512 bf16-weight GEMV: 16 bf16 widened per `vpmovzxwd` + `vpslld 16`
//! (exact), four FMA chains: the loop structure of the f16 twin.

use crate::par::ColBlock;
use half::bf16;
use std::arch::x86_64::*;

/// 16 bf16 lanes as f32: zero-extend to 32 bits, shift into the upper half.
/// Exact for every bit pattern.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn widen16(h: __m256i) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VL (checked by dispatch); `a.len() == b.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot(a: &[f32], b: &[bf16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let k = a.len().min(b.len());
    let pa = a.as_ptr();
    // bf16 is a transparent u16, so the weights can be loaded as 16-bit lanes.
    let pb = b.as_ptr() as *const u16;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads below): unmasked loads read 16 elements at i with
    // i + 16 <= k; the masked tail loads touch only lanes < k - i.
    unsafe {
        let wv = |p: *const u16| widen16(_mm256_loadu_si256(p as *const __m256i));
        while i + 64 <= k {
            for (u, acc) in acc.iter_mut().enumerate() {
                let o = i + 16 * u;
                *acc = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(o)), wv(pb.add(o)), *acc);
            }
            i += 64;
        }
        while i + 16 <= k {
            acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), wv(pb.add(i)), acc[0]);
            i += 16;
        }
        if i < k {
            let mask = ((1u32 << (k - i)) - 1) as u16;
            let xv = _mm512_maskz_loadu_ps(mask, pa.add(i));
            let wv = widen16(_mm256_maskz_loadu_epi16(mask, pb.add(i) as *const i16));
            acc[0] = _mm512_fmadd_ps(xv, wv, acc[0]);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ))
}

/// `R` dot products of consecutive x rows `i0..i0 + R` with one weight row:
/// each widened weight vector feeds `R` FMAs instead of one. Every row's
/// arithmetic (chains, order, reduction) is exactly [`dot`]'s, so a row's
/// result does not depend on how many rows share the call.
///
/// # Safety
/// As [`dot`]; `x` holds at least `(i0 + R) * k` values and `b.len() == k`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dots<const R: usize>(x: &[f32], i0: usize, k: usize, b: &[bf16]) -> [f32; R] {
    debug_assert!(x.len() >= (i0 + R) * k && b.len() == k);
    let pb = b.as_ptr() as *const u16;
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    let mut i = 0;
    // SAFETY (all loads below): row r's loads read inside x[(i0 + r) * k..][..k]
    // by the caller's contract, with the same bounds argument as `dot`.
    unsafe {
        let px = x.as_ptr().add(i0 * k);
        let wv = |p: *const u16| widen16(_mm256_loadu_si256(p as *const __m256i));
        while i + 64 <= k {
            for u in 0..4 {
                let o = i + 16 * u;
                let w = wv(pb.add(o));
                for (r, a) in acc.iter_mut().enumerate() {
                    a[u] = _mm512_fmadd_ps(_mm512_loadu_ps(px.add(r * k + o)), w, a[u]);
                }
            }
            i += 64;
        }
        while i + 16 <= k {
            let w = wv(pb.add(i));
            for (r, a) in acc.iter_mut().enumerate() {
                a[0] = _mm512_fmadd_ps(_mm512_loadu_ps(px.add(r * k + i)), w, a[0]);
            }
            i += 16;
        }
        if i < k {
            let mask = ((1u32 << (k - i)) - 1) as u16;
            let w = widen16(_mm256_maskz_loadu_epi16(mask, pb.add(i) as *const i16));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, px.add(r * k + i));
                a[0] = _mm512_fmadd_ps(xv, w, a[0]);
            }
        }
    }
    // A loop, not a `map` closure: a closure is a function of its own,
    // compiled without this function's target features, so LLVM may leave
    // the reduction in it out of line (it did for the f32 AVX-512 block:
    // half of f32 W3 in `perf`).
    let mut out = [0.0f32; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(a[0], a[1]),
            _mm512_add_ps(a[2], a[3]),
        ));
    }
    out
}

/// x rows handled per pass over a weight row (16 accumulators of 32 registers).
const ROWS: usize = 4;

/// # Safety
/// The CPU must have AVX-512 F/BW/VL plus AVX2/FMA/F16C (checked by dispatch).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn gemv(x: &[f32], m: usize, k: usize, w: &[bf16], out: &mut ColBlock<'_>) {
    assert!(x.len() >= m * k);
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        let mut i = 0;
        while i + ROWS <= m {
            // SAFETY: same target features; rows i..i + ROWS lie inside x.
            let d = unsafe { dots::<ROWS>(x, i, k, wr) };
            for (r, v) in d.into_iter().enumerate() {
                out.row(i + r)[jj] = v;
            }
            i += ROWS;
        }
        for i in i..m {
            // SAFETY: same target features as this function.
            out.row(i)[jj] = unsafe { dot(&x[i * k..(i + 1) * k], wr) };
        }
    }
}
