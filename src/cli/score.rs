//! `t5edge score`: log p(target | source), per target token and summed.

use super::common::{parse_ids, ModelArgs, PromptArgs, WeightArgs};
use crate::{Error, Result, Tokenizer};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// The target text (tokenized without the `</s>` a prompt gets; pass
    /// --target-ids to score one).
    #[arg(long, conflicts_with = "target_ids")]
    target: Option<String>,
    /// Comma-separated target ids.
    #[arg(long)]
    target_ids: Option<String>,
    /// Print {"token_logprobs": [...], "logprob": x}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    prompt: PromptArgs,
}

pub fn run(a: Args) -> Result<()> {
    let (model, dir) = a.model.load(a.weights.spec(false))?;
    let (ids, _) = a.prompt.ids(&dir, model.config.vocab_size)?;
    let target = match (&a.target_ids, &a.target) {
        (Some(t), None) => parse_ids("--target-ids", t)?,
        (None, Some(text)) => {
            let tok = Tokenizer::from_dir(&dir, model.config.vocab_size)?;
            crate::score::target_ids(&tok, text, model.config.eos_token_id)?
        }
        _ => {
            return Err(Error::Request(
                "give the target: --target TEXT or --target-ids".into(),
            ))
        }
    };
    let s = crate::score::score(&model, &ids, &target)?;
    if a.json {
        out!(
            "{}",
            serde_json::json!({ "token_logprobs": s.token_logprobs, "logprob": s.logprob })
        )?;
    } else {
        out!("{}", s.logprob)?;
    }
    Ok(())
}
