//! AVX-512 float GEMV and prefill blocks, one generic body for f32, f16 and
//! bf16 weights (widened in registers, [`Wide`]): four independent 16-lane
//! FMA chains per dot product, so the loop is bound by loads rather than FMA
//! latency, and a masked load for the tail instead of a scalar loop.

use crate::par::ColBlock;
use std::arch::x86_64::*;

/// The first `n` lanes of a 16-lane mask (all of them from 16): a tail's
/// loads and stores. The one helper of the AVX-512 kernels (attention and
/// int8 call it too).
#[inline(always)]
pub(crate) fn mask16(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        ((1u32 << n) - 1) as u16
    }
}

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

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ` for f32, f16 or bf16 weights, every
/// output with [`dot`]'s bits. Four weight rows at a time are read from
/// memory once and reused from L1 for every activation row, [`ROWS`] rows at
/// a time ([`chain_block`]: each loaded vector feeds four FMAs); the last
/// weight rows take [`dots`] ([`ROWS`] activation rows per weight vector),
/// the last activation rows [`dot`].
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL plus AVX2/FMA/F16C (checked by dispatch).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn gemv<W: Wide>(x: &[f32], m: usize, k: usize, w: &[W], out: &mut ColBlock<'_>) {
    assert!(x.len() >= m * k, "gemv: x holds m rows");
    let n = w.len() / k;
    let m4 = m / ROWS * ROWS;
    let mut j0 = 0;
    while m4 > 0 && j0 + COLS <= n {
        let wb = &w[j0 * k..(j0 + COLS) * k];
        for i in (0..m4).step_by(ROWS) {
            // SAFETY: same target features; rows i..i + ROWS lie inside x
            // and wb holds COLS rows of k.
            let y = unsafe { chain_block(x, i, k, wb) };
            for (c, yc) in y.iter().enumerate() {
                for (r, &v) in yc.iter().enumerate() {
                    out.row(i + r)[j0 + c] = v;
                }
            }
        }
        for (c, wr) in wb.chunks_exact(k).enumerate() {
            for i in m4..m {
                // SAFETY: same target features as this function.
                out.row(i)[j0 + c] = unsafe { dot(&x[i * k..(i + 1) * k], wr) };
            }
        }
        j0 += COLS;
    }
    for (jj, wr) in w[j0 * k..].chunks_exact(k).enumerate() {
        let jj = j0 + jj;
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

/// Activation rows [`dots`] and [`chain_block`] take at once: four rows of
/// four accumulators each, plus the weight vectors, fit the 32 registers.
const ROWS: usize = 4;

/// Weight rows [`chain_block`] takes at once.
const COLS: usize = 4;

/// The dot products of x rows `i0..i0 + ROWS` with the [`COLS`] weight
/// rows of `w`, each with [`dots`]' (so [`dot`]'s) bits: the same four
/// chains, each adding the same products in the same order, and the same
/// reduction. Only the schedule differs: one chain at a time for all
/// `COLS x ROWS` outputs (16 accumulators), so each loaded weight vector
/// feeds `ROWS` FMAs and each x vector `COLS`, half a load per FMA where
/// [`dots`] needs one and a quarter. The chains' sums wait in memory
/// until the reduction.
///
/// # Safety
/// As [`dot`]; `x` holds at least `(i0 + ROWS) * k` values and `w` at
/// least `COLS * k`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn chain_block<W: Wide>(x: &[f32], i0: usize, k: usize, w: &[W]) -> [[f32; ROWS]; COLS] {
    debug_assert!(x.len() >= (i0 + ROWS) * k && w.len() >= COLS * k);
    let k64 = k / 64 * 64;
    let mut chains = [[[_mm512_setzero_ps(); ROWS]; COLS]; 4];
    // SAFETY (all loads): row r of x reads inside x[(i0 + r) * k..][..k]
    // and weight row c inside w[c * k..][..k], lanes [o, o + 16) with
    // o + 16 <= k, or the masked lanes below k in the tail.
    unsafe {
        let px = x.as_ptr().add(i0 * k);
        let pw = w.as_ptr();
        for (c, chain) in chains.iter_mut().enumerate() {
            let mut i = 0;
            while i < k64 {
                chain_step(px, pw, k, i + 16 * c, u16::MAX, chain);
                i += 64;
            }
            // As in `dots`: the 16-wide steps past the last 64 and the
            // masked tail go to the first chain, after its 64-wide steps.
            if c == 0 {
                while i + 16 <= k {
                    chain_step(px, pw, k, i, u16::MAX, chain);
                    i += 16;
                }
                if i < k {
                    chain_step(px, pw, k, i, mask16(k - i), chain);
                }
            }
        }
    }
    // Each output's four chains added as `dots` adds them, then all 16
    // reduced at once, in `sum`'s order.
    let mut v = [_mm512_setzero_ps(); COLS * ROWS];
    for c in 0..COLS {
        for r in 0..ROWS {
            let (a0, a1) = (chains[0][c][r], chains[1][c][r]);
            let (a2, a3) = (chains[2][c][r], chains[3][c][r]);
            v[c * ROWS + r] = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        }
    }
    // SAFETY: AVX-512 F, this function's contract.
    let s = unsafe { sum16(&v) };
    let mut out = [[0f32; ROWS]; COLS];
    for c in 0..COLS {
        for r in 0..ROWS {
            out[c][r] = s[c * ROWS + r];
        }
    }
    out
}

/// The sum of `v`'s 16 lanes in a fixed order: lane `i` with lane `i + 8`,
/// then `i + 4`, `i + 2` and `i + 1` (the order `_mm512_reduce_add_ps`
/// compiles to, written out so that [`sum16`] can promise the same bits).
///
/// # Safety
/// The CPU must have AVX-512 F.
#[inline(always)]
unsafe fn sum(v: __m512) -> f32 {
    // SAFETY: register operations; AVX-512 F by the contract.
    unsafe {
        let h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v));
        let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)))
    }
}

/// [`sum`] of 16 vectors at once (`out[i]` is `sum(v[i])`, bit for bit):
/// the same pairs added, four vectors' partial sums a register, so the 16
/// reductions take 15 adds and 30 shuffles instead of 16 x 7 operations.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[inline(always)]
unsafe fn sum16(v: &[__m512; 16]) -> [f32; 16] {
    // SAFETY: register operations and one 64-byte store to a local;
    // AVX-512 F by the contract.
    unsafe {
        // Loops rather than `from_fn` closures: a closure is a function of
        // its own, without the caller's target features.
        // Lanes 0-7: v[2p]'s i + (i + 8); lanes 8-15: v[2p + 1]'s.
        let mut t = [_mm512_setzero_ps(); 8];
        for (p, t) in t.iter_mut().enumerate() {
            let (a, b) = (v[2 * p], v[2 * p + 1]);
            *t = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            );
        }
        // 128-bit lane L: v[4q + L]'s i + (i + 4).
        let mut u = [_mm512_setzero_ps(); 4];
        for (q, u) in u.iter_mut().enumerate() {
            let (a, b) = (t[2 * q], t[2 * q + 1]);
            *u = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
            );
        }
        // Lane L: v[8r + L]'s, then v[8r + 4 + L]'s, i + (i + 2).
        let mut x = [_mm512_setzero_ps(); 2];
        for (r, x) in x.iter_mut().enumerate() {
            let (a, b) = (_mm512_castps_pd(u[2 * r]), _mm512_castps_pd(u[2 * r + 1]));
            *x = _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
            );
        }
        // Element 4L + e: v[L + 4e]'s i + (i + 1).
        let z = _mm512_add_ps(
            _mm512_shuffle_ps::<0b10_00_10_00>(x[0], x[1]),
            _mm512_shuffle_ps::<0b11_01_11_01>(x[0], x[1]),
        );
        let mut lanes = [0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), z);
        let mut out = [0f32; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = lanes[4 * (i % 4) + i / 4];
        }
        out
    }
}

/// One step of one chain of [`chain_block`]: lanes `mask` of the 16 inputs
/// from `o`, every weight row against every x row.
///
/// # Safety
/// As [`chain_block`], the lanes inside every row.
#[inline(always)]
unsafe fn chain_step<W: Wide>(
    px: *const f32,
    pw: *const W,
    k: usize,
    o: usize,
    mask: u16,
    acc: &mut [[__m512; ROWS]; COLS],
) {
    // SAFETY: forwarded contract.
    unsafe {
        let mut wv = [_mm512_setzero_ps(); COLS];
        for (c, v) in wv.iter_mut().enumerate() {
            *v = W::load16(pw.add(c * k + o), mask);
        }
        for r in 0..ROWS {
            let xv = _mm512_maskz_loadu_ps(mask, px.add(r * k + o));
            for (a, &wc) in acc.iter_mut().zip(&wv) {
                a[r] = _mm512_fmadd_ps(xv, wc, a[r]);
            }
        }
    }
}

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
            let mask: __mmask16 = mask16(k - i);
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
        let v = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
        // SAFETY: AVX-512 F, this function's contract.
        *o = unsafe { sum(v) };
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
            let mask = mask16(k - t);
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
    if R == 4 {
        // All 16 at once, with `sum`'s bits (`sum16`).
        let mut v = [_mm512_setzero_ps(); 16];
        for (r, a) in acc.iter().enumerate() {
            v[4 * r..4 * r + 4].copy_from_slice(a);
        }
        // SAFETY: AVX-512 F, this function's contract.
        let s = unsafe { sum16(&v) };
        for (r, o) in out.iter_mut().enumerate() {
            o.copy_from_slice(&s[4 * r..4 * r + 4]);
        }
    } else {
        for (o, a) in out.iter_mut().zip(&acc) {
            for (o, &v) in o.iter_mut().zip(a) {
                // SAFETY: AVX-512 F, this function's contract.
                *o = unsafe { sum(v) };
            }
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
