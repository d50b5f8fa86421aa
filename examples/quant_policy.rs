//! Which layers can go to int8: the evidence behind `FormatPolicy::for_dtype`.
//!
//! For each checkpoint directory, prints the teacher-forced logit error and
//! greedy agreement of several policies against f32 on the built-in prompts,
//! as the Markdown tables of docs/QUANTIZATION.md, headed by the ISA level and
//! CPU they were measured on: once as the checkpoint is, once with the FFN
//! outlier channels of trained T5 checkpoints planted in it
//! (`synth::plant_ffn_outliers`, which leaves the f32 model's logits as
//! they are).
//!
//! `cargo run --release --example quant_policy -- [DIR...]`
//!
//! Without a directory it runs the two reference checkpoints in
//! `../shared/models` beside the repository (or `$T5EDGE_SHARED/models`),
//! which is what the docs show; when those are absent it says so and runs a
//! small synthesized gated checkpoint instead. `T5EDGE_ISA` picks the level.

use std::path::{Path, PathBuf};
use t5edge::model::{FormatPolicy, WeightFormat as F};
use t5edge::quantize::accuracy::{builtin_prompts, compare};
use t5edge::T5Model;

/// The reference checkpoints the docs' tables come from.
const SHARED_MODELS: [&str; 2] = ["t5-efficient-tiny-nl2-synth", "t5-v1_1-gated-synth"];

fn main() -> t5edge::Result<()> {
    t5edge::runtime::configure_from_env()?;
    // (heading, directory) per table.
    let mut dirs: Vec<(String, PathBuf)> = std::env::args()
        .skip(1)
        .map(|d| {
            let d = PathBuf::from(d);
            let name = d
                .file_name()
                .map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into());
            (name, d)
        })
        .collect();
    // Keeps a synthesized checkpoint alive until the end.
    let mut _tmp = None;
    if dirs.is_empty() {
        let models = shared_root().join("models");
        let shared: Vec<(String, PathBuf)> = SHARED_MODELS
            .iter()
            .map(|m| (m.to_string(), models.join(m)))
            .collect();
        if shared.iter().all(|(_, d)| d.join("config.json").is_file()) {
            dirs = shared;
        } else {
            eprintln!(
                "{} does not hold {}: the tables in docs/QUANTIZATION.md come from those; \
                 running a small synthesized gated checkpoint instead (pass DIR... to choose)",
                models.display(),
                SHARED_MODELS.join(" and ")
            );
            let tmp = tempfile::tempdir().map_err(|e| t5edge::Error::Other(e.to_string()))?;
            synth_gated(tmp.path())?;
            dirs.push((
                "synthesized gated t5-efficient-tiny-nl2 (vocab 2000, seed 5)".into(),
                tmp.path().to_path_buf(),
            ));
            _tmp = Some(tmp);
        }
    }
    let isa = t5edge_kernels::dispatch::active();
    let features = t5edge_kernels::dispatch::features().names().join(" ");
    for (i, (name, dir)) in dirs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{name}, ISA level {isa}, CPU {} ({features}):", cpu_model());
        println!();
        table(dir, None)?;
        for (compensate, how) in [
            (
                true,
                format!("its wo column x2^-{OUTLIER_SHIFT}: the same f32 logits"),
            ),
            (false, "wo as it is: the channels dominate".to_string()),
        ] {
            println!();
            println!(
                "{name} with outlier channels (every {OUTLIER_EVERY}th FFN hidden channel x2^{OUTLIER_SHIFT}, {how}):"
            );
            println!();
            table(dir, Some((OUTLIER_EVERY, OUTLIER_SHIFT, compensate)))?;
        }
    }
    Ok(())
}

/// The planted outliers: 8 of tiny's 1024 hidden channels, 64x the others.
const OUTLIER_EVERY: usize = 128;
const OUTLIER_SHIFT: i32 = 6;

/// One Markdown table: every policy against the f32 model of `dir`, with
/// outliers planted as `outliers` says.
fn table(dir: &Path, outliers: Option<(usize, i32, bool)>) -> t5edge::Result<()> {
    let mut reference = T5Model::load(dir)?;
    if let Some((every, shift, compensate)) = outliers {
        t5edge::synth::plant_ffn_outliers(&mut reference, every, shift, compensate)?;
    }
    let prompts = builtin_prompts(reference.config.vocab_size);
    let policies = [
        ("all f16", FormatPolicy::all(F::F16)),
        ("all int8", FormatPolicy::all(F::Int8)),
        ("int8, wo w8a16 (default)", FormatPolicy::for_dtype(F::Int8)),
        (
            "int8, wo f16 (the default before)",
            FormatPolicy {
                ffn_out: F::F16,
                ..FormatPolicy::all(F::Int8)
            },
        ),
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
            "int8 g64, wo w8a16",
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

/// `../shared` beside the repository, or `$T5EDGE_SHARED` (as the tests find it).
fn shared_root() -> PathBuf {
    std::env::var_os("T5EDGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("shared")
        })
}

/// The CPU's model name (Linux), for the tables' heading.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A small gated-gelu, untied checkpoint with jittered norms, when ../shared is absent.
fn synth_gated(dir: &Path) -> t5edge::Result<()> {
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
        dir,
        &cfg,
        &t5edge::synth::SynthOptions {
            seed: 5,
            norm_jitter: 0.2,
            ..Default::default()
        },
        true,
    )
}
