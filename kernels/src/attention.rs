//! Fused T5 attention: `softmax(q kᵀ + bias + mask) v` per head, with a streaming
//! (online) softmax so no score matrix is ever materialised.
//!
//! T5 does not scale scores by 1/sqrt(d_kv): its initialisation folds that in.
//! The relative-position bias depends only on `j - i`, so callers pass one row per
//! head covering every distance that occurs ([`RelBias`]), O(heads · (tq + tk))
//! memory instead of O(heads · tq · tk).

use crate::dispatch::{active, Isa};

/// Query rows per block: every K row loaded for the score tile and every V row
/// loaded for the P·V step serves this many queries, not one.
const BLOCK_Q: usize = 8;

/// Keys per tile: one max and at most one rescale of each accumulator row per
/// tile instead of per key, and a score tile (`BLOCK_Q x KEY_BLOCK`, 2 KiB) that
/// stays in L1. Must be a multiple of every kernel's key group (16).
const KEY_BLOCK: usize = 64;

/// Scores, then (in place) softmax weights, of one query block against one key
/// tile: `tile[r][c]` for query `i0 + r` and key `j0 + c`.
type Tile = [[f32; KEY_BLOCK]; BLOCK_Q];

/// Rows of one head inside a row-major `[rows, heads * d_kv]` matrix: row `r`
/// is `data[r * stride..r * stride + d]`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
}

impl Rows<'_> {
    /// Pointer to row `r`.
    ///
    /// # Safety
    /// Row `r` must lie inside `data` (`r * stride + d <= data.len()`).
    #[inline(always)]
    unsafe fn row(&self, r: usize) -> *const f32 {
        // SAFETY: forwarded contract.
        unsafe { self.data.as_ptr().add(r * self.stride) }
    }
}

/// The vector kernels the blocked algorithm is made of; each ISA supplies them.
/// The defaults are the plain-Rust versions the scalar level runs.
trait VecOps {
    /// `tile[r][c] = q_r · k_c` for `r < nq`, `c < nk`. A kernel may also write
    /// (finite) values to rows and columns up to its register block beyond those;
    /// nothing reads them.
    ///
    /// # Safety
    /// The CPU must support the implementing ISA; rows `[0, nq)` of `q` and
    /// `[0, nk)` of `k` (each `d` long) lie inside their slices; `1 <= nq <=
    /// BLOCK_Q`, `1 <= nk <= KEY_BLOCK`.
    #[inline(always)]
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
        for (r, row) in tile.iter_mut().enumerate().take(nq) {
            let qr = &q.data[r * q.stride..r * q.stride + d];
            for (c, s) in row.iter_mut().enumerate().take(nk) {
                *s = crate::f32::scalar::dot(qr, &k.data[c * k.stride..c * k.stride + d]);
            }
        }
    }

    /// `out_r += sum_c p[r][c] v_c` for `r < nq` over keys `c < nk`.
    ///
    /// # Safety
    /// As `scores`, with `v` for `k`; rows `[0, nq)` of `out` (stride `os`, each
    /// `d` long) lie inside `out`.
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
        for (r, pr) in p.iter().enumerate().take(nq) {
            let o = &mut out[r * os..r * os + d];
            for (c, &w) in pr.iter().enumerate().take(nk) {
                let vc = &v.data[c * v.stride..c * v.stride + d];
                o.iter_mut().zip(vc).for_each(|(o, &x)| *o += w * x);
            }
        }
    }

    /// The largest score of a row (`-inf` if all are masked).
    ///
    /// # Safety
    /// The CPU must support the implementing ISA.
    #[inline(always)]
    unsafe fn row_max(s: &[f32]) -> f32 {
        s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
    }

    /// In place `s[c] = exp(s[c] - m)`, exactly 0 for masked (`-inf`) scores,
    /// and returns the row's sum.
    ///
    /// # Safety
    /// The CPU must support the implementing ISA.
    #[inline(always)]
    unsafe fn exp_row(s: &mut [f32], m: f32) -> f32 {
        let mut l = 0.0f32;
        for x in s.iter_mut() {
            *x = if *x == f32::NEG_INFINITY {
                0.0
            } else {
                (*x - m).exp()
            };
            l += *x;
        }
        l
    }
}

/// Vector `exp` (the Cephes `expf` scheme: `2^n · e^r`, `|r| <= ln2/2`, degree-6
/// polynomial), within ~2 ulp of the true value for finite inputs; inputs below
/// -87.3 give ~1e-38 instead of a subnormal, far below anything attention adds.
#[cfg(target_arch = "x86_64")]
mod vexp {
    use std::arch::x86_64::*;

