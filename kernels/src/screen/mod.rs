//! A 4-bit screen of an int8 weight matrix, and the argmax it speeds up: the
//! greedy pick of an int8 LM head, **exactly** the argmax the full int8 head
//! gives, from half the weight bytes plus a handful of int8 rows.
//!
//! # The screen
//! Every int8 weight `p` (in `[-127, 127]`) is split as `p = 17·h + l` with
//! `h = round(p / 17)` in `[-7, 7]` and `l` in `[-8, 8]`. The screen stores
//! `u = h + 8` (in `[1, 15]`; 8 for padding) as a nibble, and per row and
//! scale group the norm `‖l‖₂` (rounded up). With the activation quantised
//! exactly as the int8 kernel quantises it (`q`, scale `s_x`), the kernel's
//! exact i32 dot product of a group is `acc = 17·Σh·q + Σl·q`, and
//! `|Σl·q| <= ‖l‖₂‖q‖₂` (Cauchy-Schwarz). So one pass over the nibbles gives,
//! for every row, an interval that provably holds the int8 logit the full
//! head would compute, f32 epilogue included (`Intervals::task_body` says how).
//!
//! # The pick
//! [`argmax_with`] screens every row in parallel, takes `λ` = the best lower
//! end, and re-scores exactly (the int8 kernel's own integer dot and f32
//! epilogue, so the same bits) every row whose upper end reaches `λ`; no other
//! row can be the argmax. Ties go to the lowest id, as [`crate::ops::argmax`].
//! When the intervals are too wide to leave few candidates (logits with tiny
//! margins), it answers `None` and the caller runs the full head: the answer
//! is the same either way, only the time differs.
//!
//! # Layout
//! `kp8 = round_up(k, 8)`, `np8 = round_up(n, 8)`. Rows are taken 8 at a time
//! (a *tile*), inputs 8 at a time (a *block*); a block of a tile is 32 bytes,
//! byte `4·r + c` holding row `r`'s input `c` in its low nibble and input
//! `4 + c` in its high nibble. Tiles follow each other, `kp8 / 8` blocks
//! each. So a 32-byte load and two nibble masks give, per row, 4 + 4 inputs
//! that `vpmaddubsw`/`vpdpbusd`/`sdot` sum into that row's lane against the
//! 4 activation bytes broadcast to every lane, with no shuffles. A group size
//! must be 0 or a multiple of 8 (a block never straddles two groups).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod neon;
pub mod scalar;

use crate::aligned::AlignedBuf;
use crate::dispatch::{active, Isa};
use crate::int8::{self, Int8View, K_BLOCK, TILE_N};
use crate::par;

/// Rows per screen tile.
pub const TILE: usize = 8;
/// Inputs per screen block.
pub const BLOCK: usize = 8;
/// Bytes of one block of one tile.
pub const BLOCK_BYTES: usize = TILE * BLOCK / 2;
/// The screen's step: `p = MULT·h + l`.
pub const MULT: i32 = 17;
/// The nibble offset: `u = h + OFFSET`.
pub const OFFSET: i32 = 8;
/// Rows per unit of the screen's work (8 tiles; ~500 for a 32k vocabulary),
/// several of which make one pool task.
const TASK_ROWS: usize = 64;
/// Above this share of the rows as candidates, exact re-scoring one row at a
/// time would cost more than the full head: answer `None` instead.
const MAX_CANDIDATE_SHARE: usize = 512;

/// The 4-bit screen of one int8 matrix (built from it, never stored).
#[derive(Clone, Debug, PartialEq)]
pub struct Int4Screen {
    n: usize,
    k: usize,
    group_size: usize,
    /// On a cache line ([`crate::aligned`]), as is each tile (`4 * kp8`
    /// bytes) when `k` is a multiple of 16.
    data: AlignedBuf<u8>,
    /// `[groups, np8]`: `‖l‖₂` of each row's group, rounded up (0 for
    /// padding rows), group-major so a tile's 8 rows are contiguous.
    l_norms: Vec<f32>,
}

/// `k` rounded up to a whole block.
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(BLOCK) * BLOCK
}

/// `(h, l)` with `p = MULT·h + l`, `|h| <= 7`, `|l| <= 8`.
#[inline]
pub fn split(p: i8) -> (i32, i32) {
    let p = p as i32;
    // Rounds half away from zero; p / 17 is never a half since 17 is odd.
    let h = (2 * p + p.signum() * MULT) / (2 * MULT);
    (h, p - MULT * h)
}

/// `(h + 8, l²)` of every int8 value (as its byte), for building a screen
/// without a division per weight; -128 (never in a valid matrix) maps as
/// `split` does.
const SPLIT: [(u8, u8); 256] = {
    let mut t = [(0u8, 0u8); 256];
    let mut b = 0;
    while b < 256 {
        let p = b as u8 as i8 as i32;
        let sign = if p < 0 {
            -1
        } else if p > 0 {
            1
        } else {
            0
        };
        let h = (2 * p + sign * MULT) / (2 * MULT);
        let l = p - MULT * h;
        t[b] = ((h + OFFSET) as u8, (l * l) as u8);
        b += 1;
    }
    t
};

impl Int4Screen {
    /// The screen of `w`, or why it has none (a group size that is not a
    /// multiple of [`BLOCK`]). Built on the current pool's threads, at the
    /// active level.
    pub fn from_int8(w: &Int8View<'_>) -> Result<Int4Screen, String> {
        Int4Screen::from_int8_with(crate::dispatch::active(), w)
    }

    /// [`Int4Screen::from_int8`] at `isa` (a level the CPU has): the same
    /// screen at every level, a block of a tile's eight rows at a time
    /// (`split_block`).
    pub fn from_int8_with(isa: Isa, w: &Int8View<'_>) -> Result<Int4Screen, String> {
        Int4Screen::build(isa, w, &|_| {})
    }

