//! AMX-INT8 tile kernel for int8 products of many rows ([`super::AMX_MIN_M`]
//! and up: prefill, a batch's decode step).
//!
//! `tdpbssd` multiplies a 16 x 64 tile of signed activation bytes by a
//! 16 x 64 tile of signed weight bytes read as 16 k-blocks of 16 outputs x 4
//! inputs, adding 16 x 16 exact i32 dot products (of 64 inputs each) to an
//! accumulator tile. That B tile is exactly 16 consecutive k-blocks of one
//! packed int8 tile (`int8` module docs: 64 bytes a k-block, 16 outputs x 4
//! inputs), so the weights load straight from the packed layout with a
//! 64-byte stride; the activations load from their `[rows, kp]` rows with a
//! `kp` stride. The sums are exact integers, as at every other level, and
//! the epilogue is the other levels' `y += (acc as f32 * s_x) * s_w` per
//! group in the same order, so the outputs are the same bits.
//!
//! Eight tile registers, all 16 rows x 64 bytes (one configuration):
//! * int8 activations: `tmm0..3` accumulate a 32-row x 32-output block,
//!   `tmm4`/`tmm5` two activation tiles, `tmm6`/`tmm7` two weight tiles;
//!   four products per four loads.
//! * 16-bit activations ([`super::Activations::Int16`]) as int8 halves
//!   `128 hi + lo` (signed, unlike VNNI's flipped ones): `tmm0`/`tmm1` the
//!   `hi` sums and `tmm2`/`tmm3` the `lo` sums of a 16-row x 32-output block,
//!   recombined as `(H << 7) + L` per group (wrapping i32; the true sum fits,
//!   `a16_limit`).
//!
//! Rows are taken 16 at a time: the caller pads the activations with zero
//! rows to a multiple of 16 ([`padded_rows`]); their outputs are dropped.
//! Groups must be whole 64-input steps ([`fits`]); other shapes take the
//! VNNI kernels.

// Rows indexed into several arrays at once read more plainly than zips.
#![allow(clippy::needless_range_loop)]

use super::{Acts, Epilogue, Int8View, K_BLOCK, TILE_N};
use crate::f32::avx512::mask16;
use crate::par::ColBlock;
use std::arch::asm;
use std::arch::x86_64::*;

/// Inputs per tile product: a 64-byte activation row.
const TILE_K: usize = 64;
/// k-blocks per tile product (the weight tile's rows).
const STEP_BLOCKS: usize = TILE_K / K_BLOCK;
/// Rows of an activation tile.
const TILE_M: usize = 16;

/// Activation rows the kernel reads for `m` rows: `m` rounded up to 16.
pub(crate) fn padded_rows(m: usize) -> usize {
    m.div_ceil(TILE_M) * TILE_M
}

/// Rows of one block: 32 (two activation tiles) for int8, 16 for halves
/// (whose two tiles are the `hi` and `lo` of the same rows).
fn block_rows(a: &Acts<'_>) -> usize {
    if a.wide {
        TILE_M
    } else {
        2 * TILE_M
    }
}

/// Whether every group of `w` is a whole number of 64-input steps (and so
/// `kp` a multiple of 64): what the tile products cover.
pub(crate) fn fits(w: &Int8View<'_>) -> bool {
    (0..w.groups()).all(|g| {
        let (b0, b1) = w.group_blocks(g);
        b0.is_multiple_of(STEP_BLOCKS) && (b1 - b0).is_multiple_of(STEP_BLOCKS)
    })
}

/// A 16 x 16 i32 accumulator tile in memory.
type CTile = [[i32; TILE_N]; TILE_M];

/// A block's four stored accumulator tiles, on a cache line like every
/// tile operand ([`crate::aligned`]): each 64-byte tile row one line.
#[repr(C, align(64))]
struct Sums([CTile; 4]);

impl Sums {
    const ZERO: Sums = Sums([[[0; TILE_N]; TILE_M]; 4]);
}

