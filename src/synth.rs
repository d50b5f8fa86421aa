//! Synthetic checkpoints: deterministic random weights in the exact layout of a
//! Hugging Face T5 checkpoint, for any T5-Efficient shape.
//!
//! Weights follow HF's `T5PreTrainedModel._init_weights` standard deviations, so
//! activations have realistic scales. The generator is splitmix64 with
//! Box-Muller in f64, rounded to f32: the same seed gives the same file.
//! A small synthetic SentencePiece-style tokenizer is written beside it (the
//! real T5 vocabulary is not ours to ship); text through it is gibberish by
//! construction, like the weights.

use crate::config::T5Config;
use crate::error::{Error, Result};
use crate::generate::rng::splitmix64;
use crate::model::WeightFormat;
use crate::weights::writer::{self, OutTensor, PlannedTensor};
use crate::weights::DType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The base sizes of the T5-Efficient family (Tay et al., 2021).
const BASES: [(&str, [usize; 5]); 7] = [
    // name: d_model, d_ff, d_kv, heads, layers (each side)
    ("tiny", [256, 1024, 64, 4, 4]),
    ("mini", [384, 1536, 64, 8, 4]),
    ("small", [512, 2048, 64, 8, 6]),
    ("base", [768, 3072, 64, 12, 12]),
    ("large", [1024, 4096, 64, 16, 24]),
    ("xl", [1024, 16384, 128, 32, 24]),
    ("xxl", [1024, 65536, 128, 128, 24]),
];

/// The config of a named preset: `t5-efficient-SIZE[-VAR...]` where each VAR is
/// `nlN` (both depths), `elN`, `dlN`, `ffN`, `dmN`, `kvN` or `nhN`, e.g.
/// `t5-efficient-tiny-nl2` or `t5-efficient-small-el16-dl8`; or
/// `t5-v1_1-gated-tiny`, the shape of ../shared's gated v1.1 test model.
pub fn preset(name: &str) -> std::result::Result<T5Config, String> {
    let mut json = serde_json::json!({ "vocab_size": 32128 });
    let set = |j: &mut serde_json::Value, k: &str, v: serde_json::Value| {
        j[k] = v;
    };
    if name == "t5-v1_1-gated-tiny" {
        json = serde_json::json!({
            "vocab_size": 32128, "d_model": 256, "d_ff": 1024, "d_kv": 32, "num_heads": 8,
            "num_layers": 2, "num_decoder_layers": 2, "feed_forward_proj": "gated-gelu",
            "tie_word_embeddings": false
        });
        return T5Config::from_json(&json.to_string());
    }
    let rest = name
        .strip_prefix("t5-efficient-")
        .ok_or_else(|| format!("unknown preset {name:?}: expected t5-efficient-SIZE[-VARIATIONS] or t5-v1_1-gated-tiny"))?;
    let mut parts = rest.split('-');
    let size = parts.next().unwrap_or("");
    let (_, [d, ff, kv, nh, nl]) = BASES
        .iter()
        .find(|(n, _)| *n == size)
        .ok_or_else(|| format!("unknown size {size:?} in preset {name:?}: use tiny, mini, small, base, large, xl or xxl"))?;
    for (k, v) in [
        ("d_model", d),
        ("d_ff", ff),
        ("d_kv", kv),
        ("num_heads", nh),
        ("num_layers", nl),
        ("num_decoder_layers", nl),
    ] {
        set(&mut json, k, (*v).into());
    }
    for var in parts {
        let split = var
            .find(|c: char| c.is_ascii_digit())
            .ok_or_else(|| format!("variation {var:?} has no number"))?;
        let (key, num) = var.split_at(split);
        let n: usize = num
            .parse()
            .map_err(|_| format!("variation {var:?} has a bad number"))?;
        let fields: &[&str] = match key {
            "nl" => &["num_layers", "num_decoder_layers"],
            "el" => &["num_layers"],
            "dl" => &["num_decoder_layers"],
            "ff" => &["d_ff"],
            "dm" => &["d_model"],
            "kv" => &["d_kv"],
            "nh" => &["num_heads"],
            _ => {
                return Err(format!(
                    "unknown variation {var:?}: use nl, el, dl, ff, dm, kv or nh"
                ))
            }
        };
        for f in fields {
            set(&mut json, f, n.into());
        }
    }
    T5Config::from_json(&json.to_string())
}

