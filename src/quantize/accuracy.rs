//! How far a quantized model is from its source, on a few fixed prompts:
//! teacher-forced logit error along the source's greedy path, and how many
//! greedy tokens agree before the first divergence (an encoder-only
//! checkpoint: the error of its encoder states).

use crate::generate::{greedy, GenerateOptions};
use crate::{Result, T5Model};

const WORKLOADS: &str = include_str!("../../bench/workloads.json");

/// The built-in prompts: the benchmark's W1 input and three of W2's (ids from
/// the genuine T5 vocabulary, folded into smaller vocabularies).
pub fn builtin_prompts(vocab: usize) -> Vec<Vec<u32>> {
    let w: serde_json::Value = serde_json::from_str(WORKLOADS).unwrap_or_default();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| (x % vocab as u64) as u32)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = vec![ids(&w["w1"]["ids"])];
    for i in 0..3 {
        out.push(ids(&w["w2"]["ids"][i]));
    }
    out.retain(|p| !p.is_empty());
    out
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Accuracy {
    /// Largest `max|Δlogit| / max|logit|` over all positions (encoder-only:
    /// the same of the encoder's output rows).
    pub max_rel_err: f64,
    /// Mean of that ratio over positions.
    pub mean_rel_err: f64,
    /// Greedy tokens equal to the source's before the first difference, summed over prompts.
    pub greedy_agree: usize,
    pub greedy_total: usize,
    pub prompts: usize,
}

/// Compares `candidate` against `reference` over `steps` greedy tokens per prompt.
pub fn compare(
    reference: &T5Model,
    candidate: &T5Model,
    prompts: &[Vec<u32>],
    steps: usize,
) -> Result<Accuracy> {
    let v = reference.config.vocab_size;
    let opts = GenerateOptions::default()
        .max_new_tokens(steps)
        .min_new_tokens(steps);
    let mut acc = Accuracy {
        prompts: prompts.len(),
        ..Default::default()
    };
    let mut rows = 0usize;
    if reference.is_encoder_only() {
        // No decoder to compare: the encoder's last hidden states, row by row.
        let d = reference.config.d_model;
        for p in prompts {
            let (er, ec) = (reference.encode(p)?, candidate.encode(p)?);
            for (a, b) in er.chunks_exact(d).zip(ec.chunks_exact(d)) {
                let rel = rel_err(a, b);
                acc.max_rel_err = acc.max_rel_err.max(rel);
                acc.mean_rel_err += rel;
                rows += 1;
            }
        }
        acc.mean_rel_err /= rows.max(1) as f64;
        return Ok(acc);
    }
    for p in prompts {
        let gold = greedy(reference, &[p], &opts)?.remove(0);
        let mine = greedy(candidate, &[p], &opts)?.remove(0);
        acc.greedy_agree += gold.iter().zip(&mine).take_while(|(a, b)| a == b).count();
        acc.greedy_total += gold.len();
        let mut dec = vec![reference.config.decoder_start_token_id];
        dec.extend_from_slice(&gold[..gold.len().saturating_sub(1)]);
        let (lr, lc) = (reference.forward(p, &dec)?, candidate.forward(p, &dec)?);
        for (a, b) in lr.chunks_exact(v).zip(lc.chunks_exact(v)) {
            let rel = rel_err(a, b);
            acc.max_rel_err = acc.max_rel_err.max(rel);
            acc.mean_rel_err += rel;
            rows += 1;
        }
    }
    acc.mean_rel_err /= rows.max(1) as f64;
    Ok(acc)
}

/// `max|a - b| / max|a|` of one row.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) as f64;
    d / scale.max(1e-30)
}