/// The tile loop over one column chunk: outputs `[j0, j1)` of every row into
/// `out`, finished as `ep` says. `rows` is the padded row
/// count of `a.q` ([`padded_rows`]); with `a.wide` it holds both halves
/// (`[2, rows, kp]`, signed).
///
/// # Safety
/// The CPU must run [`crate::dispatch::Isa::Amx`] (AMX-TILE, AMX-INT8, the
/// tile state granted; AVX-512F). `fits(w)`, `a` matches `w`, `a.q` holds
/// `rows * kp` bytes (twice that with `a.wide`) with zero rows from `a.m`,
/// `j0 % 16 == 0`, `j0 < j1 <= w.n()`, `out` is `[a.m, j1 - j0]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn chunk(
    a: &Acts<'_>,
    rows: usize,
    w: &Int8View<'_>,
    j0: usize,
    j1: usize,
    out: &mut ColBlock<'_>,
    ep: Epilogue,
) {
    debug_assert!(rows == padded_rows(a.m) && fits(w));
    let (t0, t1) = (j0 / TILE_N, j1.div_ceil(TILE_N));
    let block_m = block_rows(a);
    // SAFETY: the CPU runs AMX (contract); released below.
    unsafe { crate::tiles::configure() };
    if a.groups == 1 {
        // One group (per-row weight scales, the default): block b's sums
        // are stored, then block b - 1's epilogue runs while b's tile
        // products are still in flight; done one after the other, the AMX
        // unit idled through every epilogue. Two sets of sums alternate.
        let mut c = [Sums::ZERO, Sums::ZERO];
        let mut pending: Option<(usize, usize, usize)> = None;
        let mut cur = 0;
        for ta in (t0..t1).step_by(2) {
            // A lone last tile pairs with itself; its copy's outputs are dropped.
            let tb = if ta + 1 < t1 { ta + 1 } else { ta };
            for i in (0..a.m).step_by(block_m) {
                // SAFETY: forwarded contract; i < a.m <= rows, and the
                // second int8 row block (i + 16, clamped to i) lies below
                // `rows`.
                unsafe { products(a, rows, w, ta, tb, i, 0, &mut c[cur].0) };
                if let Some((pa, pb, pi)) = pending {
                    // SAFETY: forwarded contract, for a block done before.
                    unsafe { finish_one(a, w, pa, pb, pi, &c[1 - cur].0, j0, j1, out, ep) };
                }
                pending = Some((ta, tb, i));
                cur = 1 - cur;
            }
        }
        if let Some((pa, pb, pi)) = pending {
            // SAFETY: as above.
            unsafe { finish_one(a, w, pa, pb, pi, &c[1 - cur].0, j0, j1, out, ep) };
        }
    } else {
        let mut c = Sums::ZERO;
        let mut y = [[[0f32; TILE_N]; 2 * TILE_M]; 2];
        for ta in (t0..t1).step_by(2) {
            let tb = if ta + 1 < t1 { ta + 1 } else { ta };
            for i in (0..a.m).step_by(block_m) {
                for g in 0..a.groups {
                    // SAFETY: as above.
                    unsafe { products(a, rows, w, ta, tb, i, g, &mut c.0) };
                    // SAFETY: as above.
                    unsafe { group_epilogue(a, w, ta, tb, i, g, &c.0, &mut y) };
                }
                let nr = (a.m - i).min(block_m);
                for (h, t) in [ta, tb].into_iter().enumerate() {
                    if h == 1 && tb == ta {
                        break;
                    }
                    let cols = tile_cols(t, j0, j1);
                    for r in 0..nr {
                        // SAFETY: y[h][r] is 16 floats; tile_cols keeps the
                        // tile's columns inside the row.
                        unsafe {
                            let v = _mm512_loadu_ps(y[h][r].as_ptr());
                            store_out(out.row(i + r), cols, v, ep);
                        }
                    }
                }
            }
        }
    }
    // SAFETY: releases the tile state this function configured.
    unsafe { crate::tiles::release() };
}

/// Where weight tile `t`'s outputs go in the chunk `[j0, j1)`: the offset
/// in a row of `out`, how many of its 16 are inside, and their lane mask.
#[inline(always)]
fn tile_cols(t: usize, j0: usize, j1: usize) -> (usize, usize, u16) {
    let valid = (j1 - t * TILE_N).min(TILE_N);
    (t * TILE_N - j0, valid, mask16(valid))
}

/// The second activation tile's offset in `a.q` for the row block from `i`,
/// after the first's: the next 16 rows (int8; clamped to the first when
/// none remain, its outputs then dropped) or the `lo` halves.
#[inline(always)]
fn tile_offsets(a: &Acts<'_>, rows: usize, i: usize) -> (usize, usize) {
    let kp = a.kp;
    if a.wide {
        (i * kp, rows * kp + i * kp)
    } else {
        let ib = if i + TILE_M < rows { i + TILE_M } else { i };
        (i * kp, ib * kp)
    }
}