/// Applies `key=value` overrides (values parsed as JSON, else taken as strings).
pub fn with_overrides(
    cfg: &T5Config,
    overrides: &[String],
) -> std::result::Result<T5Config, String> {
    let mut json = cfg.to_hf_json();
    for o in overrides {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| format!("override {o:?} is not key=value"))?;
        // Only a field the config has: a typo must not vanish silently.
        if json.get(k).is_none() {
            let known: Vec<&str> = json
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(format!(
                "override {o:?}: {k:?} is not a T5 config field (known: {})",
                known.join(", ")
            ));
        }
        let v =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        if k == "model_type" {
            // The class names follow the new type (unless set too).
            if let Some(m) = json.as_object_mut() {
                m.insert("architectures".into(), serde_json::Value::Null);
            }
        }
        if k == "feed_forward_proj" {
            // Let the activation and gating follow the new projection, as in
            // a fresh HF config.
            if let Some(m) = json.as_object_mut() {
                m.remove("dense_act_fn");
                m.remove("is_gated_act");
            }
        }
        json[k] = v;
    }
    T5Config::from_json(&json.to_string())
}

/// splitmix64: tiny, fast, and the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// The generator `calls` draws of [`Rng::next_u64`] ahead (splitmix64's
    /// state is a counter), without drawing them.
    pub fn skipped(&self, calls: u64) -> Rng {
        Rng(self
            .0
            .wrapping_add(calls.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }

    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Skips `n` draws of [`Rng::normal`] in O(1) (a normal takes two).
    pub fn skip_normals(&mut self, n: u64) {
        *self = self.skipped(n.wrapping_mul(2));
    }
}

/// Options beyond the config.
#[derive(Clone, Debug, Default)]
pub struct SynthOptions {
    pub seed: u64,
    /// Multiply each RMSNorm weight by `1 + jitter * N(0,1)` (HF inits them to
    /// exactly 1, which makes greedy output of a tied model degenerate).
    pub norm_jitter: f32,
    /// Zero the `<pad>` row (id 0) of `shared.weight`. A tied random model
    /// greedily repeats `<pad>`, the decoder start token, whose own embedding
    /// dominates its logits; with that row zero its greedy text shows words
    /// (the embedded default of the CLI sets it). Off: HF's init.
    pub zero_pad_row: bool,
    /// Write no decoder and no head, as HF's `T5EncoderModel` saves a
    /// checkpoint. The encoder's tensors are those of the full checkpoint of
    /// the same seed (the decoder's values are drawn and dropped).
    pub encoder_only: bool,
    /// The dtype every tensor is stored in: f32 (`None`), or f16 / bf16, the
    /// same draws rounded to nearest, as `save_pretrained` writes a model
    /// loaded in that dtype.
    pub dtype: Option<WeightFormat>,
}

/// Gives a loaded f32 model's FFN hidden layers the outlier channels trained
/// T5 checkpoints have (their `wo` inputs reach magnitudes far above the
/// rest, the reason HF keeps `wo` in fp32 and int8 activations lose
/// accuracy there): every `every`-th hidden channel of each FFN is
/// multiplied by `2^shift` before `wo`. A ReLU block scales the channel's
/// `wi` row (ReLU commutes with a positive factor), a gated one its linear
/// half `wi_1`. With `compensate`, the channel's `wo` column is multiplied
/// by `2^-shift`, and as powers of two are exact the f32 logits keep their
/// bits (outliers read by small weights); without, the channels' share of
/// each output grows with them (outliers that dominate). For measuring
/// quantization policies on random weights, which have no outliers of their
/// own (docs/QUANTIZATION.md).
pub fn plant_ffn_outliers(
    model: &mut crate::model::T5Model,
    every: usize,
    shift: i32,
    compensate: bool,
) -> Result<()> {
    use crate::model::{ffn::FeedForward, Linear};
    use t5edge_kernels::ops::Activation;
    let (up, down) = (
        2f32.powi(shift),
        if compensate { 2f32.powi(-shift) } else { 1.0 },
    );
    let plant = |f: &mut FeedForward| -> Result<()> {
        let scaled = match f.wi_up.as_mut() {
            Some(linear_half) => linear_half,
            None if f.act == Activation::Relu => &mut f.wi,
            None => {
                return Err(Error::Request(format!(
                    "plant_ffn_outliers: an ungated {:?} FFN does not commute with a scale",
                    f.act
                )))
            }
        };
        if scaled.format() != WeightFormat::F32 || f.wo.format() != WeightFormat::F32 {
            return Err(Error::Request(
                "plant_ffn_outliers: needs f32 weights".into(),
            ));
        }
        let (d_ff, d) = (scaled.n, scaled.k);
        let mut wi = scaled.to_f32().into_owned();
        let mut wo = f.wo.to_f32().into_owned();
        for c in (0..d_ff).step_by(every.max(1)) {
            wi[c * d..(c + 1) * d].iter_mut().for_each(|v| *v *= up);
            for r in 0..f.wo.n {
                wo[r * d_ff + c] *= down;
            }
        }
        *scaled = Linear::f32(d_ff, d, wi.into());
        f.wo = Linear::f32(f.wo.n, d_ff, wo.into());
        Ok(())
    };
    for b in &mut model.encoder.blocks {
        plant(&mut b.ffn)?;
    }
    for b in model.decoder.iter_mut().flat_map(|d| &mut d.blocks) {
        plant(&mut b.ffn)?;
    }
    Ok(())
}

/// How one tensor's values are drawn.
#[derive(Clone, Copy)]
enum Init {
    /// `N(0, 1)`, the embedding (with the `<pad>` row zeroed if asked).
    Embedding,
    /// `N(0, std^2)`.
    Normal(f64),
    /// `1 + jitter · N(0, 1)`: an RMSNorm weight.
    Norm,
}

/// A tensor of the checkpoint: name, shape and how it is drawn.
struct Spec {
    name: String,
    shape: Vec<usize>,
    init: Init,
}

/// Whether `opts` leaves the tensor out of the file: an encoder-only
/// checkpoint has no decoder and no head. Its values are still "drawn" (the
/// generator skips them in O(1)), so the encoder's tensors are those of the
/// full checkpoint of the same seed.
fn dropped(spec: &Spec, opts: &SynthOptions) -> bool {
    opts.encoder_only && (spec.name.starts_with("decoder.") || spec.name == "lm_head.weight")
}

/// Every tensor of a random checkpoint, in HF names and shapes, in the order
/// they are drawn from the one generator (which is also the file's order).
fn specs(cfg: &T5Config) -> Vec<Spec> {
    let (d, inner, ff, v) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff, cfg.vocab_size);
    let mut out = vec![Spec {
        name: "shared.weight".into(),
        shape: vec![v, d],
        init: Init::Embedding,
    }];
    let mut normal = |name: String, shape: Vec<usize>, std: f64| {
        out.push(Spec {
            name,
            shape,
            init: Init::Normal(std),
        })
    };
    let df = d as f64;
    let mut norms: Vec<String> = Vec::new();
    for (stack, layers) in [
        ("encoder", cfg.num_layers),
        ("decoder", cfg.num_decoder_layers),
    ] {
        for i in 0..layers {
            let attn_kinds: &[(usize, &str)] = if stack == "encoder" {
                &[(0, "SelfAttention")]
            } else {
                &[(0, "SelfAttention"), (1, "EncDecAttention")]
            };
            for &(li, kind) in attn_kinds {
                let p = format!("{stack}.block.{i}.layer.{li}.{kind}");
                normal(
                    format!("{p}.q.weight"),
                    vec![inner, d],
                    (df * cfg.d_kv as f64).powf(-0.5),
                );
                normal(format!("{p}.k.weight"), vec![inner, d], df.powf(-0.5));
                normal(format!("{p}.v.weight"), vec![inner, d], df.powf(-0.5));
                normal(
                    format!("{p}.o.weight"),
                    vec![d, inner],
                    (inner as f64).powf(-0.5),
                );
                // umT5: every self-attention layer has its own table.
                if li == 0 && (i == 0 || cfg.model_type.per_layer_bias()) {
                    normal(
                        format!("{p}.relative_attention_bias.weight"),
                        vec![cfg.relative_attention_num_buckets, cfg.num_heads],
                        df.powf(-0.5),
                    );
                }
                norms.push(format!("{stack}.block.{i}.layer.{li}.layer_norm.weight"));
            }
            let li = if stack == "encoder" { 1 } else { 2 };
            let p = format!("{stack}.block.{i}.layer.{li}.DenseReluDense");
            if cfg.gated {
                normal(format!("{p}.wi_0.weight"), vec![ff, d], df.powf(-0.5));
                normal(format!("{p}.wi_1.weight"), vec![ff, d], df.powf(-0.5));
            } else {
                normal(format!("{p}.wi.weight"), vec![ff, d], df.powf(-0.5));
            }
            normal(
                format!("{p}.wo.weight"),
                vec![d, ff],
                (ff as f64).powf(-0.5),
            );
            norms.push(format!("{stack}.block.{i}.layer.{li}.layer_norm.weight"));
        }
        norms.push(format!("{stack}.final_layer_norm.weight"));
    }
    if !cfg.tie_word_embeddings {
        normal("lm_head.weight".into(), vec![v, d], 1.0);
    }
    for name in norms {
        out.push(Spec {
            name,
            shape: vec![d],
            init: Init::Norm,
        });
    }
    out
}

