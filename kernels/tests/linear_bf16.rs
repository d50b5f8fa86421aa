//! bf16-weight linear layers on every ISA level against the f64 reference,
//! and the AVX-512 BF16 (`vdpbf16ps`) prefill where the CPU has it.

mod common;

use common::*;
use half::bf16;
use proptest::prelude::*;
use t5edge_kernels::{bf16 as lbf16, f32 as lf32, reference, Isa};

/// f32 unit roundoff; the gamma_n bound as in linear_float.rs.
const F32_UNIT_ROUNDOFF: f64 = 1.0 / (1u64 << 24) as f64;

/// Relative error of rounding an f32 to bf16 (half an ulp of its 8-bit
/// significand): the weights' rounding against the original f32 weights.
const BF16_REL_BUDGET: f64 = 1.0 / 256.0;

/// The `vdpbf16ps` prefill rounds the activations to bf16 as well: `2^-8`
/// relative per term (half an ulp is 2^-9; doubled for the slack of the
/// flushed denormals' relative part), plus this absolute `2^-125` per unit of
/// `sum|x_i| + sum|w_i| + k` for denormal inputs and partial sums flushed to zero.
#[cfg(target_arch = "x86_64")]
const DPBF16_REL_BUDGET: f64 = 1.0 / 256.0;
#[cfg(target_arch = "x86_64")]
const DPBF16_FLUSH_ABS: f64 = 2.350_988_701_644_575e-38; // 2^-125

fn f32_budget(k: usize, abs_dot: f64) -> f64 {
    let g = (k as f64 + 2.0) * F32_UNIT_ROUNDOFF;
    g / (1.0 - g) * abs_dot + 1e-30
}

/// The AMX split's budget (`bf16::amx::linear_split`, what `linear_with`
/// runs where `amx_takes`): exact products of three parts per activation,
/// so f32 sums of `3k` terms whose magnitudes add to at most `1 + 2^-7 +
/// 2^-15` of `|x_i w_i|`, plus the tiles' flushed denormals (parts, products
/// and partial sums, [`DPBF16_FLUSH_ABS`] per unit of `sum|x_i| + sum|w_i|
/// + 3k`).
fn split_budget(x: &[f32], k: usize, w: &[f32], n: usize, t: usize, a: f64) -> f64 {
    let (i, j) = (t / n, t % n);
    let xs: f64 = x[i * k..(i + 1) * k].iter().map(|v| v.abs() as f64).sum();
    let ws: f64 = w[j * k..(j + 1) * k].iter().map(|v| v.abs() as f64).sum();
    f32_budget(3 * k, a * 1.01) + SPLIT_FLUSH_ABS * (xs + ws + 3.0 * k as f64)
}

/// 2^-125: the flushed denormals' absolute term (the parts below 2^-126 a
/// product drops, and each flushed product or partial sum).
const SPLIT_FLUSH_ABS: f64 = 2.350_988_701_644_575e-38;

