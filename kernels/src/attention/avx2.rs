//! AVX2 + FMA attention tile kernels: 8-lane score blocks, P·V row blocks,
//! row max and the vector `exp`, behind the `#[target_feature]` entry point
//! [`block`] (the caller checked the CPU).

// Register arrays indexed by row and key read more plainly than zips.
#![allow(clippy::needless_range_loop)]

use super::blocked::{self, HeadKv, Rows, Tile, VecOps};
use super::Attention;
use crate::par::ColBlock;
use std::arch::x86_64::*;

// The vector `exp`'s constants (shared with `avx512::exp512`).
// exp(88) < f32::MAX and keeps n <= 127, so the AVX2 exponent-field trick
// cannot produce an infinity (attention only ever passes s - max <= 0).
pub(super) const HI: f32 = 88.0;
pub(super) const LO: f32 = -87.336_55;
pub(super) const LOG2E: f32 = std::f32::consts::LOG2_E;
pub(super) const C1: f32 = 0.693_359_4;
pub(super) const C2: f32 = -2.121_944_4e-4;
pub(super) const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// Vector `exp` (the Cephes `expf` scheme: `2^n · e^r`, `|r| <= ln2/2`, degree-6
/// polynomial), within ~2 ulp of the true value for finite inputs; inputs below
/// -87.3 give ~1e-38 instead of a subnormal, far below anything attention adds.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp256(x: __m256) -> __m256 {
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LO)), _mm256_set1_ps(HI));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(C1), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(C2), r);
    let mut y = _mm256_set1_ps(P[0]);
    for c in &P[1..] {
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(*c));
    }
    let y = _mm256_add_ps(
        _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r),
        _mm256_set1_ps(1.0),
    );
    // 2^n built in the exponent field: n is in [-126, 128] after the clamp.
    let e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    );
    _mm256_mul_ps(y, _mm256_castsi256_ps(e))
}

struct Avx2Ops;
impl VecOps for Avx2Ops {
    #[inline(always)]
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
        // SAFETY: forwarded contract (AVX2 + FMA checked by run_with).
        unsafe {
            if nq == 1 {
                scores256::<1, 8>(q, k, d, nq, nk, tile)
            } else {
                scores256::<2, 4>(q, k, d, nq, nk, tile)
            }
        }
    }

    #[inline(always)]
    unsafe fn pv(
        p: &Tile,
        v: Rows<'_>,
        d: usize,
        nq: usize,
        nk: usize,
        out: &mut [f32],
        os: usize,
    ) {
        let mut r0 = 0;
        while r0 < nq {
            // SAFETY: forwarded contract; rows r0.. of the block are in bounds.
            unsafe {
                match nq - r0 {
                    1 => pv256::<1, 8>(p, r0, v, d, nk, out, os),
                    2 => pv256::<2, 4>(p, r0, v, d, nk, out, os),
                    3 => pv256::<3, 2>(p, r0, v, d, nk, out, os),
                    _ => pv256::<4, 2>(p, r0, v, d, nk, out, os),
                }
            }
            r0 += 4;
        }
    }

    #[inline(always)]
    unsafe fn row_max(s: &[f32]) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { row_max256(s) }
    }

    #[inline(always)]
    unsafe fn exp_row(s: &mut [f32], m: f32) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { exp_row256(s, m) }
    }
}

blocked::entry_points!("avx2,fma", "AVX2 and FMA", Avx2Ops, Avx2Ops);

/// Eight vectors to one: lane `i` is the sum of `v[i]`'s lanes.
///
/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn reduce8(v: &[__m256; 8]) -> __m256 {
    // SAFETY: register-only AVX operations.
    unsafe {
        let a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
        let b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    }
}

/// Lanes `[0, n)` on (n may exceed 8).
#[inline(always)]
unsafe fn mask8(n: usize) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller.
    unsafe { crate::f32::avx2::tail_mask(n.min(8)) }
}

