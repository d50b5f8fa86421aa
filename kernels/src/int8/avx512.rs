//! AVX-512 int8 tile kernels. One 64-byte load is a k-block of a 16-row tile;
//! the 4 activation bytes of that k-block are broadcast to all 16 lanes, so each
//! instruction advances 16 dot products by 4 inputs with no horizontal sums.
//!
//! * VNNI: `vpdpbusd` multiplies u8 by s8, so activations go in as `x + 128`
//!   (a sign-bit flip, done once when they are quantised: `Acts::flipped`) and
//!   `128 * row_sum` is subtracted per group; wrapping i32 arithmetic makes
//!   that exact (module docs of `int8`).
//! * Plain AVX-512BW: `vpmaddubsw` on `|x|` and `w` negated where `x < 0` (a
//!   masked subtract stands in for the missing 512-bit `vpsignb`), then `vpmaddwd`
//!   by ones. Pair sums are at most 2 * 127 * 127 < 2^15, so nothing saturates.

// Register arrays indexed by row read more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::{Acts, Epilogue, Int8View, TileOut, K_BLOCK, PAIR_TILES, TILE_N};
use crate::f32::avx512::mask16;
use std::arch::x86_64::*;

/// The 4 activation bytes of k-block `kb` of row `i`, as one i32.
///
/// # Safety
/// `i < a.m` and `kb < a.kp / 4` (so the 4 bytes are inside `a.q`).
#[inline(always)]
unsafe fn x4(a: &Acts<'_>, i: usize, kb: usize) -> i32 {
    debug_assert!(i < a.m && kb < a.kp / K_BLOCK);
    // SAFETY: by the caller's contract the 4 bytes lie inside `a.q`.
    unsafe { std::ptr::read_unaligned(a.q.as_ptr().add(i * a.kp + kb * K_BLOCK) as *const i32) }
}

macro_rules! dispatch_rows {
    ($f:ident, $a:expr, $w:expr, $t:expr, $i:expr, $r:expr, $out:expr) => {
        match $r {
            1 => $f::<1>($a, $w, $t, $i, $out),
            2 => $f::<2>($a, $w, $t, $i, $out),
            3 => $f::<3>($a, $w, $t, $i, $out),
            _ => $f::<4>($a, $w, $t, $i, $out),
        }
    };
}
pub(crate) use dispatch_rows;

/// [`dispatch_rows`] with the VNNI kernels' eight-row block as well.
macro_rules! dispatch_rows_wide {
    ($f:ident, $a:expr, $w:expr, $t:expr, $i:expr, $r:expr, $out:expr) => {
        match $r {
            super::ROW_BLOCK_WIDE => $f::<{ super::ROW_BLOCK_WIDE }>($a, $w, $t, $i, $out),
            _ => dispatch_rows!($f, $a, $w, $t, $i, $r, $out),
        }
    };
}

/// Defines `$name(a, w, t0, t1, dst)`: tiles `t0..t1` against the single
/// activation row of a decode step (`a.m == 1`), tile `t` written to
/// `dst[16 (t - t0)..][..16]`, with the level's `$rows::<1>` inlined into one
/// loop; a call per tile and the copy through `int8::chunk`'s scratch tile
/// were a fifth of the LM head's time (kernels/BENCH.md). The same bits as
/// the level's `tile`.
macro_rules! row_tiles {
    ($name:ident, $rows:ident, $features:literal) => {
        /// # Safety
        /// The CPU must have the level's features; `a` matches `w` (checked by
        /// `int8::chunk`), `t1 <= padded_n / 16`, `dst.len() >= 16 (t1 - t0)`.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(
            a: &super::Acts<'_>,
            w: &super::Int8View<'_>,
            t0: usize,
            t1: usize,
            dst: &mut [f32],
        ) {
            assert!(a.m == 1 && dst.len() >= (t1 - t0) * super::TILE_N);
            let mut tmp: super::TileOut = [[0.0; super::TILE_N]; super::ROW_BLOCK_WIDE];
            for (t, d) in (t0..t1).zip(dst.chunks_exact_mut(super::TILE_N)) {
                // SAFETY: forwarded contract, row 0 of one row.
                unsafe { $rows::<1>(a, w, t, 0, &mut tmp) };
                d.copy_from_slice(&tmp[0]);
            }
        }
    };
}
pub(crate) use row_tiles;

