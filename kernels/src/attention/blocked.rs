//! The blocked attention algorithm every level runs: blocks of [`BLOCK_Q`]
//! queries against tiles of [`KEY_BLOCK`] keys with an online softmax, made of
//! the per-ISA vector kernels of [`VecOps`] (`scalar.rs`, `avx2.rs`,
//! `avx512.rs`, `neon.rs`).

use super::Attention;

/// Query rows per block: every K row loaded for the score tile and every V row
/// loaded for the P·V step serves this many queries, not one.
pub(super) const BLOCK_Q: usize = 8;

/// Keys per tile: one max and at most one rescale of each accumulator row per
/// tile instead of per key, and a score tile (`BLOCK_Q x KEY_BLOCK`, 2 KiB) that
/// stays in L1. Must be a multiple of every kernel's key group (16).
pub(super) const KEY_BLOCK: usize = 64;

/// Scores, then (in place) softmax weights, of one query block against one key
/// tile: `tile[r][c]` for query `i0 + r` and key `j0 + c`.
pub(super) type Tile = [[f32; KEY_BLOCK]; BLOCK_Q];

/// Rows of one head inside a row-major `[rows, heads * d_kv]` matrix: row `r`
/// is `data[r * stride..r * stride + d]`.
#[derive(Clone, Copy)]
pub(super) struct Rows<'a> {
    pub(super) data: &'a [f32],
    pub(super) stride: usize,
}

impl Rows<'_> {
    /// Pointer to row `r`.
    ///
    /// # Safety
    /// Row `r` must lie inside `data` (`r * stride + d <= data.len()`).
    #[inline(always)]
    pub(super) unsafe fn row(&self, r: usize) -> *const f32 {
        // SAFETY: forwarded contract.
        unsafe { self.data.as_ptr().add(r * self.stride) }
    }
}

/// The vector kernels the blocked algorithm is made of; each ISA supplies them
/// (`scalar::ScalarOps` is the plain-Rust set the scalar level runs).
pub(super) trait VecOps {
    /// `tile[r][c] = q_r · k_c` for `r < nq`, `c < nk`. A kernel may also write
    /// (finite) values to rows and columns up to its register block beyond those;
    /// nothing reads them.
    ///
    /// # Safety
    /// The CPU must support the implementing ISA; rows `[0, nq)` of `q` and
    /// `[0, nk)` of `k` (each `d` long) lie inside their slices; `1 <= nq <=
    /// BLOCK_Q`, `1 <= nk <= KEY_BLOCK`.
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile);

    /// `out_r += sum_c p[r][c] v_c` for `r < nq` over keys `c < nk`.
    ///
    /// # Safety
    /// As `scores`, with `v` for `k`; rows `[0, nq)` of `out` (stride `os`, each
    /// `d` long) lie inside `out`.
    unsafe fn pv(p: &Tile, v: Rows<'_>, d: usize, nq: usize, nk: usize, out: &mut [f32], os: usize);

    /// The largest score of a row (`-inf` if all are masked).
    ///
    /// # Safety
    /// The CPU must support the implementing ISA.
    unsafe fn row_max(s: &[f32]) -> f32;

    /// In place `s[c] = exp(s[c] - m)`, exactly 0 for masked (`-inf`) scores,
    /// and returns the row's sum.
    ///
    /// # Safety
    /// The CPU must support the implementing ISA.
    unsafe fn exp_row(s: &mut [f32], m: f32) -> f32;
}

/// Head `h` of queries `i0..i0 + nq` (`nq <= BLOCK_Q`) with a key-tiled online
/// softmax; query `i0 + r`'s output is `out[r * inner..r * inner + d]`.
///
/// Per tile of keys: score the whole query block against it (each K row load
/// serves every query), add bias and masks, take each query's tile max,
/// rescale its running sum and accumulator at most once, turn the scores into
/// weights in place, and add the weighted values (each V row load serves every
/// query). Only keys some query of the block may see are visited.
#[inline(always)]
pub(super) fn block<O: VecOps>(a: &Attention<'_>, h: usize, i0: usize, nq: usize, out: &mut [f32]) {
    let d = a.d_kv;
    let inner = a.heads * d;
    let os = inner;
    assert!((1..=BLOCK_Q).contains(&nq) && i0 + nq <= a.tq && (nq - 1) * os + d <= out.len());
    // Keys query i may see: [0, last(i)), non-decreasing in i.
    let last = |i: usize| match a.causal {
        Some(off) => (i + off + 1).min(a.tk),
        None => a.tk,
    };
    let kend = last(i0 + nq - 1);
    let q = Rows {
        data: &a.q[i0 * inner + h * d..],
        stride: inner,
    };
    let mut m = [f32::NEG_INFINITY; BLOCK_Q];
    let mut l = [0.0f32; BLOCK_Q];
    for r in 0..nq {
        out[r * os..r * os + d].fill(0.0);
    }
    let mut tile: Tile = [[0.0; KEY_BLOCK]; BLOCK_Q];
    let mut j0 = 0;
    while j0 < kend {
        let nk = (kend - j0).min(KEY_BLOCK);
        let k = Rows {
            data: &a.k[j0 * inner + h * d..],
            stride: inner,
        };
        // SAFETY: O's ISA was checked by run_with; rows [0, nq) of q and
        // [0, nk) of k end inside their slices (check() verified the shapes,
        // i0 + nq <= tq and j0 + nk <= tk).
        unsafe { O::scores(q, k, d, nq, nk, &mut tile) };
        for r in 0..nq {
            let i = i0 + r;
            let s = &mut tile[r][..nk];
            if let Some(b) = &a.bias {
                // check() made sure every (i, j) of the call is inside the span.
                let at = (h * b.span) as isize + j0 as isize - i as isize + b.offset;
                let bias = &b.values[at as usize..at as usize + nk];
                s.iter_mut().zip(bias).for_each(|(s, &b)| *s += b);
            }
            if let Some(mask) = a.key_mask {
                for (s, &visible) in s.iter_mut().zip(&mask[j0..j0 + nk]) {
                    if !visible {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
            s[last(i).saturating_sub(j0).min(nk)..].fill(f32::NEG_INFINITY);
            // SAFETY: O's ISA was checked by run_with.
            let bm = unsafe { O::row_max(s) };
            if bm > m[r] {
                // exp(-inf) = 0 clears the (empty) state on the first visible tile.
                let c = (m[r] - bm).exp();
                l[r] *= c;
                out[r * os..r * os + d].iter_mut().for_each(|o| *o *= c);
                m[r] = bm;
            }
            // SAFETY: as above. With m = -inf every score is -inf and weighs 0.
            l[r] += unsafe { O::exp_row(s, m[r]) };
        }
        let v = Rows {
            data: &a.v[j0 * inner + h * d..],
            stride: inner,
        };
        // SAFETY: as for scores; rows [0, nq) of out (stride os) are in `out`.
        unsafe { O::pv(&tile, v, d, nq, nk, out, os) };
        j0 += nk;
    }
    for r in 0..nq {
        let inv = if l[r] > 0.0 { 1.0 / l[r] } else { 0.0 };
        out[r * os..r * os + d].iter_mut().for_each(|o| *o *= inv);
    }
}
