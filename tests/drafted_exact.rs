//! `--exact` by drafts (src/generate/drafted.rs): the int8 draft decoder
//! proposes tokens, the f32 decoder checks them in one pass. The ids must be
//! exactly one certified step at a time's, whatever the draft proposes, and
//! the check's hidden states exactly one step's bits.

mod common;

use common::{decode_synth_model, varied_prompts};
use std::ops::ControlFlow;
use t5edge::generate::{generate, DecodeBatch, Finished, Prefilled};
use t5edge::model::{DecodeScratch, FormatPolicy, Linear, WeightFormat};
use t5edge::{GenerateOptions, T5Model};

/// A synthetic checkpoint with the tiny-nl2 shape, 8000 ids, in a temp dir:
/// tied (a head confident enough for the screen to decide, but every pick
/// is id 0) or gated and untied (varied ids, margins too small for the
/// screen: every pick falls back to the full certified head).
fn synth_model(tied: bool, seed: u64) -> (tempfile::TempDir, T5Model) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
    let mut set = vec!["vocab_size=8000".to_string()];
    if !tied {
        set.push("feed_forward_proj=gated-gelu".into());
        set.push("tie_word_embeddings=false".into());
    }
    let cfg = t5edge::synth::with_overrides(&cfg, &set).unwrap();
    let opts = t5edge::synth::SynthOptions {
        seed,
        norm_jitter: 0.2,
        zero_pad_row: tied,
        ..Default::default()
    };
    t5edge::synth::write_checkpoint(dir.path(), &cfg, &opts, false).unwrap();
    let model = T5Model::load(dir.path()).unwrap();
    (dir, model)
}

/// The tied synth (zero `<pad>` row) with an untied head whose row `j` is
/// the embedding of id `(7j + 3) mod vocab`. The decoder's residual keeps
/// its input's embedding, so a hidden state lies near its input's row of
/// the embedding: this head picks confidently (the screen decides) and the
/// ids walk a permutation instead of repeating one id.
fn permuted_head_model() -> (tempfile::TempDir, T5Model) {
    let (dir, mut m) = synth_model(true, 3);
    let (v, d) = (m.config.vocab_size, m.config.d_model);
    let e = m.embed.to_f32();
    let mut rows = vec![0f32; v * d];
    for (j, row) in rows.chunks_exact_mut(d).enumerate() {
        let t = (7 * j + 3) % v;
        row.copy_from_slice(&e[t * d..(t + 1) * d]);
    }
    let head = m.lm_head.as_mut().unwrap();
    head.linear = Linear::f32(v, d, rows.into());
    head.screen = Default::default();
    (dir, m)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Positions fed together with `decode_positions` get the bits each gets
/// from a decode step of its own: products, attention per position, norms,
/// at every format, from an empty cache and from one that holds positions.
#[test]
fn positions_fed_together_get_one_steps_bits() {
    let (_dir, f32_model) = decode_synth_model();
    let ids: Vec<u32> = vec![0, 17, 933, 5, 5, 402, 88, 1, 3, 999, 250, 6, 7, 8];
    let prompt = &varied_prompts(3)[2];
    for dtype in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Int8] {
        let mut m = f32_model.clone();
        m.convert(FormatPolicy::for_dtype(dtype)).unwrap();
        let (decoder, _) = m.require_decoder().unwrap();
        let enc = m.encode(prompt).unwrap();
        let d = m.config.d_model;
        // One step at a time.
        let mut one = m.new_cache(&enc, ids.len()).unwrap();
        let mut s = DecodeScratch::new();
        let mut want = Vec::new();
        for &t in &ids {
            want.extend_from_slice(
                m.decode_step(&[t], std::slice::from_mut(&mut one), &mut s)
                    .unwrap(),
            );
        }
        // Together: 3 positions, then 11 (crossing the GEMM threshold of 8
        // rows and the attention kernel's query blocks).
        let mut together = m.new_cache(&enc, ids.len()).unwrap();
        let mut got = Vec::new();
        for part in [&ids[..3], &ids[3..]] {
            got.extend_from_slice(
                m.decode_positions(decoder, part, &mut together, &mut s)
                    .unwrap(),
            );
        }
        assert_eq!(got.len(), ids.len() * d);
        assert_eq!(bits(&got), bits(&want), "{} hidden states", dtype.name());
        assert_eq!(
            bits(&together.self_k[1]),
            bits(&one.self_k[1]),
            "{} keys",
            dtype.name()
        );
    }
}

