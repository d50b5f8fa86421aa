//! AVX2 screen kernel (also what the AVX-512 level without VNNI runs): per
//! 32-byte block, two nibble masks and two `vpmaddubsw` (u4 × s8, pair sums
//! at most 2·15·127 = 3810) into 16-bit lanes, widened by `vpmaddwd` every
//! 4 blocks (4·2·3810 = 30480 < 32767, so no lane can saturate). The
//! multi-row form ([`rows_tiles`], a batch's decode step) unpacks each block
//! once and feeds it to up to eight activation rows (their 32-bit sums kept
//! in the caller's buffer, so eight 16-bit sums fit the registers).

// Register arrays indexed by tile read more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::{Int4Screen, BLOCK, BLOCK_BYTES, MAX_R, MAX_T, TASK_ROWS, TILE};
use std::arch::x86_64::*;

/// Blocks summed in 16-bit lanes before widening (see the module docs).
const WIDEN_EVERY: usize = 4;

/// How far ahead of its first tile the one-row kernel prefetches. Its four
/// tiles are four streams 1 KB apart, which the hardware prefetchers follow
/// poorly: without this the kernel stalled on its loads and a 32128x256
/// screen took 182-185 us on one Zen 4 core, longer than the int8 head it
/// screens (168-178 us); with it 147-154 us, about flat from 2 KB to 6 KB
/// ahead (kernels/BENCH.md). The multi-row kernel reads one tile at a time, one
/// stream, and gained nothing from it.
const PREFETCH_AHEAD: usize = 3072;

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
                // Two lines per block step, PREFETCH_AHEAD bytes past this
                // call's first tile: about the next call's tiles by the time
                // it starts. `wrapping_add` because near the end the address
                // may lie past the screen; a prefetch never faults and is
                // never read through.
                let pf = w[0].as_ptr().wrapping_add(PREFETCH_AHEAD + bb * 2 * 64);
                _mm_prefetch::<_MM_HINT_T0>(pf as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(64) as *const i8);
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

/// `out[r][8 (t − t0) + j] = Σ u·q_r` over blocks `[b0, b1)` of tiles
/// `[t0, t1)` for `R` activation rows `qs[..R]`: each block's nibbles are
/// unpacked once for every row (a batch's decode step), the sums exactly
/// those of [`tiles`] row by row.
///
/// # Safety
/// The CPU must have AVX2; every `qs[r]` (`r < R`) must hold `padded_k(k)`
/// values, `t1 <= ceil(n / 8)`, `8 (t1 − t0) <= TASK_ROWS`, `b1 <=
/// padded_k(k) / 8`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rows_tiles(
    s: &Int4Screen,
    qs: &[&[i8]; MAX_R],
    r: usize,
    b0: usize,
    b1: usize,
    t0: usize,
    t1: usize,
    out: &mut [[i32; TASK_ROWS]; MAX_R],
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match r {
            1 => rows_body::<1>(s, qs, b0, b1, t0, t1, out),
            2 => rows_body::<2>(s, qs, b0, b1, t0, t1, out),
            3 => rows_body::<3>(s, qs, b0, b1, t0, t1, out),
            4 => rows_body::<4>(s, qs, b0, b1, t0, t1, out),
            5 => rows_body::<5>(s, qs, b0, b1, t0, t1, out),
            6 => rows_body::<6>(s, qs, b0, b1, t0, t1, out),
            7 => rows_body::<7>(s, qs, b0, b1, t0, t1, out),
            _ => rows_body::<8>(s, qs, b0, b1, t0, t1, out),
        }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn rows_body<const R: usize>(
    s: &Int4Screen,
    qs: &[&[i8]; MAX_R],
    b0: usize,
    b1: usize,
    t0: usize,
    t1: usize,
    out: &mut [[i32; TASK_ROWS]; MAX_R],
) {
    assert!((t1 - t0) * TILE <= TASK_ROWS);
    for q in &qs[..R] {
        assert!(q.len() >= b1 * BLOCK);
    }
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for t in t0..t1 {
        let [w]: [&[u8]; 1] = s.checked_tiles(qs[0], t, b1);
        // SAFETY: the asserts above bound every read: activation reads are
        // 8 bytes at b * 8 < q.len() of each row, weight reads 32 bytes at
        // b * 32 inside the tile; each store writes 8 i32 at 8 (t − t0) +
        // 8 <= TASK_ROWS of a row of `out`.
        unsafe {
            // The i32 sums live in `out` (L1) rather than registers, so
            // that eight rows' 16-bit sums fit the sixteen registers.
            let mut b = b0;
            while b < b1 {
                let end = (b + WIDEN_EVERY).min(b1);
                let mut acc16 = [_mm256_setzero_si256(); R];
                for bb in b..end {
                    let v = _mm256_loadu_si256(w.as_ptr().add(bb * BLOCK_BYTES) as *const _);
                    let lo = _mm256_and_si256(v, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                    for r in 0..R {
                        let xp = qs[r].as_ptr().add(bb * BLOCK);
                        let xl = _mm256_set1_epi32(std::ptr::read_unaligned(xp as *const i32));
                        let xh =
                            _mm256_set1_epi32(std::ptr::read_unaligned(xp.add(4) as *const i32));
                        let p = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, xl),
                            _mm256_maddubs_epi16(hi, xh),
                        );
                        acc16[r] = _mm256_add_epi16(acc16[r], p);
                    }
                }
                for r in 0..R {
                    let o = out[r].as_mut_ptr().add((t - t0) * TILE) as *mut __m256i;
                    let wide = _mm256_madd_epi16(acc16[r], ones);
                    let sum = if b == b0 {
                        wide
                    } else {
                        _mm256_add_epi32(_mm256_loadu_si256(o), wide)
                    };
                    _mm256_storeu_si256(o, sum);
                }
                b = end;
            }
            if b0 == b1 {
                for r in 0..R {
                    let o = out[r].as_mut_ptr().add((t - t0) * TILE) as *mut __m256i;
                    _mm256_storeu_si256(o, _mm256_setzero_si256());
                }
            }
        }
    }
}

