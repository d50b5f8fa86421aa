//! Hostile requests against a good model, through the library and the built
//! binary: every one is refused with one `error:` line and a non-zero exit
//! (except `--max-new-tokens 0`, which is a valid request for nothing).

mod support;

use support::*;
use t5edge::generate::{greedy, GenerateOptions};
use t5edge::T5Model;

fn model_dir() -> &'static str {
    base_checkpoint().to_str().unwrap()
}

fn gen(args: &[&str]) -> std::process::Output {
    let mut a = vec!["generate", "--model", model_dir()];
    a.extend_from_slice(args);
    run_cli(&a, None, &[])
}

#[test]
fn library_refuses_bad_requests() {
    let m = T5Model::load(base_checkpoint()).unwrap();
    let opts = GenerateOptions::default().max_new_tokens(3);
    err_contains("empty", greedy(&m, &[&[]], &opts), &["no tokens"]);
    err_contains(
        "oov",
        greedy(&m, &[&[5, 512, 1]], &opts),
        &["512", "vocab_size"],
    );
    err_contains(
        "u32::MAX",
        greedy(&m, &[&[u32::MAX]], &opts),
        &["4294967295"],
    );
    let huge = GenerateOptions::default().max_new_tokens(1_000_000_000);
    err_contains(
        "huge",
        greedy(&m, &[&[5, 1]], &huge),
        &["1000000000", "limit"],
    );
    let mut small = GenerateOptions::default();
    small.limits.max_input_tokens = 4;
    err_contains(
        "long",
        greedy(&m, &[&[5, 6, 7, 8, 1]], &small),
        &["5 tokens", "limit of 4"],
    );
    let min_over = GenerateOptions::default()
        .max_new_tokens(2)
        .min_new_tokens(3);
    err_contains(
        "min>max",
        greedy(&m, &[&[5, 1]], &min_over),
        &["min_new_tokens"],
    );
    err_contains("forward empty dec", m.forward(&[5, 1], &[]), &["no tokens"]);
    err_contains("forward oov dec", m.forward(&[5, 1], &[0, 9999]), &["9999"]);
    err_contains(
        "enc states empty",
        m.encoder_layer_states(&[]),
        &["no tokens"],
    );
    err_contains(
        "dec states empty",
        m.decoder_layer_states(&[5, 1], &[]),
        &["no tokens"],
    );

    // The low-level decoder API: an empty step or a cache of another shape.
    let enc = m.encode(&[5, 1]).unwrap();
    let mut caches = [m.new_cache(&enc, 4).unwrap()];
    err_contains(
        "empty step",
        m.decode_hidden(&[&[]], &mut caches),
        &["no tokens"],
    );
    let mut foreign = [t5edge::model::SeqCache::new(7, 3, 1)];
    err_contains(
        "foreign cache",
        m.decode_hidden(&[&[0]], &mut foreign),
        &["cache"],
    );
    err_contains(
        "count",
        m.decode_hidden(&[&[0], &[0]], &mut caches),
        &["cache"],
    );

    // max_new_tokens 0 is a request for nothing, and gets it.
    let none = GenerateOptions::default().max_new_tokens(0);
    assert_eq!(
        greedy(&m, &[&[5, 1]], &none).unwrap(),
        vec![Vec::<u32>::new()]
    );
}

#[test]
fn cli_refuses_bad_ids() {
    assert_one_line_error(
        "oov",
        &gen(&["--input-ids", "5,512,1"]),
        &["512", "vocab_size"],
    );
    assert_one_line_error(
        "non-numeric",
        &gen(&["--input-ids", "5,abc,1"]),
        &["\"abc\""],
    );
    assert_one_line_error("negative", &gen(&["--input-ids=-3"]), &["\"-3\""]);
    assert_one_line_error(
        "overflow",
        &gen(&["--input-ids", "99999999999"]),
        &["99999999999"],
    );
    assert_one_line_error(
        "empty ids",
        &gen(&["--input-ids", ""]),
        &["--input-ids", "empty"],
    );
    assert_one_line_error(
        "commas",
        &gen(&["--input-ids", ",,"]),
        &["--input-ids", "empty"],
    );
    assert_one_line_error("both", &gen(&["--input-ids", "5", "text"]), &["either"]);
}

