//! Which layers can go to int8: the evidence behind `FormatPolicy::for_dtype`.
//!
//! For a checkpoint directory (default: a small synthesized one), prints the
//! teacher-forced logit error and greedy agreement of several policies against
//! f32 on the built-in prompts. `cargo run --release --example quant_policy -- DIR`

use t5edge::model::{FormatPolicy, WeightFormat as F};
use t5edge::quantize::accuracy::{builtin_prompts, compare};
use t5edge::T5Model;

fn main() -> t5edge::Result<()> {
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let d = std::env::temp_dir().join(format!("t5edge-policy-{}", std::process::id()));
            let cfg = t5edge::synth::with_overrides(
                &t5edge::synth::preset("t5-efficient-tiny-nl2").map_err(t5edge::Error::Other)?,
                &[
                    "vocab_size=2000".into(),
                    "feed_forward_proj=gated-gelu".into(),
                    "tie_word_embeddings=false".into(),
                ],
            )
            .map_err(t5edge::Error::Other)?;
            t5edge::synth::write_checkpoint(
                &d,
                &cfg,
                &t5edge::synth::SynthOptions {
                    seed: 5,
                    norm_jitter: 0.2,
                    ..Default::default()
                },
                true,
            )?;
            d
        }
    };
    let reference = T5Model::load(&dir)?;
    let prompts = builtin_prompts(reference.config.vocab_size);
    let policies = [
        ("all f16", FormatPolicy::all(F::F16)),
        ("all int8", FormatPolicy::all(F::Int8)),
        ("int8, wo f16 (default)", FormatPolicy::for_dtype(F::Int8)),
        (
            "int8, wo f32",
            FormatPolicy {
                ffn_out: F::F32,
                ..FormatPolicy::all(F::Int8)
            },
        ),
        (
            "int8 body, f32 head",
            FormatPolicy {
                lm_head: F::F32,
                ..FormatPolicy::for_dtype(F::Int8)
            },
        ),
        (
            "int8 g64, wo f16",
            FormatPolicy {
                group_size: 64,
                ..FormatPolicy::for_dtype(F::Int8)
            },
        ),
    ];
    println!("| policy | max rel logit err | mean rel logit err | greedy agreement |");
    println!("|---|---|---|---|");
    for (name, p) in policies {
        let mut m = reference.clone();
        m.convert(p)?;
        let a = compare(&reference, &m, &prompts, 32)?;
        println!(
            "| {name} | {:.2e} | {:.2e} | {}/{} |",
            a.max_rel_err, a.mean_rel_err, a.greedy_agree, a.greedy_total
        );
    }
    Ok(())
}
