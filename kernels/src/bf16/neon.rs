//! NEON bf16-weight GEMV: 16 weights per step are loaded as raw bits and
//! widened in registers with `ushll`/`ushll2 #16` (a bf16 is the upper half
//! of an f32; base ARMv8-A Advanced SIMD, so every aarch64 CPU), then fed to
//! the same four FMA chains as the f32 dot ([`crate::f32::neon::dot`]). The
//! summation order is that one exactly, so a row's result is bit-identical to
//! the NEON f32 dot of the widened row; tested. BFDOT/BFMMLA (ARMv8.6 BF16)
//! are not used: their intrinsics take Rust's unstable bf16 vector types.

use crate::neon_intrinsics::*;
use crate::par::ColBlock;
use half::bf16;

/// `sum a[t] * b[t]`: four 4-lane FMA chains over 16 weights per step, then
/// 4-wide steps into the first chain, the `vaddvq_f32` reduction and a scalar
/// fused tail: the order of [`crate::f32::neon::dot`].
///
/// # Safety
/// None beyond the slices (NEON is baseline on aarch64; elsewhere this is the
/// emulation); `unsafe` for symmetry with the other kernels.
#[inline]
pub(crate) unsafe fn dot(a: &[f32], b: &[bf16]) -> f32 {
    let k = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr() as *const u16);
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    // SAFETY: every load reads [i, i + 16) (bf16: two 8-lane loads) or
    // [i, i + 4) (floats) with that end <= k <= both lengths; bf16 is a
    // transparent u16, so its bits are read as u16.
    unsafe {
        while i + 16 <= k {
            let h0 = vld1q_u16(pb.add(i));
            let h1 = vld1q_u16(pb.add(i + 8));
            let w = [
                vcvt_low_f32_bf16_bits(h0),
                vcvt_high_f32_bf16_bits(h0),
                vcvt_low_f32_bf16_bits(h1),
                vcvt_high_f32_bf16_bits(h1),
            ];
            for (u, a) in acc.iter_mut().enumerate() {
                *a = vfmaq_f32(*a, vld1q_f32(pa.add(i + 4 * u)), w[u]);
            }
            i += 16;
        }
        while i + 4 <= k {
            let w: [f32; 4] = core::array::from_fn(|l| b[i + l].to_f32());
            acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(w.as_ptr()));
            i += 4;
        }
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut r = vaddvq_f32(s);
    for t in i..k {
        r = a[t].mul_add(b[t].to_f32(), r);
    }
    r
}

/// `dst = src` widened to f32 (exact), 8 per step with `ushll`: what the
/// gemm path widens a block of bf16 weights with on aarch64.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) fn widen(src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "bf16 widen: lengths differ");
    let n = src.len();
    let (ps, pd) = (src.as_ptr() as *const u16, dst.as_mut_ptr());
    let mut i = 0;
    // SAFETY: each step reads bf16 [i, i + 8) of src and writes floats
    // [i, i + 8) of dst with i + 8 <= n, the length of both.
    unsafe {
        while i + 8 <= n {
            let h = vld1q_u16(ps.add(i));
            vst1q_f32(pd.add(i), vcvt_low_f32_bf16_bits(h));
            vst1q_f32(pd.add(i + 4), vcvt_high_f32_bf16_bits(h));
            i += 8;
        }
    }
    for t in i..n {
        dst[t] = src[t].to_f32();
    }
}

/// `out[m, cw] = x[m, k] · w[cw, k]ᵀ`.
pub(crate) fn gemv(x: &[f32], m: usize, k: usize, w: &[bf16], out: &mut ColBlock<'_>) {
    for (jj, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            // SAFETY: NEON is baseline on aarch64; elsewhere this is the emulation.
            out.row(i)[jj] = unsafe { dot(&x[i * k..(i + 1) * k], wr) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Widening is exact: every one of the 65536 bf16 bit patterns gives
    /// `half`'s f32 (NaNs stay NaN of the same sign), through the 8-wide loop
    /// and the scalar tail alike.
    #[test]
    fn widen_is_exact_on_every_bf16() {
        let src: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        for tail in [0usize, 3] {
            let s = &src[tail..];
            let mut dst = vec![0.0f32; s.len()];
            widen(s, &mut dst);
            for (h, f) in s.iter().zip(&dst) {
                let want = h.to_f32();
                if want.is_nan() {
                    assert!(f.is_nan() && f.is_sign_negative() == want.is_sign_negative());
                } else {
                    assert_eq!(f.to_bits(), want.to_bits(), "{:#06x}", h.to_bits());
                }
            }
        }
    }
}