/// One block of one 8-row screen tile, built: `lo` and `hi` are the tile's
/// 32 int8 weights of k-blocks `2b` and `2b + 1` (row `r`'s four at `4r`),
/// `out` gets each weight pair's nibbles (`split`'s `h + 8`, the first
/// k-block's low) and `l2[r]` row `r`'s `Σ l²` over its eight weights; the
/// same bytes and sums as its twin `scalar::split_block`.
///
/// `|h| = ⌊(|p| + 8) / 17⌋` (round to nearest; `p / 17` is never a half) is
/// `((|p| + 8) · 241) >> 12` in 16-bit lanes for every `|p| <= 128`
/// (`every_int8_value_builds_the_same_screen_at_every_level` builds a head
/// holding each valid value against the table; -128, never in a valid
/// matrix, gives `|h|` 8 as `split` does).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn split_block(
    lo: &[i8; 32],
    hi: &[i8; 32],
    out: &mut [u8; 32],
    l2: &mut [u32; 8],
) {
    let zero = _mm256_setzero_si256();
    // |h| of 32 weights in their byte order, and per row the sums of l².
    let half = |x: __m256i| {
        let v = _mm256_abs_epi8(x);
        let (vl, vh) = (_mm256_unpacklo_epi8(v, zero), _mm256_unpackhi_epi8(v, zero));
        let q = |w: __m256i| {
            _mm256_srli_epi16::<12>(_mm256_mullo_epi16(
                _mm256_add_epi16(w, _mm256_set1_epi16(8)),
                _mm256_set1_epi16(241),
            ))
        };
        let (ql, qh) = (q(vl), q(vh));
        // |l| = |p| - 17|h| (in [-8, 8]); l² of each pair summed by madd.
        let l = |w: __m256i, q: __m256i| {
            let d = _mm256_sub_epi16(w, _mm256_mullo_epi16(q, _mm256_set1_epi16(17)));
            _mm256_madd_epi16(d, d)
        };
        // unpacklo holds rows 0-1 (lane 0) and 4-5 (lane 1), unpackhi rows
        // 2-3 and 6-7; each madd lane a pair of one row's values, so hadd
        // lines up rows 0-3 | 4-7.
        let sums = _mm256_hadd_epi32(l(vl, ql), l(vh, qh));
        (_mm256_packus_epi16(ql, qh), sums)
    };
    // SAFETY: 32-byte loads and stores of 32-byte arrays.
    unsafe {
        let (a, b) = (
            _mm256_loadu_si256(lo.as_ptr() as *const __m256i),
            _mm256_loadu_si256(hi.as_ptr() as *const __m256i),
        );
        let (qa, sa) = half(a);
        let (qb, sb) = half(b);
        let off = _mm256_set1_epi8(super::OFFSET as i8);
        let ua = _mm256_add_epi8(_mm256_sign_epi8(qa, a), off);
        let ub = _mm256_add_epi8(_mm256_sign_epi8(qb, b), off);
        // u <= 15, so shifting 16-bit lanes by 4 never carries into the next byte.
        let nib = _mm256_or_si256(ua, _mm256_slli_epi16::<4>(ub));
        _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, nib);
        _mm256_storeu_si256(l2.as_mut_ptr() as *mut __m256i, _mm256_add_epi32(sa, sb));
    }
}
