//! `t5edge bench`: the fixed workloads, timed in-process.
//!
//! W1: batch 1, the 26-token translation prompt, exactly 32 greedy tokens.
//! W2: batch 16 distinct ~60-token prompts, 32 greedy tokens each.
//! W3: the encoder alone on one 128-token input.
//! Inputs are the token ids in bench/workloads.json (genuine T5 vocabulary), so
//! any checkpoint of the family, synthetic or real, gets the same work.
//!
//! `--input-len`, `--batch` and `--new-tokens` reshape the chosen workload for
//! scaling studies (bench/scaling.py). With `--input-len N` every sequence is
//! the w3 text's ids without its `</s>`, cycled from an offset of 7 x its
//! index in the batch (so rows differ) and cut to N-1, then `</s>`; ids at or
//! above the model's vocab_size fold into [3, vocab_size), past the special
//! ids. Without it, `--batch B` takes the workload's own sequences, repeated
//! in turn until there are B.

use super::common::ModelArgs;
use crate::generate::{greedy, GenerateOptions};
use crate::{Error, Result, T5Model};
use std::time::Instant;

const WORKLOADS: &str = include_str!("../../bench/workloads.json");

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// w1 (latency), w2 (throughput) or w3 (encoder).
    #[arg(long, default_value = "w1")]
    workload: String,
    #[command(flatten)]
    weights: super::common::WeightArgs,
    /// With --dtype int8: full-precision body, int8 LM head whose every greedy
    /// pick is certified equal to the full-precision argmax.
    #[arg(long)]
    exact: bool,
    #[arg(long, default_value_t = 30)]
    runs: usize,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Encoder input of N ids per sequence (deterministic, see the module docs).
    #[arg(long, value_name = "N")]
    input_len: Option<usize>,
    /// B sequences per run.
    #[arg(long, value_name = "B")]
    batch: Option<usize>,
    /// Exactly T greedy tokens per sequence; 0 times the encoder alone.
    #[arg(long, value_name = "T")]
    new_tokens: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Relative positions let T5 take any length, but the attention scores of one
/// head grow with its square: past this a run is a mistake, not a benchmark.
const MAX_INPUT_LEN: usize = 65536;
/// Room for W2-sized batches and more, well short of exhausting memory on
/// bookkeeping alone.
const MAX_BATCH: usize = 4096;
/// Activations scale with batch x length: a bound on the product keeps a
/// typo from asking for tens of GB.
const MAX_BATCH_TOKENS: usize = 1 << 20;

/// Refuses shape flags that cannot make a sensible run; called before the
/// (possibly long) model load so a typo fails at once.
fn check_shape(a: &Args, workload_batch: usize) -> Result<()> {
    let max_new = crate::generate::Limits::default().max_new_tokens_limit;
    if let Some(t) = a.new_tokens.filter(|&t| t > max_new) {
        return Err(Error::Request(format!(
            "--new-tokens {t} is above the limit of {max_new}"
        )));
    }
    match a.batch {
        Some(0) => return Err(Error::Request("--batch must be at least 1".into())),
        Some(b) if b > MAX_BATCH => {
            return Err(Error::Request(format!(
                "--batch {b} is above the limit of {MAX_BATCH}"
            )))
        }
        _ => {}
    }
    if let Some(n) = a.input_len {
        if n == 0 {
            return Err(Error::Request("--input-len must be at least 1".into()));
        }
        if n > MAX_INPUT_LEN {
            return Err(Error::Request(format!(
                "--input-len {n} is above the limit of {MAX_INPUT_LEN}"
            )));
        }
        let b = a.batch.unwrap_or(workload_batch);
        if b * n > MAX_BATCH_TOKENS {
            return Err(Error::Request(format!(
                "--batch {b} x --input-len {n} = {} input tokens is above the limit of {MAX_BATCH_TOKENS}",
                b * n
            )));
        }
    }
    Ok(())
}

struct Workload {
    batch: Vec<Vec<u32>>,
    new_tokens: usize,
}

fn workload(name: &str) -> Result<Workload> {
    let w: serde_json::Value =
        serde_json::from_str(WORKLOADS).map_err(|e| Error::Other(e.to_string()))?;
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(match name {
        "w1" => Workload {
            batch: vec![ids(&w["w1"]["ids"])],
            new_tokens: 32,
        },
        "w2" => Workload {
            batch: w["w2"]["ids"]
                .as_array()
                .map(|a| a.iter().map(ids).collect())
                .unwrap_or_default(),
            new_tokens: 32,
        },
        "w3" => Workload {
            batch: vec![ids(&w["w3"]["ids"])],
            new_tokens: 0,
        },
        other => {
            return Err(Error::Request(format!(
                "unknown workload {other:?}: use w1, w2 or w3"
            )))
        }
    })
}

