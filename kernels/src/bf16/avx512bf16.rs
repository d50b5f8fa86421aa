//! bf16 prefill with AVX-512 BF16 (`vdpbf16ps`: 32 bf16 products a step,
//! summed in pairs into 16 f32 lanes), used by [`super::linear_with`] at the
//! AVX-512 levels from [`super::BF16_GEMM_MIN_M`] rows when the CPU has
//! `avx512bf16` (Cooper Lake, Sapphire Rapids and later Xeons, Zen 4 and later).
//!
//! The instruction takes both operands in bf16, so the activations are
//! rounded to bf16 (nearest even) once per call; the products of two bf16 are
//! exact in f32 and accumulate in f32, with denormal inputs and results
//! flushed to zero (the instruction ignores MXCSR). Error budget, against the
//! f64 product of the f32 activations and the bf16 weights:
//! `2^-8 · sum|x_i w_i|` for the activation rounding (half an ulp of an
//! 8-bit significand, doubled for the flushes' slack) plus the f32
//! accumulation's `gamma_(2k+2) · sum|x_i w_i|` plus `2^-125 (sum|x_i| +
//! sum|w_i| + k)` for the flushed denormals (kernels/tests/linear_bf16.rs).
//! This is the arithmetic of a framework running the layer in bf16, not the
//! f32 arithmetic of the widening kernels.
//!
//! Same layout as the f32/f16 AVX-512 prefill: 4 x 4 register blocks, the
//! ragged edges by a dot product, fixed column chunks (bit-identical for any
//! thread count).

use crate::par::{self, ColBlock};
use half::bf16;
use std::arch::x86_64::*;

/// Whether the CPU has AVX-512 BF16 (with the AVX-512 level's F/BW/VL).
pub fn available() -> bool {
    crate::dispatch::features().avx512bf16 && crate::Isa::Avx512.supported()
}

/// `y = x · wᵀ` with `vdpbf16ps`: `x` `[m, k]` f32 (rounded to bf16 here),
/// `w` `[n, k]` bf16, `y` `[m, n]` f32.
///
/// Panics if the CPU lacks AVX-512 BF16 ([`available`]) or the shapes disagree.
pub fn linear(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, y: &mut [f32]) {
    assert!(available(), "kernels: this CPU has no AVX-512 BF16");
    crate::f32::check_shapes(x.len(), m, k, w.len(), n, y.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let parallel = par::worth_parallel(m, k, n);
    par::for_col_chunks(y, m, n, crate::f32::GEMV_CHUNK, parallel, |j0, j1, out| {
        // SAFETY: `available` checked AVX-512 BF16 + F/BW/VL above.
        unsafe { gemm(&xb, m, k, &w[j0 * k..j1 * k], out) }
    });
}

/// 32 bf16 at `p` as one `vdpbf16ps` operand, lanes outside `mask` zero and
/// not read.
///
/// # Safety
/// AVX-512 BW; the masked lanes lie inside one slice.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn load32(p: *const bf16, mask: u32) -> __m512bh {
    // SAFETY: the caller guarantees the masked lanes are readable; __m512i
    // and __m512bh are both 64-byte vectors of plain bits.
    unsafe {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(mask, p as *const i16))
    }
}

#[inline]
fn mask32(t: usize, k: usize) -> u32 {
    if t + 32 <= k {
        u32::MAX
    } else {
        ((1u64 << (k - t)) - 1) as u32
    }
}

/// `sum x[t] * w[t]` with `vdpbf16ps`, two chains.
///
/// # Safety
/// AVX-512 F/BW/BF16; `x.len() == w.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn dot(x: &[bf16], w: &[bf16]) -> f32 {
    let k = x.len().min(w.len());
    let mut acc = [_mm512_setzero_ps(); 2];
    let mut t = 0;
    // SAFETY: every load reads lanes [t, t + 32) masked to those below k.
    unsafe {
        while t < k {
            let c = (t / 32) % 2;
            let mask = mask32(t, k);
            acc[c] = _mm512_dpbf16_ps(
                acc[c],
                load32(x.as_ptr().add(t), mask),
                load32(w.as_ptr().add(t), mask),
            );
            t += 32;
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
}

/// A 4 x 4 block of `y`: x rows `i0..i0 + 4` against weight rows `c0..c0 + 4`.
///
/// # Safety
/// AVX-512 F/BW/BF16; `x` holds at least `(i0 + 4) * k` values and `w` at
/// least `(c0 + 4) * k`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn block4x4(x: &[bf16], i0: usize, k: usize, w: &[bf16], c0: usize) -> [[f32; 4]; 4] {
    debug_assert!(x.len() >= (i0 + 4) * k && w.len() >= (c0 + 4) * k);
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    // SAFETY (all loads below): row r of x and row c of w are read inside
    // their k values, lanes masked to those below k.
    unsafe {
        let px = x.as_ptr().add(i0 * k);
        let pw = w.as_ptr().add(c0 * k);
        let mut t = 0;
        while t < k {
            let mask = mask32(t, k);
            let wv: [__m512bh; 4] = std::array::from_fn(|c| load32(pw.add(c * k + t), mask));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = load32(px.add(r * k + t), mask);
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm512_dpbf16_ps(*a, xv, wv[c]);
                }
            }
            t += 32;
        }
    }
    // A loop, not `map` closures: a closure is a function of its own,
    // compiled without this function's target features, and once LLVM
    // stopped inlining it each reduction became an out-of-line call (half
    // of f32 W3 in `perf`).
    let mut out = [[0.0f32; 4]; 4];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, &v) in o.iter_mut().zip(a) {
            *o = _mm512_reduce_add_ps(v);
        }
    }
    out
}

/// `out[m, w.len() / k] = x · wᵀ` for one column chunk.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/BF16 ([`available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn gemm(x: &[bf16], m: usize, k: usize, w: &[bf16], out: &mut ColBlock<'_>) {
    assert!(x.len() >= m * k && k > 0);
    let cw = w.len() / k;
    let (m4, c4) = (m / 4 * 4, cw / 4 * 4);
    for i in (0..m4).step_by(4) {
        for c in (0..c4).step_by(4) {
            // SAFETY: same target features; rows i..i + 4 and c..c + 4 exist.
            let b = unsafe { block4x4(x, i, k, w, c) };
            for (r, row) in b.iter().enumerate() {
                out.row(i + r)[c..c + 4].copy_from_slice(row);
            }
        }
    }
    for i in 0..m {
        let cols = if i < m4 { c4..cw } else { 0..cw };
        for c in cols {
            // SAFETY: same target features as this function.
            out.row(i)[c] = unsafe { dot(&x[i * k..(i + 1) * k], &w[c * k..(c + 1) * k]) };
        }
    }
}
