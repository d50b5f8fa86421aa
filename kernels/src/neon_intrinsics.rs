//! The handful of NEON intrinsics the NEON kernels use, under their ACLE names.
//!
//! On aarch64 these are `core::arch::aarch64` itself (plus `sdot` spelled as inline
//! asm, because `vdotq_s32` is still unstable in the Rust this crate targets). On
//! every other target they are plain-Rust models of the same instructions on
//! array types, so the NEON kernel logic (layout, loop bounds, tails, lane order)
//! runs in the x86 proptests. What the emulation cannot show — codegen, real
//! instruction semantics, speed — is listed in `kernels/NEON.md`.
#![allow(non_camel_case_types)]

#[cfg(target_arch = "aarch64")]
mod imp {
    pub use core::arch::aarch64::{
        float32x4_t, int32x4_t, int8x16_t, uint16x8_t, vaddq_f32, vaddq_s32, vaddvq_f32, vandq_s8,
        vcvtq_f32_s32, vdupq_n_f32, vdupq_n_s32, vdupq_n_s8, vfmaq_f32, vld1q_f32, vld1q_s8,
        vld1q_u16, vmulq_f32, vreinterpretq_s8_s32, vshlq_n_s32, vshrq_n_s8, vst1q_f32,
    };

    /// The 4 lanes of `v` as an array (`st1`).
    #[inline]
    pub fn vst1q_s32_array(v: int32x4_t) -> [i32; 4] {
        let mut o = [0i32; 4];
        // SAFETY: `o` has room for 4 lanes; NEON is baseline on aarch64.
        unsafe { core::arch::aarch64::vst1q_s32(o.as_mut_ptr(), v) };
        o
    }

