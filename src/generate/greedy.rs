//! Greedy decoding over a batch, each sequence with its own cache and stop.

use super::GenerateOptions;
use crate::model::T5Model;
use crate::Result;
use t5edge_kernels::ops;

/// Greedy-decodes every prompt. Returns the generated ids of each (without the
/// decoder start token; ending with EOS when one was produced). A batch gives
/// the ids each prompt gives alone: sequences share only the linear layers.
pub fn greedy(
    model: &T5Model,
    prompts: &[&[u32]],
    opts: &GenerateOptions,
) -> Result<Vec<Vec<u32>>> {
    opts.check(prompts)?;
    let cfg = &model.config;
    let enc = model.encode_batch(prompts)?;
    let mut caches: Vec<_> = enc
        .iter()
        .map(|e| model.new_cache(e, opts.max_new_tokens))
        .collect();
    let mut out: Vec<Vec<u32>> = vec![Vec::with_capacity(opts.max_new_tokens); prompts.len()];
    let mut last: Vec<u32> = vec![cfg.decoder_start_token_id; prompts.len()];
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let (vocab, d) = (cfg.vocab_size, cfg.d_model);
    for step in 0..opts.max_new_tokens {
        if active.is_empty() {
            break;
        }
        let toks: Vec<[u32; 1]> = active.iter().map(|&s| [last[s]]).collect();
        let tok_refs: Vec<&[u32]> = toks.iter().map(|t| &t[..]).collect();
        let mut step_caches: Vec<_> = active
            .iter()
            .map(|&s| std::mem::take(&mut caches[s]))
            .collect();
        let hidden = model.decode_hidden(&tok_refs, &mut step_caches)?;
        for (&s, c) in active.iter().zip(step_caches) {
            caches[s] = c;
        }
        let banned = (step < opts.min_new_tokens).then_some(cfg.eos_token_id as usize);
        let picks: Vec<u32> = match (&model.lm_head.certified, opts.exact) {
            (Some(head), true) => {
                let h = model.head_input(&hidden);
                h.chunks_exact(d)
                    .map(|row| head.argmax(row, banned).0 as u32)
                    .collect()
            }
            _ => {
                let mut logits = model.logits(&hidden);
                logits
                    .chunks_exact_mut(vocab)
                    .map(|l| {
                        if let Some(b) = banned {
                            l[b] = f32::NEG_INFINITY;
                        }
                        ops::argmax(l).unwrap_or(cfg.eos_token_id as usize) as u32
                    })
                    .collect()
            }
        };
        let mut still = Vec::with_capacity(active.len());
        for (&next, &s) in picks.iter().zip(&active) {
            out[s].push(next);
            last[s] = next;
            if next != cfg.eos_token_id {
                still.push(s);
            }
        }
        active = still;
    }
    Ok(out)
}
