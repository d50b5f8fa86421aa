//! AVX2 bf16-weight GEMV: 8 bf16 widened per `vpmovzxwd` + `vpslld 16` (exact),
//! four FMA chains: the loop structure and summation order of the f16 twin.

use crate::f32::avx2::{hsum, tail_mask};
use crate::par::ColBlock;
use half::bf16;
use std::arch::x86_64::*;

/// 8 bf16 at `p` (unaligned) as f32: zero-extend to 32 bits, shift into the
/// upper half. Exact for every bit pattern (a NaN stays a NaN).
///
/// # Safety
/// `p` valid for reading 8 `u16`s.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn widen8(p: *const u16) -> __m256 {
    // SAFETY: the caller guarantees 8 readable u16s.
    unsafe {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

/// # Safety
/// The CPU must have AVX2 and FMA (checked by dispatch); `a.len() == b.len()`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot(a: &[f32], b: &[bf16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let k = a.len().min(b.len());
    let pa = a.as_ptr();
    let pb = b.as_ptr() as *const u16;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads below): unmasked loads read 8 elements at i with
    // i + 8 <= k; the tail goes through a zero-padded stack copy and `vmaskmovps`.
    unsafe {
        let wv = |p: *const u16| widen8(p);
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

/// `R` dot products of consecutive x rows `i0..i0 + R` with one weight row,
/// each widened weight vector feeding `R` FMAs; every row's arithmetic is
/// exactly [`dot`]'s (see the AVX-512 twin).
///
/// # Safety
/// As [`dot`]; `x` holds at least `(i0 + R) * k` values and `b.len() == k`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots<const R: usize>(x: &[f32], i0: usize, k: usize, b: &[bf16]) -> [f32; R] {
    debug_assert!(x.len() >= (i0 + R) * k && b.len() == k);
    let pb = b.as_ptr() as *const u16;
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    let mut i = 0;
    // SAFETY (all loads below): row r's loads read inside x[(i0 + r) * k..][..k]
    // by the caller's contract, with the same bounds argument as `dot`.
    unsafe {
        let px = x.as_ptr().add(i0 * k);
        let wv = |p: *const u16| widen8(p);
        while i + 32 <= k {
            for u in 0..4 {
                let o = i + 8 * u;
                let w = wv(pb.add(o));
                for (r, a) in acc.iter_mut().enumerate() {
                    a[u] = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(r * k + o)), w, a[u]);
                }
            }
            i += 32;
        }
        while i + 8 <= k {
            let w = wv(pb.add(i));
            for (r, a) in acc.iter_mut().enumerate() {
                a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(r * k + i)), w, a[0]);
            }
            i += 8;
        }
        if i < k {
            let mut tail = [0u16; 8];
            for (t, v) in tail.iter_mut().zip(&b[i..k]) {
                *t = v.to_bits();
            }
            let w = wv(tail.as_ptr());
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_maskload_ps(px.add(r * k + i), tail_mask(k - i));
                a[0] = _mm256_fmadd_ps(xv, w, a[0]);
            }
        }
    }
    // A loop, not a `map` closure: a closure is a function of its own,
    // compiled without this function's target features, so LLVM may leave
    // the reduction in it out of line (it did for the f32 AVX-512 block:
    // half of f32 W3 in `perf`).
    let mut out = [0.0f32; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = hsum(_mm256_add_ps(
            _mm256_add_ps(a[0], a[1]),
            _mm256_add_ps(a[2], a[3]),
        ));
    }
    out
}

/// x rows per pass over a weight row: 8 accumulators of AVX2's 16 registers.
const ROWS: usize = 2;

/// # Safety
/// The CPU must have AVX2 and FMA (checked by dispatch).
#[target_feature(enable = "avx2,fma")]
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
