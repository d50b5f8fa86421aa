//! AVX-512 attention tile kernels: 16-lane score blocks with one transposing
//! reduction, P·V row blocks, row max and the vector `exp`, behind the
//! `#[target_feature]` entry point [`block`] (the caller checked the CPU).

// Register arrays indexed by row and key read more plainly than zips.
#![allow(clippy::needless_range_loop)]

use super::avx2::{C1, C2, HI, LO, LOG2E, P};
use super::blocked::{self, HeadKv, Rows, Tile, VecOps, BLOCK_Q, KEY_BLOCK};
use super::Attention;
use crate::f32::avx512::mask16;
use crate::par::ColBlock;
use std::arch::x86_64::*;

/// Vector `exp` on 16 lanes: the scheme of `avx2::exp256`, with `scalef` for `2^n`.
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

struct Avx512Ops;
impl VecOps for Avx512Ops {
    #[inline(always)]
    unsafe fn add_bias(s: &mut [f32], b: &[f32]) {
        // SAFETY: forwarded contract.
        unsafe { add_bias512(s, b) }
    }

    #[inline(always)]
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
        // SAFETY: forwarded contract (AVX-512 checked by run_with).
        unsafe {
            if nq == 1 {
                scores512::<1, 16>(q, k, d, nq, nk, tile)
            } else {
                scores512::<4, 4>(q, k, d, nq, nk, tile)
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
                    1 => pv512::<1>(p, r0, v, d, nk, out, os),
                    2 => pv512::<2>(p, r0, v, d, nk, out, os),
                    3 => pv512::<3>(p, r0, v, d, nk, out, os),
                    _ => pv512::<4>(p, r0, v, d, nk, out, os),
                }
            }
            r0 += 4;
        }
    }

    #[inline(always)]
    unsafe fn row_max(s: &[f32]) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { row_max512(s) }
    }

    #[inline(always)]
    unsafe fn exp_row(s: &mut [f32], m: f32) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { exp_row512(s, m) }
    }
}

// The prefill path packs the keys by dimension for the outer-product scores
// (`ByDimOps`).
blocked::entry_points!(
    "avx512f,avx512bw,avx512vl,avx2,fma",
    "AVX-512 F/BW/VL, AVX2 and FMA",
    Avx512Ops,
    ByDimOps
);

/// The prefill kernels: scores from keys packed by dimension, as outer
/// products (no transposing reduction: in W3 those shuffles were about as
/// many instructions as the FMAs they summed); the rest as [`Avx512Ops`].
struct ByDimOps;
impl VecOps for ByDimOps {
    const KEYS_BY_DIM: bool = true;

    #[inline(always)]
    unsafe fn pack_keys_by_dim(k: Rows<'_>, kend: usize, d: usize, dst: &mut [f32], ds: usize) {
        // SAFETY: forwarded contract.
        unsafe { pack_by_dim512(k, kend, d, dst, ds) }
    }

    #[inline(always)]
    unsafe fn add_bias(s: &mut [f32], b: &[f32]) {
        // SAFETY: forwarded contract.
        unsafe { add_bias512(s, b) }
    }

