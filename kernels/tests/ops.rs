//! The small row ops (ops.rs) on every ISA level: bit-identical to the scalar
//! twins where the op is exact or keeps the scalar's order, within named
//! budgets of the f64 `reference` where it evaluates a transcendental.

mod common;

use common::*;
use common::{Fill, Rng};
use proptest::prelude::*;
use t5edge_kernels::ops::{self, Activation};
use t5edge_kernels::{reference, Isa};

/// f32 unit roundoff.
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Higham's `gamma_n = n u / (1 - n u)`.
fn gamma(n: usize) -> f64 {
    let g = n as f64 * U;
    g / (1.0 - g)
}

/// RMSNorm, relative to the exact output: the sum of `d` squares in any order
/// is within `gamma_(d+1)` of its value (the +1 covers forming each square),
/// of which the square root keeps half; then `/ d`, `+ eps`, the square root,
/// the reciprocal and the two products are one rounding each (6 u), and one
/// more u for the f32 reading of the budget itself.
fn rms_norm_budget(d: usize, exact: f64) -> f64 {
    (gamma(d + 1) / 2.0 + 7.0 * U) * exact.abs() + 1e-37
}

/// `gelu_new`, relative to `|x|`: the f32 `tanh` (or the vector `exp`, 2
/// ulp) and forming `u = c (x + 0.044715 x³)` cost a few u of `u`, which the
/// logistic's slope `(1 - tanh²u) / 2` shrinks. Measured worst cases over
/// 20M log-uniform x in ±[1e-3, 1e2]: 2.2 u (scalar twin and AVX2/V3 alike).
/// 8 u leaves margin without hiding a wrong formula (see
/// `activation_budgets_hold_and_catch_a_wrong_formula`).
const GELU_NEW_REL: f64 = 8.0 * U;

/// SiLU, relative to `|x|`: the `exp` enters through the logistic's slope (at
/// most 1/4), plus the add and the division. Measured worst: 2.0 u.
const SILU_REL: f64 = 4.0 * U;

/// Exact GELU, relative to `|x|`: Abramowitz-Stegun 7.1.26 is within 1.5e-7
/// of erf, so within 0.75e-7 of `Φ`, which both twins inherit; the scalar
/// twin evaluates it in f64 (measured worst 2.1 u in all), the vector one in
/// f32, where the polynomial's alternating terms (up to 1.45 against a
/// result near 0.25) cancel and multiply the roundings (measured worst 5.6 u
/// in all, at x ≈ 0.035). 8 u on top of the approximation's share.
const GELU_ERF_REL: f64 = 0.75e-7 + 8.0 * U;

/// Below this every output is treated as zero: the f32 results of the
/// activations for large negative x are subnormal or flushed.
const TINY: f64 = 1e-35;

fn activation_budget(act: Activation, x: f32) -> f64 {
    let rel = match act {
        Activation::Relu => 0.0,
        Activation::GeluNew => GELU_NEW_REL,
        Activation::GeluErf => GELU_ERF_REL,
        Activation::Silu => SILU_REL,
    };
    rel * (x as f64).abs() + TINY
}

fn activation_ref(act: Activation, x: f32) -> f64 {
    match act {
        Activation::Relu => (x as f64).max(0.0),
        Activation::GeluNew => reference::gelu_new(x),
        Activation::GeluErf => reference::gelu_erf(x),
        Activation::Silu => reference::silu(x),
    }
}

const ACTS: [Activation; 4] = [
    Activation::Relu,
    Activation::GeluNew,
    Activation::GeluErf,
    Activation::Silu,
];

