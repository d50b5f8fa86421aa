//! f32 and f16-weight linear layers on every ISA level against the f64 reference.

mod common;

use common::*;
use half::f16;
use proptest::prelude::*;
use t5edge_kernels::aligned::AlignedBuf;
use t5edge_kernels::{f16 as lf16, f32 as lf32, reference, Isa};

/// f32 unit roundoff. Any summation order of k products, fused or not, is within
/// `(k + 1) u / (1 - (k + 1) u) * sum |x_i w_i|` of the exact sum (Higham, the
/// gamma_n bound; the +1 covers the final horizontal reduction of a SIMD path,
/// whose tree depth is below k). A fixed 1e-6 would not be a bound: the scalar
/// twin sums sequentially and its worst case grows with k.
const F32_UNIT_ROUNDOFF: f64 = 1.0 / (1u64 << 24) as f64;

/// Relative error of rounding an f32 to a normal f16 (half an ulp, 11-bit significand).
const F16_REL_BUDGET: f64 = 1.0 / 2048.0;
/// Absolute error of rounding into the f16 subnormal range (half of 2^-24).
const F16_SUBNORMAL_ABS: f64 = 1.0 / (1u64 << 25) as f64;

fn f32_budget(k: usize, abs_dot: f64) -> f64 {
    let g = (k as f64 + 2.0) * F32_UNIT_ROUNDOFF;
    g / (1.0 - g) * abs_dot + 1e-30
}

fn shape() -> impl Strategy<Value = (usize, usize, usize)> {
    // m crosses GEMM_MIN_M (8) so both the GEMV and the gemm path run; k and n
    // hit every tail length of the 8/16/32/64-wide loops.
    (1usize..=12, 1usize..=70, 1usize..=300)
}