    /// [`Int4Screen::from_int8`], calling `read(range)` with each byte range
    /// of `w.data()` once the build has read it for good (ranges are
    /// disjoint and may come from several threads): so a caller whose
    /// weights are a mapped file can drop those pages behind the build, and
    /// the head and its screen are never resident together.
    pub fn from_int8_then(
        w: &Int8View<'_>,
        read: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) -> Result<Int4Screen, String> {
        Int4Screen::build(crate::dispatch::active(), w, read)
    }

    fn build(
        isa: Isa,
        w: &Int8View<'_>,
        read: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) -> Result<Int4Screen, String> {
        crate::f32::check_isa(isa);
        let (n, k, gs) = (w.n(), w.k(), w.group_size());
        if !gs.is_multiple_of(BLOCK) {
            return Err(format!(
                "screen: group size {gs} is not a multiple of {BLOCK}"
            ));
        }
        let (kp, kp8, groups) = (w.padded_k(), padded_k(k), w.groups());
        let tiles = n.div_ceil(TILE);
        let tile_bytes = kp8 / BLOCK * BLOCK_BYTES;
        // Zeroed, so its pages are mapped only as each task fills its
        // tiles (while `read` may be dropping the head's behind it), 4 KB
        // at a time; on huge pages once built.
        let mut data = AlignedBuf::<u8>::zeroed_small_pages(tiles * tile_bytes);
        let np8 = tiles * TILE;
        let mut l_sq = vec![0u32; groups * np8];
        let gsz = if gs == 0 { kp8 } else { gs };
        let raw = w.data();
        let kb4 = kp / K_BLOCK;
        let per_task = 64;
        let dp = par::SyncPtr(data.as_mut_ptr());
        let lp = par::SyncPtr(l_sq.as_mut_ptr());
        crate::pool::for_each(
            tiles.div_ceil(per_task),
            par::worth_parallel_macs(n * k),
            |task| {
                let t0 = task * per_task;
                let t1 = (t0 + per_task).min(tiles);
                // SAFETY: tiles [t0, t1) are this task's alone (tasks split the
                // tiles), inside `data`, which outlives the region.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        dp.get().add(t0 * tile_bytes),
                        (t1 - t0) * tile_bytes,
                    )
                };
                // Padding rows and inputs keep u = 8 (h = 0): their sums are
                // never read (rows) or meet a zero activation (inputs).
                dst.fill(OFFSET as u8 * 0x11);
                for (t, tile) in (t0..t1).zip(dst.chunks_exact_mut(tile_bytes)) {
                    // The tile's 8 rows are half of an int8 16-row tile: 32
                    // consecutive bytes of each of its k-blocks (a screen
                    // block is two k-blocks; the second may be past kp: zeros).
                    let base = int8::packed_index(t * TILE, 0, kp);
                    let kblock = |kb: usize| -> [i8; 32] {
                        if kb < kb4 {
                            let at = base + kb * TILE_N * K_BLOCK;
                            raw[at..at + 32].try_into().expect("32 bytes")
                        } else {
                            [0; 32]
                        }
                    };
                    let mut l2 = [0u32; TILE];
                    let rows = TILE.min(n - t * TILE);
                    for (b, blk) in tile.chunks_exact_mut(BLOCK_BYTES).enumerate() {
                        let blk: &mut [u8; 32] = blk.try_into().expect("32-byte block");
                        split_block(isa, &kblock(2 * b), &kblock(2 * b + 1), blk, &mut l2);
                        for (r, &v) in l2.iter().enumerate().take(rows) {
                            let j = t * TILE + r;
                            // SAFETY: g * np8 + j < groups * np8; row j is this task's.
                            unsafe { *lp.get().add((b * BLOCK / gsz) * np8 + j) += v };
                        }
                    }
                }
                // Screen tiles [t0, t1) are the halves of int8 tiles
                // [t0 / 2, ceil(t1 / 2)) (t0 is even: per_task is).
                let int8_tile = TILE_N * kp;
                read(t0 / 2 * int8_tile..(t1.div_ceil(2) * int8_tile).min(raw.len()));
            },
        );
        let l_norms = l_sq.iter().map(|&s| round_up((s as f64).sqrt())).collect();
        data.collapse();
        Ok(Int4Screen {
            n,
            k,
            group_size: gs,
            data,
            l_norms,
        })
    }

    /// The screen of the rows of `parts` one after another: the screen of
    /// the matrix they stack into, so a caller can quantize and screen a
    /// large matrix a block of rows at a time without an int8 copy of the
    /// whole. Every part but the last must have a whole number of tiles.
    pub fn stack(parts: &[Int4Screen]) -> Result<Int4Screen, String> {
        let first = parts.first().ok_or("screen: nothing to stack")?;
        let (k, gs, groups) = (first.k, first.group_size, first.groups());
        for (i, p) in parts.iter().enumerate() {
            if p.k != k || p.group_size != gs {
                return Err(format!("screen: part {i} has another shape"));
            }
            if i + 1 < parts.len() && !p.n.is_multiple_of(TILE) {
                return Err(format!("screen: part {i} ends inside a tile"));
            }
        }
        let n: usize = parts.iter().map(|p| p.n).sum();
        let mut data = AlignedBuf::<u8>::zeroed(parts.iter().map(|p| p.data.len()).sum());
        let mut at = 0;
        for p in parts {
            data[at..at + p.data.len()].copy_from_slice(&p.data);
            at += p.data.len();
        }
        // l_norms are group-major: each group's rows from every part in turn.
        let mut l_norms = Vec::with_capacity(groups * n.div_ceil(TILE) * TILE);
        for g in 0..groups {
            for p in parts {
                let np8 = p.l_norms.len() / groups;
                l_norms.extend_from_slice(&p.l_norms[g * np8..(g + 1) * np8]);
            }
        }
        Ok(Int4Screen {
            n,
            k,
            group_size: gs,
            data,
            l_norms,
        })
    }

    /// Rows.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Inputs.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Scale group size (0: one per row), as the int8 matrix's.
    pub fn group_size(&self) -> usize {
        self.group_size
    }
    /// Scale groups per row.
    pub fn groups(&self) -> usize {
        int8::group_count(self.k, self.group_size)
    }
    /// Bytes the screen reads per pass (the nibbles).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
    /// Blocks `[b0, b1)` of group `g`.
    #[inline]
    pub(crate) fn group_blocks(&self, g: usize) -> (usize, usize) {
        let kb = padded_k(self.k) / BLOCK;
        if self.group_size == 0 {
            (0, kb)
        } else {
            let per = self.group_size / BLOCK;
            (g * per, ((g + 1) * per).min(kb))
        }
    }
    /// The bytes of tiles `t..t + T`, after checking what every kernel's raw
    /// reads rely on: `q` holds the inputs of blocks `..b1`, and each tile
    /// those blocks' bytes. Panics otherwise (a caller bug).
    #[inline]
    pub(crate) fn checked_tiles<const T: usize>(
        &self,
        q: &[i8],
        t: usize,
        b1: usize,
    ) -> [&[u8]; T] {
        assert!(q.len() >= b1 * BLOCK);
        let w: [&[u8]; T] = std::array::from_fn(|tt| self.tile_data(t + tt));
        assert!(w.iter().all(|d| d.len() >= b1 * BLOCK_BYTES));
        w
    }

    /// The bytes of tile `t`.
    #[inline]
    pub(crate) fn tile_data(&self, t: usize) -> &[u8] {
        let tb = padded_k(self.k) / BLOCK * BLOCK_BYTES;
        &self.data[t * tb..(t + 1) * tb]
    }
}

