//! AMX-BF16 prefill for [`super::linear_dot`] (the opt-in that rounds the
//! activations to bf16, `T5EDGE_BF16_DOT=1`), at the `amx` level on a CPU
//! with AMX-BF16: `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16
//! one (as 16 rows of 16 bf16 pairs) into 16 x 16 f32 sums: by the
//! instructions' documented throughput 512 multiply-adds a cycle a core,
//! against 64 for two `vdpbf16ps`.
//!
//! The weights are the A tiles, straight from the file: 16 weight rows of
//! 32 consecutive inputs, one 64-byte row each with the weight row's stride,
//! so nothing is packed or copied (the shapes must be whole tiles: [`fits`]).
//! The activations, rounded to bf16 once per call as [`super::avx512bf16`]
//! rounds them, are laid out as the B tiles: for each 16 rows and 32 inputs,
//! row `p` holds each activation row's inputs `2p, 2p + 1` side by side.
//! A sum tile holds 16 outputs x 16 activation rows; its transpose goes to
//! `y`.
//!
//! Arithmetic: each product of two bf16 is exact in f32 and added to the
//! output's sum by one chain of FMAs in input order, denormal inputs and
//! results flushed to zero (the instruction ignores MXCSR): within
//! `avx512bf16`'s error budget (kernels/tests/linear_bf16.rs checks both
//! against it).
//!
//! Tiles as in `int8::amx`: eight registers of 16 rows x 64 bytes (one
//! configuration); `tmm0..3` sum a 32-output x 32-row block, `tmm4`/`tmm5`
//! two weight tiles, `tmm6`/`tmm7` two activation tiles: four products per
//! four loads.

use crate::par::{self, ColBlock};
use half::bf16;
use std::arch::asm;

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

/// A block's four stored sum tiles (16 outputs x 16 activation rows each),
/// on a cache line: each 64-byte tile row one line.
#[repr(C, align(64))]
struct Sums([[[f32; TILE]; TILE]; 4]);

/// `y = x · wᵀ` with the activations rounded to bf16: `x` `[m, k]` f32, `w`
/// `[n, k]` bf16, `y` `[m, n]` f32.
///
/// Panics if the CPU cannot run it ([`available`]), the shapes disagree or
/// the tiles do not cover them ([`fits`]).
pub fn linear(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    assert!(available(), "kernels: this CPU has no AMX-BF16 tiles");
    crate::f32::check_shapes(x.len(), m, k, w.len(), n, y.len());
    assert!(fits(k, n), "bf16 AMX: k {k} or n {n} is not whole tiles");
    if m == 0 || n == 0 {
        return;
    }
    let xt = activation_tiles(x, m, k);
    let parallel = par::worth_parallel(m, k, n);
    par::for_col_chunks(y, m, n, crate::f32::GEMV_CHUNK, parallel, |j0, j1, out| {
        // SAFETY: `available` checked the amx level (AMX tiles granted,
        // AVX-512F) and AMX-BF16; `xt` is `activation_tiles`' layout for
        // `m` and `k`; `fits` makes the chunk's `[j1 - j0, k]` weights
        // whole tiles (chunks start at multiples of 64 outputs).
        unsafe { chunk(&xt, m, k, &w[j0 * k..j1 * k], out) }
    });
}

/// The activations rounded to bf16 (nearest even, as `bf16::from_f32`)
/// as B tiles: tile `(g, s)` (16 rows from `16 g`, inputs from `32 s`) is
/// 256 pairs at `(g * steps + s) * 256`, row `p` holding, for each row `j`,
/// inputs `2p` (low half) and `2p + 1`; rows past `m` are zero.
fn activation_tiles(x: &[f32], m: usize, k: usize) -> Vec<u32> {
    let steps = k / TILE_K;
    let mut xt = vec![0u32; m.div_ceil(TILE) * steps * TILE * TILE];
    for (i, row) in x.chunks_exact(k).enumerate().take(m) {
        let (g, j) = (i / TILE, i % TILE);
        for (s, step) in row.chunks_exact(TILE_K).enumerate() {
            let tile = &mut xt[(g * steps + s) * TILE * TILE..][..TILE * TILE];
            for (p, pair) in step.chunks_exact(2).enumerate() {
                let lo = bf16::from_f32(pair[0]).to_bits() as u32;
                let hi = bf16::from_f32(pair[1]).to_bits() as u32;
                tile[p * TILE + j] = lo | hi << 16;
            }
        }
    }
    xt
}

