//! `t5edge embed`: the mean-pooled encoder embedding of one prompt.

use super::common::{prompt_ids, ModelArgs};
use crate::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Scale the embedding to unit L2 norm.
    #[arg(long)]
    normalize: bool,
    /// Print {"embedding": [...]} (otherwise comma-separated values).
    #[arg(long)]
    json: bool,
    /// Comma-separated encoder input ids (instead of TEXT).
    #[arg(long)]
    input_ids: Option<String>,
    /// The text; `-` (or nothing) reads stdin.
    text: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let (model, dir) = a.model.load(Default::default())?;
    let (ids, _) = prompt_ids(&a.input_ids, &a.text, &dir, model.config.vocab_size)?;
    let e = crate::embed::embed(&model, &[&ids], a.normalize)?.remove(0);
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
    Ok(())
}
