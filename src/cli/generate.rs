//! `t5edge generate`: greedy, beam search or sampling from text or ids; one
//! prompt (optionally streamed) or a JSONL file of prompts.

use super::common::{ModelArgs, PromptArgs, WeightArgs};
use crate::generate::{generate, generate_stream, GenerateOptions};
use crate::tokenizer::TextStream;
use crate::{Error, Result, Tokenizer};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// With --dtype int8: full-precision body, int8 LM head whose every greedy
    /// pick is certified equal to the full-precision argmax (docs/EXACT.md).
    #[arg(long)]
    exact: bool,
    /// The decoding options: HF's GenerationConfig names in kebab case.
    #[command(flatten)]
    decode: GenerateOptions,
    /// Print one JSON object with input_ids, ids and text (plus sequences and
    /// scores when more than one sequence is returned or beams are used).
    #[arg(long)]
    json: bool,
    /// Print the text piece by piece as tokens are produced.
    #[arg(long, conflicts_with_all = ["json", "input"])]
    stream: bool,
    /// A JSONL file of requests, one per line: {"text": ...} or
    /// {"input_ids": [...]}, with optional per-line options under HF's names
    /// (max_new_tokens, num_beams, ...). Results go to --output, one line per
    /// input line; a blank line gets an error line, keeping the two aligned.
    #[arg(long, requires = "output", conflicts_with_all = ["text", "input_ids", "json"])]
    input: Option<PathBuf>,
    /// Where --input's results go (JSONL; written atomically).
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Replace an existing --output.
    #[arg(long)]
    force: bool,
    /// Greedy/sampling requests of --input decoded together per batch.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    batch_size: u16,
    #[command(flatten)]
    prompt: PromptArgs,
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What the certified head and the int4 screen did (stderr): their picks and
/// re-scored rows, and a measuring head's verdict.
fn report_heads(model: &crate::T5Model) {
    if let Some(h) = model.lm_head.as_ref().and_then(|h| h.certified.as_ref()) {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (steps, rows, screened) = (load(&h.steps), load(&h.rescored), load(&h.screened));
        eprintln!(
            "exact: {steps} certified picks ({screened} from the int4 screen), {rows} rows re-scored in full precision ({:.1} per step)",
            rows as f64 / steps.max(1) as f64
        );
    }
    if let Some(h) = model.lm_head.as_ref().filter(|h| h.screen.built()) {
        if let Some((keep, s, f)) = h.screen.calibration() {
            eprintln!(
                "screen: measured {s:.0} us a pick screened, {f:.0} us with the full {} head: {}",
                h.linear.format().name(),
                if keep {
                    "screening"
                } else {
                    "not screening (the ids are the same either way)"
                }
            );
        }
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let fmt = h.linear.format().name();
        let (steps, decided, rows) = (
            load(&h.screen.steps),
            load(&h.screen.decided),
            load(&h.screen.rescored),
        );
        eprintln!(
            "screen: {decided} of {steps} picks decided by the int4 screen, {rows} rows re-scored in {fmt} ({:.1} per decided pick)",
            rows as f64 / decided.max(1) as f64
        );
    }
}

pub fn run(a: Args) -> Result<()> {
    let opts = a.decode.clone().exact(a.exact);
    opts.validate()?;
    let spec = a.weights.spec(a.exact);
    if let (Some(input), Some(output)) = (&a.input, &a.output) {
        crate::weights::writer::check_clobber(output, a.force)?;
        let (model, dir) = a.model.load(spec)?;
        // Once, not as an error line per request.
        model.require_decoder()?;
        let tok = Tokenizer::from_dir(&dir, model.config.vocab_size).ok();
        super::batch::run(
            &model,
            tok.as_ref(),
            &opts,
            input,
            output,
            a.force,
            a.batch_size.into(),
        )?;
        report_heads(&model);
        return Ok(());
    }
    let (model, dir) = a.model.load(spec)?;
    model.require_decoder()?;
    let (ids, tok) = a.prompt.ids(&dir, model.config.vocab_size)?;
    if a.stream {
        return stream(&model, &ids, tok.as_ref(), &opts);
    }
    let g = generate(&model, &[&ids], &opts)?.remove(0);
    report_heads(&model);
    if a.json {
        out!("{}", g.to_json(&ids, tok.as_ref(), &opts)?)?;
    } else {
        for s in &g.sequences {
            match &tok {
                Some(t) => {
                    let text = t.decode(s)?;
                    if text.is_empty() && !s.is_empty() {
                        // Only special tokens (e.g. the synthetic default's
                        // padding): say what was generated rather than nothing.
                        eprintln!("(the generated ids decode to no text: {})", join_ids(s));
                    }
                    out!("{text}")?
                }
                None => out!("{}", join_ids(s))?,
            }
        }
    }
    Ok(())
}

/// Prints each new piece of text (the growth of the decoded prefix) as soon
/// as its token is chosen, flushing per token; ids when there is no tokenizer.
fn stream(
    model: &crate::T5Model,
    ids: &[u32],
    tok: Option<&Tokenizer>,
    opts: &GenerateOptions,
) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut pieces = TextStream::new();
    let mut failure: Option<Error> = None;
    generate_stream(model, ids, opts, |id| {
        let piece = match pieces.push(id, tok) {
            Ok(p) => p,
            Err(e) => {
                failure = Some(e);
                return ControlFlow::Break(());
            }
        };
        if out
            .write_all(piece.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let _ = writeln!(out);
    Ok(())
}