    /// `fcvtl v.4s, v.4h`: lanes 0..4 of `v`, read as IEEE half-precision
    /// bits, widened to f32 (exact). ACLE's `vcvt_f32_f16` takes Rust's
    /// unstable `f16` vectors, hence the asm on raw bits. FCVTL from half is
    /// base ARMv8-A Advanced SIMD: no fp16 extension needed.
    #[inline]
    pub fn vcvt_low_f32_f16_bits(v: uint16x8_t) -> float32x4_t {
        let out: float32x4_t;
        // SAFETY: a register-only instruction of base AArch64 Advanced SIMD,
        // which every aarch64 target has (NEON is baseline).
        unsafe {
            core::arch::asm!(
                "fcvtl {0:v}.4s, {1:v}.4h",
                out(vreg) out,
                in(vreg) v,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        out
    }

    /// `fcvtl2 v.4s, v.8h`: lanes 4..8 of `v` widened, as above.
    #[inline]
    pub fn vcvt_high_f32_f16_bits(v: uint16x8_t) -> float32x4_t {
        let out: float32x4_t;
        // SAFETY: as `vcvt_low_f32_f16_bits`.
        unsafe {
            core::arch::asm!(
                "fcvtl2 {0:v}.4s, {1:v}.8h",
                out(vreg) out,
                in(vreg) v,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        out
    }

    /// `ushll v.4s, v.4h, #16`: lanes 0..4 of `v`, read as bfloat16 bits,
    /// widened to f32 (exact: a bf16 is the upper half of an f32).
    #[inline]
    pub fn vcvt_low_f32_bf16_bits(v: uint16x8_t) -> float32x4_t {
        use core::arch::aarch64::{vget_low_u16, vreinterpretq_f32_u32, vshll_n_u16};
        // SAFETY: register-only base Advanced SIMD instructions, which every
        // aarch64 target has (NEON is baseline).
        unsafe { vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(v))) }
    }

    /// `ushll2 v.4s, v.8h, #16`: lanes 4..8 widened, as above.
    #[inline]
    pub fn vcvt_high_f32_bf16_bits(v: uint16x8_t) -> float32x4_t {
        use core::arch::aarch64::{vreinterpretq_f32_u32, vshll_high_n_u16};
        // SAFETY: as `vcvt_low_f32_bf16_bits`.
        unsafe { vreinterpretq_f32_u32(vshll_high_n_u16::<16>(v)) }
    }

    /// `sdot v.4s, a.16b, b.16b`: lane l += sum of the 4 byte products 4l..4l+4.
    ///
    /// # Safety
    /// The CPU must have the `dotprod` extension (checked by dispatch).
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    pub unsafe fn vdotq_s32(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: a register-only instruction; the caller guarantees dotprod.
        unsafe {
            core::arch::asm!(
                "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
                inout(vreg) acc,
                in(vreg) a,
                in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod imp {
    //! Lane-exact models: integer ops wrap like the hardware, `vfmaq_f32` is a
    //! fused multiply-add per lane and `vaddvq_f32` adds pairwise as `faddp` does.

    #[derive(Clone, Copy, Debug)]
    pub struct int8x16_t(pub [i8; 16]);
    #[derive(Clone, Copy, Debug)]
    pub struct int32x4_t(pub [i32; 4]);
    #[derive(Clone, Copy, Debug)]
    pub struct float32x4_t(pub [f32; 4]);
    #[derive(Clone, Copy, Debug)]
    pub struct uint16x8_t(pub [u16; 8]);

    /// # Safety
    /// `p` must be valid for reading 16 bytes.
    #[inline]
    pub unsafe fn vld1q_s8(p: *const i8) -> int8x16_t {
        // SAFETY: the caller guarantees 16 readable bytes; alignment is not required.
        int8x16_t(unsafe { core::ptr::read_unaligned(p as *const [i8; 16]) })
    }

    /// # Safety
    /// `p` must be valid for reading 8 `u16`s.
    #[inline]
    pub unsafe fn vld1q_u16(p: *const u16) -> uint16x8_t {
        // SAFETY: the caller guarantees 8 readable u16s; alignment is not required.
        uint16x8_t(unsafe { core::ptr::read_unaligned(p as *const [u16; 8]) })
    }

    /// `fcvtl`: lanes 0..4 as half bits, widened exactly.
    #[inline]
    pub fn vcvt_low_f32_f16_bits(v: uint16x8_t) -> float32x4_t {
        float32x4_t(core::array::from_fn(|l| {
            half::f16::from_bits(v.0[l]).to_f32()
        }))
    }

    /// `fcvtl2`: lanes 4..8 as half bits, widened exactly.
    #[inline]
    pub fn vcvt_high_f32_f16_bits(v: uint16x8_t) -> float32x4_t {
        float32x4_t(core::array::from_fn(|l| {
            half::f16::from_bits(v.0[4 + l]).to_f32()
        }))
    }

    /// `ushll #16`: lanes 0..4 as bfloat16 bits, widened exactly.
    #[inline]
    pub fn vcvt_low_f32_bf16_bits(v: uint16x8_t) -> float32x4_t {
        float32x4_t(core::array::from_fn(|l| {
            f32::from_bits((v.0[l] as u32) << 16)
        }))
    }

    /// `ushll2 #16`: lanes 4..8 as bfloat16 bits, widened exactly.
    #[inline]
    pub fn vcvt_high_f32_bf16_bits(v: uint16x8_t) -> float32x4_t {
        float32x4_t(core::array::from_fn(|l| {
            f32::from_bits((v.0[4 + l] as u32) << 16)
        }))
    }

    /// # Safety
    /// `p` must be valid for reading 4 floats.
    #[inline]
    pub unsafe fn vld1q_f32(p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable floats; alignment is not required.
        float32x4_t(unsafe { core::ptr::read_unaligned(p as *const [f32; 4]) })
    }

    /// # Safety
    /// `p` must be valid for writing 4 floats.
    #[inline]
    pub unsafe fn vst1q_f32(p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller guarantees 4 writable floats; alignment is not required.
        unsafe { core::ptr::write_unaligned(p as *mut [f32; 4], v.0) }
    }

    #[inline]
    pub fn vdupq_n_s32(v: i32) -> int32x4_t {
        int32x4_t([v; 4])
    }

    #[inline]
    pub fn vdupq_n_f32(v: f32) -> float32x4_t {
        float32x4_t([v; 4])
    }

    /// Little-endian byte view, as on every aarch64 target Rust supports.
    #[inline]
    pub fn vreinterpretq_s8_s32(v: int32x4_t) -> int8x16_t {
        let mut o = [0i8; 16];
        for (l, x) in v.0.iter().enumerate() {
            for (b, byte) in x.to_le_bytes().iter().enumerate() {
                o[l * 4 + b] = *byte as i8;
            }
        }
        int8x16_t(o)
    }

    /// # Safety
    /// Always safe here; `unsafe` only to match the aarch64 wrapper's signature.
    #[inline]
    pub unsafe fn vdotq_s32(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        int32x4_t(core::array::from_fn(|l| {
            (0..4).fold(acc.0[l], |s, t| {
                s.wrapping_add(a.0[4 * l + t] as i32 * b.0[4 * l + t] as i32)
            })
        }))
    }

    /// Round-to-nearest-even, as `scvtf` with the default FPCR.
    #[inline]
    pub fn vcvtq_f32_s32(v: int32x4_t) -> float32x4_t {
        float32x4_t(v.0.map(|x| x as f32))
    }

    #[inline]
    pub fn vmulq_f32(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        float32x4_t(core::array::from_fn(|l| a.0[l] * b.0[l]))
    }

    #[inline]
    pub fn vaddq_f32(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        float32x4_t(core::array::from_fn(|l| a.0[l] + b.0[l]))
    }

    /// `a + b * c`, fused.
    #[inline]
    pub fn vfmaq_f32(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        float32x4_t(core::array::from_fn(|l| b.0[l].mul_add(c.0[l], a.0[l])))
    }

    /// `faddp` twice: (l0 + l1) + (l2 + l3).
    #[inline]
    pub fn vaddvq_f32(v: float32x4_t) -> f32 {
        (v.0[0] + v.0[1]) + (v.0[2] + v.0[3])
    }

    #[inline]
    pub fn vdupq_n_s8(v: i8) -> int8x16_t {
        int8x16_t([v; 16])
    }

    #[inline]
    pub fn vandq_s8(a: int8x16_t, b: int8x16_t) -> int8x16_t {
        int8x16_t(core::array::from_fn(|l| a.0[l] & b.0[l]))
    }

    /// `sshr`: arithmetic shift right of every byte by `N` (1..=8).
    #[inline]
    pub fn vshrq_n_s8<const N: i32>(a: int8x16_t) -> int8x16_t {
        int8x16_t(a.0.map(|x| ((x as i32) >> N) as i8))
    }

    /// The 4 lanes of `v` as an array (`st1`).
    #[inline]
    pub fn vst1q_s32_array(v: int32x4_t) -> [i32; 4] {
        v.0
    }

    /// `add v.4s`: wrapping, as the hardware.
    #[inline]
    pub fn vaddq_s32(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        int32x4_t(core::array::from_fn(|l| a.0[l].wrapping_add(b.0[l])))
    }

    /// `shl v.4s, #N`: bits shifted out are lost, as the hardware.
    #[inline]
    pub fn vshlq_n_s32<const N: i32>(a: int32x4_t) -> int32x4_t {
        int32x4_t(a.0.map(|x| x.wrapping_shl(N as u32)))
    }
}

pub use imp::*;

#[cfg(test)]
mod tests {
    //! The instruction semantics the kernels and the x86 models rely on, with
    //! the same expectations for both: on aarch64 (under qemu in CI,
    //! tools/cross-aarch64.sh) they check the real instructions, elsewhere
    //! the models, so a model that drifted from the hardware fails one side.
    //! Each check is an `unsafe fn` because the real intrinsics are
    //! `#[target_feature]` functions; NEON is baseline on aarch64.
    use super::*;

    unsafe fn lanes(v: float32x4_t) -> [f32; 4] {
        let mut o = [0.0f32; 4];
        // SAFETY: `o` has room for 4 floats.
        unsafe { vst1q_f32(o.as_mut_ptr(), v) };
        o
    }

    unsafe fn f32x4(v: [f32; 4]) -> float32x4_t {
        // SAFETY: `v` holds 4 floats.
        unsafe { vld1q_f32(v.as_ptr()) }
    }

    unsafe fn pairwise_sum() {
        // (1e8 + 1) + (-1e8 + 1) = 0; left to right gives 1, (l0 + l2) + (l1 + l3) gives 2.
        assert_eq!(vaddvq_f32(f32x4([1e8, 1.0, -1e8, 1.0])), 0.0);
        assert_eq!(vaddvq_f32(f32x4([1.0, 1e8, 1.0, -1e8])), 0.0);
    }

    unsafe fn nearest_even() {
        for (i, f) in [
            (16_777_217, 16_777_216.0),
            (16_777_219, 16_777_220.0),
            (-16_777_219, -16_777_220.0),
            (i32::MAX, 2_147_483_648.0),
            (i32::MIN, -2_147_483_648.0),
        ] {
            assert_eq!(lanes(vcvtq_f32_s32(vdupq_n_s32(i))), [f; 4], "{i}");
        }
    }

    unsafe fn single_rounding() {
        // (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24 exactly; a separate multiply would
        // round the square to 1 + 2^-11 first.
        let b = vdupq_n_f32(1.0 + 2f32.powi(-12));
        let r = vfmaq_f32(vdupq_n_f32(-1.0), b, b);
        assert_eq!(lanes(r), [2f32.powi(-11) + 2f32.powi(-24); 4]);
        let r = vaddq_f32(vmulq_f32(b, b), vdupq_n_f32(-1.0));
        assert_eq!(lanes(r), [2f32.powi(-11); 4]);
    }

    /// The caller must have checked dotprod on aarch64.
    unsafe fn sdot_lanes() {
        let w: [i8; 16] = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
        let x = vreinterpretq_s8_s32(vdupq_n_s32(i32::from_le_bytes([5, 6, 7, 0x80])));
        let r = vdotq_s32(vdupq_n_s32(1000), vld1q_s8(w.as_ptr()), x);
        assert_eq!(lanes(vcvtq_f32_s32(r)), [1005.0, 1006.0, 1007.0, 872.0]);
        let m = [-128i8; 16];
        let r = vdotq_s32(vdupq_n_s32(-1), vld1q_s8(m.as_ptr()), vld1q_s8(m.as_ptr()));
        assert_eq!(lanes(vcvtq_f32_s32(r)), [65535.0; 4]);
    }

    #[test]
    fn vaddvq_f32_adds_pairwise() {
        // SAFETY: NEON is baseline on aarch64; elsewhere these are the models.
        unsafe { pairwise_sum() }
    }

    #[test]
    fn vcvtq_f32_s32_rounds_to_nearest_even() {
        // SAFETY: as above.
        unsafe { nearest_even() }
    }

    #[test]
    fn vfmaq_f32_rounds_once() {
        // SAFETY: as above.
        unsafe { single_rounding() }
    }

    /// `sdot` sums the 4 signed byte products of each lane, and
    /// `vreinterpretq_s8_s32` puts an i32's bytes into its lane little-endian
    /// (the int8 kernel broadcasts 4 activation bytes that way).
    #[test]
    fn sdot_and_byte_lane_order() {
        if cfg!(target_arch = "aarch64") && !crate::dispatch::features().dotprod {
            eprintln!("SKIP sdot_and_byte_lane_order: this CPU has no dotprod");
            return;
        }
        // SAFETY: as above, and the CPU has dotprod (checked) on aarch64.
        unsafe { sdot_lanes() }
    }
}
