//! Plain bf16-weight linear: the twin of the SIMD paths.

use crate::par::ColBlock;
use half::bf16;

/// Sequential dot product of f32 activations with bf16 weights, in f32.
#[inline]
pub fn dot(a: &[f32], b: &[bf16]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b.to_f32()).sum()
}

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ` for one chunk of weight rows.
pub(crate) fn gemv(x: &[f32], m: usize, k: usize, w: &[bf16], out: &mut ColBlock<'_>) {
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            out.row(i)[jj] = dot(&x[i * k..(i + 1) * k], wr);
        }
    }
}
