//! `t5edge serve` end to end: the built binary on a free loopback port (port
//! 0; the bound address is read from its first line), a tiny synthetic model,
//! every endpoint and every documented error, streaming, a client that goes
//! away, a full queue, a timeout, an injected panic and SIGTERM's drain; every
//! answer compared with the command line's for the same request.

mod common;

use common::cli::t5edge_command;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A small synthetic checkpoint with a tokenizer (words, not padding: the
/// `<pad>` row is zero).
fn model_dir() -> tempfile::TempDir {
    model_dir_with_vocab(2000)
}

/// The tests that need a request to outlast a few round trips use T5's
/// vocabulary size: the LM head then makes a step take a fraction of a
/// millisecond even on a fast machine, so 8192 tokens take seconds.
fn slow_model_dir() -> tempfile::TempDir {
    model_dir_with_vocab(32128)
}

fn model_dir_with_vocab(vocab: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
    let cfg = t5edge::synth::with_overrides(
        &cfg,
        &[
            "d_model=64".into(),
            "d_ff=128".into(),
            "num_heads=2".into(),
            "d_kv=16".into(),
            format!("vocab_size={vocab}"),
        ],
    )
    .unwrap();
    let opts = t5edge::synth::SynthOptions {
        seed: 3,
        norm_jitter: 0.2,
        zero_pad_row: true,
        ..Default::default()
    };
    t5edge::synth::write_checkpoint(dir.path(), &cfg, &opts, false).unwrap();
    dir
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = t5edge_command()
            .args(["serve", "--port", "0", "--threads", "2", "--model"])
            .arg(model)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, base: addr }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a body; returns the status and the JSON answer.
    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let r = ureq::post(&self.url(path))
            .set("content-type", "application/json")
            .send_string(body);
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&self.url(path)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// A line of /metrics, e.g. `t5edge_queue_depth`.
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no metric {name}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line's `--json` answer.
fn cli_json(args: &[&str], model: &Path) -> Value {
    let out = t5edge_command()
        .args(args)
        .arg("--model")
        .arg(model)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Reads server-sent events until the stream ends: (event name, data) pairs.
fn sse_events(reader: impl Read) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut name = "message".to_string();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            events.push((name.clone(), serde_json::from_str(d).unwrap()));
            name = "message".into();
        }
    }
    events
}