/// The tile loop over one column chunk: every row of `y` for the chunk's
/// weight rows `w` (`[c, k]`, `c` a multiple of 16) into `out`.
///
/// # Safety
/// The CPU runs the amx level and AMX-BF16 ([`available`]); `xt` is
/// [`activation_tiles`] of `m` rows of `k` inputs; `fits(k, c)`; `out` is
/// `[m, c]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn chunk(xt: &[u32], m: usize, k: usize, w: &[bf16], out: &mut ColBlock<'_>) {
    let (tiles, groups, steps) = (w.len() / k / TILE, m.div_ceil(TILE), k / TILE_K);
    debug_assert!(xt.len() >= groups * steps * TILE * TILE);
    let mut c = Sums([[[0.0; TILE]; TILE]; 4]);
    // SAFETY: the CPU runs AMX (contract); released below.
    unsafe { crate::tiles::configure() };
    for ta in (0..tiles).step_by(2) {
        // A lone last tile (or group) pairs with itself; the copy's sums
        // are not written.
        let tb = if ta + 1 < tiles { ta + 1 } else { ta };
        for ga in (0..groups).step_by(2) {
            let gb = if ga + 1 < groups { ga + 1 } else { ga };
            // SAFETY: ta <= tb < tiles and ga <= gb < groups (contract).
            unsafe { products(xt, k, w, [ta, tb], [ga, gb], steps, &mut c) };
            for (q, (t, g)) in [(ta, ga), (ta, gb), (tb, ga), (tb, gb)]
                .into_iter()
                .enumerate()
            {
                if (q & 2 != 0 && tb == ta) || (q & 1 != 0 && gb == ga) {
                    continue;
                }
                let s = &c.0[q];
                for j in 0..TILE.min(m - g * TILE) {
                    let row = &mut out.row(g * TILE + j)[t * TILE..(t + 1) * TILE];
                    for (o, sums) in row.iter_mut().zip(s) {
                        *o = sums[j];
                    }
                }
            }
        }
    }
    // SAFETY: releases the tile state this function configured.
    unsafe { crate::tiles::release() };
}

/// Weight tiles `t` against activation tiles `g` over every step, into
/// `c`: `c[0]` (t[0], g[0]), `c[1]` (t[0], g[1]), `c[2]` (t[1], g[0]),
/// `c[3]` (t[1], g[1]).
///
/// # Safety
/// As [`chunk`], with the tiles configured; `t[i] < w.len() / k / 16`,
/// `g[i] < xt`'s groups, `steps == k / 32`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn products(
    xt: &[u32],
    k: usize,
    w: &[bf16],
    t: [usize; 2],
    g: [usize; 2],
    steps: usize,
    c: &mut Sums,
) {
    let (wp, xp) = (w.as_ptr(), xt.as_ptr());
    // SAFETY: every tile load reads 16 rows of 64 bytes: weights from row
    // 16 t of w, inputs 32 s.., with the row stride 2 k bytes (rows 16 t +
    // 16 <= w.len() / k, inputs 32 s + 32 <= k); activation tile (g, s) of
    // xt, 1 KiB, stride 64. The stores write the four 1 KiB tiles of `c`.
    unsafe {
        crate::tiles::zero_sums();
        for s in 0..steps {
            asm!(
                "tileloadd tmm4, [{a0} + {ws}*1]",
                "tileloadd tmm6, [{b0} + {xs}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {xs}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {ws}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) wp.add(t[0] * TILE * k + s * TILE_K),
                a1 = in(reg) wp.add(t[1] * TILE * k + s * TILE_K),
                b0 = in(reg) xp.add((g[0] * steps + s) * TILE * TILE),
                b1 = in(reg) xp.add((g[1] * steps + s) * TILE * TILE),
                ws = in(reg) 2 * k,
                xs = in(reg) 4 * TILE,
                options(nostack, readonly)
            );
        }
        crate::tiles::store_sums(&mut c.0);
    }
}