row_tiles!(
    row_tiles_vnni,
    vnni_rows,
    "avx512f,avx512bw,avx512vl,avx512vnni"
);
row_tiles!(row_tiles_bw, bw_rows, "avx512f,avx512bw,avx512vl");
row_tiles!(
    row_tiles16_vnni,
    vnni16_rows,
    "avx512f,avx512bw,avx512vl,avx512vnni"
);

/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI. `t < padded_n / 16`, `i + r <= a.m`,
/// `1 <= r <= 4` or `r == 8`, and `a` must match `w` (checked by `int8::chunk`).
pub(crate) unsafe fn tile_vnni(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    // SAFETY: forwarded contract.
    unsafe { dispatch_rows_wide!(vnni_rows, a, w, t, i, r, out) }
}

/// [`super::Activations::Int16`]'s VNNI tile kernel: each 16-bit value
/// `v = 128 * hi + lo` comes as its two int8 halves with their sign bits
/// flipped (`Acts::q`: `hi + 128`, then `lo + 128`, as u8), and each half
/// takes one `vpdpbusd` against the same weight load. Per group,
/// `sum(v * w) = 128 * (H - 128 S) + (L - 128 S)` with `H`, `L` the halves'
/// sums and `S` the weights' row sum: wrapping i32 arithmetic, exact because
/// the true sum fits an i32 (`a16_limit`). Twice the multiplies of the int8
/// kernel and none of the AVX2 pair kernel's widening shifts.
///
/// # Safety
/// As [`tile_vnni`], with `a.wide` and `a.q` holding both flipped halves
/// (`[2, m, kp]`, checked by `int8::chunk`).
pub(crate) unsafe fn tile16_vnni(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    // SAFETY: forwarded contract.
    unsafe { dispatch_rows_wide!(vnni16_rows, a, w, t, i, r, out) }
}

/// # Safety
/// See [`tile_vnni`], without the VNNI requirement.
pub(crate) unsafe fn tile_bw(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    // SAFETY: forwarded contract.
    unsafe { dispatch_rows!(bw_rows, a, w, t, i, r, out) }
}

/// The shared epilogue: `y += (acc as f32 * s_x) * s_w`, in the scalar twin's order.
#[inline(always)]
unsafe fn epilogue<const R: usize>(
    y: &mut [__m512; R],
    acc: &[__m512i; R],
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    g: usize,
) {
    let np = w.padded_n();
    // SAFETY: g < groups and t < np / 16, so the 16 scales lie inside `scales`
    // (length groups * np, checked by Int8View::from_parts); AVX-512F is enabled
    // in every caller.
    unsafe {
        let sw = _mm512_loadu_ps(w.scales.as_ptr().add(g * np + t * TILE_N));
        for r in 0..R {
            let sx = _mm512_set1_ps(a.s[(i + r) * a.groups + g]);
            let f = _mm512_cvtepi32_ps(acc[r]);
            y[r] = _mm512_add_ps(y[r], _mm512_mul_ps(_mm512_mul_ps(f, sx), sw));
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni_rows<const R: usize>(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    out: &mut TileOut,
) {
    let np = w.padded_n();
    // SAFETY: the tile spans bytes [t * 16 * kp, (t + 1) * 16 * kp) of data,
    // whose length is np * kp; every k-block load below reads 64 bytes at
    // kb * 64 < 16 * kp inside it. x4 reads are in bounds as kb < kp / 4 and
    // i + r < m. row_sums has the same shape as scales (see epilogue).
    unsafe {
        let wp = w.data.as_ptr().add(t * TILE_N * a.kp);
        let mut y = [_mm512_setzero_ps(); R];
        for g in 0..a.groups {
            let (kb0, kb1) = w.group_blocks(g);
            // Four independent chains per row: vpdpbusd has a latency of ~5
            // cycles, so one chain would leave a single-row GEMV latency-bound.
            // Integer addition is associative, so the split changes no bit.
            let mut acc4 = [[_mm512_setzero_si512(); R]; 4];
            let mut kb = kb0;
            // Eight rows are eight chains already; 4 x 8 accumulators would
            // not fit the 32 registers.
            while R > 4 && kb < kb1 {
                let wv = _mm512_loadu_si512(wp.add(kb * 64) as *const _);
                for r in 0..R {
                    let u = _mm512_set1_epi32(x4(a, i + r, kb));
                    acc4[0][r] = _mm512_dpbusd_epi32(acc4[0][r], u, wv);
                }
                kb += 1;
            }
            while kb + 4 <= kb1 {
                for (c, acc) in acc4.iter_mut().enumerate() {
                    let wv = _mm512_loadu_si512(wp.add((kb + c) * 64) as *const _);
                    for r in 0..R {
                        let u = _mm512_set1_epi32(x4(a, i + r, kb + c));
                        acc[r] = _mm512_dpbusd_epi32(acc[r], u, wv);
                    }
                }
                kb += 4;
            }
            while kb < kb1 {
                let wv = _mm512_loadu_si512(wp.add(kb * 64) as *const _);
                for r in 0..R {
                    let u = _mm512_set1_epi32(x4(a, i + r, kb));
                    acc4[0][r] = _mm512_dpbusd_epi32(acc4[0][r], u, wv);
                }
                kb += 1;
            }
            let rs = _mm512_loadu_si512(w.row_sums.as_ptr().add(g * np + t * TILE_N) as *const _);
            let comp = _mm512_slli_epi32(rs, 7);
            let mut acc = [_mm512_setzero_si512(); R];
            for r in 0..R {
                let s01 = _mm512_add_epi32(acc4[0][r], acc4[1][r]);
                let s23 = _mm512_add_epi32(acc4[2][r], acc4[3][r]);
                acc[r] = _mm512_sub_epi32(_mm512_add_epi32(s01, s23), comp);
            }
            epilogue::<R>(&mut y, &acc, a, w, t, i, g);
        }
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), y[r]);
        }
    }
}

