//! AVX2 + FMA attention tile kernels: 8-lane score blocks, P·V row blocks,
//! row max and the vector `exp`, behind the `#[target_feature]` entry points
//! [`block`] and [`head_rows`] (the caller checked the CPU).

// Register arrays indexed by row and key read more plainly than zips.
#![allow(clippy::needless_range_loop)]

use super::blocked::{self, HeadKv, Rows, Tile, VecOps, BLOCK_Q, KEY_BLOCK};
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

// The prefill path packs the keys by dimension for the outer-product scores
// (`ByDimOps`).
blocked::entry_points!("avx2,fma", "AVX2 and FMA", Avx2Ops, ByDimOps);

/// The prefill kernels, as the AVX-512 level has them: scores from keys
/// packed by dimension as outer products (the dot-product blocks above end
/// in a transposing `hadd` reduction per eight scores and load a query and
/// a key vector per two FMAs), the keys transposed 8 x 8 in registers and
/// the bias added in vectors; P·V and the softmax as [`Avx2Ops`] (the
/// block's softmax rows together, as AVX-512 does them, measured level
/// here: kernels/BENCH.md).
struct ByDimOps;
impl VecOps for ByDimOps {
    const KEYS_BY_DIM: bool = true;

    #[inline(always)]
    unsafe fn pack_keys_by_dim(k: Rows<'_>, kend: usize, d: usize, dst: &mut [f32], ds: usize) {
        // SAFETY: forwarded contract.
        unsafe { pack_by_dim256(k, kend, d, dst, ds) }
    }

    #[inline(always)]
    unsafe fn add_bias(s: &mut [f32], b: &[f32]) {
        // SAFETY: forwarded contract.
        unsafe { add_bias256(s, b) }
    }

