//! `t5edge forward`: teacher-forced decoder logits, reduced to the top k per position.

use super::common::{parse_ids, ModelArgs, PromptArgs, WeightArgs};
use crate::generate::Limits;
use crate::{Error, Result};
use t5edge_kernels::ops::top_k;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// Comma-separated decoder input ids (teacher forcing), starting with the decoder start token.
    #[arg(long)]
    decoder_ids: String,
    #[arg(long, default_value_t = 8)]
    top_k: usize,
    /// Refuse encoder or decoder inputs longer than this many tokens.
    #[arg(long, default_value_t = Limits::default().max_input_tokens)]
    max_input_tokens: usize,
    /// Print {"top_ids": [[...]], "top_logits": [[...]]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    prompt: PromptArgs,
}

pub fn run(a: Args) -> Result<()> {
    let (model, dir) = a.model.load(a.weights.spec(false))?;
    model.require_decoder()?;
    let (ids, _) = a.prompt.ids(&dir, model.config.vocab_size)?;
    let dec = parse_ids("--decoder-ids", &a.decoder_ids)?;
    if a.top_k == 0 {
        return Err(Error::Request("--top-k must be at least 1".into()));
    }
    for (what, n) in [("the prompt", ids.len()), ("--decoder-ids", dec.len())] {
        if n > a.max_input_tokens {
            return Err(Error::Request(format!(
                "{what} has {n} tokens, above the limit of {} (--max-input-tokens)",
                a.max_input_tokens
            )));
        }
    }
    let logits = model.forward(&ids, &dec)?;
    let v = model.config.vocab_size;
    let (mut top_ids, mut top_logits) = (Vec::new(), Vec::new());
    for row in logits.chunks_exact(v) {
        let t = top_k(row, a.top_k);
        top_ids.push(t.iter().map(|p| p.0).collect::<Vec<_>>());
        top_logits.push(t.iter().map(|p| p.1).collect::<Vec<_>>());
    }
    if a.json {
        out!(
            "{}",
            serde_json::json!({ "top_ids": top_ids, "top_logits": top_logits })
        )?;
    } else {
        for (pos, (i, l)) in top_ids.iter().zip(&top_logits).enumerate() {
            let cells: Vec<String> = i
                .iter()
                .zip(l)
                .map(|(i, l)| format!("{i}:{l:.4}"))
                .collect();
            out!("{pos:>4}  {}", cells.join("  "))?;
        }
    }
    Ok(())
}