/// Applies `--input-len`, `--batch` and `--new-tokens` (checked by
/// check_shape) to `w`.
fn reshape(w: &mut Workload, a: &Args, vocab: usize) -> Result<()> {
    if let Some(t) = a.new_tokens {
        w.new_tokens = t;
    }
    let batch = a.batch.unwrap_or(w.batch.len());
    if let Some(n) = a.input_len {
        if vocab <= 3 {
            return Err(Error::Request(format!(
                "--input-len needs a vocabulary past the 3 special ids; this model has {vocab}"
            )));
        }
        let src = workload("w3")?.batch.remove(0);
        let (&eos, body) = src.split_last().unwrap_or((&1, &[]));
        let fold = |id: u32| {
            if (id as usize) < vocab {
                id
            } else {
                3 + ((id as usize - 3) % (vocab - 3)) as u32
            }
        };
        w.batch = (0..batch)
            .map(|b| {
                let mut ids: Vec<u32> = body
                    .iter()
                    .cycle()
                    .skip(7 * b)
                    .take(n - 1)
                    .map(|&i| fold(i))
                    .collect();
                ids.push(fold(eos));
                ids
            })
            .collect();
    } else if batch != w.batch.len() {
        let own = std::mem::take(&mut w.batch);
        w.batch = own.iter().cycle().take(batch).cloned().collect();
    }
    Ok(())
}

fn run_once(model: &T5Model, w: &Workload, exact: bool) -> Result<usize> {
    let refs: Vec<&[u32]> = w.batch.iter().map(|s| &s[..]).collect();
    if w.new_tokens == 0 {
        let out = model.encode_batch(&refs)?;
        return Ok(out.iter().map(|o| o.len()).sum::<usize>() / model.config.d_model);
    }
    let mut opts = GenerateOptions::default()
        .max_new_tokens(w.new_tokens)
        .min_new_tokens(w.new_tokens)
        .exact(exact);
    // The length was bounded by reshape (MAX_INPUT_LEN): a long input is the
    // point of the run here, not a request to refuse.
    opts.limits.max_input_tokens = opts.limits.max_input_tokens.max(MAX_INPUT_LEN);
    Ok(greedy(model, &refs, &opts)?.iter().map(|o| o.len()).sum())
}

/// Peak resident memory of this process in MB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn run(a: Args) -> Result<()> {
    if a.runs == 0 {
        return Err(Error::Request("--runs must be at least 1".into()));
    }
    let mut w = workload(&a.workload)?;
    check_shape(&a, w.batch.len())?;
    let t0 = Instant::now();
    let (model, dir) = a.model.load(a.weights.spec(a.exact))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    // What runs, not what was asked: a quantized directory brings its own format.
    let dtype = match (model.body_format().name(), a.exact) {
        (f, true) => format!("{f} body, certified int8 head"),
        (f, false) => f.to_string(),
    };
    reshape(&mut w, &a, model.config.vocab_size)?;
    for b in &w.batch {
        if let Some(&bad) = b.iter().find(|&&i| i as usize >= model.config.vocab_size) {
            return Err(Error::Request(format!(
                "workload id {bad} does not fit vocab_size {}",
                model.config.vocab_size
            )));
        }
    }
    for _ in 0..a.warmup {
        run_once(&model, &w, a.exact)?;
    }
    let mut times = Vec::with_capacity(a.runs);
    let mut tokens = 0;
    for _ in 0..a.runs {
        let t = Instant::now();
        tokens = run_once(&model, &w, a.exact)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let (median, p90, min) = (pct(0.5), pct(0.9), times[0]);
    let tokens_per_s = tokens as f64 / (median / 1e3);
    let threads = t5edge_kernels::pool::current_threads();
    let pool = t5edge_kernels::pool::current_backend().name();
    let isa = t5edge_kernels::dispatch::active();
    let rss = peak_rss_mb();
    let input_len = w.batch.iter().map(Vec::len).max().unwrap_or(0);
    let input_tokens: usize = w.batch.iter().map(Vec::len).sum();
    if a.json {
        out!(
            "{}",
            serde_json::json!({
                "workload": a.workload, "dtype": dtype, "model": dir, "threads": threads, "pool": pool, "isa": isa.name(),
                "runs": a.runs, "warmup": a.warmup, "median_ms": median, "p90_ms": p90, "min_ms": min,
                "tokens_per_s": tokens_per_s, "tokens_per_run": tokens, "load_ms": load_ms, "peak_rss_mb": rss,
                "preset": a.model.preset, "batch": w.batch.len(), "input_len": input_len,
                "input_tokens": input_tokens, "new_tokens": w.new_tokens,
            })
        )?;
    } else {
        out!(
            "workload   {} ({} sequences of up to {input_len} ids, {} new tokens each; {} tokens per run)",
            a.workload,
            w.batch.len(),
            w.new_tokens,
            tokens
        )?;
        out!(
            "model      {} ({}, {} threads ({pool}), {isa})",
            dir.display(),
            dtype,
            threads
        )?;
        out!(
            "latency    median {median:.3} ms   p90 {p90:.3} ms   min {min:.3} ms   ({} runs)",
            a.runs
        )?;
        out!("throughput {tokens_per_s:.1} tokens/s")?;
        out!("load       {load_ms:.1} ms")?;
        out!("peak rss   {rss:.1} MB")?;
    }
    Ok(())
}