/// Values per parallel piece of a tensor's draws.
const PIECE: usize = 1 << 16;

/// Draws one tensor's values, continuing `rng`, as little-endian bytes of
/// `dtype`. Each value takes two draws of the generator, so the piece
/// starting at value `i` starts `2 i` draws ahead ([`Rng::skipped`]): the
/// pieces are drawn in parallel and the bytes are those of drawing in order.
fn draw(spec: &Spec, rng: &mut Rng, opts: &SynthOptions, dtype: DType) -> Vec<u8> {
    use rayon::prelude::*;
    let n: usize = spec.shape.iter().product();
    let size = dtype.size();
    let mut bytes = vec![0u8; n * size];
    let base = Rng(rng.0);
    bytes
        .par_chunks_mut(PIECE * size)
        .enumerate()
        .for_each(|(p, out)| {
            let mut r = base.skipped(2 * (p * PIECE) as u64);
            for o in out.chunks_exact_mut(size) {
                let z = r.normal();
                let v = match spec.init {
                    Init::Embedding => z as f32,
                    Init::Normal(std) => (z * std) as f32,
                    Init::Norm => (1.0 + opts.norm_jitter as f64 * z) as f32,
                };
                match dtype {
                    DType::F16 => o.copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                    DType::BF16 => o.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
                    _ => o.copy_from_slice(&v.to_le_bytes()),
                }
            }
        });
    *rng = base.skipped(2 * n as u64);
    if matches!(spec.init, Init::Embedding) && opts.zero_pad_row {
        // Zero is all-zero bytes in every dtype.
        let d = spec.shape[1];
        bytes[..d * size].fill(0);
    }
    bytes
}

