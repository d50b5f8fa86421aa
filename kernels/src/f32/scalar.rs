//! Plain f32 linear: the twin every f32 SIMD path is checked against.

use crate::par::ColBlock;

/// Sequential dot product, left to right.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ` for one chunk of weight rows.
pub(crate) fn gemv(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut ColBlock<'_>) {
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            out.row(i)[jj] = dot(&x[i * k..(i + 1) * k], wr);
        }
    }
}
