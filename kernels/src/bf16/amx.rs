//! AMX-BF16 prefill at the `amx` level on a CPU with AMX-BF16, two ways:
//! [`linear`] for [`super::linear_dot`] (the opt-in that rounds the
//! activations to bf16, `T5EDGE_BF16_DOT=1`) and [`linear_split`] for the
//! default f32 arithmetic of [`super::linear_with`]. `tdpbf16ps` multiplies
//! a 16 x 32 bf16 tile by a 32 x 16 one (as 16 rows of 16 bf16 pairs) into
//! 16 x 16 f32 sums: by the instructions' documented throughput 512
//! multiply-adds a cycle a core, against 32 for two f32 `vfmadd`s.
//!
//! The weights are the A tiles, straight from the file: 16 weight rows of
//! 32 consecutive inputs, one 64-byte row each with the weight row's stride,
//! so nothing is packed or copied (the shapes must be whole tiles: [`fits`]).
//! The activations are laid out once per call as the B tiles: for each 16
//! rows and 32 inputs, row `p` holds each activation row's inputs `2p,
//! 2p + 1` side by side. A sum tile holds 16 outputs x 16 activation rows;
//! its transpose goes to `y`.
//!
//! [`linear`] rounds each activation to bf16 (nearest even, as
//! [`super::avx512bf16`] does): one B tile a step. [`linear_split`] writes
//! each activation as the sum of three bf16, `hi + mid + lo == x` exactly
//! ([`split`]), and multiplies the weight tile by all three: three times
//! the tile products, but every product of a weight and an activation is
//! then exact, so only the f32 sums round, as in the widening kernels: f32
//! arithmetic at tile speed, differing from the widening kernels only in
//! the order of the sums (the last bits, as two ISA levels differ).
//!
//! Arithmetic: each product of two bf16 is exact in f32 and added to the
//! output's sum by one chain of FMAs in input order (with the split, per
//! 32 inputs: the `hi` parts' products, then `mid`'s, then `lo`'s),
//! denormal inputs and results flushed to zero (the instruction ignores
//! MXCSR): [`linear`] within `avx512bf16`'s error budget,
//! [`linear_split`] within the f32 kernels' budget for `3k` terms plus the
//! flushed denormals (kernels/tests/linear_bf16.rs).
//!
//! Tiles as in `int8::amx`: eight registers of 16 rows x 64 bytes (one
//! configuration); `tmm0..3` sum a 32-output x 32-row block, `tmm4`/`tmm5`
//! two weight tiles, `tmm6`/`tmm7` two activation tiles: four products per
//! four loads, each weight tile loaded once a step for all the parts.

use crate::aligned::AlignedBuf;
use crate::par::{self, ColBlock};
use half::bf16;
use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;

/// Rows of every tile: outputs of a weight tile, activation rows of an
/// activation tile.
const TILE: usize = 16;
/// Inputs a tile product takes: one 64-byte row of 32 bf16.
const TILE_K: usize = 32;

/// Whether this CPU runs this kernel: the `amx` level (AMX tiles granted)
/// and AMX-BF16.
pub fn available() -> bool {
    crate::dispatch::features().amx_bf16 && crate::Isa::Amx.supported()
}

/// Whether the tiles cover `[n, k]` weights exactly: whole 32-input steps
/// (a weight tile's rows are 64 bytes of each weight row) and whole
/// 16-output tiles (a tile load reads 16 weight rows).
pub fn fits(k: usize, n: usize) -> bool {
    k > 0 && k.is_multiple_of(TILE_K) && n.is_multiple_of(TILE)
}

/// Activation tiles a thread keeps between calls, up to this many `u32`s
/// (8 MB: 128 rows of T5-XXL's 10240 inputs split are 7.5 MB); a larger
/// layout is a fresh buffer each call, freed after it.
const KEEP_TILES: usize = 2 << 20;

thread_local! {
    /// The calling thread's activation tiles ([`activation_tiles`]), on
    /// cache lines: a tile load spanning two lines runs much slower
    /// (`crate::aligned`), and a buffer kept needs no zeroing.
    static TILES: Cell<AlignedBuf<u32>> = const { Cell::new(AlignedBuf::new()) };
}

/// `y = x · wᵀ` with the activations rounded to bf16: `x` `[m, k]` f32, `w`
/// `[n, k]` bf16, `y` `[m, n]` f32.
///
/// Panics if the CPU cannot run it ([`available`]), the shapes disagree or
/// the tiles do not cover them ([`fits`]).
pub fn linear(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    product::<1>(x, m, k, w, n, y)
}

