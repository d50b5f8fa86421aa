//! t5edge: a CPU inference engine for the T5 encoder-decoder family.
//!
//! The data's path: files ([`weights`]) → kernels (`t5edge-kernels`) → layers
//! ([`model`]) → decoding ([`mod@generate`]) → text ([`tokenizer`]).
//!
//! The public surface for applications:
//!
//! - [`T5Model::load`] a checkpoint directory ([`hub::resolve`] finds a Hugging
//!   Face model id such as `google/t5-efficient-tiny-nl2` in the local cache);
//! - [`generate()`] with a [`GenerateOptions`] builder (greedy, beam search or
//!   sampling, HF's option names and semantics), or [`generate_stream`] for a
//!   callback per token;
//! - [`embed()`] for mean-pooled encoder embeddings, [`encode::encode_padded`]
//!   for every token's encoder state;
//! - [`score::score_batch`] for log p(target | source), [`rerank::rerank`]
//!   for monoT5-style relevance;
//! - [`T5Model::forward`] for teacher-forced logits;
//! - [`Tokenizer`] for text to ids and back.
//!
//! The kernels' process-wide settings (`T5EDGE_ISA`, `T5EDGE_POOL`,
//! `T5EDGE_THREADS`, ...) are read from the environment in one place,
//! [`runtime::configure_from_env`], which [`T5Model::load`] calls.
//!
//! ```
//! use t5edge::{generate, GenerateOptions, T5Model};
//! # let dir = tempfile::tempdir().unwrap();
//! # let cfg = t5edge::synth::preset("t5-efficient-tiny-nl2").unwrap();
//! # let cfg = t5edge::synth::with_overrides(&cfg, &["d_model=64".into(), "d_ff=128".into(),
//! #     "vocab_size=1000".into(), "num_heads=2".into(), "d_kv=16".into()]).unwrap();
//! # t5edge::synth::write_checkpoint(dir.path(), &cfg, &Default::default(), false).unwrap();
//! let model = T5Model::load(dir.path())?;
//! let opts = GenerateOptions::default().max_new_tokens(8).do_sample(true).top_p(0.9).seed(7);
//! let out = generate(&model, &[&[37, 12, 1]], &opts)?;
//! println!("{:?}", out[0].best());
//! # Ok::<(), t5edge::Error>(())
//! ```
//!
//! From a checkpoint directory and text, as in the README (`no_run`: it needs
//! a real checkpoint in `t5-tiny`; `cargo test --doc` compiles it):
//!
//! ```no_run
//! use t5edge::model::{FormatPolicy, WeightFormat};
//! use t5edge::{embed, generate, GenerateOptions, T5Model, Tokenizer};
//!
//! fn main() -> t5edge::Result<()> {
//!     let dir = std::path::Path::new("t5-tiny"); // a Hugging Face T5 checkpoint directory
//!     let mut model = T5Model::load(dir)?;
//!     model.convert(FormatPolicy::for_dtype(WeightFormat::Int8))?; // what --dtype int8 does
//!     let tok = Tokenizer::from_dir(dir, model.config.vocab_size)?;
//!     let ids = tok.encode("translate English to German: The house is wonderful.")?;
//!
//!     let opts = GenerateOptions::default().max_new_tokens(32).num_beams(4);
//!     let out = generate(&model, &[&ids], &opts)?;
//!     println!("{}", tok.decode(out[0].best())?);
//!
//!     let e = embed(&model, &[&ids], true)?; // mean-pooled encoder states, L2-normalized
//!     println!("{} dimensions", e[0].len());
//!     Ok(())
//! }
//! ```

pub mod config;
pub mod embed;
pub mod encode;
pub mod error;
pub mod generate;
pub mod hub;
pub mod memory;
pub mod model;
pub mod quantize;
pub mod rerank;
pub mod runtime;
pub mod score;
pub mod serve;
pub mod synth;
pub mod tokenizer;
pub mod weights;

#[doc(hidden)]
pub mod cli;

pub use config::T5Config;
pub use embed::embed;
pub use error::{Error, Result};
pub use generate::{generate, generate_stream, GenerateOptions, Generation};
pub use model::T5Model;
pub use tokenizer::Tokenizer;
