//! `t5edge inspect`: what a checkpoint holds and what this CPU will run it with.

use super::common::ModelArgs;
use crate::weights::DType;
use crate::Result;
use std::collections::BTreeMap;
use t5edge_kernels::dispatch;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let (model, dir) = a.model.load(Default::default())?;
    let store = crate::weights::WeightStore::open_dir(
        &dir,
        crate::weights::LoadOptions {
            mmap: !a.model.no_mmap,
        },
    )?;
    let mut by_dtype: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut non_finite: Vec<String> = Vec::new();
    for f in &store.files {
        for (name, info) in &f.tensors {
            let e = by_dtype.entry(info.dtype.name()).or_default();
            e.0 += 1;
            e.1 += info.end - info.start;
            let bytes = f.tensor_bytes(info);
            let bad = match info.dtype {
                DType::F32 => bytes
                    .chunks_exact(4)
                    .filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
                    .count(),
                DType::F16 => bytes
                    .chunks_exact(2)
                    .filter(|c| !half::f16::from_le_bytes([c[0], c[1]]).is_finite())
                    .count(),
                DType::BF16 => bytes
                    .chunks_exact(2)
                    .filter(|c| !half::bf16::from_le_bytes([c[0], c[1]]).is_finite())
                    .count(),
                _ => 0,
            };
            if bad > 0 {
                non_finite.push(format!("{name} ({bad} NaN/Inf values)"));
            }
        }
    }
    let (off_lines, int8_all) = store
        .files
        .iter()
        .map(crate::weights::quantized::int8_off_lines)
        .fold((0, 0), |(o, a), (fo, fa)| (o + fo, a + fa));
    let feats = dispatch::features().names();
    let isa = dispatch::active();
    if a.json {
        let tensors: BTreeMap<_, _> = by_dtype
            .iter()
            .map(|(k, (n, b))| (k.to_string(), serde_json::json!({"tensors": n, "bytes": b})))
            .collect();
        out!(
            "{}",
            serde_json::json!({
                "model": dir,
                "config": model.config,
                "class": model.config.class_name(model.is_encoder_only()),
                "encoder_only": model.is_encoder_only(),
                "parameters": model.num_parameters(),
                "dtypes": tensors,
                "non_finite": non_finite,
                "int8_matrices": int8_all,
                "int8_off_cache_lines": off_lines,
                "cpu_features": feats,
                "isa": isa.name(),
                "isa_available": dispatch::available().iter().map(|i| i.name()).collect::<Vec<_>>(),
            })
        )?;
        return Ok(());
    }
    let c = &model.config;
    let encoder_only = model.is_encoder_only();
    out!("model       {}", dir.display())?;
    out!(
        "class       {}{}",
        c.class_name(encoder_only),
        if encoder_only {
            " (encoder only: no decoder tensors; encode and embed work, decoding refuses)"
        } else {
            ""
        }
    )?;
    let layers = if encoder_only {
        format!("{} (encoder)", c.num_layers)
    } else {
        format!("{}+{}", c.num_layers, c.num_decoder_layers)
    };
    out!(
        "shape       d_model {} d_ff {} heads {} x d_kv {} layers {layers} vocab {}",
        c.d_model,
        c.d_ff,
        c.num_heads,
        c.d_kv,
        c.vocab_size
    )?;
    out!(
        "ffn         {} ({}{}), lm head {}",
        c.feed_forward_proj,
        if c.gated { "gated " } else { "" },
        format!("{:?}", c.activation).to_lowercase(),
        if encoder_only {
            "none"
        } else if c.tie_word_embeddings {
            "tied, d_model^-0.5 rescale"
        } else {
            "untied"
        }
    )?;
    out!(
        "buckets     {} (max distance {}){}, eps {:e}",
        c.relative_attention_num_buckets,
        c.relative_attention_max_distance,
        if c.model_type.per_layer_bias() {
            ", a table per layer (umT5)"
        } else {
            ", layer 0's table shared"
        },
        c.layer_norm_epsilon
    )?;
    out!("parameters  {}", model.num_parameters())?;
    for (dt, (n, b)) in &by_dtype {
        out!("tensors     {dt}: {n} tensors, {b} bytes")?;
    }
    if off_lines > 0 {
        out!(
            "layout      {off_lines} of {int8_all} int8 matrices off 64-byte lines (written by an older t5edge): the same results, prefill slower; `t5edge quantize` the original again to fix"
        )?;
    } else if int8_all > 0 {
        out!("layout      int8 matrices on 64-byte lines")?;
    }
    if non_finite.is_empty() {
        out!("values      all finite")?;
    } else {
        out!("values      NaN/Inf in: {}", non_finite.join(", "))?;
    }
    out!("cpu         {}", feats.join(" "))?;
    out!(
        "isa         {isa} (available: {})",
        dispatch::available()
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    Ok(())
}
