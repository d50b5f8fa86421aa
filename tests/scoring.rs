//! Batched encoder states, batched scoring and reranking: the batch against
//! one input at a time, the output files read back, scores against HF's
//! committed references (tests/fixtures/refs, tests/fixtures/rerank_refs.json,
//! tools/refs), and the command line's errors.

mod common;

use common::{assert_close, max_abs_diff, Arrays};
use std::path::{Path, PathBuf};
use std::process::Output;
use t5edge::encode::encode_padded;
use t5edge::model::{FormatPolicy, WeightFormat};
use t5edge::rerank::relevance;
use t5edge::score::{score, score_batch};
use t5edge::synth::{preset, with_overrides, write_checkpoint, SynthOptions};
use t5edge::T5Model;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Writes the checkpoint `t5edge synth ARGS` writes into `dir`.
fn synth(args: &[String], dir: &Path) {
    let (mut p, mut seed, mut jitter, mut sets) = (String::new(), 0u64, 0f32, Vec::new());
    for pair in args.chunks(2) {
        let v = pair[1].clone();
        match pair[0].as_str() {
            "--preset" => p = v,
            "--seed" => seed = v.parse().unwrap(),
            "--norm-jitter" => jitter = v.parse().unwrap(),
            "--set" => sets.push(v),
            other => panic!("unknown synth arg {other}"),
        }
    }
    let cfg = with_overrides(&preset(&p).unwrap(), &sets).unwrap();
    let opts = SynthOptions {
        seed,
        norm_jitter: jitter,
        ..Default::default()
    };
    write_checkpoint(dir, &cfg, &opts, true).unwrap();
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// Runs `t5edge SUBCOMMAND --model MODEL REST...` (`args` = SUBCOMMAND, REST).
fn run(args: &[&str], model: &Path) -> Output {
    common::cli::t5edge_command()
        .arg(args[0])
        .arg("--model")
        .arg(model)
        .args(&args[1..])
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn err(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let e = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "one error line: {e}");
    e
}

/// Ragged inputs: 1 token, 150 (past max_distance), 9, 40.
fn ragged(vocab: u32) -> Vec<Vec<u32>> {
    [1usize, 150, 9, 40]
        .iter()
        .map(|&n| {
            let mut v: Vec<u32> = (0..n as u32 - 1)
                .map(|i| 3 + (i * 37) % (vocab - 3))
                .collect();
            v.push(1);
            v
        })
        .collect()
}

/// The padded batch holds each input's own encoding; padding rows are zero.
/// Tolerance 1e-5 of the largest |state|: the batch runs its linear layers
/// over all rows at once, and a product may sum in another order (another
/// kernel block shape) when the row count differs; attention and norms are
/// per row. Measured here: at most 2.2e-6 apart (states of magnitude ~1-10),
/// f32 and int8 alike (the int8 products are exact integers and each row
/// is quantized alone, so there the attention is what may differ).
#[test]
fn encoded_batch_equals_each_input_alone() {
    let (_dir, model) = common::decode_synth_model();
    let mut int8 = model.clone();
    int8.convert(FormatPolicy::for_dtype(WeightFormat::Int8))
        .unwrap();
    let inputs = ragged(model.config.vocab_size as u32);
    let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    for (name, m) in [("f32", &model), ("int8", &int8)] {
        let e = encode_padded(m, &refs).unwrap();
        let d = m.config.d_model;
        assert_eq!((e.len(), e.max_len, e.d_model), (4, 150, d));
        assert_eq!(e.lengths, [1, 150, 9, 40]);
        let mut worst = 0f32;
        for (i, ids) in inputs.iter().enumerate() {
            let alone = m.encode(ids).unwrap();
            let (diff, _) = max_abs_diff(e.states_of(i), &alone);
            worst = worst.max(diff);
            assert_close(&format!("{name} input {i}"), e.states_of(i), &alone, 1e-5);
            assert_eq!(e.ids_of(i), &ids[..]);
            let pad = &e.states[(i * 150 + ids.len()) * d..(i + 1) * 150 * d];
            assert!(pad.iter().all(|&v| v == 0.0), "{name} input {i}: padding");
        }
        let mask = e.attention_mask();
        assert_eq!(mask.iter().map(|&m| m as usize).sum::<usize>(), 200);
        eprintln!("{name}: batch vs alone max abs diff {worst:e}");
    }
    let bad = encode_padded(&model, &[&[5, 1], &[]])
        .unwrap_err()
        .to_string();
    assert!(bad.contains("input 1 has no tokens"), "{bad}");
    let bad = encode_padded(&model, &[&[5, 1], &[5, 100_000]])
        .unwrap_err()
        .to_string();
    assert!(bad.contains("input 1: token id 100000"), "{bad}");
}

/// Reads a `.npy` of little-endian f32 as NumPy 1.0 writes it: the shape
/// from the header dict, the data after it.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let n = u16::from_le_bytes([b[8], b[9]]) as usize;
    let dict = std::str::from_utf8(&b[10..10 + n]).unwrap();
    assert!(dict.contains("'descr': '<f4'") && dict.contains("'fortran_order': False"));
    let shape = dict.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = shape[..shape.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    assert_eq!((10 + n) % 64, 0, "data 64-aligned");
    let data = b[10 + n..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

/// `encode --input FILE --output` writes the padded batch; read back with
/// the safetensors crate (and the .npy by its header) it holds each input's
/// encoding alone, the mask and the ids. An existing file is kept without
/// --force; a bad line is named.
#[test]
fn encode_files_read_back() {
    let (dir, model) = common::decode_synth_model();
    let tmp = tempfile::tempdir().unwrap();
    let inputs = ragged(model.config.vocab_size as u32);
    let jsonl: String = inputs
        .iter()
        .map(|v| format!("{}\n", serde_json::json!({ "input_ids": v })))
        .collect();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, &jsonl).unwrap();
    let st = tmp.path().join("states.safetensors");
    let npy = tmp.path().join("states.npy");
    let inp = input.to_str().unwrap();
    for out in [&st, &npy] {
        ok(&run(
            &["encode", "--input", inp, "--output", out.to_str().unwrap()],
            dir.path(),
        ));
    }
    let d = model.config.d_model;
    let bytes = std::fs::read(&st).unwrap();
    let f = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let states = f.tensor("last_hidden_state").unwrap();
    assert_eq!(states.dtype(), safetensors::Dtype::F32);
    assert_eq!(states.shape(), [4, 150, d]);
    let states: Vec<f32> = states
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let i64s = |name: &str| -> Vec<i64> {
        let t = f.tensor(name).unwrap();
        assert_eq!(
            (t.dtype(), t.shape()),
            (safetensors::Dtype::I64, &[4, 150][..])
        );
        t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (mask, padded) = (i64s("attention_mask"), i64s("input_ids"));
    let (shape, npy_states) = read_npy(&npy);
    assert_eq!(shape, [4, 150, d]);
    assert_eq!(npy_states, states, "the .npy holds the same states");
    for (i, ids) in inputs.iter().enumerate() {
        let row = &states[i * 150 * d..(i + 1) * 150 * d];
        assert_close(
            &format!("file input {i}"),
            &row[..ids.len() * d],
            &model.encode(ids).unwrap(),
            1e-5,
        );
        assert!(row[ids.len() * d..].iter().all(|&v| v == 0.0));
        let m = &mask[i * 150..(i + 1) * 150];
        assert!(m
            .iter()
            .enumerate()
            .all(|(j, &v)| v == (j < ids.len()) as i64));
        let p = &padded[i * 150..(i + 1) * 150];
        assert!(p[..ids.len()].iter().zip(ids).all(|(&a, &b)| a == b as i64));
        assert!(p[ids.len()..].iter().all(|&v| v == 0));
    }
    // --json with --input: one {"input_ids", "states"} line per input line.
    let lines = ok(&run(&["encode", "--json", "--input", inp], dir.path()));
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[2]["states"].as_array().unwrap().len(), 9);
    // Nothing the user owns is overwritten; a bad line is named.
    let again = err(&run(
        &["encode", "--input", inp, "--output", st.to_str().unwrap()],
        dir.path(),
    ));
    assert!(again.contains("exists; pass --force"), "{again}");
    ok(&run(
        &[
            "encode",
            "--input",
            inp,
            "--output",
            st.to_str().unwrap(),
            "--force",
        ],
        dir.path(),
    ));
    let odd = tmp.path().join("states.bin");
    let e = err(&run(
        &["encode", "--input", inp, "--output", odd.to_str().unwrap()],
        dir.path(),
    ));
    assert!(e.contains(".safetensors") && e.contains(".npy"), "{e}");
    std::fs::write(
        &input,
        format!("{}{{\"input_ids\": [5, 1], \"oops\": 1}}\n", jsonl),
    )
    .unwrap();
    let e = err(&run(&["encode", "--json", "--input", inp], dir.path()));
    assert!(e.contains("in.jsonl line 5: unknown field `oops`"), "{e}");
    // Past 512 tokens: T5's relative buckets take any length; the limit is
    // the command line's, and a line over it is named.
    let long: Vec<u32> = (0..600).map(|i| 3 + i % 900).chain([1]).collect();
    let lines = format!(
        "{{\"input_ids\": [5, 1]}}\n{}\n",
        serde_json::json!({ "input_ids": long })
    );
    std::fs::write(&input, lines).unwrap();
    let v = ok(&run(&["encode", "--json", "--input", inp], dir.path()));
    let second: serde_json::Value = serde_json::from_str(v.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["states"].as_array().unwrap().len(), 601);
    let e = err(&run(
        &[
            "encode",
            "--json",
            "--input",
            inp,
            "--max-input-tokens",
            "600",
        ],
        dir.path(),
    ));
    assert!(e.contains("in.jsonl line 2:") && e.contains("600"), "{e}");
}

/// The committed HF references (tools/refs/make_refs.py) for one case.
fn hf_case(name: &str) -> (tempfile::TempDir, serde_json::Value, Arrays) {
    let manifest = json_file(&fixture("refs/manifest.json"));
    let case = manifest["cases"][name].clone();
    let dir = tempfile::tempdir().unwrap();
    synth(&strings(&case["synth_args"]), dir.path());
    let g = Arrays::open(&fixture(&format!("refs/{name}.safetensors")));
    (dir, case, g)
}

/// HF's log p(t | source, prefix) from its recorded last-position logits.
fn hf_logprob(last: &[f32], t: usize) -> f64 {
    let max = last.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = max
        + last
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    last[t] as f64 - lse
}

/// Every prompt x two targets of two reference checkpoints scored as one
/// batch: each pair equals its single-pair score (1e-5: the batch's products
/// run over more rows) and its last token equals HF's log-softmax (1e-4).
/// Then `score --input` on the same pairs gives the same numbers.
#[test]
fn score_batch_matches_single_pairs_and_hf() {
    for name in ["gated-untied", "gelu-odd"] {
        let (dir, case, g) = hf_case(name);
        let model = T5Model::load(dir.path()).unwrap();
        let dec = ids(&case["decoder_input_ids"]);
        let mut pairs = Vec::new();
        let mut want = Vec::new();
        for (p, pc) in case["prompts"].as_object().unwrap() {
            let last = g.f32(&format!("{p}.tf_logits_last"));
            for t in [5usize, last.len() - 1] {
                let mut target = dec[1..].to_vec();
                target.push(t as u32);
                pairs.push((ids(&pc["input_ids"]), target));
                want.push(hf_logprob(&last, t));
            }
        }
        let refs: Vec<(&[u32], &[u32])> = pairs
            .iter()
            .map(|(s, t)| (s.as_slice(), t.as_slice()))
            .collect();
        let batch = score_batch(&model, &refs).unwrap();
        assert_eq!(batch.len(), pairs.len());
        for (i, ((s, t), b)) in pairs.iter().zip(&batch).enumerate() {
            let one = score(&model, s, t).unwrap();
            assert_eq!(b.token_logprobs.len(), t.len());
            assert_close(
                &format!("{name} pair {i}"),
                &b.token_logprobs,
                &one.token_logprobs,
                1e-5,
            );
            let got = *b.token_logprobs.last().unwrap() as f64;
            assert!(
                (got - want[i]).abs() <= 1e-4,
                "{name} pair {i}: {got} vs HF {}",
                want[i]
            );
        }
        // The same pairs through the binary, with a bad line among them.
        let tmp = tempfile::tempdir().unwrap();
        let mut lines: Vec<String> = pairs
            .iter()
            .map(|(s, t)| serde_json::json!({"source_ids": s, "target_ids": t}).to_string())
            .collect();
        lines.insert(1, r#"{"source_ids": [5, 1], "target_ids": []}"#.into());
        lines.insert(3, r#"{"source_ids": [5, 1], "target": 7"#.into());
        let input = tmp.path().join("pairs.jsonl");
        std::fs::write(&input, lines.join("\n")).unwrap();
        let out = ok(&run(
            &["score", "--input", input.to_str().unwrap()],
            dir.path(),
        ));
        let rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), lines.len(), "one output line per input line");
        let e1 = rows[1]["error"].as_str().unwrap();
        assert!(
            e1.contains("pairs.jsonl line 2: the target has no tokens to score"),
            "{e1}"
        );
        let e3 = rows[3]["error"].as_str().unwrap();
        assert!(e3.contains("pairs.jsonl line 4: invalid JSON"), "{e3}");
        let good: Vec<&serde_json::Value> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1 && *i != 3)
            .map(|(_, r)| r)
            .collect();
        for (r, b) in good.iter().zip(&batch) {
            assert!((r["logprob"].as_f64().unwrap() - b.logprob).abs() <= 1e-4);
        }
    }
}

/// monoT5 relevance against HF's p(true) on a synthetic checkpoint
/// (tests/fixtures/rerank_refs.json, tools/refs/make_rerank_refs.py): all
/// documents of all queries in one batched call, within 1e-5. With the real
/// T5 tokenizer in ../shared, t5edge's own tokenization of the template and
/// `t5edge rerank --json` on text give the same.
#[test]
fn rerank_matches_hf_p_true() {
    let refs = json_file(&fixture("rerank_refs.json"));
    let dir = tempfile::tempdir().unwrap();
    synth(&strings(&refs["synth_args"]), dir.path());
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        sha,
        refs["model_sha256"].as_str().unwrap(),
        "synth changed: rerun tools/refs/make_refs.sh"
    );
    let model = T5Model::load(dir.path()).unwrap();
    let (t, f) = (
        refs["true_id"].as_u64().unwrap() as u32,
        refs["false_id"].as_u64().unwrap() as u32,
    );
    let docs: Vec<&serde_json::Value> = refs["queries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|q| q["documents"].as_array().unwrap())
        .collect();
    let inputs: Vec<Vec<u32>> = docs.iter().map(|d| ids(&d["input_ids"])).collect();
    let inrefs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let p = relevance(&model, &inrefs, t, f).unwrap();
    for (i, (got, d)) in p.iter().zip(&docs).enumerate() {
        let want = d["p_true"].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-5,
            "document {i}: p(true) {got} vs HF {want}"
        );
    }
    let e = relevance(&model, &[&[5, 1], &[]], t, f)
        .unwrap_err()
        .to_string();
    assert!(e.contains("document 1: the source has no tokens"), "{e}");

    let tok_json = common::shared_root().join("tokenizers/t5/tokenizer.json");
    if refs["tokenizer"].is_null() || !tok_json.is_file() {
        eprintln!(
            "SKIP rerank on text: no real T5 tokenizer at {}",
            tok_json.display()
        );
        return;
    }
    std::fs::copy(&tok_json, dir.path().join("tokenizer.json")).unwrap();
    let tok = t5edge::Tokenizer::from_dir(dir.path(), model.config.vocab_size).unwrap();
    let opts = t5edge::rerank::RerankOptions::default();
    assert_eq!(opts.label_ids(&tok).unwrap(), (t, f));
    for q in refs["queries"].as_array().unwrap() {
        let query = q["query"].as_str().unwrap();
        let qdocs = q["documents"].as_array().unwrap();
        let texts: Vec<&str> = qdocs.iter().map(|d| d["text"].as_str().unwrap()).collect();
        for (text, d) in texts.iter().zip(qdocs) {
            let filled = opts.fill(query, text).unwrap();
            assert_eq!(
                tok.encode(&filled).unwrap(),
                ids(&d["input_ids"]),
                "{filled}"
            );
        }
        let mut args = vec!["rerank", "--json", "--query", query, "--"];
        args.extend(texts.iter().copied());
        let v: serde_json::Value = serde_json::from_str(&ok(&run(&args, dir.path()))).unwrap();
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), qdocs.len());
        for w in results.windows(2) {
            assert!(
                w[0]["score"].as_f64() >= w[1]["score"].as_f64(),
                "best first"
            );
        }
        for r in results {
            let i = r["index"].as_u64().unwrap() as usize;
            assert_eq!(r["text"].as_str().unwrap(), texts[i]);
            let want = qdocs[i]["p_true"].as_f64().unwrap();
            assert!((r["score"].as_f64().unwrap() - want).abs() <= 1e-5);
        }
    }
}