/// `avx512::scores512` for 8 lanes: `R x C == 8` accumulators of 16 registers.
///
/// # Safety
/// As `VecOps::scores` with AVX2 + FMA; `BLOCK_Q % R == 0`, `KEY_BLOCK % C == 0`.
#[inline(always)]
unsafe fn scores256<const R: usize, const C: usize>(
    q: Rows<'_>,
    k: Rows<'_>,
    d: usize,
    nq: usize,
    nk: usize,
    tile: &mut Tile,
) {
    debug_assert!(R * C == 8);
    for r0 in (0..nq).step_by(R) {
        // SAFETY: the clamped rows are < nq.
        let qp: [*const f32; R] = std::array::from_fn(|r| unsafe { q.row((r0 + r).min(nq - 1)) });
        for c0 in (0..nk).step_by(C) {
            // SAFETY: the clamped rows are < nk.
            let kp: [*const f32; C] =
                std::array::from_fn(|c| unsafe { k.row((c0 + c).min(nk - 1)) });
            // SAFETY: as in scores512: full loads are [t, t + 8) with
            // t + 8 <= d, the masked tail touches lanes < d only.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 8];
                let mut t = 0;
                while t + 8 <= d {
                    let qv: [__m256; R] = std::array::from_fn(|r| _mm256_loadu_ps(qp[r].add(t)));
                    for c in 0..C {
                        let kv = _mm256_loadu_ps(kp[c].add(t));
                        for r in 0..R {
                            acc[r * C + c] = _mm256_fmadd_ps(qv[r], kv, acc[r * C + c]);
                        }
                    }
                    t += 8;
                }
                if t < d {
                    let m = mask8(d - t);
                    let qv: [__m256; R] =
                        std::array::from_fn(|r| _mm256_maskload_ps(qp[r].add(t), m));
                    for c in 0..C {
                        let kv = _mm256_maskload_ps(kp[c].add(t), m);
                        for r in 0..R {
                            acc[r * C + c] = _mm256_fmadd_ps(qv[r], kv, acc[r * C + c]);
                        }
                    }
                }
                let mut s = [0.0f32; 8];
                _mm256_storeu_ps(s.as_mut_ptr(), reduce8(&acc));
                for r in 0..R {
                    tile[r0 + r][c0..c0 + C].copy_from_slice(&s[r * C..(r + 1) * C]);
                }
            }
        }
    }
}

/// `avx512::pv512` for 8 lanes: `R` rows x `8 NV` dims per pass (`R * NV == 8`
/// accumulators: fewer rows get more independent chains).
///
/// # Safety
/// As `VecOps::pv` with AVX2 + FMA, and `r0 + R <= nq`.
#[inline(always)]
unsafe fn pv256<const R: usize, const NV: usize>(
    p: &Tile,
    r0: usize,
    v: Rows<'_>,
    d: usize,
    nk: usize,
    out: &mut [f32],
    os: usize,
) {
    let op = out.as_mut_ptr();
    let mut t = 0;
    // Whole 8 NV-dim passes with plain loads and stores: `vmaskmovps` in the
    // key loop cost a third of W3 at 1024 ids (the masks were rebuilt every
    // key for want of registers, and masked loads are slower on AMD). Only
    // the tail of a d_kv that is not a multiple of 8 NV is masked.
    while t + 8 * NV <= d {
        // SAFETY: forwarded contract; the pass is whole.
        unsafe { pv_pass::<R, NV, true>(p, r0, v, d, nk, op, os, t) };
        t += 8 * NV;
    }
    while t < d {
        // SAFETY: forwarded contract.
        unsafe { pv_pass::<R, NV, false>(p, r0, v, d, nk, op, os, t) };
        t += 8 * NV;
    }
}

