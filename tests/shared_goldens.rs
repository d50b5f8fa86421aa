//! The engine against what HF transformers computes (../shared/goldens), on both
//! reference checkpoints: encoder states, per-layer states, teacher-forced
//! logits (all at once and one position at a time through the KV cache),
//! 32-step greedy ids and a padded batch. Skips when ../shared is absent.

mod common;

use common::cli::t5edge_command;
use common::{assert_close, shared_dir, Arrays};
use t5edge::generate::{greedy, GenerateOptions};
use t5edge::T5Model;

const MODELS: [&str; 2] = ["t5-efficient-tiny-nl2-synth", "t5-v1_1-gated-synth"];

/// Relative to the largest |logit| (the acceptance bar).
const LOGIT_REL: f32 = 1e-4;

struct Case {
    model: T5Model,
    g: Arrays,
    manifest: serde_json::Value,
}

fn cases(test: &str) -> Vec<(String, Case)> {
    let Some(shared) = shared_dir(test) else {
        return vec![];
    };
    MODELS
        .iter()
        .map(|m| {
            let model = T5Model::load(&shared.join("models").join(m)).unwrap();
            let gdir = shared.join("goldens").join(m);
            let manifest: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(gdir.join("manifest.json")).unwrap())
                    .unwrap();
            (
                m.to_string(),
                Case {
                    model,
                    g: Arrays::open(&gdir.join("goldens.safetensors")),
                    manifest,
                },
            )
        })
        .collect()
}

