//! AVX-512 bf16 widening: 16 bf16 per `vpmovzxwd` + `vpslld 16` (exact),
//! which the float GEMV and prefill blocks of `crate::f32::avx512` load
//! bf16 weights through.

use std::arch::x86_64::*;

/// 16 bf16 lanes as f32: zero-extend to 32 bits, shift into the upper half.
/// Exact for every bit pattern.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn widen16(h: __m256i) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
}
