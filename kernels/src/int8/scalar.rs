//! Plain int8 tile kernel: the twin every SIMD level must match bit for bit.

use super::{Acts, Int8View, TileOut, K_BLOCK, TILE_N};

/// Rows `i..i + r` of the activations against tile `t`: writes `out[0..r]`.
pub(crate) fn tile(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    tile_of(a.q, a, w, t, i, r, out)
}

/// [`super::Activations::Int16`]'s twin: rows `i..i + r` of the in-order
/// 16-bit activations `a.q16` against tile `t`. The i32 sums cannot
/// overflow (`a16_limit`), so they are the exact dot products.
pub(crate) fn tile16(
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    tile_of(a.q16, a, w, t, i, r, out)
}

/// The body both take: `xs` (`[m, kp]`, in order) are the activations.
fn tile_of<T: Copy + Into<i32>>(
    xs: &[T],
    a: &Acts<'_>,
    w: &Int8View<'_>,
    t: usize,
    i: usize,
    r: usize,
    out: &mut TileOut,
) {
    let (kp, np) = (a.kp, w.padded_n());
    let base = t * TILE_N * kp;
    for (rr, o) in out.iter_mut().enumerate().take(r) {
        let x = &xs[(i + rr) * kp..(i + rr + 1) * kp];
        for (lane, y) in o.iter_mut().enumerate() {
            let j = t * TILE_N + lane;
            *y = 0.0;
            for g in 0..a.groups {
                let (kb0, kb1) = w.group_blocks(g);
                let mut acc = 0i32;
                for kb in kb0..kb1 {
                    let wb = &w.data[base + (kb * TILE_N + lane) * K_BLOCK..][..K_BLOCK];
                    let xb = &x[kb * K_BLOCK..(kb + 1) * K_BLOCK];
                    for (&p, &q) in wb.iter().zip(xb) {
                        acc += p as i32 * q.into();
                    }
                }
                *y += (acc as f32 * a.s[(i + rr) * a.groups + g]) * w.scales[g * np + j];
            }
        }
    }
}

/// The load-time scan's inner loop ([`super::format`]): over consecutive
/// `TILE_N * K_BLOCK`-byte k-blocks of one tile (row `r` of a block is bytes
/// `4r..4r + 4`), each row's sum and the smallest byte seen. Sums are exact:
/// a tile row holds at most `MAX_K` values of magnitude <= 128. The twin of
/// `avx2::block_sums`; on aarch64, where NEON is the baseline, LLVM
/// vectorises this loop itself.
pub(crate) fn block_sums(blocks: &[i8]) -> ([i32; TILE_N], i8) {
    let mut acc = [0i32; TILE_N];
    let mut min = i8::MAX;
    for blk in blocks.chunks_exact(TILE_N * K_BLOCK) {
        for (a, q) in acc.iter_mut().zip(blk.chunks_exact(K_BLOCK)) {
            *a += q.iter().map(|&v| v as i32).sum::<i32>();
        }
        min = blk.iter().fold(min, |m, &v| m.min(v));
    }
    (acc, min)
}

/// Each k-block's 4 values reordered `(x0, x2, x1, x3)` in place: 16-bit
/// activations for the AVX2 pair kernel. The twin of `avx2::swap_pairs`.
pub(crate) fn swap_pairs(q16: &mut [i16]) {
    for c in q16.chunks_exact_mut(K_BLOCK) {
        c.swap(1, 2);
    }
}

/// `q` widened to i16, each k-block's 4 values reordered `(x0, x2, x1, x3)`:
/// the AVX2 pair kernel's activation input. The twin of `avx2::widen_pairs`.
pub(crate) fn widen_pairs(q: &[i8], q16: &mut [i16]) {
    assert!(q16.len() == q.len() && q.len().is_multiple_of(K_BLOCK));
    for (s, d) in q.chunks_exact(K_BLOCK).zip(q16.chunks_exact_mut(K_BLOCK)) {
        d.copy_from_slice(&[s[0] as i16, s[2] as i16, s[1] as i16, s[3] as i16]);
    }
}
