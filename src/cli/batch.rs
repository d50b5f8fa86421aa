//! `t5edge generate --input prompts.jsonl --output results.jsonl`.
//!
//! Each input line is a JSON object, `{"text": ...}` or `{"input_ids": [...]}`,
//! with optional per-line options overriding the command line's. Each output
//! line answers the input line at the same position: `{"ids", "text", ...}` or
//! `{"error": ...}`; a bad line never aborts the file. Requests with the same
//! options are sorted by length and decoded in batches; the output is written
//! through a temp file and a rename.

use super::generate::result_json;
use crate::generate::{generate, EarlyStopping, GenerateOptions};
use crate::{Error, Result, T5Model, Tokenizer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One request line. Options absent here come from the command line.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Request {
    text: Option<String>,
    input_ids: Option<Vec<u32>>,
    max_new_tokens: Option<usize>,
    min_new_tokens: Option<usize>,
    num_beams: Option<usize>,
    length_penalty: Option<f32>,
    early_stopping: Option<serde_json::Value>,
    no_repeat_ngram_size: Option<usize>,
    num_return_sequences: Option<usize>,
    do_sample: Option<bool>,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    seed: Option<u64>,
    repetition_penalty: Option<f32>,
}

impl Request {
    fn options(&self, base: &GenerateOptions) -> Result<GenerateOptions> {
        let mut o = base.clone();
        macro_rules! take {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { o = o.$f(v); })* };
        }
        take!(
            max_new_tokens,
            min_new_tokens,
            num_beams,
            length_penalty,
            no_repeat_ngram_size,
            num_return_sequences,
            do_sample,
            temperature,
            top_k,
            top_p,
            seed,
            repetition_penalty
        );
        if let Some(v) = &self.early_stopping {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            o = o.early_stopping(s.parse::<EarlyStopping>().map_err(Error::Request)?);
        }
        o.validate()?;
        Ok(o)
    }
}

/// Parses one line into its prompt ids and options.
fn parse_line(
    line: &str,
    base: &GenerateOptions,
    tok: Option<&Tokenizer>,
    vocab: usize,
) -> Result<(Vec<u32>, GenerateOptions)> {
    let req: Request = serde_json::from_str(line)
        .map_err(|e| Error::Request(format!("invalid JSON request: {e}")))?;
    let opts = req.options(base)?;
    let ids = match (&req.input_ids, &req.text) {
        (Some(_), Some(_)) => {
            return Err(Error::Request(
                "give either text or input_ids, not both".into(),
            ))
        }
        (Some(ids), None) => ids.clone(),
        (None, Some(text)) => match tok {
            Some(t) => t.encode(text)?,
            None => {
                return Err(Error::Request(
                    "text needs the checkpoint's tokenizer.json (give input_ids)".into(),
                ))
            }
        },
        (None, None) => {
            return Err(Error::Request(
                "the request has neither text nor input_ids".into(),
            ))
        }
    };
    if ids.is_empty() {
        return Err(Error::Request("input_ids is empty".into()));
    }
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::Request(format!(
            "token id {bad} is not below vocab_size {vocab}"
        )));
    }
    if ids.len() > opts.limits.max_input_tokens {
        return Err(Error::Request(format!(
            "the prompt has {} tokens, above the limit of {}",
            ids.len(),
            opts.limits.max_input_tokens
        )));
    }
    Ok((ids, opts))
}

fn error_json(e: &Error) -> serde_json::Value {
    serde_json::json!({ "error": e.to_string() })
}

/// Runs every request of `input` and writes one result line per input line.
pub fn run(
    model: &T5Model,
    tok: Option<&Tokenizer>,
    base: &GenerateOptions,
    input: &Path,
    output: &Path,
    force: bool,
    batch_size: usize,
) -> Result<()> {
    let text = std::fs::read_to_string(input).map_err(|e| Error::io(input, e))?;
    let lines: Vec<&str> = text.lines().collect();
    let vocab = model.config.vocab_size;
    let mut results: Vec<Option<serde_json::Value>> = vec![None; lines.len()];
    // Parse everything first; group the good requests by their options.
    let mut parsed: Vec<Option<Vec<u32>>> = vec![None; lines.len()];
    let mut groups: BTreeMap<String, (GenerateOptions, Vec<usize>)> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        match parse_line(line, base, tok, vocab) {
            Ok((ids, opts)) => {
                parsed[i] = Some(ids);
                groups
                    .entry(format!("{opts:?}"))
                    .or_insert_with(|| (opts, Vec::new()))
                    .1
                    .push(i);
            }
            Err(e) => results[i] = Some(error_json(&e)),
        }
    }
    let todo: usize = groups.values().map(|(_, v)| v.len()).sum();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(todo as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} requests, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for (opts, mut members) in groups.into_values() {
        // Similar lengths together keep a batch's encoder and cache work even.
        members.sort_by_key(|&i| parsed[i].as_ref().map_or(0, |p| p.len()));
        let chunk = if opts.num_beams > 1 { 1 } else { batch_size };
        for group in members.chunks(chunk) {
            let prompts: Vec<&[u32]> = group
                .iter()
                .map(|&i| parsed[i].as_deref().unwrap_or(&[]))
                .collect();
            match generate(model, &prompts, &opts) {
                Ok(gens) => {
                    for ((&i, g), p) in group.iter().zip(&gens).zip(&prompts) {
                        results[i] =
                            Some(result_json(p, g, tok, &opts).unwrap_or_else(|e| error_json(&e)));
                    }
                }
                // Attribute a batch failure to the requests that cause it.
                Err(_) => {
                    for (&i, p) in group.iter().zip(&prompts) {
                        results[i] = Some(match generate(model, &[p], &opts) {
                            Ok(g) => {
                                result_json(p, &g[0], tok, &opts).unwrap_or_else(|e| error_json(&e))
                            }
                            Err(e) => error_json(&e),
                        });
                    }
                }
            }
            bar.inc(group.len() as u64);
        }
    }
    bar.finish_and_clear();
    let errors = results
        .iter()
        .filter(|r| r.as_ref().is_some_and(|v| v.get("error").is_some()))
        .count();
    crate::weights::writer::write_atomic(output, force, |w| {
        for r in &results {
            let v = r
                .clone()
                .unwrap_or_else(|| serde_json::json!({"error": "not run"}));
            serde_json::to_writer(&mut *w, &v)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    eprintln!(
        "wrote {} results ({errors} errors) to {}",
        results.len(),
        output.display()
    );
    Ok(())
}
