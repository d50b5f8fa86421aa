//! AVX2 int8 tile kernels: a 16-row tile is two 8-lane halves.
//!
//! * One activation row (a decode step's GEMV): per k-block,
//!   `vpmaddubsw(|x|, sign(w, x))` then `vpmaddwd` by ones. Weights are in
//!   [-127, 127] (validated), so pair sums are at most 2 * 127 * 127 = 32258
//!   and the i16 step never saturates: the exact integer dot product.
//! * Two to four rows (prefill, batched decode): the weight bytes are
//!   sign-extended to i16 in registers (two shifts give the even and the odd
//!   bytes of each 4-byte column group) and multiplied with `vpmaddwd` against
//!   activations already widened to i16 (`Acts::q16`). Also exact, and on Zen 4
//!   1.3x the multiply-adds per cycle of the first form, whose `vpsignb` and
//!   `vpabsb` compete with the multiplies for the same two pipes; the widening
//!   shifts are shared by the rows of the block (kernels/BENCH.md).

// Register arrays indexed by row read more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::avx512::dispatch_rows;
use super::{Acts, Int8View, TileOut, K_BLOCK, TILE_N};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX2. `t < padded_n / 16`, `i + r <= a.m`, `1 <= r <= 4`,
/// and `a` must match `w` (checked by `int8::chunk`).
pub(crate) unsafe fn tile(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    if r >= 2 && !a.q16.is_empty() {
        // SAFETY: forwarded contract; q16 is [m, kp] when present (chunk
        // asserts it).
        unsafe { dispatch_rows!(rows16, a, w, t, i, r, out) }
    } else {
        // SAFETY: forwarded contract.
        unsafe { dispatch_rows!(rows, a, w, t, i, r, out) }
    }
}

super::avx512::row_tiles!(row_tiles, rows, "avx2,fma");
super::avx512::row_tiles!(row_tiles16, rows16, "avx2,fma");

/// [`super::Activations::Int16`]'s tile kernel: [`rows16`] at any row count,
/// the 16-bit values standing where the widened int8 ones do. Pair sums are
/// at most 2 * 16256 * 127 and the i32 sums `kp * L * 127 <= i32::MAX`
/// (`a16_limit`): still the exact dot product.
///
/// # Safety
/// As [`tile`], with `a.wide` (q16 holding `[m, kp]` i16s in pair order).
pub(crate) unsafe fn tile16(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    // SAFETY: forwarded contract.
    unsafe { dispatch_rows!(rows16, a, w, t, i, r, out) }
}

/// `R` rows against tile `t` in the i8 form: a decode step's one row (and a
/// single leftover row of a larger block), where it beats widening the
/// weights.
///
/// # Safety
/// As [`tile`] with `r == R`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows<const R: usize>(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    out: &mut TileOut,
) {
    let ones = _mm256_set1_epi16(1);
    // SAFETY: the activation reads are 4 bytes at (i + r) * kp + 4 kb with
    // i + r < m and kb < kp / 4 (the caller's contract); the weights are
    // read by `tile_loop`.
    unsafe {
        tile_loop::<R>(a, w, t, i, out, |wl, wh, kb, acc| {
            for r in 0..R {
                let x4 = std::ptr::read_unaligned(
                    a.q.as_ptr().add((i + r) * a.kp + kb * K_BLOCK) as *const i32
                );
                let xb = _mm256_set1_epi32(x4);
                let ax = _mm256_abs_epi8(xb);
                let pl = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wl, xb));
                let ph = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wh, xb));
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(pl, ones));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(ph, ones));
            }
        })
    }
}

