//! AVX2 + FMA f32 GEMV: four independent 8-lane FMA chains per dot product and a
//! `vmaskmovps` tail.

use super::passes;
use crate::par::ColBlock;
use std::arch::x86_64::*;

/// A lane mask with the first `rem` (< 8) lanes on.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn tail_mask(rem: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(rem as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Horizontal sum in a fixed order: halves, then pairs, then the last two.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// # Safety
/// The CPU must have AVX2 and FMA (checked by dispatch); `a.len() == b.len()`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let k = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut a0 = _mm256_setzero_ps();
    let mut a1 = _mm256_setzero_ps();
    let mut a2 = _mm256_setzero_ps();
    let mut a3 = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY (all loads below): unmasked loads read [i, i + 8) with i + 8 <= k;
    // `vmaskmovps` does not touch masked-off lanes, so the tail stays in bounds.
    unsafe {
        while i + 32 <= k {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), a0);
            a1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                a1,
            );
            a2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 16)),
                _mm256_loadu_ps(pb.add(i + 16)),
                a2,
            );
            a3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 24)),
                _mm256_loadu_ps(pb.add(i + 24)),
                a3,
            );
            i += 32;
        }
        while i + 8 <= k {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), a0);
            i += 8;
        }
        if i < k {
            let mask = tail_mask(k - i);
            a0 = _mm256_fmadd_ps(
                _mm256_maskload_ps(pa.add(i), mask),
                _mm256_maskload_ps(pb.add(i), mask),
                a0,
            );
        }
    }
    hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)))
}

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ`.
///
/// # Safety
/// The CPU must have AVX2 and FMA (checked by dispatch).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemv(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut ColBlock<'_>) {
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            // SAFETY: same target features as this function.
            out.row(i)[jj] = unsafe { dot(&x[i * k..(i + 1) * k], wr) };
        }
    }
}

/// A weight format the AVX2 prefill kernel widens in registers, 8 at a time.
pub(crate) trait Wide8: Sized {
    /// 8 weights at `p` as f32; only the first `n` (1..=8) are read, the
    /// other lanes are 0.
    ///
    /// # Safety
    /// AVX2/FMA/F16C; `p` valid for reading `n` values.
    unsafe fn load8(p: *const Self, n: usize) -> __m256;
    /// The GEMV's dot product, for the ragged edges.
    ///
    /// # Safety
    /// As `load8`; `x.len() == w.len()`.
    unsafe fn dot(x: &[f32], w: &[Self]) -> f32;
}

impl Wide8 for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32, n: usize) -> __m256 {
        // SAFETY: the caller guarantees n readable values; masked lanes are
        // not touched.
        unsafe {
            if n == 8 {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, tail_mask(n))
            }
        }
    }
    #[inline(always)]
    unsafe fn dot(x: &[f32], w: &[f32]) -> f32 {
        // SAFETY: forwarded.
        unsafe { dot(x, w) }
    }
}

impl Wide8 for half::f16 {
    #[inline(always)]
    unsafe fn load8(p: *const half::f16, n: usize) -> __m256 {
        // SAFETY: n readable values; a tail goes through a zeroed copy.
        unsafe {
            if n == 8 {
                _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
            } else {
                let mut t = [0u16; 8];
                std::ptr::copy_nonoverlapping(p as *const u16, t.as_mut_ptr(), n);
                _mm256_cvtph_ps(_mm_loadu_si128(t.as_ptr() as *const __m128i))
            }
        }
    }
    #[inline(always)]
    unsafe fn dot(x: &[f32], w: &[half::f16]) -> f32 {
        // SAFETY: forwarded.
        unsafe { crate::f16::avx2::dot(x, w) }
    }
}

impl Wide8 for half::bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const half::bf16, n: usize) -> __m256 {
        // SAFETY: n readable values; a tail goes through a zeroed copy.
        unsafe {
            if n == 8 {
                crate::bf16::avx2::widen8(p as *const u16)
            } else {
                let mut t = [0u16; 8];
                std::ptr::copy_nonoverlapping(p as *const u16, t.as_mut_ptr(), n);
                crate::bf16::avx2::widen8(t.as_ptr())
            }
        }
    }
    #[inline(always)]
    unsafe fn dot(x: &[f32], w: &[half::bf16]) -> f32 {
        // SAFETY: forwarded.
        unsafe { crate::bf16::avx2::dot(x, w) }
    }
}

/// Activation rows and weight rows of one register block: 3 x 3 outputs
/// is 9 accumulators + 3 widened weights + 1 activation, 13 of the 16 ymm
/// registers (4 x 3, all 16, spilled and ran at half the speed).
const BR: usize = 3;
const BC: usize = 3;

/// [`step`]'s FMA chains over inputs `ts` (`ts.start` a multiple of 8; a
/// partial step only where `ts.end == k` is not one), continuing from
/// `acc`: the chains over consecutive ranges are, bit for bit, the chain
/// over their union.
///
/// # Safety
/// As [`step`]; `ts.end <= k`.
#[inline(always)]
unsafe fn chain<W: Wide8, const R: usize>(
    x: &[f32],
    i0: usize,
    k: usize,
    w: &[W],
    c0: usize,
    ts: std::ops::Range<usize>,
    acc: &mut [[__m256; BC]; R],
) {
    debug_assert!(x.len() >= (i0 + R) * k && w.len() >= (c0 + BC) * k && ts.end <= k);
    debug_assert!(ts.start.is_multiple_of(8));
    // SAFETY (all loads below): row r of x and row c of w are read inside
    // their k values: full loads at t with t + 8 <= ts.end <= k, the
    // tail's ts.end - t.
    unsafe {
        let px = x.as_ptr().add(i0 * k);
        let pw = w.as_ptr().add(c0 * k);
        let step = |acc: &mut [[__m256; BC]; R], t: usize, n: usize| {
            let wv: [__m256; BC] = std::array::from_fn(|c| W::load8(pw.add(c * k + t), n));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = f32::load8(px.add(r * k + t), n);
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(xv, wv[c], *a);
                }
            }
        };
        // The chains in a local for the loop (through `acc` itself, the
        // whole-row products ran ~3% slower).
        let mut a = *acc;
        let mut t = ts.start;
        while t + 8 <= ts.end {
            step(&mut a, t, 8);
            t += 8;
        }
        if t < ts.end {
            step(&mut a, t, ts.end - t);
        }
        *acc = a;
    }
}

/// Each chain's 8 lanes summed (`hsum`).
///
/// # Safety
/// AVX2/FMA.
#[inline(always)]
unsafe fn reduce<const R: usize>(acc: &[[__m256; BC]; R]) -> [[f32; BC]; R] {
    // A loop, not a `map` closure: a closure is a function of its own,
    // compiled without this function's target features, so LLVM may leave
    // the reduction in it out of line (it did for the f32 AVX-512 block:
    // half of f32 W3 in `perf`).
    let mut out = [[0.0f32; BC]; R];
    for (o, a) in out.iter_mut().zip(acc) {
        for (o, &v) in o.iter_mut().zip(a) {
            // SAFETY: the caller guarantees AVX2/FMA, all `hsum` needs.
            *o = unsafe { hsum(v) };
        }
    }
    out
}

/// The `BR x BC` blocks as [`passes`] runs them.
struct Blocks3;

impl<W: Wide8> passes::Blocks<W> for Blocks3 {
    const BR: usize = BR;
    const BC: usize = BC;
    const PASS_ROWS: usize = 60;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn step(
        x: &[f32],
        i: usize,
        nr: usize,
        k: usize,
        w: &[W],
        c: usize,
        ts: std::ops::Range<usize>,
        slot: &mut [f32],
        out: &mut ColBlock<'_>,
    ) {
        // SAFETY (each arm): forwarded contract, nr rows from i.
        unsafe {
            match nr {
                1 => step::<W, 1>(x, i, k, w, c, ts, slot, out),
                2 => step::<W, 2>(x, i, k, w, c, ts, slot, out),
                _ => step::<W, BR>(x, i, k, w, c, ts, slot, out),
            }
        }
    }

    #[inline(never)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn stepped_rows(
        x: &[f32],
        rows: std::ops::Range<usize>,
        k: usize,
        w: &[W],
        cb: usize,
        out: &mut ColBlock<'_>,
    ) {
        // SAFETY: forwarded contract, with this function's target features.
        unsafe { passes::stepped::<W, Self>(x, rows, k, w, cb, out) }
    }
}

/// The AVX2 prefill form of the float GEMV (from the format's `GEMM_MIN_M`
/// rows): `BR x BC` output blocks in [`passes`]' order, read straight from
/// the weights in their stored format (no packed or widened copy, unlike
/// the gemm crate), the ragged edges by the GEMV's dot product. Writes
/// `out[m, w.len() / k]`.
///
/// # Safety
/// The CPU must have AVX2/FMA/F16C (checked by dispatch).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm<W: Wide8>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    out: &mut ColBlock<'_>,
) {
    assert!(x.len() >= m * k && k > 0);
    let cw = w.len() / k;
    let cb = cw / BC * BC;
    // SAFETY: same target features; rows 0..m, weight rows 0..cb exist.
    unsafe { passes::run::<W, Blocks3>(x, m, k, w, cb, out) };
    for i in 0..m {
        for c in cb..cw {
            // SAFETY: same target features as this function.
            out.row(i)[c] = unsafe { W::dot(&x[i * k..(i + 1) * k], &w[c * k..(c + 1) * k]) };
        }
    }
}

/// One step of an `R x BC` block of `y` (`R` = `BR`, or fewer for the last
/// rows): x rows `i0..` against weight rows `c0..`, one FMA chain per
/// output, 8 inputs a step ([`chain`]), the chains from `slot` (from zero
/// at the first step), over `ts`, back to `slot`, or reduced (each chain's
/// `hsum`) into `out` at the last step; each widened weight vector feeds
/// `BR` FMAs and each x vector `BC`, so a prefill-sized product is bound
/// by the FMAs rather than by loads or widening.
///
/// # Safety
/// AVX2/FMA/F16C; `x` holds at least `(i0 + R) * k` values and `w` at
/// least `(c0 + BC) * k`; `slot` holds at least `8 R BC` floats unless
/// `ts` is `0..k` (one step over the whole row, which reads and writes no
/// slot).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<W: Wide8, const R: usize>(
    x: &[f32],
    i0: usize,
    k: usize,
    w: &[W],
    c0: usize,
    ts: std::ops::Range<usize>,
    slot: &mut [f32],
    out: &mut ColBlock<'_>,
) {
    let (first, last) = (ts.start == 0, ts.end == k);
    assert!((first && last) || slot.len() >= 8 * R * BC);
    let p = slot.as_mut_ptr();
    let mut acc = [[_mm256_setzero_ps(); BC]; R];
    // SAFETY: vector j of the slot is floats 8 j..8 j + 8 < 8 R BC of it;
    // the rest is the contract.
    unsafe {
        if !first {
            for (r, a) in acc.iter_mut().enumerate() {
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(p.add(8 * (BC * r + c)));
                }
            }
        }
        chain::<W, R>(x, i0, k, w, c0, ts, &mut acc);
        if last {
            put(out, i0, c0, &reduce(&acc));
        } else {
            for (r, a) in acc.iter().enumerate() {
                for (c, a) in a.iter().enumerate() {
                    _mm256_storeu_ps(p.add(8 * (BC * r + c)), *a);
                }
            }
        }
    }
}

/// Rows `i0..` of a block, columns `c..c + BC`, into `out`.
#[inline(always)]
fn put(out: &mut ColBlock<'_>, i0: usize, c: usize, b: &[[f32; BC]]) {
    for (r, row) in b.iter().enumerate() {
        out.row(i0 + r)[c..c + BC].copy_from_slice(row);
    }
}