    #[inline(always)]
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
        // SAFETY: forwarded contract (AVX-512 checked by run_with).
        unsafe { scores_by_dim(q, k, d, nq, nk, tile) }
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
        unsafe { Avx512Ops::pv(p, v, d, nq, nk, out, os) }
    }

    #[inline(always)]
    unsafe fn row_max(s: &[f32]) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { row_max512(s) }
    }

    #[inline(always)]
    unsafe fn exp_row(s: &mut [f32], m: f32) -> f32 {
        // SAFETY: forwarded contract.
        unsafe { exp_row512(s, m) }
    }

    #[inline(always)]
    unsafe fn softmax_rows(
        tile: &mut Tile,
        nk: usize,
        m: &mut [f32],
        l: &mut [f32],
        c: &mut [f32; BLOCK_Q],
    ) {
        // SAFETY: forwarded contract.
        unsafe { softmax_rows512(tile, nk, m, l, c) }
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
unsafe fn scores512<const R: usize, const C: usize>(
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
        let qp: [*const f32; R] = std::array::from_fn(|r| unsafe { q.row((r0 + r).min(nq - 1)) });
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

/// Scores from keys by dimension: per dimension `t`, four vectors of 16
/// consecutive keys (`k.row(t)`) and four broadcast query elements make 16
/// FMAs into a 4-query x 64-key block held in registers; each score is one
/// chain of `d` FMAs in dimension order.
///
/// # Safety
/// As `VecOps::scores` with `KEYS_BY_DIM` and AVX-512F; `KEY_BLOCK == 64`.
#[inline(always)]
unsafe fn scores_by_dim(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
    let m: [u16; 4] = std::array::from_fn(|u| mask16(nk.saturating_sub(16 * u)));
    for r0 in (0..nq).step_by(4) {
        // Rows past the block repeat its last row: full register blocks.
        // SAFETY: the clamped rows are < nq.
        let qp: [*const f32; 4] = std::array::from_fn(|r| unsafe { q.row((r0 + r).min(nq - 1)) });
        // SAFETY: the query reads are elements t < d of rows < nq; the masked
        // key loads touch only lanes [16u, min(16u + 16, nk)) of rows t < d
        // (pointers past a row's end are formed with wrapping_add and only
        // under an all-zero mask, which reads nothing); the stores write
        // tile[r0 + r][0..64] with r0 + r < BLOCK_Q (BLOCK_Q % 4 == 0).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            for t in 0..d {
                let kp = k.row(t);
                // A loop, not a `from_fn` closure (ARCHITECTURE.md: no load
                // intrinsic in a closure of a hot path).
                let mut kv = [_mm512_setzero_ps(); 4];
                for u in 0..4 {
                    kv[u] = _mm512_maskz_loadu_ps(m[u], kp.wrapping_add(16 * u));
                }
                for r in 0..4 {
                    let qb = _mm512_set1_ps(*qp[r].add(t));
                    for u in 0..4 {
                        acc[r][u] = _mm512_fmadd_ps(qb, kv[u], acc[r][u]);
                    }
                }
            }
            for r in 0..4 {
                for u in 0..4 {
                    _mm512_storeu_ps(tile[r0 + r].as_mut_ptr().add(16 * u), acc[r][u]);
                }
            }
        }
    }
}

/// [`VecOps::pack_keys_by_dim`] in 16 x 16 blocks, each transposed in
/// registers (the element-by-element copy was a tenth of W3's attention),
/// and the edges element by element.
///
/// # Safety
/// As `VecOps::pack_keys_by_dim`, with AVX-512F.
#[inline(always)]
unsafe fn pack_by_dim512(k: Rows<'_>, kend: usize, d: usize, dst: &mut [f32], ds: usize) {
    assert!(ds >= kend && dst.len() >= d * ds);
    let (k16, d16) = (kend / 16 * 16, d / 16 * 16);
    for j0 in (0..k16).step_by(16) {
        for t0 in (0..d16).step_by(16) {
            // SAFETY: rows j0..j0 + 16 <= kend of k, elements t0..t0 + 16 <=
            // d of each; dst rows t0..t0 + 16 <= d, elements j0..j0 + 16 <=
            // kend of each (row length kend).
            unsafe {
                transpose16(
                    k.row(j0).add(t0),
                    k.stride,
                    dst.as_mut_ptr().add(t0 * ds + j0),
                    ds,
                )
            };
        }
    }
    for j in 0..kend {
        let t_from = if j < k16 { d16 } else { 0 };
        let src = &k.data[j * k.stride..][..d];
        for t in t_from..d {
            dst[t * ds + j] = src[t];
        }
    }
}

