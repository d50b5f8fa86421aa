//! Screened int8 greedy (the LM head's 4-bit screen, `t5edge_kernels::screen`)
//! returns exactly the ids of the full int8 head, on synthetic checkpoints
//! made here: the tied t5-efficient-tiny-nl2 preset (confident picks, which
//! the screen decides) and the untied gated one the decoding references use
//! (small margins, where it mostly hands the pick back to the logits). The
//! ../shared checkpoints get the same check in tests/shared_goldens.rs.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;
use t5edge::generate::{DecodeBatch, DecodeRng, Finished, Prefilled};
use t5edge::model::screened::{Mode, ScreenedHead, DEFER_STEPS};
use t5edge::model::{FormatPolicy, WeightFormat};
use t5edge::{generate::generate, GenerateOptions, T5Model};

/// The model in `format`, and a copy whose head never screens.
fn pair(model: &T5Model, format: WeightFormat) -> (T5Model, T5Model) {
    let mut on = model.clone();
    on.convert(FormatPolicy::for_dtype(format)).unwrap();
    let mut off = on.clone();
    on.lm_head.as_mut().unwrap().screen = Arc::new(ScreenedHead::with_mode(Mode::On));
    off.lm_head.as_mut().unwrap().screen = Arc::new(ScreenedHead::with_mode(Mode::Off));
    (on, off)
}

fn int8_pair(model: &T5Model) -> (T5Model, T5Model) {
    pair(model, WeightFormat::Int8)
}

/// Deterministic prompts of assorted lengths over `vocab`.
fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    let mut x = 12345u64;
    (0..6)
        .map(|p| {
            (0..3 + 7 * p)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    2 + ((x >> 33) as usize % (vocab - 2)) as u32
                })
                .chain([1])
                .collect()
        })
        .collect()
}

/// Greedy ids with the screen on and off, alone, as batches of one and as
/// one batch of every prompt (with and without EOS suppression); returns how
/// many picks the screen decided, of how many it was asked, and whether its
/// trial turned it off.
fn check(model: &T5Model) -> (u64, u64, bool) {
    check_in(model, WeightFormat::Int8)
}

/// [`check`] with the weights in `format` (int8, whose batches take the
/// multi-row screen, or a float format, whose batch rows screen one by one).
fn check_in(model: &T5Model, format: WeightFormat) -> (u64, u64, bool) {
    let (on, off) = pair(model, format);
    for p in prompts(model.config.vocab_size) {
        for min_new in [0, 5] {
            let opts = GenerateOptions::default()
                .max_new_tokens(24)
                .min_new_tokens(min_new);
            let a = generate(&on, &[&p], &opts).unwrap();
            let b = generate(&off, &[&p], &opts).unwrap();
            assert_eq!(
                a[0].sequences, b[0].sequences,
                "prompt {p:?}, min_new_tokens {min_new}"
            );
        }
    }
    let h = &on.lm_head.as_ref().unwrap().screen;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert!(load(&h.steps) > 0, "the screen was never asked");
    // All the prompts as one batch: each step's picks come from one pass of
    // the multi-row screen, rows leaving at different steps.
    let ps = prompts(model.config.vocab_size);
    let all: Vec<&[u32]> = ps.iter().map(|p| &p[..]).collect();
    for min_new in [0, 5] {
        let opts = GenerateOptions::default()
            .max_new_tokens(24)
            .min_new_tokens(min_new);
        let before = load(&h.steps);
        let a = generate(&on, &all, &opts).unwrap();
        let b = generate(&off, &all, &opts).unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(
                x.sequences, y.sequences,
                "batch row {i}, min_new_tokens {min_new}"
            );
        }
        if !h.off_after_trial() {
            assert!(load(&h.steps) > before, "the batch never asked the screen");
        }
    }
    (load(&h.decided), load(&h.steps), h.off_after_trial())
}

#[test]
fn screened_greedy_equals_the_int8_head_on_the_tiny_preset() {
    let (_dir, model) = tiny_model(Default::default());
    let (decided, steps, off) = check(&model);
    eprintln!("tiny preset: {decided} of {steps} picks decided by the screen");
    assert!(!off, "a screen that decides most picks must stay on");
    // The preset's picks are confident (margins ~4 logits): the screen must
    // decide most of them, or this test would not be testing it.
    assert!(decided * 2 > steps, "{decided} of {steps}");
}

/// The tiny preset with its `<pad>` row zeroed (the CLI's embedded default):
/// picks still confident, but each prompt's ids its own, so a batch whose
/// rows got each other's picks would show.
fn varied_model() -> (tempfile::TempDir, T5Model) {
    tiny_model(t5edge::synth::SynthOptions {
        zero_pad_row: true,
        ..Default::default()
    })
}

