//! `t5edge quantize`: an HF checkpoint in, an int8 or f16 directory out.

use super::common::setup;
use crate::model::WeightFormat;
use crate::quantize::{accuracy, quantize, QuantizeOptions};
use crate::{Result, T5Model};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The source checkpoint directory (f32, f16 or bf16; single or sharded safetensors).
    #[arg(long)]
    model: PathBuf,
    /// int8 or f16.
    #[arg(long, value_parser = parse_quantized_dtype)]
    dtype: WeightFormat,
    /// int8 scale group along the input dimension (0 = one scale per output row; else a multiple of 4).
    #[arg(long, default_value_t = 0)]
    group_size: usize,
    /// The output directory (model.safetensors, config.json and the tokenizer files).
    #[arg(long)]
    out: PathBuf,
    /// With --dtype int8: the FFN output projections (wo) with int8
    /// activations too, instead of 16-bit ones: the whole model in int8 as
    /// ONNX Runtime and CTranslate2 have it (the fastest on VNNI CPUs); less
    /// accurate where wo's inputs carry outliers (docs/QUANTIZATION.md).
    #[arg(long)]
    int8_ffn_out: bool,
    /// Replace an existing OUT.
    #[arg(long)]
    force: bool,
    /// Skip the accuracy summary against the source.
    #[arg(long)]
    no_check: bool,
    /// Worker threads (default: $T5EDGE_THREADS, else all cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

/// What quantize writes: int8 or f16 (f32 is what it reads).
fn parse_quantized_dtype(s: &str) -> std::result::Result<WeightFormat, String> {
    match WeightFormat::parse(s) {
        Some(f) if matches!(f, WeightFormat::Int8 | WeightFormat::F16) => Ok(f),
        _ => Err("quantize writes int8 or f16".into()),
    }
}

pub fn run(a: Args) -> Result<()> {
    setup(a.threads.map(usize::from))?;
    let dtype = a.dtype;
    let mut opts = QuantizeOptions::new(dtype, a.group_size);
    if a.int8_ffn_out {
        if dtype != WeightFormat::Int8 {
            return Err(crate::Error::Request(
                "--int8-ffn-out goes with --dtype int8".into(),
            ));
        }
        opts.policy.ffn_out = dtype;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let w = quantize(&a.model, &a.out, opts, a.force, |i, n, name| {
        bar.set_length(n as u64);
        bar.set_position(i as u64 + 1);
        bar.set_message(name.to_string());
    });
    bar.finish_and_clear();
    let w = w?;
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!(
        "wrote {} ({} tensors): {:.1} MB from {:.1} MB ({:.1}%)",
        w.out.display(),
        w.tensors,
        mb(w.out_bytes),
        mb(w.source_bytes),
        100.0 * w.out_bytes as f64 / w.source_bytes as f64
    );
    if !a.no_check {
        let src = T5Model::load(&a.model)?;
        let q = T5Model::load(&a.out)?;
        let acc = accuracy::compare(
            &src,
            &q,
            &accuracy::builtin_prompts(src.config.vocab_size),
            32,
        )?;
        if src.is_encoder_only() {
            eprintln!(
                "accuracy on {} built-in prompts (encoder-only): encoder states max rel err {:.2e}, mean {:.2e}",
                acc.prompts, acc.max_rel_err, acc.mean_rel_err
            );
        } else {
            eprintln!(
                "accuracy on {} built-in prompts: logits max rel err {:.2e}, mean {:.2e}; greedy agrees on {}/{} tokens before the first difference",
                acc.prompts, acc.max_rel_err, acc.mean_rel_err, acc.greedy_agree, acc.greedy_total
            );
        }
    }
    Ok(())
}
