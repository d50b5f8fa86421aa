//! The 4-bit screen of an int8 matrix and the screened argmax: the screen's
//! sums are exact integers at every level (error budget: none), and the
//! screened pick is always the argmax of the full int8 head (error budget:
//! none; ties to the lowest row), on random heads with planted exact and
//! near ties.

mod common;

use common::*;
use proptest::prelude::*;
use t5edge_kernels::int8::{self, PackedInt8};
use t5edge_kernels::screen::{self, Int4Screen, Pick, RowsScratch, ScreenScratch};
use t5edge_kernels::{ops, Isa};

#[test]
fn every_int8_value_splits_exactly() {
    for p in -127i8..=127 {
        let (h, l) = screen::split(p);
        assert_eq!(screen::MULT * h + l, p as i32, "p = {p}");
        assert!(h.abs() <= 7 && l.abs() <= 8, "p = {p}: h {h}, l {l}");
    }
}

/// A head holding every int8 value builds the same screen at every level
/// (every group of 8 inputs starts with 127, so quantisation keeps the
/// integers as written at each group size).
#[test]
fn every_int8_value_builds_the_same_screen_at_every_level() {
    let (n, k) = (19, 264);
    let w32: Vec<f32> = (0..n * k)
        .map(|i| {
            let (j, kk) = (i / k, i % k);
            let v = if kk % 8 == 0 {
                127
            } else {
                ((j * 37 + kk * 11) % 255) as i32 - 127
            };
            v as f32
        })
        .collect();
    for gs in [0, 8, 64] {
        let p = PackedInt8::quantize(&w32, n, k, gs).unwrap();
        let w = p.view();
        let mut seen = [false; 255];
        for j in 0..n {
            for kk in 0..k {
                let v = raw(&w, j, kk);
                assert_eq!(v as f32, w32[j * k + kk], "row {j}, input {kk}");
                seen[(v as i32 + 127) as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "some int8 value is missing");
        let want = Int4Screen::from_int8_with(Isa::Scalar, &w).unwrap();
        for isa in isas() {
            assert_eq!(
                Int4Screen::from_int8_with(isa, &w).unwrap(),
                want,
                "{isa}, group size {gs}"
            );
        }
    }
}

/// The int8 value of row `j`, input `kk`, read through the documented layout.
fn raw(w: &int8::Int8View<'_>, j: usize, kk: usize) -> i8 {
    w.data()[int8::packed_index(j, kk, w.padded_k())]
}

fn group_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(8), Just(16), Just(64)]
}

/// The full int8 head's pick: its logits at the scalar level, `banned` out,
/// then the plain argmax (lowest row on ties).
fn full_pick(w: &int8::Int8View<'_>, x: &[f32], banned: Option<usize>) -> usize {
    let mut y = vec![0.0f32; w.n()];
    int8::linear_with(Isa::Scalar, x, 1, w.k(), w, &mut y);
    if let Some(b) = banned {
        y[b] = f32::NEG_INFINITY;
    }
    ops::argmax_scalar(&y).expect("finite logits")
}

