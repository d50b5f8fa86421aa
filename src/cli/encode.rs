//! `t5edge encode`: the encoder's last hidden states, one row per input token,
//! for one prompt or a JSONL file of them (ragged, batched), printed or
//! written to a `.safetensors` / `.npy` file (the library's
//! [`crate::encode`]).

use super::common::{jsonl_inputs, ModelArgs, PromptArgs, WeightArgs};
use crate::encode::encode_padded;
use crate::generate::Limits;
use crate::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    weights: WeightArgs,
    /// Print {"input_ids": [...], "states": [[...], ...]}: one row of d_model
    /// values per input token, the encoder's final layer norm applied (HF's
    /// `last_hidden_state`); with --input, one such line per input line.
    /// Otherwise one comma-separated row per line.
    #[arg(long)]
    json: bool,
    /// A JSONL file of inputs, one per line: {"text": ...} or
    /// {"input_ids": [...]}; any lengths, encoded as one batch. A bad line
    /// stops the command, naming the line.
    #[arg(long, conflicts_with_all = ["text", "input_ids"])]
    input: Option<PathBuf>,
    /// Write the states to this file instead of printing them: .safetensors
    /// (last_hidden_state F32 [batch, max_len, d_model], attention_mask and
    /// input_ids I64 [batch, max_len]; padding rows zero) or .npy (the states
    /// array alone). Written atomically.
    #[arg(long, conflicts_with = "json")]
    output: Option<PathBuf>,
    /// Replace an existing --output.
    #[arg(long, requires = "output")]
    force: bool,
    /// Refuse inputs longer than this many tokens (T5's relative positions
    /// take any length; this bounds memory and time).
    #[arg(long, default_value_t = Limits::default().max_input_tokens)]
    max_input_tokens: usize,
    #[command(flatten)]
    prompt: PromptArgs,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(out) = &a.output {
        crate::weights::writer::check_clobber(out, a.force)?;
    }
    if a.input.is_some() && a.output.is_none() && !a.json {
        return Err(Error::Request(
            "--input needs --output FILE.safetensors|FILE.npy or --json".into(),
        ));
    }
    let (model, dir) = a.model.load(a.weights.spec(false))?;
    let inputs: Vec<Vec<u32>> = match &a.input {
        Some(path) => jsonl_inputs(path, &dir, &model, a.max_input_tokens)?,
        None => {
            let (ids, _) = a.prompt.ids(&dir, model.config.vocab_size)?;
            if ids.len() > a.max_input_tokens {
                return Err(Error::Request(format!(
                    "the prompt has {} tokens, above the limit of {} (--max-input-tokens)",
                    ids.len(),
                    a.max_input_tokens
                )));
            }
            vec![ids]
        }
    };
    let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let enc = encode_padded(&model, &refs)?;
    if let Some(out) = &a.output {
        enc.write(out, a.force)?;
        eprintln!(
            "wrote the states of {} inputs ([{}, {}, {}]) to {}",
            enc.len(),
            enc.len(),
            enc.max_len,
            enc.d_model,
            out.display()
        );
        return Ok(());
    }
    for i in 0..enc.len() {
        let rows = enc.states_of(i).chunks_exact(enc.d_model);
        if a.json {
            let rows: Vec<&[f32]> = rows.collect();
            out!(
                "{}",
                serde_json::json!({ "input_ids": enc.ids_of(i), "states": rows })
            )?;
        } else {
            for row in rows {
                let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                out!("{}", cells.join(","))?;
            }
        }
    }
    Ok(())
}
