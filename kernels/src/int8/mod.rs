//! int8 linear layers: symmetric int8 weights with an f32 scale per output row
//! (or per group of `group_size` inputs), activations quantised per row (token)
//! on the fly, exact i32 dot products, and an f32 epilogue.
//!
//! # Quantisation
//! A weight row (or group) with largest magnitude `a` gets scale `s_w = a / 127`
//! and values `p = round(w / s_w)` in `[-127, 127]`; -128 is never produced (and
//! refused when loading), which is what keeps the AVX2 `vpmaddubsw` pair sums
//! (at most 2 * 127 * 127 = 32258 < 32767) clear of i16 saturation. Activations
//! get the same treatment per row and per group: `s_x = max|x| / 127`.
//!
//! Output `y[i, j] = sum_g (acc[i, j, g] as f32 * s_x[i, g]) * s_w[g, j]`, the
//! groups added in order starting from 0.0, where `acc` is the exact i32 dot
//! product of the quantised values. Every ISA computes the same `acc` exactly and
//! then the same f32 operations in the same order, so **all levels give
//! bit-identical results** (the tests check this), and threading cannot change a
//! bit either.
//!
//! # Packed layout (what a file stores)
//! Let `kp = round_up(k, 4)` (K padding rule: zeros up to a multiple of 4 inputs)
//! and `np = round_up(n, 16)` (zero rows up to a multiple of 16 outputs).
//! * `data: [i8; np * kp]`, tile-interleaved: output rows are taken 16 at a time
//!   (a *tile*), and within a tile the inputs 4 at a time (a *k-block*); byte
//!   `p[j][kk]` lives at `((j / 16) * (kp / 4) + kk / 4) * 64 + (j % 16) * 4 + kk % 4`.
//!   So one 64-byte load holds 4 inputs for 16 outputs: one `vpdpbusd` with the 4
//!   activation bytes broadcast updates 16 dot products with no horizontal sum
//!   (AVX2 uses two 32-byte halves, NEON four `sdot`s of 16 bytes).
//! * `scales: [f32; groups * np]`, `scales[g * np + j]` (padding rows: 0).
//! * `row_sums: [i32; groups * np]`, the sum of the int8 values of row `j` in
//!   group `g`: the VNNI path feeds activations as `x + 128` (u8) and subtracts
//!   `128 * row_sum`, which is exact in wrapping i32 arithmetic.
//! * `err_norms: [f32; n]`, `||w_j - s_w * p_j||_2`, rounded up: a certified bound
//!   on each row's quantisation error for later argmax certification.
//!
//! `groups = 1` when `group_size == 0`, else `ceil(k / group_size)`; `group_size`
//! must be a multiple of 4 so groups never split a k-block, and group `g` covers
//! inputs `[g * group_size, min((g + 1) * group_size, kp))`.
//!
//! This crate owns the format: [`Int8View::from_bytes`] takes a file's four
//! parts as bytes and checks everything above (`format.rs`); a loader only
//! finds the bytes and names the tensor in the error.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
mod format;
pub(crate) mod neon;
pub mod scalar;
mod source;

pub use source::Source;

use crate::aligned::AlignedBuf;
use crate::dispatch::{active, Isa};
use crate::par::{self, ColBlock};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Output rows per tile of the packed layout.
pub const TILE_N: usize = 16;
/// Inputs per k-block of the packed layout; K is zero-padded to a multiple of it.
pub const K_BLOCK: usize = 4;
/// Largest supported `k`: `k * 127 * 127` must fit an i32 so the exact dot
/// product (and the VNNI compensation, done modulo 2^32) is representable.
pub const MAX_K: usize = 1 << 17;
/// Activation rows processed together against one weight tile (register blocking).
pub(crate) const ROW_BLOCK: usize = 4;
/// Rows per block of the VNNI kernel when that many remain: its single
/// `vpdpbusd` per row and k-block leaves registers for 8 rows, and each weight
/// load then serves twice as many.
pub(crate) const ROW_BLOCK_WIDE: usize = 8;
/// Rows from which [`Isa::Amx`] runs a product on AMX tiles (`amx.rs`);
/// fewer take the VNNI kernels. A tile product always covers 16 rows.
pub const AMX_MIN_M: usize = 16;
/// Tiles per call of the VNNI prefill kernels (`avx512::vnni_pair`).
pub(crate) const PAIR_TILES: usize = 2;
/// A tile kernel's output: up to `ROW_BLOCK_WIDE` rows of 16 outputs.
pub(crate) type TileOut = [[f32; TILE_N]; ROW_BLOCK_WIDE];

/// What a product does with each output as it leaves the kernel: the
/// element-wise step after a layer fused into the product's epilogue, so
/// the outputs are not read and written again by a pass of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Epilogue {
    /// `y = x · wᵀ`.
    Store,
    /// `y += x · wᵀ` (a residual add).
    Add,
    /// `y = relu(x · wᵀ)` (`ops::relu`: `+0.0` for anything not above 0).
    Relu,
}

/// How a product quantises its activations. The weights and their packed
/// layout are the same for both; the dot products are exact integers either
/// way, so every level gives the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activations {
    /// Per row (and group), `s_x = max|x| / 127`, values in [-127, 127]: the
    /// int8 kernels' own inputs.
    Int8,
    /// W8A16: the same per-row scheme with values in `[-L, L]`,
    /// `L = a16_limit(kp)` (16256 for any `k` up to 1040): activations 128x
    /// finer than `Int8`, for a layer whose inputs carry outliers an int8
    /// row scale would flatten (T5's FFN output projection). The sums stay
    /// within an i32 (at most `kp * L * 127`). Each input `c` may first be
    /// multiplied by a per-input scale `t_c` (the weights' columns divided
    /// by it when they were quantised), so that columns of very different
    /// sizes share one row scale without losing the small ones.
    Int16,
}

/// The largest `L` of [`Activations::Int16`]: 127 * 128, so that every value
/// splits exactly into `128 * hi + lo` with `hi` in [-127, 127] and `lo` in
/// [-64, 63], the two int8 halves the NEON kernel feeds to `sdot` (and
/// the VNNI kernel, sign bits flipped, to `vpdpbusd`).
pub const A16_MAX: i32 = 127 * 128;

/// `L` for inputs padded to `kp`: at most [`A16_MAX`], and small enough that
/// `kp` products of magnitude `L * 127` sum within an i32 (16256 up to
/// k = 1040, 8256 at 2048, 1651 at 10240; never below 127 as
/// `kp <= MAX_K`).
pub fn a16_limit(kp: usize) -> i32 {
    (i32::MAX as usize / (kp.max(1) * 127)).min(A16_MAX as usize) as i32
}

/// `k` rounded up to a multiple of [`K_BLOCK`].
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(K_BLOCK) * K_BLOCK
}

/// `n` rounded up to a multiple of [`TILE_N`].
pub fn padded_n(n: usize) -> usize {
    n.div_ceil(TILE_N) * TILE_N
}

/// Number of scale groups per row.
pub fn group_count(k: usize, group_size: usize) -> usize {
    if group_size == 0 {
        1
    } else {
        k.div_ceil(group_size)
    }
}

/// Refuses a scale group size the packed layout cannot hold: 0 (one scale
/// per row) or a multiple of the k-block.
pub fn check_group_size(group_size: usize) -> Result<(), String> {
    if group_size.is_multiple_of(K_BLOCK) {
        Ok(())
    } else {
        Err(format!(
            "int8: group_size {group_size} must be 0 or a multiple of {K_BLOCK}"
        ))
    }
}

fn check_dims(n: usize, k: usize, group_size: usize) -> Result<(), String> {
    if n == 0 || k == 0 {
        return Err(format!("int8: empty weight matrix {n}x{k}"));
    }
    if k > MAX_K {
        return Err(format!(
            "int8: k = {k} exceeds the supported maximum {MAX_K}"
        ));
    }
    check_group_size(group_size)?;
    // n comes from a file header: make sure every size derived from it below
    // (np, np * kp, groups * np) is representable before anything uses it.
    let too_large = || format!("int8: {n}x{k} is too large");
    let np = n.checked_next_multiple_of(TILE_N).ok_or_else(too_large)?;
    let bytes = np.checked_mul(padded_k(k)).ok_or_else(too_large)?;
    let sums = np
        .checked_mul(group_count(k, group_size))
        .ok_or_else(too_large)?;
    if bytes > isize::MAX as usize || sums > isize::MAX as usize / 4 {
        return Err(too_large());
    }
    Ok(())
}

/// Symmetric quantisation of one slice: returns `(scale, values)`. The model
/// every vectorised activation quantiser reproduces bit for bit.
pub(crate) fn quantize_slice(v: &[f32], out: &mut [i8]) -> f32 {
    // Written so both loops vectorise: `f32::round` is a libm call per value
    // on baseline x86-64, which made this a tenth of an int8 prefill.
    let amax = v.iter().fold(0.0f32, |a, &x| abs_max(a, x));
    let (scale, inv) = scales(amax);
    for (o, &x) in out.iter_mut().zip(v) {
        *o = quantize_one(x, inv);
    }
    scale
}

