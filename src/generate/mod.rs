//! Decoding: from encoder output to generated token ids.
//!
//! [`generate`] dispatches on [`GenerateOptions`] the way HF's
//! `GenerationMixin.generate` does: `num_beams > 1` runs [`beam_search`],
//! `do_sample` runs [`sample`], anything else [`greedy`]. The names and defaults
//! of the options are HF's `GenerationConfig`'s, and each strategy is a port of
//! HF's (4.57) so the same options give the same tokens (and, for beam search,
//! the same `sequences_scores`).
//!
//! ```
//! use t5edge::generate::{generate, GenerateOptions};
//! # let dir = tempfile::tempdir().unwrap();
//! # let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
//! # let cfg = t5edge::synth::with_overrides(&cfg, &["d_model=64".into(), "d_ff=128".into(),
//! #     "vocab_size=1000".into(), "num_heads=2".into(), "d_kv=16".into()]).unwrap();
//! # t5edge::synth::write_checkpoint(dir.path(), &cfg, &Default::default(), false).unwrap();
//! let model = t5edge::T5Model::load(dir.path())?;
//! let opts = GenerateOptions::default().max_new_tokens(8).num_beams(4);
//! let out = generate(&model, &[&[37, 12, 1]], &opts)?;
//! assert_eq!(out[0].sequences.len(), 1);
//! assert!(out[0].scores.is_some());
//! # Ok::<(), t5edge::Error>(())
//! ```

mod batch;
mod beam;
mod drafted;
mod greedy;
pub mod processors;
mod request;
pub mod rng;
mod sampling;
mod stream;
pub mod waves;

pub use batch::{DecodeBatch, Finished, Prefilled};
pub use beam::{beam_search, Hypothesis};
pub use greedy::greedy;
pub use request::{document_from_json, parse_json, GenerateRequest, Prompt, ScoreRequest};
pub use rng::DecodeRng;
pub use sampling::sample;
pub use stream::{generate_stream, generate_stream_batch};

use crate::model::T5Model;
use crate::{Error, Result};

/// Bounds that keep a request from exhausting memory or time: a prompt longer
/// than `max_input_tokens` or a `max_new_tokens` above `max_new_tokens_limit` is
/// refused with a clear error instead of running out of memory. Set by whoever
/// serves requests (the CLI's `--max-input-tokens`), never by a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// Refuse prompts longer than this many tokens (bounds memory and time).
    #[arg(long, default_value_t = Limits::default().max_input_tokens)]
    pub max_input_tokens: usize,
    /// Refuse a max_new_tokens above this.
    #[arg(skip = Limits::default().max_new_tokens_limit)]
    pub max_new_tokens_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_tokens: 8192,
            max_new_tokens_limit: 8192,
        }
    }
}

/// HF's `early_stopping`: when beam search stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EarlyStopping {
    /// `False` (HF's default): stop when a heuristic says no running beam can
    /// beat the finished ones.
    #[default]
    Heuristic,
    /// `True`: stop as soon as `num_beams` hypotheses are finished.
    Finished,
    /// `"never"`: the canonical rule; stop only when no running beam can
    /// possibly beat the finished ones.
    Never,
}

impl EarlyStopping {
    /// HF's spelling: `false`, `true` or `"never"`.
    fn to_json(self) -> serde_json::Value {
        match self {
            EarlyStopping::Heuristic => false.into(),
            EarlyStopping::Finished => true.into(),
            EarlyStopping::Never => "never".into(),
        }
    }
}

impl serde::Serialize for EarlyStopping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for EarlyStopping {
    /// `true`, `false` or `"never"`, as HF's `GenerationConfig` takes it (the
    /// strings `"true"`/`"false"` are accepted too).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(b) => Ok(if b {
                EarlyStopping::Finished
            } else {
                EarlyStopping::Heuristic
            }),
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "early_stopping {other}: expected true, false or \"never\""
            ))),
        }
    }
}

impl std::str::FromStr for EarlyStopping {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "false" | "0" | "no" => Ok(EarlyStopping::Heuristic),
            "true" | "1" | "yes" => Ok(EarlyStopping::Finished),
            "never" => Ok(EarlyStopping::Never),
            _ => Err(format!(
                "early_stopping {s:?}: expected true, false or never"
            )),
        }
    }
}

