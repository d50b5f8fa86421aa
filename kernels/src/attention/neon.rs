//! NEON attention kernels (4-lane register blocks for the scores and P·V; the
//! row max and `exp` are the scalar ones). On aarch64 NEON is baseline; elsewhere
//! `neon_intrinsics` emulates it so these run in the x86 tests.

use super::blocked::{Rows, Tile, VecOps};
use super::scalar::ScalarOps;

/// Lanes of the 4-wide NEON vectors, and the register blocks: 4 queries x 4
/// keys (or 1 x 16 for a single query) of accumulators, 32 registers on aarch64.
pub(super) struct NeonOps;
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

    #[inline(always)]
    unsafe fn row_max(s: &[f32]) -> f32 {
        // SAFETY: the scalar kernel needs nothing of the CPU.
        unsafe { ScalarOps::row_max(s) }
    }

    #[inline(always)]
    unsafe fn exp_row(s: &mut [f32], m: f32) -> f32 {
        // SAFETY: the scalar kernel needs nothing of the CPU.
        unsafe { ScalarOps::exp_row(s, m) }
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