/// The dtype `opts` asks for, checked: f32, f16 or bf16.
fn out_dtype(opts: &SynthOptions) -> Result<DType> {
    match opts.dtype {
        None | Some(WeightFormat::F32) => Ok(DType::F32),
        Some(WeightFormat::F16) => Ok(DType::F16),
        Some(WeightFormat::Bf16) => Ok(DType::BF16),
        Some(other) => Err(Error::Request(format!(
            "synth writes f32, f16 or bf16 checkpoints, not {} (quantize one instead)",
            other.name()
        ))),
    }
}

/// The tensors of a random checkpoint, in HF names and shapes, all in memory
/// (small models and tests; [`write_checkpoint`] streams instead).
pub fn tensors(cfg: &T5Config, opts: &SynthOptions) -> Vec<OutTensor> {
    let mut rng = Rng::new(opts.seed);
    let dtype = out_dtype(opts).unwrap_or(DType::F32);
    specs(cfg)
        .into_iter()
        .filter_map(|s| {
            if dropped(&s, opts) {
                rng.skip_normals(s.shape.iter().product::<usize>() as u64);
                return None;
            }
            let data = draw(&s, &mut rng, opts, dtype);
            Some(OutTensor {
                data,
                name: s.name,
                dtype,
                shape: s.shape,
            })
        })
        .collect()
}