/// The synthetic t5-efficient-tiny-nl2 preset written with `opts` and
/// loaded (the directory lives as long as the returned guard).
fn tiny_model(opts: t5edge::synth::SynthOptions) -> (tempfile::TempDir, T5Model) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
    t5edge::synth::write_checkpoint(dir.path(), &cfg, &opts, false).unwrap();
    let model = T5Model::load(dir.path()).unwrap();
    (dir, model)
}

#[test]
fn screened_greedy_equals_the_int8_head_on_varied_rows() {
    let (_dir, model) = varied_model();
    let ps = prompts(model.config.vocab_size);
    let all: Vec<&[u32]> = ps.iter().map(|p| &p[..]).collect();
    let out = generate(&model, &all, &GenerateOptions::default().max_new_tokens(8)).unwrap();
    let firsts: std::collections::BTreeSet<_> = out
        .iter()
        .map(|o| o.sequences[0].first().copied())
        .collect();
    assert!(
        firsts.len() > 2,
        "the rows' first ids barely differ: {firsts:?}"
    );
    let (decided, steps, _) = check(&model);
    eprintln!("varied rows: {decided} of {steps} picks decided by the screen");
    assert!(decided * 2 > steps, "{decided} of {steps}");
}

#[test]
fn screened_greedy_equals_the_int8_head_with_small_margins() {
    let (_dir, model) = common::decode_synth_model();
    let (decided, steps, off) = check(&model);
    eprintln!("gated synth: {decided} of {steps} picks decided by the screen");
    // Margins too small for the screen's bounds: once 32 picks (the trial,
    // docs/EXACT.md) went mostly undecided, the head stops screening and is
    // never asked again, by single rows or by the batch.
    assert!(
        decided * 2 < steps,
        "{decided} of {steps}: this model no longer tests the trial"
    );
    assert!(off, "the trial did not turn the screen off");
    assert_eq!(steps, 32, "picks asked of the screen");
}

/// A float head's screened picks (certified against its GEMV,
/// `CertifiedHead::greedy_pick`) are plain greedy's ids, on confident picks
/// (decided by the screen) and varied rows, f32, f16 and bf16.
#[test]
fn screened_float_greedy_equals_the_float_head() {
    let (_dir, model) = tiny_model(Default::default());
    let (decided, steps, off) = check_in(&model, WeightFormat::F32);
    eprintln!("tiny preset, f32: {decided} of {steps} picks decided by the screen");
    assert!(!off && decided * 2 > steps, "{decided} of {steps}");
    let (_dir, model) = varied_model();
    for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Bf16] {
        let (decided, steps, _) = check_in(&model, format);
        eprintln!("varied rows, {format:?}: {decided} of {steps} picks decided by the screen");
        assert!(decided * 2 > steps, "{format:?}: {decided} of {steps}");
        let (on, _) = pair(&model, format);
        assert_eq!(on.lm_head.as_ref().unwrap().linear.format(), format);
    }
}

/// The gated synthetic's f32 margins are too small for the screen: it hands
/// the picks back, its trial turns it off, and the ids stay the f32 head's.
#[test]
fn screened_f32_greedy_with_small_margins_stops_screening() {
    let (_dir, model) = common::decode_synth_model();
    let (decided, steps, off) = check_in(&model, WeightFormat::F32);
    assert!(
        decided * 2 < steps && off,
        "{decided} of {steps}, off {off}"
    );
    assert_eq!(steps, 32, "picks asked of the screen");
}

/// An f32 head screens by default (`Mode::Process` with no
/// `T5EDGE_SCREEN`) from its first pick; an int8 head does at the VNNI
/// levels alone, and there only after [`DEFER_STEPS`] steps on its full head.
#[test]
fn an_f32_head_screens_by_default() {
    let (_dir, model) = tiny_model(Default::default());
    let opts = GenerateOptions::default().max_new_tokens(4);
    generate(&model, &[&[5, 6, 1][..]], &opts).unwrap();
    assert!(
        model.lm_head.as_ref().unwrap().screen.built(),
        "f32: no screen"
    );
    let (mut q, _) = int8_pair(&model);
    q.lm_head.as_mut().unwrap().screen = Arc::new(ScreenedHead::default());
    let long = GenerateOptions::default()
        .max_new_tokens(DEFER_STEPS as usize + 4)
        .min_new_tokens(DEFER_STEPS as usize + 4);
    generate(&q, &[&[5, 6, 1][..]], &opts).unwrap();
    assert!(
        !q.lm_head.as_ref().unwrap().screen.built(),
        "int8: built at once"
    );
    generate(&q, &[&[5, 6, 1][..]], &long).unwrap();
    let vnni = t5edge_kernels::dispatch::active().has_vnni();
    assert_eq!(
        q.lm_head.as_ref().unwrap().screen.built(),
        vnni,
        "int8 at {}: screened unasked, or not where it should",
        t5edge_kernels::dispatch::active()
    );
}

