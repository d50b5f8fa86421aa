//! The engine against HF transformers on checkpoints it synthesizes itself
//! (tests/fixtures/refs, written by tools/refs/make_refs.py): runs anywhere,
//! no ../shared needed. Covers tied/relu, gated-gelu untied with unequal
//! depths, and exact-gelu with few buckets, a short max distance and
//! num_heads x d_kv != d_model; the family's other checkpoint kinds: an
//! encoder-only checkpoint (HF's T5EncoderModel, gated-silu), umT5 (a bias
//! table per layer) and its UMT5EncoderModel, and mT5.

mod common;

use common::{assert_close, Arrays};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use t5edge::generate::{greedy, GenerateOptions};
use t5edge::synth::{preset, with_overrides, write_checkpoint, SynthOptions};
use t5edge::T5Model;

const LOGIT_REL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/refs")
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap())
        .unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Writes the checkpoint of reference case `name` (its `synth_args`) into a
/// temp directory of its own, named by `tag`.
fn synth_case(tag: &str, name: &str, case: &serde_json::Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("t5edge-{tag}-{name}-{}", std::process::id()));
    let args: Vec<String> = case["synth_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    synth(&args, &dir);
    dir
}

/// Whether reference case `case` is an encoder-only checkpoint.
fn encoder_only(case: &serde_json::Value) -> bool {
    case["encoder_only"].as_bool().unwrap_or(false)
}