    // exp(88) < f32::MAX and keeps n <= 127, so the AVX2 exponent-field trick
    // cannot produce an infinity (attention only ever passes s - max <= 0).
    const HI: f32 = 88.0;
    const LO: f32 = -87.336_55;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) fn exp512(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LO)), _mm512_set1_ps(HI));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(C1), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(C2), r);
        let mut y = _mm512_set1_ps(P[0]);
        for c in &P[1..] {
            y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(*c));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        _mm512_scalef_ps(y, n)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp256(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LO)), _mm256_set1_ps(HI));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
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
}

struct ScalarOps;
impl VecOps for ScalarOps {}

/// Lanes of the 4-wide NEON vectors, and the register blocks: 4 queries x 4
/// keys (or 1 x 16 for a single query) of accumulators, 32 registers on aarch64.
struct NeonOps;
impl VecOps for NeonOps {
    #[inline(always)]
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
        // SAFETY: forwarded contract (NEON is baseline on aarch64, emulated elsewhere).
        unsafe {
            if nq == 1 {
                neon_scores::<1, 16>(q, k, d, nq, nk, tile)
            } else {
                neon_scores::<4, 4>(q, k, d, nq, nk, tile)
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
                    1 => neon_pv::<1>(p, r0, v, d, nk, out, os),
                    2 => neon_pv::<2>(p, r0, v, d, nk, out, os),
                    3 => neon_pv::<3>(p, r0, v, d, nk, out, os),
                    _ => neon_pv::<4>(p, r0, v, d, nk, out, os),
                }
            }
            r0 += 4;
        }
    }
}

/// An `R x C` register block of dot products, 4 lanes at a time, reduced per
/// accumulator; the `d % 4` tail is added in scalar fused steps.
///
/// # Safety
/// As [`VecOps::scores`]; `BLOCK_Q % R == 0`, `KEY_BLOCK % C == 0`.
// Register arrays indexed by row and key read more plainly than zips.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn neon_scores<const R: usize, const C: usize>(
    q: Rows<'_>,
    k: Rows<'_>,
    d: usize,
    nq: usize,
    nk: usize,
    tile: &mut Tile,
) {
    use crate::neon_intrinsics::*;
    let d4 = d / 4 * 4;
    for r0 in (0..nq).step_by(R) {
        // Rows past the block repeat its last row, so every block has R rows.
        // SAFETY: the clamped rows are < nq.
        let qp: [*const f32; R] = std::array::from_fn(|r| unsafe { q.row((r0 + r).min(nq - 1)) });
        for c0 in (0..nk).step_by(C) {
            // SAFETY: the clamped rows are < nk.
            let kp: [*const f32; C] =
                std::array::from_fn(|c| unsafe { k.row((c0 + c).min(nk - 1)) });
            let mut acc = [[vdupq_n_f32(0.0); C]; R];
            // SAFETY: every load reads [t, t + 4) of a row with t + 4 <= d.
            unsafe {
                for t in (0..d4).step_by(4) {
                    let qv: [float32x4_t; R] = std::array::from_fn(|r| vld1q_f32(qp[r].add(t)));
                    for c in 0..C {
                        let kv = vld1q_f32(kp[c].add(t));
                        for r in 0..R {
                            acc[r][c] = vfmaq_f32(acc[r][c], qv[r], kv);
                        }
                    }
                }
            }
            for r in 0..R {
                for c in 0..C {
                    let mut s = vaddvq_f32(acc[r][c]);
                    for t in d4..d {
                        // SAFETY: t < d, inside both rows.
                        s = unsafe { (*qp[r].add(t)).mul_add(*kp[c].add(t), s) };
                    }
                    tile[r0 + r][c0 + c] = s;
                }
            }
        }
    }
}