/// Writes `config.json`, `model.safetensors` and a synthetic `tokenizer.json`
/// into `dir` (created if needed). Existing files are kept unless `force`.
/// The weights are drawn and written one tensor at a time (atomically, as
/// one file): memory stays that of the largest tensor, so a T5-XXL shape
/// writes on a machine that could not hold it in f32.
pub fn write_checkpoint(
    dir: &Path,
    cfg: &T5Config,
    opts: &SynthOptions,
    force: bool,
) -> Result<()> {
    let dtype = out_dtype(opts)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let files = ["config.json", "model.safetensors", "tokenizer.json"];
    for f in files {
        writer::check_clobber(&dir.join(f), force)?;
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("t5edge_synth_seed".to_string(), opts.seed.to_string());
    // The generator's position at each kept tensor: dropped tensors between
    // kept ones are skipped, not drawn.
    let mut rng = Rng::new(opts.seed);
    let mut specs_at: Vec<(Spec, Rng)> = Vec::new();
    for s in specs(cfg) {
        let n = s.shape.iter().product::<usize>() as u64;
        if !dropped(&s, opts) {
            specs_at.push((s, Rng(rng.0)));
        }
        rng.skip_normals(n);
    }
    let plan: Vec<PlannedTensor> = specs_at
        .iter()
        .map(|(s, _)| PlannedTensor {
            name: s.name.clone(),
            dtype,
            shape: s.shape.clone(),
            bytes: s.shape.iter().product::<usize>() * dtype.size(),
        })
        .collect();
    let path = dir.join("model.safetensors");
    writer::write_streaming(&path, force, &plan, &meta, |i, w| {
        let (spec, at) = &specs_at[i];
        w.write_all(&draw(spec, &mut Rng(at.0), opts, dtype))
            .map_err(|e| Error::io(&path, e))
    })?;
    let tok = serde_json::to_vec_pretty(&tokenizer_json(cfg.vocab_size)).unwrap_or_default();
    writer::write_atomic(&dir.join("tokenizer.json"), force, |w| w.write_all(&tok))?;
    let mut cfg = cfg.clone();
    if opts.encoder_only {
        cfg.architectures = vec![cfg.class_name(true)];
    }
    let mut cfg_json = cfg.to_hf_json();
    if dtype != DType::F32 {
        // What `save_pretrained` records for a model in that dtype.
        let name = if dtype == DType::BF16 {
            "bfloat16"
        } else {
            "float16"
        };
        cfg_json["torch_dtype"] = name.into();
    }
    let cfg_json = serde_json::to_vec_pretty(&cfg_json).unwrap_or_default();
    writer::write_atomic(&dir.join("config.json"), force, |w| w.write_all(&cfg_json))?;
    Ok(())
}

/// A T5-style Unigram tokenizer over a small synthetic vocabulary: `<pad>`,
/// `</s>`, `<unk>`, single characters and some common English words, with
/// `<extra_id_N>` sentinels at the top ids as in T5.
pub fn tokenizer_json(model_vocab: usize) -> serde_json::Value {
    const WORDS: &str = "the of and to in is that for it as was with on be by at this are from or an which have not \
        translate English German French summarize question answer quick brown fox jumps over lazy dog near riverbank \
        while children watch hello world";
    let mut vocab: Vec<(String, f64)> = vec![
        ("<pad>".into(), 0.0),
        ("</s>".into(), 0.0),
        ("<unk>".into(), 0.0),
    ];
    vocab.push(("\u{2581}".into(), -2.0));
    for w in WORDS.split_whitespace() {
        vocab.push((format!("\u{2581}{w}"), -4.0 - w.len() as f64 * 0.01));
    }
    for c in (33u8..127).map(|b| b as char) {
        vocab.push((c.to_string(), -8.0));
        vocab.push((format!("\u{2581}{c}"), -8.5));
    }
    let n_extra = 100.min(model_vocab.saturating_sub(vocab.len()));
    // Pseudo-words fill the rest of the model's rows, so every id the model
    // can produce decodes to something visible. Their score is far below any
    // spelling from single characters, so they never change how text
    // encodes.
    let fill = model_vocab.saturating_sub(vocab.len() + n_extra);
    for i in 0..fill {
        vocab.push((format!("\u{2581}{}", pseudo_word(i)), -100.0));
    }
    let base = vocab.len();
    let mut added = vec![];
    for (id, s) in ["<pad>", "</s>", "<unk>"].iter().enumerate() {
        added.push(added_token(id, s));
    }
    for i in 0..n_extra {
        let id = base + n_extra - 1 - i;
        added.push(added_token(id, &format!("<extra_id_{i}>")));
    }
    for i in (0..n_extra).rev() {
        vocab.push((format!("<extra_id_{i}>"), 0.0));
    }
    let meta = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, meta.clone()]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}
        },
        "decoder": meta,
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false}
    })
}

/// The `i`-th of 343,000 distinct pronounceable three-syllable words.
fn pseudo_word(i: usize) -> String {
    const C: &[u8] = b"bdfgklmnprstvz";
    const V: &[u8] = b"aeiou";
    let syllable = |s: usize| [C[s % 14] as char, V[s / 14 % 5] as char];
    [i % 70, i / 70 % 70, i / 4900 % 70]
        .iter()
        .flat_map(|&s| syllable(s))
        .collect()
}

fn added_token(id: usize, content: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
}