/// See [`tile16_vnni`]. Up to four rows run two chains per half (even and
/// odd k-blocks), hiding `vpdpbusd`'s latency for a single row; eight rows
/// are sixteen chains already and run one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni16_rows<const R: usize>(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    out: &mut TileOut,
) {
    let np = w.padded_n();
    let half = a.m * a.kp;
    // SAFETY: the weight, scale and row-sum reads are those of vnni_rows; the
    // `hi` reads are x4's (i + r < m, kb < kp / 4) and the `lo` reads the same
    // moved by m * kp, inside `a.q` (2 m kp bytes, the caller's contract).
    unsafe {
        let wp = w.data.as_ptr().add(t * TILE_N * a.kp);
        let lo4 = |r: usize, kb: usize| -> __m512i {
            let p = a.q.as_ptr().add(half + (i + r) * a.kp + kb * K_BLOCK);
            _mm512_set1_epi32(std::ptr::read_unaligned(p as *const i32))
        };
        let mut y = [_mm512_setzero_ps(); R];
        for g in 0..a.groups {
            let (kb0, kb1) = w.group_blocks(g);
            // [chain][hi, lo][row]; integer addition is associative, so
            // the chains change no bit.
            let mut acc = [[[_mm512_setzero_si512(); R]; 2]; 2];
            let mut kb = kb0;
            while R <= 4 && kb + 2 <= kb1 {
                for c in 0..2 {
                    let wv = _mm512_loadu_si512(wp.add((kb + c) * 64) as *const _);
                    for r in 0..R {
                        let h = _mm512_set1_epi32(x4(a, i + r, kb + c));
                        acc[c][0][r] = _mm512_dpbusd_epi32(acc[c][0][r], h, wv);
                        acc[c][1][r] = _mm512_dpbusd_epi32(acc[c][1][r], lo4(r, kb + c), wv);
                    }
                }
                kb += 2;
            }
            while kb < kb1 {
                let wv = _mm512_loadu_si512(wp.add(kb * 64) as *const _);
                for r in 0..R {
                    let h = _mm512_set1_epi32(x4(a, i + r, kb));
                    acc[0][0][r] = _mm512_dpbusd_epi32(acc[0][0][r], h, wv);
                    acc[0][1][r] = _mm512_dpbusd_epi32(acc[0][1][r], lo4(r, kb), wv);
                }
                kb += 1;
            }
            let rs = _mm512_loadu_si512(w.row_sums.as_ptr().add(g * np + t * TILE_N) as *const _);
            let comp = _mm512_slli_epi32(rs, 7);
            let mut sum = [_mm512_setzero_si512(); R];
            for r in 0..R {
                let hi = _mm512_sub_epi32(_mm512_add_epi32(acc[0][0][r], acc[1][0][r]), comp);
                let lo = _mm512_sub_epi32(_mm512_add_epi32(acc[0][1][r], acc[1][1][r]), comp);
                sum[r] = _mm512_add_epi32(_mm512_slli_epi32(hi, 7), lo);
            }
            epilogue::<R>(&mut y, &sum, a, w, t, i, g);
        }
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), y[r]);
        }
    }
}

