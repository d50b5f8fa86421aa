//! Times monoT5-style reranking: PAIRS query/document inputs of TOKENS
//! tokens each scored by one `t5edge::rerank::relevance` call, which is what
//! `t5edge rerank` runs once it has tokenized the templated documents
//! (tokenizing 100 documents takes about a millisecond). The ids are
//! deterministic stand-ins: the cost depends only on the lengths.
//!
//! `cargo run --release --example rerank_time -- MODEL_DIR [f32|int8] [PAIRS] [TOKENS] [RUNS]`
//! (defaults: f32, 100, 200, 3). docs/SCORING.md has the figures.

use std::time::Instant;
use t5edge::model::{FormatPolicy, WeightFormat};
use t5edge::rerank::relevance;
use t5edge::T5Model;

fn main() -> t5edge::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        t5edge::Error::Other(
            "usage: rerank_time MODEL_DIR [f32|int8] [PAIRS] [TOKENS] [RUNS]".into(),
        )
    };
    let dir = args.first().ok_or_else(usage)?;
    let dtype = args.get(1).map_or("f32", String::as_str);
    let num = |i: usize, d: usize| -> t5edge::Result<usize> {
        args.get(i)
            .map_or(Ok(d), |s| s.parse().map_err(|_| usage()))
    };
    let (pairs, tokens, runs) = (num(2, 100)?, num(3, 200)?, num(4, 3)?);
    let t0 = Instant::now();
    let mut model = T5Model::load(std::path::Path::new(dir))?;
    let format = WeightFormat::parse(dtype).ok_or_else(usage)?;
    if format != WeightFormat::F32 {
        model.convert(FormatPolicy::for_dtype(format))?;
    }
    let load = t0.elapsed().as_secs_f64();
    let v = model.config.vocab_size as u64;
    let inputs: Vec<Vec<u32>> = (0..pairs as u64)
        .map(|p| {
            let mut ids: Vec<u32> = (0..tokens as u64 - 1)
                .map(|i| (3 + (i * 7919 + p * 104_729) % (v.min(32000) - 3)) as u32)
                .collect();
            ids.push(1);
            ids
        })
        .collect();
    let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let (t, f) = if v > 6136 { (1176, 6136) } else { (3, 4) };
    let mut times = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let p = relevance(&model, &refs, t, f)?;
        times.push(t0.elapsed().as_secs_f64());
        assert_eq!(p.len(), pairs);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{dir} {dtype}: {pairs} pairs x {tokens} tokens: median {median:.3} s of {runs} (min {:.3}, max {:.3}), {:.0} pairs/s, {:.0} tokens/s; load {load:.2} s",
        times[0],
        times[times.len() - 1],
        pairs as f64 / median,
        (pairs * tokens) as f64 / median,
    );
    Ok(())
}
