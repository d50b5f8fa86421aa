//! The certified int8 head against brute force: on random heads and hidden
//! states (including near-ties planted on purpose), its pick is always the
//! exact argmax of the full-precision logits, computed here in f64 over all rows.

use proptest::prelude::*;
use t5edge::model::certified::{CertScratch, CertifiedHead};
use t5edge::model::linear::LinearWeight;
use t5edge::model::Linear;
use t5edge::model::WeightFormat;
use t5edge_kernels as kernels;
use t5edge_kernels::dispatch::Isa;

fn exact_argmax(w: &[f32], h: &[f32], k: usize, banned: Option<usize>) -> usize {
    let mut best = (usize::MAX, f64::NEG_INFINITY);
    for (j, row) in w.chunks_exact(k).enumerate() {
        if Some(j) == banned {
            continue;
        }
        let v: f64 = row.iter().zip(h).map(|(&a, &b)| a as f64 * b as f64).sum();
        if v > best.1 {
            best = (j, v);
        }
    }
    best.0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn certified_pick_is_the_exact_argmax(
        n in 2usize..300,
        k in 1usize..80,
        seed in any::<u64>(),
        ties in 0usize..4,
        group in prop_oneof![Just(0usize), Just(4), Just(8)],
        ban in any::<bool>(),
    ) {
        let mut r = t5edge::synth::Rng::new(seed);
        let mut w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
        let h: Vec<f32> = (0..k).map(|_| (r.normal() * 3.0) as f32).collect();
        // Plant near-duplicates of the best row: margins far below int8 error.
        let best = exact_argmax(&w, &h, k, None);
        for t in 0..ties {
            let dst = (best + 1 + t * 7) % n;
            if dst != best {
                for i in 0..k {
                    w[dst * k + i] = w[best * k + i] * (1.0 + 1e-6 * (t as f32 + 1.0) * if i % 2 == 0 { 1.0 } else { -1.0 });
                }
            }
        }
        let head = CertifiedHead::new(&Linear::f32(n, k, w.clone().into()), group).unwrap();
        let banned = ban.then_some(best);
        let (pick, rescored) = head.argmax(&h, banned);
        prop_assert_eq!(pick, exact_argmax(&w, &h, k, banned));
        prop_assert!(rescored >= 1 && rescored <= n);
    }
}

/// A confident head (one row along the hidden state, near-duplicates of it
/// planted 1e-6 apart, the rest random): the certified pick takes its
/// candidates from the int4 screen, and is still the exact argmax.
#[test]
fn certified_pick_through_the_screen_is_the_exact_argmax() {
    use std::sync::atomic::Ordering;
    let (n, k) = (3000, 64);
    for seed in 0..20u64 {
        let mut r = t5edge::synth::Rng::new(seed);
        let mut w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
        let h: Vec<f32> = (0..k).map(|_| r.normal() as f32).collect();
        let top = (seed as usize * 131) % n;
        for i in 0..k {
            w[top * k + i] = 2.0 * h[i];
        }
        for t in 1..4 {
            let dst = (top + t * 17) % n;
            for i in 0..k {
                w[dst * k + i] =
                    w[top * k + i] * (1.0 + 1e-6 * t as f32 * if i % 2 == 0 { 1.0 } else { -1.0 });
            }
        }
        for group in [0, 8] {
            let head = CertifiedHead::new(&Linear::f32(n, k, w.clone().into()), group).unwrap();
            for banned in [None, Some(top)] {
                let (pick, _) = head.argmax(&h, banned);
                assert_eq!(
                    pick,
                    exact_argmax(&w, &h, k, banned),
                    "seed {seed} group {group} banned {banned:?}"
                );
            }
            assert!(
                head.screened.load(Ordering::Relaxed) > 0,
                "seed {seed}: the screen never decided"
            );
        }
    }
}

/// The levels to check the f32 GEMV at: every one this CPU runs, and the
/// NEON kernel (natively on aarch64, emulated elsewhere).
fn levels() -> Vec<Isa> {
    let mut v = t5edge_kernels::dispatch::available();
    if !v.contains(&Isa::Neon) {
        v.push(Isa::Neon);
    }
    v
}

/// The head's logits as a decode step computes them at `isa` (the GEMV:
/// `Rows::Invariant`), for a head in any float format.
fn logits_at(isa: Isa, head: &Linear, h: &[f32]) -> Vec<f32> {
    let (n, k) = (head.n, head.k);
    let mut y = vec![0f32; n];
    match &head.weight {
        LinearWeight::F32(w) => {
            kernels::f32::linear_invariant_with(isa, h, 1, k, w.as_slice(), n, &mut y)
        }
        LinearWeight::F16(w) => {
            kernels::f16::linear_invariant_with(isa, h, 1, k, w.as_slice(), n, &mut y)
        }
        LinearWeight::Bf16(w) => {
            kernels::bf16::linear_invariant_with(isa, h, 1, k, w.as_slice(), n, &mut y)
        }
        LinearWeight::Int8(_) | LinearWeight::Int8A16(_) => unreachable!("float heads only"),
    }
    y
}