/// `y = x · wᵀ` in f32 arithmetic: each activation split exactly into three
/// bf16 ([`split`]), so every product is exact and only the sums round.
/// Shapes and panics as [`linear`].
pub fn linear_split(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    product::<3>(x, m, k, w, n, y)
}

/// [`linear`] (`P` = 1) or [`linear_split`] (`P` = 3).
fn product<const P: usize>(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    assert!(available(), "kernels: this CPU has no AMX-BF16 tiles");
    crate::f32::check_shapes(x.len(), m, k, w.len(), n, y.len());
    assert!(fits(k, n), "bf16 AMX: k {k} or n {n} is not whole tiles");
    if m == 0 || n == 0 {
        return;
    }
    for r0 in (0..m).step_by(SLAB_ROWS) {
        let rows = (m - r0).min(SLAB_ROWS);
        slab::<P>(
            &x[r0 * k..(r0 + rows) * k],
            rows,
            k,
            w,
            n,
            &mut y[r0 * n..(r0 + rows) * n],
        );
    }
}

/// Rows a call lays out and multiplies at a time: the activation tiles of
/// a slab are `3 * 2` bytes an activation (split), so a packed batch of
/// many inputs holds at most 1024 rows' worth (60 MB at T5-XXL's 10240
/// inputs) beside its own activations. An output's chain never depends on
/// the other rows, so the slabs change no bit; each re-reads the weights,
/// against 1024 rows of products.
const SLAB_ROWS: usize = 1024;

/// [`product`] of one slab of `m <= SLAB_ROWS` rows (shapes checked).
fn slab<const P: usize>(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    let need = tiles_len::<P>(m, k);
    let mut buf = if need <= KEEP_TILES {
        TILES.take()
    } else {
        AlignedBuf::new()
    };
    if buf.len() < need {
        buf.resize_zeroed(need);
    }
    let xt = &mut buf[..need];
    // SAFETY: `available` checked the amx level, which has AVX-512 F/BW/VL.
    unsafe { activation_tiles_avx512::<P>(x, m, k, xt) };
    let parallel = par::worth_parallel(m, k, n);
    par::for_col_chunks(y, m, n, chunk_cols(n), parallel, |j0, j1, out| {
        // SAFETY: `available` checked the amx level (AMX tiles granted,
        // AVX-512F) and AMX-BF16; `xt` is `activation_tiles::<P>`' layout
        // for `m` and `k`; `fits` makes the chunk's `[j1 - j0, k]` weights
        // whole tiles (chunks start at multiples of 64 outputs).
        unsafe { chunk::<P>(xt, m, k, &w[j0 * k..j1 * k], out) }
    });
    if need <= KEEP_TILES {
        TILES.set(buf);
    }
}

/// Outputs a task takes: 64 or 128, 128 from 2048 outputs on (16 tasks or
/// more for the pool to balance). Every activation tile is read once a
/// task, so fewer tasks read fewer; 256 was slower on the T5-XXL encoder
/// (its weight tiles for a step block no longer stay in the L2). Each
/// output is the same chain whatever chunk holds it.
fn chunk_cols(n: usize) -> usize {
    (n / 16).clamp(64, 128) / 64 * 64
}

/// The `u32`s of [`activation_tiles`]' layout for `m` rows of `k` inputs.
pub fn tiles_len<const P: usize>(m: usize, k: usize) -> usize {
    m.div_ceil(TILE) * (k / TILE_K) * P * TILE * TILE
}

/// `x` as three bf16 (bits) whose sum is `x` exactly, for every finite `x`
/// of magnitude from 2^-102 (below it the parts reach f32's denormals,
/// which the tiles flush anyway; a non-finite `x` is its bf16 and two
/// zeros).
///
/// `hi` keeps the top 8 bits of the significand (truncated, so it cannot
/// round past the largest finite bf16); the rest, `x - hi`, is exact in f32
/// and has at most 16 significant bits (it is a multiple of `x`'s f32 ulp
/// below `hi`'s bf16 ulp); `mid` keeps its top 8 the same way, leaving at
/// most 8 bits, which `lo` holds exactly. Parts below f32's normal range
/// are the tiles' flushed denormals (the error budget's absolute term).
pub fn split(x: f32) -> [u16; 3] {
    if !x.is_finite() {
        return [bf16::from_f32(x).to_bits(), 0, 0];
    }
    let top = |v: f32| f32::from_bits(v.to_bits() & 0xFFFF_0000);
    let hi = top(x);
    let rest = x - hi;
    let mid = top(rest);
    let lo = rest - mid;
    [
        (hi.to_bits() >> 16) as u16,
        (mid.to_bits() >> 16) as u16,
        (lo.to_bits() >> 16) as u16,
    ]
}