/// What to generate: the one request type of every front end. Names and
/// defaults follow HF's `GenerationConfig`.
///
/// - In Rust, build it with the chained setters:
///   `GenerateOptions::default().num_beams(4)`.
/// - The CLI's decoding flags are its fields in kebab case (`--num-beams 4`;
///   this struct is the `clap` argument group).
/// - JSON (a JSONL line, an HTTP body) uses HF's names (`{"num_beams": 4}`);
///   unknown fields are refused, absent ones keep their value
///   ([`GenerateOptions::overlay`]).
///
/// `limits` and `exact` are not part of a request: whoever serves requests
/// sets the limits, and `exact` follows how the model was loaded.
#[derive(Clone, Debug, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateOptions {
    /// At most this many new tokens (EOS included).
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// EOS is suppressed until this many tokens exist, as HF's
    /// `MinNewTokensLengthLogitsProcessor` does.
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    /// Beam width; `> 1` selects beam search.
    #[arg(long, default_value_t = 1)]
    pub num_beams: usize,
    /// Beam scores are divided by `generated_len ^ length_penalty`.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub length_penalty: f32,
    /// When beam search stops (HF's `early_stopping`): false (a heuristic),
    /// true (once num_beams hypotheses are done; the bare flag) or never.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub early_stopping: EarlyStopping,
    /// Never repeat an n-gram of this size (0 = off).
    #[arg(long, default_value_t = 0)]
    pub no_repeat_ngram_size: usize,
    /// How many sequences each prompt returns (`<= num_beams` for beam search;
    /// independent samples when sampling; 1 for greedy).
    #[arg(long, default_value_t = 1)]
    pub num_return_sequences: usize,
    /// Sample from the (warped) distribution instead of taking the argmax.
    #[arg(long)]
    pub do_sample: bool,
    /// Sampling temperature (HF: applied only when sampling).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens when sampling (0 = off; HF's default 50).
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Nucleus sampling mass (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// HF's `repetition_penalty` (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Seed of the sampling RNG: the same seed gives the same tokens, whatever
    /// the thread count or batch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The end-of-sequence id (default: the model config's `eos_token_id`).
    #[arg(long)]
    pub eos_token_id: Option<u32>,
    /// Request bounds.
    #[command(flatten)]
    #[serde(skip)]
    pub limits: Limits,
    /// Greedy only: pick each token with the certified int8 head when the
    /// model has one ([`crate::T5Model::enable_certified_head`]).
    #[arg(skip)]
    #[serde(skip)]
    pub exact: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            no_repeat_ngram_size: 0,
            num_return_sequences: 1,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            eos_token_id: None,
            limits: Limits::default(),
            exact: false,
        }
    }
}