/// Calls a kernel body's `T`-tile instance for `nt` (1..=4) tiles.
macro_rules! dispatch_tiles {
    ($body:ident, $s:expr, $q:expr, $b0:expr, $b1:expr, $t:expr, $nt:expr, $out:expr) => {
        match $nt {
            1 => $body::<1>($s, $q, $b0, $b1, $t, $out),
            2 => $body::<2>($s, $q, $b0, $b1, $t, $out),
            3 => $body::<3>($s, $q, $b0, $b1, $t, $out),
            _ => $body::<4>($s, $q, $b0, $b1, $t, $out),
        }
    };
}
pub(crate) use dispatch_tiles;

/// One block of one 8-row screen tile from its two k-blocks' 32 int8
/// weights each (row `r`'s four at `4r`): the nibbles into `out`, each row's
/// `Σ l²` into `l2`, at `isa` (the x86 levels with AVX2 arithmetic, the
/// others through [`SPLIT`]; the same bytes and sums).
#[inline]
fn split_block(isa: Isa, lo: &[i8; 32], hi: &[i8; 32], out: &mut [u8; 32], l2: &mut [u32; 8]) {
    match isa {
        // SAFETY: every x86 level from Avx2 up has AVX2 (the caller's
        // check_isa verified the CPU has the level).
        #[cfg(target_arch = "x86_64")]
        _ if isa.has_avx2() => unsafe { avx2::split_block(lo, hi, out, l2) },
        _ => scalar::split_block(lo, hi, out, l2),
    }
}

/// The smallest f32 not below `v`.
fn round_up(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v {
        f.next_up()
    } else {
        f
    }
}

/// Tiles a kernel call handles at once (they share the activation broadcasts).
pub(crate) const MAX_T: usize = 4;

/// `out[tt][r] = Σ u·q` over group `g`'s blocks for `nt <= MAX_T` tiles
/// from `t` and one activation row `q` (`kp8` values, zero padded), at
/// `isa`. Every level gives the same integers (they are exact).
#[inline]
fn tiles(
    isa: Isa,
    s: &Int4Screen,
    q: &[i8],
    g: usize,
    t: usize,
    nt: usize,
    out: &mut [[i32; TILE]; MAX_T],
) {
    let (b0, b1) = s.group_blocks(g);
    match isa {
        // SAFETY: the level was checked (check_isa) and `q` holds kp8 values;
        // tile_data bounds every weight read (see the kernel).
        #[cfg(target_arch = "x86_64")]
        _ if isa.has_vnni() => unsafe { avx512::tiles(s, q, b0, b1, t, nt, out) },
        // SAFETY: as above (AVX2 is implied by every AVX-512 level here).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => unsafe { avx2::tiles(s, q, b0, b1, t, nt, out) },
        Isa::Neon if neon::usable() => neon::tiles(s, q, b0, b1, t, nt, out),
        _ => scalar::tiles(s, q, b0, b1, t, nt, out),
    }
}

/// Activation rows a multi-row kernel call takes (a batch's decode step).
pub(crate) const MAX_R: usize = 8;

/// Whether `isa` has a multi-row screen kernel (AVX2, and AVX-512 without
/// VNNI, which runs the AVX2 one); the other levels serve
/// [`argmax_rows_with`] with their one-row kernel, a pass over the nibbles
/// per row.
pub fn rows_kernel(isa: Isa) -> bool {
    matches!(isa, Isa::Avx2 | Isa::Avx512)
}

/// `out[r][8 (t − t0) + j] = Σ u·q_r` over group `g`'s blocks of tiles
/// `[t0, t1)` (at most a task's) for activation rows `qs[..r]` (`r <=
/// MAX_R`, each `kp8` values), at `isa`: the AVX2 kernel unpacks each
/// block's nibbles once for two to eight rows; a single row, and every row
/// on the other levels, runs the one-row kernel (on AVX2 it prefetches,
/// which the multi-row one gains nothing from: one row 157 against 177 µs
/// for a 32128 x 256 screen, kernels/BENCH.md). The same integers as
/// [`tiles`].
#[allow(clippy::too_many_arguments)]
#[inline]
fn tile_rows(
    isa: Isa,
    s: &Int4Screen,
    qs: &[&[i8]; MAX_R],
    r: usize,
    g: usize,
    t0: usize,
    t1: usize,
    out: &mut [[i32; TASK_ROWS]; MAX_R],
) {
    assert!((1..=MAX_R).contains(&r) && (t1 - t0) * TILE <= TASK_ROWS);
    #[cfg(target_arch = "x86_64")]
    if rows_kernel(isa) && r > 1 {
        let (b0, b1) = s.group_blocks(g);
        // SAFETY: AVX2 is implied by both levels (check_isa ran); each of
        // the r rows holds kp8 values (the caller's contract, asserted by
        // the kernel), t1 <= ceil(n / 8) and the tiles fit a task (above).
        return unsafe { avx2::rows_tiles(s, qs, r, b0, b1, t0, t1, out) };
    }
    // One row (a batch's last or only screened one), or a level without the
    // multi-row kernel: the one-row kernel, up to MAX_T tiles a call.
    let mut buf = [[0i32; TILE]; MAX_T];
    for (q, o) in qs.iter().zip(out.iter_mut()).take(r) {
        let mut t = t0;
        while t < t1 {
            let nt = (t1 - t).min(MAX_T);
            tiles(isa, s, q, g, t, nt, &mut buf);
            o[(t - t0) * TILE..][..nt * TILE].copy_from_slice(&buf.as_flattened()[..nt * TILE]);
            t += nt;
        }
    }
}