/// The activations as B tiles, `P` parts each, into `xt`
/// ([`tiles_len`]): `P` = 1 rounds each to bf16 (nearest even, as
/// `bf16::from_f32`), `P` = 3 is [`split`]. Tile `(g, s, p)` (16 rows
/// from `16 g`, inputs from `32 s`, part `p`) is 256 pairs at `((g *
/// steps + s) * P + p) * 256`, row `q` holding, for each row `j`, inputs
/// `2q` (low half) and `2q + 1`; rows past `m` are zero. The plain twin of
/// [`activation_tiles_avx512`], which the kernels use.
pub fn activation_tiles<const P: usize>(x: &[f32], m: usize, k: usize, xt: &mut [u32]) {
    let steps = k / TILE_K;
    assert_eq!(xt.len(), tiles_len::<P>(m, k));
    for (t, tile) in xt.chunks_exact_mut(TILE * TILE).enumerate() {
        let (g, s, p) = (t / P / steps, t / P % steps, t % P);
        for (e, pair) in tile.iter_mut().enumerate() {
            let (q, i) = (e / TILE, g * TILE + e % TILE);
            *pair = if i < m {
                let at = |c: usize| {
                    let v = x[i * k + s * TILE_K + 2 * q + c];
                    if P == 1 {
                        bf16::from_f32(v).to_bits()
                    } else {
                        split(v)[p]
                    }
                };
                at(0) as u32 | (at(1) as u32) << 16
            } else {
                0
            };
        }
    }
}

/// [`activation_tiles`] in AVX-512 registers, the same bits: for each tile
/// row `q`, two gathers take inputs `2q` and `2q + 1` of the group's 16
/// rows (rows past `m` masked to zero), which are rounded or split as
/// whole vectors and paired into the `P` tiles' row `q`.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL; `x` holds `m * k` values, `k` a multiple
/// of 32 below 2^27 (gather offsets are `i32`); `xt.len() ==
/// tiles_len::<P>(m, k)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn activation_tiles_avx512<const P: usize>(
    x: &[f32],
    m: usize,
    k: usize,
    xt: &mut [u32],
) {
    debug_assert!(x.len() >= m * k && xt.len() == tiles_len::<P>(m, k));
    assert!(k < 1 << 27, "bf16 AMX: k {k} past the gathers' offsets");
    let steps = k / TILE_K;
    let rows = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(k as i32),
    );
    let top = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let exp = _mm512_set1_epi32(0x7F80_0000);
    let quiet = _mm512_set1_epi32(0x0040_0000);
    let zero = _mm512_setzero_si512();
    // `v`'s bits as P parts' bits (each in the upper half of a lane).
    let parts = |v: __m512i| -> [__m512i; P] {
        let nonfinite = _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, exp), exp);
        let nan = _mm512_mask_cmpneq_epi32_mask(
            nonfinite,
            _mm512_and_si512(v, _mm512_set1_epi32(0x007F_FFFF)),
            zero,
        );
        // A NaN keeps its upper half, made quiet (as `bf16::from_f32`).
        let v = _mm512_mask_or_epi32(v, nan, v, quiet);
        let mut out = [zero; P];
        if P == 1 {
            // Nearest even: add 0x7FFF and the kept half's lowest bit.
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(1));
            let r = _mm512_add_epi32(_mm512_add_epi32(v, _mm512_set1_epi32(0x7FFF)), odd);
            out[0] = _mm512_and_si512(_mm512_mask_mov_epi32(r, nan, v), top);
        } else {
            let hi = _mm512_and_si512(v, top);
            let rest = _mm512_sub_ps(_mm512_castsi512_ps(v), _mm512_castsi512_ps(hi));
            let rest = _mm512_castps_si512(rest);
            let mid = _mm512_and_si512(rest, top);
            let lo = _mm512_sub_ps(_mm512_castsi512_ps(rest), _mm512_castsi512_ps(mid));
            out[0] = hi;
            out[1] = _mm512_maskz_mov_epi32(!nonfinite, mid);
            // A denormal `lo` has bits below the upper half: dropped, as
            // the scalar `split` drops them.
            let lo = _mm512_and_si512(_mm512_castps_si512(lo), top);
            out[2] = _mm512_maskz_mov_epi32(!nonfinite, lo);
        }
        out
    };
    for g in 0..m.div_ceil(TILE) {
        let live: __mmask16 = if m - g * TILE >= TILE {
            0xFFFF
        } else {
            (1u16 << (m - g * TILE)) - 1
        };
        for s in 0..steps {
            let tiles = xt[(g * steps + s) * P * TILE * TILE..].as_mut_ptr();
            for q in 0..TILE {
                // SAFETY: lanes j < m - 16 g read x[(16 g + j) k + 32 s +
                // 2 q + c] < m k (contract); the others are masked off. The
                // stores write row q of the P tiles at `tiles`, inside `xt`.
                unsafe {
                    let at = x.as_ptr().add(g * TILE * k + s * TILE_K + 2 * q) as *const i32;
                    let a = _mm512_mask_i32gather_epi32::<4>(zero, live, rows, at);
                    let b = _mm512_mask_i32gather_epi32::<4>(zero, live, rows, at.add(1));
                    let (pa, pb) = (parts(a), parts(b));
                    for p in 0..P {
                        let pair = _mm512_or_si512(_mm512_srli_epi32::<16>(pa[p]), pb[p]);
                        let row = tiles.add(p * TILE * TILE + q * TILE) as *mut __m512i;
                        _mm512_storeu_si512(row, pair);
                    }
                }
            }
        }
    }
}