/// Plain greedy's pick: the argmax of the head's logits at `isa` (`banned`
/// set to -inf as EOS suppression does), ties to the lowest id.
fn greedy_argmax(isa: Isa, head: &Linear, h: &[f32], banned: Option<usize>) -> usize {
    let mut y = logits_at(isa, head, h);
    if let Some(b) = banned {
        y[b] = f32::NEG_INFINITY;
    }
    kernels::ops::argmax_scalar(&y).unwrap()
}

fn float_format() -> impl Strategy<Value = WeightFormat> {
    prop_oneof![
        Just(WeightFormat::F32),
        Just(WeightFormat::F16),
        Just(WeightFormat::Bf16)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A float head's screened pick (`greedy_pick`, what plain greedy runs
    /// over an f32, f16 or bf16 head) equals the argmax of its own logits at
    /// every level, on confident
    /// heads with planted rivals: exact duplicates of the best row (a tie:
    /// the lowest id), copies with two inputs swapped (the same exact logit,
    /// which the GEMV rounds differently: only its own bits can say which
    /// wins, an exact re-scoring would not), and copies 1e-6 apart.
    #[test]
    fn greedy_pick_is_the_argmax_of_the_heads_own_logits(
        n in 40usize..400,
        k in 2usize..300,
        seed in any::<u64>(),
        ban in any::<bool>(),
        format in float_format(),
    ) {
        let mut r = t5edge::synth::Rng::new(seed);
        let mut w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
        let h: Vec<f32> = (0..k).map(|_| (r.normal() * 3.0) as f32).collect();
        let top = (seed % n as u64) as usize;
        for i in 0..k {
            w[top * k + i] = 2.0 * h[i] + 0.1 * w[top * k + i];
        }
        let row: Vec<f32> = w[top * k..(top + 1) * k].to_vec();
        for (t, off) in [3usize, 11, 29, 31, 37].into_iter().enumerate() {
            let dst = (top + off) % n;
            let mut copy = row.clone();
            match t {
                0 => {}
                1 | 2 => copy.swap(t - 1, k - t),
                _ => copy.iter_mut().enumerate().for_each(|(i, v)| {
                    *v *= 1.0 + 1e-6 * if i % 2 == 0 { 1.0 } else { -1.0 }
                }),
            }
            w[dst * k..(dst + 1) * k].copy_from_slice(&copy);
        }
        // Rounded to the format after planting: the rivals stay rivals (a
        // swapped copy is still the same values in another order).
        let linear = Linear::f32(n, k, w.into()).convert(format, 0).unwrap();
        let head = CertifiedHead::for_greedy(&linear).unwrap();
        let banned = ban.then_some(top);
        let mut buf = CertScratch::default();
        for isa in levels() {
            let got = head.greedy_pick_with(isa, &h, banned, &mut buf);
            let (pick, rescored) = got.unwrap_or_else(|| panic!("{isa}: the screen did not decide"));
            prop_assert_eq!(pick, greedy_argmax(isa, &linear, &h, banned), "{} {:?}", isa, format);
            prop_assert!((1..=n).contains(&rescored));
        }
    }

    /// The premise of `greedy_pick`'s bound: at every level the GEMV's value
    /// lies within `γ·Σ|h_i w_i|` of the exact dot product with the (widened)
    /// weights, `γ = (k+1)u / (1 - (k+1)u)`, for f32, f16 and bf16 weights.
    /// Inputs of mixed signs and magnitudes (cancellation is where rounding
    /// shows most).
    #[test]
    fn the_float_gemv_errs_within_the_bound_greedy_pick_assumes(
        k in 1usize..1200,
        seed in any::<u64>(),
        format in float_format(),
    ) {
        let mut r = t5edge::synth::Rng::new(seed);
        // Magnitudes over 2^±24 (2^±8 for f16 weights, whose range ends at
        // 65504).
        let spread = |r: &mut t5edge::synth::Rng, e: f64| (r.normal() * 2f64.powi((r.normal() * e).clamp(-4.0 * e, 4.0 * e) as i32)) as f32;
        let h: Vec<f32> = (0..k).map(|_| spread(&mut r, 6.0)).collect();
        let we = if format == WeightFormat::F16 { 2.0 } else { 6.0 };
        let w: Vec<f32> = (0..k).map(|_| spread(&mut r, we)).collect();
        let row = Linear::f32(1, k, w.into()).convert(format, 0).unwrap();
        let w = row.to_f32().into_owned();
        let exact: f64 = h.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum();
        let abs: f64 = h.iter().zip(&w).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
        let u = 2f64.powi(-24);
        let gamma = (k as f64 + 1.0) * u / (1.0 - (k as f64 + 1.0) * u);
        for isa in levels() {
            let y = logits_at(isa, &row, &h);
            let err = (y[0] as f64 - exact).abs();
            prop_assert!(err <= gamma * abs, "{} {:?}: error {} > {}", isa, format, err, gamma * abs);
        }
    }
}

/// Outside what the bound covers, `greedy_pick` hands the step back to the
/// logits: a head whose logits could overflow an f32 partial sum, a hidden
/// state too small for the underflow term, one that is not finite; and a
/// head with a non-finite weight gets no screen at all.
#[test]
fn greedy_pick_declines_what_its_bound_does_not_cover() {
    let (n, k) = (64, 32);
    let mut r = t5edge::synth::Rng::new(3);
    let w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
    let h: Vec<f32> = (0..k).map(|_| r.normal() as f32).collect();
    let mut buf = CertScratch::default();
    let head = CertifiedHead::for_greedy(&Linear::f32(n, k, w.clone().into())).unwrap();
    // The same head decides an ordinary step (so the cases below are the
    // guards, not a screen that never answers).
    let mut strong = w.clone();
    strong[5 * k..6 * k]
        .iter_mut()
        .zip(&h)
        .for_each(|(v, &x)| *v = 4.0 * x);
    let confident = CertifiedHead::for_greedy(&Linear::f32(n, k, strong.into())).unwrap();
    assert_eq!(
        confident.greedy_pick(&h, None, &mut buf).map(|p| p.0),
        Some(5)
    );
    let huge: Vec<f32> = h.iter().map(|&x| x * 1e37).collect();
    assert_eq!(head.greedy_pick(&huge, None, &mut buf), None, "overflow");
    let tiny: Vec<f32> = h.iter().map(|&x| x * 1e-12).collect();
    assert_eq!(head.greedy_pick(&tiny, None, &mut buf), None, "underflow");
    let mut nan = h.clone();
    nan[3] = f32::NAN;
    assert_eq!(head.greedy_pick(&nan, None, &mut buf), None, "NaN input");
    let mut bad = w;
    bad[7] = f32::INFINITY;
    assert!(CertifiedHead::for_greedy(&Linear::f32(n, k, bad.into())).is_err());
}

/// `argmax_near(h, r)` leaves every row that can win for any `h'` within
/// `r` of `h`: on a confident head whose rivals lose at `h` by more than
/// the int8 screen's own intervals, but gain on the best row as `h` moves
/// their way, `argmax_among(h', rows)` is the exact argmax for `h'` (often
/// a rival), and the pick for `h` itself is exact too.
#[test]
fn picks_near_a_drafted_state_are_the_exact_argmax() {
    let (n, k) = (3000, 64);
    let mut changed = 0;
    let mut decided = 0;
    let mut scratch = CertScratch::default();
    let mut rows = Vec::new();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    for seed in 0..200u64 {
        let mut r = t5edge::synth::Rng::new(seed);
        let mut w: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
        let h: Vec<f64> = (0..k).map(|_| r.normal()).collect();
        let hn = norm(&h);
        // A unit direction at right angles to h.
        let mut perp = || {
            let mut v: Vec<f64> = (0..k).map(|_| r.normal()).collect();
            let along = v.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>() / (hn * hn);
            v.iter_mut().zip(&h).for_each(|(a, b)| *a -= along * b);
            let vn = norm(&v);
            v.into_iter().map(|a| a / vn).collect::<Vec<f64>>()
        };
        // The best row 2h; rival t loses 10t% of its logit at h and gains
        // 2|h| per unit h moves along its own direction.
        let top = (seed as usize * 131) % n;
        let mut dirs = Vec::new();
        for t in 0..6 {
            let dst = (top + t * 17) % n;
            let v = perp();
            for i in 0..k {
                let rival = 2.0 * h[i] * (1.0 - 0.05 * t as f64) + 2.0 * hn * v[i];
                w[dst * k + i] = if t == 0 { 2.0 * h[i] } else { rival } as f32;
            }
            dirs.push(v);
        }
        let radius = 0.1 * hn * (1 + seed % 3) as f64;
        let toward = &dirs[1 + seed as usize % 5];
        let step = radius * (seed % 5) as f64 / 4.0 * 0.999;
        let hf: Vec<f32> = h.iter().map(|&a| a as f32).collect();
        let h2: Vec<f32> = h
            .iter()
            .zip(toward)
            .map(|(&a, &v)| (a + v * step) as f32)
            .collect();
        let dist = norm(
            &hf.iter()
                .zip(&h2)
                .map(|(&a, &b)| a as f64 - b as f64)
                .collect::<Vec<_>>(),
        );
        assert!(
            dist <= radius,
            "seed {seed}: the moved state is within the radius"
        );
        let head = CertifiedHead::new(&Linear::f32(n, k, w.clone().into()), 0).unwrap();
        let banned = (seed % 7 == 0).then_some(top);
        let Some(pick) = head.argmax_near(&hf, banned, radius, &mut scratch, &mut rows) else {
            continue;
        };
        decided += 1;
        assert_eq!(pick, exact_argmax(&w, &hf, k, banned), "seed {seed}: h");
        let want = exact_argmax(&w, &h2, k, banned);
        assert_eq!(head.argmax_among(&h2, &rows), Some(want), "seed {seed}: h'");
        changed += usize::from(want != pick);
    }
    // Not vacuous: the screen decided most cases, and moving h changed the
    // winner in many.
    assert!(decided >= 150, "decided {decided} of 200");
    assert!(changed >= 20, "the winner changed {changed} times");
}
