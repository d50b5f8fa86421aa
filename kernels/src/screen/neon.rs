//! NEON screen kernel: a block of a tile is two 16-byte halves (rows 0-3 and
//! 4-7); the nibbles, masked out (`u <= 15`, so they are valid signed bytes),
//! go through `sdot` against the 4 activation bytes duplicated into every
//! lane. Real on aarch64 with dotprod, emulated elsewhere.

// Register arrays indexed by tile read more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::{Int4Screen, BLOCK, BLOCK_BYTES, MAX_T, TILE};
use crate::neon_intrinsics::*;

/// Whether the kernel may run: on aarch64 it needs `sdot` (dotprod); without
/// it the level falls back to the scalar twin (same integers).
pub(crate) fn usable() -> bool {
    crate::int8::neon::usable()
}

pub(crate) fn tiles(
    s: &Int4Screen,
    q: &[i8],
    b0: usize,
    b1: usize,
    t: usize,
    nt: usize,
    out: &mut [[i32; TILE]; MAX_T],
) {
    // SAFETY: dispatch picks this on aarch64 only with dotprod (`usable`);
    // elsewhere the intrinsics are plain-Rust emulations. Bounds: see body.
    unsafe { super::dispatch_tiles!(body, s, q, b0, b1, t, nt, out) }
}

#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon,dotprod"))]
unsafe fn body<const T: usize>(
    s: &Int4Screen,
    q: &[i8],
    b0: usize,
    b1: usize,
    t: usize,
    out: &mut [[i32; TILE]; MAX_T],
) {
    let w: [&[u8]; T] = s.checked_tiles(q, t, b1);
    // SAFETY: the asserts bound every read: 8 activation bytes at b * 8 and
    // two 16-byte halves at b * 32 inside a tile.
    unsafe {
        let mask = vdupq_n_s8(0x0F);
        let mut acc = [[vdupq_n_s32(0); 2]; T];
        for b in b0..b1 {
            let xp = q.as_ptr().add(b * BLOCK);
            let xl = vreinterpretq_s8_s32(vdupq_n_s32(std::ptr::read_unaligned(xp as *const i32)));
            let xh = vreinterpretq_s8_s32(vdupq_n_s32(std::ptr::read_unaligned(
                xp.add(4) as *const i32
            )));
            for tt in 0..T {
                let p = w[tt].as_ptr().add(b * BLOCK_BYTES) as *const i8;
                for h in 0..2 {
                    let v = vld1q_s8(p.add(16 * h));
                    let lo = vandq_s8(v, mask);
                    let hi = vandq_s8(vshrq_n_s8::<4>(v), mask);
                    acc[tt][h] = vdotq_s32(vdotq_s32(acc[tt][h], lo, xl), hi, xh);
                }
            }
        }
        for tt in 0..T {
            for h in 0..2 {
                let lanes = vst1q_s32_array(acc[tt][h]);
                out[tt][4 * h..4 * h + 4].copy_from_slice(&lanes);
            }
        }
    }
}
