//! Streaming: a callback sees each token the moment it is chosen.

use super::batch::decode_loop;
use super::rng::DecodeRng;
use super::GenerateOptions;
use crate::model::T5Model;
use crate::Result;
use std::ops::ControlFlow;

/// Generates for one prompt, calling `on_token(id)` with each new token as soon
/// as it is chosen; returning [`ControlFlow::Break`] stops generation after that
/// token. Returns all generated ids (the same ids [`super::generate`] gives for
/// the best sequence).
///
/// Greedy and sampling stream token by token. Beam search only knows its best
/// sequence at the end, so with `num_beams > 1` the tokens of the best
/// hypothesis are delivered once the search is done.
///
/// ```
/// use std::ops::ControlFlow;
/// use t5edge::generate::{generate_stream, GenerateOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// # let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
/// # let cfg = t5edge::synth::with_overrides(&cfg, &["d_model=64".into(), "d_ff=128".into(),
/// #     "vocab_size=1000".into(), "num_heads=2".into(), "d_kv=16".into()]).unwrap();
/// # t5edge::synth::write_checkpoint(dir.path(), &cfg, &Default::default(), false).unwrap();
/// let model = t5edge::T5Model::load(dir.path())?;
/// let mut seen = Vec::new();
/// let ids = generate_stream(&model, &[37, 12, 1], &GenerateOptions::default().max_new_tokens(5), |id| {
///     seen.push(id);
///     ControlFlow::Continue(())
/// })?;
/// assert_eq!(seen, ids);
/// # Ok::<(), t5edge::Error>(())
/// ```
pub fn generate_stream(
    model: &T5Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Vec<u32>> {
    opts.check(&[prompt])?;
    if opts.num_beams > 1 {
        let best = super::beam_search(model, prompt, opts)?
            .into_iter()
            .next()
            .map(|h| h.ids)
            .unwrap_or_default();
        let mut out = Vec::new();
        for id in best {
            out.push(id);
            if on_token(id).is_break() {
                break;
            }
        }
        return Ok(out);
    }
    let rngs = opts.do_sample.then(|| vec![DecodeRng::new(opts.seed, 0)]);
    let mut out = decode_loop(model, &[prompt], opts, rngs, &mut |_, id| on_token(id))?;
    Ok(out.remove(0))
}

/// Generates for a batch of prompts with greedy or sampling decoding, calling
/// `on_token(row, id)` with each new token of row `row` as soon as it is
/// chosen; [`ControlFlow::Break`] ends that row after the token. Rows are
/// decoded together (the same batching as [`super::generate`]) and each gets
/// the ids it would get alone. Every row samples from stream 0 of the seed,
/// as [`super::sample`] does. Beam search is refused: its tokens are known
/// only at the end (use [`generate_stream`]).
///
/// Between two calls of `on_token`, the decode loop allocates nothing once
/// its buffers are sized.
pub fn generate_stream_batch(
    model: &T5Model,
    prompts: &[&[u32]],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32) -> ControlFlow<()>,
) -> Result<Vec<Vec<u32>>> {
    opts.check(prompts)?;
    if opts.num_beams > 1 {
        return Err(crate::Error::Request(
            "streaming a batch needs greedy or sampling decoding (num_beams 1)".into(),
        ));
    }
    if opts.num_return_sequences > 1 {
        return Err(crate::Error::Request(
            "streaming a batch returns one sequence per prompt (num_return_sequences 1)".into(),
        ));
    }
    let rngs = opts
        .do_sample
        .then(|| vec![DecodeRng::new(opts.seed, 0); prompts.len()]);
    decode_loop(model, prompts, opts, rngs, &mut on_token)
}