/// One step of the `max |x|` fold: NaN never wins a comparison, so it is skipped.
#[inline(always)]
pub(crate) fn abs_max(a: f32, x: f32) -> f32 {
    if x.abs() > a {
        x.abs()
    } else {
        a
    }
}

/// `(scale, 1 / scale)` for a slice whose largest magnitude is `amax`.
#[inline(always)]
pub(crate) fn scales(amax: f32) -> (f32, f32) {
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    (amax / 127.0, inv)
}

/// Adding and removing 1.5 * 2^23 rounds to nearest (ties to even) any
/// |y| <= 2^22; y is clamped to [-127, 127] first.
pub(crate) const MAGIC: f32 = 12_582_912.0;

/// One value: `round(clamp(x * inv))`, NaN to 0.
#[inline(always)]
pub(crate) fn quantize_one(x: f32, inv: f32) -> i8 {
    let y = (x * inv).clamp(-127.0, 127.0);
    // `as` saturates and maps NaN to 0, so this can never be UB or -128.
    ((y + MAGIC) - MAGIC) as i8
}

/// Quantises activations `x[m, k]` per row and per group, the way every int8
/// kernel does before its integer dot products. Returns `(q, s)` with `q` of
/// shape `[m, padded_k(k)]` (zero padded) and `s` of shape `[m, groups]`.
pub fn quantize_activations(
    x: &[f32],
    m: usize,
    k: usize,
    group_size: usize,
) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; m * padded_k(k)];
    let mut s = vec![0.0f32; m * group_count(k, group_size)];
    quantize_activations_into(x, m, k, group_size, &mut q, &mut s);
    (q, s)
}

/// [`quantize_activations`] into caller buffers (`q: [m, padded_k(k)]`,
/// `s: [m, groups]`, every value overwritten) at the active ISA level.
pub fn quantize_activations_into(
    x: &[f32],
    m: usize,
    k: usize,
    group_size: usize,
    q: &mut [i8],
    s: &mut [f32],
) {
    quantize_activations_with(active(), x, m, k, group_size, q, s)
}

/// [`quantize_activations_into`] at a chosen level; every level gives the
/// same bits as the scalar `quantize_slice`. Panics if the CPU cannot run
/// `isa`.
pub fn quantize_activations_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    group_size: usize,
    q: &mut [i8],
    s: &mut [f32],
) {
    quantize_rows(isa, x, m, k, group_size, q, s, false)
}

/// [`quantize_activations_with`], storing `q ^ 0x80` (`q + 128` as u8, the
/// VNNI kernel's input) when `flip`, which needs an AVX-512 level.
#[allow(clippy::too_many_arguments)]
fn quantize_rows(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    group_size: usize,
    q: &mut [i8],
    s: &mut [f32],
    flip: bool,
) {
    crate::f32::check_isa(isa);
    assert!(!flip || isa.has_avx512());
    let kp = padded_k(k);
    let groups = group_count(k, group_size);
    assert_eq!(x.len(), m * k, "int8: x shape");
    assert_eq!(q.len(), m * kp, "int8: q shape");
    assert_eq!(s.len(), m * groups, "int8: s shape");
    let gs = if group_size == 0 {
        k.max(1)
    } else {
        group_size
    };
    for i in 0..m {
        let (xr, qr) = (&x[i * k..(i + 1) * k], &mut q[i * kp..(i + 1) * kp]);
        qr[k..].fill(if flip { i8::MIN } else { 0 });
        for g in 0..groups {
            let (a, b) = (g * gs, ((g + 1) * gs).min(k));
            let (xs, qs) = (&xr[a..b], &mut qr[a..b]);
            s[i * groups + g] = quantize_slice_with(isa, xs, qs, flip);
        }
    }
}

/// [`quantize_slice`] at `isa` (the same bits at every level), storing
/// `q ^ 0x80` when `flip` (only the AVX-512 levels take it). `isa` must be a
/// level the CPU has: the active one, or one `check_isa` verified.
fn quantize_slice_with(isa: Isa, xs: &[f32], qs: &mut [i8], flip: bool) -> f32 {
    match isa {
        // SAFETY: the CPU has the level (contract above); qs is as long as xs.
        #[cfg(target_arch = "x86_64")]
        _ if isa.has_avx512() => unsafe { avx512::quantize_slice(xs, qs, flip) },
        // SAFETY: as above, with AVX2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::quantize_slice(xs, qs) },
        _ => {
            // Only the AVX-512 levels flip (the caller asserts it); saying so
            // here also keeps `flip` used where they are compiled out.
            debug_assert!(!flip, "int8: flipped activations at {isa:?}");
            quantize_slice(xs, qs)
        }
    }
}

/// Adds `Σ (x − s·v)²` of a group to `err2` in f64, four lanes (element `i`
/// to lane `i % 4`), the same bits at every level: each lane's operations
/// are the scalar ones in the same order (no fused multiply-add), only the
/// width of the vectors the compiler gives them differs.
fn err_sq_with(isa: Isa, xs: &[f32], qs: &[i8], s: f32, err2: &mut [f64; 4]) {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: every x86 level from Avx2 up has AVX2 (the caller runs at
        // a level the CPU has).
        return unsafe { err_sq_avx2(xs, qs, s, err2) };
    }
    let _ = isa;
    err_sq(xs, qs, s, err2)
}

/// [`err_sq`] compiled for AVX2: 4 f64 lanes a register instead of SSE2's
/// two (the serial loop was most of quantizing a 32k x 1024 head).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn err_sq_avx2(xs: &[f32], qs: &[i8], s: f32, err2: &mut [f64; 4]) {
    err_sq(xs, qs, s, err2)
}

#[inline(always)]
fn err_sq(xs: &[f32], qs: &[i8], s: f32, err2: &mut [f64; 4]) {
    let sd = s as f64;
    let sq = |x: f32, v: i8| {
        let d = x as f64 - sd * v as f64;
        d * d
    };
    // Whole lanes as arrays, so the compiler keeps the four sums in one
    // vector register (element by element it interleaved scalar and
    // two-lane code).
    let mut acc = *err2;
    for (xc, qc) in xs.chunks_exact(4).zip(qs.chunks_exact(4)) {
        let x: [f64; 4] = std::array::from_fn(|l| xc[l] as f64);
        let v: [f64; 4] = std::array::from_fn(|l| qc[l] as f64);
        for l in 0..4 {
            let d = x[l] - sd * v[l];
            acc[l] += d * d;
        }
    }
    let tail = xs.len() / 4 * 4;
    for (l, (&x, &v)) in xs[tail..].iter().zip(&qs[tail..]).enumerate() {
        acc[l] += sq(x, v);
    }
    *err2 = acc;
}

/// [`Activations::Int16`]'s quantisation of `x[m, k]` at a chosen level, in
/// order (`q16: [m, padded_k(k)]`, `s: [m, groups]`, every value
/// overwritten): the same bits at every level. Panics if the CPU cannot run
/// `isa`.
#[allow(clippy::too_many_arguments)]
pub fn quantize_activations16_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    group_size: usize,
    in_scales: &[f32],
    q16: &mut [i16],
    s: &mut [f32],
) {
    crate::f32::check_isa(isa);
    let mut row = Vec::new();
    quantize_rows16(isa, x, m, k, group_size, in_scales, q16, s, false, &mut row)
}

/// [`Activations::Int16`]'s quantisation of `x[m, k]` into `q16: [m, kp]`
/// (zero padded) and `s: [m, groups]`: each row first multiplied by
/// `in_scales` (`[k]`; empty: by 1) in f32, then per row and group
/// `s = max|x| / L`, `v = round(clamp(x * (L / max|x|), -L, L))`, NaN to 0.
/// Each k-block's values are stored `(x0, x2, x1, x3)` when `pairs` (the
/// order the AVX2 kernel broadcasts, as `widen_pairs` gives the int8 form),
/// in order otherwise. The same bits at every level. `row` is room for one
/// scaled row.
#[allow(clippy::too_many_arguments)]
fn quantize_rows16(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    group_size: usize,
    in_scales: &[f32],
    q16: &mut [i16],
    s: &mut [f32],
    pairs: bool,
    row: &mut Vec<f32>,
) {
    let kp = padded_k(k);
    let groups = group_count(k, group_size);
    assert!(
        in_scales.is_empty() || in_scales.len() == k,
        "int8: in_scales shape"
    );
    assert_eq!(x.len(), m * k, "int8: x shape");
    assert_eq!(q16.len(), m * kp, "int8: q16 shape");
    assert_eq!(s.len(), m * groups, "int8: s shape");
    let gs = if group_size == 0 {
        k.max(1)
    } else {
        group_size
    };
    let limit = a16_limit(kp) as f32;
    let x86 = isa.has_avx2();
    // The AVX-512 kernel multiplies by the input scales as it reads.
    #[cfg(target_arch = "x86_64")]
    let avx512 = isa.has_avx512();
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    for i in 0..m {
        let (mut xr, qr) = (&x[i * k..(i + 1) * k], &mut q16[i * kp..(i + 1) * kp]);
        if !in_scales.is_empty() && !avx512 {
            row.clear();
            row.extend(xr.iter().zip(in_scales).map(|(&v, &t)| v * t));
            xr = row;
        }
        qr[k..].fill(0);
        for g in 0..groups {
            let (a, b) = (g * gs, ((g + 1) * gs).min(k));
            let (xs, qs) = (&xr[a..b], &mut qr[a..b]);
            s[i * groups + g] = match x86 {
                // SAFETY: check_isa ran, so the level's features are there;
                // qs and the input scales' range are as long as xs.
                #[cfg(target_arch = "x86_64")]
                true if avx512 => unsafe {
                    let by = if in_scales.is_empty() {
                        &[][..]
                    } else {
                        &in_scales[a..b]
                    };
                    avx512::quantize_slice16(xs, by, qs, limit)
                },
                // SAFETY: every x86 level from Avx2 up has AVX2; as above.
                #[cfg(target_arch = "x86_64")]
                true => unsafe { avx2::quantize_slice16(xs, qs, limit) },
                _ => quantize_slice16(xs, qs, limit),
            };
        }
        if pairs {
            // The group boundaries are k-block boundaries: the padding,
            // written above, takes part in the last block's order.
            #[cfg(target_arch = "x86_64")]
            // SAFETY: x86 levels alone ask for pairs; they have AVX2.
            unsafe {
                avx2::swap_pairs(qr)
            };
            #[cfg(not(target_arch = "x86_64"))]
            scalar::swap_pairs(qr);
        }
    }
}