macro_rules! setter {
    ($(#[$m:meta])* $name:ident: $t:ty) => {
        $(#[$m])*
        pub fn $name(mut self, v: $t) -> Self {
            self.$name = v;
            self
        }
    };
}

impl GenerateOptions {
    setter!(/// Sets [`GenerateOptions::max_new_tokens`].
        max_new_tokens: usize);
    setter!(/// Sets [`GenerateOptions::min_new_tokens`].
        min_new_tokens: usize);
    setter!(/// Sets [`GenerateOptions::num_beams`].
        num_beams: usize);
    setter!(/// Sets [`GenerateOptions::length_penalty`].
        length_penalty: f32);
    setter!(/// Sets [`GenerateOptions::early_stopping`].
        early_stopping: EarlyStopping);
    setter!(/// Sets [`GenerateOptions::no_repeat_ngram_size`].
        no_repeat_ngram_size: usize);
    setter!(/// Sets [`GenerateOptions::num_return_sequences`].
        num_return_sequences: usize);
    setter!(/// Sets [`GenerateOptions::do_sample`].
        do_sample: bool);
    setter!(/// Sets [`GenerateOptions::temperature`].
        temperature: f32);
    setter!(/// Sets [`GenerateOptions::top_k`].
        top_k: usize);
    setter!(/// Sets [`GenerateOptions::top_p`].
        top_p: f32);
    setter!(/// Sets [`GenerateOptions::repetition_penalty`].
        repetition_penalty: f32);
    setter!(/// Sets [`GenerateOptions::seed`].
        seed: u64);
    setter!(/// Sets [`GenerateOptions::eos_token_id`].
        eos_token_id: Option<u32>);
    setter!(/// Sets [`GenerateOptions::limits`].
        limits: Limits);

    setter!(/// Sets [`GenerateOptions::exact`].
        exact: bool);

    /// These options with the fields of a JSON object put over them (HF's
    /// names; a JSONL line's or an HTTP body's options): absent fields keep
    /// their value here, unknown ones and values of the wrong type are refused
    /// naming the field. `limits` and `exact` are kept. The result is
    /// validated.
    pub fn overlay(
        &self,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<GenerateOptions> {
        let mut merged = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(Error::Other(
                    "generate options do not form a JSON object".into(),
                ))
            }
        };
        merged.extend(fields);
        let mut o: GenerateOptions = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| Error::Request(e.to_string()))?;
        o.limits = self.limits;
        o.exact = self.exact;
        o.validate()?;
        Ok(o)
    }

    /// Refuses option combinations HF refuses and requests above the limits.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Request(m));
        if self.max_new_tokens > self.limits.max_new_tokens_limit {
            return bad(format!(
                "max_new_tokens {} is above the limit of {}",
                self.max_new_tokens, self.limits.max_new_tokens_limit
            ));
        }
        if self.min_new_tokens > self.max_new_tokens {
            return bad(format!(
                "min_new_tokens {} is above max_new_tokens {}",
                self.min_new_tokens, self.max_new_tokens
            ));
        }
        if self.num_beams == 0 {
            return bad("num_beams must be at least 1".into());
        }
        if self.num_return_sequences == 0 {
            return bad("num_return_sequences must be at least 1".into());
        }
        if self.num_beams > 1 && self.do_sample {
            return bad("beam sampling (num_beams > 1 with do_sample) is not supported".into());
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return bad(format!(
                "num_return_sequences {} is above num_beams {}",
                self.num_return_sequences, self.num_beams
            ));
        }
        if self.num_beams == 1 && !self.do_sample && self.num_return_sequences > 1 {
            return bad("greedy search returns one sequence: num_return_sequences > 1 needs num_beams or do_sample".into());
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature {} must be positive", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty {} must be positive",
                self.repetition_penalty
            ));
        }
        if !self.length_penalty.is_finite() {
            return bad("length_penalty must be finite".into());
        }
        if self.exact
            && (self.num_beams > 1
                || self.do_sample
                || self.repetition_penalty != 1.0
                || self.no_repeat_ngram_size > 0)
        {
            return bad("exact (certified) decoding is greedy only: no beams, sampling, repetition_penalty or no_repeat_ngram_size".into());
        }
        Ok(())
    }

    /// The EOS id in force for `model`.
    pub fn eos(&self, model: &T5Model) -> u32 {
        self.eos_token_id.unwrap_or(model.config.eos_token_id)
    }

    pub(crate) fn check(&self, prompts: &[&[u32]]) -> Result<()> {
        self.validate()?;
        for p in prompts {
            if p.len() > self.limits.max_input_tokens {
                return Err(Error::Request(format!(
                    "the prompt has {} tokens, above the limit of {}",
                    p.len(),
                    self.limits.max_input_tokens
                )));
            }
        }
        Ok(())
    }
}

/// What one prompt generated.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The returned sequences, best first (beam search) or in sample order;
    /// each without the decoder start token and ending with EOS if one was made.
    pub sequences: Vec<Vec<u32>>,
    /// Beam search only: HF's `sequences_scores` (sum of log-probabilities
    /// divided by `len ^ length_penalty`), one per sequence.
    pub scores: Option<Vec<f32>>,
}

impl Generation {
    /// The first (best) sequence.
    pub fn best(&self) -> &[u32] {
        self.sequences.first().map(|s| &s[..]).unwrap_or(&[])
    }
}

/// Generates for every prompt with the strategy the options select: beam search
/// when `num_beams > 1`, sampling when `do_sample`, else greedy.
pub fn generate(
    model: &T5Model,
    prompts: &[&[u32]],
    opts: &GenerateOptions,
) -> Result<Vec<Generation>> {
    opts.check(prompts)?;
    if opts.num_beams > 1 {
        prompts
            .iter()
            .map(|p| {
                let hyps = beam_search(model, p, opts)?;
                Ok(Generation {
                    scores: Some(hyps.iter().map(|h| h.score).collect()),
                    sequences: hyps.into_iter().map(|h| h.ids).collect(),
                })
            })
            .collect()
    } else if opts.do_sample {
        let n = opts.num_return_sequences;
        let mut expanded = Vec::with_capacity(prompts.len() * n);
        for p in prompts {
            for _ in 0..n {
                expanded.push(*p);
            }
        }
        // The j-th sample of every prompt uses stream j of the seed, so a
        // prompt's samples do not depend on the rest of the batch.
        let rngs = (0..expanded.len())
            .map(|i| DecodeRng::new(opts.seed, (i % n) as u64))
            .collect();
        let mut outs = sampling::sample_with(model, &expanded, opts, rngs)?.into_iter();
        Ok(prompts
            .iter()
            .map(|_| Generation {
                sequences: outs.by_ref().take(n).collect(),
                scores: None,
            })
            .collect())
    } else {
        Ok(greedy(model, prompts, opts)?
            .into_iter()
            .map(|s| Generation {
                sequences: vec![s],
                scores: None,
            })
            .collect())
    }
}