/// [`PAIR_TILES`] (two) adjacent tiles from `t` against `R` rows of `H` activation
/// halves (1: [`tile_vnni`]'s int8 input; 2: [`tile16_vnni`]'s flipped
/// halves). Each broadcast of an activation k-block feeds both tiles' weight
/// loads, so a k-block costs `2 + H R` loads for `2 H R` `vpdpbusd`s instead
/// of `1 + H R` for `H R`: at eight rows the one-tile kernel issued more
/// loads than multiplies and ran at half the instruction's rate (W3's
/// products, kernels/BENCH.md). Sums, compensation and epilogue are the
/// one-tile kernels', tile by tile: the same bits.
///
/// The `PAIR_TILES x R` blocks of 16 outputs go straight to `out`, finished
/// by its epilogue (stored, added to what it holds, or through a ReLU), not
/// through a scratch tile and a copy.
///
/// # Safety
/// As [`tile_vnni`] (`H == 1`) or [`tile16_vnni`] (`H == 2`), with
/// `t + PAIR_TILES <= padded_n / 16`, and `out` valid for writes of 16 floats
/// at `out.ptr + r * out.row_stride + tt * out.tile_stride` for `r < R`,
/// `tt < PAIR_TILES`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni_pair<const R: usize, const H: usize>(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    out: &PairOut,
) {
    const T: usize = PAIR_TILES;
    let np = w.padded_n();
    let half = a.m * a.kp;
    // SAFETY: tiles t..t + T lie inside `data` (t + T <= np / 16) and each
    // k-block read stays inside its tile, as in vnni_rows; activation reads
    // are x4's, moved by `h * m * kp` inside `a.q` (H m kp bytes by the
    // caller's contract); scales and row sums as in epilogue.
    unsafe {
        let wp = w.data.as_ptr().add(t * TILE_N * a.kp);
        let x = |h: usize, r: usize, kb: usize| -> __m512i {
            let p = a.q.as_ptr().add(h * half + (i + r) * a.kp + kb * K_BLOCK);
            _mm512_set1_epi32(std::ptr::read_unaligned(p as *const i32))
        };
        let mut y = [[_mm512_setzero_ps(); R]; T];
        for g in 0..a.groups {
            let (kb0, kb1) = w.group_blocks(g);
            let mut acc = [[[_mm512_setzero_si512(); R]; H]; T];
            for kb in kb0..kb1 {
                let mut wv = [_mm512_setzero_si512(); T];
                for tt in 0..T {
                    wv[tt] = _mm512_loadu_si512(wp.add(tt * TILE_N * a.kp + kb * 64) as *const _);
                }
                for h in 0..H {
                    for r in 0..R {
                        let u = x(h, r, kb);
                        for tt in 0..T {
                            acc[tt][h][r] = _mm512_dpbusd_epi32(acc[tt][h][r], u, wv[tt]);
                        }
                    }
                }
            }
            for (tt, (acc, y)) in acc.iter().zip(y.iter_mut()).enumerate() {
                let rs = _mm512_loadu_si512(
                    w.row_sums.as_ptr().add(g * np + (t + tt) * TILE_N) as *const _
                );
                let comp = _mm512_slli_epi32(rs, 7);
                let mut sum = [_mm512_setzero_si512(); R];
                for r in 0..R {
                    let hi = _mm512_sub_epi32(acc[0][r], comp);
                    sum[r] = if H == 2 {
                        let lo = _mm512_sub_epi32(acc[H - 1][r], comp);
                        _mm512_add_epi32(_mm512_slli_epi32(hi, 7), lo)
                    } else {
                        hi
                    };
                }
                epilogue::<R>(y, &sum, a, w, t + tt, i, g);
            }
        }
        for (tt, y) in y.iter().enumerate() {
            for r in 0..R {
                let p = out.ptr.add(r * out.row_stride + tt * out.tile_stride);
                let v = match out.ep {
                    // dst + y is y + dst, bit for bit: the scalar `*d += v`.
                    Epilogue::Add => _mm512_add_ps(_mm512_loadu_ps(p), y[r]),
                    // +0.0 for -0.0 and NaN (its second operand): `ops::relu`.
                    Epilogue::Relu => _mm512_max_ps(y[r], _mm512_setzero_ps()),
                    Epilogue::Store => y[r],
                };
                _mm512_storeu_ps(p, v);
            }
        }
    }
}