/// Two to four rows against one tile with `vpmaddwd` on i16: the tile's
/// bytes of one k-block are, per column, a little-endian word pair
/// `(k0 | k1 << 8, k2 | k3 << 8)`; `srai(slli(v, 8), 8)` sign-extends the low
/// bytes into the i16 pair `(k0, k2)` and `srai(v, 8)` the high bytes into
/// `(k1, k3)`, which `Acts::q16` matches with its `(x0, x2, x1, x3)` order.
/// Products are at most 127 * 127 and a pair 32258: every i32 is the exact
/// dot product, the same as [`rows`] and the scalar twin.
///
/// # Safety
/// As [`tile`] with `r == R`, and `a.q16` holding `[m, kp]` i16s.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows16<const R: usize>(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    out: &mut TileOut,
) {
    // SAFETY: the activation reads are 2 x 4 bytes at ((i + r) * kp + 4 kb)
    // i16s, inside q16 as i + r < m and kb < kp / 4; the weights are read by
    // `tile_loop`.
    unsafe {
        tile_loop::<R>(a, w, t, i, out, |wl, wh, kb, acc| {
            let (l02, l13) = (
                _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(wl)),
                _mm256_srai_epi16::<8>(wl),
            );
            let (h02, h13) = (
                _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(wh)),
                _mm256_srai_epi16::<8>(wh),
            );
            for r in 0..R {
                let xp = a.q16.as_ptr().add((i + r) * a.kp + kb * K_BLOCK);
                let x02 = _mm256_set1_epi32(std::ptr::read_unaligned(xp as *const i32));
                let x13 = _mm256_set1_epi32(std::ptr::read_unaligned(xp.add(2) as *const i32));
                let lo = _mm256_add_epi32(_mm256_madd_epi16(x02, l02), _mm256_madd_epi16(x13, l13));
                let hi = _mm256_add_epi32(_mm256_madd_epi16(x02, h02), _mm256_madd_epi16(x13, h13));
                acc[r][0] = _mm256_add_epi32(acc[r][0], lo);
                acc[r][1] = _mm256_add_epi32(acc[r][1], hi);
            }
        })
    }
}

/// The loop both forms share: per group, `kblock(wl, wh, kb, acc)` adds
/// k-block `kb` (the tile's two 32-byte halves `wl`, `wh`) to the rows' exact
/// i32 sums, then the group's epilogue `y += (acc as f32 * s_x) * s_w` in the
/// order every level uses; the `R` x 16 outputs go to `out[0..R]`.
///
/// # Safety
/// The CPU must have AVX2; `t < padded_n / 16`, `i + R <= a.m`, `a` matches
/// `w`; `kblock` reads only activations of rows `i..i + R`, k-block `kb`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_loop<const R: usize>(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    out: &mut TileOut,
    mut kblock: impl FnMut(__m256i, __m256i, usize, &mut [[__m256i; 2]; R]),
) {
    let np = w.padded_n();
    // SAFETY: the tile's bytes [t * 16 * kp, (t + 1) * 16 * kp) are inside
    // data (length np * kp); each k-block reads 64 bytes at kb * 64 < 16 * kp.
    // The scales read 16 floats at g * np + 16 t + 16 <= groups * np; out[r]
    // holds 16 floats.
    unsafe {
        let wp = w.data.as_ptr().add(t * TILE_N * a.kp);
        let mut y = [[_mm256_setzero_ps(); 2]; R];
        for g in 0..a.groups {
            let (kb0, kb1) = w.group_blocks(g);
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for kb in kb0..kb1 {
                let wl = _mm256_loadu_si256(wp.add(kb * 64) as *const _);
                let wh = _mm256_loadu_si256(wp.add(kb * 64 + 32) as *const _);
                kblock(wl, wh, kb, &mut acc);
            }
            let sp = w.scales.as_ptr().add(g * np + t * TILE_N);
            let sw = [_mm256_loadu_ps(sp), _mm256_loadu_ps(sp.add(8))];
            for r in 0..R {
                let sx = _mm256_set1_ps(a.s[(i + r) * a.groups + g]);
                for h in 0..2 {
                    let f = _mm256_cvtepi32_ps(acc[r][h]);
                    y[r][h] = _mm256_add_ps(y[r][h], _mm256_mul_ps(_mm256_mul_ps(f, sx), sw[h]));
                }
            }
        }
        for r in 0..R {
            _mm256_storeu_ps(out[r].as_mut_ptr(), y[r][0]);
            _mm256_storeu_ps(out[r].as_mut_ptr().add(8), y[r][1]);
        }
    }
}

/// `q` widened to i16 with each k-block's bytes in the order
/// `(x0, x2, x1, x3)`, what [`rows16`] broadcasts; bit for bit
/// [`super::scalar::widen_pairs`].
///
/// # Safety
/// The CPU must have AVX2; `q16.len() == q.len()`, a multiple of 4.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn widen_pairs(q: &[i8], q16: &mut [i16]) {
    assert!(q16.len() == q.len() && q.len().is_multiple_of(K_BLOCK));
    let n16 = q.len() / 16 * 16;
    // SAFETY: 16-byte loads at t + 16 <= n16 <= q.len(); 32-byte stores of
    // 16 i16s at t + 16 <= q16.len().
    unsafe {
        let order = _mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15);
        for t in (0..n16).step_by(16) {
            let v = _mm_shuffle_epi8(_mm_loadu_si128(q.as_ptr().add(t) as *const _), order);
            _mm256_storeu_si256(q16.as_mut_ptr().add(t) as *mut _, _mm256_cvtepi8_epi16(v));
        }
    }
    super::scalar::widen_pairs(&q[n16..], &mut q16[n16..]);
}