/// `(scale, 1 / scale)` of a 16-bit slice whose largest magnitude is `amax`.
#[inline(always)]
pub(crate) fn scales16(amax: f32, limit: f32) -> (f32, f32) {
    let inv = if amax > 0.0 { limit / amax } else { 0.0 };
    (amax / limit, inv)
}

/// One slice at 16 bits, in order: the model the AVX2 twin matches bit for
/// bit (as `quantize_slice` is for int8).
pub(crate) fn quantize_slice16(v: &[f32], out: &mut [i16], limit: f32) -> f32 {
    let amax = v.iter().fold(0.0f32, |a, &x| abs_max(a, x));
    let (scale, inv) = scales16(amax, limit);
    for (o, &x) in out.iter_mut().zip(v) {
        *o = quantize_one16(x, inv, limit);
    }
    scale
}

/// One value: `round(clamp(x * inv, -limit, limit))`, NaN to 0.
#[inline(always)]
pub(crate) fn quantize_one16(x: f32, inv: f32, limit: f32) -> i16 {
    let y = (x * inv).clamp(-limit, limit);
    // `as` saturates and maps NaN to 0; |y| <= A16_MAX < 2^22.
    ((y + MAGIC) - MAGIC) as i16
}

/// Splits in-order 16-bit activations (`|v| <= A16_MAX`) into the int8
/// halves `v = 128 * hi + lo`, `hi = (v + 64) >> 7` in [-127, 127] and
/// `lo` in [-64, 63], each as long as `q16`. With `flip` each byte's sign
/// bit is flipped (`+ 128` as u8), the VNNI kernel's input (the AMX kernel
/// takes them signed).
fn split_halves(isa: Isa, q16: &[i16], hi: &mut [i8], lo: &mut [i8], flip: bool) {
    #[cfg(target_arch = "x86_64")]
    if isa.has_vnni() {
        // SAFETY: check_isa verified the level's AVX-512 F/BW; the shape is
        // asserted inside.
        return unsafe { avx512::split_halves(q16, hi, lo, flip) };
    }
    debug_assert!(!flip, "int8: flipped halves at {isa:?}");
    let len = q16.len();
    assert!(
        hi.len() == len && lo.len() == len,
        "int8: split halves shape"
    );
    for ((h, l), &v) in hi.iter_mut().zip(lo.iter_mut()).zip(q16) {
        (*h, *l) = split_one(v);
    }
}

/// One value's halves `(hi, lo)`, as [`split_halves`] defines them.
#[inline(always)]
pub(crate) fn split_one(v: i16) -> (i8, i8) {
    let v = v as i32;
    let top = (v + 64) >> 7;
    (top as i8, (v - (top << 7)) as i8)
}

/// Rows a task quantises when a product's activations are quantised on the
/// pool ([`run_many`]).
const QUANT_ROWS: usize = 16;

/// Quantised activations, their scales, the AVX2 pair kernel's i16 copy (or
/// the 16-bit activations), and one row scaled by a layer's input scales.
/// The activations start on a cache line ([`crate::aligned`]), so each row
/// (`kp` bytes, a multiple of 4) and each 64-byte tile row does too when
/// `kp` is a multiple of 64 (the tiles' shapes).
type Scratch = (AlignedBuf<i8>, Vec<f32>, AlignedBuf<i16>, Vec<f32>);

thread_local! {
    /// Activation buffers reused across calls on this thread, so a decode
    /// step allocates nothing. Taken out while in use (not borrowed): a call
    /// nested through rayon work stealing then finds them empty and grows its
    /// own instead of panicking.
    static SCRATCH: std::cell::Cell<Scratch> = const { std::cell::Cell::new((AlignedBuf::new(), Vec::new(), AlignedBuf::new(), Vec::new())) };
}

/// The four parts of a packed int8 matrix as memory to quantize into
/// ([`PackedInt8::quantize_into`]): a caller's own buffer (the engine's
/// one buffer a stack). Lengths as [`part_lens`] says; zeroed.
pub struct Int8PartsMut<'a> {
    /// The packed values, padding included.
    pub data: &'a mut [i8],
    /// A scale per group and padded row.
    pub scales: &'a mut [f32],
    /// Each group's and padded row's sum of values.
    pub row_sums: &'a mut [i32],
    /// Each row's quantization error bound.
    pub err_norms: &'a mut [f32],
}

/// The lengths, in values, of an `n x k` matrix's data, scales, row sums
/// and error norms with `group_size` (0: one scale a row).
pub fn part_lens(n: usize, k: usize, group_size: usize) -> [usize; 4] {
    let (kp, np) = (padded_k(k), padded_n(n));
    let groups = group_count(k, group_size);
    [np * kp, groups * np, groups * np, n]
}

/// An owned packed int8 weight matrix, as produced by [`PackedInt8::quantize`].
#[derive(Clone, Debug)]
pub struct PackedInt8 {
    n: usize,
    k: usize,
    group_size: usize,
    /// On a cache line ([`crate::aligned`]): each 64-byte piece the kernels
    /// read is then one line.
    data: AlignedBuf<i8>,
    scales: Vec<f32>,
    row_sums: Vec<i32>,
    err_norms: Vec<f32>,
}

impl PackedInt8 {
    /// Quantises `w[n, k]` (row-major, out x in). `group_size` is 0 (one scale per
    /// row) or a multiple of 4. Errors on empty or oversized shapes, a bad group
    /// size, a length mismatch or non-finite weights.
    /// `w` is f32, or f16 / bf16 widened a row at a time ([`Source`]).
    pub fn quantize<W: Source + ?Sized>(
        w: &W,
        n: usize,
        k: usize,
        group_size: usize,
    ) -> Result<Self, String> {
        check_dims(n, k, group_size)?;
        check_len(w, n, k)?;
        Self::quantize_divided(w, n, k, group_size, None)
    }

    /// [`Self::quantize`] into `parts` (lengths as [`part_lens`] says,
    /// zeroed) instead of memory of its own: the same values.
    pub fn quantize_into<W: Source + ?Sized>(
        w: &W,
        n: usize,
        k: usize,
        group_size: usize,
        parts: Int8PartsMut<'_>,
    ) -> Result<(), String> {
        check_dims(n, k, group_size)?;
        check_into(w, n, k, group_size, &parts)?;
        quantize_parts(w, n, k, group_size, None, parts)
    }

    /// [`Self::quantize_a16`] into `parts` (as [`Self::quantize_into`]);
    /// returns the input scales.
    pub fn quantize_a16_into<W: Source + ?Sized>(
        w: &W,
        n: usize,
        k: usize,
        group_size: usize,
        parts: Int8PartsMut<'_>,
    ) -> Result<Vec<f32>, String> {
        check_dims(n, k, group_size)?;
        check_into(w, n, k, group_size, &parts)?;
        let t = input_scales(w, n, k);
        quantize_parts(w, n, k, group_size, Some(&t), parts)?;
        Ok(t)
    }

    /// [`Self::quantize`] of `w` with column `c` divided by `div[c]` first.
    /// Dimensions already checked.
    fn quantize_divided<W: Source + ?Sized>(
        w: &W,
        n: usize,
        k: usize,
        group_size: usize,
        div: Option<&[f32]>,
    ) -> Result<Self, String> {
        let [d, sc, rs, en] = part_lens(n, k, group_size);
        let mut data = AlignedBuf::<i8>::zeroed(d);
        let mut scales = vec![0.0f32; sc];
        let mut row_sums = vec![0i32; rs];
        let mut err_norms = vec![0.0f32; en];
        let parts = Int8PartsMut {
            data: &mut data,
            scales: &mut scales,
            row_sums: &mut row_sums,
            err_norms: &mut err_norms,
        };
        quantize_parts(w, n, k, group_size, div, parts)?;
        Ok(PackedInt8 {
            n,
            k,
            group_size,
            data,
            scales,
            row_sums,
            err_norms,
        })
    }

