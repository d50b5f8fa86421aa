//! Token-by-token decoding of a batch: greedy (argmax) or multinomial
//! sampling, with HF's logits processors and warpers.

use super::{processors, GenerateOptions};
use crate::model::{DecodeScratch, T5Model};
use crate::Result;
use std::ops::ControlFlow;
use t5edge_kernels::ops;

/// A small deterministic RNG for sampling (splitmix64 over a seed and a stream
/// number). Draws depend only on `(seed, stream)` and the number of draws made,
/// never on thread count or batch composition.
#[derive(Clone, Debug)]
pub struct DecodeRng(u64);

impl DecodeRng {
    /// The RNG of stream `stream` of `seed`.
    pub fn new(seed: u64, stream: u64) -> DecodeRng {
        let mut mix = DecodeRng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
        let a = mix.next_u64();
        let mut mix = DecodeRng(a ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        DecodeRng(mix.next_u64())
    }

    /// The next 64 random bits (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        crate::synth::splitmix64(&mut self.0)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Draws an index with probability proportional to `exp(scores[i])`
    /// (`-inf` entries are never drawn). `None` when every score is `-inf`/NaN.
    pub fn categorical(&mut self, scores: &[f32]) -> Option<usize> {
        let max = scores
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return None;
        }
        let w: Vec<f64> = scores
            .iter()
            .map(|&s| {
                if s.is_nan() {
                    0.0
                } else {
                    ((s - max) as f64).exp()
                }
            })
            .collect();
        let total: f64 = w.iter().sum();
        let target = self.uniform() * total;
        let mut acc = 0.0;
        let mut last = None;
        for (i, &wi) in w.iter().enumerate() {
            if wi > 0.0 {
                acc += wi;
                last = Some(i);
                if acc > target {
                    return Some(i);
                }
            }
        }
        last
    }
}

/// Samples a continuation of every prompt: HF's processors (repetition
/// penalty, no-repeat n-gram, min new tokens), then the warpers (temperature,
/// top-k, top-p), then a draw from the softmax. Every row uses stream 0 of
/// `opts.seed`, so a prompt's tokens do not depend on what else is in the batch.
pub fn sample(
    model: &T5Model,
    prompts: &[&[u32]],
    opts: &GenerateOptions,
) -> Result<Vec<Vec<u32>>> {
    opts.check(prompts)?;
    let opts = opts.clone().do_sample(true);
    let rngs = vec![DecodeRng::new(opts.seed, 0); prompts.len()];
    decode_loop(model, prompts, &opts, Some(rngs), &mut |_, _| {
        ControlFlow::Continue(())
    })
}

/// Sampling with one RNG per row (for `num_return_sequences`).
pub(crate) fn sample_with(
    model: &T5Model,
    prompts: &[&[u32]],
    opts: &GenerateOptions,
    rngs: Vec<DecodeRng>,
) -> Result<Vec<Vec<u32>>> {
    decode_loop(model, prompts, opts, Some(rngs), &mut |_, _| {
        ControlFlow::Continue(())
    })
}

/// The shared loop: each active row feeds its last token, gets logits, runs the
/// processors and picks the next token by argmax (`rngs == None`) or a draw.
/// `on_token(row, id)` sees every token as it is chosen; `Break` ends that row.
///
/// Once the first step has sized the scratch buffers, a step allocates nothing
/// here or in the model (tests/no_alloc.rs counts): the caches of finished rows
/// are dropped by compacting `caches` in place, so it always holds exactly the
/// active rows, in order.
pub(crate) fn decode_loop(
    model: &T5Model,
    prompts: &[&[u32]],
    opts: &GenerateOptions,
    mut rngs: Option<Vec<DecodeRng>>,
    on_token: &mut dyn FnMut(usize, u32) -> ControlFlow<()>,
) -> Result<Vec<Vec<u32>>> {
    let cfg = &model.config;
    let eos = opts.eos(model);
    let enc = model.encode_batch(prompts)?;
    let mut caches: Vec<_> = enc
        .iter()
        .map(|e| model.new_cache(e, opts.max_new_tokens))
        .collect();
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
    // Certified greedy never materialises the logits: the int8 head and its
    // bound pick the token (validate() allows only EOS suppression with it).
    let certified = match (&model.lm_head.certified, opts.exact && rngs.is_none()) {
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
            let head_in = model.step_head_input(&mut scratch);
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
            let logits = model.step_logits(&mut scratch);
            for i in 0..active.len() {
                let s = active[i];
                let l = &mut logits[i * vocab..(i + 1) * vocab];
                processors::process(l, &seqs[s], opts, eos);
                let next = match rngs.as_mut() {
                    Some(r) => {
                        processors::warp(l, opts);
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