#[test]
fn cli_refuses_empty_and_invalid_prompts() {
    // An empty prompt is what HF makes of it: a lone `</s>` (the goldens'
    // "empty" prompt), and generation runs.
    for text in ["", "  \n\t "] {
        let out = gen(&["--json", "--max-new-tokens", "2", text]);
        assert!(out.status.success(), "{text:?}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["input_ids"], serde_json::json!([1]), "{text:?}");
    }
    let out = run_cli(
        &["generate", "--model", model_dir(), "-"],
        Some(b"abc\xff\xfedef"),
        &[],
    );
    assert_one_line_error("stdin utf8", &out, &["UTF-8", "byte 3"]);
}

#[test]
fn cli_limits() {
    // 40 words tokenize to well over 20 tokens.
    let long = "the quick brown fox ".repeat(10);
    assert_one_line_error(
        "long prompt",
        &gen(&["--max-input-tokens", "20", &long]),
        &["limit of 20"],
    );
    assert_one_line_error(
        "long ids",
        &gen(&["--max-input-tokens", "3", "--input-ids", "5,6,7,1"]),
        &["4 tokens", "limit of 3"],
    );
    // Within the limit, the same prompt runs.
    let out = gen(&[
        "--max-input-tokens",
        "4",
        "--input-ids",
        "5,6,7,1",
        "--max-new-tokens",
        "2",
    ]);
    assert!(out.status.success(), "{out:?}");

    assert_one_line_error(
        "huge max-new-tokens",
        &gen(&["--input-ids", "5,1", "--max-new-tokens", "1000000000"]),
        &["1000000000", "limit"],
    );
    let out = gen(&["--input-ids", "5,1", "--max-new-tokens", "0", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ids"], serde_json::json!([]));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let fwd = |extra: &[&str]| {
        let mut a = vec!["forward", "--model", model_dir()];
        a.extend_from_slice(extra);
        run_cli(&a, None, &[])
    };
    assert_one_line_error(
        "forward limit",
        &fwd(&[
            "--max-input-tokens",
            "2",
            "--decoder-ids",
            "0,5,6",
            "--input-ids",
            "5,1",
        ]),
        &["--decoder-ids", "limit of 2"],
    );
    assert_one_line_error(
        "forward empty dec",
        &fwd(&["--decoder-ids", "", "--input-ids", "5"]),
        &["--decoder-ids"],
    );
    assert_one_line_error(
        "top-k 0",
        &fwd(&["--decoder-ids", "0", "--input-ids", "5", "--top-k", "0"]),
        &["--top-k"],
    );
}

#[test]
fn cli_refuses_bad_environment_and_arguments() {
    assert_usage_error(
        "threads 0",
        &gen(&["--threads", "0", "--input-ids", "5"]),
        &["'0'", "--threads", "at least 1"],
    );
    assert_usage_error(
        "threads abc",
        &gen(&["--threads", "abc", "--input-ids", "5"]),
        &["'abc'", "--threads"],
    );
    assert_usage_error("unknown flag", &gen(&["--frobnicate"]), &["--frobnicate"]);
    assert_usage_error(
        "dtype",
        &gen(&["--dtype", "int3", "--input-ids", "5"]),
        &["int3", "--dtype", "f32, f16, bf16 or int8"],
    );

    let bogus = run_cli(
        &["generate", "--model", model_dir(), "--input-ids", "5"],
        None,
        &[("T5EDGE_ISA", "bogus")],
    );
    assert_one_line_error("isa bogus", &bogus, &["T5EDGE_ISA", "bogus"]);
    let pool = run_cli(
        &["generate", "--model", model_dir(), "--input-ids", "5"],
        None,
        &[("T5EDGE_POOL", "openmp")],
    );
    assert_one_line_error("pool bogus", &pool, &["T5EDGE_POOL", "openmp", "rayon"]);
    if cfg!(target_arch = "x86_64") {
        let neon = run_cli(
            &["generate", "--model", model_dir(), "--input-ids", "5"],
            None,
            &[("T5EDGE_ISA", "neon")],
        );
        assert_one_line_error("isa neon", &neon, &["T5EDGE_ISA", "neon", "lacks"]);
    }

    let file = base_checkpoint().join("config.json");
    let out = run_cli(
        &[
            "generate",
            "--model",
            file.to_str().unwrap(),
            "--input-ids",
            "5",
        ],
        None,
        &[],
    );
    assert_one_line_error("model is file", &out, &["config.json", "not a directory"]);
    let out = run_cli(
        &["inspect", "--model", "/nonexistent/t5edge/model"],
        None,
        &[],
    );
    assert_one_line_error(
        "model missing",
        &out,
        &["/nonexistent/t5edge/model", "no such directory"],
    );
    let empty = TempDir::new("empty-model");
    let out = run_cli(
        &["inspect", "--model", empty.path().to_str().unwrap()],
        None,
        &[],
    );
    assert_one_line_error("empty dir", &out, &["config.json"]);
}

#[test]
fn bench_refuses_bad_shapes() {
    let bench = |extra: &[&str]| {
        let mut a = vec![
            "bench",
            "--model",
            model_dir(),
            "--runs",
            "1",
            "--warmup",
            "0",
        ];
        a.extend_from_slice(extra);
        run_cli(&a, None, &[])
    };
    for (what, args, needles) in [
        (
            "batch 0",
            &["--batch", "0"][..],
            &["--batch", "at least 1"][..],
        ),
        (
            "batch huge",
            &["--batch", "100000"],
            &["--batch 100000", "limit"],
        ),
        (
            "len 0",
            &["--input-len", "0"],
            &["--input-len", "at least 1"],
        ),
        (
            "len huge",
            &["--input-len", "65537"],
            &["65537", "limit of 65536"],
        ),
        (
            "batch x len",
            &["--batch", "64", "--input-len", "65536"],
            &["4194304 input tokens", "limit"],
        ),
        ("len negative", &["--input-len", "-3"], &["-3"]),
        (
            "len not a number",
            &["--input-len", "many"],
            &["--input-len"],
        ),
        (
            "new tokens huge",
            &["--new-tokens", "1000000"],
            &["1000000", "limit"],
        ),
    ] {
        assert_cli_error(what, &bench(args), needles);
    }
    // --model and --preset name two different models.
    assert_usage_error(
        "preset and model",
        &run_cli(
            &[
                "bench",
                "--model",
                model_dir(),
                "--preset",
                "t5-efficient-tiny",
            ],
            None,
            &[],
        ),
        &["--preset", "--model"],
    );
    assert_one_line_error(
        "preset traversal",
        &run_cli(&["bench", "--preset", "../x"], None, &[]),
        &["../x", "preset"],
    );
    assert_one_line_error(
        "unknown preset",
        &run_cli(&["bench", "--preset", "t5-efficient-huge"], None, &[]),
        &["huge"],
    );

    // A good reshaped run: the w3 ids fold into this model's 512-id vocabulary
    // and the JSON carries the shape.
    let out = bench(&[
        "--batch",
        "3",
        "--input-len",
        "40",
        "--new-tokens",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["batch"], 3);
    assert_eq!(v["input_len"], 40);
    assert_eq!(v["input_tokens"], 120);
    assert_eq!(v["new_tokens"], 2);
    assert_eq!(v["tokens_per_run"], 6);
    // Without --input-len the workload's own ids are used, and this small
    // vocabulary cannot take them: a clear refusal, not an out-of-range read.
    assert_one_line_error(
        "w1 ids out of vocab",
        &bench(&["--workload", "w1", "--batch", "2"]),
        &["13959", "vocab_size 512"],
    );
}

#[test]
fn cli_survives_a_closed_stdout() {
    // A reader that goes away must not make the writer panic.
    use std::process::Stdio;
    let mut child = t5edge_command()
        .args(["inspect", "--model", model_dir()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // close the read end before anything is written
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn good_requests_still_work() {
    // The control for everything above: the same binary and model succeed.
    let out = gen(&["--input-ids", "5,6,1", "--max-new-tokens", "3", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = v["ids"].as_array().unwrap();
    assert!(!ids.is_empty() && ids.len() <= 3);
    let out = gen(&["hello world", "--max-new-tokens", "2"]);
    assert!(out.status.success(), "{out:?}");
    let out = run_cli(
        &[
            "generate",
            "--model",
            model_dir(),
            "--max-new-tokens",
            "2",
            "-",
        ],
        Some("the dog".as_bytes()),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
}

/// Prompts tokenized together (`Prompt::ids_of_all`, behind Python's lists
/// and the server's embeddings): the ids each prompt gets alone, and the
/// first bad prompt's error in input order, whichever kind it is.
#[test]
fn prompts_tokenized_together_fail_in_input_order() {
    use t5edge::generate::Prompt;
    let m = T5Model::load(base_checkpoint()).unwrap();
    let tok = t5edge::Tokenizer::from_dir(base_checkpoint(), m.config.vocab_size).unwrap();
    let opts = GenerateOptions::default();
    let all = |ps: &[Prompt], tok| Prompt::ids_of_all(ps, &m, tok, &opts);
    // Enough text to go to several threads (past 8 KB), ids among it.
    let mut ps: Vec<Prompt> = (0..300)
        .map(|i| Prompt::Text(format!("the {i} of a document that goes on")))
        .collect();
    ps.insert(7, Prompt::Ids(vec![5, 6, 1]));
    let alone: Vec<Vec<u32>> = ps
        .iter()
        .map(|p| p.ids(&m, Some(&tok), &opts).unwrap())
        .collect();
    assert_eq!(all(&ps, Some(&tok)).unwrap(), alone);
    let mut bad = ps.clone();
    bad[40] = Prompt::Ids(vec![5, 512, 1]);
    bad[41] = Prompt::Ids(vec![]);
    err_contains("oov first", all(&bad, Some(&tok)), &["512", "vocab_size"]);
    bad.swap(40, 41);
    err_contains(
        "empty first",
        all(&bad, Some(&tok)),
        &["input_ids is empty"],
    );
    err_contains("no tokenizer", all(&ps, None), &["tokenizer.json"]);
    // Ids alone need no tokenizer.
    let ids = [Prompt::Ids(vec![5, 1]), Prompt::Ids(vec![6, 1])];
    assert_eq!(all(&ids, None).unwrap(), vec![vec![5, 1], vec![6, 1]]);
}