/// A 16 x 16 transpose: `dst[c * ds + r] = src[r * ss + c]`.
///
/// # Safety
/// AVX-512F; the 16 rows of 16 floats at `src` (stride `ss`) and at `dst`
/// (stride `ds`) are inside their buffers.
#[inline(always)]
unsafe fn transpose16(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    // SAFETY: the loads and stores are the 16 rows the contract names.
    unsafe {
        // Loops, not `from_fn` closures (ARCHITECTURE.md: no intrinsic in a
        // closure of a hot path).
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, r) in r.iter_mut().enumerate() {
            *r = _mm512_loadu_ps(src.add(i * ss));
        }
        // Lane L of t[2i]: rows 2i, 2i + 1 at columns 4L, 4L + 1; of
        // t[2i + 1]: at columns 4L + 2, 4L + 3.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            let (a, b) = (r[2 * i], r[2 * i + 1]);
            t[2 * i] = _mm512_unpacklo_ps(a, b);
            t[2 * i + 1] = _mm512_unpackhi_ps(a, b);
        }
        // Lane L of u[4g + c]: column 4L + c of rows 4g..4g + 4.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            for h in 0..2 {
                let a = _mm512_castps_pd(t[4 * g + h]);
                let b = _mm512_castps_pd(t[4 * g + 2 + h]);
                u[4 * g + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
                u[4 * g + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
            }
        }
        for c in 0..4 {
            let (a, b, cc, dd) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
            let v0 = _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
            let v1 = _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
            let v2 = _mm512_shuffle_f32x4::<0b10_00_10_00>(cc, dd);
            let v3 = _mm512_shuffle_f32x4::<0b11_01_11_01>(cc, dd);
            // Column 4L + c: lanes L of u[c], u[4 + c], u[8 + c], u[12 + c].
            let col = [
                _mm512_shuffle_f32x4::<0b10_00_10_00>(v0, v2),
                _mm512_shuffle_f32x4::<0b10_00_10_00>(v1, v3),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(v0, v2),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(v1, v3),
            ];
            for (l, v) in col.into_iter().enumerate() {
                _mm512_storeu_ps(dst.add((4 * l + c) * ds), v);
            }
        }
    }
}

/// [`VecOps::add_bias`] 16 lanes at a time.
///
/// # Safety
/// AVX-512F; `s.len() == b.len()`.
#[inline(always)]
unsafe fn add_bias512(s: &mut [f32], b: &[f32]) {
    let n = s.len();
    debug_assert_eq!(n, b.len());
    // SAFETY: masked accesses touch only lanes < n - t of s and b.
    unsafe {
        let mut t = 0;
        while t < n {
            let m = mask16(n - t);
            let x = _mm512_maskz_loadu_ps(m, s.as_ptr().add(t));
            let y = _mm512_maskz_loadu_ps(m, b.as_ptr().add(t));
            _mm512_mask_storeu_ps(s.as_mut_ptr().add(t), m, _mm512_add_ps(x, y));
            t += 16;
        }
    }
}

/// `R` output rows from `r0`, 64 dims per pass: 4·R accumulators stay in
/// registers over the whole key tile, and each V load serves R queries.
///
/// # Safety
/// As `VecOps::pv` with AVX-512F, and `r0 + R <= nq`.
#[inline(always)]
unsafe fn pv512<const R: usize>(
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
unsafe fn row_max512(s: &[f32]) -> f32 {
    // SAFETY: forwarded contract.
    unsafe { _mm512_reduce_max_ps(max_lanes512(s)) }
}

/// The row's max lane by lane (`-inf` in lanes no score reached): what
/// [`row_max512`] reduces, and one row of [`softmax_rows512`]'s transposed max.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn max_lanes512(s: &[f32]) -> __m512 {
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
        mv
    }
}

/// # Safety
/// AVX-512F (and AVX2 + FMA, which the vector exp's target features name).
#[inline(always)]
unsafe fn exp_row512(s: &mut [f32], m: f32) -> f32 {
    // SAFETY: forwarded contract.
    unsafe { _mm512_reduce_add_ps(exp_lanes512(s, _mm512_set1_ps(m))) }
}

/// In place `s[c] = exp(s[c] - m)` (exactly 0 for masked scores), returning
/// the weights' sum lane by lane, added in the order of `s`: what
/// [`exp_row512`] reduces, and one row of [`softmax_rows512`]'s transposed
/// sum.
///
/// # Safety
/// AVX-512F (and AVX2 + FMA, which the vector exp's target features name).
#[inline(always)]
unsafe fn exp_lanes512(s: &mut [f32], mv: __m512) -> __m512 {
    let n = s.len();
    // SAFETY: masked accesses touch only lanes < n - t of s.
    unsafe {
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut sum = _mm512_setzero_ps();
        let mut t = 0;
        while t < n {
            let k = mask16(n - t);
            let x = _mm512_maskz_loadu_ps(k, s.as_ptr().add(t));
            // Masked keys (-inf) weigh exactly 0: the vector exp clamps its
            // input and would give ~1e-38.
            let live = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(k, x, ninf);
            let e = _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(x, mv)));
            _mm512_mask_storeu_ps(s.as_mut_ptr().add(t), k, e);
            sum = _mm512_add_ps(sum, e);
            t += 16;
        }
        sum
    }
}

