//! t5edge: a CPU inference engine for the T5 encoder-decoder family.
//!
//! The data's path: files ([`weights`]) → kernels (`t5edge-kernels`) → layers
//! ([`model`]) → decoding ([`generate`]) → text ([`tokenizer`]).

pub mod config;
pub mod error;
pub mod generate;
pub mod model;
pub mod quantize;
pub mod synth;
pub mod tokenizer;
pub mod weights;

#[doc(hidden)]
pub mod cli;

pub use config::T5Config;
pub use error::{Error, Result};
pub use generate::GenerateOptions;
pub use model::T5Model;
pub use tokenizer::Tokenizer;
