//! The plain-Rust attention kernels: what the scalar level runs, and the
//! row max and `exp` the NEON level shares.

use super::blocked::{Rows, Tile, VecOps};

pub(super) struct ScalarOps;

impl VecOps for ScalarOps {
    #[inline(always)]
    unsafe fn scores(q: Rows<'_>, k: Rows<'_>, d: usize, nq: usize, nk: usize, tile: &mut Tile) {
        for (r, row) in tile.iter_mut().enumerate().take(nq) {
            let qr = &q.data[r * q.stride..r * q.stride + d];
            for (c, s) in row.iter_mut().enumerate().take(nk) {
                *s = crate::f32::scalar::dot(qr, &k.data[c * k.stride..c * k.stride + d]);
            }
        }
    }

    #[inline(always)]
    unsafe fn pv(
        p: &Tile,
        v: Rows<'_>,
        d: usize,
        nq: usize,
        nk: usize,
        out: &mut [f32],
        os: usize,
    ) {
        for (r, pr) in p.iter().enumerate().take(nq) {
            let o = &mut out[r * os..r * os + d];
            for (c, &w) in pr.iter().enumerate().take(nk) {
                let vc = &v.data[c * v.stride..c * v.stride + d];
                o.iter_mut().zip(vc).for_each(|(o, &x)| *o += w * x);
            }
        }
    }

    #[inline(always)]
    unsafe fn row_max(s: &[f32]) -> f32 {
        s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
    }

    #[inline(always)]
    unsafe fn exp_row(s: &mut [f32], m: f32) -> f32 {
        let mut l = 0.0f32;
        for x in s.iter_mut() {
            *x = if *x == f32::NEG_INFINITY {
                0.0
            } else {
                (*x - m).exp()
            };
            l += *x;
        }
        l
    }
}
