//! The model's shape, parsed from a Hugging Face `config.json` and validated.
//!
//! Fields follow HF's `T5Config`, including its defaults and its way of deriving
//! the activation from `feed_forward_proj` (a saved `dense_act_fn` wins, as it
//! does in HF, because `PretrainedConfig` sets leftover keys last).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use t5edge_kernels::ops::Activation;

/// Dimensions above this are refused: no real T5 is near it, and it keeps
/// every product of two dimensions far from overflowing usize.
const MAX_DIM: usize = 1 << 20;

/// Which member of the family a checkpoint is (`model_type`). They share the
/// T5 code path; what differs is below and in the defaults of an absent field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// T5 v1.0, v1.1, flan, T5-Efficient: layer 0 of each stack holds the
    /// relative-attention bias every layer of the stack uses.
    #[default]
    T5,
    /// mT5: T5 v1.1's computation; HF's `MT5Config` defaults differ (250,112
    /// vocabulary, gated-gelu, untied head).
    Mt5,
    /// umT5: every self-attention layer (encoder and decoder) has its own
    /// relative-attention bias; cross-attention has none.
    Umt5,
}

impl ModelType {
    pub fn name(self) -> &'static str {
        match self {
            ModelType::T5 => "t5",
            ModelType::Mt5 => "mt5",
            ModelType::Umt5 => "umt5",
        }
    }

    /// HF's class prefix: `T5`, `MT5`, `UMT5`.
    pub fn class_prefix(self) -> &'static str {
        match self {
            ModelType::T5 => "T5",
            ModelType::Mt5 => "MT5",
            ModelType::Umt5 => "UMT5",
        }
    }

    /// Whether each self-attention layer has its own bias table (umT5).
    pub fn per_layer_bias(self) -> bool {
        self == ModelType::Umt5
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct T5Config {
    pub model_type: ModelType,
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f32,
    pub feed_forward_proj: String,
    #[serde(skip)]
    pub activation: Activation,
    pub gated: bool,
    pub tie_word_embeddings: bool,
    pub decoder_start_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    /// HF's `architectures`, as saved (informational: whether the decoder
    /// exists is read from the tensors, see `T5Model::is_encoder_only`).
    pub architectures: Vec<String>,
}

/// The raw JSON, with HF's defaults. Numbers are read as i64/f64 so a negative or
/// fractional value is reported as such rather than as a serde type error.
#[derive(Deserialize)]
struct Raw {
    vocab_size: Option<serde_json::Value>,
    d_model: Option<serde_json::Value>,
    d_kv: Option<serde_json::Value>,
    d_ff: Option<serde_json::Value>,
    num_layers: Option<serde_json::Value>,
    num_decoder_layers: Option<serde_json::Value>,
    num_heads: Option<serde_json::Value>,
    relative_attention_num_buckets: Option<serde_json::Value>,
    relative_attention_max_distance: Option<serde_json::Value>,
    layer_norm_epsilon: Option<serde_json::Value>,
    feed_forward_proj: Option<serde_json::Value>,
    dense_act_fn: Option<serde_json::Value>,
    is_gated_act: Option<serde_json::Value>,
    architectures: Option<serde_json::Value>,
    tie_word_embeddings: Option<serde_json::Value>,
    decoder_start_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
    pad_token_id: Option<serde_json::Value>,
    model_type: Option<serde_json::Value>,
}

impl T5Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<T5Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|msg| Error::Config {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parses and validates config JSON; the error names the offending field.
    pub fn from_json(text: &str) -> std::result::Result<T5Config, String> {
        let raw: Raw = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let model_type = match raw.model_type.as_ref().map(|t| t.as_str().unwrap_or("?")) {
            None | Some("t5") | Some("") => ModelType::T5,
            Some("mt5") => ModelType::Mt5,
            Some("umt5") => ModelType::Umt5,
            Some(t) => {
                return Err(format!(
                    "model_type {t:?} is not a T5 model (t5, mt5 or umt5)"
                ))
            }
        };
        let architectures = match &raw.architectures {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect())
                .ok_or("field architectures must be a list of class names")?,
        };
        // The heads HF adds on top of the stacks (classification, QA) keep
        // the stacks under `transformer.` and replace the LM head: not ours.
        if let Some(a) = architectures.iter().find(|a| {
            [
                "ForSequenceClassification",
                "ForTokenClassification",
                "ForQuestionAnswering",
            ]
            .iter()
            .any(|h| a.ends_with(h))
        }) {
            return Err(format!(
                "architectures {a:?}: task heads are not supported; t5edge runs {p}ForConditionalGeneration, {p}Model and {p}EncoderModel checkpoints",
                p = model_type.class_prefix()
            ));
        }
        // HF's MT5Config and UMT5Config differ from T5Config in the defaults
        // of these fields (a config.json may omit any of them).
        let (def_vocab, def_ff, def_layers, def_heads, def_proj, def_tied) = match model_type {
            ModelType::T5 => (32128, 2048, 6, 8, "relu", true),
            ModelType::Mt5 => (250112, 1024, 8, 6, "gated-gelu", false),
            ModelType::Umt5 => (250112, 1024, 8, 6, "gated-gelu", true),
        };
        let dim = |v: &Option<serde_json::Value>,
                   name: &str,
                   default: Option<usize>|
         -> std::result::Result<usize, String> {
            match v {
                None | Some(serde_json::Value::Null) => {
                    default.ok_or_else(|| format!("field {name} is missing"))
                }
                Some(x) => {
                    let n = x
                        .as_i64()
                        .ok_or_else(|| format!("field {name} must be an integer, found {x}"))?;
                    if n <= 0 {
                        return Err(format!("field {name} must be positive, found {n}"));
                    }
                    if n as u64 > MAX_DIM as u64 {
                        return Err(format!(
                            "field {name} = {n} is larger than the supported {MAX_DIM}"
                        ));
                    }
                    Ok(n as usize)
                }
            }
        };
        let token = |v: &Option<serde_json::Value>,
                     name: &str,
                     default: u32|
         -> std::result::Result<u32, String> {
            match v {
                None | Some(serde_json::Value::Null) => Ok(default),
                // HF allows a list of EOS ids; the first is the one generation stops on.
                Some(serde_json::Value::Array(a)) if !a.is_empty() => {
                    let n = a[0]
                        .as_u64()
                        .ok_or_else(|| format!("field {name} must hold token ids"))?;
                    u32::try_from(n).map_err(|_| format!("field {name} = {n} is out of range"))
                }
                Some(x) => {
                    let n = x.as_u64().ok_or_else(|| {
                        format!("field {name} must be a non-negative integer, found {x}")
                    })?;
                    u32::try_from(n).map_err(|_| format!("field {name} = {n} is out of range"))
                }
            }
        };
        let num_layers = dim(&raw.num_layers, "num_layers", Some(def_layers))?;
        let pad_token_id = token(&raw.pad_token_id, "pad_token_id", 0)?;
        let feed_forward_proj = match &raw.feed_forward_proj {
            None => def_proj.to_string(),
            Some(v) => v
                .as_str()
                .ok_or("field feed_forward_proj must be a string")?
                .to_string(),
        };
        let parts: Vec<&str> = feed_forward_proj.split('-').collect();
        let (mut gated, act_name) = match parts.as_slice() {
            [a] => (false, *a),
            ["gated", a] => (true, *a),
            _ => {
                return Err(format!(
                    "field feed_forward_proj {feed_forward_proj:?} is not `ACT` or `gated-ACT`"
                ))
            }
        };
        let mut act_name = if feed_forward_proj == "gated-gelu" {
            "gelu_new"
        } else {
            act_name
        }
        .to_string();
        if let Some(v) = &raw.dense_act_fn {
            act_name = v
                .as_str()
                .ok_or("field dense_act_fn must be a string")?
                .to_string();
        }
        // A saved `is_gated_act` wins over the projection's name, as
        // `dense_act_fn` does (HF sets leftover keys after deriving both).
        if let Some(v) = &raw.is_gated_act {
            gated = v
                .as_bool()
                .ok_or("field is_gated_act must be true or false")?;
        }
        let activation = match act_name.as_str() {
            "relu" => Activation::Relu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluNew,
            "gelu" => Activation::GeluErf,
            "silu" | "swish" => Activation::Silu,
            other => return Err(format!("activation {other:?} (from feed_forward_proj/dense_act_fn) is not supported; use relu, gelu, gelu_new or silu")),
        };
        let eps = match &raw.layer_norm_epsilon {
            None => 1e-6,
            Some(v) => v
                .as_f64()
                .ok_or("field layer_norm_epsilon must be a number")?,
        };
        if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
            return Err(format!(
                "field layer_norm_epsilon must be in (0, 1), found {eps}"
            ));
        }
        let tie_word_embeddings = match &raw.tie_word_embeddings {
            None => def_tied,
            Some(v) => v
                .as_bool()
                .ok_or("field tie_word_embeddings must be true or false")?,
        };
        let cfg = T5Config {
            model_type,
            vocab_size: dim(&raw.vocab_size, "vocab_size", Some(def_vocab))?,
            d_model: dim(&raw.d_model, "d_model", Some(512))?,
            d_kv: dim(&raw.d_kv, "d_kv", Some(64))?,
            d_ff: dim(&raw.d_ff, "d_ff", Some(def_ff))?,
            num_layers,
            num_decoder_layers: dim(
                &raw.num_decoder_layers,
                "num_decoder_layers",
                Some(num_layers),
            )?,
            num_heads: dim(&raw.num_heads, "num_heads", Some(def_heads))?,
            relative_attention_num_buckets: dim(
                &raw.relative_attention_num_buckets,
                "relative_attention_num_buckets",
                Some(32),
            )?,
            relative_attention_max_distance: dim(
                &raw.relative_attention_max_distance,
                "relative_attention_max_distance",
                Some(128),
            )?,
            layer_norm_epsilon: eps as f32,
            feed_forward_proj,
            activation,
            gated,
            tie_word_embeddings,
            decoder_start_token_id: token(
                &raw.decoder_start_token_id,
                "decoder_start_token_id",
                pad_token_id,
            )?,
            eos_token_id: token(&raw.eos_token_id, "eos_token_id", 1)?,
            pad_token_id,
            architectures,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field checks.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let v = self.vocab_size as u64;
        for (name, id) in [
            ("decoder_start_token_id", self.decoder_start_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if id as u64 >= v {
                return Err(format!("field {name} = {id} is not below vocab_size {v}"));
            }
        }
        // The fields are public, so a hand-built config may hold anything: check
        // each bound before multiplying.
        for (name, n) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.num_decoder_layers),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
            (
                "relative_attention_max_distance",
                self.relative_attention_max_distance,
            ),
        ] {
            if n == 0 || n > MAX_DIM {
                return Err(format!("field {name} = {n} is not in 1..={MAX_DIM}"));
            }
        }
        if self.num_heads * self.d_kv > MAX_DIM {
            return Err(format!(
                "num_heads x d_kv = {} x {} is larger than the supported {MAX_DIM}",
                self.num_heads, self.d_kv
            ));
        }
        // T5's bucketing gives the first half of the buckets (a quarter per side
        // when bidirectional) to exact distances and spreads the rest
        // logarithmically up to max_distance: that needs at least one exact bucket
        // per side and a max_distance beyond the exact range, or the log scale
        // divides by ln(1) = 0 (or goes negative) and indexes outside the table.
        let nb = self.relative_attention_num_buckets;
        if nb < 4 {
            return Err(format!(
                "field relative_attention_num_buckets = {nb} must be at least 4"
            ));
        }
        if self.relative_attention_max_distance <= nb / 2 {
            return Err(format!(
                "field relative_attention_max_distance = {} must be above relative_attention_num_buckets / 2 = {}",
                self.relative_attention_max_distance,
                nb / 2
            ));
        }
        if self.num_layers > 1024 || self.num_decoder_layers > 1024 {
            return Err("more than 1024 layers is not supported".into());
        }
        if self.vocab_size < 2 {
            return Err("field vocab_size must be at least 2".into());
        }
        if !(self.layer_norm_epsilon.is_finite()
            && self.layer_norm_epsilon > 0.0
            && self.layer_norm_epsilon < 1.0)
        {
            return Err(format!(
                "field layer_norm_epsilon must be in (0, 1), found {}",
                self.layer_norm_epsilon
            ));
        }
        Ok(())
    }

    /// `num_heads * d_kv`: the width of the attention projections.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// HF's class for this checkpoint: `{T5,MT5,UMT5}EncoderModel` when
    /// `encoder_only`, else `...ForConditionalGeneration`.
    pub fn class_name(&self, encoder_only: bool) -> String {
        let suffix = if encoder_only {
            "EncoderModel"
        } else {
            "ForConditionalGeneration"
        };
        format!("{}{suffix}", self.model_type.class_prefix())
    }

    /// Writes the config as HF `config.json`. Its `architectures` is the one
    /// read, else this type's `ForConditionalGeneration` class.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let architectures = if self.architectures.is_empty() {
            vec![self.class_name(false)]
        } else {
            self.architectures.clone()
        };
        serde_json::json!({
            "architectures": architectures,
            "model_type": self.model_type.name(),
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "d_kv": self.d_kv,
            "d_ff": self.d_ff,
            "num_layers": self.num_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "layer_norm_epsilon": self.layer_norm_epsilon as f64,
            "feed_forward_proj": self.feed_forward_proj,
            "dense_act_fn": match self.activation {
                Activation::Relu => "relu",
                Activation::GeluNew => "gelu_new",
                Activation::GeluErf => "gelu",
                Activation::Silu => "silu",
            },
            "is_gated_act": self.gated,
            "tie_word_embeddings": self.tie_word_embeddings,
            "decoder_start_token_id": self.decoder_start_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "is_encoder_decoder": true,
            "initializer_factor": 1.0,
            "dropout_rate": 0.1,
            "use_cache": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_hf() {
        let c = T5Config::from_json("{}").unwrap();
        assert_eq!(
            (c.d_model, c.num_layers, c.num_decoder_layers, c.num_heads),
            (512, 6, 6, 8)
        );
        assert_eq!(c.activation, Activation::Relu);
        assert!(c.tie_word_embeddings && !c.gated);
        assert_eq!(c.decoder_start_token_id, 0);
    }

    #[test]
    fn gated_gelu_means_gelu_new_and_dense_act_fn_wins() {
        let c = T5Config::from_json(r#"{"feed_forward_proj":"gated-gelu"}"#).unwrap();
        assert!(c.gated);
        assert_eq!(c.activation, Activation::GeluNew);
        let c = T5Config::from_json(r#"{"feed_forward_proj":"gelu"}"#).unwrap();
        assert_eq!(c.activation, Activation::GeluErf);
        let c = T5Config::from_json(r#"{"feed_forward_proj":"gated-gelu","dense_act_fn":"silu"}"#)
            .unwrap();
        assert_eq!(c.activation, Activation::Silu);
    }

    /// HF's MT5Config and UMT5Config defaults, not T5Config's, for absent
    /// fields; umT5 alone has a bias table per layer.
    #[test]
    fn mt5_and_umt5_defaults_follow_hf() {
        for (t, tied) in [("mt5", false), ("umt5", true)] {
            let c = T5Config::from_json(&format!(r#"{{"model_type":"{t}"}}"#)).unwrap();
            assert_eq!(
                (
                    c.vocab_size,
                    c.d_ff,
                    c.num_layers,
                    c.num_decoder_layers,
                    c.num_heads
                ),
                (250112, 1024, 8, 8, 6),
                "{t}"
            );
            assert!(c.gated && c.activation == Activation::GeluNew, "{t}");
            assert_eq!(c.tie_word_embeddings, tied, "{t}");
            assert_eq!(c.model_type.per_layer_bias(), t == "umt5");
            assert_eq!(
                c.class_name(true),
                format!("{}EncoderModel", t.to_uppercase())
            );
        }
        let c = T5Config::from_json(r#"{"feed_forward_proj":"gated-silu"}"#).unwrap();
        assert!(c.gated && c.activation == Activation::Silu);
        assert_eq!(c.class_name(false), "T5ForConditionalGeneration");
    }

    /// A saved `is_gated_act` wins over `feed_forward_proj`, as in HF.
    #[test]
    fn saved_is_gated_act_wins() {
        let c = T5Config::from_json(r#"{"feed_forward_proj":"relu","is_gated_act":true}"#).unwrap();
        assert!(c.gated && c.activation == Activation::Relu);
        let c = T5Config::from_json(r#"{"feed_forward_proj":"gated-gelu","is_gated_act":false}"#)
            .unwrap();
        assert!(!c.gated);
        // Round trip through the HF JSON keeps the kind.
        let c =
            T5Config::from_json(r#"{"model_type":"umt5","architectures":["UMT5EncoderModel"]}"#)
                .unwrap();
        let back = T5Config::from_json(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(back, c);
    }

    /// A umT5-XXL text encoder's config.json as diffusers pipelines ship it
    /// (UMT5EncoderModel), plus keys HF's UMT5 code does not read at
    /// inference (`is_encoder_decoder`, `output_past`, `scalable_attention`,
    /// `torch_dtype`), which are ignored as HF ignores them.
    #[test]
    fn a_umt5_xxl_text_encoder_config_reads() {
        let c = T5Config::from_json(
            r#"{"architectures": ["UMT5EncoderModel"], "classifier_dropout": 0.0, "d_ff": 10240,
                "d_kv": 64, "d_model": 4096, "decoder_start_token_id": 0, "dense_act_fn": "gelu_new",
                "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
                "initializer_factor": 1.0, "is_encoder_decoder": true, "is_gated_act": true,
                "layer_norm_epsilon": 1e-06, "model_type": "umt5", "num_decoder_layers": 24,
                "num_heads": 64, "num_layers": 24, "output_past": true, "pad_token_id": 0,
                "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
                "scalable_attention": true, "tie_word_embeddings": false,
                "tokenizer_class": "T5Tokenizer", "torch_dtype": "bfloat16", "use_cache": true,
                "vocab_size": 256384}"#,
        )
        .unwrap();
        assert_eq!(c.model_type, ModelType::Umt5);
        assert!(c.gated && c.activation == Activation::GeluNew && !c.tie_word_embeddings);
        assert_eq!((c.d_model, c.num_heads, c.vocab_size), (4096, 64, 256384));
        assert_eq!(c.class_name(true), "UMT5EncoderModel");
    }

    #[test]
    fn task_heads_are_refused_by_name() {
        for a in [
            "T5ForSequenceClassification",
            "MT5ForQuestionAnswering",
            "UMT5ForTokenClassification",
        ] {
            let e = T5Config::from_json(&format!(r#"{{"architectures":["{a}"]}}"#)).unwrap_err();
            assert!(e.contains(a) && e.contains("task heads"), "{e}");
        }
        for a in ["T5Model", "T5EncoderModel", "MT5ForConditionalGeneration"] {
            assert!(T5Config::from_json(&format!(r#"{{"architectures":["{a}"]}}"#)).is_ok());
        }
        assert!(T5Config::from_json(r#"{"architectures":"T5Model"}"#)
            .unwrap_err()
            .contains("architectures"));
    }

    #[test]
    fn bad_fields_are_named() {
        for (json, field) in [
            (r#"{"d_model":0}"#, "d_model"),
            (r#"{"d_model":-4}"#, "d_model"),
            (r#"{"num_heads":1.5}"#, "num_heads"),
            (r#"{"d_ff":1e30}"#, "d_ff"),
            (r#"{"vocab_size":10,"eos_token_id":12}"#, "eos_token_id"),
            (
                r#"{"feed_forward_proj":"gated-gelu-x"}"#,
                "feed_forward_proj",
            ),
            (r#"{"layer_norm_epsilon":-1}"#, "layer_norm_epsilon"),
            (r#"{"d_kv":99999999999}"#, "d_kv"),
            (
                r#"{"relative_attention_num_buckets":2}"#,
                "relative_attention_num_buckets",
            ),
            (
                r#"{"relative_attention_num_buckets":32,"relative_attention_max_distance":16}"#,
                "relative_attention_max_distance",
            ),
            (r#"{"num_heads":1048576,"d_kv":64}"#, "num_heads x d_kv"),
        ] {
            let e = T5Config::from_json(json).unwrap_err();
            assert!(e.contains(field), "{json}: {e}");
        }
        assert!(T5Config::from_json("{not json")
            .unwrap_err()
            .contains("JSON"));
        assert!(T5Config::from_json(r#"{"model_type":"bert"}"#)
            .unwrap_err()
            .contains("bert"));
    }
}
