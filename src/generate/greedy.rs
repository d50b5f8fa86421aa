//! Greedy decoding over a batch, each sequence with its own cache and stop.

use super::GenerateOptions;
use crate::model::T5Model;
use crate::Result;
use std::ops::ControlFlow;

/// Greedy-decodes every prompt. Returns the generated ids of each (without the
/// decoder start token; ending with EOS when one was produced). A batch gives
/// the ids each prompt gives alone: sequences share only the linear layers.
/// HF's processors apply (`repetition_penalty`, `no_repeat_ngram_size`,
/// `min_new_tokens`); the pick is the argmax, ties to the lowest id.
pub fn greedy(
    model: &T5Model,
    prompts: &[&[u32]],
    opts: &GenerateOptions,
) -> Result<Vec<Vec<u32>>> {
    opts.check(prompts)?;
    super::batch::decode_loop(model, prompts, opts, None, &mut |_, _| {
        ControlFlow::Continue(())
    })
}