/// `R` output rows (from `r0`) in passes of 16 dims: 4 x R accumulators live
/// across the whole key loop; the `d % 4` tail is scalar fused steps.
///
/// # Safety
/// As [`VecOps::pv`], with `r0 + R <= nq`.
// Register arrays indexed by row and key read more plainly than zips.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn neon_pv<const R: usize>(
    p: &Tile,
    r0: usize,
    v: Rows<'_>,
    d: usize,
    nk: usize,
    out: &mut [f32],
    os: usize,
) {
    use crate::neon_intrinsics::*;
    let d4 = d / 4 * 4;
    let op = out.as_mut_ptr();
    let mut t = 0;
    while t < d4 {
        let nv = ((d4 - t) / 4).min(4);
        // SAFETY: vector accesses are [t + 4u, t + 4u + 4) with u < nv, so
        // inside d4 <= d of their row; rows r0 + r < nq and c < nk are in bounds.
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); 4]; R];
            for r in 0..R {
                for u in 0..nv {
                    acc[r][u] = vld1q_f32(op.add((r0 + r) * os + t + 4 * u));
                }
            }
            for c in 0..nk {
                let vp = v.row(c).add(t);
                let vv: [float32x4_t; 4] = std::array::from_fn(|u| {
                    if u < nv {
                        vld1q_f32(vp.add(4 * u))
                    } else {
                        vdupq_n_f32(0.0)
                    }
                });
                for r in 0..R {
                    let pb = vdupq_n_f32(p[r0 + r][c]);
                    for u in 0..nv {
                        acc[r][u] = vfmaq_f32(acc[r][u], pb, vv[u]);
                    }
                }
            }
            for r in 0..R {
                for u in 0..nv {
                    vst1q_f32(op.add((r0 + r) * os + t + 4 * u), acc[r][u]);
                }
            }
        }
        t += 16;
    }
    for r in 0..R {
        let o = &mut out[(r0 + r) * os..(r0 + r) * os + d];
        for c in 0..nk {
            let w = p[r0 + r][c];
            for t in d4..d {
                o[t] = w.mul_add(v.data[c * v.stride + t], o[t]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2Ops;
#[cfg(target_arch = "x86_64")]
impl VecOps for Avx2Ops {
    #[inline(always)]
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
        // SAFETY: forwarded contract (AVX2 + FMA checked by run_with).
        unsafe {
            if nq == 1 {
                x86::scores256::<1, 8>(q, k, d, nq, nk, tile)
            } else {
                x86::scores256::<2, 4>(q, k, d, nq, nk, tile)
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
                    1 => x86::pv256::<1, 8>(p, r0, v, d, nk, out, os),
                    2 => x86::pv256::<2, 4>(p, r0, v, d, nk, out, os),
                    3 => x86::pv256::<3, 2>(p, r0, v, d, nk, out, os),
                    _ => x86::pv256::<4, 2>(p, r0, v, d, nk, out, os),
                }
            }
            r0 += 4;
        }
    }

    #[inline(always)]
    unsafe fn row_max(s: &[f32]) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { x86::row_max256(s) }
    }

    #[inline(always)]
    unsafe fn exp_row(s: &mut [f32], m: f32) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { x86::exp_row256(s, m) }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx512Ops;
#[cfg(target_arch = "x86_64")]
impl VecOps for Avx512Ops {
    #[inline(always)]
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
        // SAFETY: forwarded contract (AVX-512 checked by run_with).
        unsafe {
            if nq == 1 {
                x86::scores512::<1, 16>(q, k, d, nq, nk, tile)
            } else {
                x86::scores512::<4, 4>(q, k, d, nq, nk, tile)
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
                    1 => x86::pv512::<1>(p, r0, v, d, nk, out, os),
                    2 => x86::pv512::<2>(p, r0, v, d, nk, out, os),
                    3 => x86::pv512::<3>(p, r0, v, d, nk, out, os),
                    _ => x86::pv512::<4>(p, r0, v, d, nk, out, os),
                }
            }
            r0 += 4;
        }
    }

    #[inline(always)]
    unsafe fn row_max(s: &[f32]) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { x86::row_max512(s) }
    }

    #[inline(always)]
    unsafe fn exp_row(s: &mut [f32], m: f32) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { x86::exp_row512(s, m) }
    }
}

/// The x86 tile kernels. All are `#[inline(always)]` into the
/// `#[target_feature]` entry points (`block_avx512`, `block_avx2`), whose
/// callers checked the CPU.
#[cfg(target_arch = "x86_64")]
mod x86 {
    // Register arrays indexed by row and key read more plainly than zips.
    #![allow(clippy::needless_range_loop)]

    use super::{vexp, Rows, Tile};
    use std::arch::x86_64::*;