    /// Takes ownership of parts (e.g. read from a file), validated as
    /// [`Int8View::from_parts`] does; `data` is copied onto a cache line.
    pub fn from_parts(
        n: usize,
        k: usize,
        group_size: usize,
        data: Vec<i8>,
        scales: Vec<f32>,
        row_sums: Vec<i32>,
        err_norms: Vec<f32>,
    ) -> Result<Self, String> {
        Int8View::from_parts(n, k, group_size, &data, &scales, &row_sums, &err_norms)?;
        Ok(PackedInt8 {
            n,
            k,
            group_size,
            data: AlignedBuf::from_slice(&data),
            scales,
            row_sums,
            err_norms,
        })
    }

    /// [`Activations::Int16`]'s weights: `w[n, k]` with column `c` divided
    /// by `t_c`, the power of two at or above the column's largest
    /// magnitude (1 for an all-zero column), quantised as [`Self::quantize`]
    /// does; returns them with `t`, the input scales [`linear_a16`] takes.
    /// Every column then tops out in (1/2, 1], so a column far smaller than
    /// its row's largest (the weights that read an outlier channel) keeps
    /// its own resolution; the activations, at 16 bits, carry `x_c * t_c`
    /// instead. Powers of two keep both rescalings exact.
    pub fn quantize_a16<W: Source + ?Sized>(
        w: &W,
        n: usize,
        k: usize,
        group_size: usize,
    ) -> Result<(Self, Vec<f32>), String> {
        check_dims(n, k, group_size)?;
        check_len(w, n, k)?;
        let t = input_scales(w, n, k);
        Ok((Self::quantize_divided(w, n, k, group_size, Some(&t))?, t))
    }

    /// A borrowed view, the form every kernel takes.
    pub fn view(&self) -> Int8View<'_> {
        Int8View {
            n: self.n,
            k: self.k,
            group_size: self.group_size,
            data: &self.data,
            scales: &self.scales,
            row_sums: &self.row_sums,
            err_norms: &self.err_norms,
        }
    }
}

/// Refuses a `w` of the wrong length for an `n x k` matrix.
fn check_len<W: Source + ?Sized>(w: &W, n: usize, k: usize) -> Result<(), String> {
    if w.len() != n * k {
        return Err(format!("int8: w has {} values, expected {n}x{k}", w.len()));
    }
    Ok(())
}

/// Refuses a `w` or `parts` of the wrong length for an `n x k` matrix.
fn check_into<W: Source + ?Sized>(
    w: &W,
    n: usize,
    k: usize,
    group_size: usize,
    p: &Int8PartsMut<'_>,
) -> Result<(), String> {
    check_len(w, n, k)?;
    let got = [
        p.data.len(),
        p.scales.len(),
        p.row_sums.len(),
        p.err_norms.len(),
    ];
    if got != part_lens(n, k, group_size) {
        return Err(format!(
            "int8: parts of {got:?} values for {n}x{k} (group size {group_size})"
        ));
    }
    Ok(())
}

/// Quantizes `w[n, k]` into `parts` (lengths checked, padding zero), column
/// `c` divided by `div[c]` first when given: row by row in each task
/// (`quantize_a16`'s divided copy of the whole matrix was a
/// single-threaded third of a converted model's load).
fn quantize_parts<W: Source + ?Sized>(
    w: &W,
    n: usize,
    k: usize,
    group_size: usize,
    div: Option<&[f32]>,
    parts: Int8PartsMut<'_>,
) -> Result<(), String> {
    let (kp, np) = (padded_k(k), padded_n(n));
    let groups = group_count(k, group_size);
    let gs = if group_size == 0 { k } else { group_size };
    let Int8PartsMut {
        data,
        scales,
        row_sums,
        err_norms,
    } = parts;
    // One task per tile of TILE_N rows (a model load quantizes every
    // matrix here, the LM head's 32128 rows included): a row's values
    // never depend on another's, so the bits are those of a serial pass.
    let ptrs = (
        par::SyncPtr(data.as_mut_ptr()),
        par::SyncPtr(scales.as_mut_ptr()),
        par::SyncPtr(row_sums.as_mut_ptr()),
        par::SyncPtr(err_norms.as_mut_ptr()),
    );
    let parallel = par::worth_parallel_macs(n * k);
    let isa = active();
    let bad = AtomicUsize::new(usize::MAX);
    crate::pool::for_each(np / TILE_N, parallel, |t| {
        let (dp, sp, rp, ep) = ptrs;
        let mut q = vec![0i8; k];
        let mut divided = vec![0.0f32; if div.is_some() { k } else { 0 }];
        let mut widened = Vec::new();
        for j in t * TILE_N..((t + 1) * TILE_N).min(n) {
            let given = w.row(j, k, &mut widened);
            let row = match div {
                Some(d) => {
                    for ((o, &v), &tc) in divided.iter_mut().zip(given).zip(d) {
                        *o = v / tc;
                    }
                    &divided[..]
                }
                None => given,
            };
            // Four partial sums: one f64 chain per row was most of a
            // converted model's load (the order only moves the last bits
            // of a bound that is rounded up to f32 anyway).
            let mut err2 = [0.0f64; 4];
            for g in 0..groups {
                let (a, b) = (g * gs, ((g + 1) * gs).min(k));
                // The activations' kernel: the same bits at every level.
                let s = quantize_slice_with(isa, &row[a..b], &mut q[a..b], false);
                let sum: i32 = q[a..b].iter().map(|&v| v as i32).sum();
                // SAFETY: g < groups and j < n <= np, so g * np + j is
                // inside scales and row_sums (groups * np long); row j
                // belongs to this task alone.
                unsafe {
                    *sp.get().add(g * np + j) = s;
                    *rp.get().add(g * np + j) = sum;
                }
                err_sq_with(isa, &row[a..b], &q[a..b], s, &mut err2);
            }
            let err2 = (err2[0] + err2[1]) + (err2[2] + err2[3]);
            // A row with an infinity or a NaN, and only such a row, has
            // an error that is not finite (an infinity makes the scale
            // infinite and every `s * 0` NaN; a NaN is its own error):
            // the check costs no pass of its own. Checked row by row on
            // every thread; the smallest bad index is reported.
            if !err2.is_finite() {
                let i = given.iter().position(|v| !v.is_finite()).unwrap_or(0);
                bad.fetch_min(j * k + i, Ordering::Relaxed);
                continue;
            }
            // SAFETY: j < n = err_norms.len(); row j is this task's alone.
            unsafe { *ep.get().add(j) = round_up_f32(err2.sqrt()) };
            // Row j's k-block kb is at packed_index(j, 0, kp) + kb *
            // TILE_N * K_BLOCK: one pointer step a block.
            let row_at = packed_index(j, 0, kp);
            let mut quads = q.chunks_exact(K_BLOCK);
            for (kb, quad) in (&mut quads).enumerate() {
                let b = <[i8; K_BLOCK]>::try_from(quad).unwrap_or_default();
                // SAFETY: row_at + kb * TILE_N * K_BLOCK = packed_index(j,
                // 4 kb, kp), and + 4 <= np * kp = data.len() for j < np, 4
                // kb < kp; the bytes lie in tile j / TILE_N = t, [t *
                // TILE_N * kp, (t + 1) * TILE_N * kp), which no other task
                // writes; `q` is a separate Vec.
                unsafe {
                    let at = dp.get().add(row_at + kb * TILE_N * K_BLOCK);
                    at.cast::<[i8; K_BLOCK]>().write_unaligned(b);
                }
            }
            let rest = quads.remainder();
            if !rest.is_empty() {
                // SAFETY: as above for the last, partial k-block (k / 4 <
                // kp / 4 blocks), `rest.len()` < 4 bytes of it.
                unsafe {
                    let at = dp.get().add(packed_index(j, k / K_BLOCK * K_BLOCK, kp));
                    std::ptr::copy_nonoverlapping(rest.as_ptr(), at, rest.len());
                }
            }
        }
    });
    let i = bad.into_inner();
    if i != usize::MAX {
        return Err(format!("int8: weight {i} is not finite ({})", w.at(i)));
    }
    Ok(())
}

/// W8A16's input scales of `w[n, k]`: per column, the power of two at or
/// above its largest magnitude.
fn input_scales<W: Source + ?Sized>(w: &W, n: usize, k: usize) -> Vec<f32> {
    column_abs_max(w, n, k)
        .iter()
        .map(|&c| pow2_at_least(c))
        .collect()
}

