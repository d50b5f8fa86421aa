//! `t5edge bench`: the fixed workloads, timed in-process.
//!
//! W1: batch 1, the 26-token translation prompt, exactly 32 greedy tokens.
//! W2: batch 16 distinct ~60-token prompts, 32 greedy tokens each.
//! W3: the encoder alone on one 128-token input.
//! Inputs are the token ids in bench/workloads.json (genuine T5 vocabulary), so
//! any checkpoint of the family, synthetic or real, gets the same work.

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
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// With --dtype int8: full-precision body, int8 LM head whose every greedy
    /// pick is certified equal to the full-precision argmax.
    #[arg(long)]
    exact: bool,
    #[arg(long, default_value_t = 30)]
    runs: usize,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
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

fn run_once(model: &T5Model, w: &Workload, exact: bool) -> Result<usize> {
    let refs: Vec<&[u32]> = w.batch.iter().map(|s| &s[..]).collect();
    if w.new_tokens == 0 {
        let out = model.encode_batch(&refs)?;
        return Ok(out.iter().map(|o| o.len()).sum::<usize>() / model.config.d_model);
    }
    let opts = GenerateOptions::default()
        .max_new_tokens(w.new_tokens)
        .min_new_tokens(w.new_tokens)
        .exact(exact);
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
    let w = workload(&a.workload)?;
    let t0 = Instant::now();
    let (model, dir) = a.model.load(&a.dtype, a.exact)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
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
    if a.json {
        out!(
            "{}",
            serde_json::json!({
                "workload": a.workload, "dtype": a.dtype, "model": dir, "threads": threads, "pool": pool, "isa": isa.name(),
                "runs": a.runs, "warmup": a.warmup, "median_ms": median, "p90_ms": p90, "min_ms": min,
                "tokens_per_s": tokens_per_s, "tokens_per_run": tokens, "load_ms": load_ms, "peak_rss_mb": rss,
            })
        )?;
    } else {
        out!(
            "workload   {} ({} sequences, {} tokens per run)",
            a.workload,
            w.batch.len(),
            tokens
        )?;
        out!(
            "model      {} ({}, {} threads ({pool}), {isa})",
            dir.display(),
            a.dtype,
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
