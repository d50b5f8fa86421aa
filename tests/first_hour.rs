//! What a new user meets in the first hour: the first run shows text and
//! says where real checkpoints come from, argument mistakes get the parser's
//! full message, and input that used to be accepted silently is refused.

mod support;

use support::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn first_run_shows_words_and_where_real_models_come_from() {
    let o = run_cli(
        &[
            "generate",
            "translate English to German: The quick brown fox jumps over the lazy dog.",
        ],
        None,
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    assert!(letters >= 20, "the first run shows words: {text:?}");
    let err = stderr(&o);
    assert!(
        err.contains("gibberish"),
        "says the text is gibberish: {err}"
    );
    assert!(
        err.contains("huggingface-cli download") && err.contains("--model"),
        "says how to get a real checkpoint: {err}"
    );
}

#[test]
fn argument_mistakes_keep_the_parsers_message() {
    let typo = run_cli(&["generate", "--modle", "x"], None, &[]);
    assert_usage_error("typo", &typo, &["--modle"]);
    assert!(
        stderr(&typo).contains("tip: a similar argument exists: '--model'"),
        "{}",
        stderr(&typo)
    );
    let missing = run_cli(&["forward", "--input-ids", "5"], None, &[]);
    assert_usage_error(
        "missing",
        &missing,
        &["the following required arguments were not provided"],
    );
    assert!(
        stderr(&missing).contains("--decoder-ids"),
        "{}",
        stderr(&missing)
    );

    let bare = run_cli(&[], None, &[]);
    assert!(bare.status.success(), "bare t5edge: {}", stderr(&bare));
    assert!(
        stdout(&bare).contains("Usage: t5edge") && stdout(&bare).contains("generate"),
        "bare t5edge prints help: {}",
        stdout(&bare)
    );

    // Options a command does not take are not offered in its help.
    let help = run_cli(&["inspect", "--help"], None, &[]);
    assert!(help.status.success());
    assert!(
        !stdout(&help).contains("--int8-ffn-out"),
        "inspect --help lists --int8-ffn-out"
    );
    // embed takes the weight options (converting at load), and their rules.
    let model = base_checkpoint().to_str().unwrap();
    assert_one_line_error(
        "embed --int8-ffn-out alone",
        &run_cli(
            &["embed", "--model", model, "--int8-ffn-out", "hi"],
            None,
            &[],
        ),
        &["--int8-ffn-out goes with --dtype int8"],
    );
}

#[test]
fn input_that_was_accepted_silently_is_refused() {
    let model = base_checkpoint().to_str().unwrap();
    let gen = |extra: &[&str]| {
        let mut a = vec!["generate", "--model", model];
        a.extend_from_slice(extra);
        run_cli(&a, None, &[])
    };
    assert_one_line_error(
        "empty id entry",
        &gen(&["--input-ids", "1,,2"]),
        &["--input-ids", "entry 2", "empty"],
    );
    assert_one_line_error(
        "trailing comma",
        &gen(&["--input-ids", "1,2,"]),
        &["--input-ids", "entry 3", "empty"],
    );
    let dir = TempDir::new("first-hour-jsonl");
    let jsonl = dir.path().join("in.jsonl");
    std::fs::write(&jsonl, "{\"input_ids\": [5, 1]}\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let (jsonl, out) = (jsonl.to_str().unwrap(), out.to_str().unwrap());
    assert_usage_error(
        "--input with TEXT",
        &gen(&["--input", jsonl, "--output", out, "hello"]),
        &["--input"],
    );
    assert_usage_error(
        "--input with --json",
        &gen(&["--input", jsonl, "--output", out, "--json"]),
        &["--input", "--json"],
    );
    assert_usage_error(
        "--input with --input-ids",
        &gen(&["--input", jsonl, "--output", out, "--input-ids", "5"]),
        &["--input"],
    );

    let synth_out = dir.path().join("synth");
    assert_one_line_error(
        "synth unknown field",
        &run_cli(
            &[
                "synth",
                "--set",
                "nonsense=3",
                "--out",
                synth_out.to_str().unwrap(),
            ],
            None,
            &[],
        ),
        &["nonsense", "not a T5 config field"],
    );
    assert!(
        !synth_out.exists(),
        "nothing written for a refused override"
    );

    let q = dir.path().join("q");
    let q = q.to_str().unwrap();
    assert_usage_error(
        "quantize int4",
        &run_cli(
            &["quantize", "--model", model, "--dtype", "int4", "--out", q],
            None,
            &[],
        ),
        &["int4", "quantize writes int8 or f16"],
    );
    assert_usage_error(
        "quantize f32",
        &run_cli(
            &["quantize", "--model", model, "--dtype", "f32", "--out", q],
            None,
            &[],
        ),
        &["quantize writes int8 or f16"],
    );
    let line = assert_one_line_error(
        "group size 3",
        &run_cli(
            &[
                "quantize",
                "--model",
                model,
                "--dtype",
                "int8",
                "--group-size",
                "3",
                "--out",
                q,
            ],
            None,
            &[],
        ),
        &["--group-size", "3", "multiple of 4"],
    );
    assert!(
        !line.contains("model.safetensors"),
        "a bad group size is not the source file's fault: {line}"
    );
}

#[test]
fn jsonl_errors_name_the_files_line() {
    let model = base_checkpoint().to_str().unwrap();
    let dir = TempDir::new("first-hour-lines");
    let input = dir.path().join("prompts.jsonl");
    std::fs::write(
        &input,
        "{\"input_ids\": [5, 6, 1]}\n\n{\"input_ids\": [5,, 1]}\n{\"input_ids\": [7, 1], \"num_beam\": 2}\n",
    )
    .unwrap();
    let output = dir.path().join("results.jsonl");
    let o = run_cli(
        &[
            "generate",
            "--model",
            model,
            "--max-new-tokens",
            "3",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        None,
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "one result per input line, blank included");
    assert!(lines[0]["ids"].is_array(), "{}", lines[0]);
    let err = |i: usize| lines[i]["error"].as_str().unwrap_or("").to_string();
    assert!(err(1).contains("prompts.jsonl line 2") && err(1).contains("blank line"));
    let e = err(2);
    assert!(
        e.contains("prompts.jsonl line 3") && e.contains("column 18"),
        "{e}"
    );
    assert!(!e.contains("line 1 column"), "serde's own line: {e}");
    assert_eq!(e.matches("invalid request").count(), 1, "{e}");
    let e = err(3);
    assert!(
        e.contains("prompts.jsonl line 4") && e.contains("unknown field `num_beam`"),
        "{e}"
    );
}

#[test]
fn a_prompt_read_from_a_terminal_gets_a_hint() {
    // `script` gives the command a terminal; its own stdin is empty, so the
    // prompt read there ends at once.
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: no `script` (util-linux) to give t5edge a terminal");
        return;
    }
    let cmd = format!(
        "{} generate --model {} --max-new-tokens 2",
        env!("CARGO_BIN_EXE_t5edge"),
        base_checkpoint().display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        all.contains("reading the prompt from the terminal") && all.contains("Ctrl-D"),
        "{all}"
    );
    // Piped stdin is not a terminal: no hint.
    let piped = run_cli(
        &[
            "generate",
            "--model",
            base_checkpoint().to_str().unwrap(),
            "--max-new-tokens",
            "2",
        ],
        Some(b"hello"),
        &[],
    );
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(!stderr(&piped).contains("reading the prompt"));
}
