//! The decoding CLI end to end on a tiny synthetic model: flags, --json,
//! --stream, JSONL batch files (1,000 lines with invalid ones), embed, and
//! hub-id resolution in a fake Hugging Face cache.

#[path = "common/cli.rs"]
mod cli;

use cli::t5edge_command;
use std::path::Path;
use t5edge::generate::{generate, GenerateOptions};
use t5edge::T5Model;

fn tiny_model(dir: &Path) -> T5Model {
    let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
    let cfg = t5edge::synth::with_overrides(
        &cfg,
        &[
            "d_model=64".into(),
            "d_ff=128".into(),
            "num_heads=2".into(),
            "d_kv=16".into(),
            "vocab_size=1000".into(),
            "tie_word_embeddings=false".into(),
        ],
    )
    .unwrap();
    let opts = t5edge::synth::SynthOptions {
        seed: 5,
        norm_jitter: 0.2,
        ..Default::default()
    };
    t5edge::synth::write_checkpoint(dir, &cfg, &opts, false).unwrap();
    T5Model::load(dir).unwrap()
}

fn t5edge(args: &[&str]) -> std::process::Output {
    t5edge_command().args(args).output().unwrap()
}

fn ok_stdout(args: &[&str]) -> String {
    let out = t5edge(args);
    assert!(
        out.status.success(),
        "t5edge {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn generate_flags_json_and_stream() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = dir.path().to_str().unwrap();
    let prompt = [5u32, 900, 17, 1];
    // Beam search: ids is the best, sequences/scores as the library gives them.
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&[
        "generate",
        "--model",
        m,
        "--input-ids",
        "5,900,17,1",
        "--max-new-tokens",
        "7",
        "--num-beams",
        "4",
        "--num-return-sequences",
        "3",
        "--length-penalty",
        "0.7",
        "--no-repeat-ngram-size",
        "2",
        "--early-stopping",
        "--json",
    ]))
    .unwrap();
    let opts = GenerateOptions::default()
        .max_new_tokens(7)
        .num_beams(4)
        .num_return_sequences(3)
        .length_penalty(0.7)
        .no_repeat_ngram_size(2)
        .early_stopping(t5edge::generate::EarlyStopping::Finished);
    let g = generate(&model, &[&prompt], &opts).unwrap().remove(0);
    assert_eq!(v["ids"], serde_json::json!(g.sequences[0]));
    assert_eq!(v["sequences"], serde_json::json!(g.sequences));
    let cli_scores: Vec<f32> = serde_json::from_value(v["scores"].clone()).unwrap();
    for (a, b) in cli_scores.iter().zip(g.scores.unwrap()) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    assert_eq!(v["input_ids"], serde_json::json!(prompt));
    assert!(v["text"].is_string());
    // Sampling flags, seeded: the CLI equals the library, run twice the same.
    let args = [
        "generate",
        "--model",
        m,
        "--input-ids",
        "5,900,17,1",
        "--max-new-tokens",
        "9",
        "--do-sample",
        "--temperature",
        "1.4",
        "--top-k",
        "0",
        "--top-p",
        "0.95",
        "--seed",
        "11",
        "--repetition-penalty",
        "1.3",
        "--json",
    ];
    let a: serde_json::Value = serde_json::from_str(&ok_stdout(&args)).unwrap();
    let b: serde_json::Value = serde_json::from_str(&ok_stdout(&args)).unwrap();
    assert_eq!(a, b);
    let opts = GenerateOptions::default()
        .max_new_tokens(9)
        .do_sample(true)
        .temperature(1.4)
        .top_k(0)
        .top_p(0.95)
        .seed(11)
        .repetition_penalty(1.3);
    let g = generate(&model, &[&prompt], &opts).unwrap().remove(0);
    assert_eq!(a["ids"], serde_json::json!(g.sequences[0]));
    assert!(a.get("sequences").is_none());
    // --stream prints the same text as the non-streamed run.
    let plain = ok_stdout(&[
        "generate",
        "--model",
        m,
        "hello world",
        "--max-new-tokens",
        "12",
    ]);
    let streamed = ok_stdout(&[
        "generate",
        "--model",
        m,
        "hello world",
        "--max-new-tokens",
        "12",
        "--stream",
    ]);
    assert_eq!(plain, streamed);
    // Invalid combinations fail with a message, not a panic.
    let out = t5edge(&[
        "generate",
        "--model",
        m,
        "--input-ids",
        "5,1",
        "--num-beams",
        "2",
        "--num-return-sequences",
        "3",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("num_return_sequences"));
}

