//! AVX-512 float GEMV and prefill blocks, one generic body for f32, f16 and
//! bf16 weights (widened in registers, [`Wide`]): every output is one
//! 16-lane FMA chain over its row, a masked load for the tail instead of a
//! scalar loop, and one reduction. The GEMV is the prefill kernel: 4 x 4
//! register blocks (each loaded vector feeds four FMAs, so a block is bound
//! by the FMAs even where its operands straddle cache lines), whose 4-row
//! blocks give a one-row GEMV four independent chains; so at these levels a
//! row's bits depend on neither the rows that share the call nor the path.

use super::passes;
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

/// The dot product of `a` with the weight row `b` in any [`Wide`] format,
/// for a block's ragged last columns: [`step`]'s arithmetic for one of
/// its outputs (one 16-lane FMA chain, the tail masked, `sum`'s reduction),
/// so every output of the GEMV and prefill paths has the same bits.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL plus AVX2/FMA/F16C (checked by
/// dispatch); `a.len() == b.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot<W: Wide>(a: &[f32], b: &[W]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths");
    let k = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = _mm512_setzero_ps();
    // SAFETY (all loads): inside both slices' k values: whole steps at t
    // with t + 16 <= k, then the lanes of `mask16(k - t)`.
    unsafe {
        let mut t = 0;
        while t + 16 <= k {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(t)), W::load16_full(pb.add(t)), acc);
            t += 16;
        }
        if t < k {
            let mask = mask16(k - t);
            acc = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(mask, pa.add(t)),
                W::load16(pb.add(t), mask),
                acc,
            );
        }
        sum(acc)
    }
}

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ` for f32, f16 or bf16 weights, every
/// output with [`dot`]'s bits whatever `m`: the prefill kernel [`gemm()`]
/// itself. It replaced a kernel of four chains an output, whose multi-row
/// blocks could hold only one chain of each output in registers at a time
/// (m 16, k 256, operands off their lines: 51 -> 74 G multiply-adds/s,
/// kernels/BENCH.md).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL plus AVX2/FMA/F16C (checked by dispatch).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn gemv<W: Wide>(x: &[f32], m: usize, k: usize, w: &[W], out: &mut ColBlock<'_>) {
    // SAFETY: same target features and contract.
    unsafe { gemm(x, m, k, w, out) }
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

    /// [`Wide::load16`] of all 16 lanes, without a mask: a masked load
    /// from memory costs Intel cores an ALU operation on the FMA ports
    /// besides the load, so the kernels' whole steps take this one (the
    /// same values).
    ///
    /// # Safety
    /// AVX-512 F/BW (+ F16C for f16); `p[0..16]` lies inside one slice.
    unsafe fn load16_full(p: *const Self) -> __m512;
}

impl Wide for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32, mask: u16) -> __m512 {
        // SAFETY: forwarded contract.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
    #[inline(always)]
    unsafe fn load16_full(p: *const f32) -> __m512 {
        // SAFETY: forwarded contract.
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl Wide for half::f16 {
    #[inline(always)]
    unsafe fn load16(p: *const half::f16, mask: u16) -> __m512 {
        // SAFETY: forwarded contract; f16 is a transparent u16.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16)) }
    }
    #[inline(always)]
    unsafe fn load16_full(p: *const half::f16) -> __m512 {
        // SAFETY: forwarded contract; f16 is a transparent u16.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

impl Wide for half::bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const half::bf16, mask: u16) -> __m512 {
        // SAFETY: forwarded contract; bf16 is a transparent u16.
        unsafe { crate::bf16::avx512::widen16(_mm256_maskz_loadu_epi16(mask, p as *const i16)) }
    }
    #[inline(always)]
    unsafe fn load16_full(p: *const half::bf16) -> __m512 {
        // SAFETY: forwarded contract; bf16 is a transparent u16.
        unsafe { crate::bf16::avx512::widen16(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

/// [`step`]'s FMA chains over inputs `ts` (`ts.start` a multiple of 16;
/// a masked step only where `ts.end == k` is not one), continuing from
/// `acc`: the chains over consecutive ranges are, bit for bit, the chain
/// over their union.
///
/// # Safety
/// As [`step`]; `ts.end <= k`.
#[inline(always)]
unsafe fn chain<W: Wide, const R: usize>(
    x: &[f32],
    i0: usize,
    k: usize,
    w: &[W],
    c0: usize,
    ts: std::ops::Range<usize>,
    acc: &mut [[__m512; 4]; R],
) {
    debug_assert!(x.len() >= (i0 + R) * k && w.len() >= (c0 + 4) * k && ts.end <= k);
    debug_assert!(ts.start.is_multiple_of(16));
    // SAFETY (all loads below): row r of x and row c of w are read inside
    // their k values: full loads at t with t + 16 <= ts.end <= k, masked
    // lanes < ts.end - t.
    unsafe {
        let px = x.as_ptr().add(i0 * k);
        let pw = w.as_ptr().add(c0 * k);
        let mut t = ts.start;
        while t + 16 <= ts.end {
            let mut wv = [_mm512_setzero_ps(); 4];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = W::load16_full(pw.add(c * k + t));
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(px.add(r * k + t));
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(xv, wv[c], *a);
                }
            }
            t += 16;
        }
        if t < ts.end {
            // The tail: masked lanes read nothing and add 0 · 0.
            let mask = mask16(ts.end - t);
            let mut wv = [_mm512_setzero_ps(); 4];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = W::load16(pw.add(c * k + t), mask);
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, px.add(r * k + t));
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(xv, wv[c], *a);
                }
            }
        }
    }
}

/// Each chain's 16 lanes summed ([`sum`]'s bits).
///
/// # Safety
/// AVX-512 F.
#[inline(always)]
unsafe fn reduce<const R: usize>(acc: &[[__m512; 4]; R]) -> [[f32; 4]; R] {
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
        for (o, a) in out.iter_mut().zip(acc) {
            for (o, &v) in o.iter_mut().zip(a) {
                // SAFETY: AVX-512 F, this function's contract.
                *o = unsafe { sum(v) };
            }
        }
    }
    out
}

/// The 4 x 4 blocks as [`passes`] runs them.
struct Blocks4;

impl<W: Wide> passes::Blocks<W> for Blocks4 {
    const BR: usize = 4;
    const BC: usize = 4;
    const PASS_ROWS: usize = 64;
    const LANES: usize = 16;

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
                3 => step::<W, 3>(x, i, k, w, c, ts, slot, out),
                _ => step::<W, 4>(x, i, k, w, c, ts, slot, out),
            }
        }
    }

    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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

/// The prefill form of the GEMV (from `GEMM_MIN_M` rows): 4 x 4 output
/// blocks in [`passes`]' order, the ragged edges by the GEMV dot product.
/// Writes `out[m, w.len() / k]`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL plus AVX2/FMA/F16C (checked by dispatch).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn gemm<W: Wide>(x: &[f32], m: usize, k: usize, w: &[W], out: &mut ColBlock<'_>) {
    assert!(x.len() >= m * k && k > 0);
    let cw = w.len() / k;
    let c4 = cw / 4 * 4;
    // SAFETY: same target features; rows 0..m, weight rows 0..c4 exist.
    unsafe { passes::run::<W, Blocks4>(x, m, k, w, c4, out) };
    for i in 0..m {
        let cols = c4..cw;
        for c in cols {
            // SAFETY: same target features as this function.
            out.row(i)[c] = unsafe { dot(&x[i * k..(i + 1) * k], &w[c * k..(c + 1) * k]) };
        }
    }
}

/// One step of an `R` x 4 block of `y` (`R` = 4, or 1-3 for the last
/// rows): x rows `i0..i0 + R` against weight rows `c0..c0 + 4` of `w`,
/// one FMA chain per output, 16 inputs a step ([`chain`]), the chains from
/// `slot` (from zero at the first step), over `ts`, back to `slot`, or
/// reduced ([`reduce`]) into `out` at the last step. Each widened weight
/// vector and each x vector feeds four FMAs, so a prefill-sized product is
/// bound by the FMAs rather than the loads.
///
/// # Safety
/// AVX-512 F/BW/VL plus FMA (and F16C for f16 weights); `x` holds at least
/// `(i0 + R) * k` values and `w` at least `(c0 + 4) * k`; `slot` holds at
/// least `64 R` floats (its 4 R vectors) unless `ts` is `0..k` (one step
/// over the whole row, which reads and writes no slot).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<W: Wide, const R: usize>(
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
    assert!((first && last) || slot.len() >= 64 * R);
    let p = slot.as_mut_ptr();
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    // SAFETY: vector j of the slot is floats 16 j..16 j + 16 < 64 R of it;
    // the rest is the contract.
    unsafe {
        if !first {
            for (r, a) in acc.iter_mut().enumerate() {
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(p.add(16 * (4 * r + c)));
                }
            }
        }
        chain::<W, R>(x, i0, k, w, c0, ts, &mut acc);
        if last {
            put(out, i0, c0, reduce(&acc));
        } else {
            for (r, a) in acc.iter().enumerate() {
                for (c, a) in a.iter().enumerate() {
                    _mm512_storeu_ps(p.add(16 * (4 * r + c)), *a);
                }
            }
        }
    }
}
