//! Multinomial sampling over a batch: HF's logits processors and warpers,
//! then a draw from the softmax, one RNG stream per row.

use super::batch::decode_loop;
use super::rng::DecodeRng;
use super::GenerateOptions;
use crate::model::T5Model;
use crate::Result;
use std::ops::ControlFlow;

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
