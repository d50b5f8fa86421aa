//! `t5edge synth`: write a deterministic random-weight checkpoint.

use crate::synth::{preset, with_overrides, write_checkpoint, SynthOptions};
use crate::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// t5-efficient-SIZE[-VARIATIONS] (tiny, mini, small, base, large, xl,
    /// xxl; nlN, elN, dlN, ffN, dmN, kvN, nhN) or t5-v1_1-gated-tiny.
    #[arg(long, default_value = super::common::DEFAULT_PRESET)]
    preset: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Override a config field, e.g. --set feed_forward_proj=gated-gelu --set vocab_size=1000.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Write an encoder-only checkpoint, as HF's T5EncoderModel saves one
    /// (no decoder, no head; the encoder equals the full checkpoint's of
    /// the same seed). The family member is `--set model_type=t5|mt5|umt5`.
    #[arg(long)]
    encoder_only: bool,
    /// Jitter RMSNorm weights by this relative standard deviation (0 = HF's init of all ones).
    #[arg(long, default_value_t = 0.0)]
    norm_jitter: f32,
    /// Store every tensor in f32, f16 or bf16 (the same draws, rounded);
    /// written one tensor at a time, so any shape fits in memory.
    #[arg(long, default_value = "f32", value_parser = super::common::parse_dtype)]
    dtype: crate::model::WeightFormat,
    #[arg(long)]
    out: PathBuf,
    /// Replace existing files in OUT.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> Result<()> {
    let cfg = preset(&a.preset).map_err(Error::Other)?;
    let cfg = with_overrides(&cfg, &a.overrides).map_err(Error::Other)?;
    write_checkpoint(
        &a.out,
        &cfg,
        &SynthOptions {
            seed: a.seed,
            norm_jitter: a.norm_jitter,
            encoder_only: a.encoder_only,
            dtype: Some(a.dtype),
            ..Default::default()
        },
        a.force,
    )?;
    eprintln!(
        "wrote {} ({} parameters)",
        a.out.display(),
        crate::model::T5Model::load(&a.out)?.num_parameters()
    );
    Ok(())
}