/// Group `g` of one row block against weight tiles `ta` and `tb`: the tile
/// products into `tmm0..3`, stored to `c`. tmm0: (rows 0-15, ta), tmm1:
/// (rows 0-15, tb), tmm2: (second tile, ta), tmm3: (second tile, tb).
///
/// # Safety
/// As [`chunk`], with the tiles configured; `i < a.m`, `ta <= tb < np / 16`,
/// `g < a.groups`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn products(
    a: &Acts<'_>,
    rows: usize,
    w: &Int8View<'_>,
    ta: usize,
    tb: usize,
    i: usize,
    g: usize,
    c: &mut [CTile; 4],
) {
    let kp = a.kp;
    let (a0, a1) = tile_offsets(a, rows, i);
    let q = a.q.as_ptr();
    let wd = w.data.as_ptr();
    // Weight tiles ta and tb at k-block 0 (tiles < np / 16: inside the
    // weights).
    let (b0, b1) = (
        wd.wrapping_add(ta * TILE_N * kp),
        wd.wrapping_add(tb * TILE_N * kp),
    );
    let (kb0, kb1) = w.group_blocks(g);
    // SAFETY: every tile load reads 16 rows of 64 bytes: activations at
    // a0 / a1 + kb * 4 with stride kp (rows i..i + 16 <= rows, inputs
    // kb * 4 + 64 <= kp as the groups are whole steps), weights at
    // (t * 16 * kp + kb * 64) with stride 64 (16 k-blocks of tile t <
    // np / 16); the stores write the four 1 KiB tiles of `c`.
    unsafe {
        crate::tiles::zero_sums();
        for kb in (kb0..kb1).step_by(STEP_BLOCKS) {
            // The next step's two weight tiles (1 KiB each, contiguous), on
            // their way to L1 while this step multiplies: a tile register
            // is not renamed, so a `tileloadd` that misses L1 holds up the
            // products after it (W3 all-int8 -1..-3%, kernels/BENCH.md).
            // Past the group's last step this touches the next lines of
            // the weights, or none: a prefetch never faults.
            let next = (kb + STEP_BLOCKS) * 64;
            for line in (0..1024).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(b0.wrapping_add(next + line));
                _mm_prefetch::<_MM_HINT_T0>(b1.wrapping_add(next + line));
            }
            // Each load comes just before the first product that needs
            // it, so a load waiting for the last step's products to be
            // done with its register does not also hold up those it
            // does not feed.
            asm!(
                "tileloadd tmm4, [{a0} + {ks}*1]",
                "tileloadd tmm6, [{b0} + {ws}*1]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {ws}*1]",
                "tdpbssd tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {ks}*1]",
                "tdpbssd tmm2, tmm5, tmm6",
                "tdpbssd tmm3, tmm5, tmm7",
                a0 = in(reg) q.add(a0 + kb * K_BLOCK),
                a1 = in(reg) q.add(a1 + kb * K_BLOCK),
                b0 = in(reg) b0.add(kb * 64),
                b1 = in(reg) b1.add(kb * 64),
                ks = in(reg) kp,
                ws = in(reg) 64usize,
                options(nostack, readonly)
            );
        }
        crate::tiles::store_sums(c);
    }
}

/// Row `r`'s exact sums of the block for tiles `ta` and `tb` from the stored
/// tiles (the halves recombined as `(H << 7) + L`).
///
/// # Safety
/// AVX-512F; `r < block_rows(a)`.
#[inline(always)]
unsafe fn row_sums(a: &Acts<'_>, c: &[CTile; 4], r: usize) -> (__m512i, __m512i) {
    let (lo, hi) = (r % TILE_M, r / TILE_M);
    let load = |t: usize| -> __m512i {
        // SAFETY: c[t][lo] is 16 i32s.
        unsafe { _mm512_loadu_si512(c[t][lo].as_ptr() as *const _) }
    };
    if a.wide {
        let comb = |h: __m512i, l: __m512i| _mm512_add_epi32(_mm512_slli_epi32::<7>(h), l);
        (comb(load(0), load(2)), comb(load(1), load(3)))
    } else {
        (load(2 * hi), load(2 * hi + 1))
    }
}

/// Group `g`'s weight scales of tile `t` (16 outputs).
///
/// # Safety
/// AVX-512F; `g < w.groups()`, `t < w.padded_n() / 16`.
#[inline(always)]
unsafe fn tile_scales(w: &Int8View<'_>, g: usize, t: usize) -> __m512 {
    debug_assert!((g * w.padded_n() + t * TILE_N + TILE_N) <= w.scales.len());
    // SAFETY: the contract puts the 16 scales inside `scales`.
    unsafe { _mm512_loadu_ps(w.scales.as_ptr().add(g * w.padded_n() + t * TILE_N)) }
}