/// Steps of 32 inputs every block of a pass takes before any takes the
/// next, by the activations' parts: a block's activation tiles for a pass
/// (128 rows: 768 KB split, 512 KB rounded) stay in the L2 while every
/// weight tile pair of the chunk runs against them, each pair's weight
/// tiles in the L1 while every group pair runs against those. Measured on
/// the T5-XXL encoder (kernels/BENCH.md): the split 32 steps, rounded 64.
const fn step_block(parts: usize) -> usize {
    if parts == 1 {
        64
    } else {
        32
    }
}

/// Activation tile groups (16 rows each) a pass over the chunk keeps sums
/// for: 256 rows of a 128-output chunk are 128 KB of f32 sums (8 groups
/// measured level with 16 at 512 tokens, 32 slower).
const PASS_GROUPS: usize = 16;

thread_local! {
    /// A pass's sum tiles between step blocks ([`chunk`]); kept, as large
    /// as the largest pass the thread ran.
    static SUMS: Cell<AlignedBuf<f32>> = const { Cell::new(AlignedBuf::new()) };
}

/// The tile loop over one column chunk: every row of `y` for the chunk's
/// weight rows `w` (`[c, k]`, `c` a multiple of 16) into `out`.
///
/// Passes of [`PASS_GROUPS`] activation groups; in each, blocks of
/// [`step_block`] steps, in which every weight tile pair runs against
/// every group pair, each block's four sum tiles loaded where the last
/// block stored them: every output is one chain over the steps in order,
/// so its bits are those of the whole row.
///
/// # Safety
/// The CPU runs the amx level and AMX-BF16 ([`available`]); `xt` is
/// [`activation_tiles::<P>`] of `m` rows of `k` inputs; `fits(k, c)`;
/// `out` is `[m, c]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn chunk<const P: usize>(
    xt: &[u32],
    m: usize,
    k: usize,
    w: &[bf16],
    out: &mut ColBlock<'_>,
) {
    let (tiles, groups, steps) = (w.len() / k / TILE, m.div_ceil(TILE), k / TILE_K);
    debug_assert!(xt.len() >= groups * steps * P * TILE * TILE);
    // Taken out of the cell, not borrowed in a closure (see f32::passes).
    let mut sums = SUMS.take();
    let need = tiles * PASS_GROUPS.min(groups) * TILE * TILE;
    if sums.len() < need {
        sums.resize_zeroed(need);
    }
    let base = sums.as_mut_ptr();
    // SAFETY: the CPU runs AMX (contract); released below.
    unsafe { crate::tiles::configure() };
    for g0 in (0..groups).step_by(PASS_GROUPS) {
        let g1 = (g0 + PASS_GROUPS).min(groups);
        // Tile (t, g)'s sums: 16 outputs x 16 rows, at a 1 KiB slot.
        // SAFETY (of every use): t < tiles, g0 <= g < g1, inside `need`.
        let slot = |t: usize, g: usize| unsafe { base.add(((g - g0) * tiles + t) * TILE * TILE) };
        for s0 in (0..steps).step_by(step_block(P)) {
            let s1 = (s0 + step_block(P)).min(steps);
            for ta in (0..tiles).step_by(2) {
                // A lone last tile (or group) pairs with itself: its two
                // sums are the same instructions on the same tiles, loaded
                // from and stored to the same slot.
                let tb = if ta + 1 < tiles { ta + 1 } else { ta };
                for ga in (g0..g1).step_by(2) {
                    let gb = if ga + 1 < g1 { ga + 1 } else { ga };
                    let at = [slot(ta, ga), slot(ta, gb), slot(tb, ga), slot(tb, gb)];
                    // SAFETY: tiles configured; the slots are 1 KiB each in
                    // `sums`; ta <= tb < tiles, ga <= gb < groups, s1 <=
                    // steps (contract).
                    unsafe {
                        if s0 == 0 {
                            crate::tiles::zero_sums();
                        } else {
                            crate::tiles::load_sums_at(at.map(|p| p as *const f32));
                        }
                        products::<P>(xt, k, w, [ta, tb], [ga, gb], steps, s0..s1);
                        crate::tiles::store_sums_at(at);
                    }
                }
            }
        }
        for g in g0..g1 {
            for t in 0..tiles {
                // SAFETY: the slot is 256 f32 in `sums`, written above.
                let s = unsafe { std::slice::from_raw_parts(slot(t, g), TILE * TILE) };
                for j in 0..TILE.min(m - g * TILE) {
                    let row = &mut out.row(g * TILE + j)[t * TILE..(t + 1) * TILE];
                    for (o, sums) in row.iter_mut().zip(s.chunks_exact(TILE)) {
                        *o = sums[j];
                    }
                }
            }
        }
    }
    // SAFETY: releases the tile state this function configured.
    unsafe { crate::tiles::release() };
    SUMS.set(sums);
}

