//! `t5edge generate --input prompts.jsonl --output results.jsonl`.
//!
//! Each input line is a JSON object, `{"text": ...}` or `{"input_ids": [...]}`,
//! with optional per-line options overriding the command line's (the
//! library's [`GenerateRequest`]). Each output line answers the input line at
//! the same position: `{"ids", "text", ...}` or `{"error": ...}` naming the
//! file and line; a bad line, a blank one included, never aborts the file. Requests with the same
//! options are sorted by length and decoded in batches; the output is written
//! through a temp file and a rename.

use super::common::at_line;
use crate::generate::{generate, GenerateOptions, GenerateRequest};
use crate::{Error, Result, T5Model, Tokenizer};
use std::collections::BTreeMap;
use std::path::Path;

/// Parses line `lineno` (1-based) of `input` into its prompt ids and
/// options; errors name the file and line.
fn parse_line(
    line: &str,
    base: &GenerateOptions,
    model: &T5Model,
    tok: Option<&Tokenizer>,
) -> Result<(Vec<u32>, GenerateOptions)> {
    if line.trim().is_empty() {
        return Err(Error::Request(
            "blank line: no request (each line is one JSON object)".into(),
        ));
    }
    let req = GenerateRequest::from_json(line, base)?;
    let ids = req.prompt.ids(model, tok, &req.options)?;
    Ok((ids, req.options))
}

pub(super) fn error_json(e: &Error) -> serde_json::Value {
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
    let mut results: Vec<Option<serde_json::Value>> = vec![None; lines.len()];
    // Parse everything first; group the good requests by their options.
    let mut parsed: Vec<Option<Vec<u32>>> = vec![None; lines.len()];
    let mut groups: BTreeMap<String, (GenerateOptions, Vec<usize>)> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        match parse_line(line, base, model, tok) {
            Ok((ids, opts)) => {
                parsed[i] = Some(ids);
                groups
                    .entry(format!("{opts:?}"))
                    .or_insert_with(|| (opts, Vec::new()))
                    .1
                    .push(i);
            }
            Err(e) => results[i] = Some(error_json(&at_line(input, i, e))),
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
                            Some(g.to_json(p, tok, &opts).unwrap_or_else(|e| error_json(&e)));
                    }
                }
                // Attribute a batch failure to the requests that cause it.
                Err(_) => {
                    for (&i, p) in group.iter().zip(&prompts) {
                        results[i] = Some(match generate(model, &[p], &opts) {
                            Ok(g) => g[0]
                                .to_json(p, tok, &opts)
                                .unwrap_or_else(|e| error_json(&e)),
                            Err(e) => error_json(&at_line(input, i, e)),
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