fn prompts(c: &Case) -> Vec<String> {
    c.manifest["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn encoder_states_match_hf() {
    for (m, c) in cases("encoder_states_match_hf") {
        for p in prompts(&c) {
            let ids = c.g.ids(&format!("{p}.input_ids"));
            let enc = c.model.encode(&ids).unwrap();
            assert_close(
                &format!("{m}/{p} encoder_hidden"),
                &enc,
                &c.g.f32(&format!("{p}.encoder_hidden")),
                1e-4,
            );
            let key = format!("{p}.enc_layer_states");
            if c.g.has(&key) {
                let states = c.model.encoder_layer_states(&ids).unwrap();
                assert_close(
                    &format!("{m}/{p} enc layer states"),
                    &states.concat(),
                    &c.g.f32(&key),
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn greedy_ids_match_hf_exactly() {
    for (m, c) in cases("greedy_ids_match_hf_exactly") {
        let opts = GenerateOptions::default()
            .max_new_tokens(32)
            .min_new_tokens(32);
        for p in prompts(&c) {
            let ids = c.g.ids(&format!("{p}.input_ids"));
            let out = greedy(&c.model, &[&ids], &opts).unwrap().remove(0);
            let golden = c.g.ids(&format!("{p}.greedy_ids"));
            assert_eq!(out, golden[1..], "{m}/{p}: greedy ids");
        }
    }
}

#[test]
fn teacher_forced_logits_match_hf() {
    for (m, c) in cases("teacher_forced_logits_match_hf") {
        let short = ids_of(&c.manifest["teacher_forced_decoder_input_ids"]);
        let long = ids_of(&c.manifest["teacher_forced_long_decoder_input_ids"]);
        let v = c.model.config.vocab_size;
        for p in prompts(&c) {
            let ids = c.g.ids(&format!("{p}.input_ids"));
            let logits = c.model.forward(&ids, &short).unwrap();
            assert_close(
                &format!("{m}/{p} tf_logits_last"),
                &logits[(short.len() - 1) * v..],
                &c.g.f32(&format!("{p}.tf_logits_last")),
                LOGIT_REL,
            );
            if c.g.has(&format!("{p}.tf_logits")) {
                assert_close(
                    &format!("{m}/{p} tf_logits"),
                    &logits,
                    &c.g.f32(&format!("{p}.tf_logits")),
                    LOGIT_REL,
                );
            }
            // The long input: top-8 ids equal and their logits within budget.
            let logits = c.model.forward(&ids, &long).unwrap();
            let gids = c.g.ids(&format!("{p}.tf_long_topk_ids"));
            let glog = c.g.f32(&format!("{p}.tf_long_topk_logits"));
            let scale = glog.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
            for (pos, row) in logits.chunks_exact(v).enumerate() {
                let top = t5edge_kernels::ops::top_k(row, 8);
                for (r, &(id, val)) in top.iter().enumerate() {
                    let (gid, gval) = (gids[pos * 8 + r], glog[pos * 8 + r]);
                    // Near-ties may swap order; the value at that rank must still agree.
                    assert!(
                        id as u32 == gid || (row[gid as usize] - gval).abs() <= LOGIT_REL * scale,
                        "{m}/{p} pos {pos} rank {r}: id {id} vs golden {gid}"
                    );
                    assert!(
                        (val - gval).abs() <= LOGIT_REL * scale,
                        "{m}/{p} pos {pos} rank {r}: {val} vs {gval}"
                    );
                }
            }
            if c.g.has(&format!("{p}.tf_long_logits")) {
                assert_close(
                    &format!("{m}/{p} tf_long_logits"),
                    &logits,
                    &c.g.f32(&format!("{p}.tf_long_logits")),
                    LOGIT_REL,
                );
            }
            let key = format!("{p}.dec_layer_states");
            if c.g.has(&key) {
                let states = c.model.decoder_layer_states(&ids, &short).unwrap();
                assert_close(
                    &format!("{m}/{p} dec layer states"),
                    &states.concat(),
                    &c.g.f32(&key),
                    1e-4,
                );
            }
        }
    }
}

/// Feeding the long teacher-forced ids one at a time through the KV cache must
/// give the teacher-forced logits row by row (the goldens' kv_cache_note).
#[test]
fn incremental_decoding_matches_teacher_forcing() {
    for (m, c) in cases("incremental_decoding_matches_teacher_forcing") {
        let long = ids_of(&c.manifest["teacher_forced_long_decoder_input_ids"]);
        let v = c.model.config.vocab_size;
        let p = "short";
        let ids = c.g.ids(&format!("{p}.input_ids"));
        let golden = c.g.f32(&format!("{p}.tf_long_logits"));
        let enc = c.model.encode(&ids).unwrap();
        let mut cache = [c.model.new_cache(&enc, long.len()).unwrap()];
        for (pos, &t) in long.iter().enumerate() {
            let h = c.model.decode_hidden(&[&[t]], &mut cache).unwrap();
            let l = c.model.logits(&h).unwrap();
            assert_close(
                &format!("{m}/{p} step {pos}"),
                &l,
                &golden[pos * v..(pos + 1) * v],
                LOGIT_REL,
            );
        }
        // And the greedy steps' full logits.
        let steps = c.g.f32(&format!("{p}.greedy_step_logits"));
        let greedy_ids = c.g.ids(&format!("{p}.greedy_ids"));
        let mut cache = [c.model.new_cache(&enc, 32).unwrap()];
        for pos in 0..32 {
            let h = c
                .model
                .decode_hidden(&[&[greedy_ids[pos]]], &mut cache)
                .unwrap();
            assert_close(
                &format!("{m}/{p} greedy step {pos}"),
                &c.model.logits(&h).unwrap(),
                &steps[pos * v..(pos + 1) * v],
                LOGIT_REL,
            );
        }
    }
}

#[test]
fn padded_batch_matches_hf() {
    for (m, c) in cases("padded_batch_matches_hf") {
        let shape = c.g.shape("batch.input_ids");
        let (b, t) = (shape[0], shape[1]);
        let ids = c.g.ids("batch.input_ids");
        let mask = c.g.ids("batch.attention_mask");
        let seqs: Vec<Vec<u32>> = (0..b)
            .map(|i| {
                (0..t)
                    .filter(|&j| mask[i * t + j] == 1)
                    .map(|j| ids[i * t + j])
                    .collect()
            })
            .collect();
        let refs: Vec<&[u32]> = seqs.iter().map(|s| &s[..]).collect();
        let enc = c.model.encode_batch(&refs).unwrap();
        let genc = c.g.f32("batch.encoder_hidden");
        let d = c.model.config.d_model;
        for (i, e) in enc.iter().enumerate() {
            let n = seqs[i].len();
            assert_close(
                &format!("{m} batch row {i}"),
                e,
                &genc[i * t * d..(i * t + n) * d],
                1e-4,
            );
        }
        let opts = GenerateOptions::default()
            .max_new_tokens(32)
            .min_new_tokens(32);
        let out = greedy(&c.model, &refs, &opts).unwrap();
        let gold = c.g.ids("batch.greedy_ids");
        for (i, o) in out.iter().enumerate() {
            assert_eq!(o[..], gold[i * 33 + 1..(i + 1) * 33], "{m} batch row {i}");
        }
    }
}

#[test]
fn parameter_counts_match_hf() {
    let Some(shared) = shared_dir("parameter_counts_match_hf") else {
        return;
    };
    for (m, n) in [
        ("t5-efficient-tiny-nl2-synth", 11_898_112),
        ("t5-v1_1-gated-synth", 19_598_848),
    ] {
        let model = T5Model::load(&shared.join("models").join(m)).unwrap();
        assert_eq!(model.num_parameters(), n, "{m}");
    }
}

/// `--dtype int8 --exact`: the certified int8 head reproduces the fp32 greedy
/// ids on every golden prompt, including the steps with margins below 1e-3.
#[test]
fn certified_int8_greedy_matches_hf_exactly() {
    for (m, mut c) in cases("certified_int8_greedy_matches_hf_exactly") {
        c.model.enable_certified_head(0).unwrap();
        let opts = GenerateOptions::default()
            .max_new_tokens(32)
            .min_new_tokens(32)
            .exact(true);
        for p in prompts(&c) {
            let ids = c.g.ids(&format!("{p}.input_ids"));
            let out = greedy(&c.model, &[&ids], &opts).unwrap().remove(0);
            assert_eq!(
                out,
                c.g.ids(&format!("{p}.greedy_ids"))[1..],
                "{m}/{p}: certified greedy ids"
            );
        }
        let head = c
            .model
            .lm_head
            .as_ref()
            .unwrap()
            .certified
            .as_ref()
            .unwrap();
        let steps = head.steps.load(std::sync::atomic::Ordering::Relaxed);
        assert!(steps >= 32 * prompts(&c).len() as u64);
    }
}

/// `forward --dtype f16|int8` on the long teacher-forced input: the golden
/// top-8 logits within each format's budget, relative to the largest golden
/// |logit| (docs/QUANTIZATION.md states them).
#[test]
fn quantized_forward_within_budgets() {
    use t5edge::model::{FormatPolicy, WeightFormat};
    for (m, c) in cases("quantized_forward_within_budgets") {
        let long = ids_of(&c.manifest["teacher_forced_long_decoder_input_ids"]);
        let v = c.model.config.vocab_size;
        for (fmt, budget) in [(WeightFormat::F16, 1e-3f32), (WeightFormat::Int8, 0.06)] {
            let mut q = c.model.clone();
            q.convert(FormatPolicy::for_dtype(fmt)).unwrap();
            let mut worst = 0f32;
            for p in ["short", "long"] {
                let ids = c.g.ids(&format!("{p}.input_ids"));
                let logits = q.forward(&ids, &long).unwrap();
                let (gids, glog) = (
                    c.g.ids(&format!("{p}.tf_long_topk_ids")),
                    c.g.f32(&format!("{p}.tf_long_topk_logits")),
                );
                let scale = glog.iter().map(|x| x.abs()).fold(0f32, f32::max);
                for pos in 0..long.len() {
                    for r in 0..8 {
                        let got = logits[pos * v + gids[pos * 8 + r] as usize];
                        worst = worst.max((got - glog[pos * 8 + r]).abs() / scale);
                    }
                }
            }
            eprintln!("{m} {fmt:?}: worst top-8 logit error {worst:.2e} of max |logit|");
            assert!(worst <= budget, "{m} {fmt:?}: {worst} over {budget}");
        }
    }
}

/// The built `t5edge` binary end to end (run through `T5EDGE_TEST_RUNNER`, so
/// the cross-built aarch64 binary runs under qemu in tools/cross-aarch64.sh):
/// `generate` gives HF's 32 greedy ids on every golden prompt in f32, f16 and
/// `int8 --exact`. One process per model and format reads every prompt from a
/// JSONL file and decodes each alone (`--batch-size 1`, as `--input-ids` would).
#[test]
fn cli_greedy_ids_match_hf_in_every_dtype() {
    let Some(shared) = shared_dir("cli_greedy_ids_match_hf_in_every_dtype") else {
        return;
    };
    let dtypes: [&[&str]; 3] = [
        &["--dtype", "f32"],
        &["--dtype", "f16"],
        &["--dtype", "int8", "--exact"],
    ];
    let tmp = tempfile::tempdir().unwrap();
    for m in MODELS {
        let model = shared.join("models").join(m);
        let gdir = shared.join("goldens").join(m);
        let g = Arrays::open(&gdir.join("goldens.safetensors"));
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(gdir.join("manifest.json")).unwrap())
                .unwrap();
        let names: Vec<&str> = manifest["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let input = tmp.path().join(format!("{m}.jsonl"));
        let lines: Vec<String> = names
            .iter()
            .map(|p| {
                serde_json::json!({ "input_ids": g.ids(&format!("{p}.input_ids")) }).to_string()
            })
            .collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        for dtype in dtypes {
            let output = tmp.path().join("out.jsonl");
            let out = t5edge_command()
                .args(["generate", "--model", model.to_str().unwrap()])
                .args(dtype)
                .args(["--max-new-tokens", "32", "--min-new-tokens", "32"])
                .args(["--batch-size", "1", "--force", "--input"])
                .arg(&input)
                .arg("--output")
                .arg(&output)
                .output()
                .unwrap();
            let what = format!("{m} {}", dtype.join(" "));
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let results = std::fs::read_to_string(&output).unwrap();
            let results: Vec<serde_json::Value> = results
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(results.len(), names.len(), "{what}: one result per prompt");
            for (p, r) in names.iter().zip(&results) {
                assert_eq!(
                    ids_of(&r["ids"]),
                    g.ids(&format!("{p}.greedy_ids"))[1..],
                    "{what} {p}: greedy ids"
                );
            }
            eprintln!("{what}: {} prompts, 32/32 greedy ids each", names.len());
        }
    }
}

/// Screened int8 greedy (the LM head's 4-bit screen) gives exactly the full
/// int8 head's ids on every golden prompt of both checkpoints, with and
/// without EOS suppression.
#[test]
fn screened_int8_greedy_equals_the_int8_head() {
    use std::sync::Arc;
    use t5edge::model::screened::{Mode, ScreenedHead};
    use t5edge::model::{FormatPolicy, WeightFormat};
    for (m, c) in cases("screened_int8_greedy_equals_the_int8_head") {
        let mut on = c.model.clone();
        on.convert(FormatPolicy::for_dtype(WeightFormat::Int8))
            .unwrap();
        let mut off = on.clone();
        on.lm_head.as_mut().unwrap().screen = Arc::new(ScreenedHead::with_mode(Mode::On));
        off.lm_head.as_mut().unwrap().screen = Arc::new(ScreenedHead::with_mode(Mode::Off));
        for p in prompts(&c) {
            let ids = c.g.ids(&format!("{p}.input_ids"));
            for min_new in [0, 8] {
                let opts = GenerateOptions::default()
                    .max_new_tokens(32)
                    .min_new_tokens(min_new);
                let a = t5edge::generate::generate(&on, &[&ids], &opts).unwrap();
                let b = t5edge::generate::generate(&off, &[&ids], &opts).unwrap();
                assert_eq!(
                    a[0].sequences, b[0].sequences,
                    "{m} {p} min_new_tokens {min_new}"
                );
            }
        }
        let h = &on.lm_head.as_ref().unwrap().screen;
        let load = |x: &std::sync::atomic::AtomicU64| x.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "{m}: {} of {} picks decided by the screen",
            load(&h.decided),
            load(&h.steps)
        );
    }
}
