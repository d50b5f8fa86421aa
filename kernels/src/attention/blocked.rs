//! The blocked attention algorithm every level runs: blocks of [`BLOCK_Q`]
//! queries against tiles of [`KEY_BLOCK`] keys with an online softmax, made of
//! the per-ISA vector kernels of [`VecOps`] (`scalar.rs`, `avx2.rs`,
//! `avx512.rs`, `neon.rs`).

use super::Attention;
use crate::aligned::AlignedBuf;
use crate::par::ColBlock;

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
    /// Row `r` must start inside `data` (`r * stride < data.len()`); the
    /// caller reads only what lies inside it.
    #[inline(always)]
    pub(super) unsafe fn row(&self, r: usize) -> *const f32 {
        // SAFETY: forwarded contract.
        unsafe { self.data.as_ptr().add(r * self.stride) }
    }
}

/// One head's keys and values as the kernels read them: the keys of the tile
/// from key `j0` are `Rows { data: &k[j0 * k_step..], stride: k_stride }`, one
/// row per key (`k_step == k_stride`) or, for kernels with
/// [`VecOps::KEYS_BY_DIM`], one row per dimension (`k_step == 1`); the values
/// one row per key, `v_stride` apart.
#[derive(Clone, Copy)]
pub(super) struct HeadKv<'a> {
    k: &'a [f32],
    k_stride: usize,
    k_step: usize,
    v: &'a [f32],
    v_stride: usize,
}

impl<'a> HeadKv<'a> {
    /// Head `h` of the call's own `k` and `v` (rows `heads * d_kv` apart).
    pub(super) fn strided(a: &Attention<'a>, h: usize) -> Self {
        let (d, inner) = (a.d_kv, a.heads * a.d_kv);
        HeadKv {
            k: &a.k[h * d..],
            k_stride: inner,
            k_step: inner,
            v: &a.v[h * d..],
            v_stride: inner,
        }
    }

    fn keys(&self, j0: usize) -> Rows<'a> {
        Rows {
            data: &self.k[j0 * self.k_step..],
            stride: self.k_stride,
        }
    }

    fn values(&self, j0: usize) -> Rows<'a> {
        Rows {
            data: &self.v[j0 * self.v_stride..],
            stride: self.v_stride,
        }
    }
}

