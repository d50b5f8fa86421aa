//! `t5edge encode`: the encoder's last hidden states, one row per input token.

use super::common::{ModelArgs, PromptArgs, WeightArgs};
use crate::generate::Limits;
use crate::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// Print {"input_ids": [...], "states": [[...], ...]}: one row of d_model
    /// values per input token, the encoder's final layer norm applied (HF's
    /// `last_hidden_state`). Otherwise one comma-separated row per line.
    #[arg(long)]
    json: bool,
    /// Refuse inputs longer than this many tokens.
    #[arg(long, default_value_t = Limits::default().max_input_tokens)]
    max_input_tokens: usize,
    #[command(flatten)]
    prompt: PromptArgs,
}

pub fn run(a: Args) -> Result<()> {
    let (model, dir) = a.model.load(a.weights.spec(false))?;
    let (ids, _) = a.prompt.ids(&dir, model.config.vocab_size)?;
    if ids.len() > a.max_input_tokens {
        return Err(Error::Request(format!(
            "the prompt has {} tokens, above the limit of {} (--max-input-tokens)",
            ids.len(),
            a.max_input_tokens
        )));
    }
    let states = model.encode(&ids)?;
    let rows = states.chunks_exact(model.config.d_model);
    if a.json {
        let rows: Vec<&[f32]> = rows.collect();
        out!(
            "{}",
            serde_json::json!({ "input_ids": ids, "states": rows })
        )?;
    } else {
        for row in rows {
            let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            out!("{}", cells.join(","))?;
        }
    }
    Ok(())
}