/// One pass of [`pv256`] over dims `t..t + 8 NV`: plain loads and stores
/// when `WHOLE` (`t + 8 NV <= d`), masked to the dims `< d` otherwise.
///
/// # Safety
/// As [`pv256`], with `t < d` and, when `WHOLE`, `t + 8 NV <= d`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_pass<const R: usize, const NV: usize, const WHOLE: bool>(
    p: &Tile,
    r0: usize,
    v: Rows<'_>,
    d: usize,
    nk: usize,
    op: *mut f32,
    os: usize,
    t: usize,
) {
    // SAFETY: a whole pass reads and writes 8 floats at t + 8 u + 8 <= d inside
    // a row of out (rows r0 + r < nq) or of v (rows c < nk); a masked one, as
    // in pv512, touches only the lanes below d (vmaskmovps does not touch
    // disabled lanes). The masks are dead code in a whole pass.
    unsafe {
        let m: [__m256i; NV] = std::array::from_fn(|u| mask8(d.saturating_sub(t + 8 * u)));
        let load = |q: *const f32, u: usize| {
            if WHOLE {
                _mm256_loadu_ps(q)
            } else {
                _mm256_maskload_ps(q, m[u])
            }
        };
        let mut acc = [[_mm256_setzero_ps(); NV]; R];
        for r in 0..R {
            let o = op.add((r0 + r) * os + t);
            for u in 0..NV {
                acc[r][u] = load(o.wrapping_add(8 * u), u);
            }
        }
        for c in 0..nk {
            let vp = v.row(c).add(t);
            let vv: [__m256; NV] = std::array::from_fn(|u| load(vp.wrapping_add(8 * u), u));
            for r in 0..R {
                let pb = _mm256_set1_ps(p[r0 + r][c]);
                for u in 0..NV {
                    acc[r][u] = _mm256_fmadd_ps(pb, vv[u], acc[r][u]);
                }
            }
        }
        for r in 0..R {
            let o = op.add((r0 + r) * os + t);
            for u in 0..NV {
                if WHOLE {
                    _mm256_storeu_ps(o.wrapping_add(8 * u), acc[r][u]);
                } else {
                    _mm256_maskstore_ps(o.wrapping_add(8 * u), m[u], acc[r][u]);
                }
            }
        }
    }
}

/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn row_max256(s: &[f32]) -> f32 {
    let n = s.len();
    // SAFETY: full loads read [t, t + 8) with t + 8 <= n; the masked tail
    // touches only lanes < n - t.
    unsafe {
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut mv = ninf;
        let mut t = 0;
        while t + 8 <= n {
            mv = _mm256_max_ps(mv, _mm256_loadu_ps(s.as_ptr().add(t)));
            t += 8;
        }
        if t < n {
            let k = mask8(n - t);
            let x = _mm256_blendv_ps(
                ninf,
                _mm256_maskload_ps(s.as_ptr().add(t), k),
                _mm256_castsi256_ps(k),
            );
            mv = _mm256_max_ps(mv, x);
        }
        let h = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps::<1>(mv));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps::<1>(h, h)))
    }
}

/// # Safety
/// AVX2 + FMA.
#[inline(always)]
unsafe fn exp_row256(s: &mut [f32], m: f32) -> f32 {
    let n = s.len();
    // SAFETY: full accesses are [t, t + 8) with t + 8 <= n; the masked tail
    // touches only lanes < n - t of s. (Masked stores are slow on AMD, so
    // only the tail takes them.)
    unsafe {
        let (mv, ninf) = (_mm256_set1_ps(m), _mm256_set1_ps(f32::NEG_INFINITY));
        // Zero for masked keys (-inf).
        let weigh = |x: __m256| {
            let live = _mm256_cmp_ps::<_CMP_NEQ_UQ>(x, ninf);
            _mm256_and_ps(live, exp256(_mm256_sub_ps(x, mv)))
        };
        let mut sum = _mm256_setzero_ps();
        let mut t = 0;
        while t + 8 <= n {
            let e = weigh(_mm256_loadu_ps(s.as_ptr().add(t)));
            _mm256_storeu_ps(s.as_mut_ptr().add(t), e);
            sum = _mm256_add_ps(sum, e);
            t += 8;
        }
        if t < n {
            let k = mask8(n - t);
            // Lanes past the row load as 0 and are cleared after the exp.
            let e = _mm256_and_ps(
                _mm256_castsi256_ps(k),
                weigh(_mm256_maskload_ps(s.as_ptr().add(t), k)),
            );
            _mm256_maskstore_ps(s.as_mut_ptr().add(t), k, e);
            sum = _mm256_add_ps(sum, e);
        }
        crate::f32::avx2::hsum(sum)
    }
}