    #[inline(always)]
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
        // SAFETY: forwarded contract (AVX2 + FMA checked by run_with).
        unsafe { scores_by_dim256(q, k, d, nq, nk, tile) }
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
        // SAFETY: forwarded contract.
        unsafe { Avx2Ops::pv(p, v, d, nq, nk, out, os) }
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

/// Scores from keys by dimension: per dimension `t`, two vectors of 8
/// consecutive keys (`k.row(t)`) and four broadcast query elements make 8
/// FMAs into a 4-query x 16-key block held in registers; each score is one
/// chain of `d` FMAs in dimension order. (Groups of 24 keys, 12
/// accumulators, left LLVM one register short: it spilled an accumulator
/// and the attention ran slower, kernels/BENCH.md.)
///
/// # Safety
/// As `VecOps::scores` with `KEYS_BY_DIM` and AVX2 + FMA.
#[inline(always)]
unsafe fn scores_by_dim256(
    q: Rows<'_>,
    k: Rows<'_>,
    d: usize,
    nq: usize,
    nk: usize,
    tile: &mut Tile,
) {
    const { assert!(BLOCK_Q.is_multiple_of(4) && KEY_BLOCK.is_multiple_of(16)) };
    for r0 in (0..nq).step_by(4) {
        // Rows past the block repeat its last row: full register blocks.
        // SAFETY: the clamped rows are < nq.
        let qp: [*const f32; 4] = std::array::from_fn(|r| unsafe { q.row((r0 + r).min(nq - 1)) });
        for c0 in (0..nk).step_by(16) {
            let whole = c0 + 16 <= nk;
            // SAFETY: the masks are computed from lane counts only; the
            // query reads are elements t < d of rows < nq; the key loads
            // read lanes [c0, c0 + 16) of rows t < d when all 16 are keys
            // of the tile, else only the masked lanes < nk (pointers past a
            // row's end are formed with wrapping_add and only under an
            // all-zero mask, which reads nothing); the stores write
            // tile[r0 + r][c0..c0 + 16] with r0 + r < BLOCK_Q and c0 + 16
            // <= KEY_BLOCK.
            unsafe {
                let m: [__m256i; 2] = std::array::from_fn(|u| mask8(nk.saturating_sub(c0 + 8 * u)));
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for t in 0..d {
                    let kp = k.row(t).wrapping_add(c0);
                    let mut kv = [_mm256_setzero_ps(); 2];
                    for u in 0..2 {
                        kv[u] = if whole {
                            _mm256_loadu_ps(kp.add(8 * u))
                        } else {
                            _mm256_maskload_ps(kp.wrapping_add(8 * u), m[u])
                        };
                    }
                    for r in 0..4 {
                        let qb = _mm256_broadcast_ss(&*qp[r].add(t));
                        for u in 0..2 {
                            acc[r][u] = _mm256_fmadd_ps(qb, kv[u], acc[r][u]);
                        }
                    }
                }
                for r in 0..4 {
                    for u in 0..2 {
                        _mm256_storeu_ps(tile[r0 + r].as_mut_ptr().add(c0 + 8 * u), acc[r][u]);
                    }
                }
            }
        }
    }
}

/// [`VecOps::pack_keys_by_dim`] in 8 x 8 blocks, each transposed in
/// registers, and the edges element by element.
///
/// # Safety
/// As `VecOps::pack_keys_by_dim`, with AVX2.
#[inline(always)]
unsafe fn pack_by_dim256(k: Rows<'_>, kend: usize, d: usize, dst: &mut [f32], ds: usize) {
    assert!(ds >= kend && dst.len() >= d * ds);
    let (k8, d8) = (kend / 8 * 8, d / 8 * 8);
    for j0 in (0..k8).step_by(8) {
        for t0 in (0..d8).step_by(8) {
            // SAFETY: rows j0..j0 + 8 <= kend of k, elements t0..t0 + 8 <= d
            // of each; dst rows t0..t0 + 8 <= d, elements j0..j0 + 8 <= kend
            // of each (row length ds >= kend).
            unsafe {
                transpose8(
                    k.row(j0).add(t0),
                    k.stride,
                    dst.as_mut_ptr().add(t0 * ds + j0),
                    ds,
                )
            };
        }
    }
    for j in 0..kend {
        let t_from = if j < k8 { d8 } else { 0 };
        let src = &k.data[j * k.stride..][..d];
        for t in t_from..d {
            dst[t * ds + j] = src[t];
        }
    }
}

/// An 8 x 8 transpose: `dst[c * ds + r] = src[r * ss + c]`.
///
/// # Safety
/// AVX2; the 8 rows of 8 floats at `src` (stride `ss`) and at `dst`
/// (stride `ds`) are inside their buffers.
#[inline(always)]
unsafe fn transpose8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    // SAFETY: the loads and stores are the 8 rows the contract names.
    unsafe {
        // Loops, not `from_fn` closures (ARCHITECTURE.md: no intrinsic in a
        // closure of a hot path).
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, r) in r.iter_mut().enumerate() {
            *r = _mm256_loadu_ps(src.add(i * ss));
        }
        // 128-bit lane L of t[2i]: rows 2i, 2i + 1 at columns 4L, 4L + 1;
        // of t[2i + 1]: at columns 4L + 2, 4L + 3.
        let mut t = [_mm256_setzero_ps(); 8];
        for i in 0..4 {
            t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // 128-bit lane L of u[4g + c]: column 4L + c of rows 4g..4g + 4.
        let mut u = [_mm256_setzero_ps(); 8];
        for g in 0..2 {
            for h in 0..2 {
                let a = _mm256_castps_pd(t[4 * g + h]);
                let b = _mm256_castps_pd(t[4 * g + 2 + h]);
                u[4 * g + 2 * h] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, b));
                u[4 * g + 2 * h + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, b));
            }
        }
        // Column c < 4: the low lanes of u[c] and u[4 + c]; column 4 + c:
        // their high lanes.
        for c in 0..4 {
            let lo = _mm256_permute2f128_ps::<0x20>(u[c], u[4 + c]);
            let hi = _mm256_permute2f128_ps::<0x31>(u[c], u[4 + c]);
            _mm256_storeu_ps(dst.add(c * ds), lo);
            _mm256_storeu_ps(dst.add((4 + c) * ds), hi);
        }
    }
}

/// [`VecOps::add_bias`] 8 lanes at a time.
///
/// # Safety
/// AVX2; `s.len() == b.len()`.
#[inline(always)]
unsafe fn add_bias256(s: &mut [f32], b: &[f32]) {
    let n = s.len();
    debug_assert_eq!(n, b.len());
    // SAFETY: whole vectors lie inside s and b; the tail's masked accesses
    // touch only lanes < n - t.
    unsafe {
        let mut t = 0;
        while t + 8 <= n {
            let x = _mm256_loadu_ps(s.as_ptr().add(t));
            let y = _mm256_loadu_ps(b.as_ptr().add(t));
            _mm256_storeu_ps(s.as_mut_ptr().add(t), _mm256_add_ps(x, y));
            t += 8;
        }
        if t < n {
            let m = mask8(n - t);
            let x = _mm256_maskload_ps(s.as_ptr().add(t), m);
            let y = _mm256_maskload_ps(b.as_ptr().add(t), m);
            _mm256_maskstore_ps(s.as_mut_ptr().add(t), m, _mm256_add_ps(x, y));
        }
    }
}

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