/// m crosses BF16_GEMM_MIN_M (32) and the 4- and 2-row blocks' remainders; k
/// hits every tail of the 8/16/32/64-wide loops.
fn bf16_shape() -> impl Strategy<Value = (usize, usize, usize)> {
    (
        prop_oneof![1usize..=12, 28usize..=36],
        1usize..=40,
        1usize..=300,
    )
}

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn widened(w: &[bf16]) -> Vec<f32> {
    w.iter().map(|v| v.to_f32()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Error budget: against the widened weights (exact f32 values) only the f32
    /// accumulation errs, `gamma_(k+2) · sum|x_i w_i|`; against the original f32
    /// weights the bf16 rounding adds `2^-8 |x_i w_i|` per term.
    #[test]
    fn bf16_linear_matches_reference(
        (m, n, k) in bf16_shape(), fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e12);
        let w32 = matrix(&mut rng, fw, n, k, 1e12);
        let w = to_bf16(&w32);
        let wq = widened(&w);
        let r = reference::linear(&x, m, k, &wq, n);
        let a = abs_dot(&x, m, k, &wq, n);
        let r32 = reference::linear(&x, m, k, &w32, n);
        let a32 = abs_dot(&x, m, k, &w32, n);
        for isa in isas() {
            let mut y = vec![f32::NAN; m * n];
            lbf16::linear_with(isa, &x, m, k, &w, n, &mut y);
            let tiles = lbf16::amx_takes(isa, m, k, n);
            for t in 0..m * n {
                let own = if tiles { split_budget(&x, k, &wq, n, t, a[t]) } else { f32_budget(k, a[t]) };
                let err = (y[t] as f64 - r[t]).abs();
                prop_assert!(err <= own,
                    "{isa} m={m} n={n} k={k} out {t}: {} vs {} (err {err:e}, budget {own:e})",
                    y[t], r[t]);
                let budget = BF16_REL_BUDGET * a32[t] + own;
                let err32 = (y[t] as f64 - r32[t]).abs();
                prop_assert!(err32 <= budget,
                    "{isa} vs f32 weights: out {t}: {} vs {} (err {err32:e}, budget {budget:e})", y[t], r32[t]);
            }
        }
    }

    /// Error budget: bit-identical. The scalar and NEON bf16 GEMVs widen
    /// exactly and then sum in the order of their f32 GEMV.
    #[test]
    fn bf16_gemv_is_the_f32_gemv_of_the_widened_weights(
        m in 1usize..lf32::GEMM_MIN_M, n in 1usize..=40, k in 1usize..=300,
        fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fx, m, k, 1e6);
        let w = to_bf16(&matrix(&mut rng, fw, n, k, 1e6));
        let wq = widened(&w);
        for isa in isas() {
            let (mut yb, mut y) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            lbf16::linear_with(isa, &x, m, k, &w, n, &mut yb);
            // The x86 bf16 GEMVs copy the f16 GEMVs' row blocking, which sums
            // differently from the f32 GEMV: the budget test above covers them.
            if matches!(isa, Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni) {
                continue;
            }
            lf32::linear_with(isa, &x, m, k, &wq, n, &mut y);
            for t in 0..m * n {
                prop_assert_eq!(yb[t].to_bits(), y[t].to_bits(),
                    "{} m={} n={} k={} out {}: bf16 {} vs f32 {}", isa, m, n, k, t, yb[t], y[t]);
            }
        }
    }
}

/// `t5edge_kernels::bf16::linear_dot_with` at the AVX-512 levels on a CPU
/// with AVX-512 BF16 runs prefill with `vdpbf16ps`; everywhere else, and
/// `linear_with` everywhere, it is the widening path the tests above check.
#[cfg(target_arch = "x86_64")]
fn dp_budget(x: &[f32], k: usize, w: &[f32], n: usize, t: usize, a: f64) -> f64 {
    let (i, j) = (t / n, t % n);
    let xs: f64 = x[i * k..(i + 1) * k].iter().map(|v| v.abs() as f64).sum();
    let ws: f64 = w[j * k..(j + 1) * k].iter().map(|v| v.abs() as f64).sum();
    DPBF16_REL_BUDGET * a + f32_budget(2 * k, a) + DPBF16_FLUSH_ABS * (xs + ws + k as f64)
}

/// A bf16 product: `f(x, w, y)`.
#[cfg(target_arch = "x86_64")]
type DpProduct<'a> = &'a dyn Fn(&[f32], &[bf16], &mut [f32]);

/// An output's budget: `budget(x, k, w, n, t, abs_dot)` ([`dp_budget`],
/// [`split_budget`]).
#[cfg(target_arch = "x86_64")]
type Budget = fn(&[f32], usize, &[f32], usize, usize, f64) -> f64;