/// Where [`vnni_pair`] writes: row `r` of tile `tt` (of its `PAIR_TILES`) at
/// `ptr + r * row_stride + tt * tile_stride`, 16 floats, finished by `ep`.
pub(crate) struct PairOut {
    pub ptr: *mut f32,
    pub row_stride: usize,
    pub tile_stride: usize,
    pub ep: Epilogue,
}

/// Rows `[i, i + r)` against tiles `t..t + PAIR_TILES` through
/// [`vnni_pair`]: the int8 input, or with `a.wide` the 16-bit input's halves.
///
/// # Safety
/// As [`vnni_pair`] with `R == r`: `1 <= r <= 4`, or `r == PAIR_ROWS`
/// (int8) or `r == PAIR16_ROWS` (16-bit).
pub(crate) unsafe fn pair_vnni(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &PairOut,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match (a.wide, r) {
            (false, PAIR_ROWS) => vnni_pair::<PAIR_ROWS, 1>(a, w, t, i, out),
            (false, 4) => vnni_pair::<4, 1>(a, w, t, i, out),
            (false, 3) => vnni_pair::<3, 1>(a, w, t, i, out),
            (false, 2) => vnni_pair::<2, 1>(a, w, t, i, out),
            (false, _) => vnni_pair::<1, 1>(a, w, t, i, out),
            (true, PAIR16_ROWS) => vnni_pair::<PAIR16_ROWS, 2>(a, w, t, i, out),
            (true, 3) => vnni_pair::<3, 2>(a, w, t, i, out),
            (true, 2) => vnni_pair::<2, 2>(a, w, t, i, out),
            (true, _) => vnni_pair::<1, 2>(a, w, t, i, out),
        }
    }
}

/// Int8 rows per block of [`pair_vnni`]: 16 accumulators and 16 f32 sums
/// at two tiles.
pub(crate) const PAIR_ROWS: usize = 8;
/// 16-bit rows per block of [`pair_vnni`]: two halves of two tiles, 16
/// accumulators (six rows, with 24, ran no faster).
pub(crate) const PAIR16_ROWS: usize = 4;

/// [`super::split_halves`] 32 values at a time, with flipped sign bits when
/// `flip` (the VNNI kernel's input; the AMX kernel's are signed).
///
/// # Safety
/// The CPU must have AVX-512 F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn split_halves(q16: &[i16], hi: &mut [i8], lo: &mut [i8], flip: bool) {
    let len = q16.len();
    assert!(
        hi.len() == len && lo.len() == len,
        "int8: split halves shape"
    );
    let n32 = len / 32 * 32;
    let bit = if flip { i8::MIN } else { 0 };
    // SAFETY: 64-byte loads of q16[t..t + 32] and 32-byte stores to
    // hi[t..t + 32] and lo[t..t + 32], with t + 32 <= n32 <= len.
    unsafe {
        let (c64, fv) = (_mm512_set1_epi16(64), _mm256_set1_epi8(bit));
        for t in (0..n32).step_by(32) {
            let v = _mm512_loadu_si512(q16.as_ptr().add(t) as *const _);
            // |v| <= A16_MAX, so v + 64 does not overflow an i16.
            let top = _mm512_srai_epi16::<7>(_mm512_add_epi16(v, c64));
            let rest = _mm512_sub_epi16(v, _mm512_slli_epi16::<7>(top));
            let (h, l) = (_mm512_cvtepi16_epi8(top), _mm512_cvtepi16_epi8(rest));
            _mm256_storeu_si256(hi.as_mut_ptr().add(t) as *mut _, _mm256_xor_si256(h, fv));
            _mm256_storeu_si256(lo.as_mut_ptr().add(t) as *mut _, _mm256_xor_si256(l, fv));
        }
    }
    for t in n32..len {
        let (h, l) = super::split_one(q16[t]);
        (hi[t], lo[t]) = (h ^ bit, l ^ bit);
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn bw_rows<const R: usize>(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    out: &mut TileOut,
) {
    // SAFETY: same bounds as vnni_rows.
    unsafe {
        let wp = w.data.as_ptr().add(t * TILE_N * a.kp);
        let ones = _mm512_set1_epi16(1);
        let zero = _mm512_setzero_si512();
        let mut y = [_mm512_setzero_ps(); R];
        for g in 0..a.groups {
            let (kb0, kb1) = w.group_blocks(g);
            let mut acc = [_mm512_setzero_si512(); R];
            for kb in kb0..kb1 {
                let wv = _mm512_loadu_si512(wp.add(kb * 64) as *const _);
                for r in 0..R {
                    let xb = _mm512_set1_epi32(x4(a, i + r, kb));
                    let ax = _mm512_abs_epi8(xb);
                    let neg = _mm512_movepi8_mask(xb);
                    let ws = _mm512_mask_sub_epi8(wv, neg, zero, wv);
                    let p = _mm512_madd_epi16(_mm512_maddubs_epi16(ax, ws), ones);
                    acc[r] = _mm512_add_epi32(acc[r], p);
                }
            }
            epilogue::<R>(&mut y, &acc, a, w, t, i, g);
        }
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), y[r]);
        }
    }
}

