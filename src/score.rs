//! Scoring: log p(target | source) under teacher forcing, token by token, for
//! one pair or many at once; and the batched teacher-forced pass that
//! [`crate::rerank`] shares.

use crate::encode::{passes, request_msg, TOKENS_PER_PASS};
use crate::generate::processors::log_softmax;
use crate::model::{DecodeScratch, T5Model};
use crate::{Error, Result};

/// The log-probabilities of a target given a source.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// `log p(target[i] | source, target[..i])`, one per target token.
    pub token_logprobs: Vec<f32>,
    /// Their sum, accumulated in f64.
    pub logprob: f64,
}

/// Decoder rows whose logits are computed at once: bounds the logits buffer
/// (`rows x vocab` floats, 64 MB for mT5's 250k vocabulary) however long the
/// targets.
const HEAD_ROWS: usize = 64;

/// Scores `target` (as given: no `</s>` is appended) after the decoder start
/// token, as HF's teacher-forced `log_softmax(logits)` gathers it: the
/// decoder reads `[start] + target[..n-1]` and position `i` scores
/// `target[i]`.
pub fn score(model: &T5Model, source: &[u32], target: &[u32]) -> Result<Score> {
    Ok(score_batch(model, &[(source, target)])?.remove(0))
}

/// [`score`] for many `(source, target)` pairs at once: the sources go
/// through the encoder packed, the targets through the decoder packed, and
/// the head in blocks, so a file of pairs costs a few large matrix products
/// rather than many small ones. Each pair gets its single-pair score up to
/// the last bits of the f32 sums. An error names the pair (0-based) when
/// there is more than one.
pub fn score_batch(model: &T5Model, pairs: &[(&[u32], &[u32])]) -> Result<Vec<Score>> {
    model.require_decoder()?;
    let mut decs = Vec::with_capacity(pairs.len());
    for (i, (_, target)) in pairs.iter().enumerate() {
        let checked = if target.is_empty() {
            Err(Error::Request("the target has no tokens to score".into()))
        } else {
            model.check_ids(target)
        };
        checked.map_err(|e| at_pair(pairs.len(), i, e))?;
        let mut dec = Vec::with_capacity(target.len());
        dec.push(model.config.decoder_start_token_id);
        dec.extend_from_slice(&target[..target.len() - 1]);
        decs.push(dec);
    }
    let sources: Vec<&[u32]> = pairs.iter().map(|p| p.0).collect();
    let decs: Vec<&[u32]> = decs.iter().map(Vec::as_slice).collect();
    let mut out: Vec<Vec<f32>> = pairs
        .iter()
        .map(|p| Vec::with_capacity(p.1.len()))
        .collect();
    forced_logits(model, &sources, &decs, |pair, pos, row| {
        log_softmax(row);
        debug_assert_eq!(out[pair].len(), pos);
        out[pair].push(row[pairs[pair].1[pos] as usize]);
    })?;
    Ok(out
        .into_iter()
        .map(|token_logprobs| Score {
            logprob: token_logprobs.iter().map(|&x| x as f64).sum(),
            token_logprobs,
        })
        .collect())
}

/// `e` attributed to pair `i` of `n` (no prefix for a single pair).
fn at_pair(n: usize, i: usize, e: Error) -> Error {
    if n == 1 {
        return e;
    }
    Error::Request(format!("pair {i}: {}", request_msg(e)))
}

/// Teacher-forced logits of many `(source, decoder input)` pairs: calls
/// `each(pair, position, logits_row)` for every decoder position of every
/// pair, in order, with the row's `vocab_size` logits (the callee may
/// overwrite them).
///
/// Pairs run in passes of up to [`TOKENS_PER_PASS`] tokens: the sources
/// packed through the encoder, each pass's cross-attention keys and values,
/// the decoder inputs packed through the decoder, the head in blocks of
/// [`HEAD_ROWS`] rows. Memory stays bounded by a pass, not by the batch.
pub(crate) fn forced_logits(
    model: &T5Model,
    sources: &[&[u32]],
    decs: &[&[u32]],
    mut each: impl FnMut(usize, usize, &mut [f32]),
) -> Result<()> {
    model.require_decoder()?;
    debug_assert_eq!(sources.len(), decs.len());
    let n = sources.len();
    for (i, (src, dec)) in sources.iter().zip(decs).enumerate() {
        let checked = if src.is_empty() {
            Err(Error::Request("the source has no tokens".into()))
        } else if dec.is_empty() {
            Err(Error::Request("the decoder input has no tokens".into()))
        } else {
            model.check_ids(src).and_then(|_| model.check_ids(dec))
        };
        checked.map_err(|e| at_pair(n, i, e))?;
    }
    let (d, v) = (model.config.d_model, model.config.vocab_size);
    let lens: Vec<usize> = sources
        .iter()
        .zip(decs)
        .map(|(s, t)| s.len() + t.len())
        .collect();
    // One logits buffer for every block of every pass. Each block's logits
    // used to come back copied into a fresh buffer of their size (8 MB for
    // 64 rows of T5's vocabulary, 64 MB of mT5's), which a Python process
    // (glibc maps allocations that large afresh) faulted in every block:
    // 17% of a 256-document rerank.
    let mut head = DecodeScratch::new();
    for pass in passes(&lens, TOKENS_PER_PASS) {
        let enc = model.encode_batch(&sources[pass.clone()])?;
        let mut caches: Vec<_> = enc
            .iter()
            .zip(&decs[pass.clone()])
            .map(|(e, dec)| model.new_cache(e, dec.len()))
            .collect::<Result<_>>()?;
        drop(enc);
        let hidden = model.decode_hidden(&decs[pass.clone()], &mut caches)?;
        drop(caches);
        // Which (pair, position) each packed decoder row is.
        let rows: Vec<(usize, usize)> = pass
            .flat_map(|i| (0..decs[i].len()).map(move |p| (i, p)))
            .collect();
        for (block, who) in hidden.chunks(HEAD_ROWS * d).zip(rows.chunks(HEAD_ROWS)) {
            let logits = model.logits_into(block, &mut head)?;
            for (row, &(i, p)) in logits.chunks_exact_mut(v).zip(who) {
                each(i, p, row);
            }
        }
    }
    Ok(())
}