/// Replays `t5edge synth` arguments through the library.
fn synth(args: &[String], dir: &Path) {
    let (mut p, mut seed, mut jitter, mut sets) = (String::new(), 0u64, 0f32, Vec::new());
    let mut encoder_only = false;
    let mut dtype = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--encoder-only" {
            encoder_only = true;
            continue;
        }
        let v = it.next().unwrap().clone();
        match a.as_str() {
            "--preset" => p = v,
            "--seed" => seed = v.parse().unwrap(),
            "--norm-jitter" => jitter = v.parse().unwrap(),
            "--set" => sets.push(v),
            "--dtype" => dtype = t5edge::model::WeightFormat::parse(&v),
            other => panic!("unknown synth arg {other}"),
        }
    }
    let cfg = with_overrides(&preset(&p).unwrap(), &sets).unwrap();
    write_checkpoint(
        dir,
        &cfg,
        &SynthOptions {
            seed,
            norm_jitter: jitter,
            encoder_only,
            dtype,
            ..Default::default()
        },
        true,
    )
    .unwrap();
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn synthesized_checkpoints_match_hf() {
    let manifest = manifest();
    for (name, case) in manifest["cases"].as_object().unwrap() {
        let dir = synth_case("refs", name, case);
        assert_eq!(
            sha256(&dir.join("model.safetensors")),
            case["model_sha256"].as_str().unwrap(),
            "{name}: the synth generator no longer writes the checkpoint the references were made from; rerun tools/refs/make_refs.sh"
        );
        let model = T5Model::load(&dir).unwrap();
        assert_eq!(
            model.num_parameters() as u64,
            case["num_parameters"].as_u64().unwrap(),
            "{name}"
        );
        let g = Arrays::open(&fixtures().join(format!("{name}.safetensors")));
        assert_eq!(model.is_encoder_only(), encoder_only(case), "{name}");
        let hf_class = case["hf_class"].as_str().unwrap();
        assert_eq!(
            model.config.class_name(model.is_encoder_only()),
            hf_class,
            "{name}"
        );
        for (p, pc) in case["prompts"].as_object().unwrap() {
            let input = ids(&pc["input_ids"]);
            assert_close(
                &format!("{name}/{p} encoder"),
                &model.encode(&input).unwrap(),
                &g.f32(&format!("{p}.encoder_hidden")),
                1e-4,
            );
        }
        if encoder_only(case) {
            // Every decoder path refuses, naming the checkpoint and its class.
            let want = format!(
                "is an encoder-only checkpoint ({hf_class}): no decoder tensors; use encode or embed"
            );
            let opts = GenerateOptions::default().max_new_tokens(2);
            let errors = [
                model.forward(&[5, 1], &[0]).unwrap_err(),
                t5edge::score::score(&model, &[5, 1], &[7]).unwrap_err(),
                greedy(&model, &[&[5, 1]], &opts).unwrap_err(),
                t5edge::generate(&model, &[&[5, 1]], &opts.clone().num_beams(2)).unwrap_err(),
                model
                    .new_cache(&model.encode(&[5, 1]).unwrap(), 2)
                    .err()
                    .unwrap(),
                model.logits(&vec![0.0; model.config.d_model]).unwrap_err(),
            ];
            for e in errors {
                assert!(e.to_string().contains(&want), "{name}: {e}");
            }
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        let dec = ids(&case["decoder_input_ids"]);
        let v = model.config.vocab_size;
        for (p, pc) in case["prompts"].as_object().unwrap() {
            let input = ids(&pc["input_ids"]);
            let what = format!("{name}/{p}");
            let logits = model.forward(&input, &dec).unwrap();
            assert_close(
                &format!("{what} last logits"),
                &logits[(dec.len() - 1) * v..],
                &g.f32(&format!("{p}.tf_logits_last")),
                LOGIT_REL,
            );
            let (tid, tlog) = (
                g.ids(&format!("{p}.tf_topk_ids")),
                g.f32(&format!("{p}.tf_topk_logits")),
            );
            let scale = tlog.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
            for (pos, row) in logits.chunks_exact(v).enumerate() {
                for r in 0..8 {
                    let gid = tid[pos * 8 + r] as usize;
                    assert!(
                        (row[gid] - tlog[pos * 8 + r]).abs() <= LOGIT_REL * scale,
                        "{what} pos {pos} rank {r}: logit of {gid} is {} vs HF {}",
                        row[gid],
                        tlog[pos * 8 + r]
                    );
                }
            }
            let n = pc["greedy_ids"].as_array().unwrap().len() - 1;
            let out = greedy(
                &model,
                &[&input],
                &GenerateOptions::default()
                    .max_new_tokens(n)
                    .min_new_tokens(n),
            )
            .unwrap();
            assert_eq!(
                out[0],
                ids(&pc["greedy_ids"])[1..],
                "{what} greedy (min HF margin {})",
                pc["greedy_min_margin"]
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `t5edge encode --json` prints HF's `last_hidden_state`, one row of
/// d_model values per input token, within the same 1e-4 as the library.
#[test]
fn encode_command_prints_hf_encoder_states() {
    let manifest = manifest();
    for (name, case) in manifest["cases"].as_object().unwrap() {
        let dir = synth_case("encode", name, case);
        let g = Arrays::open(&fixtures().join(format!("{name}.safetensors")));
        for (p, pc) in case["prompts"].as_object().unwrap() {
            let input = ids(&pc["input_ids"]);
            let out = common::cli::t5edge_command()
                .args(["encode", "--json", "--model"])
                .arg(&dir)
                .args(["--input-ids", &csv(&input)])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["input_ids"].as_array().unwrap().len(), input.len());
            let rows = v["states"].as_array().unwrap();
            assert_eq!(rows.len(), input.len(), "{name}/{p}: one row per token");
            let states: Vec<f32> = rows
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter())
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_close(
                &format!("{name}/{p} encode --json"),
                &states,
                &g.f32(&format!("{p}.encoder_hidden")),
                1e-4,
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `t5edge score --json`: the last target token's log-probability is HF's
/// log-softmax of its teacher-forced logits (1e-4 absolute), one value per
/// target token, summed into `logprob`.
#[test]
fn score_command_matches_hf_log_softmax() {
    let manifest = manifest();
    for (name, case) in manifest["cases"].as_object().unwrap() {
        if encoder_only(case) {
            continue; // refused: encoder_only_checkpoints_refuse_decoding
        }
        let dir = synth_case("score", name, case);
        let g = Arrays::open(&fixtures().join(format!("{name}.safetensors")));
        let dec = ids(&case["decoder_input_ids"]);
        assert_eq!(
            dec[0], 0,
            "{name}: the decoder input starts with the start token"
        );
        for (p, pc) in case["prompts"].as_object().unwrap() {
            let input = ids(&pc["input_ids"]);
            let last = g.f32(&format!("{p}.tf_logits_last"));
            let max = last.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let lse = max
                + last
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            // The target continues the reference decoder input by one token.
            for t in [5usize, last.len() - 1] {
                let mut target = dec[1..].to_vec();
                target.push(t as u32);
                let out = common::cli::t5edge_command()
                    .args(["score", "--json", "--model"])
                    .arg(&dir)
                    .args(["--input-ids", &csv(&input)])
                    .args(["--target-ids", &csv(&target)])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let lps: Vec<f64> = v["token_logprobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                assert_eq!(lps.len(), target.len(), "{name}/{p}: one per target token");
                let want = last[t] as f64 - lse;
                let got = *lps.last().unwrap();
                assert!(
                    (got - want).abs() <= 1e-4,
                    "{name}/{p} token {t}: log p {got} vs HF {want}"
                );
                assert!(lps.iter().all(|&l| l <= 0.0 && l.is_finite()));
                let sum: f64 = lps.iter().sum();
                let total = v["logprob"].as_f64().unwrap();
                assert!((total - sum).abs() <= 1e-3, "{total} vs {sum}");
            }
        }
        let model = T5Model::load(&dir).unwrap();
        let e = t5edge::score::score(&model, &[5, 1], &[]).unwrap_err();
        assert!(e.to_string().contains("the target has no tokens"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn run(args: &[&str], dir: &Path) -> std::process::Output {
    common::cli::t5edge_command()
        .args(args)
        .arg("--model")
        .arg(dir)
        .output()
        .unwrap()
}

/// Through the binary, an encoder-only checkpoint: `generate`, `score` and
/// `forward` each fail with the one error naming it; `embed` is the mean of
/// HF's `last_hidden_state` rows; `inspect` says what it is; `quantize`
/// writes an int8 and an f16 directory that are encoder-only too and encode
/// close to HF (within the quantization error, not 1e-4).
#[test]
fn encoder_only_checkpoints_refuse_decoding() {
    let manifest = manifest();
    for (name, case) in manifest["cases"].as_object().unwrap() {
        if !encoder_only(case) {
            continue;
        }
        let dir = synth_case("enc-only", name, case);
        let hf_class = case["hf_class"].as_str().unwrap();
        let want = format!(
            "model.safetensors is an encoder-only checkpoint ({hf_class}): no decoder tensors; use encode or embed"
        );
        for args in [
            &["generate", "--input-ids", "5,6,1"][..],
            &["generate", "--num-beams", "2", "--input-ids", "5,6,1"],
            &[
                "generate",
                "--dtype",
                "int8",
                "--exact",
                "--input-ids",
                "5,6,1",
            ],
            &["score", "--input-ids", "5,6,1", "--target-ids", "7,8"],
            &["forward", "--input-ids", "5,6,1", "--decoder-ids", "0,7"],
        ] {
            let out = run(args, &dir);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {err}");
            assert!(err.contains(&want), "{name} {args:?}: {err}");
            assert_eq!(
                err.trim().lines().count(),
                1,
                "{name} {args:?}: one line: {err}"
            );
        }
        let g = Arrays::open(&fixtures().join(format!("{name}.safetensors")));
        let pc = &case["prompts"]["nine"];
        let input = ids(&pc["input_ids"]);
        let hf = g.f32("nine.encoder_hidden");
        let d = hf.len() / input.len();
        let mean: Vec<f32> = (0..d)
            .map(|j| {
                (0..input.len()).map(|i| hf[i * d + j] as f64).sum::<f64>() as f32
                    / input.len() as f32
            })
            .collect();
        let out = run(&["embed", "--json", "--input-ids", &csv(&input)], &dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let e: Vec<f32> = v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_close(&format!("{name} embed"), &e, &mean, 1e-4);

        let out = run(&["inspect", "--json"], &dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["encoder_only"], true, "{name}");
        assert_eq!(v["class"], hf_class, "{name}");
        assert_eq!(v["parameters"], case["num_parameters"], "{name}");

        for (dtype, tol) in [("int8", 5e-2f32), ("f16", 1e-2)] {
            let q = dir.with_extension(dtype);
            let out = common::cli::t5edge_command()
                .args(["quantize", "--dtype", dtype, "--force", "--model"])
                .arg(&dir)
                .arg("--out")
                .arg(&q)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name} quantize {dtype}: {err}");
            assert!(err.contains("encoder states max rel err"), "{err}");
            let m = T5Model::load(&q).unwrap();
            assert!(m.is_encoder_only(), "{name} {dtype}");
            assert_close(
                &format!("{name} {dtype} encoder"),
                &m.encode(&input).unwrap(),
                &hf,
                tol,
            );
            let out = run(&["score", "--input-ids", "5,1", "--target-ids", "7"], &q);
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("is an encoder-only checkpoint"),
                "{name} {dtype}"
            );
            let _ = std::fs::remove_dir_all(&q);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A umT5 checkpoint whose config says `t5` would silently use layer 0's
/// bias everywhere; with `umt5` every layer's table is read, and a missing
/// one is named.
#[test]
fn umt5_needs_every_layers_bias() {
    let manifest = manifest();
    let case = &manifest["cases"]["umt5"];
    let dir = synth_case("umt5-bias", "umt5", case);
    let model = T5Model::load(&dir).unwrap();
    assert_eq!(model.encoder.rel_bias.len(), model.config.num_layers);
    let dec = model.decoder.as_ref().unwrap();
    assert_eq!(dec.rel_bias.len(), model.config.num_decoder_layers);
    // Drop decoder layer 2's table: the loader names it.
    let st = dir.join("model.safetensors");
    let file = t5edge::weights::TensorFile::open(&st, false).unwrap();
    let gone = "decoder.block.2.layer.0.SelfAttention.relative_attention_bias.weight";
    let kept: Vec<t5edge::weights::writer::OutTensor> = file
        .tensors
        .iter()
        .filter(|(n, _)| n.as_str() != gone)
        .map(|(n, info)| t5edge::weights::writer::OutTensor {
            name: n.clone(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            data: file.tensor_bytes(info).to_vec(),
        })
        .collect();
    drop(file);
    t5edge::weights::writer::write_safetensors(&st, &kept, &Default::default(), true).unwrap();
    let e = T5Model::load(&dir).err().unwrap().to_string();
    assert!(e.contains(gone) && e.contains("is missing"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