/// Every request's ids, one certified step at a time (`draft: None`) and by
/// drafts.
fn both_ways(model: &T5Model, opts: &[GenerateOptions]) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let mut one_step = model.clone();
    one_step.draft = None;
    let prompts = varied_prompts(opts.len());
    let run = |m: &T5Model| -> Vec<Vec<u32>> {
        prompts
            .iter()
            .zip(opts)
            .map(|(p, o)| generate(m, &[p], o).unwrap()[0].sequences[0].clone())
            .collect()
    };
    (run(&one_step), run(model))
}

fn options() -> Vec<GenerateOptions> {
    (0..6)
        .map(|r| {
            GenerateOptions::default()
                .exact(true)
                .max_new_tokens([1, 5, 16, 17, 40, 33][r])
                .min_new_tokens([0, 0, 3, 16, 0, 20][r])
        })
        .collect()
}

#[test]
fn drafted_ids_are_one_steps_ids() {
    // A confident tied head (the screen decides, drafted rows are checked
    // from the draft's candidates), and gated untied heads (the screen
    // leaves too many rows: the fallbacks).
    let (_a, tied) = synth_model(true, 3);
    let (_b, gated) = synth_model(false, 3);
    let (_c, small) = decode_synth_model();
    let (_d, walk) = permuted_head_model();
    let models = [
        ("permuted head", walk),
        ("tied", tied),
        ("gated", gated),
        ("gated, 1000 ids", small),
    ];
    for (name, mut m) in models {
        m.enable_certified_head(0).unwrap();
        assert!(
            m.draft.is_some(),
            "{name}: the certified head brings a draft"
        );
        let (want, got) = both_ways(&m, &options());
        assert_eq!(got, want, "{name}");
        assert!(
            want.iter().any(|ids| ids.len() > 16),
            "{name}: runs of several turns"
        );
    }
}

/// A draft that disagrees with the decoder: the full decoder's final norm
/// flips the sign of half its dimensions after the draft was made, so the
/// draft (confident, through the permuted head) proposes ids the check
/// rejects; every turn ends at a mismatch and both caches roll back, and
/// the ids are still one step's.
#[test]
fn a_wrong_draft_changes_no_id() {
    let (_a, mut m) = permuted_head_model();
    m.enable_certified_head(0).unwrap();
    let (want, _) = both_ways(&m, &options());
    let mut flipped = m.clone();
    let dec = flipped.decoder.as_mut().unwrap();
    let g: Vec<f32> = dec
        .final_norm
        .as_slice()
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 2 == 0 { -v } else { v })
        .collect();
    dec.final_norm = g.into();
    let (one_step, drafted) = both_ways(&flipped, &options());
    assert_eq!(drafted, one_step);
    // The flip does change the decoder's ids: the draft's are wrong.
    assert_ne!(one_step, want);
}

/// Alone in a batch, a drafted row settles several ids in one step, each
/// handed to the callback as it is settled; `Break` ends the row at once.
#[test]
fn a_drafted_step_settles_several_ids() {
    let (_a, mut m) = permuted_head_model();
    m.enable_certified_head(0).unwrap();
    let o = GenerateOptions::default()
        .exact(true)
        .max_new_tokens(30)
        .min_new_tokens(30);
    let p = &varied_prompts(3)[1];
    let want = generate(&m, &[p], &o).unwrap()[0].sequences[0].clone();
    let mut batch = DecodeBatch::new(&m);
    let pre = Prefilled::new(&m, p, &o).unwrap();
    assert!(batch.join(7, pre, &o, None).unwrap().is_none());
    let mut seen = Vec::new();
    let mut finished: Vec<Finished> = Vec::new();
    // The first drafted position after the start token (whose embedding is
    // zero) is one the screen leaves undecided: a turn of one id; later
    // turns draft on.
    let mut most = 0;
    for _ in 0..3 {
        let before = seen.len();
        batch
            .step(
                &mut |k, id| {
                    assert_eq!(k, 7);
                    seen.push(id);
                    ControlFlow::Continue(())
                },
                &mut finished,
            )
            .unwrap();
        most = most.max(seen.len() - before);
    }
    assert!(most > 1, "a step settled at most {most} ids");
    assert!(seen.len() < 30);
    assert_eq!(seen[..], want[..seen.len()]);
    // Break after two more ids: the row leaves with exactly those.
    let mut more = 0;
    batch
        .step(
            &mut |_, id| {
                seen.push(id);
                more += 1;
                if more == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
            &mut finished,
        )
        .unwrap();
    assert!(batch.is_empty());
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].ids, seen);
    assert_eq!(seen[..], want[..seen.len()]);
}
