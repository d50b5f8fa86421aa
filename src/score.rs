//! Scoring: log p(target | source) under teacher forcing, token by token.

use crate::generate::processors::log_softmax;
use crate::model::T5Model;
use crate::{Error, Result};

/// The log-probabilities of a target given a source.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// `log p(target[i] | source, target[..i])`, one per target token.
    pub token_logprobs: Vec<f32>,
    /// Their sum, accumulated in f64.
    pub logprob: f64,
}

/// A target given as text, as [`score`] wants it: tokenized, without the
/// `</s>` the tokenizer appends (scoring adds none).
pub fn target_ids(tok: &crate::Tokenizer, text: &str, eos: u32) -> Result<Vec<u32>> {
    let mut t = tok.encode(text)?;
    if t.last() == Some(&eos) {
        t.pop();
    }
    Ok(t)
}

/// Scores `target` (as given: no `</s>` is appended) after the decoder start
/// token, as HF's teacher-forced `log_softmax(logits)` gathers it: the
/// decoder reads `[start] + target[..n-1]` and position `i` scores
/// `target[i]`.
pub fn score(model: &T5Model, source: &[u32], target: &[u32]) -> Result<Score> {
    if target.is_empty() {
        return Err(Error::Request("the target has no tokens to score".into()));
    }
    model.check_ids(target)?;
    let mut dec = Vec::with_capacity(target.len());
    dec.push(model.config.decoder_start_token_id);
    dec.extend_from_slice(&target[..target.len() - 1]);
    let mut logits = model.forward(source, &dec)?;
    let v = model.config.vocab_size;
    let token_logprobs: Vec<f32> = logits
        .chunks_exact_mut(v)
        .zip(target)
        .map(|(row, &t)| {
            log_softmax(row);
            row[t as usize]
        })
        .collect();
    let logprob = token_logprobs.iter().map(|&x| x as f64).sum();
    Ok(Score {
        token_logprobs,
        logprob,
    })
}
