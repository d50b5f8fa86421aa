//! `t5edge score`: log p(target | source), per target token and summed, for
//! one pair or a JSONL file of pairs scored in one batch (the library's
//! [`crate::score::score_batch`]).

use super::batch::error_json;
use super::common::{at_line, parse_ids, read_lines, ModelArgs, PromptArgs, WeightArgs};
use crate::generate::{GenerateOptions, Limits, Prompt, ScoreRequest};
use crate::score::{score_batch, Score};
use crate::{Error, Result, T5Model, Tokenizer};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// The target text (tokenized without the `</s>` a prompt gets; see
    /// --append-eos).
    #[arg(long, conflicts_with = "target_ids")]
    target: Option<String>,
    /// Comma-separated target ids.
    #[arg(long)]
    target_ids: Option<String>,
    /// Score a closing `</s>` after the target too.
    #[arg(long)]
    append_eos: bool,
    /// Print {"token_logprobs": [...], "logprob": x}.
    #[arg(long)]
    json: bool,
    /// A JSONL file of pairs, one per line: {"source": ..., "target": ...}
    /// (or source_ids / target_ids lists; "append_eos": true per line). All
    /// pairs are scored as one batch; each output line answers the input
    /// line at the same position: {"token_logprobs", "logprob"} or
    /// {"error": "FILE line N: ..."}.
    #[arg(long, conflicts_with_all = ["text", "input_ids", "target", "target_ids", "json"])]
    input: Option<PathBuf>,
    /// Where --input's results go (JSONL, written atomically; default: stdout).
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Replace an existing --output.
    #[arg(long, requires = "output")]
    force: bool,
    /// Refuse sources longer than this many tokens.
    #[arg(long, default_value_t = Limits::default().max_input_tokens)]
    max_input_tokens: usize,
    #[command(flatten)]
    prompt: PromptArgs,
}

fn to_json(s: &Score) -> serde_json::Value {
    serde_json::json!({ "token_logprobs": s.token_logprobs, "logprob": s.logprob })
}

pub fn run(a: Args) -> Result<()> {
    if let Some(out) = &a.output {
        crate::weights::writer::check_clobber(out, a.force)?;
    }
    let (model, dir) = a.model.load(a.weights.spec(false))?;
    if let Some(input) = &a.input {
        let tok = Tokenizer::from_dir(&dir, model.config.vocab_size).ok();
        return batch(&a, &model, tok.as_ref(), input);
    }
    let (ids, tok) = a.prompt.ids(&dir, model.config.vocab_size)?;
    if ids.len() > a.max_input_tokens {
        return Err(Error::Request(format!(
            "the source has {} tokens, above the limit of {} (--max-input-tokens)",
            ids.len(),
            a.max_input_tokens
        )));
    }
    let target = match (&a.target_ids, &a.target) {
        (Some(t), None) => Prompt::Ids(parse_ids("--target-ids", t)?),
        (None, Some(text)) => Prompt::Text(text.clone()),
        _ => {
            return Err(Error::Request(
                "give the target: --target TEXT or --target-ids".into(),
            ))
        }
    };
    let tok = match (tok, &target) {
        (None, Prompt::Text(_)) => Some(Tokenizer::from_dir(&dir, model.config.vocab_size)?),
        (t, _) => t,
    };
    let target = target.target_ids(&model, tok.as_ref(), a.append_eos)?;
    let s = score_batch(&model, &[(&ids, &target)])?.remove(0);
    if a.json {
        out!("{}", to_json(&s))?;
    } else {
        out!("{}", s.logprob)?;
    }
    Ok(())
}

/// Scores every pair of `input` in one batch; a bad line gets its error line.
fn batch(a: &Args, model: &T5Model, tok: Option<&Tokenizer>, input: &Path) -> Result<()> {
    let mut opts = GenerateOptions::default();
    opts.limits.max_input_tokens = a.max_input_tokens;
    let lines = read_lines(input)?;
    let mut results: Vec<Option<serde_json::Value>> = vec![None; lines.len()];
    let mut pairs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let parsed = if line.trim().is_empty() {
            Err(Error::Request(
                "blank line: no pair (each line is one JSON object)".into(),
            ))
        } else {
            ScoreRequest::from_json(line, a.append_eos).and_then(|r| r.ids(model, tok, &opts))
        };
        match parsed {
            Ok((s, t)) => pairs.push((i, s, t)),
            Err(e) => results[i] = Some(error_json(&at_line(input, i, e))),
        }
    }
    let refs: Vec<(&[u32], &[u32])> = pairs
        .iter()
        .map(|(_, s, t)| (s.as_slice(), t.as_slice()))
        .collect();
    for ((i, _, _), s) in pairs.iter().zip(score_batch(model, &refs)?) {
        results[*i] = Some(to_json(&s));
    }
    let errors = results
        .iter()
        .filter(|r| r.as_ref().is_some_and(|v| v.get("error").is_some()))
        .count();
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        for r in &results {
            let v = r
                .clone()
                .unwrap_or_else(|| serde_json::json!({"error": "not run"}));
            serde_json::to_writer(&mut *w, &v)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    };
    match &a.output {
        Some(out) => {
            crate::weights::writer::write_atomic(out, a.force, write)?;
            eprintln!(
                "wrote {} results ({errors} errors) to {}",
                results.len(),
                out.display()
            );
        }
        None => {
            write(&mut std::io::stdout().lock()).map_err(|e| Error::io("<stdout>", e))?;
            if errors > 0 {
                eprintln!("{errors} of {} lines had errors", results.len());
            }
        }
    }
    Ok(())
}
