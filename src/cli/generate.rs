//! `t5edge generate`: greedy decoding from text or ids.

use super::common::{prompt_ids, ModelArgs};
use crate::generate::{greedy, GenerateOptions, Limits};
use crate::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Weight format to run in.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// With --dtype int8: full-precision body, int8 LM head whose every greedy
    /// pick is certified equal to the full-precision argmax.
    #[arg(long)]
    exact: bool,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    min_new_tokens: usize,
    /// Refuse prompts longer than this many tokens (bounds memory and time).
    #[arg(long, default_value_t = Limits::default().max_input_tokens)]
    max_input_tokens: usize,
    /// Print one JSON object with input_ids, ids and text.
    #[arg(long)]
    json: bool,
    /// Comma-separated encoder input ids (instead of TEXT).
    #[arg(long)]
    input_ids: Option<String>,
    /// The prompt; `-` (or nothing) reads stdin.
    text: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let (model, dir) = a.model.load(&a.dtype, a.exact)?;
    let (ids, tok) = prompt_ids(&a.input_ids, &a.text, &dir, model.config.vocab_size)?;
    let mut opts = GenerateOptions::default()
        .max_new_tokens(a.max_new_tokens)
        .min_new_tokens(a.min_new_tokens)
        .exact(a.exact);
    opts.limits.max_input_tokens = a.max_input_tokens;
    let out = greedy(&model, &[&ids], &opts)?.remove(0);
    if let Some(h) = &model.lm_head.certified {
        let (steps, rows) = (
            h.steps.load(std::sync::atomic::Ordering::Relaxed),
            h.rescored.load(std::sync::atomic::Ordering::Relaxed),
        );
        eprintln!("exact: {steps} certified picks, {rows} rows re-scored in full precision ({:.1} per step)", rows as f64 / steps.max(1) as f64);
    }
    let text = match &tok {
        Some(t) => Some(t.decode(&out)?),
        None => None,
    };
    if a.json {
        out!(
            "{}",
            serde_json::json!({ "input_ids": ids, "ids": out, "text": text })
        )?;
    } else {
        match text {
            Some(t) => out!("{t}")?,
            None => out!(
                "{}",
                out.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )?,
        }
    }
    Ok(())
}