    /// First `n` lanes (n may exceed 16).
    #[inline(always)]
    fn mask16(n: usize) -> u16 {
        if n >= 16 {
            u16::MAX
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    /// Sixteen vectors to one: lane `i` is the sum of `v[i]`'s lanes (pairs
    /// within 128-bit lanes, then quads, then across the four 128-bit lanes).
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn reduce16(v: &[__m512; 16]) -> __m512 {
        // SAFETY: register-only AVX-512F operations.
        unsafe {
            let t: [__m512; 8] = std::array::from_fn(|i| {
                let (a, b) = (v[2 * i], v[2 * i + 1]);
                _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
            });
            let u: [__m512; 4] = std::array::from_fn(|i| {
                let (a, b) = (_mm512_castps_pd(t[2 * i]), _mm512_castps_pd(t[2 * i + 1]));
                _mm512_add_ps(
                    _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                    _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
                )
            });
            let x: [__m512; 2] = std::array::from_fn(|i| {
                let (a, b) = (u[2 * i], u[2 * i + 1]);
                _mm512_add_ps(
                    _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
                    _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
                )
            });
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(x[0], x[1]),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(x[0], x[1]),
            )
        }
    }

    /// An `R x C` (`R * C == 16`) block of dot products: per 16 dims, R query
    /// loads and C key loads feed R·C FMAs; one transposing reduction then
    /// yields all 16 scores in one vector.
    ///
    /// # Safety
    /// As `VecOps::scores` with AVX-512F; `BLOCK_Q % R == 0`, `KEY_BLOCK % C == 0`.
    #[inline(always)]
    pub(super) unsafe fn scores512<const R: usize, const C: usize>(
        q: Rows<'_>,
        k: Rows<'_>,
        d: usize,
        nq: usize,
        nk: usize,
        tile: &mut Tile,
    ) {
        debug_assert!(R * C == 16);
        for r0 in (0..nq).step_by(R) {
            // Rows past the block repeat its last row: full register blocks.
            // SAFETY: the clamped rows are < nq.
            let qp: [*const f32; R] =
                std::array::from_fn(|r| unsafe { q.row((r0 + r).min(nq - 1)) });
            for c0 in (0..nk).step_by(C) {
                // SAFETY: the clamped rows are < nk.
                let kp: [*const f32; C] =
                    std::array::from_fn(|c| unsafe { k.row((c0 + c).min(nk - 1)) });
                // SAFETY: masked loads touch only lanes [t, min(t + 16, d)) of
                // rows inside their slices (the pointers are formed only for
                // t < d); the stores write tile[r0 + r][c0..c0 + C] with
                // r0 + r < BLOCK_Q and c0 + C <= KEY_BLOCK.
                unsafe {
                    let mut acc = [_mm512_setzero_ps(); 16];
                    let mut t = 0;
                    while t < d {
                        let m = mask16(d - t);
                        let qv: [__m512; R] =
                            std::array::from_fn(|r| _mm512_maskz_loadu_ps(m, qp[r].add(t)));
                        for c in 0..C {
                            let kv = _mm512_maskz_loadu_ps(m, kp[c].add(t));
                            for r in 0..R {
                                acc[r * C + c] = _mm512_fmadd_ps(qv[r], kv, acc[r * C + c]);
                            }
                        }
                        t += 16;
                    }
                    let mut s = [0.0f32; 16];
                    _mm512_storeu_ps(s.as_mut_ptr(), reduce16(&acc));
                    for r in 0..R {
                        tile[r0 + r][c0..c0 + C].copy_from_slice(&s[r * C..(r + 1) * C]);
                    }
                }
            }
        }
    }

    /// `R` output rows from `r0`, 64 dims per pass: 4·R accumulators stay in
    /// registers over the whole key tile, and each V load serves R queries.
    ///
    /// # Safety
    /// As `VecOps::pv` with AVX-512F, and `r0 + R <= nq`.
    #[inline(always)]
    pub(super) unsafe fn pv512<const R: usize>(
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
        while t < d {
            let m: [u16; 4] = std::array::from_fn(|u| mask16(d.saturating_sub(t + 16 * u)));
            // SAFETY: masked accesses touch only lanes < d of rows r0 + r < nq
            // (out) and c < nk (v); pointers past a row's end are formed with
            // wrapping_add and only under an all-zero mask, which reads nothing.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); 4]; R];
                for r in 0..R {
                    let o = op.add((r0 + r) * os + t);
                    for u in 0..4 {
                        acc[r][u] = _mm512_maskz_loadu_ps(m[u], o.wrapping_add(16 * u));
                    }
                }
                let load = |c: usize| -> [__m512; 4] {
                    let vp = v.row(c).add(t);
                    std::array::from_fn(|u| _mm512_maskz_loadu_ps(m[u], vp.wrapping_add(16 * u)))
                };
                let mut c = 0;
                // One row alone is 4 FMA chains, latency-bound: odd keys go
                // to a second set of accumulators, added at the end.
                let mut odd = [_mm512_setzero_ps(); 4];
                while R == 1 && c + 2 <= nk {
                    let (v0, v1) = (load(c), load(c + 1));
                    let (p0, p1) = (_mm512_set1_ps(p[r0][c]), _mm512_set1_ps(p[r0][c + 1]));
                    for u in 0..4 {
                        acc[0][u] = _mm512_fmadd_ps(p0, v0[u], acc[0][u]);
                        odd[u] = _mm512_fmadd_ps(p1, v1[u], odd[u]);
                    }
                    c += 2;
                }
                for c in c..nk {
                    let vv = load(c);
                    for r in 0..R {
                        let pb = _mm512_set1_ps(p[r0 + r][c]);
                        for u in 0..4 {
                            acc[r][u] = _mm512_fmadd_ps(pb, vv[u], acc[r][u]);
                        }
                    }
                }
                if R == 1 {
                    for u in 0..4 {
                        acc[0][u] = _mm512_add_ps(acc[0][u], odd[u]);
                    }
                }
                for r in 0..R {
                    let o = op.add((r0 + r) * os + t);
                    for u in 0..4 {
                        _mm512_mask_storeu_ps(o.wrapping_add(16 * u), m[u], acc[r][u]);
                    }
                }
            }
            t += 64;
        }
    }

    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    pub(super) unsafe fn row_max512(s: &[f32]) -> f32 {
        let n = s.len();
        // SAFETY: masked loads touch only lanes < n - t of s.
        unsafe {
            let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut t = 0;
            while t < n {
                let x = _mm512_mask_loadu_ps(mv, mask16(n - t), s.as_ptr().add(t));
                mv = _mm512_max_ps(mv, x);
                t += 16;
            }
            _mm512_reduce_max_ps(mv)
        }
    }