/// `max |v|` skipping NaN, as the scalar fold over `abs_max` gives it.
///
/// # Safety
/// The CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn abs_max(v: &[f32]) -> f32 {
    let n8 = v.len() / 8 * 8;
    // SAFETY: vector loads read [t, t + 8) with t + 8 <= n8 <= v.len().
    unsafe {
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
        // Four chains (a lone `vmaxps` chain waits out its latency every 8
        // values); max is exact in any order.
        let mut m4 = [_mm256_setzero_ps(); 4];
        let mut t = 0;
        while t + 32 <= n8 {
            for (c, m) in m4.iter_mut().enumerate() {
                let x = _mm256_and_ps(_mm256_loadu_ps(v.as_ptr().add(t + 8 * c)), abs);
                // vmaxps returns its second operand when either is NaN.
                *m = _mm256_max_ps(x, *m);
            }
            t += 32;
        }
        while t < n8 {
            let x = _mm256_and_ps(_mm256_loadu_ps(v.as_ptr().add(t)), abs);
            m4[0] = _mm256_max_ps(x, m4[0]);
            t += 8;
        }
        // No chain holds a NaN.
        let mx = _mm256_max_ps(_mm256_max_ps(m4[0], m4[1]), _mm256_max_ps(m4[2], m4[3]));
        let h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps::<1>(mx));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        let amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps::<1>(h, h)));
        v[n8..].iter().fold(amax, |a, &x| super::abs_max(a, x))
    }
}

/// The rounding both activation quantizers share, 8 lanes at a time:
/// `round(clamp(x * inv, -limit, limit))` as i32, NaN to 0, the steps of
/// `quantize_one` / `quantize_one16` (ties to even through `MAGIC`).
#[derive(Clone, Copy)]
struct Round8 {
    inv: __m256,
    lo: __m256,
    hi: __m256,
    magic: __m256,
}

impl Round8 {
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn new(inv: f32, limit: f32) -> Round8 {
        Round8 {
            inv: _mm256_set1_ps(inv),
            lo: _mm256_set1_ps(-limit),
            hi: _mm256_set1_ps(limit),
            magic: _mm256_set1_ps(super::MAGIC),
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn apply(self, x: __m256) -> __m256i {
        let y = _mm256_mul_ps(x, self.inv);
        // NaN in the second operand passes through both, as in f32::clamp.
        let y = _mm256_min_ps(self.hi, _mm256_max_ps(self.lo, y));
        let r = _mm256_sub_ps(_mm256_add_ps(y, self.magic), self.magic);
        let ok = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
        _mm256_and_si256(_mm256_cvtps_epi32(r), ok)
    }
}

/// [`super::quantize_slice16`] 8 lanes at a time, bit for bit: the steps of
/// [`quantize_slice`] with the limit `L` for 127, packed to i16 (exact, as
/// `|v| <= L`).
///
/// # Safety
/// The CPU must have AVX2; `out.len() >= v.len()`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_slice16(v: &[f32], out: &mut [i16], limit: f32) -> f32 {
    let n = v.len();
    assert!(out.len() >= n);
    let n8 = n / 8 * 8;
    // SAFETY: abs_max needs AVX2 (this function's contract); vector loads
    // read [t, t + 8) with t + 8 <= n8 <= n; the 16-byte stores write
    // out[t..t + 8], inside `out` as out.len() >= n.
    unsafe {
        let amax = abs_max(v);
        let (scale, inv) = super::scales16(amax, limit);
        let round = Round8::new(inv, limit);
        for t in (0..n8).step_by(8) {
            let i = round.apply(_mm256_loadu_ps(v.as_ptr().add(t)));
            // Lanes 0-3 then 4-7 in each half's low 64 bits: gather them.
            let w = _mm256_permute4x64_epi64::<0b1000>(_mm256_packs_epi32(i, i));
            _mm_storeu_si128(
                out.as_mut_ptr().add(t) as *mut __m128i,
                _mm256_castsi256_si128(w),
            );
        }
        for t in n8..n {
            out[t] = super::quantize_one16(v[t], inv, limit);
        }
        scale
    }
}

/// [`super::scalar::swap_pairs`] 16 values at a time.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn swap_pairs(q16: &mut [i16]) {
    let n16 = q16.len() / 16 * 16;
    // SAFETY: 32-byte loads and stores at t + 16 <= n16 <= q16.len() i16s.
    unsafe {
        let order = _mm256_setr_epi8(
            0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15, 0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12,
            13, 10, 11, 14, 15,
        );
        for t in (0..n16).step_by(16) {
            let p = q16.as_mut_ptr().add(t) as *mut __m256i;
            _mm256_storeu_si256(p, _mm256_shuffle_epi8(_mm256_loadu_si256(p), order));
        }
    }
    super::scalar::swap_pairs(&mut q16[n16..]);
}