/// Eight vectors to one: lane `r < 8` is `op` over `v[r]`'s lanes (pairs
/// within 128-bit lanes, then quads, then across them); lanes 8.. repeat
/// lanes 4..8 and 0..4 of other partial results and mean nothing.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn reduce8(v: &[__m512; 8], op: impl Fn(__m512, __m512) -> __m512) -> __m512 {
    // SAFETY: register-only AVX-512F operations.
    unsafe {
        let mut t = [_mm512_setzero_ps(); 4];
        for i in 0..4 {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            t[i] = op(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        }
        // Each 128-bit lane of u[j]: vectors 4j..4j + 4's partial results.
        let mut u = [_mm512_setzero_ps(); 2];
        for j in 0..2 {
            let (a, b) = (_mm512_castps_pd(t[2 * j]), _mm512_castps_pd(t[2 * j + 1]));
            u[j] = op(
                _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
            );
        }
        let x = op(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(u[0], u[1]),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(u[0], u[1]),
        );
        op(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(x, x),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(x, x),
        )
    }
}

/// [`VecOps::softmax_rows`] for the block's rows together: one transposed
/// max and one transposed sum for all of them, and the rescale factors as
/// one vector `exp`, with no branch on whether a row's max rose (row by row,
/// each row was a chain of horizontal reductions, a scalar `exp` and a
/// data-dependent branch; that was a fifth of W3's attention).
///
/// # Safety
/// As `VecOps::softmax_rows`, with AVX-512F (and AVX2 + FMA, which the
/// vector exp's target features name).
#[inline(always)]
unsafe fn softmax_rows512(
    tile: &mut Tile,
    nk: usize,
    m: &mut [f32],
    l: &mut [f32],
    c: &mut [f32; BLOCK_Q],
) {
    const { assert!(BLOCK_Q == 8) };
    let nq = m.len();
    debug_assert!(nq == l.len() && nq <= BLOCK_Q && nk <= KEY_BLOCK);
    let rows = mask16(nq);
    // SAFETY: the rows' accesses are max_lanes512's and exp_lanes512's on
    // rows < nq of the tile (lanes < nk); the state's are whole 16-float
    // local arrays.
    unsafe {
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut mx = [ninf; 8];
        for r in 0..nq {
            mx[r] = max_lanes512(&tile[r][..nk]);
        }
        let bm = reduce8(&mx, |a, b| _mm512_max_ps(a, b));
        // The state goes through whole-vector stores of local arrays: a
        // masked store does not forward to the scalar loads that follow,
        // which then wait for it to retire (that stall per block made a
        // decoder step's attention a third slower when it came this way).
        let mut st = [[0.0f32; 16]; 3];
        st[0][..nq].copy_from_slice(m);
        st[1][..nq].copy_from_slice(l);
        let mo = _mm512_mask_loadu_ps(ninf, rows, st[0].as_ptr());
        // Rows whose max rose take exp(old - new) (a first visible tile:
        // old = -inf, and the clamped vector exp gives ~1e-38 times the
        // zeros so far); the others exactly 1.
        let rose = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(rows, bm, mo);
        let cv = _mm512_mask_mov_ps(_mm512_set1_ps(1.0), rose, exp512(_mm512_sub_ps(mo, bm)));
        let mn = _mm512_mask_mov_ps(mo, rose, bm);
        _mm512_storeu_ps(st[0].as_mut_ptr(), mn);
        _mm512_storeu_ps(st[2].as_mut_ptr(), cv);
        let mut sums = [_mm512_setzero_ps(); 8];
        for r in 0..nq {
            sums[r] = exp_lanes512(&mut tile[r][..nk], _mm512_set1_ps(st[0][r]));
        }
        let lo = _mm512_loadu_ps(st[1].as_ptr());
        let ln = _mm512_fmadd_ps(lo, cv, reduce8(&sums, |a, b| _mm512_add_ps(a, b)));
        _mm512_storeu_ps(st[1].as_mut_ptr(), ln);
        m.copy_from_slice(&st[0][..nq]);
        l.copy_from_slice(&st[1][..nq]);
        c[..nq].copy_from_slice(&st[2][..nq]);
    }
}