/// Weight tiles `t` against activation tiles `g` over steps `ss` (each
/// step's `P` parts in turn against the same weight tiles), into
/// `tmm0..3`: `tmm0` `(t[0], g[0])`, `tmm1` `(t[0], g[1])`, `tmm2`
/// `(t[1], g[0])`, `tmm3` `(t[1], g[1])`.
///
/// # Safety
/// As [`chunk`], with the tiles configured; `t[i] < w.len() / k / 16`,
/// `g[i] < xt`'s groups, `steps == k / 32`, `ss.end <= steps`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn products<const P: usize>(
    xt: &[u32],
    k: usize,
    w: &[bf16],
    t: [usize; 2],
    g: [usize; 2],
    steps: usize,
    ss: std::ops::Range<usize>,
) {
    let (wp, xp) = (w.as_ptr(), xt.as_ptr());
    let tile = |g: usize, s: usize, p: usize| ((g * steps + s) * P + p) * TILE * TILE;
    // SAFETY: every tile load reads 16 rows of 64 bytes: weights from row
    // 16 t of w, inputs 32 s.., with the row stride 2 k bytes (rows 16 t +
    // 16 <= w.len() / k, inputs 32 s + 32 <= k); activation tile (g, s, p)
    // of xt, 1 KiB, stride 64. The tile registers keep their values from
    // one asm block to the next (nothing else here uses them).
    unsafe {
        for s in ss {
            asm!(
                "tileloadd tmm4, [{a0} + {ws}*1]",
                "tileloadd tmm5, [{a1} + {ws}*1]",
                a0 = in(reg) wp.add(t[0] * TILE * k + s * TILE_K),
                a1 = in(reg) wp.add(t[1] * TILE * k + s * TILE_K),
                ws = in(reg) 2 * k,
                options(nostack, readonly)
            );
            for p in 0..P {
                asm!(
                    "tileloadd tmm6, [{b0} + {xs}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {xs}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    b0 = in(reg) xp.add(tile(g[0], s, p)),
                    b1 = in(reg) xp.add(tile(g[1], s, p)),
                    xs = in(reg) 4 * TILE,
                    options(nostack, readonly)
                );
            }
        }
    }
}
