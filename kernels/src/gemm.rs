//! The prefill path: `y[m, n] = x[m, k] · w[n, k]ᵀ` for larger m through the gemm
//! crate, split into fixed blocks of y so that threading never changes a bit.
//!
//! gemm's own `Parallelism::Rayon` is not used: how it splits work can depend on
//! the thread count. Instead each block of y is one single-threaded gemm call whose
//! shape depends only on (m, n), and blocks are spread over the threads of
//! `crate::pool`.

/// Rows of y per block: small enough that prefill of a few dozen tokens still
/// yields several blocks, large enough to amortise gemm's packing of w.
const ROW_BLOCK: usize = 64;
/// Weight rows (columns of y) per block.
const COL_BLOCK: usize = 128;

/// Whether `isa` takes the gemm path for prefill: every native SIMD level (gemm
/// then picks its own kernels for the CPU, so on a CPU with AVX-512 the `avx2`
/// level still gets AVX-512 gemm microkernels). The scalar twin never does, and
/// neither does the NEON emulation off aarch64.
pub(crate) fn native(isa: crate::Isa) -> bool {
    use crate::Isa;
    match isa {
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni | Isa::Amx => cfg!(target_arch = "x86_64"),
        Isa::Neon => cfg!(target_arch = "aarch64"),
        Isa::Scalar => false,
    }
}

/// Where a block's weights come from.
#[derive(Clone, Copy)]
pub(crate) enum Weights<'a> {
    F32(&'a [f32]),
    /// Converted to f32 per block (exactly: every f16 is an f32).
    F16(&'a [half::f16]),
    /// Converted to f32 per block (exactly: a bf16 is the upper half of an f32).
    Bf16(&'a [half::bf16]),
}

/// `y = x · wᵀ`. Shapes must already be checked.
pub(crate) fn run(x: &[f32], m: usize, k: usize, w: Weights<'_>, n: usize, y: &mut [f32]) {
    assert!(x.len() == m * k && y.len() == m * n);
    match w {
        Weights::F32(w) => assert_eq!(w.len(), n * k),
        Weights::F16(w) => assert_eq!(w.len(), n * k),
        Weights::Bf16(w) => assert_eq!(w.len(), n * k),
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let rbs = m.div_ceil(ROW_BLOCK);
    let cbs = n.div_ceil(COL_BLOCK);
    let yp = crate::par::SyncPtr(y.as_mut_ptr());
    let block = |rb: usize, j0: usize, bn: usize, wb: &[f32]| {
        let i0 = rb * ROW_BLOCK;
        let bm = (m - i0).min(ROW_BLOCK);
        assert!(j0 + bn <= n && wb.len() == bn * k);
        let xb = &x[i0 * k..(i0 + bm) * k];
        // SAFETY: dst is the [i0, i0+bm) x [j0, j0+bn) block of y (row stride n),
        // inside y because i0 + bm <= m and j0 + bn <= n; blocks are disjoint, so
        // no two tasks write the same element, and y outlives this loop. lhs is
        // xb ([bm, k], row stride k) and rhs is wbᵀ ([k, bn]: column stride k,
        // row stride 1), both fully inside their slices. read_dst = false means dst
        // is only written: dst = 1 · lhs · rhs.
        unsafe {
            gemm::gemm(
                bm,
                bn,
                k,
                yp.get().add(i0 * n + j0),
                1,
                n as isize,
                false,
                xb.as_ptr(),
                1,
                k as isize,
                wb.as_ptr(),
                k as isize,
                1,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    // f32 tasks are single blocks; an f16 or bf16 task owns a column block and all its
    // row blocks, so each weight block is widened once. Either way every block
    // is the same gemm call, so the bits are the same.
    let tasks = match w {
        Weights::F32(_) => rbs * cbs,
        Weights::F16(_) | Weights::Bf16(_) => cbs,
    };
    let task = |t: usize| {
        let (cb, rows) = match w {
            Weights::F32(_) => (t % cbs, t / cbs..t / cbs + 1),
            Weights::F16(_) | Weights::Bf16(_) => (t, 0..rbs),
        };
        let j0 = cb * COL_BLOCK;
        let bn = (n - j0).min(COL_BLOCK);
        let conv;
        let wb: &[f32] = match w {
            Weights::F32(w) => &w[j0 * k..(j0 + bn) * k],
            Weights::F16(w) => {
                let mut buf = vec![0.0f32; bn * k];
                widen(&w[j0 * k..(j0 + bn) * k], &mut buf);
                conv = buf;
                &conv
            }
            Weights::Bf16(w) => {
                let mut buf = vec![0.0f32; bn * k];
                widen_bf16(&w[j0 * k..(j0 + bn) * k], &mut buf);
                conv = buf;
                &conv
            }
        };
        for rb in rows {
            block(rb, j0, bn, wb);
        }
    };
    crate::pool::for_each(tasks, crate::par::worth_parallel(m, k, n), task);
}

/// f16 weights to f32, exactly: `fcvtl` in NEON registers on aarch64 (every
/// aarch64 CPU has it; `half` uses it only with the fp16 arithmetic
/// extension and converts in software otherwise), `half`'s F16C path elsewhere.
fn widen(src: &[half::f16], dst: &mut [f32]) {
    #[cfg(target_arch = "aarch64")]
    crate::f16::neon::widen(src, dst);
    #[cfg(not(target_arch = "aarch64"))]
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
}

/// bf16 weights to f32, exactly (a 16-bit shift): `ushll` in NEON registers
/// on aarch64, a loop the compiler vectorises elsewhere.
fn widen_bf16(src: &[half::bf16], dst: &mut [f32]) {
    #[cfg(target_arch = "aarch64")]
    crate::bf16::neon::widen(src, dst);
    #[cfg(not(target_arch = "aarch64"))]
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((s.to_bits() as u32) << 16);
    }
}