/// The values an activation quantiser reads: `x`, or `x * by` lane by lane
/// (a layer's input scales; the same f32 product the scalar twin stores in
/// a row first).
#[derive(Clone, Copy)]
struct Scaled<'a> {
    x: &'a [f32],
    by: &'a [f32],
}

impl Scaled<'_> {
    /// Lanes `m` of the 16 values from `t` (0 elsewhere).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; lanes `m` from `t` lie inside `x` (and
    /// `by`, unless it is empty).
    #[inline(always)]
    unsafe fn load(&self, t: usize, m: u16) -> __m512 {
        // SAFETY: forwarded contract.
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, self.x.as_ptr().add(t));
            if self.by.is_empty() {
                x
            } else {
                _mm512_mul_ps(x, _mm512_maskz_loadu_ps(m, self.by.as_ptr().add(t)))
            }
        }
    }

    /// `max |v|`, exact in any order: NaN lanes lose every `vmaxps` as they
    /// lose the scalar comparison.
    ///
    /// # Safety
    /// As [`Scaled::load`] for every lane of the slice.
    #[inline(always)]
    unsafe fn abs_max(&self) -> f32 {
        let n = self.x.len();
        // SAFETY: lanes [t, n) only (whole 16-lane loads while t + 64 <= n).
        unsafe {
            // Four chains: one `vmaxps` chain waited out its latency every
            // 16 values (a 1,024-value row ~250 cycles).
            let mut mx = [_mm512_setzero_ps(); 4];
            let mut t = 0;
            while t + 64 <= n {
                for (c, m) in mx.iter_mut().enumerate() {
                    // vmaxps returns its second operand when either is NaN.
                    *m = _mm512_max_ps(_mm512_abs_ps(self.load(t + 16 * c, u16::MAX)), *m);
                }
                t += 64;
            }
            while t < n {
                mx[0] = _mm512_max_ps(_mm512_abs_ps(self.load(t, mask16(n - t))), mx[0]);
                t += 16;
            }
            // No chain holds a NaN, so the order of these is free too.
            let m = _mm512_max_ps(_mm512_max_ps(mx[0], mx[1]), _mm512_max_ps(mx[2], mx[3]));
            _mm512_reduce_max_ps(m)
        }
    }
}

/// `round(clamp(v * inv, -limit, limit))` per lane as i32, NaN to 0: the
/// scalar twin's steps. The clamped value is NaN or within 2^22, where
/// rounding in the conversion (to nearest, ties to even) is the twin's
/// `MAGIC` rounding.
#[derive(Clone, Copy)]
struct Round16 {
    inv: __m512,
    lo: __m512,
    hi: __m512,
}