/// A deferred head (an int8 head's default at the VNNI levels) leaves its
/// first [`DEFER_STEPS`] decode steps to the full head, across requests,
/// then builds its screen and picks through it: the ids are the full
/// head's throughout.
#[test]
fn a_deferred_head_screens_after_its_steps_with_the_same_ids() {
    let (_dir, model) = varied_model();
    let (mut deferred, off) = int8_pair(&model);
    deferred.lm_head.as_mut().unwrap().screen = Arc::new(ScreenedHead::with_mode(Mode::Deferred));
    let h = deferred.lm_head.as_ref().unwrap().screen.clone();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let opts = GenerateOptions::default()
        .max_new_tokens(20)
        .min_new_tokens(20);
    let mut steps = 0;
    for p in prompts(model.config.vocab_size).iter().cycle().take(8) {
        let a = generate(&deferred, &[p], &opts).unwrap();
        let b = generate(&off, &[p], &opts).unwrap();
        assert_eq!(a[0].sequences, b[0].sequences, "prompt {p:?}");
        steps += 20;
        if steps <= DEFER_STEPS {
            assert!(!h.built(), "built after {steps} steps");
            assert_eq!(load(&h.steps), 0, "screened after {steps} steps");
        }
    }
    // 160 steps: the last 64 screened.
    assert!(h.built(), "never built");
    assert_eq!(load(&h.steps), 160 - DEFER_STEPS);
    assert!(
        load(&h.decided) * 2 > load(&h.steps),
        "the screen decided too few picks"
    );
}

/// A measuring head times both ways (its calibration checks each screened
/// pick against the full head's as it goes) and then keeps one; the ids are
/// the full head's all along.
#[test]
fn an_auto_head_calibrates_and_keeps_the_ids() {
    let (_dir, model) = tiny_model(Default::default());
    let (mut auto, off) = int8_pair(&model);
    auto.lm_head.as_mut().unwrap().screen = Arc::new(ScreenedHead::with_mode(Mode::Measure));
    let opts = GenerateOptions::default()
        .max_new_tokens(48)
        .min_new_tokens(48);
    for p in prompts(model.config.vocab_size).iter().take(2) {
        let a = generate(&auto, &[p], &opts).unwrap();
        let b = generate(&off, &[p], &opts).unwrap();
        assert_eq!(a[0].sequences, b[0].sequences);
    }
    let (keep, screened_us, full_us) = auto
        .lm_head
        .as_ref()
        .unwrap()
        .screen
        .calibration()
        .expect("calibrated");
    eprintln!("calibration: screened {screened_us:.0} us, full {full_us:.0} us, keep = {keep}");
    assert!(screened_us > 0.0 && full_us > 0.0);
}

/// Every row's ids from one continuous batch mixing greedy rows (some with
/// EOS suppressed), sampled rows and a row with a repetition penalty, in key
/// order.
fn mixed_batch(model: &T5Model) -> Vec<Vec<u32>> {
    let ps = prompts(model.config.vocab_size);
    let mut batch = DecodeBatch::new(model);
    let mut out: Vec<Option<Vec<u32>>> = vec![None; ps.len()];
    for (i, p) in ps.iter().enumerate() {
        let base = GenerateOptions::default().max_new_tokens(16);
        let (o, rng) = match i % 4 {
            0 => (base, None),
            1 => (base.min_new_tokens(10), None),
            2 => (
                base.do_sample(true).seed(3).top_k(20),
                Some(DecodeRng::new(3, i as u64)),
            ),
            _ => (base.repetition_penalty(1.3), None),
        };
        let pre = Prefilled::new(model, p, &o).unwrap();
        assert!(batch.join(i as u64, pre, &o, rng).unwrap().is_none());
    }
    let mut finished: Vec<Finished> = Vec::new();
    while !batch.is_empty() {
        batch
            .step(&mut |_, _| ControlFlow::Continue(()), &mut finished)
            .unwrap();
        for f in finished.drain(..) {
            out[f.key as usize] = Some(f.ids);
        }
    }
    out.into_iter()
        .map(|o| o.expect("every row finished"))
        .collect()
}

/// A batch mixing screenable greedy rows with sampled rows and a row with a
/// processor: the greedy rows pick through one screen pass, the others from
/// logits computed for them alone, and every row's ids are those of the
/// unscreened head (the sampled rows' draws included).
#[test]
fn a_mixed_batch_screens_its_greedy_rows_and_keeps_every_rows_ids() {
    let (_dir, model) = varied_model();
    let (on, off) = int8_pair(&model);
    let (a, b) = (mixed_batch(&on), mixed_batch(&off));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "row {i}");
    }
    let h = &on.lm_head.as_ref().unwrap().screen;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert!(load(&h.decided) > 0, "the mixed batch never screened");
}
