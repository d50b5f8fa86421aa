//! Beam search against HF transformers' `generate(num_beams=...)`: the returned
//! sequences and `sequences_scores` (tests/fixtures/decode_refs.json, made by
//! tools/refs/make_beam_refs.py). Always on the synthetic checkpoint (rebuilt
//! here, deterministically); on ../shared's checkpoints when present.

mod common;

use common::{decode_refs, decode_synth_model, options_from_hf, shared_dir};
use t5edge::generate::generate;
use t5edge::T5Model;

const SCORE_TOL: f32 = 1e-4;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Checks every beam config of one model; returns the largest score diff.
fn check_model(name: &str, model: &T5Model, refs: &serde_json::Value) -> f32 {
    let prompts: Vec<Vec<u32>> = refs["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let mut worst = 0.0f32;
    for (cfg_name, cfg) in refs["beam"].as_object().unwrap() {
        let opts = options_from_hf(&cfg["options"]);
        for (p, (prompt, want)) in prompts
            .iter()
            .zip(cfg["results"].as_array().unwrap())
            .enumerate()
        {
            let got = generate(model, &[prompt], &opts).unwrap().remove(0);
            let want_seqs: Vec<Vec<u32>> = want["sequences"]
                .as_array()
                .unwrap()
                .iter()
                .map(ids)
                .collect();
            let want_scores: Vec<f32> = want["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let scores = got.scores.clone().unwrap();
            assert_eq!(
                got.sequences[0], want_seqs[0],
                "{name} {cfg_name} prompt {p}: best sequence differs from HF"
            );
            assert_eq!(
                got.sequences.len(),
                want_seqs.len(),
                "{name} {cfg_name} prompt {p}"
            );
            for (i, (g, w)) in scores.iter().zip(&want_scores).enumerate() {
                // A negative length penalty multiplies the summed log-probs by a
                // power of the length; hold the sum itself to SCORE_TOL then.
                let len = want_seqs[i].len() as f32;
                let scale = len.powf(-opts.length_penalty).max(1.0);
                let d = (g - w).abs() / scale;
                worst = worst.max(d);
                assert!(
                    d <= SCORE_TOL,
                    "{name} {cfg_name} prompt {p} seq {i}: score {g} vs HF {w} (diff {d:e} after dividing by {scale})"
                );
                // Lower-ranked hypotheses can swap on near-ties; require the
                // same ids where the scores are clearly apart.
                let near_tie = want_scores
                    .iter()
                    .enumerate()
                    .any(|(j, s)| j != i && (s - w).abs() < 10.0 * SCORE_TOL);
                if !near_tie {
                    assert_eq!(
                        got.sequences[i], want_seqs[i],
                        "{name} {cfg_name} prompt {p}: sequence {i} differs from HF"
                    );
                }
            }
        }
    }
    eprintln!("{name}: beam scores within {worst:e} of HF");
    worst
}

#[test]
fn beam_search_matches_hf_on_synth() {
    let refs = decode_refs();
    let (_dir, model) = decode_synth_model();
    check_model("synth", &model, &refs["models"]["synth"]);
}

#[test]
fn beam_search_matches_hf_on_shared() {
    let Some(shared) = shared_dir("beam_search_matches_hf_on_shared") else {
        return;
    };
    let refs = decode_refs();
    for name in ["t5-efficient-tiny-nl2-synth", "t5-v1_1-gated-synth"] {
        let Some(r) = refs["models"].get(name) else {
            panic!(
                "fixture lacks {name}: rerun tools/refs/make_beam_refs.py with ../shared present"
            );
        };
        let model = T5Model::load(&shared.join("models").join(name)).unwrap();
        check_model(name, &model, r);
    }
}

#[test]
fn one_beam_is_greedy_and_returns_sorted_scores() {
    let (_dir, model) = decode_synth_model();
    let prompt = [5u32, 900, 17, 42, 1];
    let opts = t5edge::GenerateOptions::default().max_new_tokens(10);
    let greedy = t5edge::generate::greedy(&model, &[&prompt], &opts).unwrap();
    let beams = generate(
        &model,
        &[&prompt],
        &opts.clone().num_beams(3).num_return_sequences(3),
    )
    .unwrap()
    .remove(0);
    let s = beams.scores.unwrap();
    assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
    // Beam search can only do at least as well as greedy under its own score.
    let lp = {
        let mut dec = vec![model.config.decoder_start_token_id];
        dec.extend_from_slice(&greedy[0]);
        let logits = model.forward(&prompt, &dec[..dec.len() - 1]).unwrap();
        let v = model.config.vocab_size;
        let mut total = 0.0f64;
        for (i, row) in logits.chunks_exact(v).enumerate() {
            let mut r = row.to_vec();
            t5edge::generate::processors::log_softmax(&mut r);
            total += r[dec[i + 1] as usize] as f64;
        }
        (total / greedy[0].len() as f64) as f32
    };
    assert!(s[0] >= lp - 1e-5, "best beam {} below greedy {}", s[0], lp);
}