/// `rerank` through the binary on a synthetic tokenizer (two of its words as
/// labels): plain and JSON output agree, and a documents file with a bad line
/// is refused naming the line; `score`'s empty targets.
#[test]
fn rerank_command_output_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_overrides(
        &preset("t5-efficient-tiny-nl2").unwrap(),
        &[
            "vocab_size=1000".into(),
            "d_model=64".into(),
            "d_ff=128".into(),
            "num_heads=2".into(),
            "d_kv=16".into(),
        ],
    )
    .unwrap();
    write_checkpoint(dir.path(), &cfg, &Default::default(), false).unwrap();
    let labels = ["--true-token", "\u{2581}the", "--false-token", "\u{2581}of"];
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs.jsonl");
    std::fs::write(
        &docs,
        "{\"text\": \"the lazy dog\"}\n{\"text\": \"a quick brown fox\"}\n{\"text\": \"hello world\"}\n",
    )
    .unwrap();
    let d = docs.to_str().unwrap();
    let mut args = vec!["rerank", "--json", "--query", "quick fox", "--documents", d];
    args.extend(labels);
    let v: serde_json::Value = serde_json::from_str(&ok(&run(&args, dir.path()))).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let mut seen: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, [0, 1, 2]);
    args.remove(1);
    let plain = ok(&run(&args, dir.path()));
    let first: Vec<&str> = plain.lines().next().unwrap().split('\t').collect();
    assert_eq!(first[1], results[0]["index"].to_string());
    assert_eq!(first[2], results[0]["text"].as_str().unwrap());

    for (content, name, want) in [
        (
            "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n",
            "bad.jsonl",
            "bad.jsonl line 2: the document has no text field",
        ),
        (
            "{\"text\": \"a\"}\n\n{\"text\": \"c\"}\n",
            "blank.jsonl",
            "blank.jsonl line 2: blank line",
        ),
        (
            "{\"text\": \"a\"}\n{\"text\": 3\n",
            "broken.jsonl",
            "broken.jsonl line 2: invalid JSON",
        ),
        ("one\ntwo\n\n", "plain.txt", "plain.txt line 3: blank line"),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        let mut a = vec!["rerank", "--query", "q", "--documents", p.to_str().unwrap()];
        a.extend(labels);
        let e = err(&run(&a, dir.path()));
        assert!(e.contains(want), "{e}");
    }
    // score: an empty target is one clear error, as text or as ids.
    let e = err(&run(
        &["score", "--input-ids", "5,1", "--target", ""],
        dir.path(),
    ));
    assert!(e.contains("the target has no tokens to score"), "{e}");
    let e = err(&run(
        &["score", "--input-ids", "5,1", "--target-ids", ""],
        dir.path(),
    ));
    assert!(e.contains("--target-ids is empty"), "{e}");
    let e = err(&run(&["rerank", "--query", "q", "doc"], dir.path()));
    assert!(
        e.contains("\u{2581}true") && e.contains("not a token"),
        "{e}"
    );
    let mut a = vec![
        "rerank",
        "--query",
        "q",
        "--template",
        "{query} only",
        "doc",
    ];
    a.extend(labels);
    assert!(err(&run(&a, dir.path())).contains("{document} once"));
}