/// Copies `n / 4` (at least one) rows of `w32` (`[n, k]`) over others,
/// half of them nudged by one quantisation step in one input: exact and
/// near ties, the source half the time `winner` when one is given.
fn plant_ties(rng: &mut common::Rng, w32: &mut [f32], n: usize, k: usize, winner: Option<usize>) {
    for _ in 0..(n / 4).max(1) {
        let a = match winner {
            Some(w) if rng.below(2) == 0 => w,
            _ => rng.below(n),
        };
        let b = rng.below(n);
        if a == b {
            continue;
        }
        let row: Vec<f32> = w32[a * k..(a + 1) * k].to_vec();
        w32[b * k..(b + 1) * k].copy_from_slice(&row);
        if rng.below(2) == 0 {
            let kk = rng.below(k);
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            w32[b * k + kk] += amax / 127.0 * if rng.below(2) == 0 { 1.0 } else { -1.0 };
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Error budget: none. Every level's sums equal `Σ (h + 8)·q` computed
    /// from the int8 values by `split`, whatever the layout does.
    #[test]
    fn screen_sums_are_exact_at_every_level(
        n in 1usize..70, k in 1usize..300, gs in group_size(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let w32 = matrix(&mut rng, fw, n, k, 1e6);
        let p = PackedInt8::quantize(&w32, n, k, gs).unwrap();
        let w = p.view();
        let s = Int4Screen::from_int8(&w).unwrap();
        let kp8 = screen::padded_k(k);
        let mut q = vec![0i8; kp8];
        for v in q.iter_mut().take(k) {
            *v = (rng.below(255) as i32 - 127) as i8;
        }
        let gsz = if gs == 0 { kp8 } else { gs };
        let groups = w.groups();
        let mut want = vec![0i32; groups * n];
        for j in 0..n {
            for kk in 0..k {
                let u = screen::split(raw(&w, j, kk)).0 + screen::OFFSET;
                want[(kk / gsz) * n + j] += u * q[kk] as i32;
            }
        }
        for isa in isas() {
            prop_assert_eq!(&screen::sums_with(isa, &s, &q), &want, "{}", isa);
        }
    }

    /// Error budget: none. The screen (nibbles and `‖l‖` per row and group)
    /// is the same whichever level builds it: the x86 levels split eight
    /// rows a block with multiplies where the scalar build reads a table.
    #[test]
    fn the_screen_is_built_the_same_at_every_level(
        n in 1usize..70, k in 1usize..300, gs in group_size(), fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let w32 = matrix(&mut rng, fw, n, k, 1e6);
        let p = PackedInt8::quantize(&w32, n, k, gs).unwrap();
        let want = Int4Screen::from_int8_with(Isa::Scalar, &p.view()).unwrap();
        for isa in isas() {
            prop_assert_eq!(&Int4Screen::from_int8_with(isa, &p.view()).unwrap(), &want, "{}", isa);
        }
    }

    /// Error budget: none. The screened pick equals the full int8 head's
    /// argmax at every level, with exact ties (duplicated rows), near ties
    /// (a row copied with one value nudged by one quantisation step) and a
    /// banned row (min_new_tokens' EOS).
    #[test]
    fn screened_pick_is_the_int8_argmax(
        n in 2usize..300, k in 1usize..200, gs in group_size(), fw in fill_strategy(),
        confident in any::<bool>(), ban in any::<bool>(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let mut w32 = matrix(&mut rng, fw, n, k, 1e3);
        let x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
        let winner = rng.below(n);
        if confident {
            // A row along x: the screen should decide with few candidates.
            for (kk, v) in w32[winner * k..(winner + 1) * k].iter_mut().enumerate() {
                *v = 4.0 * x[kk];
            }
        }
        // Exact and near ties with the winner and with random rows.
        plant_ties(&mut rng, &mut w32, n, k, Some(winner));
        let p = PackedInt8::quantize(&w32, n, k, gs).unwrap();
        let w = p.view();
        let s = Int4Screen::from_int8(&w).unwrap();
        let banned = ban.then(|| rng.below(n));
        let want = full_pick(&w, &x, banned);
        let mut scratch = ScreenScratch::default();
        for isa in isas() {
            match screen::argmax_with(isa, &w, &s, &x, banned, &mut scratch) {
                Pick::Id { id, rescored } => {
                    prop_assert_eq!(id, want, "{}: rescored {}", isa, rescored);
                    prop_assert!(rescored >= 1);
                }
                Pick::Undecided { candidates } => prop_assert!(candidates > n / 512 + 16, "{}: undecided with {} candidates", isa, candidates),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Error budget: none. The multi-row kernel (nibbles unpacked once for up
    /// to four activation rows) gives every row exactly the sums the one-row
    /// kernel gives it alone, at every level, for 1-9 rows (whole and
    /// partial groups of four), every group size and a partial last task.
    #[test]
    fn multi_row_screen_sums_equal_one_row_sums(
        m in 1usize..=9, n in 1usize..150, k in 1usize..300, gs in group_size(),
        fw in fill_strategy(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let w32 = matrix(&mut rng, fw, n, k, 1e6);
        let p = PackedInt8::quantize(&w32, n, k, gs).unwrap();
        let s = Int4Screen::from_int8(&p.view()).unwrap();
        let kp8 = screen::padded_k(k);
        let qs: Vec<Vec<i8>> = (0..m)
            .map(|_| {
                let mut q = vec![0i8; kp8];
                for v in q.iter_mut().take(k) {
                    *v = (rng.below(255) as i32 - 127) as i8;
                }
                q
            })
            .collect();
        let refs: Vec<&[i8]> = qs.iter().map(|q| &q[..]).collect();
        for isa in isas() {
            let got = screen::sums_rows_with(isa, &s, &refs);
            for (i, q) in qs.iter().enumerate() {
                prop_assert_eq!(&got[i], &screen::sums_with(Isa::Scalar, &s, q), "{} row {}", isa, i);
            }
        }
    }

    /// Error budget: none. A batch's screened picks (`argmax_rows_with`)
    /// are each row's full int8 argmax, at every level: rows with their own
    /// planted winner or none, exact and near ties, a banned row on some
    /// rows, and a row with an infinite input (undecided, never a pick).
    #[test]
    fn batch_screened_picks_are_each_rows_int8_argmax(
        m in 1usize..=10, n in 2usize..300, k in 1usize..120, gs in group_size(),
        fw in fill_strategy(), nan_row in any::<bool>(), seed in any::<u64>()
    ) {
        let mut rng = Rng(seed);
        let mut w32 = matrix(&mut rng, fw, n, k, 1e3);
        let mut x: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
        for i in 0..m {
            if rng.below(3) > 0 {
                let winner = rng.below(n);
                for kk in 0..k {
                    w32[winner * k + kk] = 4.0 * x[i * k + kk];
                }
            }
        }
        plant_ties(&mut rng, &mut w32, n, k, None);
        let bad = nan_row.then(|| rng.below(m));
        if let Some(i) = bad {
            // Its scale is not finite: the intervals would prove nothing.
            x[i * k] = f32::INFINITY;
        }
        let p = PackedInt8::quantize(&w32, n, k, gs).unwrap();
        let w = p.view();
        let s = Int4Screen::from_int8(&w).unwrap();
        let banned: Vec<Option<usize>> = (0..m).map(|_| (rng.below(3) == 0).then(|| rng.below(n))).collect();
        let (mut scratch, mut picks) = (RowsScratch::default(), Vec::new());
        for isa in isas() {
            screen::argmax_rows_with(isa, &w, &s, &x, m, &banned, &mut scratch, &mut picks);
            prop_assert_eq!(picks.len(), m);
            for (i, pick) in picks.iter().enumerate() {
                let xi = &x[i * k..(i + 1) * k];
                match *pick {
                    Pick::Id { id, rescored } => {
                        prop_assert!(Some(i) != bad, "{}: a non-finite row was picked", isa);
                        prop_assert_eq!(id, full_pick(&w, xi, banned[i]), "{} row {}", isa, i);
                        prop_assert!(rescored >= 1);
                    }
                    Pick::Undecided { candidates } => prop_assert!(
                        (Some(i) == bad && candidates == n) || candidates > n / 512 + 16,
                        "{}: row {} undecided with {} candidates", isa, i, candidates
                    ),
                }
                // The same answer as the row alone.
                let alone = screen::argmax_with(isa, &w, &s, xi, banned[i], &mut ScreenScratch::default());
                prop_assert_eq!(*pick, alone, "{} row {}", isa, i);
            }
        }
    }
}

/// A confident head (one row along the input, the rest random) is decided by
/// the screen with a handful of rows re-scored, at every level and on every
/// pool; and `exact_logit` reproduces the int8 kernel's bits for every row.
#[test]
fn a_confident_head_is_decided_with_few_rows() {
    let (n, k) = (4000, 256);
    let mut rng = Rng(7);
    let mut w32 = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
    let x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
    for (kk, v) in w32[1234 * k..1235 * k].iter_mut().enumerate() {
        *v = x[kk];
    }
    let p = PackedInt8::quantize(&w32, n, k, 0).unwrap();
    let w = p.view();
    let s = Int4Screen::from_int8(&w).unwrap();
    assert_eq!(s.bytes(), n * k / 2);
    let (q, sx) = int8::quantize_activations(&x, 1, k, 0);
    let mut y = vec![0.0f32; n];
    int8::linear_with(Isa::Scalar, &x, 1, k, &w, &mut y);
    for (j, &v) in y.iter().enumerate() {
        assert_eq!(
            screen::exact_logit(&w, &q, &sx, j).to_bits(),
            v.to_bits(),
            "row {j}"
        );
    }
    for isa in isas() {
        for (pool, pick) in on_every_pool(|| {
            screen::argmax_with(isa, &w, &s, &x, None, &mut ScreenScratch::default())
        }) {
            match pick {
                Pick::Id { id, rescored } => {
                    assert_eq!(id, 1234, "{isa} {pool}");
                    assert!(rescored <= 4, "{isa} {pool}: {rescored} rows re-scored");
                }
                other => panic!("{isa} {pool}: {other:?}"),
            }
        }
        // Banning the winner moves the pick to the full head's second best.
        let pick = screen::argmax_with(isa, &w, &s, &x, Some(1234), &mut ScreenScratch::default());
        if let Pick::Id { id, .. } = pick {
            assert_eq!(id, full_pick(&w, &x, Some(1234)), "{isa}");
        }
    }
}

/// A group size the screen's blocks cannot follow is refused, not mis-screened.
#[test]
fn a_group_of_four_has_no_screen() {
    let w32 = vec![0.5f32; 16 * 12];
    let p = PackedInt8::quantize(&w32, 16, 12, 4).unwrap();
    let e = Int4Screen::from_int8(&p.view()).unwrap_err();
    assert!(e.contains("group size 4"), "{e}");
}

/// `from_int8_then` builds the same screen and reports every byte of the
/// int8 data as read exactly once (what lets a mapped head's pages be
/// dropped behind the build), on one thread and on several.
#[test]
fn the_build_reports_each_int8_byte_read_once() {
    let mut rng = common::Rng(21);
    for (n, k) in [(1usize, 8usize), (37, 100), (1500, 64), (4000, 256)] {
        let w32 = matrix(&mut rng, Fill::Uniform, n, k, 1.0);
        let p = PackedInt8::quantize(&w32, n, k, 0).unwrap();
        let v = p.view();
        let len = v.data().len();
        let runs = on_every_pool(|| {
            let seen = std::sync::Mutex::new(Vec::new());
            let s = Int4Screen::from_int8_then(&v, &|r| seen.lock().unwrap().push(r)).unwrap();
            assert_eq!(s, Int4Screen::from_int8(&v).unwrap(), "n={n} k={k}");
            let mut seen = seen.into_inner().unwrap();
            seen.sort_by_key(|r| r.start);
            let mut at = 0;
            for r in &seen {
                assert_eq!(r.start, at, "n={n} k={k}: ranges {seen:?}");
                at = r.end;
            }
            assert_eq!(at, len, "n={n} k={k}: ranges {seen:?}");
            seen.len()
        });
        assert!(runs.iter().all(|(_, parts)| *parts >= 1));
    }
}
