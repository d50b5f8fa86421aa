//! NEON int8 tile kernel: a 16-row tile is four 4-lane `sdot` accumulators; the
//! 4 activation bytes of a k-block are duplicated into every lane, so `sdot`
//! (signed x signed, no compensation needed) advances 16 dot products at once.
//! Real on aarch64 with the dotprod extension, emulated elsewhere.

// Register arrays indexed by row read more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::{Acts, Int8View, TileOut, K_BLOCK, TILE_N};
use crate::neon_intrinsics::*;

/// Whether the NEON int8 kernel may run: on aarch64 it needs `sdot` (dotprod);
/// without it the level falls back to the scalar twin (same bits).
pub(crate) fn usable() -> bool {
    !cfg!(target_arch = "aarch64") || crate::dispatch::features().dotprod
}

pub(crate) fn tile(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    // SAFETY: on aarch64 dispatch only picks this level when the CPU has
    // dotprod (`int8::linear_with`); elsewhere these are plain-Rust emulations.
    // Bounds are those of `int8::chunk`'s asserts (see `rows`).
    unsafe {
        match r {
            1 => rows::<1>(a, w, t, i, out),
            2 => rows::<2>(a, w, t, i, out),
            3 => rows::<3>(a, w, t, i, out),
            _ => rows::<4>(a, w, t, i, out),
        }
    }
}

#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon,dotprod"))]
unsafe fn rows<const R: usize>(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    out: &mut TileOut,
) {
    let np = w.padded_n();
    // SAFETY: the tile's bytes [t * 16 * kp, (t + 1) * 16 * kp) are inside data
    // (length np * kp) and each k-block reads 4 x 16 bytes at kb * 64 < 16 * kp;
    // activation reads are 4 bytes inside row i + r < m; the 16 scales at
    // g * np + 16 t are inside scales (length groups * np).
    unsafe {
        let wp = w.data.as_ptr().add(t * TILE_N * a.kp);
        let mut y = [[vdupq_n_f32(0.0); 4]; R];
        for g in 0..a.groups {
            let (kb0, kb1) = w.group_blocks(g);
            let mut acc = [[vdupq_n_s32(0); 4]; R];
            for kb in kb0..kb1 {
                let wv = [
                    vld1q_s8(wp.add(kb * 64)),
                    vld1q_s8(wp.add(kb * 64 + 16)),
                    vld1q_s8(wp.add(kb * 64 + 32)),
                    vld1q_s8(wp.add(kb * 64 + 48)),
                ];
                for r in 0..R {
                    let x4 = std::ptr::read_unaligned(
                        a.q.as_ptr().add((i + r) * a.kp + kb * K_BLOCK) as *const i32,
                    );
                    let xd = vreinterpretq_s8_s32(vdupq_n_s32(x4));
                    for q in 0..4 {
                        acc[r][q] = vdotq_s32(acc[r][q], wv[q], xd);
                    }
                }
            }
            let sp = w.scales.as_ptr().add(g * np + t * TILE_N);
            for r in 0..R {
                let sx = vdupq_n_f32(a.s[(i + r) * a.groups + g]);
                for q in 0..4 {
                    let f = vcvtq_f32_s32(acc[r][q]);
                    let sw = vld1q_f32(sp.add(4 * q));
                    y[r][q] = vaddq_f32(y[r][q], vmulq_f32(vmulq_f32(f, sx), sw));
                }
            }
        }
        for r in 0..R {
            for q in 0..4 {
                vst1q_f32(out[r].as_mut_ptr().add(4 * q), y[r][q]);
            }
        }
    }
}

/// [`super::Activations::Int16`] on NEON: each 16-bit activation is
/// `128 * hi + lo` with both halves int8 (`a.q`: `hi` rows, then `lo` rows),
/// so two `sdot`s per k-block give `sum(hi * w)` and `sum(lo * w)`, and
/// `(sum_hi << 7) + sum_lo` in wrapping i32 arithmetic is the exact dot
/// product, which fits an i32 (`a16_limit`): the scalar twin's bits.
pub(crate) fn tile16(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    // SAFETY: as [`tile`]; `a.q` holds both halves (`int8::chunk16`).
    unsafe {
        match r {
            1 => rows16::<1>(a, w, t, i, out),
            2 => rows16::<2>(a, w, t, i, out),
            3 => rows16::<3>(a, w, t, i, out),
            _ => rows16::<4>(a, w, t, i, out),
        }
    }
}

#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon,dotprod"))]
unsafe fn rows16<const R: usize>(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    out: &mut TileOut,
) {
    let np = w.padded_n();
    let half = a.m * a.kp;
    // SAFETY: as `rows`; the `lo` half's reads are the `hi` half's moved by
    // m * kp, inside `a.q` (2 m kp bytes).
    unsafe {
        let wp = w.data.as_ptr().add(t * TILE_N * a.kp);
        let mut y = [[vdupq_n_f32(0.0); 4]; R];
        for g in 0..a.groups {
            let (kb0, kb1) = w.group_blocks(g);
            let mut hi = [[vdupq_n_s32(0); 4]; R];
            let mut lo = [[vdupq_n_s32(0); 4]; R];
            for kb in kb0..kb1 {
                let wv = [
                    vld1q_s8(wp.add(kb * 64)),
                    vld1q_s8(wp.add(kb * 64 + 16)),
                    vld1q_s8(wp.add(kb * 64 + 32)),
                    vld1q_s8(wp.add(kb * 64 + 48)),
                ];
                for r in 0..R {
                    let at = (i + r) * a.kp + kb * K_BLOCK;
                    let h4 = std::ptr::read_unaligned(a.q.as_ptr().add(at) as *const i32);
                    let l4 = std::ptr::read_unaligned(a.q.as_ptr().add(half + at) as *const i32);
                    let (xh, xl) = (
                        vreinterpretq_s8_s32(vdupq_n_s32(h4)),
                        vreinterpretq_s8_s32(vdupq_n_s32(l4)),
                    );
                    for q in 0..4 {
                        hi[r][q] = vdotq_s32(hi[r][q], wv[q], xh);
                        lo[r][q] = vdotq_s32(lo[r][q], wv[q], xl);
                    }
                }
            }
            let sp = w.scales.as_ptr().add(g * np + t * TILE_N);
            for r in 0..R {
                let sx = vdupq_n_f32(a.s[(i + r) * a.groups + g]);
                for q in 0..4 {
                    let acc = vaddq_s32(vshlq_n_s32::<7>(hi[r][q]), lo[r][q]);
                    let f = vcvtq_f32_s32(acc);
                    let sw = vld1q_f32(sp.add(4 * q));
                    y[r][q] = vaddq_f32(y[r][q], vmulq_f32(vmulq_f32(f, sx), sw));
                }
            }
        }
        for r in 0..R {
            for q in 0..4 {
                vst1q_f32(out[r].as_mut_ptr().add(4 * q), y[r][q]);
            }
        }
    }
}
