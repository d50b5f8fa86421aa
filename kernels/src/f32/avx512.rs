//! AVX-512 float GEMV and prefill blocks, one generic body for f32, f16 and
//! bf16 weights (widened in registers, [`Wide`]): four independent 16-lane
//! FMA chains per dot product, so the loop is bound by loads rather than FMA
//! latency, and a masked load for the tail instead of a scalar loop.

use crate::par::ColBlock;
use std::arch::x86_64::*;

/// The GEMV dot product of `a` with the weight row `b` in any [`Wide`]
/// format: four 16-lane FMA chains, a masked tail, one reduction
/// ([`dots`] of one row, so the multi-row path has its bits by
/// construction).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL plus AVX2/FMA/F16C (checked by
/// dispatch); `a.len() == b.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot<W: Wide>(a: &[f32], b: &[W]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    // SAFETY: same target features; one row of `a.len()` values.
    unsafe { dots::<W, 1>(a, 0, a.len().min(b.len()), b)[0] }
}

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ` for f32, f16 or bf16 weights: each
/// weight row is read from memory once and reused from L1 for every
/// activation row, [`ROWS`] rows at a time ([`dots`]: each widened weight
/// vector loaded once for all of them), the rest one by one; every output
/// has [`dot`]'s bits.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL plus AVX2/FMA/F16C (checked by dispatch).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn gemv<W: Wide>(x: &[f32], m: usize, k: usize, w: &[W], out: &mut ColBlock<'_>) {
    assert!(x.len() >= m * k, "gemv: x holds m rows");
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        let mut i = 0;
        while i + ROWS <= m {
            // SAFETY: same target features; rows i..i + ROWS lie inside x.
            let y = unsafe { dots::<W, ROWS>(x, i, k, wr) };
            for (r, &v) in y.iter().enumerate() {
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

/// Activation rows [`dots`] takes at once: four rows of four accumulators
/// each, plus the weight vectors, fit the 32 registers.
const ROWS: usize = 4;

/// `R` dot products of consecutive x rows `i0..i0 + R` with one weight row
/// `w`: four chains a row, 16 inputs a step, the tail masked, then one
/// reduction a row. Each widened weight vector feeds `R` FMAs, and every
/// row's arithmetic (chains, order, reduction) is the same whatever `R`,
/// so a row's result does not depend on how many rows share the call.
///
/// # Safety
/// As [`dot`]; `x` holds at least `(i0 + R) * k` values and `w.len() == k`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dots<W: Wide, const R: usize>(x: &[f32], i0: usize, k: usize, w: &[W]) -> [f32; R] {
    debug_assert!(x.len() >= (i0 + R) * k && w.len() >= k);
    let pw = w.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    let mut i = 0;
    // SAFETY (all loads below): row r reads inside x[(i0 + r) * k..][..k]
    // by the caller's contract, and w inside its k values: unmasked loads
    // at i with i + 16 <= k, masked ones only lanes < k - i.
    unsafe {
        let px = x.as_ptr().add(i0 * k);
        while i + 64 <= k {
            for c in 0..4 {
                let o = i + 16 * c;
                let wv = W::load16(pw.add(o), u16::MAX);
                for (r, a) in acc.iter_mut().enumerate() {
                    a[c] = _mm512_fmadd_ps(_mm512_loadu_ps(px.add(r * k + o)), wv, a[c]);
                }
            }
            i += 64;
        }
        while i + 16 <= k {
            let wv = W::load16(pw.add(i), u16::MAX);
            for (r, a) in acc.iter_mut().enumerate() {
                a[0] = _mm512_fmadd_ps(_mm512_loadu_ps(px.add(r * k + i)), wv, a[0]);
            }
            i += 16;
        }
        if i < k {
            let mask: __mmask16 = ((1u32 << (k - i)) - 1) as u16;
            let wv = W::load16(pw.add(i), mask);
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, px.add(r * k + i));
                a[0] = _mm512_fmadd_ps(xv, wv, a[0]);
            }
        }
    }
    // A loop, not a `map` closure (ARCHITECTURE.md: no reduction in a
    // closure of a kernel's hot path).
    let mut out = [0f32; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(a[0], a[1]),
            _mm512_add_ps(a[2], a[3]),
        ));
    }
    out
}

/// Rows `i0..` of a block, columns `c..c + 4`, into `out`.
#[inline(always)]
fn put<const R: usize>(out: &mut ColBlock<'_>, i0: usize, c: usize, b: [[f32; 4]; R]) {
    for (r, row) in b.iter().enumerate() {
        out.row(i0 + r)[c..c + 4].copy_from_slice(row);
    }
}

/// Weights the prefill kernel can widen to 16 f32 lanes in one step.
pub(crate) trait Wide: Copy {
    /// Lanes `[0, 16)` of `p[0..16]` as f32, lanes outside `mask` zero and
    /// not read.
    ///
    /// # Safety
    /// AVX-512 F/BW (+ F16C for f16); the masked lanes lie inside one slice.
    unsafe fn load16(p: *const Self, mask: u16) -> __m512;
}

impl Wide for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32, mask: u16) -> __m512 {
        // SAFETY: forwarded contract.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
}

impl Wide for half::f16 {
    #[inline(always)]
    unsafe fn load16(p: *const half::f16, mask: u16) -> __m512 {
        // SAFETY: forwarded contract; f16 is a transparent u16.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16)) }
    }
}

impl Wide for half::bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const half::bf16, mask: u16) -> __m512 {
        // SAFETY: forwarded contract; bf16 is a transparent u16.
        unsafe { crate::bf16::avx512::widen16(_mm256_maskz_loadu_epi16(mask, p as *const i16)) }
    }
}

/// An `R` x 4 block of `y` (`R` = 4, or 1-3 for the last rows): x rows
/// `i0..i0 + R` against weight rows `c0..c0 + 4` of `w`, one FMA chain per
/// output, 16 inputs a step. Each widened weight
/// vector and each x vector feeds four FMAs, so a prefill-sized product is
/// bound by the FMAs rather than the loads.
///
/// # Safety
/// AVX-512 F/BW/VL plus FMA (and F16C for f16 weights); `x` holds at least
/// `(i0 + R) * k` values and `w` at least `(c0 + 4) * k`.
#[inline(always)]
unsafe fn block4x4<W: Wide, const R: usize>(
    x: &[f32],
    i0: usize,
    k: usize,
    w: &[W],
    c0: usize,
) -> [[f32; 4]; R] {
    debug_assert!(x.len() >= (i0 + R) * k && w.len() >= (c0 + 4) * k);
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    // SAFETY (all loads below): row r of x and row c of w are read inside
    // their k values: full loads at t with t + 16 <= k, masked lanes < k - t.
    unsafe {
        let px = x.as_ptr().add(i0 * k);
        let pw = w.as_ptr().add(c0 * k);
        let mut t = 0;
        while t < k {
            let mask = if t + 16 <= k {
                u16::MAX
            } else {
                ((1u32 << (k - t)) - 1) as u16
            };
            let wv: [__m512; 4] = std::array::from_fn(|c| W::load16(pw.add(c * k + t), mask));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, px.add(r * k + t));
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(xv, wv[c], *a);
                }
            }
            t += 16;
        }
    }
    // A loop, not `map` closures: a closure is a function of its own,
    // compiled without this function's target features, and once LLVM
    // stopped inlining it each reduction became an out-of-line call (half
    // of f32 W3 in `perf`).
    let mut out = [[0.0f32; 4]; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, &v) in o.iter_mut().zip(a) {
            *o = _mm512_reduce_add_ps(v);
        }
    }
    out
}

/// The prefill form of the GEMV (from `GEMM_MIN_M` rows): 4 x 4 output
/// blocks, the ragged edges by the GEMV dot product. Writes `out[m, w.len() / k]`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL plus AVX2/FMA/F16C (checked by dispatch).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn gemm<W: Wide>(x: &[f32], m: usize, k: usize, w: &[W], out: &mut ColBlock<'_>) {
    assert!(x.len() >= m * k && k > 0);
    let cw = w.len() / k;
    let (m4, c4) = (m / 4 * 4, cw / 4 * 4);
    // Weight rows outside, activation rows inside: four weight rows (4 KB
    // at d_model 256) stay in L1 while every row block passes over them,
    // instead of the chunk's 64 rows streaming from L2 once per row block.
    // The last `m % 4` rows take a block of their own height (as GEMV dots
    // they were a tenth of a 26-row prefill's work at a third of the speed).
    for c in (0..c4).step_by(4) {
        for i in (0..m4).step_by(4) {
            // SAFETY: same target features; rows i..i + 4 and c..c + 4 exist.
            let b = unsafe { block4x4::<W, 4>(x, i, k, w, c) };
            for (r, row) in b.iter().enumerate() {
                out.row(i + r)[c..c + 4].copy_from_slice(row);
            }
        }
        match m - m4 {
            1 => {
                // SAFETY: same target features; row m4 and c..c + 4 exist.
                let b = unsafe { block4x4::<W, 1>(x, m4, k, w, c) };
                put(out, m4, c, b)
            }
            2 => {
                // SAFETY: same target features; rows m4..m and c..c + 4 exist.
                let b = unsafe { block4x4::<W, 2>(x, m4, k, w, c) };
                put(out, m4, c, b)
            }
            3 => {
                // SAFETY: same target features; rows m4..m and c..c + 4 exist.
                let b = unsafe { block4x4::<W, 3>(x, m4, k, w, c) };
                put(out, m4, c, b)
            }
            _ => {}
        }
    }
    for i in 0..m {
        let cols = c4..cw;
        for c in cols {
            // SAFETY: same target features as this function.
            out.row(i)[c] = unsafe { dot(&x[i * k..(i + 1) * k], &w[c * k..(c + 1) * k]) };
        }
    }
}