#[test]
fn batch_file_of_1000_lines_with_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir.path().join("m"));
    let m = dir.path().join("m");
    let tok = t5edge::Tokenizer::from_dir(&m, 1000).unwrap();
    let mut lines = Vec::new();
    let mut want_error = Vec::new();
    let mut rng = t5edge::generate::DecodeRng::new(1, 0);
    for i in 0..1000usize {
        let (line, bad) = match i % 50 {
            7 => ("{not json".to_string(), true),
            13 => (r#"{"input_ids": [5, 5000, 1]}"#.to_string(), true),
            21 => (r#"{"input_ids": [5, 1], "num_beamz": 2}"#.to_string(), true),
            22 => (String::new(), true),
            29 => (
                r#"{"text": "hello world", "num_beams": 3, "max_new_tokens": 3}"#.into(),
                false,
            ),
            33 => (
                r#"{"input_ids": [9, 8, 1], "do_sample": true, "seed": 4, "top_k": 0}"#.into(),
                false,
            ),
            41 => (
                r#"{"input_ids": [9, 1], "num_beams": 2, "num_return_sequences": 3}"#.into(),
                true,
            ),
            _ => {
                let n = 1 + (rng.uniform() * 30.0) as usize;
                let ids: Vec<u32> = (0..n).map(|_| 3 + (rng.uniform() * 990.0) as u32).collect();
                (serde_json::json!({ "input_ids": ids }).to_string(), false)
            }
        };
        lines.push(line);
        want_error.push(bad);
    }
    let input = dir.path().join("prompts.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = dir.path().join("results.jsonl");
    let (i, o) = (input.to_str().unwrap(), output.to_str().unwrap());
    let ms = m.to_str().unwrap();
    ok_stdout(&[
        "generate",
        "--model",
        ms,
        "--input",
        i,
        "--output",
        o,
        "--max-new-tokens",
        "4",
    ]);
    let text = std::fs::read_to_string(&output).unwrap();
    let results: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 1000);
    let base = GenerateOptions::default().max_new_tokens(4);
    for (n, (r, bad)) in results.iter().zip(&want_error).enumerate() {
        assert_eq!(r.get("error").is_some(), *bad, "line {n}: {r}");
        if *bad {
            continue;
        }
        // Spot-check against the library run on that request alone.
        if n % 50 == 29 {
            let ids = tok.encode("hello world").unwrap();
            let g = generate(
                &model,
                &[&ids],
                &base.clone().num_beams(3).max_new_tokens(3),
            )
            .unwrap()
            .remove(0);
            assert_eq!(r["ids"], serde_json::json!(g.sequences[0]));
            assert!(r["scores"].is_array());
        } else if n % 50 == 33 {
            let g = generate(
                &model,
                &[&[9, 8, 1]],
                &base.clone().do_sample(true).seed(4).top_k(0),
            )
            .unwrap()
            .remove(0);
            assert_eq!(r["ids"], serde_json::json!(g.sequences[0]));
        } else if n % 37 == 0 {
            let ids: Vec<u32> = serde_json::from_value(r["input_ids"].clone()).unwrap();
            let g = t5edge::generate::greedy(&model, &[&ids], &base).unwrap();
            assert_eq!(r["ids"], serde_json::json!(g[0]), "line {n}");
        }
    }
    // An existing --output is kept unless --force.
    let out = t5edge(&[
        "generate",
        "--model",
        ms,
        "--input",
        i,
        "--output",
        o,
        "--max-new-tokens",
        "4",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), text);
    ok_stdout(&[
        "generate",
        "--model",
        ms,
        "--input",
        i,
        "--output",
        o,
        "--max-new-tokens",
        "4",
        "--force",
    ]);
    assert_eq!(std::fs::read_to_string(&output).unwrap(), text);
}

#[test]
fn embed_matches_mean_of_encoder_rows() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let prompts: [&[u32]; 3] = [&[5, 900, 17, 1], &[1], &[44, 45, 46, 47, 48, 49, 1]];
    let d = model.config.d_model;
    let emb = t5edge::embed(&model, &prompts, false).unwrap();
    let emb_n = t5edge::embed(&model, &prompts, true).unwrap();
    for (p, (e, en)) in prompts.iter().zip(emb.iter().zip(&emb_n)) {
        let rows = model.encode(p).unwrap();
        let mean: Vec<f32> = (0..d)
            .map(|j| rows.iter().skip(j).step_by(d).sum::<f32>() / p.len() as f32)
            .collect();
        for (a, b) in e.iter().zip(&mean) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
        for (a, b) in en.iter().zip(&mean) {
            assert!((a - b / norm).abs() < 1e-5);
        }
    }
    let m = dir.path().to_str().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok_stdout(&[
        "embed",
        "--model",
        m,
        "--input-ids",
        "5,900,17,1",
        "--normalize",
        "--json",
    ]))
    .unwrap();
    let cli: Vec<f32> = serde_json::from_value(v["embedding"].clone()).unwrap();
    // The CLI encodes the prompt alone (the batch above may round differently).
    for (a, b) in cli.iter().zip(&emb_n[0]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

/// `embed --input FILE`: one line per input, each the line `embed` prints
/// for that input alone (the same bytes), converted at load with --dtype
/// too; a bad line stops the command, naming the file and line.
#[test]
fn embed_input_file_gives_each_line_its_own_embedding() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    let m = dir.path().to_str().unwrap();
    // Enough short inputs to run several at once.
    let inputs: Vec<Vec<u32>> = (0..9u32)
        .map(|i| {
            (0..2 + i)
                .map(|t| (t * 37 + i) % 990 + 3)
                .chain([1])
                .collect()
        })
        .collect();
    let file = dir.path().join("inputs.jsonl");
    let lines: Vec<String> = inputs
        .iter()
        .map(|ids| serde_json::json!({ "input_ids": ids }).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let f = file.to_str().unwrap();
    for dtype in ["f32", "int8"] {
        let all = ok_stdout(&[
            "embed",
            "--model",
            m,
            "--dtype",
            dtype,
            "--input",
            f,
            "--json",
            "--normalize",
        ]);
        let got: Vec<&str> = all.lines().collect();
        assert_eq!(got.len(), inputs.len(), "{dtype}");
        for (ids, line) in inputs.iter().zip(&got) {
            let csv: Vec<String> = ids.iter().map(u32::to_string).collect();
            let alone = ok_stdout(&[
                "embed",
                "--model",
                m,
                "--dtype",
                dtype,
                "--input-ids",
                &csv.join(","),
                "--json",
                "--normalize",
            ]);
            assert_eq!(*line, alone.trim_end(), "{dtype} {ids:?}");
        }
    }
    std::fs::write(
        &file,
        "{\"input_ids\": [5, 1]}\n{\"input_ids\": [5, 5000, 1]}\n",
    )
    .unwrap();
    let out = t5edge(&["embed", "--model", m, "--input", f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("inputs.jsonl line 2") && err.contains("5000"),
        "{err}"
    );
}

#[test]
fn hub_ids_resolve_in_a_fake_cache() {
    let dir = tempfile::tempdir().unwrap();
    let hf_home = dir.path().join("hf");
    let repo = hf_home.join("hub").join("models--google--t5-tiny-test");
    let snap = repo.join("snapshots").join("0123abcd");
    tiny_model(&snap);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd\n").unwrap();
    let cache = hf_home.join("hub");
    assert_eq!(
        t5edge::hub::resolve_in(&cache, "google/t5-tiny-test").unwrap(),
        snap
    );
    assert_eq!(
        t5edge::hub::resolve_in(&cache, "google/t5-tiny-test@0123abcd").unwrap(),
        snap
    );
    let err = t5edge::hub::resolve_in(&cache, "google/absent")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not in the local Hugging Face cache")
            && err.contains("huggingface-cli download google/absent"),
        "{err}"
    );
    assert!(t5edge::hub::looks_like_model_id(
        "google/t5-efficient-tiny-nl2"
    ));
    assert!(!t5edge::hub::looks_like_model_id("./models/x"));
    assert!(!t5edge::hub::looks_like_model_id("/abs/path"));
    // The CLI finds it through HF_HOME.
    let run = |home: &Path| {
        t5edge_command()
            .args([
                "generate",
                "--model",
                "google/t5-tiny-test",
                "--input-ids",
                "5,1",
                "--json",
                "--max-new-tokens",
                "3",
            ])
            .env("HF_HOME", home)
            .env_remove("HF_HUB_CACHE")
            .output()
            .unwrap()
    };
    let out = run(&hf_home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&dir.path().join("elsewhere"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not in the local Hugging Face cache") && err.contains("elsewhere"),
        "{err}"
    );
}

/// A JSONL batch of greedy prompts in int8 picks through the LM head's
/// screen when told to (`T5EDGE_SCREEN=1`: one pass for the whole batch),
/// reports what it decided on stderr, and writes the same results as with
/// the screen off.
#[test]
fn batch_file_through_the_screen_reports_it_and_keeps_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("m"));
    let m = dir.path().join("m");
    let lines: Vec<String> = (0..12u32)
        .map(|i| serde_json::json!({ "input_ids": [3 + i, 40 + 7 * i, 500 - i, 1] }).to_string())
        .collect();
    let input = dir.path().join("prompts.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let run = |screen: &str, out: &str| {
        let output = dir.path().join(out);
        let o = t5edge_command()
            .env("T5EDGE_SCREEN", screen)
            .args([
                "generate",
                "--model",
                m.to_str().unwrap(),
                "--dtype",
                "int8",
            ])
            .args([
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
            ])
            .args(["--max-new-tokens", "6"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        (std::fs::read_to_string(output).unwrap(), err)
    };
    let (on, err_on) = run("1", "on.jsonl");
    let (off, err_off) = run("0", "off.jsonl");
    assert_eq!(on, off);
    assert!(
        err_on.contains("picks decided by the int4 screen"),
        "{err_on}"
    );
    assert!(!err_off.contains("int4 screen"), "{err_off}");
}