    /// # Safety
    /// AVX-512F (and AVX2 + FMA, which the vector exp's target features name).
    #[inline(always)]
    pub(super) unsafe fn exp_row512(s: &mut [f32], m: f32) -> f32 {
        let n = s.len();
        // SAFETY: masked accesses touch only lanes < n - t of s.
        unsafe {
            let (mv, ninf) = (_mm512_set1_ps(m), _mm512_set1_ps(f32::NEG_INFINITY));
            let mut sum = _mm512_setzero_ps();
            let mut t = 0;
            while t < n {
                let k = mask16(n - t);
                let x = _mm512_maskz_loadu_ps(k, s.as_ptr().add(t));
                // Masked keys (-inf) weigh exactly 0: the vector exp clamps its
                // input and would give ~1e-38.
                let live = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(k, x, ninf);
                let e = _mm512_maskz_mov_ps(live, vexp::exp512(_mm512_sub_ps(x, mv)));
                _mm512_mask_storeu_ps(s.as_mut_ptr().add(t), k, e);
                sum = _mm512_add_ps(sum, e);
                t += 16;
            }
            _mm512_reduce_add_ps(sum)
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

    /// [`scores512`] for 8 lanes: `R x C == 8` accumulators of 16 registers.
    ///
    /// # Safety
    /// As `VecOps::scores` with AVX2 + FMA; `BLOCK_Q % R == 0`, `KEY_BLOCK % C == 0`.
    #[inline(always)]
    pub(super) unsafe fn scores256<const R: usize, const C: usize>(
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
            let qp: [*const f32; R] =
                std::array::from_fn(|r| unsafe { q.row((r0 + r).min(nq - 1)) });
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
                        let qv: [__m256; R] =
                            std::array::from_fn(|r| _mm256_loadu_ps(qp[r].add(t)));
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

    /// [`pv512`] for 8 lanes: `R` rows x `8 NV` dims per pass (`R * NV == 8`
    /// accumulators: fewer rows get more independent chains).
    ///
    /// # Safety
    /// As `VecOps::pv` with AVX2 + FMA, and `r0 + R <= nq`.
    #[inline(always)]
    pub(super) unsafe fn pv256<const R: usize, const NV: usize>(
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
        while t < d {
            // SAFETY: as in pv512 (vmaskmovps touches only the enabled lanes).
            unsafe {
                let m: [__m256i; NV] = std::array::from_fn(|u| mask8(d.saturating_sub(t + 8 * u)));
                let mut acc = [[_mm256_setzero_ps(); NV]; R];
                for r in 0..R {
                    let o = op.add((r0 + r) * os + t);
                    for u in 0..NV {
                        acc[r][u] = _mm256_maskload_ps(o.wrapping_add(8 * u), m[u]);
                    }
                }
                for c in 0..nk {
                    let vp = v.row(c).add(t);
                    let vv: [__m256; NV] =
                        std::array::from_fn(|u| _mm256_maskload_ps(vp.wrapping_add(8 * u), m[u]));
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
                        _mm256_maskstore_ps(o.wrapping_add(8 * u), m[u], acc[r][u]);
                    }
                }
            }
            t += 8 * NV;
        }
    }

    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(super) unsafe fn row_max256(s: &[f32]) -> f32 {
        let n = s.len();
        // SAFETY: masked loads touch only lanes < n - t of s.
        unsafe {
            let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut mv = ninf;
            let mut t = 0;
            while t < n {
                let k = mask8(n - t);
                let x = _mm256_blendv_ps(
                    ninf,
                    _mm256_maskload_ps(s.as_ptr().add(t), k),
                    _mm256_castsi256_ps(k),
                );
                mv = _mm256_max_ps(mv, x);
                t += 8;
            }
            let h = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps::<1>(mv));
            let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps::<1>(h, h)))
        }
    }

    /// # Safety
    /// AVX2 + FMA.
    #[inline(always)]
    pub(super) unsafe fn exp_row256(s: &mut [f32], m: f32) -> f32 {
        let n = s.len();
        // SAFETY: masked accesses touch only lanes < n - t of s.
        unsafe {
            let (mv, ninf) = (_mm256_set1_ps(m), _mm256_set1_ps(f32::NEG_INFINITY));
            let mut sum = _mm256_setzero_ps();
            let mut t = 0;
            while t < n {
                let k = mask8(n - t);
                let x = _mm256_maskload_ps(s.as_ptr().add(t), k);
                // Zero for masked keys (-inf) and for lanes past the row.
                let live = _mm256_and_ps(
                    _mm256_cmp_ps::<_CMP_NEQ_UQ>(x, ninf),
                    _mm256_castsi256_ps(k),
                );
                let e = _mm256_and_ps(live, vexp::exp256(_mm256_sub_ps(x, mv)));
                _mm256_maskstore_ps(s.as_mut_ptr().add(t), k, e);
                sum = _mm256_add_ps(sum, e);
                t += 8;
            }
            crate::f32::avx2::hsum(sum)
        }
    }
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VL, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn block_avx512(a: &Attention<'_>, h: usize, i0: usize, nq: usize, out: &mut [f32]) {
    block::<Avx512Ops>(a, h, i0, nq, out)
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(a: &Attention<'_>, h: usize, i0: usize, nq: usize, out: &mut [f32]) {
    block::<Avx2Ops>(a, h, i0, nq, out)
}

/// Head `h` of queries `i0..i0 + nq` (`nq <= BLOCK_Q`) with a key-tiled online
/// softmax; query `i0 + r`'s output is `out[r * inner..r * inner + d]`.
///
/// Per tile of keys: score the whole query block against it (each K row load
/// serves every query), add bias and masks, take each query's tile max,
/// rescale its running sum and accumulator at most once, turn the scores into
/// weights in place, and add the weighted values (each V row load serves every
/// query). Only keys some query of the block may see are visited.
#[inline(always)]
fn block<O: VecOps>(a: &Attention<'_>, h: usize, i0: usize, nq: usize, out: &mut [f32]) {
    let d = a.d_kv;
    let inner = a.heads * d;
    let os = inner;
    assert!((1..=BLOCK_Q).contains(&nq) && i0 + nq <= a.tq && (nq - 1) * os + d <= out.len());
    // Keys query i may see: [0, last(i)), non-decreasing in i.
    let last = |i: usize| match a.causal {
        Some(off) => (i + off + 1).min(a.tk),
        None => a.tk,
    };
    let kend = last(i0 + nq - 1);
    let q = Rows {
        data: &a.q[i0 * inner + h * d..],
        stride: inner,
    };
    let mut m = [f32::NEG_INFINITY; BLOCK_Q];
    let mut l = [0.0f32; BLOCK_Q];
    for r in 0..nq {
        out[r * os..r * os + d].fill(0.0);
    }
    let mut tile: Tile = [[0.0; KEY_BLOCK]; BLOCK_Q];
    let mut j0 = 0;
    while j0 < kend {
        let nk = (kend - j0).min(KEY_BLOCK);
        let k = Rows {
            data: &a.k[j0 * inner + h * d..],
            stride: inner,
        };
        // SAFETY: O's ISA was checked by run_with; rows [0, nq) of q and
        // [0, nk) of k end inside their slices (check() verified the shapes,
        // i0 + nq <= tq and j0 + nk <= tk).
        unsafe { O::scores(q, k, d, nq, nk, &mut tile) };
        for r in 0..nq {
            let i = i0 + r;
            let s = &mut tile[r][..nk];
            if let Some(b) = &a.bias {
                // check() made sure every (i, j) of the call is inside the span.
                let at = (h * b.span) as isize + j0 as isize - i as isize + b.offset;
                let bias = &b.values[at as usize..at as usize + nk];
                s.iter_mut().zip(bias).for_each(|(s, &b)| *s += b);
            }
            if let Some(mask) = a.key_mask {
                for (s, &visible) in s.iter_mut().zip(&mask[j0..j0 + nk]) {
                    if !visible {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
            s[last(i).saturating_sub(j0).min(nk)..].fill(f32::NEG_INFINITY);
            // SAFETY: O's ISA was checked by run_with.
            let bm = unsafe { O::row_max(s) };
            if bm > m[r] {
                // exp(-inf) = 0 clears the (empty) state on the first visible tile.
                let c = (m[r] - bm).exp();
                l[r] *= c;
                out[r * os..r * os + d].iter_mut().for_each(|o| *o *= c);
                m[r] = bm;
            }
            // SAFETY: as above. With m = -inf every score is -inf and weighs 0.
            l[r] += unsafe { O::exp_row(s, m[r]) };
        }
        let v = Rows {
            data: &a.v[j0 * inner + h * d..],
            stride: inner,
        };
        // SAFETY: as for scores; rows [0, nq) of out (stride os) are in `out`.
        unsafe { O::pv(&tile, v, d, nq, nk, out, os) };
        j0 += nk;
    }
    for r in 0..nq {
        let inv = if l[r] > 0.0 { 1.0 / l[r] } else { 0.0 };
        out[r * os..r * os + d].iter_mut().for_each(|o| *o *= inv);
    }
}

/// Relative-position bias: `bias(h, i, j) = values[h * span + (j - i + offset)]`.
#[derive(Clone, Copy, Debug)]
pub struct RelBias<'a> {
    pub values: &'a [f32],
    pub span: usize,
    pub offset: isize,
}

impl RelBias<'_> {
    #[inline]
    pub fn get(&self, h: usize, i: usize, j: usize) -> f32 {
        let idx = j as isize - i as isize + self.offset;
        debug_assert!(idx >= 0 && (idx as usize) < self.span);
        self.values[h * self.span + idx as usize]
    }
}

/// One attention call. `q` is `[tq, heads * d_kv]`, `k` and `v` are
/// `[tk, heads * d_kv]`, `out` is `[tq, heads * d_kv]`, all row-major.
pub struct Attention<'a> {
    pub heads: usize,
    pub d_kv: usize,
    pub tq: usize,
    pub tk: usize,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub bias: Option<RelBias<'a>>,
    /// `key_mask[j] == false` hides key `j` from every query (padding).
    pub key_mask: Option<&'a [bool]>,
    /// `Some(off)`: query `i` sees keys `j <= i + off` only (decoder self-attention,
    /// where `off` is the number of cached positions before this call).
    pub causal: Option<usize>,
}

impl Attention<'_> {
    fn check(&self, out: &[f32]) {
        let inner = self.heads * self.d_kv;
        assert_eq!(self.q.len(), self.tq * inner, "attention: q shape");
        assert!(self.k.len() >= self.tk * inner, "attention: k shape");
        assert!(self.v.len() >= self.tk * inner, "attention: v shape");
        assert_eq!(out.len(), self.tq * inner, "attention: out shape");
        if let Some(m) = self.key_mask {
            assert!(m.len() >= self.tk, "attention: key mask shape");
        }
        if let Some(b) = self.bias {
            assert!(
                b.values.len() >= self.heads * b.span,
                "attention: bias shape"
            );
            if self.tq > 0 && self.tk > 0 {
                let lo = -(self.tq as isize - 1) + b.offset;
                let hi = self.tk as isize - 1 + b.offset;
                assert!(
                    lo >= 0 && (hi as usize) < b.span,
                    "attention: bias span too short"
                );
            }
        }
    }

    /// Runs at the active ISA level, writing `out`.
    pub fn run(&self, out: &mut [f32]) {
        self.run_with(active(), out)
    }

    /// Runs the blocked kernel at a chosen level. Tasks are fixed by the shapes
    /// alone: with `tq == 1` one per head, otherwise one per block of
    /// [`BLOCK_Q`] query rows (all heads); each output is computed by one task
    /// in a fixed order, so the bits do not depend on the number of
    /// threads or the pool backend. Panics if the CPU cannot run `isa` (`Isa::Neon` off aarch64
    /// runs the emulated NEON intrinsics).
    pub fn run_with(&self, isa: Isa, out: &mut [f32]) {
        self.check(out);
        crate::f32::check_isa(isa);
        let d = self.d_kv;
        if d == 0 || self.tq == 0 || self.heads == 0 {
            return;
        }
        let inner = self.heads * d;
        let one = |h: usize, i0: usize, nq: usize, o: &mut [f32]| match isa {
            // SAFETY: check_isa verified AVX-512 F/BW/VL (+ AVX2/FMA).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Vnni => unsafe { block_avx512(self, h, i0, nq, o) },
            // SAFETY: check_isa verified AVX2 + FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { block_avx2(self, h, i0, nq, o) },
            Isa::Neon => block::<NeonOps>(self, h, i0, nq, o),
            _ => block::<ScalarOps>(self, h, i0, nq, o),
        };
        // A decoder step has one query: split it by head instead.
        let chunk = if self.tq == 1 { d } else { BLOCK_Q * inner };
        let body = |b: usize, o: &mut [f32]| {
            if self.tq == 1 {
                one(b, 0, 1, o)
            } else {
                let nq = o.len() / inner;
                for h in 0..self.heads {
                    one(h, b * BLOCK_Q, nq, &mut o[h * d..]);
                }
            }
        };
        let work = self.tq * self.heads * self.tk * d;
        let parallel = crate::par::worth_parallel_macs(work);
        crate::par::for_chunks_mut(out, chunk, parallel, body);
    }

    /// The original per-key online-softmax kernel in plain scalar Rust: the twin
    /// the blocked kernels are checked against (both against the f64 reference).
    pub fn run_scalar(&self, out: &mut [f32]) {
        self.check(out);
        let inner = self.heads * self.d_kv;
        let d = self.d_kv;
        let mut acc = vec![0.0f32; d];
        for h in 0..self.heads {
            for i in 0..self.tq {
                let qi = &self.q[i * inner + h * d..i * inner + (h + 1) * d];
                let last = match self.causal {
                    Some(off) => (i + off + 1).min(self.tk),
                    None => self.tk,
                };
                let mut m = f32::NEG_INFINITY;
                let mut l = 0.0f32;
                acc.iter_mut().for_each(|a| *a = 0.0);
                for j in 0..last {
                    if let Some(mask) = self.key_mask {
                        if !mask[j] {
                            continue;
                        }
                    }
                    let kj = &self.k[j * inner + h * d..j * inner + (h + 1) * d];
                    let mut s: f32 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                    if let Some(b) = &self.bias {
                        s += b.get(h, i, j);
                    }
                    let vj = &self.v[j * inner + h * d..j * inner + (h + 1) * d];
                    if s > m {
                        let c = (m - s).exp();
                        l = l * c + 1.0;
                        for (a, &vv) in acc.iter_mut().zip(vj) {
                            *a = *a * c + vv;
                        }
                        m = s;
                    } else {
                        let p = (s - m).exp();
                        l += p;
                        for (a, &vv) in acc.iter_mut().zip(vj) {
                            *a += p * vv;
                        }
                    }
                }
                let o = &mut out[i * inner + h * d..i * inner + (h + 1) * d];
                let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
                for (ov, &a) in o.iter_mut().zip(&acc) {
                    *ov = a * inv;
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::vexp;
    use std::arch::x86_64::*;

    /// The vector exp is within 2 ulp (relative 2.5e-7) of the true value on the
    /// range attention uses (and a little beyond).
    #[test]
    fn vector_exp_is_accurate() {
        let xs: Vec<f32> = (0..20000).map(|i| -87.0 + i as f32 * 0.0044).collect();
        let check = |x: f32, got: f32| {
            let want = (x as f64).exp();
            let rel = ((got as f64 - want) / want).abs();
            assert!(rel <= 2.5e-7, "exp({x}) = {got}, want {want}, rel {rel:e}");
        };
        for chunk in xs.chunks_exact(16) {
            let mut out = [0.0f32; 16];
            if crate::Isa::Avx512.supported() {
                // SAFETY: AVX-512 checked just above; the loads/stores are 16
                // floats within `chunk` and `out`.
                unsafe {
                    let v = vexp::exp512(_mm512_loadu_ps(chunk.as_ptr()));
                    _mm512_storeu_ps(out.as_mut_ptr(), v);
                }
                chunk.iter().zip(&out).for_each(|(&x, &y)| check(x, y));
            }
            if crate::Isa::Avx2.supported() {
                // SAFETY: AVX2 + FMA checked just above; 8 floats within bounds.
                unsafe {
                    let v = vexp::exp256(_mm256_loadu_ps(chunk.as_ptr()));
                    _mm256_storeu_ps(out.as_mut_ptr(), v);
                }
                chunk[..8].iter().zip(&out).for_each(|(&x, &y)| check(x, y));
            }
        }
    }
}
