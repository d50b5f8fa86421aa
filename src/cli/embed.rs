//! `t5edge embed`: the mean-pooled encoder embedding of one prompt.

use super::common::{ModelArgs, PromptArgs};
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
    #[command(flatten)]
    prompt: PromptArgs,
}

pub fn run(a: Args) -> Result<()> {
    let (model, dir) = a.model.load(Default::default())?;
    let (ids, _) = a.prompt.ids(&dir, model.config.vocab_size)?;
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