/// The largest magnitude of each column of `w[n, k]` (NaN skipped, as
/// [`abs_max`] does), over row ranges in parallel: a maximum is the same in
/// any order, so the split changes no bit.
fn column_abs_max<W: Source + ?Sized>(w: &W, n: usize, k: usize) -> Vec<f32> {
    const ROWS: usize = 64;
    let tasks = n.div_ceil(ROWS);
    let partial = crate::pool::map(tasks, 1, par::worth_parallel_macs(n * k), |t| {
        let mut mine = vec![0.0f32; k];
        let mut widened = Vec::new();
        for j in t * ROWS..((t + 1) * ROWS).min(n) {
            let row = w.row(j, k, &mut widened);
            for (c, &v) in mine.iter_mut().zip(row) {
                *c = abs_max(*c, v);
            }
        }
        mine
    });
    let mut colmax = vec![0.0f32; k];
    for p in &partial {
        for (c, &v) in colmax.iter_mut().zip(p) {
            *c = abs_max(*c, v);
        }
    }
    colmax
}

/// The smallest power of two at or above `v`, kept a normal f32
/// (2^-126..=2^127); 1 for 0 or a non-finite `v` (whose weights quantising
/// refuses anyway).
fn pow2_at_least(v: f32) -> f32 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let e = (v as f64).log2().ceil().clamp(-126.0, 127.0) as i32;
    // log2 of an exact power may round either way: settle on the smallest
    // power of two not below v.
    let mut t = 2f32.powi(e);
    if t / 2.0 >= v && e > -126 {
        t /= 2.0;
    }
    if t < v && e < 127 {
        t *= 2.0;
    }
    t
}

/// Refuses input scales a file cannot have come from
/// [`PackedInt8::quantize_a16`] with: a length other than `k`, or a value
/// that is not a positive normal power of two.
pub fn check_input_scales(t: &[f32], k: usize) -> Result<(), String> {
    if t.len() != k {
        return Err(format!("{} input scales for k = {k}", t.len()));
    }
    match t
        .iter()
        .position(|&v| !(v.is_normal() && v > 0.0 && (v.to_bits() & 0x7f_ffff) == 0))
    {
        Some(c) => Err(format!(
            "input scale {c} is {}, not a positive power of two",
            t[c]
        )),
        None => Ok(()),
    }
}

/// The smallest f32 not below `v` (so a stored error norm stays an upper bound).
fn round_up_f32(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v {
        f.next_up()
    } else {
        f
    }
}

/// Where `p[j][kk]` lives in the packed data.
#[inline]
pub fn packed_index(j: usize, kk: usize, kp: usize) -> usize {
    ((j / TILE_N) * (kp / K_BLOCK) + kk / K_BLOCK) * (TILE_N * K_BLOCK)
        + (j % TILE_N) * K_BLOCK
        + kk % K_BLOCK
}

/// Reinterprets bytes (e.g. an mmapped file section) as int8 values.
pub fn i8_from_bytes(b: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is
    // valid for both; the lifetime is carried over.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const i8, b.len()) }
}

/// A borrowed packed int8 matrix (possibly pointing into mmapped bytes). Only
/// constructible through validation, so kernels can trust every length.
#[derive(Clone, Copy, Debug)]
pub struct Int8View<'a> {
    n: usize,
    k: usize,
    group_size: usize,
    data: &'a [i8],
    scales: &'a [f32],
    row_sums: &'a [i32],
    err_norms: &'a [f32],
}

impl<'a> Int8View<'a> {
    /// Validates parts that may come from an untrusted file: every length, the
    /// value range (no -128), zero padding, finite non-negative scales and norms,
    /// and that `row_sums` really are the row sums (the VNNI path relies on them;
    /// a wrong one would silently differ from the other levels). One pass over
    /// the data, a 64-byte k-block at a time (the scan is most of a quantized
    /// model's start-up); never panics, returns the first thing that is wrong.
    pub fn from_parts(
        n: usize,
        k: usize,
        group_size: usize,
        data: &'a [i8],
        scales: &'a [f32],
        row_sums: &'a [i32],
        err_norms: &'a [f32],
    ) -> Result<Self, String> {
        let view = Self::from_validated_parts(n, k, group_size, data, scales, row_sums, err_norms)?;
        format::scan(
            active(),
            n,
            k,
            group_size,
            data,
            scales,
            row_sums,
            err_norms,
        )?;
        Ok(view)
    }

    /// [`Int8View::from_parts`] over raw little-endian bytes, e.g. the four
    /// sections of a mapped file (`data` as i8, `scales` and `err_norms` as
    /// f32, `row_sums` as i32): refused if an f32/i32 part is misaligned or not
    /// a whole number of values, then validated in full.
    pub fn from_bytes(
        n: usize,
        k: usize,
        group_size: usize,
        data: &'a [u8],
        scales: &'a [u8],
        row_sums: &'a [u8],
        err_norms: &'a [u8],
    ) -> Result<Self, String> {
        let (d, s, r, e) =
            format::cast_parts(data, scales, row_sums, err_norms).ok_or(format::BAD_BYTES)?;
        Self::from_parts(n, k, group_size, d, s, r, e)
    }

    /// Re-borrows bytes that already passed [`Int8View::from_bytes`] (kept
    /// immutable since), checking only alignment and lengths, as
    /// [`Int8View::from_validated_parts`] does.
    pub fn from_validated_bytes(
        n: usize,
        k: usize,
        group_size: usize,
        data: &'a [u8],
        scales: &'a [u8],
        row_sums: &'a [u8],
        err_norms: &'a [u8],
    ) -> Result<Self, String> {
        let (d, s, r, e) =
            format::cast_parts(data, scales, row_sums, err_norms).ok_or(format::BAD_BYTES)?;
        Self::from_validated_parts(n, k, group_size, d, s, r, e)
    }

    /// Re-borrows parts that already passed [`Int8View::from_parts`] (the same
    /// lengths and bytes, kept immutable since), checking only the lengths:
    /// the O(n·k) scan of the data is done once at load, not per call. Memory
    /// safety rests on the lengths alone, which are checked here.
    pub fn from_validated_parts(
        n: usize,
        k: usize,
        group_size: usize,
        data: &'a [i8],
        scales: &'a [f32],
        row_sums: &'a [i32],
        err_norms: &'a [f32],
    ) -> Result<Self, String> {
        check_dims(n, k, group_size)?;
        let (kp, np) = (padded_k(k), padded_n(n));
        let groups = group_count(k, group_size);
        let expect = |what: &str, got: usize, want: usize| {
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "int8 {n}x{k}/{group_size}: {what} has {got} values, expected {want}"
                ))
            }
        };
        expect("data", data.len(), np * kp)?;
        expect("scales", scales.len(), groups * np)?;
        expect("row_sums", row_sums.len(), groups * np)?;
        expect("err_norms", err_norms.len(), n)?;
        Ok(Int8View {
            n,
            k,
            group_size,
            data,
            scales,
            row_sums,
            err_norms,
        })
    }

    /// Output features (weight rows).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Scale group along k (0: one scale per row).
    pub fn group_size(&self) -> usize {
        self.group_size
    }
    /// Scale groups per row.
    pub fn groups(&self) -> usize {
        group_count(self.k, self.group_size)
    }
    /// k rounded up to the k-block.
    pub fn padded_k(&self) -> usize {
        padded_k(self.k)
    }
    /// n rounded up to the tile.
    pub fn padded_n(&self) -> usize {
        padded_n(self.n)
    }
    /// The packed values (see the module docs for the layout).
    pub fn data(&self) -> &'a [i8] {
        self.data
    }
    /// The packed values as bytes, for writing a file.
    pub fn data_bytes(&self) -> &'a [u8] {
        // SAFETY: same size, alignment and validity for i8 and u8.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr() as *const u8, self.data.len()) }
    }
    /// `[groups, padded_n]` scales.
    pub fn scales(&self) -> &'a [f32] {
        self.scales
    }
    /// `[groups, padded_n]` sums of the int8 values.
    pub fn row_sums(&self) -> &'a [i32] {
        self.row_sums
    }
    /// `[n]` upper bounds on `||w_j - dequantize_row(j)||_2` (against the weights
    /// that were quantised).
    pub fn err_norms(&self) -> &'a [f32] {
        self.err_norms
    }
    /// Upper bound on the L2 quantisation error of row `j`.
    pub fn row_error_norm(&self, j: usize) -> f32 {
        self.err_norms[j]
    }

    /// Inputs `[a, b)` of group `g`, in k-blocks (within the padded row).
    #[inline]
    pub(crate) fn group_blocks(&self, g: usize) -> (usize, usize) {
        let kp = self.padded_k();
        if self.group_size == 0 {
            (0, kp / K_BLOCK)
        } else {
            let a = g * self.group_size;
            (a / K_BLOCK, ((a + self.group_size).min(kp)) / K_BLOCK)
        }
    }

    /// Row `j` as the kernels see it: `s_w[g] * p[kk]` in f32, length `k`.
    pub fn dequantize_row(&self, j: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.k];
        self.dequantize_row_into(j, &mut out);
        out
    }

    /// [`Int8View::dequantize_row`] into `out` (length `k`).
    pub fn dequantize_row_into(&self, j: usize, out: &mut [f32]) {
        assert!(j < self.n, "dequantize_row: row {j} of {}", self.n);
        assert_eq!(out.len(), self.k, "dequantize_row: out length");
        let (kp, np) = (self.padded_k(), self.padded_n());
        let gs = if self.group_size == 0 {
            kp
        } else {
            self.group_size
        };
        // Row j's 4 values of each k-block sit together, one k-block every 64
        // bytes (the module docs' layout): walk them instead of recomputing
        // the packed index per value (the encoder's embedding lookup is this).
        let base = packed_index(j, 0, kp);
        for (kb, o4) in out.chunks_mut(K_BLOCK).enumerate() {
            let src = &self.data[base + kb * TILE_N * K_BLOCK..][..o4.len()];
            let s = self.scales[(kb * K_BLOCK / gs) * np + j];
            for (o, &q) in o4.iter_mut().zip(src) {
                *o = s * q as f32;
            }
        }
    }
}