/// [`within_budget`] with [`dp_budget`]: products that round the
/// activations to bf16.
#[cfg(target_arch = "x86_64")]
fn within_dp_budget(
    shape: (usize, usize, usize),
    fills: (Fill, Fill, u64),
    products: &[(&str, DpProduct<'_>)],
) -> Result<(), TestCaseError> {
    within_budget(dp_budget, shape, fills, products)
}

/// An `[m, k] x [n, k]` case drawn from `seed`, run by each of `products`,
/// every output within `budget` of the f64 reference.
#[cfg(target_arch = "x86_64")]
fn within_budget(
    budget: Budget,
    (m, n, k): (usize, usize, usize),
    (fx, fw, seed): (Fill, Fill, u64),
    products: &[(&str, DpProduct<'_>)],
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let x = matrix(&mut rng, fx, m, k, 1e12);
    let w = to_bf16(&matrix(&mut rng, fw, n, k, 1e12));
    let wq = widened(&w);
    let r = reference::linear(&x, m, k, &wq, n);
    let a = abs_dot(&x, m, k, &wq, n);
    for (name, f) in products {
        let mut y = vec![f32::NAN; m * n];
        f(&x, &w, &mut y);
        for t in 0..m * n {
            let budget = budget(&x, k, &wq, n, t, a[t]);
            let err = (y[t] as f64 - r[t]).abs();
            prop_assert!(
                err <= budget,
                "{name} m={m} n={n} k={k} out {t}: {} vs {} (err {err:e}, budget {budget:e})",
                y[t],
                r[t]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Error budget: `2^-8 · sum|x_i w_i| + gamma_(2k+2) · sum|x_i w_i| +
    /// 2^-125 (sum|x_i| + sum|w_i| + k)` against the f64 product of the f32
    /// activations and the bf16 weights (module docs of `bf16::avx512bf16`).
    /// Skipped, saying so, on a CPU without AVX-512 BF16.
    #[test]
    fn bf16_dpbf16_prefill_matches_reference(
        m in 1usize..=40, n in 1usize..=40, k in 1usize..=300,
        fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if !lbf16::avx512bf16::available() {
                return Ok(());
            }
            within_dp_budget((m, n, k), (fx, fw, seed), &[
                ("vdpbf16ps", &|x, w, y| lbf16::avx512bf16::linear(x, m, k, w, n, y)),
                ("avx512 dispatch", &|x, w, y| lbf16::linear_dot_with(Isa::Avx512, x, m, k, w, n, y)),
            ])?;
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (m, n, k, fx, fw, seed);
    }
}

#[test]
fn dpbf16_availability_is_reported() {
    #[cfg(target_arch = "x86_64")]
    if !lbf16::avx512bf16::available() {
        eprintln!(
            "skipped: bf16_dpbf16_prefill_matches_reference needs AVX-512 BF16, which this CPU lacks (detected: {})",
            t5edge_kernels::dispatch::features().names().join(", ")
        );
    }
}

/// Big enough to be split over threads on both the GEMV and the prefill path:
/// the bits must not depend on the thread count.
#[test]
fn bf16_linear_is_identical_across_thread_counts() {
    // (1024, 320): whole tiles, which the `amx` level runs on them.
    for (n, k) in [(4000, 300), (1024, 320)] {
        identical_across_thread_counts(n, k);
    }
}

fn identical_across_thread_counts(n: usize, k: usize) {
    let mut rng = Rng(7);
    let w = to_bf16(&matrix(&mut rng, Fill::Uniform, n, k, 1.0));
    for m in [1usize, 3, 40] {
        let x = matrix(&mut rng, Fill::Uniform, m, k, 1.0);
        for isa in isas() {
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let runs = on_every_pool(|| {
                let mut y = vec![0.0f32; m * n];
                lbf16::linear_with(isa, &x, m, k, &w, n, &mut y);
                bits(&y)
            });
            for (pool, b) in &runs[1..] {
                assert_eq!(&runs[0].1, b, "bf16 {isa} m={m} n={n} k={k} {pool}");
            }
        }
    }
}

/// A GEMV row must not depend on how many other rows share the call, below
/// the prefill threshold (every level's: our prefill kernels take over from
/// `f32::GEMM_MIN_M` rows, the gemm crate from `BF16_GEMM_MIN_M`).
#[test]
fn bf16_gemv_rows_do_not_depend_on_batch() {
    let (n, k) = (37, 203);
    let mut rng = Rng(11);
    let w = to_bf16(&matrix(&mut rng, Fill::Uniform, n, k, 1.0));
    let m = t5edge_kernels::f32::GEMM_MIN_M.min(lbf16::BF16_GEMM_MIN_M) - 1;
    let x = matrix(&mut rng, Fill::Uniform, m, k, 1.0);
    for isa in isas() {
        let mut all = vec![0.0f32; m * n];
        lbf16::linear_with(isa, &x, m, k, &w, n, &mut all);
        for i in 0..m {
            let mut one = vec![0.0f32; n];
            lbf16::linear_with(isa, &x[i * k..(i + 1) * k], 1, k, &w, n, &mut one);
            assert_eq!(one, all[i * n..(i + 1) * n], "bf16 {isa} row {i}");
        }
    }
}

/// Several prefill blocks in both directions (the gemm crate's 64 x 128
/// blocks on widened weights at AVX2): against the reference, every level.
#[test]
fn bf16_prefill_spans_blocks() {
    let (m, n, k) = (130, 300, 96);
    let mut rng = Rng(5);
    let x = matrix(&mut rng, Fill::Uniform, m, k, 1.0);
    let w = to_bf16(&matrix(&mut rng, Fill::Uniform, n, k, 1.0));
    let wq = widened(&w);
    let r = reference::linear(&x, m, k, &wq, n);
    let a = abs_dot(&x, m, k, &wq, n);
    for isa in isas() {
        let mut y = vec![f32::NAN; m * n];
        lbf16::linear_with(isa, &x, m, k, &w, n, &mut y);
        for t in 0..m * n {
            assert!(
                (y[t] as f64 - r[t]).abs() <= f32_budget(k, a[t]),
                "{isa} out {t}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Error budgets: the rounded product (`linear_dot`'s), that of
    /// `bf16_dpbf16_prefill_matches_reference` (the AMX-BF16 tiles round the
    /// activations to bf16 the same way and sum each output in one FMA
    /// chain with denormals flushed); the split (`linear`'s default),
    /// [`split_budget`] (f32 sums of the exact products of three parts,
    /// flushed denormals). Whole tiles (k a multiple of 32, n of 16), rows
    /// across the 16-row tiles' and the 32-row blocks' edges, a lone last
    /// weight tile (n = 16, 48). Skipped, saying so, on a CPU without
    /// AMX-BF16.
    #[test]
    fn bf16_amx_products_match_reference(
        m in 1usize..=70, n16 in 1usize..=5, k32 in 1usize..=10,
        fx in fill_strategy(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if !lbf16::amx::available() {
                return Ok(());
            }
            let (n, k) = (16 * n16, 32 * k32);
            within_dp_budget((m, n, k), (fx, fw, seed), &[
                ("amx", &|x, w, y| lbf16::amx::linear(x, m, k, w, n, y)),
                ("amx dispatch", &|x, w, y| lbf16::linear_dot_with(Isa::Amx, x, m, k, w, n, y)),
            ])?;
            within_budget(split_budget, (m, n, k), (fx, fw, seed), &[
                ("split", &|x, w, y| lbf16::amx::linear_split(x, m, k, w, n, y)),
                ("split dispatch", &|x, w, y| lbf16::linear_with(Isa::Amx, x, m, k, w, n, y)),
            ])?;
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (m, n16, k32, fx, fw, seed);
    }
}

#[test]
fn amx_bf16_availability_is_reported() {
    #[cfg(target_arch = "x86_64")]
    if !lbf16::amx::available() {
        eprintln!(
            "skipped: bf16_amx_products_match_reference needs AMX-BF16 tiles, which this CPU lacks or the OS does not grant (detected: {})",
            t5edge_kernels::dispatch::features().names().join(", ")
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Error budget: none. The three parts add up to the value exactly
    /// (in f64, which holds any sum of them) from 2^-102 up; below it
    /// within 2^-125; a non-finite value is its bf16 alone.
    #[test]
    fn bf16_split_parts_add_up_to_the_value(bits in any::<u32>()) {
        #[cfg(target_arch = "x86_64")]
        {
            let x = f32::from_bits(bits);
            let p = lbf16::amx::split(x);
            let part = |i: usize| bf16::from_bits(p[i]).to_f32() as f64;
            if !x.is_finite() {
                prop_assert_eq!(p, [bf16::from_f32(x).to_bits(), 0, 0]);
            } else if x.abs() >= 2f32.powi(-102) {
                prop_assert_eq!(part(0) + part(1) + part(2), x as f64, "{:e}: {:?}", x, p);
            } else {
                prop_assert!((part(0) + part(1) + part(2) - x as f64).abs() <= SPLIT_FLUSH_ABS);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bits;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Error budget: bit-identical. The AVX-512 layout of the tiles'
    /// activations (rounded, `P` = 1, and split, `P` = 3) is its plain
    /// twin's, on any bits (NaN, infinities, denormals), rows across the
    /// 16-row groups. Skipped without AVX-512.
    #[test]
    fn bf16_amx_activation_layout_matches_its_twin(
        m in 1usize..=40, k32 in 1usize..=4, seed in any::<u64>()
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if !Isa::Avx512.supported() {
                return Ok(());
            }
            let k = 32 * k32;
            let mut rng = Rng(seed);
            let x: Vec<f32> = (0..m * k).map(|_| f32::from_bits(rng.next_u64() as u32)).collect();
            fn both<const P: usize>(x: &[f32], m: usize, k: usize) -> (Vec<u32>, Vec<u32>) {
                let len = lbf16::amx::tiles_len::<P>(m, k);
                let (mut plain, mut fast) = (vec![7u32; len], vec![7u32; len]);
                lbf16::amx::activation_tiles::<P>(x, m, k, &mut plain);
                // SAFETY: the caller checked AVX-512; k is a multiple of
                // 32; both buffers are `tiles_len` long.
                unsafe { lbf16::amx::activation_tiles_avx512::<P>(x, m, k, &mut fast) };
                (plain, fast)
            }
            let (plain, fast) = both::<1>(&x, m, k);
            prop_assert_eq!(plain, fast, "rounded, m={} k={}", m, k);
            let (plain, fast) = both::<3>(&x, m, k);
            prop_assert_eq!(plain, fast, "split, m={} k={}", m, k);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (m, k32, seed);
    }
}

/// Both tile products past one pass of sums (260 rows: 17 groups of 16,
/// passes of 16), one block of steps (2112 inputs: 66 steps, blocks of
/// 32 and 64), with a lone last weight tile (n = 48), and past a slab of
/// rows (1030: slabs of 1024): each within its budget,
/// and each row the bits of the same row in 32-row products (an output's
/// chain does not depend on the other rows). Skipped without AMX-BF16.
#[test]
fn bf16_amx_products_span_passes_and_step_blocks() {
    #[cfg(target_arch = "x86_64")]
    {
        if !lbf16::amx::available() {
            return;
        }
        // And past a slab of rows (1030: 1024 + 6).
        for (m, k, n) in [(260, 2112, 48), (1030, 64, 32)] {
            spans_passes_and_step_blocks(m, k, n);
        }
    }
}

/// [`bf16_amx_products_span_passes_and_step_blocks`] on one shape.
#[cfg(target_arch = "x86_64")]
fn spans_passes_and_step_blocks(m: usize, k: usize, n: usize) {
    let mut rng = Rng(13);
    let x = matrix(&mut rng, Fill::Wide, m, k, 1.0);
    let w = to_bf16(&matrix(&mut rng, Fill::Uniform, n, k, 1.0));
    let wq = widened(&w);
    let r = reference::linear(&x, m, k, &wq, n);
    let a = abs_dot(&x, m, k, &wq, n);
    type Tiles = fn(&[f32], usize, usize, &[bf16], usize, &mut [f32]);
    let products: [(&str, Tiles); 2] = [
        ("split", lbf16::amx::linear_split),
        ("rounded", lbf16::amx::linear),
    ];
    for (name, f) in products {
        let mut y = vec![f32::NAN; m * n];
        f(&x, m, k, &w, n, &mut y);
        for t in 0..m * n {
            let budget = if name == "split" {
                split_budget(&x, k, &wq, n, t, a[t])
            } else {
                dp_budget(&x, k, &wq, n, t, a[t])
            };
            let err = (y[t] as f64 - r[t]).abs();
            assert!(
                err <= budget,
                "{name} out {t}: err {err:e}, budget {budget:e}"
            );
        }
        for r0 in (0..m).step_by(32) {
            let rows = (m - r0).min(32);
            let mut part = vec![f32::NAN; rows * n];
            f(&x[r0 * k..(r0 + rows) * k], rows, k, &w, n, &mut part);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&part),
                bits(&y[r0 * n..(r0 + rows) * n]),
                "{name} rows from {r0}"
            );
        }
    }
}
