//! Logits processors and warpers, each a port of the HF `transformers`
//! class of the same name (`generation/logits_process.py`, 4.57).
//!
//! Every function edits one row of scores (`[vocab]`) in place. `seq` is the
//! decoder input so far, *including* the decoder start token, exactly what HF
//! passes as `input_ids` to its processors in encoder-decoder generation.

//!
//! The functions that need working memory take a [`Scratch`]; the decode loop
//! keeps one for the whole generation, so processing a step allocates nothing
//! once the buffers have grown to the vocabulary (tests/no_alloc.rs).

use super::GenerateOptions;

/// Working memory of the processors and warpers, reused across steps.
#[derive(Default, Debug)]
pub struct Scratch {
    seen: Vec<bool>,
    values: Vec<f32>,
    order: Vec<usize>,
}

/// `RepetitionPenaltyLogitsProcessor`: every id present in `seq` has its score
/// multiplied by `penalty` when negative and divided by it otherwise.
pub fn repetition_penalty(scores: &mut [f32], seq: &[u32], penalty: f32, scratch: &mut Scratch) {
    if penalty == 1.0 {
        return;
    }
    let seen = &mut scratch.seen;
    seen.resize(scores.len(), false);
    for &t in seq {
        let t = t as usize;
        if t < scores.len() && !seen[t] {
            seen[t] = true;
            let s = scores[t];
            scores[t] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
    // Clear only what was set: the buffer stays all-false between calls.
    for &t in seq {
        if let Some(v) = seen.get_mut(t as usize) {
            *v = false;
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
    // Banning a token twice is banning it once: no set needed.
    for w in seq.windows(n) {
        if &w[..n - 1] == prefix {
            if let Some(s) = scores.get_mut(w[n - 1] as usize) {
                *s = f32::NEG_INFINITY;
            }
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
pub fn top_k(scores: &mut [f32], k: usize, min_tokens_to_keep: usize, scratch: &mut Scratch) {
    if k == 0 {
        return;
    }
    let k = k.max(min_tokens_to_keep).min(scores.len());
    let sorted = &mut scratch.values;
    sorted.clear();
    sorted.extend_from_slice(scores);
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
pub fn top_p(scores: &mut [f32], p: f32, min_tokens_to_keep: usize, scratch: &mut Scratch) {
    if p >= 1.0 || scores.is_empty() {
        return;
    }
    let n = scores.len();
    let idx = &mut scratch.order;
    idx.clear();
    idx.extend(0..n);
    // A stable sort allocates a merge buffer; sorting by (score, index) with
    // the unstable sort gives the same order without one.
    idx.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let max = scores[idx[n - 1]];
    let exps = &mut scratch.values;
    exps.clear();
    exps.extend(idx.iter().map(|&i| (scores[i] - max).exp()));
    let sum: f32 = exps.iter().sum();
    let mut cum = 0.0f32;
    let threshold = 1.0 - p;
    let keep_from = n.saturating_sub(min_tokens_to_keep);
    for (pos, e) in exps.iter().enumerate() {
        cum += e / sum;
        if cum <= threshold && pos < keep_from {
            scores[idx[pos]] = f32::NEG_INFINITY;
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
pub fn process(
    scores: &mut [f32],
    seq: &[u32],
    opts: &GenerateOptions,
    eos: u32,
    scratch: &mut Scratch,
) {
    repetition_penalty(scores, seq, opts.repetition_penalty, scratch);
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
pub fn warp(scores: &mut [f32], opts: &GenerateOptions, scratch: &mut Scratch) {
    temperature(scores, opts.temperature);
    top_k(scores, opts.top_k, 1, scratch);
    top_p(scores, opts.top_p, 1, scratch);
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
        let mut scratch = Scratch::default();
        repetition_penalty(&mut s, &[0, 1, 1], 2.0, &mut scratch);
        assert_eq!(s, vec![1.0, -4.0, 2.0]);
        // The scratch is clean again: a second call penalizes once more.
        repetition_penalty(&mut s, &[1], 2.0, &mut scratch);
        assert_eq!(s, vec![1.0, -8.0, 2.0]);
    }

    #[test]
    fn top_k_keeps_ties() {
        let mut s = vec![1.0, 3.0, 3.0, 0.5];
        top_k(&mut s, 1, 1, &mut Scratch::default());
        assert_eq!(s[1], 3.0);
        assert_eq!(s[2], 3.0);
        assert!(s[0].is_infinite() && s[3].is_infinite());
    }
}