/// f16 weights stay on the row-blocked GEMV up to F16_GEMM_MIN_M (32) rows:
/// m crosses that, and the 4- and 2-row blocks' remainders.
fn f16_shape() -> impl Strategy<Value = (usize, usize, usize)> {
    (
        prop_oneof![1usize..=12, 28usize..=36],
        1usize..=40,
        1usize..=300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn f32_linear_matches_reference(
        (m, n, k) in shape(), fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e12);
        let w = matrix(&mut rng, fw, n, k, 1e12);
        let r = reference::linear(&x, m, k, &w, n);
        let a = abs_dot(&x, m, k, &w, n);
        for isa in isas() {
            let mut y = vec![f32::NAN; m * n];
            lf32::linear_with(isa, &x, m, k, &w, n, &mut y);
            for t in 0..m * n {
                let err = (y[t] as f64 - r[t]).abs();
                prop_assert!(err <= f32_budget(k, a[t]),
                    "{isa} m={m} n={n} k={k} out {t}: {} vs {} (err {err:e}, budget {:e})",
                    y[t], r[t], f32_budget(k, a[t]));
            }
        }
    }

    #[test]
    fn f16_linear_matches_reference(
        (m, n, k) in f16_shape(), fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e6);
        let w32 = matrix(&mut rng, fw, n, k, 6e4);
        let w: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
        // The widened f16 weights are exact f32 values, so against them only the
        // f32 accumulation errs...
        let wq: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let r = reference::linear(&x, m, k, &wq, n);
        let a = abs_dot(&x, m, k, &wq, n);
        // ...and against the original weights the f16 rounding adds at most
        // 2^-11 |w_i| (or 2^-25 when w_i lands in the subnormal range) per term.
        let r32 = reference::linear(&x, m, k, &w32, n);
        let a32 = abs_dot(&x, m, k, &w32, n);
        let xs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let xsum: Vec<f64> = (0..m).map(|i| xs[i * k..(i + 1) * k].iter().map(|&v| v as f64).sum()).collect();
        for isa in isas() {
            let mut y = vec![f32::NAN; m * n];
            lf16::linear_with(isa, &x, m, k, &w, n, &mut y);
            for t in 0..m * n {
                let err = (y[t] as f64 - r[t]).abs();
                prop_assert!(err <= f32_budget(k, a[t]),
                    "{isa} m={m} n={n} k={k} out {t}: {} vs {} (err {err:e})", y[t], r[t]);
                let budget = F16_REL_BUDGET * a32[t] + F16_SUBNORMAL_ABS * xsum[t / n]
                    + f32_budget(k, a[t]);
                let err32 = (y[t] as f64 - r32[t]).abs();
                prop_assert!(err32 <= budget,
                    "{isa} vs f32 weights: out {t}: {} vs {} (err {err32:e}, budget {budget:e})", y[t], r32[t]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Error budget: bit-identical. The NEON f16 GEMV widens 16 weights in
    /// registers (`fcvtl`, exact) and then sums in exactly the order of the
    /// NEON f32 GEMV, so on the widened weights the two give the same bits.
    #[test]
    fn f16_neon_gemv_is_the_f32_neon_gemv_of_the_widened_weights(
        m in 1usize..lf32::GEMM_MIN_M, n in 1usize..=40, k in 1usize..=300,
        fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e6);
        let w: Vec<f16> = matrix(&mut rng, fw, n, k, 6e4).iter().map(|&v| f16::from_f32(v)).collect();
        let wq: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let (mut yh, mut y) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
        lf16::linear_with(Isa::Neon, &x, m, k, &w, n, &mut yh);
        lf32::linear_with(Isa::Neon, &x, m, k, &wq, n, &mut y);
        for t in 0..m * n {
            prop_assert_eq!(yh[t].to_bits(), y[t].to_bits(),
                "m={} n={} k={} out {}: f16 {} vs f32 {}", m, n, k, t, yh[t], y[t]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Activations that start off a cache line (the AVX-512 levels copy them
    /// onto one from 4 rows on) give the bits of the same values on a line,
    /// on both entry points, for f32 and f16 weights.
    #[test]
    fn rows_off_a_line_give_the_bits_of_rows_on_one(
        m in 1usize..=20, k16 in 1usize..=20, n in 1usize..=40,
        off in prop_oneof![Just(4usize), Just(16), Just(48)], seed in any::<u64>(),
        fx in fill_strategy(), fw in fill_strategy()
    ) {
        let k = 16 * k16;
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e12);
        let w = matrix(&mut rng, fw, n, k, 1e12);
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let mut on = AlignedBuf::<f32>::zeroed(m * k);
        on.copy_from_slice(&x);
        // The same values `off` bytes past a line.
        let mut room = AlignedBuf::<f32>::zeroed(m * k + 16);
        let past = &mut room[off / 4..off / 4 + m * k];
        past.copy_from_slice(&x);
        let past: &[f32] = past;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for isa in isas() {
            for invariant in [false, true] {
                let run = |x: &[f32]| {
                    let (mut y, mut yh) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
                    if invariant {
                        lf32::linear_invariant_with(isa, x, m, k, &w, n, &mut y);
                        lf16::linear_invariant_with(isa, x, m, k, &wh, n, &mut yh);
                    } else {
                        lf32::linear_with(isa, x, m, k, &w, n, &mut y);
                        lf16::linear_with(isa, x, m, k, &wh, n, &mut yh);
                    }
                    (bits(&y), bits(&yh))
                };
                prop_assert_eq!(run(&on), run(past), "{} m={} k={} off={}", isa, m, k, off);
            }
        }
    }
}

/// Big enough to be split over threads (n * k >= 256K MACs) on both the GEMV and
/// the gemm path: the bits must not depend on the thread count.
#[test]
fn float_linear_is_identical_across_thread_counts() {
    let (n, k) = (4000, 300); // >= 1M MACs at m = 1: above PAR_MIN_MACS
    let mut rng = Rng(7);
    let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    for m in [1usize, 3, 40] {
        let x = matrix(&mut rng, Fill::Uniform, m, k, 1.0);
        for isa in isas() {
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let runs = on_every_pool(|| {
                let mut y = vec![0.0f32; m * n];
                lf32::linear_with(isa, &x, m, k, &w, n, &mut y);
                let mut yh = vec![0.0f32; m * n];
                lf16::linear_with(isa, &x, m, k, &wh, n, &mut yh);
                (bits(&y), bits(&yh))
            });
            let (_, (a, ah)) = &runs[0];
            for (pool, (b, bh)) in &runs[1..] {
                assert_eq!(a, b, "f32 {isa} m={m} {pool}");
                assert_eq!(ah, bh, "f16 {isa} m={m} {pool}");
            }
        }
    }
}

/// A GEMV row must not depend on how many other rows share the call (below the
/// gemm threshold, for f32 and f16 weights), which is what lets batched beams match single decoding.
#[test]
fn gemv_rows_do_not_depend_on_batch() {
    let (n, k) = (37, 203);
    let mut rng = Rng(11);
    let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
    let x = matrix(&mut rng, Fill::Uniform, 5, k, 1.0);
    for isa in isas() {
        let mut all = vec![0.0f32; 5 * n];
        lf32::linear_with(isa, &x, 5, k, &w, n, &mut all);
        for i in 0..5 {
            let mut one = vec![0.0f32; n];
            lf32::linear_with(isa, &x[i * k..(i + 1) * k], 1, k, &w, n, &mut one);
            assert_eq!(one, all[i * n..(i + 1) * n], "{isa} row {i}");
        }
    }
    // f16 weights: rows run in 4- (AVX-512) or 2-row (AVX2) blocks, the rest
    // one at a time, up to just below every level's prefill threshold (our
    // kernels' f32::GEMM_MIN_M, the gemm crate's F16_GEMM_MIN_M).
    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let m = lf32::GEMM_MIN_M.min(lf16::F16_GEMM_MIN_M) - 1;
    let x = matrix(&mut rng, Fill::Uniform, m, k, 1.0);
    for isa in isas() {
        let mut all = vec![0.0f32; m * n];
        lf16::linear_with(isa, &x, m, k, &wh, n, &mut all);
        for i in 0..m {
            let mut one = vec![0.0f32; n];
            lf16::linear_with(isa, &x[i * k..(i + 1) * k], 1, k, &wh, n, &mut one);
            assert_eq!(one, all[i * n..(i + 1) * n], "f16 {isa} row {i}");
        }
    }
}

#[test]
fn empty_shapes_are_fine() {
    for isa in isas() {
        let mut y = vec![1.0f32; 6];
        lf32::linear_with(isa, &[], 2, 0, &[], 3, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        lf32::linear_with(isa, &[], 0, 5, &[0.0; 15], 3, &mut []);
        lf16::linear_with(isa, &[1.0; 5], 1, 5, &[], 0, &mut []);
    }
}

/// Several gemm blocks in both directions (ROW_BLOCK 64, COL_BLOCK 128), with
/// ragged edges, against the reference.
#[test]
fn multi_block_gemm_matches_reference() {
    let (m, n, k) = (70, 300, 77);
    let mut rng = Rng(13);
    let x = matrix(&mut rng, Fill::Wide, m, k, 1.0);
    let w = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let wq: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
    let (r, a) = (reference::linear(&x, m, k, &w, n), abs_dot(&x, m, k, &w, n));
    let (rh, ah) = (
        reference::linear(&x, m, k, &wq, n),
        abs_dot(&x, m, k, &wq, n),
    );
    for isa in isas() {
        let mut y = vec![f32::NAN; m * n];
        lf32::linear_with(isa, &x, m, k, &w, n, &mut y);
        let mut yh = vec![f32::NAN; m * n];
        lf16::linear_with(isa, &x, m, k, &wh, n, &mut yh);
        for t in 0..m * n {
            assert!(
                (y[t] as f64 - r[t]).abs() <= f32_budget(k, a[t]),
                "f32 {isa} {t}"
            );
            assert!(
                (yh[t] as f64 - rh[t]).abs() <= f32_budget(k, ah[t]),
                "f16 {isa} {t}"
            );
        }
    }
}