/// An x86 level's entry points, [`block`] and [`head_rows`] compiled with
/// its target features so its kernels inline: `entry_points!("avx2,fma",
/// "AVX2 and FMA", DecodeOps, PrefillOps)` defines `block` (the decode and
/// short-prefill path) on the first set of kernels and `head_rows` (the
/// packed prefill) on the second.
#[cfg(target_arch = "x86_64")]
macro_rules! entry_points {
    ($features:literal, $needs:literal, $ops:ty, $prefill:ty) => {
        /// [`blocked::block`] with this level's kernels inlined.
        ///
        /// # Safety
        #[doc = concat!("The CPU must have ", $needs, ".")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn block(
            a: &Attention<'_>,
            h: usize,
            i0: usize,
            nq: usize,
            kv: HeadKv<'_>,
            out: &mut [f32],
            os: usize,
        ) {
            blocked::block::<$ops>(a, h, i0, nq, kv, out, os)
        }

        /// [`blocked::head_rows`] with this level's prefill kernels inlined.
        ///
        /// # Safety
        #[doc = concat!("The CPU must have ", $needs, ".")]
        #[target_feature(enable = $features)]
        pub(super) unsafe fn head_rows(
            a: &Attention<'_>,
            h: usize,
            i0: usize,
            scratch: &mut $crate::aligned::AlignedBuf<f32>,
            out: &mut ColBlock<'_>,
        ) {
            blocked::head_rows::<$prefill>(a, h, i0, scratch, out)
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(super) use entry_points;

/// The vector kernels the blocked algorithm is made of; each ISA supplies them
/// (`scalar::ScalarOps` is the plain-Rust set the scalar level runs).
pub(super) trait VecOps {
    /// `scores` reads the keys one row per dimension (`k.row(t)[c]` is
    /// dimension `t` of key `c`), so a vector of consecutive keys is one load
    /// and a score block is outer products, with no reduction across lanes.
    /// Only packed keys ([`head_rows`]) come this way.
    const KEYS_BY_DIM: bool = false;

    /// `tile[r][c] = q_r · k_c` for `r < nq`, `c < nk`. A kernel may also write
    /// (finite) values to rows and columns up to its register block beyond those;
    /// nothing reads them.
    ///
    /// # Safety
    /// The CPU must support the implementing ISA; rows `[0, nq)` of `q` (each
    /// `d` long) lie inside `q`, and rows `[0, nk)` of `k` (each `d` long)
    /// inside `k`, or with `KEYS_BY_DIM` rows `[0, d)` (each `nk` long); `1 <=
    /// nq <= BLOCK_Q`, `1 <= nk <= KEY_BLOCK`.
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile);

    /// `out_r += sum_c p[r][c] v_c` for `r < nq` over keys `c < nk`.
    ///
    /// # Safety
    /// As `scores`, with `v` for `k`; rows `[0, nq)` of `out` (stride `os`, each
    /// `d` long) lie inside `out`.
    unsafe fn pv(p: &Tile, v: Rows<'_>, d: usize, nq: usize, nk: usize, out: &mut [f32], os: usize);

    /// `dst[t * ds + j] = k.row(j)[t]` for `j < kend`, `t < d`: the keys by
    /// dimension, one row of `ds >= kend` floats per dimension, for
    /// `KEYS_BY_DIM` kernels.
    ///
    /// # Safety
    /// The CPU must support the implementing ISA; rows `[0, kend)` of `k`
    /// (each `d` long) lie inside it; `ds >= kend` and `dst.len() >= d * ds`.
    #[inline(always)]
    unsafe fn pack_keys_by_dim(k: Rows<'_>, kend: usize, d: usize, dst: &mut [f32], ds: usize) {
        for j in 0..kend {
            let src = &k.data[j * k.stride..][..d];
            for (t, &x) in src.iter().enumerate() {
                dst[t * ds + j] = x;
            }
        }
    }

    /// `s[c] += b[c]`: a row's relative-position bias.
    ///
    /// # Safety
    /// The CPU must support the implementing ISA; `s.len() == b.len()`.
    #[inline(always)]
    unsafe fn add_bias(s: &mut [f32], b: &[f32]) {
        s.iter_mut().zip(b).for_each(|(s, &b)| *s += b);
    }

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

    /// The online softmax's step over one key tile for the block's queries
    /// `r < m.len()`: scores `tile[r][..nk]` (bias and masks added) become
    /// weights `exp(s - m_new)`, with `m_new = max(m[r], the row's max)`;
    /// `m[r]` and `l[r]` move to the new max (`l[r] = l[r] * c[r] + the
    /// row's weights`), and `c[r]` is what the row's outputs so far must be
    /// multiplied by (exactly 1.0 where the max did not rise).
    ///
    /// Row by row by default ([`softmax_by_row`]); a level may do the
    /// block's rows together.
    ///
    /// # Safety
    /// The CPU must support the implementing ISA; `m.len() == l.len() <=
    /// BLOCK_Q`, `nk <= KEY_BLOCK`; `c[r] == 1.0` on entry.
    #[inline(always)]
    unsafe fn softmax_rows(
        tile: &mut Tile,
        nk: usize,
        m: &mut [f32],
        l: &mut [f32],
        c: &mut [f32; BLOCK_Q],
    ) {
        // SAFETY: forwarded contract.
        unsafe { softmax_by_row::<Self>(tile, nk, m, l, c) }
    }
}

/// [`VecOps::softmax_rows`] one row at a time: the row's max
/// ([`VecOps::row_max`]), the rescale only where it rose, and the row's
/// weights and sum ([`VecOps::exp_row`]).
///
/// # Safety
/// As [`VecOps::softmax_rows`].
#[inline(always)]
pub(super) unsafe fn softmax_by_row<O: VecOps + ?Sized>(
    tile: &mut Tile,
    nk: usize,
    m: &mut [f32],
    l: &mut [f32],
    c: &mut [f32; BLOCK_Q],
) {
    let rows = tile.iter_mut().zip(m.iter_mut().zip(l.iter_mut()).zip(c));
    for (row, ((m, l), c)) in rows {
        let s = &mut row[..nk];
        // SAFETY: forwarded contract.
        let bm = unsafe { O::row_max(s) };
        if bm > *m {
            // exp(-inf) = 0 clears the (empty) state on the first visible
            // tile.
            *c = (*m - bm).exp();
            *l *= *c;
            *m = bm;
        }
        // SAFETY: as above. With m = -inf every score is -inf and weighs 0.
        *l += unsafe { O::exp_row(s, *m) };
    }
}

/// Head `h` of queries `i0..i0 + nq` (`nq <= BLOCK_Q`) with a key-tiled online
/// softmax over the keys and values of `kv`; query `i0 + r`'s output is
/// `out[r * os..r * os + d]`.
///
/// Per tile of keys: score the whole query block against it (each K row load
/// serves every query), add bias and masks, take each query's tile max,
/// rescale its running sum and accumulator at most once, turn the scores into
/// weights in place, and add the weighted values (each V row load serves every
/// query). Only keys some query of the block may see are visited.
#[inline(always)]
pub(super) fn block<O: VecOps>(
    a: &Attention<'_>,
    h: usize,
    i0: usize,
    nq: usize,
    kv: HeadKv<'_>,
    out: &mut [f32],
    os: usize,
) {
    let d = a.d_kv;
    assert!((1..=BLOCK_Q).contains(&nq) && i0 + nq <= a.tq && (nq - 1) * os + d <= out.len());
    let mut m = [f32::NEG_INFINITY; BLOCK_Q];
    let mut l = [0.0f32; BLOCK_Q];
    for r in 0..nq {
        out[r * os..r * os + d].fill(0.0);
    }
    let mut tile: Tile = [[0.0; KEY_BLOCK]; BLOCK_Q];
    let kend = last_key(a, i0 + nq - 1);
    for j0 in (0..kend).step_by(KEY_BLOCK) {
        let st = State {
            m: &mut m[..nq],
            l: &mut l[..nq],
            out: &mut *out,
            os,
        };
        key_tile::<O>(a, h, i0, kv, j0, st, &mut tile);
    }
    finish(d, &l[..nq], out, os);
}

/// Keys query `i` may see: `[0, last_key(i))`, non-decreasing in `i`.
#[inline(always)]
fn last_key(a: &Attention<'_>, i: usize) -> usize {
    match a.causal {
        Some(off) => (i + off + 1).min(a.tk),
        None => a.tk,
    }
}

/// The online softmax's state of a block of queries: running max `m` and
/// sum `l` per query, and the unnormalised outputs, `out[r * os..][..d]`.
struct State<'s> {
    m: &'s mut [f32],
    l: &'s mut [f32],
    out: &'s mut [f32],
    os: usize,
}

/// One key tile from `j0` (up to the keys the block's last query sees) for
/// the queries `i0..i0 + st.m.len()`: score the block against it, add bias
/// and masks, take each query's tile max, rescale its running sum and
/// outputs at most once, turn the scores into weights in place and add the
/// weighted values.
#[inline(always)]
fn key_tile<O: VecOps>(
    a: &Attention<'_>,
    h: usize,
    i0: usize,
    kv: HeadKv<'_>,
    j0: usize,
    st: State<'_>,
    tile: &mut Tile,
) {
    let (d, inner, nq) = (a.d_kv, a.heads * a.d_kv, st.m.len());
    let (os, out) = (st.os, st.out);
    let nk = (last_key(a, i0 + nq - 1) - j0).min(KEY_BLOCK);
    let q = Rows {
        data: &a.q[i0 * inner + h * d..],
        stride: inner,
    };
    // SAFETY: O's ISA was checked by run_with; rows [0, nq) of q and the
    // tile's keys end inside their slices (check() verified the shapes,
    // i0 + nq <= tq and j0 + nk <= the block's last key; head_rows packs
    // the keys of its last query).
    unsafe { O::scores(q, kv.keys(j0), d, nq, nk, tile) };
    for (r, row) in tile.iter_mut().enumerate().take(nq) {
        let i = i0 + r;
        let s = &mut row[..nk];
        if let Some(b) = &a.bias {
            // check() made sure every (i, j) of the call is inside the span.
            let at = (h * b.span) as isize + j0 as isize - i as isize + b.offset;
            let bias = &b.values[at as usize..at as usize + nk];
            // SAFETY: O's ISA was checked by run_with; equal lengths.
            unsafe { O::add_bias(s, bias) };
        }
        if let Some(mask) = a.key_mask {
            for (s, &visible) in s.iter_mut().zip(&mask[j0..j0 + nk]) {
                if !visible {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        s[last_key(a, i).saturating_sub(j0).min(nk)..].fill(f32::NEG_INFINITY);
    }
    let mut c = [1.0f32; BLOCK_Q];
    // SAFETY: O's ISA was checked by run_with; nq <= BLOCK_Q, nk <= KEY_BLOCK.
    unsafe { O::softmax_rows(tile, nk, st.m, st.l, &mut c) };
    for (r, &c) in c[..nq].iter().enumerate() {
        if c != 1.0 {
            out[r * os..r * os + d].iter_mut().for_each(|o| *o *= c);
        }
    }
    // SAFETY: as for scores; rows [0, nq) of out (stride os) are in `out`.
    unsafe { O::pv(tile, kv.values(j0), d, nq, nk, out, os) };
}

/// Divides each query's outputs by its sum (0 for a query that saw no key).
#[inline(always)]
fn finish(d: usize, l: &[f32], out: &mut [f32], os: usize) {
    for (r, &l) in l.iter().enumerate() {
        let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
        out[r * os..r * os + d].iter_mut().for_each(|o| *o *= inv);
    }
}

/// Head `h` of queries `[i0, i0 + out.rows())`, written to `out` (columns
/// `h * d_kv..` of those rows): the prefill task.
///
/// The call's K and V keep the heads side by side, rows `heads * d_kv` floats
/// apart; at the usual power-of-two widths those rows all fall in a few L1
/// sets, so a 64-key tile of one head did not stay in L1 (the V loads were the
/// hottest instructions of W3's attention). The head's keys (transposed for
/// `KEYS_BY_DIM` kernels) and values are first packed into `scratch`,
/// contiguous; then every key tile goes over each block of `BLOCK_Q`
/// queries ([`key_tile`], as [`block`] runs them): the same bits for every
/// split of the rows.
#[inline(always)]
pub(super) fn head_rows<O: VecOps>(
    a: &Attention<'_>,
    h: usize,
    i0: usize,
    scratch: &mut AlignedBuf<f32>,
    out: &mut ColBlock<'_>,
) {
    let (d, inner, rows) = (a.d_kv, a.heads * a.d_kv, out.rows());
    // Keys the last query of the task may see (the others see a prefix).
    let kend = last_key(a, i0 + rows - 1);
    // Keys by dimension are rows `ks` floats apart. Where a row is a
    // multiple of 8 cache lines (128 keys: 512 bytes, 1024: 4 KiB) a tile's
    // 64 rows fall in a few L1 sets and evict each other (1024 tokens:
    // attention 7% slower unpadded, kernels/BENCH.md), so those rows get one
    // line more. Only those: padding every call also shifted the heap of a
    // short prefill's scratch, and W1 then ran 7-10% slower (kernels/BENCH.md).
    let ks = match kend.next_multiple_of(16) {
        r if O::KEYS_BY_DIM && (r / 16).is_multiple_of(8) => r + 16,
        _ => kend,
    };
    let need = ks * d + kend * d + rows * d + 2 * rows;
    if scratch.len() < need {
        scratch.resize_zeroed(need);
    }
    let (k, rest) = scratch.split_at_mut(ks * d);
    let (v, rest) = rest.split_at_mut(kend * d);
    let (o, ml) = rest.split_at_mut(rows * d);
    if O::KEYS_BY_DIM {
        let src = Rows {
            data: &a.k[h * d..],
            stride: inner,
        };
        // SAFETY: O's ISA was checked by run_with; rows [0, kend) of src
        // (check() verified kend <= tk rows of k) and k's ks * d floats.
        unsafe { O::pack_keys_by_dim(src, kend, d, k, ks) };
    }
    for j in 0..kend {
        if !O::KEYS_BY_DIM {
            copy_row(&mut k[j * d..][..d], &a.k[j * inner + h * d..][..d]);
        }
        copy_row(&mut v[j * d..][..d], &a.v[j * inner + h * d..][..d]);
    }
    let kv = HeadKv {
        k,
        k_stride: if O::KEYS_BY_DIM { ks } else { d },
        k_step: if O::KEYS_BY_DIM { 1 } else { d },
        v,
        v_stride: d,
    };
    // Tile by tile over every block of the task, the tile's keys and values
    // (2 x 16 KiB at d_kv = 64) stay in L1 for all its queries; block by
    // block they were re-read from L2 for every 8 queries (attention alone
    // 6% slower at 1024 tokens, kernels/BENCH.md). Each query sees the same
    // operations in the same order either way, so the bits are `block`'s.
    let (m, rest) = ml.split_at_mut(rows);
    let l = &mut rest[..rows];
    m.fill(f32::NEG_INFINITY);
    l.fill(0.0);
    o[..rows * d].fill(0.0);
    let mut tile: Tile = [[0.0; KEY_BLOCK]; BLOCK_Q];
    for j0 in (0..kend).step_by(KEY_BLOCK) {
        for b in (0..rows).step_by(BLOCK_Q) {
            let nq = (rows - b).min(BLOCK_Q);
            if j0 >= last_key(a, i0 + b + nq - 1) {
                continue;
            }
            let st = State {
                m: &mut m[b..b + nq],
                l: &mut l[b..b + nq],
                out: &mut o[b * d..],
                os: d,
            };
            key_tile::<O>(a, h, i0 + b, kv, j0, st, &mut tile);
        }
    }
    finish(d, l, o, d);
    for r in 0..rows {
        copy_row(out.row(r), &o[r * d..][..d]);
    }
}

/// `dst.copy_from_slice(src)` in 64-byte pieces the compiler keeps inline:
/// a `memcpy` call per 256-byte row (with a `vzeroupper` before each) was 6%
/// of a prefill's attention.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; 16] = s.try_into().expect("16 floats");
        let d: &mut [f32; 16] = d.try_into().expect("16 floats");
        *d = *s;
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
}