/// [`super::quantize_slice`] 8 lanes at a time, bit for bit (see the AVX-512
/// twin for why each step matches); the last `n % 8` values take the scalar
/// steps themselves.
///
/// # Safety
/// The CPU must have AVX2; `out.len() >= v.len()`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_slice(v: &[f32], out: &mut [i8]) -> f32 {
    let n = v.len();
    assert!(out.len() >= n);
    let n8 = n / 8 * 8;
    // SAFETY: abs_max needs AVX2 (this function's contract); vector loads
    // read [t, t + 8) with t + 8 <= n8 <= n; the 8-byte stores write
    // out[t..t + 8], inside `out` as out.len() >= n.
    unsafe {
        let amax = abs_max(v);
        let (scale, inv) = super::scales(amax);
        let round = Round8::new(inv, 127.0);
        for t in (0..n8).step_by(8) {
            let i = round.apply(_mm256_loadu_ps(v.as_ptr().add(t)));
            // Values are in [-127, 127]: both packs are exact.
            let w = _mm256_packs_epi32(i, i);
            let b = _mm256_packs_epi16(w, w);
            let lo4 = _mm256_castsi256_si128(b);
            let hi4 = _mm256_extracti128_si256::<1>(b);
            _mm_storel_epi64(
                out.as_mut_ptr().add(t) as *mut __m128i,
                _mm_unpacklo_epi32(lo4, hi4),
            );
        }
        for t in n8..n {
            out[t] = super::quantize_one(v[t], inv);
        }
        scale
    }
}

/// [`super::scalar::block_sums`] with AVX2: per 64-byte k-block, two loads;
/// `vpmaddubsw(1, w)` sums byte pairs (at most 2 * 128 in magnitude, no
/// saturation) and `vpmaddwd` by ones sums the pairs into each row's four
/// bytes, eight rows per register; `vpminsb` keeps the smallest byte. Exact,
/// so equal to the twin bit for bit. A few hundred microseconds for a
/// tiny model's 13 MB, where the scalar loop took ~10 ms of its start-up.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn block_sums(blocks: &[i8]) -> ([i32; TILE_N], i8) {
    const BLK: usize = TILE_N * K_BLOCK;
    let mut acc = [0i32; TILE_N];
    let mut mins = [i8::MAX; 32];
    // SAFETY: each block is exactly 64 bytes (chunks_exact), read as two
    // unaligned 32-byte loads; the stores write the local arrays, 2 x 32 bytes
    // into `acc` (16 i32) and 32 bytes into `mins`.
    unsafe {
        let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
        let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let mut mn = _mm256_set1_epi8(i8::MAX);
        for blk in blocks.chunks_exact(BLK) {
            let a = _mm256_loadu_si256(blk.as_ptr() as *const __m256i);
            let b = _mm256_loadu_si256(blk.as_ptr().add(32) as *const __m256i);
            let sa = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, a), ones16);
            let sb = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, b), ones16);
            lo = _mm256_add_epi32(lo, sa);
            hi = _mm256_add_epi32(hi, sb);
            mn = _mm256_min_epi8(mn, _mm256_min_epi8(a, b));
        }
        _mm256_storeu_si256(acc.as_mut_ptr() as *mut __m256i, lo);
        _mm256_storeu_si256(acc.as_mut_ptr().add(8) as *mut __m256i, hi);
        _mm256_storeu_si256(mins.as_mut_ptr() as *mut __m256i, mn);
    }
    (acc, mins.iter().copied().min().unwrap_or(i8::MAX))
}