/// `y[m, n] = x[m, k] · wᵀ` at the active ISA level.
pub fn linear(x: &[f32], m: usize, k: usize, w: &Int8View<'_>, y: &mut [f32]) {
    linear_with(active(), x, m, k, w, y)
}

/// `y[m, n] = x[m, k] · wᵀ` at a chosen level. Panics if `x`/`y` disagree with the
/// view's shape (a caller bug, not data) or the CPU cannot run `isa`;
/// `Isa::Neon` off aarch64 runs the NEON emulation.
pub fn linear_with(isa: Isa, x: &[f32], m: usize, k: usize, w: &Int8View<'_>, y: &mut [f32]) {
    run(isa, x, m, k, w, y, Epilogue::Store)
}

/// `y[m, n] = relu(x[m, k] · wᵀ)` (a feed-forward block's hidden layer) at
/// the active level: [`linear`] followed by [`crate::ops::relu`] on every
/// output, bit for bit, in the product's epilogue instead of a pass over
/// `y` of its own.
pub fn linear_relu(x: &[f32], m: usize, k: usize, w: &Int8View<'_>, y: &mut [f32]) {
    linear_relu_with(active(), x, m, k, w, y)
}

/// [`linear_relu`] at a chosen level.
pub fn linear_relu_with(isa: Isa, x: &[f32], m: usize, k: usize, w: &Int8View<'_>, y: &mut [f32]) {
    run(isa, x, m, k, w, y, Epilogue::Relu)
}

/// `y[m, n] += x[m, k] · wᵀ` (a residual add fused into the epilogue) at the
/// active level. Bit-identical to [`linear`] into a temporary followed by
/// `y += tmp`, without the temporary or the second pass over y.
pub fn linear_add(x: &[f32], m: usize, k: usize, w: &Int8View<'_>, y: &mut [f32]) {
    linear_add_with(active(), x, m, k, w, y)
}

/// [`linear_add`] at a chosen level.
pub fn linear_add_with(isa: Isa, x: &[f32], m: usize, k: usize, w: &Int8View<'_>, y: &mut [f32]) {
    run(isa, x, m, k, w, y, Epilogue::Add)
}

fn run(isa: Isa, x: &[f32], m: usize, k: usize, w: &Int8View<'_>, y: &mut [f32], ep: Epilogue) {
    run_many(isa, x, m, k, &[w], &mut [y], ep, Activations::Int8, &[])
}

/// `y[m, n] = (x[m, k] ∘ in_scales) · wᵀ` with [`Activations::Int16`]
/// (W8A16) at the active level: int8 weights, activations scaled per input
/// (`in_scales: [k]`, or empty for none) and quantised to 16 bits.
pub fn linear_a16(
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8View<'_>,
    in_scales: &[f32],
    y: &mut [f32],
) {
    linear_a16_with(active(), x, m, k, w, in_scales, y)
}

/// [`linear_a16`] at a chosen level (the same bits at every level).
pub fn linear_a16_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8View<'_>,
    in_scales: &[f32],
    y: &mut [f32],
) {
    run_a16(isa, x, m, k, w, in_scales, y, Epilogue::Store)
}

/// `y[m, n] += (x[m, k] ∘ in_scales) · wᵀ` ([`linear_a16`] with a residual
/// add fused into the epilogue) at the active level: bit-identical to
/// [`linear_a16`] into a temporary followed by `y += tmp`.
pub fn linear_a16_add(
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8View<'_>,
    in_scales: &[f32],
    y: &mut [f32],
) {
    linear_a16_add_with(active(), x, m, k, w, in_scales, y)
}

/// [`linear_a16_add`] at a chosen level.
pub fn linear_a16_add_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8View<'_>,
    in_scales: &[f32],
    y: &mut [f32],
) {
    run_a16(isa, x, m, k, w, in_scales, y, Epilogue::Add)
}

/// [`run`] with [`Activations::Int16`] and the input scales.
#[allow(clippy::too_many_arguments)]
fn run_a16(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8View<'_>,
    in_scales: &[f32],
    y: &mut [f32],
    ep: Epilogue,
) {
    run_many(
        isa,
        x,
        m,
        k,
        &[w],
        &mut [y],
        ep,
        Activations::Int16,
        in_scales,
    )
}

