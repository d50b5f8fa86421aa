//! The plain screen kernel: the twin every SIMD level must match exactly.

use super::{Int4Screen, BLOCK, BLOCK_BYTES, MAX_T, SPLIT, TILE};

/// `out[tt][r] = Σ u·q` over blocks `[b0, b1)` of tiles `t..t + nt`.
pub(crate) fn tiles(
    s: &Int4Screen,
    q: &[i8],
    b0: usize,
    b1: usize,
    t: usize,
    nt: usize,
    out: &mut [[i32; TILE]; MAX_T],
) {
    for (tt, o) in out.iter_mut().enumerate().take(nt) {
        let d = s.tile_data(t + tt);
        for (r, acc) in o.iter_mut().enumerate() {
            *acc = 0;
            for b in b0..b1 {
                let blk = &d[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
                let x = &q[b * BLOCK..(b + 1) * BLOCK];
                for c in 0..4 {
                    let byte = blk[4 * r + c];
                    *acc +=
                        (byte & 0x0F) as i32 * x[c] as i32 + (byte >> 4) as i32 * x[4 + c] as i32;
                }
            }
        }
    }
}

/// One block of one 8-row screen tile through the [`SPLIT`] table: the twin
/// of `avx2::split_block`.
pub(crate) fn split_block(lo: &[i8; 32], hi: &[i8; 32], out: &mut [u8; 32], l2: &mut [u32; 8]) {
    for (r, s) in l2.iter_mut().enumerate() {
        *s = 0;
        for c in 4 * r..4 * r + 4 {
            let (ul, ll) = SPLIT[lo[c] as u8 as usize];
            let (uh, lh) = SPLIT[hi[c] as u8 as usize];
            out[c] = ul | (uh << 4);
            *s += ll as u32 + lh as u32;
        }
    }
}
