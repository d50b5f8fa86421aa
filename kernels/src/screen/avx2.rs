//! AVX2 screen kernel (also what the AVX-512 level without VNNI runs): per
//! 32-byte block, two nibble masks and two `vpmaddubsw` (u4 × s8, pair sums
//! at most 2·15·127 = 3810) into 16-bit lanes, widened by `vpmaddwd` every
//! 4 blocks (4·2·3810 = 30480 < 32767, so no lane can saturate).

// Register arrays indexed by tile read more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::{Int4Screen, BLOCK, BLOCK_BYTES, MAX_T, TILE};
use std::arch::x86_64::*;

/// Blocks summed in 16-bit lanes before widening (see the module docs).
const WIDEN_EVERY: usize = 4;

/// # Safety
/// The CPU must have AVX2; `q` must hold `padded_k(k)` values and
/// `t + nt <= ceil(n / 8)`, `b1 <= padded_k(k) / 8`.
pub(crate) unsafe fn tiles(
    s: &Int4Screen,
    q: &[i8],
    b0: usize,
    b1: usize,
    t: usize,
    nt: usize,
    out: &mut [[i32; TILE]; MAX_T],
) {
    // SAFETY: forwarded from the caller.
    unsafe { super::dispatch_tiles!(body, s, q, b0, b1, t, nt, out) }
}

#[target_feature(enable = "avx2")]
unsafe fn body<const T: usize>(
    s: &Int4Screen,
    q: &[i8],
    b0: usize,
    b1: usize,
    t: usize,
    out: &mut [[i32; TILE]; MAX_T],
) {
    let w: [&[u8]; T] = s.checked_tiles(q, t, b1);
    // SAFETY: the asserts above bound every read: activation reads are 8
    // bytes at b * 8 < q.len(), weight reads 32 bytes at b * 32 inside a tile.
    unsafe {
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); T];
        let mut b = b0;
        while b < b1 {
            let end = (b + WIDEN_EVERY).min(b1);
            let mut acc16 = [_mm256_setzero_si256(); T];
            for bb in b..end {
                let xp = q.as_ptr().add(bb * BLOCK);
                let xl = _mm256_set1_epi32(std::ptr::read_unaligned(xp as *const i32));
                let xh = _mm256_set1_epi32(std::ptr::read_unaligned(xp.add(4) as *const i32));
                for tt in 0..T {
                    let v = _mm256_loadu_si256(w[tt].as_ptr().add(bb * BLOCK_BYTES) as *const _);
                    let lo = _mm256_and_si256(v, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                    let p = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, xl),
                        _mm256_maddubs_epi16(hi, xh),
                    );
                    acc16[tt] = _mm256_add_epi16(acc16[tt], p);
                }
            }
            for tt in 0..T {
                acc[tt] = _mm256_add_epi32(acc[tt], _mm256_madd_epi16(acc16[tt], ones));
            }
            b = end;
        }
        for tt in 0..T {
            _mm256_storeu_si256(out[tt].as_mut_ptr() as *mut __m256i, acc[tt]);
        }
    }
}