/// The preset of the model the front ends run when given none (the CLI
/// without `--model`, Python's `T5()`), written by [`cached`] in its demo form.
pub const DEFAULT_PRESET: &str = "t5-efficient-tiny-nl2";

/// The synthetic checkpoint of `preset` (seed 0; `demo`: with a zero `<pad>`
/// embedding row) in the cache ($T5EDGE_CACHE, else $XDG_CACHE_HOME/t5edge,
/// else ~/.cache/t5edge), written on first use: what the front ends run
/// without a model (the CLI's default and `--preset`, Python's `T5()`).
pub fn cached(preset: &str, demo: bool) -> Result<PathBuf> {
    // The name becomes a directory name: keep it to what presets are made of,
    // so nothing like `../` reaches the path.
    if preset.is_empty()
        || !preset
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::Request(format!(
            "preset {preset:?} is not a preset name (see t5edge synth --help)"
        )));
    }
    let cfg = self::preset(preset).map_err(Error::Request)?;
    let base = std::env::var_os("T5EDGE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("t5edge")))
        .or_else(|| {
            std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache").join("t5edge"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("t5edge"));
    let dir = base.join(format!(
        "synth-{preset}-seed0{}",
        if demo { "-demo" } else { "" }
    ));
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "writing the synthetic {preset} (random weights, seed 0) to {}",
            dir.display()
        );
        write_checkpoint(
            &dir,
            &cfg,
            &SynthOptions {
                seed: 0,
                norm_jitter: 0.0,
                zero_pad_row: demo,
                ..Default::default()
            },
            true,
        )?;
    } else {
        eprintln!(
            "using the synthetic {preset} (random weights, seed 0) at {}",
            dir.display()
        );
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_variations() {
        let c = preset("t5-efficient-tiny-nl2").unwrap();
        assert_eq!(
            (
                c.d_model,
                c.d_ff,
                c.num_heads,
                c.d_kv,
                c.num_layers,
                c.num_decoder_layers
            ),
            (256, 1024, 4, 64, 2, 2)
        );
        let c = preset("t5-efficient-small-el16-dl8").unwrap();
        assert_eq!(
            (c.d_model, c.num_layers, c.num_decoder_layers),
            (512, 16, 8)
        );
        assert!(preset("t5-efficient-huge").unwrap_err().contains("huge"));
        assert!(preset("t5-efficient-tiny-zz3").unwrap_err().contains("zz3"));
    }

    /// An encoder-only checkpoint is the full one minus decoder and head.
    #[test]
    fn encoder_only_is_the_full_checkpoint_without_decoder() {
        let cfg = preset("t5-efficient-tiny-nl2").unwrap();
        let sets = [
            "d_model=32",
            "d_ff=48",
            "num_heads=2",
            "d_kv=8",
            "vocab_size=64",
        ];
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        for extra in [
            "tie_word_embeddings=true",
            "tie_word_embeddings=false",
            "model_type=umt5",
        ] {
            let mut all = sets.clone();
            all.push(extra.into());
            let cfg = with_overrides(&cfg, &all).unwrap();
            let mut opts = SynthOptions {
                seed: 2,
                norm_jitter: 0.3,
                ..Default::default()
            };
            let full = tensors(&cfg, &opts);
            opts.encoder_only = true;
            let enc = tensors(&cfg, &opts);
            let kept: Vec<&OutTensor> = full
                .iter()
                .filter(|t| !t.name.starts_with("decoder.") && t.name != "lm_head.weight")
                .collect();
            assert_eq!(enc.len(), kept.len(), "{extra}");
            for (a, b) in enc.iter().zip(kept) {
                assert_eq!((&a.name, &a.data), (&b.name, &b.data), "{extra}");
            }
        }
    }

    #[test]
    fn skipping_normals_lands_where_drawing_them_does() {
        let (mut a, mut b) = (Rng::new(4), Rng::new(4));
        for _ in 0..1001 {
            a.normal();
        }
        b.skip_normals(1001);
        assert_eq!(a.normal(), b.normal());
    }

    #[test]
    fn rng_is_deterministic_and_roughly_normal() {
        let a: Vec<f64> = {
            let mut r = Rng::new(3);
            (0..4).map(|_| r.normal()).collect()
        };
        let b: Vec<f64> = {
            let mut r = Rng::new(3);
            (0..4).map(|_| r.normal()).collect()
        };
        assert_eq!(a, b);
        let mut r = Rng::new(9);
        let xs: Vec<f64> = (0..20000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }
}