/// Screen sums `Σ u·q` of every row (`[groups, n]`) for one activation row
/// `q` of `kp8` values at `isa`: what the tests compare across levels.
pub fn sums_with(isa: Isa, s: &Int4Screen, q: &[i8]) -> Vec<i32> {
    crate::f32::check_isa(isa);
    assert_eq!(q.len(), padded_k(s.k), "screen: q length");
    let mut out = vec![0i32; s.groups() * s.n];
    let tiles_n = s.n.div_ceil(TILE);
    let mut buf = [[0i32; TILE]; MAX_T];
    for g in 0..s.groups() {
        let mut t = 0;
        while t < tiles_n {
            let nt = (tiles_n - t).min(MAX_T);
            tiles(isa, s, q, g, t, nt, &mut buf);
            for (i, &v) in buf.as_flattened()[..nt * TILE].iter().enumerate() {
                let j = t * TILE + i;
                if j < s.n {
                    out[g * s.n + j] = v;
                }
            }
            t += nt;
        }
    }
    out
}

/// [`sums_with`] for several activation rows at once (`qs[i]` of `kp8`
/// values each) through the multi-row kernel: `[rows][groups * n]`, each the
/// same integers [`sums_with`] gives for that row alone.
pub fn sums_rows_with(isa: Isa, s: &Int4Screen, qs: &[&[i8]]) -> Vec<Vec<i32>> {
    crate::f32::check_isa(isa);
    let kp8 = padded_k(s.k);
    assert!(qs.iter().all(|q| q.len() == kp8), "screen: q length");
    let mut out = vec![vec![0i32; s.groups() * s.n]; qs.len()];
    let mut buf = [[0i32; TASK_ROWS]; MAX_R];
    for (c, rows) in qs.chunks(MAX_R).enumerate() {
        let mut q4: [&[i8]; MAX_R] = [rows[0]; MAX_R];
        q4[..rows.len()].copy_from_slice(rows);
        for g in 0..s.groups() {
            for task in 0..s.n.div_ceil(TASK_ROWS) {
                let (t0, t1) = task_tiles(task, s.n);
                tile_rows(isa, s, &q4, rows.len(), g, t0, t1, &mut buf);
                for (i, b) in buf.iter().enumerate().take(rows.len()) {
                    for (r, &v) in b[..(t1 - t0) * TILE].iter().enumerate() {
                        let j = t0 * TILE + r;
                        if j < s.n {
                            out[c * MAX_R + i][g * s.n + j] = v;
                        }
                    }
                }
            }
        }
    }
    out
}

/// Reusable buffers of [`argmax_with`], so a decode step allocates nothing.
#[derive(Default)]
pub struct ScreenScratch {
    q: Vec<i8>,
    s: Vec<f32>,
    /// Per group: `Σq` and `‖q‖₂` (rounded up).
    qsum: Vec<i64>,
    qnorm: Vec<f32>,
    /// Per task: its rows' upper ends, then its best lower and best upper.
    bounds: Vec<f32>,
    cands: Vec<usize>,
}

impl ScreenScratch {
    /// The activation as the int8 kernels quantise it, from the last
    /// [`candidates_with`]: values (`padded_k(k)` of them, zero padded) and
    /// per-group scales.
    pub fn activation(&self) -> (&[i8], &[f32]) {
        (&self.q, &self.s)
    }

    /// The rows the last successful [`candidates_with`] left, ascending.
    pub fn candidates(&self) -> &[usize] {
        &self.cands
    }
}

/// The outcome of one screened pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The argmax of the full int8 head, and how many rows were re-scored.
    Id {
        /// The row.
        id: usize,
        /// Rows re-scored exactly.
        rescored: usize,
    },
    /// The screen left too many candidates (this many): run the full head.
    Undecided {
        /// Rows that could still win.
        candidates: usize,
    },
}

/// The relative slack that covers every f32 rounding between the exact
/// integers and the compared bounds: the int8 kernel's epilogue (a conversion
/// and two products per group, `G` group sums) and this module's own f32
/// evaluation of the interval (a handful of operations). Each rounding is at
/// most 2⁻²⁴ relative of a term no larger than `(|S| + E)·s_x·s_w`; this
/// takes four times what they can add up to.
fn slack(groups: usize) -> f32 {
    (4 * groups + 32) as f32 * f32::EPSILON / 2.0
}

/// What the intervals of one activation row need: the screen, the
/// quantised activation and its per-group `s_x`, `Σq` and `‖q‖₂`, the int8
/// scales, and the slack `ρ`.
struct Intervals<'a> {
    s: &'a Int4Screen,
    q: &'a [i8],
    sx: &'a [f32],
    qsum: &'a [i64],
    qnorm: &'a [f32],
    scales: &'a [f32],
    np: usize,
    rho: f32,
    widen: Option<&'a Widen<'a>>,
}

