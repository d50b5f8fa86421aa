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
        float32x4_t, int32x4_t, int8x16_t, vaddq_f32, vaddvq_f32, vcvtq_f32_s32, vdupq_n_f32,
        vdupq_n_s32, vfmaq_f32, vld1q_f32, vld1q_s8, vmulq_f32, vreinterpretq_s8_s32, vst1q_f32,
    };

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

    /// # Safety
    /// `p` must be valid for reading 16 bytes.
    #[inline]
    pub unsafe fn vld1q_s8(p: *const i8) -> int8x16_t {
        // SAFETY: the caller guarantees 16 readable bytes; alignment is not required.
        int8x16_t(unsafe { core::ptr::read_unaligned(p as *const [i8; 16]) })
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
}

pub use imp::*;
