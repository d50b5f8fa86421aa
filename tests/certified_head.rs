//! The certified int8 head against brute force: on random heads and hidden
//! states (including near-ties planted on purpose), its pick is always the
//! exact argmax of the full-precision logits, computed here in f64 over all rows.

use proptest::prelude::*;
use t5edge::model::certified::CertifiedHead;
use t5edge::model::Linear;

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