/// Activation inputs: the shared fills, scaled so both the linear region and
/// the saturated tails of every activation (|x| up to `big`) show up.
fn activations_input(rng: &mut Rng, fill: Fill, len: usize, big: f32) -> Vec<f32> {
    matrix(rng, fill, 1, len, big)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The vector levels of this CPU (the ones that run pulp, not the twins).
fn simd_isas() -> Vec<Isa> {
    isas()
        .into_iter()
        .filter(|&i| ops::simd_backend(i) != "scalar")
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// RMSNorm: every level gives the scalar twin's bits (same 16 partial
    /// sums, same order, no fused multiply-add), and the twin is within
    /// `rms_norm_budget` of the f64 reference.
    #[test]
    fn rms_norm_is_bit_identical_and_within_budget(
        rows in 1usize..=4, d in 1usize..=300, fill in fill_strategy(),
        eps in prop_oneof![Just(1e-6f32), Just(1e-5f32)], seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let x = matrix(&mut rng, fill, rows, d, 1e4);
        let w: Vec<f32> = (0..d).map(|_| 1.0 + rng.unit()).collect();
        let exact = reference::rms_norm_rows(&x, &w, eps);
        let mut want = vec![f32::NAN; rows * d];
        ops::rms_norm_rows_with(Isa::Scalar, &x, &w, eps, &mut want);
        for (t, (&y, &r)) in want.iter().zip(&exact).enumerate() {
            let err = (y as f64 - r).abs();
            prop_assert!(err <= rms_norm_budget(d, r),
                "scalar d {d} [{t}]: {y} vs {r} (err {err:e})");
        }
        for isa in isas() {
            let mut y = vec![f32::NAN; rows * d];
            ops::rms_norm_rows_with(isa, &x, &w, eps, &mut y);
            prop_assert_eq!(bits(&y), bits(&want), "{} d {}", isa, d);
            if rows == 1 {
                let mut y1 = vec![f32::NAN; d];
                ops::rms_norm_with(isa, &x, &w, eps, &mut y1);
                prop_assert_eq!(bits(&y1), bits(&want), "{} rms_norm d {}", isa, d);
            }
        }
    }

    /// Residual add: exact element-wise, the same bits at every level.
    #[test]
    fn add_is_bit_identical(len in 0usize..=300, fy in fill_strategy(), fx in fill_strategy(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let y0 = matrix(&mut rng, fy, 1, len, 1e30);
        let x = matrix(&mut rng, fx, 1, len, 1e30);
        let want: Vec<f32> = y0.iter().zip(&x).map(|(a, b)| a + b).collect();
        for isa in isas() {
            let mut y = y0.clone();
            ops::add_inplace_with(isa, &mut y, &x);
            prop_assert_eq!(bits(&y), bits(&want), "{}", isa);
        }
    }

    /// Activations and gated products: ReLU is bit-identical everywhere; the
    /// transcendental ones are within their budget at every level (scalar
    /// twin included), and the vector levels agree with each other bit for bit.
    #[test]
    fn activations_match_reference(
        len in 0usize..=200, fill in fill_strategy(), big in prop_oneof![Just(8.0f32), Just(1e4f32)],
        gated in any::<bool>(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let x = activations_input(&mut rng, fill, len, big);
        let up: Vec<f32> = (0..len).map(|_| rng.unit() * 4.0).collect();
        for act in ACTS {
            let run = |isa: Isa| {
                let mut y = x.clone();
                if gated {
                    ops::gated_inplace_with(isa, act, &mut y, &up);
                } else {
                    ops::activate_inplace_with(isa, act, &mut y);
                }
                y
            };
            let scalar = run(Isa::Scalar);
            let mut first_simd: Option<(Isa, Vec<f32>)> = None;
            for isa in isas() {
                let y = run(isa);
                for t in 0..len {
                    let g = if gated { up[t] as f64 } else { 1.0 };
                    let r = activation_ref(act, x[t]) * g;
                    // The product with `up` is one more rounding.
                    let budget = activation_budget(act, x[t]) * g.abs() + U * r.abs();
                    let err = (y[t] as f64 - r).abs();
                    prop_assert!(err <= budget,
                        "{isa} {act:?} gated {gated} x {} -> {} vs {r} (err {err:e}, budget {budget:e})",
                        x[t], y[t]);
                }
                if act == Activation::Relu {
                    prop_assert_eq!(bits(&y), bits(&scalar), "{} relu", isa);
                }
                if ops::simd_backend(isa) != "scalar" {
                    match &first_simd {
                        Some((i0, y0)) => prop_assert_eq!(bits(&y), bits(y0), "{} vs {} {:?}", isa, i0, act),
                        None => first_simd = Some((isa, y)),
                    }
                }
            }
        }
    }

    /// Argmax: the same index as the one-pass scalar twin at every level,
    /// with planted ties, NaN, infinities and signed zeros.
    #[test]
    fn argmax_equals_scalar_twin(len in 0usize..=600, pattern in 0u8..6, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let x: Vec<f32> = (0..len).map(|_| match (pattern, rng.below(12)) {
            (1, 0) => f32::NAN,
            (2, 0..=9) => f32::NEG_INFINITY,
            (2, 10) => f32::NAN,
            (3, 0..=2) => 0.75, // ties with the maximum of the uniform part
            (4, 0) => -0.0,
            (4, _) => 0.0,
            (5, 0) => f32::INFINITY,
            _ => rng.unit() * 0.75,
        }).collect();
        let want = ops::argmax_scalar(&x);
        for isa in isas() {
            prop_assert_eq!(ops::argmax_with(isa, &x), want, "{} pattern {}", isa, pattern);
        }
    }
}

/// Over a dense sweep of [-20, 20] every level is within budget, and the
/// budgets are tight enough to tell the activations apart: swapping the tanh
/// GELU for the erf one (they differ by up to ~5e-4 |x|), or SiLU for the
/// sigmoid GELU `x σ(1.702 x)`, breaks them.
#[test]
fn activation_budgets_hold_and_catch_a_wrong_formula() {
    let wrong = |act: Activation, x: f32| match act {
        Activation::GeluNew => reference::gelu_erf(x),
        Activation::GeluErf => reference::gelu_new(x),
        _ => reference::silu(1.702 * x) / 1.702,
    };
    for act in [Activation::GeluNew, Activation::GeluErf, Activation::Silu] {
        let mut worst = 0.0f64;
        let mut caught = false;
        for i in -20_000..=20_000 {
            let x = i as f32 * 1e-3;
            let r = activation_ref(act, x);
            let budget = activation_budget(act, x);
            for isa in isas() {
                let mut y = [x];
                ops::activate_inplace_with(isa, act, &mut y);
                let err = (y[0] as f64 - r).abs();
                assert!(
                    err <= budget,
                    "{isa} {act:?} {x}: err {err:e} budget {budget:e}"
                );
                worst = worst.max(err / budget);
            }
            caught |= (wrong(act, x) - r).abs() > budget;
        }
        assert!(
            caught,
            "{act:?}: the budget does not catch the wrong formula"
        );
        eprintln!("{act:?}: worst error {worst:.3} of the budget");
    }
}

/// Element positions do not matter on the vector levels: a value gives the
/// same bits in a full vector, a tail or alone.
#[test]
fn vector_activations_do_not_depend_on_position() {
    let mut rng = Rng(7);
    let x: Vec<f32> = (0..37).map(|_| rng.unit() * 6.0).collect();
    for isa in simd_isas() {
        for act in ACTS {
            let mut all = x.clone();
            ops::activate_inplace_with(isa, act, &mut all);
            for (t, &v) in x.iter().enumerate() {
                let mut one = [v];
                ops::activate_inplace_with(isa, act, &mut one);
                assert_eq!(one[0].to_bits(), all[t].to_bits(), "{isa} {act:?} [{t}]");
            }
        }
    }
}

/// ReLU's twin is defined on the awkward inputs: NaN and both zeros give +0.
#[test]
fn relu_maps_nan_and_zeros_to_positive_zero() {
    for isa in isas() {
        let mut y = [f32::NAN, -0.0, 0.0, -1.0, 2.5, f32::INFINITY];
        ops::activate_inplace_with(isa, Activation::Relu, &mut y);
        assert_eq!(
            bits(&y),
            bits(&[0.0, 0.0, 0.0, 0.0, 2.5, f32::INFINITY]),
            "{isa}"
        );
    }
}

/// NaN stays NaN through the transcendental activations at every level.
#[test]
fn activations_propagate_nan() {
    for isa in isas() {
        for act in [Activation::GeluNew, Activation::GeluErf, Activation::Silu] {
            let mut y = [1.0, f32::NAN, -1.0];
            ops::activate_inplace_with(isa, act, &mut y);
            assert!(
                y[1].is_nan() && !y[0].is_nan() && !y[2].is_nan(),
                "{isa} {act:?}"
            );
        }
    }
}

/// The far tails are exact: from |x| = 20 on (120 for SiLU, whose left tail
/// `x e^x` is still a normal float down to -87), every activation's result
/// is `x` or a signed zero at every level, the scalar twin's bits. (A clamped
/// vector `exp` once left values near 1e-38 there instead, which the gated
/// product turned into subnormals and the next matrix product crawled on.)
#[test]
fn activation_tails_are_exact_zeros_and_identities() {
    for act in ACTS {
        let start = if act == Activation::Silu { 120.0 } else { 20.0 };
        let mut rng = Rng(11);
        let mut x: Vec<f32> = (0..200)
            .map(|i| {
                let m = start * 500f32.powf((rng.unit() + 1.0) / 2.0);
                if i % 2 == 0 {
                    m
                } else {
                    -m
                }
            })
            .collect();
        x.extend([start, -start, 1e30, -1e30, f32::MAX, f32::MIN]);
        let mut want = x.clone();
        ops::activate_inplace_with(Isa::Scalar, act, &mut want);
        for (&v, &w) in x.iter().zip(&want) {
            let expect = if v > 0.0 { v } else { -0.0 };
            assert!(
                w.to_bits() == expect.to_bits() || (act == Activation::Relu && w == 0.0),
                "scalar {act:?}({v}) = {w}"
            );
        }
        for isa in isas() {
            let mut y = x.clone();
            ops::activate_inplace_with(isa, act, &mut y);
            assert_eq!(bits(&y), bits(&want), "{isa} {act:?}");
        }
    }
}

/// A prefill's row ops (from 16K floats) split across the pool: on every
/// pool and thread count the bits of the op on one thread, at every level.
#[test]
fn large_row_ops_are_identical_across_thread_counts() {
    let (rows, d) = (70usize, 257usize); // 17990 floats, rows not a power of two
    let mut rng = Rng(31);
    let x: Vec<f32> = (0..rows * d).map(|_| rng.unit() * 3.0).collect();
    let y0: Vec<f32> = (0..rows * d).map(|_| rng.unit()).collect();
    let w: Vec<f32> = (0..d).map(|_| 1.0 + rng.unit() * 0.1).collect();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for isa in isas() {
        let all = || {
            let mut norm = vec![0.0f32; rows * d];
            ops::rms_norm_rows_with(isa, &x, &w, 1e-6, &mut norm);
            let mut y = y0.clone();
            ops::add_inplace_with(isa, &mut y, &x);
            let mut acts = Vec::new();
            for act in [Activation::Relu, Activation::GeluNew] {
                let mut a = x.clone();
                ops::activate_inplace_with(isa, act, &mut a);
                let mut g = x.clone();
                ops::gated_inplace_with(isa, act, &mut g, &y0);
                acts.push((bits(&a), bits(&g)));
            }
            (bits(&norm), bits(&y), acts)
        };
        let want = with_threads(1, all);
        // Each row of the norm is also what it is alone (whole rows a task).
        for r in [0, 31, rows - 1] {
            let mut one = vec![0.0f32; d];
            ops::rms_norm_rows_with(isa, &x[r * d..(r + 1) * d], &w, 1e-6, &mut one);
            assert_eq!(bits(&one), want.0[r * d..(r + 1) * d], "{isa} row {r}");
        }
        for (pool, got) in on_every_pool(all) {
            assert!(got == want, "{isa} {pool}");
        }
    }
}
