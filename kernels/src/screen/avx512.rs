//! AVX-512 VNNI screen kernel: a 64-byte load is two consecutive blocks of a
//! tile; `vpdpbusd` (u4 × s8, four products a lane) sums each row's inputs
//! into its i32 lane, the low 8 lanes for the first block and the high 8 for
//! the second, which are added at the end. A last odd block takes the
//! 256-bit form.

// Register arrays indexed by tile read more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::{Int4Screen, BLOCK, BLOCK_BYTES, MAX_T, TILE};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX-512 F/BW/VL and VNNI; bounds as `avx2::tiles`.
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn body<const T: usize>(
    s: &Int4Screen,
    q: &[i8],
    b0: usize,
    b1: usize,
    t: usize,
    out: &mut [[i32; TILE]; MAX_T],
) {
    let w: [&[u8]; T] = s.checked_tiles(q, t, b1);
    let x4 = |at: usize| {
        // SAFETY: at + 4 <= b1 * 8 <= q.len() at every call below.
        unsafe { std::ptr::read_unaligned(q.as_ptr().add(at) as *const i32) }
    };
    // SAFETY: the asserts above bound every read (64 bytes at b * 32 only
    // while b + 2 <= b1; 32 bytes for a last block).
    unsafe {
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_si512(); T];
        let mut b = b0;
        while b + 2 <= b1 {
            let pair = |o: usize| {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_set1_epi32(x4(b * BLOCK + o))),
                    _mm256_set1_epi32(x4((b + 1) * BLOCK + o)),
                )
            };
            let (xl, xh) = (pair(0), pair(4));
            for tt in 0..T {
                let v = _mm512_loadu_si512(w[tt].as_ptr().add(b * BLOCK_BYTES) as *const _);
                let lo = _mm512_and_si512(v, mask);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask);
                acc[tt] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(acc[tt], lo, xl), hi, xh);
            }
            b += 2;
        }
        let mask256 = _mm256_set1_epi8(0x0F);
        for tt in 0..T {
            let mut a = _mm256_add_epi32(
                _mm512_castsi512_si256(acc[tt]),
                _mm512_extracti64x4_epi64::<1>(acc[tt]),
            );
            if b < b1 {
                let xl = _mm256_set1_epi32(x4(b * BLOCK));
                let xh = _mm256_set1_epi32(x4(b * BLOCK + 4));
                let v = _mm256_loadu_si256(w[tt].as_ptr().add(b * BLOCK_BYTES) as *const _);
                let lo = _mm256_and_si256(v, mask256);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask256);
                a = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(a, lo, xl), hi, xh);
            }
            _mm256_storeu_si256(out[tt].as_mut_ptr() as *mut __m256i, a);
        }
    }
}
