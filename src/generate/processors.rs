//! Logits processors and warpers, each a port of the HF `transformers`
//! class of the same name (`generation/logits_process.py`, 4.57).
//!
//! Every function edits one row of scores (`[vocab]`) in place. `seq` is the
//! decoder input so far, *including* the decoder start token, exactly what HF
//! passes as `input_ids` to its processors in encoder-decoder generation.

use super::GenerateOptions;
use std::collections::HashMap;

/// `RepetitionPenaltyLogitsProcessor`: every id present in `seq` has its score
/// multiplied by `penalty` when negative and divided by it otherwise.
pub fn repetition_penalty(scores: &mut [f32], seq: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; scores.len()];
    for &t in seq {
        let t = t as usize;
        if t < scores.len() && !seen[t] {
            seen[t] = true;
            let s = scores[t];
            scores[t] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
}

/// `NoRepeatNGramLogitsProcessor`: bans every token that would complete an
/// n-gram of size `n` already present in `seq`.
pub fn no_repeat_ngram(scores: &mut [f32], seq: &[u32], n: usize) {
    if n == 0 || seq.len() + 1 < n {
        return;
    }
    if n == 1 {
        for &t in seq {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        return;
    }
    let prefix = &seq[seq.len() + 1 - n..];
    let mut banned: HashMap<u32, ()> = HashMap::new();
    for w in seq.windows(n) {
        if &w[..n - 1] == prefix {
            banned.insert(w[n - 1], ());
        }
    }
    for t in banned.keys() {
        if let Some(s) = scores.get_mut(*t as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// `MinNewTokensLengthLogitsProcessor`: EOS gets `-inf` while fewer than
/// `min_new_tokens` tokens have been generated.
pub fn min_new_tokens(scores: &mut [f32], generated: usize, min_new: usize, eos: u32) {
    if generated < min_new {
        if let Some(s) = scores.get_mut(eos as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// `TemperatureLogitsWarper`: divides every score by `temperature`.
pub fn temperature(scores: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        scores.iter_mut().for_each(|s| *s /= temperature);
    }
}

/// `TopKLogitsWarper`: scores below the k-th largest become `-inf` (ties with
/// the k-th are kept, as HF's `scores < kth` comparison keeps them).
pub fn top_k(scores: &mut [f32], k: usize, min_tokens_to_keep: usize) {
    if k == 0 {
        return;
    }
    let k = k.max(min_tokens_to_keep).min(scores.len());
    let mut sorted: Vec<f32> = scores.to_vec();
    // The k-th largest by a partial sort; NaN never survives.
    let kth = {
        let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        *kth
    };
    for s in scores.iter_mut() {
        if *s < kth {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// `TopPLogitsWarper`: keeps the smallest set of the most likely tokens whose
/// probability mass exceeds `top_p` (at least `min_tokens_to_keep`); others
/// become `-inf`. Ported step by step: ascending stable sort, softmax, cumulative
/// sum, remove where `cumsum <= 1 - top_p`.
pub fn top_p(scores: &mut [f32], p: f32, min_tokens_to_keep: usize) {
    if p >= 1.0 {
        return;
    }
    let n = scores.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let max = scores[idx[n - 1]];
    let exps: Vec<f32> = idx.iter().map(|&i| (scores[i] - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let mut cum = 0.0f32;
    let threshold = 1.0 - p;
    let mut remove = vec![false; n];
    for (pos, e) in exps.iter().enumerate() {
        cum += e / sum;
        remove[pos] = cum <= threshold;
    }
    for r in remove.iter_mut().skip(n.saturating_sub(min_tokens_to_keep)) {
        *r = false;
    }
    for (pos, &i) in idx.iter().enumerate() {
        if remove[pos] {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// `log_softmax` over a row, with the sum of exponentials in f64.
pub fn log_softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let sum: f64 = scores.iter().map(|&s| ((s - max) as f64).exp()).sum();
    let lse = sum.ln() as f32;
    scores.iter_mut().for_each(|s| *s = *s - max - lse);
}

/// The processors HF's `_get_logits_processor` builds from these options, in
/// its order: repetition penalty, no-repeat n-gram, min new tokens. `seq`
/// starts with the decoder start token; `generated = seq.len() - 1`.
pub fn process(scores: &mut [f32], seq: &[u32], opts: &GenerateOptions, eos: u32) {
    repetition_penalty(scores, seq, opts.repetition_penalty);
    no_repeat_ngram(scores, seq, opts.no_repeat_ngram_size);
    min_new_tokens(
        scores,
        seq.len().saturating_sub(1),
        opts.min_new_tokens,
        eos,
    );
}

/// The sampling warpers, in HF's order (temperature, top-k, top-p), with
/// `min_tokens_to_keep = 1` as HF uses when `num_beams == 1`.
pub fn warp(scores: &mut [f32], opts: &GenerateOptions) {
    temperature(scores, opts.temperature);
    top_k(scores, opts.top_k, 1);
    top_p(scores, opts.top_p, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_bans_completions() {
        let mut s = vec![0.0; 10];
        // seq 0 5 6 5 -> bigram (5,6) exists, last token 5 => 6 banned.
        no_repeat_ngram(&mut s, &[0, 5, 6, 5], 2);
        assert_eq!(s[6], f32::NEG_INFINITY);
        assert_eq!(s.iter().filter(|v| v.is_infinite()).count(), 1);
    }

    #[test]
    fn repetition_penalty_signs() {
        let mut s = vec![2.0, -2.0, 2.0];
        repetition_penalty(&mut s, &[0, 1, 1], 2.0);
        assert_eq!(s, vec![1.0, -4.0, 2.0]);
    }

    #[test]
    fn top_k_keeps_ties() {
        let mut s = vec![1.0, 3.0, 3.0, 0.5];
        top_k(&mut s, 1, 1);
        assert_eq!(s[1], 3.0);
        assert_eq!(s[2], 3.0);
        assert!(s[0].is_infinite() && s[3].is_infinite());
    }
}