/// Writes `v`'s first `valid` lanes into `row[o..]` (`(o, valid, mask)` as
/// [`tile_cols`] gives them), finished as `ep` says: added to what they
/// hold, or through a ReLU (`max(v, 0)` gives `+0.0` for `-0.0` and for a
/// NaN, its second operand, as the scalar `relu` does).
///
/// # Safety
/// AVX-512F; `o + valid <= row.len()`.
#[inline(always)]
unsafe fn store_out(
    row: &mut [f32],
    (o, valid, mask): (usize, usize, u16),
    v: __m512,
    ep: Epilogue,
) {
    let dst = row[o..o + valid].as_mut_ptr();
    // SAFETY: the masked accesses touch the `valid` floats of dst.
    unsafe {
        let v = match ep {
            Epilogue::Store => v,
            Epilogue::Add => _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), v),
            Epilogue::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
        };
        _mm512_mask_storeu_ps(dst, mask, v);
    }
}

/// The epilogue of a one-group block, straight into `out`: `0 + (acc * s_x)
/// * s_w` (the other levels' accumulator starts at 0.0, so -0.0 becomes
/// +0.0 as there), finished as `ep` says.
///
/// # Safety
/// As [`chunk`] (`a.groups == 1`); `c` holds the sums of the block from row
/// `i` against tiles `ta` and `tb`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_one(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    ta: usize,
    tb: usize,
    i: usize,
    c: &[CTile; 4],
    j0: usize,
    j1: usize,
    out: &mut ColBlock<'_>,
    ep: Epilogue,
) {
    // SAFETY: one group, ta <= tb < np / 16 (contract).
    let (swa, swb) = unsafe { (tile_scales(w, 0, ta), tile_scales(w, 0, tb)) };
    let (ca, cb) = (tile_cols(ta, j0, j1), tile_cols(tb, j0, j1));
    for r in 0..block_rows(a).min(a.m - i) {
        let sx = _mm512_set1_ps(a.s[i + r]);
        // SAFETY: r < block_rows(a).
        let (sa, sb) = unsafe { row_sums(a, c, r) };
        let row = out.row(i + r);
        for (h, (s, swt, cols)) in [(sa, swa, ca), (sb, swb, cb)].into_iter().enumerate() {
            if h == 1 && tb == ta {
                break;
            }
            let f = _mm512_cvtepi32_ps(s);
            let v = _mm512_add_ps(
                _mm512_setzero_ps(),
                _mm512_mul_ps(_mm512_mul_ps(f, sx), swt),
            );
            // SAFETY: tile_cols keeps the tile's columns inside the row.
            unsafe { store_out(row, cols, v, ep) };
        }
    }
}

/// Group `g`'s epilogue of one row block into `y[h][r]` (`h`: 0 for `ta`, 1
/// for `tb`; `r`: row within the block): `y += (acc * s_x) * s_w`, from 0.0
/// at the first group.
///
/// # Safety
/// As [`products`], with `c` holding its sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn group_epilogue(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    ta: usize,
    tb: usize,
    i: usize,
    g: usize,
    c: &[CTile; 4],
    y: &mut [[[f32; TILE_N]; 2 * TILE_M]; 2],
) {
    // SAFETY: g < groups, ta <= tb < np / 16 (contract).
    let (swa, swb) = unsafe { (tile_scales(w, g, ta), tile_scales(w, g, tb)) };
    for r in 0..block_rows(a).min(a.m - i) {
        let sx = _mm512_set1_ps(a.s[(i + r) * a.groups + g]);
        // SAFETY: r < block_rows(a).
        let (sa, sb) = unsafe { row_sums(a, c, r) };
        for (h, (s, swt)) in [(sa, swa), (sb, swb)].into_iter().enumerate() {
            let f = _mm512_cvtepi32_ps(s);
            let yp = y[h][r].as_mut_ptr();
            // SAFETY: y[h][r] is 16 f32s. The first group adds to 0.0,
            // as every level's accumulator starts (so -0.0 becomes +0.0
            // there too).
            unsafe {
                let y0 = if g == 0 {
                    _mm512_setzero_ps()
                } else {
                    _mm512_loadu_ps(yp)
                };
                let v = _mm512_add_ps(y0, _mm512_mul_ps(_mm512_mul_ps(f, sx), swt));
                _mm512_storeu_ps(yp, v);
            }
        }
    }
}
