//! The token-by-token loop every non-beam strategy shares: greedy (argmax),
//! sampling (a draw) and certified greedy (the int8 head's proven argmax).

use super::processors::{self, Scratch};
use super::rng::DecodeRng;
use super::GenerateOptions;
use crate::model::{DecodeScratch, T5Model};
use crate::Result;
use std::ops::ControlFlow;
use t5edge_kernels::ops;

/// The shared loop: each active row feeds its last token, gets logits, runs the
/// processors and picks the next token by argmax (`rngs == None`) or a draw.
/// `on_token(row, id)` sees every token as it is chosen; `Break` ends that row.
///
/// Once the first step has sized the scratch buffers, a step allocates nothing:
/// not in the model, not in the processors and warpers, not in the draw
/// (tests/no_alloc.rs counts every allocation between two calls of `on_token`
/// through [`super::generate_stream_batch`]). Only what `on_token` itself does
/// is the caller's. The caches of finished rows are dropped by compacting
/// `caches` in place, so it always holds exactly the active rows, in order.
pub(crate) fn decode_loop(
    model: &T5Model,
    prompts: &[&[u32]],
    opts: &GenerateOptions,
    mut rngs: Option<Vec<DecodeRng>>,
    on_token: &mut dyn FnMut(usize, u32) -> ControlFlow<()>,
) -> Result<Vec<Vec<u32>>> {
    let (_, head) = model.require_decoder()?;
    let cfg = &model.config;
    let eos = opts.eos(model);
    let enc = model.encode_batch(prompts)?;
    let mut caches = enc
        .iter()
        .map(|e| model.new_cache(e, opts.max_new_tokens))
        .collect::<Result<Vec<_>>>()?;
    drop(enc);
    // Each row's decoder input so far, starting with the decoder start token.
    let mut seqs: Vec<Vec<u32>> = (0..prompts.len())
        .map(|_| {
            let mut v = Vec::with_capacity(opts.max_new_tokens + 1);
            v.push(cfg.decoder_start_token_id);
            v
        })
        .collect();
    // active[i] is the row whose cache is caches[i].
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let mut toks: Vec<u32> = Vec::with_capacity(prompts.len());
    let mut scratch = DecodeScratch::new();
    let mut cert_logits = crate::model::certified::CertScratch::default();
    let mut proc_scratch = Scratch::default();
    // Certified greedy never materialises the logits: the int8 head and its
    // bound pick the token (validate() allows only EOS suppression with it).
    let certified = match (&head.certified, opts.exact && rngs.is_none()) {
        (Some(head), true) => Some(head),
        _ => None,
    };
    let (vocab, d) = (cfg.vocab_size, cfg.d_model);
    for _ in 0..opts.max_new_tokens {
        if active.is_empty() {
            break;
        }
        toks.clear();
        toks.extend(
            active
                .iter()
                .map(|&s| *seqs[s].last().unwrap_or(&cfg.decoder_start_token_id)),
        );
        model.decode_step(&toks, &mut caches, &mut scratch)?;
        let mut keep = 0;
        if let Some(head) = certified {
            let head_in = model.step_head_input(&mut scratch)?;
            for i in 0..active.len() {
                let s = active[i];
                let banned = (seqs[s].len() - 1 < opts.min_new_tokens).then_some(eos as usize);
                let next = head
                    .argmax_with(&head_in[i * d..(i + 1) * d], banned, &mut cert_logits)
                    .0 as u32;
                if push_token(&mut seqs[s], s, next, eos, on_token) {
                    active.swap(keep, i);
                    caches.swap(keep, i);
                    keep += 1;
                }
            }
        } else {
            let logits = model.step_logits(&mut scratch)?;
            for i in 0..active.len() {
                let s = active[i];
                let l = &mut logits[i * vocab..(i + 1) * vocab];
                processors::process(l, &seqs[s], opts, eos, &mut proc_scratch);
                let next = match rngs.as_mut() {
                    Some(r) => {
                        processors::warp(l, opts, &mut proc_scratch);
                        r[s].categorical(l)
                    }
                    None => ops::argmax(l),
                }
                .unwrap_or(eos as usize) as u32;
                if push_token(&mut seqs[s], s, next, eos, on_token) {
                    active.swap(keep, i);
                    caches.swap(keep, i);
                    keep += 1;
                }
            }
        }
        // Swapping kept rows forward preserves their order; the finished rows'
        // caches are dropped here.
        active.truncate(keep);
        caches.truncate(keep);
    }
    Ok(seqs.into_iter().map(|mut s| s.split_off(1)).collect())
}

/// Appends `next` to row `s` and reports it; whether the row goes on.
fn push_token(
    seq: &mut Vec<u32>,
    s: usize,
    next: u32,
    eos: u32,
    on_token: &mut dyn FnMut(usize, u32) -> ControlFlow<()>,
) -> bool {
    seq.push(next);
    let go_on = on_token(s, next).is_continue();
    next != eos && go_on
}