#[test]
fn every_endpoint_answers_as_the_command_line_does() {
    let dir = model_dir();
    let m = dir.path();
    let s = Server::start(m, &[]);
    let (status, health) = s.get("/health");
    assert_eq!(status, 200);
    assert!(health.contains("\"ok\""), "{health}");

    // Generation: greedy, beam search and sampling, as `generate --json`.
    let prompt = "translate English to German: the house is small";
    for (body, flags) in [
        (
            json!({"text": prompt, "max_new_tokens": 12}),
            vec!["--max-new-tokens", "12"],
        ),
        (
            json!({"input_ids": [37, 12, 99, 1], "num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 6}),
            vec![
                "--num-beams",
                "3",
                "--num-return-sequences",
                "2",
                "--max-new-tokens",
                "6",
                "--input-ids",
                "37,12,99,1",
            ],
        ),
        (
            json!({"text": prompt, "do_sample": true, "seed": 5, "top_k": 0, "temperature": 1.5, "max_new_tokens": 10}),
            vec![
                "--do-sample",
                "--seed",
                "5",
                "--top-k",
                "0",
                "--temperature",
                "1.5",
                "--max-new-tokens",
                "10",
            ],
        ),
    ] {
        let (status, got) = s.post("/v1/generate", &body.to_string());
        assert_eq!(status, 200, "{got}");
        let mut args = vec!["generate"];
        args.extend(flags.iter());
        if body.get("text").is_some() {
            args.push(prompt);
        }
        assert_eq!(got, cli_json(&args, m), "{body}");
    }

    // Streaming: the pieces add up to the text, the last event has the ids.
    let body = json!({"text": prompt, "max_new_tokens": 12, "stream": true});
    let r = ureq::post(&s.url("/v1/generate"))
        .send_string(&body.to_string())
        .unwrap();
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = sse_events(r.into_reader());
    let (last, tokens) = events.split_last().unwrap();
    assert_eq!(last.0, "done");
    let want = cli_json(&["generate", "--max-new-tokens", "12", prompt], m);
    assert_eq!(last.1, want);
    let ids: Vec<Value> = tokens.iter().map(|(_, d)| d["id"].clone()).collect();
    assert_eq!(Value::Array(ids), want["ids"]);
    let text: String = tokens
        .iter()
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert!(want["text"].as_str().unwrap().starts_with(&text));
    assert!(!text.is_empty());

    // Embeddings in OpenAI's shape, each as `embed --normalize`.
    let (status, e) = s.post(
        "/v1/embeddings",
        r#"{"input": ["the house", "a dog"], "model": "x"}"#,
    );
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["object"], "list");
    for (i, t) in ["the house", "a dog"].iter().enumerate() {
        assert_eq!(e["data"][i]["index"], i);
        let cli = cli_json(&["embed", "--normalize", t], m);
        assert_eq!(e["data"][i]["embedding"], cli["embedding"], "{t}");
    }
    assert!(e["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    // Encoder states and scores, as `encode --json` and `score --json`.
    let (status, enc) = s.post("/v1/encode", r#"{"input_ids": [37, 12, 1]}"#);
    assert_eq!(status, 200);
    assert_eq!(enc, cli_json(&["encode", "--input-ids", "37,12,1"], m));
    let (status, sc) = s.post("/v1/score", r#"{"source": "the house", "target": "a dog"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        sc,
        cli_json(&["score", "--target", "a dog", "the house"], m)
    );

    // Reranking, as `rerank --json` (two words of the synthetic vocabulary as
    // the labels: it has no `▁true`).
    let (status, rr) = s.post(
        "/v1/rerank",
        r#"{"query": "quick fox", "documents": ["the lazy dog", "a quick brown fox", "hello world"], "true_token": "\u2581the", "false_token": "\u2581of"}"#,
    );
    assert_eq!(status, 200, "{rr}");
    assert_eq!(
        rr,
        cli_json(
            &[
                "rerank",
                "--query",
                "quick fox",
                "--true-token",
                "\u{2581}the",
                "--false-token",
                "\u{2581}of",
                "the lazy dog",
                "a quick brown fox",
                "hello world",
            ],
            m
        )
    );
    let (status, bad) = s.post(
        "/v1/rerank",
        r#"{"query": "q", "documents": ["a"], "true_token": "nope"}"#,
    );
    assert_eq!(status, 400, "{bad}");

    let (_, metrics) = s.get("/metrics");
    for needle in [
        "t5edge_requests_total{endpoint=\"generate\",outcome=\"ok\"} 4",
        "t5edge_queue_depth 0",
        "t5edge_batch_size_bucket",
        "t5edge_request_duration_seconds_bucket{endpoint=\"embeddings\"",
        "t5edge_tokens_per_second",
        "t5edge_prefill_stall_seconds_count",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
}

#[test]
fn bad_requests_get_their_status_and_the_library_message() {
    let dir = model_dir();
    let s = Server::start(
        dir.path(),
        &["--max-body-bytes", "2000", "--max-input-tokens", "64"],
    );
    let cases: [(&str, &str, u16, &str); 10] = [
        (
            "/v1/generate",
            r#"{"text": "a",, }"#,
            400,
            "invalid JSON (column",
        ),
        (
            "/v1/generate",
            r#"{"text": "a", "num_beam": 2}"#,
            400,
            "unknown field `num_beam`",
        ),
        (
            "/v1/generate",
            r#"{"text": "a", "top_p": 2.0}"#,
            400,
            "top_p 2 must be in (0, 1]",
        ),
        (
            "/v1/generate",
            r#"{"input_ids": [1, 99999]}"#,
            400,
            "not below vocab_size",
        ),
        (
            "/v1/generate",
            r#"{"input_ids": [1], "stream": "yes"}"#,
            400,
            "stream must be true or false",
        ),
        ("/v1/embeddings", r#"{"input": []}"#, 400, "empty list"),
        (
            "/v1/score",
            r#"{"source": "a"}"#,
            400,
            "neither target nor target_ids",
        ),
        (
            "/v1/encode",
            r#"{"text": "a", "extra": 1}"#,
            400,
            "unknown field `extra`",
        ),
        (
            "/v1/encode",
            &format!(r#"{{"input_ids": [{}1]}}"#, "5,".repeat(100)),
            400,
            "above the limit of 64",
        ),
        ("/v1/nothing", "{}", 404, "no such endpoint"),
    ];
    for (path, body, status, needle) in cases {
        let (got, v) = s.post(path, body);
        assert_eq!(got, status, "{path} {body}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{path} {body}: {msg}");
    }
    let big = format!(r#"{{"text": "{}"}}"#, "a ".repeat(2000));
    let (got, v) = s.post("/v1/generate", &big);
    assert_eq!(got, 413, "{v}");
    // The server still serves.
    assert_eq!(s.post("/v1/generate", r#"{"input_ids": [5, 1]}"#).0, 200);
    let m = s.metric("t5edge_requests_total{endpoint=\"generate\",outcome=\"bad_request\"}");
    assert_eq!(m, 5.0);
    assert_eq!(
        s.metric("t5edge_requests_total{endpoint=\"generate\",outcome=\"too_large\"}"),
        1.0
    );
}

/// A request that runs for many steps: EOS is suppressed.
fn long(tokens: usize, stream: bool) -> String {
    json!({"input_ids": [37, 12, 1], "max_new_tokens": tokens, "min_new_tokens": tokens, "stream": stream})
        .to_string()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_full_queue_gets_429_and_a_gone_client_frees_its_slot() {
    let dir = slow_model_dir();
    let s = Server::start(dir.path(), &["--max-batch", "1", "--max-queue", "1"]);
    // A streaming request holds the only slot.
    let blocker = ureq::post(&s.url("/v1/generate"))
        .send_string(&long(8192, true))
        .unwrap();
    let mut blocker = BufReader::new(blocker.into_reader());
    let mut first = String::new();
    blocker.read_line(&mut first).unwrap();
    assert!(first.starts_with("data: "), "{first}");
    // A second one waits in the queue...
    let url = s.url("/v1/generate");
    let queued = std::thread::spawn(move || {
        let r = ureq::post(&url).send_string(r#"{"input_ids": [5, 1], "max_new_tokens": 3}"#);
        r.map(|r| r.status()).unwrap_or(0)
    });
    wait_for("the queued request", || {
        s.metric("t5edge_queue_depth") == 1.0
    });
    // ...and a third finds the queue full.
    match ureq::post(&s.url("/v1/generate")).send_string(r#"{"input_ids": [5, 1]}"#) {
        Err(ureq::Error::Status(429, r)) => assert_eq!(r.header("retry-after"), Some("1")),
        other => panic!("expected 429, got {other:?}"),
    }
    // The blocker's client goes away: its slot frees at the next step and
    // the queued request is answered long before 8192 tokens.
    drop(blocker);
    assert_eq!(queued.join().unwrap(), 200);
    wait_for("the cancellation", || {
        s.metric("t5edge_requests_total{endpoint=\"generate\",outcome=\"cancelled\"}") == 1.0
    });
    assert!(s.metric("t5edge_generated_tokens_total") < 8192.0);
}

/// A client that sends a non-streaming request and goes away: nothing is
/// sent to it per token (the scheduler checks its channel instead), and its
/// row still leaves at the next step.
#[test]
fn a_gone_non_streaming_client_frees_its_slot() {
    use std::io::Write;
    let dir = slow_model_dir();
    let s = Server::start(dir.path(), &["--max-batch", "1"]);
    let host = s.base.trim_start_matches("http://").to_string();
    let body = long(8192, false);
    let mut conn = std::net::TcpStream::connect(&host).unwrap();
    write!(
        conn,
        "POST /v1/generate HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    wait_for("the row to run", || {
        s.metric("t5edge_running_sequences") == 1.0
    });
    drop(conn);
    wait_for("the cancellation", || {
        s.metric("t5edge_requests_total{endpoint=\"generate\",outcome=\"cancelled\"}") == 1.0
    });
    assert!(s.metric("t5edge_generated_tokens_total") < 8192.0);
    let (status, _) = s.post(
        "/v1/generate",
        r#"{"input_ids": [5, 1], "max_new_tokens": 3}"#,
    );
    assert_eq!(status, 200);
}

#[test]
fn timeouts_and_panics_fail_only_their_request() {
    let dir = slow_model_dir();
    let s = Server::start(dir.path(), &["--request-timeout", "0.3", "--inject-faults"]);
    let (status, v) = s.post("/v1/generate", &long(8192, false));
    assert_eq!(status, 504, "{v}");
    assert!(v["error"].as_str().unwrap().contains("timed out"));
    let r = ureq::post(&s.url("/v1/generate"))
        .set("x-t5edge-fault", "panic-prefill")
        .send_string(r#"{"input_ids": [5, 1]}"#);
    match r {
        Err(ureq::Error::Status(500, r)) => {
            assert!(r.into_string().unwrap().contains("panicked"))
        }
        other => panic!("expected 500, got {other:?}"),
    }
    let (status, _) = s.post(
        "/v1/generate",
        r#"{"input_ids": [5, 1], "max_new_tokens": 4}"#,
    );
    assert_eq!(status, 200, "the scheduler survives");
}

#[cfg(unix)]
#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    let dir = model_dir();
    let mut s = Server::start(dir.path(), &[]);
    let r = ureq::post(&s.url("/v1/generate"))
        .send_string(&long(600, true))
        .unwrap();
    let mut reader = BufReader::new(r.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let pid = s.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    // The stream runs to its end...
    let events = sse_events(reader);
    let last = events.last().unwrap();
    assert_eq!(last.0, "done", "{last:?}");
    assert_eq!(last.1["ids"].as_array().unwrap().len(), 600);
    // ...then the process exits cleanly.
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Requests of the encoder endpoints compute on at most `--compute-slots`
/// blocking threads at once, the others waiting their turn: without the
/// bound a burst of 64 `/v1/embeddings` requests ran on 33-39 threads on 2
/// cores. Here 16 simultaneous scores of a long target (each one tens of
/// milliseconds of LM head) against 2 slots.
#[cfg(target_os = "linux")]
#[test]
fn a_burst_of_encoder_requests_computes_in_its_slots() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = slow_model_dir();
    let s = Server::start(dir.path(), &["--compute-slots", "2"]);
    let status_file = format!("/proc/{}/status", s.child.id());
    let threads = || -> usize {
        let st = std::fs::read_to_string(&status_file).unwrap();
        st.lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let body =
        json!({"source": "the house", "target": "a dog and the house ".repeat(60)}).to_string();
    let (status, v) = s.post("/v1/score", &body);
    assert_eq!(status, 200, "{v}");
    let before = threads();
    let (done, most) = (AtomicBool::new(false), AtomicUsize::new(0));
    std::thread::scope(|sc| {
        sc.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(threads(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let clients: Vec<_> = (0..16)
            .map(|_| sc.spawn(|| s.post("/v1/score", &body)))
            .collect();
        for c in clients {
            let (status, v) = c.join().unwrap();
            assert_eq!(status, 200, "{v}");
        }
        done.store(true, Ordering::Relaxed);
    });
    let most = most.load(Ordering::Relaxed);
    // The first request left a blocking thread idle; a slot freed inside
    // its closure may see the next computation start on a new thread
    // before the old one is idle again, so up to twice the slots more
    // (unbounded, the same burst ran on 15 more).
    assert!(
        most <= before + 4,
        "{most} threads during the burst, {before} before it, with 2 compute slots"
    );
}