/// `y_i = x · w_iᵀ` for several weights that read the same input (an
/// attention layer's Q, K and V) at the active level: `x` is quantised once
/// instead of once per weight. Bit-identical to separate [`linear`] calls.
/// Panics if the weights disagree on `k` or group size.
pub fn linear_many(x: &[f32], m: usize, k: usize, ws: &[&Int8View<'_>], ys: &mut [&mut [f32]]) {
    linear_many_with(active(), x, m, k, ws, ys)
}

/// [`linear_many`] at a chosen level.
pub fn linear_many_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    ws: &[&Int8View<'_>],
    ys: &mut [&mut [f32]],
) {
    run_many(
        isa,
        x,
        m,
        k,
        ws,
        ys,
        Epilogue::Store,
        Activations::Int8,
        &[],
    )
}

#[allow(clippy::too_many_arguments)]
fn run_many(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    ws: &[&Int8View<'_>],
    ys: &mut [&mut [f32]],
    ep: Epilogue,
    acts: Activations,
    in_scales: &[f32],
) {
    crate::f32::check_isa(isa);
    assert_eq!(
        ws.len(),
        ys.len(),
        "int8 linear_many: one output per weight"
    );
    let Some(gs) = ws.first().map(|w| w.group_size) else {
        return;
    };
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert_eq!(k, w.k, "int8 linear: x has k = {k}, weights have {}", w.k);
        assert_eq!(w.group_size, gs, "int8 linear_many: group sizes differ");
        assert_eq!(y.len(), m * w.n, "int8 linear: y shape");
    }
    assert_eq!(x.len(), m * k, "int8 linear: x shape");
    if m == 0 {
        return;
    }
    let (kp, groups) = (padded_k(k), group_count(k, gs));
    let (mut xq, mut sx, mut x16, mut row) = SCRATCH.take();
    // The activations get zero rows up to a multiple of 16 for the tiles.
    let tiles = ws.iter().all(|w| amx_takes(isa, m, w));
    #[cfg(target_arch = "x86_64")]
    let rows = if tiles { amx::padded_rows(m) } else { m };
    #[cfg(not(target_arch = "x86_64"))]
    let rows = m;
    // NEON's, VNNI's and AMX's 16-bit activations take two int8 halves;
    // every other use one.
    let halves =
        acts == Activations::Int16 && (isa.has_vnni() || (isa == Isa::Neon && neon::usable()));
    // vpdpbusd takes unsigned activations: flip the sign bits (x + 128)
    // as they are quantised rather than on every broadcast in the tile
    // loop (measured ~5% on int8 prefill). The tiles' `tdpbssd` is signed.
    let flipped = isa.has_vnni() && !tiles;
    let q_len = if halves { 2 * rows * kp } else { rows * kp };
    if xq.len() < q_len {
        xq.resize_zeroed(q_len);
    }
    if sx.len() < m * groups {
        sx.resize(m * groups, 0.0);
    }
    // Quantised by ranges of rows on the pool when the product runs there:
    // done serially it was a tenth of W3 (`perf`), one thread working while
    // the other waited. Each row's bits are the same either way.
    let n_all: usize = ws.iter().map(|w| w.n).sum();
    let quant_par = m >= 2 * QUANT_ROWS && par::worth_parallel(m, k, n_all);
    let a = if acts == Activations::Int16 {
        if x16.len() < rows * kp {
            x16.resize_zeroed(rows * kp);
        }
        // The AVX2 pair kernel reads the i16s in pair order; the halves
        // are split from them in order.
        let pairs = isa.has_avx2() && !halves;
        let s = &mut sx[..m * groups];
        let q16 = &mut x16[..rows * kp];
        q16[m * kp..].fill(0);
        // NEON multiplies int8 halves with `sdot`, VNNI with `vpdpbusd` and
        // AMX with `tdpbssd`; the other x86 levels and the scalar twin read
        // the i16s.
        let half_len = if halves { rows * kp } else { 0 };
        let (hi, lo) = xq[..2 * half_len].split_at_mut(half_len);
        if halves {
            // Padding rows (for the tiles) are the halves of 0.
            let (h0, l0) = split_one(0);
            let bit = if flipped { i8::MIN } else { 0 };
            hi[m * kp..].fill(h0 ^ bit);
            lo[m * kp..].fill(l0 ^ bit);
        }
        {
            let p16 = par::RowParts::new(&mut q16[..m * kp], m);
            let ps = par::RowParts::new(&mut s[..], m);
            let (phi, plo) = if halves {
                (
                    Some(par::RowParts::new(&mut hi[..m * kp], m)),
                    Some(par::RowParts::new(&mut lo[..m * kp], m)),
                )
            } else {
                (None, None)
            };
            // Rows [i0, i1), each range taken once from each buffer: by one
            // task of for_row_ranges, or by the one serial call.
            let quantize = |i0: usize, i1: usize, row: &mut Vec<f32>| {
                // SAFETY: the ranges of different calls are disjoint (above).
                let (q16r, sr) = unsafe { (p16.rows(i0, i1), ps.rows(i0, i1)) };
                let xr = &x[i0 * k..i1 * k];
                quantize_rows16(isa, xr, i1 - i0, k, gs, in_scales, q16r, sr, pairs, row);
                if let (Some(phi), Some(plo)) = (&phi, &plo) {
                    // SAFETY: as above.
                    let (h, l) = unsafe { (phi.rows(i0, i1), plo.rows(i0, i1)) };
                    split_halves(isa, q16r, h, l, flipped);
                }
            };
            if quant_par {
                par::for_row_ranges(m, QUANT_ROWS, true, |i0, i1| {
                    quantize(i0, i1, &mut Vec::new())
                });
            } else {
                // A decode step's one row: the reused row buffer, no allocation.
                quantize(0, m, &mut row);
            }
        }
        let q16 = &x16[..rows * kp];
        let q: &[i8] = if halves { &xq[..2 * rows * kp] } else { &[] };
        let s = &sx[..m * groups];
        Acts {
            q,
            s,
            q16: &q16[..m * kp],
            m,
            kp,
            groups,
            flipped: halves && flipped,
            wide: true,
        }
    } else {
        // The AVX2 kernel for two or more rows multiplies i16s (avx2.rs):
        // widen once here, not per tile. One row keeps the i8 form, which
        // needs no widening of the weights and is the faster one there.
        let wide = isa == Isa::Avx2 && m >= 2;
        if wide && x16.len() < m * kp {
            x16.resize_zeroed(m * kp);
        }
        let (q, s) = (&mut xq[..rows * kp], &mut sx[..m * groups]);
        {
            let pq = par::RowParts::new(&mut q[..m * kp], m);
            let ps = par::RowParts::new(&mut s[..], m);
            par::for_row_ranges(m, QUANT_ROWS, quant_par, |i0, i1| {
                // SAFETY: for_row_ranges gives each task its own range of
                // rows, taken once from each buffer.
                let (qr, sr) = unsafe { (pq.rows(i0, i1), ps.rows(i0, i1)) };
                quantize_rows(isa, &x[i0 * k..i1 * k], i1 - i0, k, gs, qr, sr, flipped);
            });
        }
        q[m * kp..].fill(0);
        let q: &[i8] = q;
        let q16: &[i16] = if wide {
            let q16 = &mut x16[..m * kp];
            // SAFETY: check_isa verified AVX2 (isa == Avx2); equal lengths,
            // m * kp with kp a multiple of 4 (rows == m: no tiles at Avx2).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx2::widen_pairs(q, q16)
            };
            #[cfg(not(target_arch = "x86_64"))]
            scalar::widen_pairs(q, q16);
            q16
        } else {
            &[]
        };
        Acts {
            q,
            s,
            q16,
            m,
            kp,
            groups,
            flipped,
            wide: false,
        }
    };
    // The tiles take a quarter of the outputs a task (a multiple of two
    // tiles): each task configures the tiles and re-reads the activations,
    // so fewer, wider tasks than a GEMV's.
    let cols = |n: usize| {
        if tiles {
            (n / 4).clamp(64, 1024).div_ceil(2 * TILE_N) * 2 * TILE_N
        } else {
            par::gemv_cols(n, TILE_N)
        }
    };
    let run_chunk = |w: &Int8View<'_>, j0: usize, j1: usize, out: &mut ColBlock<'_>| {
        if tiles {
            // The tiles' epilogue finishes each vector as it stores it.
            return amx_chunk(&a, rows, w, j0, j1, out, ep);
        }
        chunk(isa, &a, w, j0, j1, out, ep);
    };
    let parallel = |w: &Int8View<'_>| par::worth_parallel(m, k, w.n);
    if (2..=par::MANY_MAX).contains(&ws.len()) && ws.iter().all(|w| parallel(w)) {
        // Several outputs that each go to the pool: one region for all.
        let mut ns = [0usize; par::MANY_MAX];
        let mut cs = [0usize; par::MANY_MAX];
        for (i, w) in ws.iter().enumerate() {
            (ns[i], cs[i]) = (w.n, cols(w.n));
        }
        let k = ws.len();
        par::for_col_chunks_many(ys, m, &ns[..k], &cs[..k], true, |i, j0, j1, out| {
            run_chunk(ws[i], j0, j1, out)
        });
    } else {
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            par::for_col_chunks(y, m, w.n, cols(w.n), parallel(w), |j0, j1, out| {
                run_chunk(w, j0, j1, out)
            });
        }
    }
    SCRATCH.set((xq, sx, x16, row));
}

/// Whether a product of `m` rows at `isa` runs on AMX tiles: at
/// [`Isa::Amx`], from [`AMX_MIN_M`] rows, on weights whose groups are whole
/// 64-input steps (a `group_size` that is a multiple of 64 and divides
/// `k`, or 0, one group, with `k` a multiple of 64). Otherwise the VNNI
/// kernels run it. The bits are the same.
pub fn amx_takes(isa: Isa, m: usize, w: &Int8View<'_>) -> bool {
    #[cfg(target_arch = "x86_64")]
    return isa == Isa::Amx && m >= AMX_MIN_M && amx::fits(w);
    #[cfg(not(target_arch = "x86_64"))]
    return {
        let _ = (isa, m, w);
        false
    };
}

/// [`amx::chunk`] after checking what it relies on.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn amx_chunk(
    a: &Acts<'_>,
    rows: usize,
    w: &Int8View<'_>,
    j0: usize,
    j1: usize,
    out: &mut ColBlock<'_>,
    ep: Epilogue,
) {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(a.kp == w.padded_k() && a.groups == w.groups() && amx::fits(w));
        assert!(a.s.len() == a.m * a.groups && rows == amx::padded_rows(a.m));
        assert_eq!(a.q.len(), if a.wide { 2 } else { 1 } * rows * a.kp);
        assert!(!a.flipped && j0.is_multiple_of(TILE_N) && j0 < j1 && j1 <= w.n);
        // SAFETY: run_many takes the tiles at Isa::Amx only, which
        // check_isa verified the CPU runs; the asserts above are the rest
        // of the contract (`for_col_chunks` gives `out` as [m, j1 - j0]).
        unsafe { amx::chunk(a, rows, w, j0, j1, out, ep) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("int8: AMX tiles off x86-64");
}

/// Quantised activations, shaped for the kernels.
pub(crate) struct Acts<'a> {
    /// `[m, kp]`.
    pub q: &'a [i8],
    /// `[m, groups]`.
    pub s: &'a [f32],
    /// `q` widened to i16 with each k-block ordered `(x0, x2, x1, x3)`
    /// (`[m, kp]`), for the AVX2 kernel of two or more rows; empty otherwise.
    pub q16: &'a [i16],
    pub m: usize,
    pub kp: usize,
    pub groups: usize,
    /// `q` holds `x ^ 0x80` (`x + 128` as u8), the VNNI kernels' input;
    /// only they take it, every other kernel takes plain `x`.
    pub flipped: bool,
    /// [`Activations::Int16`]: `q16` holds the 16-bit values (`[m, kp]`, in
    /// the pair order for the AVX2 pair kernel, in order otherwise) and `q`,
    /// on NEON and VNNI, their int8 halves (`[2, m, kp]`: `hi`, then `lo`;
    /// flipped on VNNI); else empty.
    pub wide: bool,
}