impl Round16 {
    /// # Safety
    /// The CPU must have AVX-512 F.
    #[inline(always)]
    unsafe fn new(inv: f32, limit: f32) -> Self {
        // SAFETY: register set-ups only; AVX-512 F by the contract.
        unsafe {
            Round16 {
                inv: _mm512_set1_ps(inv),
                lo: _mm512_set1_ps(-limit),
                hi: _mm512_set1_ps(limit),
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F.
    #[inline(always)]
    unsafe fn apply(&self, v: __m512) -> __m512i {
        // SAFETY: register arithmetic; AVX-512 F by the contract.
        unsafe {
            let y = _mm512_mul_ps(v, self.inv);
            // NaN in the second operand passes through both, as in f32::clamp.
            let y = _mm512_min_ps(self.hi, _mm512_max_ps(self.lo, y));
            let ok = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(y, y);
            _mm512_maskz_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                ok, y,
            )
        }
    }
}

/// [`super::quantize_slice`] 16 lanes at a time, bit for bit ([`Scaled`]'s
/// maximum, [`Round16`]'s rounding).
///
/// With `flip` the bytes stored are `q ^ 0x80`, the VNNI kernel's input.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL; `out.len() >= v.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn quantize_slice(v: &[f32], out: &mut [i8], flip: bool) -> f32 {
    let n = v.len();
    assert!(out.len() >= n);
    let x = Scaled { x: v, by: &[] };
    // SAFETY: AVX-512 F/BW by this function's contract (Scaled, Round16);
    // every access is masked to lanes [t, n) of `v` / `out`, or (the
    // 64-value steps) whole within them: t + 64 <= n <= out.len().
    unsafe {
        let (scale, inv) = super::scales(x.abs_max());
        let round = Round16::new(inv, 127.0);
        // 64 values at a time leave as one 64-byte store: a masked
        // narrowing store (vpmovdb) per 16 was the hottest instruction of
        // W3's quantisation. The values fit in i8, so the saturating packs
        // are exact; the dwords come out lane-interleaved (lane L holds
        // values 4L..4L+4 of each of the four vectors) and one permute puts
        // them in order.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let flip8 = _mm512_set1_epi8(if flip { i8::MIN } else { 0 });
        let mut t = 0;
        while t + 64 <= n {
            // No closure for the four (ARCHITECTURE.md: no load in a
            // closure of a hot path).
            let (a, b) = (
                round.apply(x.load(t, u16::MAX)),
                round.apply(x.load(t + 16, u16::MAX)),
            );
            let (c, d) = (
                round.apply(x.load(t + 32, u16::MAX)),
                round.apply(x.load(t + 48, u16::MAX)),
            );
            let p = _mm512_packs_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
            let p = _mm512_xor_si512(_mm512_permutexvar_epi32(order, p), flip8);
            _mm512_storeu_si512(out.as_mut_ptr().add(t) as *mut _, p);
            t += 64;
        }
        let flip32 = _mm512_set1_epi32(if flip { 0x80 } else { 0 });
        while t < n {
            let m = mask16(n - t);
            let i = _mm512_xor_si512(round.apply(x.load(t, m)), flip32);
            _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(t) as *mut _, m, i);
            t += 16;
        }
        scale
    }
}

/// [`super::quantize_slice16`] of `v * by` (`by` empty: of `v`) 16 lanes at
/// a time, bit for bit; 32 values a store (two saturating packs are exact,
/// `|q| <= limit`, and one permute undoes their lane interleave).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL; `out.len() >= v.len()`; `by` is
/// empty or as long as `v`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn quantize_slice16(v: &[f32], by: &[f32], out: &mut [i16], limit: f32) -> f32 {
    let n = v.len();
    assert!(out.len() >= n && (by.is_empty() || by.len() == n));
    let x = Scaled { x: v, by };
    // SAFETY: AVX-512 F/BW by this function's contract (Scaled, Round16);
    // every access is masked to lanes [t, n) of `v`, `by` and `out`, or
    // (the 32-value steps) whole within them: t + 32 <= n.
    unsafe {
        let (scale, inv) = super::scales16(x.abs_max(), limit);
        let round = Round16::new(inv, limit);
        let order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
        let mut t = 0;
        while t + 32 <= n {
            let a = round.apply(x.load(t, u16::MAX));
            let b = round.apply(x.load(t + 16, u16::MAX));
            let p = _mm512_permutexvar_epi64(order, _mm512_packs_epi32(a, b));
            _mm512_storeu_si512(out.as_mut_ptr().add(t) as *mut _, p);
            t += 32;
        }
        while t < n {
            let m = mask16(n - t);
            let i = round.apply(x.load(t, m));
            _mm512_mask_cvtepi32_storeu_epi16(out.as_mut_ptr().add(t) as *mut _, m, i);
            t += 16;
        }
        scale
    }
}