impl Intervals<'_> {
    /// The upper ends of the int8 logits of tiles `[t0, t1)` into `hi` (row
    /// `(t − t0)·8 + r`; `-inf` for `banned` and rows past `n`, which are
    /// never candidates), and the best lower and upper end among them, on
    /// `isa`'s kernel; the arithmetic is compiled for AVX2 where the level
    /// has it, so it runs 8 rows a vector.
    fn task(
        &self,
        isa: Isa,
        t0: usize,
        t1: usize,
        banned: Option<usize>,
        hi: &mut [f32],
    ) -> (f32, f32) {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() {
            // SAFETY: every x86 level from Avx2 up has AVX2 (check_isa ran).
            return unsafe { self.task_avx2(isa, t0, t1, banned, hi) };
        }
        self.task_body(isa, t0, t1, banned, hi)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn task_avx2(
        &self,
        isa: Isa,
        t0: usize,
        t1: usize,
        banned: Option<usize>,
        hi: &mut [f32],
    ) -> (f32, f32) {
        self.task_body(isa, t0, t1, banned, hi)
    }

    /// Per group `g`, a row's screen sum `u` gives the exact screen value
    /// `S = 17·(u − 8·Σq)` (in integer units of the product `c = s_x·s_w`),
    /// and `|acc − S| <= E = ‖l‖₂‖q‖₂`, so the f32 epilogue of the true `acc`
    /// lands within `c·(E + ρ(|S| + E))` of `S·c` (`ρ` = [`slack`]); the
    /// groups' parts add.
    #[inline(always)]
    fn task_body(
        &self,
        isa: Isa,
        t0: usize,
        t1: usize,
        banned: Option<usize>,
        hi: &mut [f32],
    ) -> (f32, f32) {
        let mut part = Part::default();
        let mut sums = [0i32; TASK_ROWS];
        let mut buf = [[0i32; TILE]; MAX_T];
        for g in 0..self.qsum.len() {
            let mut t = t0;
            while t < t1 {
                let nt = (t1 - t).min(MAX_T);
                tiles(isa, self.s, self.q, g, t, nt, &mut buf);
                sums[(t - t0) * TILE..][..nt * TILE]
                    .copy_from_slice(&buf.as_flattened()[..nt * TILE]);
                t += nt;
            }
            let rows = (t1 - t0) * TILE;
            self.add_group(g, &sums[..rows], t0 * TILE, g == 0, &mut part);
        }
        self.finish(&mut part, t0, t1, banned, hi)
    }

    /// Group `g`'s part of the intervals of outputs `j..j + sums.len()`
    /// (see [`Intervals::task_body`]) from their screen sums, added to
    /// `part` (stored instead when `first`: the first group needs no cleared
    /// `part`). `j` starts a tile and the outputs are whole tiles: np (a
    /// multiple of 16) and np8 cover them.
    #[inline(always)]
    fn add_group(&self, g: usize, sums: &[i32], j: usize, first: bool, part: &mut Part) {
        let np8 = self.s.n.div_ceil(TILE) * TILE;
        let len = sums.len();
        let sw = &self.scales[g * self.np + j..][..len];
        let ln = &self.s.l_norms[g * np8 + j..][..len];
        let (sx, qn, rho) = (self.sx[g], self.qnorm[g], self.rho);
        // u − 8Σq = Σh·q, |Σh·q| <= 7·127·k, so 17 times it fits an
        // i32 for every k up to int8::MAX_K (1.98e9 at 2^17).
        let off = (OFFSET as i64 * self.qsum[g]) as i32;
        let rows_iter = part.mid[..len]
            .iter_mut()
            .zip(&mut part.rad[..len])
            .zip(sums.iter().zip(sw.iter().zip(ln)));
        for ((m, r), (&u, (&w, &l))) in rows_iter {
            let sv = (MULT * (u - off)) as f32;
            let c = sx * w;
            let e = l * qn;
            let (dm, dr) = (sv * c, c * (e + rho * (sv.abs() + e)));
            (*m, *r) = if first { (dm, dr) } else { (*m + dm, *r + dr) };
        }
    }

    /// The upper ends of tiles `[t0, t1)` into `hi` from the summed `part`
    /// (the caller's widening added), and the best lower and upper end.
    #[inline(always)]
    fn finish(
        &self,
        part: &mut Part,
        t0: usize,
        t1: usize,
        banned: Option<usize>,
        hi: &mut [f32],
    ) -> (f32, f32) {
        let n = self.s.n;
        let (j0, rows) = (t0 * TILE, (t1 - t0) * TILE);
        let Part { mid, rad, lo } = part;
        if let Some(wd) = self.widen {
            let (a, b) = (wd.a * (1.0 + 1e-6), wd.b * (1.0 + 1e-6));
            let (ra, rb) = (&wd.row_a[j0..], &wd.row_b[j0..]);
            for ((r, &x), &y) in rad.iter_mut().zip(ra).zip(rb) {
                *r += a * x + b * y;
            }
        }
        let hi = &mut hi[..rows];
        for (((l, h), &m), &r) in lo.iter_mut().zip(hi.iter_mut()).zip(&*mid).zip(&*rad) {
            (*l, *h) = (m - r, m + r);
        }
        // The banned row and padding rows past n are never candidates.
        if let Some(b) = banned.filter(|b| (j0..j0 + rows).contains(b)) {
            (lo[b - j0], hi[b - j0]) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        }
        let valid = rows.min(n - j0);
        lo[valid..rows].fill(f32::NEG_INFINITY);
        hi[valid..].fill(f32::NEG_INFINITY);
        (max_of(&lo[..rows]), max_of(hi))
    }
}