/// Computes outputs `[j0, j1)` for all rows into their block `out` of y,
/// finished by `ep` (added to what y holds, or through a ReLU) as each
/// tile leaves its kernel, while it is in cache.
fn chunk(
    isa: Isa,
    a: &Acts<'_>,
    w: &Int8View<'_>,
    j0: usize,
    j1: usize,
    out: &mut ColBlock<'_>,
    ep: Epilogue,
) {
    // The kernels index with raw pointers; these are the facts they rely on.
    assert!(a.s.len() == a.m * a.groups);
    assert!(a.kp == w.padded_k() && a.groups == w.groups());
    if a.wide {
        assert!(a.q16.len() == a.m * a.kp);
        assert!(a.q.is_empty() || a.q.len() == 2 * a.m * a.kp);
        // VNNI's 16-bit kernel takes nothing but flipped halves.
        assert_eq!(
            a.flipped,
            isa.has_vnni(),
            "int8: 16-bit activation encoding"
        );
        assert!(!a.flipped || !a.q.is_empty());
    } else {
        assert!(a.q.len() == a.m * a.kp);
        assert!(a.q16.is_empty() || a.q16.len() == a.m * a.kp);
        assert_eq!(a.flipped, isa.has_vnni(), "int8: activation encoding");
    }
    assert!(j0.is_multiple_of(TILE_N) && j1 <= w.n && j0 < j1);
    // 16-bit activations run VNNI's two `vpdpbusd`s, the AVX2 pair kernel
    // at the other x86 levels (the plain AVX-512 level has no body of its
    // own), NEON's two `sdot`s, or the scalar twin.
    // Read only by the x86 arms below (never true elsewhere).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    let vnni16 = a.wide && isa.has_vnni();
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    let x86_16 = a.wide && isa.has_avx2() && !vnni16;
    // A decode step's GEMV over whole tiles: one loop per level with the tile
    // kernel inlined, no scratch copy.
    #[cfg(target_arch = "x86_64")]
    if a.m == 1 && ep != Epilogue::Add && (j1 - j0).is_multiple_of(TILE_N) {
        let (t0, t1) = (j0 / TILE_N, j1 / TILE_N);
        // SAFETY (each arm): check_isa verified the level's features (every
        // x86 level has AVX2); the asserts above give the bounds, and row 0
        // of the block is j1 - j0 = 16 (t1 - t0) floats.
        let row = out.row(0);
        let done = match isa {
            _ if vnni16 => {
                unsafe { avx512::row_tiles16_vnni(a, w, t0, t1, row) };
                true
            }
            _ if x86_16 => {
                unsafe { avx2::row_tiles16(a, w, t0, t1, row) };
                true
            }
            _ if a.wide => false,
            _ if isa.has_vnni() => {
                unsafe { avx512::row_tiles_vnni(a, w, t0, t1, row) };
                true
            }
            Isa::Avx512 => {
                unsafe { avx512::row_tiles_bw(a, w, t0, t1, row) };
                true
            }
            Isa::Avx2 => {
                unsafe { avx2::row_tiles(a, w, t0, t1, row) };
                true
            }
            _ => false,
        };
        if done {
            if ep == Epilogue::Relu {
                row.iter_mut().for_each(|v| *v = crate::ops::relu(*v));
            }
            return;
        }
    }
    // PAIR_TILES tiles a call where the VNNI pair kernel applies: one
    // broadcast of the activations feeds them all (avx512::vnni_pair).
    #[cfg(target_arch = "x86_64")]
    let pairs = isa.has_vnni() && (vnni16 || !a.wide);
    #[cfg(not(target_arch = "x86_64"))]
    let pairs = false;
    let mut tmp: [TileOut; PAIR_TILES] = [[[0.0f32; TILE_N]; ROW_BLOCK_WIDE]; PAIR_TILES];
    #[cfg(target_arch = "x86_64")]
    let pair_rows = if vnni16 {
        avx512::PAIR16_ROWS
    } else {
        avx512::PAIR_ROWS
    };
    #[cfg(not(target_arch = "x86_64"))]
    let pair_rows = ROW_BLOCK_WIDE;
    let t_end = j1.div_ceil(TILE_N);
    let mut t = j0 / TILE_N;
    while t < t_end {
        let two = pairs && t + PAIR_TILES <= t_end;
        // Whole tiles of the pair kernel go straight into y; the rest
        // through `tmp`.
        let direct = two && (t + PAIR_TILES) * TILE_N <= j1;
        let tiles = if two { PAIR_TILES } else { 1 };
        let mut i = 0;
        while i < a.m {
            let rem = a.m - i;
            let r = if two && rem >= pair_rows {
                pair_rows
            } else if !two && isa.has_vnni() && rem >= ROW_BLOCK_WIDE {
                ROW_BLOCK_WIDE
            } else {
                rem.min(ROW_BLOCK)
            };
            if two {
                #[cfg(target_arch = "x86_64")]
                {
                    let po = if direct {
                        let o = t * TILE_N - j0;
                        let (ptr, row_stride) = out.window(i, o, r, PAIR_TILES * TILE_N);
                        avx512::PairOut {
                            ptr,
                            row_stride,
                            tile_stride: TILE_N,
                            ep,
                        }
                    } else {
                        avx512::PairOut {
                            ptr: tmp.as_mut_ptr().cast::<f32>(),
                            row_stride: TILE_N,
                            tile_stride: TILE_N * ROW_BLOCK_WIDE,
                            ep: Epilogue::Store,
                        }
                    };
                    // SAFETY: check_isa verified AVX-512 F/BW/VL + VNNI;
                    // t + PAIR_TILES <= t_end <= padded_n / 16; r is 1..=4
                    // or the kernel's row block (at most ROW_BLOCK_WIDE); the
                    // asserts above give the flipped halves; `po` is a
                    // window of r rows and PAIR_TILES tiles inside this
                    // block (`ColBlock::window` asserts it) or `tmp`.
                    unsafe { avx512::pair_vnni(a, w, t, i, r, &po) }
                }
            } else {
                let one = &mut tmp[0];
                match isa {
                    // SAFETY: check_isa verified the level, and every x86 level
                    // has AVX2; the asserts above and Int8View's validation give
                    // the bounds tile16() needs (i + r <= m, 1 <= r <= 4).
                    #[cfg(target_arch = "x86_64")]
                    _ if x86_16 => unsafe { avx2::tile16(a, w, t, i, r, one) },
                    // SAFETY: as above, with AVX-512 F/BW/VL + VNNI; the asserts
                    // above give the flipped halves tile16_vnni() reads.
                    #[cfg(target_arch = "x86_64")]
                    _ if vnni16 => unsafe { avx512::tile16_vnni(a, w, t, i, r, one) },
                    // NEON's int8 halves, present when its kernel may run.
                    Isa::Neon if a.wide && !a.q.is_empty() => neon::tile16(a, w, t, i, r, one),
                    _ if a.wide => scalar::tile16(a, w, t, i, r, one),
                    // SAFETY: check_isa verified AVX-512 F/BW/VL + VNNI; the asserts
                    // above and Int8View's validation give the bounds tile() needs.
                    #[cfg(target_arch = "x86_64")]
                    _ if isa.has_vnni() => unsafe { avx512::tile_vnni(a, w, t, i, r, one) },
                    // SAFETY: as above, with AVX-512 F/BW/VL.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { avx512::tile_bw(a, w, t, i, r, one) },
                    // SAFETY: as above, with AVX2.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2::tile(a, w, t, i, r, one) },
                    Isa::Neon if neon::usable() => neon::tile(a, w, t, i, r, one),
                    _ => scalar::tile(a, w, t, i, r, one),
                }
            }
            if !direct {
                for (tt, block) in tmp.iter().enumerate().take(tiles) {
                    let o = (t + tt) * TILE_N - j0;
                    let valid = (j1 - (t + tt) * TILE_N).min(TILE_N);
                    for (rr, row) in block.iter().enumerate().take(r) {
                        let dst = &mut out.row(i + rr)[o..o + valid];
                        // A whole tile as one of a fixed size, so the
                        // compiler keeps it in vectors: a copy of a run-time
                        // length went through a memmove call a row (9% of a
                        // prefill product at the VNNI level).
                        match <&mut [f32; TILE_N]>::try_from(&mut *dst) {
                            Ok(d) => put(d, row, ep),
                            Err(_) => put(dst, &row[..valid], ep),
                        }
                    }
                }
            }
            i += r;
        }
        t += tiles;
    }
}

/// `dst = src` finished by `ep`: stored, added to `dst`, or through a ReLU
/// (`ops::relu`). Inlined, so a fixed-size `dst` stays in vectors.
#[inline(always)]
fn put(dst: &mut [f32], src: &[f32], ep: Epilogue) {
    let pairs = dst.iter_mut().zip(src);
    match ep {
        Epilogue::Add => pairs.for_each(|(d, &v)| *d += v),
        Epilogue::Relu => pairs.for_each(|(d, &v)| *d = crate::ops::relu(v)),
        Epilogue::Store => pairs.for_each(|(d, &v)| *d = v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The quantization error's sums are the same bits at every level
        /// this CPU runs (so a quantized file's `err_norms` do not depend on
        /// the machine that wrote it).
        #[test]
        fn err_sq_is_the_same_at_every_level(
            xs in proptest::collection::vec(-1e3f32..1e3, 0..300),
            tiny in any::<bool>(),
        ) {
            let xs: Vec<f32> = xs.iter().map(|&x| if tiny { x * 1e-30 } else { x }).collect();
            let mut qs = vec![0i8; xs.len()];
            let s = quantize_slice(&xs, &mut qs);
            let mut want = [0.5f64, 0.25, 0.0, 1.0];
            err_sq(&xs, &qs, s, &mut want);
            for isa in crate::dispatch::available() {
                let mut got = [0.5f64, 0.25, 0.0, 1.0];
                err_sq_with(isa, &xs, &qs, s, &mut got);
                let bits = |v: [f64; 4]| v.map(f64::to_bits);
                prop_assert_eq!(bits(got), bits(want), "{}", isa);
            }
        }
    }
}
