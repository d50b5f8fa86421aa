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
    let (kp, np) = (a.kp, w.padded_n());
    let base = t * TILE_N * kp;
    for (rr, o) in out.iter_mut().enumerate().take(r) {
        let x = &a.q[(i + rr) * kp..(i + rr + 1) * kp];
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
                        acc += p as i32 * q as i32;
                    }
                }
                *y += (acc as f32 * a.s[(i + rr) * a.groups + g]) * w.scales[g * np + j];
            }
        }
    }
}
