//! `t5edge embed`: the mean-pooled encoder embedding of one prompt, or of
//! each line of a JSONL file of them.

use super::common::{jsonl_inputs, ModelArgs, PromptArgs, WeightArgs};
use crate::generate::Limits;
use crate::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// Scale the embedding to unit L2 norm.
    #[arg(long)]
    normalize: bool,
    /// Print {"embedding": [...]} (otherwise comma-separated values); with
    /// --input, one such line per input line.
    #[arg(long)]
    json: bool,
    /// A JSONL file of inputs, one per line: {"text": ...} or
    /// {"input_ids": [...]}. Each gets the embedding it gets alone (the
    /// same values as `t5edge embed TEXT`, and as the server's
    /// /v1/embeddings); many short ones run at once, one a thread. A bad
    /// line stops the command, naming the line.
    #[arg(long, conflicts_with_all = ["text", "input_ids"])]
    input: Option<PathBuf>,
    /// Refuse --input lines longer than this many tokens.
    #[arg(long, default_value_t = Limits::default().max_input_tokens, requires = "input")]
    max_input_tokens: usize,
    #[command(flatten)]
    prompt: PromptArgs,
}

pub fn run(a: Args) -> Result<()> {
    let (model, dir) = a.model.load(a.weights.spec(false))?;
    let inputs: Vec<Vec<u32>> = match &a.input {
        Some(path) => jsonl_inputs(path, &dir, &model, a.max_input_tokens)?,
        None => vec![a.prompt.ids(&dir, model.config.vocab_size)?.0],
    };
    let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let embeddings = crate::embed::embed_each_alone(&model, &refs, a.normalize)?;
    for e in embeddings {
        if a.json {
            out!("{}", serde_json::json!({ "embedding": e }))?;
        } else {
            out!(
                "{}",
                e.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )?;
        }
    }
    Ok(())
}