/// The largest of `v` (a whole number of tiles; -inf if empty): eight
/// independent running maxima (the bounds of finite scales are finite,
/// never NaN), one slice at a time, so the loop vectorises into plain
/// `vmaxps` (two slices in one loop came out as lane shuffles).
#[inline(always)]
fn max_of(v: &[f32]) -> f32 {
    let mut best = [f32::NEG_INFINITY; TILE];
    for c in v.chunks_exact(TILE) {
        for r in 0..TILE {
            best[r] = if c[r] > best[r] { c[r] } else { best[r] };
        }
    }
    best.iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// The intervals of one 64-row task as they are summed (midpoints and
/// radii), then their lower ends. The first group stores and later ones
/// add, so a batch's pool task reuses one per row without clearing it.
#[derive(Clone, Copy)]
struct Part {
    mid: [f32; TASK_ROWS],
    rad: [f32; TASK_ROWS],
    lo: [f32; TASK_ROWS],
}

impl Default for Part {
    fn default() -> Self {
        Part {
            mid: [0.0; TASK_ROWS],
            rad: [0.0; TASK_ROWS],
            lo: [0.0; TASK_ROWS],
        }
    }
}

/// [`Intervals::task`] for up to [`MAX_R`] activation rows at once (`ivs`,
/// one each, the same screen and group size, `banned[i]` row `i`'s): the
/// screen sums come from the multi-row kernel, then each row's arithmetic is
/// its own. Row `i`'s bounds go to `out[i * ROW_BOUNDS..]`, written in place:
/// copying them there from a work buffer was 4.5% of W2 by `perf`, though
/// part of that cost moved to these stores (kernels/BENCH.md).
fn task_rows(
    ivs: &[Intervals<'_>],
    banned: &[Option<usize>],
    isa: Isa,
    t0: usize,
    t1: usize,
    work: &mut RowsWork,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: every x86 level from Avx2 up has AVX2 (check_isa ran).
        return unsafe { task_rows_avx2(ivs, banned, isa, t0, t1, work, out) };
    }
    task_rows_body(ivs, banned, isa, t0, t1, work, out)
}

/// What [`task_rows`] works in, made once per pool task: each row's
/// intervals and screen sums (overwritten by every call).
struct RowsWork {
    parts: [Part; MAX_R],
    sums: [[i32; TASK_ROWS]; MAX_R],
}

impl Default for RowsWork {
    fn default() -> Self {
        RowsWork {
            parts: [Part::default(); MAX_R],
            sums: [[0; TASK_ROWS]; MAX_R],
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn task_rows_avx2(
    ivs: &[Intervals<'_>],
    banned: &[Option<usize>],
    isa: Isa,
    t0: usize,
    t1: usize,
    work: &mut RowsWork,
    out: &mut [f32],
) {
    task_rows_body(ivs, banned, isa, t0, t1, work, out)
}

#[inline(always)]
fn task_rows_body(
    ivs: &[Intervals<'_>],
    banned: &[Option<usize>],
    isa: Isa,
    t0: usize,
    t1: usize,
    work: &mut RowsWork,
    out: &mut [f32],
) {
    let r = ivs.len();
    assert!((1..=MAX_R).contains(&r) && banned.len() == r && out.len() == r * ROW_BOUNDS);
    let RowsWork { parts, sums } = work;
    let qs: [&[i8]; MAX_R] = std::array::from_fn(|i| ivs[i.min(r - 1)].q);
    let rows = (t1 - t0) * TILE;
    for g in 0..ivs[0].qsum.len() {
        tile_rows(isa, ivs[0].s, &qs, r, g, t0, t1, sums);
        // A whole task's outputs at once: the arithmetic vectorises 8 wide
        // (a tile at a time it did not).
        for ((iv, s), p) in ivs.iter().zip(sums.iter()).zip(parts.iter_mut()) {
            iv.add_group(g, &s[..rows], t0 * TILE, g == 0, p);
        }
    }
    for (i, (iv, row)) in ivs.iter().zip(out.chunks_exact_mut(ROW_BOUNDS)).enumerate() {
        let (hi, best) = row.split_at_mut(TASK_ROWS);
        (best[0], best[1]) = iv.finish(&mut parts[i], t0, t1, banned[i], hi);
    }
}

/// The exact int8 logit of row `j` for the quantised activation, with the
/// int8 kernels' epilogue (`0.0`, then per group `(acc·s_x)·s_w`, in order):
/// the same bits as [`int8::linear`]'s output `j` at every level.
pub fn exact_logit(w: &Int8View<'_>, q: &[i8], sx: &[f32], j: usize) -> f32 {
    let (kp, np) = (w.padded_k(), w.padded_n());
    let data = w.data();
    let base = int8::packed_index(j, 0, kp);
    let mut y = 0.0f32;
    for (g, &sxg) in sx.iter().enumerate().take(w.groups()) {
        let (kb0, kb1) = w.group_blocks(g);
        let mut acc = 0i32;
        for kb in kb0..kb1 {
            let p = &data[base + kb * TILE_N * K_BLOCK..][..K_BLOCK];
            let x = &q[kb * K_BLOCK..(kb + 1) * K_BLOCK];
            acc += p
                .iter()
                .zip(x)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum::<i32>();
        }
        y += (acc as f32 * sxg) * w.scales()[g * np + j];
    }
    y
}

/// The argmax over rows of `x · wᵀ` as [`int8::linear`] computes it (ties to
/// the lowest row, `banned` never picked), found through the screen `s` of
/// `w`, at the active level. See the module docs.
pub fn argmax(
    w: &Int8View<'_>,
    s: &Int4Screen,
    x: &[f32],
    banned: Option<usize>,
    scratch: &mut ScreenScratch,
) -> Pick {
    argmax_with(active(), w, s, x, banned, scratch)
}

/// [`argmax`] at a chosen level: the same pick at every level.
pub fn argmax_with(
    isa: Isa,
    w: &Int8View<'_>,
    s: &Int4Screen,
    x: &[f32],
    banned: Option<usize>,
    scratch: &mut ScreenScratch,
) -> Pick {
    check_pair(w, s);
    if let Err(candidates) = candidates_with(isa, w.scales(), s, x, banned, None, scratch) {
        return Pick::Undecided { candidates };
    }
    rescore(w, scratch)
}

/// A further per-row radius `a·row_a[j] + b·row_b[j]` (all non-negative)
/// around the int8 logit: how far another quantity the caller wants the
/// argmax of can lie from it (the full-precision logit, for `--exact`).
/// The caller includes its own rounding in `a` and `b`; this adds 1e-6
/// relative for the f32 sum.
#[derive(Clone, Copy, Debug)]
pub struct Widen<'a> {
    /// Scale of `row_a`.
    pub a: f32,
    /// `[n]` per-row factor.
    pub row_a: &'a [f32],
    /// Scale of `row_b`.
    pub b: f32,
    /// `[n]` per-row factor.
    pub row_b: &'a [f32],
}

/// Finds the rows that can hold the argmax (ascending, `banned` never among
/// them; [`ScreenScratch::candidates`] lists them after an `Ok`): the argmax of the int8 head's logits, or with `widen`, of any
/// quantity within that radius of them, is one of these. `Err(count)` when
/// more than a small share of the rows remain (re-scoring them one by one
/// would cost more than the full head) or the input is not finite (`n`).
/// The quantised activation is left in the scratch ([`ScreenScratch::activation`]).
/// `scales` are the weight scales of the int8 matrix `s` was built from
/// ([`Int8View::scales`]): the intervals need nothing else of it, so a
/// caller that re-scores its candidates another way need not keep the int8
/// data.
pub fn candidates_with(
    isa: Isa,
    scales: &[f32],
    s: &Int4Screen,
    x: &[f32],
    banned: Option<usize>,
    widen: Option<&Widen<'_>>,
    scratch: &mut ScreenScratch,
) -> Result<(), usize> {
    crate::f32::check_isa(isa);
    let n = s.n;
    assert_eq!(
        scales.len(),
        s.groups() * int8::padded_n(n),
        "screen: scales of another matrix"
    );
    if let Some(wd) = widen {
        assert!(
            wd.row_a.len() == n && wd.row_b.len() == n,
            "screen: widen rows"
        );
    }
    prepare(isa, s, x, scratch)?;
    let tasks = n.div_ceil(TASK_ROWS);
    const W: usize = ROW_BOUNDS;
    let mut bounds = std::mem::take(&mut scratch.bounds);
    bounds.clear();
    bounds.resize(tasks * W, 0.0);
    let iv = scratch.intervals(scales, s, widen);
    // Several 64-row tasks per pool task (about as many pool tasks as a GEMV
    // takes, `par::GEMV_TASKS`): ~500 a step cost more to hand out than they took.
    let per = (tasks / par::GEMV_TASKS).max(1);
    par::for_chunks_mut(
        &mut bounds,
        W * per,
        par::worth_parallel_macs(n * s.k / 2),
        |chunk, parts| {
            for (i, part) in parts.chunks_exact_mut(W).enumerate() {
                let (t0, t1) = task_tiles(chunk * per + i, n);
                let (best_lo, best_hi) = iv.task(isa, t0, t1, banned, &mut part[..TASK_ROWS]);
                part[TASK_ROWS] = best_lo;
                part[TASK_ROWS + 1] = best_hi;
            }
        },
    );
    let found = select(
        |task| &bounds[task * W..(task + 1) * W],
        n,
        &mut scratch.cands,
    );
    scratch.bounds = bounds;
    found
}

/// Refuses a screen built for another matrix than `w`.
fn check_pair(w: &Int8View<'_>, s: &Int4Screen) {
    assert!(
        s.n == w.n() && s.k == w.k() && s.group_size == w.group_size(),
        "screen: built for another matrix"
    );
}

/// Tiles `[t0, t1)` of 64-row task `task` of an `n`-row screen.
fn task_tiles(task: usize, n: usize) -> (usize, usize) {
    let j0 = task * TASK_ROWS;
    (j0 / TILE, (j0 + TASK_ROWS).min(n).div_ceil(TILE))
}

/// Quantises one activation row into `scratch` exactly as the int8 kernels
/// do, with its per-group `Σq` and `‖q‖₂`; `Err(n)` if it is not finite
/// (the intervals would prove nothing).
fn prepare(isa: Isa, s: &Int4Screen, x: &[f32], scratch: &mut ScreenScratch) -> Result<(), usize> {
    let (n, k, gs) = (s.n, s.k, s.group_size);
    assert_eq!(x.len(), k, "screen: x length");
    let (kp, kp8, groups) = (int8::padded_k(k), padded_k(k), s.groups());
    let ScreenScratch {
        q,
        s: sx,
        qsum,
        qnorm,
        cands,
        ..
    } = scratch;
    q.clear();
    q.resize(kp8, 0);
    sx.clear();
    sx.resize(groups, 0.0);
    cands.clear();
    qsum.clear();
    qnorm.clear();
    int8::quantize_activations_with(isa, x, 1, k, gs, &mut q[..kp], sx);
    if sx.iter().any(|v| !v.is_finite()) {
        return Err(n);
    }
    let gsz = if gs == 0 { kp8 } else { gs };
    for g in 0..groups {
        let part = &q[g * gsz..((g + 1) * gsz).min(kp8)];
        qsum.push(part.iter().map(|&v| v as i64).sum());
        let sq: i64 = part.iter().map(|&v| v as i64 * v as i64).sum();
        qnorm.push(round_up((sq as f64).sqrt()));
    }
    Ok(())
}

impl ScreenScratch {
    /// The intervals of the row [`prepare`] left here.
    fn intervals<'a>(
        &'a self,
        scales: &'a [f32],
        s: &'a Int4Screen,
        widen: Option<&'a Widen<'a>>,
    ) -> Intervals<'a> {
        Intervals {
            s,
            q: &self.q,
            sx: &self.s,
            qsum: &self.qsum,
            qnorm: &self.qnorm,
            scales,
            np: int8::padded_n(s.n),
            rho: slack(s.groups()),
            widen,
        }
    }
}

/// Floats of one row's bounds of one task, what [`select`] reads: the task's
/// upper ends, then its best lower and best upper end.
const ROW_BOUNDS: usize = TASK_ROWS + 2;

/// The candidates from one row's task bounds (`bounds(task)`, [`ROW_BOUNDS`]
/// floats): the rows whose upper
/// end reaches `λ`, the best lower end, ascending into `cands`; `Err` as
/// [`candidates_with`].
fn select<'b>(
    bounds: impl Fn(usize) -> &'b [f32],
    n: usize,
    cands: &mut Vec<usize>,
) -> Result<(), usize> {
    let tasks = n.div_ceil(TASK_ROWS);
    let lambda = (0..tasks).fold(f32::NEG_INFINITY, |a, t| a.max(bounds(t)[TASK_ROWS]));
    cands.clear();
    if lambda == f32::NEG_INFINITY {
        return Err(n);
    }
    // A task whose best upper end stays below λ has no candidate, so most
    // tasks are skipped whole. Room for the most there can be is made once,
    // so a later step allocates nothing.
    let limit = n / MAX_CANDIDATE_SHARE + 16;
    cands.reserve(limit);
    for task in 0..tasks {
        let p = bounds(task);
        if p[TASK_ROWS + 1] < lambda {
            continue;
        }
        let j0 = task * TASK_ROWS;
        for (r, &hi) in p[..TASK_ROWS.min(n - j0)].iter().enumerate() {
            if hi >= lambda {
                if cands.len() == limit {
                    return Err(count_candidates(&bounds, lambda, n));
                }
                cands.push(j0 + r);
            }
        }
    }
    Ok(())
}

/// Re-scores `scratch`'s candidates exactly: the argmax of the int8 head
/// among them (ties to the lowest id), as [`argmax_with`] answers.
fn rescore(w: &Int8View<'_>, scratch: &ScreenScratch) -> Pick {
    let rows = &scratch.cands;
    let mut best: Option<(usize, f32)> = None;
    for &j in rows {
        let y = exact_logit(w, &scratch.q, &scratch.s, j);
        // Rows come in increasing id: a strict `>` keeps the lowest on ties.
        if best.is_none_or(|(_, b)| y > b) {
            best = Some((j, y));
        }
    }
    match best {
        Some((id, _)) => Pick::Id {
            id,
            rescored: rows.len(),
        },
        None => Pick::Undecided { candidates: 0 },
    }
}

/// Reusable buffers of [`argmax_rows_with`]: one [`ScreenScratch`] a row and
/// the rows' task bounds.
#[derive(Default)]
pub struct RowsScratch {
    rows: Vec<ScreenScratch>,
    live: Vec<usize>,
    bounds: Vec<f32>,
}

/// [`argmax_with`] for `m` activation rows `x[i·k..(i + 1)·k]` at once (a
/// batch's decode step), row `i` never picking `banned[i]`: `picks[i]` is
/// what [`argmax_with`] answers for that row alone. One pass over the screen
/// serves every row: each block's nibbles are unpacked once for up to eight
/// rows, which on AVX2 without VNNI takes about 0.7x the int8 head's time
/// for 16 rows (kernels/BENCH.md).
#[allow(clippy::too_many_arguments)]
pub fn argmax_rows_with(
    isa: Isa,
    w: &Int8View<'_>,
    s: &Int4Screen,
    x: &[f32],
    m: usize,
    banned: &[Option<usize>],
    scratch: &mut RowsScratch,
    picks: &mut Vec<Pick>,
) {
    crate::f32::check_isa(isa);
    check_pair(w, s);
    let (n, k) = (w.n(), w.k());
    assert_eq!(x.len(), m * k, "screen: x shape");
    assert_eq!(banned.len(), m, "screen: one banned entry a row");
    let RowsScratch { rows, live, bounds } = scratch;
    if rows.len() < m {
        rows.resize_with(m, ScreenScratch::default);
    }
    picks.clear();
    live.clear();
    for i in 0..m {
        match prepare(isa, s, &x[i * k..(i + 1) * k], &mut rows[i]) {
            Ok(()) => {
                live.push(i);
                picks.push(Pick::Undecided { candidates: 0 });
            }
            Err(c) => picks.push(Pick::Undecided { candidates: c }),
        }
    }
    let nl = live.len();
    if nl == 0 {
        return;
    }
    let tasks = n.div_ceil(TASK_ROWS);
    const W: usize = ROW_BOUNDS;
    // [task][live row][W]: a pool chunk of tasks writes one contiguous run;
    // every value is written below, so a step only grows it, never clears it.
    if bounds.len() < tasks * nl * W {
        bounds.resize(tasks * nl * W, 0.0);
    }
    let bounds = &mut bounds[..tasks * nl * W];
    let (rows_ref, live_ref) = (&*rows, &*live);
    let per = (tasks / par::GEMV_TASKS).max(1);
    par::for_chunks_mut(
        bounds,
        nl * W * per,
        par::worth_parallel_macs(nl * n * k / 2),
        |chunk, parts_out| {
            let mut work = RowsWork::default();
            // Up to MAX_R live rows at a time (their intervals made once),
            // against each task of the chunk; a task's rows are W floats each
            // (upper ends, then the best lower and upper end). Tasks inside
            // row groups measured 1.13x faster than the other way round,
            // whose nibbles stay in L1 (kernels/BENCH.md).
            for (c, group) in live_ref.chunks(MAX_R).enumerate() {
                let r = group.len();
                let at = |l: usize| group[l.min(r - 1)];
                let ivs: [Intervals<'_>; MAX_R] =
                    std::array::from_fn(|l| rows_ref[at(l)].intervals(w.scales(), s, None));
                let bans: [Option<usize>; MAX_R] = std::array::from_fn(|l| banned[at(l)]);
                for (i, task) in parts_out.chunks_exact_mut(nl * W).enumerate() {
                    let (t0, t1) = task_tiles(chunk * per + i, n);
                    let mine = &mut task[c * MAX_R * W..(c * MAX_R + r) * W];
                    task_rows(&ivs[..r], &bans[..r], isa, t0, t1, &mut work, mine);
                }
            }
        },
    );
    let bounds = &*bounds;
    for (l, &i) in live.iter().enumerate() {
        let at = |task: usize| &bounds[(task * nl + l) * W..(task * nl + l + 1) * W];
        let sc = &mut rows[i];
        picks[i] = match select(at, n, &mut sc.cands) {
            Ok(()) => rescore(w, sc),
            Err(c) => Pick::Undecided { candidates: c },
        };
    }
}

fn count_candidates<'b>(bounds: &impl Fn(usize) -> &'b [f32], lambda: f32, n: usize) -> usize {
    (0..n.div_ceil(TASK_ROWS))
        .map(|task| {
            let rows = TASK_ROWS.min(n - task * TASK_ROWS);
            bounds(task)[..rows]
                .iter()
                .filter(|&&h| h >= lambda)
                .count()
        })
        .sum()
}
